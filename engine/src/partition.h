// Partition: one directory of segment files, one writer thread with its own
// io_uring, and the stream index of the streams that hash to it.
//
// Concurrency contract
// - The writer thread owns: the io_uring (LogWriterIo), the batch buffers,
//   the pending heads of streams with appends in flight, the active segment
//   and the write offset. Nothing else touches them.
// - `mu_` (a shared_mutex) guards the durable state that readers see: the
//   stream index, the segment list and summaries, last position and time.
//   Only the writer takes it exclusively, once per durable batch, to publish
//   it. Readers take it shared for a lookup, then read files without it:
//   bytes below a segment's published end_offset never change. A checkpoint
//   takes it shared in short steps, never for the whole stream index, so
//   that the writer never waits long to publish (CaptureCheckpoint).
// - `queue_mu_` guards the append queue, the stopping flag and the fail-stop
//   status. Appenders hold it only to push, and notify the writer only when
//   it is idle (nothing in flight): a busy writer looks at the queue after
//   each completion anyway.
//
// Write path (group commit): appenders queue AppendOps. When no batch is in
// flight the writer takes everything queued, checks expected versions
// against the pending heads (so appends still in flight count), encodes the
// admitted appends into one batch buffer, reserves global positions, and
// submits write + fdatasync as one linked pair. While that runs, new appends
// queue up and form the next batch. On completion it publishes the batch to
// the index, advances the sequencer's durable watermark and runs callbacks.
// A failed write or fdatasync fail-stops the partition: every pending and
// later append fails; nothing after the failure is acknowledged.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "annal/env.h"
#include "annal/stats.h"
#include "annal/store.h"
#include "block_cache.h"
#include "checkpoint.h"
#include "segment.h"
#include "segment_index.h"
#include "sequencer.h"
#include "stream_index.h"

namespace annal {

struct PartitionConfig {
  uint32_t id = 0;
  uint32_t partitions = 0;
  std::string dir;
  uint64_t segment_bytes = 0;
  size_t max_batch_bytes = 0;
  Env* env = nullptr;
  BlockCache* cache = nullptr;  // shared by the store's partitions
  bool seal = true;
  size_t seal_block_bytes = 0;
  int seal_level = 3;
  bool seal_compress_literals = false;
  size_t tail_cache_bytes = 0;  // 0: no tail cache
  std::function<void(const std::string&)> log;
};

// One queued append. The store validates names and sizes before queueing.
struct AppendOp {
  std::string stream;
  ExpectedVersion expected = ExpectedVersion::Any();
  std::vector<EventData> events;
  AppendCallback done;
  size_t encoded_bytes = 0;  // sum of the events' record sizes
  // Set by the writer when admitted to a batch.
  uint64_t first_version = 0;
  uint32_t first_record = 0;
  uint64_t prev_location = format::kNoLocation;  // the stream's head before this append
  uint64_t hash = 0;                             // format::StreamHash(stream)
  uint32_t name_check = 0;                       // format::StreamNameCheck(stream)
};

class Partition {
 public:
  explicit Partition(PartitionConfig config);
  ~Partition();
  Partition(const Partition&) = delete;
  Partition& operator=(const Partition&) = delete;

  // Builds the index from the checkpoint and the log after it. Called once,
  // before StartWriter.
  Status Recover();
  uint64_t last_position() const;
  int64_t last_recorded_at_ns() const;

  Status StartWriter(Sequencer* sequencer);
  // Queues an append, or completes it at once with the reason it cannot be.
  void Enqueue(std::unique_ptr<AppendOp> op);
  // Stops accepting, finishes what was queued, joins the writer.
  void StopWriter();

  // `near`, when not 0, is the global position of an event of `stream` the
  // read may start from instead of the head (Store::ReadStreamNear).
  Result<std::vector<RecordedEvent>> ReadStream(std::string_view stream, uint64_t from,
                                                ReadDirection direction, size_t max_count,
                                                uint64_t near = 0);
  Result<StreamInfo> Info(std::string_view stream);
  // The first position of a batch committed at or after `time_ns`; 0 when
  // this partition has none.
  Result<uint64_t> PositionAtTime(int64_t time_ns);
  // The first version of `stream` recorded at or after `time_ns`; head + 1
  // when none.
  Result<uint64_t> StreamVersionAtTime(std::string_view stream, int64_t time_ns);
  // Blocks until the finisher has indexed (and sealed, when configured)
  // every full segment queued so far. For tests and tools.
  void WaitForFinisher();

  // Iterates this partition's events with positions in [from, until], in order.
  class Cursor {
   public:
    Cursor(Partition* p, uint64_t from, uint64_t until) : p_(p), from_(from), until_(until) {}
    // The next event, or nullptr at the end. Valid until the next call.
    Result<const RecordedEvent*> Peek();
    // The location of the event Peek returned.
    uint64_t location() const { return locations_[next_]; }
    void Pop() { ++next_; }

