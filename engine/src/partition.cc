#include "partition.h"

#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <cstdio>

#include "annal/assert.h"
#include "sealed.h"

namespace annal {

using format::kBatchHeaderBytes;
using format::kBatchTrailerBytes;
using format::kNoLocation;
using format::kSegmentHeaderBytes;

// A stream read whose first version is at most this many versions below
// where it starts (the head) follows back-pointers rather than segment
// indexes: it reads those records' headers instead of one index lookup per
// segment they lie in.
constexpr uint64_t kBackPointerWalkEvents = 256;
// Direct writes start, end and sit in memory on this alignment.
using fs::kDirectIoAlignment;
// How often the finisher looks whether a retired segment's readers are gone.
constexpr std::chrono::milliseconds kRetiredPollInterval{100};
// How far ahead of its scan recovery asks the kernel to read.
constexpr uint64_t kRecoveryReadaheadBytes = 16 * 1024 * 1024;

void Partition::Batch::Reset() {
  bytes.clear();
  record_offsets.clear();
  ops.clear();
  segment.reset();
  file_offset = 0;
  first_position = 0;
  recorded_at_ns = 0;
}

Partition::Partition(PartitionConfig config)
    : config_(std::move(config)), io_buffer_(kDirectIoAlignment) {}

Partition::~Partition() { StopWriter(); }

// Names `t` `prefix` and this partition's id, as `top -H` and debuggers
// show it (at most 15 characters). Named by its creator, so the name is
// there as soon as the thread is.
void Partition::NameThread(std::thread& t, const char* prefix) const {
  ::pthread_setname_np(t.native_handle(), (prefix + std::to_string(config_.id)).substr(0, 15).c_str());
}

void Partition::Log(const std::string& line) const {
  if (config_.log) config_.log("partition " + std::to_string(config_.id) + ": " + line);
}

uint64_t Partition::last_position() const {
  std::shared_lock lock(mu_);
  return last_position_;
}

int64_t Partition::last_recorded_at_ns() const {
  std::shared_lock lock(mu_);
  return last_recorded_at_ns_;
}

// ---------------------------------------------------------------- recovery

Status Partition::Recover() {
  ANNAL_RETURN_IF_ERROR(fs::CreateDir(config_.dir));
  ANNAL_ASSIGN_OR_RETURN(std::vector<std::string> names, fs::ListDir(config_.dir));
  std::vector<uint32_t> ids;
  bool removed = false;
  for (const std::string& n : names) {
    uint32_t id;
    if (format::ParseSegmentFileName(n, &id)) ids.push_back(id);
    if (IsSegmentTempFile(n) || format::IsSegmentIndexTempFile(n)) {
      // A segment (or segment index) whose creation or sealing a crash
      // interrupted before its rename.
      std::string path = fs::Join(config_.dir, n);
      if (::unlink(path.c_str()) != 0) return Status::FromErrno(errno, "unlink " + path);
      removed = true;
    }
  }
  if (removed) ANNAL_RETURN_IF_ERROR(fs::SyncDir(config_.dir));
  std::sort(ids.begin(), ids.end());
  for (size_t i = 1; i < ids.size(); ++i)
    if (ids[i] != ids[i - 1] + 1)
      return Status::Corruption(fs::Join(config_.dir, format::SegmentFileName(ids[i - 1] + 1)) +
                                ": segment file is missing");
  ANNAL_RETURN_IF_ERROR(OpenSegments(std::move(ids)));
  ANNAL_RETURN_IF_ERROR(OpenIndexes());
  restored_.assign(segments_.size(), false);
  uint32_t start_slot = 0, start_offset = kSegmentHeaderBytes;
  if (!LoadCheckpoint(&start_slot, &start_offset)) {
    start_slot = 0;
    start_offset = kSegmentHeaderBytes;
  } else {
    // The checkpoint carries the indexes of the segments that had no index
    // file then. One whose file is gone since is read again, with its time
    // samples (the checkpoint left those to the file).
    for (uint32_t i = 0; i <= start_slot; ++i) {
      SegmentSlot& slot = segments_[i];
      if (!slot.building || restored_[i]) continue;
      SegmentSummary scanned{slot.file->id, kSegmentHeaderBytes, 0, 0, 0, 0, {}};
      ANNAL_RETURN_IF_ERROR(IndexOnlyScan(*slot.file, i == start_slot ? start_offset : slot.summary.end_offset,
                                          slot.building.get(), &scanned));
      if (slot.summary.samples.empty()) slot.summary.samples = std::move(scanned.samples);
    }
  }
  ANNAL_RETURN_IF_ERROR(ScanFrom(start_slot, start_offset));
  if (!segments_.back().building || segments_.back().file->sealed) {
    // The last segment with data was finished (indexed, maybe sealed)
    // before the crash: appends go to a new one.
    std::shared_ptr<SegmentFile> seg = std::move(prepared_);
    if (!seg) {
      format::SegmentHeader h{config_.id, segments_.back().file->id + 1, config_.segment_bytes, config_.partitions};
      ANNAL_ASSIGN_OR_RETURN(seg, CreateSegment(config_.dir, h));
    }
    uint32_t id = seg->id;
    segments_.push_back(SegmentSlot{std::move(seg), SegmentSummary{id, kSegmentHeaderBytes, 0, 0, 0, 0, {}},
                                    std::make_unique<SegmentIndexBuilder>(id), nullptr});
  }
  active_ = segments_.back().file;
  write_offset_ = segments_.back().summary.end_offset;
  // Full segments whose index (or sealing) a crash or a stop interrupted.
  for (size_t i = 0; i + 1 < segments_.size(); ++i)
    if (segments_[i].building || (config_.seal && !segments_[i].file->sealed)) to_finish_.push_back(segments_[i].file->id);
  return Status::Ok();
}

Status Partition::OpenIndexes() {
  for (SegmentSlot& slot : segments_) {
    auto ix = SegmentIndex::Open(config_.dir, config_.id, slot.file->id, config_.cache);
    if (ix.ok()) {
      slot.index = std::move(*ix);
      continue;
    }
    if (ix.status().code() != StatusCode::kNotFound) {
      if (ix.status().code() != StatusCode::kCorruption) return ix.status();
      // Derived data: rebuilt from the segment.
      Log("rebuilding a damaged segment index: " + ix.status().message());
      std::string path = fs::Join(config_.dir, format::SegmentIndexFileName(slot.file->id));
      if (::unlink(path.c_str()) != 0) return Status::FromErrno(errno, "unlink " + path);
    }
    slot.building = std::make_unique<SegmentIndexBuilder>(slot.file->id);
  }
  return Status::Ok();
}

// Rebuilds a segment's stream index from its batches in [64, until), and
// its time samples into `summary` when given.
Status Partition::IndexOnlyScan(const SegmentFile& file, uint64_t until, SegmentIndexBuilder* index,
                                SegmentSummary* summary) {
  std::vector<uint8_t> buf;
  for (uint64_t offset = kSegmentHeaderBytes; offset < until;) {
    format::BatchHeader h;
    ANNAL_ASSIGN_OR_RETURN(BatchCheck c, CheckBatchAt(file, offset, &buf, &h));
    if (c.kind != BatchCheck::kValid)
      return CorruptionAt(file, offset, c.kind == BatchCheck::kEnd ? "data ends before the segment's recorded end" : c.why);
    ANNAL_RETURN_IF_ERROR(ForEachRecord(file, offset, buf.data(), h, [&](const format::RecordView& r, uint32_t at) {
      index->Add(format::StreamHash(r.stream), r.version, r.prev_location, static_cast<uint32_t>(offset + at));
      return Status::Ok();
    }));
    if (summary) summary->NoteBatch(static_cast<uint32_t>(offset), h.length, h.first_position, h.count, h.recorded_at_ns);
    offset += h.length;
  }
  return Status::Ok();
}

Status Partition::OpenSegments(std::vector<uint32_t> ids) {
  format::SegmentHeader h{config_.id, 0, config_.segment_bytes, config_.partitions};
  if (ids.empty()) {
    ANNAL_ASSIGN_OR_RETURN(auto seg, CreateSegment(config_.dir, h));
    segments_.push_back(SegmentSlot{seg, SegmentSummary{0, kSegmentHeaderBytes, 0, 0, {}}});
    return Status::Ok();
  }
  for (size_t i = 0; i < ids.size(); ++i) {
    bool newest = i + 1 == ids.size();
    auto seg = OpenSegment(config_.dir, ids[i], h, config_.cache);
    if (!seg.ok() && newest && seg.status().code() == StatusCode::kCorruption) {
      // A crash while creating the newest segment leaves its header
      // unwritten; its header is synced before any batch is written to it,
      // so it holds no acknowledged data. Make it again. Any other damage is
      // reported, never overwritten.
      std::string path = fs::Join(config_.dir, format::SegmentFileName(ids[i]));
      ANNAL_ASSIGN_OR_RETURN(bool never_written, SegmentNeverWritten(path));
      if (never_written) {
        Log("recreating " + path + ", whose creation was cut short (" + seg.status().message() + ")");
        h.segment_id = ids[i];
        seg = CreateSegment(config_.dir, h);
      }
    }
    if (!seg.ok()) return seg.status();
    segments_.push_back(
        SegmentSlot{*seg, SegmentSummary{ids[i], kSegmentHeaderBytes, 0, 0, 0, 0, {}}, nullptr, nullptr});
  }
  // Only the last segment with data may have been cut short (a torn tail);
  // behind it there may be one empty segment, prepared ahead of need.
  for (size_t i = 0; i + 1 < segments_.size(); ++i) {
    const SegmentFile& seg = *segments_[i].file;
    if (seg.size_bytes < seg.capacity_bytes && !(i + 2 == segments_.size() && LaterSegmentsEmpty(i)))
      return Status::Corruption(seg.path + ": segment is shorter than the segment size (" +
                                std::to_string(seg.size_bytes) + " bytes) with data after it: it was cut");
  }
  return Status::Ok();
}

bool Partition::LoadCheckpoint(uint32_t* start_slot, uint32_t* start_offset) {
  std::string path = fs::Join(config_.dir, format::CheckpointFileName());
  if (!fs::Exists(path)) return false;
  auto data = fs::ReadWholeFile(path);
  CheckpointHeader h;
  std::vector<SegmentSummary> sums;
  StreamTable streams;
  Status s = data.ok() ? DecodeCheckpoint(*data, path, &h, &sums, &streams) : data.status();
  if (s.ok() && (h.partition != config_.id || sums.empty() || sums.size() > segments_.size() ||
                 sums.back().id != h.tail_segment || sums.back().end_offset != h.tail_offset))
    s = Status::Corruption(path + ": does not match this partition's segments");
  for (size_t i = 0; s.ok() && i < sums.size(); ++i)
    if (sums[i].id != segments_[i].file->id || sums[i].end_offset > segments_[i].file->size_bytes)
      s = Status::Corruption(path + ": names segments that are not on disk");
  if (!s.ok()) {
    Log("ignoring index checkpoint, replaying the whole log: " + s.message());
    return false;
  }
  std::vector<std::unique_ptr<SegmentIndexBuilder>> builders(sums.size());
  for (size_t i = 0; s.ok() && i < sums.size(); ++i) {
    if (segments_[i].index || sums[i].index.empty()) continue;
    auto b = SegmentIndexBuilder::Decode(sums[i].index, path);
    if (b.ok()) builders[i] = std::move(*b); else s = b.status();
  }
  if (!s.ok()) {
    Log("ignoring index checkpoint, replaying the whole log: " + s.message());
    return false;
  }
  for (size_t i = 0; i < sums.size(); ++i) {
    segments_[i].summary = std::move(sums[i]);
    segments_[i].summary.index = {};
    // An index file keeps the samples of its segment.
    if (segments_[i].index) segments_[i].summary.samples = {};
    // A segment without an index file whose index the checkpoint does not
    // hold either is read again at open (Recover).
    if (builders[i]) {
      segments_[i].building = std::move(builders[i]);
      restored_[i] = true;
    }
  }
  streams_ = std::move(streams);
  last_checkpoint_bytes_ = data->size();
  last_position_ = h.last_position;
  last_recorded_at_ns_ = h.last_recorded_at_ns;
  *start_slot = static_cast<uint32_t>(sums.size() - 1);
  *start_offset = h.tail_offset;
  return true;
}

// A segment that is written to again must have its full preallocated size.
static Status RestoreCapacity(SegmentFile& seg) {
  if (seg.size_bytes >= seg.capacity_bytes) return Status::Ok();
  ANNAL_RETURN_IF_ERROR(fs::WriteZeros(seg.fd.get(), seg.size_bytes, seg.capacity_bytes, seg.path));
  seg.size_bytes = seg.capacity_bytes;
  return Status::Ok();
}

// Makes [from, from + window) of `seg` read as zeros if anything else is
// there, so that bytes of a batch that never completed cannot be taken for
// data by a later scan. Reads first: the common case writes nothing.
static Status ClearAfter(const SegmentFile& seg, uint64_t from, uint64_t window) {
  uint64_t to = std::min(seg.size_bytes, from + window);
  if (from >= to) return Status::Ok();
  std::vector<uint8_t> buf(static_cast<size_t>(std::min<uint64_t>(1 << 20, to - from)));
  for (uint64_t at = from; at < to;) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), to - at));
    ANNAL_RETURN_IF_ERROR(fs::PreadExact(seg.fd.get(), buf.data(), n, at, seg.path));
    if (std::any_of(buf.begin(), buf.begin() + static_cast<ptrdiff_t>(n), [](uint8_t b) { return b != 0; }))
      return fs::WriteZeros(seg.fd.get(), from, to, seg.path);
    at += n;
  }
  return Status::Ok();
}

