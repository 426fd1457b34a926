// Fuzzes the record parsers, format::DecodeRecordHeader and DecodeRecord,
// with arbitrary bytes standing for one record and whatever follows it.
//
// Each input is parsed twice: as given, and again after its record checksum
// has been recomputed. The fuzzer cannot forge an XXH3 checksum, so without
// the second pass nearly every mutation would stop at the checksum and the
// code after it would go unexplored.
//
// When a parse succeeds the decoded view must be consistent with the input,
// and re-encoding it must give back the input's bytes (a pair assertion: the
// decoder and the encoder agree on the format).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "annal/assert.h"
#include "format.h"

namespace {

using annal::format::DecodeRecord;
using annal::format::DecodeRecordHeader;
using annal::format::kRecordChecksumOffset;
using annal::format::kRecordHeaderBytes;
using annal::format::RecordSize;
using annal::format::RecordView;

// True when `view` is empty or lies within [begin, end).
bool Inside(std::string_view view, const uint8_t* begin, const uint8_t* end) {
  if (view.empty()) return true;
  auto* p = reinterpret_cast<const uint8_t*>(view.data());
  return p >= begin && p <= end && view.size() <= static_cast<size_t>(end - p);
}

// The variable parts follow the fixed header in order, with no gaps.
void CheckLayout(const RecordView& r, const uint8_t* in) {
  const char* p = reinterpret_cast<const char*>(in) + kRecordHeaderBytes;
  ANNAL_ASSERT(r.stream.data() == p);
  ANNAL_ASSERT(r.type.data() == p + r.stream.size());
  ANNAL_ASSERT(r.metadata.data() == r.type.data() + r.type.size());
  ANNAL_ASSERT(r.payload.data() == r.metadata.data() + r.metadata.size());
  ANNAL_ASSERT(RecordSize(r.stream.size(), r.type.size(), r.metadata.size(), r.payload.size()) ==
               r.length);
}

// Re-encodes `r` and compares with the `r.length` input bytes at `in`; the
// checksum field only when the decoder verified it.
void CheckReencodes(const RecordView& r, const uint8_t* in, bool checksum_verified) {
  std::vector<uint8_t> out(r.length);
  annal::format::EncodeRecord(r, out.data());
  if (checksum_verified) {
    ANNAL_ASSERT(std::memcmp(out.data(), in, r.length) == 0);
    return;
  }
  ANNAL_ASSERT(std::memcmp(out.data(), in, kRecordChecksumOffset) == 0);
  ANNAL_ASSERT(std::memcmp(out.data() + kRecordHeaderBytes, in + kRecordHeaderBytes,
                           r.length - kRecordHeaderBytes) == 0);
}

void CheckHeaderOnly(const uint8_t* in, size_t available) {
  RecordView r;
  if (!DecodeRecordHeader(in, available, &r).ok()) return;
  ANNAL_ASSERT(available >= kRecordHeaderBytes);
  ANNAL_ASSERT(r.length >= kRecordHeaderBytes + 2);
  ANNAL_ASSERT((r.flags & annal::format::kRecordFlagsMustUnderstand) == 0);
  const uint8_t* end = in + available;
  for (std::string_view v : {r.stream, r.type, r.metadata, r.payload})
    ANNAL_ASSERT(Inside(v, in, end));
  // The views are filled in only as far as the bytes are there.
  ANNAL_ASSERT(r.stream.empty() == (available < kRecordHeaderBytes + in[6]));
  if (available < r.length) {
    ANNAL_ASSERT(r.type.empty() && r.metadata.empty() && r.payload.empty());
    return;
  }
  CheckLayout(r, in);
  CheckReencodes(r, in, /*checksum_verified=*/false);
}

// Returns whether DecodeRecord accepted the input.
bool CheckWhole(const uint8_t* in, size_t available) {
  RecordView r;
  if (!DecodeRecord(in, available, &r).ok()) return false;
  ANNAL_ASSERT(r.length <= available);
  for (std::string_view v : {r.stream, r.type, r.metadata, r.payload})
    ANNAL_ASSERT(Inside(v, in, in + r.length));
  CheckLayout(r, in);
  CheckReencodes(r, in, /*checksum_verified=*/true);
  // A record that verified also parses with its header-only parser.
  RecordView h;
  ANNAL_ASSERT(DecodeRecordHeader(in, available, &h).ok());
  ANNAL_ASSERT(h.length == r.length && h.position == r.position);
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  CheckHeaderOnly(data, size);
  CheckWhole(data, size);

  // Second pass with the checksum made right, when there is a whole record.
  RecordView r;
  if (!DecodeRecordHeader(data, size, &r).ok() || r.length > size) return 0;
  std::vector<uint8_t> fixed(data, data + size);
  annal::format::PatchRecord(fixed.data(), r.position, r.recorded_at_ns);
  ANNAL_ASSERT(CheckWhole(fixed.data(), fixed.size()));
  return 0;
}
