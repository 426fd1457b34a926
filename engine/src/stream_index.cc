#include "stream_index.h"

#include <cmath>

#include "annal/assert.h"

namespace annal {

// The hash's high bits pick the home slot (multiply-shift), so capacity need
// not be a power of two and growth can be by half.
size_t StreamTable::Home(uint64_t hash) const {
  return static_cast<size_t>((static_cast<unsigned __int128>(hash) * slots_.size()) >> 64);
}

void StreamTable::Reserve(size_t streams) {
  size_t want = static_cast<size_t>(std::ceil(static_cast<double>(streams) / kMaxLoad)) + 1;
  if (want > slots_.size()) Grow(want);
}

void StreamTable::Grow(size_t capacity) {
  // Every slot moves: what a capture read so far no longer lines up.
  if (capture_) {
    capture_->spoiled = true;
    capture_->before.clear();
  }
  std::vector<StreamSlot> old;
  old.swap(slots_);
  slots_.assign(capacity, StreamSlot{});
  slots_.shrink_to_fit();
  size_ = 0;
  for (const StreamSlot& s : old)
    if (!s.empty()) Insert(s);
}

StreamSlot* StreamTable::Find(uint64_t hash, const std::function<bool(StreamSlot&)>& fn) {
  if (slots_.empty()) return nullptr;
  for (size_t i = Home(hash);; i = i + 1 == slots_.size() ? 0 : i + 1) {
    StreamSlot& s = slots_[i];
    if (s.empty()) return nullptr;
    if (s.hash == hash && fn(s)) return &s;
  }
}

const StreamSlot* StreamTable::Find(uint64_t hash,
                                    const std::function<bool(const StreamSlot&)>& fn) const {
  return const_cast<StreamTable*>(this)->Find(hash, [&](StreamSlot& s) { return fn(s); });
}

StreamSlot* StreamTable::Insert(const StreamSlot& slot) {
  ANNAL_ASSERT(!slot.empty());
  if (static_cast<double>(size_ + 1) > static_cast<double>(slots_.size()) * kMaxLoad)
    Grow(std::max<size_t>(64, slots_.size() + slots_.size() / 2));
  for (size_t i = Home(slot.hash);; i = i + 1 == slots_.size() ? 0 : i + 1) {
    if (slots_[i].empty()) {
      Preserve(i);
      slots_[i] = slot;
      ++size_;
      return &slots_[i];
    }
  }
}

void StreamTable::AdvanceHead(StreamSlot* slot, uint64_t version, uint64_t location, uint32_t id_check) {
  Preserve(static_cast<size_t>(slot - slots_.data()));
  slot->head_version = version;
  slot->head_location = location;
  slot->head_id_check = id_check;
}

void StreamTable::Preserve(size_t i) {
  if (capture_ && !capture_->spoiled && i >= capture_->next) capture_->before.try_emplace(i, slots_[i]);
}

void StreamTable::BeginCapture() {
  ANNAL_ASSERT_MSG(!capture_, "one capture at a time");
  capture_ = std::make_unique<Capture>();
}

StreamTable::CaptureStep StreamTable::CaptureSome(size_t slots, const std::function<void(const StreamSlot&)>& fn) {
  ANNAL_ASSERT(capture_);
  if (capture_->spoiled) {
    capture_.reset();
    return CaptureStep::kSpoiled;
  }
  Capture& c = *capture_;
  size_t end = c.next + std::min(slots, slots_.size() - c.next);
  for (; c.next < end; ++c.next) {
    const StreamSlot* s = &slots_[c.next];
    auto kept = c.before.empty() ? c.before.end() : c.before.find(c.next);
    if (kept != c.before.end()) s = &kept->second;
    if (!s->empty()) fn(*s);
    if (kept != c.before.end()) c.before.erase(kept);
  }
  if (c.next < slots_.size()) return CaptureStep::kMore;
  capture_.reset();
  return CaptureStep::kDone;
}

}  // namespace annal