bool Partition::LaterSegmentsEmpty(size_t slot) {
  for (size_t i = slot + 1; i < segments_.size(); ++i)
    if (!HoldsNoBatch(*segments_[i].file)) return false;
  return true;
}

Status Partition::ScanFrom(uint32_t start_slot, uint32_t start_offset) {
  std::vector<uint8_t> buf;
  size_t last_data_slot = start_slot;
  uint64_t torn_until = 0;  // end of a dropped torn batch
  for (size_t i = start_slot; i < segments_.size(); ++i) {
    SegmentSlot& slot = segments_[i];
    uint64_t offset = i == start_slot ? start_offset : kSegmentHeaderBytes;
    uint64_t readahead_until = offset;
    bool stop = false;
    while (true) {
      format::BatchHeader h;
      ANNAL_ASSIGN_OR_RETURN(BatchCheck c, CheckBatchAt(*slot.file, offset, &buf, &h));
      if (c.kind == BatchCheck::kEnd) break;
      if (c.kind == BatchCheck::kValid) {
        ANNAL_RETURN_IF_ERROR(ApplyRecovered(slot, offset, buf, h));
        last_data_slot = i;
        offset += h.length;
        // There is log to replay here: have the kernel read ahead of the
        // scan (only once data is found, so a fresh checkpoint's empty
        // tail costs no reads).
        if (!slot.file->sealed && offset + kRecoveryReadaheadBytes / 2 > readahead_until) {
          (void)::posix_fadvise(slot.file->fd.get(), static_cast<off_t>(offset),
                                static_cast<off_t>(kRecoveryReadaheadBytes), POSIX_FADV_WILLNEED);
          readahead_until = offset + kRecoveryReadaheadBytes;
        }
        continue;
      }
      if (c.kind == BatchCheck::kTorn) {
        // Nothing may follow a torn batch: no batch in a later segment, and
        // only zeros in its own.
        uint64_t after = offset + (h.length >= format::kBatchHeaderBytes && c.header_valid ? h.length
                                                                                             : format::kBatchHeaderBytes);
        bool final = LaterSegmentsEmpty(i);
        if (final) {
          ANNAL_ASSIGN_OR_RETURN(final, ZeroFrom(*slot.file, after));
        }
        if (!final) return CorruptionAt(*slot.file, offset, c.why + ", and data follows it");
        // Only the newest batch can be incomplete: a batch is written only
        // after the one before it was fsynced. It was never acknowledged.
        Log("dropping a torn final batch at " + slot.file->path + " offset " +
            std::to_string(offset) + " (" + c.why + "); it was never acknowledged");
        last_data_slot = i;
        torn_until = after;
        stop = true;
        break;
      }
      return CorruptionAt(*slot.file, offset, c.why);
    }
    if (stop) break;
  }
  // Bytes after the last valid batch were never acknowledged: a dropped torn
  // batch, or, after a power loss, blocks of the batch in flight whose first
  // block never reached the disk (a batch is at most max_batch_bytes and one
  // write). Zero them so a later scan can never read them as data.
  SegmentSlot& tail = segments_[last_data_slot];
  uint64_t window = std::max<uint64_t>(config_.max_batch_bytes + kDirectIoAlignment,
                                       torn_until > tail.summary.end_offset ? torn_until - tail.summary.end_offset : 0);
  ANNAL_RETURN_IF_ERROR(ClearAfter(*tail.file, tail.summary.end_offset, window));
  for (size_t i = last_data_slot; i < segments_.size(); ++i)
    ANNAL_RETURN_IF_ERROR(RestoreCapacity(*segments_[i].file));
  // Empty segments after the last one with data would leave a hole in the
  // index; drop all but one of them.
  if (segments_.size() > last_data_slot + 2) {
    while (segments_.size() > last_data_slot + 2) {
      if (::unlink(segments_.back().file->path.c_str()) != 0)
        return Status::FromErrno(errno, "unlink " + segments_.back().file->path);
      segments_.pop_back();
    }
    ANNAL_RETURN_IF_ERROR(fs::SyncDir(config_.dir));
  }
  // An empty segment after the last one with data was prepared ahead of
  // need: keep appending to the last one, and hold this one for the roll.
  if (segments_.size() == last_data_slot + 2) {
    prepared_ = segments_.back().file;
    segments_.pop_back();
  }
  Log("recovered: " + std::to_string(streams_.size()) + " streams, last position " +
      std::to_string(last_position_));
  return Status::Ok();
}

