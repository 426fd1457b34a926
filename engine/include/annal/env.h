// Env: the narrow interface through which the engine's write path reaches
// the operating system, so that tests can inject failed writes, failed
// fsyncs and torn writes (see tests/fault_env.h).
//
// The production Env drives one io_uring per partition writer. Reads and
// recovery use plain pread(2); corruption on those paths is tested by
// damaging the files themselves.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "annal/status.h"

namespace annal {

// How a write is made durable.
enum class SyncMode : uint8_t {
  // A write, then an fdatasync of the file linked after it.
  kLinkedFdatasync,
  // One write with RWF_DSYNC: complete only when durable. With O_DIRECT on
  // preallocated, already-written space this is a single device write
  // (FUA, or write + flush), and needs no io_uring worker thread.
  kDsyncWrite,
};

// The result of one SubmitWriteSync: 0 when the write and its sync
// completed, otherwise a negative errno (a short write is -EIO).
struct IoCompletion {
  uint64_t tag = 0;
  int32_t result = 0;
};

// The asynchronous I/O of one partition writer.
//
// Thread-safety: owned by the writer thread.
class LogWriterIo {
 public:
  virtual ~LogWriterIo() = default;

  // Queues a write of data[0, len) at `offset` of `fd` made durable as
  // `mode` says. One completion with `tag` reports the whole.
  // REQUIRES: data stays valid and unchanged until the completion is reaped;
  // for an O_DIRECT fd, data, len and offset are aligned as it requires.
  virtual Status SubmitWriteSync(int fd, const void* data, size_t len, uint64_t offset,
                                 uint64_t tag, SyncMode mode) = 0;

  // Appends finished completions to `out`. With `block`, first waits until
  // at least one completion arrives.
  virtual Status Reap(std::vector<IoCompletion>* out, bool block) = 0;
};

class Env {
 public:
  virtual ~Env() = default;

  // The io_uring Env. Lives for the whole process.
  static Env* Default();

  // Checks that the kernel lets this process use io_uring, and says what to
  // do when it does not.
  virtual Status Probe() = 0;

  virtual Result<std::unique_ptr<LogWriterIo>> NewLogWriterIo() = 0;
};

}  // namespace annal
