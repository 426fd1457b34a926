#include "segment_index.h"

#include <fcntl.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "annal/assert.h"
#include "annal/limits.h"
#include "format.h"

namespace annal {

using format::Get32;
using format::Get64;
using format::Put32;
using format::Put64;

namespace format {
std::string SegmentIndexFileName(uint32_t segment_id) {
  char name[32];
  std::snprintf(name, sizeof name, "segment-%08u.idx", segment_id);
  return name;
}

bool IsSegmentIndexTempFile(std::string_view name) {
  constexpr std::string_view kSuffix = ".idx.tmp";
  if (!name.ends_with(kSuffix)) return false;
  uint32_t id;
  return ParseSegmentFileName(std::string(name.substr(0, name.size() - kSuffix.size())) + ".log", &id);
}
}  // namespace format

// ---------------------------------------------------------------- building

size_t SegmentIndexBuilder::SlotFor(uint64_t hash) const {
  const size_t mask = slots_.size() - 1;
  size_t i = hash & mask;
  while (slots_[i].run != kNoRun && slots_[i].hash != hash) i = (i + 1) & mask;
  return i;
}

uint32_t SegmentIndexBuilder::Newest(uint64_t hash) const {
  return slots_.empty() ? kNoRun : slots_[SlotFor(hash)].run;
}

void SegmentIndexBuilder::Link(uint32_t run) {
  if ((hashes_ + 1) * 2 > slots_.size()) {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(std::max<size_t>(16, old.size() * 2), Slot{});
    for (const Slot& s : old)
      if (s.run != kNoRun) slots_[SlotFor(s.hash)] = s;  // hashes are distinct: an empty slot
  }
  Slot& slot = slots_[SlotFor(runs_[run].hash)];
  if (slot.run == kNoRun) ++hashes_;
  older_.push_back(slot.run);
  slot = Slot{runs_[run].hash, run};
}

void SegmentIndexBuilder::Add(uint64_t hash, uint64_t version, uint64_t prev_location, uint32_t offset) {
  ++events_;
  if (prev_location != format::kNoLocation && format::LocationSegment(prev_location) == segment_id_) {
    uint32_t prev_offset = format::LocationOffset(prev_location);
    for (uint32_t r = Newest(hash); r != kNoRun; r = older_[r]) {
      Run& run = runs_[r];
      if (run.offsets.back() == prev_offset) {
        ANNAL_ASSERT(version == run.last_version() + 1);
        run.offsets.push_back(offset);
        return;
      }
    }
  }
  ANNAL_ASSERT(runs_.size() < kNoRun);
  runs_.push_back(Run{hash, version, prev_location, {offset}});
  Link(static_cast<uint32_t>(runs_.size() - 1));
}

void SegmentIndexBuilder::Find(uint64_t hash, std::vector<Run>* out) const {
  // Oldest first: the order the runs were begun in.
  const size_t from = out->size();
  for (uint32_t r = Newest(hash); r != kNoRun; r = older_[r]) out->push_back(runs_[r]);
  std::reverse(out->begin() + static_cast<ptrdiff_t>(from), out->end());
}

std::optional<RunCut> CutRunAt(const Run& run, uint32_t offset, uint64_t min_version) {
  auto at = std::lower_bound(run.offsets.begin(), run.offsets.end(), offset);
  if (at == run.offsets.end() || *at != offset) return std::nullopt;
  size_t to = static_cast<size_t>(at - run.offsets.begin());
  size_t from = min_version > run.first_version ? static_cast<size_t>(min_version - run.first_version) : 0;
  return RunCut{std::min(from, to), to};
}

bool SegmentIndexBuilder::FindAt(uint64_t hash, uint32_t offset, uint64_t min_version, Run* out) const {
  for (uint32_t r = Newest(hash); r != kNoRun; r = older_[r]) {
    const Run& run = runs_[r];
    std::optional<RunCut> cut = CutRunAt(run, offset, min_version);
    if (!cut) continue;
    // Copies only the cut: a hot stream's run holds most of a segment.
    out->hash = hash;
    out->first_version = run.first_version + cut->from;
    out->prev_location = run.prev_location;
    out->offsets.assign(run.offsets.begin() + static_cast<ptrdiff_t>(cut->from),
                        run.offsets.begin() + static_cast<ptrdiff_t>(cut->to) + 1);
    return true;
  }
  return false;
}

size_t SegmentIndexBuilder::memory_bytes() const {
  // Runs and their offsets, the table and its chains.
  return runs_.capacity() * sizeof(Run) + events_ * sizeof(uint32_t) + slots_.capacity() * sizeof(Slot) +
         older_.capacity() * sizeof(uint32_t);
}

std::string SegmentIndexBuilder::Encode(uint32_t partition, const std::vector<TimeSample>& samples_,
                                        uint64_t limit, const LockedStep& locked) const {
  auto step = [&](const std::function<void()>& fn) { locked ? locked(fn) : fn(); };
  // The runs as they stood when the segment ended at `limit`. Runs begin in
  // offset order (a decoded builder's all lie before anything added to it
  // later), so those begun before `limit` are a prefix of runs_, and each
  // keeps the prefix of its offsets below it.
  struct Cut {
    uint64_t hash;
    uint32_t front;  // first offset: the order within a hash
    uint32_t run;    // in runs_
    uint32_t count;  // offsets below limit
    uint32_t first;  // where its offsets go, counted in offsets
  };
  std::vector<Cut> cuts;
  uint64_t events = 0;
  for (bool more = true; more;) step([&] {
    // Growing `cuts` later would copy all of it inside one step.
    if (cuts.empty()) cuts.reserve(runs_.size());
    size_t end = std::min(runs_.size(), cuts.size() + kEncodeStepRuns);
    for (size_t i = cuts.size(); i < end; ++i) {
      const Run& run = runs_[i];
      if (run.offsets.front() >= limit) {
        more = false;
        return;
      }
      auto below = std::lower_bound(run.offsets.begin(), run.offsets.end(), limit) - run.offsets.begin();
      cuts.push_back(Cut{run.hash, run.offsets.front(), static_cast<uint32_t>(i), static_cast<uint32_t>(below), 0});
      events += static_cast<uint64_t>(below);
    }
    more = end < runs_.size();
  });
  std::sort(cuts.begin(), cuts.end(),
            [](const Cut& x, const Cut& y) { return x.hash != y.hash ? x.hash < y.hash : x.front < y.front; });
  uint32_t next_offset = 0;
  for (Cut& c : cuts) {
    c.first = next_offset;
    next_offset += c.count;
  }
  uint64_t pages = (cuts.size() + format::kRunsPerPage - 1) / format::kRunsPerPage;
  size_t meta_bytes = samples_.size() * format::kSampleBytes + pages * format::kFenceBytes;
  size_t runs_at = format::kSegmentIndexHeaderBytes + meta_bytes;
  size_t offsets_at = runs_at + cuts.size() * format::kRunBytes;
  std::string out(offsets_at + events * 4, '\0');
  auto* p = reinterpret_cast<uint8_t*>(out.data());

  uint8_t* at = p + format::kSegmentIndexHeaderBytes;
  for (const TimeSample& s : samples_) {
    Put64(at, s.position);
    Put64(at + 8, static_cast<uint64_t>(s.recorded_at_ns));
    Put32(at + 16, s.offset);
    at += format::kSampleBytes;
  }
  uint8_t* fences = at;
  for (size_t done = 0; done < cuts.size();) step([&] {
    for (size_t end = std::min(cuts.size(), done + kEncodeStepRuns); done < end; ++done) {
      const Cut& c = cuts[done];
      const Run& run = runs_[c.run];
      uint8_t* offs = p + offsets_at + uint64_t{c.first} * 4;
      for (size_t k = 0; k < c.count; ++k) Put32(offs + 4 * k, run.offsets[k]);
      uint8_t* run_at = p + runs_at + done * format::kRunBytes;
      Put64(run_at, run.hash);
      Put64(run_at + 8, run.first_version);
      Put64(run_at + 16, run.prev_location);
      Put32(run_at + 24, c.count);
      Put32(run_at + 28, c.first);
      Put64(run_at + 32, format::Checksum(offs, c.count * 4ull));
    }
  });
  for (uint64_t page = 0; page < pages; ++page) {
    const uint8_t* first = p + runs_at + page * format::kRunsPerPage * format::kRunBytes;
    uint64_t n = std::min<uint64_t>(format::kRunsPerPage, cuts.size() - page * format::kRunsPerPage);
    Put64(fences + page * format::kFenceBytes, Get64(first));
    Put64(fences + page * format::kFenceBytes + 8, format::Checksum(first, n * format::kRunBytes));
  }
  std::memcpy(p, format::kSegmentIndexMagic, 8);
  Put32(p + 8, format::kSegmentIndexVersion);
  Put32(p + 12, partition);
  Put32(p + 16, segment_id_);
  Put32(p + 20, static_cast<uint32_t>(samples_.size()));
  Put32(p + 24, static_cast<uint32_t>(cuts.size()));
  Put64(p + 28, events);
  Put32(p + 36, static_cast<uint32_t>(pages));
  Put64(p + 44, format::Checksum(p + format::kSegmentIndexHeaderBytes, meta_bytes));
  Put64(p + 56, format::Checksum(p, 56));
  return out;
}

Result<std::unique_ptr<SegmentIndexBuilder>> SegmentIndexBuilder::Decode(std::string_view bytes,
                                                                        const std::string& file) {
  auto bad = [&](const std::string& why) { return Status::Corruption(file + ": segment index: " + why); };
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  if (bytes.size() < format::kSegmentIndexHeaderBytes || std::memcmp(p, format::kSegmentIndexMagic, 8) != 0 ||
      Get64(p + 56) != format::Checksum(p, 56) || Get32(p + 8) != format::kSegmentIndexVersion)
    return bad("bad header");
  uint64_t samples = Get32(p + 20), runs = Get32(p + 24), offsets = Get64(p + 28), fences = Get32(p + 36);
  uint64_t runs_at = format::kSegmentIndexHeaderBytes + samples * format::kSampleBytes + fences * format::kFenceBytes;
  uint64_t offsets_at = runs_at + runs * format::kRunBytes;
  if (offsets > bytes.size() / 4 || samples > bytes.size() / format::kSampleBytes ||
      fences > bytes.size() / format::kFenceBytes || runs > bytes.size() / format::kRunBytes ||
      offsets_at + offsets * 4 != bytes.size())
    return bad("sizes do not add up");
  auto b = std::make_unique<SegmentIndexBuilder>(Get32(p + 16));
  b->runs_.reserve(runs);
  b->older_.reserve(runs);
  for (uint64_t i = 0; i < runs; ++i) {
    const uint8_t* r = p + runs_at + i * format::kRunBytes;
    uint32_t count = Get32(r + 24), first = Get32(r + 28);
    // Runs lay their offsets out one after another (Encode): a run that
    // names any others' would let a small file claim unbounded memory.
    if (count == 0 || first != b->events_ || uint64_t{first} + count > offsets)
      return bad("run outside its place in the offsets");
    Run run{Get64(r), Get64(r + 8), Get64(r + 16), std::vector<uint32_t>(count)};
    std::memcpy(run.offsets.data(), p + offsets_at + uint64_t{first} * 4, count * 4ull);
    if (format::Checksum(run.offsets.data(), count * 4ull) != Get64(r + 32)) return bad("run offsets fail their checksum");
    b->events_ += count;
    b->runs_.push_back(std::move(run));
    b->Link(static_cast<uint32_t>(b->runs_.size() - 1));
  }
  return b;
}

// ---------------------------------------------------------------- reading

static Status Bad(const std::string& path, uint64_t offset, const std::string& why) {
  return Status::Corruption(path + " at offset " + std::to_string(offset) + ": " + why);
}

Result<std::shared_ptr<SegmentIndex>> SegmentIndex::Open(const std::string& dir, uint32_t partition,
                                                         uint32_t segment_id, BlockCache* cache) {
  std::shared_ptr<SegmentIndex> ix(new SegmentIndex());
  ix->path_ = fs::Join(dir, format::SegmentIndexFileName(segment_id));
  if (!fs::Exists(ix->path_)) return Status::NotFound(ix->path_ + ": no segment index");
  ANNAL_ASSIGN_OR_RETURN(ix->fd_, fs::OpenShared(ix->path_, O_RDONLY));
  ANNAL_ASSIGN_OR_RETURN(uint64_t size, fs::FileSize(ix->fd_.get(), ix->path_));
  if (size < format::kSegmentIndexHeaderBytes) return Bad(ix->path_, 0, "shorter than its header");
  uint8_t h[format::kSegmentIndexHeaderBytes];
  ANNAL_RETURN_IF_ERROR(fs::PreadExact(ix->fd_.get(), h, sizeof h, 0, ix->path_));
  if (std::memcmp(h, format::kSegmentIndexMagic, 8) != 0) return Bad(ix->path_, 0, "not a segment index");
  if (Get64(h + 56) != format::Checksum(h, 56)) return Bad(ix->path_, 0, "header checksum mismatch");
  if (Get32(h + 8) != format::kSegmentIndexVersion)
    return Bad(ix->path_, 8, "unknown index version " + std::to_string(Get32(h + 8)));
  if (Get32(h + 12) != partition || Get32(h + 16) != segment_id)
    return Bad(ix->path_, 12, "header names another partition or segment");
  ix->cache_ = cache;
  ix->cache_id_ = BlockCache::NewFileId();
  ix->segment_id_ = segment_id;
  ix->sample_count_ = Get32(h + 20);
  ix->run_count_ = Get32(h + 24);
  ix->offset_count_ = Get64(h + 28);
  ix->fence_count_ = Get32(h + 36);
  ix->meta_checksum_ = Get64(h + 44);
  // Counts come from the file: bound each by the file's size before any
  // arithmetic on them can wrap.
  if (ix->offset_count_ > size / 4 || ix->sample_count_ > size / format::kSampleBytes ||
      ix->fence_count_ > size / format::kFenceBytes || ix->run_count_ > size / format::kRunBytes)
    return Bad(ix->path_, 20, "counts exceed the file's size");
  ix->runs_at_ = format::kSegmentIndexHeaderBytes + ix->sample_count_ * format::kSampleBytes +
                 ix->fence_count_ * format::kFenceBytes;
  ix->offsets_at_ = ix->runs_at_ + ix->run_count_ * format::kRunBytes;
  if (ix->fence_count_ != (ix->run_count_ + format::kRunsPerPage - 1) / format::kRunsPerPage ||
      ix->offsets_at_ + ix->offset_count_ * 4 != size)
    return Bad(ix->path_, 0, "section sizes do not add up to the file's size");
  return ix;
}

Result<BlockCache::Bytes> SegmentIndex::Meta() const {
  return cache_->GetOrLoad(cache_id_, ~0ull, [&]() -> Result<BlockCache::Bytes> {
    auto meta = std::make_shared<std::vector<uint8_t>>(runs_at_ - format::kSegmentIndexHeaderBytes);
    ANNAL_RETURN_IF_ERROR(
        fs::PreadExact(fd_.get(), meta->data(), meta->size(), format::kSegmentIndexHeaderBytes, path_));
    if (format::Checksum(meta->data(), meta->size()) != meta_checksum_)
      return Bad(path_, format::kSegmentIndexHeaderBytes, "samples and fences fail their checksum");
    return BlockCache::Bytes(std::move(meta));
  });
}

Result<BlockCache::Bytes> SegmentIndex::Page(uint64_t page) const {
  ANNAL_ASSIGN_OR_RETURN(BlockCache::Bytes meta, Meta());
  const uint8_t* fence = meta->data() + sample_count_ * format::kSampleBytes + page * format::kFenceBytes;
  uint64_t checksum = Get64(fence + 8);
  return cache_->GetOrLoad(cache_id_, page, [&]() -> Result<BlockCache::Bytes> {
    uint64_t n = std::min<uint64_t>(format::kRunsPerPage, run_count_ - page * format::kRunsPerPage);
    uint64_t at = runs_at_ + page * format::kRunsPerPage * format::kRunBytes;
    auto bytes = std::make_shared<std::vector<uint8_t>>(n * format::kRunBytes);
    ANNAL_RETURN_IF_ERROR(fs::PreadExact(fd_.get(), bytes->data(), bytes->size(), at, path_));
    if (format::Checksum(bytes->data(), bytes->size()) != checksum)
      return Bad(path_, at, "page " + std::to_string(page) + " of runs fails its checksum");
    return BlockCache::Bytes(std::move(bytes));
  });
}

Status SegmentIndex::ReadOffsets(const uint8_t* r, uint64_t run_file_offset, Run* run) const {
  run->hash = Get64(r);
  run->first_version = Get64(r + 8);
  run->prev_location = Get64(r + 16);
  uint32_t count = Get32(r + 24), first = Get32(r + 28);
  if (count == 0 || uint64_t{first} + count > offset_count_)
    return Bad(path_, run_file_offset, "run names offsets outside the file");
  run->offsets.resize(count);
  uint64_t at = offsets_at_ + uint64_t{first} * 4;
  ANNAL_RETURN_IF_ERROR(fs::PreadExact(fd_.get(), run->offsets.data(), count * 4ull, at, path_));
  if (format::Checksum(run->offsets.data(), count * 4ull) != Get64(r + 32))
    return Bad(path_, at, "offsets of a run fail their checksum");
  if (!std::is_sorted(run->offsets.begin(), run->offsets.end()))
    return Bad(path_, at, "offsets of a run are not ascending");
  return Status::Ok();
}

Status SegmentIndex::Find(uint64_t hash, std::vector<Run>* out) const {
  if (run_count_ == 0) return Status::Ok();
  ANNAL_ASSIGN_OR_RETURN(BlockCache::Bytes meta, Meta());
  const uint8_t* fences = meta->data() + sample_count_ * format::kSampleBytes;
  // The last page whose first hash is below `hash`: runs with `hash` may
  // start at its end.
  uint64_t lo = 0, hi = fence_count_;
  while (lo < hi) {
    uint64_t mid = (lo + hi) / 2;
    if (Get64(fences + mid * format::kFenceBytes) < hash) lo = mid + 1; else hi = mid;
  }
  uint64_t found = 0;
  for (uint64_t page = lo == 0 ? 0 : lo - 1; page < fence_count_; ++page) {
    if (Get64(fences + page * format::kFenceBytes) > hash) break;
    ANNAL_ASSIGN_OR_RETURN(BlockCache::Bytes runs, Page(page));
    uint64_t n = runs->size() / format::kRunBytes;
    for (uint64_t i = 0; i < n; ++i) {
      const uint8_t* r = runs->data() + i * format::kRunBytes;
      uint64_t h = Get64(r);
      if (h < hash) continue;
      if (h > hash) return Status::Ok();
      Run run;
      uint64_t file_offset = runs_at_ + (page * format::kRunsPerPage + i) * format::kRunBytes;
      ANNAL_RETURN_IF_ERROR(ReadOffsets(r, file_offset, &run));
      // Runs own disjoint offsets: together they cannot hold more.
      found += run.offsets.size();
      if (found > offset_count_) return Bad(path_, file_offset, "runs claim more offsets than the file holds");
      out->push_back(std::move(run));
    }
  }
  return Status::Ok();
}

Status SegmentIndex::ForEachRun(const std::function<Status(const Run&)>& fn) const {
  uint64_t next_first = 0;  // runs lay their offsets out one after another
  for (uint64_t page = 0; page < fence_count_; ++page) {
    ANNAL_ASSIGN_OR_RETURN(BlockCache::Bytes runs, Page(page));
    for (uint64_t i = 0; i < runs->size() / format::kRunBytes; ++i) {
      Run run;
      const uint8_t* r = runs->data() + i * format::kRunBytes;
      uint64_t file_offset = runs_at_ + (page * format::kRunsPerPage + i) * format::kRunBytes;
      if (Get32(r + 28) != next_first) return Bad(path_, file_offset, "run outside its place in the offsets");
      ANNAL_RETURN_IF_ERROR(ReadOffsets(r, file_offset, &run));
      next_first += run.offsets.size();
      ANNAL_RETURN_IF_ERROR(fn(run));
    }
  }
  return Status::Ok();
}

Result<std::vector<TimeSample>> SegmentIndex::Samples() const {
  ANNAL_ASSIGN_OR_RETURN(BlockCache::Bytes meta, Meta());
  std::vector<TimeSample> out(sample_count_);
  for (uint64_t i = 0; i < sample_count_; ++i) {
    const uint8_t* s = meta->data() + i * format::kSampleBytes;
    out[i] = TimeSample{Get64(s), static_cast<int64_t>(Get64(s + 8)), Get32(s + 16)};
  }
  return out;
}

}  // namespace annal
