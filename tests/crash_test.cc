// Crash tests: what Store promises about durability (store.h) must hold when
// the process is killed with SIGKILL at an arbitrary moment.
//
// AcknowledgedAppendsSurviveSigkill runs rounds against one store directory.
// In each round a forked writer process opens the store, appends from
// several threads and logs every acknowledged append to an ack log
// (crash_workload.h); the parent SIGKILLs it at a random moment, reopens the
// store and checks:
//   - every acknowledged append of every round so far is present, with the
//     versions, positions, ids, types and payloads it was given;
//   - every stream's versions are contiguous from 0, and no append is
//     partially visible;
//   - the global log is strictly increasing, holds exactly the streams'
//     events at the same positions, and ends at DurableHead();
//   - nothing an earlier round's check saw has gone.
// The store is never closed by a writer, so every round recovers from a
// crash, on top of the recovery of the rounds before it.
//
// Environment: ANNAL_CRASH_ROUNDS (default 12), ANNAL_CRASH_SEED (default
// random; every failure message names the seed in use).

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "annal/options.h"
#include "annal/status.h"
#include "annal/store.h"
#include "annal/types.h"
#include "crash_workload.h"

namespace annal::crash {
namespace {

constexpr uint64_t kDefaultRounds = 12;
constexpr uint64_t kMaxRounds = 10'000;
// The writer is killed this long after it reported the store open.
constexpr int kKillDelayMinMs = 30;
constexpr int kKillDelayMaxMs = 300;
// How long the parent waits for a writer to report the store open.
constexpr int kWriterStartTimeoutMs = 30'000;
// Bounds what one round adds, so that verification, which rereads the whole
// store every round, stays fast however fast the disk is.
constexpr uint32_t kMaxAppendsPerThreadPerRound = 1500;
// A writer still alive after this long was never killed.
constexpr unsigned kWriterLifetimeMaxS = 120;
// Exit code of a writer that gave up; its reason went to the report pipe.
constexpr int kWriterFailedExitCode = 3;
// The byte a writer sends once the store is open and its threads run.
constexpr char kStartedMarker = '+';
// Small segments, so that rounds cross segment boundaries.
constexpr uint64_t kSegmentBytes = 1024 * 1024;
constexpr uint32_t kPartitions = 3;
// Reads go in chunks of this many events, and at most this many calls.
constexpr size_t kReadChunk = 4096;
constexpr size_t kMaxReadCalls = 100'000;
// Failed ack checks reported one by one before the check gives up.
constexpr int kMaxReportedAckFailures = 20;
// Appends of the clean-close test.
constexpr uint32_t kCleanCloseAppends = 120;

// ---------------------------------------------------------------------------
// Test directories and settings

// A directory under the working directory (a real disk, where /tmp may be a
// tmpfs), holding the store, the ack log and the engine's log. Removed when
// the test passed; kept, and named on stderr, when it failed, as evidence.
class TestDir {
 public:
  explicit TestDir(const std::string& prefix)
      : path_(std::filesystem::absolute(prefix + "-" + std::to_string(getpid()))) {
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TestDir() {
    if (::testing::Test::HasFailure()) {
      std::cerr << "crash test: kept " << path_ << " for inspection (see engine.log there)\n";
      return;
    }
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TestDir(const TestDir&) = delete;
  TestDir& operator=(const TestDir&) = delete;

  std::string store() const { return path_ / "store"; }
  std::string ack_log() const { return path_ / "acks.log"; }
  std::string engine_log() const { return path_ / "engine.log"; }

 private:
  std::filesystem::path path_;
};

// The number in environment variable `name`; `fallback` when it is unset,
// nullopt when it is not a number.
std::optional<uint64_t> EnvNumber(const char* name, uint64_t fallback) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return fallback;
  char* end = nullptr;
  errno = 0;
  const unsigned long long value = std::strtoull(text, &end, 10);
  if (errno != 0 || *end != '\0') return std::nullopt;
  return value;
}

// The store's options. `who` (which process, which round) prefixes each of
// the engine's log lines in dir.engine_log(): its recovery decisions are
// evidence when the test fails, and noise when it passes.
Options CrashOptions(const TestDir& dir, const std::string& who) {
  Options options;
  options.partitions = kPartitions;
  options.segment_size_bytes = kSegmentBytes;
  options.log = [path = dir.engine_log(), who](const std::string& line) {
    const std::string text = who + ": " + line + "\n";
    const int fd = open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return;
    (void)!write(fd, text.data(), text.size());
    close(fd);
  };
  return options;
}

std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return "exited with code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return "killed by signal " + std::to_string(WTERMSIG(status)) + " (" +
           strsignal(WTERMSIG(status)) + ")";
  }
  return "wait status " + std::to_string(status);
}

// ---------------------------------------------------------------------------
// The workload's appends, shared by writer processes and the clean-close test

// Empty when `r` is what an append of `count` events at `first_version` must
// return; otherwise what is wrong with it.
std::string CheckAppendResult(const AppendResult& r, uint64_t first_version, uint32_t count) {
  const uint64_t last_version = first_version + count - 1;
  if (r.first_version.get() != first_version || r.last_version.get() != last_version) {
    return "versions " + std::to_string(r.first_version.get()) + ".." +
           std::to_string(r.last_version.get()) + ", expected " + std::to_string(first_version) +
           ".." + std::to_string(last_version);
  }
  if (r.first_position.get() < 1 || r.last_position.get() < r.first_position.get() + count - 1) {
    return "positions " + std::to_string(r.first_position.get()) + ".." +
           std::to_string(r.last_position.get()) + " cannot hold " + std::to_string(count) +
           " events";
  }
  if (r.idempotent_replay) return "reported as an idempotent replay, but it was new";
  return "";
}

ExpectedVersion PickExpectedVersion(int64_t head, std::mt19937_64& rng) {
  if (rng() % 5 == 0) return ExpectedVersion::Any();
  if (head < 0) return ExpectedVersion::NoStream();
  return ExpectedVersion::Exact(static_cast<uint64_t>(head));
}

// Appends 1..kMaxEventsPerWorkloadAppend workload events to stream `index`
// of writer thread `thread`, whose last version is `*head` (-1: no stream).
// On success advances `*head`, fills `*ack` and returns ""; otherwise
// returns what went wrong.
std::string AppendWorkload(Store& store, uint32_t thread, uint32_t index, uint32_t round,
                           int64_t* head, std::mt19937_64& rng, AckRecord* ack) {
  const std::string stream = StreamName(thread, index);
  const uint64_t first_version = static_cast<uint64_t>(*head + 1);
  const uint32_t count = 1 + static_cast<uint32_t>(rng() % kMaxEventsPerWorkloadAppend);
  const ExpectedVersion expected = PickExpectedVersion(*head, rng);
  Result<AppendResult> r = store.Append(stream, expected, EventsFor(stream, first_version, count));
  const std::string what =
      "Append(" + stream + ", " + expected.ToString() + ", " + std::to_string(count) + " events): ";
  if (!r.ok()) return what + r.status().ToString();
  if (std::string wrong = CheckAppendResult(*r, first_version, count); !wrong.empty()) {
    return what + wrong;
  }
  *head = static_cast<int64_t>(r->last_version.get());
  *ack = AckRecord{.round = round,
                   .thread = static_cast<uint16_t>(thread),
                   .stream_index = static_cast<uint16_t>(index),
                   .count = count,
                   .first_version = first_version,
                   .first_position = r->first_position.get(),
                   .last_position = r->last_position.get()};
  return "";
}

// ---------------------------------------------------------------------------
// The writer process (the forked child). It never returns: it is killed, or
// it _exits after reporting why it gave up, so no gtest code runs in it.

// What the threads of a writer process share.
struct WriterShared {
  Store* store = nullptr;
  int report_fd = -1;  // write end of the pipe to the parent
  uint32_t round = 0;
  uint64_t seed = 0;
  std::mutex ack_mu;  // guards ack_fd, so that ack records never interleave
  int ack_fd = -1;
};

[[noreturn]] void WriterFail(int report_fd, const std::string& why) {
  // One write of at most PIPE_BUF bytes reaches the pipe whole, even when
  // several threads fail at once.
  const std::string line = "writer: " + why.substr(0, 3000) + "\n";
  (void)!write(report_fd, line.data(), line.size());
  _exit(kWriterFailedExitCode);
}

// The version of the stream's last event; -1 when the stream does not exist.
int64_t LearnHead(WriterShared& w, const std::string& stream) {
  Result<StreamInfo> info = w.store->GetStreamInfo(stream);
  if (info.ok()) return static_cast<int64_t>(info->head_version.get());
  if (info.status().code() == StatusCode::kNotFound) return -1;
  WriterFail(w.report_fd, "GetStreamInfo(" + stream + "): " + info.status().ToString());
}

void LogAck(WriterShared& w, const AckRecord& ack) {
  std::lock_guard lock(w.ack_mu);
  const ssize_t written = write(w.ack_fd, &ack, sizeof ack);
  if (written != static_cast<ssize_t>(sizeof ack)) {
    WriterFail(w.report_fd, "writing the ack log: " + std::string(strerror(errno)));
  }
}

void RunWriterThread(WriterShared* w, uint32_t thread) {
  std::mt19937_64 rng(Mix64(w->seed ^ (uint64_t{w->round} << 16) ^ thread));
  std::array<int64_t, kStreamsPerThread> heads;
  for (uint32_t k = 0; k < kStreamsPerThread; ++k) heads[k] = LearnHead(*w, StreamName(thread, k));
  for (uint32_t i = 0; i < kMaxAppendsPerThreadPerRound; ++i) {
    const uint32_t k = static_cast<uint32_t>(rng() % kStreamsPerThread);
    AckRecord ack;
    const std::string error = AppendWorkload(*w->store, thread, k, w->round, &heads[k], rng, &ack);
    if (!error.empty()) WriterFail(w->report_fd, error);
    LogAck(*w, ack);
  }
}

[[noreturn]] void RunWriterProcess(const TestDir& dir, int report_fd, uint32_t round,
                                   uint64_t seed) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive a test runner that died
  const std::string who = "round " + std::to_string(round) + " writer " + std::to_string(getpid());
  Result<std::unique_ptr<Store>> store = Store::Open(dir.store(), CrashOptions(dir, who));
  if (!store.ok()) WriterFail(report_fd, "Store::Open: " + store.status().ToString());
  WriterShared w;
  w.store = store->get();
  w.report_fd = report_fd;
  w.round = round;
  w.seed = seed;
  w.ack_fd = open(dir.ack_log().c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (w.ack_fd < 0) WriterFail(report_fd, "opening the ack log: " + std::string(strerror(errno)));
  std::vector<std::thread> threads;
  for (uint32_t t = 0; t < kWriterThreads; ++t) threads.emplace_back(RunWriterThread, &w, t);
  if (write(report_fd, &kStartedMarker, 1) != 1) WriterFail(report_fd, "reporting the start");
  for (std::thread& t : threads) t.join();
  sleep(kWriterLifetimeMaxS);  // the store is never closed: only SIGKILL ends a writer
  WriterFail(report_fd, "finished its appends and was never killed");
}

// A forked writer process, seen from the parent. The destructor kills and
// reaps a writer still running, so that a failed assertion leaves no orphan.
class WriterProcess {
 public:
  WriterProcess(const TestDir& dir, uint32_t round, uint64_t seed) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      close(fds[0]);
      RunWriterProcess(dir, fds[1], round, seed);
    }
    close(fds[1]);
    if (pid_ < 0) {
      close(fds[0]);
      return;
    }
    report_fd_ = fds[0];
  }
  ~WriterProcess() {
    if (pid_ > 0) KillAndReap();
    if (report_fd_ >= 0) close(report_fd_);
  }
  WriterProcess(const WriterProcess&) = delete;
  WriterProcess& operator=(const WriterProcess&) = delete;

