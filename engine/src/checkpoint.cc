#include "checkpoint.h"

#include <cstring>

#include "annal/assert.h"
#include "annal/limits.h"
#include "format.h"

namespace annal {

using format::Get32;
using format::Get64;

void SegmentSummary::NoteBatch(uint32_t offset, uint32_t length, uint64_t first, uint32_t count,
                               int64_t recorded_at_ns) {
  ANNAL_ASSERT(offset >= end_offset);
  ANNAL_ASSERT(first > last_position);
  if (first_position == 0) {
    first_position = first;
    first_recorded_at_ns = recorded_at_ns;
  }
  last_position = first + count - 1;
  last_recorded_at_ns = recorded_at_ns;
  end_offset = offset + length;
  if (samples.empty() || offset - samples.back().offset >= limits::kPositionIndexStrideBytes)
    samples.push_back(TimeSample{first, recorded_at_ns, offset});
}

namespace {

class Reader {
 public:
  explicit Reader(std::string_view d) : d_(d) {}
  bool U8(uint8_t* v) { return Raw(v, 1); }
  bool U32(uint32_t* v) { return Raw(v, 4); }
  bool U64(uint64_t* v) { return Raw(v, 8); }
  bool I64(int64_t* v) { return Raw(v, 8); }
  bool Raw(void* p, size_t n) {
    if (d_.size() - at_ < n) return false;
    std::memcpy(p, d_.data() + at_, n);
    at_ += n;
    return true;
  }
  bool Str(std::string* s, size_t n) {
    if (d_.size() - at_ < n) return false;
    s->assign(d_.data() + at_, n);
    at_ += n;
    return true;
  }
  bool done() const { return at_ == d_.size(); }
  // True when `count` items of at least `min_bytes` each could still follow.
  bool CouldHold(uint64_t count, size_t min_bytes) const {
    return count <= (d_.size() - at_) / min_bytes;
  }

