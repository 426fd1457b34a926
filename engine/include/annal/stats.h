// Counters and histograms the engine keeps for monitoring (annald exports
// them as Prometheus metrics). Cheap enough for the write path: relaxed
// atomics, fixed buckets.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <vector>

namespace annal {

// A histogram over fixed upper bounds. Observe is safe from any thread;
// Snapshot gives a consistent-enough copy for reporting.
class Histogram {
 public:
  static constexpr size_t kBuckets = 16;
  struct Snapshot {
    std::array<double, kBuckets> upper_bounds{};
    std::array<uint64_t, kBuckets + 1> counts{};  // last: above every bound
    uint64_t count = 0;
    double sum = 0;
  };
  explicit Histogram(const std::array<double, kBuckets>& upper_bounds) : bounds_(upper_bounds) {}
  void Observe(double value);
  Snapshot Take() const;

 private:
  std::array<double, kBuckets> bounds_;
  std::array<std::atomic<uint64_t>, kBuckets + 1> counts_{};
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sum_micro_{0};  // sum * 1e6, as an integer
};

// Bounds for latencies in seconds (50 us .. 5 s) and for sizes (1 .. 32768).
const std::array<double, Histogram::kBuckets>& LatencyBoundsSeconds();
const std::array<double, Histogram::kBuckets>& SizeBounds();

struct PartitionStats {
  uint32_t partition = 0;
  uint64_t batches = 0;
  uint64_t events = 0;
  uint64_t appends = 0;
  uint64_t bytes_written = 0;
  uint64_t streams = 0;
  uint64_t segments = 0;
  uint64_t bytes_on_disk = 0;
  // Sealed (zstd-compressed) segments: how many, the log bytes they hold
  // and the bytes their files take. raw / stored is the compression ratio.
  uint64_t sealed_segments = 0;
  uint64_t sealed_raw_bytes = 0;
  uint64_t sealed_stored_bytes = 0;
  // Bytes of memory the stream index takes (table and its side structures).
  uint64_t index_memory_bytes = 0;
  // Reads of unsealed segments served by the tail cache
  // (Options::tail_cache_bytes), and those that read the file instead.
  uint64_t tail_cache_hits = 0;
  uint64_t tail_cache_misses = 0;
  // Memory of the tail cache's rings: one per unsealed segment that has
  // one, at most two per partition.
  uint64_t tail_cache_bytes = 0;
  bool fail_stopped = false;
  Histogram::Snapshot sync_seconds;   // write + sync of one batch
  Histogram::Snapshot batch_events;   // events per batch
};

struct StoreStats {
  uint64_t durable_head = 0;
  // The shared cache of decompressed blocks (Options::block_cache_bytes).
  uint64_t block_cache_bytes = 0;
  uint64_t block_cache_hits = 0;
  uint64_t block_cache_misses = 0;
  std::vector<PartitionStats> partitions;
};

}  // namespace annal
