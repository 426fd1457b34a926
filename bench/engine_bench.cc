// Micro-benchmarks of the storage engine.
//
//   BM_DurableAppendClosedLoop  64 appenders, one append each in flight.
//   BM_DurableAppendOpenLoop    appends offered at a fixed rate (the argument).
//   BM_BareFdatasync            one io_uring write+fdatasync pair at a time
//                               into fallocate'd space (what a naive log does).
//   BM_BareDsyncWrite           one O_DIRECT RWF_DSYNC write at a time into
//                               zero-filled space: the engine's own I/O, and
//                               so the device's floor under its numbers.
//   BM_IndexBytesPerStream      resident memory of the stream index.
//   BM_AppendWhileCheckpointing appends offered at 100,000/s to a store of
//                               N streams while checkpoints are written
//                               (every second, or by the store's own rule).
//   BM_ReopenAfterCrash         Store::Open after a crash that left a whole
//                               log to replay, then after a clean Close.
//
// Settings (environment):
//   ANNAL_BENCH_DIR        where data is written; put it on the device to
//                          measure (default ./annal-bench-data)
//   ANNAL_BENCH_SECONDS    length of each append phase (default 3)
//   ANNAL_BENCH_REOPEN_MB  log written before the crash (default 1024)
//   ANNAL_BENCH_VERBOSE    set: show the engine's log lines on stderr
//
// Latency counters are in microseconds; an append's latency ends at its
// callback, which the engine runs only after the append is fdatasync'ed.

#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <liburing.h>
#include <malloc.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <condition_variable>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "annal/options.h"
#include "annal/status.h"
#include "annal/store.h"
#include "append_loops.h"
#include "bench_util.h"

namespace annal::bench {
namespace {

// The store shape of the append benchmarks; ANNAL_BENCH_PARTITIONS
// overrides the partition count (the default is the engine's own).
const uint32_t kPartitions = Options{}.partitions;
constexpr size_t kStreams = 10'000;
constexpr size_t kPayloadBytes = 500;
constexpr size_t kPayloadVariants = 16;
constexpr int kAppenders = 64;
constexpr size_t kOpenLoopMaxInFlight = kAppenders * 16;
// Bounds the closed loop's latency samples (8 bytes each) on a fast device.
constexpr uint64_t kMaxClosedLoopAppends = 20'000'000;

// The bare fdatasync benchmark.
constexpr uint64_t kSyncFileBytes = 64ull * 1024 * 1024;
constexpr size_t kSyncWriteBytes = 4096;
constexpr int kSyncRounds = 2'000;
static_assert(kSyncRounds * kSyncWriteBytes <= kSyncFileBytes, "writes stay in the preallocation");

// The crash-recovery benchmark: appends of 64 events of 16 KiB, ~1 MiB each.
constexpr size_t kReopenEventsPerAppend = 64;
constexpr size_t kReopenPayloadBytes = 16 * 1024;
constexpr size_t kReopenStreams = 64;
constexpr int kReopenAppenders = 16;
constexpr std::chrono::minutes kReopenWriteBudget{10};
// Large enough that no checkpoint is written while the log is filled.
constexpr uint64_t kNeverBytes = 1ull << 50;
constexpr uint64_t kNeverMs = 1ull << 40;

// The engine's log lines (open, recovery, close) would interleave with the
// result table; they go to stderr only when ANNAL_BENCH_VERBOSE is set.
// Failures do not depend on them: every error also comes back as a Status.
Options BenchOptions() {
  Options options;
  options.partitions = static_cast<uint32_t>(EnvPositive("ANNAL_BENCH_PARTITIONS", kPartitions));
  options.segment_size_bytes =
      static_cast<uint64_t>(EnvPositive("ANNAL_BENCH_SEGMENT_MB", 64)) * 1024 * 1024;
  if (const char* seal = std::getenv("ANNAL_BENCH_SEAL")) options.seal_segments = std::string_view(seal) != "0";
  if (const char* checkpoints = std::getenv("ANNAL_BENCH_CHECKPOINTS");
      checkpoints != nullptr && std::string_view(checkpoints) == "0") {
    options.checkpoint_interval_bytes = kNeverBytes;
    options.checkpoint_interval_ms = kNeverMs;
  }
  if (std::getenv("ANNAL_BENCH_VERBOSE") == nullptr) options.log = [](const std::string&) {};
  return options;
}

// Opening a store prepares each partition's next segment in the background
// (a zero-filled file). Measuring starts once that settled, as it would be
// on a server that has been up for more than a moment.
void Settle() {
  double ms = EnvPositive("ANNAL_BENCH_SETTLE_MS", 1500);
  std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int64_t>(ms)));
}

