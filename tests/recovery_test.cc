// Recovery: torn tails are dropped, damage before the tail is refused with
// file and offset, checkpoints are an optimisation only, and a failed write
// fail-stops its partition.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <random>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <thread>

#include "annal/limits.h"
#include "annal/store.h"
#include "fault_env.h"
#include "format.h"
#include "test_util.h"
#include "torn_batch.h"

namespace annal {
namespace {

using testing::Event;
using testing::IdFrom;
using testing::TempDir;

struct BatchAt {
  uint64_t offset;
  uint32_t length;
};

// The batches of a segment file, read with the format's own decoder.
std::string FileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

std::vector<BatchAt> Batches(const std::string& path) {
  const std::string data = FileBytes(path);
  std::vector<BatchAt> out;
  uint64_t at = format::kSegmentHeaderBytes;
  while (at + format::kBatchHeaderBytes <= data.size()) {
    format::BatchHeader h;
    if (!format::DecodeBatchHeader(reinterpret_cast<const uint8_t*>(data.data() + at), &h).ok()) break;
    out.push_back({at, h.length});
    at += h.length;
  }
  return out;
}

void Overwrite(const std::string& path, uint64_t offset, const std::string& bytes) {
  int fd = ::open(path.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(offset)),
            static_cast<ssize_t>(bytes.size()));
  ::close(fd);
}

// Rewrites bytes of the segment header at `path` with `patch` and gives it
// a valid checksum again: a file another build wrote, or one copied in
// from elsewhere, whose checksum holds.
void PatchSegmentHeader(const std::string& path, const std::function<void(uint8_t*)>& patch) {
  std::string bytes = FileBytes(path).substr(0, format::kSegmentHeaderBytes);
  auto* p = reinterpret_cast<uint8_t*>(bytes.data());
  patch(p);
  format::Put64(p + format::kSegmentHeaderChecksumOffset, format::Checksum(p, format::kSegmentHeaderChecksumOffset));
  Overwrite(path, 0, bytes);
}

// The same for the batch at `at`: `patch` gets its bytes, header first,
// and the header and trailer are given valid checksums again, as a writer
// with a bug would have left them.
void PatchBatch(const std::string& path, BatchAt at, const std::function<void(uint8_t*)>& patch) {
  std::string batch = FileBytes(path).substr(at.offset, at.length);
  auto* p = reinterpret_cast<uint8_t*>(batch.data());
  patch(p);
  format::Put64(p + format::kBatchHeaderChecksumOffset, format::Checksum(p, format::kBatchHeaderChecksumOffset));
  format::Put64(p + at.length - format::kBatchTrailerBytes, format::BatchChecksum(p, at.length));
  Overwrite(path, at.offset, batch);
}

// Rewrites the record of the single-event batch at `at` with `patch`, and
// gives it and its batch valid checksums again.
void PatchOnlyRecord(const std::string& path, BatchAt at, const std::function<void(uint8_t*)>& patch) {
  PatchBatch(path, at, [&](uint8_t* b) {
    uint8_t* record = b + format::kBatchHeaderBytes;
    patch(record);
    format::PatchRecord(record, format::Get64(record + 16), static_cast<int64_t>(format::Get64(record + 24)));
  });
}

void FlipBit(const std::string& path, uint64_t offset) {
  int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  char c;
  ASSERT_EQ(::pread(fd, &c, 1, static_cast<off_t>(offset)), 1);
  c ^= 0x10;
  ASSERT_EQ(::pwrite(fd, &c, 1, static_cast<off_t>(offset)), 1);
  ::close(fd);
}

class RecoveryTest : public ::testing::Test {
 protected:
  RecoveryTest() {
    options_.partitions = 1;  // one segment file to damage
    options_.segment_size_bytes = 1024 * 1024;
    // These tests damage segments as written; sealed ones are damaged in
    // seal_test.cc.
    options_.seal_segments = false;
    options_.log = [this](const std::string& l) { log_.push_back(l); };
  }
  Result<std::unique_ptr<Store>> Open() { return Store::Open(dir_.path(), options_); }
  std::string Segment(uint32_t id = 0) {
    return dir_.path() + "/" + format::PartitionDirName(0) + "/" + format::SegmentFileName(id);
  }
  std::string CheckpointPath() {
    return dir_.path() + "/" + format::PartitionDirName(0) + "/" + format::CheckpointFileName();
  }
  // Appends `n` single-event appends to stream "r-1" and closes the store,
  // removing the checkpoint so that reopening scans the log.
  void WriteAndCloseWithoutCheckpoint(int n) {
    auto store = Open();
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    for (int i = 0; i < n; ++i)
      ASSERT_TRUE((*store)->Append("r-1", ExpectedVersion::Any(), {Event("T", "payload-" + std::to_string(i))}).ok());
    ASSERT_TRUE((*store)->Close().ok());
    std::filesystem::remove(CheckpointPath());
  }
  // Eight appends of 300 KiB: three 1 MiB segments hold batches. Closes
  // the store, which leaves a checkpoint whose tail is in segment 2.
  void FillThreeSegments() {
    {
      auto store = Open();
      ASSERT_TRUE(store.ok());
      std::string big(300 * 1024, 'x');
      for (int i = 0; i < 8; ++i) ASSERT_TRUE((*store)->Append("r-1", ExpectedVersion::Any(), {Event("T", big)}).ok());
      ASSERT_TRUE((*store)->Close().ok());
    }
    ASSERT_FALSE(Batches(Segment(2)).empty());
  }
  // The same, and removes the checkpoint, so reopening scans the log.
  void FillThreeSegmentsWithoutCheckpoint() {
    ASSERT_NO_FATAL_FAILURE(FillThreeSegments());
    std::filesystem::remove(CheckpointPath());
  }
  // Opening fails as damage, with a message that holds `part`.
  ::testing::AssertionResult OpenRefuses(const std::string& part) {
    auto store = Open();
    if (store.ok()) return ::testing::AssertionFailure() << "the store opened";
    if (store.status().code() != StatusCode::kCorruption || store.status().message().find(part) == std::string::npos)
      return ::testing::AssertionFailure() << "expected corruption naming '" << part << "', got "
                                           << store.status().ToString();
    return ::testing::AssertionSuccess();
  }
  ::testing::AssertionResult Logged(const std::string& needle) {
    std::string all;
    for (const auto& l : log_) {
      if (l.find(needle) != std::string::npos) return ::testing::AssertionSuccess();
      all += "\n  " + l;
    }
    return ::testing::AssertionFailure() << "no log line has '" << needle << "'; the log:" << all;
  }

