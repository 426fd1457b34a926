// A real annald given bad input over raw TCP: malformed frames, frames cut
// short, lying length prefixes, random bytes, a subscriber that never reads.
// Each case pins what docs/protocol.md ("Bad input") promises: an ERROR
// frame (kInvalidRequest, or kTooLarge for an oversize length) carrying the
// header's request id, then the connection closes; silence after a partial
// frame ends at the idle timeout; a slow reader is cut off at the
// slow-reader timeout without stalling appenders. After every case a fresh,
// well-behaved connection must still get HELLO_OK, PONG and APPEND_OK.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <iterator>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "annald_process.h"
#include "frame_bytes.h"
#include "protocol.h"
#include "test_util.h"

namespace annal::protocol {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using testing::AnnaldProcess;

// How long a test waits for an answer the server should send at once.
constexpr milliseconds kPromptMs{5000};

struct Frame {
  FrameHeader header;
  std::string body;
};

// What reading from a connection came to.
enum class ReadEnd { kFrame, kClosed, kTimedOut };

// A raw TCP connection to annald that speaks frames only when asked to.
class RawConnection {
 public:
  // rcvbuf_bytes > 0 shrinks the receive buffer before connecting, so a
  // client that stops reading backs the server up quickly.
  explicit RawConnection(uint16_t port, int rcvbuf_bytes = 0) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_GE(fd_, 0) << std::strerror(errno);
    if (rcvbuf_bytes > 0) {
      EXPECT_EQ(::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf_bytes, sizeof rcvbuf_bytes), 0);
    }
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    EXPECT_TRUE(connected_) << "connect to 127.0.0.1:" << port << ": " << std::strerror(errno);
  }
  ~RawConnection() {
    if (fd_ >= 0) ::close(fd_);
  }
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;

  // False when the server already closed (EPIPE, ECONNRESET).
  bool Send(std::string_view bytes) {
    while (!bytes.empty()) {
      ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  template <typename M>
  bool SendFrame(Op op, uint32_t request_id, const M& m) {
    std::string f;
    AppendFrame(&f, op, request_id, m);
    return Send(f);
  }

  // Reads the next whole frame, or learns that the server closed, or gives
  // up after `timeout`. A frame the codec refuses fails the test: the
  // server must only ever send well-formed frames.
  ReadEnd Read(Frame* f, milliseconds timeout = kPromptMs) {
    auto deadline = Clock::now() + timeout;
    while (true) {
      if (in_.size() >= kFrameHeaderBytes) {
        Status s =
            DecodeFrameHeader(reinterpret_cast<const uint8_t*>(in_.data()), UINT32_MAX, &f->header);
        EXPECT_TRUE(s.ok()) << "the server sent a bad frame header: " << s.ToString();
        if (!s.ok()) return ReadEnd::kClosed;
        if (in_.size() >= f->header.length) {
          f->body = in_.substr(kFrameHeaderBytes, f->header.length - kFrameHeaderBytes);
          in_.erase(0, f->header.length);
          return ReadEnd::kFrame;
        }
      }
      if (eof_) {
        EXPECT_TRUE(in_.empty() || cut_frame_ok_) << "the server closed in the middle of a frame";
        return ReadEnd::kClosed;
      }
      auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return ReadEnd::kTimedOut;
      pollfd p{fd_, POLLIN, 0};
      int r = ::poll(&p, 1, static_cast<int>(left.count()));
      if (r < 0 && errno == EINTR) continue;
      if (r == 0) return ReadEnd::kTimedOut;
      char buf[64 * 1024];
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n > 0) {
        in_.append(buf, static_cast<size_t>(n));
      } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        eof_ = true;  // EOF or a reset: closed either way
      }
    }
  }

  // Reads the next frame, which must be `op` for `request_id`, into `m`.
  template <typename M>
  void Expect(Op op, uint32_t request_id, M* m) {
    Frame f;
    ASSERT_EQ(Read(&f), ReadEnd::kFrame) << "waiting for " << OpName(op);
    ASSERT_EQ(f.header.op, op) << "got " << OpName(f.header.op) << " instead of " << OpName(op)
                               << ErrorText(f);
    EXPECT_EQ(f.header.request_id, request_id) << OpName(op);
    Status s = Decode(f.body, m);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  void Hello() {
    ASSERT_TRUE(SendFrame(Op::kHello, 1, protocol::Hello{kProtocolVersion, "server_input_test"}));
    HelloOk ok;
    ASSERT_NO_FATAL_FAILURE(Expect(Op::kHelloOk, 1, &ok));
    EXPECT_EQ(ok.version, kProtocolVersion);
  }

  // Everything the server sends until it closes, within `timeout`.
  // Returns false when it did not close in time.
  bool ReadUntilClosed(std::vector<Frame>* frames, milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    while (true) {
      auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return false;
      Frame f;
      switch (Read(&f, left)) {
        case ReadEnd::kFrame:
          frames->push_back(std::move(f));
          break;
        case ReadEnd::kClosed:
          return true;
        case ReadEnd::kTimedOut:
          return false;
      }
    }
  }

  static std::string ErrorText(const Frame& f) {
    if (f.header.op != Op::kError && f.header.op != Op::kSubDropped) return "";
    ErrorResponse e;
    if (!Decode(f.body, &e).ok()) return " (undecodable error body)";
    return " (error " + std::to_string(static_cast<int>(e.code)) + ": " + e.message + ")";
  }

  bool connected() const { return connected_; }
  // A connection the server cut off while its output was backed up may end
  // in the middle of a frame: what the kernel had taken is still delivered.
  void AllowCutFrame() { cut_frame_ok_ = true; }

 private:
  int fd_ = -1;
  bool connected_ = false;
  bool eof_ = false;
  bool cut_frame_ok_ = false;
  std::string in_;
};

