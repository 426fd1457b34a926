// annald as a process: its metrics endpoint, its configuration (flags and
// TOML file), and a clean shutdown on SIGTERM.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "annald_process.h"
#include "raw_client.h"
#include "protocol.h"
#include "test_util.h"

namespace annal {
namespace {

using protocol::Op;
using testing::AnnaldProcess;
using testing::HttpGet;
using testing::TempDir;

bool SendAll(int fd, const std::string& bytes) {
  return ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size());
}

bool RecvExactly(int fd, std::string* out, size_t n) {
  out->resize(n);
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::recv(fd, out->data() + got, n - got, 0);
    if (r <= 0) return false;
    got += static_cast<size_t>(r);
  }
  return true;
}

// Reads one frame; false on close or timeout.
bool ReadFrame(int fd, protocol::FrameHeader* h, std::string* body) {
  std::string header;
  if (!RecvExactly(fd, &header, protocol::kFrameHeaderBytes)) return false;
  if (!protocol::DecodeFrameHeader(reinterpret_cast<const uint8_t*>(header.data()), 1u << 30, h).ok()) return false;
  return RecvExactly(fd, body, h->length - protocol::kFrameHeaderBytes);
}

// Connects and says HELLO; returns the fd and the server's HELLO_OK.
int Handshake(uint16_t port, protocol::HelloOk* ok) {
  int fd = testing::ConnectLoopback(port);
  if (fd < 0) return -1;
  std::string out;
  protocol::AppendFrame(&out, Op::kHello, 1, protocol::Hello{protocol::kProtocolVersion, "server_test"});
  protocol::FrameHeader h;
  std::string body;
  if (!SendAll(fd, out) || !ReadFrame(fd, &h, &body) || h.op != Op::kHelloOk ||
      !protocol::Decode(body, ok).ok()) {
    ::close(fd);
    return -1;
  }
  return fd;
}

Status AppendOne(int fd, uint32_t rid, const std::string& stream) {
  protocol::AppendRequest req;
  req.stream = stream;
  req.events.push_back(EventData{.type = "T", .payload = R"({"n":1})"});
  std::string out;
  protocol::AppendFrame(&out, Op::kAppend, rid, req);
  protocol::FrameHeader h;
  std::string body;
  if (!SendAll(fd, out) || !ReadFrame(fd, &h, &body)) return Status::IoError("no answer");
  if (h.op != Op::kAppendOk) return Status::InvalidArgument(std::string("got ") + protocol::OpName(h.op));
  return Status::Ok();
}

TEST(ServerTest, MetricsEndpointServesPrometheusText) {
  TempDir dir("server-metrics");
  auto server = AnnaldProcess::Start(dir.path());
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  protocol::HelloOk ok;
  int fd = Handshake((*server)->port(), &ok);
  ASSERT_GE(fd, 0);
  for (uint32_t i = 0; i < 5; ++i) ASSERT_TRUE(AppendOne(fd, 10 + i, "metrics-" + std::to_string(i % 2)).ok());
  std::string page = HttpGet((*server)->metrics_port(), "/metrics");
  EXPECT_NE(page.find("HTTP/1.1 200 OK"), std::string::npos);
  EXPECT_NE(page.find("\nannal_appends_total 5\n"), std::string::npos) << page;
  EXPECT_NE(page.find("\nannal_append_events_total 5\n"), std::string::npos);
  EXPECT_NE(page.find("\nannal_connections 1\n"), std::string::npos);
  EXPECT_NE(page.find("annal_append_latency_seconds_count 5"), std::string::npos);
  EXPECT_NE(page.find("annal_sync_latency_seconds_bucket{partition=\"0\",le=\"+Inf\"}"), std::string::npos);
  EXPECT_NE(page.find("annal_index_streams{partition=\"0\"} 2"), std::string::npos);
  EXPECT_NE(page.find("annal_partition_fail_stopped{partition=\"0\"} 0"), std::string::npos);
  // Two streams: the stream table holds at least two 40-byte slots.
  EXPECT_NE(page.find("annal_index_memory_bytes{partition=\"0\"} "), std::string::npos);
  EXPECT_EQ(page.find("annal_index_memory_bytes{partition=\"0\"} 0\n"), std::string::npos) << page;
  EXPECT_NE(page.find("annal_sealed_segments{partition=\"0\"} 0\n"), std::string::npos);
  EXPECT_NE(page.find("\nannal_block_cache_hits_total "), std::string::npos);
  EXPECT_NE(page.find("\nannal_tail_cache_hits_total{partition=\"0\"} "), std::string::npos);
  EXPECT_NE(page.find("\nannal_tail_cache_misses_total{partition=\"0\"} "), std::string::npos);
  // The active segment's ring, at annald's default of 16 MiB.
  EXPECT_NE(page.find("\nannal_tail_cache_bytes{partition=\"0\"} 16777216\n"), std::string::npos) << page;
  EXPECT_NE(page.find("annal_durable_head_position 5"), std::string::npos);
  EXPECT_NE(HttpGet((*server)->metrics_port(), "/other").find("404 Not Found"), std::string::npos);
  ::close(fd);
}

