#include "histogram.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <iterator>

#include "annal/assert.h"

namespace annal::loadgen {
namespace {

constexpr int kMinDigits = 1;
constexpr int kMaxDigits = 5;
constexpr int kMaxStepsPerHalf = 100;

uint64_t PowerOfTen(int exponent) {
  uint64_t result = 1;
  for (int i = 0; i < exponent; ++i) result *= 10;
  return result;
}

// std::bit_width returns int in C++20 as published but the argument's type
// in libstdc++ 12, where subtracting from it would wrap around.
int BitWidth(uint64_t value) { return static_cast<int>(std::bit_width(value)); }

}  // namespace

LatencyHistogram::LatencyHistogram(uint64_t lowest_ns, uint64_t highest_ns, int significant_digits)
    : lowest_ns_(lowest_ns), highest_ns_(highest_ns), significant_digits_(significant_digits) {
  ANNAL_ASSERT(lowest_ns >= 1);
  ANNAL_ASSERT(highest_ns / 2 >= lowest_ns);
  ANNAL_ASSERT(significant_digits >= kMinDigits && significant_digits <= kMaxDigits);

  // S/2 >= 10^digits is what makes a sub-bucket at most 10^-digits of the
  // values in it wide (see the header).
  const uint64_t sub_buckets = std::bit_ceil(2 * PowerOfTen(significant_digits));
  sub_bucket_bits_ = std::countr_zero(sub_buckets);
  // The largest unit 2^m with S/2 * 2^m <= lowest_ns puts lowest_ns at or
  // above the middle of bucket 0, where the guarantee starts to hold.
  unit_magnitude_ = std::max(0, BitWidth(lowest_ns) - sub_bucket_bits_);
  bucket0_bits_ = sub_bucket_bits_ + unit_magnitude_;
  // highest_ns >= 2 * lowest_ns keeps lowest_ns below 2^63, so this shift is defined.
  ANNAL_ASSERT(bucket0_bits_ < 64);
  bucket0_mask_ = (uint64_t{1} << bucket0_bits_) - 1;

  // Bucket k >= 1 holds the values of exactly bucket0_bits_ + k bits.
  const int buckets = std::max(1, BitWidth(highest_ns) - bucket0_bits_ + 1);
  counts_.assign(static_cast<size_t>(buckets + 1) << (sub_bucket_bits_ - 1), 0);
  ANNAL_ASSERT(IndexOf(highest_ns) < counts_.size());
  ANNAL_ASSERT(HighestAt(counts_.size() - 1) >= highest_ns);
}

size_t LatencyHistogram::IndexOf(uint64_t value_ns) const {
  // OR-ing in the mask makes every value of bucket 0 look bucket0_bits_ wide,
  // so the bucket comes out as 0 for them without a branch.
  const int bucket = BitWidth(value_ns | bucket0_mask_) - bucket0_bits_;
  const uint64_t sub_bucket = value_ns >> (unit_magnitude_ + bucket);
  return (static_cast<size_t>(bucket) << (sub_bucket_bits_ - 1)) + sub_bucket;
}

uint64_t LatencyHistogram::LowestAt(size_t index) const {
  // Inverse of IndexOf: in bucket k >= 1 the sub-bucket is in [S/2, S), so
  // index >> log2(S/2) is k + 1; in bucket 0 it is 0 or 1.
  const int bucket = std::max(0, static_cast<int>(index >> (sub_bucket_bits_ - 1)) - 1);
  const uint64_t sub_bucket = index - (static_cast<size_t>(bucket) << (sub_bucket_bits_ - 1));
  return sub_bucket << (unit_magnitude_ + bucket);
}

uint64_t LatencyHistogram::HighestAt(size_t index) const {
  const int bucket = std::max(0, static_cast<int>(index >> (sub_bucket_bits_ - 1)) - 1);
  const uint64_t width = uint64_t{1} << (unit_magnitude_ + bucket);
  // lowest + (width - 1), not (lowest + width) - 1: the top bucket may end at 2^64.
  return LowestAt(index) + (width - 1);
}

void LatencyHistogram::RecordN(uint64_t value_ns, uint64_t count) {
  if (count == 0) return;
  ANNAL_ASSERT_MSG(total_count_ <= UINT64_MAX - count, "histogram count overflows 64 bits");
  if (value_ns > highest_ns_) {
    value_ns = highest_ns_;
    clamped_ += count;
  }
  const size_t index = IndexOf(value_ns);
  ANNAL_ASSERT(index < counts_.size());
  counts_[index] += count;
  total_count_ += count;
  sum_ns_ += static_cast<unsigned __int128>(value_ns) * count;
  min_ns_ = std::min(min_ns_, value_ns);
  max_ns_ = std::max(max_ns_, value_ns);
}

void LatencyHistogram::Merge(const LatencyHistogram& other) {
  ANNAL_ASSERT_MSG(lowest_ns_ == other.lowest_ns_ && highest_ns_ == other.highest_ns_ &&
                       significant_digits_ == other.significant_digits_,
                   "merging histograms of different configurations");
  ANNAL_ASSERT(counts_.size() == other.counts_.size());
  ANNAL_ASSERT_MSG(total_count_ <= UINT64_MAX - other.total_count_,
                   "histogram count overflows 64 bits");
  if (other.total_count_ == 0) return;
  for (size_t i = 0; i < counts_.size(); ++i) counts_[i] += other.counts_[i];
  total_count_ += other.total_count_;
  clamped_ += other.clamped_;
  sum_ns_ += other.sum_ns_;
  min_ns_ = std::min(min_ns_, other.min_ns_);
  max_ns_ = std::max(max_ns_, other.max_ns_);
}

void LatencyHistogram::Reset() {
  std::fill(counts_.begin(), counts_.end(), 0);
  total_count_ = 0;
  clamped_ = 0;
  min_ns_ = UINT64_MAX;
  max_ns_ = 0;
  sum_ns_ = 0;
}

double LatencyHistogram::mean_ns() const {
  if (total_count_ == 0) return 0;
  return static_cast<double>(sum_ns_) / static_cast<double>(total_count_);
}

uint64_t LatencyHistogram::RankAt(double p) const {
  double rank = p / 100.0 * static_cast<double>(total_count_);
  // 99.9 and 99.99 have no exact binary form, so p/100 * count can land a
  // hair above the integer it means (199800.00000000003), and ceil would
  // then ask for one value too many. Snap such near-integers first.
  const double nearest = std::round(rank);
  if (std::fabs(rank - nearest) <= 1e-9 * std::max(1.0, rank)) rank = nearest;
  const double ceiled = std::ceil(rank);
  if (ceiled < 1.0) return 1;
  if (ceiled >= static_cast<double>(total_count_)) return total_count_;
  return static_cast<uint64_t>(ceiled);
}

uint64_t LatencyHistogram::ValueAtRank(uint64_t rank) const {
  ANNAL_ASSERT(rank >= 1 && rank <= total_count_);
  uint64_t seen = 0;
  for (size_t i = 0; i < counts_.size(); ++i) {
    seen += counts_[i];
    if (seen >= rank) return std::min(HighestAt(i), max_ns_);
  }
  ANNAL_ASSERT_MSG(false, "bucket counts add up to less than count()");
  return max_ns_;
}

uint64_t LatencyHistogram::ValueAtPercentile(double p) const {
  ANNAL_ASSERT(p >= 0.0 && p <= 100.0);  // also refuses NaN
  if (total_count_ == 0) return 0;
  return ValueAtRank(RankAt(p));
}

std::vector<std::pair<double, uint64_t>> LatencyHistogram::Spectrum(int steps_per_half) const {
  ANNAL_ASSERT(steps_per_half >= 1 && steps_per_half <= kMaxStepsPerHalf);
  std::vector<std::pair<double, uint64_t>> rows;
  if (total_count_ == 0) return rows;
  // Past 64 halvings the distance to 100 is below 1 / 2^64 of count(), so
  // the rank has reached count() long before; the bound only caps the loop.
  const int max_rows = 64 * steps_per_half;
  for (int j = 0; j < max_rows; ++j) {
    const double p = 100.0 * (1.0 - std::exp2(-static_cast<double>(j) / steps_per_half));
    if (p >= 100.0 || (!rows.empty() && p <= rows.back().first)) break;
    const uint64_t rank = RankAt(p);
    if (j > 0 && rank >= total_count_) break;
    rows.emplace_back(p, ValueAtRank(rank));
  }
  rows.emplace_back(100.0, max_ns_);
  return rows;
}

std::vector<LatencyHistogram::Bucket> LatencyHistogram::RecordedBuckets() const {
  std::vector<Bucket> buckets;
  for (size_t i = 0; i < counts_.size(); ++i) {
    if (counts_[i] != 0) buckets.push_back(Bucket{LowestAt(i), HighestAt(i), counts_[i]});
  }
  return buckets;
}

std::string FormatLatency(uint64_t ns) {
  struct Unit {
    double ns_per_unit;
    const char* name;
  };
  static constexpr Unit kUnits[] = {{1, "ns"}, {1e3, "µs"}, {1e6, "ms"}, {1e9, "s"}};
  constexpr int kLast = static_cast<int>(std::size(kUnits)) - 1;
  const double value_ns = static_cast<double>(ns);
  int unit = 0;
  while (unit < kLast && value_ns >= kUnits[unit + 1].ns_per_unit) ++unit;

  double scaled = 0;
  int decimals = 0;
  // Rounding to three digits can carry into the next unit (999.7 µs is
  // "1000 µs"), so round first and move up a unit when it does.
  for (;;) {
    scaled = value_ns / kUnits[unit].ns_per_unit;
    decimals = scaled < 10 ? 2 : scaled < 100 ? 1 : 0;
    const double scale = decimals == 2 ? 100 : decimals == 1 ? 10 : 1;
    scaled = std::round(scaled * scale) / scale;
    if (scaled < 1000 || unit == kLast) break;
    ++unit;
  }
  char text[64];
  std::snprintf(text, sizeof(text), "%.*f", decimals, scaled);
  std::string out = text;
  if (out.find('.') != std::string::npos) {
    while (out.back() == '0') out.pop_back();
    if (out.back() == '.') out.pop_back();
  }
  return out + " " + kUnits[unit].name;
}

}  // namespace annal::loadgen
