// annal_scale_bench: the scale benchmark of issue #6. Not a CI test: at the
// defaults it writes 50 million events (about 30 GB on disk) and runs for
// many minutes.
//
//   cmake --build build-bench -j2 --target annal_scale_bench
//   build-bench/bench/annal_scale_bench --dir /path/with/40GB/free
//   build-bench/bench/annal_scale_bench --dir DIR --phase measure   # again, later
//
// Needs about 30 GB of free disk at the defaults: the log is written at
// about 690 bytes per event, and sealing shrinks full segments only in the
// background (to ~15 % with these payloads); leave 40 GB to be safe. --dir
// must be missing or empty for the generate phase and is left in place for
// later measurements; delete it yourself.
// A quick run: --events 200000 --streams 20000 --reads 200.
//
// Generate (--phase generate or all). Through the public Store API in this
// process, --events events of --payload-bytes bytes (loadgen::PayloadMaker's
// JSON documents, or random bytes with --payload random, with
// loadgen::kEventMetadata as metadata and the types
// "Deposited"/"Withdrawn" alternating), --events-per-append per append, with
// --in-flight appends outstanding, ExpectedVersion::Any(). The stream of each
// append is a Zipf draw over --streams ranks (exponent --zipf; rank 1 is the
// hottest) mapped through a fixed random permutation to a stream index, so
// hot streams are not neighbours by name. Stream i is named
// "account-<16 hex digits>", the digits a bijective hash of i and --seed, so
// the measure phase recomputes the names from --seed alone. Reports the
// streams touched and events/s, then closes the store cleanly.
//
// Measure (--phase measure or all), on the closed store in --dir:
//   disk       files below --dir: apparent size and allocated blocks, per
//              event (taken on the closed store, before any reopen)
//   open       wall time of Store::Open after the clean close
//   memory     VmRSS just before Open and right after it; the difference per
//              stream is what the engine holds per stream at rest. VmHWM is
//              reset (/proc/self/clear_refs) before Open when the kernel
//              allows, so it is the peak since then.
//   stats      per partition: sealed segments, their raw and stored bytes,
//              the stream index's memory; the block cache's hits and misses
//   warm read  the last 100 events (ReadStream backward from the head) of
//              --reads streams drawn uniformly among those that exist: one
//              untimed pass, then a timed one
//   cold read  the store is closed, every file below --dir is fdatasync'ed
//              and dropped from the page cache (posix_fadvise DONTNEED; then
//              /proc/sys/vm/drop_caches is tried too), the store reopened
//              (timed again) and the same read timed once over --reads
//              *other* streams: cold block cache, cold page cache. mincore()
//              over the files reports what was still cached after the drop,
//              after the reopen (what recovery read) and after the reads.
// Every read is checked: min(100, head + 1) events, the stream's, versions
// descending from the head without gaps; a mismatch fails the run.
//
// Output: a table on stdout, progress on stderr, and with --json-out FILE the
// same figures as a JSON object.
#include <fcntl.h>
#include <malloc.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <random>
#include <stop_token>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "annal/assert.h"
#include "annal/options.h"
#include "annal/stats.h"
#include "annal/status.h"
#include "annal/store.h"
#include "annal/types.h"
#include "workload.h"

