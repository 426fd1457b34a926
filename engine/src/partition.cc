#include "partition.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <cstdio>

#include "annal/assert.h"

namespace annal {

using format::kBatchHeaderBytes;
using format::kBatchTrailerBytes;
using format::kNoLocation;
using format::kSegmentHeaderBytes;

// Direct writes start, end and sit in memory on this alignment.
constexpr size_t kDirectIoAlignment = 4096;
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
    if (IsSegmentTempFile(n)) {
      // A segment whose creation a crash interrupted before its rename.
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
  uint32_t start_slot = 0, start_offset = kSegmentHeaderBytes;
  if (!LoadCheckpoint(&start_slot, &start_offset)) {
    start_slot = 0;
    start_offset = kSegmentHeaderBytes;
  }
  ANNAL_RETURN_IF_ERROR(ScanFrom(start_slot, start_offset));
  active_ = segments_.back().file;
  write_offset_ = segments_.back().summary.end_offset;
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
    auto seg = OpenSegment(config_.dir, ids[i], h);
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
        SegmentSlot{*seg, SegmentSummary{ids[i], kSegmentHeaderBytes, 0, 0, {}}});
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
  StreamMap streams;
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
  for (size_t i = 0; i < sums.size(); ++i) segments_[i].summary = std::move(sums[i]);
  streams_ = std::move(streams);
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
  std::vector<uint8_t> buf;
  for (size_t i = slot + 1; i < segments_.size(); ++i) {
    format::BatchHeader h;
    auto c = CheckBatchAt(*segments_[i].file, kSegmentHeaderBytes, &buf, &h);
    if (!c.ok() || c->kind != BatchCheck::kEnd) return false;
  }
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
        if (offset + kRecoveryReadaheadBytes / 2 > readahead_until) {
          (void)::posix_fadvise(slot.file->fd.get(), static_cast<off_t>(offset),
                                static_cast<off_t>(kRecoveryReadaheadBytes), POSIX_FADV_WILLNEED);
          readahead_until = offset + kRecoveryReadaheadBytes;
        }
        continue;
      }
      if (c.kind == BatchCheck::kTorn && LaterSegmentsEmpty(i)) {
        // Nothing may follow a torn batch in its own segment either.
        uint64_t after = offset + (h.length >= format::kBatchHeaderBytes && c.header_valid ? h.length
                                                                                             : format::kBatchHeaderBytes);
        ANNAL_ASSIGN_OR_RETURN(bool rest_zero, ZeroFrom(*slot.file, after));
        if (!rest_zero)
          return CorruptionAt(*slot.file, offset, c.why + ", and data follows it");
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
      *slot.file, offset, batch.data(), header,
      [&](const format::RecordView& r, uint32_t at) -> Status {
        auto [it, inserted] = streams_.try_emplace(std::string(r.stream));
        StreamEntry& e = it->second;
        bool chained = inserted ? (r.version == 0 && r.prev_location == kNoLocation)
                                : (r.version == e.head_version + 1 && r.prev_location == e.head_location);
        if (!chained)
          return CorruptionAt(*slot.file, offset + at,
                              "event of stream '" + std::string(r.stream) + "' at version " +
                                  std::to_string(r.version) + " does not follow the stream's head");
        e.Add(r.version, format::MakeLocation(slot.file->id, static_cast<uint32_t>(offset + at)), r.id,
              r.recorded_at_ns);
        return Status::Ok();
      }));
  slot.summary.NoteBatch(static_cast<uint32_t>(offset), header.length, header.first_position,
                         header.count);
  last_position_ = header.first_position + header.count - 1;
  last_recorded_at_ns_ = header.recorded_at_ns;
  bytes_since_checkpoint_.fetch_add(header.length);
  return Status::Ok();
}

// ---------------------------------------------------------------- writer

Status Partition::StartWriter(Sequencer* sequencer) {
  sequencer_ = sequencer;
  ANNAL_ASSIGN_OR_RETURN(io_, config_.env->NewLogWriterIo());
  ANNAL_RETURN_IF_ERROR(OpenForWriting());
  if (!prepared_) StartPreparing();
  writer_ = std::thread([this] { WriterLoop(); });
  return Status::Ok();
}

