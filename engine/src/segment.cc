#include "segment.h"

#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "annal/assert.h"
#include "sealed.h"

namespace annal {

Status CorruptionAt(const SegmentFile& seg, uint64_t offset, const std::string& why) {
  return Status::Corruption(seg.path + " at offset " + std::to_string(offset) + ": " + why);
}

TailCache::TailCache(size_t capacity, uint64_t start, std::shared_ptr<Counters> counters,
                     std::unique_ptr<uint8_t[]> ring)
    : ring_(std::move(ring)), capacity_(capacity), start_(start), end_(start), counters_(std::move(counters)) {
  ANNAL_ASSERT(capacity > 0 && counters_ != nullptr);
  if (ring_) return;  // counted by the cache it came from
  ring_.reset(new uint8_t[capacity_]);
  counters_->ring_bytes.fetch_add(capacity_, std::memory_order_relaxed);
}

TailCache::~TailCache() {
  if (ring_) counters_->ring_bytes.fetch_sub(capacity_, std::memory_order_relaxed);
}

template <typename Fn>
void TailCache::ForEachPiece(uint64_t offset, size_t len, Fn fn) const {
  for (size_t done = 0; done < len;) {
    size_t at = static_cast<size_t>((offset + done) % capacity_);
    size_t n = std::min(len - done, capacity_ - at);
    fn(at, done, n);
    done += n;
  }
}

void TailCache::Add(uint64_t offset, const uint8_t* data, size_t len) {
  std::lock_guard lock(mu_);
  if (!ring_) return;
  ANNAL_ASSERT(offset == end_);
  if (len > capacity_) {  // only the last capacity_ bytes can be kept
    data += len - capacity_;
    offset += len - capacity_;
    len = capacity_;
  }
  ForEachPiece(offset, len, [&](size_t ring_at, size_t flat_at, size_t n) {
    std::memcpy(ring_.get() + ring_at, data + flat_at, n);
  });
  end_ = offset + len;
  start_ = std::max(start_, end_ > capacity_ ? end_ - capacity_ : 0);
}

bool TailCache::Read(uint64_t offset, size_t len, uint8_t* out) const {
  std::lock_guard lock(mu_);
  if (!ring_ || offset < start_ || offset + len > end_) {
    counters_->misses.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  counters_->hits.fetch_add(1, std::memory_order_relaxed);
  ForEachPiece(offset, len, [&](size_t ring_at, size_t flat_at, size_t n) {
    std::memcpy(out + flat_at, ring_.get() + ring_at, n);
  });
  return true;
}

std::unique_ptr<uint8_t[]> TailCache::TakeRing() {
  std::lock_guard lock(mu_);
  return std::move(ring_);
}

Status SegmentFile::Read(uint64_t offset, size_t len, uint8_t* out) const {
  if (sealed) return sealed->Read(offset, len, out);
  if (tail && tail->Read(offset, len, out)) return Status::Ok();
  return fs::PreadExact(fd.get(), out, len, offset, path);
}

std::shared_ptr<SegmentFile> SealedSegmentFile(uint32_t id, std::shared_ptr<SealedSegment> sealed) {
  auto seg = std::make_shared<SegmentFile>();
  seg->id = id;
  seg->path = sealed->path();
  seg->size_bytes = seg->capacity_bytes = sealed->data_end();
  seg->sealed = std::move(sealed);
  return seg;
}

static constexpr std::string_view kTempSuffix = ".tmp";
// Zero-fill writes this much at a time: small enough that an appender's
// fdatasync queued behind one such write waits little.
static constexpr size_t kZeroFillChunkBytes = 256 * 1024;

// Writes the header and zeros over the whole file. Direct I/O where the
// filesystem has it, one chunk in flight at a time, so filling a segment
// neither floods the page cache nor queues a burst in front of appends.
static Status ZeroFill(const std::string& path, const format::SegmentHeader& header) {
  ANNAL_ASSIGN_OR_RETURN(fs::Fd fd, fs::OpenDirectIfPossible(path, O_WRONLY));
  constexpr size_t kAlign = fs::kDirectIoAlignment;
  static_assert(kZeroFillChunkBytes % kAlign == 0);
  std::unique_ptr<uint8_t, decltype(&std::free)> chunk(
      static_cast<uint8_t*>(std::aligned_alloc(kAlign, kZeroFillChunkBytes)), &std::free);
  if (!chunk) return Status::IoError("out of memory for a zero-fill buffer");
  std::memset(chunk.get(), 0, kZeroFillChunkBytes);
  format::EncodeSegmentHeader(header, chunk.get());
  for (uint64_t at = 0; at < header.segment_bytes; at += kZeroFillChunkBytes) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(kZeroFillChunkBytes, header.segment_bytes - at));
    ANNAL_RETURN_IF_ERROR(fs::PwriteAll(fd.get(), chunk.get(), n, at, path));
    if (at == 0) std::memset(chunk.get(), 0, format::kSegmentHeaderBytes);
  }
  return Status::Ok();
}