  bool running() const { return pid_ > 0; }

  // True once the writer reported the store open, within the timeout.
  bool AwaitStarted() {
    pollfd p{.fd = report_fd_, .events = POLLIN, .revents = 0};
    if (poll(&p, 1, kWriterStartTimeoutMs) != 1) return false;
    char first = 0;
    if (read(report_fd_, &first, 1) != 1) return false;
    if (first == kStartedMarker) return true;
    report_.push_back(first);  // the start of the writer's failure report
    return false;
  }

  // SIGKILLs the writer and reaps it. Returns its wait status.
  int KillAndReap() {
    kill(pid_, SIGKILL);
    int status = 0;
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
    return status;
  }

  // What the writer reported after starting: why it gave up, if it did.
  // REQUIRES: the writer was reaped, so that the pipe reaches its end.
  std::string TakeReport() {
    char buf[4096];
    ssize_t n;
    while ((n = read(report_fd_, buf, sizeof buf)) > 0) report_.append(buf, n);
    return std::move(report_);
  }

 private:
  pid_t pid_ = -1;
  int report_fd_ = -1;
  std::string report_;
};

// ---------------------------------------------------------------------------
// Verification

// What verification keeps of one event (indexed by version in its stream):
// enough to match it in the global log and in later rounds.
struct SeenEvent {
  uint64_t position = 0;
  EventId id{};
  uint64_t append_first = 0;  // the append it belongs to, from its metadata
  uint64_t append_count = 0;
};
// Every workload stream (also those that do not exist) to its events.
using StreamContents = std::map<std::string, std::vector<SeenEvent>>;

