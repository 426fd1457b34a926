// annal::client::Client over one TCP connection (see client.h).
//
// Threads. One I/O thread per client owns the socket and all connection
// state: the request table, the subscriptions, the send and receive buffers.
// Other threads reach it only through `inbox_`, a queue of closures guarded
// by `mu_`, and wake it through an eventfd. Callbacks run on the I/O thread
// with no lock held, except a subscription's own `callback_mu`, which
// Subscription::Stop takes to wait out a callback that is running.
//
// A request's life:
//
//   Submit (any thread) -> inbox_ -> requests_ + unsent_
//     -> sent with a fresh wire id (wire_to_seq_)
//     -> answered: erased and completed
//      | ERROR kUnavailable: sent again after a backoff (retry_at_)
//      | timed out: erased and failed
//      | connection lost: back to unsent_; the same body goes out again on
//        the next connection, under a new wire id.
//
// requests_ is keyed by a submission sequence number; every request gets the
// same timeout, so its order is also deadline order.
//
// A subscription's life: its SUBSCRIBE is a request whose answer, SUBSCRIBED,
// binds the wire id to the subscription (wire_to_sub_); pushed frames are
// routed there. Each delivered event advances the subscription's `from`, so
// after a reconnect a new SUBSCRIBE starts exactly after the last delivered
// event.
#include "annal/client.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>

#include "annal/assert.h"
#include "annal/limits.h"

namespace annal::client {
namespace {

using Clock = std::chrono::steady_clock;
using protocol::ErrorCode;
using protocol::Op;

// --- limits of the client beyond those in ClientOptions.
// Bytes asked of the socket per read.
constexpr size_t kReadChunkBytes = 256 * 1024;
// Reads per wake-up of the I/O thread, so a busy subscription cannot keep it
// from writing or from expiring requests.
constexpr int kMaxReadsPerWakeup = 16;
// Encoded frames waiting for the socket; further requests wait in unsent_
// until it drains (one larger frame is always let through).
constexpr size_t kMaxOutboundBytes = 4 * 1024 * 1024;
// Open subscriptions per client.
constexpr size_t kMaxSubscriptions = 4096;
// Subscription drops with kUnavailable in a row (no event in between) that
// are answered by subscribing again; one more ends the subscription.
constexpr int kMaxTransientDrops = 8;
// The longest the I/O thread sleeps in poll when it has nothing to wait for.
constexpr std::chrono::milliseconds kMaxPollWait{60'000};

std::string Endpoint(const ClientOptions& o) { return o.host + ":" + std::to_string(o.port); }

Status CannotConnect(const ClientOptions& o, const std::string& why) {
  return Status::Unavailable("cannot connect to " + Endpoint(o) + " — is annald running? (" + why + ")");
}

Status ProtocolError(const std::string& what) {
  return Status::Corruption("protocol error: " + what);
}

std::string ErrnoText(int err) { return std::strerror(err); }

int MillisUntil(Clock::time_point t) {
  auto left = std::chrono::ceil<std::chrono::milliseconds>(t - Clock::now()).count();
  return static_cast<int>(std::clamp<int64_t>(left, 0, kMaxPollWait.count()));
}

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    Reset(std::exchange(o.fd_, -1));
    return *this;
  }
  ~UniqueFd() { Reset(); }
  void Reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

// --- dialing: TCP connect and the HELLO handshake, blocking with a deadline.

struct Connection {
  UniqueFd fd;
  protocol::HelloOk hello;
  std::string leftover;  // bytes the server sent after HELLO_OK
};

// Waits until `fd` is ready for `events`; false when the deadline passed.
bool WaitReady(int fd, short events, Clock::time_point deadline) {
  while (true) {
    if (Clock::now() >= deadline) return false;
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, std::max(1, MillisUntil(deadline)));
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) return false;
  }
}

Result<UniqueFd> ConnectTcp(const ClientOptions& o, Clock::time_point deadline) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  int rc = ::getaddrinfo(o.host.c_str(), std::to_string(o.port).c_str(), &hints, &found);
  if (rc != 0) return CannotConnect(o, ::gai_strerror(rc));
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> guard(found, ::freeaddrinfo);
  std::string why = "no address";
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    UniqueFd fd(::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol));
    if (!fd.valid()) {
      why = ErrnoText(errno);
      continue;
    }
    if (::connect(fd.get(), a->ai_addr, a->ai_addrlen) != 0 && errno != EINPROGRESS) {
      why = ErrnoText(errno);
      continue;
    }
    if (!WaitReady(fd.get(), POLLOUT, deadline)) {
      why = "timed out after " + std::to_string(o.connect_timeout.count()) + " ms";
      continue;
    }
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    if (err != 0) {
      why = ErrnoText(err);
      continue;
    }
    int one = 1;
    if (::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) {
      why = "TCP_NODELAY: " + ErrnoText(errno);
      continue;
    }
    return fd;
  }
  return CannotConnect(o, why);
}

Status SendAll(int fd, std::string_view data, Clock::time_point deadline) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && errno == EAGAIN) {
      if (!WaitReady(fd, POLLOUT, deadline)) return Status::Unavailable("sending HELLO timed out");
    } else {
      return Status::Unavailable("sending HELLO: " + ErrnoText(errno));
    }
  }
  return Status::Ok();
}

// Reads into `in` until it holds one whole frame; returns its header.
Result<protocol::FrameHeader> ReadOneFrame(int fd, std::string* in, Clock::time_point deadline) {
  protocol::FrameHeader h;
  while (true) {
    if (in->size() >= protocol::kFrameHeaderBytes) {
      Status s = protocol::DecodeFrameHeader(reinterpret_cast<const uint8_t*>(in->data()),
                                             protocol::kDefaultMaxFrameBytes, &h);
      if (!s.ok()) return ProtocolError("handshake answer: " + s.message());
      if (in->size() >= h.length) return h;
    }
    if (!WaitReady(fd, POLLIN, deadline)) return Status::Unavailable("waiting for HELLO_OK timed out");
    char buf[4096];
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n > 0) {
      in->append(buf, static_cast<size_t>(n));
    } else if (n == 0) {
      return Status::Unavailable("the server closed the connection during the handshake");
    } else if (errno != EINTR && errno != EAGAIN) {
      return Status::Unavailable("reading HELLO_OK: " + ErrnoText(errno));
    }
  }
}

Result<Connection> Handshake(UniqueFd fd, const ClientOptions& o) {
  Clock::time_point deadline = Clock::now() + o.connect_timeout;
  std::string hello;
  protocol::AppendFrame(&hello, Op::kHello, 0, protocol::Hello{protocol::kProtocolVersion, o.client_name});
  ANNAL_RETURN_IF_ERROR(SendAll(fd.get(), hello, deadline));
  Connection c;
  ANNAL_ASSIGN_OR_RETURN(protocol::FrameHeader h, ReadOneFrame(fd.get(), &c.leftover, deadline));
  std::string_view body(c.leftover.data() + protocol::kFrameHeaderBytes, h.length - protocol::kFrameHeaderBytes);
  if (h.op == Op::kError) {
    protocol::ErrorResponse e;
    ANNAL_RETURN_IF_ERROR(protocol::Decode(body, &e));
    return protocol::ToStatus(e.code, e.actual_version, "annald at " + Endpoint(o) + " refused HELLO: " + e.message);
  }
  if (h.op != Op::kHelloOk) return ProtocolError(std::string("HELLO answered with ") + protocol::OpName(h.op));
  ANNAL_RETURN_IF_ERROR(protocol::Decode(body, &c.hello));
  if (c.hello.version != protocol::kProtocolVersion)
    return ProtocolError("HELLO_OK names protocol version " + std::to_string(c.hello.version));
  if (c.hello.max_frame_bytes < protocol::kMinMaxFrameBytes)
    return ProtocolError("HELLO_OK max_frame_bytes " + std::to_string(c.hello.max_frame_bytes) + " is below the minimum");
  c.leftover.erase(0, h.length);
  c.fd = std::move(fd);
  return c;
}

