// WireConnection: one client connection to annald over loopback, speaking
// the wire protocol through the shared codec (server/protocol.h), for the
// server benchmarks. Requests are pipelined: Queue() appends whole frames to
// one output buffer and Flush() hands all of them to the kernel with one
// send(), so a loop that queues many requests pays one system call per
// connection per turn. ReadFrames() parses responses in place.
//
// Poller: an epoll set over many WireConnections, with a nanosecond wait, so
// one thread can drive every connection of a benchmark (the machine has two
// cores; a thread per connection would take CPU from the server).
//
// Thread-safety: none. A connection and a poller belong to one thread.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "annal/assert.h"
#include "annal/status.h"
#include "protocol.h"

namespace annal::bench {

class WireConnection {
 public:
  // Bytes taken from the socket per ReadFrames call, so one busy connection
  // cannot starve the others in a loop turn.
  static constexpr size_t kReadBudgetBytes = 1 << 20;
  static constexpr size_t kReadChunkBytes = 256 * 1024;
  static constexpr std::chrono::seconds kHandshakeTimeout{10};

  // Connects to `host` (an IPv4 address; default loopback):`port` and
  // completes HELLO / HELLO_OK. Every send and recv is MSG_DONTWAIT:
  // nothing blocks but the explicit waits.
  static Result<std::unique_ptr<WireConnection>> Connect(uint16_t port,
                                                         const std::string& client_name,
                                                         const std::string& host = "127.0.0.1") {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1)
      return Status::InvalidArgument("'" + host + "' is not an IPv4 address");
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return Status::FromErrno(errno, "socket");
    std::unique_ptr<WireConnection> c(new WireConnection(fd));
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
      return Status::FromErrno(errno, "connect to " + host + ":" + std::to_string(port));
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ANNAL_RETURN_IF_ERROR(c->Handshake(client_name));
    return c;
  }

  ~WireConnection() { ::close(fd_); }
  WireConnection(const WireConnection&) = delete;
  WireConnection& operator=(const WireConnection&) = delete;

  int fd() const { return fd_; }
  bool has_output() const { return out_offset_ < out_.size(); }

  template <typename M>
  void Queue(protocol::Op op, uint32_t request_id, const M& message) {
    protocol::AppendFrame(&out_, op, request_id, message);
  }

  // Sends what the kernel takes now; the rest stays queued.
  Status Flush() {
    while (out_offset_ < out_.size()) {
      ssize_t n = ::send(fd_, out_.data() + out_offset_, out_.size() - out_offset_,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        out_offset_ += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      return Status::FromErrno(errno, "send");
    }
    if (out_offset_ == out_.size()) {
      out_.clear();
      out_offset_ = 0;
    }
    return Status::Ok();
  }

  // Reads what has arrived (up to kReadBudgetBytes) and calls
  // on_frame(header, body, received) for every whole frame, where
  // `received` is the steady and wall clock right after the recv() that
  // completed the frame. Stops early when on_frame returns false.
  struct Received {
    std::chrono::steady_clock::time_point steady;
    int64_t wall_ns = 0;
  };
  template <typename OnFrame>
  Status ReadFrames(OnFrame&& on_frame) {
    size_t total = 0;
    while (total < kReadBudgetBytes) {
      MakeRoom();
      size_t room = in_.size() - in_end_;
      ssize_t n = ::recv(fd_, in_.data() + in_end_, room, MSG_DONTWAIT);
      if (n == 0) return Status::Unavailable("annald closed the connection");
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      if (n < 0) return Status::FromErrno(errno, "recv");
      in_end_ += static_cast<size_t>(n);
      total += static_cast<size_t>(n);
      Received at{std::chrono::steady_clock::now(),
                  std::chrono::duration_cast<std::chrono::nanoseconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count()};
      ANNAL_RETURN_IF_ERROR(ParseFrames(at, on_frame));
      if (static_cast<size_t>(n) < room) break;  // drained
    }
    return Status::Ok();
  }

  // Blocks (poll) until one whole frame arrives, within `timeout`. For
  // request-response exchanges outside the measured loops.
  Status WaitForFrame(std::chrono::milliseconds timeout, protocol::FrameHeader* h,
                      std::string* body) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    bool got = false;
    while (!got) {
      ANNAL_RETURN_IF_ERROR(ReadOne(h, body, &got));
      if (got) break;
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return Status::Unavailable("no answer from annald in time");
      pollfd p{fd_, POLLIN, 0};
      ::poll(&p, 1, static_cast<int>(left.count()));
      ANNAL_RETURN_IF_ERROR(
          ReadFrames([](const protocol::FrameHeader&, std::string_view, const Received&) {
            return false;  // only fill the buffer; ReadOne takes the frame
          }));
    }
    return Status::Ok();
  }

  // Queues, flushes (waiting for the socket if needed) and waits for the
  // frame that answers `request_id`. For set-up, not for measured loops.
  template <typename M>
  Status Call(protocol::Op op, uint32_t request_id, const M& message, protocol::FrameHeader* h,
              std::string* body) {
    Queue(op, request_id, message);
    ANNAL_RETURN_IF_ERROR(FlushAll(kHandshakeTimeout));
    ANNAL_RETURN_IF_ERROR(WaitForFrame(kHandshakeTimeout, h, body));
    if (h->request_id != request_id)
      return Status::InvalidArgument("answer for request " + std::to_string(h->request_id) +
                                     ", expected " + std::to_string(request_id));
    return Status::Ok();
  }

 private:
  explicit WireConnection(int fd) : fd_(fd) {}