void Partition::Enqueue(std::unique_ptr<AppendOp> op) {
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

Partition::Head Partition::CurrentHead(const std::string& stream) const {
  if (auto p = pending_.find(stream); p != pending_.end()) return p->second.head;
  // Only this thread changes streams_, so reading it here needs no lock.
  auto it = streams_.find(stream);
  if (it == streams_.end()) return Head{};
  return Head{true, it->second.head_version, it->second.head_location, it->second.head_event_id};
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
  Head head = CurrentHead(op->stream);
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
      if (head.last_id == op.events.back().id && head.version + 1 >= n) start = head.version + 1 - n;
      break;
  }
  if (!start) return std::nullopt;
  auto durable = streams_.find(op.stream);
  if (durable == streams_.end() || durable->second.head_version < *start + n - 1)
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
  p.head = Head{true, version - 1, prev, op.events.back().id};
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
  {
    std::unique_lock lock(mu_);
    segments_.push_back(SegmentSlot{seg, SegmentSummary{seg->id, kSegmentHeaderBytes, 0, 0, {}}});
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
  std::unique_lock lock(mu_);
  for (const auto& op : b.ops) {
    StreamEntry& e = streams_[op->stream];
    for (size_t i = 0; i < op->events.size(); ++i) {
      uint32_t at = b.record_offsets[op->first_record + i];
      e.Add(op->first_version + i, format::MakeLocation(b.segment->id, b.file_offset + at),
            op->events[i].id, b.recorded_at_ns);
    }
  }
  SegmentSlot& slot = segments_.back();
  ANNAL_ASSERT(slot.file == b.segment);
  slot.summary.NoteBatch(b.file_offset, static_cast<uint32_t>(b.bytes.size()), b.first_position,
                         static_cast<uint32_t>(b.record_offsets.size()));
  last_position_ = b.first_position + b.record_offsets.size() - 1;
  last_recorded_at_ns_ = b.recorded_at_ns;
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
  buf->resize(first);
  ANNAL_RETURN_IF_ERROR(fs::PreadExact(seg->fd.get(), buf->data(), first, offset, seg->path));
  Status s = format::DecodeRecordHeader(buf->data(), first, r);
  if (s.ok() && verify && r->length > first) {
    if (offset + r->length > seg->size_bytes)
      return CorruptionAt(*seg, offset, "record runs past the end of the segment");
    buf->resize(r->length);
    ANNAL_RETURN_IF_ERROR(fs::PreadExact(seg->fd.get(), buf->data() + first, r->length - first,
                                         offset + first, seg->path));
  }
  if (s.ok() && verify) s = format::DecodeRecord(buf->data(), buf->size(), r);
  if (!s.ok()) return CorruptionAt(*seg, offset, s.message());
  return Status::Ok();
}

Result<std::vector<RecordedEvent>> Partition::ReadStream(std::string_view stream, uint64_t from,
                                                         ReadDirection direction, size_t max_count,
                                                         uint64_t near) {
  uint64_t head, first_kept, last_kept;
  Anchor start;
  {
    std::shared_lock lock(mu_);
    auto it = streams_.find(stream);
    if (it == streams_.end()) return Status::NotFound("stream '" + std::string(stream) + "' does not exist");
    head = it->second.head_version;
    if (max_count == 0 || (direction == ReadDirection::kForward && from > head))
      return std::vector<RecordedEvent>{};
    if (direction == ReadDirection::kForward) {
      first_kept = from;
      last_kept = std::min<uint64_t>(head, from + max_count - 1);
    } else {
      last_kept = std::min(from, head);
      first_kept = last_kept + 1 >= max_count ? last_kept + 1 - max_count : 0;
    }
    start = it->second.StartFor(last_kept);
  }
  if (near != 0 && start.version > last_kept) {
    // Finding `near` skips batch headers from a position sample (one per
    // 64 KiB); worth it when the anchor is farther than that.
    Cursor c(this, near, near);
    ANNAL_ASSIGN_OR_RETURN(const RecordedEvent* e, c.Peek());
    if (e != nullptr && e->position.get() == near && e->stream == stream && e->version.get() >= last_kept &&
        e->version.get() < start.version)
      start = Anchor{e->version.get(), c.location()};
  }
  // Follow back-pointers from the anchor down to first_kept, keeping
  // [first_kept, last_kept]; records before last_kept are read in full.
  std::vector<RecordedEvent> out;
  out.reserve(last_kept - first_kept + 1);
  std::vector<uint8_t> buf;
  uint64_t location = start.location;
  for (uint64_t v = start.version;; --v) {
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

Result<StreamInfo> Partition::Info(std::string_view stream) {
  std::shared_lock lock(mu_);
  auto it = streams_.find(stream);
  if (it == streams_.end()) return Status::NotFound("stream '" + std::string(stream) + "' does not exist");
  const StreamEntry& e = it->second;
  return StreamInfo{std::string(stream), StreamVersion(e.head_version), e.head_version + 1,
                    e.first_recorded_at_ns, e.last_recorded_at_ns};
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
    offset_ = kSegmentHeaderBytes;
    for (const PositionSample& s : it->summary.samples)
      if (s.position <= from_) offset_ = s.offset;
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
  ANNAL_RETURN_IF_ERROR(fs::PreadExact(seg_->fd.get(), hb, sizeof hb, offset_, seg_->path));
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
  std::shared_lock lock(mu_);
  s.streams = streams_.size();
  s.segments = segments_.size();
  s.bytes_on_disk = segments_.size() * config_.segment_bytes;
  return s;
}

// ---------------------------------------------------------------- checkpoints

Status Partition::WriteCheckpoint() {
  std::lock_guard ckpt(checkpoint_mu_);
  uint64_t bytes_before = bytes_since_checkpoint_.load();
  std::string data;
  {
    std::shared_lock lock(mu_);
    const SegmentSummary& tail = segments_.back().summary;
    CheckpointHeader h{config_.id, tail.id, tail.end_offset, last_position_, last_recorded_at_ns_};
    std::vector<const SegmentSummary*> sums;
    for (const SegmentSlot& s : segments_) sums.push_back(&s.summary);
    data = EncodeCheckpoint(h, sums, streams_);
  }
  ANNAL_RETURN_IF_ERROR(fs::WriteFileAtomically(config_.dir, format::CheckpointFileName(), data));
  bytes_since_checkpoint_.fetch_sub(bytes_before);
  return Status::Ok();
}

}  // namespace annal