Result<Connection> Dial(const ClientOptions& o) {
  ANNAL_ASSIGN_OR_RETURN(UniqueFd fd, ConnectTcp(o, Clock::now() + o.connect_timeout));
  return Handshake(std::move(fd), o);
}

// --- requests and subscriptions.

struct Request {
  Op op = Op::kPing;
  Op expect = Op::kPong;      // the answer that means success; ERROR always may come
  Op expect_or = Op::kError;  // a second answer that does too (LOAD_STATE); kError: none
  std::string body;           // encoded once; sent again unchanged after a reconnect
  Clock::time_point deadline;
  // Decodes a successful answer (`op` is expect or expect_or) and completes
  // the caller; a non-ok return (malformed body) completes nothing and the
  // connection is dropped, so the request is sent again.
  std::function<Status(Op op, std::string_view body)> on_reply;
  std::function<void(Status)> on_fail;
  uint64_t sub_id = 0;   // SUBSCRIBE: the subscription it (re)starts
  bool resend = true;    // false for SUBSCRIBE and UNSUBSCRIBE: they belong to one connection
  bool counted = false;  // a caller's request, counted in pending_
  bool waiting_retry = false;
  int retries = 0;       // kUnavailable answers so far
  uint32_t wire_id = 0;  // its id on the current connection; 0 = not sent there
};

struct SubState {
  SubState(protocol::SubscribeRequest r, SubscriptionHandler h) : request(std::move(r)), handler(std::move(h)) {}
  // `from` is the first version (stream) or position (all) not yet delivered.
  protocol::SubscribeRequest request;
  SubscriptionHandler handler;
  std::function<void(Status)> on_subscribed;  // answers SubscribeTo*, once
  std::mutex callback_mu;                     // held while one of handler's callbacks runs
  std::atomic<bool> stopped{false};
  // Owned by the I/O thread.
  uint64_t id = 0;             // key in Core::subs_
  uint64_t subscribe_seq = 0;  // its SUBSCRIBE request while one is outstanding
  uint32_t wire_id = 0;        // its id on the current connection once SUBSCRIBED
  bool answered = false;       // on_subscribed ran
  bool caught_up = false;      // on_caught_up ran
  int transient_drops = 0;     // SUB_DROPPED kUnavailable in a row
};

thread_local const void* tls_io_core = nullptr;

class Core {
 public:
  Core(ClientOptions options, Connection c) : options_(std::move(options)) {
    if (!options_.log) options_.log = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
    Install(std::move(c));
  }
  ~Core() { ANNAL_ASSERT(!thread_.joinable()); }

  Status Start() {
    wake_.Reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (!wake_.valid()) return Status::FromErrno(errno, "eventfd");
    thread_ = std::thread([this] { Run(); });
    ::pthread_setname_np(thread_.native_handle(), "annal-client");
    return Status::Ok();
  }

  // Stops the I/O thread, which fails what is left. REQUIRES: not on it.
  void Shutdown() {
    ANNAL_ASSERT_MSG(!OnIoThread(), "an annal Client was destroyed from one of its own callbacks");
    {
      std::lock_guard lock(mu_);
      closing_ = true;
    }
    Wake();
    if (thread_.joinable()) thread_.join();
  }

  bool OnIoThread() const { return tls_io_core == this; }
  uint32_t max_frame_bytes() const { return max_frame_bytes_.load(std::memory_order_relaxed); }
  const ClientOptions& options() const { return options_; }

  // Any thread. Completes `r` at once (on this thread) when the client is
  // closed or has too many requests pending.
  void Submit(Request r) {
    r.counted = true;
    if (pending_.fetch_add(1) >= options_.max_pending_requests) {
      pending_.fetch_sub(1);
      r.on_fail(Status::Unavailable("too many requests pending (max_pending_requests = " +
                                    std::to_string(options_.max_pending_requests) + ")"));
      return;
    }
    auto shared = std::make_shared<Request>(std::move(r));
    if (!Post([this, shared] { AddRequest(std::move(*shared)); })) {
      pending_.fetch_sub(1);
      shared->on_fail(Status::Unavailable("the client is closed"));
    }
  }

  void AddSubscription(std::shared_ptr<SubState> s) {
    if (!Post([this, s] { OpenSubscription(s); })) s->on_subscribed(Status::Unavailable("the client is closed"));
  }

  void StopSubscription(const std::shared_ptr<SubState>& s) {
    if (OnIoThread()) {
      s->stopped = true;
    } else {
      std::lock_guard lock(s->callback_mu);
      s->stopped = true;
    }
    Post([this, s] { CloseSubscription(*s); });
  }

