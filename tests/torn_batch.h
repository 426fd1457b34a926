// Test helper: the bytes a crash in the middle of a batch's write leaves.
#pragma once

#include <cstdint>
#include <string>

#include "format.h"

namespace annal::testing {

// A batch of one event whose header is whole and valid and whose trailer
// was never written: what a crash in the middle of its write leaves.
inline std::string TornBatch(uint64_t first_position) {
  format::RecordView r;
  r.stream = "torn-stream";
  r.type = "Torn";
  r.metadata = "{}";
  r.payload = R"({"never":"acknowledged"})";
  r.version = 0;
  r.position = first_position;
  r.recorded_at_ns = 1'764'000'000'000'000'000;
  size_t record =
      format::RecordSize(r.stream.size(), r.type.size(), r.metadata.size(), r.payload.size());
  std::string batch(format::kBatchHeaderBytes + record + format::kBatchTrailerBytes, '\0');
  auto* p = reinterpret_cast<uint8_t*>(batch.data());
  format::EncodeRecord(r, p + format::kBatchHeaderBytes);
  format::BatchHeader h;
  h.length = static_cast<uint32_t>(batch.size());
  h.first_position = first_position;
  h.recorded_at_ns = r.recorded_at_ns;
  h.count = 1;
  format::EncodeBatchHeader(h, p);
  return batch;  // the trailer stays zero
}

}  // namespace annal::testing
