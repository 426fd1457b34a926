// Options for opening a store. Defaults suit a server on a local SSD.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "annal/limits.h"

namespace annal {

class Env;

struct Options {
  // Create the directory and an empty store when none exists.
  bool create_if_missing = true;

  // Number of partitions (each with one writer thread, one io_uring and its
  // own segment files). Fixed when the store is created: recorded in the
  // manifest, and this field is ignored when opening an existing store.
  // Each partition syncs on its own, so on one disk more partitions mean
  // more device flushes for the same appends: one partition per disk is
  // fastest there (docs/benchmarks.md); more spread the writers' CPU work.
  uint32_t partitions = 1;

  // Size of each preallocated segment file. Fixed at creation, like partitions.
  uint64_t segment_size_bytes = limits::kDefaultSegmentBytes;

  // Largest batch one partition writes and fsyncs at once. One append must
  // fit in one batch, so this also bounds an append's total size.
  size_t max_batch_bytes = limits::kDefaultMaxBatchBytes;

  // Largest payload of one event.
  size_t max_payload_bytes = limits::kDefaultMaxPayloadBytes;

  // An index checkpoint of a partition is written once this many log bytes
  // were appended to it since the last one...
  uint64_t checkpoint_interval_bytes = 64ull * 1024 * 1024;
  // ...or once this much time passed with at least one append; but never
  // before the log has grown by limits::kLogBytesPerCheckpointByte times
  // the last checkpoint's size. A checkpoint holds the whole stream table
  // (40 bytes a stream), so with millions of streams it would otherwise
  // write more than the log itself; the bound keeps its writes a fraction
  // of the log's, and what a restart replays a few times its size.
  uint64_t checkpoint_interval_ms = 60'000;

  // Sealing: once a partition's active segment is full, a background
  // thread writes the segment's index file (always, sealing or not), then
  // recompresses its log with zstd into independently decodable blocks of
  // `seal_block_bytes` (a read decompresses the blocks it touches: smaller
  // blocks read faster and compress less) and replaces the segment file
  // atomically. Appends never wait for it. Off: full segments stay as
  // written.
  bool seal_segments = true;
  size_t seal_block_bytes = 4 * 1024;
  int seal_zstd_level = 3;
  // Huffman-code the literals of sealed blocks: about 5 % fewer bytes on
  // disk, but decompressing a 4 KiB block takes 1.7 times as long
  // (docs/benchmarks.md, "Scale").
  bool seal_compress_literals = false;
  // Decompressed blocks of sealed segments (and their block maps and
  // segment indexes) kept in memory for hot reads, shared by all
  // partitions. Least recently used entries are evicted beyond this. It
  // fills as reads need it; size it to hold the blocks of what is read
  // often: reads it misses decompress a block per event of a scattered
  // stream (docs/benchmarks.md, "Scale").
  size_t block_cache_bytes = 256ull * 1024 * 1024;
  // The newest bytes of each partition's log kept in memory for readers
  // close behind the writer (live subscriptions, reads of recent events),
  // which otherwise read the device: the log is written with direct I/O
  // and is not in the page cache. Per partition, for the segment being
  // written and the one before it until that is sealed; 0 turns it off.
  size_t tail_cache_bytes = 16ull * 1024 * 1024;

  // Where the write path reaches the OS; nullptr means Env::Default().
  // Not owned; must outlive the store.
  Env* env = nullptr;

  // Receives one line for each notable event (open, recovery decisions,
  // fail-stop). Defaults to stderr. Called from engine threads, one call
  // at a time across every store and state engine in the process: a sink,
  // even one shared between them, needs no lock of its own.
  std::function<void(const std::string&)> log;
};

}  // namespace annal