 private:
  // --- the inbox (any thread).
  bool Post(std::function<void()> fn) {
    bool wake;
    {
      std::lock_guard lock(mu_);
      if (closing_) return false;
      wake = inbox_.empty();
      inbox_.push_back(std::move(fn));
    }
    if (wake) Wake();
    return true;
  }
  void Wake() {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_.get(), &one, sizeof one);
  }
  // Runs what was posted; false once the client is closing.
  bool DrainInbox() {
    std::deque<std::function<void()>> work;
    bool closing;
    {
      std::lock_guard lock(mu_);
      work.swap(inbox_);
      closing = closing_;
    }
    for (auto& fn : work) fn();
    return !closing;
  }

  // --- the I/O thread.
  void Run() {
    tls_io_core = this;
    while (DrainInbox()) {
      Clock::time_point now = Clock::now();
      ExpireRequests(now);
      RetryDue(now);
      if (!fd_.valid() && reconnecting_ && reconnect_at_ <= now) Reconnect();
      if (fd_.valid()) Pump();
      if (fd_.valid() && !out_pending() && !unsent_.empty() && CanSend()) continue;
      PollOnce();
    }
    FailEverything(Status::Unavailable("the client was closed"));
    fd_.Reset();
  }

  // Fills the send buffer and writes what the socket takes.
  void Pump() {
    FillOutbound();
    Status s = WriteSocket();
    if (!s.ok()) Disconnect(s);
  }

  void PollOnce() {
    pollfd p[2] = {{wake_.get(), POLLIN, 0}, {fd_.get(), 0, 0}};
    nfds_t n = 1;
    if (fd_.valid()) {
      p[1].events = static_cast<short>(POLLIN | (out_pending() ? POLLOUT : 0));
      n = 2;
    }
    int rc = ::poll(p, n, PollTimeoutMs());
    if (rc <= 0) return;
    if (p[0].revents & POLLIN) {
      uint64_t count;
      [[maybe_unused]] ssize_t r = ::read(wake_.get(), &count, sizeof count);
    }
    if (n == 2 && (p[1].revents & (POLLIN | POLLHUP | POLLERR))) {
      Status s = ReadSocket();
      if (!s.ok()) return Disconnect(s);
    }
    if (fd_.valid() && n == 2 && (p[1].revents & POLLOUT)) {
      Status s = WriteSocket();
      if (!s.ok()) Disconnect(s);
    }
  }

  int PollTimeoutMs() const {
    Clock::time_point next = Clock::now() + kMaxPollWait;
    if (!requests_.empty()) next = std::min(next, requests_.begin()->second.deadline);
    if (!retry_at_.empty()) next = std::min(next, retry_at_.begin()->first);
    if (!fd_.valid() && reconnecting_) next = std::min(next, reconnect_at_);
    return MillisUntil(next);
  }

  // --- requests (I/O thread).
  void AddRequest(Request r) {
    r.deadline = Clock::now() + options_.request_timeout;
    uint64_t seq = ++next_seq_;
    requests_.emplace(seq, std::move(r));
    unsent_.push_back(seq);
    if (!fd_.valid() && !reconnecting_) StartReconnecting();
  }

  bool CanSend() const {
    if (out_pending() >= kMaxOutboundBytes) return false;
    return hello_.max_in_flight == 0 || in_flight_ < hello_.max_in_flight;
  }

  void FillOutbound() {
    while (!unsent_.empty() && CanSend()) {
      uint64_t seq = unsent_.front();
      unsent_.pop_front();
      auto it = requests_.find(seq);
      if (it == requests_.end() || it->second.wire_id != 0 || it->second.waiting_retry) continue;
      Send(seq, it->second);
    }
  }

  void Send(uint64_t seq, Request& r) {
    size_t length = protocol::kFrameHeaderBytes + r.body.size();
    if (length > hello_.max_frame_bytes)
      return FailRequest(seq, Status::TooLarge("a " + std::string(protocol::OpName(r.op)) + " of " +
                                               std::to_string(length) + " bytes exceeds the server's max_frame_bytes " +
                                               std::to_string(hello_.max_frame_bytes)));
    uint32_t wire = NextWireId();
    size_t start = out_.size();
    out_.resize(start + protocol::kFrameHeaderBytes);
    out_.append(r.body);
    protocol::FinishFrame(&out_, start, r.op, wire);
    r.wire_id = wire;
    wire_to_seq_[wire] = seq;
    ++in_flight_;
  }

  uint32_t NextWireId() {
    while (true) {
      uint32_t id = ++next_wire_id_;
      if (id != 0 && !wire_to_seq_.contains(id) && !wire_to_sub_.contains(id)) return id;
    }
  }

  // Takes request `seq` out of every table; the caller completes it.
  Request Extract(uint64_t seq) {
    auto node = requests_.extract(seq);
    ANNAL_ASSERT(!node.empty());
    Request r = std::move(node.mapped());
    if (r.wire_id != 0) {
      wire_to_seq_.erase(r.wire_id);
      --in_flight_;
    }
    if (r.counted) pending_.fetch_sub(1);
    return r;
  }

  void FailRequest(uint64_t seq, const Status& why) {
    Request r = Extract(seq);
    if (r.sub_id != 0) return SubscribeFailed(r.sub_id, why);
    r.on_fail(why);
  }

  void ExpireRequests(Clock::time_point now) {
    while (!requests_.empty() && requests_.begin()->second.deadline <= now) {
      auto& [seq, r] = *requests_.begin();
      // A SUBSCRIBE given up on may still be answered: end it on the server too.
      if (r.sub_id != 0 && r.wire_id != 0 && fd_.valid()) QueueUnsubscribe(r.wire_id);
      FailRequest(seq, Status::Unavailable(std::string(protocol::OpName(r.op)) + " timed out after " +
                                           std::to_string(options_.request_timeout.count()) + " ms"));
    }
  }

  std::chrono::milliseconds Backoff(int attempt) const {
    auto d = options_.reconnect_backoff_initial;
    for (int i = 1; i < attempt && d < options_.reconnect_backoff_max; ++i) d *= 2;
    return std::min(d, options_.reconnect_backoff_max);
  }

  void RetryDue(Clock::time_point now) {
    while (!retry_at_.empty() && retry_at_.begin()->first <= now) {
      uint64_t seq = retry_at_.begin()->second;
      retry_at_.erase(retry_at_.begin());
      auto it = requests_.find(seq);
      if (it == requests_.end()) continue;
      it->second.waiting_retry = false;
      unsent_.push_back(seq);
    }
  }

  // --- incoming frames (I/O thread).
  Status Dispatch(const protocol::FrameHeader& h, std::string_view body) {
    switch (h.op) {
      case Op::kSubEvents:
      case Op::kCaughtUp:
      case Op::kSubDropped: return OnSubscriptionFrame(h, body);
      default: break;
    }
    if (protocol::IsRequest(h.op) || h.op == Op::kHelloOk)
      return ProtocolError(std::string("the server sent ") + protocol::OpName(h.op));
    auto it = wire_to_seq_.find(h.request_id);
    if (it == wire_to_seq_.end()) return Status::Ok();  // timed out, or a stale UNSUBSCRIBE
    return OnAnswer(it->second, h.op, body);
  }

  Status OnAnswer(uint64_t seq, Op op, std::string_view body) {
    auto it = requests_.find(seq);
    ANNAL_ASSERT(it != requests_.end());
    Request& r = it->second;
    if (op == Op::kError) return OnError(seq, r, body);
    if (op != r.expect && op != r.expect_or)
      return ProtocolError(std::string(protocol::OpName(r.op)) + " answered with " + protocol::OpName(op));
    if (r.sub_id != 0) return OnSubscribed(seq, body);
    Status s = r.on_reply(op, body);  // decodes before completing anything
    if (!s.ok()) return ProtocolError(std::string(protocol::OpName(op)) + ": " + s.message());
    Extract(seq);
    return Status::Ok();
  }

  Status OnError(uint64_t seq, Request& r, std::string_view body) {
    protocol::ErrorResponse e;
    Status s = protocol::Decode(body, &e);
    if (!s.ok()) return ProtocolError(s.message());
    auto delay = Backoff(r.retries + 1);
    if (e.code == ErrorCode::kUnavailable && Clock::now() + delay < r.deadline) {
      wire_to_seq_.erase(r.wire_id);
      --in_flight_;
      r.wire_id = 0;
      r.waiting_retry = true;
      ++r.retries;
      retry_at_.emplace(Clock::now() + delay, seq);
      return Status::Ok();
    }
    FailRequest(seq, protocol::ToStatus(e.code, e.actual_version, std::move(e.message)));
    return Status::Ok();
  }

  // --- subscriptions (I/O thread).
  void OpenSubscription(const std::shared_ptr<SubState>& s) {
    if (subs_.size() >= kMaxSubscriptions)
      return s->on_subscribed(Status::Unavailable("too many subscriptions (at most " +
                                                  std::to_string(kMaxSubscriptions) + " per client)"));
    s->id = ++next_sub_id_;
    subs_[s->id] = s;
    QueueSubscribe(*s);
  }

  void QueueSubscribe(SubState& s) {
    Request r;
    r.op = Op::kSubscribe;
    r.expect = Op::kSubscribed;
    protocol::BodyWriter w(&r.body);
    protocol::Encode(s.request, w);
    r.sub_id = s.id;
    r.resend = false;
    AddRequest(std::move(r));
    s.subscribe_seq = next_seq_;
  }

  void QueueUnsubscribe(uint32_t wire_id) {
    Request r;
    r.op = Op::kUnsubscribe;
    r.expect = Op::kUnsubscribed;
    protocol::BodyWriter w(&r.body);
    protocol::Encode(protocol::UnsubscribeRequest{wire_id}, w);
    r.on_reply = [](Op, std::string_view) { return Status::Ok(); };
    r.on_fail = [](Status) {};
    r.resend = false;
    AddRequest(std::move(r));
  }

  Status OnSubscribed(uint64_t seq, std::string_view body) {
    protocol::SubscribedResponse m;
    Status s = protocol::Decode(body, &m);
    if (!s.ok()) return ProtocolError(s.message());
    Request r = Extract(seq);
    auto it = subs_.find(r.sub_id);
    if (it == subs_.end()) {  // stopped while its SUBSCRIBE was in flight
      QueueUnsubscribe(r.wire_id);
      return Status::Ok();
    }
    SubState& sub = *it->second;
    sub.subscribe_seq = 0;
    sub.wire_id = r.wire_id;
    wire_to_sub_[r.wire_id] = sub.id;
    if (!sub.answered) {
      sub.answered = true;
      sub.on_subscribed(Status::Ok());
    }
    return Status::Ok();
  }

  // The SUBSCRIBE failed for good: the caller gets the error, or, for a
  // resubscribe, on_dropped.
  void SubscribeFailed(uint64_t sub_id, const Status& why) {
    auto it = subs_.find(sub_id);
    if (it == subs_.end()) return;
    std::shared_ptr<SubState> sub = it->second;
    subs_.erase(it);
    sub->subscribe_seq = 0;
    if (sub->wire_id != 0) wire_to_sub_.erase(sub->wire_id);
    sub->wire_id = 0;
    if (!sub->answered) {
      sub->answered = true;
      sub->on_subscribed(why);
      return;
    }
    Dropped(*sub, why);
  }

  void Dropped(SubState& sub, const Status& why) {
    std::lock_guard lock(sub.callback_mu);
    if (!sub.stopped && sub.handler.on_dropped) sub.handler.on_dropped(why);
  }

  void CloseSubscription(SubState& s) {
    auto it = subs_.find(s.id);
    if (it == subs_.end() || it->second.get() != &s) return;
    if (s.wire_id != 0) {
      wire_to_sub_.erase(s.wire_id);
      if (fd_.valid()) QueueUnsubscribe(s.wire_id);
    }
    // A SUBSCRIBE not sent yet is withdrawn; one in flight is answered by an
    // UNSUBSCRIBE when its SUBSCRIBED arrives (OnSubscribed).
    if (s.subscribe_seq != 0) {
      auto r = requests_.find(s.subscribe_seq);
      if (r != requests_.end() && r->second.wire_id == 0) Extract(s.subscribe_seq);
    }
    subs_.erase(it);
  }

  Status OnSubscriptionFrame(const protocol::FrameHeader& h, std::string_view body) {
    if (wire_to_seq_.contains(h.request_id))
      return ProtocolError(std::string(protocol::OpName(h.op)) + " before SUBSCRIBED");
    auto w = wire_to_sub_.find(h.request_id);
    if (w == wire_to_sub_.end()) return Status::Ok();  // a subscription already ended
    auto it = subs_.find(w->second);
    ANNAL_ASSERT(it != subs_.end());
    std::shared_ptr<SubState> sub = it->second;
    if (sub->stopped) return Status::Ok();
    switch (h.op) {
      case Op::kSubEvents: return OnSubEvents(*sub, body);
      case Op::kCaughtUp: return OnCaughtUp(*sub, body);
      default: return OnSubDropped(sub, body);
    }
  }

  // Every event must be the next one the subscription expects: versions
  // contiguous within the stream, positions increasing and matching the filter.
  Status CheckOrder(const SubState& sub, const std::vector<RecordedEvent>& events) const {
    const protocol::SubscribeRequest& q = sub.request;
    uint64_t next = q.from;
    for (const RecordedEvent& e : events) {
      if (q.scope == protocol::SubscribeRequest::Scope::kStream) {
        if (e.stream != q.stream || e.version.get() != next)
          return ProtocolError("subscription to " + q.stream + " expected version " + std::to_string(next) +
                               ", got " + e.stream + "@" + std::to_string(e.version.get()));
        next = e.version.get() + 1;
      } else {
        if (e.position.get() < next || !q.filter.Matches(e))
          return ProtocolError("subscription to all expected a matching position >= " + std::to_string(next) +
                               ", got " + std::to_string(e.position.get()) + " (" + e.stream + ", " + e.type + ")");
        next = e.position.get() + 1;
      }
    }
    return Status::Ok();
  }

  Status OnSubEvents(SubState& sub, std::string_view body) {
    protocol::EventsResponse m;
    Status s = protocol::Decode(body, &m);
    if (!s.ok()) return ProtocolError(s.message());
    ANNAL_RETURN_IF_ERROR(CheckOrder(sub, m.events));
    bool by_stream = sub.request.scope == protocol::SubscribeRequest::Scope::kStream;
    std::lock_guard lock(sub.callback_mu);
    for (const RecordedEvent& e : m.events) {
      if (sub.stopped) break;
      sub.transient_drops = 0;
      sub.request.from = by_stream ? e.version.get() + 1 : e.position.get() + 1;
      if (sub.handler.on_event) sub.handler.on_event(e);
    }
    return Status::Ok();
  }

  Status OnCaughtUp(SubState& sub, std::string_view body) {
    protocol::CaughtUp m;
    Status s = protocol::Decode(body, &m);
    if (!s.ok()) return ProtocolError(s.message());
    // Everything up to m.position that matches was delivered: a resubscribe
    // to all need not scan it again.
    if (sub.request.scope == protocol::SubscribeRequest::Scope::kAll)
      sub.request.from = std::max(sub.request.from, m.position + 1);
    if (sub.caught_up) return Status::Ok();
    sub.caught_up = true;
    std::lock_guard lock(sub.callback_mu);
    if (!sub.stopped && sub.handler.on_caught_up) sub.handler.on_caught_up();
    return Status::Ok();
  }

  Status OnSubDropped(const std::shared_ptr<SubState>& sub, std::string_view body) {
    protocol::ErrorResponse e;
    Status s = protocol::Decode(body, &e);
    if (!s.ok()) return ProtocolError(s.message());
    wire_to_sub_.erase(sub->wire_id);
    sub->wire_id = 0;
    // The server going away is not the subscriber's fault: start again.
    if (e.code == ErrorCode::kUnavailable && ++sub->transient_drops <= kMaxTransientDrops) {
      QueueSubscribe(*sub);
      return Status::Ok();
    }
    subs_.erase(sub->id);
    Dropped(*sub, protocol::ToStatus(e.code, e.actual_version, std::move(e.message)));
    return Status::Ok();
  }

  // --- the socket (I/O thread).
  size_t out_pending() const { return out_.size() - out_at_; }

  Status WriteSocket() {
    while (out_at_ < out_.size()) {
      ssize_t n = ::send(fd_.get(), out_.data() + out_at_, out_.size() - out_at_, MSG_NOSIGNAL);
      if (n > 0) {
        out_at_ += static_cast<size_t>(n);
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else if (n < 0 && errno == EAGAIN) {
        break;
      } else {
        return Status::Unavailable("send: " + ErrnoText(errno));
      }
    }
    if (out_at_ == out_.size()) {
      out_.clear();
      out_at_ = 0;
    } else if (out_at_ >= out_.size() / 2) {
      out_.erase(0, out_at_);
      out_at_ = 0;
    }
    return Status::Ok();
  }

  // Makes room for one more read at the end of in_.
  void ReserveRead() {
    if (in_.size() - in_len_ >= kReadChunkBytes) return;
    if (in_at_ > 0) {
      std::memmove(in_.data(), in_.data() + in_at_, in_len_ - in_at_);
      in_len_ -= in_at_;
      in_at_ = 0;
    }
    if (in_.size() - in_len_ < kReadChunkBytes) in_.resize(in_len_ + kReadChunkBytes);
  }

  Status ReadSocket() {
    for (int i = 0; i < kMaxReadsPerWakeup && fd_.valid(); ++i) {
      ReserveRead();
      ssize_t n = ::recv(fd_.get(), in_.data() + in_len_, in_.size() - in_len_, 0);
      if (n > 0) {
        in_len_ += static_cast<size_t>(n);
        ANNAL_RETURN_IF_ERROR(ParseFrames());
      } else if (n == 0) {
        return Status::Unavailable("the server closed the connection");
      } else if (errno == EAGAIN) {
        break;
      } else if (errno != EINTR) {
        return Status::Unavailable("recv: " + ErrnoText(errno));
      }
    }
    return Status::Ok();
  }

  Status ParseFrames() {
    while (in_len_ - in_at_ >= protocol::kFrameHeaderBytes) {
      const uint8_t* at = reinterpret_cast<const uint8_t*>(in_.data() + in_at_);
      protocol::FrameHeader h;
      Status s = protocol::DecodeFrameHeader(at, hello_.max_frame_bytes, &h);
      if (!s.ok()) return ProtocolError(s.message());
      if (in_len_ - in_at_ < h.length) break;
      std::string_view body(reinterpret_cast<const char*>(at) + protocol::kFrameHeaderBytes,
                            h.length - protocol::kFrameHeaderBytes);
      ANNAL_RETURN_IF_ERROR(Dispatch(h, body));
      in_at_ += h.length;
    }
    if (in_at_ == in_len_) in_at_ = in_len_ = 0;
    return Status::Ok();
  }

  // --- connection loss and reconnect (I/O thread).
  void Install(Connection c) {
    fd_ = std::move(c.fd);
    hello_ = c.hello;
    max_frame_bytes_ = hello_.max_frame_bytes;
    in_.assign(c.leftover.begin(), c.leftover.end());
    in_len_ = in_.size();
    in_at_ = 0;
  }

  void Disconnect(const Status& why) {
    // With nothing outstanding (the server closes idle connections) the
    // next request reconnects.
    bool idle = requests_.empty() && subs_.empty();
    if (!idle)
      options_.log("annal client: lost the connection to " + Endpoint(options_) + ": " + why.ToString() +
                   "; reconnecting");
    fd_.Reset();
    out_.clear();
    out_at_ = in_at_ = in_len_ = 0;
    wire_to_seq_.clear();
    wire_to_sub_.clear();
    in_flight_ = 0;
    Requeue();
    if (!idle) StartReconnecting();
  }

  // After a connection loss: what was sent goes again; subscriptions start
  // again after their last delivered event.
  void Requeue() {
    unsent_.clear();
    for (auto it = requests_.begin(); it != requests_.end();) {
      Request& r = it->second;
      r.wire_id = 0;
      if (!r.resend) {
        ANNAL_ASSERT(!r.counted);  // only the client's own SUBSCRIBE and UNSUBSCRIBE
        it = requests_.erase(it);  // a SUBSCRIBE is queued anew below; an UNSUBSCRIBE is moot
        continue;
      }
      if (!r.waiting_retry) unsent_.push_back(it->first);
      ++it;
    }
    for (auto& [id, sub] : subs_) {
      sub->wire_id = 0;
      if (!sub->stopped) QueueSubscribe(*sub);
    }
  }

  void StartReconnecting() {
    reconnecting_ = true;
    reconnect_attempts_ = 0;
    reconnect_at_ = Clock::now();
  }

  void Reconnect() {
    Result<Connection> c = Dial(options_);
    if (c.ok()) {
      Install(std::move(c).value());
      reconnecting_ = false;
      if (reconnect_attempts_ > 0)
        options_.log("annal client: reconnected to " + Endpoint(options_) + " after " +
                     std::to_string(reconnect_attempts_ + 1) + " attempts");
      return;
    }
    ++reconnect_attempts_;
    if (reconnect_attempts_ >= options_.max_reconnect_attempts) return GiveUp(c.status());
    reconnect_at_ = Clock::now() + Backoff(reconnect_attempts_);
  }

  void GiveUp(const Status& last) {
    reconnecting_ = false;
    Status why = Status::Unavailable(last.message() + " [gave up after " + std::to_string(reconnect_attempts_) +
                                     " attempts]");
    options_.log("annal client: " + why.message());
    FailEverything(why);
  }

  void FailEverything(const Status& why) {
    retry_at_.clear();
    unsent_.clear();
    while (!requests_.empty()) FailRequest(requests_.begin()->first, why);
    while (!subs_.empty()) SubscribeFailed(subs_.begin()->first, why);
  }

  ClientOptions options_;

  std::mutex mu_;
  std::deque<std::function<void()>> inbox_;  // guarded by mu_
  bool closing_ = false;                     // guarded by mu_
  UniqueFd wake_;                            // eventfd; written by any thread
  std::thread thread_;
  std::atomic<size_t> pending_{0};  // caller requests not yet completed
  std::atomic<uint32_t> max_frame_bytes_{protocol::kDefaultMaxFrameBytes};

  // Everything below is owned by the I/O thread.
  UniqueFd fd_;
  protocol::HelloOk hello_;
  std::string out_;
  size_t out_at_ = 0;
  std::string in_;
  size_t in_at_ = 0, in_len_ = 0;
  std::map<uint64_t, Request> requests_;
  std::deque<uint64_t> unsent_;
  std::multimap<Clock::time_point, uint64_t> retry_at_;
  std::unordered_map<uint32_t, uint64_t> wire_to_seq_;
  std::unordered_map<uint32_t, uint64_t> wire_to_sub_;
  std::map<uint64_t, std::shared_ptr<SubState>> subs_;
  uint32_t in_flight_ = 0;
  uint64_t next_seq_ = 0;
  uint64_t next_sub_id_ = 0;
  uint32_t next_wire_id_ = 0;
  bool reconnecting_ = false;
  int reconnect_attempts_ = 0;
  Clock::time_point reconnect_at_;
};