std::vector<std::string> StreamNames(size_t count) {
  std::vector<std::string> names;
  names.reserve(count);
  for (size_t i = 0; i < count; ++i) names.push_back("bench-" + std::to_string(i));
  return names;
}

// One 500-byte JSON event per append, over 10,000 streams.
Workload SmallEventWorkload() {
  std::vector<std::vector<EventData>> batches;
  for (size_t v = 0; v < kPayloadVariants; ++v) {
    batches.push_back({EventData{.type = "OrderPlaced", .payload = JsonPayload(kPayloadBytes, v)}});
  }
  return Workload(StreamNames(kStreams), std::move(batches));
}

// 64 events of 16 KiB per append: fills a log quickly.
Workload LargeAppendWorkload() {
  std::vector<EventData> batch(kReopenEventsPerAppend);
  for (size_t i = 0; i < batch.size(); ++i) {
    batch[i] = EventData{.type = "BulkImported", .payload = JsonPayload(kReopenPayloadBytes, i)};
  }
  return Workload(StreamNames(kReopenStreams), {std::move(batch)});
}

// Opens the store in `dir`; on failure reports through `state` and returns null.
std::unique_ptr<Store> OpenOrSkip(benchmark::State& state, const std::string& dir,
                                  const Options& options) {
  auto store = Store::Open(dir, options);
  if (!store.ok()) {
    state.SkipWithError(("Store::Open: " + store.status().ToString()).c_str());
    return nullptr;
  }
  return std::move(store).value();
}

void CloseOrSkip(benchmark::State& state, Store* store) {
  Status status = store->Close();
  if (!status.ok()) state.SkipWithError(("Store::Close: " + status.ToString()).c_str());
}

void ReportThroughput(benchmark::State& state, uint64_t events, int64_t elapsed_ns) {
  state.counters["events"] = static_cast<double>(events);
  state.counters["events_per_s"] =
      static_cast<double>(events) * 1e9 / static_cast<double>(elapsed_ns);
}

void BM_DurableAppendClosedLoop(benchmark::State& state) {
  ScratchDir dir("closed-loop");
  Workload workload = SmallEventWorkload();
  std::unique_ptr<Store> store = OpenOrSkip(state, dir.path(), BenchOptions());
  if (!store) return;
  Settle();
  ClosedLoop::Outcome outcome;
  for (auto _ : state) {
    ClosedLoop loop(store.get(), &workload,
                    {.appenders = kAppenders,
                     .budget = AppendPhaseDuration(),
                     .max_appends = kMaxClosedLoopAppends});
    outcome = loop.Run();
  }
  if (!outcome.error.empty()) return state.SkipWithError(("append: " + outcome.error).c_str());
  CloseOrSkip(state, store.get());
  if (state.error_occurred()) return;
  ReportThroughput(state, outcome.latencies_ns.size() * workload.events_per_append(),
                   outcome.elapsed_ns);
  ReportLatency(state, Summarize(std::move(outcome.latencies_ns)));
}

