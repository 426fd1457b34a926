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
      slots_[i] = slot;
      ++size_;
      return &slots_[i];
    }
  }
}

}  // namespace annal