// --- argument checks, so a bad call fails here instead of costing the
// connection (the server closes after kInvalidRequest).

Status CheckStreamName(const std::string& stream) {
  if (stream.empty() || stream.size() > limits::kMaxStreamNameBytes)
    return Status::InvalidArgument("stream name must be 1..255 bytes, got " + std::to_string(stream.size()));
  return Status::Ok();
}

Status CheckAppend(const std::string& stream, const std::vector<EventData>& events) {
  ANNAL_RETURN_IF_ERROR(CheckStreamName(stream));
  if (events.empty() || events.size() > limits::kMaxEventsPerAppend)
    return Status::InvalidArgument("an append takes 1.." + std::to_string(limits::kMaxEventsPerAppend) +
                                   " events, got " + std::to_string(events.size()));
  for (const EventData& e : events) {
    if (e.type.empty() || e.type.size() > limits::kMaxEventTypeBytes)
      return Status::InvalidArgument("event type must be 1..255 bytes");
    if (e.metadata.size() > limits::kMaxMetadataBytes)
      return Status::TooLarge("metadata of " + std::to_string(e.metadata.size()) + " bytes is over the limit of " +
                              std::to_string(limits::kMaxMetadataBytes));
  }
  return Status::Ok();
}

Status CheckFilter(const Filter& f) {
  if ((f.kind == Filter::Kind::kNone) != f.value.empty())
    return Status::InvalidArgument("a filter names a category or prefix exactly when it has a kind");
  if (f.value.size() > 255) return Status::InvalidArgument("a filter's category or prefix is at most 255 bytes");
  if (f.event_types.size() > 64) return Status::InvalidArgument("a filter lists at most 64 event types");
  for (const std::string& t : f.event_types)
    if (t.empty() || t.size() > limits::kMaxEventTypeBytes)
      return Status::InvalidArgument("a filter's event types must be 1..255 bytes");
  return Status::Ok();
}