// A frame of `op` around `body`, whatever the body is.
std::string RawFrame(Op op, uint32_t request_id, std::string_view body) {
  return Header(static_cast<uint32_t>(kFrameHeaderBytes + body.size()), static_cast<uint8_t>(op), 0,
                0, request_id) +
         std::string(body);
}

class ServerInputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::make_unique<testing::TempDir>(
        std::string("server-input-") +
        ::testing::UnitTest::GetInstance()->current_test_info()->name());
  }

  // After every case, the server still serves a well-behaved client.
  void TearDown() override {
    if (!server_) return;
    ExpectHealthy();
    EXPECT_EQ(::waitpid(server_->pid(), nullptr, WNOHANG), 0) << "annald exited";
  }

  void Start(std::vector<std::string> extra_args = {}) {
    auto s = AnnaldProcess::Start(dir_->path(), std::move(extra_args));
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    server_ = std::move(s.value());
  }
  uint16_t port() const { return server_->port(); }

  // HELLO + PING -> PONG, and an APPEND that succeeds, on a new connection.
  void ExpectHealthy() {
    SCOPED_TRACE("a fresh well-behaved connection");
    RawConnection c(port());
    ASSERT_TRUE(c.connected());
    ASSERT_NO_FATAL_FAILURE(c.Hello());
    ASSERT_TRUE(c.SendFrame(Op::kPing, 2, Ping{0x5eed}));
    Ping pong;
    ASSERT_NO_FATAL_FAILURE(c.Expect(Op::kPong, 2, &pong));
    EXPECT_EQ(pong.token, 0x5eedu);
    AppendRequest append;
    append.stream = "healthy-" + std::to_string(++healthy_checks_);
    append.expected = ExpectedVersion::NoStream();
    append.events = {testing::Event("Checked", R"({"ok":true})")};
    ASSERT_TRUE(c.SendFrame(Op::kAppend, 3, append));
    AppendResult r;
    ASSERT_NO_FATAL_FAILURE(c.Expect(Op::kAppendOk, 3, &r));
    EXPECT_EQ(r.first_version, StreamVersion(0));
  }

  // The next frame must be ERROR `code` for `request_id`, and then the
  // server must close the connection.
  void ExpectErrorThenClose(RawConnection& c, ErrorCode code, uint32_t request_id) {
    Frame f;
    ASSERT_EQ(c.Read(&f), ReadEnd::kFrame) << "expected an ERROR frame";
    ASSERT_EQ(f.header.op, Op::kError) << "got " << OpName(f.header.op);
    ErrorResponse e;
    ASSERT_TRUE(Decode(f.body, &e).ok());
    EXPECT_EQ(static_cast<int>(e.code), static_cast<int>(code)) << e.message;
    EXPECT_EQ(f.header.request_id, request_id);
    EXPECT_FALSE(e.message.empty());
    EXPECT_EQ(c.Read(&f), ReadEnd::kClosed) << "the server kept the connection open after ERROR";
  }

  // Sends `bytes` after HELLO and expects ERROR `code` for `request_id`,
  // then the close.
  void ExpectRefusedAfterHello(std::string_view bytes, ErrorCode code, uint32_t request_id) {
    RawConnection c(port());
    ASSERT_TRUE(c.connected());
    ASSERT_NO_FATAL_FAILURE(c.Hello());
    ASSERT_TRUE(c.Send(bytes));
    ExpectErrorThenClose(c, code, request_id);
  }

  // The server closes `c` without a word, no sooner than about `idle` and
  // well within `idle` + a margin.
  void ExpectSilentCloseAfterIdle(RawConnection& c, milliseconds idle) {
    auto start = Clock::now();
    std::vector<Frame> frames;
    ASSERT_TRUE(c.ReadUntilClosed(&frames, idle + milliseconds(5000)))
        << "not closed within the idle timeout and 5 s";
    auto waited = std::chrono::duration_cast<milliseconds>(Clock::now() - start);
    EXPECT_TRUE(frames.empty()) << "got " << OpName(frames[0].header.op)
                                << RawConnection::ErrorText(frames[0]);
    // The idle clock starts at the last byte received, just before `start`.
    EXPECT_GE(waited.count(), idle.count() * 8 / 10) << "closed before the idle timeout";
  }

  std::unique_ptr<testing::TempDir> dir_;
  std::unique_ptr<AnnaldProcess> server_;
  int healthy_checks_ = 0;
};