  TempDir dir_{"recovery"};
  Options options_;
  std::vector<std::string> log_;
};

TEST_F(RecoveryTest, TornFinalBatchIsDroppedAndAppendsContinue) {
  WriteAndCloseWithoutCheckpoint(5);
  auto batches = Batches(Segment());
  ASSERT_EQ(batches.size(), 5u);
  // The final batch's second half never reached the disk.
  BatchAt last = batches.back();
  Overwrite(Segment(), last.offset + last.length / 2, std::string(last.length - last.length / 2, '\0'));
  auto store = Open();
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_TRUE(Logged("dropping a torn final batch"));
  auto info = (*store)->GetStreamInfo("r-1");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->event_count, 4u);
  auto r = (*store)->Append("r-1", ExpectedVersion::Exact(3), {Event("T", "after")});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->first_position, GlobalPosition(5));
  ASSERT_TRUE((*store)->Close().ok());
  std::filesystem::remove(CheckpointPath());
  auto again = Open();  // the new batch replaced the torn one cleanly
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  auto events = (*again)->ReadStream("r-1", StreamVersion(0), ReadDirection::kForward, 10);
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 5u);
  EXPECT_EQ((*events)[4].payload, "after");
}

TEST_F(RecoveryTest, BlocksOfAnIncompleteBatchBehindAZeroHeaderAreCleared) {
  // After a power loss the device may keep later blocks of the batch in
  // flight but not its first: a zero header with bytes behind it.
  WriteAndCloseWithoutCheckpoint(3);
  BatchAt last = Batches(Segment()).back();
  uint64_t end = last.offset + last.length;
  uint64_t garbage_at = (end / 4096 + 2) * 4096;
  Overwrite(Segment(), garbage_at, std::string(3000, 'g'));
  {
    auto store = Open();
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    EXPECT_EQ((*store)->GetStreamInfo("r-1")->event_count, 3u);
    // A batch that ends exactly where the old bytes begin: the next scan
    // reads its following header there.
    size_t overhead = format::kBatchHeaderBytes + format::kBatchTrailerBytes +
                      format::RecordSize(std::string("r-1").size(), 1, 2, 0);
    std::string payload(garbage_at - end - overhead, 'x');
    ASSERT_TRUE((*store)->Append("r-1", ExpectedVersion::Exact(2), {Event("T", payload)}).ok());
    BatchAt appended = Batches(Segment()).back();
    ASSERT_EQ(appended.offset + appended.length, garbage_at);
  }
  std::filesystem::remove(CheckpointPath());
  auto store = Open();
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ((*store)->GetStreamInfo("r-1")->event_count, 4u);
}

TEST_F(RecoveryTest, FileCutMidBatchIsATornTail) {
  WriteAndCloseWithoutCheckpoint(3);
  auto batches = Batches(Segment());
  ASSERT_EQ(batches.size(), 3u);
  std::filesystem::resize_file(Segment(), batches.back().offset + 20);
  auto store = Open();
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ((*store)->GetStreamInfo("r-1")->event_count, 2u);
  EXPECT_EQ(std::filesystem::file_size(Segment()), options_.segment_size_bytes)
      << "the cut segment is extended again before it is written to";
  ASSERT_TRUE((*store)->Append("r-1", ExpectedVersion::Exact(1), {Event("T", "x")}).ok());
}

TEST_F(RecoveryTest, BitFlipBeforeTheTailRefusesToOpenNamingFileAndOffset) {
  WriteAndCloseWithoutCheckpoint(5);
  auto batches = Batches(Segment());
  uint64_t damaged = batches[1].offset + format::kBatchHeaderBytes + format::kRecordHeaderBytes + 5;
  FlipBit(Segment(), damaged);
  auto store = Open();
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kCorruption);
  EXPECT_NE(store.status().message().find(Segment() + " at offset " + std::to_string(batches[1].offset)),
            std::string::npos)
      << store.status().message();
}

TEST_F(RecoveryTest, BitFlipInTheFinalCompleteBatchIsCorruptionNotATear) {
  WriteAndCloseWithoutCheckpoint(3);
  auto batches = Batches(Segment());
  FlipBit(Segment(), batches.back().offset + format::kBatchHeaderBytes + 3);
  auto store = Open();
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kCorruption);
  EXPECT_NE(store.status().message().find("offset " + std::to_string(batches.back().offset)), std::string::npos);
}

TEST_F(RecoveryTest, BitFlipInABatchHeaderIsCorruption) {
  WriteAndCloseWithoutCheckpoint(3);
  auto batches = Batches(Segment());
  FlipBit(Segment(), batches[0].offset + 9);  // inside first_position
  EXPECT_TRUE(OpenRefuses("batch header checksum mismatch"));
}