void BM_DurableAppendOpenLoop(benchmark::State& state) {
  ScratchDir dir("open-loop");
  Workload workload = SmallEventWorkload();
  std::unique_ptr<Store> store = OpenOrSkip(state, dir.path(), BenchOptions());
  if (!store) return;
  Settle();
  OpenLoop::Outcome outcome;
  for (auto _ : state) {
    OpenLoop loop(store.get(), &workload,
                  {.rate_per_s = state.range(0),
                   .duration = AppendPhaseDuration(),
                   .max_in_flight = kOpenLoopMaxInFlight,
                   .issue_budget = 3 * AppendPhaseDuration()});
    outcome = loop.Run();
  }
  if (!outcome.error.empty()) return state.SkipWithError(("append: " + outcome.error).c_str());
  CloseOrSkip(state, store.get());
  if (state.error_occurred()) return;
  if (outcome.issued == 0) return state.SkipWithError("no append was issued");
  ReportThroughput(state, outcome.issued * workload.events_per_append(), outcome.elapsed_ns);
  state.counters["waited"] = static_cast<double>(outcome.waited);
  // Appends the schedule held but the pacer gave up on (engine far behind).
  state.counters["not_issued"] = static_cast<double>(outcome.scheduled - outcome.issued);
  ReportLatency(state, Summarize(std::move(outcome.latencies_ns)));
}

// A file of `bytes` preallocated with fallocate, its size made durable, so
// the timed writes land in allocated space as the engine's segment writes do.
Result<int> OpenPreallocated(const std::string& path, uint64_t bytes) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Status::FromErrno(errno, "open " + path);
  if (::fallocate(fd, 0, 0, static_cast<off_t>(bytes)) != 0 || ::fsync(fd) != 0) {
    Status status = Status::FromErrno(errno, "preallocate " + path);
    ::close(fd);
    return status;
  }
  return fd;
}

// One io_uring, used by one thread.
class Ring {
 public:
  Ring() = default;
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;
  ~Ring() {
    if (ready_) io_uring_queue_exit(&ring_);
  }

  Status Init(unsigned entries) {
    int rc = io_uring_queue_init(entries, &ring_, 0);
    if (rc < 0) return Status::FromErrno(-rc, "io_uring_queue_init");
    ready_ = true;
    return Status::Ok();
  }

  // One write with RWF_DSYNC: returns when data[0, len) is durable.
  Status DsyncWrite(int fd, const void* data, size_t len, uint64_t offset) {
    io_uring_sqe* write = io_uring_get_sqe(&ring_);
    io_uring_prep_write(write, fd, data, static_cast<unsigned>(len), offset);
    write->rw_flags = RWF_DSYNC;
    io_uring_sqe_set_data64(write, kWriteTag);
    int rc = io_uring_submit_and_wait(&ring_, 1);
    if (rc < 0) return Status::FromErrno(-rc, "io_uring_submit_and_wait");
    return ReapOne(len);
  }

  // Writes data[0, len) at `offset`, then fdatasyncs `fd`, linked so that
  // the sync starts only after the write; returns when both completed.
  Status WriteThenDatasync(int fd, const void* data, size_t len, uint64_t offset) {
    io_uring_sqe* write = io_uring_get_sqe(&ring_);
    io_uring_prep_write(write, fd, data, static_cast<unsigned>(len), offset);
    io_uring_sqe_set_data64(write, kWriteTag);
    write->flags |= IOSQE_IO_LINK;
    io_uring_sqe* sync = io_uring_get_sqe(&ring_);
    io_uring_prep_fsync(sync, fd, IORING_FSYNC_DATASYNC);
    io_uring_sqe_set_data64(sync, kSyncTag);
    int rc = io_uring_submit_and_wait(&ring_, 2);
    if (rc < 0) return Status::FromErrno(-rc, "io_uring_submit_and_wait");
    Status first_error;
    // Reap both completions even after a failure, leaving the ring empty.
    for (int i = 0; i < 2; ++i) {
      Status status = ReapOne(len);
      if (first_error.ok()) first_error = status;
    }
    return first_error;
  }

 private:
  static constexpr uint64_t kWriteTag = 1;
  static constexpr uint64_t kSyncTag = 2;

  Status ReapOne(size_t write_len) {
    io_uring_cqe* cqe = nullptr;
    int rc = io_uring_wait_cqe(&ring_, &cqe);
    if (rc < 0) return Status::FromErrno(-rc, "io_uring_wait_cqe");
    bool is_write = cqe->user_data == kWriteTag;
    int res = cqe->res;
    io_uring_cqe_seen(&ring_, cqe);
    if (res < 0) return Status::FromErrno(-res, is_write ? "write" : "fdatasync");
    if (is_write && static_cast<size_t>(res) != write_len) return Status::IoError("short write");
    return Status::Ok();
  }

