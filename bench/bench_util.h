// Small helpers shared by the engine benchmarks: settings read from the
// environment, the scratch directory, latency percentiles and payloads.
//
// Thread-safety: free functions on values; ScratchDir is used by the thread
// that runs the benchmark.
#pragma once

#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include "annal/assert.h"

namespace annal::bench {

using Clock = std::chrono::steady_clock;

inline int64_t ElapsedNs(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(to - from).count();
}

// A positive number from the environment, or `fallback` when the variable is
// unset, empty or not a positive number.
inline double EnvPositive(const char* name, double fallback) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return fallback;
  char* end = nullptr;
  double value = std::strtod(text, &end);
  return (*end == '\0' && value > 0) ? value : fallback;
}

// How long the append benchmarks run: ANNAL_BENCH_SECONDS, default 3.
inline std::chrono::nanoseconds AppendPhaseDuration() {
  double seconds = EnvPositive("ANNAL_BENCH_SECONDS", 3.0);
  return std::chrono::nanoseconds(static_cast<int64_t>(seconds * 1e9));
}

// The directory the benchmarks write under: ANNAL_BENCH_DIR, default
// "./annal-bench-data". Put it on the filesystem you want to measure.
inline std::filesystem::path BenchRoot() {
  const char* dir = std::getenv("ANNAL_BENCH_DIR");
  return (dir != nullptr && *dir != '\0') ? dir : "./annal-bench-data";
}

// Flushes the filesystem holding `dir` (syncfs). Deleting large files leaves
// work behind (freed extents, and discards on a filesystem mounted with
// -o discard) that the next journal commit performs; without this, the next
// benchmark's first fdatasyncs would pay for the previous one's cleanup.
inline void SettleFilesystem(const std::filesystem::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::syncfs(fd);
  ::close(fd);
}

// A directory below BenchRoot() that is empty while this object lives and
// removed afterwards. Only this subdirectory is ever removed recursively, so
// pointing ANNAL_BENCH_DIR at a directory with other files in it is safe;
// the root itself is removed only when it is left empty.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& name) : path_(BenchRoot() / name) {
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
    SettleFilesystem(path_);
  }
  ~ScratchDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
    SettleFilesystem(BenchRoot());
    std::filesystem::remove(BenchRoot(), ignored);  // fails, harmlessly, when not empty
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Drops the page-cache copy of every file under `dir`, so that a following
// read comes from the device. Works without privileges because the files'
// pages are clean (everything the engine wrote was fdatasync'ed).
inline void EvictFromPageCache(const std::filesystem::path& dir) {
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    int fd = ::open(entry.path().c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
}

struct LatencySummary {
  double p50_us = 0;
  double p99_us = 0;
  double p999_us = 0;
  double max_us = 0;
};

// Nearest-rank percentiles of `latencies_ns` (taken by value: it is sorted).
inline LatencySummary Summarize(std::vector<int64_t> latencies_ns) {
  ANNAL_ASSERT(!latencies_ns.empty());
  std::sort(latencies_ns.begin(), latencies_ns.end());
  auto at = [&](double quantile) {
    size_t rank = static_cast<size_t>(quantile * static_cast<double>(latencies_ns.size()));
    size_t index = std::min(rank, latencies_ns.size() - 1);
    return static_cast<double>(latencies_ns[index]) / 1e3;
  };
  return {.p50_us = at(0.50),
          .p99_us = at(0.99),
          .p999_us = at(0.999),
          .max_us = static_cast<double>(latencies_ns.back()) / 1e3};
}

inline void ReportLatency(benchmark::State& state, const LatencySummary& s) {
  state.counters["p50_us"] = s.p50_us;
  state.counters["p99_us"] = s.p99_us;
  state.counters["p999_us"] = s.p999_us;
  state.counters["max_us"] = s.max_us;
}

// A JSON object of exactly `bytes` bytes, varied by `seed`, shaped like a
// typical domain event: a few fields, then a padded free-text note.
inline std::string JsonPayload(size_t bytes, uint64_t seed) {
  std::string json = R"({"order_id":"ord-)" + std::to_string(seed) + R"(","customer":"cust-)" +
                     std::to_string(seed * 7919 % 100000) + R"(","amount_cents":)" +
                     std::to_string(seed * 31 % 1000000) + R"(,"currency":"EUR","note":")";
  const std::string close = R"("})";
  ANNAL_ASSERT(json.size() + close.size() <= bytes);
  static constexpr char kLetters[] = "abcdefghijklmnopqrstuvwxyz ";
  for (size_t i = 0; json.size() + close.size() < bytes; ++i) {
    json.push_back(kLetters[(seed + i * 13) % (sizeof(kLetters) - 1)]);
  }
  json += close;
  ANNAL_ASSERT(json.size() == bytes);
  return json;
}

}  // namespace annal::bench
