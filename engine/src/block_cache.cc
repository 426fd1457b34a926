#include "block_cache.h"

#include <algorithm>
#include <list>
#include <mutex>
#include <unordered_map>

#include "annal/assert.h"

namespace annal {

namespace {

// What an entry costs beyond its bytes: the list node, the map node and the
// vector's own header, roughly. Charged so that many tiny entries (block
// maps of small segments) cannot hold far more memory than the capacity.
constexpr size_t kEntryOverheadBytes = 128;
// At most this many shards; fewer when the capacity is small, so that each
// shard holds several typical blocks. With 16 shards of a tiny cache, every
// shard would hold at most its newest entry and the cache as a whole could
// keep 16 entries, each larger than the capacity divided by 16.
constexpr size_t kMaxShards = 16;
constexpr size_t kMinShardBytes = 1024 * 1024;

struct Key {
  uint64_t file;
  uint64_t key;
  bool operator==(const Key&) const = default;
};

// splitmix64's finalizer over both halves: file ids are small consecutive
// numbers and keys are small block indexes, so they need mixing.
uint64_t Mix(uint64_t file, uint64_t key) {
  uint64_t z = file * 0x9e3779b97f4a7c15ull ^ key;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

struct KeyHash {
  size_t operator()(const Key& k) const { return static_cast<size_t>(Mix(k.file, k.key)); }
};

size_t Charge(const BlockCache::Bytes& bytes) { return bytes->size() + kEntryOverheadBytes; }

size_t ShardCount(size_t capacity_bytes) {
  return std::clamp<size_t>(capacity_bytes / kMinShardBytes, 1, kMaxShards);
}

}  // namespace

// One LRU list and its index. Everything here is guarded by `mu`.
struct BlockCache::Shard {
  struct Entry {
    Key key;
    Bytes bytes;
    size_t charge;
  };
  explicit Shard(size_t capacity) : capacity_bytes(capacity) {}

  // Front: most recently used.
  void Touch(std::list<Entry>::iterator it) { lru.splice(lru.begin(), lru, it); }

  void Insert(const Key& key, Bytes bytes) {
    size_t charge = Charge(bytes);
    lru.push_front(Entry{key, std::move(bytes), charge});
    index.emplace(key, lru.begin());
    charged_bytes += charge;
    // The newest entry stays even when it alone is over the shard's share
    // (the caller checked it fits the whole cache).
    while (charged_bytes > capacity_bytes && lru.size() > 1) {
      Entry& victim = lru.back();
      charged_bytes -= victim.charge;
      index.erase(victim.key);
      lru.pop_back();
      ++evictions;
    }
    ANNAL_ASSERT(index.size() == lru.size());
  }

  std::mutex mu;
  const size_t capacity_bytes;
  std::list<Entry> lru;
  std::unordered_map<Key, std::list<Entry>::iterator, KeyHash> index;
  size_t charged_bytes = 0;
  uint64_t hits = 0, misses = 0, evictions = 0;
};

BlockCache::BlockCache(size_t capacity_bytes) : capacity_(capacity_bytes) {
  size_t n = ShardCount(capacity_bytes);
  shards_.reserve(n);
  for (size_t i = 0; i < n; ++i) shards_.push_back(std::make_unique<Shard>(capacity_bytes / n));
}

BlockCache::~BlockCache() = default;

uint64_t BlockCache::NewFileId() {
  static std::atomic<uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}

BlockCache::Shard& BlockCache::ShardFor(uint64_t file, uint64_t key) {
  // The high half picks the shard; the maps inside use the whole hash.
  return *shards_[(Mix(file, key) >> 32) % shards_.size()];
}

Result<BlockCache::Bytes> BlockCache::GetOrLoad(uint64_t file, uint64_t key,
                                                const std::function<Result<Bytes>()>& load) {
  Shard& shard = ShardFor(file, key);
  const Key k{file, key};
  {
    std::lock_guard lock(shard.mu);
    if (auto it = shard.index.find(k); it != shard.index.end()) {
      ++shard.hits;
      shard.Touch(it->second);
      return it->second->bytes;
    }
    ++shard.misses;
  }
  // Loading reads and decompresses: never under the shard's lock.
  ANNAL_ASSIGN_OR_RETURN(Bytes bytes, load());
  ANNAL_ASSERT(bytes != nullptr);
  std::lock_guard lock(shard.mu);
  if (auto it = shard.index.find(k); it != shard.index.end()) {
    // Another reader loaded it meanwhile; its copy wins.
    shard.Touch(it->second);
    return it->second->bytes;
  }
  if (Charge(bytes) <= capacity_) shard.Insert(k, bytes);
  return bytes;
}

BlockCache::Stats BlockCache::GetStats() const {
  Stats s;
  for (const auto& shard : shards_) {
    std::lock_guard lock(shard->mu);
    s.bytes += shard->charged_bytes;
    s.entries += shard->lru.size();
    s.hits += shard->hits;
    s.misses += shard->misses;
    s.evictions += shard->evictions;
  }
  return s;
}

}  // namespace annal