// Operators tell annald's threads apart by name (top -H, perf, gdb).
TEST(ServerTest, ThreadsAreNamed) {
  TempDir dir("server-threads");
  auto server = AnnaldProcess::Start(dir.path());
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  const std::vector<std::string> wanted{"network", "subscriptions", "state-loads", "metrics",
                                        "writer-p0", "finisher-p0", "checkpointer"};
  std::string tasks = "/proc/" + std::to_string((*server)->pid()) + "/task";
  auto names = [&] {
    std::set<std::string> out;
    for (const auto& task : std::filesystem::directory_iterator(tasks)) {
      std::ifstream comm(task.path() / "comm");
      std::string name;
      std::getline(comm, name);
      out.insert(name);
    }
    return out;
  };
  // Threads are named as they are made; a slow (sanitized) start gets time.
  std::set<std::string> seen = names();
  auto all_there = [&] {
    return std::all_of(wanted.begin(), wanted.end(), [&](const std::string& w) { return seen.count(w) > 0; });
  };
  for (int i = 0; i < 100 && !all_there(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    seen = names();
  }
  for (const std::string& want : wanted) EXPECT_TRUE(seen.count(want)) << "no thread named " << want;
}

TEST(ServerTest, SigtermFinishesWritesACheckpointAndExitsZero) {
  TempDir dir("server-sigterm");
  {
    auto server = AnnaldProcess::Start(dir.path());
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    protocol::HelloOk ok;
    int fd = Handshake((*server)->port(), &ok);
    ASSERT_GE(fd, 0);
    for (uint32_t i = 0; i < 20; ++i) ASSERT_TRUE(AppendOne(fd, 100 + i, "term-1").ok());
    EXPECT_TRUE((*server)->Stop()) << "annald must exit 0 on SIGTERM";
    EXPECT_TRUE((*server)->Logged("stopping on SIGTERM"));
    EXPECT_TRUE((*server)->Logged("stopped"));
    ::close(fd);
  }
  EXPECT_TRUE(std::filesystem::exists(dir.path() + "/partition-000/index.ckpt"));
  auto again = AnnaldProcess::Start(dir.path());
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE((*again)->Logged("durable head 20"));
}

TEST(ServerTest, ConfigFileSetsLimitsAndFlagsWin) {
  TempDir dir("server-config");
  std::filesystem::create_directories(dir.path());
  std::string config = dir.path() + "/annald.toml";
  std::ofstream(config) << "max_frame_bytes = 70000\nmax_in_flight = 77\n";
  auto server = AnnaldProcess::Start(dir.path() + "/data", {"--config", config, "--max-in-flight", "99"});
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  protocol::HelloOk ok;
  int fd = Handshake((*server)->port(), &ok);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(ok.max_frame_bytes, 70000u);
  EXPECT_EQ(ok.max_in_flight, 99u) << "the command line wins over the file";
  ::close(fd);
}

TEST(ServerTest, BadConfigurationIsRefusedWithAMessage) {
  TempDir dir("server-badconfig");
  std::filesystem::create_directories(dir.path());
  std::string config = dir.path() + "/annald.toml";
  std::ofstream(config) << "no_such_setting = 1\n";
  auto server = AnnaldProcess::Start(dir.path() + "/data", {"--config", config});
  ASSERT_FALSE(server.ok());
  EXPECT_NE(server.status().message().find("unknown key 'no_such_setting'"), std::string::npos)
      << server.status().message();
  auto bad_port = AnnaldProcess::Start(dir.path() + "/data", {"--max-in-flight", "0"});
  ASSERT_FALSE(bad_port.ok());
}

}  // namespace
}  // namespace annal

namespace annal {
namespace {

// Regression: an event accepted at the frame limit could not be read back,
// because a read response repeats stream, version, position and time per
// event. Such an append is now refused; the largest one that is accepted
// reads back.
TEST(ServerTest, AnEventTooLargeToReadBackIsRefused) {
  TempDir dir("server-framelimit");
  auto server = AnnaldProcess::Start(dir.path(), {"--max-frame-bytes", "65536"});
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  protocol::HelloOk ok;
  int fd = Handshake((*server)->port(), &ok);
  ASSERT_GE(fd, 0);
  auto append = [&](uint32_t rid, size_t frame_bytes, protocol::FrameHeader* h, std::string* body) {
    protocol::AppendRequest req;
    req.stream = "limit-1";
    req.events.push_back(EventData{.type = "T", .payload = ""});
    std::string probe;
    protocol::AppendFrame(&probe, Op::kAppend, rid, req);
    req.events[0].payload.assign(frame_bytes - probe.size(), 'x');
    std::string out;
    protocol::AppendFrame(&out, Op::kAppend, rid, req);
    EXPECT_EQ(out.size(), frame_bytes);
    return SendAll(fd, out) && ReadFrame(fd, h, body);
  };
  protocol::FrameHeader h;
  std::string body;
  ASSERT_TRUE(append(2, 65536, &h, &body));
  ASSERT_EQ(h.op, Op::kError);
  protocol::ErrorResponse e;
  ASSERT_TRUE(protocol::Decode(body, &e).ok());
  EXPECT_EQ(e.code, protocol::ErrorCode::kTooLarge);
  EXPECT_NE(e.message.find("could not be read back"), std::string::npos) << e.message;

  // Shrink until accepted; what is accepted must read back whole.
  size_t frame = 65536;
  do {
    frame -= 1;
    ASSERT_TRUE(append(3, frame, &h, &body));
  } while (h.op == Op::kError && frame > 65536 - 64);
  ASSERT_EQ(h.op, Op::kAppendOk) << "an append 64 bytes under the limit must be accepted";
  std::string out;
  protocol::AppendFrame(&out, Op::kReadStream, 4, protocol::ReadStreamRequest{"limit-1", 0, ReadDirection::kForward, 10});
  ASSERT_TRUE(SendAll(fd, out) && ReadFrame(fd, &h, &body));
  ASSERT_EQ(h.op, Op::kEvents);
  protocol::EventsResponse events;
  ASSERT_TRUE(protocol::Decode(body, &events).ok());
  ASSERT_EQ(events.events.size(), 1u);
  EXPECT_LE(h.length, 65536u);
  ::close(fd);
}

}  // namespace
}  // namespace annal
