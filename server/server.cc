#include "server.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>

#include "annal/assert.h"

namespace annal::server {

using Clock = std::chrono::steady_clock;
using protocol::ErrorCode;
using protocol::Op;

// A connection stops reading requests while this much output is unsent.
constexpr size_t kOutputHighWaterBytes = 32 * 1024 * 1024;
// Bytes read from a socket per readiness event, so one client cannot hog
// the loop.
constexpr size_t kReadChunkBytes = 256 * 1024;
// Events one subscription reads per turn, so subscribers share the thread.
constexpr size_t kSubscriptionBatchEvents = 1000;
// How long Shutdown waits for appends in flight and unsent answers.
constexpr auto kShutdownDrainTimeout = std::chrono::seconds(10);
// State requests waiting for the state worker; more are refused as
// OVERLOADED, so a burst of loads cannot grow memory without bound.
constexpr size_t kMaxQueuedStateJobs = 1024;

struct Connection : std::enable_shared_from_this<Connection> {
  Connection(Server* s, int socket, uint64_t connection_id) : server(s), fd(socket), id(connection_id) {}
  ~Connection() {
    if (fd >= 0) ::close(fd);
  }

  // Any thread: queues whole frames and wakes the I/O thread.
  void Send(std::string frames) {
    if (closed.load()) return;
    {
      std::lock_guard lock(out_mu);
      // The slow-reader clock runs from when output starts waiting.
      if (out.size() == out_offset) output_waiting_since_ns = NowNs();
      out.append(frames);
      unsent.store(out.size() - out_offset);
    }
    server->Wake(shared_from_this());
  }

  static int64_t NowNs() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
  }

  Server* const server;
  int fd;
  const uint64_t id;
  // I/O thread only.
  std::string in;
  bool hello_done = false;
  bool closing = false;  // answered a malformed frame: close once flushed
  bool registered = false;  // with epoll
  uint32_t interest = 0;
  Clock::time_point last_input = Clock::now();
  // Shared.
  std::atomic<uint32_t> in_flight{0};
  std::atomic<size_t> unsent{0};
  std::atomic<bool> wake_queued{false};
  std::atomic<bool> closed{false};
  std::atomic<uint32_t> subscriptions{0};
  // When unsent output last started waiting or last made progress.
  std::atomic<int64_t> output_waiting_since_ns{0};
  std::mutex out_mu;
  std::string out;        // guarded by out_mu
  size_t out_offset = 0;  // guarded by out_mu
};

struct Subscription {
  std::weak_ptr<Connection> connection;
  uint32_t id = 0;
  protocol::SubscribeRequest request;
  uint64_t next = 0;  // next version (one stream) or position (all) to deliver
  bool caught_up = false;   // subscription thread only
  std::atomic<bool> done{false};
  // Set by UNSUBSCRIBE; the subscription thread answers UNSUBSCRIBED with
  // this id once it has stopped, so no SUB_EVENTS can follow it.
  std::atomic<bool> unsubscribe{false};
  uint32_t unsubscribe_rid = 0;  // written before `unsubscribe` is set
};

namespace {

template <typename M>
std::string Frame(Op op, uint32_t rid, const M& m) {
  std::string out;
  protocol::AppendFrame(&out, op, rid, m);
  return out;
}

std::string ErrorFrame(uint32_t rid, const Status& s, Op op = Op::kError) {
  protocol::ErrorResponse e;
  e.code = protocol::ErrorCodeFor(s.code());
  e.actual_version = s.code() == StatusCode::kWrongExpectedVersion ? s.actual_version() : -1;
  e.message = s.message();
  return Frame(op, rid, e);
}

// How many of events[from..] fit one frame of at most `max_frame_bytes`
// whose body has `overhead` bytes besides the events.
size_t FittingCount(const std::vector<RecordedEvent>& events, size_t from, size_t max_frame_bytes,
                    size_t overhead) {
  size_t bytes = protocol::kFrameHeaderBytes + overhead, n = 0;
  for (size_t i = from; i < events.size(); ++i) {
    bytes += protocol::EncodedSize(events[i]);
    if (bytes > max_frame_bytes) break;
    ++n;
  }
  return n;
}

// SUB_EVENTS frames carrying all of `events`, each within the frame limit
// (an event too large for one frame still goes alone: the engine's limits
// keep it below the default frame size).
std::string SubEventFrames(uint32_t subscription_id, std::vector<RecordedEvent> events, size_t max_frame_bytes) {
  std::string frames;
  for (size_t at = 0; at < events.size();) {
    size_t n = std::max<size_t>(FittingCount(events, at, max_frame_bytes, 4), 1);
    protocol::EventsResponse chunk;
    chunk.events.assign(std::make_move_iterator(events.begin() + static_cast<ptrdiff_t>(at)),
                        std::make_move_iterator(events.begin() + static_cast<ptrdiff_t>(at + n)));
    protocol::AppendFrame(&frames, Op::kSubEvents, subscription_id, chunk);
    at += n;
  }
  return frames;
}

// Decodes a state request's body into the job's request.
template <typename M>
Status DecodeStateRequest(std::string_view body, StateJob::Request* out) {
  M m;
  Status s = protocol::Decode(body, &m);
  if (s.ok()) *out = std::move(m);
  return s;
}

// Cuts a plan's events to what fits one frame of `max_frame_bytes`; a plan
// cut short is no longer complete.
void FitPlanToFrame(StatePlan* plan, size_t max_frame_bytes) {
  size_t bytes = protocol::kStatePlanFrameOverheadBytes +
                 (plan->snapshot.has_value() ? protocol::EncodedSize(*plan->snapshot) : 0);
  size_t n = 0;
  for (const RecordedEvent& e : plan->events) {
    bytes += protocol::EncodedSize(e);
    if (bytes > max_frame_bytes) break;
    ++n;
  }
  if (n < plan->events.size()) {
    plan->events.resize(n);
    plan->complete = false;
  }
}

// Rewrites the request id of every frame in `frames`.
void SetRequestIds(std::string* frames, uint32_t request_id) {
  for (size_t at = 0; at + protocol::kFrameHeaderBytes <= frames->size();) {
    uint32_t length;
    std::memcpy(&length, frames->data() + at, 4);
    std::memcpy(frames->data() + at + 8, &request_id, 4);
    at += length;
  }
}

}  // namespace