// ------------------------------------------------------------ the handshake

TEST_F(ServerInputTest, FirstFrameThatIsNotHelloIsRefusedAndClosed) {
  Start();
  for (Op first : {Op::kPing, Op::kAppend, Op::kSubscribe}) {
    SCOPED_TRACE(OpName(first));
    RawConnection c(port());
    ASSERT_TRUE(c.connected());
    std::string frame;
    if (first == Op::kPing) AppendFrame(&frame, first, 77, Ping{1});
    if (first == Op::kAppend) {
      AppendRequest a;
      a.stream = "before-hello";
      a.events = {testing::Event("T", "{}")};
      AppendFrame(&frame, first, 77, a);
    }
    if (first == Op::kSubscribe) AppendFrame(&frame, first, 77, SubscribeRequest{});
    ASSERT_TRUE(c.Send(frame));
    ExpectErrorThenClose(c, ErrorCode::kInvalidRequest, 77);
  }
  // Nothing was appended before HELLO.
  RawConnection c(port());
  ASSERT_NO_FATAL_FAILURE(c.Hello());
  ASSERT_TRUE(c.SendFrame(Op::kStreamInfo, 2, StreamInfoRequest{"before-hello"}));
  ErrorResponse e;
  ASSERT_NO_FATAL_FAILURE(c.Expect(Op::kError, 2, &e));
  EXPECT_EQ(e.code, ErrorCode::kStreamNotFound);
}

TEST_F(ServerInputTest, HelloWithVersion2IsRefusedAsUnsupportedAndClosed) {
  Start();
  RawConnection c(port());
  ASSERT_TRUE(c.SendFrame(Op::kHello, 9, protocol::Hello{2, "from-the-future"}));
  ExpectErrorThenClose(c, ErrorCode::kUnsupportedVersion, 9);
}

TEST_F(ServerInputTest, HelloThatFailsToDecodeIsRefusedAndClosed) {
  Start();
  RawConnection c(port());
  ASSERT_TRUE(c.Send(RawFrame(Op::kHello, 4,
                              std::string_view("\x01\x00\x09"
                                               "abc",
                                               6))));
  ExpectErrorThenClose(c, ErrorCode::kInvalidRequest, 4);
}

// ------------------------------------------------------------ bad headers

TEST_F(ServerInputTest, UnknownOpcodeIsRefusedAndClosed) {
  Start();
  for (uint8_t op : {0x00, 0x03, 0x22, 0x7f, 0x80, 0xfe}) {
    SCOPED_TRACE(static_cast<int>(op));
    ExpectRefusedAfterHello(Header(20, op, 0, 0, 31) + std::string(8, '\0'),
                            ErrorCode::kInvalidRequest, 31);
  }
}

// A client may not send what only a server sends.
TEST_F(ServerInputTest, ResponseOpcodeFromAClientIsRefusedAndClosed) {
  Start();
  std::string pong;
  AppendFrame(&pong, Op::kPong, 32, Ping{1});
  ExpectRefusedAfterHello(pong, ErrorCode::kInvalidRequest, 32);
}

