// Sequencer: hands out global positions and commit times, and tracks the
// durable watermark.
//
// Each partition writer reserves a contiguous range of positions for a batch
// just before submitting it, and reports it durable after its fdatasync.
// Partitions finish out of order, so DurableHead() is the end of the longest
// gap-free prefix of durable ranges: a reader of the global order never sees
// position N+1 before N. A range that never becomes durable (its partition
// fail-stopped) holds the watermark back until the store is reopened, when
// recovery decides which of those positions exist.
//
// Thread-safety: all methods are safe from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>

namespace annal {

class Sequencer {
 public:
  // `last_position` and `last_recorded_at_ns`: the highest values in the log.
  Sequencer(uint64_t last_position, int64_t last_recorded_at_ns);

  struct Reservation {
    uint64_t first_position;
    int64_t recorded_at_ns;  // never below any earlier reservation's
  };
  Reservation Reserve(uint32_t count);
  void MarkDurable(uint64_t first_position);
  uint64_t DurableHead() const { return durable_head_.load(std::memory_order_acquire); }
  // Blocks until the durable head passes `after`, `timeout` passes, or
  // Close() is called; returns the durable head.
  uint64_t WaitForDurableHead(uint64_t after, std::chrono::milliseconds timeout);
  // Wakes every waiter for good.
  void Close();

 private:
  struct Range {
    uint64_t first;
    uint32_t count;
    bool durable;
  };
  std::mutex mu_;
  uint64_t next_position_;           // guarded by mu_
  int64_t last_recorded_at_ns_;      // guarded by mu_
  std::deque<Range> in_flight_;      // guarded by mu_; ascending by first
  std::atomic<uint64_t> durable_head_;
  std::condition_variable advanced_;  // waits on mu_
  bool closed_ = false;               // guarded by mu_
};

}  // namespace annal