TEST_F(RecoveryTest, DamageBehindACheckpointIsReportedOnRead) {
  {
    auto store = Open();
    ASSERT_TRUE(store.ok());
    for (int i = 0; i < 3; ++i) ASSERT_TRUE((*store)->Append("r-1", ExpectedVersion::Any(), {Event("T", "p")}).ok());
  }  // closes with a checkpoint: reopening will not rescan these batches
  auto batches = Batches(Segment());
  uint64_t record = batches[1].offset + format::kBatchHeaderBytes;
  FlipBit(Segment(), record + format::kRecordHeaderBytes + 4);
  auto store = Open();
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  auto read = (*store)->ReadStream("r-1", StreamVersion(1), ReadDirection::kForward, 1);
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.status().code(), StatusCode::kCorruption);
  EXPECT_NE(read.status().message().find(Segment() + " at offset " + std::to_string(record)), std::string::npos)
      << read.status().message();
  auto all = (*store)->ReadAll(GlobalPosition(1), 10);
  EXPECT_EQ(all.status().code(), StatusCode::kCorruption);
  // Undamaged events stay readable.
  EXPECT_TRUE((*store)->ReadStream("r-1", StreamVersion(2), ReadDirection::kForward, 1).ok());
}

TEST_F(RecoveryTest, CorruptCheckpointIsIgnoredAndTheLogReplayed) {
  {
    auto store = Open();
    ASSERT_TRUE(store.ok());
    for (int i = 0; i < 10; ++i) ASSERT_TRUE((*store)->Append("r-" + std::to_string(i % 3), ExpectedVersion::Any(), {Event("T", "p")}).ok());
  }
  FlipBit(CheckpointPath(), 30);
  auto store = Open();
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_TRUE(Logged("ignoring index checkpoint"));
  EXPECT_EQ((*store)->GetStreamInfo("r-0")->event_count, 4u);
  EXPECT_EQ((*store)->DurableHead(), GlobalPosition(10));
}

TEST_F(RecoveryTest, CheckpointThenMoreAppendsReplaysOnlyTheTail) {
  {
    auto store = Open();
    ASSERT_TRUE(store.ok());
    for (int i = 0; i < 5; ++i) ASSERT_TRUE((*store)->Append("r-1", ExpectedVersion::Any(), {Event("T", "a")}).ok());
    ASSERT_TRUE((*store)->Checkpoint().ok());
    for (int i = 0; i < 5; ++i) ASSERT_TRUE((*store)->Append("r-1", ExpectedVersion::Any(), {Event("T", "b")}).ok());
    std::filesystem::copy_file(CheckpointPath(), CheckpointPath() + ".mid");
  }
  // Put back the checkpoint from the middle, as if the process died after it.
  std::filesystem::rename(CheckpointPath() + ".mid", CheckpointPath());
  auto store = Open();
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  auto events = (*store)->ReadStream("r-1", StreamVersion(0), ReadDirection::kForward, 100);
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 10u);
  EXPECT_EQ((*events)[9].payload, "b");
}

// Checkpoints read the stream table in steps while the writer publishes
// between them. Each must still be the index as of one point of the log:
// reopening from any of them replays the rest with every stream's events
// following its head, and ends with every event there.
TEST_F(RecoveryTest, CheckpointsTakenWhileAppendsRunAreEachOnePointOfTheLog) {
  constexpr int kStreams = 10000;  // about three steps of the stream table
  auto name = [](uint64_t i) { return "c-" + std::to_string(i); };
  std::vector<std::string> saved;
  std::vector<uint64_t> counts(kStreams);
  {
    auto opened = Open();
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    Store& store = **opened;
    std::mutex mu;
    std::condition_variable cv;
    int in_flight = 0;
    uint64_t completed = 0;
    std::string failure;
    auto append = [&](uint64_t stream) {
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return in_flight < 64; });
      ++in_flight;
      lock.unlock();
      store.AppendAsync(name(stream), ExpectedVersion::Any(), {Event("T", "x")}, [&](Result<AppendResult> r) {
        std::lock_guard done(mu);
        if (!r.ok() && failure.empty()) failure = r.status().ToString();
        --in_flight;
        ++completed;
        cv.notify_all();
      });
    };
    for (uint64_t i = 0; i < kStreams; ++i) append(i);
    std::atomic<bool> stop{false};
    std::thread appender([&] {
      std::mt19937_64 rng(5);
      while (!stop.load()) append(rng() % kStreams);
    });
    for (uint64_t k = 0; k < 12; ++k) {
      {
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return completed >= kStreams + k * 2000; });
      }
      ASSERT_TRUE(store.Checkpoint().ok());
      saved.push_back(CheckpointPath() + "." + std::to_string(k));
      std::filesystem::copy_file(CheckpointPath(), saved.back());
    }
    stop = true;
    appender.join();
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return in_flight == 0; });
    ASSERT_EQ(failure, "");
    for (uint64_t i = 0; i < kStreams; ++i) counts[i] = store.GetStreamInfo(name(i))->event_count;
  }
  uint64_t total = 0;
  for (uint64_t c : counts) total += c;
  ASSERT_GT(total, uint64_t{kStreams} * 3 / 2) << "appends must have run beside the checkpoints";
  for (size_t k : {size_t{0}, saved.size() / 2, saved.size() - 1}) {
    SCOPED_TRACE("checkpoint " + std::to_string(k));
    std::filesystem::copy_file(saved[k], CheckpointPath(), std::filesystem::copy_options::overwrite_existing);
    log_.clear();
    auto store = Open();
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    EXPECT_FALSE(Logged("ignoring index checkpoint"));
    for (uint64_t i = 0; i < kStreams; ++i) {
      auto info = (*store)->GetStreamInfo(name(i));
      ASSERT_TRUE(info.ok()) << name(i) << ": " << info.status().ToString();
      ASSERT_EQ(info->event_count, counts[i]) << name(i);
    }
  }
}