Status CheckConsumerName(const std::string& name) {
  if (name.empty() || name.size() > 255)
    return Status::InvalidArgument("a consumer name must be 1..255 bytes, got " + std::to_string(name.size()));
  return Status::Ok();
}

Status CheckReducerName(const std::string& reducer) {
  if (reducer.size() > 255)
    return Status::InvalidArgument("a reducer name is at most 255 bytes, got " + std::to_string(reducer.size()));
  return Status::Ok();
}

// The one place the "no reducer" answer of LoadState is made (IsNoReducer
// recognises it).
constexpr std::string_view kNoReducerPrefix = "no reducer is configured for category";

Status NoReducer(const std::string& stream) {
  std::string category(StreamCategory(stream));
  return Status::Unavailable(std::string(kNoReducerPrefix) + " '" + category + "' on the server, so it cannot fold " +
                             stream + " (configure one with annald --reducer " + category +
                             "=json-merge-patch, or fold in the client: LoadStatePlan and Fold)");
}

// A STATE_PLAN must be what LOAD_STATE asked for: a snapshot of the
// requested reducer at or before the target, then the events after it in
// order, ending at the target when complete.
Status CheckPlan(const std::string& stream, const std::string& reducer, uint32_t schema_version,
                 const StatePlan& plan) {
  const uint64_t target = plan.target_version.get();
  uint64_t next = 0;
  if (plan.snapshot) {
    const Snapshot& snap = *plan.snapshot;
    if (reducer.empty() || snap.reducer != reducer || snap.schema_version != schema_version ||
        snap.version.get() > target)
      return ProtocolError("STATE_PLAN for " + stream + " up to version " + std::to_string(target) +
                           " carries a snapshot at version " +
                           std::to_string(snap.version.get()) + " by " + snap.reducer + " schema " +
                           std::to_string(snap.schema_version) + "; asked for reducer '" + reducer + "' schema " +
                           std::to_string(schema_version));
    next = snap.version.get() + 1;
  }
  for (const RecordedEvent& e : plan.events) {
    if (e.stream != stream || e.version.get() != next || e.version.get() > target)
      return ProtocolError("STATE_PLAN for " + stream + " up to version " + std::to_string(target) + " expected version " +
                           std::to_string(next) + ", got " + e.stream + "@" + std::to_string(e.version.get()));
    ++next;
  }
  if (plan.complete && next != target + 1)
    return ProtocolError("STATE_PLAN for " + stream + " is marked complete but ends before version " +
                         std::to_string(next) + ", not at its target " + std::to_string(target));
  return Status::Ok();
}

