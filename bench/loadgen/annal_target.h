// AnnalTarget: annald over the wire protocol (docs/protocol.md), through
// pipelined, non-blocking connections (wire_connection.h).
//
// Appends carry ExpectedVersion::Exact(next - 1) (NoStream for a stream's
// first append) with the version kept here per stream, so annald checks
// optimistic concurrency exactly as the PostgreSQL target's unique index
// does; events carry fresh ids. A read is READ_STREAM backward from the
// head. Subscribers, when asked for, subscribe to the whole store from the
// head as it is when they connect and report each event's delivery.
//
// Thread-safety: none; the runner's thread owns it.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "protocol.h"
#include "target.h"
#include "wire_connection.h"
#include "workload.h"

namespace annal::loadgen {

struct AnnalOptions {
  std::string host = "127.0.0.1";  // IPv4 address of annald
  uint16_t port = 7411;
  size_t connections = 4;
  size_t depth = 64;      // requests in flight per connection
  size_t subscribers = 0; // connections subscribed to the whole store
  std::string run_id;     // names the streams: StreamName(run_id, i)
  WorkloadOptions workload;
};

class AnnalTarget final : public Target {
 public:
  static Result<std::unique_ptr<AnnalTarget>> Connect(const AnnalOptions& o);

  std::string name() const override { return "annal"; }
  size_t connections() const override { return conns_.size(); }
  int fd(size_t conn) const override { return conns_[conn].wire->fd(); }
  size_t FreeSlots(size_t conn) const override;
  Status Send(size_t conn, const Request& r) override;
  Status Flush(size_t conn) override { return conns_[conn].wire->Flush(); }
  bool HasOutput(size_t conn) const override { return conns_[conn].wire->has_output(); }
  Status Poll(size_t conn, std::vector<Completion>* done) override;

  size_t subscribers() const override { return subs_.size(); }
  int subscriber_fd(size_t i) const override { return subs_[i].wire->fd(); }
  Status PollSubscriber(size_t i, std::vector<Delivery>* out) override;

 private:
  struct Conn {
    std::unique_ptr<bench::WireConnection> wire;
    std::unordered_map<uint32_t, uint64_t> inflight;  // request id -> tag
    uint32_t next_request_id = 1;
  };
  struct Sub {
    std::unique_ptr<bench::WireConnection> wire;
    uint32_t subscription_id = 0;
    uint64_t last_position = 0;
    protocol::EventsResponse scratch;
  };

  explicit AnnalTarget(const AnnalOptions& o);
  Status Subscribe();

  AnnalOptions options_;
  std::vector<Conn> conns_;
  std::vector<Sub> subs_;
  std::vector<uint64_t> next_version_;  // per stream index
  std::vector<std::string> names_;      // per stream index
  PayloadMaker payloads_;
  uint64_t sequence_ = 0;
  std::mt19937_64 ids_;
  protocol::AppendRequest append_;      // reused: one allocation per field
  protocol::ReadStreamRequest read_;
};

}  // namespace annal::loadgen