  Status Handshake(const std::string& client_name) {
    protocol::FrameHeader h;
    std::string body;
    ANNAL_RETURN_IF_ERROR(
        Call(protocol::Op::kHello, 0, protocol::Hello{.client_name = client_name}, &h, &body));
    if (h.op != protocol::Op::kHelloOk)
      return Status::InvalidArgument(std::string("HELLO answered with ") + protocol::OpName(h.op));
    return Status::Ok();
  }

  Status FlushAll(std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (has_output()) {
      ANNAL_RETURN_IF_ERROR(Flush());
      if (!has_output()) break;
      if (std::chrono::steady_clock::now() > deadline)
        return Status::Unavailable("annald took no data in time");
      pollfd p{fd_, POLLOUT, 0};
      ::poll(&p, 1, 100);
    }
    return Status::Ok();
  }

  // Takes one whole frame from the input buffer, if there is one.
  Status ReadOne(protocol::FrameHeader* h, std::string* body, bool* got) {
    *got = false;
    if (in_end_ - in_begin_ < protocol::kFrameHeaderBytes) return Status::Ok();
    ANNAL_RETURN_IF_ERROR(
        protocol::DecodeFrameHeader(reinterpret_cast<const uint8_t*>(in_.data() + in_begin_),
                                    protocol::kDefaultMaxFrameBytes, h));
    if (in_end_ - in_begin_ < h->length) return Status::Ok();
    body->assign(in_.data() + in_begin_ + protocol::kFrameHeaderBytes,
                 h->length - protocol::kFrameHeaderBytes);
    in_begin_ += h->length;
    *got = true;
    return Status::Ok();
  }

  template <typename OnFrame>
  Status ParseFrames(const Received& at, OnFrame& on_frame) {
    while (in_end_ - in_begin_ >= protocol::kFrameHeaderBytes) {
      protocol::FrameHeader h;
      ANNAL_RETURN_IF_ERROR(
          protocol::DecodeFrameHeader(reinterpret_cast<const uint8_t*>(in_.data() + in_begin_),
                                      protocol::kDefaultMaxFrameBytes, &h));
      if (in_end_ - in_begin_ < h.length) {
        pending_frame_bytes_ = h.length;
        break;
      }
      std::string_view body(in_.data() + in_begin_ + protocol::kFrameHeaderBytes,
                            h.length - protocol::kFrameHeaderBytes);
      if (!on_frame(h, body, at)) break;
      in_begin_ += h.length;
    }
    return Status::Ok();
  }

  // Before a recv: moves unparsed bytes to the front of the buffer, and
  // grows it when a frame larger than the buffer is arriving, so that the
  // buffer is allocated (and zeroed) once, not per read.
  void MakeRoom() {
    if (in_begin_ == in_end_) {
      in_begin_ = in_end_ = 0;
    } else if (in_begin_ > 0 && in_.size() - in_end_ < kReadChunkBytes) {
      std::memmove(in_.data(), in_.data() + in_begin_, in_end_ - in_begin_);
      in_end_ -= in_begin_;
      in_begin_ = 0;
    }
    size_t want = std::max(pending_frame_bytes_, in_end_ + kReadChunkBytes);
    if (in_.size() < want) in_.resize(want);
  }

  const int fd_;
  std::string out_;
  size_t out_offset_ = 0;
  std::vector<char> in_;  // unparsed input is [in_begin_, in_end_)
  size_t in_begin_ = 0;
  size_t in_end_ = 0;
  size_t pending_frame_bytes_ = 0;  // the length of a frame that has begun to arrive
};

// An epoll set over connections, each registered with a caller-chosen tag.
class Poller {
 public:
  static constexpr int kMaxEvents = 64;

  Poller() : fd_(::epoll_create1(EPOLL_CLOEXEC)) { ANNAL_ASSERT(fd_ >= 0); }
  ~Poller() { ::close(fd_); }
  Poller(const Poller&) = delete;
  Poller& operator=(const Poller&) = delete;

  void Add(const WireConnection& c, uint32_t tag) { Add(c.fd(), tag); }
  void Add(int fd, uint32_t tag) { Control(EPOLL_CTL_ADD, fd, tag, EPOLLIN); }
  // Asks for EPOLLOUT too while `c` has output the kernel did not take.
  void WantWrite(const WireConnection& c, uint32_t tag, bool want) { WantWrite(c.fd(), tag, want); }
  void WantWrite(int fd, uint32_t tag, bool want) {
    Control(EPOLL_CTL_MOD, fd, tag, EPOLLIN | (want ? EPOLLOUT : 0u));
  }

  // Waits up to `timeout` (0: do not wait) and calls on_ready(tag, events)
  // for each ready connection.
  template <typename OnReady>
  Status Wait(std::chrono::nanoseconds timeout, OnReady&& on_ready) {
    epoll_event events[kMaxEvents];
    if (timeout.count() < 0) timeout = std::chrono::nanoseconds(0);
    timespec ts{static_cast<time_t>(timeout.count() / 1'000'000'000),
                static_cast<long>(timeout.count() % 1'000'000'000)};
    int n = ::epoll_pwait2(fd_, events, kMaxEvents, &ts, nullptr);
    if (n < 0 && errno == EINTR) return Status::Ok();
    if (n < 0) return Status::FromErrno(errno, "epoll_pwait2");
    for (int i = 0; i < n; ++i)
      ANNAL_RETURN_IF_ERROR(on_ready(events[i].data.u32, events[i].events));
    return Status::Ok();
  }

 private:
  void Control(int op, int fd, uint32_t tag, uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u32 = tag;
    ANNAL_ASSERT(::epoll_ctl(fd_, op, fd, &ev) == 0);
  }

  const int fd_;
};

}  // namespace annal::bench