Status CheckOptions(const ClientOptions& o) {
  if (o.client_name.size() > 255) return Status::InvalidArgument("client_name is at most 255 bytes");
  if (o.connect_timeout.count() <= 0 || o.request_timeout.count() <= 0)
    return Status::InvalidArgument("connect_timeout and request_timeout must be positive");
  if (o.reconnect_backoff_initial.count() <= 0 || o.reconnect_backoff_max < o.reconnect_backoff_initial)
    return Status::InvalidArgument("reconnect backoff must satisfy 0 < initial <= max");
  if (o.max_reconnect_attempts < 1) return Status::InvalidArgument("max_reconnect_attempts must be at least 1");
  if (o.max_pending_requests < 1) return Status::InvalidArgument("max_pending_requests must be at least 1");
  return Status::Ok();
}

Status BlockingFromCallback(const char* method) {
  return Status::InvalidArgument(std::string("Client::") + method +
                                 " blocks and was called from a client callback; use the async form");
}

// Builds a request whose success answer `expect` decodes into T.
template <typename T, typename M>
Request MakeRequest(Op op, Op expect, const M& message, std::function<Status(std::string_view, T*)> decode,
                    std::function<void(Result<T>)> done) {
  Request r;
  r.op = op;
  r.expect = expect;
  protocol::BodyWriter w(&r.body);
  protocol::Encode(message, w);
  r.on_reply = [decode = std::move(decode), done](Op, std::string_view body) {
    T value;
    ANNAL_RETURN_IF_ERROR(decode(body, &value));
    done(std::move(value));
    return Status::Ok();
  };
  r.on_fail = [done](Status s) { done(std::move(s)); };
  return r;
}

template <typename T>
Status DecodeAs(std::string_view body, T* out) {
  return protocol::Decode(body, out);
}

// Starts an async operation and waits for its callback.
template <typename T>
Result<T> Await(const std::function<void(std::function<void(Result<T>)>)>& start) {
  auto promise = std::make_shared<std::promise<Result<T>>>();
  std::future<Result<T>> future = promise->get_future();
  start([promise](Result<T> r) { promise->set_value(std::move(r)); });
  return future.get();
}

class SubscriptionImpl final : public Subscription {
 public:
  SubscriptionImpl(std::shared_ptr<Core> core, std::shared_ptr<SubState> state)
      : core_(std::move(core)), state_(std::move(state)) {}
  ~SubscriptionImpl() override { Stop(); }
  void Stop() override {
    if (!stopped_.exchange(true)) core_->StopSubscription(state_);
  }

 private:
  std::shared_ptr<Core> core_;
  std::shared_ptr<SubState> state_;
  std::atomic<bool> stopped_{false};
};

class ClientImpl final : public Client {
 public:
  explicit ClientImpl(std::shared_ptr<Core> core) : core_(std::move(core)) {}
  ~ClientImpl() override { core_->Shutdown(); }

  void AppendAsync(std::string stream, ExpectedVersion expected, std::vector<EventData> events,
                   AppendCallback done) override {
    Status s = CheckAppend(stream, events);
    if (!s.ok()) return done(s);
    // Ids before the first send, so that a resend is recognised as a retry.
    for (EventData& e : events)
      if (IsNilEventId(e.id)) e.id = GenerateEventId();
    protocol::AppendRequest m{std::move(stream), expected, std::move(events)};
    Submit(MakeRequest<AppendResult>(Op::kAppend, Op::kAppendOk, m, DecodeAs<AppendResult>, std::move(done)));
  }

  Result<AppendResult> Append(std::string stream, ExpectedVersion expected, std::vector<EventData> events) override {
    if (core_->OnIoThread()) return BlockingFromCallback("Append");
    return Await<AppendResult>([&](AppendCallback done) {
      AppendAsync(std::move(stream), expected, std::move(events), std::move(done));
    });
  }

  Result<std::vector<RecordedEvent>> ReadStream(const std::string& stream, StreamVersion from,
                                                ReadDirection direction, uint32_t max_count) override {
    if (core_->OnIoThread()) return BlockingFromCallback("ReadStream");
    ANNAL_RETURN_IF_ERROR(CheckStreamName(stream));
    protocol::ReadStreamRequest m{stream, from.get(), direction, max_count};
    using Events = std::vector<RecordedEvent>;
    auto decode = [](std::string_view body, Events* out) {
      protocol::EventsResponse r;
      ANNAL_RETURN_IF_ERROR(protocol::Decode(body, &r));
      *out = std::move(r.events);
      return Status::Ok();
    };
    return Await<Events>([&](std::function<void(Result<Events>)> done) {
      Submit(MakeRequest<Events>(Op::kReadStream, Op::kEvents, m, decode, std::move(done)));
    });
  }

  Result<AllEventsPage> ReadAll(GlobalPosition from, uint32_t max_count, const Filter& filter) override {
    if (core_->OnIoThread()) return BlockingFromCallback("ReadAll");
    ANNAL_RETURN_IF_ERROR(CheckFilter(filter));
    protocol::ReadAllRequest m{from.get(), max_count, filter};
    auto decode = [](std::string_view body, AllEventsPage* out) {
      protocol::AllEventsResponse r;
      ANNAL_RETURN_IF_ERROR(protocol::Decode(body, &r));
      out->events = std::move(r.events);
      out->next_position = GlobalPosition(r.next_position);
      return Status::Ok();
    };
    return Await<AllEventsPage>([&](std::function<void(Result<AllEventsPage>)> done) {
      Submit(MakeRequest<AllEventsPage>(Op::kReadAll, Op::kAllEvents, m, decode, std::move(done)));
    });
  }

  Result<StreamInfo> GetStreamInfo(const std::string& stream) override {
    if (core_->OnIoThread()) return BlockingFromCallback("GetStreamInfo");
    ANNAL_RETURN_IF_ERROR(CheckStreamName(stream));
    protocol::StreamInfoRequest m{stream};
    return Await<StreamInfo>([&](std::function<void(Result<StreamInfo>)> done) {
      Submit(MakeRequest<StreamInfo>(Op::kStreamInfo, Op::kStreamInfoOk, m, DecodeAs<StreamInfo>, std::move(done)));
    });
  }

