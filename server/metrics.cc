#include "metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>

namespace annal::server {
namespace {

void Counter(std::ostringstream& o, const char* name, const char* help, double value) {
  o << "# HELP " << name << ' ' << help << "\n# TYPE " << name << " counter\n" << name << ' ' << value << '\n';
}

void Gauge(std::ostringstream& o, const char* name, const char* help, double value) {
  o << "# HELP " << name << ' ' << help << "\n# TYPE " << name << " gauge\n" << name << ' ' << value << '\n';
}

void HistogramLines(std::ostringstream& o, const std::string& name, const std::string& labels,
                    const Histogram::Snapshot& h) {
  uint64_t cumulative = 0;
  std::string sep = labels.empty() ? "" : ",";
  for (size_t i = 0; i < h.upper_bounds.size(); ++i) {
    cumulative += h.counts[i];
    o << name << "_bucket{" << labels << sep << "le=\"" << h.upper_bounds[i] << "\"} " << cumulative << '\n';
  }
  cumulative += h.counts.back();
  o << name << "_bucket{" << labels << sep << "le=\"+Inf\"} " << cumulative << '\n';
  std::string braces = labels.empty() ? "" : "{" + labels + "}";
  o << name << "_sum" << braces << ' ' << h.sum << '\n' << name << "_count" << braces << ' ' << h.count << '\n';
}

}  // namespace

std::string RenderPrometheus(const ServerMetrics& m, const StoreStats& store,
                             const StateStats& state) {
  std::ostringstream o;
  Counter(o, "annal_appends_total", "Appends acknowledged (durable).", static_cast<double>(m.appends.load()));
  Counter(o, "annal_append_events_total", "Events in acknowledged appends.", static_cast<double>(m.append_events.load()));
  Counter(o, "annal_append_errors_total", "Appends answered with an error.", static_cast<double>(m.append_errors.load()));
  Counter(o, "annal_reads_total", "Read and stream-info requests served.", static_cast<double>(m.reads.load()));
  Counter(o, "annal_connections_accepted_total", "Client connections accepted.",
          static_cast<double>(m.connections_accepted.load()));
  Counter(o, "annal_protocol_errors_total", "Connections closed for a malformed frame.",
          static_cast<double>(m.protocol_errors.load()));
  Gauge(o, "annal_connections", "Open client connections.", static_cast<double>(m.connections.load()));
  Gauge(o, "annal_subscriptions", "Active subscriptions.", static_cast<double>(m.subscriptions.load()));
  Counter(o, "annal_subscription_events_total", "Events pushed to subscribers.",
          static_cast<double>(m.subscription_events.load()));
  Counter(o, "annal_subscriptions_dropped_total", "Subscriptions dropped for falling behind.",
          static_cast<double>(m.subscriptions_dropped.load()));
  o << "# HELP annal_append_latency_seconds From an append's arrival to its durable acknowledgement.\n"
       "# TYPE annal_append_latency_seconds histogram\n";
  HistogramLines(o, "annal_append_latency_seconds", "", m.append_seconds.Take());
  Gauge(o, "annal_durable_head_position", "Highest position below which every event is durable.",
        static_cast<double>(store.durable_head));

  Counter(o, "annal_state_requests_total",
          "LOAD_STATE, WRITE_SNAPSHOT and LIST_SNAPSHOTS requests answered.",
          static_cast<double>(m.state_requests.load()));
  Counter(o, "annal_state_requests_overloaded_total",
          "State requests refused because the state queue was full.",
          static_cast<double>(m.state_overloaded.load()));
  o << "# HELP annal_state_latency_seconds From a state request's arrival to its answer.\n"
       "# TYPE annal_state_latency_seconds histogram\n";
  HistogramLines(o, "annal_state_latency_seconds", "", m.state_seconds.Take());
  Counter(o, "annal_checkpoint_reads_total", "GET_CHECKPOINT and LIST_CHECKPOINTS requests answered.",
          static_cast<double>(m.checkpoint_reads.load()));
  Counter(o, "annal_checkpoint_writes_total", "SET_CHECKPOINT and DELETE_CHECKPOINT requests answered.",
          static_cast<double>(m.checkpoint_writes.load()));
  Counter(o, "annal_state_loads_total", "States loaded by the state engine.",
          static_cast<double>(state.loads));
  Counter(o, "annal_snapshots_written_total", "Snapshots stored, by the taker and by clients.",
          static_cast<double>(state.snapshots_written));
  Counter(o, "annal_snapshots_skipped_total",
          "Snapshots passed over: failed checksum or outdated schema.",
          static_cast<double>(state.snapshots_skipped));
  Gauge(o, "annal_snapshot_taker_position",
        "Global position up to which the snapshot taker has seen the log.",
        static_cast<double>(state.taker_position));
  Counter(o, "annal_snapshot_taker_errors_total", "Errors of the background snapshot taker.",
          static_cast<double>(state.taker_errors));
  Gauge(o, "annal_snapshot_store_ok",
        "1 while the snapshot store is usable; 0: every load replays.",
        state.snapshot_store_ok ? 1 : 0);

  o << "# HELP annal_sync_latency_seconds Write and sync of one batch.\n# TYPE annal_sync_latency_seconds histogram\n";
  for (const PartitionStats& p : store.partitions)
    HistogramLines(o, "annal_sync_latency_seconds", "partition=\"" + std::to_string(p.partition) + "\"", p.sync_seconds);
  o << "# HELP annal_batch_events Events per durable batch.\n# TYPE annal_batch_events histogram\n";
  for (const PartitionStats& p : store.partitions)
    HistogramLines(o, "annal_batch_events", "partition=\"" + std::to_string(p.partition) + "\"", p.batch_events);
  struct PerPartition {
    const char* name;
    const char* help;
    const char* type;
    uint64_t PartitionStats::*field;
  };
  static const PerPartition kFields[] = {
      {"annal_partition_batches_total", "Durable batches written.", "counter", &PartitionStats::batches},
      {"annal_partition_bytes_written_total", "Log bytes written.", "counter", &PartitionStats::bytes_written},
      {"annal_partition_bytes_on_disk", "Bytes of segment files.", "gauge", &PartitionStats::bytes_on_disk},
      {"annal_partition_segments", "Segment files in use.", "gauge", &PartitionStats::segments},
      {"annal_index_streams", "Streams in the in-memory index.", "gauge", &PartitionStats::streams},
      {"annal_index_memory_bytes", "Memory of the stream table and unfinished segment indexes.", "gauge",
       &PartitionStats::index_memory_bytes},
      {"annal_sealed_segments", "Segments recompressed with zstd.", "gauge", &PartitionStats::sealed_segments},
      {"annal_sealed_raw_bytes", "Log bytes held by sealed segments.", "gauge", &PartitionStats::sealed_raw_bytes},
      {"annal_sealed_stored_bytes", "Bytes of sealed segment files.", "gauge", &PartitionStats::sealed_stored_bytes},
      {"annal_tail_cache_hits_total", "Reads of unsealed segments served from the tail cache.", "counter",
       &PartitionStats::tail_cache_hits},
      {"annal_tail_cache_misses_total", "Reads of unsealed segments that read the file.", "counter",
       &PartitionStats::tail_cache_misses},
      {"annal_tail_cache_bytes", "Memory of the tail cache's rings.", "gauge", &PartitionStats::tail_cache_bytes},
  };
  for (const PerPartition& f : kFields) {
    o << "# HELP " << f.name << ' ' << f.help << "\n# TYPE " << f.name << ' ' << f.type << '\n';
    for (const PartitionStats& p : store.partitions)
      o << f.name << "{partition=\"" << p.partition << "\"} " << p.*f.field << '\n';
  }
  o << "# HELP annal_block_cache_bytes Decompressed blocks and index pages held.\n# TYPE annal_block_cache_bytes gauge\n"
    << "annal_block_cache_bytes " << store.block_cache_bytes << '\n'
    << "# HELP annal_block_cache_hits_total Block cache lookups served from memory.\n"
       "# TYPE annal_block_cache_hits_total counter\n"
    << "annal_block_cache_hits_total " << store.block_cache_hits << '\n'
    << "# HELP annal_block_cache_misses_total Block cache lookups that read and decompressed.\n"
       "# TYPE annal_block_cache_misses_total counter\n"
    << "annal_block_cache_misses_total " << store.block_cache_misses << '\n';
  o << "# HELP annal_partition_fail_stopped 1 when the partition stopped after a failed write.\n"
       "# TYPE annal_partition_fail_stopped gauge\n";
  for (const PartitionStats& p : store.partitions)
    o << "annal_partition_fail_stopped{partition=\"" << p.partition << "\"} " << (p.fail_stopped ? 1 : 0) << '\n';
  return o.str();
}

Result<int> ListenTcp(const std::string& address, int port, uint16_t* bound_port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, address.c_str(), &addr.sin_addr) != 1)
    return Status::InvalidArgument("not an IPv4 address: " + address);
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::FromErrno(errno, "socket");
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd, 512) != 0) {
    int err = errno;
    ::close(fd);
    return Status::FromErrno(err, "listen on " + address + ":" + std::to_string(port));
  }
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  *bound_port = ntohs(addr.sin_port);
  return fd;
}