// A checkpoint copies the whole stream table, so the background
// checkpointer waits for the log to outgrow the last one several times
// over, however small checkpoint_interval_bytes is.
TEST_F(RecoveryTest, BackgroundCheckpointsWaitForTheLogToOutgrowTheLastOne) {
  options_.checkpoint_interval_bytes = 1;
  auto store = Open();
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  for (int i = 0; i < 5000; ++i)
    ASSERT_TRUE((*store)->Append("s-" + std::to_string(i), ExpectedVersion::Any(), {Event("T", "x")}).ok());
  ASSERT_TRUE((*store)->Checkpoint().ok());
  auto inode = [&] {
    struct stat st{};
    return ::stat(CheckpointPath().c_str(), &st) == 0 ? st.st_ino : ino_t{0};
  };
  const ino_t first = inode();
  const uint64_t size = std::filesystem::file_size(CheckpointPath());
  ASSERT_GT(size, 5000u * 40);
  // A tenth of the checkpoint's size in log: the checkpointer (every 200 ms)
  // lets it be.
  std::string payload(200, 'p');
  uint64_t written = 0;
  for (int i = 0; written < size / 10; ++i, written += 300)
    ASSERT_TRUE((*store)->Append("s-" + std::to_string(i), ExpectedVersion::Any(), {Event("T", payload)}).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  EXPECT_EQ(inode(), first) << "a checkpoint was written after " << written << " bytes of log";
  // Past limits::kLogBytesPerCheckpointByte times its size, it writes one.
  for (int i = 0; written < 2 * limits::kLogBytesPerCheckpointByte * size; ++i, written += 200)
    ASSERT_TRUE((*store)->Append("s-" + std::to_string(i), ExpectedVersion::Any(), {Event("T", payload)}).ok());
  // The checkpointer looks every 200 ms; a loaded machine (the sanitizer
  // build, a busy CI) may take seconds to write one. The wait ends as soon
  // as it is there.
  bool replaced = false;
  for (int i = 0; i < 400 && !replaced; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    replaced = inode() != first;
  }
  EXPECT_TRUE(replaced) << "no checkpoint after " << written << " bytes of log";
}

TEST_F(RecoveryTest, MissingSegmentInTheMiddleIsCorruption) {
  {
    auto store = Open();
    ASSERT_TRUE(store.ok());
    std::string big(300 * 1024, 'x');
    for (int i = 0; i < 12; ++i) ASSERT_TRUE((*store)->Append("r-1", ExpectedVersion::Any(), {Event("T", big)}).ok());
  }
  ASSERT_TRUE(std::filesystem::exists(Segment(2)));
  std::filesystem::remove(Segment(1));
  EXPECT_TRUE(OpenRefuses(format::SegmentFileName(1) + ": segment file is missing"));
}

TEST_F(RecoveryTest, DamagedHeaderOfTheNewestSegmentIsReportedNotRecreated) {
  WriteAndCloseWithoutCheckpoint(3);
  FlipBit(Segment(), 20);
  auto store = Open();
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kCorruption);
  EXPECT_EQ(Batches(Segment()).size(), 3u) << "the damaged segment must be left as it was";
}

TEST_F(RecoveryTest, NewestSegmentWhoseCreationWasCutShortIsRecreated) {
  WriteAndCloseWithoutCheckpoint(3);
  { std::ofstream(Segment(1), std::ios::binary) << std::string(10, '\0'); }
  auto store = Open();
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_TRUE(Logged("whose creation was cut short"));
  EXPECT_EQ((*store)->GetStreamInfo("r-1")->event_count, 3u);
  ASSERT_TRUE((*store)->Append("r-1", ExpectedVersion::Exact(2), {Event("T", "x")}).ok());
}

TEST_F(RecoveryTest, TornLookingBatchFollowedByDataIsCorruption) {
  WriteAndCloseWithoutCheckpoint(5);
  auto batches = Batches(Segment());
  BatchAt middle = batches[2];
  Overwrite(Segment(), middle.offset + middle.length - 8, std::string(8, '\0'));  // zero its trailer
  auto store = Open();
  ASSERT_FALSE(store.ok()) << "acknowledged batches after it would be erased";
  EXPECT_NE(store.status().message().find("offset " + std::to_string(middle.offset)), std::string::npos)
      << store.status().message();
  EXPECT_EQ(Batches(Segment()).size(), 5u);
}

// Zeros follow the batch in its own segment, but a later segment holds
// batches: a crash tears only the newest batch, so this is damage.
TEST_F(RecoveryTest, TornLookingLastBatchOfAnOlderSegmentIsCorruption) {
  ASSERT_NO_FATAL_FAILURE(FillThreeSegmentsWithoutCheckpoint());
  BatchAt last = Batches(Segment(0)).back();
  Overwrite(Segment(0), last.offset + last.length - 8, std::string(8, '\0'));  // zero its trailer
  // Dropping it would erase the acknowledged batches in later segments.
  EXPECT_TRUE(OpenRefuses(Segment(0) + " at offset " + std::to_string(last.offset) +
                          ": batch trailer was never written, and data follows it"));
}

// A later segment whose first batch is damaged still holds data: the
// torn-looking batch before it is damage too, and nothing is deleted.
TEST_F(RecoveryTest, TornLookingBatchBeforeASegmentWhoseFirstBatchIsDamagedIsCorruption) {
  ASSERT_NO_FATAL_FAILURE(FillThreeSegmentsWithoutCheckpoint());
  BatchAt last = Batches(Segment(1)).back();
  Overwrite(Segment(1), last.offset + last.length - 8, std::string(8, '\0'));  // zero its trailer
  FlipBit(Segment(2), format::kSegmentHeaderBytes + 10);  // segment 2's first batch header
  const std::string before = FileBytes(Segment(2));
  EXPECT_TRUE(OpenRefuses(Segment(1) + " at offset " + std::to_string(last.offset) +
                          ": batch trailer was never written, and data follows it"));
  EXPECT_EQ(FileBytes(Segment(2)), before) << "segment 2 was changed or deleted";
}

// Only the newest segment may be recreated as "never written": an older one
// whose header checksum and first batch header read as zero is damage.
TEST_F(RecoveryTest, OlderSegmentThatLooksNeverWrittenIsCorruptionNotRecreated) {
  ASSERT_NO_FATAL_FAILURE(FillThreeSegmentsWithoutCheckpoint());
  Overwrite(Segment(0), format::kSegmentHeaderBytes - 8, std::string(8, '\0'));  // header checksum
  Overwrite(Segment(0), format::kSegmentHeaderBytes, std::string(format::kBatchHeaderBytes, '\0'));
  const std::string before = FileBytes(Segment(0));
  auto store = Open();
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kCorruption);
  EXPECT_EQ(FileBytes(Segment(0)), before) << "the damaged segment must be left as it was";
}

