// LatencyHistogram: a high-dynamic-range, log-linear histogram of latencies
// in nanoseconds, for annal-bench. Recording is O(1) (a few bit operations
// and one increment); percentiles scan the counts, so they are for reports,
// not for the measured path.
//
// Bucket layout. Values are grouped into power-of-two "buckets"; each bucket
// is split into linear "sub-buckets" of equal width. With S sub-buckets
// (S = the next power of two >= 2 * 10^digits) and a unit of U = 2^m ns,
// bucket 0 covers [0, S*U) with S sub-buckets of width U, and every bucket
// k >= 1 covers [S/2 * U*2^k, S * U*2^k) with S/2 sub-buckets of width
// U*2^k: its lower half would repeat bucket k-1, so it is not stored. For the
// defaults (1 µs .. 60 s, 3 digits: S = 2048, U = 1 ns):
//
//   bucket  value range (ns)        sub-buckets x width
//        0  [0,          2048)        2048 x 1 ns
//        1  [2048,       4096)        1024 x 2 ns
//        2  [4096,       8192)        1024 x 4 ns
//      ...
//       25  [2^35,       2^36)        1024 x 2^25 ns (~33.6 ms; 2^36 ns ~ 68.7 s)
//
//   counts_ (one flat vector, bucket after bucket):
//   +-------------------+-----------+-----------+-----+------------+
//   | bucket 0: 2048    | b1: 1024  | b2: 1024  | ... | b25: 1024  |
//   +-------------------+-----------+-----------+-----+------------+
//   index(v) = (bucket << log2(S/2)) + (v >> (m + bucket)), where
//   bucket   = max(0, bit_width(v) - log2(S) - m).
//
// Precision guarantee. The unit is the largest power of two with
// S/2 * U <= lowest_ns (at least 1 ns), so every value v >= lowest_ns lies
// where the sub-bucket width is at most v / (S/2). A reported value (the
// highest value of v's sub-bucket, never below v) therefore exceeds v by
// less than v / (S/2) <= v * 10^-digits. Values below lowest_ns are still
// counted, in bucket 0, but only to within U - 1 ns. Values above
// highest_ns are clamped to highest_ns and counted in clamped().
//
// (The unit is deliberately not 2^floor(log2(lowest_ns)), the usual
// "lowest discernible value" choice: with lowest_ns = 1 µs that unit is
// 512 ns, and a 1.03 µs latency would be reported as 1.53 µs; the 10^-3
// bound would only hold from ~0.5 ms up.)
//
// Memory. (buckets + 1) * S/2 counters of 8 bytes. For the defaults that is
// 27 * 1024 * 8 = 221,184 bytes (216 KiB), plus 112 bytes of object; see
// memory_bytes(). 3 digits over 1 µs .. 60 s need at least ~17,900 counters
// with any bucketing (ln(6e7) / ln(1.001)), so ~140 KB is a floor for 8-byte
// counters; log-linear buckets spend ~50% more for O(1) indexing.
//
// Thread-safety: none. Use one histogram per thread and Merge() them into
// one when the run ends (or once per reporting interval).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace annal::loadgen {

class LatencyHistogram {
 public:
  // One stored sub-bucket with its count; the bounds are inclusive.
  struct Bucket {
    uint64_t lowest_ns = 0;
    uint64_t highest_ns = 0;
    uint64_t count = 0;
    friend bool operator==(const Bucket&, const Bucket&) = default;
  };

  // Tracks values from lowest_ns to highest_ns with `significant_digits`
  // decimal digits of precision. Defaults: 1 µs .. 60 s, 3 digits (what
  // annal-bench uses).
  // REQUIRES: lowest_ns >= 1, highest_ns >= 2 * lowest_ns,
  //           1 <= significant_digits <= 5.
  explicit LatencyHistogram(uint64_t lowest_ns = 1'000, uint64_t highest_ns = 60'000'000'000,
                            int significant_digits = 3);

  // Values above highest_ns are clamped to highest_ns and counted in
  // clamped(); values below lowest_ns are counted in bucket 0.
  void Record(uint64_t value_ns) { RecordN(value_ns, 1); }
  // Same as `count` calls of Record(value_ns).
  // REQUIRES: the total count stays below 2^64.
  void RecordN(uint64_t value_ns, uint64_t count);

  // Adds every value recorded in `other`.
  // REQUIRES: other has the same lowest_ns, highest_ns and significant_digits.
  void Merge(const LatencyHistogram& other);

  // Forgets every recorded value; the configuration stays.
  void Reset();