bool IsSegmentTempFile(std::string_view name) {
  uint32_t id;
  return name.size() > kTempSuffix.size() && name.ends_with(kTempSuffix) &&
         format::ParseSegmentFileName(name.substr(0, name.size() - kTempSuffix.size()), &id);
}

Result<std::shared_ptr<SegmentFile>> CreateSegment(const std::string& dir,
                                                   const format::SegmentHeader& header) {
  auto seg = std::make_shared<SegmentFile>();
  seg->id = header.segment_id;
  seg->path = fs::Join(dir, format::SegmentFileName(header.segment_id));
  seg->size_bytes = seg->capacity_bytes = header.segment_bytes;
  std::string tmp = seg->path + std::string(kTempSuffix);
  ANNAL_ASSIGN_OR_RETURN(seg->fd, fs::Open(tmp, O_RDWR | O_CREAT | O_TRUNC));
  // Reserve the space first, so a full disk fails here, cheaply.
  if (::fallocate(seg->fd.get(), 0, 0, static_cast<off_t>(header.segment_bytes)) != 0)
    return Status::FromErrno(errno, "fallocate " + tmp);
  ANNAL_RETURN_IF_ERROR(ZeroFill(tmp, header));
  ANNAL_RETURN_IF_ERROR(fs::Fdatasync(seg->fd.get(), tmp));
  if (::rename(tmp.c_str(), seg->path.c_str()) != 0)
    return Status::FromErrno(errno, "rename " + tmp + " to " + seg->path);
  ANNAL_RETURN_IF_ERROR(fs::SyncDir(dir));
  return seg;
}

Result<std::shared_ptr<SegmentFile>> OpenSegment(const std::string& dir, uint32_t segment_id,
                                                 const format::SegmentHeader& expected,
                                                 BlockCache* cache, int open_flags) {
  const uint64_t segment_bytes = expected.segment_bytes;
  auto seg = std::make_shared<SegmentFile>();
  seg->id = segment_id;
  seg->path = fs::Join(dir, format::SegmentFileName(segment_id));
  // One descriptor decides what the file is and, unsealed, reads it: a
  // sealing that renames over the path meanwhile (tools read directories
  // annald is using) does not mix two versions of the file.
  ANNAL_ASSIGN_OR_RETURN(seg->fd, fs::OpenShared(seg->path, open_flags));
  ANNAL_ASSIGN_OR_RETURN(seg->size_bytes, fs::FileSize(seg->fd.get(), seg->path));
  if (seg->size_bytes < format::kSegmentHeaderBytes)
    return Status::Corruption(seg->path + ": shorter than a segment header");
  uint8_t buf[format::kSegmentHeaderBytes];
  ANNAL_RETURN_IF_ERROR(fs::PreadExact(seg->fd.get(), buf, sizeof buf, 0, seg->path));
  if (std::memcmp(buf, format::kSealedMagic, sizeof format::kSealedMagic) == 0) {
    // A sealed file is never replaced again: opening it by path is safe.
    format::SegmentHeader h = expected;
    h.segment_id = segment_id;
    ANNAL_ASSIGN_OR_RETURN(auto sealed, SealedSegment::Open(seg->path, h, cache));
    return SealedSegmentFile(segment_id, std::move(sealed));
  }
  format::SegmentHeader h;
  ANNAL_RETURN_IF_ERROR(format::DecodeSegmentHeader(buf, seg->path, &h));
  if (h.segment_id != segment_id || h.partition != expected.partition ||
      h.partitions != expected.partitions)
    return Status::Corruption(seg->path + ": header names partition " +
                              std::to_string(h.partition) + " segment " +
                              std::to_string(h.segment_id) + ", not where the file lies");
  if (h.segment_bytes != segment_bytes || seg->size_bytes > segment_bytes)
    return Status::Corruption(seg->path + ": segment size differs from the store's manifest");
  // A file shorter than its capacity was cut (by a tool or a filesystem
  // losing its tail); recovery reads what is there and extends it again.
  seg->capacity_bytes = segment_bytes;
  return seg;
}

