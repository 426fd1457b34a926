#include "workload.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "annal/assert.h"

namespace annal::loadgen {

StreamChooser::StreamChooser(const WorkloadOptions& o) : rng_(o.seed), streams_(o.streams) {
  ANNAL_ASSERT(streams_ > 0);
  if (o.distribution != StreamDistribution::kZipf) return;
  // Rank k (1-based) has weight 1 / k^s; the table holds the running sum,
  // normalised, so a uniform draw finds its rank by binary search.
  cdf_.resize(streams_);
  double sum = 0;
  for (uint32_t k = 0; k < streams_; ++k) {
    sum += 1.0 / std::pow(static_cast<double>(k + 1), o.zipf_exponent);
    cdf_[k] = sum;
  }
  for (double& c : cdf_) c /= sum;
}

uint32_t StreamChooser::Next() {
  if (cdf_.empty()) return static_cast<uint32_t>(rng_() % streams_);
  double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
  auto it = std::lower_bound(cdf_.begin(), cdf_.end(), u);
  if (it == cdf_.end()) --it;
  return static_cast<uint32_t>(it - cdf_.begin());
}

std::string StreamName(const std::string& run_id, uint32_t index) {
  return "bench-" + run_id + "-" + std::to_string(index);
}

namespace {
constexpr const char* kWords[] = {"deposit", "transfer", "salary", "rent",  "refund", "invoice",
                                  "monthly", "savings",  "card",   "store", "online", "fee"};
}  // namespace

PayloadMaker::PayloadMaker(const WorkloadOptions& o)
    : kind_(o.payload), bytes_(o.event_bytes), rng_(o.seed ^ 0x9e3779b97f4a7c15ULL) {
  if (kind_ == PayloadKind::kRandom) {
    pool_.resize(bytes_ + 4096);
    for (char& c : pool_) c = static_cast<char>(rng_());
    return;
  }
  ANNAL_ASSERT(bytes_ >= kMinJsonEventBytes);
  // Text for the "note" field: words separated by spaces, as people write.
  while (pool_.size() < bytes_ + 4096) {
    pool_ += kWords[rng_() % std::size(kWords)];
    pool_ += ' ';
  }
}

const std::string& PayloadMaker::Make(uint64_t sequence) {
  size_t start = static_cast<size_t>(rng_() % 4096);
  if (kind_ == PayloadKind::kRandom) {
    buf_.assign(pool_, start, bytes_);
    std::memcpy(buf_.data(), &sequence, std::min<size_t>(sizeof sequence, bytes_));
    return buf_;
  }
  char head[256];
  int n = std::snprintf(head, sizeof head,
                        "{\"account\":\"acc-%06u\",\"amount_cents\":%u,\"currency\":\"EUR\","
                        "\"booked_at\":\"2026-11-26T10:%02u:%02u.%03uZ\",\"sequence\":%llu,\"note\":\"",
                        static_cast<unsigned>(rng_() % 1'000'000), static_cast<unsigned>(rng_() % 100'000),
                        static_cast<unsigned>(sequence / 60 % 60), static_cast<unsigned>(sequence % 60),
                        static_cast<unsigned>(sequence % 1000), static_cast<unsigned long long>(sequence));
  ANNAL_ASSERT(n > 0 && static_cast<size_t>(n) < sizeof head);
  buf_.assign(head, static_cast<size_t>(n));
  constexpr size_t kTail = 2;  // "}
  ANNAL_ASSERT(buf_.size() + kTail <= bytes_);
  buf_.append(pool_, start, bytes_ - buf_.size() - kTail);
  buf_ += "\"}";
  ANNAL_ASSERT(buf_.size() == bytes_);
  return buf_;
}

}  // namespace annal::loadgen
