// Target: one store that annal-bench drives (annald over the wire protocol,
// or PostgreSQL with the reference design's events table), seen as a set of
// non-blocking connections that one thread multiplexes with epoll.
//
// The runner owns the schedule: it decides when each request is due, which
// connection carries it, and measures its latency from the due time. A
// target only turns requests into bytes on a socket and answers back into
// completions; it never sleeps and never blocks.
//
// Ordering contract: requests sent on one connection are answered for in
// the order the store applied them; the runner routes every request for one
// stream through the same connection, so a target that keeps a per-stream
// expected version (both do) sees that stream's requests in order.
//
// Thread-safety: none. A target belongs to the runner's thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "annal/status.h"

namespace annal::loadgen {

enum class OpKind : uint8_t {
  kAppend = 0,      // append `events` events to `stream` at its expected version
  kReadStream = 1,  // read the last `read_count` events of `stream`, newest first
};
inline constexpr size_t kOpKinds = 2;
const char* OpKindName(OpKind kind);

struct Request {
  uint64_t tag = 0;     // the runner's id; echoed in the completion
  OpKind kind = OpKind::kAppend;
  uint32_t stream = 0;  // stream index in [0, streams); the target names it
  uint32_t events = 1;  // kAppend: events in this append
  uint32_t read_count = 100;  // kReadStream: events to read
};

// Why a request did not succeed, counted separately in the summary.
enum class Outcome : uint8_t {
  kOk = 0,
  kConflict = 1,  // wrong expected version / unique violation
  kError = 2,     // anything else: the message goes to the summary
};

struct Completion {
  uint64_t tag = 0;
  Outcome outcome = Outcome::kOk;
  std::string error;  // kError only: the store's message
};

// An event seen by a subscription (targets that support them): when it was
// committed (`recorded_at`, wall clock) and when this process received it.
struct Delivery {
  int64_t recorded_at_ns = 0;
  int64_t received_ns = 0;  // wall clock (CLOCK_REALTIME), as recorded_at
};

class Target {
 public:
  virtual ~Target() = default;

  virtual std::string name() const = 0;
  virtual size_t connections() const = 0;
  // The socket of connection `conn`, for epoll. Fixed after Connect.
  virtual int fd(size_t conn) const = 0;
  // How many more requests connection `conn` takes now (its pipelining
  // depth minus what is in flight on it).
  virtual size_t FreeSlots(size_t conn) const = 0;
  // Encodes `r` onto connection `conn`'s output. REQUIRES: FreeSlots > 0.
  virtual Status Send(size_t conn, const Request& r) = 0;
  // Hands queued output to the kernel; what it does not take stays queued.
  virtual Status Flush(size_t conn) = 0;
  virtual bool HasOutput(size_t conn) const = 0;
  // Reads what has arrived on `conn` and appends a completion for every
  // request it answers. An error here is fatal for the run.
  virtual Status Poll(size_t conn, std::vector<Completion>* done) = 0;

  // Subscriptions (annal only): sockets that deliver events, polled like
  // connections. A target without them returns 0.
  virtual size_t subscribers() const { return 0; }
  virtual int subscriber_fd(size_t) const { return -1; }
  virtual Status PollSubscriber(size_t, std::vector<Delivery>*) { return Status::Ok(); }

  // Storage this target's data takes, for "bytes per event"; nullopt-like
  // -1 when the target cannot tell.
  virtual int64_t StoredBytes() { return -1; }
};

}  // namespace annal::loadgen
