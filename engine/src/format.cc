#include "format.h"

#include <atomic>

// XXH3_state_t on the stack needs the static-linking definitions.
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include <cstdio>

#include "annal/assert.h"
#include "annal/limits.h"

namespace annal::format {

static_assert(kSegmentHeaderChecksumOffset + 8 == kSegmentHeaderBytes);
static_assert(kBatchHeaderChecksumOffset + 8 == kBatchHeaderBytes);
static_assert(kRecordChecksumOffset + 8 == kRecordHeaderBytes);
static_assert(limits::kMaxSegmentBytes <= (1ull << 32), "a location packs offsets in 32 bits");

std::string ManifestName() { return "MANIFEST"; }
std::string LockName() { return "LOCK"; }
std::string CheckpointFileName() { return "index.ckpt"; }

std::string PartitionDirName(uint32_t partition) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "partition-%03u", partition);
  return buf;
}

std::string SegmentFileName(uint32_t segment_id) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "segment-%08u.log", segment_id);
  return buf;
}

bool ParseSegmentFileName(std::string_view name, uint32_t* segment_id) {
  constexpr std::string_view kPrefix = "segment-", kSuffix = ".log";
  if (name.size() != kPrefix.size() + 8 + kSuffix.size()) return false;
  if (name.substr(0, kPrefix.size()) != kPrefix) return false;
  if (name.substr(name.size() - kSuffix.size()) != kSuffix) return false;
  uint64_t id = 0;
  for (char c : name.substr(kPrefix.size(), 8)) {
    if (c < '0' || c > '9') return false;
    id = id * 10 + static_cast<uint64_t>(c - '0');
  }
  *segment_id = static_cast<uint32_t>(id);
  return true;
}

uint64_t Checksum(const void* data, size_t len) { return XXH3_64bits(data, len); }

void EncodeSegmentHeader(const SegmentHeader& h, uint8_t out[kSegmentHeaderBytes],
                         const char (&magic)[8]) {
  std::memset(out, 0, kSegmentHeaderBytes);
  std::memcpy(out, magic, 8);
  Put32(out + 8, kFormatVersion);
  Put32(out + 12, h.partition);
  Put64(out + 16, h.segment_id);
  Put64(out + 24, h.segment_bytes);
  Put32(out + 32, h.partitions);
  Put64(out + kSegmentHeaderChecksumOffset, Checksum(out, kSegmentHeaderChecksumOffset));
}

Status DecodeSegmentHeader(const uint8_t in[kSegmentHeaderBytes], const std::string& file,
                           SegmentHeader* h, const char (&magic)[8]) {
  if (std::memcmp(in, magic, 8) != 0)
    return Status::Corruption(file + " at offset 0: not an annal segment (bad magic; expected \"" +
                              std::string(magic, 8) + "\")");
  if (Get64(in + kSegmentHeaderChecksumOffset) != Checksum(in, kSegmentHeaderChecksumOffset))
    return Status::Corruption(file + " at offset 0: segment header checksum mismatch");
  uint32_t version = Get32(in + 8);
  if (version != kFormatVersion)
    return Status::Corruption(file + ": segment format version " + std::to_string(version) +
                              " is not supported (this build reads version " +
                              std::to_string(kFormatVersion) + ")");
  h->partition = Get32(in + 12);
  if (Get64(in + 16) > UINT32_MAX)
    return Status::Corruption(file + " at offset 16: segment id out of range");
  h->segment_id = static_cast<uint32_t>(Get64(in + 16));
  h->segment_bytes = Get64(in + 24);
  h->partitions = Get32(in + 32);
  return Status::Ok();
}

void EncodeBatchHeader(const BatchHeader& h, uint8_t out[kBatchHeaderBytes]) {
  std::memset(out, 0, kBatchHeaderBytes);
  Put32(out, kBatchMagic);
  Put32(out + 4, h.length);
  Put64(out + 8, h.first_position);
  Put64(out + 16, static_cast<uint64_t>(h.recorded_at_ns));
  Put32(out + 24, h.count);
  Put16(out + 28, h.flags);
  Put16(out + 30, static_cast<uint16_t>(kFormatVersion));
  Put64(out + kBatchHeaderChecksumOffset, Checksum(out, kBatchHeaderChecksumOffset));
}