namespace annal::bench {
namespace {

using Clock = std::chrono::steady_clock;
using Json = nlohmann::ordered_json;

// Events read per stream: the tail an aggregate or a UI typically loads.
constexpr size_t kReadCount = 100;
constexpr std::chrono::seconds kProgressInterval{5};
// Salts so that the permutation of ranks and the choice of read streams do
// not repeat the Zipf draws' random sequence.
constexpr uint64_t kPermutationSalt = 0x5ca1ab1e0ddba11ULL;
constexpr uint64_t kReadSetSalt = 0x0b5e55edc0ffeeULL;
constexpr double kMiB = 1024.0 * 1024.0;

struct Settings {
  std::string dir;
  std::string phase = "all";
  uint64_t events = 50'000'000;
  uint32_t streams = 1'000'000;
  double zipf_exponent = 1.0;
  uint32_t payload_bytes = 500;
  std::string payload = "json";  // or "random": incompressible bytes
  uint32_t partitions = 1;
  uint32_t reads = 2000;
  uint64_t seed = 1;
  uint32_t in_flight = 256;
  uint32_t events_per_append = 1;
  uint64_t segment_mb = 64;
  size_t block_bytes = Options{}.seal_block_bytes;
  bool compress_literals = Options{}.seal_compress_literals;
  size_t cache_mb = Options{}.block_cache_bytes >> 20;
  std::string json_path;
};

// The store's options from the settings (partitions and segment size only
// matter when the store is created).
Options StoreOptions(const Settings& s) {
  Options options;
  options.partitions = s.partitions;
  options.segment_size_bytes = s.segment_mb << 20;
  options.seal_block_bytes = s.block_bytes;
  options.seal_compress_literals = s.compress_literals;
  options.block_cache_bytes = s.cache_mb << 20;
  return options;
}

int64_t ElapsedNs(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(to - from).count();
}

double ElapsedMs(Clock::time_point from) {
  return static_cast<double>(ElapsedNs(from, Clock::now())) / 1e6;
}

// printf into a std::string, for the table.
__attribute__((format(printf, 1, 2))) std::string Str(const char* format, ...) {
  char buf[256];
  va_list args;
  va_start(args, format);
  int n = std::vsnprintf(buf, sizeof buf, format, args);
  va_end(args);
  ANNAL_ASSERT(n >= 0 && static_cast<size_t>(n) < sizeof buf);
  return std::string(buf, static_cast<size_t>(n));
}

// ---------------------------------------------------------------------------
// Stream names and the workload.

// The splitmix64 finaliser: a bijection on 64-bit integers.
uint64_t Mix64(uint64_t x) {
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// "account-<16 hex digits>" (24 bytes), distinct for distinct `index` under
// one seed: an odd multiplier and Mix64 are both bijections.
std::string StreamNameOf(uint64_t seed, uint32_t index) {
  uint64_t id = Mix64(Mix64(seed) + index * 0x9e3779b97f4a7c15ULL);
  char name[32];
  int n = std::snprintf(name, sizeof name, "account-%016llx", static_cast<unsigned long long>(id));
  ANNAL_ASSERT(n == 24);
  return std::string(name, static_cast<size_t>(n));
}

// A fixed random permutation of [0, streams): the stream index of each Zipf
// rank.
std::vector<uint32_t> RankToStream(uint32_t streams, uint64_t seed) {
  std::vector<uint32_t> order(streams);
  std::iota(order.begin(), order.end(), 0u);
  std::shuffle(order.begin(), order.end(), std::mt19937_64(seed ^ kPermutationSalt));
  return order;
}

// ---------------------------------------------------------------------------
// Probes of the process and the file system.

struct Memory {
  uint64_t rss_bytes = 0;  // VmRSS
  uint64_t hwm_bytes = 0;  // VmHWM: peak RSS
};

Memory ReadMemory() {
  Memory m;
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    unsigned long long kb = 0;
    if (std::sscanf(line.c_str(), "VmRSS: %llu kB", &kb) == 1) m.rss_bytes = kb * 1024;
    if (std::sscanf(line.c_str(), "VmHWM: %llu kB", &kb) == 1) m.hwm_bytes = kb * 1024;
  }
  ANNAL_ASSERT_MSG(m.rss_bytes > 0, "no VmRSS in /proc/self/status");
  return m;
}

// Resets VmHWM to the current RSS (Linux >= 4.0). False when refused.
bool ResetPeakRss() {
  int fd = ::open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = ::write(fd, "5", 1) == 1;
  ::close(fd);
  return ok;
}

struct DiskUsage {
  uint64_t files = 0;
  uint64_t apparent_bytes = 0;   // st_size
  uint64_t allocated_bytes = 0;  // st_blocks * 512
};

Result<DiskUsage> MeasureDisk(const std::string& dir) {
  DiskUsage d;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    struct stat st;
    if (::lstat(it->path().c_str(), &st) != 0)
      return Status::FromErrno(errno, "lstat " + it->path().string());
    if (!S_ISREG(st.st_mode)) continue;
    ++d.files;
    d.apparent_bytes += static_cast<uint64_t>(st.st_size);
    d.allocated_bytes += static_cast<uint64_t>(st.st_blocks) * 512;
  }
  if (ec) return Status::IoError("walking " + dir + ": " + ec.message());
  return d;
}

// Calls `fn(path, fd)` for every regular file below `dir`, opened read-only.
template <typename Fn>
Status ForEachFile(const std::string& dir, Fn&& fn) {
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (!it->is_regular_file()) continue;
    int fd = ::open(it->path().c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return Status::FromErrno(errno, "open " + it->path().string());
    Status s = fn(it->path(), fd);
    ::close(fd);
    ANNAL_RETURN_IF_ERROR(s);
  }
  if (ec) return Status::IoError("walking " + dir + ": " + ec.message());
  return Status::Ok();
}

// Bytes of the files below `dir` that are in the page cache (mincore).
Result<uint64_t> PageCacheResidentBytes(const std::string& dir) {
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  uint64_t resident = 0;
  std::vector<unsigned char> pages;
  Status s = ForEachFile(dir, [&](const std::filesystem::path& path, int fd) -> Status {
    struct stat st;
    if (::fstat(fd, &st) != 0) return Status::FromErrno(errno, "fstat " + path.string());
    size_t size = static_cast<size_t>(st.st_size);
    if (size == 0) return Status::Ok();
    void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) return Status::FromErrno(errno, "mmap " + path.string());
    pages.assign((size + page - 1) / page, 0);
    int rc = ::mincore(map, size, pages.data());
    int err = errno;
    ::munmap(map, size);
    if (rc != 0) return Status::FromErrno(err, "mincore " + path.string());
    for (unsigned char p : pages) resident += (p & 1) * page;
    return Status::Ok();
  });
  ANNAL_RETURN_IF_ERROR(s);
  return resident;
}

