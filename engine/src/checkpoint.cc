#include "checkpoint.h"

#include <cstring>

#include "annal/assert.h"
#include "format.h"

namespace annal {

using format::Get32;
using format::Get64;

void SegmentSummary::NoteBatch(uint32_t offset, uint32_t length, uint64_t first, uint32_t count) {
  ANNAL_ASSERT(offset >= end_offset);
  ANNAL_ASSERT(first > last_position);
  if (first_position == 0) first_position = first;
  last_position = first + count - 1;
  end_offset = offset + length;
  if (samples.empty() || offset - samples.back().offset >= limits::kPositionIndexStrideBytes)
    samples.push_back(PositionSample{first, offset});
}

namespace {

class Writer {
 public:
  void U8(uint8_t v) { s_.push_back(static_cast<char>(v)); }
  void U32(uint32_t v) { Raw(&v, 4); }
  void U64(uint64_t v) { Raw(&v, 8); }
  void Raw(const void* p, size_t n) { s_.append(static_cast<const char*>(p), n); }
  std::string& str() { return s_; }

 private:
  std::string s_;
};

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

std::string EncodeCheckpoint(const CheckpointHeader& h,
                             const std::vector<const SegmentSummary*>& segments,
                             const StreamMap& streams) {
  Writer w;
  w.Raw(format::kCheckpointMagic, 8);
  w.U32(format::kFormatVersion);
  w.U32(h.partition);
  w.U32(h.tail_segment);
  w.U32(h.tail_offset);
  w.U64(h.last_position);
  w.U64(static_cast<uint64_t>(h.last_recorded_at_ns));
  w.U32(static_cast<uint32_t>(segments.size()));
  w.U64(streams.size());
  for (const SegmentSummary* s : segments) {
    w.U32(s->id);
    w.U32(s->end_offset);
    w.U64(s->first_position);
    w.U64(s->last_position);
    w.U32(static_cast<uint32_t>(s->samples.size()));
    for (const PositionSample& p : s->samples) {
      w.U64(p.position);
      w.U32(p.offset);
    }
  }
  for (const auto& [name, e] : streams) {
    w.U8(static_cast<uint8_t>(name.size()));
    w.Raw(name.data(), name.size());
    w.U64(e.head_version);
    w.U64(e.head_location);
    w.Raw(e.head_event_id.data(), 16);
    w.U64(static_cast<uint64_t>(e.first_recorded_at_ns));
    w.U64(static_cast<uint64_t>(e.last_recorded_at_ns));
    w.U32(e.anchor_stride);
    w.U8(e.anchor_count);
    for (uint8_t i = 0; i < e.anchor_count; ++i) {
      w.U64(e.anchors[i].version);
      w.U64(e.anchors[i].location);
    }
  }
  w.U64(format::Checksum(w.str().data(), w.str().size()));
  return std::move(w.str());
}

Status DecodeCheckpoint(std::string_view data, const std::string& file, CheckpointHeader* h,
                        std::vector<SegmentSummary>* segments, StreamMap* streams) {
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
  if (!r.U32(&version) || version != format::kFormatVersion) return bad("unsupported version");
  if (!r.U32(&h->partition) || !r.U32(&h->tail_segment) || !r.U32(&h->tail_offset) ||
      !r.U64(&h->last_position) || !r.I64(&h->last_recorded_at_ns) || !r.U32(&segment_count) ||
      !r.U64(&stream_count))
    return bad("truncated header");
  // Counts come from the file: bound them by the bytes left before sizing.
  if (!r.CouldHold(segment_count, 28) || !r.CouldHold(stream_count, 55)) return bad("counts exceed the file");
  segments->resize(segment_count);
  for (SegmentSummary& s : *segments) {
    uint32_t n = 0;
    if (!r.U32(&s.id) || !r.U32(&s.end_offset) || !r.U64(&s.first_position) ||
        !r.U64(&s.last_position) || !r.U32(&n))
      return bad("truncated segment summary");
    if (!r.CouldHold(n, 12)) return bad("sample count exceeds the file");
    s.samples.resize(n);
    for (PositionSample& p : s.samples)
      if (!r.U64(&p.position) || !r.U32(&p.offset)) return bad("truncated position sample");
  }
  streams->reserve(stream_count);
  for (uint64_t i = 0; i < stream_count; ++i) {
    uint8_t len = 0;
    std::string name;
    StreamEntry e;
    if (!r.U8(&len) || len == 0 || !r.Str(&name, len) || !r.U64(&e.head_version) ||
        !r.U64(&e.head_location) || !r.Raw(e.head_event_id.data(), 16) ||
        !r.I64(&e.first_recorded_at_ns) || !r.I64(&e.last_recorded_at_ns) ||
        !r.U32(&e.anchor_stride) || !r.U8(&e.anchor_count) ||
        e.anchor_count > e.anchors.size() || e.anchor_stride == 0)
      return bad("truncated or invalid stream entry");
    for (uint8_t a = 0; a < e.anchor_count; ++a)
      if (!r.U64(&e.anchors[a].version) || !r.U64(&e.anchors[a].location))
        return bad("truncated anchor");
    if (!streams->emplace(std::move(name), e).second) return bad("duplicate stream entry");
  }
  if (!r.done()) return bad("trailing bytes");
  return Status::Ok();
}

}  // namespace annal