  uint64_t count() const { return total_count_; }
  // The exact smallest and largest recorded values (after clamping); 0 when
  // empty.
  uint64_t min_ns() const { return total_count_ == 0 ? 0 : min_ns_; }
  uint64_t max_ns() const { return max_ns_; }
  // The exact mean of the recorded values (after clamping); 0 when empty.
  double mean_ns() const;
  // How many recorded values were above highest_ns.
  uint64_t clamped() const { return clamped_; }

  // The value at percentile p in [0, 100]: the smallest recorded-bucket
  // value v such that at least max(1, ceil(p/100 * count)) values are <= v,
  // reported as the highest value equivalent to that bucket (so a percentile
  // is never under-reported), but never above max_ns(). p = 100 gives
  // max_ns(); an empty histogram gives 0.
  // REQUIRES: 0 <= p <= 100.
  uint64_t ValueAtPercentile(double p) const;

  // True when a and b fall in the same sub-bucket (after clamping).
  bool Equivalent(uint64_t a_ns, uint64_t b_ns) const {
    return IndexOf(Clamp(a_ns)) == IndexOf(Clamp(b_ns));
  }
  // The bounds of the sub-bucket that value_ns is recorded in (after
  // clamping).
  uint64_t LowestEquivalent(uint64_t value_ns) const { return LowestAt(IndexOf(Clamp(value_ns))); }
  uint64_t HighestEquivalent(uint64_t value_ns) const {
    return HighestAt(IndexOf(Clamp(value_ns)));
  }

  // Percentile spectrum for plots: rows (percentile, value_ns) at
  // percentiles 100 * (1 - 2^(-j / steps_per_half)) for j = 0, 1, 2, ...
  // (0, 50, 75, 87.5, ... with steps_per_half = 1), so `steps_per_half` rows
  // per halving of the distance to 100, while a row's rank is below count();
  // then a last row (100, max_ns()). Percentiles strictly increase and
  // values never decrease. Plot with x = 1 / (1 - p/100) on a log axis; the
  // last row's x is infinite, so draw it as the end of the curve. Empty
  // histogram: no rows.
  // REQUIRES: 1 <= steps_per_half <= 100.
  std::vector<std::pair<double, uint64_t>> Spectrum(int steps_per_half = 5) const;

  // Every sub-bucket with a non-zero count, in increasing value order.
  std::vector<Bucket> RecordedBuckets() const;

  uint64_t lowest_ns() const { return lowest_ns_; }
  uint64_t highest_ns() const { return highest_ns_; }
  int significant_digits() const { return significant_digits_; }
  // Bytes held by this histogram: the object and its counters.
  size_t memory_bytes() const { return sizeof(*this) + counts_.size() * sizeof(uint64_t); }

  // Same configuration and the same recorded values, bucket by bucket, with
  // the same min, max, sum and clamped count.
  friend bool operator==(const LatencyHistogram&, const LatencyHistogram&) = default;

 private:
  uint64_t Clamp(uint64_t value_ns) const {
    return value_ns > highest_ns_ ? highest_ns_ : value_ns;
  }
  size_t IndexOf(uint64_t value_ns) const;
  uint64_t LowestAt(size_t index) const;
  uint64_t HighestAt(size_t index) const;
  // The rank (1-based) that percentile p asks for, in [1, count()].
  uint64_t RankAt(double p) const;
  uint64_t ValueAtRank(uint64_t rank) const;

  // Configuration.
  uint64_t lowest_ns_;
  uint64_t highest_ns_;
  int significant_digits_;
  int unit_magnitude_;     // m: the unit is 2^m ns
  int sub_bucket_bits_;    // log2(S)
  int bucket0_bits_;       // log2(S) + m: bucket 0 holds values of at most this many bits
  uint64_t bucket0_mask_;  // 2^bucket0_bits_ - 1

  // Recorded values.
  std::vector<uint64_t> counts_;
  uint64_t total_count_ = 0;
  uint64_t clamped_ = 0;
  uint64_t min_ns_ = UINT64_MAX;  // UINT64_MAX when empty, so the first value wins
  uint64_t max_ns_ = 0;
  // Exact sum for mean_ns(): count < 2^64 and values < 2^64, so it cannot
  // overflow 128 bits, where a uint64_t sum could (3e8 values near 60 s).
  unsigned __int128 sum_ns_ = 0;
};

// Formats a nanosecond latency for humans with three significant digits and
// without trailing zeros: "153 µs", "1.56 ms", "2.3 s", "999 ns". Values of
// 1000 s and more are whole seconds ("3600 s").
std::string FormatLatency(uint64_t ns);

}  // namespace annal::loadgen