size_t TotalEvents(const StreamContents& contents) {
  size_t total = 0;
  for (const auto& [stream, events] : contents) total += events.size();
  return total;
}

std::string At(std::string_view stream, uint64_t version) {
  return std::string(stream) + "@" + std::to_string(version);
}

void ReadAckLog(const std::string& path, std::vector<AckRecord>* acks) {
  std::ifstream in(path, std::ios::binary);
  const std::string bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  ASSERT_EQ(bytes.size() % sizeof(AckRecord), 0u)
      << "the ack log " << path << " ends in a torn record; see AckRecord";
  acks->resize(bytes.size() / sizeof(AckRecord));
  std::memcpy(acks->data(), bytes.data(), bytes.size());
  for (size_t i = 0; i < acks->size(); ++i) {
    const AckRecord& ack = (*acks)[i];
    ASSERT_TRUE(ack.magic == AckRecord::kMagic && ack.thread < kWriterThreads &&
                ack.stream_index < kStreamsPerThread && ack.count >= 1 &&
                ack.count <= kMaxEventsPerWorkloadAppend)
        << "ack record " << i << " is damaged";
  }
}

// Reads the whole stream forward; leaves `events` empty when it does not exist.
void ReadWholeStream(Store& store, const std::string& stream, std::vector<RecordedEvent>* events) {
  for (size_t call = 0; call < kMaxReadCalls; ++call) {
    const uint64_t from = events->empty() ? 0 : events->back().version.get() + 1;
    Result<std::vector<RecordedEvent>> chunk =
        store.ReadStream(stream, StreamVersion(from), ReadDirection::kForward, kReadChunk);
    if (!chunk.ok() && chunk.status().code() == StatusCode::kNotFound && from == 0) return;
    ASSERT_TRUE(chunk.ok()) << "ReadStream(" << At(stream, from)
                            << "): " << chunk.status().ToString();
    if (chunk->empty()) return;
    ASSERT_LE(chunk->size(), kReadChunk)
        << "ReadStream(" << At(stream, from) << ") ignored max_count";
    for (RecordedEvent& e : *chunk) events->push_back(std::move(e));
  }
  FAIL() << "ReadStream(" << stream << ") never reached the end of the stream";
}

