// StoreImpl: options and input validation, the manifest and the directory
// lock, routing appends to partitions, merging partitions for global reads,
// and the background checkpointer.
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <sys/file.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <future>
#include <iostream>
#include <queue>

#include "annal/assert.h"
#include "annal/env.h"
#include "annal/limits.h"
#include "annal/store.h"
#include "format.h"
#include "block_cache.h"
#include "fs.h"
#include "log_sink.h"
#include "partition.h"
#include "sequencer.h"

namespace annal {
namespace {

bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<uint8_t>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    uint32_t cp = n == 1 ? c : c & (0x7f >> n);
    for (size_t k = 1; k < n; ++k) {
      auto cc = static_cast<uint8_t>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    // Reject overlong forms, surrogates and values past U+10FFFF.
    static constexpr uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += n;
  }
  return true;
}

Status ValidateOptions(const Options& o) {
  if (o.partitions == 0 || o.partitions > limits::kMaxPartitions)
    return Status::InvalidArgument("partitions must be 1.." + std::to_string(limits::kMaxPartitions));
  if (o.segment_size_bytes < limits::kMinSegmentBytes || o.segment_size_bytes > limits::kMaxSegmentBytes)
    return Status::InvalidArgument("segment_size_bytes must be 1 MiB..1 GiB");
  if (o.segment_size_bytes % 4096 != 0)
    return Status::InvalidArgument("segment_size_bytes must be a multiple of 4096 (direct I/O writes whole blocks)");
  if (o.max_payload_bytes == 0 || o.max_payload_bytes > limits::kMaxPayloadBytesCeiling)
    return Status::InvalidArgument("max_payload_bytes must be 1..16 MiB");
  if (o.max_batch_bytes < 64 * 1024 || o.max_batch_bytes > limits::kMaxBatchBytesCeiling)
    return Status::InvalidArgument("max_batch_bytes must be 64 KiB..64 MiB");
  if (o.seal_block_bytes < 4096 || o.seal_block_bytes > 16 * 1024 * 1024)
    return Status::InvalidArgument("seal_block_bytes must be 4 KiB..16 MiB");
  if (o.seal_zstd_level < 1 || o.seal_zstd_level > 19)
    return Status::InvalidArgument("seal_zstd_level must be 1..19");
  return Status::Ok();
}

class StoreImpl final : public Store {
 public:
  StoreImpl(std::string dir, Options options) : dir_(std::move(dir)), options_(std::move(options)) {
    // Partitions recover, seal and fail on threads of their own.
    options_.log = OneLineAtATime(std::move(options_.log), "annal: ");
    if (!options_.env) options_.env = Env::Default();
  }
  ~StoreImpl() override { (void)Close(); }

  Status OpenImpl();

  void AppendAsync(std::string stream, ExpectedVersion expected, std::vector<EventData> events,
                   AppendCallback done) override;
  Result<AppendResult> Append(std::string stream, ExpectedVersion expected,
                              std::vector<EventData> events) override;
  Result<std::vector<RecordedEvent>> ReadStream(std::string_view stream, StreamVersion from,
                                                ReadDirection direction, size_t max_count) override;
  Result<std::vector<RecordedEvent>> ReadStreamNear(std::string_view stream, StreamVersion from,
                                                    StreamVersion to, GlobalPosition near) override;
  Result<std::vector<RecordedEvent>> ReadAll(GlobalPosition from, size_t max_count) override;
  Result<RecordedEvent> ReadEvent(GlobalPosition position) override;
  Result<StreamInfo> GetStreamInfo(std::string_view stream) override;
  Result<GlobalPosition> PositionAtTime(int64_t time_ns) override;
  Result<uint64_t> StreamVersionAtTime(std::string_view stream, int64_t time_ns) override;
  void WaitForBackgroundWork() override {
    for (auto& p : partitions_) p->WaitForFinisher();
  }
  GlobalPosition DurableHead() const override {
    return GlobalPosition(sequencer_ ? sequencer_->DurableHead() : 0);
  }
  GlobalPosition WaitForDurableHead(GlobalPosition after, std::chrono::milliseconds timeout) override {
    if (!sequencer_) return GlobalPosition(0);
    return GlobalPosition(sequencer_->WaitForDurableHead(after.get(), timeout));
  }
  StoreStats GetStats() const override {
    StoreStats s;
    s.durable_head = DurableHead().get();
    for (const auto& p : partitions_) s.partitions.push_back(p->Stats());
    if (cache_) {
      BlockCache::Stats c = cache_->GetStats();
      s.block_cache_bytes = c.bytes;
      s.block_cache_hits = c.hits;
      s.block_cache_misses = c.misses;
    }
    return s;
  }
  Status Checkpoint() override;
  Status Close() override;

