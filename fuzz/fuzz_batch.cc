// Fuzzes batch reading through the code paths recovery and reads use: the
// input becomes a segment's bytes from offset 0 (in a memfd, so no disk),
// CheckBatchAt classifies the batch there and, when it is valid,
// ForEachRecord walks its records. format::DecodeBatchHeader is also called
// directly on the first 48 bytes, and the two answers must agree.
//
// Each input is checked twice: as given, and again after its record
// checksums, batch header checksum and trailer have been recomputed, so the
// fuzzer gets past checksums it cannot forge and reaches the record walk.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "annal/assert.h"
#include "format.h"
#include "segment.h"

namespace {

using annal::BatchCheck;
using annal::SegmentFile;
using annal::Status;
using annal::format::BatchHeader;
using annal::format::Get32;
using annal::format::kBatchHeaderBytes;
using annal::format::kBatchHeaderChecksumOffset;
using annal::format::kBatchTrailerBytes;
using annal::format::RecordView;

// One memfd reused for every input; made once, closed at exit.
SegmentFile& Segment() {
  static SegmentFile seg = [] {
    int fd = memfd_create("annal-fuzz-batch", MFD_CLOEXEC);
    if (fd < 0) {
      std::perror("fuzz_batch: memfd_create");
      std::abort();
    }
    SegmentFile s;
    s.id = 1;
    s.path = "memfd:annal-fuzz-batch";
    s.fd = annal::fs::Fd(fd);
    return s;
  }();
  return seg;
}

SegmentFile& LoadSegment(const uint8_t* data, size_t size) {
  SegmentFile& seg = Segment();
  ANNAL_ASSERT(::ftruncate(seg.fd.get(), 0) == 0);
  if (size > 0) ANNAL_ASSERT(annal::fs::PwriteAll(seg.fd.get(), data, size, 0, seg.path).ok());
  // The input is a whole segment file, not one cut short.
  seg.size_bytes = seg.capacity_bytes = size;
  return seg;
}

bool SameHeader(const BatchHeader& a, const BatchHeader& b) {
  return a.length == b.length && a.first_position == b.first_position &&
         a.recorded_at_ns == b.recorded_at_ns && a.count == b.count && a.flags == b.flags;
}

// Walks the records of a batch CheckBatchAt found valid and checks every
// record ForEachRecord hands out against the batch's bytes.
void WalkRecords(const SegmentFile& seg, const std::vector<uint8_t>& batch,
                 const BatchHeader& header) {
  const size_t end = header.length - kBatchTrailerBytes;
  uint32_t seen = 0;
  size_t expect_at = kBatchHeaderBytes;
  Status s = annal::ForEachRecord(
      seg, 0, batch.data(), header, [&](const RecordView& r, uint32_t at) -> Status {
        ANNAL_ASSERT(at == expect_at);
        ANNAL_ASSERT(seen < header.count);
        ANNAL_ASSERT(r.length <= end - at);
        ANNAL_ASSERT(r.position == header.first_position + seen);
        const char* begin = reinterpret_cast<const char*>(batch.data()) + at;
        for (std::string_view v : {r.stream, r.type, r.metadata, r.payload})
          ANNAL_ASSERT(v.data() >= begin && v.data() + v.size() <= begin + r.length);
        // Pair assertion: the record re-encodes to the bytes it came from.
        std::vector<uint8_t> out(r.length);
        annal::format::EncodeRecord(r, out.data());
        ANNAL_ASSERT(std::memcmp(out.data(), batch.data() + at, r.length) == 0);
        expect_at += r.length;
        ++seen;
        return Status::Ok();
      });
  if (s.ok()) {
    ANNAL_ASSERT(seen == header.count);
    ANNAL_ASSERT(expect_at == end);
  } else {
    ANNAL_ASSERT(s.code() == annal::StatusCode::kCorruption);
  }
}

// Returns what CheckBatchAt made of the input.
BatchCheck::Kind CheckBatch(const uint8_t* data, size_t size) {
  BatchHeader direct;
  bool direct_ok =
      size >= kBatchHeaderBytes && annal::format::DecodeBatchHeader(data, &direct).ok();

  SegmentFile& seg = LoadSegment(data, size);
  std::vector<uint8_t> batch;
  BatchHeader header;
  annal::Result<BatchCheck> check = annal::CheckBatchAt(seg, 0, &batch, &header);
  ANNAL_ASSERT(check.ok());  // a memfd holding `size` bytes does not fail reads
  BatchCheck::Kind kind = check.value().kind;

  // Pair assertions between CheckBatchAt and DecodeBatchHeader.
  if (!direct_ok) {
    ANNAL_ASSERT(kind != BatchCheck::kValid);
    return kind;
  }
  if (direct.length > size) {
    // Whether that is torn or corrupt is recovery's policy; it is never data.
    ANNAL_ASSERT(kind == BatchCheck::kTorn || kind == BatchCheck::kCorrupt);
    return kind;
  }
  ANNAL_ASSERT(kind != BatchCheck::kEnd);
  if (kind != BatchCheck::kValid) return kind;
  ANNAL_ASSERT(SameHeader(header, direct));
  ANNAL_ASSERT(batch.size() == header.length);
  ANNAL_ASSERT(std::memcmp(batch.data(), data, header.length) == 0);
  WalkRecords(seg, batch, header);
  return kind;
}

// Recomputes, in place, the checksums of the records the batch's header
// leads to, then the header checksum, then the trailer. Returns false when
// the length field does not fit the input (nothing to repair then).
bool RepairChecksums(std::vector<uint8_t>* bytes) {
  uint8_t* b = bytes->data();
  if (bytes->size() < kBatchHeaderBytes) return false;
  const size_t length = Get32(b + 4);
  if (length < kBatchHeaderBytes + kBatchTrailerBytes || length > bytes->size()) return false;
  const size_t end = length - kBatchTrailerBytes;
  const uint32_t count = Get32(b + 24);
  size_t at = kBatchHeaderBytes;
  for (uint32_t i = 0; i < count && at < end; ++i) {
    RecordView r;
    if (!annal::format::DecodeRecordHeader(b + at, end - at, &r).ok() || r.length > end - at) break;
    annal::format::PatchRecord(b + at, r.position, r.recorded_at_ns);
    at += r.length;
  }
  annal::format::Put64(b + kBatchHeaderChecksumOffset,
                       annal::format::Checksum(b, kBatchHeaderChecksumOffset));
  annal::format::Put64(b + end, annal::format::BatchChecksum(b, length));
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  CheckBatch(data, size);

  std::vector<uint8_t> fixed(data, data + size);
  if (!RepairChecksums(&fixed)) return 0;
  BatchCheck::Kind kind = CheckBatch(fixed.data(), fixed.size());
  // With every checksum right, a header that decodes means a valid batch.
  BatchHeader h;
  if (annal::format::DecodeBatchHeader(fixed.data(), &h).ok())
    ANNAL_ASSERT(kind == BatchCheck::kValid);
  return 0;
}