// The offset of the first byte where `a` and `b` differ (their shorter length
// when one is a prefix of the other).
size_t FirstDifference(const std::string& a, const std::string& b) {
  return std::mismatch(a.begin(), a.begin() + std::min(a.size(), b.size()), b.begin()).first -
         a.begin();
}

// Checks the event found at index `version` of the stream's forward read
// against what the workload appends there.
void CheckEventContent(const std::string& stream, uint64_t version, const RecordedEvent& e) {
  ASSERT_EQ(e.version.get(), version)
      << stream << ": versions are not contiguous from 0; version " << e.version.get()
      << " follows " << (version == 0 ? std::string("nothing") : std::to_string(version - 1));
  ASSERT_EQ(e.stream, stream) << At(stream, version) << " comes back named otherwise";
  ASSERT_EQ(e.type, TypeFor(version)) << At(stream, version) << ": wrong type";
  ASSERT_TRUE(e.id == EventIdFor(stream, version))
      << At(stream, version) << ": event id " << EventIdToString(e.id) << ", expected "
      << EventIdToString(EventIdFor(stream, version));
  const std::string payload = PayloadFor(stream, version);
  ASSERT_TRUE(e.payload == payload)
      << At(stream, version) << ": payload of " << e.payload.size() << " bytes, expected "
      << payload.size() << " bytes; first difference at byte "
      << FirstDifference(e.payload, payload);
  ASSERT_GE(e.position.get(), 1u) << At(stream, version) << ": position 0 is not a position";
}