Status Partition::ApplyRecovered(SegmentSlot& slot, uint64_t offset,
                                 const std::vector<uint8_t>& batch,
                                 const format::BatchHeader& header) {
  if (header.first_position <= last_position_)
    return CorruptionAt(*slot.file, offset, "batch positions do not increase");
  ANNAL_RETURN_IF_ERROR(ForEachRecord(
      *slot.file, offset, batch.data(), header, [&](const format::RecordView& r, uint32_t at) {
        return ApplyRecord(slot, r, format::MakeLocation(slot.file->id, static_cast<uint32_t>(offset + at)));
      }));
  slot.summary.NoteBatch(static_cast<uint32_t>(offset), header.length, header.first_position,
                         header.count, header.recorded_at_ns);
  last_position_ = header.first_position + header.count - 1;
  last_recorded_at_ns_ = header.recorded_at_ns;
  bytes_since_checkpoint_.fetch_add(header.length);
  return Status::Ok();
}

// Applies one recovered event to the stream table and its segment's index.
// A record names its stream's previous event, so continuing a stream needs
// no name comparison: the slot whose head is that event is the stream's.
Status Partition::ApplyRecord(SegmentSlot& slot, const format::RecordView& r, uint64_t location) {
  uint64_t hash = format::StreamHash(r.stream);
  auto broken = [&] {
    return CorruptionAt(*slot.file, format::LocationOffset(location),
                        "event of stream '" + std::string(r.stream) + "' at version " +
                            std::to_string(r.version) + " does not follow the stream's head");
  };
  if (r.version == 0) {
    if (r.prev_location != kNoLocation) return broken();
    // A slot with this hash belongs to another stream unless its head
    // record bears this name (then the log starts the stream twice).
    Status error;
    bool exists = false;
    std::vector<uint8_t> buf;
    uint32_t name_check = format::StreamNameCheck(r.stream);
    streams_.Find(hash, [&](StreamSlot& s) {
      if (s.name_check != name_check) return false;
      format::RecordView head;
      error = ReadRecordAt(s.head_location, false, &buf, &head);
      exists = error.ok() && head.stream == r.stream;
      return !error.ok() || exists;
    });
    ANNAL_RETURN_IF_ERROR(error);
    if (exists) return broken();
    streams_.Insert(StreamSlot{hash, 0, location, location, name_check, format::EventIdCheck(r.id)});
  } else {
    StreamSlot* s = streams_.Find(hash, [&](StreamSlot& x) {
      return x.head_location == r.prev_location && x.head_version + 1 == r.version;
    });
    if (s == nullptr) return broken();
    streams_.AdvanceHead(s, r.version, location, format::EventIdCheck(r.id));
  }
  if (slot.building) slot.building->Add(hash, r.version, r.prev_location, format::LocationOffset(location));
  return Status::Ok();
}

// ---------------------------------------------------------------- writer

Status Partition::StartWriter(Sequencer* sequencer) {
  sequencer_ = sequencer;
  ANNAL_ASSIGN_OR_RETURN(io_, config_.env->NewLogWriterIo());
  // No reader runs before the store is open, so the active segment, already
  // shared, may get its tail cache here.
  active_->tail = NewTailCache(write_offset_);
  ANNAL_RETURN_IF_ERROR(OpenForWriting());
  if (!prepared_) StartPreparing();
  writer_ = std::thread([this] { WriterLoop(); });
  NameThread(writer_, "writer-p");
  finisher_ = std::thread([this] { FinisherLoop(); });
  NameThread(finisher_, "finisher-p");
  return Status::Ok();
}

void Partition::Enqueue(std::unique_ptr<AppendOp> op) {
  op->hash = format::StreamHash(op->stream);
  op->name_check = format::StreamNameCheck(op->stream);
  Status refused;
  {
    std::lock_guard lock(queue_mu_);
    if (!failed_.ok())
      refused = failed_;
    else if (stopping_)
      refused = Status::Unavailable("the store is closing");
    else if (queue_.size() >= limits::kMaxQueuedAppendsPerPartition)
      refused = Status::Overloaded("partition " + std::to_string(config_.id) +
                                   " is overloaded: too many appends queued");
    else
      queue_.push_back(std::move(op));
    if (refused.ok() && writer_idle_) queue_cv_.notify_one();
  }
  if (!refused.ok()) op->done(refused);
}

void Partition::StopWriter() {
  if (writer_.joinable()) {
    {
      std::lock_guard lock(queue_mu_);
      stopping_ = true;
      queue_cv_.notify_one();
    }
    writer_.join();
  }
  if (prepare_thread_.joinable()) prepare_thread_.join();
  if (finisher_.joinable()) {
    {
      std::lock_guard lock(finish_mu_);
      finisher_stop_ = true;
      finish_cv_.notify_all();
    }
    finisher_.join();
  }
}

bool Partition::TakeQueued() {
  std::lock_guard lock(queue_mu_);
  for (auto& op : queue_) backlog_.push_back(std::move(op));
  queue_.clear();
  return stopping_;
}

void Partition::WriterLoop() {
  std::vector<IoCompletion> completions;
  while (true) {
    completions.clear();
    if (!inflight_.ops.empty()) {
      Status s = io_->Reap(&completions, /*block=*/true);
      if (!s.ok()) FailStop(s);
      for (const IoCompletion& c : completions) Complete(c);
      // Start the next write before answering the batch that completed:
      // the device works on it while the callbacks run.
      if (inflight_.ops.empty()) {
        (void)TakeQueued();
        FillGathering();
        if (!gathering_.ops.empty()) Submit();
      }
      Acknowledge();
      continue;
    }
    bool stopping = TakeQueued();
    FillGathering();
    if (!gathering_.ops.empty()) {
      Submit();
      continue;
    }
    if (!backlog_.empty()) continue;
    if (stopping) break;
    // Idle: nothing in flight, nothing queued. Sleep on the queue itself (a
    // futex), not in the ring: waking a thread blocked in io_uring through
    // an eventfd read took a scheduler tick (4 ms) here.
    std::unique_lock lock(queue_mu_);
    writer_idle_ = true;
    queue_cv_.wait(lock, [&] { return !queue_.empty() || stopping_; });
    writer_idle_ = false;
  }
}

void Partition::FillGathering() {
  while (!backlog_.empty()) {
    // Owned here, not in backlog_: a fail-stop inside Admit clears backlog_.
    std::unique_ptr<AppendOp> op = std::move(backlog_.front());
    backlog_.pop_front();
    if (writer_failed_) {
      op->done(FailedStatus());
      continue;
    }
    if (!Admit(op)) {  // the batch is full
      backlog_.push_front(std::move(op));
      return;
    }
  }
}

Status Partition::FailedStatus() {
  std::lock_guard lock(queue_mu_);
  return failed_;
}

Partition::Head Partition::CurrentHead(const AppendOp& op) {
  if (auto p = pending_.find(op.stream); p != pending_.end()) return p->second.head;
  return DurableHead(op);
}

// Only this thread changes streams_, so reading it here needs no lock.
//
// The writer tells streams apart by 96 bits (the 64-bit hash and the 32-bit
// name check) and does not read names: a cold stream's head may lie in a
// sealed block, and decompressing a block for every append to a cold stream
// was what limited appends over a million streams (docs/benchmarks.md).
// Two names agreeing on all 96 bits would be taken for one stream; over
// 10^10 streams the chance that any pair does is below 10^-9. Readers and
// recovery compare the names themselves.
Partition::Head Partition::DurableHead(const AppendOp& op) {
  Head head;
  streams_.Find(op.hash, [&](StreamSlot& s) {
    if (s.name_check != op.name_check) return false;
    head = Head{true, s.head_version, s.head_location, s.head_id_check};
    return true;
  });
  return head;
}

static Status CheckExpected(const ExpectedVersion& ev, const std::string& stream,
                            bool exists, uint64_t version) {
  bool ok = true;
  switch (ev.kind()) {
    case ExpectedVersion::Kind::kAny: break;
    case ExpectedVersion::Kind::kNoStream: ok = !exists; break;
    case ExpectedVersion::Kind::kStreamExists: ok = exists; break;
    case ExpectedVersion::Kind::kExact: ok = exists && version == ev.version(); break;
  }
  if (ok) return Status::Ok();
  int64_t actual = exists ? static_cast<int64_t>(version) : -1;
  return Status::WrongExpectedVersion(
      "stream '" + stream + "' expected at " + ev.ToString() + " but is at " +
          (exists ? std::to_string(version) : std::string("no-stream")),
      actual);
}

bool Partition::Admit(std::unique_ptr<AppendOp>& op) {
  Head head = CurrentHead(*op);
  if (auto replay = CheckRetry(*op, head)) {
    op->done(std::move(*replay));
    return true;
  }
  Status s = CheckExpected(op->expected, op->stream, head.exists, head.version);
  if (!s.ok()) {
    op->done(s);
    return true;
  }
  size_t need = op->encoded_bytes;
  if (gathering_.ops.empty()) {
    if (write_offset_ + kBatchHeaderBytes + need + kBatchTrailerBytes > active_->capacity_bytes) {
      Status r = Roll();
      if (!r.ok()) {
        FailStop(r);
        op->done(FailedStatus());
        return true;
      }
    }
    gathering_.segment = active_;
    gathering_.file_offset = static_cast<uint32_t>(write_offset_);
    gathering_.bytes.resize(kBatchHeaderBytes);
  } else {
    size_t after = gathering_.bytes.size() + need + kBatchTrailerBytes;
    if (after > config_.max_batch_bytes || gathering_.file_offset + after > active_->capacity_bytes)
      return false;
  }
  Encode(*op, head);
  gathering_.ops.push_back(std::move(op));
  return true;
}

