// A bounded cache of immutable byte blocks shared by every partition of a
// store: decompressed blocks of sealed segments, their block maps, and
// segment index pages. Least recently used entries go first once the
// charged bytes pass the capacity. An entry in use by a reader stays valid
// (it is a shared_ptr) even after eviction.
//
// Thread-safety: every method may be called from any thread; the cache is
// split into shards, each with its own mutex.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "annal/status.h"

namespace annal {

class BlockCache {
 public:
  using Bytes = std::shared_ptr<const std::vector<uint8_t>>;
  struct Stats {
    uint64_t bytes = 0;  // charged bytes held now
    uint64_t entries = 0;
    uint64_t hits = 0;
    uint64_t misses = 0;
    uint64_t evictions = 0;
  };

  explicit BlockCache(size_t capacity_bytes);
  ~BlockCache();
  BlockCache(const BlockCache&) = delete;
  BlockCache& operator=(const BlockCache&) = delete;

  // A number no other file opened by this process gets; entries are keyed
  // by (file id, key), so files never see each other's blocks. A closed
  // file's entries are never asked for again and age out like any other:
  // dropping them at close meant a walk over the whole cache per file, which
  // made closing a store with many segments quadratic.
  static uint64_t NewFileId();

  // The entry for (file, key), or what `load` returns, which is then
  // inserted (unless it is larger than the whole capacity). Two threads
  // missing the same key at once may both load it; one copy wins.
  Result<Bytes> GetOrLoad(uint64_t file, uint64_t key, const std::function<Result<Bytes>()>& load);

  Stats GetStats() const;
  size_t capacity() const { return capacity_; }

 private:
  struct Shard;
  Shard& ShardFor(uint64_t file, uint64_t key);
  const size_t capacity_;
  std::vector<std::unique_ptr<Shard>> shards_;
};

}  // namespace annal