 private:
  std::string_view d_;
  size_t at_ = 0;
};

}  // namespace

CheckpointEncoder::CheckpointEncoder(const CheckpointHeader& h, uint32_t segments, uint64_t streams)
    : segments_left_(segments), streams_left_(streams) {
  Raw(format::kCheckpointMagic, 8);
  U32(format::kCheckpointVersion);
  U32(h.partition);
  U32(h.tail_segment);
  U32(h.tail_offset);
  U64(h.last_position);
  U64(static_cast<uint64_t>(h.last_recorded_at_ns));
  U32(segments);
  ANNAL_ASSERT(out_.size() == format::kCheckpointStreamCountOffset);
  U64(streams);
  ANNAL_ASSERT(out_.size() == format::kCheckpointHeaderBytes);
  if (segments_left_ == 0) ReserveForStreams();
}

// The streams may be added in steps under their owner's lock: growing the
// buffer then would copy all of it inside one step.
void CheckpointEncoder::ReserveForStreams() {
  out_.reserve(out_.size() + streams_left_ * format::kCheckpointStreamBytes + format::kCheckpointChecksumBytes);
}

void CheckpointEncoder::AddSegment(const SegmentSummary& s) {
  ANNAL_ASSERT(segments_left_ > 0);
  --segments_left_;
  [[maybe_unused]] const size_t start = out_.size();
  U32(s.id);
  U32(s.end_offset);
  U64(s.first_position);
  U64(s.last_position);
  U64(static_cast<uint64_t>(s.first_recorded_at_ns));
  U64(static_cast<uint64_t>(s.last_recorded_at_ns));
  U32(static_cast<uint32_t>(s.samples.size()));
  ANNAL_ASSERT(out_.size() - start == format::kCheckpointSegmentFixedBytes);
  for (const TimeSample& p : s.samples) {
    U64(p.position);
    U64(static_cast<uint64_t>(p.recorded_at_ns));
    U32(p.offset);
  }
  U32(static_cast<uint32_t>(s.index.size()));
  Raw(s.index.data(), s.index.size());
  if (segments_left_ == 0) ReserveForStreams();
}

void CheckpointEncoder::AddStream(const StreamSlot& e) {
  ANNAL_ASSERT(segments_left_ == 0 && streams_left_ > 0);
  --streams_left_;
  U64(e.hash);
  U64(e.head_version);
  U64(e.head_location);
  U64(e.first_location);
  U32(e.name_check);
  U32(e.head_id_check);
  static_assert(format::kCheckpointStreamBytes == 4 * 8 + 2 * 4, "the fields written above");
}

std::string CheckpointEncoder::Finish() {
  ANNAL_ASSERT_MSG(segments_left_ == 0 && streams_left_ == 0, "a checkpoint holds what its header counts");
  U64(format::Checksum(out_.data(), out_.size()));
  return std::move(out_);
}

std::string EncodeCheckpoint(const CheckpointHeader& h,
                             const std::vector<const SegmentSummary*>& segments,
                             const StreamTable& streams) {
  CheckpointEncoder e(h, static_cast<uint32_t>(segments.size()), streams.size());
  for (const SegmentSummary* s : segments) e.AddSegment(*s);
  streams.ForEach([&](const StreamSlot& s) { e.AddStream(s); });
  return e.Finish();
}

Status DecodeCheckpoint(std::string_view data, const std::string& file, CheckpointHeader* h,
                        std::vector<SegmentSummary>* segments, StreamTable* streams) {
  auto bad = [&](const char* why) { return Status::Corruption(file + ": " + why); };
  if (data.size() < 8 + 8 || std::memcmp(data.data(), format::kCheckpointMagic, 8) != 0)
    return bad("not an annal checkpoint (bad magic)");
  size_t body = data.size() - 8;
  if (Get64(reinterpret_cast<const uint8_t*>(data.data()) + body) !=
      format::Checksum(data.data(), body))
    return bad("checkpoint checksum mismatch");
  Reader r(data.substr(8, body - 8));
  uint32_t version = 0, segment_count = 0;
  uint64_t stream_count = 0;
  if (!r.U32(&version) || version != format::kCheckpointVersion) return bad("unsupported version");
  if (!r.U32(&h->partition) || !r.U32(&h->tail_segment) || !r.U32(&h->tail_offset) ||
      !r.U64(&h->last_position) || !r.I64(&h->last_recorded_at_ns) || !r.U32(&segment_count) ||
      !r.U64(&stream_count))
    return bad("truncated header");
  // Counts come from the file: bound them by the bytes left before sizing.
  if (!r.CouldHold(segment_count, format::kCheckpointSegmentFixedBytes + format::kCheckpointIndexLengthBytes) ||
      !r.CouldHold(stream_count, format::kCheckpointStreamBytes))
    return bad("counts exceed the file");
  segments->resize(segment_count);
  for (SegmentSummary& s : *segments) {
    uint32_t n = 0;
    if (!r.U32(&s.id) || !r.U32(&s.end_offset) || !r.U64(&s.first_position) ||
        !r.U64(&s.last_position) || !r.I64(&s.first_recorded_at_ns) ||
        !r.I64(&s.last_recorded_at_ns) || !r.U32(&n))
      return bad("truncated segment summary");
    if (!r.CouldHold(n, format::kCheckpointSampleBytes)) return bad("sample count exceeds the file");
    s.samples.resize(n);
    for (TimeSample& p : s.samples)
      if (!r.U64(&p.position) || !r.I64(&p.recorded_at_ns) || !r.U32(&p.offset))
        return bad("truncated position sample");
    uint32_t index_len = 0;
    if (!r.U32(&index_len) || !r.Str(&s.index, index_len)) return bad("truncated segment index");
  }
  streams->Reserve(stream_count);
  for (uint64_t i = 0; i < stream_count; ++i) {
    StreamSlot e;
    if (!r.U64(&e.hash) || !r.U64(&e.head_version) || !r.U64(&e.head_location) ||
        !r.U64(&e.first_location) || !r.U32(&e.name_check) || !r.U32(&e.head_id_check) || e.empty() ||
        e.first_location == 0)
      return bad("truncated or invalid stream entry");
    streams->Insert(e);
  }
  if (!r.done()) return bad("trailing bytes");
  return Status::Ok();
}

}  // namespace annal