  io_uring ring_{};
  bool ready_ = false;
};

// Times kSyncRounds write+fdatasync pairs, one after another.
Status TimeWriteSyncPairs(int fd, std::vector<int64_t>* latencies_ns) {
  Ring ring;
  ANNAL_RETURN_IF_ERROR(ring.Init(8));
  std::string block = JsonPayload(kSyncWriteBytes, 0);
  for (int i = 0; i < kSyncRounds; ++i) {
    Clock::time_point start = Clock::now();
    ANNAL_RETURN_IF_ERROR(ring.WriteThenDatasync(fd, block.data(), block.size(),
                                                 static_cast<uint64_t>(i) * kSyncWriteBytes));
    latencies_ns->push_back(ElapsedNs(start, Clock::now()));
  }
  return Status::Ok();
}

// A file of `bytes` written full of zeros and synced, opened for direct I/O.
Result<int> OpenZeroFilledDirect(const std::filesystem::path& path, uint64_t bytes) {
  {
    std::vector<char> zeros(1 << 20, 0);
    std::ofstream out(path, std::ios::binary);
    for (uint64_t at = 0; at < bytes; at += zeros.size()) out.write(zeros.data(), zeros.size());
    if (!out) return Status::IoError("writing zeros to " + path.string());
  }
  int fd = ::open(path.c_str(), O_RDWR | O_DIRECT | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, "open O_DIRECT " + path.string());
  if (::fsync(fd) != 0) {
    ::close(fd);
    return Status::FromErrno(errno, "fsync " + path.string());
  }
  return fd;
}

void BM_BareDsyncWrite(benchmark::State& state) {
  ScratchDir dir("bare-dsync");
  Result<int> fd = OpenZeroFilledDirect(dir.path() / "sync.dat", kSyncFileBytes);
  if (!fd.ok()) return state.SkipWithError(fd.status().ToString().c_str());
  std::unique_ptr<char, decltype(&std::free)> block(
      static_cast<char*>(std::aligned_alloc(4096, kSyncWriteBytes)), &std::free);
  std::string payload = JsonPayload(kSyncWriteBytes, 0);
  std::memcpy(block.get(), payload.data(), kSyncWriteBytes);
  std::vector<int64_t> latencies_ns;
  latencies_ns.reserve(kSyncRounds);
  Ring ring;
  Status status = ring.Init(8);
  int64_t elapsed_ns = 0;
  for (auto _ : state) {
    Clock::time_point start = Clock::now();
    for (int i = 0; status.ok() && i < kSyncRounds; ++i) {
      Clock::time_point one = Clock::now();
      status = ring.DsyncWrite(*fd, block.get(), kSyncWriteBytes, static_cast<uint64_t>(i) * kSyncWriteBytes);
      latencies_ns.push_back(ElapsedNs(one, Clock::now()));
    }
    elapsed_ns = ElapsedNs(start, Clock::now());
  }
  ::close(*fd);
  if (!status.ok()) return state.SkipWithError(status.ToString().c_str());
  state.counters["syncs_per_s"] = static_cast<double>(latencies_ns.size()) * 1e9 / elapsed_ns;
  ReportLatency(state, Summarize(std::move(latencies_ns)));
}

void BM_BareFdatasync(benchmark::State& state) {
  ScratchDir dir("bare-fdatasync");
  Result<int> fd = OpenPreallocated(dir.path() / "sync.dat", kSyncFileBytes);
  if (!fd.ok()) return state.SkipWithError(fd.status().ToString().c_str());
  std::vector<int64_t> latencies_ns;
  latencies_ns.reserve(kSyncRounds);
  Status status;
  int64_t elapsed_ns = 0;
  for (auto _ : state) {
    Clock::time_point start = Clock::now();
    status = TimeWriteSyncPairs(*fd, &latencies_ns);
    elapsed_ns = ElapsedNs(start, Clock::now());
  }
  ::close(*fd);
  if (!status.ok()) return state.SkipWithError(status.ToString().c_str());
  state.counters["syncs_per_s"] = static_cast<double>(latencies_ns.size()) * 1e9 / elapsed_ns;
  ReportLatency(state, Summarize(std::move(latencies_ns)));
}

