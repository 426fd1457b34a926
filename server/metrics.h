// The server's own counters, their Prometheus text rendering together with
// the engine's (annal::StoreStats, annal::StateStats), and the tiny HTTP
// endpoint serving GET /metrics on its own port and thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <thread>

#include "annal/state.h"
#include "annal/stats.h"
#include "annal/status.h"

namespace annal::server {

struct ServerMetrics {
  std::atomic<uint64_t> appends{0};
  std::atomic<uint64_t> append_events{0};
  std::atomic<uint64_t> append_errors{0};
  std::atomic<uint64_t> reads{0};
  std::atomic<uint64_t> connections_accepted{0};
  std::atomic<uint64_t> protocol_errors{0};
  std::atomic<int64_t> connections{0};
  std::atomic<int64_t> subscriptions{0};
  std::atomic<uint64_t> subscription_events{0};
  std::atomic<uint64_t> subscriptions_dropped{0};
  // From an append frame's arrival to its response being queued.
  Histogram append_seconds{LatencyBoundsSeconds()};
  std::atomic<uint64_t> state_requests{0};    // answered by the state worker
  std::atomic<uint64_t> state_overloaded{0};  // refused: its queue was full
  // From a state request's arrival to its answer being queued.
  Histogram state_seconds{LatencyBoundsSeconds()};
  std::atomic<uint64_t> checkpoint_reads{0};   // GET_ and LIST_CHECKPOINTS answered
  std::atomic<uint64_t> checkpoint_writes{0};  // SET_ and DELETE_CHECKPOINT answered
};

std::string RenderPrometheus(const ServerMetrics& m, const StoreStats& store,
                             const StateStats& state);

// Serves GET /metrics with `render()`; anything else gets 404. One request
// per connection, answered and closed.
class MetricsEndpoint {
 public:
  MetricsEndpoint() = default;
  ~MetricsEndpoint() { Stop(); }
  Status Start(const std::string& address, int port, std::function<std::string()> render);
  uint16_t port() const { return port_; }
  void Stop();

 private:
  void Serve();
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::function<std::string()> render_;
  std::thread thread_;
};

// Binds and listens on address:port (0 = any free port); returns the fd.
Result<int> ListenTcp(const std::string& address, int port, uint16_t* bound_port);

}  // namespace annal::server
