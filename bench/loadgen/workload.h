// What annal-bench sends: which stream each request goes to (uniform, or
// zipf with a few hot streams), and the bytes of each event (a JSON
// document or random bytes of the configured size). Both are deterministic
// for a seed, so two targets in one comparison get the same workload.
//
// Thread-safety: none; one per runner thread.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace annal::loadgen {

enum class StreamDistribution : uint8_t { kUniform = 0, kZipf = 1 };
enum class PayloadKind : uint8_t { kJson = 0, kRandom = 1 };

// Every target writes each event with this type and this metadata, so that
// the stores compared are given the same bytes.
inline constexpr const char* kEventType = "Deposited";
inline constexpr const char* kEventMetadata = R"({"correlation_id":"annal-bench","user_id":"load"})";

// The smallest JSON event PayloadMaker makes (the document's fixed fields).
inline constexpr uint32_t kMinJsonEventBytes = 160;

struct WorkloadOptions {
  uint32_t streams = 10'000;
  StreamDistribution distribution = StreamDistribution::kUniform;
  double zipf_exponent = 0.99;  // kZipf: P(rank k) proportional to 1 / k^s
  uint32_t event_bytes = 500;   // payload size of every event
  PayloadKind payload = PayloadKind::kJson;
  uint32_t events_per_append = 1;
  uint64_t seed = 1;
};

// Draws stream indexes in [0, streams). Zipf uses an inverse-CDF table
// (streams doubles), so a draw is one binary search.
class StreamChooser {
 public:
  explicit StreamChooser(const WorkloadOptions& o);
  uint32_t Next();

 private:
  std::mt19937_64 rng_;
  uint32_t streams_;
  std::vector<double> cdf_;  // kZipf only
};

// Names stream `index` ("bench-<run>-<index>" — the category is "bench").
std::string StreamName(const std::string& run_id, uint32_t index);

// Makes event payloads of exactly `event_bytes` bytes. JSON payloads look
// like a domain event (ids, amounts, a timestamp, a free-text note) and are
// valid JSON for PostgreSQL's JSONB; random payloads are incompressible.
// Payloads vary by `sequence` so that no two consecutive events are equal.
class PayloadMaker {
 public:
  explicit PayloadMaker(const WorkloadOptions& o);
  const std::string& Make(uint64_t sequence);

 private:
  PayloadKind kind_;
  uint32_t bytes_;
  std::mt19937_64 rng_;
  std::string buf_;
  std::string pool_;  // random bytes or note text to slice from
};

}  // namespace annal::loadgen