// Walks the stream append by append (each event's metadata names its append)
// and checks that every append is wholly present; records what it saw.
void CheckAppendsAreWhole(const std::string& stream, const std::vector<RecordedEvent>& events,
                          std::vector<SeenEvent>* seen) {
  uint64_t first = 0;
  uint64_t count = 0;
  for (uint64_t v = 0; v < events.size(); ++v) {
    const std::string& metadata = events[v].metadata;
    if (v == first + count) {  // `v` starts the next append
      ASSERT_TRUE(ParseMetadata(metadata, &first, &count))
          << At(stream, v) << ": metadata is not the workload's: " << metadata;
      ASSERT_EQ(first, v) << At(stream, v) << " claims to belong to an append starting at " << first
                          << ", but the stream's previous append ended before it";
      ASSERT_TRUE(count >= 1 && count <= kMaxEventsPerWorkloadAppend)
          << At(stream, v) << ": metadata names an append of " << count << " events";
    } else {
      ASSERT_EQ(metadata, MetadataFor(first, count))
          << At(stream, v) << " should belong to the append of " << count << " events at " << first;
    }
    seen->push_back({events[v].position.get(), events[v].id, first, count});
  }
  ASSERT_EQ(first + count, events.size())
      << stream << ": the append of " << count << " events at version " << first
      << " is partially visible; the stream ends at version " << events.size() - 1;
}

void ReadAndCheckStream(Store& store, const std::string& stream, std::vector<SeenEvent>* seen) {
  std::vector<RecordedEvent> events;
  ASSERT_NO_FATAL_FAILURE(ReadWholeStream(store, stream, &events));
  for (uint64_t v = 0; v < events.size(); ++v) {
    ASSERT_NO_FATAL_FAILURE(CheckEventContent(stream, v, events[v]));
    if (v == 0) continue;
    ASSERT_GT(events[v].position, events[v - 1].position)
        << At(stream, v) << ": position " << events[v].position.get()
        << " is not after the previous version's " << events[v - 1].position.get();
  }
  ASSERT_NO_FATAL_FAILURE(CheckAppendsAreWhole(stream, events, seen));
}

::testing::AssertionResult AckIsHonoured(const AckRecord& ack, const StreamContents& contents) {
  const std::string stream = ack.stream();
  const std::vector<SeenEvent>& events = contents.at(stream);
  const std::string what = "the append of " + std::to_string(ack.count) + " events at " +
                           At(stream, ack.first_version) + " acknowledged in round " +
                           std::to_string(ack.round);
  const uint64_t end = ack.first_version + ack.count;
  if (end > events.size()) {
    return ::testing::AssertionFailure()
           << what << " is lost: the stream holds " << events.size() << " events";
  }
  const SeenEvent& first = events[ack.first_version];
  if (first.append_first != ack.first_version || first.append_count != ack.count) {
    return ::testing::AssertionFailure()
           << what << " was found as an append of " << first.append_count << " events at "
           << first.append_first;
  }
  if (first.position != ack.first_position || events[end - 1].position != ack.last_position) {
    return ::testing::AssertionFailure()
           << what << " was acknowledged at positions " << ack.first_position << ".."
           << ack.last_position << " but is at " << first.position << ".."
           << events[end - 1].position;
  }
  return ::testing::AssertionSuccess();
}

