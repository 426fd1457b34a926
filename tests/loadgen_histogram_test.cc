// LatencyHistogram (annal-bench's latency histogram): percentiles against
// exactly sorted data, the precision guarantee at every sub-bucket, merging,
// clamping, the percentile spectrum, and FormatLatency.
#include "histogram.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

namespace annal::loadgen {
namespace {

constexpr uint64_t kMicrosecond = 1'000;
constexpr uint64_t kMillisecond = 1'000'000;
constexpr uint64_t kSecond = 1'000'000'000;
// The default histogram keeps 3 significant digits.
constexpr double kRelativePrecision = 1e-3;

uint64_t PowerOfTen(int exponent) {
  uint64_t result = 1;
  for (int i = 0; i < exponent; ++i) result *= 10;
  return result;
}

// Uniform in (0, 1], built from the engine's bits so that the data is the
// same with every standard library (the distributions are not portable).
double Uniform01(std::mt19937_64& rng) {
  return (static_cast<double>(rng() >> 11) + 1.0) * 0x1p-53;
}

std::vector<uint64_t> LogUniform(size_t n, uint64_t lowest_ns, uint64_t highest_ns, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const double log_lo = std::log(static_cast<double>(lowest_ns));
  const double log_hi = std::log(static_cast<double>(highest_ns));
  std::vector<uint64_t> values(n);
  for (auto& v : values) {
    const double x = std::exp(log_lo + Uniform01(rng) * (log_hi - log_lo));
    v = std::clamp<uint64_t>(std::llround(x), lowest_ns, highest_ns);
  }
  return values;
}

// Pareto with tail index `alpha`: P(X > x) = (scale / x)^alpha. With alpha
// near 1 a few values are 10^4 times the typical one, as with stalls.
std::vector<uint64_t> Pareto(size_t n, uint64_t scale_ns, double alpha, uint64_t cap_ns,
                             uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint64_t> values(n);
  for (auto& v : values) {
    const double x = static_cast<double>(scale_ns) / std::pow(Uniform01(rng), 1.0 / alpha);
    v = x >= static_cast<double>(cap_ns) ? cap_ns : static_cast<uint64_t>(std::llround(x));
  }
  return values;
}

// Percentiles with their value in millionths, so the exact rank is integer
// arithmetic and does not share the histogram's floating-point path.
struct Percentile {
  double p;
  uint64_t millionths;
};
constexpr Percentile kPercentiles[] = {
    {0, 0},          {1, 10'000},      {10, 100'000},    {25, 250'000},
    {50, 500'000},   {75, 750'000},    {90, 900'000},    {99, 990'000},
    {99.9, 999'000}, {99.99, 999'900}, {100, 1'000'000},
};

// sorted[rank - 1] with rank = max(1, ceil(p/100 * n)).
uint64_t ExactPercentile(const std::vector<uint64_t>& sorted, uint64_t millionths) {
  const uint64_t n = sorted.size();
  const uint64_t rank = std::max<uint64_t>(1, (millionths * n + 999'999) / 1'000'000);
  return sorted[rank - 1];
}

LatencyHistogram HistogramOf(const std::vector<uint64_t>& values) {
  LatencyHistogram h;
  for (uint64_t v : values) h.Record(v);
  return h;
}

void ExpectPercentilesWithinPrecision(std::vector<uint64_t> values) {
  const LatencyHistogram h = HistogramOf(values);
  std::sort(values.begin(), values.end());
  for (const auto& [p, millionths] : kPercentiles) {
    SCOPED_TRACE(testing::Message() << "p" << p);
    const uint64_t exact = ExactPercentile(values, millionths);
    // The guarantee covers values >= lowest_ns; the data is made that way.
    ASSERT_GE(exact, h.lowest_ns());
    const uint64_t reported = h.ValueAtPercentile(p);
    // Never under-reported: the value is the top of exact's sub-bucket, or max.
    EXPECT_GE(reported, exact);
    // Over by at most 10^-3 of the true value: the 3-digit guarantee as the
    // header states it, with no slack added.
    EXPECT_LE(static_cast<double>(reported), static_cast<double>(exact) * (1 + kRelativePrecision))
        << "exact " << exact;
  }
}

// Compares everything a histogram reports, so that a failure says what differs.
void ExpectSameHistogram(const LatencyHistogram& got, const LatencyHistogram& want) {
  EXPECT_EQ(got.count(), want.count());
  EXPECT_EQ(got.min_ns(), want.min_ns());
  EXPECT_EQ(got.max_ns(), want.max_ns());
  EXPECT_EQ(got.mean_ns(), want.mean_ns());
  EXPECT_EQ(got.clamped(), want.clamped());
  const auto got_buckets = got.RecordedBuckets();
  const auto want_buckets = want.RecordedBuckets();
  ASSERT_EQ(got_buckets.size(), want_buckets.size());
  for (size_t i = 0; i < got_buckets.size(); ++i) {
    EXPECT_EQ(got_buckets[i].lowest_ns, want_buckets[i].lowest_ns) << "bucket " << i;
    EXPECT_EQ(got_buckets[i].count, want_buckets[i].count) << "bucket " << i;
  }
  for (const auto& [p, millionths] : kPercentiles) {
    EXPECT_EQ(got.ValueAtPercentile(p), want.ValueAtPercentile(p)) << "p" << p;
  }
  EXPECT_TRUE(got == want);
}

TEST(LoadgenHistogramTest, PercentilesOfLogUniformDataAreWithinPrecision) {
  ExpectPercentilesWithinPrecision(LogUniform(200'000, kMicrosecond, 10 * kSecond, /*seed=*/42));
}

TEST(LoadgenHistogramTest, PercentilesOfHeavyTailedDataAreWithinPrecision) {
  auto values = Pareto(200'000, 50 * kMicrosecond, /*alpha=*/1.1, 60 * kSecond, /*seed=*/7);
  // A tail four decades above the typical value, or the test is not heavy-tailed.
  ASSERT_GT(*std::max_element(values.begin(), values.end()), 500 * kMillisecond);
  ExpectPercentilesWithinPrecision(std::move(values));
}

// Walks every sub-bucket from lowest_ns to highest_ns for several
// configurations; the worst case is a value at the bottom of its sub-bucket.
// 99.9 / 100 * 1000 is 999.0000000000001 in doubles; a plain ceil would
// ask for rank 1000 and report the maximum as p99.9.
TEST(LoadgenHistogramTest, DecimalPercentilesAskForTheExactRank) {
  LatencyHistogram h;
  for (uint64_t i = 1; i <= 1'000; ++i) h.Record(i * kMillisecond);
  EXPECT_EQ(h.ValueAtPercentile(99.9), h.HighestEquivalent(999 * kMillisecond));
  EXPECT_LT(h.ValueAtPercentile(99.9), 1'000 * kMillisecond);
  EXPECT_EQ(h.ValueAtPercentile(1.1), h.HighestEquivalent(11 * kMillisecond));
  EXPECT_EQ(h.ValueAtPercentile(57.7), h.HighestEquivalent(577 * kMillisecond));
  // Just above an exact rank asks for the next one.
  EXPECT_EQ(h.ValueAtPercentile(57.71), h.HighestEquivalent(578 * kMillisecond));
}

TEST(LoadgenHistogramTest, EverySubBucketAboveLowestIsWithinRelativePrecision) {
  struct Config {
    uint64_t lowest_ns, highest_ns;
    int digits;
  };
  const Config configs[] = {
      {1'000, 60 * kSecond, 3}, {1, kMillisecond, 2},           {kMillisecond, 1'000 * kSecond, 3},
      {12'345, kSecond, 1},     {1'000, 100 * kMillisecond, 5},
  };
  for (const Config& c : configs) {
    SCOPED_TRACE(testing::Message() << c.lowest_ns << ".." << c.highest_ns << " ns, " << c.digits);
    const LatencyHistogram h(c.lowest_ns, c.highest_ns, c.digits);
    const uint64_t scale = PowerOfTen(c.digits);
    uint64_t v = c.lowest_ns;
    int failures = 0;
    while (v <= c.highest_ns && failures < 5) {
      const uint64_t lo = h.LowestEquivalent(v);
      const uint64_t hi = h.HighestEquivalent(v);
      const bool ok = lo <= v && v <= hi && (hi - v) * scale <= v && h.Equivalent(v, hi);
      if (!ok) {
        ++failures;
        ADD_FAILURE() << "value " << v << " in [" << lo << ", " << hi << "]";
      }
      if (hi >= c.highest_ns) break;
      // Sub-buckets tile the range: the next one starts right after this one.
      EXPECT_EQ(h.LowestEquivalent(hi + 1), hi + 1);
      EXPECT_FALSE(h.Equivalent(hi, hi + 1));
      v = hi + 1;
    }
  }
}

TEST(LoadgenHistogramTest, CountMinMaxAndMeanAreExact) {
  const auto values = LogUniform(200'000, kMicrosecond, 10 * kSecond, /*seed=*/3);
  const LatencyHistogram h = HistogramOf(values);
  uint64_t sum = 0;  // at most 2e15: fits
  for (uint64_t v : values) sum += v;
  EXPECT_EQ(h.count(), values.size());
  EXPECT_EQ(h.min_ns(), *std::min_element(values.begin(), values.end()));
  EXPECT_EQ(h.max_ns(), *std::max_element(values.begin(), values.end()));
  EXPECT_DOUBLE_EQ(h.mean_ns(), static_cast<double>(sum) / static_cast<double>(values.size()));
  EXPECT_EQ(h.clamped(), 0u);
}

TEST(LoadgenHistogramTest, MergedHalvesEqualHistogramOfAllValues) {
  const auto values = Pareto(100'000, 20 * kMicrosecond, 1.3, 60 * kSecond, /*seed=*/11);
  const std::vector<uint64_t> first(values.begin(), values.begin() + 50'000);
  const std::vector<uint64_t> second(values.begin() + 50'000, values.end());
  LatencyHistogram merged = HistogramOf(first);
  merged.Merge(HistogramOf(second));
  ExpectSameHistogram(merged, HistogramOf(values));
}

TEST(LoadgenHistogramTest, MergeIntoEmptyCopiesAndMergeOfEmptyChangesNothing) {
  LatencyHistogram all = HistogramOf(LogUniform(10'000, kMicrosecond, kSecond, /*seed=*/5));
  all.Record(100 * kSecond);  // clamped: the clamped count must travel too
  LatencyHistogram empty;
  empty.Merge(all);
  ExpectSameHistogram(empty, all);

  const LatencyHistogram before = all;
  all.Merge(LatencyHistogram());
  ExpectSameHistogram(all, before);
}

TEST(LoadgenHistogramTest, MergingDifferentConfigurationsAborts) {
  LatencyHistogram a;
  const LatencyHistogram b(kMicrosecond, 60 * kSecond, 2);
  EXPECT_DEATH(a.Merge(b), "different configurations");
}

TEST(LoadgenHistogramTest, PercentileOutsideZeroToHundredAborts) {
  LatencyHistogram h;
  h.Record(kMillisecond);
  EXPECT_DEATH(h.ValueAtPercentile(100.5), "p <= 100");
  EXPECT_DEATH(h.ValueAtPercentile(-1), "p >= 0");
}

TEST(LoadgenHistogramTest, ValuesAboveHighestAreClampedAndCounted) {
  LatencyHistogram h;  // highest: 60 s
  h.Record(5 * kSecond);
  h.Record(60 * kSecond + 1);
  h.Record(UINT64_MAX);
  EXPECT_EQ(h.count(), 3u);
  EXPECT_EQ(h.clamped(), 2u);
  EXPECT_EQ(h.max_ns(), 60 * kSecond);
  EXPECT_EQ(h.ValueAtPercentile(100), 60 * kSecond);
  EXPECT_EQ(h.ValueAtPercentile(50), 60 * kSecond);
  EXPECT_DOUBLE_EQ(h.mean_ns(), (5.0 + 60 + 60) * kSecond / 3);
  EXPECT_TRUE(h.Equivalent(60 * kSecond + 1, UINT64_MAX));
}

TEST(LoadgenHistogramTest, ValuesBelowLowestAreCountedWithinOneUnit) {
  // lowest 1 ms: the unit is 512 ns (1024 * 512 ns <= 1 ms < 1024 * 1024 ns).
  LatencyHistogram h(kMillisecond, 10 * kSecond, 3);
  h.Record(0);
  h.Record(300);
  h.Record(511);
  h.Record(kMillisecond - 1);
  EXPECT_EQ(h.count(), 4u);
  EXPECT_EQ(h.min_ns(), 0u);
  EXPECT_TRUE(h.Equivalent(0, 511));
  EXPECT_FALSE(h.Equivalent(511, 512));
  EXPECT_EQ(h.ValueAtPercentile(0), 511u);
  EXPECT_EQ(h.ValueAtPercentile(75), 511u);
  EXPECT_EQ(h.ValueAtPercentile(100), kMillisecond - 1);
  for (uint64_t v : {uint64_t{0}, uint64_t{1}, uint64_t{1000}, kMillisecond - 1}) {
    EXPECT_LT(h.HighestEquivalent(v) - v, 512u) << v;
  }

  // The default histogram's unit is 1 ns, so values below 1 µs are exact.
  LatencyHistogram fine;
  fine.Record(0);
  fine.Record(999);
  EXPECT_EQ(fine.ValueAtPercentile(50), 0u);
  EXPECT_EQ(fine.ValueAtPercentile(100), 999u);
  EXPECT_EQ(fine.HighestEquivalent(999), 999u);
}

TEST(LoadgenHistogramTest, RecordNEqualsNRecords) {
  LatencyHistogram batched;
  LatencyHistogram one_by_one;
  for (uint64_t v : {uint64_t{0}, 1'500 * kMicrosecond, 3 * kSecond, 90 * kSecond}) {
    batched.RecordN(v, 1'000);
    for (int i = 0; i < 1'000; ++i) one_by_one.Record(v);
  }
  ExpectSameHistogram(batched, one_by_one);
  EXPECT_EQ(batched.count(), 4'000u);
  EXPECT_EQ(batched.clamped(), 1'000u);

  LatencyHistogram none;
  none.RecordN(7 * kMillisecond, 0);  // records nothing, not even a min or max
  EXPECT_TRUE(none == LatencyHistogram());
}

TEST(LoadgenHistogramTest, ResetEmptiesAndKeepsConfiguration) {
  LatencyHistogram h(kMicrosecond, 10 * kSecond, 2);
  for (uint64_t v : LogUniform(1'000, kMicrosecond, 100 * kSecond, /*seed=*/9)) h.Record(v);
  ASSERT_GT(h.clamped(), 0u);
  h.Reset();
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.clamped(), 0u);
  EXPECT_EQ(h.max_ns(), 0u);
  EXPECT_TRUE(h.RecordedBuckets().empty());
  EXPECT_TRUE(h == LatencyHistogram(kMicrosecond, 10 * kSecond, 2));
  h.Record(42 * kMicrosecond);
  EXPECT_EQ(h.min_ns(), 42 * kMicrosecond);
  EXPECT_EQ(h.ValueAtPercentile(50), 42 * kMicrosecond);
}

TEST(LoadgenHistogramTest, EmptyHistogramReportsZero) {
  const LatencyHistogram h;
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.min_ns(), 0u);
  EXPECT_EQ(h.max_ns(), 0u);
  EXPECT_EQ(h.mean_ns(), 0.0);
  EXPECT_EQ(h.clamped(), 0u);
  for (double p : {0.0, 50.0, 99.9, 100.0}) EXPECT_EQ(h.ValueAtPercentile(p), 0u) << p;
  EXPECT_TRUE(h.Spectrum().empty());
  EXPECT_TRUE(h.RecordedBuckets().empty());
}

TEST(LoadgenHistogramTest, ValuesInOneSubBucketAreEquivalent) {
  const LatencyHistogram h;
  // 1 s has 30 bits, so its sub-bucket is 2^19 ns wide and starts at
  // 1907 * 2^19 = 999,817,216 ns.
  EXPECT_EQ(h.LowestEquivalent(kSecond), 999'817'216u);
  EXPECT_EQ(h.HighestEquivalent(kSecond), 999'817'216u + (1u << 19) - 1);
  EXPECT_TRUE(h.Equivalent(kSecond, kSecond + 300'000));
  EXPECT_TRUE(h.Equivalent(999'817'216, 999'817'216 + (1 << 19) - 1));
  EXPECT_FALSE(h.Equivalent(999'817'216 - 1, 999'817'216));
  EXPECT_FALSE(h.Equivalent(999'817'216 + (1 << 19) - 1, 999'817'216 + (1 << 19)));
  EXPECT_TRUE(h.Equivalent(kMillisecond, kMillisecond));
}

TEST(LoadgenHistogramTest, ValuesTwoPerMilleApartAreNeverEquivalent) {
  const LatencyHistogram h;  // 3 digits
  int checked = 0;
  // From lowest_ns (so also below 2 ms, where a 512 ns unit would fail) to highest_ns.
  for (double v = static_cast<double>(h.lowest_ns()); v * 1.002 <= 60.0 * kSecond; v *= 1.0007) {
    const uint64_t a = static_cast<uint64_t>(v);
    const uint64_t b = a + a / 500;
    EXPECT_FALSE(h.Equivalent(a, b)) << a << " and " << b;
    ++checked;
  }
  EXPECT_GT(checked, 20'000);
}

TEST(LoadgenHistogramTest, SpectrumRisesTowardHundredAndEndsAtMax) {
  const auto values = LogUniform(10'000, kMicrosecond, 10 * kSecond, /*seed=*/13);
  const LatencyHistogram h = HistogramOf(values);
  const auto rows = h.Spectrum(5);
  ASSERT_GT(rows.size(), 11u);
  EXPECT_EQ(rows[0].first, 0.0);
  EXPECT_DOUBLE_EQ(rows[5].first, 50.0);
  EXPECT_DOUBLE_EQ(rows[10].first, 75.0);
  for (size_t i = 1; i < rows.size(); ++i) {
    EXPECT_GT(rows[i].first, rows[i - 1].first) << "row " << i;
    EXPECT_GE(rows[i].second, rows[i - 1].second) << "row " << i;
  }
  for (size_t i = 0; i + 1 < rows.size(); ++i) {
    EXPECT_EQ(rows[i].second, h.ValueAtPercentile(rows[i].first)) << "row " << i;
  }
  EXPECT_EQ(rows.back(), std::make_pair(100.0, h.max_ns()));
  // The rows go on until the next one would be the maximum: the last row
  // before 100 is within two values of the top.
  const double n = static_cast<double>(values.size());
  EXPECT_GE(rows[rows.size() - 2].first, 100.0 * (1.0 - 2.0 / n));

  const auto coarse = h.Spectrum(1);
  ASSERT_GT(coarse.size(), 5u);
  EXPECT_DOUBLE_EQ(coarse[1].first, 50.0);
  EXPECT_DOUBLE_EQ(coarse[2].first, 75.0);
  EXPECT_DOUBLE_EQ(coarse[3].first, 87.5);
  EXPECT_DOUBLE_EQ(coarse[4].first, 93.75);
}

TEST(LoadgenHistogramTest, SpectrumOfOneValueHasTwoRows) {
  LatencyHistogram h;
  h.Record(3 * kMillisecond);
  const auto rows = h.Spectrum();
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0], std::make_pair(0.0, 3 * kMillisecond));
  EXPECT_EQ(rows[1], std::make_pair(100.0, 3 * kMillisecond));
}

// Past 2^53 values, 100 * (1 - 2^-x) stops changing between steps before
// the rank reaches count(); the rows must still be distinct and finite.
TEST(LoadgenHistogramTest, SpectrumPercentilesStayDistinctForHugeCounts) {
  LatencyHistogram h;
  h.RecordN(kMillisecond, uint64_t{1} << 60);
  h.Record(2 * kMillisecond);
  const auto rows = h.Spectrum(5);
  ASSERT_GT(rows.size(), 2u);
  EXPECT_LE(rows.size(), 64u * 5 + 1);
  for (size_t i = 1; i < rows.size(); ++i)
    EXPECT_GT(rows[i].first, rows[i - 1].first) << "row " << i;
  EXPECT_EQ(rows.back(), std::make_pair(100.0, 2 * kMillisecond));
}

TEST(LoadgenHistogramTest, DefaultHistogramHolds27KCountersIn216KiB) {
  const LatencyHistogram h;
  // 26 buckets (0 .. 2^36 ns) + 1, times 1024 counters of 8 bytes.
  EXPECT_EQ(h.memory_bytes() - sizeof(LatencyHistogram), 27u * 1024 * 8);
  EXPECT_LT(h.memory_bytes(), 222'000u);
}

TEST(LoadgenHistogramTest, FormatLatencyKeepsThreeSignificantDigits) {
  EXPECT_EQ(FormatLatency(0), "0 ns");
  EXPECT_EQ(FormatLatency(999), "999 ns");
  EXPECT_EQ(FormatLatency(1'000), "1 µs");
  EXPECT_EQ(FormatLatency(1'234), "1.23 µs");
  EXPECT_EQ(FormatLatency(153'000), "153 µs");
  EXPECT_EQ(FormatLatency(153'400), "153 µs");
  EXPECT_EQ(FormatLatency(999'999), "1 ms");  // rounding carries into the next unit
  EXPECT_EQ(FormatLatency(1'560'000), "1.56 ms");
  EXPECT_EQ(FormatLatency(12'345'678), "12.3 ms");
  EXPECT_EQ(FormatLatency(20'000'000), "20 ms");
  EXPECT_EQ(FormatLatency(2'300'000'000), "2.3 s");
  EXPECT_EQ(FormatLatency(60 * kSecond), "60 s");
  EXPECT_EQ(FormatLatency(3'600 * kSecond), "3600 s");
}

}  // namespace
}  // namespace annal::loadgen
