// Segment files: creation, validation and batch-level reading. Segment file
// names are made and parsed in format.cc only.
//
// A partition appends batches to its highest segment. A segment is
// preallocated to its full size and zero-filled, so the end of its data is
// the first all-zero batch header.
#pragma once

#include <fcntl.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "annal/status.h"
#include "format.h"
#include "fs.h"

namespace annal {

class SealedSegment;
class BlockCache;

// The newest bytes of an unsealed segment's log, kept in memory for readers
// close behind the writer (live subscriptions, reads of recent events). The
// log is written with direct I/O, which leaves nothing in the page cache,
// so without it every such read went to the device, in front of the log's
// own syncs, and with the kernel's read-ahead into the zeros past the end
// of the data (docs/benchmarks.md). The writer adds each batch once it is
// durable; a ring holds the last `capacity` bytes.
class TailCache {
 public:
  // Reads served and missed, and the memory of the rings, shared by a
  // partition's caches.
  struct Counters {
    std::atomic<uint64_t> hits{0};
    std::atomic<uint64_t> misses{0};
    std::atomic<uint64_t> ring_bytes{0};
  };

  // Empty; the first byte added will be the segment's byte at `start`. The
  // ring is `ring` when given (from TakeRing of a cache of the same
  // capacity and counters): reusing one costs the writer nothing, where
  // freeing 16 MiB of touched memory took it about 3 ms.
  TailCache(size_t capacity, uint64_t start, std::shared_ptr<Counters> counters,
            std::unique_ptr<uint8_t[]> ring = nullptr);
  ~TailCache();
  TailCache(const TailCache&) = delete;
  TailCache& operator=(const TailCache&) = delete;
  // Adds the segment's bytes [offset, offset + len); `offset` is where the
  // last addition ended.
  void Add(uint64_t offset, const uint8_t* data, size_t len);
  // Copies [offset, offset + len) and returns true when it is all held.
  bool Read(uint64_t offset, size_t len, uint8_t* out) const;
  // Gives up the ring, for a new TailCache to reuse (it stays counted in
  // ring_bytes until that one ends); from then on every read misses and
  // additions are dropped.
  std::unique_ptr<uint8_t[]> TakeRing();

 private:
  // Calls fn(ring index, offset from `offset`, length) for the one or two
  // contiguous pieces of the ring that hold the segment's [offset, offset + len).
  template <typename Fn>
  void ForEachPiece(uint64_t offset, size_t len, Fn fn) const;

  mutable std::mutex mu_;
  // Segment byte b sits at ring_[b % capacity_]. Not zeroed: memory is
  // touched as the log fills it.
  std::unique_ptr<uint8_t[]> ring_;
  size_t capacity_;
  uint64_t start_, end_;  // held: [start_, end_)
  std::shared_ptr<Counters> counters_;
};

struct SegmentFile {
  uint32_t id = 0;
  std::string path;
  fs::Fd fd;
  uint64_t size_bytes = 0;      // as found on disk
  uint64_t capacity_bytes = 0;  // the store's segment size; writes stay below it
  // Set when the file is sealed (sealed.h). The log then reads as it was
  // written, and size_bytes and capacity_bytes are the end of its data.
  std::shared_ptr<SealedSegment> sealed;
  // Set before the segment is shared when it is written to (the active one);
  // never changed after.
  std::shared_ptr<TailCache> tail;

