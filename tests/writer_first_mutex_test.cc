// The partition's reader-writer lock lets a waiting writer in before
// readers who come after it (writer_first_mutex.h).
#include "writer_first_mutex.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <shared_mutex>
#include <thread>

namespace annal {
namespace {

// A reader holds the lock and a writer waits for it: a second reader must
// not get in ahead of the writer. glibc's std::shared_mutex lets it in,
// which let a checkpoint's short, back-to-back reads keep the partition's
// writer waiting for 77 ms.
TEST(WriterFirstMutexTest, AWaitingWriterGoesBeforeLaterReaders) {
  WriterFirstMutex mu;
  std::shared_lock first(mu);
  std::atomic<bool> wrote{false};
  std::thread writer([&] {
    std::unique_lock lock(mu);
    wrote = true;
  });
  // Until the writer waits, a later reader still gets in; once it waits,
  // none does. Give the writer a few seconds to start waiting.
  bool refused = false;
  for (auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
       !refused && std::chrono::steady_clock::now() < until;) {
    if (mu.try_lock_shared()) {
      mu.unlock_shared();
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    } else {
      refused = true;
    }
  }
  EXPECT_TRUE(refused) << "a reader got in ahead of a waiting writer";
  EXPECT_FALSE(wrote.load());
  first.unlock();
  writer.join();
  EXPECT_TRUE(wrote.load());
  ASSERT_TRUE(mu.try_lock_shared());
  EXPECT_FALSE(mu.try_lock());
  mu.unlock_shared();
  ASSERT_TRUE(mu.try_lock());
  EXPECT_FALSE(mu.try_lock_shared());
  mu.unlock();
}

}  // namespace
}  // namespace annal