static bool AllZero(const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (p[i]) return false;
  return true;
}

Result<bool> SegmentNeverWritten(const std::string& path) {
  ANNAL_ASSIGN_OR_RETURN(fs::Fd fd, fs::Open(path, O_RDONLY));
  ANNAL_ASSIGN_OR_RETURN(uint64_t size, fs::FileSize(fd.get(), path));
  if (size < format::kSegmentHeaderBytes) return true;
  uint8_t buf[format::kSegmentHeaderBytes + format::kBatchHeaderBytes] = {};
  size_t n = static_cast<size_t>(std::min<uint64_t>(size, sizeof buf));
  ANNAL_RETURN_IF_ERROR(fs::PreadExact(fd.get(), buf, n, 0, path));
  return format::Get64(buf + format::kSegmentHeaderChecksumOffset) == 0 &&
         AllZero(buf + format::kSegmentHeaderBytes, format::kBatchHeaderBytes);
}

Result<bool> ZeroFrom(const SegmentFile& seg, uint64_t from) {
  std::vector<uint8_t> buf(1 << 20);
  for (uint64_t at = from; at < seg.size_bytes;) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), seg.size_bytes - at));
    ANNAL_RETURN_IF_ERROR(seg.Read(at, n, buf.data()));
    if (!AllZero(buf.data(), n)) return false;
    at += n;
  }
  return true;
}

bool HoldsNoBatch(const SegmentFile& seg) {
  std::vector<uint8_t> buf;
  format::BatchHeader h;
  Result<BatchCheck> c = CheckBatchAt(seg, format::kSegmentHeaderBytes, &buf, &h);
  return c.ok() && c->kind == BatchCheck::kEnd;
}

Result<BatchCheck> CheckBatchAt(const SegmentFile& seg, uint64_t offset,
                                std::vector<uint8_t>* buf, format::BatchHeader* header) {
  return CheckBatchAt(
      seg, offset, [&seg](uint64_t at, size_t len, uint8_t* out) { return seg.Read(at, len, out); },
      buf, header);
}

