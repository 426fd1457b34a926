#include "annal/stats.h"

#include <algorithm>

namespace annal {

void Histogram::Observe(double value) {
  size_t i = static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin());
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_micro_.fetch_add(static_cast<uint64_t>(value * 1e6), std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::Take() const {
  Snapshot s;
  s.upper_bounds = bounds_;
  for (size_t i = 0; i < counts_.size(); ++i) s.counts[i] = counts_[i].load(std::memory_order_relaxed);
  s.count = count_.load(std::memory_order_relaxed);
  s.sum = static_cast<double>(sum_micro_.load(std::memory_order_relaxed)) / 1e6;
  return s;
}

const std::array<double, Histogram::kBuckets>& LatencyBoundsSeconds() {
  static const std::array<double, Histogram::kBuckets> kBounds = {
      50e-6, 100e-6, 150e-6, 200e-6, 300e-6, 500e-6, 750e-6, 1e-3,
      2e-3,  3e-3,   5e-3,   10e-3,  50e-3,  100e-3, 1.0,    5.0};
  return kBounds;
}

const std::array<double, Histogram::kBuckets>& SizeBounds() {
  static const std::array<double, Histogram::kBuckets> kBounds = {
      1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768};
  return kBounds;
}

}  // namespace annal