// The newest segment holds batches but its header checksum reads as zero:
// that is damage, not a creation cut short, and the batches stay.
TEST_F(RecoveryTest, NewestSegmentWithBatchesAndAZeroHeaderChecksumIsReportedNotRecreated) {
  WriteAndCloseWithoutCheckpoint(3);
  std::filesystem::remove(Segment(1));  // the empty segment made ahead: segment 0 is the newest
  Overwrite(Segment(0), format::kSegmentHeaderBytes - 8, std::string(8, '\0'));
  const std::string before = FileBytes(Segment(0));
  auto store = Open();
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kCorruption);
  EXPECT_EQ(FileBytes(Segment(0)), before);
}

// Recovery zeroes what a dropped torn batch left, from the end of the log
// on, so a shorter batch written there later cannot leave its bytes behind.
TEST_F(RecoveryTest, DroppedTornBatchIsZeroedOnDisk) {
  WriteAndCloseWithoutCheckpoint(3);
  BatchAt last = Batches(Segment()).back();
  const uint64_t end = last.offset + last.length;
  const std::string torn = testing::TornBatch(4);
  Overwrite(Segment(), end, torn);
  {
    auto store = Open();
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    EXPECT_TRUE(Logged("dropping a torn final batch"));
  }
  EXPECT_EQ(FileBytes(Segment()).substr(end, torn.size()), std::string(torn.size(), '\0'));
}

// A checkpoint that reaches past the end of a cut newest segment describes
// events that are gone: it is ignored and the log replayed.
TEST_F(RecoveryTest, CheckpointBeyondTheEndOfACutNewestSegmentIsIgnored) {
  {
    auto store = Open();
    ASSERT_TRUE(store.ok());
    for (int i = 0; i < 5; ++i)
      ASSERT_TRUE((*store)->Append("r-1", ExpectedVersion::Any(), {Event("T", "e-" + std::to_string(i))}).ok());
    ASSERT_TRUE((*store)->Close().ok());  // writes a checkpoint at the end of the log
  }
  ASSERT_TRUE(std::filesystem::exists(CheckpointPath()));
  std::filesystem::remove(Segment(1));  // the empty segment made ahead: segment 0 is the newest
  auto batches = Batches(Segment(0));
  ASSERT_EQ(batches.size(), 5u);
  std::filesystem::resize_file(Segment(0), batches[3].offset);  // three batches are left
  auto store = Open();
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_TRUE(Logged("ignoring index checkpoint"));
  auto info = (*store)->GetStreamInfo("r-1");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->event_count, 3u);
  auto events = (*store)->ReadStream("r-1", StreamVersion(0), ReadDirection::kForward, 10);
  ASSERT_TRUE(events.ok()) << events.status().ToString();
  EXPECT_EQ(events->size(), 3u);
  auto r = (*store)->Append("r-1", ExpectedVersion::Exact(2), {Event("T", "after the cut")});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->first_position, GlobalPosition(4));
}

// Files whose checksums hold but which this build must not read as its
// own: another format version, another partition, flags it does not know.
TEST_F(RecoveryTest, SegmentOfAnotherFormatVersionIsRefused) {
  WriteAndCloseWithoutCheckpoint(3);
  PatchSegmentHeader(Segment(0),
                     [](uint8_t* h) { format::Put32(h + 8, format::kFormatVersion + 1); });
  EXPECT_TRUE(OpenRefuses(Segment(0) + ": segment format version " +
                          std::to_string(format::kFormatVersion + 1) + " is not supported"));
}

TEST_F(RecoveryTest, SegmentNamingAnotherPartitionIsRefused) {
  WriteAndCloseWithoutCheckpoint(3);
  PatchSegmentHeader(Segment(0), [](uint8_t* h) { format::Put32(h + 12, 1); });
  EXPECT_TRUE(OpenRefuses(Segment(0) + ": header names partition 1"));
}

TEST_F(RecoveryTest, BatchWithFlagsThisBuildDoesNotUnderstandIsRefused) {
  WriteAndCloseWithoutCheckpoint(3);
  BatchAt middle = Batches(Segment())[1];
  PatchBatch(Segment(), middle, [](uint8_t* h) { format::Put16(h + 28, 0x0001); });
  EXPECT_TRUE(OpenRefuses(Segment() + " at offset " + std::to_string(middle.offset) +
                          ": batch has flags this build does not understand"));
}

// The writer never starts a batch it cannot finish inside its segment: a
// whole header whose length runs past the end of a full-size file is
// damage, not a torn write, even at the end of the log.
TEST_F(RecoveryTest, FinalBatchHeaderRunningPastTheSegmentIsCorruption) {
  WriteAndCloseWithoutCheckpoint(3);
  BatchAt last = Batches(Segment()).back();
  const uint64_t end = last.offset + last.length;
  format::BatchHeader h;
  h.length = static_cast<uint32_t>(2 * options_.segment_size_bytes);
  h.first_position = 4;
  h.count = 1;
  std::string header(format::kBatchHeaderBytes, '\0');
  format::EncodeBatchHeader(h, reinterpret_cast<uint8_t*>(header.data()));
  Overwrite(Segment(), end, header);
  EXPECT_TRUE(OpenRefuses(Segment() + " at offset " + std::to_string(end) +
                          ": batch runs past the end of the file"));
}

// Each event must continue its stream: a first event that points back, or
// a second start of a stream the log already holds, is damage.
TEST_F(RecoveryTest, FirstEventOfAStreamThatPointsBackIsCorruption) {
  WriteAndCloseWithoutCheckpoint(3);
  BatchAt first = Batches(Segment())[0];
  PatchOnlyRecord(Segment(), first, [](uint8_t* r) { format::Put64(r + 32, format::kSegmentHeaderBytes); });
  EXPECT_TRUE(OpenRefuses("event of stream 'r-1' at version 0 does not follow the stream's head"));
}

