// annal-bench's scheduler and workload: latency is charged from each
// request's due time, so a target that stalls is charged for every request
// that came due during the stall — including those the runner could not
// even send — and the workload's choices have the shapes they claim.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include <gtest/gtest.h>

#include "annal_target.h"
#include "protocol.h"
#include "runner.h"

namespace annal::loadgen {
namespace {

using protocol::Op;

int64_t SteadyNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// A stand-in for annald that answers HELLO and APPEND at once, except that
// when the `stall_after`-th append arrives it stops for `stall` (its single
// thread sleeps: nothing is read or answered on any connection).
class StallingServer {
 public:
  StallingServer(uint64_t stall_after, std::chrono::milliseconds stall)
      : stall_after_(stall_after), stall_(stall) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(::listen(listen_fd_, 16), 0);
    socklen_t len = sizeof addr;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { Serve(); });
  }
  ~StallingServer() {
    stop_ = true;
    thread_.join();
    for (auto& [fd, in] : clients_) ::close(fd);
    ::close(listen_fd_);
  }
  uint16_t port() const { return port_; }
  int64_t stall_begin_ns() const { return stall_begin_ns_; }
  int64_t stall_end_ns() const { return stall_end_ns_; }

 private:
  void Serve() {
    while (!stop_) {
      std::vector<pollfd> fds{{listen_fd_, POLLIN, 0}};
      for (auto& [fd, in] : clients_) fds.push_back({fd, POLLIN, 0});
      if (::poll(fds.data(), fds.size(), 10) <= 0) continue;
      if (fds[0].revents & POLLIN) clients_[::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC)];
      for (size_t i = 1; i < fds.size(); ++i)
        if (fds[i].revents & (POLLIN | POLLHUP)) Read(fds[i].fd);
    }
  }

  void Read(int fd) {
    std::string& in = clients_[fd];
    char buf[65536];
    ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n <= 0) return;
    in.append(buf, static_cast<size_t>(n));
    std::string out;
    while (in.size() >= protocol::kFrameHeaderBytes) {
      protocol::FrameHeader h;
      ASSERT_TRUE(protocol::DecodeFrameHeader(reinterpret_cast<const uint8_t*>(in.data()),
                                              protocol::kDefaultMaxFrameBytes, &h).ok());
      if (in.size() < h.length) break;
      if (h.op == Op::kHello) {
        protocol::AppendFrame(&out, Op::kHelloOk, h.request_id, protocol::HelloOk{});
      } else {
        ASSERT_EQ(h.op, Op::kAppend);
        if (++appends_ == stall_after_) {
          stall_begin_ns_ = SteadyNs();
          std::this_thread::sleep_for(stall_);
          stall_end_ns_ = SteadyNs();
        }
        AppendResult r;
        r.first_position = r.last_position = GlobalPosition(appends_);
        protocol::AppendFrame(&out, Op::kAppendOk, h.request_id, r);
      }
      in.erase(0, h.length);
    }
    size_t sent = 0;
    while (sent < out.size()) {
      ssize_t w = ::send(fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
      ASSERT_GT(w, 0);
      sent += static_cast<size_t>(w);
    }
  }

  const uint64_t stall_after_;
  const std::chrono::milliseconds stall_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::map<int, std::string> clients_;
  uint64_t appends_ = 0;
  std::atomic<int64_t> stall_begin_ns_{0}, stall_end_ns_{0};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

struct Measured {
  int64_t due_ns;
  int64_t done_ns;
};

TEST(LoadgenRunner, StallIsChargedToEveryRequestDueDuringIt) {
  constexpr double kRate = 2000;
  constexpr auto kStall = std::chrono::milliseconds(300);
  StallingServer server(/*stall_after=*/400, kStall);
  AnnalOptions o;
  o.port = server.port();
  o.connections = 2;
  o.depth = 16;  // far fewer than the requests due in the stall: most wait unsent
  o.run_id = "stall";
  o.workload.streams = 100;
  auto target = AnnalTarget::Connect(o);
  ASSERT_TRUE(target.ok()) << target.status().ToString();

  std::vector<Measured> measured;
  RunOptions run;
  run.rate_per_s = kRate;
  run.warmup = std::chrono::milliseconds(0);
  run.duration = std::chrono::milliseconds(800);
  run.on_complete = [&](OpKind, int64_t due, int64_t done) { measured.push_back({due, done}); };
  auto r = loadgen::Run(**target, o.workload, run);
  ASSERT_TRUE(r.ok()) << r.status().ToString();

  int64_t begin = server.stall_begin_ns(), end = server.stall_end_ns();
  ASSERT_GT(begin, 0) << "the server never stalled";
  ASSERT_GE(end - begin, std::chrono::nanoseconds(kStall).count());
  // Every request of the window was measured, none dropped.
  EXPECT_EQ(r->ops[0].ok, r->offered);
  EXPECT_EQ(measured.size(), r->offered);
  EXPECT_EQ(r->all.count(), r->offered);
  // Requests kept coming due through the stall (the schedule did not wait
  // for the server) and each was answered only after it: its latency holds
  // the rest of the stall.
  size_t due_in_stall = 0;
  for (const Measured& m : measured) {
    if (m.due_ns < begin || m.due_ns >= end) continue;
    ++due_in_stall;
    EXPECT_GE(m.done_ns, end) << "a request due during the stall completed before it ended";
    EXPECT_GE(m.done_ns - m.due_ns, end - m.due_ns);
  }
  double expected = kRate * std::chrono::duration<double>(kStall).count();
  EXPECT_GE(static_cast<double>(due_in_stall), 0.9 * expected);
  // The figures show it: at least a tenth of the requests waited over 100 ms.
  EXPECT_GE(r->all.ValueAtPercentile(90), 100'000'000u);
  EXPECT_GE(r->all.max_ns(), 250'000'000u);
}