Server::Server(const ServerConfig& config, std::unique_ptr<Store> store, Logger log)
    : config_(config), store_(std::move(store)), log_(std::move(log)) {}

Server::~Server() { (void)Shutdown(); }

Result<std::unique_ptr<Server>> Server::Start(const ServerConfig& config,
                                              std::unique_ptr<Store> store, StateOptions state,
                                              Logger log) {
  std::unique_ptr<Server> s(new Server(config, std::move(store), std::move(log)));
  state.log = s->log_;
  s->partitions_ = static_cast<uint32_t>(s->store_->GetStats().partitions.size());
  // Every error of the checkpoint store names its file.
  ANNAL_ASSIGN_OR_RETURN(s->checkpoints_, CheckpointStore::Open(CheckpointStorePath(config)));
  ANNAL_ASSIGN_OR_RETURN(s->states_, StateEngine::Open(s->store_.get(), std::move(state)));
  ANNAL_RETURN_IF_ERROR(s->Listen());
  if (config.metrics_port >= 0) {
    Server* raw = s.get();
    ANNAL_RETURN_IF_ERROR(s->metrics_.Start(config.listen_address, config.metrics_port, [raw] {
      return RenderPrometheus(raw->metrics_state_, raw->store_->GetStats(),
                              raw->states_->GetStats());
    }));
  }
  // Named here, by their creator, so the names are there when Start returns.
  s->io_thread_ = std::thread([raw = s.get()] { raw->IoLoop(); });
  ::pthread_setname_np(s->io_thread_.native_handle(), "network");
  s->sub_thread_ = std::thread([raw = s.get()] { raw->SubscriptionLoop(); });
  ::pthread_setname_np(s->sub_thread_.native_handle(), "subscriptions");
  s->state_thread_ = std::thread([raw = s.get()] { raw->StateLoop(); });
  ::pthread_setname_np(s->state_thread_.native_handle(), "state-loads");
  return s;
}

Status Server::Listen() {
  ANNAL_ASSIGN_OR_RETURN(listen_fd_, ListenTcp(config_.listen_address, config_.port, &port_));
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (epoll_fd_ < 0 || wake_fd_ < 0) return Status::FromErrno(errno, "epoll/eventfd");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = listen_fd_;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &ev);
  ev.data.fd = wake_fd_;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev);
  return Status::Ok();
}

void Server::Wake(const std::shared_ptr<Connection>& c) {
  if (c->wake_queued.exchange(true)) return;
  {
    std::lock_guard lock(wake_mu_);
    woken_.push_back(c);
  }
  uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof one);
}

// ---------------------------------------------------------------- I/O thread

void Server::IoLoop() {
  epoll_event events[256];
  Clock::time_point drain_deadline{};
  while (true) {
    int n = ::epoll_wait(epoll_fd_, events, 256, 100);
    for (int i = 0; i < n; ++i) {
      int fd = events[i].data.fd;
      if (fd == listen_fd_) {
        AcceptAll();
        continue;
      }
      if (fd == wake_fd_) {
        uint64_t v;
        (void)!::read(wake_fd_, &v, sizeof v);
        continue;
      }
      auto it = connections_.find(fd);
      if (it == connections_.end()) continue;
      std::shared_ptr<Connection> c = it->second;
      if (events[i].events & (EPOLLERR | EPOLLHUP)) {
        Close(c, "");
        continue;
      }
      if (events[i].events & EPOLLOUT) Flush(c);
      if (!c->closed && (events[i].events & EPOLLIN)) OnReadable(c);
    }
    HandleWakeups();
    CheckTimeouts();
    if (shutting_down_) {
      if (drain_deadline == Clock::time_point{}) {
        drain_deadline = Clock::now() + kShutdownDrainTimeout;
        ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, listen_fd_, nullptr);
        for (auto& [fd, c] : connections_) UpdateInterest(c);
      }
      if (Drained() || Clock::now() > drain_deadline) break;
    }
  }
  std::vector<std::shared_ptr<Connection>> all;
  for (auto& [fd, c] : connections_) all.push_back(c);
  for (auto& c : all) Close(c, "");
}

