// The scalable index (issue #6): stream reads through segment indexes
// across active, full and sealed segments; recovery of the indexes from
// checkpoints, from the log and after their files are lost; streams whose
// hashes collide; the time index; damaged sealed blocks seen through the
// store; and sealing interrupted by SIGKILL.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "annal/store.h"
#include "format.h"
#include "sealed.h"
#include "test_util.h"

namespace annal {
namespace {

using testing::Event;
using testing::TempDir;

// Payloads that compress like domain events and differ per event.
std::string JsonPayload(uint64_t n, size_t bytes) {
  std::string s = R"({"account":"acc-)" + std::to_string(n % 977) + R"(","amount":)" + std::to_string(n * 37 % 10007) +
                  R"(,"note":")";
  static constexpr char kWords[] = "deposit withdrawal transfer fee interest refund ";
  for (size_t i = 0; s.size() + 2 < bytes; ++i) s.push_back(kWords[(n + i) % (sizeof kWords - 1)]);
  return s + "\"}";
}

// What the test wrote: per stream, each version's payload and position.
struct Written {
  std::map<std::string, std::vector<std::pair<std::string, uint64_t>>> streams;
  std::vector<int64_t> times;  // recorded_at by position - 1
  uint64_t events = 0;
};

Options IndexOptions(std::vector<std::string>* log = nullptr) {
  Options o;
  o.partitions = 2;
  o.segment_size_bytes = 1024 * 1024;
  o.seal_block_bytes = 16 * 1024;
  o.log = [log](const std::string& l) {
    if (log) log->push_back(l);
  };
  return o;
}

// Appends `n` events over `streams` streams, hot ones more often (a few
// streams take most events, as in real stores), in appends of 1..3 events.
void Fill(Store& store, Written* w, uint64_t n, uint32_t streams, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::string> names;
  for (uint32_t i = 0; i < streams; ++i) names.push_back("account-" + std::to_string(i));
  uint64_t done = 0;
  while (done < n) {
    uint32_t pick = static_cast<uint32_t>(std::min<uint64_t>(rng() % streams, rng() % streams));
    const std::string& name = names[pick];
    size_t count = 1 + rng() % 3;
    std::vector<EventData> events;
    for (size_t i = 0; i < count; ++i) events.push_back(Event("Booked", JsonPayload(done + i, 200 + rng() % 600)));
    auto r = store.Append(name, ExpectedVersion::Any(), events);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    auto& versions = w->streams[name];
    ASSERT_EQ(r->first_version.get(), versions.size());
    for (size_t i = 0; i < count; ++i) {
      versions.emplace_back(events[i].payload, r->first_position.get() + i);
      if (w->times.size() < r->first_position.get() + i) w->times.resize(r->first_position.get() + i, 0);
      w->times[r->first_position.get() + i - 1] = r->recorded_at_ns;
    }
    done += count;
  }
  w->events += done;
}

// Reads random ranges of every stream, both directions, and compares.
void CheckReads(Store& store, const Written& w, uint64_t seed) {
  std::mt19937_64 rng(seed);
  for (const auto& [name, versions] : w.streams) {
    for (int round = 0; round < 6; ++round) {
      uint64_t from = rng() % versions.size();
      size_t max = 1 + rng() % 120;
      bool forward = round % 2 == 0;
      auto got = store.ReadStream(name, StreamVersion(from), forward ? ReadDirection::kForward : ReadDirection::kBackward, max);
      ASSERT_TRUE(got.ok()) << name << " from " << from << ": " << got.status().ToString();
      uint64_t expect_count = forward ? std::min<uint64_t>(max, versions.size() - from) : std::min<uint64_t>(max, from + 1);
      ASSERT_EQ(got->size(), expect_count) << name << " from " << from;
      for (size_t i = 0; i < got->size(); ++i) {
        uint64_t v = forward ? from + i : from - i;
        ASSERT_EQ((*got)[i].version.get(), v) << name;
        ASSERT_EQ((*got)[i].payload, versions[v].first) << name << " version " << v;
        ASSERT_EQ((*got)[i].position.get(), versions[v].second) << name << " version " << v;
      }
    }
    auto info = store.GetStreamInfo(name);
    ASSERT_TRUE(info.ok()) << info.status().ToString();
    EXPECT_EQ(info->head_version.get(), versions.size() - 1);
    EXPECT_EQ(info->first_recorded_at_ns, w.times[versions.front().second - 1]);
    EXPECT_EQ(info->last_recorded_at_ns, w.times[versions.back().second - 1]);
  }
}

std::vector<std::string> FilesEndingWith(const std::string& dir, const std::string& suffix) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir))
    if (e.path().string().ends_with(suffix)) out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