// Recognises a retry of an append that is already in the log: see the
// rules in docs/architecture.md ("Idempotent retries").
std::optional<Result<AppendResult>> Partition::CheckRetry(const AppendOp& op, const Head& head) {
  if (!head.exists) return std::nullopt;
  for (const EventData& e : op.events)
    if (IsNilEventId(e.id)) return std::nullopt;
  uint64_t n = op.events.size();
  std::optional<uint64_t> start;
  switch (op.expected.kind()) {
    case ExpectedVersion::Kind::kExact:
      if (head.version > op.expected.version() && op.expected.version() + n <= head.version)
        start = op.expected.version() + 1;
      break;
    case ExpectedVersion::Kind::kNoStream:
      if (n - 1 <= head.version) start = 0;
      break;
    case ExpectedVersion::Kind::kAny:
    case ExpectedVersion::Kind::kStreamExists:
      // A filter only: the events read below must carry the ids.
      if (head.last_id_check == format::EventIdCheck(op.events.back().id) && head.version + 1 >= n)
        start = head.version + 1 - n;
      break;
  }
  if (!start) return std::nullopt;
  Head durable = DurableHead(op);
  if (!durable.exists || durable.version < *start + n - 1)
    return Result<AppendResult>(Status::Unavailable(
        "an append to stream '" + op.stream +
        "' with these event ids is still being written; retry once it completes"));
  auto events = ReadStream(op.stream, *start, ReadDirection::kForward, n);
  if (!events.ok()) return Result<AppendResult>(events.status());
  bool same = events->size() == n;
  for (size_t i = 0; same && i < n; ++i) same = (*events)[i].id == op.events[i].id;
  if (!same) return std::nullopt;
  AppendResult r;
  r.first_version = events->front().version;
  r.last_version = events->back().version;
  r.first_position = events->front().position;
  r.last_position = events->back().position;
  r.recorded_at_ns = events->front().recorded_at_ns;
  r.idempotent_replay = true;
  return Result<AppendResult>(r);
}

void Partition::Encode(AppendOp& op, const Head& head) {
  uint64_t version = head.exists ? head.version + 1 : 0;
  uint64_t prev = head.exists ? head.location : kNoLocation;
  op.first_version = version;
  op.prev_location = prev;
  op.first_record = static_cast<uint32_t>(gathering_.record_offsets.size());
  for (EventData& e : op.events) {
    if (IsNilEventId(e.id)) e.id = GenerateEventId();
    uint32_t at = static_cast<uint32_t>(gathering_.bytes.size());
    gathering_.bytes.resize(at + format::RecordSize(op.stream.size(), e.type.size(),
                                                    e.metadata.size(), e.payload.size()));
    format::RecordView r;
    r.version = version;
    r.prev_location = prev;
    r.id = e.id;
    r.stream = op.stream;
    r.type = e.type;
    r.metadata = e.metadata;
    r.payload = e.payload;
    format::EncodeRecord(r, gathering_.bytes.data() + at);
    gathering_.record_offsets.push_back(at);
    prev = format::MakeLocation(gathering_.segment->id, gathering_.file_offset + at);
    ++version;
  }
  PendingHead& p = pending_[op.stream];
  p.head = Head{true, version - 1, prev, format::EventIdCheck(op.events.back().id)};
  ++p.ops;
}

Status Partition::OpenForWriting() {
  if (!direct_io_) return Status::Ok();
  auto fd = fs::Open(active_->path, O_WRONLY | O_DIRECT);
  if (!fd.ok()) {
    // Decided once, at start: a filesystem without O_DIRECT (tmpfs) gets
    // buffered writes with a linked fdatasync. Once direct, always direct.
    if (direct_fd_.valid()) return fd.status();
    Log("direct I/O unavailable (" + fd.status().message() + "); using buffered writes and fdatasync");
    direct_io_ = false;
    return Status::Ok();
  }
  direct_fd_ = std::move(*fd);
  uint64_t block = write_offset_ / kDirectIoAlignment * kDirectIoAlignment;
  tail_block_.assign(kDirectIoAlignment, 0);
  return fs::PreadExact(active_->fd.get(), tail_block_.data(), write_offset_ - block, block,
                        active_->path);
}

std::shared_ptr<TailCache> Partition::NewTailCache(uint64_t start, std::unique_ptr<uint8_t[]> ring) const {
  if (config_.tail_cache_bytes == 0) return nullptr;
  return std::make_shared<TailCache>(std::min<uint64_t>(config_.tail_cache_bytes, config_.segment_bytes), start,
                                     tail_counters_, std::move(ring));
}

void Partition::StartPreparing() {
  ANNAL_ASSERT(!prepare_thread_.joinable() && !prepared_);
  if (active_->id >= format::kMaxSegmentId) return;
  format::SegmentHeader h{config_.id, active_->id + 1, config_.segment_bytes, config_.partitions};
  prepare_thread_ = std::thread([this, h] {
    auto seg = CreateSegment(config_.dir, h);
    if (seg.ok())
      prepared_ = std::move(*seg);
    else
      prepare_status_ = seg.status();
  });
  NameThread(prepare_thread_, "prepare-p");
}

std::shared_ptr<SegmentFile> Partition::TakePrepared() {
  if (prepare_thread_.joinable()) prepare_thread_.join();
  if (!prepare_status_.ok()) Log("preparing the next segment failed: " + prepare_status_.ToString());
  prepare_status_ = Status::Ok();
  return std::move(prepared_);
}

Status Partition::Roll() {
  if (active_->id >= format::kMaxSegmentId)
    return Status::Unavailable("partition " + std::to_string(config_.id) + " has reached the last segment id");
  format::SegmentHeader h{config_.id, active_->id + 1, config_.segment_bytes, config_.partitions};
  std::shared_ptr<SegmentFile> seg = TakePrepared();
  if (!seg || seg->id != h.segment_id) {
    ANNAL_ASSIGN_OR_RETURN(seg, CreateSegment(config_.dir, h));
  }
  // The segment just filled keeps its tail for readers still behind; the
  // one before it hands its ring to the new segment.
  std::unique_ptr<uint8_t[]> ring = previous_tail_ ? previous_tail_->TakeRing() : nullptr;
  previous_tail_ = active_->tail;
  seg->tail = NewTailCache(kSegmentHeaderBytes, std::move(ring));
  {
    std::unique_lock lock(mu_);
    segments_.push_back(SegmentSlot{seg, SegmentSummary{seg->id, kSegmentHeaderBytes, 0, 0, 0, 0, {}},
                                    std::make_unique<SegmentIndexBuilder>(seg->id), nullptr});
  }
  active_ = std::move(seg);
  write_offset_ = kSegmentHeaderBytes;
  ANNAL_RETURN_IF_ERROR(OpenForWriting());
  StartPreparing();
  return Status::Ok();
}

void Partition::Submit() {
  Batch& b = gathering_;
  uint32_t count = static_cast<uint32_t>(b.record_offsets.size());
  Sequencer::Reservation res = sequencer_->Reserve(count);
  b.first_position = res.first_position;
  b.recorded_at_ns = res.recorded_at_ns;
  for (uint32_t i = 0; i < count; ++i)
    format::PatchRecord(b.bytes.data() + b.record_offsets[i], res.first_position + i,
                        res.recorded_at_ns);
  size_t length = b.bytes.size() + kBatchTrailerBytes;
  b.bytes.resize(length);
  format::EncodeBatchHeader(format::BatchHeader{static_cast<uint32_t>(length), res.first_position,
                                                res.recorded_at_ns, count, 0},
                            b.bytes.data());
  format::Put64(b.bytes.data() + length - kBatchTrailerBytes, format::BatchChecksum(b.bytes.data(), length));
  ANNAL_ASSERT(b.file_offset == write_offset_);
  write_offset_ += length;
  std::swap(inflight_, gathering_);
  gathering_.Reset();
  submitted_at_ = std::chrono::steady_clock::now();
  Status s = direct_io_ ? SubmitDirect(inflight_)
                        : io_->SubmitWriteSync(inflight_.segment->fd.get(), inflight_.bytes.data(),
                                               length, inflight_.file_offset, next_tag_++,
                                               SyncMode::kLinkedFdatasync);
  if (!s.ok()) FailStop(s);
}