Status DecodeBatchHeader(const uint8_t in[kBatchHeaderBytes], BatchHeader* h) {
  if (Get32(in) != kBatchMagic) return Status::Corruption("bad batch magic");
  if (Get64(in + kBatchHeaderChecksumOffset) != Checksum(in, kBatchHeaderChecksumOffset))
    return Status::Corruption("batch header checksum mismatch");
  if (Get16(in + 30) != kFormatVersion) return Status::Corruption("unsupported batch version");
  h->length = Get32(in + 4);
  h->first_position = Get64(in + 8);
  h->recorded_at_ns = static_cast<int64_t>(Get64(in + 16));
  h->count = Get32(in + 24);
  h->flags = Get16(in + 28);
  if (h->flags & kBatchFlagsMustUnderstand)
    return Status::Corruption("batch has flags this build does not understand");
  if (h->length < kBatchHeaderBytes + kBatchTrailerBytes || h->count == 0 ||
      h->length > limits::kMaxBatchBytesCeiling ||
      uint64_t{h->count} * kRecordHeaderBytes > h->length - kBatchHeaderBytes - kBatchTrailerBytes)
    return Status::Corruption("batch header has impossible length or count");
  return Status::Ok();
}

uint64_t BatchChecksum(const uint8_t* batch, size_t length) {
  ANNAL_ASSERT(length >= kBatchHeaderBytes + kBatchTrailerBytes);
  return Checksum(batch, length - kBatchTrailerBytes);
}

static uint64_t RecordChecksum(const uint8_t* rec, size_t length) {
  XXH3_state_t state;
  XXH3_64bits_reset(&state);
  XXH3_64bits_update(&state, rec, kRecordChecksumOffset);
  XXH3_64bits_update(&state, rec + kRecordHeaderBytes, length - kRecordHeaderBytes);
  return XXH3_64bits_digest(&state);
}

void EncodeRecord(const RecordView& r, uint8_t* out) {
  size_t length = RecordSize(r.stream.size(), r.type.size(), r.metadata.size(), r.payload.size());
  ANNAL_ASSERT(length <= UINT32_MAX);
  ANNAL_ASSERT(r.stream.size() >= 1 && r.stream.size() <= limits::kMaxStreamNameBytes);
  ANNAL_ASSERT(r.type.size() >= 1 && r.type.size() <= limits::kMaxEventTypeBytes);
  Put32(out, static_cast<uint32_t>(length));
  Put16(out + 4, r.flags);
  out[6] = static_cast<uint8_t>(r.stream.size());
  out[7] = static_cast<uint8_t>(r.type.size());
  Put64(out + 8, r.version);
  Put64(out + 16, r.position);
  Put64(out + 24, static_cast<uint64_t>(r.recorded_at_ns));
  Put64(out + 32, r.prev_location);
  std::memcpy(out + 40, r.id.data(), 16);
  Put32(out + 56, static_cast<uint32_t>(r.metadata.size()));
  Put32(out + 60, static_cast<uint32_t>(r.payload.size()));
  uint8_t* p = out + kRecordHeaderBytes;
  for (std::string_view part : {r.stream, r.type, r.metadata, r.payload}) {
    if (!part.empty()) std::memcpy(p, part.data(), part.size());
    p += part.size();
  }
  Put64(out + kRecordChecksumOffset, RecordChecksum(out, length));
}

void PatchRecord(uint8_t* record, uint64_t position, int64_t recorded_at_ns) {
  Put64(record + 16, position);
  Put64(record + 24, static_cast<uint64_t>(recorded_at_ns));
  Put64(record + kRecordChecksumOffset, RecordChecksum(record, Get32(record)));
}

Status DecodeRecordHeader(const uint8_t* in, size_t available, RecordView* r) {
  if (available < kRecordHeaderBytes) return Status::Corruption("record header truncated");
  r->length = Get32(in);
  r->flags = Get16(in + 4);
  size_t stream_len = in[6], type_len = in[7];
  r->version = Get64(in + 8);
  r->position = Get64(in + 16);
  r->recorded_at_ns = static_cast<int64_t>(Get64(in + 24));
  r->prev_location = Get64(in + 32);
  std::memcpy(r->id.data(), in + 40, 16);
  size_t metadata_len = Get32(in + 56), payload_len = Get32(in + 60);
  if (r->flags & kRecordFlagsMustUnderstand)
    return Status::Corruption("record has flags this build does not understand");
  if (stream_len == 0 || type_len == 0 || metadata_len > limits::kMaxMetadataBytes ||
      payload_len > limits::kMaxPayloadBytesCeiling ||
      RecordSize(stream_len, type_len, metadata_len, payload_len) != r->length)
    return Status::Corruption("record header has inconsistent lengths");
  // Views point into `in` only when the bytes are there (DecodeRecord).
  r->stream = r->type = r->metadata = r->payload = {};
  if (available >= kRecordHeaderBytes + stream_len)
    r->stream = {reinterpret_cast<const char*>(in + kRecordHeaderBytes), stream_len};
  if (available >= r->length) {
    const char* p = reinterpret_cast<const char*>(in + kRecordHeaderBytes);
    r->type = {p + stream_len, type_len};
    r->metadata = {p + stream_len + type_len, metadata_len};
    r->payload = {p + stream_len + type_len + metadata_len, payload_len};
  }
  return Status::Ok();
}

