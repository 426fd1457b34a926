// `annal verify` and `annal repair`, run as the annal binary against stores
// the engine wrote and the tests then damaged as disks and crashes do: a
// flipped bit in a record, in a compressed block, in a segment index or a
// checkpoint; a torn final batch; a store that is still open.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "annal/store.h"
#include "block_cache.h"
#include "format.h"
#include "sealed.h"
#include "segment_index.h"
#include "test_util.h"
#include "torn_batch.h"

#ifndef ANNAL_CLI_PATH
#error "ANNAL_CLI_PATH must name the annal binary (set by tests/CMakeLists.txt)"
#endif

extern char** environ;

namespace annal {
namespace {

namespace fsys = std::filesystem;
using Json = nlohmann::json;
using testing::Event;
using testing::TempDir;
using testing::TornBatch;

// The fixture store: enough events over enough streams that every partition
// fills several 1 MiB segments.
constexpr uint32_t kPartitions = 2;
constexpr int kStreams = 50;
constexpr int kAppends = 500;
constexpr int kEventsPerAppend = 8;
constexpr uint64_t kEvents = uint64_t{kAppends} * kEventsPerAppend;
constexpr uint64_t kSegmentBytes = 1 << 20;

constexpr int kExitProblems = 4;

struct CliResult {
  int exit_code = -1;  // -1: did not exit normally
  std::string out, err;
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

// Runs `annal args...` to completion. Its stdout and stderr go to files in
// `scratch`, so neither can fill a pipe and stall it.
CliResult RunAnnal(const std::vector<std::string>& args, const std::string& scratch) {
  const std::string out = scratch + "/annal.out", err = scratch + "/annal.err";
  std::vector<std::string> argv_s = {ANNAL_CLI_PATH};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, out.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, err.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  CliResult r;
  if (rc != 0) {
    ADD_FAILURE() << "cannot start " << argv[0] << ": " << std::strerror(rc);
    return r;
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  r.out = ReadFile(out);
  r.err = ReadFile(err);
  return r;
}

std::string Describe(const CliResult& r) {
  return "exit " + std::to_string(r.exit_code) + "\nstdout:\n" + r.out + "\nstderr:\n" + r.err;
}

std::string PartitionDir(const std::string& dir, uint32_t p) {
  return dir + "/" + format::PartitionDirName(p);
}
std::string SegmentPath(const std::string& dir, uint32_t p, uint32_t id) {
  return PartitionDir(dir, p) + "/" + format::SegmentFileName(id);
}
std::string CheckpointPath(const std::string& dir, uint32_t p) {
  return PartitionDir(dir, p) + "/" + format::CheckpointFileName();
}

Options FixtureOptions(bool seal) {
  Options o;
  o.partitions = kPartitions;
  o.segment_size_bytes = kSegmentBytes;
  o.seal_segments = seal;
  o.log = [](const std::string&) {};
  return o;
}

// Writes the fixture store into `dir` and closes it.
void WriteStore(const std::string& dir, bool seal) {
  auto store = Store::Open(dir, FixtureOptions(seal));
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  for (int a = 0; a < kAppends; ++a) {
    std::vector<EventData> events;
    for (int e = 0; e < kEventsPerAppend; ++e) {
      // About 2.6 KiB, compressible like real JSON.
      std::string payload =
          R"({"append":)" + std::to_string(a) + R"(,"event":)" + std::to_string(e) + R"(,"note":")";
      for (int k = 0; k < 80; ++k)
        payload += "item-" + std::to_string((a * 7 + e * 13 + k) % 97) + " and more ";
      payload += "\"}";
      events.push_back(Event("Happened", payload));
    }
    auto r = (*store)->Append("s-" + std::to_string(a % kStreams), ExpectedVersion::Any(),
                              std::move(events));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
  }
  (*store)->WaitForBackgroundWork();
  ASSERT_TRUE((*store)->Close().ok());
}

struct BatchAt {
  uint64_t offset;
  uint32_t length;
};

// The batches of an unsealed segment file, read with the format's decoder.
std::vector<BatchAt> Batches(const std::string& path) {
  std::string data = ReadFile(path);
  std::vector<BatchAt> out;
  uint64_t at = format::kSegmentHeaderBytes;
  while (at + format::kBatchHeaderBytes <= data.size()) {
    format::BatchHeader h;
    if (!format::DecodeBatchHeader(reinterpret_cast<const uint8_t*>(data.data() + at), &h).ok())
      break;
    out.push_back({at, h.length});
    at += h.length;
  }
  return out;
}

// The file offsets of the records of the batch at `batch`.
std::vector<uint64_t> RecordOffsets(const std::string& path, BatchAt batch) {
  std::string data = ReadFile(path);
  std::vector<uint64_t> out;
  uint64_t at = batch.offset + format::kBatchHeaderBytes;
  while (at < batch.offset + batch.length - format::kBatchTrailerBytes) {
    out.push_back(at);
    at += format::Get32(reinterpret_cast<const uint8_t*>(data.data() + at));
  }
  return out;
}

void Overwrite(const std::string& path, uint64_t offset, const std::string& bytes) {
  int fd = ::open(path.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(offset)),
            static_cast<ssize_t>(bytes.size()));
  ::close(fd);
}

void FlipByte(const std::string& path, uint64_t offset) {
  std::string data = ReadFile(path);
  ASSERT_LT(offset, data.size()) << path;
  Overwrite(path, offset, std::string(1, static_cast<char>(data[offset] ^ 0x5a)));
}

bool IsSealed(const std::string& path) {
  std::string head = ReadFile(path).substr(0, sizeof format::kSealedMagic);
  return head == std::string(format::kSealedMagic, sizeof format::kSealedMagic);
}

// Every file under `dir` and its bytes.
std::map<std::string, std::string> Snapshot(const std::string& dir) {
  std::map<std::string, std::string> files;
  for (const auto& e : fsys::recursive_directory_iterator(dir))
    if (e.is_regular_file()) files[e.path().string()] = ReadFile(e.path().string());
  return files;
}

// The partition's newest segment holding a batch, and where its data ends.
struct LogEnd {
  uint32_t segment;
  uint64_t offset;
};
LogEnd FindLogEnd(const std::string& dir, uint32_t p) {
  LogEnd end{0, format::kSegmentHeaderBytes};
  for (uint32_t id = 0; fsys::exists(SegmentPath(dir, p, id)); ++id) {
    if (IsSealed(SegmentPath(dir, p, id))) continue;
    std::vector<BatchAt> b = Batches(SegmentPath(dir, p, id));
    if (!b.empty()) end = {id, b.back().offset + b.back().length};
  }
  return end;
}


class VerifyTest : public ::testing::Test {
 protected:
  static void TearDownTestSuite() {
    delete sealed_;
    delete unsealed_;
    sealed_ = unsealed_ = nullptr;
  }