// Direct I/O writes whole aligned blocks: the batch is written together
// with the bytes before it in its first block (already durable, rewritten
// unchanged) and zeros after it in its last block (the file is zero there).
Status Partition::SubmitDirect(const Batch& b) {
  uint64_t start = b.file_offset / kDirectIoAlignment * kDirectIoAlignment;
  size_t prefix = b.file_offset - start;
  size_t length = b.bytes.size();
  size_t total = (prefix + length + kDirectIoAlignment - 1) / kDirectIoAlignment * kDirectIoAlignment;
  ANNAL_ASSERT(start + total <= active_->capacity_bytes);
  io_buffer_.Reserve(total);
  uint8_t* io = io_buffer_.data();
  std::memcpy(io, tail_block_.data(), prefix);
  std::memcpy(io + prefix, b.bytes.data(), length);
  std::memset(io + prefix + length, 0, total - prefix - length);
  uint64_t end = b.file_offset + length;
  uint64_t end_block = end / kDirectIoAlignment * kDirectIoAlignment;
  std::memcpy(tail_block_.data(), io + (end_block - start), end - end_block);
  return io_->SubmitWriteSync(direct_fd_.get(), io, total, start, next_tag_++, SyncMode::kDsyncWrite);
}

void Partition::Complete(const IoCompletion& c) {
  if (inflight_.ops.empty()) return;  // already failed
  if (c.result != 0) {
    FailStop(Status::FromErrno(-c.result, "write and fdatasync of " + inflight_.segment->path +
                                              " at offset " + std::to_string(inflight_.file_offset)));
    return;
  }
  Publish(inflight_);
  sequencer_->MarkDurable(inflight_.first_position);
  sync_seconds_.Observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - submitted_at_).count());
  batch_events_.Observe(static_cast<double>(inflight_.record_offsets.size()));
  stat_batches_.fetch_add(1, std::memory_order_relaxed);
  stat_events_.fetch_add(inflight_.record_offsets.size(), std::memory_order_relaxed);
  stat_appends_.fetch_add(inflight_.ops.size(), std::memory_order_relaxed);
  stat_bytes_.fetch_add(inflight_.bytes.size(), std::memory_order_relaxed);
  bytes_since_checkpoint_.fetch_add(inflight_.bytes.size());
  for (auto& op : inflight_.ops) {
    auto p = pending_.find(op->stream);
    ANNAL_ASSERT(p != pending_.end() && p->second.ops > 0);
    if (--p->second.ops == 0) pending_.erase(p);
  }
  // Answered by Acknowledge, after the next batch is on its way.
  ANNAL_ASSERT(acked_.ops.empty());
  std::swap(acked_, inflight_);  // inflight_ gets a reset batch, with capacity
}

// Runs the callbacks of the batch that became durable.
void Partition::Acknowledge() {
  for (auto& op : acked_.ops) {
    uint64_t n = op->events.size();
    AppendResult r;
    r.first_version = StreamVersion(op->first_version);
    r.last_version = StreamVersion(op->first_version + n - 1);
    r.first_position = GlobalPosition(acked_.first_position + op->first_record);
    r.last_position = GlobalPosition(acked_.first_position + op->first_record + n - 1);
    r.recorded_at_ns = acked_.recorded_at_ns;
    op->done(r);
  }
  acked_.Reset();  // keeps the buffer's capacity for a later batch
}

void Partition::Publish(const Batch& b) {
  // Before the batch is published, so that a reader who sees it finds its bytes here.
  if (b.segment->tail) b.segment->tail->Add(b.file_offset, b.bytes.data(), b.bytes.size());
  std::unique_lock lock(mu_);
  SegmentSlot& slot = segments_.back();
  ANNAL_ASSERT(slot.file == b.segment && slot.building);
  for (const auto& op : b.ops) {
    uint64_t prev = op->prev_location;
    uint64_t first_location = 0;
    for (size_t i = 0; i < op->events.size(); ++i) {
      uint32_t at = b.file_offset + b.record_offsets[op->first_record + i];
      slot.building->Add(op->hash, op->first_version + i, prev, at);
      prev = format::MakeLocation(b.segment->id, at);
      if (i == 0) first_location = prev;
    }
    uint64_t head_version = op->first_version + op->events.size() - 1;
    uint32_t id_check = format::EventIdCheck(op->events.back().id);
    if (op->first_version == 0) {
      streams_.Insert(StreamSlot{op->hash, head_version, prev, first_location, op->name_check, id_check});
    } else {
      StreamSlot* s = streams_.Find(op->hash, [&](StreamSlot& x) { return x.head_location == op->prev_location; });
      ANNAL_ASSERT(s != nullptr);
      streams_.AdvanceHead(s, head_version, prev, id_check);
    }
  }
  bool first_batch = slot.summary.first_position == 0;
  slot.summary.NoteBatch(b.file_offset, static_cast<uint32_t>(b.bytes.size()), b.first_position,
                         static_cast<uint32_t>(b.record_offsets.size()), b.recorded_at_ns);
  last_position_ = b.first_position + b.record_offsets.size() - 1;
  last_recorded_at_ns_ = b.recorded_at_ns;
  // The segment before this one got its last batch earlier: finish it.
  if (first_batch && segments_.size() > 1) QueueFinish(segments_[segments_.size() - 2].file->id);
}

void Partition::FailStop(const Status& why) {
  Status stopped = Status::FailStopped("partition " + std::to_string(config_.id) +
                                       " stopped after a failed write: " + why.message() +
                                       "; nothing after it was acknowledged; reopen the store");
  std::vector<std::unique_ptr<AppendOp>> queued;
  {
    std::lock_guard lock(queue_mu_);
    if (failed_.ok()) failed_ = stopped;
    stopped = failed_;
    queued.swap(queue_);
  }
  if (!writer_failed_) Log(stopped.message());
  writer_failed_ = true;
  stat_fail_stopped_ = true;
  for (auto& op : inflight_.ops) op->done(stopped);
  for (auto& op : gathering_.ops) op->done(stopped);
  for (auto& op : backlog_) op->done(stopped);
  for (auto& op : queued) op->done(stopped);
  inflight_.Reset();
  gathering_.Reset();
  backlog_.clear();
  pending_.clear();
}

// ---------------------------------------------------------------- reads

std::shared_ptr<SegmentFile> Partition::SegmentById(uint32_t id) const {
  std::shared_lock lock(mu_);
  if (segments_.empty() || id < segments_.front().file->id) return nullptr;
  size_t i = id - segments_.front().file->id;
  return i < segments_.size() ? segments_[i].file : nullptr;
}

Status Partition::ReadRecordAt(uint64_t location, bool verify, std::vector<uint8_t>* buf,
                               format::RecordView* r) const {
  auto seg = SegmentById(format::LocationSegment(location));
  if (!seg) return Status::Corruption("index points to missing segment " +
                                      std::to_string(format::LocationSegment(location)));
  uint64_t offset = format::LocationOffset(location);
  if (offset + format::kRecordHeaderBytes > seg->size_bytes)
    return CorruptionAt(*seg, offset, "index points past the end of the segment");
  // Passing over a record needs its header and stream name only; a record
  // that is returned is read whole (most fit the first 4 KiB).
  size_t want = verify ? 4096 : format::kRecordHeaderBytes + limits::kMaxStreamNameBytes;
  size_t first = static_cast<size_t>(std::min<uint64_t>(want, seg->size_bytes - offset));
  if (seg->sealed) {
    // Reading past the record could cost a second block: take what the
    // record's first block holds, then exactly what its header says is
    // still missing.
    buf->resize(first);
    ANNAL_ASSIGN_OR_RETURN(size_t got, seg->sealed->ReadSome(offset, first, buf->data()));
    if (got < format::kRecordHeaderBytes) {
      ANNAL_RETURN_IF_ERROR(seg->Read(offset + got, format::kRecordHeaderBytes - got, buf->data() + got));
      got = format::kRecordHeaderBytes;
    }
    size_t length = format::Get32(buf->data()), stream_len = (*buf)[6];
    want = std::max(format::kRecordHeaderBytes,
                    verify ? length : std::min(length, format::kRecordHeaderBytes + stream_len));
    first = static_cast<size_t>(std::min<uint64_t>(want, seg->size_bytes - offset));
    buf->resize(first);
    if (first > got) ANNAL_RETURN_IF_ERROR(seg->Read(offset + got, first - got, buf->data() + got));
  } else {
    buf->resize(first);
    ANNAL_RETURN_IF_ERROR(seg->Read(offset, first, buf->data()));
  }
  Status s = format::DecodeRecordHeader(buf->data(), first, r);
  if (s.ok() && verify && r->length > first) {
    if (offset + r->length > seg->size_bytes)
      return CorruptionAt(*seg, offset, "record runs past the end of the segment");
    buf->resize(r->length);
    ANNAL_RETURN_IF_ERROR(seg->Read(offset + first, r->length - first, buf->data() + first));
  }
  if (s.ok() && verify) s = format::DecodeRecord(buf->data(), buf->size(), r);
  if (!s.ok()) return CorruptionAt(*seg, offset, s.message());
  return Status::Ok();
}

Result<std::optional<Partition::Found>> Partition::FindStream(std::string_view stream, uint64_t hash) const {
  std::vector<StreamSlot> candidates;
  uint32_t name_check = format::StreamNameCheck(stream);
  {
    std::shared_lock lock(mu_);
    streams_.Find(hash, [&](const StreamSlot& s) {
      if (s.name_check == name_check) candidates.push_back(s);
      return false;
    });
  }
  std::vector<uint8_t> buf;
  for (const StreamSlot& c : candidates) {
    format::RecordView head;
    ANNAL_RETURN_IF_ERROR(ReadRecordAt(c.head_location, false, &buf, &head));
    if (head.stream == stream) return std::optional<Found>(Found{c, head.recorded_at_ns});
  }
  return std::optional<Found>();
}

