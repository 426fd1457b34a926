#include "sequencer.h"

#include <chrono>

#include "annal/assert.h"

namespace annal {

Sequencer::Sequencer(uint64_t last_position, int64_t last_recorded_at_ns)
    : next_position_(last_position + 1),
      last_recorded_at_ns_(last_recorded_at_ns),
      durable_head_(last_position) {}

Sequencer::Reservation Sequencer::Reserve(uint32_t count) {
  ANNAL_ASSERT(count > 0);
  int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
  std::lock_guard lock(mu_);
  // The wall clock may step back; commit times must not.
  if (now < last_recorded_at_ns_) now = last_recorded_at_ns_;
  last_recorded_at_ns_ = now;
  Reservation r{next_position_, now};
  in_flight_.push_back(Range{next_position_, count, false});
  next_position_ += count;
  return r;
}

void Sequencer::MarkDurable(uint64_t first_position) {
  std::lock_guard lock(mu_);
  bool found = false;
  for (Range& r : in_flight_) {
    if (r.first == first_position) {
      ANNAL_ASSERT(!r.durable);
      r.durable = true;
      found = true;
      break;
    }
  }
  ANNAL_ASSERT_MSG(found, "MarkDurable of a range that was never reserved");
  uint64_t head = durable_head_.load(std::memory_order_relaxed);
  while (!in_flight_.empty() && in_flight_.front().durable) {
    head = in_flight_.front().first + in_flight_.front().count - 1;
    in_flight_.pop_front();
  }
  if (head != durable_head_.load(std::memory_order_relaxed)) {
    durable_head_.store(head, std::memory_order_release);
    advanced_.notify_all();
  }
}

uint64_t Sequencer::WaitForDurableHead(uint64_t after, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  advanced_.wait_for(lock, timeout, [&] { return closed_ || DurableHead() > after; });
  return DurableHead();
}

void Sequencer::Close() {
  std::lock_guard lock(mu_);
  closed_ = true;
  advanced_.notify_all();
}

}  // namespace annal