Status MetricsEndpoint::Start(const std::string& address, int port, std::function<std::string()> render) {
  auto fd = ListenTcp(address, port, &port_);
  if (!fd.ok()) return fd.status();
  listen_fd_ = *fd;
  render_ = std::move(render);
  thread_ = std::thread([this] { Serve(); });
  ::pthread_setname_np(thread_.native_handle(), "metrics");
  return Status::Ok();
}

void MetricsEndpoint::Stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  if (listen_fd_ >= 0) ::close(listen_fd_);
  listen_fd_ = -1;
}

void MetricsEndpoint::Serve() {
  while (!stop_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 200) <= 0) continue;
    int c = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) continue;
    // Read the request line (bounded; a slow client gets 1 s).
    std::string req;
    char buf[1024];
    pollfd cp{c, POLLIN, 0};
    while (req.find("\r\n\r\n") == std::string::npos && req.size() < 8192 && ::poll(&cp, 1, 1000) > 0) {
      ssize_t n = ::recv(c, buf, sizeof buf, 0);
      if (n <= 0) break;
      req.append(buf, static_cast<size_t>(n));
    }
    std::string body, status = "200 OK";
    if (req.rfind("GET /metrics ", 0) == 0 || req.rfind("GET /metrics?", 0) == 0) {
      body = render_();
    } else {
      status = "404 Not Found";
      body = "annald serves GET /metrics here\n";
    }
    std::string resp = "HTTP/1.1 " + status + "\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: " +
                       std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
    size_t sent = 0;
    while (sent < resp.size()) {
      ssize_t n = ::send(c, resp.data() + sent, resp.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) break;
      sent += static_cast<size_t>(n);
    }
    ::close(c);
  }
}

}  // namespace annal::server