Result<Run> Partition::RunAt(uint64_t hash, uint64_t location, uint64_t min_version) {
  uint32_t id = format::LocationSegment(location), offset = format::LocationOffset(location);
  std::vector<Run> runs;
  std::shared_ptr<SegmentIndex> index;
  std::shared_ptr<SegmentFile> file;
  {
    std::shared_lock lock(mu_);
    if (segments_.empty() || id < segments_.front().file->id || id - segments_.front().file->id >= segments_.size())
      return Status::Corruption("index points to missing segment " + std::to_string(id));
    const SegmentSlot& slot = segments_[id - segments_.front().file->id];
    file = slot.file;
    if (slot.building) {
      Run run;
      if (slot.building->FindAt(hash, offset, min_version, &run)) return run;
    } else {
      index = slot.index;
    }
  }
  if (index) {
    Status found = index->Find(hash, &runs);
    if (found.code() == StatusCode::kCorruption) {
      ANNAL_RETURN_IF_ERROR(RebuildIndex(id, index, found));
      return RunAt(hash, location, min_version);
    }
    ANNAL_RETURN_IF_ERROR(found);
    for (Run& run : runs) {
      std::optional<RunCut> cut = CutRunAt(run, offset, min_version);
      if (!cut) continue;
      run.offsets.erase(run.offsets.begin() + static_cast<ptrdiff_t>(cut->to) + 1, run.offsets.end());
      run.offsets.erase(run.offsets.begin(), run.offsets.begin() + static_cast<ptrdiff_t>(cut->from));
      run.first_version += cut->from;
      return std::move(run);
    }
  }
  return CorruptionAt(*file, offset, "the segment's index has no run holding this event");
}

Result<std::vector<uint64_t>> Partition::Locate(uint64_t hash, uint64_t version, uint64_t location,
                                                uint64_t lo, uint64_t hi) {
  ANNAL_ASSERT(lo <= hi && hi <= version);
  std::vector<uint64_t> out(hi - lo + 1);
  while (true) {
    ANNAL_ASSIGN_OR_RETURN(Run run, RunAt(hash, location, lo));
    uint32_t segment = format::LocationSegment(location);
    if (run.last_version() != version)
      return Status::Corruption("segment " + std::to_string(segment) + " of partition " +
                                std::to_string(config_.id) + ": index and log disagree on a stream's version " +
                                std::to_string(version));
    for (uint64_t v = std::max(run.first_version, lo); v <= std::min(version, hi); ++v)
      out[v - lo] = format::MakeLocation(segment, run.offsets[v - run.first_version]);
    if (run.first_version <= lo) return out;
    if (run.prev_location == kNoLocation)
      return Status::Corruption("segment " + std::to_string(segment) + " of partition " +
                                std::to_string(config_.id) + ": a stream's run starts at version " +
                                std::to_string(run.first_version) + " with no earlier event");
    version = run.first_version - 1;
    location = run.prev_location;
  }
}

Result<std::vector<RecordedEvent>> Partition::ReadStream(std::string_view stream, uint64_t from,
                                                         ReadDirection direction, size_t max_count,
                                                         uint64_t near) {
  uint64_t hash = format::StreamHash(stream);
  ANNAL_ASSIGN_OR_RETURN(std::optional<Found> found, FindStream(stream, hash));
  if (!found) return Status::NotFound("stream '" + std::string(stream) + "' does not exist");
  uint64_t head = found->slot.head_version, first_kept, last_kept;
  if (max_count == 0 || (direction == ReadDirection::kForward && from > head))
    return std::vector<RecordedEvent>{};
  if (direction == ReadDirection::kForward) {
    first_kept = from;
    last_kept = std::min<uint64_t>(head, from + max_count - 1);
  } else {
    last_kept = std::min(from, head);
    first_kept = last_kept + 1 >= max_count ? last_kept + 1 - max_count : 0;
  }
  uint64_t start_version = head, start_location = found->slot.head_location;
  if (near != 0 && last_kept < head) {
    // An event the caller knows to lie at or above the range saves the
    // index lookups of the segments between it and the head.
    Cursor c(this, near, near);
    ANNAL_ASSIGN_OR_RETURN(const RecordedEvent* e, c.Peek());
    if (e != nullptr && e->position.get() == near && e->stream == stream && e->version.get() >= last_kept &&
        e->version.get() < head) {
      start_version = e->version.get();
      start_location = c.location();
    }
  }
  std::vector<RecordedEvent> out;
  out.reserve(last_kept - first_kept + 1);
  std::vector<uint8_t> buf;
  if (start_version - first_kept < kBackPointerWalkEvents) {
    // Near the start (the head, typically: "the last N events"), the
    // records' back-pointers lead to every version without an index
    // lookup per segment; the records are read anyway.
    uint64_t location = start_location;
    for (uint64_t v = start_version;; --v) {
      format::RecordView r;
      bool keep = v <= last_kept;
      ANNAL_RETURN_IF_ERROR(ReadRecordAt(location, keep, &buf, &r));
      if (r.version != v || r.stream != stream)
        return Status::Corruption("stream '" + std::string(stream) + "': back-pointer chain broken at version " +
                                  std::to_string(v));
      if (keep) out.push_back(format::ToRecordedEvent(r));
      if (v == first_kept) break;
      location = r.prev_location;
    }
    if (direction == ReadDirection::kForward) std::reverse(out.begin(), out.end());
    return out;
  }
  ANNAL_ASSIGN_OR_RETURN(std::vector<uint64_t> locations,
                         Locate(hash, start_version, start_location, first_kept, last_kept));
  for (size_t i = 0; i < locations.size(); ++i) {
    format::RecordView r;
    ANNAL_RETURN_IF_ERROR(ReadRecordAt(locations[i], true, &buf, &r));
    if (r.version != first_kept + i || r.stream != stream)
      return Status::Corruption("stream '" + std::string(stream) + "': the index points to another event for version " +
                                std::to_string(first_kept + i));
    out.push_back(format::ToRecordedEvent(r));
  }
  if (direction == ReadDirection::kBackward) std::reverse(out.begin(), out.end());
  return out;
}

Result<StreamInfo> Partition::Info(std::string_view stream) {
  ANNAL_ASSIGN_OR_RETURN(std::optional<Found> found, FindStream(stream, format::StreamHash(stream)));
  if (!found) return Status::NotFound("stream '" + std::string(stream) + "' does not exist");
  std::vector<uint8_t> buf;
  format::RecordView first;
  ANNAL_RETURN_IF_ERROR(ReadRecordAt(found->slot.first_location, false, &buf, &first));
  if (first.stream != stream || first.version != 0)
    return Status::Corruption("stream '" + std::string(stream) + "': its first event is not where the index says");
  const StreamSlot& e = found->slot;
  return StreamInfo{std::string(stream), StreamVersion(e.head_version), e.head_version + 1,
                    first.recorded_at_ns, found->head_recorded_at_ns};
}

// Where a scan for the first batch with `key(batch) >= target` may start in
// a segment: the last block (sealed) or sample before it. `by_time` picks
// commit times as the key, else positions.
Result<uint64_t> Partition::StartOffset(const SegmentFile& file, const std::shared_ptr<SegmentIndex>& index,
                                        std::vector<TimeSample> samples, uint64_t target, bool by_time) {
  uint64_t offset = kSegmentHeaderBytes;
  if (file.sealed) {
    // The block map names a batch start in (nearly) every block: the finest
    // index there is.
    ANNAL_ASSIGN_OR_RETURN(uint64_t named, file.sealed->LastBatchStartBefore([&](const BlockEntry& b) {
      return by_time ? b.first_recorded_at_ns < static_cast<int64_t>(target) : b.first_position <= target;
    }));
    return named != 0 ? named : offset;
  }
  if (index) {
    ANNAL_ASSIGN_OR_RETURN(samples, index->Samples());
  }
  for (const TimeSample& s : samples) {
    bool before = by_time ? s.recorded_at_ns < static_cast<int64_t>(target) : s.position <= target;
    if (!before) break;
    offset = s.offset;
  }
  return offset;
}

Result<uint64_t> Partition::StartOffsetHealing(const SegmentFile& file, std::shared_ptr<SegmentIndex> index,
                                               std::vector<TimeSample> samples, uint64_t target, bool by_time) {
  auto offset = StartOffset(file, index, samples, target, by_time);
  if (offset.ok() || offset.status().code() != StatusCode::kCorruption || !index || file.sealed) return offset;
  ANNAL_RETURN_IF_ERROR(RebuildIndex(file.id, index, offset.status()));
  {
    std::shared_lock lock(mu_);
    samples = segments_[file.id - segments_.front().file->id].summary.samples;
  }
  return StartOffset(file, nullptr, std::move(samples), target, by_time);
}