TEST_F(RecoveryTest, StreamStartedTwiceIsCorruption) {
  WriteAndCloseWithoutCheckpoint(3);
  BatchAt second = Batches(Segment())[1];
  PatchOnlyRecord(Segment(), second, [](uint8_t* r) {
    format::Put64(r + 8, 0);                    // version
    format::Put64(r + 32, format::kNoLocation);  // prev_location
  });
  EXPECT_TRUE(OpenRefuses("event of stream 'r-1' at version 0 does not follow the stream's head"));
}

// A crash after a roll, with the next segment already made, leaves two
// empty segments after the last one with data: one is kept for the next
// roll, the other removed, and the store goes on as before.
TEST_F(RecoveryTest, SecondEmptySegmentAfterTheLogIsRemoved) {
  WriteAndCloseWithoutCheckpoint(3);
  ASSERT_TRUE(Batches(Segment(1)).empty());
  std::filesystem::copy_file(Segment(1), Segment(2));
  PatchSegmentHeader(Segment(2), [](uint8_t* h) { format::Put64(h + 16, 2); });
  {
    auto store = Open();
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    EXPECT_FALSE(std::filesystem::exists(Segment(2)));
    EXPECT_TRUE(std::filesystem::exists(Segment(1)));
    ASSERT_TRUE((*store)->Append("r-1", ExpectedVersion::Exact(2), {Event("T", "x")}).ok());
  }
  std::filesystem::remove(CheckpointPath());
  auto store = Open();
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ((*store)->GetStreamInfo("r-1")->event_count, 4u);
}

// A checkpoint naming a segment that is no longer on disk is ignored, and
// the segments that are there are replayed.
TEST_F(RecoveryTest, CheckpointNamingMoreSegmentsThanOnDiskIsIgnored) {
  ASSERT_NO_FATAL_FAILURE(FillThreeSegments());
  const size_t left = Batches(Segment(0)).size() + Batches(Segment(1)).size();
  for (uint32_t id = 2; std::filesystem::exists(Segment(id)); ++id)
    std::filesystem::remove(Segment(id));
  auto store = Open();
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_TRUE(Logged("ignoring index checkpoint"));
  EXPECT_EQ((*store)->GetStreamInfo("r-1")->event_count, left);
}

// A segment file longer than the store's segment size was not written by
// it (copied from a store with larger segments, or appended to by a tool).
TEST_F(RecoveryTest, SegmentLongerThanTheSegmentSizeIsRefused) {
  WriteAndCloseWithoutCheckpoint(3);
  std::filesystem::resize_file(Segment(0), options_.segment_size_bytes + 4096);
  EXPECT_TRUE(OpenRefuses(Segment(0) + ": segment size differs from the store's manifest"));
}

TEST_F(RecoveryTest, CheckpointOfAnotherVersionOrWithTrailingBytesIsIgnored) {
  struct Case {
    const char* why;
    std::function<void(std::string*)> patch;
  };
  const std::vector<Case> cases = {
      {"unsupported version",
       [](std::string* c) {
         format::Put32(reinterpret_cast<uint8_t*>(c->data()) + 8, format::kCheckpointVersion + 1);
       }},
      {"trailing bytes", [](std::string* c) { c->insert(c->size() - 8, std::string(8, '\x01')); }},
  };
  {
    auto store = Open();
    ASSERT_TRUE(store.ok());
    for (int i = 0; i < 5; ++i)
      ASSERT_TRUE((*store)->Append("r-1", ExpectedVersion::Any(), {Event("T", "a")}).ok());
  }
  const std::string original = FileBytes(CheckpointPath());
  for (const Case& c : cases) {
    std::string ckpt = original;
    c.patch(&ckpt);
    auto* p = reinterpret_cast<uint8_t*>(ckpt.data());
    format::Put64(p + ckpt.size() - 8, format::Checksum(p, ckpt.size() - 8));
    { std::ofstream(CheckpointPath(), std::ios::binary | std::ios::trunc) << ckpt; }
    log_.clear();
    auto store = Open();
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    EXPECT_TRUE(Logged("ignoring index checkpoint")) << c.why;
    EXPECT_TRUE(Logged(c.why));
    EXPECT_EQ((*store)->GetStreamInfo("r-1")->event_count, 5u) << c.why;
  }
}

// Each partition's checkpoint names its partition: one copied into another
// partition's directory is ignored there, and that partition replays its log.
TEST_F(RecoveryTest, CheckpointOfAnotherPartitionIsIgnored) {
  options_.partitions = 2;
  constexpr int kStreams = 20;
  {
    auto store = Open();
    ASSERT_TRUE(store.ok());
    for (int i = 0; i < kStreams; ++i)
      for (int n = 0; n <= i % 3; ++n)
        ASSERT_TRUE(
            (*store)
                ->Append("s-" + std::to_string(i), ExpectedVersion::Any(), {Event("T", "a")})
                .ok());
  }
  auto checkpoint = [&](uint32_t p) {
    return dir_.path() + "/" + format::PartitionDirName(p) + "/" + format::CheckpointFileName();
  };
  std::filesystem::copy_file(checkpoint(0), checkpoint(1),
                             std::filesystem::copy_options::overwrite_existing);
  auto store = Open();
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_TRUE(Logged("does not match this partition's segments"));
  for (int i = 0; i < kStreams; ++i) {
    auto info = (*store)->GetStreamInfo("s-" + std::to_string(i));
    ASSERT_TRUE(info.ok()) << "s-" << i << ": " << info.status().ToString();
    EXPECT_EQ(info->event_count, static_cast<uint64_t>(i % 3 + 1)) << "s-" << i;
  }
}

