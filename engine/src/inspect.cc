#include "inspect.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "annal/assert.h"
#include "annal/limits.h"
#include "fs.h"
#include "sealed.h"

namespace annal::inspect {

using format::kBatchHeaderBytes;
using format::kSegmentHeaderBytes;

namespace {

bool AllZero(const uint8_t* p, size_t n) {
  return std::all_of(p, p + n, [](uint8_t b) { return b == 0; });
}

// Walks valid batches from `offset` while they lie before `until`, noting
// each in `extent`; the walk ends at the end of data or at damage.
void WalkBatches(const SegmentFile& seg, uint64_t offset, uint64_t until, SegmentExtent* extent) {
  std::vector<uint8_t> buf;
  // Each step passes one batch of at least header + trailer bytes, so the
  // loop ends within the file's size.
  while (offset < until) {
    format::BatchHeader h;
    Result<BatchCheck> c = CheckBatchAt(seg, offset, &buf, &h);
    if (!c.ok()) {
      extent->problem = c.status();
      return;
    }
    if (c->kind == BatchCheck::kEnd) return;
    if (c->kind != BatchCheck::kValid) {
      std::string why = c->kind == BatchCheck::kTorn ? "torn batch: " + c->why : c->why;
      extent->problem = CorruptionAt(seg, offset, why);
      if (c->kind == BatchCheck::kTorn) extent->torn = TornBatch{offset, *c, h};
      return;
    }
    ANNAL_ASSERT(h.length >= kBatchHeaderBytes + format::kBatchTrailerBytes);
    if (!extent->first) extent->first = BatchRef{offset, h};
    extent->last = BatchRef{offset, h};
    offset += h.length;
    extent->data_end = offset;
  }
}

SegmentExtent SealedExtent(const SegmentFile& seg) {
  SegmentExtent extent;
  const uint64_t data_end = seg.sealed->data_end();
  if (data_end == kSegmentHeaderBytes) return extent;
  // The first batch, then every batch from the last one the block map
  // names (blocks cut through batches; most name the first that starts in
  // them).
  WalkBatches(seg, kSegmentHeaderBytes, kSegmentHeaderBytes + 1, &extent);
  if (!extent.problem.ok()) return extent;
  Result<std::shared_ptr<const std::vector<BlockEntry>>> blocks = seg.sealed->Blocks();
  if (!blocks.ok()) {
    extent.problem = blocks.status();
    return extent;
  }
  ANNAL_ASSERT(!(*blocks)->empty());  // the map covers [64, data_end), verified
  uint64_t last_named = kSegmentHeaderBytes;
  for (const BlockEntry& b : **blocks)
    if (b.batch_offset != 0) last_named = b.batch_offset;
  WalkBatches(seg, last_named, data_end, &extent);
  if (extent.problem.ok() && extent.data_end != data_end)
    extent.problem =
        CorruptionAt(seg, extent.data_end,
                     "batches end before the sealed footer's data end " + std::to_string(data_end));
  return extent;
}

}  // namespace

Result<format::Manifest> ReadManifest(const std::string& dir) {
  const std::string path = fs::Join(dir, format::ManifestName());
  if (!fs::Exists(path)) return Status::NotFound(dir + " has no " + format::ManifestName());
  ANNAL_ASSIGN_OR_RETURN(std::string data, fs::ReadWholeFile(path));
  if (data.size() != format::kManifestBytes)
    return Status::Corruption(path + ": manifest has the wrong size (" +
                              std::to_string(data.size()) + " bytes, not " +
                              std::to_string(format::kManifestBytes) + ")");
  format::Manifest m;
  ANNAL_RETURN_IF_ERROR(
      format::DecodeManifest(reinterpret_cast<const uint8_t*>(data.data()), path, &m));
  return m;
}

std::string PartitionDir(const std::string& data_dir, uint32_t partition) {
  return fs::Join(data_dir, format::PartitionDirName(partition));
}

Result<std::vector<uint32_t>> ListSegmentIds(const std::string& partition_dir) {
  if (!fs::Exists(partition_dir)) return std::vector<uint32_t>();
  ANNAL_ASSIGN_OR_RETURN(std::vector<std::string> names, fs::ListDir(partition_dir));
  std::vector<uint32_t> ids;
  for (const std::string& n : names) {
    uint32_t id;
    if (format::ParseSegmentFileName(n, &id)) ids.push_back(id);
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

bool ParseSegmentPath(const std::string& path, SegmentLocation* out) {
  // Relative paths stay relative, so messages name files as the user did;
  // only a path without its partition directory is made absolute.
  std::filesystem::path p = std::filesystem::path(path).lexically_normal();
  if (p.parent_path().filename().empty()) {
    std::error_code ec;
    p = std::filesystem::absolute(p, ec).lexically_normal();
    if (ec) return false;
  }
  if (!format::ParseSegmentFileName(p.filename().string(), &out->segment_id)) return false;
  // Partition directory names are made in format.cc only: match against them.
  const std::string dir_name = p.parent_path().filename().string();
  for (uint32_t partition = 0; partition < limits::kMaxPartitions; ++partition) {
    if (format::PartitionDirName(partition) != dir_name) continue;
    out->partition = partition;
    // Built whole and moved in: GCC 12 at -O3 took assigning "." to a
    // string for an overlapping copy (-Wrestrict) and failed the build.
    std::string data_dir = p.parent_path().parent_path().string();
    out->data_dir = data_dir.empty() ? std::string(".") : std::move(data_dir);
    return true;
  }
  return false;
}

Result<std::shared_ptr<SegmentFile>> OpenSegmentReadOnly(const std::string& data_dir,
                                                         const format::Manifest& manifest,
                                                         uint32_t partition, uint32_t segment_id,
                                                         BlockCache* cache) {
  const format::SegmentHeader expected{partition, segment_id, manifest.segment_bytes, manifest.partitions};
  return OpenSegment(PartitionDir(data_dir, partition), segment_id, expected, cache, O_RDONLY);
}

Result<uint64_t> FileBytes(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return Status::FromErrno(errno, "stat " + path);
  return static_cast<uint64_t>(st.st_size);
}

uint64_t TornBatchEnd(const TornBatch& t) {
  const bool whole_header = t.check.header_valid && t.header.length >= kBatchHeaderBytes;
  return t.offset + (whole_header ? t.header.length : kBatchHeaderBytes);
}

SegmentExtent FindExtent(const SegmentFile& seg) {
  if (seg.sealed) return SealedExtent(seg);
  SegmentExtent extent;
  WalkBatches(seg, kSegmentHeaderBytes, seg.size_bytes, &extent);
  return extent;
}

Result<uint64_t> FirstBatchAtOrAfter(const SegmentFile& seg, uint64_t from) {
  uint64_t offset = kSegmentHeaderBytes;
  if (seg.sealed && from > offset) {
    ANNAL_ASSIGN_OR_RETURN(auto blocks, seg.sealed->Blocks());
    for (const BlockEntry& b : *blocks)
      if (b.batch_offset != 0 && b.batch_offset <= from) offset = b.batch_offset;
  }
  while (offset < from && offset + kBatchHeaderBytes <= seg.size_bytes) {
    uint8_t hb[kBatchHeaderBytes];
    ANNAL_RETURN_IF_ERROR(seg.Read(offset, sizeof hb, hb));
    if (AllZero(hb, sizeof hb)) return offset;  // the end of the data
    format::BatchHeader h;
    Status s = format::DecodeBatchHeader(hb, &h);
    if (!s.ok()) return CorruptionAt(seg, offset, s.message());
    ANNAL_ASSERT(h.length >=
                 kBatchHeaderBytes + format::kBatchTrailerBytes);  // checked by the decoder
    offset += h.length;
  }
  return offset;
}

Result<std::string> StreamAt(const SegmentFile& seg, uint64_t offset) {
  if (offset >= seg.size_bytes)
    return CorruptionAt(seg, offset, "record lies past the end of the data");
  uint8_t buf[format::kRecordHeaderBytes + limits::kMaxStreamNameBytes];
  const size_t n = static_cast<size_t>(std::min<uint64_t>(sizeof buf, seg.size_bytes - offset));
  ANNAL_RETURN_IF_ERROR(seg.Read(offset, n, buf));
  format::RecordView r;
  Status s = format::DecodeRecordHeader(buf, n, &r);
  if (!s.ok()) return CorruptionAt(seg, offset, s.message());
  if (r.stream.empty()) return CorruptionAt(seg, offset, "record's stream name runs past the data");
  return std::string(r.stream);
}

Result<std::optional<Checkpoint>> ReadCheckpoint(const std::string& partition_dir) {
  Checkpoint c;
  c.path = fs::Join(partition_dir, format::CheckpointFileName());
  if (!fs::Exists(c.path)) return std::optional<Checkpoint>();
  ANNAL_ASSIGN_OR_RETURN(std::string data, fs::ReadWholeFile(c.path));
  c.file_bytes = data.size();
  ANNAL_RETURN_IF_ERROR(DecodeCheckpoint(data, c.path, &c.header, &c.segments, &c.streams));
  return std::optional<Checkpoint>(std::move(c));
}

}  // namespace annal::inspect
