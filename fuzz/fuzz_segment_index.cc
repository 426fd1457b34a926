// Fuzzes the segment index readers with arbitrary bytes standing for a
// segment's index file (segment_index.h): SegmentIndex, which reads the file
// through the block cache, and SegmentIndexBuilder::Decode, which parses the
// same encoding from memory (index checkpoints embed it).
//
// Each input is written to segment-00000000.idx in a scratch directory of
// this process and opened as partition 0's segment 0; when it opens, its
// samples, every run, and the runs of a few hashes are read. Errors are
// fine; a crash, a hang or an allocation the file's size does not bound is
// not.
//
// Each input is tried twice: as given, and with every checksum it carries
// (runs' offsets, pages, samples and fences, header) recomputed where the
// header's counts place it inside the input, so the fuzzer gets past
// checksums it cannot forge.
//
// When Decode accepts the bytes, the builder is encoded again and decoded
// once more; every hash's runs must come back the same (a pair assertion).
#include <stdlib.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>
#include <vector>

#include "annal/assert.h"
#include "fuzz_files.h"
#include "block_cache.h"
#include "format.h"
#include "segment_index.h"

namespace {

namespace format = annal::format;
using annal::Run;
using annal::SegmentIndexBuilder;
using format::Get32;
using format::Get64;
using format::Put64;

constexpr size_t kCacheBytes = 1024 * 1024;
// ForEachRun, and the hashes looked up after Decode, stop after this many
// runs: inputs are small, so this bounds the work per input without hiding
// anything.
constexpr size_t kMaxRuns = 4096;

// A directory of this process's own, made once and removed at exit.
const std::string& Dir() {
  static annal::fuzz::ScratchDir dir("annal-fuzz-index");
  return dir.path();
}

using annal::fuzz::WriteFile;

// A run, as a tuple, for comparing and sorting.
auto Fields(const Run& r) { return std::tie(r.hash, r.first_version, r.prev_location, r.offsets); }

void CheckRun(const Run& r) {
  ANNAL_ASSERT(!r.offsets.empty());
  ANNAL_ASSERT(std::is_sorted(r.offsets.begin(), r.offsets.end()));
}

// SegmentIndex::Open on the bytes as a file, then every read it offers.
void CheckIndexFile(std::string_view bytes) {
  WriteFile(Dir() + "/" + format::SegmentIndexFileName(0), bytes);
  annal::BlockCache cache(kCacheBytes);
  auto ix = annal::SegmentIndex::Open(Dir(), 0, 0, &cache);
  if (!ix.ok()) return;

  auto samples = (*ix)->Samples();
  if (samples.ok()) ANNAL_ASSERT(samples->size() * format::kSampleBytes <= bytes.size());

  std::vector<uint64_t> hashes = {0, ~0ull};
  size_t runs = 0;
  (void)(*ix)->ForEachRun([&](const Run& r) -> annal::Status {
    CheckRun(r);
    if (runs == 0) hashes.push_back(r.hash);
    ANNAL_ASSERT(++runs <= (*ix)->run_count());
    return runs < kMaxRuns ? annal::Status::Ok() : annal::Status::Unavailable("enough runs");
  });

  for (uint64_t hash : hashes) {
    std::vector<Run> found;
    if (!(*ix)->Find(hash, &found).ok()) continue;
    ANNAL_ASSERT(found.size() <= (*ix)->run_count());
    for (const Run& r : found) {
      ANNAL_ASSERT(r.hash == hash);
      CheckRun(r);
    }
  }
}

// The runs `b` holds for `hash`, in a canonical order.
std::vector<Run> SortedRuns(const SegmentIndexBuilder& b, uint64_t hash) {
  std::vector<Run> runs;
  b.Find(hash, &runs);
  std::sort(runs.begin(), runs.end(),
            [](const Run& x, const Run& y) { return Fields(x) < Fields(y); });
  return runs;
}

// SegmentIndexBuilder::Decode on the bytes, and the Encode round trip.
void CheckDecode(std::string_view bytes) {
  auto b = SegmentIndexBuilder::Decode(bytes, "fuzz.idx");
  if (!b.ok()) return;
  // Decode checked that the sections add up to the size, so this layout
  // lies inside `bytes`.
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  const uint64_t run_count = Get32(p + 24);
  const uint64_t runs_at = format::kSegmentIndexHeaderBytes +
                           uint64_t{Get32(p + 20)} * format::kSampleBytes +
                           uint64_t{Get32(p + 36)} * format::kFenceBytes;
  std::vector<uint64_t> hashes = {0, ~0ull};
  for (uint64_t i = 0; i < run_count && i < kMaxRuns; ++i)
    hashes.push_back(Get64(p + runs_at + i * format::kRunBytes));
  std::sort(hashes.begin(), hashes.end());
  hashes.erase(std::unique(hashes.begin(), hashes.end()), hashes.end());

  const std::string again = (*b)->Encode(Get32(p + 12), {});
  auto b2 = SegmentIndexBuilder::Decode(again, "fuzz.idx (encoded again)");
  ANNAL_ASSERT(b2.ok());
  for (uint64_t hash : hashes) {
    std::vector<Run> want = SortedRuns(**b, hash), got = SortedRuns(**b2, hash);
    ANNAL_ASSERT(want.size() == got.size());
    for (size_t i = 0; i < want.size(); ++i) ANNAL_ASSERT(Fields(want[i]) == Fields(got[i]));
  }
}

void Check(std::string_view bytes) {
  CheckIndexFile(bytes);
  CheckDecode(bytes);
}

// Recomputes, innermost first, the checksums of `s` that its header's
// counts place inside it: each run's offsets, each page of runs (in its
// fence), samples and fences (in the header), and the header's own.
void FixChecksums(std::string* s) {
  auto* p = reinterpret_cast<uint8_t*>(s->data());
  const uint64_t size = s->size();
  const uint64_t samples = Get32(p + 20), runs = Get32(p + 24), fences = Get32(p + 36);
  // Products of 32-bit counts and small sizes: no overflow.
  const uint64_t fences_at = format::kSegmentIndexHeaderBytes + samples * format::kSampleBytes;
  const uint64_t runs_at = fences_at + fences * format::kFenceBytes;
  const uint64_t offsets_at = runs_at + runs * format::kRunBytes;
  if (offsets_at <= size) {
    for (uint64_t i = 0; i < runs; ++i) {
      uint8_t* r = p + runs_at + i * format::kRunBytes;
      const uint64_t count = Get32(r + 24), first = Get32(r + 28);
      if (offsets_at + (first + count) * 4 <= size)
        Put64(r + 32, format::Checksum(p + offsets_at + first * 4, count * 4));
    }
    for (uint64_t page = 0; page < fences && page * format::kRunsPerPage < runs; ++page) {
      const uint64_t n =
          std::min<uint64_t>(format::kRunsPerPage, runs - page * format::kRunsPerPage);
      const uint8_t* first = p + runs_at + page * format::kRunsPerPage * format::kRunBytes;
      Put64(p + fences_at + page * format::kFenceBytes + 8,
            format::Checksum(first, n * format::kRunBytes));
    }
    Put64(p + 44, format::Checksum(p + format::kSegmentIndexHeaderBytes,
                                   runs_at - format::kSegmentIndexHeaderBytes));
  }
  Put64(p + 56, format::Checksum(p, 56));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  Check(input);

  if (size < format::kSegmentIndexHeaderBytes) return 0;
  std::string fixed(input);
  FixChecksums(&fixed);
  if (fixed != input) Check(fixed);
  return 0;
}