   private:
    Status LoadNextBatch();
    Partition* p_;
    uint64_t from_, until_;
    bool started_ = false, done_ = false;
    std::shared_ptr<SegmentFile> seg_;
    uint64_t offset_ = 0, end_offset_ = 0;
    std::vector<RecordedEvent> events_;
    std::vector<uint64_t> locations_;  // of events_
    size_t next_ = 0;
    std::vector<uint8_t> buf_;
  };

  PartitionStats Stats() const;
  Status WriteCheckpoint();
  // Writes a checkpoint when `due(log bytes since the last one, the last
  // one's size)` holds, asked under the checkpoint lock: a checkpoint that
  // was being written meanwhile (Store::Checkpoint) counts. True when it
  // wrote one.
  Result<bool> WriteCheckpointIfDue(const std::function<bool(uint64_t bytes, uint64_t last_size)>& due);
  uint32_t id() const { return config_.id; }

 private:
  // A segment: its file (replaced by its sealed form once sealed), what is
  // kept in memory about it, and its stream index: built in memory until
  // the finisher writes it to disk, then read from there.
  struct SegmentSlot {
    std::shared_ptr<SegmentFile> file;
    SegmentSummary summary;
    std::shared_ptr<SegmentIndexBuilder> building;  // shared: a checkpoint reading it keeps it
    std::shared_ptr<SegmentIndex> index;
  };
  // A stream's durable head as a reader found it.
  struct Found {
    StreamSlot slot;
    int64_t head_recorded_at_ns = 0;
  };
  struct Batch {
    std::vector<uint8_t> bytes;
    std::vector<uint32_t> record_offsets;
    std::vector<std::unique_ptr<AppendOp>> ops;
    std::shared_ptr<SegmentFile> segment;
    uint32_t file_offset = 0;
    uint64_t first_position = 0;
    int64_t recorded_at_ns = 0;
    void Reset();
  };
  struct Head {
    bool exists = false;
    uint64_t version = 0;
    uint64_t location = 0;
    uint32_t last_id_check = 0;  // format::EventIdCheck of the head event's id
  };
  struct PendingHead {
    Head head;
    uint32_t ops = 0;
  };

  // Recovery.
  Status OpenSegments(std::vector<uint32_t> ids);
  Status WriteCheckpointLocked();  // REQUIRES: checkpoint_mu_ held
  std::optional<std::string> CaptureCheckpoint(size_t step_slots);
  bool LoadCheckpoint(uint32_t* start_slot, uint32_t* start_offset);
  Status OpenIndexes();
  std::vector<bool> restored_;  // recovery only: a slot's index came from the checkpoint
  static Status IndexOnlyScan(const SegmentFile& file, uint64_t until, SegmentIndexBuilder* index,
                              SegmentSummary* summary);
  Status ScanFrom(uint32_t start_slot, uint32_t start_offset);
  Status ApplyRecovered(SegmentSlot& slot, uint64_t offset, const std::vector<uint8_t>& batch,
                        const format::BatchHeader& header);
  Status ApplyRecord(SegmentSlot& slot, const format::RecordView& r, uint64_t location);
  bool LaterSegmentsEmpty(size_t slot);

  // Writer thread.
  void WriterLoop();
  bool TakeQueued();
  void FillGathering();
  bool Admit(std::unique_ptr<AppendOp>& op);
  Head CurrentHead(const AppendOp& op);
  Head DurableHead(const AppendOp& op);
  std::optional<Result<AppendResult>> CheckRetry(const AppendOp& op, const Head& head);
  void Encode(AppendOp& op, const Head& head);
  Status Roll();
  Status OpenForWriting();
  void StartPreparing();
  std::shared_ptr<SegmentFile> TakePrepared();
  void Submit();
  Status SubmitDirect(const Batch& b);
  void Complete(const IoCompletion& c);
  void Acknowledge();
  void Publish(const Batch& b);
  void FailStop(const Status& why);
  Status FailedStatus();

  // A tail cache for the active segment from `start` (in `ring` when
  // given), or none when off.
  std::shared_ptr<TailCache> NewTailCache(uint64_t start, std::unique_ptr<uint8_t[]> ring = nullptr) const;

  // Finisher thread: writes full segments' indexes, then seals them.
  void FinisherLoop();
  void QueueFinish(uint32_t segment_id);
  Status Finish(uint32_t segment_id);
  // Frees the retired raw segments no reader holds any more, a step at a
  // time (fs::FreeGradually).
  void FreeRetired();