Status DecodeRecord(const uint8_t* in, size_t available, RecordView* r) {
  ANNAL_RETURN_IF_ERROR(DecodeRecordHeader(in, available, r));
  if (available < r->length) return Status::Corruption("record truncated");
  if (Get64(in + kRecordChecksumOffset) != RecordChecksum(in, r->length))
    return Status::Corruption("record checksum mismatch");
  return Status::Ok();
}

RecordedEvent ToRecordedEvent(const RecordView& r) {
  RecordedEvent e;
  e.stream = std::string(r.stream);
  e.version = StreamVersion(r.version);
  e.position = GlobalPosition(r.position);
  e.recorded_at_ns = r.recorded_at_ns;
  e.id = r.id;
  e.type = std::string(r.type);
  e.metadata = std::string(r.metadata);
  e.payload = std::string(r.payload);
  return e;
}

void EncodeManifest(const Manifest& m, uint8_t out[kManifestBytes]) {
  std::memset(out, 0, kManifestBytes);
  std::memcpy(out, kManifestMagic, 8);
  Put32(out + 8, kFormatVersion);
  Put32(out + 12, m.partitions);
  Put64(out + 16, m.segment_bytes);
  Put64(out + 24, static_cast<uint64_t>(m.created_at_ns));
  Put64(out + kManifestBytes - 8, Checksum(out, kManifestBytes - 8));
}

Status DecodeManifest(const uint8_t in[kManifestBytes], const std::string& file, Manifest* m) {
  if (std::memcmp(in, kManifestMagic, 8) != 0)
    return Status::Corruption(file + ": not an annal manifest (bad magic)");
  if (Get64(in + kManifestBytes - 8) != Checksum(in, kManifestBytes - 8))
    return Status::Corruption(file + ": manifest checksum mismatch");
  uint32_t version = Get32(in + 8);
  if (version != kFormatVersion)
    return Status::Corruption(file + ": store format version " + std::to_string(version) +
                              " is not supported by this build (version " +
                              std::to_string(kFormatVersion) + ")");
  m->partitions = Get32(in + 12);
  m->segment_bytes = Get64(in + 16);
  m->created_at_ns = static_cast<int64_t>(Get64(in + 24));
  if (m->partitions == 0 || m->partitions > limits::kMaxPartitions ||
      m->segment_bytes < limits::kMinSegmentBytes || m->segment_bytes > limits::kMaxSegmentBytes)
    return Status::Corruption(file + ": manifest values out of range");
  return Status::Ok();
}

}  // namespace annal::format

namespace annal::format {
uint32_t PartitionForStream(std::string_view stream, uint32_t partitions) {
  ANNAL_ASSERT(partitions > 0);
  return static_cast<uint32_t>(Checksum(stream.data(), stream.size()) % partitions);
}
}  // namespace annal::format

namespace annal::format {
static std::atomic<uint64_t> stream_hash_mask{~0ull};
uint64_t StreamHash(std::string_view stream) {
  return XXH3_64bits_withSeed(stream.data(), stream.size(), 1) & stream_hash_mask.load(std::memory_order_relaxed);
}
void SetStreamHashMaskForTesting(uint64_t mask) { stream_hash_mask = mask; }
uint32_t StreamNameCheck(std::string_view stream) {
  return static_cast<uint32_t>(XXH3_64bits_withSeed(stream.data(), stream.size(), 2));
}
uint32_t EventIdCheck(const EventId& id) { return static_cast<uint32_t>(XXH3_64bits(id.data(), id.size())); }
}  // namespace annal::format