Status Partition::RebuildIndex(uint32_t segment_id, const std::shared_ptr<SegmentIndex>& damaged,
                               const Status& why) {
  Log("rebuilding a damaged segment index: " + why.message());
  std::shared_ptr<SegmentFile> file;
  uint64_t end;
  {
    std::shared_lock lock(mu_);
    const SegmentSlot& slot = segments_[segment_id - segments_.front().file->id];
    if (slot.index != damaged) return Status::Ok();  // another reader did it
    file = slot.file;
    end = slot.summary.end_offset;
  }
  auto building = std::make_unique<SegmentIndexBuilder>(segment_id);
  SegmentSummary summary{segment_id, kSegmentHeaderBytes, 0, 0, 0, 0, {}};
  ANNAL_RETURN_IF_ERROR(IndexOnlyScan(*file, end, building.get(), &summary));
  {
    std::unique_lock lock(mu_);
    SegmentSlot& slot = segments_[segment_id - segments_.front().file->id];
    if (slot.index != damaged) return Status::Ok();
    slot.index = nullptr;
    slot.building = std::move(building);
    slot.summary.samples = std::move(summary.samples);
  }
  std::string path = fs::Join(config_.dir, format::SegmentIndexFileName(segment_id));
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return Status::FromErrno(errno, "unlink " + path);
  QueueFinish(segment_id);
  return Status::Ok();
}

Result<uint64_t> Partition::PositionAtTime(int64_t time_ns) {
  std::shared_ptr<SegmentFile> file;
  std::vector<TimeSample> samples;
  std::shared_ptr<SegmentIndex> index;
  uint64_t end = 0;
  {
    std::shared_lock lock(mu_);
    // Commit times do not decrease along the log: the first segment whose
    // last batch is at or after the time holds the answer.
    auto it = std::partition_point(segments_.begin(), segments_.end(), [&](const SegmentSlot& s) {
      return s.summary.first_position != 0 && s.summary.last_recorded_at_ns < time_ns;
    });
    if (it == segments_.end() || it->summary.first_position == 0) return uint64_t{0};
    if (it->summary.first_recorded_at_ns >= time_ns) return it->summary.first_position;
    file = it->file;
    index = it->index;
    samples = it->summary.samples;
    end = it->summary.end_offset;
  }
  ANNAL_ASSIGN_OR_RETURN(uint64_t offset,
                         StartOffsetHealing(*file, index, std::move(samples), static_cast<uint64_t>(time_ns), true));
  // At most one sample stride of batch headers to the answer.
  while (offset < end) {
    uint8_t hb[format::kBatchHeaderBytes];
    ANNAL_RETURN_IF_ERROR(file->Read(offset, sizeof hb, hb));
    format::BatchHeader h;
    Status hs = format::DecodeBatchHeader(hb, &h);
    if (!hs.ok()) return CorruptionAt(*file, offset, hs.message());
    if (h.recorded_at_ns >= time_ns) return h.first_position;
    offset += h.length;
  }
  return CorruptionAt(*file, end, "segment summary says a batch at or after the time lies before here");
}

Result<uint64_t> Partition::StreamVersionAtTime(std::string_view stream, int64_t time_ns) {
  uint64_t hash = format::StreamHash(stream);
  ANNAL_ASSIGN_OR_RETURN(std::optional<Found> found, FindStream(stream, hash));
  if (!found) return Status::NotFound("stream '" + std::string(stream) + "' does not exist");
  if (found->head_recorded_at_ns < time_ns) return found->slot.head_version + 1;
  std::vector<uint8_t> buf;
  auto time_at = [&](uint64_t location) -> Result<int64_t> {
    format::RecordView r;
    ANNAL_RETURN_IF_ERROR(ReadRecordAt(location, false, &buf, &r));
    return r.recorded_at_ns;
  };
  ANNAL_ASSIGN_OR_RETURN(int64_t first_time, time_at(found->slot.first_location));
  if (first_time >= time_ns) return uint64_t{0};
  // Step back run by run (one per segment holding the stream) to the run
  // whose first event is before the time, then search inside it.
  uint64_t location = found->slot.head_location;
  while (true) {
    ANNAL_ASSIGN_OR_RETURN(Run run, RunAt(hash, location, 0));
    uint32_t segment = format::LocationSegment(location);
    ANNAL_ASSIGN_OR_RETURN(int64_t t, time_at(format::MakeLocation(segment, run.offsets.front())));
    if (t < time_ns) {
      size_t lo = 0, hi = run.offsets.size();  // time(lo) < T; time(hi) >= T, or hi is the run's end
      while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        ANNAL_ASSIGN_OR_RETURN(int64_t tm, time_at(format::MakeLocation(segment, run.offsets[mid])));
        if (tm < time_ns) lo = mid; else hi = mid;
      }
      return run.first_version + hi;
    }
    if (run.prev_location == kNoLocation) return run.first_version;
    location = run.prev_location;
  }
}

Result<const RecordedEvent*> Partition::Cursor::Peek() {
  while (next_ >= events_.size()) {
    if (done_) return static_cast<const RecordedEvent*>(nullptr);
    ANNAL_RETURN_IF_ERROR(LoadNextBatch());
  }
  return &events_[next_];
}

Status Partition::Cursor::LoadNextBatch() {
  events_.clear();
  locations_.clear();
  next_ = 0;
  if (!started_) {
    started_ = true;
    std::shared_ptr<SegmentIndex> index;
    std::vector<TimeSample> samples;
    {
      std::shared_lock lock(p_->mu_);
      auto it = std::find_if(p_->segments_.begin(), p_->segments_.end(), [&](const SegmentSlot& s) {
        return s.summary.first_position != 0 && s.summary.last_position >= from_;
      });
      if (it == p_->segments_.end()) {
        done_ = true;
        return Status::Ok();
      }
      seg_ = it->file;
      end_offset_ = it->summary.end_offset;
      index = it->index;
      if (!index) samples = it->summary.samples;
    }
    ANNAL_ASSIGN_OR_RETURN(offset_, p_->StartOffsetHealing(*seg_, index, std::move(samples), from_, false));
  }
  while (offset_ >= end_offset_) {
    // The segment may have grown since; once a later segment holds data,
    // this one is complete.
    std::shared_lock lock(p_->mu_);
    size_t i = seg_->id - p_->segments_.front().file->id;
    end_offset_ = p_->segments_[i].summary.end_offset;
    if (offset_ < end_offset_) break;
    if (i + 1 >= p_->segments_.size() || p_->segments_[i + 1].summary.first_position == 0) {
      done_ = true;
      return Status::Ok();
    }
    seg_ = p_->segments_[i + 1].file;
    end_offset_ = p_->segments_[i + 1].summary.end_offset;
    offset_ = kSegmentHeaderBytes;
  }
  format::BatchHeader h;
  // Skip batches wholly before `from_` on their header alone.
  uint8_t hb[format::kBatchHeaderBytes];
  ANNAL_RETURN_IF_ERROR(seg_->Read(offset_, sizeof hb, hb));
  Status hs = format::DecodeBatchHeader(hb, &h);
  if (!hs.ok()) return CorruptionAt(*seg_, offset_, hs.message());
  if (h.first_position + h.count - 1 < from_ && offset_ + h.length <= end_offset_) {
    offset_ += h.length;
    return Status::Ok();
  }
  ANNAL_ASSIGN_OR_RETURN(BatchCheck c, CheckBatchAt(*seg_, offset_, &buf_, &h));
  if (c.kind != BatchCheck::kValid)
    return CorruptionAt(*seg_, offset_, c.kind == BatchCheck::kEnd ? "data ends early" : c.why);
  uint64_t batch_offset = offset_;
  offset_ += h.length;
  if (h.first_position > until_) {
    done_ = true;
    return Status::Ok();
  }
  return ForEachRecord(*seg_, batch_offset, buf_.data(), h,
                       [&](const format::RecordView& r, uint32_t at) -> Status {
                         if (r.position >= from_ && r.position <= until_) {
                           events_.push_back(format::ToRecordedEvent(r));
                           locations_.push_back(
                               format::MakeLocation(seg_->id, static_cast<uint32_t>(batch_offset + at)));
                         }
                         return Status::Ok();
                       });
}

PartitionStats Partition::Stats() const {
  PartitionStats s;
  s.partition = config_.id;
  s.batches = stat_batches_.load(std::memory_order_relaxed);
  s.events = stat_events_.load(std::memory_order_relaxed);
  s.appends = stat_appends_.load(std::memory_order_relaxed);
  s.bytes_written = stat_bytes_.load(std::memory_order_relaxed);
  s.fail_stopped = stat_fail_stopped_.load();
  s.sync_seconds = sync_seconds_.Take();
  s.batch_events = batch_events_.Take();
  s.tail_cache_hits = tail_counters_->hits.load(std::memory_order_relaxed);
  s.tail_cache_misses = tail_counters_->misses.load(std::memory_order_relaxed);
  s.tail_cache_bytes = tail_counters_->ring_bytes.load(std::memory_order_relaxed);
  std::shared_lock lock(mu_);
  s.streams = streams_.size();
  s.segments = segments_.size();
  s.index_memory_bytes = streams_.memory_bytes();
  for (const SegmentSlot& slot : segments_) {
    if (slot.building) s.index_memory_bytes += slot.building->memory_bytes();
    if (slot.file->sealed) {
      ++s.sealed_segments;
      s.sealed_raw_bytes += slot.summary.end_offset - kSegmentHeaderBytes;
      s.sealed_stored_bytes += slot.file->sealed->stored_bytes();
      s.bytes_on_disk += slot.file->sealed->stored_bytes();
    } else {
      s.bytes_on_disk += config_.segment_bytes;
    }
  }
  return s;
}