  // Reads.
  std::shared_ptr<SegmentFile> SegmentById(uint32_t id) const;  // takes mu_ shared
  // The stream's slot, verified against the name in its head record.
  Result<std::optional<Found>> FindStream(std::string_view stream, uint64_t hash) const;
  // The run of segment `LocationSegment(location)` holding the event at
  // `location`, cut to versions >= min_version.
  Result<Run> RunAt(uint64_t hash, uint64_t location, uint64_t min_version);
  // Locations of versions [lo, hi] of the stream whose event `version` is
  // at `location` (version >= hi), ascending.
  Result<std::vector<uint64_t>> Locate(uint64_t hash, uint64_t version, uint64_t location, uint64_t lo,
                                       uint64_t hi);
  // Where a scan for the first batch at or after `target` (a position, or
  // with `by_time` a commit time) may start in a segment: by its block map
  // when sealed, its index file's samples, or `samples`.
  static Result<uint64_t> StartOffset(const SegmentFile& file, const std::shared_ptr<SegmentIndex>& index,
                                      std::vector<TimeSample> samples, uint64_t target, bool by_time);
  // StartOffset, rebuilding a damaged index file first.
  Result<uint64_t> StartOffsetHealing(const SegmentFile& file, std::shared_ptr<SegmentIndex> index,
                                      std::vector<TimeSample> samples, uint64_t target, bool by_time);
  // Replaces the damaged index file `damaged` of segment `segment_id` by
  // an index rebuilt from the segment (in memory now, on disk once the
  // finisher writes it again). Index files are derived data.
  Status RebuildIndex(uint32_t segment_id, const std::shared_ptr<SegmentIndex>& damaged, const Status& why);
  Status ReadRecordAt(uint64_t location, bool verify, std::vector<uint8_t>* buf,
                      format::RecordView* r) const;
  void Log(const std::string& line) const;
  void NameThread(std::thread& t, const char* prefix) const;

  const PartitionConfig config_;
  Sequencer* sequencer_ = nullptr;

  mutable std::shared_mutex mu_;
  StreamTable streams_;                // guarded by mu_
  std::vector<SegmentSlot> segments_;  // guarded by mu_; ids ascending, contiguous
  uint64_t last_position_ = 0;         // guarded by mu_
  int64_t last_recorded_at_ns_ = 0;    // guarded by mu_

  std::mutex queue_mu_;
  std::vector<std::unique_ptr<AppendOp>> queue_;  // guarded by queue_mu_
  bool stopping_ = false;                         // guarded by queue_mu_
  Status failed_;                                 // guarded by queue_mu_
  std::condition_variable queue_cv_;              // the idle writer waits here
  bool writer_idle_ = false;                      // guarded by queue_mu_

  // Writer-thread state.
  std::unique_ptr<LogWriterIo> io_;
  std::thread writer_;
  std::shared_ptr<SegmentFile> active_;
  uint64_t write_offset_ = 0;
  // The tail cache of the segment before active_; its ring goes to the
  // next segment at the next roll.
  std::shared_ptr<TailCache> previous_tail_;
  const std::shared_ptr<TailCache::Counters> tail_counters_ = std::make_shared<TailCache::Counters>();
  // gathering_ -> inflight_ (written) -> acked_ (durable, being answered).
  Batch inflight_, gathering_, acked_;
  // Direct I/O of the active segment (see Submit): a descriptor opened with
  // O_DIRECT, the aligned buffer the batch in flight is written from, and
  // the bytes before write_offset_ in its block, which the next write
  // begins with. Off when the filesystem refuses O_DIRECT.
  bool direct_io_ = true;
  fs::Fd direct_fd_;
  fs::AlignedBuffer io_buffer_;
  std::vector<uint8_t> tail_block_;
  uint64_t next_tag_ = 1;
  std::deque<std::unique_ptr<AppendOp>> backlog_;
  std::unordered_map<std::string, PendingHead> pending_;
  bool writer_failed_ = false;
  // The finisher: segment ids queued under finish_mu_.
  std::thread finisher_;
  std::mutex finish_mu_;
  std::condition_variable finish_cv_;
  std::deque<uint32_t> to_finish_;
  bool finishing_ = false;
  std::atomic<bool> finisher_stop_{false};
  // Raw segments replaced by their sealed files (unlinked, still open), kept
  // until no reader holds them so that their blocks are freed gradually
  // rather than at once by the last close. Finisher thread only.
  std::vector<std::shared_ptr<SegmentFile>> retired_;

  // The next segment, created ahead of need on prepare_thread_ so that a
  // roll does not wait for its zero-fill. The writer starts the thread and
  // joins it before reading prepared_; nothing else touches either.
  std::thread prepare_thread_;
  std::shared_ptr<SegmentFile> prepared_;
  Status prepare_status_;

  // Monitoring (stats.h): written by the writer thread, read by anyone.
  std::atomic<uint64_t> stat_batches_{0}, stat_events_{0}, stat_appends_{0}, stat_bytes_{0};
  std::atomic<bool> stat_fail_stopped_{false};
  Histogram sync_seconds_{LatencyBoundsSeconds()};
  Histogram batch_events_{SizeBounds()};
  std::chrono::steady_clock::time_point submitted_at_;  // writer thread only

  std::mutex checkpoint_mu_;
  std::atomic<uint64_t> bytes_since_checkpoint_{0};
  std::atomic<uint64_t> last_checkpoint_bytes_{0};  // size of the last checkpoint written
};

}  // namespace annal
