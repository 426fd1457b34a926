// RawClient: one connection to annald that speaks the wire protocol through
// the codec alone (server/protocol.h), for tests that must see exactly what
// the server sends: which requests were acknowledged before a crash, which
// frames came in which order. Requests may be pipelined: Queue() any number,
// Flush(), then take answers with Next() in whatever order they come.
//
// Every wait is bounded by a timeout; a closed connection is reported as
// kUnavailable. Thread-safety: none; one thread owns a RawClient.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "annal/status.h"
#include "annal/types.h"
#include "protocol.h"

namespace annal::testing {

// A socket connected to 127.0.0.1:`port` whose reads time out after 5 s;
// -1 when the connection is refused.
inline int ConnectLoopback(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// The whole HTTP response to GET `path` from 127.0.0.1:`port` (annald's
// metrics endpoint); empty when it cannot connect.
inline std::string HttpGet(uint16_t port, const std::string& path) {
  int fd = ConnectLoopback(port);
  if (fd < 0) return "";
  std::string req = "GET " + path + " HTTP/1.1\r\nHost: localhost\r\n\r\n";
  (void)!::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  std::string all;
  char buf[4096];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) all.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return all;
}

class RawClient {
 public:
  static constexpr std::chrono::milliseconds kDefaultTimeout{10'000};

  // Connects to 127.0.0.1:`port` and completes HELLO / HELLO_OK.
  static Result<std::unique_ptr<RawClient>> Connect(uint16_t port,
                                                    const std::string& name = "raw-client") {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return Status::FromErrno(errno, "socket");
    std::unique_ptr<RawClient> c(new RawClient(fd));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
      return Status::FromErrno(errno, "connect to 127.0.0.1:" + std::to_string(port));
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    protocol::FrameHeader h;
    std::string body;
    c->Queue(protocol::Op::kHello, 0, protocol::Hello{.client_name = name});
    ANNAL_RETURN_IF_ERROR(c->Flush());
    ANNAL_RETURN_IF_ERROR(c->Next(&h, &body));
    if (h.op != protocol::Op::kHelloOk) return AsStatus(h, body, "HELLO");
    return c;
  }

  ~RawClient() { ::close(fd_); }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;

  template <typename M>
  void Queue(protocol::Op op, uint32_t request_id, const M& message) {
    protocol::AppendFrame(&out_, op, request_id, message);
  }

  // Sends everything queued.
  Status Flush(std::chrono::milliseconds timeout = kDefaultTimeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    size_t at = 0;
    while (at < out_.size()) {
      ssize_t n = ::send(fd_, out_.data() + at, out_.size() - at, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        at += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
        return Status::Unavailable(Errno("send"));
      if (!WaitFor(POLLOUT, deadline)) return Status::Unavailable("annald took no data in time");
    }
    out_.clear();
    return Status::Ok();
  }

  // The next whole frame, waiting up to `timeout` for it. kUnavailable when
  // the server closed the connection or nothing came in time (`timed_out`
  // tells which, when given).
  Status Next(protocol::FrameHeader* h, std::string* body,
              std::chrono::milliseconds timeout = kDefaultTimeout, bool* timed_out = nullptr) {
    if (timed_out != nullptr) *timed_out = false;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
      if (in_.size() >= protocol::kFrameHeaderBytes) {
        ANNAL_RETURN_IF_ERROR(protocol::DecodeFrameHeader(
            reinterpret_cast<const uint8_t*>(in_.data()), protocol::kDefaultMaxFrameBytes, h));
        if (in_.size() >= h->length) {
          body->assign(in_, protocol::kFrameHeaderBytes, h->length - protocol::kFrameHeaderBytes);
          in_.erase(0, h->length);
          return Status::Ok();
        }
      }
      char buf[64 * 1024];
      ssize_t n = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) {
        in_.append(buf, static_cast<size_t>(n));
        continue;
      }
      if (n == 0) return Status::Unavailable("annald closed the connection");
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) return Status::Unavailable(Errno("recv"));
      if (!WaitFor(POLLIN, deadline)) {
        if (timed_out != nullptr) *timed_out = true;
        return Status::Unavailable("no frame from annald in time");
      }
    }
  }

  // One request and its answer, with nothing else in flight on this connection.
  template <typename M>
  Status Call(protocol::Op op, uint32_t request_id, const M& message, protocol::FrameHeader* h,
              std::string* body) {
    Queue(op, request_id, message);
    ANNAL_RETURN_IF_ERROR(Flush());
    ANNAL_RETURN_IF_ERROR(Next(h, body));
    if (h->request_id != request_id)
      return Status::Corruption("answer to request " + std::to_string(h->request_id) +
                                " while waiting for " + std::to_string(request_id));
    return Status::Ok();
  }

  // The whole of `stream` from version 0, read in READ_STREAM pages.
  Result<std::vector<RecordedEvent>> ReadWholeStream(const std::string& stream,
                                                     uint32_t page = 1000) {
    std::vector<RecordedEvent> all;
    while (true) {
      protocol::ReadStreamRequest req{
          .stream = stream, .from_version = all.size(), .max_count = page};
      protocol::FrameHeader h;
      std::string body;
      ANNAL_RETURN_IF_ERROR(Call(protocol::Op::kReadStream, ++next_request_id_, req, &h, &body));
      if (h.op != protocol::Op::kEvents) return AsStatus(h, body, "READ_STREAM " + stream);
      protocol::EventsResponse resp;
      ANNAL_RETURN_IF_ERROR(protocol::Decode(body, &resp));
      if (resp.events.empty()) return all;
      for (RecordedEvent& e : resp.events) all.push_back(std::move(e));
    }
  }

  // The status an ERROR frame carries, or a description of an unexpected frame.
  static Status AsStatus(const protocol::FrameHeader& h, const std::string& body,
                         const std::string& what) {
    protocol::ErrorResponse e;
    if (h.op == protocol::Op::kError && protocol::Decode(body, &e).ok())
      return protocol::ToStatus(e.code, e.actual_version, what + ": " + e.message);
    return Status::Corruption(what + " was answered with " + protocol::OpName(h.op));
  }

 private:
  explicit RawClient(int fd) : fd_(fd) {}

  bool WaitFor(short events, std::chrono::steady_clock::time_point deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd_, events, 0};
    return ::poll(&p, 1, static_cast<int>(left.count())) != 0;  // an error shows in the next call
  }

  static std::string Errno(const char* what) {
    return std::string(what) + ": " + std::strerror(errno);
  }

  const int fd_;
  std::string out_;
  std::string in_;
  uint32_t next_request_id_ = 0;
};

}  // namespace annal::testing