// What the crashing child tells its parent through a pipe.
struct ChildReport {
  uint64_t events = 0;  // acknowledged, so recovery must bring all of them back
  double write_s = 0;
  char error[512] = {};
};

Options ReopenOptions() {
  Options options = BenchOptions();
  options.checkpoint_interval_bytes = kNeverBytes;
  options.checkpoint_interval_ms = kNeverMs;
  return options;
}

// Runs in the forked child: fills the log and reports what was acknowledged.
ChildReport FillLog(const std::string& dir, uint64_t log_mb, Store** leaked) {
  ChildReport report;
  auto store = Store::Open(dir, ReopenOptions());
  if (!store.ok()) {
    std::snprintf(report.error, sizeof(report.error), "child Store::Open: %s",
                  store.status().ToString().c_str());
    return report;
  }
  // The store is deliberately never closed: the child's exit is the crash.
  *leaked = store->release();
  Workload workload = LargeAppendWorkload();
  ClosedLoop loop(
      *leaked, &workload,
      {.appenders = kReopenAppenders, .budget = kReopenWriteBudget, .max_appends = log_mb});
  ClosedLoop::Outcome outcome = loop.Run();
  report.events = outcome.latencies_ns.size() * workload.events_per_append();
  report.write_s = static_cast<double>(outcome.elapsed_ns) / 1e9;
  if (!outcome.error.empty()) {
    std::snprintf(report.error, sizeof(report.error), "child append: %s", outcome.error.c_str());
  } else if (outcome.latencies_ns.size() != log_mb) {
    std::snprintf(report.error, sizeof(report.error), "child wrote only %zu of %llu appends",
                  outcome.latencies_ns.size(), static_cast<unsigned long long>(log_mb));
  }
  return report;
}

// Forks a child that fills a log in `dir` and exits without closing the
// store, as a crash would: no final checkpoint, so Open must replay it all.
// The parent is single-threaded here (earlier stores are closed).
ChildReport FillLogThenCrash(const std::string& dir, uint64_t log_mb) {
  ChildReport report;
  int pipe_fds[2];
  if (::pipe(pipe_fds) != 0) {
    std::snprintf(report.error, sizeof(report.error), "pipe: %s", std::strerror(errno));
    return report;
  }
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(pipe_fds[0]);
    Store* leaked = nullptr;
    ChildReport child = FillLog(dir, log_mb, &leaked);
    bool sent = ::write(pipe_fds[1], &child, sizeof(child)) == sizeof(child);
    ::_exit(sent ? 0 : 1);  // no destructors, no Close, no checkpoint
  }
  ::close(pipe_fds[1]);
  bool received = pid > 0 && ::read(pipe_fds[0], &report, sizeof(report)) == sizeof(report);
  ::close(pipe_fds[0]);
  int wait_status = 0;
  if (pid > 0) ::waitpid(pid, &wait_status, 0);
  if (!received || !WIFEXITED(wait_status) || WEXITSTATUS(wait_status) != 0) {
    std::snprintf(report.error, sizeof(report.error), "the log-filling child failed (status %d)",
                  wait_status);
  }
  return report;
}

// Every acknowledged event must be back after recovery: counts them per stream.
Status CheckRecovered(Store* store, uint64_t expected_events) {
  uint64_t events = 0;
  for (const std::string& stream : StreamNames(kReopenStreams)) {
    Result<StreamInfo> info = store->GetStreamInfo(stream);
    if (!info.ok()) return info.status();
    events += info->event_count;
  }
  if (events == expected_events) return Status::Ok();
  return Status::Corruption("recovered " + std::to_string(events) + " events, " +
                            std::to_string(expected_events) + " were acknowledged");
}