// Batches whose checksums all hold but whose contents break the format's
// rules: recovery refuses each, naming file and offset.
TEST_F(RecoveryTest, RecordWhosePositionIsOutOfSequenceIsCorruption) {
  WriteAndCloseWithoutCheckpoint(3);
  BatchAt middle = Batches(Segment())[1];
  PatchBatch(Segment(), middle, [](uint8_t* b) {
    format::PatchRecord(b + format::kBatchHeaderBytes, 7,
                        static_cast<int64_t>(format::Get64(b + 16)));
  });
  EXPECT_TRUE(OpenRefuses(Segment() + " at offset " +
                          std::to_string(middle.offset + format::kBatchHeaderBytes) +
                          ": record position out of sequence"));
}

TEST_F(RecoveryTest, RecordWhoseLengthsDisagreeIsCorruption) {
  WriteAndCloseWithoutCheckpoint(3);
  BatchAt middle = Batches(Segment())[1];
  PatchBatch(Segment(), middle, [](uint8_t* b) {
    uint8_t* record = b + format::kBatchHeaderBytes;
    format::Put32(record + 60, format::Get32(record + 60) + 1);  // payload_len, not the length
  });
  EXPECT_TRUE(OpenRefuses("record header has inconsistent lengths"));
}

TEST_F(RecoveryTest, BatchWithBytesAfterItsRecordsIsCorruption) {
  {
    auto store = Open();
    ASSERT_TRUE(store.ok());
    ASSERT_TRUE(
        (*store)->Append("r-1", ExpectedVersion::Any(), {Event("T", "a"), Event("T", "b")}).ok());
    ASSERT_TRUE((*store)->Append("r-1", ExpectedVersion::Any(), {Event("T", "c")}).ok());
  }
  std::filesystem::remove(CheckpointPath());
  BatchAt first = Batches(Segment())[0];
  PatchBatch(Segment(), first, [](uint8_t* b) { format::Put32(b + 24, 1); });  // count 2 -> 1
  EXPECT_TRUE(OpenRefuses(": batch has bytes after its records"));
}

TEST_F(RecoveryTest, BatchRepeatingThePreviousBatchsPositionIsCorruption) {
  WriteAndCloseWithoutCheckpoint(3);
  BatchAt second = Batches(Segment())[1];
  PatchBatch(Segment(), second, [](uint8_t* b) {
    format::Put64(b + 8, 1);  // the first batch's position
    format::PatchRecord(b + format::kBatchHeaderBytes, 1,
                        static_cast<int64_t>(format::Get64(b + 16)));
  });
  EXPECT_TRUE(OpenRefuses(Segment() + " at offset " + std::to_string(second.offset) +
                          ": batch positions do not increase"));
}

TEST_F(RecoveryTest, CutOlderSegmentIsCorruption) {
  ASSERT_NO_FATAL_FAILURE(FillThreeSegmentsWithoutCheckpoint());
  ASSERT_TRUE(std::filesystem::exists(Segment(1)));
  auto batches = Batches(Segment(0));
  std::filesystem::resize_file(Segment(0), batches[1].offset);  // cut at a batch boundary
  auto store = Open();
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.status().message().find("it was cut"), std::string::npos) << store.status().message();
}

class FailStopTest : public RecoveryTest {
 protected:
  FailStopTest() { options_.env = &env_; }
  testing::FaultPlan plan_;
  testing::FaultEnv env_{&plan_};
};

TEST_F(FailStopTest, FailedFsyncFailStopsThePartitionAndAcknowledgesNothingAfter) {
  plan_.fail_submit_number = 3;
  auto store = Open();
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)->Append("f-1", ExpectedVersion::Any(), {Event("T", "1")}).ok());
  ASSERT_TRUE((*store)->Append("f-1", ExpectedVersion::Any(), {Event("T", "2")}).ok());
  auto failed = (*store)->Append("f-1", ExpectedVersion::Any(), {Event("T", "3")});
  ASSERT_EQ(failed.status().code(), StatusCode::kFailStopped);
  EXPECT_NE(failed.status().message().find("Input/output error"), std::string::npos) << failed.status().message();
  EXPECT_TRUE(Logged("stopped after a failed write"));
  // Everything later fails too, at once, and nothing new becomes durable.
  for (int i = 0; i < 5; ++i) {
    auto later = (*store)->Append("f-" + std::to_string(i), ExpectedVersion::Any(), {Event("T", "x")});
    EXPECT_EQ(later.status().code(), StatusCode::kFailStopped);
  }
  EXPECT_EQ((*store)->DurableHead(), GlobalPosition(2));
  EXPECT_EQ((*store)->GetStreamInfo("f-1")->event_count, 2u);
  // Reads of what was acknowledged still work.
  EXPECT_TRUE((*store)->ReadStream("f-1", StreamVersion(0), ReadDirection::kForward, 10).ok());
}

TEST_F(FailStopTest, AppendsQueuedBehindAFailedBatchAllFail) {
  plan_.fail_submit_number = 2;
  auto store = Open();
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)->Append("q-0", ExpectedVersion::Any(), {Event("T", "first")}).ok());
  // These land in the failing batch, or queue behind it, or arrive after it.
  std::atomic<int> ok{0}, stopped{0}, other{0}, done{0};
  constexpr int kAppends = 200;
  for (int i = 0; i < kAppends; ++i)
    (*store)->AppendAsync("q-" + std::to_string(i % 10), ExpectedVersion::Any(), {Event("T", "x")},
                          [&](Result<AppendResult> r) {
                            if (r.ok()) ok++;
                            else if (r.status().code() == StatusCode::kFailStopped) stopped++;
                            else other++;
                            done++;
                          });
  while (done.load() < kAppends) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(ok.load(), 0);
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(stopped.load(), kAppends);
  EXPECT_EQ((*store)->DurableHead(), GlobalPosition(1));
}