struct CacheDrop {
  uint64_t files = 0;
  std::string drop_caches;  // "yes", or why writing /proc/sys/vm/drop_caches failed
  uint64_t resident_bytes_after = 0;
};

// Makes every file below `dir` leave the page cache. posix_fadvise drops only
// clean pages, hence the fdatasync first; it needs no privilege.
Result<CacheDrop> DropPageCache(const std::string& dir) {
  CacheDrop drop;
  Status s = ForEachFile(dir, [&](const std::filesystem::path& path, int fd) -> Status {
    if (::fdatasync(fd) != 0) return Status::FromErrno(errno, "fdatasync " + path.string());
    int rc = ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    if (rc != 0) return Status::FromErrno(rc, "posix_fadvise " + path.string());
    ++drop.files;
    return Status::Ok();
  });
  ANNAL_RETURN_IF_ERROR(s);
  int fd = ::open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    drop.drop_caches = std::string("no (open: ") + std::strerror(errno) + ")";
  } else {
    drop.drop_caches =
        ::write(fd, "1", 1) == 1 ? "yes" : std::string("no (write: ") + std::strerror(errno) + ")";
    ::close(fd);
  }
  ANNAL_ASSIGN_OR_RETURN(drop.resident_bytes_after, PageCacheResidentBytes(dir));
  return drop;
}

// ---------------------------------------------------------------------------
// Latency percentiles.

struct Latency {
  size_t count = 0;
  double p50_us = 0;
  double p99_us = 0;
  double p999_us = 0;
  double max_us = 0;
};

// Nearest-rank percentiles (as bench_util.h's Summarize, which this cannot
// include without Google Benchmark).
Latency Summarize(std::vector<int64_t> ns) {
  ANNAL_ASSERT(!ns.empty());
  std::sort(ns.begin(), ns.end());
  auto at = [&](double quantile) {
    size_t rank = static_cast<size_t>(quantile * static_cast<double>(ns.size()));
    return static_cast<double>(ns[std::min(rank, ns.size() - 1)]) / 1e3;
  };
  return {.count = ns.size(),
          .p50_us = at(0.50),
          .p99_us = at(0.99),
          .p999_us = at(0.999),
          .max_us = static_cast<double>(ns.back()) / 1e3};
}

// ---------------------------------------------------------------------------
// Generate.

// At most `limit` appends outstanding. Acquire and Drain run on the writing
// thread; Release on engine threads, where it must not block: it only takes
// the mutex for a few instructions.
class AppendWindow {
 public:
  explicit AppendWindow(uint32_t limit) : limit_(limit) { ANNAL_ASSERT(limit_ > 0); }

  // Waits for a free slot. False once an append failed: send no more.
  bool Acquire() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return in_flight_ < limit_ || !error_.ok(); });
    if (!error_.ok()) return false;
    ++in_flight_;
    return true;
  }
  // Notifies under the lock: once Drain has returned, the window may be
  // gone, so the last Release must not touch it after unlocking.
  void Release(const Status& s, uint64_t events) {
    std::lock_guard lock(mu_);
    ANNAL_ASSERT(in_flight_ > 0);
    --in_flight_;
    if (s.ok()) acked_events_.fetch_add(events, std::memory_order_relaxed);
    if (!s.ok() && error_.ok()) error_ = s;
    cv_.notify_one();
  }
  // Waits for every outstanding append; the first error, if any.
  Status Drain() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return in_flight_ == 0; });
    return error_;
  }
  uint64_t acked_events() const { return acked_events_.load(std::memory_order_relaxed); }

 private:
  const uint32_t limit_;
  std::mutex mu_;
  std::condition_variable cv_;  // only the writing thread waits
  uint32_t in_flight_ = 0;      // guarded by mu_
  Status error_;                // guarded by mu_
  std::atomic<uint64_t> acked_events_{0};
};

// Prints the acknowledged events every kProgressInterval to stderr, from its
// own thread, until destroyed.
class Progress {
 public:
  Progress(const AppendWindow& window, uint64_t total) : window_(window), total_(total) {}

 private:
  void Loop(const std::stop_token& stop) {
    std::unique_lock lock(mu_);
    uint64_t last_events = 0;
    Clock::time_point last = start_;
    while (!cv_.wait_for(lock, stop, kProgressInterval, [&] { return stop.stop_requested(); })) {
      uint64_t events = window_.acked_events();
      Clock::time_point now = Clock::now();
      double elapsed_s = static_cast<double>(ElapsedNs(start_, now)) / 1e9;
      double interval_s = static_cast<double>(ElapsedNs(last, now)) / 1e9;
      std::fprintf(
          stderr,
          "generate: %llu / %llu events, %.0f events/s (last %.0f s: %.0f/s), %.0f s elapsed\n",
          static_cast<unsigned long long>(events), static_cast<unsigned long long>(total_),
          static_cast<double>(events) / elapsed_s, interval_s,
          static_cast<double>(events - last_events) / interval_s, elapsed_s);
      last_events = events;
      last = now;
    }
  }