// Opens the store in `dir` from a cold page cache and times it; null on failure.
std::unique_ptr<Store> TimedOpen(benchmark::State& state, const std::string& dir,
                                 uint64_t expected_events, double* open_ms) {
  EvictFromPageCache(dir);
  Clock::time_point start = Clock::now();
  std::unique_ptr<Store> store = OpenOrSkip(state, dir, ReopenOptions());
  *open_ms = static_cast<double>(ElapsedNs(start, Clock::now())) / 1e6;
  if (!store) return nullptr;
  Status recovered = CheckRecovered(store.get(), expected_events);
  if (!recovered.ok()) {
    state.SkipWithError(recovered.ToString().c_str());
    return nullptr;
  }
  return store;
}

void BM_ReopenAfterCrash(benchmark::State& state) {
  ScratchDir dir("reopen");
  uint64_t log_mb = std::max<uint64_t>(1, EnvPositive("ANNAL_BENCH_REOPEN_MB", 1024));
  ChildReport child = FillLogThenCrash(dir.path(), log_mb);
  if (child.error[0] != '\0') return state.SkipWithError(child.error);
  double open_ms = 0, open_with_checkpoint_ms = 0;
  std::unique_ptr<Store> store;
  for (auto _ : state) {
    store = TimedOpen(state, dir.path(), child.events, &open_ms);
  }
  if (!store) return;
  CloseOrSkip(state, store.get());  // writes the checkpoint the crash skipped
  store.reset();
  store = TimedOpen(state, dir.path(), child.events, &open_with_checkpoint_ms);
  if (!store) return;
  CloseOrSkip(state, store.get());
  state.counters["log_mb"] = static_cast<double>(log_mb);
  state.counters["fill_mb_per_s"] = static_cast<double>(log_mb) / child.write_s;
  state.counters["open_ms"] = open_ms;
  state.counters["open_with_checkpoint_ms"] = open_with_checkpoint_ms;
}

// Resident memory of this process.
uint64_t ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  uint64_t size_pages = 0, resident_pages = 0;
  statm >> size_pages >> resident_pages;
  return resident_pages * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
}

// Stream i of FillStreams: longer than the small-string buffer, as real
// names are.
std::string AccountName(size_t i) {
  char name[32];
  std::snprintf(name, sizeof name, "account-%016llx", static_cast<unsigned long long>(i * 0x9e3779b97f4a7c15ull));
  return name;
}

// Appends one event to each of `streams` streams (AccountName), then
// closes the store, which writes its checkpoint.
// With `finish`, then writes a segment's worth of events to one more stream,
// so that the streams' events lie in finished segments (indexed on disk)
// and the active segment's in-memory index holds none of them.
Status FillStreams(const std::string& dir, size_t streams, bool finish) {
  auto store = Store::Open(dir, BenchOptions());
  if (!store.ok()) return store.status();
  std::mutex mu;
  std::condition_variable cv;
  size_t done = 0;
  Status first_error;
  for (size_t i = 0; i < streams; ++i) {
    (*store)->AppendAsync(AccountName(i), ExpectedVersion::NoStream(), {EventData{.type = "AccountOpened", .payload = "{}"}},
                          [&](Result<AppendResult> r) {
                            std::lock_guard lock(mu);
                            if (!r.ok() && first_error.ok()) first_error = r.status();
                            ++done;
                            cv.notify_one();
                          });
    if (i % 50'000 == 49'999) {  // stay under the queue limit
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return done == i + 1; });
    }
  }
  std::unique_lock lock(mu);
  cv.wait(lock, [&] { return done == streams; });
  if (!first_error.ok()) return first_error;
  lock.unlock();
  if (finish) {
    std::string filler(64 * 1024, 'f');
    uint64_t segment = BenchOptions().segment_size_bytes;
    for (uint64_t written = 0; written < segment + segment / 2; written += filler.size()) {
      auto r = (*store)->Append("filler", ExpectedVersion::Any(), {EventData{.type = "Filler", .payload = filler}});
      if (!r.ok()) return r.status();
    }
    (*store)->WaitForBackgroundWork();
  }
  return (*store)->Close();
}

