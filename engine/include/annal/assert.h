// ANNAL_ASSERT: invariants that must hold. A failure is a programmer error;
// the process aborts with file, line and expression. Always on, also in
// release builds: a storage engine that continues past a broken invariant
// can corrupt the log.
#pragma once

namespace annal::detail {
[[noreturn]] void AssertFailed(const char* file, int line, const char* expr, const char* msg);
}

#define ANNAL_ASSERT(expr)                                                       \
  do {                                                                           \
    if (!(expr)) [[unlikely]]                                                    \
      ::annal::detail::AssertFailed(__FILE__, __LINE__, #expr, nullptr);         \
  } while (0)

#define ANNAL_ASSERT_MSG(expr, msg)                                              \
  do {                                                                           \
    if (!(expr)) [[unlikely]]                                                    \
      ::annal::detail::AssertFailed(__FILE__, __LINE__, #expr, (msg));           \
  } while (0)