  const AppendWindow& window_;
  const uint64_t total_;
  const Clock::time_point start_ = Clock::now();
  std::mutex mu_;
  std::condition_variable_any cv_;  // never notified: waits end by timeout or stop request
  std::jthread thread_{
      [this](std::stop_token stop) { Loop(stop); }};  // last: starts once the rest is built
};

struct GenerateReport {
  uint64_t events = 0;
  uint64_t appends = 0;
  uint64_t streams_touched = 0;
  uint64_t hottest_stream_events = 0;
  double elapsed_s = 0;  // first append to the last acknowledgement
  double close_ms = 0;
};

// Generation refuses to add to an existing store: the figures would not be
// those of the settings.
Status CheckEmptyDirectory(const std::string& dir) {
  std::error_code ec;
  if (!std::filesystem::exists(dir, ec)) return Status::Ok();
  if (!std::filesystem::is_empty(dir, ec) || ec)
    return Status::AlreadyExists(
        dir + " exists and is not empty: measure it with --phase measure, or remove it");
  return Status::Ok();
}

// Sends every append; returns once all were acknowledged or one failed.
Status WriteEvents(Store& store, const Settings& s, GenerateReport* report) {
  loadgen::WorkloadOptions w;
  w.streams = s.streams;
  w.distribution = loadgen::StreamDistribution::kZipf;
  w.zipf_exponent = s.zipf_exponent;
  w.event_bytes = s.payload_bytes;
  w.payload = s.payload == "random" ? loadgen::PayloadKind::kRandom : loadgen::PayloadKind::kJson;
  w.events_per_append = s.events_per_append;
  w.seed = s.seed;
  loadgen::StreamChooser ranks(w);  // Zipf: an inverse-CDF table and a binary search
  loadgen::PayloadMaker payloads(w);
  const std::vector<uint32_t> stream_of_rank = RankToStream(s.streams, s.seed);
  std::vector<uint64_t> events_of_stream(s.streams, 0);

  AppendWindow window(s.in_flight);
  Clock::time_point start = Clock::now();
  {
    Progress progress(window, s.events);
    for (uint64_t sequence = 0; sequence < s.events;) {
      uint32_t stream = stream_of_rank[ranks.Next()];
      uint64_t n = std::min<uint64_t>(s.events_per_append, s.events - sequence);
      std::vector<EventData> events;
      events.reserve(n);
      for (uint64_t i = 0; i < n; ++i, ++sequence)
        events.push_back(EventData{.type = sequence % 2 == 0 ? "Deposited" : "Withdrawn",
                                   .metadata = loadgen::kEventMetadata,
                                   .payload = payloads.Make(sequence)});
      if (!window.Acquire()) break;
      std::string name = StreamNameOf(s.seed, stream);
      store.AppendAsync(
          name, ExpectedVersion::Any(), std::move(events),
          [&window, name, n](Result<AppendResult> r) {
            if (r.ok()) ANNAL_ASSERT(r->last_version.get() - r->first_version.get() + 1 == n);
            window.Release(r.ok() ? Status::Ok() : r.status().WithContext("append to " + name), n);
          });
      events_of_stream[stream] += n;
      ++report->appends;
      report->events += n;
    }
    ANNAL_RETURN_IF_ERROR(window.Drain());
    report->elapsed_s = static_cast<double>(ElapsedNs(start, Clock::now())) / 1e9;
  }
  report->streams_touched = static_cast<uint64_t>(std::count_if(
      events_of_stream.begin(), events_of_stream.end(), [](uint64_t e) { return e > 0; }));
  report->hottest_stream_events =
      *std::max_element(events_of_stream.begin(), events_of_stream.end());
  return Status::Ok();
}