 private:
  Status LockDirectory();
  Status LoadOrCreateManifest();
  Status RecoverPartitions();
  Status ValidateAppend(const std::string& stream, const std::vector<EventData>& events,
                        size_t* encoded) const;
  Status ValidateStreamName(std::string_view stream) const;
  Partition& PartitionFor(std::string_view stream) {
    return *partitions_[format::PartitionForStream(stream, manifest_.partitions)];
  }
  void CheckpointerLoop();
  Status CheckpointAll();

  const std::string dir_;
  Options options_;
  format::Manifest manifest_;
  fs::Fd lock_fd_;
  // Before partitions_: their segment files drop their entries on destruction.
  std::unique_ptr<BlockCache> cache_;
  std::vector<std::unique_ptr<Partition>> partitions_;
  std::unique_ptr<Sequencer> sequencer_;
  std::atomic<bool> open_{false};

  std::mutex checkpointer_mu_;
  std::condition_variable checkpointer_cv_;
  bool checkpointer_stop_ = false;  // guarded by checkpointer_mu_
  std::thread checkpointer_;
};

Status StoreImpl::OpenImpl() {
  ANNAL_RETURN_IF_ERROR(ValidateOptions(options_));
  ANNAL_RETURN_IF_ERROR(options_.env->Probe());
  if (!fs::Exists(dir_)) {
    if (!options_.create_if_missing)
      return Status::NotFound(dir_ + ": no such store (create_if_missing is off)");
    ANNAL_RETURN_IF_ERROR(fs::CreateDir(dir_));
  }
  ANNAL_RETURN_IF_ERROR(LockDirectory());
  ANNAL_RETURN_IF_ERROR(LoadOrCreateManifest());
  ANNAL_RETURN_IF_ERROR(RecoverPartitions());
  // Recovery's buffers (the checkpoint file, batches read) are freed by
  // now; hand the memory back rather than keep it resident.
  ::malloc_trim(0);
  uint64_t last_position = 0;
  int64_t last_time = 0;
  for (auto& p : partitions_) {
    last_position = std::max(last_position, p->last_position());
    last_time = std::max(last_time, p->last_recorded_at_ns());
  }
  sequencer_ = std::make_unique<Sequencer>(last_position, last_time);
  for (auto& p : partitions_) ANNAL_RETURN_IF_ERROR(p->StartWriter(sequencer_.get()));
  checkpointer_ = std::thread([this] { CheckpointerLoop(); });
  ::pthread_setname_np(checkpointer_.native_handle(), "checkpointer");
  open_ = true;
  options_.log("opened " + dir_ + ": " + std::to_string(manifest_.partitions) +
               " partitions, durable head " + std::to_string(last_position));
  return Status::Ok();
}

Status StoreImpl::LockDirectory() {
  std::string path = fs::Join(dir_, format::LockName());
  ANNAL_ASSIGN_OR_RETURN(lock_fd_, fs::Open(path, O_RDWR | O_CREAT));
  if (::flock(lock_fd_.get(), LOCK_EX | LOCK_NB) != 0)
    return errno == EWOULDBLOCK
               ? Status::Unavailable(dir_ + " is in use by another process (" + path + " is locked)")
               : Status::FromErrno(errno, "flock " + path);
  return Status::Ok();
}

Status StoreImpl::LoadOrCreateManifest() {
  std::string path = fs::Join(dir_, format::ManifestName());
  if (fs::Exists(path)) {
    ANNAL_ASSIGN_OR_RETURN(std::string data, fs::ReadWholeFile(path));
    if (data.size() != format::kManifestBytes)
      return Status::Corruption(path + ": manifest has the wrong size");
    return format::DecodeManifest(reinterpret_cast<const uint8_t*>(data.data()), path, &manifest_);
  }
  manifest_.partitions = options_.partitions;
  manifest_.segment_bytes = options_.segment_size_bytes;
  manifest_.created_at_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count();
  std::string data(format::kManifestBytes, '\0');
  format::EncodeManifest(manifest_, reinterpret_cast<uint8_t*>(data.data()));
  return fs::WriteFileAtomically(dir_, format::ManifestName(), data);
}

Status StoreImpl::RecoverPartitions() {
  cache_ = std::make_unique<BlockCache>(options_.block_cache_bytes);
  for (uint32_t i = 0; i < manifest_.partitions; ++i) {
    PartitionConfig c;
    c.id = i;
    c.partitions = manifest_.partitions;
    c.dir = fs::Join(dir_, format::PartitionDirName(i));
    c.segment_bytes = manifest_.segment_bytes;
    c.max_batch_bytes = options_.max_batch_bytes;
    c.env = options_.env;
    c.log = options_.log;
    c.cache = cache_.get();
    c.seal = options_.seal_segments;
    c.seal_block_bytes = options_.seal_block_bytes;
    c.seal_level = options_.seal_zstd_level;
    c.seal_compress_literals = options_.seal_compress_literals;
    c.tail_cache_bytes = options_.tail_cache_bytes;
    partitions_.push_back(std::make_unique<Partition>(std::move(c)));
  }
  // Partitions recover independently; use every core.
  std::vector<Status> results(partitions_.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < partitions_.size(); ++i)
    threads.emplace_back([&, i] { results[i] = partitions_[i]->Recover(); });
  for (auto& t : threads) t.join();
  for (Status& s : results) ANNAL_RETURN_IF_ERROR(s);
  return Status::Ok();
}

Status StoreImpl::ValidateStreamName(std::string_view stream) const {
  if (stream.empty() || stream.size() > limits::kMaxStreamNameBytes)
    return Status::InvalidArgument("stream name must be 1..255 bytes, got " + std::to_string(stream.size()));
  if (!IsValidUtf8(stream)) return Status::InvalidArgument("stream name is not valid UTF-8");
  return Status::Ok();
}

Status StoreImpl::ValidateAppend(const std::string& stream, const std::vector<EventData>& events,
                                 size_t* encoded) const {
  ANNAL_RETURN_IF_ERROR(ValidateStreamName(stream));
  if (events.empty()) return Status::InvalidArgument("an append needs at least one event");
  if (events.size() > limits::kMaxEventsPerAppend)
    return Status::TooLarge("an append holds at most " + std::to_string(limits::kMaxEventsPerAppend) +
                            " events, got " + std::to_string(events.size()));
  size_t total = 0;
  for (size_t i = 0; i < events.size(); ++i) {
    const EventData& e = events[i];
    std::string which = "event " + std::to_string(i) + ": ";
    if (e.type.empty() || e.type.size() > limits::kMaxEventTypeBytes)
      return Status::InvalidArgument(which + "event type must be 1..255 bytes");
    if (e.metadata.size() > limits::kMaxMetadataBytes)
      return Status::TooLarge(which + "metadata is " + std::to_string(e.metadata.size()) +
                              " bytes; the limit is " + std::to_string(limits::kMaxMetadataBytes));
    if (e.payload.size() > options_.max_payload_bytes)
      return Status::TooLarge(which + "payload is " + std::to_string(e.payload.size()) +
                              " bytes; the limit is " + std::to_string(options_.max_payload_bytes));
    total += format::RecordSize(stream.size(), e.type.size(), e.metadata.size(), e.payload.size());
  }
  size_t batch = total + format::kBatchHeaderBytes + format::kBatchTrailerBytes;
  if (batch > options_.max_batch_bytes ||
      batch > manifest_.segment_bytes - format::kSegmentHeaderBytes)
    return Status::TooLarge("the append encodes to " + std::to_string(batch) +
                            " bytes; one append must fit one batch of at most " +
                            std::to_string(std::min<uint64_t>(options_.max_batch_bytes,
                                                              manifest_.segment_bytes - format::kSegmentHeaderBytes)));
  *encoded = total;
  return Status::Ok();
}

void StoreImpl::AppendAsync(std::string stream, ExpectedVersion expected,
                            std::vector<EventData> events, AppendCallback done) {
  if (!open_) return done(Status::Unavailable("the store is closed"));
  size_t encoded = 0;
  Status s = ValidateAppend(stream, events, &encoded);
  if (!s.ok()) return done(s);
  auto op = std::make_unique<AppendOp>();
  op->stream = std::move(stream);
  op->expected = expected;
  op->events = std::move(events);
  op->done = std::move(done);
  op->encoded_bytes = encoded;
  Partition& p = PartitionFor(op->stream);
  p.Enqueue(std::move(op));
}

Result<AppendResult> StoreImpl::Append(std::string stream, ExpectedVersion expected,
                                       std::vector<EventData> events) {
  std::promise<Result<AppendResult>> promise;
  auto future = promise.get_future();
  AppendAsync(std::move(stream), expected, std::move(events),
              [&promise](Result<AppendResult> r) { promise.set_value(std::move(r)); });
  return future.get();
}

Result<std::vector<RecordedEvent>> StoreImpl::ReadStream(std::string_view stream,
                                                         StreamVersion from,
                                                         ReadDirection direction,
                                                         size_t max_count) {
  if (!open_) return Status::Unavailable("the store is closed");
  ANNAL_RETURN_IF_ERROR(ValidateStreamName(stream));
  max_count = std::min(max_count, limits::kMaxReadCount);
  return PartitionFor(stream).ReadStream(stream, from.get(), direction, max_count);
}

Result<std::vector<RecordedEvent>> StoreImpl::ReadStreamNear(std::string_view stream, StreamVersion from,
                                                             StreamVersion to, GlobalPosition near) {
  if (!open_) return Status::Unavailable("the store is closed");
  ANNAL_RETURN_IF_ERROR(ValidateStreamName(stream));
  if (to < from) return std::vector<RecordedEvent>{};
  size_t count = static_cast<size_t>(std::min<uint64_t>(to.get() - from.get() + 1, limits::kMaxReadCount));
  return PartitionFor(stream).ReadStream(stream, from.get(), ReadDirection::kForward, count, near.get());
}

Result<std::vector<RecordedEvent>> StoreImpl::ReadAll(GlobalPosition from, size_t max_count) {
  if (!open_) return Status::Unavailable("the store is closed");
  max_count = std::min(max_count, limits::kMaxReadCount);
  uint64_t until = sequencer_->DurableHead();
  std::vector<Partition::Cursor> cursors;
  for (auto& p : partitions_) cursors.emplace_back(p.get(), std::max<uint64_t>(from.get(), 1), until);
  // Merge the partitions by position: each cursor is already in order.
  std::vector<RecordedEvent> out;
  while (out.size() < max_count) {
    Partition::Cursor* best = nullptr;
    uint64_t best_position = 0;
    for (auto& c : cursors) {
      ANNAL_ASSIGN_OR_RETURN(const RecordedEvent* e, c.Peek());
      if (e && (!best || e->position.get() < best_position)) {
        best = &c;
        best_position = e->position.get();
      }
    }
    if (!best) break;
    ANNAL_ASSIGN_OR_RETURN(const RecordedEvent* e, best->Peek());
    out.push_back(*e);
    best->Pop();
  }
  return out;
}

Result<RecordedEvent> StoreImpl::ReadEvent(GlobalPosition position) {
  ANNAL_ASSIGN_OR_RETURN(std::vector<RecordedEvent> events, ReadAll(position, 1));
  if (events.empty() || events[0].position != position)
    return Status::NotFound("no event at position " + std::to_string(position.get()));
  return std::move(events[0]);
}

Result<StreamInfo> StoreImpl::GetStreamInfo(std::string_view stream) {
  if (!open_) return Status::Unavailable("the store is closed");
  ANNAL_RETURN_IF_ERROR(ValidateStreamName(stream));
  return PartitionFor(stream).Info(stream);
}

Result<GlobalPosition> StoreImpl::PositionAtTime(int64_t time_ns) {
  if (!open_) return Status::Unavailable("the store is closed");
  // Commit times do not decrease with position, so the first position at
  // or after the time is the least over the partitions.
  uint64_t head = sequencer_->DurableHead(), best = head + 1;
  for (auto& p : partitions_) {
    ANNAL_ASSIGN_OR_RETURN(uint64_t at, p->PositionAtTime(time_ns));
    if (at != 0) best = std::min(best, at);
  }
  return GlobalPosition(best);
}

Result<uint64_t> StoreImpl::StreamVersionAtTime(std::string_view stream, int64_t time_ns) {
  if (!open_) return Status::Unavailable("the store is closed");
  ANNAL_RETURN_IF_ERROR(ValidateStreamName(stream));
  return PartitionFor(stream).StreamVersionAtTime(stream, time_ns);
}

Status StoreImpl::Checkpoint() {
  if (!open_) return Status::Unavailable("the store is closed");
  return CheckpointAll();
}

Status StoreImpl::CheckpointAll() {
  for (auto& p : partitions_) ANNAL_RETURN_IF_ERROR(p->WriteCheckpoint());
  return Status::Ok();
}

void StoreImpl::CheckpointerLoop() {
  using Clock = std::chrono::steady_clock;
  std::vector<Clock::time_point> last(partitions_.size(), Clock::now());
  std::unique_lock lock(checkpointer_mu_);
  while (!checkpointer_stop_) {
    checkpointer_cv_.wait_for(lock, std::chrono::milliseconds(200));
    if (checkpointer_stop_) break;
    lock.unlock();
    for (size_t i = 0; i < partitions_.size(); ++i) {
      auto age = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - last[i]);
      // Decided under the partition's checkpoint lock: deciding first let a
      // checkpoint due before a Store::Checkpoint be written right after it.
      auto due = [&](uint64_t bytes, uint64_t last_size) {
        bool interval_passed = bytes >= options_.checkpoint_interval_bytes ||
                               (bytes > 0 && static_cast<uint64_t>(age.count()) >= options_.checkpoint_interval_ms);
        // A checkpoint copies the whole stream table: with many streams it
        // waits until it is small beside the log written since the last.
        return interval_passed && bytes >= limits::kLogBytesPerCheckpointByte * last_size;
      };
      Result<bool> wrote = partitions_[i]->WriteCheckpointIfDue(due);
      if (!wrote.ok())
        options_.log("checkpoint of partition " + std::to_string(i) + " failed: " + wrote.status().ToString());
      if (!wrote.ok() || *wrote) last[i] = Clock::now();
    }
    lock.lock();
  }
}

Status StoreImpl::Close() {
  if (!open_.exchange(false)) return Status::Ok();
  {
    std::lock_guard lock(checkpointer_mu_);
    checkpointer_stop_ = true;
  }
  checkpointer_cv_.notify_all();
  if (checkpointer_.joinable()) checkpointer_.join();
  for (auto& p : partitions_) p->StopWriter();
  if (sequencer_) sequencer_->Close();
  Status s = CheckpointAll();
  // Release files and the directory lock: the store may be opened again.
  partitions_.clear();
  lock_fd_ = fs::Fd();
  options_.log("closed " + dir_);
  return s;
}

}  // namespace

Result<std::unique_ptr<Store>> Store::Open(const std::string& dir, const Options& options) {
  auto store = std::make_unique<StoreImpl>(dir, options);
  ANNAL_RETURN_IF_ERROR(store->OpenImpl());
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace annal