// ---------------------------------------------------------------- finisher

void Partition::QueueFinish(uint32_t segment_id) {
  std::lock_guard lock(finish_mu_);
  to_finish_.push_back(segment_id);
  finish_cv_.notify_all();
}

void Partition::WaitForFinisher() {
  std::unique_lock lock(finish_mu_);
  finish_cv_.wait(lock, [&] { return (to_finish_.empty() && !finishing_) || finisher_stop_ || !finisher_.joinable(); });
}

void Partition::FinisherLoop() {
  while (true) {
    uint32_t id;
    {
      std::unique_lock lock(finish_mu_);
      auto ready = [&] { return !to_finish_.empty() || finisher_stop_; };
      while (!ready()) {
        if (retired_.empty()) {
          finish_cv_.wait(lock, ready);
          break;
        }
        // A retired segment waits for its last reader: look again soon.
        if (finish_cv_.wait_for(lock, kRetiredPollInterval, ready)) break;
        lock.unlock();
        FreeRetired();
        lock.lock();
      }
      if (finisher_stop_) break;
      id = to_finish_.front();
      finishing_ = true;
    }
    Status s = Finish(id);
    // A failure leaves the segment as it was: readable, just unindexed on
    // disk or unsealed. The next open tries again.
    if (!s.ok() && !finisher_stop_) Log("finishing segment " + std::to_string(id) + " failed: " + s.ToString());
    std::lock_guard lock(finish_mu_);
    to_finish_.pop_front();
    finishing_ = false;
    finish_cv_.notify_all();
  }
  std::lock_guard lock(finish_mu_);
  finish_cv_.notify_all();
}

// Writes the segment's index file, then seals it. Runs on the finisher
// thread; the writer never waits for it.
Status Partition::Finish(uint32_t segment_id) {
  auto slot_of = [&]() -> SegmentSlot& { return segments_[segment_id - segments_.front().file->id]; };
  std::shared_ptr<SegmentFile> file;
  const SegmentIndexBuilder* building;
  std::vector<TimeSample> samples;
  uint64_t end;
  {
    std::shared_lock lock(mu_);
    SegmentSlot& slot = slot_of();
    file = slot.file;
    building = slot.building.get();  // complete: the writer moved on; only this thread drops it
    samples = slot.summary.samples;
    end = slot.summary.end_offset;
  }
  if (building) {
    std::string data = building->Encode(config_.id, samples);
    ANNAL_RETURN_IF_ERROR(fs::WriteFileAtomically(config_.dir, format::SegmentIndexFileName(segment_id), data));
    ANNAL_ASSIGN_OR_RETURN(auto index, SegmentIndex::Open(config_.dir, config_.id, segment_id, config_.cache));
    std::shared_ptr<SegmentIndexBuilder> built;
    {
      std::unique_lock lock(mu_);
      SegmentSlot& slot = slot_of();
      slot.index = std::move(index);
      built = std::move(slot.building);
      slot.summary.samples = {};
    }
    // Freed outside the lock: a run per stream, each its own allocation,
    // took 90 ms to free with a million streams, and the writer waited.
    built.reset();
  }
  if (!config_.seal || file->sealed) return Status::Ok();
  SealOptions options{config_.seal_block_bytes, config_.seal_level, config_.seal_compress_literals,
                      [this] { return finisher_stop_.load(); }};
  ANNAL_ASSIGN_OR_RETURN(SealResult sealed, SealSegment(*file, end, config_.dir, options));
  format::SegmentHeader h{config_.id, segment_id, config_.segment_bytes, config_.partitions};
  ANNAL_ASSIGN_OR_RETURN(auto reader, SealedSegment::Open(file->path, h, config_.cache));
  {
    std::unique_lock lock(mu_);
    slot_of().file = SealedSegmentFile(segment_id, std::move(reader));
  }
  char ratio[32];
  std::snprintf(ratio, sizeof ratio, "%.3f", sealed.raw_bytes ? double(sealed.stored_bytes) / double(sealed.raw_bytes) : 0.0);
  Log("sealed " + file->path + ": " + std::to_string(sealed.raw_bytes) + " log bytes in " +
      std::to_string(sealed.stored_bytes) + " (" + ratio + "), " + std::to_string(sealed.blocks) + " blocks");
  retired_.push_back(std::move(file));
  FreeRetired();
  return Status::Ok();
}

void Partition::FreeRetired() {
  for (auto it = retired_.begin(); it != retired_.end();) {
    // Only this list and readers in this process hold a retired segment,
    // and no reader can find it any more: a count of one stays one. Other
    // processes' readers hold a shared flock, which FreeGradually respects.
    if (it->use_count() > 1) {
      ++it;
      continue;
    }
    const SegmentFile& f = **it;
    Status s = fs::FreeGradually(f.fd.get(), f.path, [this] { return finisher_stop_.load(); });
    if (s.code() == StatusCode::kUnavailable) {  // another process still reads it
      ++it;
      continue;
    }
    // Harmless: the file is unlinked, and closing it frees what is left.
    if (!s.ok()) Log("freeing the replaced log of " + f.path + " gradually failed: " + s.ToString());
    it = retired_.erase(it);
  }
}

// ---------------------------------------------------------------- checkpoints

// How many stream table slots a checkpoint reads per hold of mu_ (an
// unfinished segment's index is read in steps of its own size,
// SegmentIndexBuilder::Encode), and how many times a capture that the
// table's growth spoiled is tried again in steps before it is taken whole.
constexpr size_t kCheckpointStepSlots = 4096;
constexpr int kCheckpointStepTries = 3;

Status Partition::WriteCheckpoint() {
  std::lock_guard ckpt(checkpoint_mu_);
  return WriteCheckpointLocked();
}

Result<bool> Partition::WriteCheckpointIfDue(const std::function<bool(uint64_t, uint64_t)>& due) {
  std::lock_guard ckpt(checkpoint_mu_);
  if (!due(bytes_since_checkpoint_.load(), last_checkpoint_bytes_.load())) return false;
  ANNAL_RETURN_IF_ERROR(WriteCheckpointLocked());
  return true;
}

Status Partition::WriteCheckpointLocked() {
  uint64_t bytes_before = bytes_since_checkpoint_.load();
  std::optional<std::string> data;
  for (int tries = 0; !data; ++tries)
    data = CaptureCheckpoint(tries < kCheckpointStepTries ? kCheckpointStepSlots : SIZE_MAX);
  ANNAL_RETURN_IF_ERROR(fs::WriteFileAtomically(config_.dir, format::CheckpointFileName(), *data));
  bytes_since_checkpoint_.fetch_sub(bytes_before);
  last_checkpoint_bytes_ = data->size();
  return Status::Ok();
}

// The checkpoint as of one moment, read `step_slots` stream slots at a
// time: the writer publishes batches between the steps, and the stream
// table keeps for the capture the old value of every slot it changes.
// Nothing when the table grew meanwhile (that spoils the capture).
std::optional<std::string> Partition::CaptureCheckpoint(size_t step_slots) {
  CheckpointHeader h;
  std::vector<SegmentSummary> sums;
  std::vector<std::shared_ptr<const SegmentIndexBuilder>> builders;
  uint64_t stream_count;
  {
    std::shared_lock lock(mu_);
    const SegmentSummary& tail = segments_.back().summary;
    h = CheckpointHeader{config_.id, tail.id, tail.end_offset, last_position_, last_recorded_at_ns_};
    sums.reserve(segments_.size());
    builders.reserve(segments_.size());
    for (const SegmentSlot& s : segments_) {
      sums.push_back(s.summary);
      builders.push_back(s.building);
    }
    stream_count = streams_.size();
    streams_.BeginCapture();
  }
  auto locked = [this](const std::function<void()>& step) {
    std::shared_lock lock(mu_);
    step();
  };
  CheckpointEncoder out(h, static_cast<uint32_t>(sums.size()), stream_count);
  for (size_t i = 0; i < sums.size(); ++i) {
    // Segments without an index file carry their index in the checkpoint,
    // so that opening the store need not read them again.
    if (builders[i]) sums[i].index = builders[i]->Encode(config_.id, {}, sums[i].end_offset, locked);
    out.AddSegment(sums[i]);
    sums[i].index = {};
  }
  StreamTable::CaptureStep step = StreamTable::CaptureStep::kMore;
  while (step == StreamTable::CaptureStep::kMore)
    locked([&] { step = streams_.CaptureSome(step_slots, [&](const StreamSlot& s) { out.AddStream(s); }); });
  if (step == StreamTable::CaptureStep::kSpoiled) return std::nullopt;
  return out.Finish();
}

}  // namespace annal