Result<BatchCheck> CheckBatchAt(const SegmentFile& seg, uint64_t offset, const SegmentReadFn& read,
                                std::vector<uint8_t>* buf, format::BatchHeader* header) {
  using format::kBatchHeaderBytes;
  if (offset + kBatchHeaderBytes > seg.size_bytes) return BatchCheck{BatchCheck::kEnd, ""};
  uint8_t hb[kBatchHeaderBytes];
  ANNAL_RETURN_IF_ERROR(read(offset, sizeof hb, hb));
  if (AllZero(hb, sizeof hb)) return BatchCheck{BatchCheck::kEnd, ""};
  Status s = format::DecodeBatchHeader(hb, header);
  if (!s.ok()) {
    // A write persists from its start; a header cut short has a zero checksum.
    bool torn = format::Get64(hb + format::kBatchHeaderChecksumOffset) == 0;
    return BatchCheck{torn ? BatchCheck::kTorn : BatchCheck::kCorrupt, s.message()};
  }
  if (offset + header->length > seg.size_bytes) {
    // In a cut file the batch's end was never written; in a whole one the
    // length itself is wrong.
    bool cut = seg.size_bytes < seg.capacity_bytes;
    return BatchCheck{cut ? BatchCheck::kTorn : BatchCheck::kCorrupt,
                      "batch runs past the end of the file", true};
  }
  buf->resize(header->length);
  ANNAL_RETURN_IF_ERROR(read(offset, header->length, buf->data()));
  uint64_t stored = format::Get64(buf->data() + header->length - format::kBatchTrailerBytes);
  if (stored == format::BatchChecksum(buf->data(), header->length))
    return BatchCheck{BatchCheck::kValid, "", true};
  if (stored == 0) return BatchCheck{BatchCheck::kTorn, "batch trailer was never written", true};
  return BatchCheck{BatchCheck::kCorrupt, "batch checksum mismatch", true};
}

Result<std::unique_ptr<SequentialSegmentReader>> SequentialSegmentReader::Open(const SegmentFile& seg) {
  ANNAL_ASSERT(!seg.sealed);
  bool direct;
  ANNAL_ASSIGN_OR_RETURN(fs::Fd fd, fs::OpenDirectIfPossible(seg.path, O_RDONLY, &direct));
  if (!direct) (void)::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_RANDOM);  // no read-ahead
  return std::unique_ptr<SequentialSegmentReader>(new SequentialSegmentReader(seg, std::move(fd)));
}

Status SequentialSegmentReader::Read(uint64_t offset, size_t len, uint8_t* out) {
  if (offset < window_start_ || offset + len > window_end_) ANNAL_RETURN_IF_ERROR(Fill(offset, len));
  std::memcpy(out, window_.data() + (offset - window_start_), len);
  return Status::Ok();
}

Status SequentialSegmentReader::Fill(uint64_t offset, size_t len) {
  constexpr uint64_t kAlign = fs::kDirectIoAlignment;
  uint64_t start = offset / kAlign * kAlign;
  uint64_t end = std::max<uint64_t>(offset + len, start + kChunkBytes);
  end = (end + kAlign - 1) / kAlign * kAlign;
  size_t want = static_cast<size_t>(end - start);
  window_.Reserve(want);
  window_start_ = window_end_ = start;
  // The file may end inside the last chunk: a short read is fine as long as
  // it covers what was asked for.
  ANNAL_ASSIGN_OR_RETURN(size_t got, fs::PreadUpTo(fd_.get(), window_.data(), want, start, seg_.path));
  window_end_ = start + got;
  if (offset + len > window_end_)
    return CorruptionAt(seg_, window_end_, "file ends before offset " + std::to_string(offset + len));
  return Status::Ok();
}

Status ForEachRecord(const SegmentFile& seg, uint64_t batch_offset, const uint8_t* batch,
                     const format::BatchHeader& header,
                     const std::function<Status(const format::RecordView&, uint32_t)>& fn) {
  size_t at = format::kBatchHeaderBytes;
  size_t end = header.length - format::kBatchTrailerBytes;
  for (uint32_t i = 0; i < header.count; ++i) {
    format::RecordView r;
    Status s = format::DecodeRecord(batch + at, end - at, &r);
    if (!s.ok()) return CorruptionAt(seg, batch_offset + at, s.message());
    if (r.position != header.first_position + i)
      return CorruptionAt(seg, batch_offset + at, "record position out of sequence");
    ANNAL_RETURN_IF_ERROR(fn(r, static_cast<uint32_t>(at)));
    at += r.length;
  }
  if (at != end) return CorruptionAt(seg, batch_offset + at, "batch has bytes after its records");
  return Status::Ok();
}

}  // namespace annal