TEST_F(ServerInputTest, NonzeroFlagsOrReservedBytesAreRefusedAndClosed) {
  Start();
  std::string ping;
  AppendFrame(&ping, Op::kPing, 33, Ping{1});
  std::string flagged = ping;
  flagged[5] = 0x01;
  ExpectRefusedAfterHello(flagged, ErrorCode::kInvalidRequest, 33);
  std::string high_flag = ping;
  high_flag[5] = static_cast<char>(0x80);
  ExpectRefusedAfterHello(high_flag, ErrorCode::kInvalidRequest, 33);
  std::string reserved = ping;
  reserved[7] = 0x01;
  ExpectRefusedAfterHello(reserved, ErrorCode::kInvalidRequest, 33);
}

TEST_F(ServerInputTest, LengthBelowTheHeaderIsRefusedAsInvalidAndClosed) {
  Start();
  for (uint32_t length : {0u, 4u, 11u}) {
    SCOPED_TRACE(length);
    ExpectRefusedAfterHello(Header(length, static_cast<uint8_t>(Op::kPing), 0, 0, 34),
                            ErrorCode::kInvalidRequest, 34);
  }
}

TEST_F(ServerInputTest, LengthAboveTheMaximumIsRefusedAsTooLargeAndClosed) {
  Start({"--max-frame-bytes", "65536"});
  {
    RawConnection c(port());
    ASSERT_NO_FATAL_FAILURE(c.Hello());
    // HELLO_OK announced the limit... checked in FrameLimitIsAnnouncedInHelloOk.
    ASSERT_TRUE(c.Send(Header(65537, static_cast<uint8_t>(Op::kAppend), 0, 0, 35)));
    ExpectErrorThenClose(c, ErrorCode::kTooLarge, 35);
  }
  ExpectRefusedAfterHello(Header(UINT32_MAX, static_cast<uint8_t>(Op::kAppend), 0, 0, 36),
                          ErrorCode::kTooLarge, 36);
  // A frame of exactly the maximum is fine (a PING body that long fails
  // to decode, so the answer is kInvalidRequest, not kTooLarge).
  ExpectRefusedAfterHello(RawFrame(Op::kPing, 37, std::string(65536 - kFrameHeaderBytes, 'x')),
                          ErrorCode::kInvalidRequest, 37);
}