// Opens the store in a fresh child process and returns how much resident
// memory the open added: the index loaded from the checkpoint, plus fixed
// costs (rings, buffers, threads) that the caller cancels by difference.
// Also sets *index_bytes to what the store counts as its index's memory.
Result<uint64_t> ResidentGrowthOfOpen(const std::string& dir, uint64_t* index_bytes) {
  int fds[2];
  if (::pipe(fds) != 0) return Status::FromErrno(errno, "pipe");
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    // The parent's heap holds freed memory from filling the store; give it
    // back so that the open's allocations show as growth.
    ::malloc_trim(0);
    uint64_t before = ResidentBytes();
    auto store = Store::Open(dir, BenchOptions());
    // Two's complement: the open may leave less resident than before it
    // (it trims the heap), which reads back as a negative growth.
    uint64_t growth[2] = {store.ok() ? ResidentBytes() - before : ~0ull, 0};
    if (store.ok())
      for (const PartitionStats& p : (*store)->GetStats().partitions) growth[1] += p.index_memory_bytes;
    (void)!::write(fds[1], growth, sizeof growth);
    ::_exit(0);
  }
  ::close(fds[1]);
  uint64_t growth[2] = {~0ull, 0};
  (void)!::read(fds[0], growth, sizeof growth);
  ::close(fds[0]);
  ::waitpid(pid, nullptr, 0);
  *index_bytes = growth[1];
  if (growth[0] == ~0ull) return Status::IoError("the measuring child could not open the store");
  return growth[0];
}

// Bytes of index per stream: the difference in the open's memory between
// a store of N streams and an empty one, divided by N. Argument 2: 1 when
// the streams' events lie in finished segments (the stream table alone
// grows with them), 0 when they are all in the active segment (whose
// in-memory segment index then holds a run per stream too; it is bounded
// by the segment's size).
void BM_IndexBytesPerStream(benchmark::State& state) {
  size_t streams = static_cast<size_t>(state.range(0));
  bool finish = state.range(1) != 0;
  ScratchDir full("index-full"), empty("index-empty");
  Status s = FillStreams(full.path(), streams, finish);
  if (s.ok()) s = FillStreams(empty.path(), 0, finish);
  if (!s.ok()) return state.SkipWithError(s.ToString().c_str());
  Result<uint64_t> with = Status::Unavailable("not measured"), without = with;
  uint64_t index_with = 0, index_without = 0;
  for (auto _ : state) {
    with = ResidentGrowthOfOpen(full.path(), &index_with);
    without = ResidentGrowthOfOpen(empty.path(), &index_without);
  }
  if (!with.ok() || !without.ok()) return state.SkipWithError("measuring child failed");
  state.counters["streams"] = static_cast<double>(streams);
  state.counters["bytes_per_stream"] =
      static_cast<double>(static_cast<int64_t>(*with - *without)) / static_cast<double>(streams);
  // The same, counted by the store (GetStats().index_memory_bytes).
  state.counters["counted_per_stream"] =
      (static_cast<double>(index_with) - static_cast<double>(index_without)) / streams;
}