TEST(LoadgenRunner, ConstantArrivalsOfferTheRate) {
  StallingServer server(/*stall_after=*/UINT64_MAX, std::chrono::milliseconds(0));
  AnnalOptions o;
  o.port = server.port();
  o.run_id = "rate";
  auto target = AnnalTarget::Connect(o);
  ASSERT_TRUE(target.ok()) << target.status().ToString();
  RunOptions run;
  run.rate_per_s = 5000;
  run.warmup = std::chrono::milliseconds(100);
  run.duration = std::chrono::milliseconds(400);
  auto r = loadgen::Run(**target, o.workload, run);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  // 5000/s for 0.4 s: 2000 due in the window, give or take the edge.
  EXPECT_NEAR(static_cast<double>(r->offered), 2000, 2);
  EXPECT_EQ(r->ops[0].ok, r->offered);
  EXPECT_EQ(r->ops[0].conflicts + r->ops[0].errors + r->ops[0].timed_out, 0u);
}

TEST(LoadgenWorkload, ZipfFavoursLowRanksByTheExponent) {
  WorkloadOptions w;
  w.streams = 1000;
  w.distribution = StreamDistribution::kZipf;
  w.zipf_exponent = 1.0;
  StreamChooser chooser(w);
  std::vector<uint64_t> hits(w.streams);
  constexpr int kDraws = 400'000;
  for (int i = 0; i < kDraws; ++i) ++hits[chooser.Next()];
  // With s = 1, rank 1 is drawn twice as often as rank 2 and ten times as
  // often as rank 10; H(1000) ~ 7.485 gives rank 1 a share of 13.4 %.
  EXPECT_NEAR(static_cast<double>(hits[0]) / kDraws, 1 / 7.485, 0.005);
  EXPECT_NEAR(static_cast<double>(hits[0]) / static_cast<double>(hits[1]), 2.0, 0.1);
  EXPECT_NEAR(static_cast<double>(hits[0]) / static_cast<double>(hits[9]), 10.0, 1.0);
}

TEST(LoadgenWorkload, UniformCoversEveryStreamEvenly) {
  WorkloadOptions w;
  w.streams = 100;
  StreamChooser chooser(w);
  std::vector<uint64_t> hits(w.streams);
  for (int i = 0; i < 100'000; ++i) ++hits[chooser.Next()];
  for (uint64_t h : hits) EXPECT_NEAR(static_cast<double>(h), 1000, 150);
}

TEST(LoadgenWorkload, JsonPayloadsAreValidJsonOfTheExactSize) {
  for (uint32_t size : {kMinJsonEventBytes, 500u, 4096u}) {
    WorkloadOptions w;
    w.event_bytes = size;
    PayloadMaker maker(w);
    std::string previous;
    for (uint64_t seq = 0; seq < 50; ++seq) {
      std::string p = maker.Make(seq);
      ASSERT_EQ(p.size(), size);
      auto doc = nlohmann::json::parse(p, nullptr, /*allow_exceptions=*/false);
      ASSERT_FALSE(doc.is_discarded()) << p;
      EXPECT_EQ(doc["sequence"].get<uint64_t>(), seq);
      EXPECT_NE(p, previous);
      previous = p;
    }
  }
}

TEST(LoadgenWorkload, RandomPayloadsHaveTheExactSizeAndDiffer) {
  WorkloadOptions w;
  w.payload = PayloadKind::kRandom;
  w.event_bytes = 300;
  PayloadMaker maker(w);
  std::string a = maker.Make(1), b = maker.Make(2);
  EXPECT_EQ(a.size(), 300u);
  EXPECT_EQ(b.size(), 300u);
  EXPECT_NE(a, b);
}

}  // namespace
}  // namespace annal::loadgen
