// The storage commands of `annal` (tools/storage_commands.h) against data
// directories written by the engine: what each command shows agrees with
// what the store reads back, and damage and wrong paths give the documented
// exit status. No annald is involved.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "annal/store.h"
#include "format.h"
#include "test_util.h"
#include "torn_batch.h"

#ifndef ANNAL_CLI_PATH
#error "ANNAL_CLI_PATH must name the annal binary (set by tests/CMakeLists.txt)"
#endif

namespace annal {
namespace {

using Json = nlohmann::json;
using testing::TempDir;

constexpr uint32_t kPartitions = 2;
constexpr int kStreams = 5;
constexpr int kEvents = 6000;
constexpr int kEventsPerAppend = 10;
// About 1 KiB of repetitive JSON per event: ~6 MiB in all, so each
// partition fills several 1 MiB segments, and zstd compresses them well.
constexpr size_t kPayloadItems = 24;
constexpr auto kCliTimeout = std::chrono::seconds(60);

constexpr int kExitUsage = 1, kExitProblems = 4;

struct CliResult {
  int exit_code = -1;  // -1: killed or timed out
  std::string out, err;
};

std::string Describe(const CliResult& r) {
  return "exit " + std::to_string(r.exit_code) + "\nstdout:\n" + r.out.substr(0, 4000) +
         "\nstderr:\n" + r.err;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Runs `annal args...` with stdout and stderr in files (a dump can be
// megabytes: files cannot fill up and block the child as pipes could).
CliResult RunCli(const std::vector<std::string>& args) {
  static int runs = 0;
  const std::string base =
      std::filesystem::absolute("storage-cli-out-" + std::to_string(::getpid()) + "-" +
                                std::to_string(runs++))
          .string();
  const std::string out_path = base + ".out", err_path = base + ".err";
  // Built before fork: the child of a multi-threaded parent may not allocate.
  std::vector<std::string> argv_s{ANNAL_CLI_PATH};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (out < 0 || err < 0) ::_exit(126);
    ::dup2(out, STDOUT_FILENO);
    ::dup2(err, STDERR_FILENO);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  CliResult r;
  int status = 0;
  const auto deadline = std::chrono::steady_clock::now() + kCliTimeout;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  r.out = ReadFile(out_path);
  r.err = ReadFile(err_path);
  std::filesystem::remove(out_path);
  std::filesystem::remove(err_path);
  return r;
}

// Runs a command that must succeed with one JSON document on stdout.
Json RunJson(const std::vector<std::string>& args) {
  CliResult r = RunCli(args);
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
  Json j = Json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(j.is_discarded()) << Describe(r);
  return j;
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::vector<std::string> Words(const std::string& line) {
  std::vector<std::string> words;
  std::istringstream in(line);
  for (std::string w; in >> w;) words.push_back(w);
  return words;
}

std::string Payload(int n) {
  std::string p =
      R"({"n":)" + std::to_string(n) + R"(,"note":"deposit from the storage test","items":[)";
  for (size_t i = 0; i < kPayloadItems; ++i)
    p += (i ? "," : "") + std::string(R"({"sku":"item-)") + std::to_string(i) + R"(","qty":1})";
  return p + "]}";
}

// A data directory written by the engine, and every event it holds.
struct Fixture {
  std::unique_ptr<TempDir> dir;
  std::vector<RecordedEvent> events;  // ReadAll, in position order
  bool ok = false;

  std::string path() const { return dir->path(); }
  std::string SegmentPath(uint32_t partition, uint32_t id) const {
    return path() + "/" + format::PartitionDirName(partition) + "/" + format::SegmentFileName(id);
  }
  // The events of `partition`, in position order.
  std::vector<RecordedEvent> Partition(uint32_t partition) const {
    std::vector<RecordedEvent> out;
    for (const RecordedEvent& e : events)
      if (format::PartitionForStream(e.stream, kPartitions) == partition) out.push_back(e);
    return out;
  }
  // The events with positions in [first, last].
  std::vector<RecordedEvent> Between(uint64_t first, uint64_t last) const {
    std::vector<RecordedEvent> out;
    for (const RecordedEvent& e : events)
      if (e.position.get() >= first && e.position.get() <= last) out.push_back(e);
    return out;
  }
};

void WriteStore(const std::string& dir, bool seal, std::vector<RecordedEvent>* events) {
  Options o;
  o.partitions = kPartitions;
  o.segment_size_bytes = 1 << 20;
  o.seal_segments = seal;
  o.log = [](const std::string&) {};
  auto store = Store::Open(dir, o);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  for (int i = 0; i < kEvents / kEventsPerAppend; ++i) {
    std::vector<EventData> batch;
    for (int j = 0; j < kEventsPerAppend; ++j)
      batch.push_back(testing::Event("Deposited", Payload(i * kEventsPerAppend + j)));
    auto r = (*store)->Append("account-" + std::to_string(i % kStreams), ExpectedVersion::Any(),
                              std::move(batch));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
  }
  (*store)->WaitForBackgroundWork();
  for (GlobalPosition from(1);;) {
    auto page = (*store)->ReadAll(from, 10'000);
    ASSERT_TRUE(page.ok()) << page.status().ToString();
    if (page->empty()) break;
    from = page->back().position + 1;
    events->insert(events->end(), page->begin(), page->end());
  }
  ASSERT_EQ(events->size(), size_t{kEvents});
  ASSERT_TRUE((*store)->Close().ok());
}

class StorageCliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    sealed_ = new Fixture{std::make_unique<TempDir>("storage-cli-sealed"), {}};
    WriteStore(sealed_->path(), /*seal=*/true, &sealed_->events);
    sealed_->ok = !::testing::Test::HasFatalFailure();
    unsealed_ = new Fixture{std::make_unique<TempDir>("storage-cli-unsealed"), {}};
    WriteStore(unsealed_->path(), /*seal=*/false, &unsealed_->events);
    unsealed_->ok = !::testing::Test::HasFatalFailure();
  }
  static void TearDownTestSuite() {
    delete sealed_;
    delete unsealed_;
  }
  void SetUp() override {
    ASSERT_TRUE(sealed_->ok && unsealed_->ok) << "the fixture stores could not be written";
  }

  // `data ls --json`'s segments of `partition`.
  static Json Segments(const Fixture& f, uint32_t partition) {
    Json ls = RunJson({"data", "ls", f.path(), "--json"});
    return ls["partitions"][partition]["segments"];
  }
  // The first segment (partition, id) whose state is `state`.
  static std::pair<uint32_t, uint32_t> FindSegment(const Fixture& f, const std::string& state) {
    Json ls = RunJson({"data", "ls", f.path(), "--json"});
    for (const Json& p : ls["partitions"])
      for (const Json& s : p["segments"])
        if (s["state"] == state && !s["first_position"].is_null())
          return {p["partition"].get<uint32_t>(), s["id"].get<uint32_t>()};
    ADD_FAILURE() << "no " << state << " segment with events in " << ls.dump();
    return {0, 0};
  }

  // Copies the unsealed store to `copy` and names its first segment in
  // `state` with events: partition, id and the copy's file.
  struct CopiedSegment {
    uint32_t partition, id;
    std::string file;
  };
  static CopiedSegment CopyUnsealed(const TempDir& copy, const std::string& state) {
    std::filesystem::copy(unsealed_->path(), copy.path(), std::filesystem::copy_options::recursive);
    auto [partition, id] = FindSegment(*unsealed_, state);
    return {partition, id,
            copy.path() + "/" + format::PartitionDirName(partition) + "/" + format::SegmentFileName(id)};
  }
  static Fixture* sealed_;
  static Fixture* unsealed_;
};

Fixture* StorageCliTest::sealed_ = nullptr;
Fixture* StorageCliTest::unsealed_ = nullptr;

// The segments of one partition cover its events one after another, with
// the times of their first and last events.
void ExpectContiguous(const Fixture& f, uint32_t partition, const Json& segments) {
  std::vector<RecordedEvent> events = f.Partition(partition);
  size_t next = 0;
  for (const Json& s : segments) {
    if (s["first_position"].is_null()) continue;
    ASSERT_LT(next, events.size()) << s.dump();
    EXPECT_EQ(s["first_position"].get<uint64_t>(), events[next].position.get()) << s.dump();
    EXPECT_EQ(s["first_recorded_at_ns"].get<int64_t>(), events[next].recorded_at_ns);
    auto last = std::find_if(events.begin(), events.end(), [&](const RecordedEvent& e) {
      return e.position.get() == s["last_position"].get<uint64_t>();
    });
    ASSERT_NE(last, events.end()) << s.dump();
    EXPECT_EQ(s["last_recorded_at_ns"].get<int64_t>(), last->recorded_at_ns);
    next = static_cast<size_t>(last - events.begin()) + 1;
  }
  EXPECT_EQ(next, events.size()) << "partition " << partition << "'s segments end early";
}

TEST_F(StorageCliTest, DataLsListsSegmentsWithStatesAndContiguousPositions) {
  Json ls = RunJson({"data", "ls", sealed_->path(), "--json"});
  EXPECT_EQ(ls["manifest"]["partitions"], kPartitions);
  EXPECT_EQ(ls["manifest"]["segment_bytes"], 1 << 20);
  ASSERT_EQ(ls["partitions"].size(), kPartitions);
  int sealed = 0;
  for (uint32_t p = 0; p < kPartitions; ++p) {
    const Json& segments = ls["partitions"][p]["segments"];
    std::vector<std::string> states;
    for (size_t i = 0; i < segments.size(); ++i) {
      EXPECT_EQ(segments[i]["id"], i) << "segment ids are contiguous from 0";
      states.push_back(segments[i]["state"]);
    }
    // Sealed ones, then the one appended to, then perhaps one made ahead.
    auto active = std::find(states.begin(), states.end(), "active");
    ASSERT_NE(active, states.end()) << segments.dump();
    EXPECT_TRUE(std::all_of(states.begin(), active, [](auto& s) { return s == "sealed"; }));
    EXPECT_TRUE(std::all_of(active + 1, states.end(), [](auto& s) { return s == "prepared"; }));
    sealed += static_cast<int>(active - states.begin());
    ExpectContiguous(*sealed_, p, segments);
    std::vector<RecordedEvent> events = sealed_->Partition(p);
    EXPECT_EQ(ls["partitions"][p]["checkpoint"]["last_position"], events.back().position.get());
  }
  EXPECT_GE(sealed, 2) << "the fixture should have filled several segments";
}

TEST_F(StorageCliTest, DataLsTableShowsTheSameNumbersAsJson) {
  Json ls = RunJson({"data", "ls", sealed_->path(), "--json"});
  CliResult r = RunCli({"data", "ls", sealed_->path()});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  // Rows: id state file-bytes data-end first last first-time last-time index.
  std::map<std::pair<uint32_t, uint64_t>, std::vector<std::string>> rows;
  uint32_t partition = 0;
  for (const std::string& line : Lines(r.out)) {
    std::vector<std::string> w = Words(line);
    if (w.size() >= 2 && w[0] == "partition") partition = static_cast<uint32_t>(std::stoul(w[1]));
    if (w.size() == 9 && std::isdigit(static_cast<unsigned char>(w[0][0])))
      rows[{partition, std::stoull(w[0])}] = w;
  }
  size_t segments = 0;
  for (const Json& p : ls["partitions"])
    for (const Json& s : p["segments"]) {
      ++segments;
      auto it = rows.find({p["partition"].get<uint32_t>(), s["id"].get<uint64_t>()});
      ASSERT_NE(it, rows.end()) << s.dump() << "\n" << r.out;
      const std::vector<std::string>& w = it->second;
      EXPECT_EQ(w[1], s["state"].get<std::string>());
      EXPECT_EQ(w[2], std::to_string(s["file_bytes"].get<uint64_t>()));
      EXPECT_EQ(w[3], std::to_string(s["data_end"].get<uint64_t>()));
      if (!s["first_position"].is_null()) {
        EXPECT_EQ(w[4], std::to_string(s["first_position"].get<uint64_t>()));
        EXPECT_EQ(w[5], std::to_string(s["last_position"].get<uint64_t>()));
        EXPECT_EQ(w[6], s["first_recorded_at"].get<std::string>());
      }
      EXPECT_EQ(w[8], s["has_index"].get<bool>() ? "yes" : "no");
    }
  EXPECT_EQ(rows.size(), segments) << r.out;
}

TEST_F(StorageCliTest, DataLsShowsFullUnsealedSegmentsWithTheirIndexes) {
  for (uint32_t p = 0; p < kPartitions; ++p) {
    Json segments = Segments(*unsealed_, p);
    bool seen_active = false;
    for (const Json& s : segments) {
      EXPECT_NE(s["state"], "sealed") << s.dump();
      if (s["state"] == "active") seen_active = true;
      if (!seen_active) {
        EXPECT_EQ(s["state"], "full") << s.dump();
        EXPECT_TRUE(s["has_index"].get<bool>()) << s.dump();
      }
    }
    EXPECT_TRUE(seen_active) << segments.dump();
    ExpectContiguous(*unsealed_, p, segments);
  }
}

// `segment dump FILE --json`'s events: (position, stream, version).
std::vector<std::tuple<uint64_t, std::string, uint64_t>> DumpedEvents(const Json& dump) {
  std::vector<std::tuple<uint64_t, std::string, uint64_t>> out;
  for (const Json& b : dump["batches"]) {
    EXPECT_TRUE(b["checksum_ok"].get<bool>());
    for (const Json& e : b["events"])
      out.emplace_back(e["position"].get<uint64_t>(), e["stream"].get<std::string>(),
                       e["version"].get<uint64_t>());
  }
  return out;
}

// Dumps segment `id` of `partition` (JSON and table) and compares it with
// the events that data ls places in it, as ReadAll returned them.
void ExpectDumpShowsEverySegmentEvent(const Fixture& f, uint32_t partition, uint32_t id) {
  Json ls = RunJson({"data", "ls", f.path(), "--json"});
  const Json& seg = ls["partitions"][partition]["segments"][id];
  std::vector<RecordedEvent> want;
  for (const RecordedEvent& e : f.Partition(partition))
    if (e.position.get() >= seg["first_position"].get<uint64_t>() &&
        e.position.get() <= seg["last_position"].get<uint64_t>())
      want.push_back(e);
  ASSERT_FALSE(want.empty());

  Json dump = RunJson({"segment", "dump", f.SegmentPath(partition, id), "--json"});
  EXPECT_EQ(dump["sealed"].get<bool>(), seg["state"] == "sealed");
  auto got = DumpedEvents(dump);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_EQ(got[i],
              std::make_tuple(want[i].position.get(), want[i].stream, want[i].version.get()));
  EXPECT_EQ(dump["events_shown"], want.size());

  CliResult r = RunCli({"segment", "dump", f.SegmentPath(partition, id)});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  // Event rows: offset position stream version type id ...
  std::vector<uint64_t> positions;
  const std::regex row(R"(^  \d+ +(\d+) +account-\d+ +\d+ +Deposited .*)");
  for (const std::string& line : Lines(r.out)) {
    std::smatch m;
    if (std::regex_match(line, m, row)) positions.push_back(std::stoull(m[1]));
  }
  ASSERT_EQ(positions.size(), want.size()) << r.out.substr(0, 2000);
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(positions[i], want[i].position.get());
}

TEST_F(StorageCliTest, SegmentDumpOfSealedSegmentShowsEveryEvent) {
  auto [partition, id] = FindSegment(*sealed_, "sealed");
  ExpectDumpShowsEverySegmentEvent(*sealed_, partition, id);
}

TEST_F(StorageCliTest, SegmentDumpOfUnsealedSegmentsShowsEveryEvent) {
  auto [p_full, full] = FindSegment(*unsealed_, "full");
  ExpectDumpShowsEverySegmentEvent(*unsealed_, p_full, full);
  auto [p_active, active] = FindSegment(*unsealed_, "active");
  ExpectDumpShowsEverySegmentEvent(*unsealed_, p_active, active);
}

void ExpectFromAndLimit(const Fixture& f, uint32_t partition, uint32_t id) {
  const std::string file = f.SegmentPath(partition, id);
  Json all = RunJson({"segment", "dump", file, "--json"});
  ASSERT_GE(all["batches"].size(), 5u);
  // One byte past the start of batch 3: the dump starts at batch 4.
  const Json& b4 = all["batches"][4];
  const uint64_t from = all["batches"][3]["offset"].get<uint64_t>() + 1;
  Json part =
      RunJson({"segment", "dump", file, "--from", std::to_string(from), "--limit", "7", "--json"});
  ASSERT_FALSE(part["batches"].empty());
  EXPECT_EQ(part["batches"][0]["offset"], b4["offset"]);
  auto got = DumpedEvents(part);
  ASSERT_EQ(got.size(), 7u);
  EXPECT_EQ(std::get<0>(got[0]), b4["first_position"].get<uint64_t>());
  EXPECT_EQ(part["events_shown"], 7);
  // Exactly at a batch's offset starts there.
  Json exact =
      RunJson({"segment", "dump", file, "--from", b4["offset"].dump(), "--limit", "1", "--json"});
  EXPECT_EQ(exact["batches"][0]["offset"], b4["offset"]);
  EXPECT_EQ(DumpedEvents(exact).size(), 1u);
}

TEST_F(StorageCliTest, SegmentDumpFromAndLimitSelectBatchesAndEvents) {
  auto [sp, sid] = FindSegment(*sealed_, "sealed");
  ExpectFromAndLimit(*sealed_, sp, sid);
  auto [up, uid] = FindSegment(*unsealed_, "full");
  ExpectFromAndLimit(*unsealed_, up, uid);
}

TEST_F(StorageCliTest, SegmentStatsTotalsMatchWhatWasWritten) {
  Json stats = RunJson({"segment", "stats", sealed_->path(), "--json"});
  uint64_t payload_bytes = 0;
  for (const RecordedEvent& e : sealed_->events) payload_bytes += e.payload.size();
  EXPECT_EQ(stats["total"]["events"], kEvents);
  EXPECT_EQ(stats["total"]["streams"], kStreams);
  EXPECT_EQ(stats["total"]["payload_bytes"], payload_bytes);
  EXPECT_EQ(stats["total"]["first_recorded_at_ns"], sealed_->events.front().recorded_at_ns);
  EXPECT_EQ(stats["total"]["last_recorded_at_ns"], sealed_->events.back().recorded_at_ns);
  uint64_t events = 0;
  for (const Json& s : stats["segments"]) {
    events += s["events"].get<uint64_t>();
    if (s["sealed"].get<bool>()) {
      EXPECT_LT(s["ratio"].get<double>(), 1.0) << s.dump();
    }
  }
  EXPECT_EQ(events, uint64_t{kEvents});

  auto [partition, id] = FindSegment(*sealed_, "sealed");
  Json one = RunJson({"segment", "stats", sealed_->SegmentPath(partition, id), "--json"});
  ASSERT_EQ(one["segments"].size(), 1u);
  EXPECT_LT(one["total"]["ratio"].get<double>(), 0.5) << "repetitive JSON compresses well";
  EXPECT_GT(one["total"]["events"].get<uint64_t>(), 0u);

  Json unsealed = RunJson({"segment", "stats", unsealed_->path(), "--json"});
  EXPECT_EQ(unsealed["total"]["events"], kEvents);
  EXPECT_DOUBLE_EQ(unsealed["total"]["ratio"].get<double>(), 1.0);

  CliResult r = RunCli({"segment", "stats", sealed_->path()});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  bool total_row = false;
  for (const std::string& line : Lines(r.out)) {
    std::vector<std::string> w = Words(line);
    if (!w.empty() && w[0] == "total") {
      total_row = true;
      EXPECT_EQ(w[2], std::to_string(kEvents)) << line;
    }
  }
  EXPECT_TRUE(total_row) << r.out;
}

// `index dump --stream S`: its runs hold each of S's events once, in
// version order, and nothing else.
void ExpectStreamRuns(const Fixture& f, const std::string& stream) {
  Json dump = RunJson({"index", "dump", f.path(), "--stream", stream, "--json"});
  EXPECT_EQ(dump["partition"], format::PartitionForStream(stream, kPartitions));
  uint64_t want = 0;
  for (const RecordedEvent& e : f.events) want += e.stream == stream;
  uint64_t sum = 0, next_version = 0;
  for (const Json& run : dump["runs"]) {
    EXPECT_EQ(run["first_version"], next_version) << run.dump();
    next_version = run["first_version"].get<uint64_t>() + run["count"].get<uint64_t>();
    sum += run["count"].get<uint64_t>();
    EXPECT_EQ(run["prev_location"].is_null(), run["first_version"] == 0) << run.dump();
  }
  EXPECT_EQ(sum, want) << dump.dump();
  EXPECT_EQ(dump["events"], want);
}

TEST_F(StorageCliTest, IndexDumpStreamRunsSumToTheStreamsEvents) {
  for (int s = 0; s < kStreams; ++s) {
    ExpectStreamRuns(*sealed_, "account-" + std::to_string(s));
    ExpectStreamRuns(*unsealed_, "account-" + std::to_string(s));
  }
  Json none = RunJson({"index", "dump", sealed_->path(), "--stream", "no-such-stream", "--json"});
  EXPECT_TRUE(none["runs"].empty());
  EXPECT_EQ(none["events"], 0);
}

TEST_F(StorageCliTest, IndexDumpCountsIndexFilesAndNamesUnindexedSegments) {
  Json dump = RunJson({"index", "dump", sealed_->path(), "--json"});
  Json ls = RunJson({"data", "ls", sealed_->path(), "--json"});
  uint64_t offsets = 0;
  for (uint32_t p = 0; p < kPartitions; ++p) {
    const Json& segments = dump["partitions"][p]["segments"];
    ASSERT_EQ(segments.size(), ls["partitions"][p]["segments"].size());
    for (size_t i = 0; i < segments.size(); ++i) {
      const Json& s = segments[i];
      EXPECT_EQ(s["index_file"], ls["partitions"][p]["segments"][i]["has_index"]) << s.dump();
      if (s["index_file"].get<bool>()) {
        EXPECT_GT(s["runs"].get<uint64_t>(), 0u);
        EXPECT_GE(s["samples"].get<uint64_t>(), 1u);
        offsets += s["offsets"].get<uint64_t>();
      } else if (s["empty"].get<bool>()) {
        EXPECT_EQ(s["note"], "empty segment");
        EXPECT_EQ(ls["partitions"][p]["segments"][i]["state"], "prepared");
      } else {
        // The segment appended to: its index is built in memory, and a
        // copy goes into each checkpoint.
        EXPECT_EQ(s["note"], "index in memory/checkpoint only");
        EXPECT_EQ(ls["partitions"][p]["segments"][i]["state"], "active");
        EXPECT_GT(s["checkpoint_index_bytes"].get<uint64_t>(), 0u) << s.dump();
      }
    }
  }
  // Every event of a sealed segment is in an index file.
  uint64_t sealed_events = 0;
  Json stats = RunJson({"segment", "stats", sealed_->path(), "--json"});
  for (const Json& s : stats["segments"])
    if (s["sealed"].get<bool>()) sealed_events += s["events"].get<uint64_t>();
  EXPECT_EQ(offsets, sealed_events);

  CliResult r = RunCli({"index", "dump", sealed_->path()});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_NE(r.out.find("index in memory/checkpoint only"), std::string::npos) << r.out;
}

TEST_F(StorageCliTest, CheckpointDumpShowsTailAndStreamCount) {
  Json dump = RunJson({"checkpoint", "dump", sealed_->path(), "--json"});
  ASSERT_EQ(dump["partitions"].size(), kPartitions);
  for (uint32_t p = 0; p < kPartitions; ++p) {
    const Json& c = dump["partitions"][p]["checkpoint"];
    ASSERT_TRUE(c.is_object()) << dump.dump();
    std::vector<RecordedEvent> events = sealed_->Partition(p);
    std::set<std::string> streams;
    for (const RecordedEvent& e : events) streams.insert(e.stream);
    EXPECT_EQ(c["last_position"], events.back().position.get());
    EXPECT_EQ(c["last_recorded_at_ns"], events.back().recorded_at_ns);
    EXPECT_EQ(c["stream_count"], streams.size());
    EXPECT_EQ(c["streams"].size(), streams.size());
    // The tail is the end of the last segment holding data.
    const Json& last = c["segments"].back();
    EXPECT_EQ(c["tail_segment"], last["id"]);
    EXPECT_EQ(c["tail_offset"], last["end_offset"]);
  }
  CliResult r = RunCli({"checkpoint", "dump", sealed_->path()});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  const std::regex streams_line(R"(^  streams +(\d+)$)");
  int found = 0;
  for (const std::string& line : Lines(r.out)) found += std::regex_match(line, streams_line);
  EXPECT_EQ(found, static_cast<int>(kPartitions)) << r.out;
}

TEST_F(StorageCliTest, DamagedRecordMakesSegmentDumpExit4NamingFileAndOffset) {
  TempDir copy("storage-cli-damaged");
  auto [partition, id, file] = CopyUnsealed(copy, "full");
  Json dump = RunJson({"segment", "dump", file, "--json"});
  ASSERT_GE(dump["batches"].size(), 3u);
  const Json& victim = dump["batches"][2]["events"][3];
  const uint64_t offset = victim["offset"].get<uint64_t>();
  // A byte of the payload: the record's checksum no longer holds.
  const uint64_t at =
      offset + format::kRecordHeaderBytes + victim["stream"].get<std::string>().size() + 12;
  {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(at));
    char c = 0;
    f.read(&c, 1);
    f.seekp(static_cast<std::streamoff>(at));
    c = static_cast<char>(c ^ 0x20);
    f.write(&c, 1);
    ASSERT_TRUE(f.good());
  }
  CliResult r = RunCli({"segment", "dump", file});
  EXPECT_EQ(r.exit_code, kExitProblems) << Describe(r);
  EXPECT_NE(r.err.find(file + " at offset " + std::to_string(offset) + ":"), std::string::npos)
      << Describe(r);
  // What lies before the damage is still shown: the damaged batch as failing.
  EXPECT_NE(r.out.find("checksum FAILS"), std::string::npos) << Describe(r);

  CliResult j = RunCli({"segment", "dump", file, "--json"});
  EXPECT_EQ(j.exit_code, kExitProblems) << Describe(j);
  Json partial = Json::parse(j.out, nullptr, false);
  ASSERT_FALSE(partial.is_discarded()) << Describe(j);
  EXPECT_EQ(partial["batches"][2]["checksum_ok"], false);
  EXPECT_EQ(partial["batches"][2]["events"].size(), 3u);
  EXPECT_NE(partial["problem"].get<std::string>().find(std::to_string(offset)), std::string::npos);

  CliResult stats = RunCli({"segment", "stats", copy.path()});
  EXPECT_EQ(stats.exit_code, kExitProblems) << Describe(stats);
}

// Writes `bytes` over `path` at `offset`.
void WriteAt(const std::string& path, uint64_t offset, const std::string& bytes) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(f.good()) << path;
}

// A batch torn at the end of the log (what a crash in mid-write leaves, or
// what annald is writing while a command reads) was never acknowledged: the
// commands warn and go on. The same batch with data after it is damage.
TEST_F(StorageCliTest, TornFinalBatchIsAWarningAndTornBatchBeforeDataIsDamage) {
  TempDir copy("storage-cli-torn");
  auto [partition, id, file] = CopyUnsealed(copy, "active");
  Json row;
  for (const Json& s : Segments(*unsealed_, partition))
    if (s["id"] == id) row = s;
  const uint64_t end = row["data_end"].get<uint64_t>();
  const uint64_t events = RunJson({"segment", "stats", file, "--json"})["total"]["events"].get<uint64_t>();
  const std::string torn = testing::TornBatch(row["last_position"].get<uint64_t>() + 1);
  WriteAt(file, end, torn);
  const std::string warning = file + " at offset " + std::to_string(end) + ": warning: torn final batch";

  CliResult ls = RunCli({"data", "ls", copy.path(), "--json"});
  EXPECT_EQ(ls.exit_code, 0) << Describe(ls);
  EXPECT_NE(ls.err.find(warning), std::string::npos) << Describe(ls);
  Json listed = Json::parse(ls.out, nullptr, false);
  ASSERT_FALSE(listed.is_discarded()) << Describe(ls);
  for (const Json& s : listed["partitions"][partition]["segments"]) {
    if (s["id"] != id) continue;
    EXPECT_EQ(s["torn_final_batch"], end) << s.dump();
    EXPECT_EQ(s["data_end"], end) << s.dump();
    EXPECT_TRUE(s["problem"].is_null()) << s.dump();
  }
  CliResult table = RunCli({"data", "ls", copy.path()});
  EXPECT_EQ(table.exit_code, 0) << Describe(table);
  EXPECT_NE(table.out.find("active, torn tail"), std::string::npos) << Describe(table);

  CliResult stats = RunCli({"segment", "stats", file, "--json"});
  EXPECT_EQ(stats.exit_code, 0) << Describe(stats);
  EXPECT_NE(stats.err.find(warning), std::string::npos) << Describe(stats);
  Json counted = Json::parse(stats.out, nullptr, false);
  ASSERT_FALSE(counted.is_discarded()) << Describe(stats);
  EXPECT_EQ(counted["total"]["events"], events) << "the torn batch's event is not counted";

  CliResult dump = RunCli({"segment", "dump", file, "--json"});
  EXPECT_EQ(dump.exit_code, 0) << Describe(dump);
  Json dumped = Json::parse(dump.out, nullptr, false);
  ASSERT_FALSE(dumped.is_discarded()) << Describe(dump);
  const Json& last = dumped["batches"].back();
  EXPECT_EQ(last["offset"], end) << last.dump();
  EXPECT_EQ(last["checksum_ok"], false) << last.dump();
  EXPECT_TRUE(last["events"].empty()) << last.dump();
  EXPECT_TRUE(dumped["problem"].is_null()) << dumped["problem"].dump();

  // With data after it the torn batch is not the end of the log: damage,
  // named at its offset, for every command.
  auto expect_damage = [&](const std::string& what) {
    SCOPED_TRACE(what);
    for (const std::vector<std::string>& args : {std::vector<std::string>{"data", "ls", copy.path()},
                                                 {"segment", "stats", file},
                                                 {"segment", "dump", file}}) {
      CliResult r = RunCli(args);
      EXPECT_EQ(r.exit_code, kExitProblems) << Describe(r);
      EXPECT_NE(r.err.find(file + " at offset " + std::to_string(end) + ":"), std::string::npos) << Describe(r);
      EXPECT_EQ(r.err.find("warning"), std::string::npos) << Describe(r);
    }
  };
  // A batch in a later segment.
  const std::string next =
      copy.path() + "/" + format::PartitionDirName(partition) + "/" + format::SegmentFileName(id + 1);
  ASSERT_TRUE(std::filesystem::exists(next)) << "the store leaves the segment it made ahead of need";
  {
    std::string whole = testing::TornBatch(row["last_position"].get<uint64_t>() + 2);
    auto* b = reinterpret_cast<uint8_t*>(whole.data());
    format::Put64(b + whole.size() - format::kBatchTrailerBytes, format::BatchChecksum(b, whole.size()));
    WriteAt(next, format::kSegmentHeaderBytes, whole);
  }
  expect_damage("a batch in the next segment");
  std::filesystem::remove(next);

  // Bytes after the torn batch in its own segment.
  WriteAt(file, end + torn.size() + 100, "data");
  expect_damage("bytes after it in its segment");
}

TEST_F(StorageCliTest, PathThatIsNotADataDirectoryExits1) {
  TempDir empty("storage-cli-empty");
  std::filesystem::create_directories(empty.path());
  const std::string manifest = sealed_->path() + "/" + format::ManifestName();
  for (const std::string& dir : {manifest, empty.path(), empty.path() + "/missing"}) {
    for (const char* group : {"data", "index", "checkpoint"}) {
      CliResult r = RunCli({group, group == std::string("data") ? "ls" : "dump", dir});
      EXPECT_EQ(r.exit_code, kExitUsage) << group << " " << dir << "\n" << Describe(r);
      EXPECT_NE(r.err.find(dir), std::string::npos) << Describe(r);
      EXPECT_TRUE(r.out.empty()) << Describe(r);
    }
  }
  CliResult r = RunCli({"segment", "dump", manifest});
  EXPECT_EQ(r.exit_code, kExitUsage) << Describe(r);
  r = RunCli({"segment", "stats", empty.path()});
  EXPECT_EQ(r.exit_code, kExitUsage) << Describe(r);
  r = RunCli({"data", "ls"});
  EXPECT_EQ(r.exit_code, kExitUsage) << "DIR is required\n" << Describe(r);
}

}  // namespace
}  // namespace annal