  Status Ping() override {
    if (core_->OnIoThread()) return BlockingFromCallback("Ping");
    protocol::Ping m{next_ping_token_.fetch_add(1) + 1};
    auto decode = [token = m.token](std::string_view body, uint64_t* out) {
      protocol::Ping pong;
      ANNAL_RETURN_IF_ERROR(protocol::Decode(body, &pong));
      if (pong.token != token)
        return ProtocolError("PONG token " + std::to_string(pong.token) + " for PING " + std::to_string(token));
      *out = pong.token;
      return Status::Ok();
    };
    Result<uint64_t> r = Await<uint64_t>([&](std::function<void(Result<uint64_t>)> done) {
      Submit(MakeRequest<uint64_t>(Op::kPing, Op::kPong, m, decode, std::move(done)));
    });
    return r.ok() ? Status::Ok() : r.status();
  }

  void LoadStateAsync(std::string stream, StateTarget target, StateCallback done) override {
    Status s = CheckStreamName(stream);
    if (!s.ok()) return done(s);
    protocol::LoadStateRequest m;
    m.stream = stream;
    m.target = target;
    m.max_events = 1;  // a plan (no reducer on the server) is not used: keep it small
    Request r;
    r.op = Op::kLoadState;
    r.expect = Op::kState;
    r.expect_or = Op::kStatePlan;  // the server has no reducer for the category
    protocol::BodyWriter w(&r.body);
    protocol::Encode(m, w);
    r.on_reply = [stream = std::move(stream), done](Op op, std::string_view body) {
      if (op == Op::kStatePlan) {
        protocol::StatePlanResponse plan;
        ANNAL_RETURN_IF_ERROR(protocol::Decode(body, &plan));
        done(NoReducer(stream));
        return Status::Ok();
      }
      protocol::StateResponse state;
      ANNAL_RETURN_IF_ERROR(protocol::Decode(body, &state));
      done(std::move(state.state));
      return Status::Ok();
    };
    r.on_fail = [done](Status why) { done(std::move(why)); };
    Submit(std::move(r));
  }

  Result<State> LoadState(const std::string& stream, StateTarget target) override {
    if (core_->OnIoThread()) return BlockingFromCallback("LoadState");
    return Await<State>([&](StateCallback done) { LoadStateAsync(stream, target, std::move(done)); });
  }

  Result<StatePlan> LoadStatePlan(const std::string& stream, StateTarget target, const std::string& reducer,
                                  uint32_t schema_version, uint32_t max_events) override {
    if (core_->OnIoThread()) return BlockingFromCallback("LoadStatePlan");
    ANNAL_RETURN_IF_ERROR(CheckStreamName(stream));
    ANNAL_RETURN_IF_ERROR(CheckReducerName(reducer));
    protocol::LoadStateRequest m{stream, target, reducer, schema_version, max_events, /*plan_only=*/true};
    auto decode = [stream](std::string_view body, StatePlan* out) {
      protocol::StatePlanResponse r;
      ANNAL_RETURN_IF_ERROR(protocol::Decode(body, &r));
      *out = std::move(r.plan);
      if (out->snapshot) out->snapshot->stream = stream;  // not sent: it is the request's
      return Status::Ok();
    };
    ANNAL_ASSIGN_OR_RETURN(StatePlan plan, Await<StatePlan>([&](std::function<void(Result<StatePlan>)> done) {
                             Submit(MakeRequest<StatePlan>(Op::kLoadState, Op::kStatePlan, m, decode, std::move(done)));
                           }));
    ANNAL_RETURN_IF_ERROR(CheckPlan(stream, reducer, schema_version, plan));
    ANNAL_RETURN_IF_ERROR(CompletePlan(stream, &plan));
    return plan;
  }

  Result<int64_t> WriteSnapshot(const Snapshot& snapshot) override {
    if (core_->OnIoThread()) return BlockingFromCallback("WriteSnapshot");
    ANNAL_RETURN_IF_ERROR(CheckStreamName(snapshot.stream));
    ANNAL_RETURN_IF_ERROR(CheckReducerName(snapshot.reducer));
    if (snapshot.reducer.empty()) return Status::InvalidArgument("a snapshot must name its reducer");
    protocol::WriteSnapshotRequest m{snapshot};
    m.snapshot.state_size = m.snapshot.state.size();
    auto decode = [](std::string_view body, int64_t* out) {
      protocol::SnapshotWritten r;
      ANNAL_RETURN_IF_ERROR(protocol::Decode(body, &r));
      *out = r.recorded_at_ns;
      return Status::Ok();
    };
    return Await<int64_t>([&](std::function<void(Result<int64_t>)> done) {
      Submit(MakeRequest<int64_t>(Op::kWriteSnapshot, Op::kSnapshotWritten, m, decode, std::move(done)));
    });
  }

  Result<std::vector<Snapshot>> ListSnapshots(const std::string& stream) override {
    if (core_->OnIoThread()) return BlockingFromCallback("ListSnapshots");
    ANNAL_RETURN_IF_ERROR(CheckStreamName(stream));
    protocol::ListSnapshotsRequest m{stream};
    using Snapshots = std::vector<Snapshot>;
    auto decode = [stream](std::string_view body, Snapshots* out) {
      protocol::SnapshotsResponse r;
      ANNAL_RETURN_IF_ERROR(protocol::Decode(body, &r));
      *out = std::move(r.snapshots);
      for (Snapshot& s : *out) s.stream = stream;  // not sent: it is the request's
      return Status::Ok();
    };
    return Await<Snapshots>([&](std::function<void(Result<Snapshots>)> done) {
      Submit(MakeRequest<Snapshots>(Op::kListSnapshots, Op::kSnapshots, m, decode, std::move(done)));
    });
  }

  Result<protocol::HeadInfo> ReadHead() override {
    if (core_->OnIoThread()) return BlockingFromCallback("ReadHead");
    Request r;
    r.op = Op::kReadHead;  // an empty body
    r.expect = Op::kHeadInfo;
    return Await<protocol::HeadInfo>([&](std::function<void(Result<protocol::HeadInfo>)> done) {
      r.on_reply = [done](Op, std::string_view body) {
        protocol::HeadInfo info;
        ANNAL_RETURN_IF_ERROR(protocol::Decode(body, &info));
        done(info);
        return Status::Ok();
      };
      r.on_fail = [done](Status why) { done(std::move(why)); };
      Submit(std::move(r));
    });
  }

  Result<AllEventsPage> ReadAllRange(GlobalPosition from, GlobalPosition until, uint32_t max_count,
                                     const Filter& filter) override {
    if (core_->OnIoThread()) return BlockingFromCallback("ReadAllRange");
    ANNAL_RETURN_IF_ERROR(CheckFilter(filter));
    protocol::ReadAllRangeRequest m{from.get(), until.get(), max_count, filter};
    auto decode = [from, until](std::string_view body, AllEventsPage* out) {
      protocol::AllEventsResponse r;
      ANNAL_RETURN_IF_ERROR(protocol::Decode(body, &r));
      // Pair check: the server must keep to the slice.
      for (const RecordedEvent& e : r.events)
        if (e.position < from || e.position > until)
          return ProtocolError("READ_ALL_RANGE " + std::to_string(from.get()) + ".." + std::to_string(until.get()) +
                               " returned position " + std::to_string(e.position.get()));
      out->events = std::move(r.events);
      out->next_position = GlobalPosition(r.next_position);
      return Status::Ok();
    };
    return Await<AllEventsPage>([&](std::function<void(Result<AllEventsPage>)> done) {
      Submit(MakeRequest<AllEventsPage>(Op::kReadAllRange, Op::kAllEvents, m, decode, std::move(done)));
    });
  }

  Result<std::optional<ConsumerCheckpoint>> GetCheckpoint(const std::string& name) override {
    if (core_->OnIoThread()) return BlockingFromCallback("GetCheckpoint");
    ANNAL_RETURN_IF_ERROR(CheckConsumerName(name));
    protocol::GetCheckpointRequest m{name};
    using Found = std::optional<ConsumerCheckpoint>;
    auto decode = [name](std::string_view body, Found* out) {
      protocol::CheckpointResponse r;
      ANNAL_RETURN_IF_ERROR(protocol::Decode(body, &r));
      if (r.checkpoint && r.checkpoint->name != name)
        return ProtocolError("GET_CHECKPOINT of '" + name + "' returned the checkpoint of '" + r.checkpoint->name +
                             "'");
      *out = std::move(r.checkpoint);
      return Status::Ok();
    };
    return Await<Found>([&](std::function<void(Result<Found>)> done) {
      Submit(MakeRequest<Found>(Op::kGetCheckpoint, Op::kCheckpoint, m, decode, std::move(done)));
    });
  }