Status Generate(const Settings& s, GenerateReport* report) {
  ANNAL_RETURN_IF_ERROR(CheckEmptyDirectory(s.dir));
  ANNAL_ASSIGN_OR_RETURN(std::unique_ptr<Store> store, Store::Open(s.dir, StoreOptions(s)));
  Status written = WriteEvents(*store, s, report);
  if (!written.ok()) {
    (void)store->Close();  // the append's error is the one to report
    return written;
  }
  // Pair check: with no failed append, positions have no gaps.
  if (store->DurableHead().get() != report->events)
    return Status::Corruption("durable head " + std::to_string(store->DurableHead().get()) +
                              " after " + std::to_string(report->events) + " acknowledged events");
  Clock::time_point start = Clock::now();
  ANNAL_RETURN_IF_ERROR(store->Close());
  report->close_ms = ElapsedMs(start);
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// Measure.

struct ReadTarget {
  std::string stream;
  uint64_t head = 0;
};

// Two disjoint sets of up to `reads` existing streams, each uniform among
// the streams that exist: walks the names of a random permutation of
// [0, streams) and keeps those the store knows.
Status PickStreams(Store& store, const Settings& s, std::vector<ReadTarget>* warm,
                   std::vector<ReadTarget>* cold) {
  std::vector<uint32_t> order(s.streams);
  std::iota(order.begin(), order.end(), 0u);
  std::shuffle(order.begin(), order.end(), std::mt19937_64(s.seed ^ kReadSetSalt));
  for (uint32_t index : order) {
    if (cold->size() == s.reads) break;
    std::string name = StreamNameOf(s.seed, index);
    Result<StreamInfo> info = store.GetStreamInfo(name);
    if (!info.ok() && info.status().code() == StatusCode::kNotFound) continue;
    if (!info.ok()) return info.status().WithContext("stream info of " + name);
    ANNAL_ASSERT(info->event_count == info->head_version.get() + 1);
    (warm->size() < s.reads ? warm : cold)->push_back({std::move(name), info->head_version.get()});
  }
  if (warm->empty())
    return Status::NotFound("no stream named from --seed " + std::to_string(s.seed) +
                            " and --streams " + std::to_string(s.streams) +
                            " exists: pass the values the store was generated with");
  if (cold->empty())
    return Status::InvalidArgument(
        "too few streams for a second set of --reads streams: lower --reads");
  return Status::Ok();
}

// The events of a backward read from the head must be the stream's last
// min(kReadCount, head + 1), newest first, without gaps.
Status CheckTail(const ReadTarget& t, const std::vector<RecordedEvent>& events) {
  size_t expected = static_cast<size_t>(std::min<uint64_t>(kReadCount, t.head + 1));
  if (events.size() != expected)
    return Status::Corruption("reading " + t.stream + " backward from head " +
                              std::to_string(t.head) + ": " + std::to_string(events.size()) +
                              " events, expected " + std::to_string(expected));
  for (size_t i = 0; i < events.size(); ++i) {
    if (events[i].stream != t.stream || events[i].version.get() != t.head - i)
      return Status::Corruption("reading " + t.stream + " backward from head " +
                                std::to_string(t.head) + ": event " + std::to_string(i) + " is " +
                                events[i].stream + " version " +
                                std::to_string(events[i].version.get()) + ", expected version " +
                                std::to_string(t.head - i));
  }
  return Status::Ok();
}

// One read of each target, in order; the latency of each in `latencies_ns`.
Status ReadPass(Store& store, const std::vector<ReadTarget>& targets,
                std::vector<int64_t>* latencies_ns) {
  latencies_ns->clear();
  latencies_ns->reserve(targets.size());
  for (const ReadTarget& t : targets) {
    Clock::time_point start = Clock::now();
    Result<std::vector<RecordedEvent>> events =
        store.ReadStream(t.stream, StreamVersion(t.head), ReadDirection::kBackward, kReadCount);
    latencies_ns->push_back(ElapsedNs(start, Clock::now()));
    if (!events.ok()) return events.status().WithContext("reading " + t.stream);
    ANNAL_RETURN_IF_ERROR(CheckTail(t, *events));
  }
  return Status::Ok();
}

struct BlockCache {
  uint64_t hits = 0;
  uint64_t misses = 0;
};

BlockCache BlockCacheOf(const StoreStats& s) { return {s.block_cache_hits, s.block_cache_misses}; }

struct MeasureReport {
  DiskUsage disk;
  uint64_t events = 0;  // durable head of the reopened store
  uint64_t streams = 0;
  bool hwm_reset = false;
  Memory before_open;
  double open_ms = 0;
  Memory after_open;
  std::vector<PartitionStats> partitions;  // right after the open
  Latency warm;
  BlockCache warm_cache;  // after the untimed and the timed pass
  Memory after_reads;
  CacheDrop drop;
  double reopen_ms = 0;
  Memory after_reopen;
  uint64_t cached_after_reopen_bytes = 0;  // of the files below --dir, in the page cache
  Latency cold;
  BlockCache cold_cache;
  uint64_t cached_after_cold_reads_bytes = 0;
};

Result<std::unique_ptr<Store>> OpenTimed(const Settings& s, double* open_ms) {
  Options options = StoreOptions(s);
  options.create_if_missing = false;
  Clock::time_point start = Clock::now();
  Result<std::unique_ptr<Store>> store = Store::Open(s.dir, options);
  *open_ms = ElapsedMs(start);
  if (!store.ok()) return store.status().WithContext("opening " + s.dir);
  return store;
}

Status Measure(const Settings& s, MeasureReport* r) {
  std::error_code ec;
  if (!std::filesystem::is_directory(s.dir, ec))
    return Status::NotFound(s.dir + " is not a directory: run --phase generate first");
  ANNAL_ASSIGN_OR_RETURN(r->disk, MeasureDisk(s.dir));
  // Freed heap that glibc keeps (the generate phase's store, in --phase
  // all) would otherwise be reused by the open and hide what it allocates.
  ::malloc_trim(0);
  r->hwm_reset = ResetPeakRss();
  r->before_open = ReadMemory();
  ANNAL_ASSIGN_OR_RETURN(std::unique_ptr<Store> store, OpenTimed(s, &r->open_ms));
  r->after_open = ReadMemory();
  StoreStats stats = store->GetStats();
  r->events = stats.durable_head;
  for (const PartitionStats& p : stats.partitions) r->streams += p.streams;
  r->partitions = stats.partitions;
  if (r->events == 0)
    return Status::NotFound(s.dir + " holds no events: run --phase generate first");

  std::vector<ReadTarget> warm, cold;
  ANNAL_RETURN_IF_ERROR(PickStreams(*store, s, &warm, &cold));
  std::fprintf(stderr, "measure: reading %zu streams warm, then %zu others cold\n", warm.size(),
               cold.size());
  std::vector<int64_t> ns;
  ANNAL_RETURN_IF_ERROR(ReadPass(*store, warm, &ns));  // the warm-up; not reported
  ANNAL_RETURN_IF_ERROR(ReadPass(*store, warm, &ns));
  r->warm = Summarize(ns);
  r->warm_cache = BlockCacheOf(store->GetStats());
  r->after_reads = ReadMemory();
  ANNAL_RETURN_IF_ERROR(store->Close());
  store.reset();

  ANNAL_ASSIGN_OR_RETURN(r->drop, DropPageCache(s.dir));
  ANNAL_ASSIGN_OR_RETURN(store, OpenTimed(s, &r->reopen_ms));
  r->after_reopen = ReadMemory();
  ANNAL_ASSIGN_OR_RETURN(r->cached_after_reopen_bytes, PageCacheResidentBytes(s.dir));
  ANNAL_RETURN_IF_ERROR(ReadPass(*store, cold, &ns));
  r->cold = Summarize(ns);
  r->cold_cache = BlockCacheOf(store->GetStats());
  ANNAL_ASSIGN_OR_RETURN(r->cached_after_cold_reads_bytes, PageCacheResidentBytes(s.dir));
  return store->Close();
}

// ---------------------------------------------------------------------------
// Output.

void Row(const char* label, const std::string& value) {
  std::printf("  %-40s %s\n", label, value.c_str());
}

std::string MiB(uint64_t bytes) { return Str("%.1f MiB", static_cast<double>(bytes) / kMiB); }

std::string LatencyText(const Latency& l) {
  return Str("p50 %.1f  p99 %.1f  p99.9 %.1f  max %.1f us  (%zu reads)", l.p50_us, l.p99_us,
             l.p999_us, l.max_us, l.count);
}

// Bytes per stream of the RSS the open added; negative when it shrank.
double RssPerStream(const MeasureReport& r) {
  double delta =
      static_cast<double>(r.after_open.rss_bytes) - static_cast<double>(r.before_open.rss_bytes);
  return r.streams == 0 ? 0 : delta / static_cast<double>(r.streams);
}

void PrintGenerate(const GenerateReport& g) {
  std::printf("Generate\n");
  Row("events", Str("%llu in %llu appends", static_cast<unsigned long long>(g.events),
                    static_cast<unsigned long long>(g.appends)));
  Row("streams touched",
      Str("%llu (hottest: %llu events)", static_cast<unsigned long long>(g.streams_touched),
          static_cast<unsigned long long>(g.hottest_stream_events)));
  Row("elapsed", Str("%.1f s", g.elapsed_s));
  Row("throughput", Str("%.0f events/s", static_cast<double>(g.events) / g.elapsed_s));
  Row("close", Str("%.1f ms", g.close_ms));
}

void PrintPartition(const PartitionStats& p) {
  std::string ratio = p.sealed_raw_bytes == 0
                          ? std::string("n/a (nothing sealed)")
                          : Str("%.3f", static_cast<double>(p.sealed_stored_bytes) /
                                            static_cast<double>(p.sealed_raw_bytes));
  std::printf("  partition %u\n", p.partition);
  Row("  streams, segments", Str("%llu, %llu", static_cast<unsigned long long>(p.streams),
                                 static_cast<unsigned long long>(p.segments)));
  Row("  sealed segments", Str("%llu", static_cast<unsigned long long>(p.sealed_segments)));
  Row("  sealed raw / stored", MiB(p.sealed_raw_bytes) + " / " + MiB(p.sealed_stored_bytes));
  Row("  compression (stored / raw)", ratio);
  Row("  stream index memory",
      MiB(p.index_memory_bytes) + Str(" (%.1f bytes per stream)",
                                      p.streams == 0 ? 0.0
                                                     : static_cast<double>(p.index_memory_bytes) /
                                                           static_cast<double>(p.streams)));
}

void PrintMeasure(const MeasureReport& r) {
  const double events = static_cast<double>(r.events);
  std::printf("Measure\n");
  Row("events, streams in the store", Str("%llu, %llu", static_cast<unsigned long long>(r.events),
                                          static_cast<unsigned long long>(r.streams)));
  Row("disk: files", Str("%llu", static_cast<unsigned long long>(r.disk.files)));
  Row("disk: allocated",
      MiB(r.disk.allocated_bytes) +
          Str(" (%.1f bytes per event)", static_cast<double>(r.disk.allocated_bytes) / events));
  Row("disk: apparent size",
      MiB(r.disk.apparent_bytes) +
          Str(" (%.1f bytes per event)", static_cast<double>(r.disk.apparent_bytes) / events));
  Row("open", Str("%.1f ms", r.open_ms));
  Row("RSS before open", MiB(r.before_open.rss_bytes));
  Row("RSS / peak after open",
      MiB(r.after_open.rss_bytes) + " / " + MiB(r.after_open.hwm_bytes) +
          (r.hwm_reset ? "" : " (peak not reset: includes earlier phases)"));
  Row("RSS added by open, per stream", Str("%.1f bytes", RssPerStream(r)));
  for (const PartitionStats& p : r.partitions) PrintPartition(p);
  Row("warm read, last 100 events", LatencyText(r.warm));
  Row("  block cache hits / misses",
      Str("%llu / %llu", static_cast<unsigned long long>(r.warm_cache.hits),
          static_cast<unsigned long long>(r.warm_cache.misses)));
  Row("RSS / peak after warm reads",
      MiB(r.after_reads.rss_bytes) + " / " + MiB(r.after_reads.hwm_bytes));
  Row("page cache dropped (fadvise)",
      Str("%llu files", static_cast<unsigned long long>(r.drop.files)));
  Row("/proc/sys/vm/drop_caches", r.drop.drop_caches);
  Row("still in page cache after the drop", MiB(r.drop.resident_bytes_after));
  Row("reopen, cold page cache", Str("%.1f ms", r.reopen_ms));
  Row("RSS / peak after reopen",
      MiB(r.after_reopen.rss_bytes) + " / " + MiB(r.after_reopen.hwm_bytes));
  Row("in page cache after reopen", MiB(r.cached_after_reopen_bytes));
  Row("cold read, last 100 events", LatencyText(r.cold));
  Row("  block cache hits / misses",
      Str("%llu / %llu", static_cast<unsigned long long>(r.cold_cache.hits),
          static_cast<unsigned long long>(r.cold_cache.misses)));
  Row("  in page cache after cold reads", MiB(r.cached_after_cold_reads_bytes));
}

Json ToJson(const Memory& m) { return {{"rss_bytes", m.rss_bytes}, {"hwm_bytes", m.hwm_bytes}}; }

Json ToJson(const Latency& l) {
  return {{"reads", l.count},
          {"p50_us", l.p50_us},
          {"p99_us", l.p99_us},
          {"p999_us", l.p999_us},
          {"max_us", l.max_us}};
}

Json ToJson(const Settings& s, const std::optional<GenerateReport>& g,
            const std::optional<MeasureReport>& m) {
  Json j;
  j["settings"] = {{"dir", s.dir},
                   {"phase", s.phase},
                   {"events", s.events},
                   {"streams", s.streams},
                   {"zipf", s.zipf_exponent},
                   {"payload_bytes", s.payload_bytes},
                   {"payload", s.payload},
                   {"partitions", s.partitions},
                   {"reads", s.reads},
                   {"seed", s.seed},
                   {"in_flight", s.in_flight},
                   {"events_per_append", s.events_per_append}};
  if (g) {
    j["generate"] = {{"events", g->events},
                     {"appends", g->appends},
                     {"streams_touched", g->streams_touched},
                     {"hottest_stream_events", g->hottest_stream_events},
                     {"elapsed_s", g->elapsed_s},
                     {"events_per_s", static_cast<double>(g->events) / g->elapsed_s},
                     {"close_ms", g->close_ms}};
  }
  if (m) {
    Json partitions = Json::array();
    for (const PartitionStats& p : m->partitions) {
      partitions.push_back(
          {{"partition", p.partition},
           {"streams", p.streams},
           {"segments", p.segments},
           {"sealed_segments", p.sealed_segments},
           {"sealed_raw_bytes", p.sealed_raw_bytes},
           {"sealed_stored_bytes", p.sealed_stored_bytes},
           {"compression_stored_over_raw", p.sealed_raw_bytes == 0
                                               ? Json(nullptr)
                                               : Json(static_cast<double>(p.sealed_stored_bytes) /
                                                      static_cast<double>(p.sealed_raw_bytes))},
           {"index_memory_bytes", p.index_memory_bytes}});
    }
    const double events = static_cast<double>(m->events);
    j["measure"] = {
        {"events", m->events},
        {"streams", m->streams},
        {"disk",
         {{"files", m->disk.files},
          {"allocated_bytes", m->disk.allocated_bytes},
          {"apparent_bytes", m->disk.apparent_bytes},
          {"allocated_bytes_per_event", static_cast<double>(m->disk.allocated_bytes) / events},
          {"apparent_bytes_per_event", static_cast<double>(m->disk.apparent_bytes) / events}}},
        {"open_ms", m->open_ms},
        {"peak_reset_before_open", m->hwm_reset},
        {"memory_before_open", ToJson(m->before_open)},
        {"memory_after_open", ToJson(m->after_open)},
        {"rss_bytes_per_stream", RssPerStream(*m)},
        {"partitions", partitions},
        {"warm_read", ToJson(m->warm)},
        {"warm_block_cache", {{"hits", m->warm_cache.hits}, {"misses", m->warm_cache.misses}}},
        {"memory_after_reads", ToJson(m->after_reads)},
        {"page_cache_drop",
         {{"files_fadvised", m->drop.files},
          {"drop_caches", m->drop.drop_caches},
          {"resident_bytes_after", m->drop.resident_bytes_after}}},
        {"reopen_ms", m->reopen_ms},
        {"memory_after_reopen", ToJson(m->after_reopen)},
        {"page_cache_bytes_after_reopen", m->cached_after_reopen_bytes},
        {"cold_read", ToJson(m->cold)},
        {"cold_block_cache", {{"hits", m->cold_cache.hits}, {"misses", m->cold_cache.misses}}},
        {"page_cache_bytes_after_cold_reads", m->cached_after_cold_reads_bytes}};
  }
  return j;
}

int Main(int argc, char** argv) {
  Settings s;
  CLI::App app{
      "annal_scale_bench: 50M events over 1M streams, then open time, memory, disk and reads "
      "(issue #6)"};
  app.add_option("--dir", s.dir, "The store's directory")->required();
  app.add_option("--phase", s.phase, "generate, measure (an existing store) or all")
      ->check(CLI::IsMember({"generate", "measure", "all"}))
      ->capture_default_str();
  app.add_option("--events", s.events, "Events to write")
      ->check(CLI::Range(uint64_t{1}, uint64_t{10'000'000'000}))
      ->capture_default_str();
  app.add_option("--streams", s.streams, "Streams the events are drawn over")
      ->check(CLI::Range(1u, 100'000'000u))
      ->capture_default_str();
  app.add_option("--zipf", s.zipf_exponent, "Zipf exponent of the streams' popularity (0: uniform)")
      ->check(CLI::Range(0.0, 10.0))
      ->capture_default_str();
  app.add_option("--payload", s.payload, "Payload kind: json (annal-bench's documents) or random bytes")
      ->check(CLI::IsMember({"json", "random"}))
      ->capture_default_str();
  app.add_option("--payload-bytes", s.payload_bytes, "Payload bytes per event")
      ->check(CLI::Range(loadgen::kMinJsonEventBytes,
                         static_cast<uint32_t>(limits::kDefaultMaxPayloadBytes)))
      ->capture_default_str();
  app.add_option("--partitions", s.partitions, "Partitions of a new store")
      ->check(CLI::Range(1u, static_cast<uint32_t>(limits::kMaxPartitions)))
      ->capture_default_str();
  app.add_option("--reads", s.reads, "Streams read per pass (warm, and as many others cold)")
      ->check(CLI::Range(1u, 10'000'000u))
      ->capture_default_str();
  app.add_option("--seed", s.seed, "Seed of names, stream draws, payloads and read sets")
      ->capture_default_str();
  app.add_option("--segment-mb", s.segment_mb, "Segment size of a new store, MiB")->capture_default_str();
  app.add_option("--block-bytes", s.block_bytes, "Options::seal_block_bytes")->capture_default_str();
  app.add_option("--compress-literals", s.compress_literals, "Options::seal_compress_literals")
      ->capture_default_str();
  app.add_option("--cache-mb", s.cache_mb, "Options::block_cache_bytes, MiB")->capture_default_str();
  app.add_option("--in-flight", s.in_flight, "Appends outstanding")
      ->check(CLI::Range(1u, static_cast<uint32_t>(limits::kMaxQueuedAppendsPerPartition)))
      ->capture_default_str();
  app.add_option("--events-per-append", s.events_per_append, "Events per append (one stream each)")
      ->check(CLI::Range(1u, static_cast<uint32_t>(limits::kMaxEventsPerAppend)))
      ->capture_default_str();
  app.add_option("--json-out", s.json_path, "Write the results to this file as a JSON object");
  CLI11_PARSE(app, argc, argv);

  std::optional<GenerateReport> generated;
  std::optional<MeasureReport> measured;
  if (s.phase != "measure") {
    generated.emplace();
    Status st = Generate(s, &*generated);
    if (!st.ok()) {
      std::fprintf(stderr, "annal_scale_bench: generate: %s\n", st.ToString().c_str());
      return 1;
    }
    PrintGenerate(*generated);
    std::fflush(stdout);
  }
  if (s.phase != "generate") {
    measured.emplace();
    Status st = Measure(s, &*measured);
    if (!st.ok()) {
      std::fprintf(stderr, "annal_scale_bench: measure: %s\n", st.ToString().c_str());
      return 1;
    }
    PrintMeasure(*measured);
  }
  if (!s.json_path.empty()) {
    std::ofstream out(s.json_path);
    out << ToJson(s, generated, measured).dump(2) << "\n";
    if (!out) {
      std::fprintf(stderr, "annal_scale_bench: cannot write %s\n", s.json_path.c_str());
      return 1;
    }
  }
  return 0;
}

}  // namespace
}  // namespace annal::bench

int main(int argc, char** argv) { return annal::bench::Main(argc, argv); }