  void SetUp() override { fsys::create_directories(scratch_.path()); }

  // A copy of a fixture store for this test to damage. Each fixture is
  // written once, when a test of the suite first needs it.
  std::string Copy(bool sealed) {
    TempDir*& fixture = sealed ? sealed_ : unsealed_;
    if (fixture == nullptr) {
      fixture = new TempDir(sealed ? "verify-sealed-fixture" : "verify-unsealed-fixture");
      WriteStore(fixture->path(), sealed);
    }
    fsys::copy(fixture->path(), dir_.path(), fsys::copy_options::recursive);
    return dir_.path();
  }

  CliResult Annal(const std::vector<std::string>& args) { return RunAnnal(args, scratch_.path()); }
  Json VerifyJson(const std::string& dir, int want_exit) {
    CliResult r = Annal({"verify", dir, "--json"});
    EXPECT_EQ(r.exit_code, want_exit) << Describe(r);
    return r.out.empty() ? Json() : Json::parse(r.out);
  }

  static TempDir* sealed_;
  static TempDir* unsealed_;
  TempDir dir_{std::string("verify-") +
               ::testing::UnitTest::GetInstance()->current_test_info()->name()};
  TempDir scratch_{std::string("verify-scratch-") +
                   ::testing::UnitTest::GetInstance()->current_test_info()->name()};
};
TempDir* VerifyTest::sealed_ = nullptr;
TempDir* VerifyTest::unsealed_ = nullptr;

class RepairTest : public VerifyTest {};

// ---- healthy stores

TEST_F(VerifyTest, HealthySealedStoreIsCleanAndCountsEveryEvent) {
  std::string dir = Copy(true);
  ASSERT_TRUE(IsSealed(SegmentPath(dir, 0, 0))) << "the fixture's full segments should be sealed";
  ASSERT_TRUE(fsys::exists(SegmentPath(dir, 0, 2))) << "the fixture should fill several segments";
  Json j = VerifyJson(dir, 0);
  EXPECT_EQ(j["events"], kEvents) << j.dump(2);
  EXPECT_EQ(j["streams"], kStreams);
  EXPECT_EQ(j["partitions"], kPartitions);
  EXPECT_EQ(j["problems"].size(), 0u) << j.dump(2);
  EXPECT_EQ(j["warnings"].size(), 0u) << j.dump(2);
  EXPECT_EQ(j["last_position"], kEvents);
  EXPECT_EQ(j["unused_positions"], 0);
}

TEST_F(VerifyTest, HealthyUnsealedStoreIsCleanAndCountsEveryEvent) {
  std::string dir = Copy(false);
  ASSERT_FALSE(IsSealed(SegmentPath(dir, 0, 0)));
  ASSERT_TRUE(fsys::exists(PartitionDir(dir, 0) + "/" + format::SegmentIndexFileName(0)));
  CliResult r = Annal({"verify", dir});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(r.err, "");
  EXPECT_NE(r.out.find("events:            " + std::to_string(kEvents) + "\n"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("problems:          0\n"), std::string::npos) << r.out;
}

TEST_F(VerifyTest, ReadsNextToALiveStoreWithoutFalseProblems) {
  // Appends go on, segments fill, are indexed and sealed, and checkpoints
  // are written while verify reads.
  std::string dir = Copy(true);
  Options options = FixtureOptions(true);
  options.checkpoint_interval_bytes = 256 * 1024;
  auto store = Store::Open(dir, options);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  std::atomic<bool> stop{false};
  std::atomic<int> appended{0};
  std::thread writer([&] {
    for (int i = 0; !stop; ++i) {
      std::vector<EventData> events(
          4, Event("Live", std::string(2000 + i % 500, static_cast<char>('a' + i % 26))));
      if (!(*store)
               ->Append("live-" + std::to_string(i % 30), ExpectedVersion::Any(), std::move(events))
               .ok())
        break;
      appended += 4;
    }
  });
  // About 3 MiB of log per partition: several segments roll and are sealed
  // while verify runs again and again.
  int runs = 0;
  for (; appended < 3000 && runs < 500 && !HasFailure(); ++runs) {
    Json j = VerifyJson(dir, 0);
    EXPECT_EQ(j["problems"].size(), 0u) << j.dump(2);
    EXPECT_GE(j["events"].get<uint64_t>(), kEvents);
  }
  stop = true;
  writer.join();
  EXPECT_GE(appended.load(), 3000);
  EXPECT_GE(runs, 3);
  ASSERT_TRUE((*store)->Close().ok());
  Json j = VerifyJson(dir, 0);
  EXPECT_EQ(j["events"].get<uint64_t>(), kEvents + static_cast<uint64_t>(appended.load()))
      << j.dump(2);
}

TEST_F(VerifyTest, NotADataDirectoryIsAUsageError) {
  CliResult r = Annal({"verify", scratch_.path()});
  EXPECT_EQ(r.exit_code, 1) << Describe(r);
  EXPECT_NE(r.err.find("not an annal data directory"), std::string::npos) << r.err;
}

// ---- damage

TEST_F(VerifyTest, FlippedByteInARecordNamesTheFileAndTheRecordsOffset) {
  std::string dir = Copy(false);
  const std::string seg = SegmentPath(dir, 0, 0);
  std::vector<BatchAt> batches = Batches(seg);
  ASSERT_GT(batches.size(), 10u);
  std::vector<uint64_t> records = RecordOffsets(seg, batches[5]);
  ASSERT_EQ(records.size(), size_t{kEventsPerAppend});
  const uint64_t record = records[3];
  FlipByte(seg, record + format::kRecordHeaderBytes + 20);  // inside its payload
  CliResult r = Annal({"verify", dir});
  EXPECT_EQ(r.exit_code, kExitProblems) << Describe(r);
  EXPECT_NE(r.err.find(seg + " at offset " + std::to_string(record) + ": record checksum mismatch"),
            std::string::npos)
      << r.err;
  // The damage is reported once; events of the other partition are still counted.
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

TEST_F(VerifyTest, FlippedByteInACompressedBlockNamesTheBlocksFileOffset) {
  std::string dir = Copy(true);
  const std::string seg = SegmentPath(dir, 1, 0);
  ASSERT_TRUE(IsSealed(seg));
  BlockCache cache(1 << 20);
  auto sealed =
      SealedSegment::Open(seg, format::SegmentHeader{1, 0, kSegmentBytes, kPartitions}, &cache);
  ASSERT_TRUE(sealed.ok()) << sealed.status().ToString();
  auto blocks = (*sealed)->Blocks();
  ASSERT_TRUE(blocks.ok()) << blocks.status().ToString();
  ASSERT_GT((*blocks)->size(), 3u);
  const BlockEntry block = (**blocks)[2];
  sealed->reset();
  FlipByte(seg, block.file_offset + block.stored_length / 2);
  Json j = VerifyJson(dir, kExitProblems);
  ASSERT_EQ(j["problems"].size(), 1u) << j.dump(2);
  EXPECT_EQ(j["problems"][0]["file"], seg);
  EXPECT_EQ(j["problems"][0]["offset"], block.file_offset);
  EXPECT_NE(j["problems"][0]["problem"].get<std::string>().find("compressed block 2"),
            std::string::npos)
      << j.dump(2);
  // The blocks after the damaged one are still read.
  EXPECT_GT(j["events"].get<uint64_t>(), kEvents - 200u) << j.dump(2);
}

TEST_F(VerifyTest, DamagedSegmentIndexIsReportedAsDerivedData) {
  std::string dir = Copy(true);
  const std::string idx = PartitionDir(dir, 0) + "/segment-00000001.idx";
  ASSERT_TRUE(fsys::exists(idx));
  FlipByte(idx, fsys::file_size(idx) / 2);
  CliResult r = Annal({"verify", dir});
  EXPECT_EQ(r.exit_code, kExitProblems) << Describe(r);
  EXPECT_NE(r.err.find(idx + " at offset "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("derived data"), std::string::npos) << r.err;
}

TEST_F(VerifyTest, CheckpointWhoseStreamSlotDisagreesWithTheLogIsReported) {
  std::string dir = Copy(true);
  const std::string ckpt = CheckpointPath(dir, 1);
  std::string data = ReadFile(ckpt);
  // The first stream slot's head version, then the checksum made right again:
  // a checkpoint annald would trust.
  const uint64_t streams = format::Get64(reinterpret_cast<const uint8_t*>(data.data()) + 44);
  ASSERT_GT(streams, 0u);
  // Stream entries (checkpoint.h) are the last 40 bytes each before the checksum.
  const uint64_t slot = data.size() - 8 - 40 * streams;
  auto* p = reinterpret_cast<uint8_t*>(data.data());
  format::Put64(p + slot + 8, format::Get64(p + slot + 8) + 1);
  format::Put64(p + data.size() - 8, format::Checksum(p, data.size() - 8));
  Overwrite(ckpt, 0, data);
  CliResult r = Annal({"verify", dir});
  EXPECT_EQ(r.exit_code, kExitProblems) << Describe(r);
  EXPECT_NE(r.err.find(ckpt + " at offset " + std::to_string(slot) + ": stream "),
            std::string::npos)
      << r.err;
}

TEST_F(VerifyTest, EarlierCheckpointRestoredIsStillConsistent) {
  // An older checkpoint describes a prefix of the log: recovery replays from
  // its tail, so it is no problem.
  std::string dir = Copy(false);
  const std::string old_ckpt = ReadFile(CheckpointPath(dir, 0));
  {
    auto store = Store::Open(dir, FixtureOptions(false));
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    for (int i = 0; i < 50; ++i)
      ASSERT_TRUE((*store)
                      ->Append("s-" + std::to_string(i % kStreams), ExpectedVersion::Any(),
                               {Event("More", std::string(3000, 'm'))})
                      .ok());
    ASSERT_TRUE((*store)->Close().ok());
  }
  std::ofstream(CheckpointPath(dir, 0), std::ios::binary | std::ios::trunc) << old_ckpt;
  Json j = VerifyJson(dir, 0);
  EXPECT_EQ(j["events"], kEvents + 50) << j.dump(2);
}

TEST_F(VerifyTest, EventThatSkipsAVersionIsReported) {
  std::string dir = Copy(false);
  const std::string seg = SegmentPath(dir, 0, 1);
  std::vector<BatchAt> batches = Batches(seg);
  ASSERT_GT(batches.size(), 2u);
  const BatchAt batch = batches[1];
  const uint64_t record = RecordOffsets(seg, batch)[0];
  // Rewrite the record with the next version, its checksum and the batch's
  // trailer made right: a well-formed batch that breaks its stream.
  std::string data = ReadFile(seg);
  auto* p = reinterpret_cast<uint8_t*>(data.data());
  std::string copy = data.substr(record, format::Get32(p + record));
  format::RecordView r;
  ASSERT_TRUE(
      format::DecodeRecord(reinterpret_cast<const uint8_t*>(copy.data()), copy.size(), &r).ok());
  r.version += 1;
  format::EncodeRecord(r, p + record);
  const uint64_t trailer = batch.offset + batch.length - format::kBatchTrailerBytes;
  format::Put64(p + trailer, format::BatchChecksum(p + batch.offset, batch.length));
  Overwrite(seg, record, data.substr(record, copy.size()));
  Overwrite(seg, trailer, data.substr(trailer, format::kBatchTrailerBytes));
  CliResult v = Annal({"verify", dir});
  EXPECT_EQ(v.exit_code, kExitProblems) << Describe(v);
  EXPECT_NE(v.err.find(seg + " at offset " + std::to_string(record) + ": event of stream '" +
                       std::string(r.stream) + "' at version " + std::to_string(r.version) +
                       " does not follow"),
            std::string::npos)
      << v.err;
  // So does recovery, replaying the whole log.
  fsys::remove(CheckpointPath(dir, 0));
  auto store = Store::Open(dir, FixtureOptions(false));
  EXPECT_FALSE(store.ok());
}

TEST_F(VerifyTest, PositionUsedInTwoPartitionsIsReported) {
  // A batch of partition 1 that follows a gap (positions partition 0 used)
  // is rewritten, checksums and all, to start right after partition 1's
  // previous batch: well-formed, in order within its partition, and
  // overlapping partition 0.
  std::string dir = Copy(false);
  const LogEnd end = FindLogEnd(dir, 1);
  const std::string seg = SegmentPath(dir, 1, end.segment);
  std::string data = ReadFile(seg);
  auto* p = reinterpret_cast<uint8_t*>(data.data());
  std::vector<BatchAt> batches = Batches(seg);
  std::optional<BatchAt> target;
  format::BatchHeader prev, h;
  for (size_t i = batches.size() - 1; i > 0 && !target; --i) {
    ASSERT_TRUE(format::DecodeBatchHeader(p + batches[i - 1].offset, &prev).ok());
    ASSERT_TRUE(format::DecodeBatchHeader(p + batches[i].offset, &h).ok());
    if (h.first_position > prev.first_position + prev.count) target = batches[i];
  }
  ASSERT_TRUE(target.has_value()) << "partition 1's batches should interleave with partition 0's";
  const uint64_t moved_to = prev.first_position + prev.count;
  std::vector<uint64_t> records = RecordOffsets(seg, *target);
  for (size_t i = 0; i < records.size(); ++i)
    format::PatchRecord(p + records[i], moved_to + i, h.recorded_at_ns);
  h.first_position = moved_to;
  format::EncodeBatchHeader(h, p + target->offset);
  const uint64_t trailer = target->offset + target->length - format::kBatchTrailerBytes;
  format::Put64(p + trailer, format::BatchChecksum(p + target->offset, target->length));
  Overwrite(seg, target->offset, data.substr(target->offset, target->length));

  Json j = VerifyJson(dir, kExitProblems);
  bool found = false;
  for (const Json& problem : j["problems"])
    found |= problem["file"].get<std::string>().starts_with(PartitionDir(dir, 0) + "/") &&
             problem["problem"].get<std::string>().starts_with("positions " +
                                                               std::to_string(moved_to) + "..") &&
             problem["problem"].get<std::string>().find("are also used in partition 1") !=
                 std::string::npos;
  EXPECT_TRUE(found) << j.dump(2);
  // The positions the batch left are unused now: information, not a problem.
  EXPECT_EQ(j["unused_positions"], h.count) << j.dump(2);
}

// ---- torn tails and repair

TEST_F(RepairTest, TornTailIsAWarningAndRepairRemovesItKeepingABackup) {
  std::string dir = Copy(true);
  const LogEnd end = FindLogEnd(dir, 0);
  const std::string seg = SegmentPath(dir, 0, end.segment);
  const std::string torn = TornBatch(kEvents + 1);
  Overwrite(seg, end.offset, torn);

  CliResult v = Annal({"verify", dir});
  EXPECT_EQ(v.exit_code, 0) << Describe(v);
  EXPECT_NE(
      v.err.find(seg + " at offset " + std::to_string(end.offset) + ": warning: torn final batch"),
      std::string::npos)
      << v.err;

  auto before = Snapshot(dir);
  CliResult dry = Annal({"repair", dir, "--dry-run"});
  EXPECT_EQ(dry.exit_code, 0) << Describe(dry);
  EXPECT_NE(dry.out.find("would zero " + seg), std::string::npos) << dry.out;
  EXPECT_TRUE(Snapshot(dir) == before) << "a dry run changed files";

  const std::string backup = dir + "/repair-backup/partition-000-segment-" +
                             format::SegmentFileName(end.segment).substr(8, 8) + "-offset-" +
                             std::to_string(end.offset) + ".bin";
  CliResult rep = Annal({"repair", dir, "--json"});
  ASSERT_EQ(rep.exit_code, 0) << Describe(rep);
  Json j = Json::parse(rep.out);
  ASSERT_EQ(j["actions"].size(), 1u) << j.dump(2);
  EXPECT_EQ(j["actions"][0]["file"], seg);
  EXPECT_EQ(j["actions"][0]["from"], end.offset);
  EXPECT_EQ(j["actions"][0]["to"], end.offset + torn.size());
  EXPECT_EQ(j["actions"][0]["backup"], backup);
  EXPECT_EQ(ReadFile(backup), torn);
  EXPECT_EQ(fsys::file_size(seg), kSegmentBytes) << "the segment keeps its preallocated size";
  EXPECT_EQ(ReadFile(seg).substr(end.offset, torn.size()), std::string(torn.size(), '\0'));

  CliResult after = Annal({"verify", dir});
  EXPECT_EQ(after.exit_code, 0) << Describe(after);
  EXPECT_EQ(after.err, "");
  CliResult again = Annal({"repair", dir});
  EXPECT_EQ(again.exit_code, 0) << Describe(again);
  EXPECT_EQ(again.out, "nothing to repair\n");

  auto store = Store::Open(dir, FixtureOptions(true));
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  auto all = (*store)->ReadAll(GlobalPosition(1), 2 * kEvents);
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  EXPECT_EQ(all->size(), kEvents);
  for (int s = 0; s < kStreams; ++s)
    EXPECT_EQ((*store)->GetStreamInfo("s-" + std::to_string(s))->event_count, kEvents / kStreams);
  EXPECT_EQ((*store)->GetStreamInfo("torn-stream").status().code(), StatusCode::kNotFound);
}

TEST_F(RepairTest, LeftoversBehindTheEndOfTheLogAreZeroed) {
  // After a power loss, later blocks of the batch in flight may persist
  // while its first did not: a zero header with bytes behind it.
  std::string dir = Copy(false);
  const LogEnd end = FindLogEnd(dir, 1);
  const std::string seg = SegmentPath(dir, 1, end.segment);
  const uint64_t garbage_at = (end.offset / 4096 + 2) * 4096;
  ASSERT_LT(garbage_at + 3000, kSegmentBytes);
  Overwrite(seg, garbage_at, std::string(3000, 'g'));
  CliResult v = Annal({"verify", dir});
  EXPECT_EQ(v.exit_code, 0) << Describe(v);
  EXPECT_NE(v.err.find(seg + " at offset " + std::to_string(end.offset) +
                       ": warning: bytes up to offset " + std::to_string(garbage_at + 3000)),
            std::string::npos)
      << v.err;
  CliResult rep = Annal({"repair", dir});
  ASSERT_EQ(rep.exit_code, 0) << Describe(rep);
  const std::string backup = dir + "/repair-backup/partition-001-segment-" +
                             format::SegmentFileName(end.segment).substr(8, 8) + "-offset-" +
                             std::to_string(end.offset) + ".bin";
  EXPECT_NE(rep.out.find("zeroed " + seg + " bytes [" + std::to_string(end.offset) + ", " +
                         std::to_string(garbage_at + 3000) + ")"),
            std::string::npos)
      << rep.out;
  EXPECT_EQ(ReadFile(backup), std::string(garbage_at - end.offset, '\0') + std::string(3000, 'g'));
  CliResult after = Annal({"verify", dir});
  EXPECT_EQ(after.exit_code, 0) << Describe(after);
  EXPECT_EQ(after.err, "");
}

TEST_F(RepairTest, CutNewestSegmentIsExtendedAndItsCheckpointMovedAside) {
  // A file that lost its tail: its last batch is cut mid-way (torn), and the
  // checkpoint, written when the batch was whole, now ends past the data.
  std::string dir = Copy(false);
  const LogEnd end = FindLogEnd(dir, 0);
  const std::string seg = SegmentPath(dir, 0, end.segment);
  const BatchAt last = Batches(seg).back();
  fsys::resize_file(seg, last.offset + 100);
  CliResult v = Annal({"verify", dir});
  EXPECT_EQ(v.exit_code, kExitProblems) << Describe(v);
  EXPECT_NE(
      v.err.find(seg + " at offset " + std::to_string(last.offset) + ": warning: torn final batch"),
      std::string::npos)
      << v.err;
  EXPECT_NE(v.err.find(CheckpointPath(dir, 0) + " at offset "), std::string::npos) << v.err;

  CliResult rep = Annal({"repair", dir, "--json"});
  ASSERT_EQ(rep.exit_code, 0) << Describe(rep);
  Json j = Json::parse(rep.out);
  ASSERT_EQ(j["actions"].size(), 3u) << j.dump(2);
  EXPECT_EQ(j["actions"][0]["action"], "zero");
  EXPECT_EQ(j["actions"][0]["from"], last.offset);
  EXPECT_EQ(j["actions"][0]["to"], last.offset + 100);
  EXPECT_EQ(j["actions"][1]["action"], "extend");
  EXPECT_EQ(j["actions"][1]["to"], kSegmentBytes);
  EXPECT_EQ(j["actions"][2]["action"], "move_checkpoint");
  EXPECT_EQ(fsys::file_size(seg), kSegmentBytes);
  EXPECT_FALSE(fsys::exists(CheckpointPath(dir, 0)));

  Json after = VerifyJson(dir, 0);
  EXPECT_EQ(after["events"], kEvents - kEventsPerAppend) << after.dump(2);
  auto store = Store::Open(dir, FixtureOptions(false));
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ((*store)->ReadAll(GlobalPosition(1), 2 * kEvents)->size(), kEvents - kEventsPerAppend);
}

TEST_F(RepairTest, RefusesWhileAStoreHasTheDirectoryOpen) {
  std::string dir = Copy(true);
  auto store = Store::Open(dir, FixtureOptions(true));
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"repair", dir},
        std::vector<std::string>{"repair", dir, "--dry-run"}}) {
    CliResult r = Annal(args);
    EXPECT_EQ(r.exit_code, kExitProblems) << Describe(r);
    EXPECT_NE(r.err.find(dir + "/LOCK is locked by another process"), std::string::npos) << r.err;
    EXPECT_EQ(r.out, "");
  }
  // verify reads next to the open store.
  CliResult v = Annal({"verify", dir});
  EXPECT_EQ(v.exit_code, 0) << Describe(v);
}

// A torn-looking batch that ends its segment's data is still damage when a
// later segment holds batches: a crash can tear only the newest batch.
TEST_F(RepairTest, TornLookingLastBatchOfAnOlderSegmentIsDamageAndIsNotRepaired) {
  std::string dir = Copy(false);
  const LogEnd end = FindLogEnd(dir, 0);
  ASSERT_GT(end.segment, 0u) << "the fixture must fill more than one segment";
  const std::string seg = SegmentPath(dir, 0, 0);
  const BatchAt last = Batches(seg).back();
  Overwrite(seg, last.offset + last.length - format::kBatchTrailerBytes,
            std::string(format::kBatchTrailerBytes, '\0'));
  ASSERT_EQ(ReadFile(seg).find_first_not_of('\0', last.offset + last.length), std::string::npos)
      << "only zeros may follow the batch in its own segment";

  CliResult v = Annal({"verify", dir});
  EXPECT_EQ(v.exit_code, kExitProblems) << Describe(v);
  EXPECT_NE(v.err.find(seg + " at offset " + std::to_string(last.offset)), std::string::npos) << v.err;
  EXPECT_NE(v.err.find("and data follows it"), std::string::npos) << v.err;
  EXPECT_EQ(v.err.find("warning: torn final batch"), std::string::npos) << v.err;

  auto before = Snapshot(dir);
  CliResult r = Annal({"repair", dir});
  EXPECT_EQ(r.exit_code, kExitProblems) << Describe(r);
  EXPECT_TRUE(Snapshot(dir) == before) << "repair erased acknowledged batches";
}

TEST_F(RepairTest, MidLogCorruptionIsRefusedAndNothingChanges) {
  std::string dir = Copy(false);
  const std::string seg = SegmentPath(dir, 0, 0);
  std::vector<BatchAt> batches = Batches(seg);
  FlipByte(seg, batches[2].offset + format::kBatchHeaderBytes + format::kRecordHeaderBytes + 3);
  // A torn tail in the same partition is left too: its log is refused whole.
  const LogEnd end = FindLogEnd(dir, 0);
  Overwrite(SegmentPath(dir, 0, end.segment), end.offset, TornBatch(kEvents + 1));
  auto before = Snapshot(dir);
  CliResult r = Annal({"repair", dir});
  EXPECT_EQ(r.exit_code, kExitProblems) << Describe(r);
  EXPECT_NE(r.err.find(seg + " at offset " +
                       std::to_string(batches[2].offset + format::kBatchHeaderBytes)),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find(PartitionDir(dir, 0) + ": not repaired"), std::string::npos) << r.err;
  EXPECT_TRUE(Snapshot(dir) == before) << "repair changed a damaged partition";
  EXPECT_FALSE(fsys::exists(dir + "/repair-backup"));
}

TEST_F(RepairTest, CheckpointFailingItsChecksumIsMovedAside) {
  std::string dir = Copy(true);
  const std::string ckpt = CheckpointPath(dir, 0);
  const std::string original = ReadFile(ckpt);
  FlipByte(ckpt, 20);
  CliResult v = Annal({"verify", dir});
  EXPECT_EQ(v.exit_code, kExitProblems) << Describe(v);
  EXPECT_NE(v.err.find(ckpt + " at offset 0: checkpoint checksum mismatch"), std::string::npos)
      << v.err;
  CliResult rep = Annal({"repair", dir});
  ASSERT_EQ(rep.exit_code, 0) << Describe(rep);
  const std::string moved = dir + "/repair-backup/partition-000-index.ckpt";
  EXPECT_NE(rep.out.find("moved " + ckpt + " to " + moved), std::string::npos) << rep.out;
  EXPECT_FALSE(fsys::exists(ckpt));
  EXPECT_EQ(ReadFile(moved).size(), original.size());
  CliResult after = Annal({"verify", dir});
  EXPECT_EQ(after.exit_code, 0) << Describe(after);
  auto store = Store::Open(dir, FixtureOptions(true));
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ((*store)->ReadAll(GlobalPosition(1), 2 * kEvents)->size(), kEvents);
}

}  // namespace
}  // namespace annal