  Result<int64_t> SetCheckpoint(const std::string& name, GlobalPosition position, const std::string& blob,
                                CheckpointExpectation expected) override {
    if (core_->OnIoThread()) return BlockingFromCallback("SetCheckpoint");
    ANNAL_RETURN_IF_ERROR(CheckConsumerName(name));
    if (blob.size() > kMaxCheckpointBlobBytes)
      return Status::TooLarge("a checkpoint blob is at most " + std::to_string(kMaxCheckpointBlobBytes) +
                              " bytes, got " + std::to_string(blob.size()));
    protocol::SetCheckpointRequest m{name, position.get(), expected, blob};
    auto decode = [](std::string_view body, int64_t* out) {
      protocol::CheckpointSet r;
      ANNAL_RETURN_IF_ERROR(protocol::Decode(body, &r));
      *out = r.updated_at_ns;
      return Status::Ok();
    };
    return Await<int64_t>([&](std::function<void(Result<int64_t>)> done) {
      Submit(MakeRequest<int64_t>(Op::kSetCheckpoint, Op::kCheckpointSet, m, decode, std::move(done)));
    });
  }

  Result<bool> DeleteCheckpoint(const std::string& name) override {
    if (core_->OnIoThread()) return BlockingFromCallback("DeleteCheckpoint");
    ANNAL_RETURN_IF_ERROR(CheckConsumerName(name));
    protocol::DeleteCheckpointRequest m{name};
    auto decode = [](std::string_view body, bool* out) {
      protocol::CheckpointDeleted r;
      ANNAL_RETURN_IF_ERROR(protocol::Decode(body, &r));
      *out = r.existed;
      return Status::Ok();
    };
    return Await<bool>([&](std::function<void(Result<bool>)> done) {
      Submit(MakeRequest<bool>(Op::kDeleteCheckpoint, Op::kCheckpointDeleted, m, decode, std::move(done)));
    });
  }

  Result<std::vector<ConsumerCheckpoint>> ListCheckpoints(const std::string& prefix) override {
    if (core_->OnIoThread()) return BlockingFromCallback("ListCheckpoints");
    if (prefix.size() > 255)
      return Status::InvalidArgument("a consumer name prefix is at most 255 bytes, got " + std::to_string(prefix.size()));
    protocol::ListCheckpointsRequest m{prefix};
    using Checkpoints = std::vector<ConsumerCheckpoint>;
    auto decode = [prefix](std::string_view body, Checkpoints* out) {
      protocol::CheckpointsResponse r;
      ANNAL_RETURN_IF_ERROR(protocol::Decode(body, &r));
      for (const ConsumerCheckpoint& c : r.checkpoints)
        if (!c.name.starts_with(prefix))
          return ProtocolError("LIST_CHECKPOINTS of prefix '" + prefix + "' returned '" + c.name + "'");
      *out = std::move(r.checkpoints);
      return Status::Ok();
    };
    return Await<Checkpoints>([&](std::function<void(Result<Checkpoints>)> done) {
      Submit(MakeRequest<Checkpoints>(Op::kListCheckpoints, Op::kCheckpoints, m, decode, std::move(done)));
    });
  }

  Result<std::unique_ptr<Subscription>> SubscribeToStream(const std::string& stream, StreamVersion from,
                                                          SubscriptionHandler handler) override {
    ANNAL_RETURN_IF_ERROR(CheckStreamName(stream));
    protocol::SubscribeRequest q;
    q.scope = protocol::SubscribeRequest::Scope::kStream;
    q.stream = stream;
    q.from = from.get();
    return Subscribe(std::move(q), std::move(handler));
  }

  Result<std::unique_ptr<Subscription>> SubscribeToAll(GlobalPosition from, const Filter& filter,
                                                       SubscriptionHandler handler) override {
    ANNAL_RETURN_IF_ERROR(CheckFilter(filter));
    protocol::SubscribeRequest q;
    q.scope = protocol::SubscribeRequest::Scope::kAll;
    q.from = from.get();
    q.filter = filter;
    return Subscribe(std::move(q), std::move(handler));
  }

 private:
  // Reads the events a STATE_PLAN left out (it stopped at the server's
  // limit), up to the plan's target. Each page moves on by at least one
  // event or fails, so the loop ends.
  Status CompletePlan(const std::string& stream, StatePlan* plan) {
    if (plan->complete) return Status::Ok();
    const uint64_t target = plan->target_version.get();
    uint64_t next = !plan->events.empty() ? plan->events.back().version.get() + 1
                    : plan->snapshot      ? plan->snapshot->version.get() + 1
                                          : 0;
    while (next <= target) {
      uint32_t ask = static_cast<uint32_t>(std::min<uint64_t>(target - next, kPlanPageEvents - 1) + 1);
      ANNAL_ASSIGN_OR_RETURN(std::vector<RecordedEvent> page,
                             ReadStream(stream, StreamVersion(next), ReadDirection::kForward, ask));
      if (page.empty())
        return ProtocolError("the plan for " + stream + " ends at version " + std::to_string(target) +
                             " but READ_STREAM from " + std::to_string(next) + " found nothing");
      for (RecordedEvent& e : page) {
        if (next > target) break;
        if (e.version.get() != next)
          return ProtocolError("READ_STREAM of " + stream + " from " + std::to_string(next) + " returned version " +
                               std::to_string(e.version.get()));
        plan->events.push_back(std::move(e));
        ++next;
      }
    }
    plan->complete = true;
    return Status::Ok();
  }

  void Submit(Request r) {
    size_t length = protocol::kFrameHeaderBytes + r.body.size();
    if (length > core_->max_frame_bytes())
      return r.on_fail(Status::TooLarge("a " + std::string(protocol::OpName(r.op)) + " of " + std::to_string(length) +
                                        " bytes exceeds the server's max_frame_bytes " +
                                        std::to_string(core_->max_frame_bytes())));
    core_->Submit(std::move(r));
  }

  Result<std::unique_ptr<Subscription>> Subscribe(protocol::SubscribeRequest q, SubscriptionHandler handler) {
    if (core_->OnIoThread()) return BlockingFromCallback("SubscribeTo*");
    auto state = std::make_shared<SubState>(std::move(q), std::move(handler));
    auto promise = std::make_shared<std::promise<Status>>();
    std::future<Status> answered = promise->get_future();
    state->on_subscribed = [promise](Status s) { promise->set_value(std::move(s)); };
    core_->AddSubscription(state);
    Status s = answered.get();
    if (!s.ok()) return s;
    return std::unique_ptr<Subscription>(new SubscriptionImpl(core_, std::move(state)));
  }

  std::shared_ptr<Core> core_;
  std::atomic<uint64_t> next_ping_token_{0};
};

}  // namespace

bool IsNoReducer(const Status& s) {
  return s.code() == StatusCode::kUnavailable && s.message().starts_with(kNoReducerPrefix);
}

Result<std::unique_ptr<Client>> Client::Connect(const ClientOptions& options) {
  ANNAL_RETURN_IF_ERROR(CheckOptions(options));
  ANNAL_ASSIGN_OR_RETURN(Connection c, Dial(options));
  auto core = std::make_shared<Core>(options, std::move(c));
  ANNAL_RETURN_IF_ERROR(core->Start());
  return std::unique_ptr<Client>(new ClientImpl(std::move(core)));
}

}  // namespace annal::client