  // Reads `len` bytes of the log at `offset`: from the tail cache, from the
  // file, or from a sealed file's verified blocks.
  Status Read(uint64_t offset, size_t len, uint8_t* out) const;
};

// Creates a segment file that survives a crash once this returns: it is
// written in full (header, then zeros) under a temporary name, fsynced,
// renamed into place, and the directory fsynced. Writing the zeros, rather
// than leaving fallocate'd unwritten extents, means a later fdatasync of an
// overwrite has no extent conversion to journal: on ext4 it is about twice
// as fast (docs/benchmarks.md). A crash before the rename leaves only a
// temporary file, which recovery removes.
Result<std::shared_ptr<SegmentFile>> CreateSegment(const std::string& dir,
                                                   const format::SegmentHeader& header);
// The temporary name CreateSegment writes to before the rename.
bool IsSegmentTempFile(std::string_view name);
// Opens a segment and validates its header: with `open_flags` (O_RDWR for
// the store, O_RDONLY for tools), or for reading through `cache` when it is
// sealed.
Result<std::shared_ptr<SegmentFile>> OpenSegment(const std::string& dir, uint32_t segment_id,
                                                 const format::SegmentHeader& expected,
                                                 BlockCache* cache, int open_flags = O_RDWR);
// A SegmentFile reading the sealed file `sealed`, for segment `id`.
std::shared_ptr<SegmentFile> SealedSegmentFile(uint32_t id, std::shared_ptr<SealedSegment> sealed);

// True when the segment at `path` was created but never reached the point
// where batches are written to it: shorter than a header, or a header whose
// checksum field is still zero with no batch after it. Such a file can hold
// no acknowledged event.
Result<bool> SegmentNeverWritten(const std::string& path);

// True when every byte of `seg` in [from, its size) is zero.
Result<bool> ZeroFrom(const SegmentFile& seg, uint64_t from);

// True when `seg` holds no batch: what lies at its first batch offset is
// the end of data. False, too, when that cannot be read or is not the end
// (a batch, torn or damaged): callers deciding whether data follows
// something must then assume it does.
bool HoldsNoBatch(const SegmentFile& seg);

// What lies at one offset of a segment.
struct BatchCheck {
  enum Kind {
    kValid,    // a whole batch whose checksums hold
    kEnd,      // an all-zero header: no more data in this segment
    kTorn,     // fails validation, and its last checksum field was never written
    kCorrupt,  // fails validation although it was written whole
  };
  Kind kind = kValid;
  std::string why;
  bool header_valid = false;  // the header's own checks passed
};

// Reads the batch at `offset` into `buf` (resized to the batch) and
// classifies it. I/O errors come back as a non-ok Status. The second form
// reads through `read` (same contract as SegmentFile::Read).
using SegmentReadFn = std::function<Status(uint64_t offset, size_t len, uint8_t* out)>;
Result<BatchCheck> CheckBatchAt(const SegmentFile& seg, uint64_t offset,
                                std::vector<uint8_t>* buf, format::BatchHeader* header);
Result<BatchCheck> CheckBatchAt(const SegmentFile& seg, uint64_t offset, const SegmentReadFn& read,
                                std::vector<uint8_t>* buf, format::BatchHeader* header);

// Reads an unsealed segment from front to back for a background scan
// (sealing), one chunk at a time with direct I/O: the device then never has
// more than one chunk of this scan in front of the log's own writes. Buffered
// reads would bring the kernel's read-ahead, which on some devices is 8 MiB,
// about 6 ms of device time queued ahead of an append's sync. Where the
// filesystem has no direct I/O the chunks are read buffered, with the
// kernel's read-ahead turned off for this descriptor.
class SequentialSegmentReader {
 public:
  static constexpr size_t kChunkBytes = 128 * 1024;
  static Result<std::unique_ptr<SequentialSegmentReader>> Open(const SegmentFile& seg);
  // Reads `len` bytes at `offset`. Fastest when offsets only grow.
  Status Read(uint64_t offset, size_t len, uint8_t* out);

 private:
  SequentialSegmentReader(const SegmentFile& seg, fs::Fd fd) : seg_(seg), fd_(std::move(fd)) {}
  // Fills the window with the aligned range around [offset, offset + len).
  Status Fill(uint64_t offset, size_t len);

  const SegmentFile& seg_;
  fs::Fd fd_;
  fs::AlignedBuffer window_{fs::kDirectIoAlignment};
  uint64_t window_start_ = 0;
  uint64_t window_end_ = 0;  // bytes [window_start_, window_end_) are in window_
};

// Calls `fn` for each record of a verified batch with its offset inside the
// batch; checks record checksums and that positions run first_position + i.
// Errors name the file and the record's file offset.
Status ForEachRecord(const SegmentFile& seg, uint64_t batch_offset, const uint8_t* batch,
                     const format::BatchHeader& header,
                     const std::function<Status(const format::RecordView&, uint32_t)>& fn);

// A Corruption status naming file and offset.
Status CorruptionAt(const SegmentFile& seg, uint64_t offset, const std::string& why);

}  // namespace annal