void Server::AcceptAll() {
  while (true) {
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    if (connections_.size() >= config_.max_connections || shutting_down_) {
      std::string refusal = ErrorFrame(0, Status::Overloaded("annald is at its connection limit (" +
                                                             std::to_string(config_.max_connections) + ")"));
      (void)!::send(fd, refusal.data(), refusal.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      ::close(fd);
      continue;
    }
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    auto c = std::make_shared<Connection>(this, fd, next_connection_id_++);
    connections_[fd] = c;
    metrics_state_.connections_accepted++;
    metrics_state_.connections++;
    UpdateInterest(c);
  }
}

void Server::HandleWakeups() {
  std::vector<std::shared_ptr<Connection>> woken;
  {
    std::lock_guard lock(wake_mu_);
    woken.swap(woken_);
  }
  for (auto& c : woken) {
    c->wake_queued = false;
    if (c->closed) continue;
    Flush(c);
    if (!c->closed) {
      UpdateInterest(c);
      // Requests may be waiting in the buffer while reading was paused.
      if (!c->in.empty()) ParseFrames(c);
    }
  }
}

// Reading pauses while the connection has too much in flight or unsent,
// after a malformed frame, and during shutdown.
void Server::UpdateInterest(const std::shared_ptr<Connection>& c) {
  if (c->closed) return;
  bool reading = !c->closing && !shutting_down_ && c->in_flight < config_.max_in_flight &&
                 c->unsent < kOutputHighWaterBytes;
  bool writing = c->unsent > 0;
  uint32_t want = (reading ? EPOLLIN : 0u) | (writing ? EPOLLOUT : 0u);
  if (c->registered && want == c->interest) return;
  epoll_event ev{};
  ev.events = want;  // EPOLLERR and EPOLLHUP are always reported
  ev.data.fd = c->fd;
  ::epoll_ctl(epoll_fd_, c->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &ev);
  c->registered = true;
  c->interest = want;
}

void Server::OnReadable(const std::shared_ptr<Connection>& c) {
  char buf[64 * 1024];
  size_t total = 0;
  while (total < kReadChunkBytes) {
    ssize_t n = ::recv(c->fd, buf, sizeof buf, 0);
    if (n > 0) {
      c->in.append(buf, static_cast<size_t>(n));
      total += static_cast<size_t>(n);
      continue;
    }
    if (n == 0) {
      Close(c, "");
      return;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
    if (errno == EINTR) continue;
    Close(c, std::string("read: ") + std::strerror(errno));
    return;
  }
  if (total > 0) c->last_input = Clock::now();
  ParseFrames(c);
}

void Server::ParseFrames(const std::shared_ptr<Connection>& c) {
  size_t at = 0;
  while (!c->closed && !c->closing && !shutting_down_ && c->in_flight < config_.max_in_flight &&
         c->unsent < kOutputHighWaterBytes && c->in.size() - at >= protocol::kFrameHeaderBytes) {
    protocol::FrameHeader h;
    Status s = protocol::DecodeFrameHeader(reinterpret_cast<const uint8_t*>(c->in.data() + at),
                                           config_.max_frame_bytes, &h);
    if (!s.ok()) {
      uint32_t rid = 0;
      std::memcpy(&rid, c->in.data() + at + 8, 4);
      Fail(c, rid, s, /*close=*/true);
      break;
    }
    if (c->in.size() - at < h.length) break;  // the rest has not arrived
    std::string_view body(c->in.data() + at + protocol::kFrameHeaderBytes, h.length - protocol::kFrameHeaderBytes);
    Dispatch(c, h, body);
    at += h.length;
  }
  c->in.erase(0, at);
  if (!c->closed) UpdateInterest(c);
}

void Server::Dispatch(const std::shared_ptr<Connection>& c, const protocol::FrameHeader& h, std::string_view body) {
  if (!protocol::IsRequest(h.op))
    return Fail(c, h.request_id, Status::InvalidArgument(std::string("a client may not send ") + protocol::OpName(h.op)), true);
  if (!c->hello_done && h.op != Op::kHello)
    return Fail(c, h.request_id, Status::InvalidArgument("the first frame must be HELLO"), true);
  switch (h.op) {
    case Op::kHello: return HandleHello(c, h.request_id, body);
    case Op::kPing: {
      protocol::Ping p;
      Status s = protocol::Decode(body, &p);
      if (!s.ok()) return Fail(c, h.request_id, s, true);
      return c->Send(Frame(Op::kPong, h.request_id, p));
    }
    case Op::kAppend: return HandleAppend(c, h.request_id, body);
    case Op::kReadStream: return HandleReadStream(c, h.request_id, body);
    case Op::kReadAll: return HandleReadAll(c, h.request_id, body);
    case Op::kStreamInfo: return HandleStreamInfo(c, h.request_id, body);
    case Op::kReadHead: return HandleReadHead(c, h.request_id, body);
    case Op::kReadAllRange: return HandleReadAllRange(c, h.request_id, body);
    case Op::kSubscribe: return HandleSubscribe(c, h.request_id, body);
    case Op::kUnsubscribe: return HandleUnsubscribe(c, h.request_id, body);
    case Op::kLoadState:
    case Op::kWriteSnapshot:
    case Op::kListSnapshots:
    case Op::kGetCheckpoint:
    case Op::kSetCheckpoint:
    case Op::kDeleteCheckpoint:
    case Op::kListCheckpoints: return HandleStateRequest(c, h.op, h.request_id, body);
    default: return Fail(c, h.request_id, Status::InvalidArgument("unexpected opcode"), true);
  }
}

void Server::Fail(const std::shared_ptr<Connection>& c, uint32_t rid, const Status& s, bool close) {
  if (close) {
    metrics_state_.protocol_errors++;
    log_("connection " + std::to_string(c->id) + ": closing after " + s.ToString());
    c->closing = true;
  }
  c->Send(ErrorFrame(rid, s));
}

void Server::HandleHello(const std::shared_ptr<Connection>& c, uint32_t rid, std::string_view body) {
  protocol::Hello hello;
  Status s = protocol::Decode(body, &hello);
  if (!s.ok()) return Fail(c, rid, s, true);
  if (c->hello_done) return Fail(c, rid, Status::InvalidArgument("HELLO was already sent"), true);
  if (hello.version != protocol::kProtocolVersion) {
    c->closing = true;
    protocol::ErrorResponse e{ErrorCode::kUnsupportedVersion, -1,
                              "protocol version " + std::to_string(hello.version) +
                                  " is not supported; this server speaks version " +
                                  std::to_string(protocol::kProtocolVersion)};
    return c->Send(Frame(Op::kError, rid, e));
  }
  c->hello_done = true;
  protocol::HelloOk ok;
  ok.max_frame_bytes = config_.max_frame_bytes;
  ok.max_in_flight = config_.max_in_flight;
  ok.server_name = "annald";
  c->Send(Frame(Op::kHelloOk, rid, ok));
}

void Server::HandleAppend(const std::shared_ptr<Connection>& c, uint32_t rid, std::string_view body) {
  protocol::AppendRequest req;
  Status s = protocol::Decode(body, &req);
  if (!s.ok()) return Fail(c, rid, s, true);
  if (req.events.size() > config_.max_events_per_append) {
    metrics_state_.append_errors++;
    return Fail(c, rid, Status::TooLarge("an append may hold at most " + std::to_string(config_.max_events_per_append) +
                                         " events; this one has " + std::to_string(req.events.size())), false);
  }
  // Every event must also fit a read response, which repeats stream,
  // version, position and time per event; else it could never be read back.
  for (const EventData& e : req.events) {
    size_t need = protocol::kEventsFrameOverheadBytes +
                  protocol::EncodedEventSize(req.stream.size(), e.type.size(), e.metadata.size(), e.payload.size());
    if (need > config_.max_frame_bytes) {
      metrics_state_.append_errors++;
      return Fail(c, rid, Status::TooLarge("an event of this size could not be read back within the frame limit of " +
                                           std::to_string(config_.max_frame_bytes) + " bytes (it needs " +
                                           std::to_string(need) + ")"), false);
    }
  }
  c->in_flight++;
  size_t events = req.events.size();
  Clock::time_point arrived = Clock::now();
  std::weak_ptr<Connection> weak = c;
  store_->AppendAsync(std::move(req.stream), req.expected, std::move(req.events),
                      [this, weak, rid, events, arrived](Result<AppendResult> r) {
                        std::shared_ptr<Connection> conn = weak.lock();
                        if (r.ok()) {
                          metrics_state_.appends++;
                          metrics_state_.append_events += events;
                        } else {
                          metrics_state_.append_errors++;
                        }
                        metrics_state_.append_seconds.Observe(
                            std::chrono::duration<double>(Clock::now() - arrived).count());
                        if (!conn) return;
                        // Queue the answer before the in-flight count drops,
                        // so a draining shutdown never sees the connection
                        // idle with the answer unsent; wake again so a
                        // connection paused at max_in_flight reads on.
                        conn->Send(r.ok() ? Frame(Op::kAppendOk, rid, *r) : ErrorFrame(rid, r.status()));
                        conn->in_flight--;
                        Wake(conn);
                      });
}

void Server::HandleReadStream(const std::shared_ptr<Connection>& c, uint32_t rid, std::string_view body) {
  protocol::ReadStreamRequest req;
  Status s = protocol::Decode(body, &req);
  if (!s.ok()) return Fail(c, rid, s, true);
  metrics_state_.reads++;
  uint32_t max = std::min(req.max_count, config_.max_read_count);
  auto events = store_->ReadStream(req.stream, StreamVersion(req.from_version), req.direction, max);
  if (!events.ok()) return c->Send(ErrorFrame(rid, events.status()));
  protocol::EventsResponse resp;
  resp.events = std::move(*events);
  resp.events.resize(FittingCount(resp.events, 0, config_.max_frame_bytes, 4));
  c->Send(Frame(Op::kEvents, rid, resp));
}

void Server::HandleReadAll(const std::shared_ptr<Connection>& c, uint32_t rid, std::string_view body) {
  protocol::ReadAllRequest req;
  Status s = protocol::Decode(body, &req);
  if (!s.ok()) return Fail(c, rid, s, true);
  metrics_state_.reads++;
  auto page = ReadAllPage(req.from_position, UINT64_MAX, req.max_count, req.filter);
  c->Send(page.ok() ? Frame(Op::kAllEvents, rid, *page) : ErrorFrame(rid, page.status()));
}

void Server::HandleReadAllRange(const std::shared_ptr<Connection>& c, uint32_t rid, std::string_view body) {
  protocol::ReadAllRangeRequest req;
  Status s = protocol::Decode(body, &req);
  if (!s.ok()) return Fail(c, rid, s, true);
  metrics_state_.reads++;
  auto page = ReadAllPage(req.from_position, req.until_position, req.max_count, req.filter);
  c->Send(page.ok() ? Frame(Op::kAllEvents, rid, *page) : ErrorFrame(rid, page.status()));
}

Result<protocol::AllEventsResponse> Server::ReadAllPage(uint64_t from, uint64_t until, uint32_t max_count,
                                                        const protocol::Filter& filter) {
  uint32_t max = std::min(max_count, config_.max_read_count);
  protocol::AllEventsResponse resp;
  uint64_t next = std::max<uint64_t>(from, 1);
  // Nothing past the durable head is readable yet; nothing past `until`
  // belongs to this slice. `limit` + 1 cannot overflow: the head is far
  // below UINT64_MAX.
  const uint64_t limit = std::min(until, store_->DurableHead().get());
  // A selective filter may skip much of the log: scan a bounded amount,
  // and say where to continue.
  uint64_t scan_budget = uint64_t{config_.max_read_count} * 10;
  size_t bytes = protocol::kEventsFrameOverheadBytes;
  bool full = false;
  while (!full && next <= limit && resp.events.size() < max && scan_budget > 0) {
    uint64_t want = std::min<uint64_t>({scan_budget, 1000, limit - next + 1});
    ANNAL_ASSIGN_OR_RETURN(std::vector<RecordedEvent> chunk, store_->ReadAll(GlobalPosition(next), want));
    if (chunk.empty()) {
      next = limit + 1;
      break;
    }
    for (RecordedEvent& e : chunk) {
      if (e.position.get() > limit) {
        next = limit + 1;
        full = true;
        break;
      }
      if (resp.events.size() >= max || bytes + protocol::EncodedSize(e) > config_.max_frame_bytes) {
        full = true;
        break;
      }
      next = e.position.get() + 1;
      --scan_budget;
      if (!filter.Matches(e)) continue;
      bytes += protocol::EncodedSize(e);
      resp.events.push_back(std::move(e));
    }
  }
  resp.next_position = next;
  return resp;
}

void Server::HandleReadHead(const std::shared_ptr<Connection>& c, uint32_t rid, std::string_view body) {
  if (!body.empty()) return Fail(c, rid, Status::InvalidArgument("malformed frame: READ_HEAD has a body"), true);
  metrics_state_.reads++;
  protocol::HeadInfo info;
  info.durable_head = store_->DurableHead().get();
  info.partitions = partitions_;
  if (info.durable_head != 0) {
    auto last = store_->ReadEvent(GlobalPosition(info.durable_head));
    if (!last.ok()) return c->Send(ErrorFrame(rid, last.status()));
    info.last_recorded_at_ns = last->recorded_at_ns;
  }
  c->Send(Frame(Op::kHeadInfo, rid, info));
}

void Server::HandleStreamInfo(const std::shared_ptr<Connection>& c, uint32_t rid, std::string_view body) {
  protocol::StreamInfoRequest req;
  Status s = protocol::Decode(body, &req);
  if (!s.ok()) return Fail(c, rid, s, true);
  metrics_state_.reads++;
  auto info = store_->GetStreamInfo(req.stream);
  c->Send(info.ok() ? Frame(Op::kStreamInfoOk, rid, *info) : ErrorFrame(rid, info.status()));
}

void Server::HandleSubscribe(const std::shared_ptr<Connection>& c, uint32_t rid, std::string_view body) {
  auto sub = std::make_shared<Subscription>();
  Status s = protocol::Decode(body, &sub->request);
  if (!s.ok()) return Fail(c, rid, s, true);
  {
    std::lock_guard lock(subs_mu_);
    for (auto& other : subs_)
      if (other->id == rid && !other->done && other->connection.lock() == c)
        return Fail(c, rid, Status::InvalidArgument("subscription id " + std::to_string(rid) + " is already in use"), false);
  }
  sub->connection = c;
  sub->id = rid;
  sub->next = sub->request.scope == protocol::SubscribeRequest::Scope::kAll ? std::max<uint64_t>(sub->request.from, 1)
                                                                            : sub->request.from;
  c->subscriptions++;
  metrics_state_.subscriptions++;
  // SUBSCRIBED goes out before any SUB_EVENTS: both go through the outbox,
  // and the subscription thread only sees the subscription after this.
  c->Send(Frame(Op::kSubscribed, rid, protocol::SubscribedResponse{store_->DurableHead().get()}));
  {
    std::lock_guard lock(subs_mu_);
    subs_.push_back(std::move(sub));
  }
  subs_cv_.notify_one();
}

void Server::HandleUnsubscribe(const std::shared_ptr<Connection>& c, uint32_t rid, std::string_view body) {
  protocol::UnsubscribeRequest req;
  Status s = protocol::Decode(body, &req);
  if (!s.ok()) return Fail(c, rid, s, true);
  {
    std::lock_guard lock(subs_mu_);
    for (auto& sub : subs_) {
      if (sub->id == req.subscription_id && !sub->done && !sub->unsubscribe && sub->connection.lock() == c) {
        sub->unsubscribe_rid = rid;
        sub->unsubscribe = true;  // the subscription thread answers
        return;
      }
    }
  }
  // Not (or no longer) subscribed: nothing to stop.
  std::string out;
  protocol::AppendEmptyFrame(&out, Op::kUnsubscribed, rid);
  c->Send(std::move(out));
}

void Server::HandleStateRequest(const std::shared_ptr<Connection>& c, Op op, uint32_t rid,
                                std::string_view body) {
  StateJob job{c, rid, {}, Clock::now()};
  Status s;
  switch (op) {
    case Op::kLoadState:
      s = DecodeStateRequest<protocol::LoadStateRequest>(body, &job.request);
      break;
    case Op::kWriteSnapshot:
      s = DecodeStateRequest<protocol::WriteSnapshotRequest>(body, &job.request);
      break;
    case Op::kListSnapshots:
      s = DecodeStateRequest<protocol::ListSnapshotsRequest>(body, &job.request);
      break;
    case Op::kGetCheckpoint:
      s = DecodeStateRequest<protocol::GetCheckpointRequest>(body, &job.request);
      break;
    case Op::kSetCheckpoint:
      s = DecodeStateRequest<protocol::SetCheckpointRequest>(body, &job.request);
      break;
    case Op::kDeleteCheckpoint:
      s = DecodeStateRequest<protocol::DeleteCheckpointRequest>(body, &job.request);
      break;
    case Op::kListCheckpoints:
      s = DecodeStateRequest<protocol::ListCheckpointsRequest>(body, &job.request);
      break;
    default:
      ANNAL_ASSERT_MSG(false, protocol::OpName(op));
  }
  if (!s.ok()) return Fail(c, rid, s, true);
  {
    std::lock_guard lock(state_mu_);
    if (state_jobs_.size() < kMaxQueuedStateJobs) {
      // Counted in flight until the worker answers, like an append.
      c->in_flight++;
      state_jobs_.push_back(std::move(job));
      state_cv_.notify_one();
      return;
    }
  }
  metrics_state_.state_overloaded++;
  c->Send(ErrorFrame(rid, Status::Overloaded("annald has " + std::to_string(kMaxQueuedStateJobs) +
                                             " state requests queued; try again later")));
}

void Server::Flush(const std::shared_ptr<Connection>& c) {
  std::unique_lock lock(c->out_mu);
  while (c->out_offset < c->out.size()) {
    ssize_t n = ::send(c->fd, c->out.data() + c->out_offset, c->out.size() - c->out_offset,
                       MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      c->out_offset += static_cast<size_t>(n);
      c->output_waiting_since_ns = Connection::NowNs();
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n < 0 && errno == EINTR) continue;
    lock.unlock();
    Close(c, "");
    return;
  }
  if (c->out_offset == c->out.size()) {
    c->out.clear();
    c->out_offset = 0;
  } else if (c->out_offset > (1u << 20)) {
    c->out.erase(0, c->out_offset);
    c->out_offset = 0;
  }
  c->unsent = c->out.size() - c->out_offset;
  // After a malformed frame: close once every answer, including those of
  // appends still in flight, has been sent.
  bool done_closing = c->closing && c->unsent == 0 && c->in_flight == 0;
  lock.unlock();
  if (done_closing) return Close(c, "");
  UpdateInterest(c);
}

void Server::Close(const std::shared_ptr<Connection>& c, const std::string& why) {
  if (c->closed.exchange(true)) return;
  if (!why.empty()) log_("connection " + std::to_string(c->id) + ": closed: " + why);
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, c->fd, nullptr);
  connections_.erase(c->fd);
  ::shutdown(c->fd, SHUT_RDWR);
  metrics_state_.connections--;
}

void Server::CheckTimeouts() {
  Clock::time_point now = Clock::now();
  std::vector<std::pair<std::shared_ptr<Connection>, std::string>> expired;
  for (auto& [fd, c] : connections_) {
    bool idle = c->in_flight == 0 && c->subscriptions == 0 && c->unsent == 0;
    if (idle && now - c->last_input > std::chrono::milliseconds(config_.idle_timeout_ms))
      expired.emplace_back(c, "idle for " + std::to_string(config_.idle_timeout_ms) + " ms");
    else if (c->unsent > 0 &&
             Connection::NowNs() - c->output_waiting_since_ns > int64_t(config_.slow_reader_timeout_ms) * 1'000'000)
      expired.emplace_back(c, "took no data for " + std::to_string(config_.slow_reader_timeout_ms) + " ms (slow reader)");
  }
  for (auto& [c, why] : expired) Close(c, why);
}

bool Server::Drained() {
  for (auto& [fd, c] : connections_)
    if (c->in_flight > 0 || c->unsent > 0) return false;
  return true;
}

// ---------------------------------------------------------------- subscriptions

void Server::SubscriptionLoop() {
  while (!stop_subscriptions_) {
    std::vector<std::shared_ptr<Subscription>> subs;
    {
      std::unique_lock lock(subs_mu_);
      subs_cv_.wait(lock, [&] { return stop_subscriptions_ || !subs_.empty(); });
      subs = subs_;
    }
    uint64_t head = store_->DurableHead().get();
    bool progress = false;
    // Subscribers of the whole log at the same position share one read.
    std::map<uint64_t, std::vector<Subscription*>> by_position;
    for (auto& s : subs) {
      if (!Ready(*s, head)) continue;
      if (s->request.scope == protocol::SubscribeRequest::Scope::kStream)
        progress |= ServeStream(*s, head);
      else if (s->next <= head)
        by_position[s->next].push_back(s.get());
      else
        MarkCaughtUp(*s, head);
    }
    for (auto& [position, group] : by_position) progress |= ServeAll(position, group, head);
    {
      std::lock_guard lock(subs_mu_);
      auto gone = std::remove_if(subs_.begin(), subs_.end(), [&](const std::shared_ptr<Subscription>& s) {
        if (!s->done && !s->unsubscribe) return false;
        if (auto c = s->connection.lock()) {
          c->subscriptions--;
          if (s->unsubscribe) {
            std::string out;
            protocol::AppendEmptyFrame(&out, Op::kUnsubscribed, s->unsubscribe_rid);
            c->Send(std::move(out));
          }
        }
        metrics_state_.subscriptions--;
        return true;
      });
      subs_.erase(gone, subs_.end());
    }
    // Wait for new events; wake now and then for new subscriptions and
    // subscribers whose connection drained.
    if (!progress) store_->WaitForDurableHead(GlobalPosition(head), std::chrono::milliseconds(5));
  }
}

// False when `s` should get nothing this turn: ended, its connection gone,
// or its connection has too much unsent (then it may be dropped for lag).
bool Server::Ready(Subscription& s, uint64_t head) {
  if (s.done || s.unsubscribe) return false;
  std::shared_ptr<Connection> c = s.connection.lock();
  if (!c || c->closed) {
    s.done = true;
    return false;
  }
  if (c->unsent < config_.subscription_buffer_bytes) return true;
  // The subscriber is slow: produce nothing more for it now (appenders and
  // other subscribers go on); it reads from the log again once it drains.
  uint64_t position = s.request.scope == protocol::SubscribeRequest::Scope::kAll ? s.next : 0;
  if (position != 0 && head > position && head - position > config_.max_subscription_lag)
    Drop(s, *c, "fell " + std::to_string(head - position) + " positions behind the head (limit " +
                    std::to_string(config_.max_subscription_lag) + "); resubscribe from position " +
                    std::to_string(position));
  return false;
}

void Server::MarkCaughtUp(Subscription& s, uint64_t head) {
  if (s.caught_up) return;
  s.caught_up = true;
  if (auto c = s.connection.lock()) c->Send(Frame(Op::kCaughtUp, s.id, protocol::CaughtUp{head}));
}

// Serves every subscriber of the whole log waiting at `position` from one
// read. Subscribers without a filter get the same frames, encoded once.
bool Server::ServeAll(uint64_t position, const std::vector<Subscription*>& group, uint64_t head) {
  auto events = store_->ReadAll(GlobalPosition(position), kSubscriptionBatchEvents);
  if (!events.ok()) {
    for (Subscription* s : group)
      if (auto c = s->connection.lock()) Drop(*s, *c, "reading the log failed: " + events.status().ToString());
    return false;
  }
  uint64_t next = events->empty() ? head + 1 : events->back().position.get() + 1;
  std::string unfiltered;  // SUB_EVENTS frames with subscription id 0
  for (Subscription* s : group) {
    std::shared_ptr<Connection> c = s->connection.lock();
    if (!c) continue;
    std::string frames;
    if (s->request.filter.empty()) {
      if (unfiltered.empty() && !events->empty())
        unfiltered = SubEventFrames(0, *events, config_.max_frame_bytes);
      frames = unfiltered;
      SetRequestIds(&frames, s->id);
      metrics_state_.subscription_events += events->size();
    } else {
      std::vector<RecordedEvent> matched;
      for (const RecordedEvent& e : *events)
        if (s->request.filter.Matches(e)) matched.push_back(e);
      metrics_state_.subscription_events += matched.size();
      if (!matched.empty()) frames = SubEventFrames(s->id, std::move(matched), config_.max_frame_bytes);
    }
    if (!frames.empty()) c->Send(std::move(frames));
    s->next = next;
    if (next > head) MarkCaughtUp(*s, head);
  }
  return true;
}

bool Server::ServeStream(Subscription& s, uint64_t head) {
  std::shared_ptr<Connection> c = s.connection.lock();
  if (!c) return false;
  auto info = store_->GetStreamInfo(s.request.stream);
  if (!info.ok() && info.status().code() != StatusCode::kNotFound) {
    Drop(s, *c, info.status().ToString());
    return false;
  }
  bool progress = false;
  if (info.ok() && s.next <= info->head_version.get()) {
    auto events = store_->ReadStream(s.request.stream, StreamVersion(s.next), ReadDirection::kForward,
                                     kSubscriptionBatchEvents);
    if (!events.ok()) {
      Drop(s, *c, "reading the stream failed: " + events.status().ToString());
      return false;
    }
    if (!events->empty()) {
      s.next = events->back().version.get() + 1;
      metrics_state_.subscription_events += events->size();
      c->Send(SubEventFrames(s.id, std::move(*events), config_.max_frame_bytes));
      progress = true;
    }
  }
  bool at_head = !info.ok() || s.next > info->head_version.get();
  if (at_head) MarkCaughtUp(s, head);
  return progress;
}

void Server::Drop(Subscription& s, Connection& c, const std::string& why) {
  s.done = true;
  metrics_state_.subscriptions_dropped++;
  log_("connection " + std::to_string(c.id) + ": subscription " + std::to_string(s.id) + " dropped: " + why);
  protocol::ErrorResponse e{ErrorCode::kSubscriptionDropped, -1, "subscription dropped: " + why};
  c.Send(Frame(Op::kSubDropped, s.id, e));
}

// ---------------------------------------------------------------- state worker

void Server::StateLoop() {
  while (true) {
    StateJob job;
    {
      std::unique_lock lock(state_mu_);
      state_cv_.wait(lock, [&] { return stop_state_ || !state_jobs_.empty(); });
      if (state_jobs_.empty()) return;  // stopping, and nothing is left
      job = std::move(state_jobs_.front());
      state_jobs_.pop_front();
    }
    std::shared_ptr<Connection> c = job.connection.lock();
    if (!c) continue;
    std::string answer;
    // Nobody is left to answer on a closed connection: skip the work.
    if (!c->closed) {
      bool state_request = true;
      answer = std::visit(
          [&](auto& req) {
            using R = std::decay_t<decltype(req)>;
            if constexpr (std::is_same_v<R, protocol::LoadStateRequest>)
              return LoadState(job.request_id, req);
            else if constexpr (std::is_same_v<R, protocol::WriteSnapshotRequest>)
              return WriteSnapshot(job.request_id, std::move(req));
            else if constexpr (std::is_same_v<R, protocol::ListSnapshotsRequest>)
              return ListSnapshots(job.request_id, req);
            else {
              state_request = false;
              if constexpr (std::is_same_v<R, protocol::GetCheckpointRequest>)
                return GetCheckpoint(job.request_id, req);
              else if constexpr (std::is_same_v<R, protocol::SetCheckpointRequest>)
                return SetCheckpoint(job.request_id, req);
              else if constexpr (std::is_same_v<R, protocol::DeleteCheckpointRequest>)
                return DeleteCheckpoint(job.request_id, req);
              else
                return ListCheckpoints(job.request_id, req);
            }
          },
          job.request);
      if (state_request) {
        metrics_state_.state_requests++;
        metrics_state_.state_seconds.Observe(
            std::chrono::duration<double>(Clock::now() - job.arrived).count());
      }
    }
    // The answer is queued before the request stops counting, so that
    // Shutdown's drain, which waits for both, cannot miss it; the second
    // wake lets the I/O thread see the lower count (reading may resume, a
    // closing connection may close).
    if (!answer.empty()) c->Send(std::move(answer));
    c->in_flight--;
    Wake(c);
  }
}

// STATE when this server folds the stream's category itself and the client
// did not ask for another reducer or for the plan; STATE_PLAN otherwise.
std::string Server::LoadState(uint32_t rid, const protocol::LoadStateRequest& req) {
  std::shared_ptr<const Reducer> reducer = states_->ReducerFor(req.stream);
  if (!req.plan_only && reducer != nullptr &&
      (req.reducer.empty() || req.reducer == reducer->name())) {
    auto state = states_->Load(req.stream, req.target, reducer.get());
    if (!state.ok()) return ErrorFrame(rid, state.status());
    size_t state_bytes = state->state.size();
    std::string frame = Frame(Op::kState, rid, protocol::StateResponse{std::move(*state)});
    if (frame.size() > config_.max_frame_bytes)
      return ErrorFrame(
          rid, Status::TooLarge("the state of " + req.stream + " is " +
                                std::to_string(state_bytes) + " bytes, more than a frame of " +
                                std::to_string(config_.max_frame_bytes) +
                                " bytes holds; load it with plan_only and fold it in the client"));
    return frame;
  }
  size_t max_events = req.max_events == 0 ? config_.max_read_count
                                          : std::min(req.max_events, config_.max_read_count);
  auto plan = states_->Plan(req.stream, req.target, req.reducer, req.schema_version, max_events);
  if (!plan.ok()) return ErrorFrame(rid, plan.status());
  // A snapshot too large for a frame is of no use to the client: it gets
  // the events from version 0 instead.
  if (plan->snapshot.has_value() &&
      protocol::kStatePlanFrameOverheadBytes + protocol::EncodedSize(*plan->snapshot) >
          config_.max_frame_bytes) {
    plan = states_->Plan(req.stream, req.target, "", 0, max_events);
    if (!plan.ok()) return ErrorFrame(rid, plan.status());
  }
  FitPlanToFrame(&*plan, config_.max_frame_bytes);
  return Frame(Op::kStatePlan, rid, protocol::StatePlanResponse{std::move(*plan)});
}

std::string Server::WriteSnapshot(uint32_t rid, protocol::WriteSnapshotRequest req) {
  // The server's own reducer is fed only by the server's own snapshots: a
  // client's state under that name would be served as the server's.
  std::shared_ptr<const Reducer> own = states_->ReducerFor(req.snapshot.stream);
  if (own != nullptr && own->name() == req.snapshot.reducer)
    return ErrorFrame(rid, Status::InvalidArgument("stream " + req.snapshot.stream +
                                                   " is folded on the server by '" + own->name() +
                                                   "', whose snapshots the server takes itself"));
  auto recorded_at_ns = states_->WriteSnapshot(std::move(req.snapshot));
  if (!recorded_at_ns.ok()) return ErrorFrame(rid, recorded_at_ns.status());
  return Frame(Op::kSnapshotWritten, rid, protocol::SnapshotWritten{*recorded_at_ns});
}

std::string Server::ListSnapshots(uint32_t rid, const protocol::ListSnapshotsRequest& req) {
  auto list = states_->ListSnapshots(req.stream);
  if (!list.ok()) return ErrorFrame(rid, list.status());
  // The newest that fit one frame (a stream may keep many sparse ones).
  size_t bytes = protocol::kSnapshotsFrameOverheadBytes, keep = 0;
  for (auto it = list->rbegin(); it != list->rend(); ++it, ++keep) {
    bytes += protocol::EncodedSnapshotInfoSize(*it);
    if (bytes > config_.max_frame_bytes) break;
  }
  list->erase(list->begin(), list->end() - static_cast<ptrdiff_t>(keep));
  return Frame(Op::kSnapshots, rid, protocol::SnapshotsResponse{std::move(*list)});
}

// ---------------------------------------------------------------- checkpoints
// On the state worker thread, like the state requests: a Set waits for an
// fsync, which must not stall the I/O thread.

std::string Server::GetCheckpoint(uint32_t rid, const protocol::GetCheckpointRequest& req) {
  metrics_state_.checkpoint_reads++;
  auto checkpoint = checkpoints_->Get(req.name);
  if (!checkpoint.ok()) return ErrorFrame(rid, checkpoint.status());
  protocol::CheckpointResponse resp{std::move(*checkpoint)};
  std::string frame = Frame(Op::kCheckpoint, rid, resp);
  // Only a frame limit below the blob limit can make this happen.
  if (frame.size() > config_.max_frame_bytes)
    return ErrorFrame(rid, Status::TooLarge("the checkpoint of consumer '" + req.name + "' is " +
                                            std::to_string(frame.size()) + " bytes on the wire, more than a frame of " +
                                            std::to_string(config_.max_frame_bytes) + " bytes holds"));
  return frame;
}

std::string Server::SetCheckpoint(uint32_t rid, const protocol::SetCheckpointRequest& req) {
  metrics_state_.checkpoint_writes++;
  // A conflict comes back as kWrongExpectedVersion carrying the stored
  // position (-1: none), which ErrorFrame puts in actual_version.
  auto updated_at_ns = checkpoints_->Set(req.name, GlobalPosition(req.position), req.blob, req.expected);
  if (!updated_at_ns.ok()) return ErrorFrame(rid, updated_at_ns.status());
  return Frame(Op::kCheckpointSet, rid, protocol::CheckpointSet{*updated_at_ns});
}

std::string Server::DeleteCheckpoint(uint32_t rid, const protocol::DeleteCheckpointRequest& req) {
  metrics_state_.checkpoint_writes++;
  auto existed = checkpoints_->Delete(req.name);
  if (!existed.ok()) return ErrorFrame(rid, existed.status());
  return Frame(Op::kCheckpointDeleted, rid, protocol::CheckpointDeleted{*existed});
}

std::string Server::ListCheckpoints(uint32_t rid, const protocol::ListCheckpointsRequest& req) {
  metrics_state_.checkpoint_reads++;
  auto list = checkpoints_->List(req.prefix);
  if (!list.ok()) return ErrorFrame(rid, list.status());
  size_t bytes = protocol::kCheckpointsFrameOverheadBytes;
  for (const ConsumerCheckpoint& c : *list) bytes += protocol::EncodedCheckpointInfoSize(c);
  // A list cut short would look complete: refuse it instead.
  if (bytes > config_.max_frame_bytes)
    return ErrorFrame(rid, Status::TooLarge(std::to_string(list->size()) + " consumers start with '" + req.prefix +
                                            "', more than a frame of " + std::to_string(config_.max_frame_bytes) +
                                            " bytes holds; list them by longer prefixes"));
  return Frame(Op::kCheckpoints, rid, protocol::CheckpointsResponse{std::move(*list)});
}

// ---------------------------------------------------------------- shutdown

Status Server::Shutdown() {
  if (!io_thread_.joinable() && !sub_thread_.joinable() && !store_) return Status::Ok();
  {
    std::lock_guard lock(subs_mu_);
    stop_subscriptions_ = true;
  }
  subs_cv_.notify_all();
  if (sub_thread_.joinable()) sub_thread_.join();
  shutting_down_ = true;
  if (wake_fd_ >= 0) {
    uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof one);
  }
  if (io_thread_.joinable()) io_thread_.join();
  // The I/O thread waited for state requests in flight; what is still
  // queued belongs to closed connections and is skipped.
  {
    std::lock_guard lock(state_mu_);
    stop_state_ = true;
  }
  state_cv_.notify_all();
  if (state_thread_.joinable()) state_thread_.join();
  metrics_.Stop();
  if (states_) {
    states_->Close();
    states_.reset();
  }
  checkpoints_.reset();
  Status s = store_ ? store_->Close() : Status::Ok();
  for (int* fd : {&listen_fd_, &epoll_fd_, &wake_fd_})
    if (*fd >= 0) {
      ::close(*fd);
      *fd = -1;
    }
  return s;
}

}  // namespace annal::server