void CheckAcknowledgedAppends(const std::vector<AckRecord>& acks, const StreamContents& contents) {
  int failures = 0;
  for (const AckRecord& ack : acks) {
    const ::testing::AssertionResult honoured = AckIsHonoured(ack, contents);
    EXPECT_TRUE(honoured);
    if (!honoured && ++failures == kMaxReportedAckFailures) {
      ADD_FAILURE() << "stopped checking acknowledged appends after " << failures << " failures";
      return;
    }
  }
}

// Checks one event of ReadAll against the same event read from its stream.
void CheckMatchesStream(const RecordedEvent& e, const StreamContents& contents) {
  const uint64_t v = e.version.get();
  const std::string where = At(e.stream, v) + " at position " + std::to_string(e.position.get());
  const auto stream = contents.find(e.stream);
  ASSERT_TRUE(stream != contents.end()) << "ReadAll returned " << where << ", an unknown stream";
  ASSERT_LT(v, stream->second.size()) << "ReadAll returned " << where << ", unknown to ReadStream";
  const SeenEvent& seen = stream->second[v];
  ASSERT_EQ(e.position.get(), seen.position) << "ReadAll returned " << where << ", ReadStream "
                                             << "returned it at position " << seen.position;
  ASSERT_TRUE(e.id == seen.id) << "ReadAll: " << where << " has id " << EventIdToString(e.id)
                               << ", ReadStream says " << EventIdToString(seen.id);
  ASSERT_EQ(e.type, TypeFor(v)) << "ReadAll: " << where << " has the wrong type";
  ASSERT_EQ(e.metadata, MetadataFor(seen.append_first, seen.append_count))
      << "ReadAll: " << where << " has other metadata than ReadStream returned";
  ASSERT_TRUE(e.payload == PayloadFor(e.stream, v)) << "ReadAll: " << where << ": wrong payload";
}

void CheckGlobalLog(Store& store, const StreamContents& contents) {
  uint64_t last_position = 0;
  size_t events = 0;
  bool reached_end = false;
  for (size_t call = 0; call < kMaxReadCalls && !reached_end; ++call) {
    Result<std::vector<RecordedEvent>> chunk =
        store.ReadAll(GlobalPosition(last_position + 1), kReadChunk);
    ASSERT_TRUE(chunk.ok()) << "ReadAll(" << last_position + 1
                            << "): " << chunk.status().ToString();
    ASSERT_LE(chunk->size(), kReadChunk)
        << "ReadAll(" << last_position + 1 << ") ignored max_count";
    reached_end = chunk->empty();
    for (const RecordedEvent& e : *chunk) {
      ASSERT_GT(e.position.get(), last_position)
          << "ReadAll: positions not strictly increasing: " << At(e.stream, e.version.get())
          << " at position " << e.position.get() << " follows position " << last_position;
      ASSERT_NO_FATAL_FAILURE(CheckMatchesStream(e, contents));
      last_position = e.position.get();
      ++events;
    }
  }
  ASSERT_TRUE(reached_end) << "ReadAll never reached the end of the log";
  EXPECT_EQ(events, TotalEvents(contents)) << "ReadAll and ReadStream disagree on the event count";
  EXPECT_EQ(store.DurableHead().get(), last_position)
      << "DurableHead() is not the position of the last event ReadAll returned";
}

// Checks everything the store holds against the workload and `acks`; fills
// `contents` with what it found.
void VerifyStore(Store& store, const std::vector<AckRecord>& acks, StreamContents* contents) {
  for (uint32_t t = 0; t < kWriterThreads; ++t) {
    for (uint32_t k = 0; k < kStreamsPerThread; ++k) {
      const std::string stream = StreamName(t, k);
      ASSERT_NO_FATAL_FAILURE(ReadAndCheckStream(store, stream, &(*contents)[stream]));
    }
  }
  CheckAcknowledgedAppends(acks, *contents);
  ASSERT_NO_FATAL_FAILURE(CheckGlobalLog(store, *contents));
}

