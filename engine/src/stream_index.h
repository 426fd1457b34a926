// The in-memory stream table of one partition: per stream, what appends
// need to check expected versions and where reads start.
//
// A stream is known by the 64-bit hash of its name (format::StreamHash);
// names are not kept in memory. A slot holds the hash, a second, 32-bit
// check of the name (format::StreamNameCheck), the head version, the
// location of the head event and of the stream's first event, and a 32-bit
// check of the head event's id: 40 bytes, in an open-addressing table kept
// at most kMaxLoad full, so about 47 bytes per stream after an open
// (docs/architecture.md). Two streams whose names hash alike get two slots
// with the same hash: readers tell them apart by the stream name stored in
// the record a slot points to, the writer by the name check (see
// Partition::DurableHead for why, and what that leaves).
//
// Everything between the first event and the head is found through the
// segment indexes (segment_index.h), so the table does not grow with the
// number of events.
//
// Thread-safety: none of its own; the owning Partition guards it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace annal {

struct StreamSlot {
  uint64_t hash = 0;
  uint64_t head_version = 0;
  uint64_t head_location = 0;  // 0 marks an empty slot (offset 0 is a segment header)
  uint64_t first_location = 0;
  uint32_t name_check = 0;     // format::StreamNameCheck of the name
  uint32_t head_id_check = 0;  // format::EventIdCheck of the head event's id

  bool empty() const { return head_location == 0; }
};
static_assert(sizeof(StreamSlot) == 40);

class StreamTable {
 public:
  static constexpr double kMaxLoad = 0.85;

  StreamTable() = default;
  // A copy holds the streams, never a capture in progress.
  StreamTable(const StreamTable& other) : slots_(other.slots_), size_(other.size_) {}
  StreamTable& operator=(const StreamTable& other) {
    if (this != &other) *this = StreamTable(other);
    return *this;
  }
  StreamTable(StreamTable&&) = default;
  StreamTable& operator=(StreamTable&&) = default;

  // Makes room for `streams` slots without growing.
  void Reserve(size_t streams);

  // Calls `fn` on each slot with `hash`, in probe order, until it returns
  // true; returns that slot, or nullptr. Slot pointers stay valid until the
  // next Insert.
  StreamSlot* Find(uint64_t hash, const std::function<bool(StreamSlot&)>& fn);
  const StreamSlot* Find(uint64_t hash, const std::function<bool(const StreamSlot&)>& fn) const;
  // Adds a slot for a new stream (REQUIRES: slot.head_location != 0).
  StreamSlot* Insert(const StreamSlot& slot);

  // Moves a stream's head to a later event. Use this rather than writing
  // through the slot Find returned, so that a capture keeps the old value.
  void AdvanceHead(StreamSlot* slot, uint64_t version, uint64_t location, uint32_t id_check);

  // A copy of the table as it stands at BeginCapture, read a few slots at a
  // time, so that whoever changes the table meanwhile never waits for the
  // whole of it (the partition's checkpoints). Until the capture ends, the
  // table keeps the old value of each slot it changes that the capture has
  // not read yet. Growing the table spoils a capture.
  //
  // CaptureSome calls `fn` on each stream among the next `slots` slots, as
  // it was at BeginCapture. It returns kMore while slots are left, and ends
  // the capture when it returns kDone or kSpoiled (start again). It changes
  // only the capture's own state, which Insert and AdvanceHead also touch:
  // the owner may run it under a shared lock beside readers, as long as
  // changes to the table exclude it and one capture runs at a time.
  enum class CaptureStep { kMore, kDone, kSpoiled };
  void BeginCapture();
  CaptureStep CaptureSome(size_t slots, const std::function<void(const StreamSlot&)>& fn);
  bool capturing() const { return capture_ != nullptr; }

  template <typename F>
  void ForEach(F&& fn) const {
    for (const StreamSlot& s : slots_)
      if (!s.empty()) fn(s);
  }
  size_t size() const { return size_; }
  size_t memory_bytes() const { return slots_.capacity() * sizeof(StreamSlot); }

 private:
  struct Capture {
    size_t next = 0;  // slots before it are read
    bool spoiled = false;
    std::unordered_map<size_t, StreamSlot> before;  // old values of changed slots at or after next
  };

  size_t Home(uint64_t hash) const;
  void Grow(size_t capacity);
  // Keeps slot i's value for the capture, if one runs and has not read it.
  void Preserve(size_t i);

  std::vector<StreamSlot> slots_;
  size_t size_ = 0;
  std::unique_ptr<Capture> capture_;
};

}  // namespace annal
