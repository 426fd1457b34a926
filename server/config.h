// annald's configuration: every setting, its default, and where it comes
// from (command-line flags, or a TOML file given with --config whose keys
// are the flags' names with '_' for '-'; flags win over the file). The
// repeatable per-category flags are tables in the file: --reducer
// CATEGORY=REDUCER is [reducers] CATEGORY = "REDUCER", --snapshot-every-for
// CATEGORY=N is [snapshot_every_for] CATEGORY = N; a category given on the
// command line takes nothing from the file.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "annal/state.h"
#include "annal/status.h"
#include "protocol.h"

namespace annal::server {

struct ServerConfig {
  std::string data_dir = "./data";
  std::string listen_address = "127.0.0.1";
  int port = 7411;          // 0: any free port (logged at start)
  int metrics_port = 7412;  // 0: any free port; -1: no metrics endpoint
  // Used when the data directory is created; an existing store keeps its own.
  uint32_t partitions = 1;
  uint64_t segment_size_mb = 64;
  uint64_t checkpoint_interval_mb = 64;
  uint64_t checkpoint_interval_ms = 60'000;
  // Sealing of full segments and the cache of decompressed blocks
  // (annal::Options).
  bool seal_segments = true;
  uint64_t seal_block_kb = 4;
  int seal_zstd_level = 3;
  bool seal_compress_literals = false;
  uint64_t block_cache_mb = 256;
  uint64_t tail_cache_mb = 16;
  // Limits.
  uint32_t max_frame_bytes = protocol::kDefaultMaxFrameBytes;
  uint32_t max_events_per_append = 10'000;
  uint32_t max_read_count = 10'000;       // events in one read response
  uint32_t max_connections = 1024;
  uint32_t max_in_flight = 1024;          // unanswered requests per connection
  uint64_t idle_timeout_ms = 300'000;     // no bytes from a client with nothing pending
  uint64_t slow_reader_timeout_ms = 10'000;  // no progress writing to a client
  // A subscription stops producing while its connection has this much
  // unsent, and reads from disk again when it drains.
  uint64_t subscription_buffer_bytes = 4 * 1024 * 1024;
  // A subscription this many positions behind the durable head is dropped.
  uint64_t max_subscription_lag = 10'000'000;
  // State and snapshots (annal/state.h). The snapshot store; empty:
  // DATA_DIR/snapshots.db.
  std::string snapshot_path;
  uint32_t snapshot_every = 100;      // events between snapshots; 0: none
  uint32_t snapshot_keep_latest = 3;  // see annal::SnapshotPolicy
  uint32_t snapshot_keep_sparse = 1;  // 1: keep every snapshot
  // Per stream category: the reducer, "json-merge-patch" or the path of a
  // shared library (anything containing '/' or ending in ".so"); and an
  // interval other than snapshot_every.
  std::map<std::string, std::string> reducers;
  std::map<std::string, uint32_t> snapshot_every_for;
  // The consumer checkpoint store (annal/consumers.h), an SQLite file;
  // empty: DATA_DIR/consumers.db.
  std::string checkpoint_store_path;
};

// Where `config` keeps the consumer checkpoint store.
std::string CheckpointStorePath(const ServerConfig& config);

// Parses argv. Returns kUnavailable with the help text in the message when
// --help was asked for (the caller prints it and exits 0), kInvalidArgument
// for bad flags or config.
Result<ServerConfig> ParseConfig(int argc, char** argv);

// The built-in reducer's name, as --reducer takes it.
inline constexpr const char* kJsonMergePatchReducerName = "json-merge-patch";

// The state engine's options for `config`: loads every reducer library it
// names. kInvalidArgument, naming the category and the path or name, when
// one cannot be had.
Result<StateOptions> MakeStateOptions(const ServerConfig& config);

}  // namespace annal::server