// The client sends an oversize frame's body right behind its header: the
// ERROR must still reach it before the close.
TEST_F(ServerInputTest, OversizeFrameWithItsBodyStillGetsTheError) {
  Start({"--max-frame-bytes", "65536"});
  RawConnection c(port());
  ASSERT_NO_FATAL_FAILURE(c.Hello());
  std::string frame = Header(100'000, static_cast<uint8_t>(Op::kAppend), 0, 0, 38);
  frame.append(100'000 - kFrameHeaderBytes, 'b');
  c.Send(frame);  // the server may close before it has all of it
  ExpectErrorThenClose(c, ErrorCode::kTooLarge, 38);
}

TEST_F(ServerInputTest, FrameLimitIsAnnouncedInHelloOk) {
  Start({"--max-frame-bytes", "65536"});
  RawConnection c(port());
  ASSERT_TRUE(c.SendFrame(Op::kHello, 1, protocol::Hello{kProtocolVersion, "t"}));
  HelloOk ok;
  ASSERT_NO_FATAL_FAILURE(c.Expect(Op::kHelloOk, 1, &ok));
  EXPECT_EQ(ok.max_frame_bytes, 65536u);
  EXPECT_GT(ok.max_in_flight, 0u);
}

// ------------------------------------------------------------ bad bodies

std::string FilterBytes(uint8_t kind, std::string_view value, std::vector<std::string> types) {
  std::string out;
  BodyWriter w(&out);
  w.U8(kind);
  w.Str8(value);
  w.U8(static_cast<uint8_t>(types.size()));
  for (const std::string& t : types) w.Str8(t);
  return out;
}

TEST_F(ServerInputTest, BodiesThatFailToDecodeAreRefusedAndClosed) {
  Start();
  AppendRequest append;
  append.stream = "bad-body";
  append.events = {testing::Event("T", R"({"a":1})")};
  std::string good_append;
  AppendFrame(&good_append, Op::kAppend, 40, append);
  std::string_view append_body = std::string_view(good_append).substr(kFrameHeaderBytes);

  std::string read_all_none_with_value;
  BodyWriter(&read_all_none_with_value).U64(1);
  BodyWriter(&read_all_none_with_value).U32(10);
  read_all_none_with_value += FilterBytes(0, "account", {});

  std::string subscribe_stream_without_name;
  BodyWriter(&subscribe_stream_without_name).U8(0);
  BodyWriter(&subscribe_stream_without_name).Str8("");
  BodyWriter(&subscribe_stream_without_name).U64(0);
  subscribe_stream_without_name += FilterBytes(0, "", {});

  std::string too_many_types;
  BodyWriter(&too_many_types).U64(1);
  BodyWriter(&too_many_types).U32(10);
  too_many_types += FilterBytes(0, "", std::vector<std::string>(65, "T"));

  LoadStateRequest load;
  load.stream = "account-1";
  std::string good_load;
  AppendFrame(&good_load, Op::kLoadState, 40, load);
  std::string_view load_body = std::string_view(good_load).substr(kFrameHeaderBytes);
  const size_t load_kind_at = 1 + load.stream.size();
  auto load_with = [&](size_t at, char byte) {
    std::string b(load_body);
    b[at] = byte;
    return b;
  };
  WriteSnapshotRequest no_reducer;
  no_reducer.snapshot.stream = "order-1";
  std::string write_without_reducer;
  AppendFrame(&write_without_reducer, Op::kWriteSnapshot, 40, no_reducer);

  ReadAllRangeRequest range{1, 100, 10, {}};
  std::string good_range;
  AppendFrame(&good_range, Op::kReadAllRange, 40, range);
  std::string_view range_body = std::string_view(good_range).substr(kFrameHeaderBytes);
  SetCheckpointRequest set{"balances", 7, CheckpointExpectation::At(GlobalPosition(3)), "blob"};
  std::string good_set;
  AppendFrame(&good_set, Op::kSetCheckpoint, 40, set);
  std::string_view set_body = std::string_view(good_set).substr(kFrameHeaderBytes);
  const size_t set_kind_at = 1 + set.name.size() + 8;
  auto set_with_kind = [&](char kind) {
    std::string b(set_body);
    b[set_kind_at] = kind;
    return b;
  };

  struct Case {
    const char* name;
    Op op;
    std::string body;
  };
  const std::vector<Case> cases = {
      {"PING with a trailing byte", Op::kPing, std::string(9, '\1')},
      {"PING cut short", Op::kPing, std::string(7, '\1')},
      {"APPEND cut short", Op::kAppend, std::string(append_body.substr(0, append_body.size() - 1))},
      {"APPEND with a trailing byte", Op::kAppend, std::string(append_body) + "x"},
      {"APPEND with expected-version kind 9", Op::kAppend,
       [&] {
         std::string b(append_body);
         b[1 + append.stream.size()] = 9;
         return b;
       }()},
      {"APPEND claiming 65535 events", Op::kAppend,
       [&] {
         std::string b(append_body);
         uint16_t n = 0xffff;
         std::memcpy(b.data() + 1 + append.stream.size() + 1 + 8, &n, 2);
         return b;
       }()},
      {"READ_STREAM with direction 2", Op::kReadStream,
       std::string("\x01s\0\0\0\0\0\0\0\0\x02\x0a\0\0\0", 15)},
      {"READ_ALL filter kind none with a value", Op::kReadAll, read_all_none_with_value},
      {"READ_ALL filter with 65 types", Op::kReadAll, too_many_types},
      {"STREAM_INFO whose name runs past the frame", Op::kStreamInfo,
       std::string("\x20"
                   "abc")},
      {"SUBSCRIBE to one stream naming none", Op::kSubscribe, subscribe_stream_without_name},
      {"UNSUBSCRIBE cut short", Op::kUnsubscribe, std::string(3, '\0')},
      {"LOAD_STATE cut short", Op::kLoadState,
       std::string(load_body.substr(0, load_body.size() - 1))},
      {"LOAD_STATE with a trailing byte", Op::kLoadState, std::string(load_body) + "x"},
      {"LOAD_STATE with target kind 3", Op::kLoadState, load_with(load_kind_at, 3)},
      {"LOAD_STATE at the head with a version", Op::kLoadState, load_with(load_kind_at + 1, 7)},
      {"LOAD_STATE with an unknown flag bit", Op::kLoadState, load_with(load_body.size() - 1, 2)},
      {"WRITE_SNAPSHOT naming no reducer", Op::kWriteSnapshot,
       write_without_reducer.substr(kFrameHeaderBytes)},
      {"LIST_SNAPSHOTS whose name runs past the frame", Op::kListSnapshots,
       std::string("\x20"
                   "abc")},
      {"READ_HEAD with a body", Op::kReadHead, std::string(1, '\0')},
      {"READ_ALL_RANGE cut short", Op::kReadAllRange,
       std::string(range_body.substr(0, range_body.size() - 1))},
      {"READ_ALL_RANGE with filter kind 3", Op::kReadAllRange,
       [&] {
         std::string b(range_body);
         b[8 + 8 + 4] = 3;
         return b;
       }()},
      {"GET_CHECKPOINT naming no consumer", Op::kGetCheckpoint, std::string(1, '\0')},
      {"SET_CHECKPOINT with expectation kind 3", Op::kSetCheckpoint, set_with_kind(3)},
      {"SET_CHECKPOINT expecting any with a position", Op::kSetCheckpoint, set_with_kind(0)},
      {"SET_CHECKPOINT cut short", Op::kSetCheckpoint, std::string(set_body.substr(0, set_body.size() - 1))},
      {"DELETE_CHECKPOINT with a trailing byte", Op::kDeleteCheckpoint, std::string("\x01" "ax")},
      {"LIST_CHECKPOINTS whose prefix runs past the frame", Op::kListCheckpoints,
       std::string("\x20"
                   "abc")},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    ExpectRefusedAfterHello(RawFrame(c.op, 41, c.body), ErrorCode::kInvalidRequest, 41);
  }
}

// Requests pipelined ahead of a malformed frame are answered before the
// ERROR; nothing behind it is.
TEST_F(ServerInputTest, RequestsBeforeAMalformedFrameAreStillAnswered) {
  Start();
  RawConnection c(port());
  std::string bytes;
  AppendFrame(&bytes, Op::kHello, 1, protocol::Hello{kProtocolVersion, "t"});
  AppendFrame(&bytes, Op::kPing, 2, Ping{22});
  bytes += Header(20, 0x03, 0, 0, 3) + std::string(8, '\0');
  AppendFrame(&bytes, Op::kPing, 4, Ping{44});
  ASSERT_TRUE(c.Send(bytes));
  HelloOk ok;
  ASSERT_NO_FATAL_FAILURE(c.Expect(Op::kHelloOk, 1, &ok));
  Ping pong;
  ASSERT_NO_FATAL_FAILURE(c.Expect(Op::kPong, 2, &pong));
  EXPECT_EQ(pong.token, 22u);
  ExpectErrorThenClose(c, ErrorCode::kInvalidRequest, 3);
}

// ------------------------------------------------------------ silence

TEST_F(ServerInputTest, TruncatedFrameThenSilenceIsClosedAfterTheIdleTimeout) {
  Start({"--idle-timeout-ms", "500"});
  std::string ping;
  AppendFrame(&ping, Op::kPing, 50, Ping{1});
  for (size_t cut : {size_t{1}, size_t{6}, size_t{11}, size_t{12}, size_t{19}}) {
    SCOPED_TRACE(cut);
    RawConnection c(port());
    ASSERT_NO_FATAL_FAILURE(c.Hello());
    ASSERT_TRUE(c.Send(std::string_view(ping).substr(0, cut)));
    ExpectSilentCloseAfterIdle(c, milliseconds(500));
  }
  // Before HELLO too.
  RawConnection c(port());
  ASSERT_TRUE(c.Send(std::string_view(ping).substr(0, 5)));
  ExpectSilentCloseAfterIdle(c, milliseconds(500));
}

TEST_F(ServerInputTest, LyingLengthPrefixIsClosedAfterTheIdleTimeout) {
  Start({"--idle-timeout-ms", "500"});
  RawConnection c(port());
  ASSERT_NO_FATAL_FAILURE(c.Hello());
  // Claims 1000 bytes of APPEND, sends 100 of them, then waits.
  ASSERT_TRUE(c.Send(Header(1000, static_cast<uint8_t>(Op::kAppend), 0, 0, 51) +
                     std::string(100 - kFrameHeaderBytes, 'a')));
  ExpectSilentCloseAfterIdle(c, milliseconds(500));
}

// A silent but well-behaved connection is closed at the idle timeout too,
// and not before.
TEST_F(ServerInputTest, IdleConnectionIsClosedAfterTheIdleTimeout) {
  Start({"--idle-timeout-ms", "500"});
  RawConnection c(port());
  ASSERT_NO_FATAL_FAILURE(c.Hello());
  ExpectSilentCloseAfterIdle(c, milliseconds(500));
}

// ------------------------------------------------------------ random bytes

TEST_F(ServerInputTest, RandomBytesGetAnErrorOrACloseButNeverCrashTheServer) {
  Start({"--idle-timeout-ms", "300", "--max-frame-bytes", "65536"});
  std::mt19937 rng(20251126);
  constexpr int kConnections = 24;
  std::vector<std::unique_ptr<RawConnection>> conns;
  for (int i = 0; i < kConnections; ++i) {
    auto c = std::make_unique<RawConnection>(port());
    ASSERT_TRUE(c->connected());
    // Half say HELLO first, so the bytes reach the request path.
    if (i % 2 == 1) {
      ASSERT_NO_FATAL_FAILURE(c->Hello());
    }
    std::string bytes(1 + rng() % 3000, '\0');
    for (char& b : bytes) b = static_cast<char>(rng());
    // A quarter get a plausible header in front: a request opcode, a
    // length within the frame, so the random part lands in a decoder.
    if (i % 4 >= 2) {
      const uint8_t requests[] = {0x01, 0x02, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x20, 0x21};
      uint32_t length = static_cast<uint32_t>(std::min<size_t>(bytes.size(), 64));
      bytes.replace(0, std::min<size_t>(bytes.size(), kFrameHeaderBytes),
                    Header(length < kFrameHeaderBytes ? kFrameHeaderBytes : length,
                           requests[rng() % std::size(requests)], 0, 0, static_cast<uint32_t>(i)));
    }
    c->Send(bytes);  // the server may already have closed
    conns.push_back(std::move(c));
  }
  for (int i = 0; i < kConnections; ++i) {
    SCOPED_TRACE("connection " + std::to_string(i));
    std::vector<Frame> frames;
    EXPECT_TRUE(conns[i]->ReadUntilClosed(&frames, milliseconds(300 + 5000)))
        << "still open long after the idle timeout";
    // Whatever came back was well-formed (Read checks that) and answered
    // a request; an ERROR, if any, is the last frame.
    for (size_t k = 0; k < frames.size(); ++k) {
      EXPECT_FALSE(IsRequest(frames[k].header.op));
      if (frames[k].header.op == Op::kError) {
        ErrorResponse e;
        EXPECT_TRUE(Decode(frames[k].body, &e).ok());
        EXPECT_EQ(k + 1, frames.size()) << "frames after an ERROR that closes";
      }
    }
  }
}

// ------------------------------------------------------------ slow readers

// A subscriber that stops reading while others append is cut off after the
// slow-reader timeout; meanwhile appends go on at their usual pace.
TEST_F(ServerInputTest, SubscriberThatNeverReadsIsDisconnectedWithoutStallingAppenders) {
  constexpr int kSlowReaderTimeoutMs = 2000;
  Start({"--slow-reader-timeout-ms", std::to_string(kSlowReaderTimeoutMs),
         "--subscription-buffer-bytes", "65536"});

  RawConnection subscriber(port(), /*rcvbuf_bytes=*/4096);
  ASSERT_NO_FATAL_FAILURE(subscriber.Hello());
  SubscribeRequest all;
  all.from = 1;
  ASSERT_TRUE(subscriber.SendFrame(Op::kSubscribe, 7, all));
  SubscribedResponse subscribed;
  ASSERT_NO_FATAL_FAILURE(subscriber.Expect(Op::kSubscribed, 7, &subscribed));
  // From here on the subscriber reads nothing.

  RawConnection appender(port());
  ASSERT_NO_FATAL_FAILURE(appender.Hello());
  const std::string payload(32 * 1024, 'p');
  auto slowest = milliseconds(0);
  auto start = Clock::now();
  int appends = 0;
  bool disconnected = false;
  // Far more than the kernel buffers between the two ends can hold.
  while (Clock::now() - start < std::chrono::seconds(40)) {
    AppendRequest a;
    a.stream = "load-" + std::to_string(appends % 16);
    for (int i = 0; i < 8; ++i) a.events.push_back(testing::Event("Loaded", payload));
    uint32_t rid = static_cast<uint32_t>(100 + appends);
    auto sent = Clock::now();
    ASSERT_TRUE(appender.SendFrame(Op::kAppend, rid, a));
    AppendResult r;
    ASSERT_NO_FATAL_FAILURE(appender.Expect(Op::kAppendOk, rid, &r));
    slowest = std::max(slowest, std::chrono::duration_cast<milliseconds>(Clock::now() - sent));
    ++appends;
    if (server_->Logged("slow reader")) {
      if (disconnected) break;  // one more append after the cut
      disconnected = true;
    }
  }
  ASSERT_TRUE(disconnected) << "the subscriber was never cut off; " << appends << " appends";
  // An appender that waited on the subscriber would have waited the whole
  // slow-reader timeout.
  EXPECT_LT(slowest.count(), kSlowReaderTimeoutMs / 2) << "an append stalled";
  // The subscriber finds the end of its connection once it reads again.
  subscriber.AllowCutFrame();
  std::vector<Frame> frames;
  EXPECT_TRUE(subscriber.ReadUntilClosed(&frames, milliseconds(20000)));
  for (const Frame& f : frames)
    EXPECT_TRUE(f.header.op == Op::kSubEvents || f.header.op == Op::kCaughtUp ||
                f.header.op == Op::kSubDropped)
        << OpName(f.header.op);
}

// The slow-reader clock measures how long output waits unsent, not how long
// ago the connection last had output: a client that was quiet for longer
// than the timeout and then gets an answer is not a slow reader. (Another
// busy client keeps the server's I/O loop turning, which is when the answer
// can be found pending before it is flushed.)
TEST_F(ServerInputTest, QuietConnectionIsNotMistakenForASlowReader) {
  constexpr int kSlowReaderTimeoutMs = 100;
  Start({"--slow-reader-timeout-ms", std::to_string(kSlowReaderTimeoutMs)});
  std::atomic<bool> stop{false};
  std::thread busy([&] {
    RawConnection p(port());
    p.Hello();
    for (uint32_t id = 10; !stop; ++id) {
      Frame f;
      if (!p.SendFrame(Op::kPing, id, Ping{id}) || p.Read(&f) != ReadEnd::kFrame) return;
    }
  });
  int cut = 0;
  for (int conn = 0; conn < 4 && cut == 0; ++conn) {
    RawConnection c(port());
    ASSERT_NO_FATAL_FAILURE(c.Hello());
    for (uint32_t i = 0; i < 8; ++i) {
      // Quiet for longer than the slow-reader timeout, then an append whose
      // answer comes from the engine's writer thread.
      std::this_thread::sleep_for(milliseconds(kSlowReaderTimeoutMs * 3 / 2));
      AppendRequest a;
      a.stream = "quiet-" + std::to_string(conn);
      a.events = {testing::Event("T", "{}")};
      Frame f;
      if (!c.SendFrame(Op::kAppend, 100 + i, a) || c.Read(&f) != ReadEnd::kFrame) {
        ++cut;
        ADD_FAILURE() << "connection " << conn << " was closed before the answer to append " << i;
        break;
      }
      EXPECT_EQ(f.header.op, Op::kAppendOk) << RawConnection::ErrorText(f);
    }
  }
  stop = true;
  busy.join();
  for (const std::string& line : server_->Lines())
    EXPECT_EQ(line.find("slow reader"), std::string::npos) << line;
}

// An append pipelined ahead of a malformed frame is in the store by the
// time the server closes; its answer must not be dropped.
TEST_F(ServerInputTest, AppendPipelinedBeforeAMalformedFrameIsStillAnswered) {
  Start();
  RawConnection c(port());
  std::string bytes;
  AppendFrame(&bytes, Op::kHello, 1, protocol::Hello{kProtocolVersion, "t"});
  AppendRequest a;
  a.stream = "pipelined-1";
  a.expected = ExpectedVersion::NoStream();
  a.events = {testing::Event("T", "{}")};
  AppendFrame(&bytes, Op::kAppend, 2, a);
  bytes += Header(20, 0x03, 0, 0, 3) + std::string(8, '\0');
  ASSERT_TRUE(c.Send(bytes));
  std::vector<Frame> frames;
  ASSERT_TRUE(c.ReadUntilClosed(&frames, kPromptMs));
  bool appended = false, refused = false;
  for (const Frame& f : frames) {
    if (f.header.op == Op::kAppendOk && f.header.request_id == 2) appended = true;
    if (f.header.op == Op::kError && f.header.request_id == 3) refused = true;
  }
  EXPECT_TRUE(refused);
  EXPECT_TRUE(appended) << "the APPEND's answer was dropped at the close";

  // The append itself went through (it may still be on its way to disk).
  RawConnection check(port());
  ASSERT_NO_FATAL_FAILURE(check.Hello());
  auto deadline = Clock::now() + kPromptMs;
  for (uint32_t rid = 2;; ++rid) {
    ASSERT_TRUE(check.SendFrame(Op::kStreamInfo, rid, StreamInfoRequest{"pipelined-1"}));
    Frame f;
    ASSERT_EQ(check.Read(&f), ReadEnd::kFrame);
    if (f.header.op == Op::kStreamInfoOk) break;
    ASSERT_LT(Clock::now(), deadline) << "the pipelined append never reached the store";
    std::this_thread::sleep_for(milliseconds(10));
  }
}

}  // namespace
}  // namespace annal::protocol