// The open loop at 100,000 appends/s, on the first 10,000 streams of a
// store holding `streams` (argument 1). Argument 2 picks the checkpoints:
// 0, another thread calls Store::Checkpoint() every second (the store's
// own are off; at this rate its default interval of 64 MiB of log comes
// about as often); 1, the store's own checkpointer with default options.
// A checkpoint reads the whole stream table, and the writer must not wait
// for it to publish.
// Counters: the appends' latency; checkpoints written (with 1, seen as the
// checkpoint file being replaced); with 0, checkpoint_ms_p50 and
// checkpoint_ms_max for how long each Checkpoint() call took.
void BM_AppendWhileCheckpointing(benchmark::State& state) {
  size_t streams = static_cast<size_t>(state.range(0));
  bool own = state.range(1) != 0;
  ScratchDir dir("checkpointing");
  Status filled = FillStreams(dir.path(), streams, /*finish=*/false);
  if (!filled.ok()) return state.SkipWithError(("filling: " + filled.ToString()).c_str());
  Options options = BenchOptions();
  if (!own) {
    options.checkpoint_interval_bytes = kNeverBytes;
    options.checkpoint_interval_ms = kNeverMs;
  }
  std::string checkpoint_file = (dir.path() / "partition-000" / "index.ckpt").string();
  auto file_id = [&] {
    struct stat st {};
    return ::stat(checkpoint_file.c_str(), &st) == 0 ? st.st_ino : ino_t{0};
  };
  std::unique_ptr<Store> store = OpenOrSkip(state, dir.path(), options);
  if (!store) return;
  std::vector<std::string> names;
  for (size_t i = 0; i < std::min(streams, kStreams); ++i) names.push_back(AccountName(i));
  Workload workload(std::move(names), SmallEventWorkload().batches());
  Settle();
  OpenLoop::Outcome outcome;
  std::vector<int64_t> checkpoint_ns;
  uint64_t replaced = 0;
  Status checkpoint_error;
  for (auto _ : state) {
    std::atomic<bool> stop{false};
    std::thread checkpointer([&] {
      if (own) {
        for (ino_t seen = file_id(); !stop.load(); std::this_thread::sleep_for(std::chrono::milliseconds(20))) {
          ino_t now = file_id();
          replaced += now != seen;
          seen = now;
        }
        return;
      }
      while (!stop.load()) {
        std::this_thread::sleep_for(std::chrono::seconds(1));
        auto t0 = std::chrono::steady_clock::now();
        Status s = store->Checkpoint();
        checkpoint_ns.push_back(ElapsedNs(t0, std::chrono::steady_clock::now()));
        if (!s.ok() && checkpoint_error.ok()) checkpoint_error = s;
      }
    });
    OpenLoop loop(store.get(), &workload,
                  {.rate_per_s = 100'000,
                   .duration = AppendPhaseDuration(),
                   .max_in_flight = kOpenLoopMaxInFlight,
                   .issue_budget = 3 * AppendPhaseDuration()});
    outcome = loop.Run();
    stop = true;
    checkpointer.join();
  }
  if (!outcome.error.empty()) return state.SkipWithError(("append: " + outcome.error).c_str());
  if (!checkpoint_error.ok()) return state.SkipWithError(("checkpoint: " + checkpoint_error.ToString()).c_str());
  CloseOrSkip(state, store.get());
  if (state.error_occurred()) return;
  if (outcome.issued == 0 || (!own && checkpoint_ns.empty())) return state.SkipWithError("nothing was measured");
  ReportThroughput(state, outcome.issued * workload.events_per_append(), outcome.elapsed_ns);
  ReportLatency(state, Summarize(std::move(outcome.latencies_ns)));
  state.counters["streams"] = static_cast<double>(streams);
  if (own) {
    state.counters["checkpoints"] = static_cast<double>(replaced);
    return;
  }
  std::sort(checkpoint_ns.begin(), checkpoint_ns.end());
  state.counters["checkpoints"] = static_cast<double>(checkpoint_ns.size());
  state.counters["checkpoint_ms_p50"] = static_cast<double>(checkpoint_ns[checkpoint_ns.size() / 2]) / 1e6;
  state.counters["checkpoint_ms_max"] = static_cast<double>(checkpoint_ns.back()) / 1e6;
}

BENCHMARK(BM_DurableAppendClosedLoop)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);
BENCHMARK(BM_DurableAppendOpenLoop)
    ->Arg(100'000)
    ->Arg(200'000)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->Iterations(1);
BENCHMARK(BM_BareFdatasync)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);
BENCHMARK(BM_BareDsyncWrite)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);
BENCHMARK(BM_ReopenAfterCrash)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);
BENCHMARK(BM_AppendWhileCheckpointing)->Args({1'000'000, 0})->Args({1'000'000, 1})->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);
BENCHMARK(BM_IndexBytesPerStream)->Args({200'000, 1})->Args({200'000, 0})->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);

}  // namespace
}  // namespace annal::bench

BENCHMARK_MAIN();