TEST_F(FailStopTest, TornWriteAfterFailureIsDroppedOnReopen) {
  plan_.fail_submit_number = 4;
  plan_.torn = true;
  {
    auto store = Open();
    ASSERT_TRUE(store.ok());
    for (int i = 0; i < 3; ++i) ASSERT_TRUE((*store)->Append("t-1", ExpectedVersion::Any(), {Event("T", "ok")}).ok());
    // The fourth batch will start where the third ended; only its header
    // and a few bytes of its record reach the disk.
    BatchAt third = Batches(Segment()).back();
    plan_.torn_at_offset = third.offset + third.length + 60;
    EXPECT_EQ((*store)->Append("t-1", ExpectedVersion::Any(), {Event("T", "torn")}).status().code(),
              StatusCode::kFailStopped);
  }
  options_.env = nullptr;  // a healthy disk again
  auto store = Open();
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_TRUE(Logged("dropping a torn final batch"));
  EXPECT_EQ((*store)->GetStreamInfo("t-1")->event_count, 3u);
}

}  // namespace
}  // namespace annal

namespace annal {
namespace {

// A filesystem of a few MiB: a tmpfs mounted for the test (needs root, as
// CI runs; elsewhere the test says why it cannot run).
class DiskFullTest : public ::testing::Test {
 protected:
  void SetUp() override {
    mount_ = std::filesystem::absolute("test-data-diskfull-" + std::to_string(::getpid()));
    std::filesystem::create_directories(mount_);
    std::string cmd = "mount -t tmpfs -o size=6m tmpfs '" + mount_.string() + "' 2>/dev/null";
    mounted_ = std::system(cmd.c_str()) == 0;
    if (!mounted_) GTEST_SKIP() << "cannot mount a small tmpfs here (needs root): disk-full behaviour untested";
    options_.partitions = 1;
    options_.segment_size_bytes = 1024 * 1024;
    options_.log = [this](const std::string& l) { log_.push_back(l); };
  }
  void TearDown() override {
    if (mounted_) (void)std::system(("umount '" + mount_.string() + "'").c_str());
    std::filesystem::remove_all(mount_);
  }
  std::string Dir() { return (mount_ / "store").string(); }

  std::filesystem::path mount_;
  bool mounted_ = false;
  Options options_;
  std::vector<std::string> log_;
};

TEST_F(DiskFullTest, FullDiskFailStopsWithAClearErrorAndKeepsWhatWasAcknowledged) {
  uint64_t acknowledged = 0;
  Status failure;
  {
    auto store = Store::Open(Dir(), options_);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    // Incompressible, so sealing full segments frees no space; sealing that
    // meets the full disk leaves its segment as it was.
    std::mt19937_64 rng(7);
    std::string payload(100 * 1024, '\0');
    for (int i = 0; i < 200; ++i) {
      for (char& c : payload) c = static_cast<char>(rng());
      auto r = (*store)->Append("full-1", ExpectedVersion::Any(), {Event("T", payload)});
      if (!r.ok()) {
        failure = r.status();
        break;
      }
      ++acknowledged;
    }
    ASSERT_FALSE(failure.ok()) << "6 MiB cannot hold 200 appends of 100 KiB";
    EXPECT_EQ(failure.code(), StatusCode::kFailStopped);
    EXPECT_NE(failure.message().find("No space left on device"), std::string::npos) << failure.message();
    EXPECT_EQ((*store)->DurableHead(), GlobalPosition(acknowledged));
  }
  ASSERT_GT(acknowledged, 10u);
  // Everything acknowledged is still there, on the same full disk.
  auto store = Store::Open(Dir(), options_);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  auto events = (*store)->ReadStream("full-1", StreamVersion(0), ReadDirection::kForward, 1000);
  ASSERT_TRUE(events.ok()) << events.status().ToString();
  EXPECT_EQ(events->size(), acknowledged);
}

TEST(StoreOpenTest, UnusableIoUringIsReportedAtOpen) {
  class NoUringEnv final : public Env {
   public:
    Status Probe() override { return Status::Unavailable("io_uring is not usable here (test)"); }
    Result<std::unique_ptr<LogWriterIo>> NewLogWriterIo() override { return Status::Unavailable("unused"); }
  } env;
  TempDir dir("probe");
  Options options = testing::SmallOptions();
  options.env = &env;
  auto store = Store::Open(dir.path(), options);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(store.status().message().find("io_uring is not usable"), std::string::npos);
}

TEST(StoreOpenTest, CheckpointIsWrittenInTheBackgroundAfterTheIntervalOfLog) {
  TempDir dir("ckpt-interval");
  Options options = testing::SmallOptions();
  options.partitions = 1;
  options.checkpoint_interval_bytes = 64 * 1024;
  auto store = Store::Open(dir.path(), options);
  ASSERT_TRUE(store.ok());
  std::string ckpt = dir.path() + "/" + format::PartitionDirName(0) + "/" + format::CheckpointFileName();
  EXPECT_FALSE(std::filesystem::exists(ckpt));
  for (int i = 0; i < 20; ++i)
    ASSERT_TRUE((*store)->Append("c-1", ExpectedVersion::Any(), {Event("T", std::string(8192, 'x'))}).ok());
  // The checkpointer looks every 200 ms; give it a bounded while.
  for (int i = 0; i < 50 && !std::filesystem::exists(ckpt); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_TRUE(std::filesystem::exists(ckpt));
}

TEST(StoreOpenTest, OptionsOutOfRangeAreRefused) {
  TempDir dir("options");
  Options options = testing::SmallOptions();
  options.segment_size_bytes = 1024 * 1024 + 1;
  EXPECT_EQ(Store::Open(dir.path(), options).status().code(), StatusCode::kInvalidArgument);
  options = testing::SmallOptions();
  options.partitions = 0;
  EXPECT_EQ(Store::Open(dir.path(), options).status().code(), StatusCode::kInvalidArgument);
  options = testing::SmallOptions();
  options.create_if_missing = false;
  EXPECT_EQ(Store::Open(dir.path() + "/nothing", options).status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace annal