// Events that an earlier check found were durable then, so must still be
// there, unchanged, whether or not they were acknowledged.
void CheckNothingSeenIsLost(const StreamContents& before, const StreamContents& now) {
  for (const auto& [stream, earlier] : before) {
    const std::vector<SeenEvent>& current = now.at(stream);
    ASSERT_GE(current.size(), earlier.size())
        << stream << ": held " << earlier.size() << " events after the previous round, now "
        << current.size();
    for (uint64_t v = 0; v < earlier.size(); ++v) {
      ASSERT_EQ(current[v].position, earlier[v].position)
          << At(stream, v) << " moved since the previous round";
      ASSERT_TRUE(current[v].id == earlier[v].id) << At(stream, v) << " changed its id";
    }
  }
}

// ---------------------------------------------------------------------------
// Rounds

void RunWriterUntilKilled(const TestDir& dir, uint32_t round, uint64_t seed, std::mt19937_64& rng) {
  WriterProcess writer(dir, round, seed);
  ASSERT_TRUE(writer.running()) << "pipe/fork: " << strerror(errno);
  const bool started = writer.AwaitStarted();
  if (started) {
    std::uniform_int_distribution<int> delay_ms(kKillDelayMinMs, kKillDelayMaxMs);
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(rng)));
  }
  const int status = writer.KillAndReap();
  const std::string report = writer.TakeReport();
  ASSERT_TRUE(started) << "the writer did not report the store open (it "
                       << DescribeWaitStatus(status) << "): " << report;
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
      << "the writer ended before it was killed: it " << DescribeWaitStatus(status) << ": "
      << report;
  EXPECT_EQ(report, "") << "the writer gave up before it was killed";
}

// How many writer threads of `round` used up their appends before the kill.
// Their kill hit an idle writer: when this is common, raise the budget.
uint32_t CountIdleWriters(const std::vector<AckRecord>& acks, uint32_t round) {
  std::array<uint32_t, kWriterThreads> appends{};
  for (const AckRecord& ack : acks) {
    if (ack.round == round) ++appends.at(ack.thread);
  }
  return static_cast<uint32_t>(
      std::count(appends.begin(), appends.end(), kMaxAppendsPerThreadPerRound));
}

// What the rounds did, for the closing summary.
struct CrashStats {
  size_t acks = 0;
  uint32_t idle_writers = 0;
};

// Reopens the store after a crash, checks it, and closes it again.
void VerifyAfterCrash(const TestDir& dir, uint32_t round, StreamContents* seen, CrashStats* stats) {
  std::vector<AckRecord> acks;
  ASSERT_NO_FATAL_FAILURE(ReadAckLog(dir.ack_log(), &acks));
  const std::string who = "round " + std::to_string(round) + " verifier";
  Result<std::unique_ptr<Store>> store = Store::Open(dir.store(), CrashOptions(dir, who));
  ASSERT_TRUE(store.ok()) << "reopening after SIGKILL: " << store.status().ToString();
  StreamContents contents;
  ASSERT_NO_FATAL_FAILURE(VerifyStore(**store, acks, &contents));
  ASSERT_NO_FATAL_FAILURE(CheckNothingSeenIsLost(*seen, contents));
  const Status closed = (*store)->Close();
  ASSERT_TRUE(closed.ok()) << "Close after verifying: " << closed.ToString();
  *seen = std::move(contents);
  stats->acks = acks.size();
  stats->idle_writers += CountIdleWriters(acks, round);
}