uint64_t Sealed(const Store& store) {
  uint64_t n = 0;
  for (const PartitionStats& p : store.GetStats().partitions) n += p.sealed_segments;
  return n;
}

TEST(IndexTest, ReadsAtAnyVersionAcrossActiveFullAndSealedSegments) {
  TempDir dir("index-reads");
  Written w;
  {
    auto store = Store::Open(dir.path(), IndexOptions());
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    ASSERT_NO_FATAL_FAILURE(Fill(**store, &w, 12000, 40, 1));
    // Before the finisher ran, during, and after.
    ASSERT_NO_FATAL_FAILURE(CheckReads(**store, w, 2));
    (*store)->WaitForBackgroundWork();
    EXPECT_GE(Sealed(**store), 4u);
    ASSERT_NO_FATAL_FAILURE(CheckReads(**store, w, 3));
    StoreStats stats = (*store)->GetStats();
    uint64_t raw = 0, stored = 0;
    for (const PartitionStats& p : stats.partitions) {
      raw += p.sealed_raw_bytes;
      stored += p.sealed_stored_bytes;
    }
    EXPECT_LT(stored * 2, raw) << "JSON events should seal to well under half";
  }
  EXPECT_FALSE(FilesEndingWith(dir.path(), ".idx").empty());
  // Reopened from the checkpoint, which carries the active segments' indexes.
  {
    auto store = Store::Open(dir.path(), IndexOptions());
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    ASSERT_NO_FATAL_FAILURE(CheckReads(**store, w, 4));
    ASSERT_NO_FATAL_FAILURE(Fill(**store, &w, 3000, 40, 5));
    ASSERT_NO_FATAL_FAILURE(CheckReads(**store, w, 6));
  }
  // Without checkpoints: the whole log is replayed, sealed segments included.
  for (const std::string& f : FilesEndingWith(dir.path(), "index.ckpt")) std::filesystem::remove(f);
  {
    auto store = Store::Open(dir.path(), IndexOptions());
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    ASSERT_NO_FATAL_FAILURE(CheckReads(**store, w, 7));
  }
  // Index files are derived: lost or damaged ones are rebuilt.
  std::vector<std::string> indexes = FilesEndingWith(dir.path(), ".idx");
  ASSERT_GE(indexes.size(), 2u);
  std::filesystem::remove(indexes[0]);
  {
    std::fstream f(indexes[1], std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x5a');
  }
  std::vector<std::string> log;
  {
    auto store = Store::Open(dir.path(), IndexOptions(&log));
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    ASSERT_NO_FATAL_FAILURE(CheckReads(**store, w, 8));
    (*store)->WaitForBackgroundWork();
    ASSERT_NO_FATAL_FAILURE(CheckReads(**store, w, 9));
  }
  EXPECT_TRUE(std::filesystem::exists(indexes[0]));
  bool told = std::any_of(log.begin(), log.end(), [&](const std::string& l) {
    return l.find("rebuilding a damaged segment index") != std::string::npos;
  });
  // The damaged file either failed its header check at open or its page
  // check on first use; at open is where offset 100 (the samples) is seen.
  EXPECT_TRUE(told) << "the damaged index was not reported";
}

TEST(IndexTest, IndexMemoryDoesNotGrowWithEvents) {
  TempDir dir("index-memory");
  Written w;
  auto store = Store::Open(dir.path(), IndexOptions());
  ASSERT_TRUE(store.ok());
  auto index_bytes = [&] {
    (*store)->WaitForBackgroundWork();
    uint64_t n = 0;
    for (const PartitionStats& p : (*store)->GetStats().partitions) n += p.index_memory_bytes;
    return n;
  };
  ASSERT_NO_FATAL_FAILURE(Fill(**store, &w, 6000, 20, 11));
  uint64_t before = index_bytes();
  ASSERT_NO_FATAL_FAILURE(Fill(**store, &w, 24000, 20, 12));
  uint64_t after = index_bytes();
  // Four times the events, the same streams: only the active segments'
  // in-memory indexes differ (each at most one segment's worth).
  EXPECT_LT(after, before + 2 * 200 * 1024) << before << " -> " << after;
}

TEST(IndexTest, StreamsWhoseHashesCollideAreToldApartByName) {
  // Eight hash values for 120 streams; process-wide, so put back after.
  struct MaskGuard {
    MaskGuard() { format::SetStreamHashMaskForTesting(0x7); }
    ~MaskGuard() { format::SetStreamHashMaskForTesting(~0ull); }
  } mask;
  TempDir dir("index-collide");
  Options o = IndexOptions();
  std::map<std::string, uint64_t> heads;
  {
    auto store = Store::Open(dir.path(), o);
    ASSERT_TRUE(store.ok());
    for (int round = 0; round < 30; ++round) {
      for (int i = 0; i < 120; ++i) {
        std::string name = "c-" + std::to_string(i);
        ExpectedVersion ev = heads.count(name) ? ExpectedVersion::Exact(heads[name]) : ExpectedVersion::NoStream();
        EventData e = Event("T", name + "/" + std::to_string(round) + JsonPayload(i, 300));
        e.id = testing::IdFrom(static_cast<uint64_t>(i) + 1, static_cast<uint64_t>(round) + 1);
        auto r = (*store)->Append(name, ev, {e});
        ASSERT_TRUE(r.ok()) << name << " round " << round << ": " << r.status().ToString();
        heads[name] = r->last_version.get();
        // A retry of the same append is recognised on the right stream.
        auto again = (*store)->Append(name, ExpectedVersion::Any(), {e});
        ASSERT_TRUE(again.ok()) << again.status().ToString();
        ASSERT_TRUE(again->idempotent_replay) << name;
        ASSERT_EQ(again->last_version, r->last_version);
      }
    }
    (*store)->WaitForBackgroundWork();
  }
  auto check = [&](Store& store) {
    for (int i = 0; i < 120; ++i) {
      std::string name = "c-" + std::to_string(i);
      auto got = store.ReadStream(name, StreamVersion(0), ReadDirection::kForward, 100);
      ASSERT_TRUE(got.ok()) << got.status().ToString();
      ASSERT_EQ(got->size(), 30u) << name;
      for (size_t v = 0; v < got->size(); ++v) {
        ASSERT_EQ((*got)[v].stream, name);
        ASSERT_TRUE((*got)[v].payload.starts_with(name + "/" + std::to_string(v) + "{")) << name << " " << v;
      }
      auto wrong = store.Append(name, ExpectedVersion::NoStream(), {Event("T", "x")});
      ASSERT_EQ(wrong.status().code(), StatusCode::kWrongExpectedVersion) << name;
    }
    EXPECT_EQ(store.GetStreamInfo("c-never").status().code(), StatusCode::kNotFound);
  };
  {
    auto store = Store::Open(dir.path(), o);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    ASSERT_NO_FATAL_FAILURE(check(**store));
  }
  for (const std::string& f : FilesEndingWith(dir.path(), "index.ckpt")) std::filesystem::remove(f);
  auto store = Store::Open(dir.path(), o);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  ASSERT_NO_FATAL_FAILURE(check(**store));
}

TEST(TimeIndexTest, FirstPositionAndVersionAtOrAfterATime) {
  TempDir dir("time-index");
  Written w;
  auto store = Store::Open(dir.path(), IndexOptions());
  ASSERT_TRUE(store.ok());
  ASSERT_NO_FATAL_FAILURE(Fill(**store, &w, 8000, 25, 21));
  auto check = [&](Store& s, uint64_t seed) {
    std::mt19937_64 rng(seed);
    // Positions a failed batch skipped have time 0 here: fill them in from
    // their neighbours as the log sees it (none in this test, but be safe).
    const std::vector<int64_t>& t = w.times;
    auto first_at = [&](int64_t time) {
      for (size_t i = 0; i < t.size(); ++i)
        if (t[i] >= time) return uint64_t{i + 1};
      return uint64_t{t.size() + 1};
    };
    std::vector<int64_t> probes{0, t.front(), t.front() - 1, t.back(), t.back() + 1, INT64_MAX};
    for (int i = 0; i < 200; ++i) {
      int64_t at = t[rng() % t.size()];
      probes.push_back(at);
      probes.push_back(at - 1);
      probes.push_back(at + 1);
    }
    for (int64_t time : probes) {
      auto got = s.PositionAtTime(time);
      ASSERT_TRUE(got.ok()) << got.status().ToString();
      ASSERT_EQ(got->get(), first_at(time)) << "time " << time;
    }
    for (const auto& [name, versions] : w.streams) {
      for (int i = 0; i < 20; ++i) {
        int64_t time = t[versions[rng() % versions.size()].second - 1] + static_cast<int64_t>(rng() % 3) - 1;
        uint64_t want = versions.size();
        for (uint64_t v = 0; v < versions.size(); ++v)
          if (t[versions[v].second - 1] >= time) {
            want = v;
            break;
          }
        auto got = s.StreamVersionAtTime(name, time);
        ASSERT_TRUE(got.ok()) << got.status().ToString();
        ASSERT_EQ(*got, want) << name << " time " << time;
      }
    }
    EXPECT_EQ(s.StreamVersionAtTime("nobody", 0).status().code(), StatusCode::kNotFound);
  };
  ASSERT_NO_FATAL_FAILURE(check(**store, 22));
  (*store)->WaitForBackgroundWork();
  ASSERT_NO_FATAL_FAILURE(check(**store, 23));
  ASSERT_TRUE((*store)->Close().ok());
  auto reopened = Store::Open(dir.path(), IndexOptions());
  ASSERT_TRUE(reopened.ok());
  ASSERT_NO_FATAL_FAILURE(check(**reopened, 24));
}

TEST(SealedStoreTest, DamagedBlockIsReportedWithFileAndOffsetAndNeverReturned) {
  TempDir dir("sealed-damage");
  Written w;
  Options o = IndexOptions();
  o.partitions = 1;
  {
    auto store = Store::Open(dir.path(), o);
    ASSERT_TRUE(store.ok());
    ASSERT_NO_FATAL_FAILURE(Fill(**store, &w, 6000, 10, 31));
    (*store)->WaitForBackgroundWork();
    ASSERT_GE(Sealed(**store), 1u);
  }
  std::string segment = dir.path() + "/partition-000/segment-00000000.log";
  BlockCache cache(1 << 20);
  auto sealed = SealedSegment::Open(segment, format::SegmentHeader{0, 0, o.segment_size_bytes, 1}, &cache);
  ASSERT_TRUE(sealed.ok()) << sealed.status().ToString();
  auto blocks = (*sealed)->Blocks();
  ASSERT_TRUE(blocks.ok());
  ASSERT_GE((*blocks)->size(), 3u);
  const BlockEntry& victim = (**blocks)[1];
  uint64_t first = victim.first_position;
  sealed->reset();
  {
    std::fstream f(segment, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(victim.file_offset + victim.stored_length / 2));
    char c = static_cast<char>(f.get());
    f.seekp(static_cast<std::streamoff>(victim.file_offset + victim.stored_length / 2));
    f.put(static_cast<char>(c ^ 0x20));
  }
  // The store opens (the damage is behind its checkpoint) and reports the
  // damage on every read that needs the block.
  auto store = Store::Open(dir.path(), o);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  auto all = (*store)->ReadAll(GlobalPosition(first), 5);
  ASSERT_EQ(all.status().code(), StatusCode::kCorruption);
  std::string where = segment + " at offset " + std::to_string(victim.file_offset);
  EXPECT_NE(all.status().message().find(where), std::string::npos) << all.status().message();
  for (const auto& [name, versions] : w.streams) {
    for (uint64_t v = 0; v < versions.size(); ++v) {
      if (versions[v].second != first) continue;
      auto read = (*store)->ReadStream(name, StreamVersion(v), ReadDirection::kForward, 1);
      ASSERT_EQ(read.status().code(), StatusCode::kCorruption);
      EXPECT_NE(read.status().message().find(where), std::string::npos) << read.status().message();
    }
  }
  // Events in other blocks stay readable.
  auto later = (*store)->ReadAll(GlobalPosition((**blocks)[2].first_position), 5);
  EXPECT_TRUE(later.ok()) << later.status().ToString();
}

// Sealing replaces a raw segment while readers may still be reading it; the
// replaced file's blocks are freed (a step at a time) only once the last of
// them let go. Readers scanning the whole log while segments fill, seal and
// are freed must never meet a shortened file.
TEST(SealedStoreTest, ReadsWhileSegmentsAreSealedAndFreedAllSucceed) {
  TempDir dir("sealed-readers");
  Options o = IndexOptions();
  // A small tail cache: reads near the head mix cached bytes and the file's.
  o.tail_cache_bytes = 64 * 1024;
  auto store = Store::Open(dir.path(), o);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  std::atomic<bool> done{false};
  std::atomic<uint64_t> reads{0};
  std::vector<std::string> failures;
  std::mutex failures_mu;
  std::vector<std::thread> readers;
  for (int r = 0; r < 2; ++r) {
    readers.emplace_back([&, r] {
      std::mt19937_64 rng(100 + r);
      while (!done.load()) {
        uint64_t head = (*store)->DurableHead().get();
        if (head == 0) continue;
        uint64_t from = 1 + rng() % head;
        auto page = (*store)->ReadAll(GlobalPosition(from), 200);
        std::string failure;
        if (!page.ok())
          failure = page.status().ToString();
        else if (page->empty() || page->front().position.get() != from)
          failure = "a page from " + std::to_string(from) + " does not start there";
        for (size_t i = 0; failure.empty() && page.ok() && i < page->size(); ++i)
          if ((*page)[i].position.get() != from + i) failure = "positions skip after " + std::to_string(from + i);
        if (!failure.empty()) {
          std::lock_guard lock(failures_mu);
          failures.push_back(failure);
        }
        reads.fetch_add(1);
      }
    });
  }
  Written w;
  Fill(**store, &w, 15000, 40, 9);
  (*store)->WaitForBackgroundWork();
  done = true;
  for (auto& t : readers) t.join();
  EXPECT_TRUE(failures.empty()) << failures.size() << " reads failed, the first: " << failures.front();
  EXPECT_GT(reads.load(), 100u);
  EXPECT_GE(Sealed(**store), 4u);
  // Reads near the head came from the tail cache, older ones from the files.
  uint64_t hits = 0, misses = 0;
  for (const PartitionStats& p : (*store)->GetStats().partitions) {
    hits += p.tail_cache_hits;
    misses += p.tail_cache_misses;
  }
  EXPECT_GT(hits, 0u);
  EXPECT_GT(misses, 0u);
  ASSERT_NO_FATAL_FAILURE(CheckReads(**store, w, 4));
}

// A child appends and seals (small segments fill every few milliseconds)
// until SIGKILLed at a random moment; the parent reopens and checks that
// every acknowledged event is there and reads back, over several rounds.
TEST(SealedStoreTest, SealingInterruptedBySigkillLosesNothing) {
  TempDir dir("sealed-kill");
  std::mt19937_64 rng(std::random_device{}());
  std::string ack_path = dir.path() + ".acks";
  std::filesystem::remove(ack_path);
  Options o = IndexOptions();
  o.partitions = 1;
  o.seal_block_bytes = 4096;  // more blocks: more points to be killed at
  uint64_t acknowledged = 0;
  for (int round = 0; round < 6; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      auto store = Store::Open(dir.path(), o);
      if (!store.ok()) _exit(3);
      int fd = ::open(ack_path.c_str(), O_WRONLY | O_APPEND | O_CREAT, 0644);
      for (uint64_t i = 0;; ++i) {
        std::string payload = JsonPayload(i, 900);
        auto r = (*store)->Append("k-" + std::to_string(i % 7), ExpectedVersion::Any(), {Event("T", payload)});
        if (!r.ok()) _exit(4);
        // One line per acknowledged event: stream, version, position.
        std::string line = "k-" + std::to_string(i % 7) + " " + std::to_string(r->first_version.get()) + " " +
                           std::to_string(r->first_position.get()) + "\n";
        if (::write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) _exit(5);
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(300 + rng() % 700));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the child exited with " << WEXITSTATUS(status);
    auto store = Store::Open(dir.path(), o);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    std::ifstream acks(ack_path);
    std::string stream;
    uint64_t version, position, lines = 0;
    while (acks >> stream >> version >> position) {
      ++lines;
      auto got = (*store)->ReadStream(stream, StreamVersion(version), ReadDirection::kForward, 1);
      ASSERT_TRUE(got.ok()) << stream << " " << version << ": " << got.status().ToString();
      ASSERT_EQ(got->size(), 1u) << stream << " " << version;
      ASSERT_EQ((*got)[0].position.get(), position);
      ASSERT_EQ((*got)[0].payload.size(), 900u);
    }
    EXPECT_GT(lines, acknowledged) << "nothing acknowledged this round";
    acknowledged = lines;
    // The whole log reads back, every block verified.
    uint64_t seen = 0;
    for (uint64_t from = 1;;) {
      auto page = (*store)->ReadAll(GlobalPosition(from), 5000);
      ASSERT_TRUE(page.ok()) << page.status().ToString();
      if (page->empty()) break;
      seen += page->size();
      from = page->back().position.get() + 1;
    }
    EXPECT_GE(seen, acknowledged);
    // Every full segment gets indexed and sealed again after the crash.
    (*store)->WaitForBackgroundWork();
    for (const PartitionStats& p : (*store)->GetStats().partitions)
      EXPECT_EQ(p.sealed_segments + 1, p.segments) << "full segments left unsealed";
    for (const auto& e : std::filesystem::directory_iterator(dir.path() + "/partition-000"))
      EXPECT_FALSE(e.path().string().ends_with(".tmp")) << e.path() << " left behind";
  }
  std::filesystem::remove(ack_path);
}

}  // namespace
}  // namespace annal