TEST(CrashTest, AcknowledgedAppendsSurviveSigkill) {
  const std::optional<uint64_t> rounds = EnvNumber("ANNAL_CRASH_ROUNDS", kDefaultRounds);
  ASSERT_TRUE(rounds && *rounds >= 1 && *rounds <= kMaxRounds)
      << "ANNAL_CRASH_ROUNDS must be a number in 1.." << kMaxRounds;
  const std::optional<uint64_t> seed = EnvNumber("ANNAL_CRASH_SEED", std::random_device{}());
  ASSERT_TRUE(seed) << "ANNAL_CRASH_SEED must be a number";
  SCOPED_TRACE("ANNAL_CRASH_SEED=" + std::to_string(*seed));
  TestDir dir("crash-test");
  std::mt19937_64 rng(*seed);
  StreamContents seen;
  CrashStats stats;
  for (uint32_t round = 0; round < *rounds; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    ASSERT_NO_FATAL_FAILURE(RunWriterUntilKilled(dir, round, *seed, rng));
    ASSERT_NO_FATAL_FAILURE(VerifyAfterCrash(dir, round, &seen, &stats));
  }
  // A run in which nothing was acknowledged would prove nothing.
  EXPECT_GT(stats.acks, 0u) << "no append was acknowledged in " << *rounds << " rounds";
  std::cout << "crash test: " << *rounds << " rounds, " << stats.acks << " acknowledged appends, "
            << TotalEvents(seen) << " events in the store; " << stats.idle_writers << " of "
            << *rounds * kWriterThreads
            << " writer threads had used up their appends when killed\n";
}

// ---------------------------------------------------------------------------
// Clean close

// The stream's head after reopening must be the last acknowledged one: a
// cleanly closed store holds nothing that was not acknowledged.
void CheckHeadAfterReopen(Store& store, const std::string& stream, int64_t acknowledged_head) {
  Result<StreamInfo> info = store.GetStreamInfo(stream);
  if (acknowledged_head < 0) {
    EXPECT_EQ(info.status().code(), StatusCode::kNotFound)
        << stream << " was never appended to, yet GetStreamInfo says: "
        << (info.ok() ? "head " + std::to_string(info->head_version.get())
                      : info.status().ToString());
    return;
  }
  ASSERT_TRUE(info.ok()) << "GetStreamInfo(" << stream << "): " << info.status().ToString();
  EXPECT_EQ(info->head_version.get(), static_cast<uint64_t>(acknowledged_head))
      << stream << ": wrong head version after reopening";
  EXPECT_EQ(info->event_count, static_cast<uint64_t>(acknowledged_head) + 1)
      << stream << ": wrong event count after reopening";
}

TEST(CrashTest, ReopenAfterCleanCloseKeepsEverything) {
  TestDir dir("crash-reopen");
  std::mt19937_64 rng(42);
  std::vector<AckRecord> acks;
  std::array<int64_t, kWriterThreads * kStreamsPerThread> heads;
  heads.fill(-1);
  {
    Result<std::unique_ptr<Store>> store = Store::Open(dir.store(), CrashOptions(dir, "first"));
    ASSERT_TRUE(store.ok()) << "creating the store: " << store.status().ToString();
    for (uint32_t i = 0; i < kCleanCloseAppends; ++i) {
      const uint32_t t = i % kWriterThreads;
      const uint32_t k = static_cast<uint32_t>(rng() % kStreamsPerThread);
      AckRecord ack;
      ASSERT_EQ(AppendWorkload(**store, t, k, 0, &heads[t * kStreamsPerThread + k], rng, &ack), "");
      acks.push_back(ack);
    }
    const Status closed = (*store)->Close();
    ASSERT_TRUE(closed.ok()) << "Close: " << closed.ToString();
  }
  Result<std::unique_ptr<Store>> store = Store::Open(dir.store(), CrashOptions(dir, "reopened"));
  ASSERT_TRUE(store.ok()) << "reopening after Close: " << store.status().ToString();
  StreamContents contents;
  ASSERT_NO_FATAL_FAILURE(VerifyStore(**store, acks, &contents));
  for (uint32_t t = 0; t < kWriterThreads; ++t) {
    for (uint32_t k = 0; k < kStreamsPerThread; ++k) {
      CheckHeadAfterReopen(**store, StreamName(t, k), heads[t * kStreamsPerThread + k]);
    }
  }
  const Status closed = (*store)->Close();
  EXPECT_TRUE(closed.ok()) << "Close after reopening: " << closed.ToString();
}

}  // namespace
}  // namespace annal::crash
