#include "config.h"

#include <toml++/toml.h>

#include <CLI/CLI.hpp>
#include <exception>
#include <vector>

namespace annal::server {
namespace {

// The largest per-category snapshot interval and the most categories that
// may be configured.
constexpr uint32_t kMaxSnapshotEvery = 100'000'000;
constexpr size_t kMaxConfiguredCategories = 10'000;

// A category as a stream name's prefix before its first '-' can be.
Status CheckCategory(const std::string& category) {
  if (category.empty() || category.size() > 255)
    return Status::InvalidArgument("a category must be 1..255 bytes: '" + category + "'");
  if (category.find('-') != std::string::npos)
    return Status::InvalidArgument(
        "category '" + category +
        "' contains '-', but a stream's category is the part of its name "
        "before the first '-'");
  return Status::Ok();
}

Status AddReducer(const std::string& category, const std::string& reducer, ServerConfig* c) {
  ANNAL_RETURN_IF_ERROR(CheckCategory(category));
  if (reducer.empty())
    return Status::InvalidArgument("no reducer given for category '" + category + "'");
  if (c->reducers.size() >= kMaxConfiguredCategories)
    return Status::InvalidArgument("more than " + std::to_string(kMaxConfiguredCategories) +
                                   " reducers");
  c->reducers.emplace(category, reducer);  // the first one given wins
  return Status::Ok();
}

Status AddSnapshotEvery(const std::string& category, int64_t every, ServerConfig* c) {
  ANNAL_RETURN_IF_ERROR(CheckCategory(category));
  if (every < 0 || every > kMaxSnapshotEvery)
    return Status::InvalidArgument("snapshot interval for category '" + category + "' must be 0.." +
                                   std::to_string(kMaxSnapshotEvery) + ", not " +
                                   std::to_string(every));
  if (c->snapshot_every_for.size() >= kMaxConfiguredCategories)
    return Status::InvalidArgument("more than " + std::to_string(kMaxConfiguredCategories) +
                                   " snapshot intervals");
  c->snapshot_every_for.emplace(category,
                                static_cast<uint32_t>(every));  // the first one given wins
  return Status::Ok();
}

// Splits a repeatable flag's "CATEGORY=VALUE".
Status SplitAssignment(const std::string& flag, const std::string& arg, std::string* category,
                       std::string* value) {
  size_t eq = arg.find('=');
  if (eq == std::string::npos)
    return Status::InvalidArgument(flag + " takes CATEGORY=VALUE, not '" + arg + "'");
  *category = arg.substr(0, eq);
  *value = arg.substr(eq + 1);
  return Status::Ok();
}

// The per-category settings given as repeated flags; the file's are added
// later for categories these do not name.
Status ApplyCategoryFlags(const std::vector<std::string>& reducers,
                          const std::vector<std::string>& every, ServerConfig* c) {
  for (const std::string& arg : reducers) {
    std::string category, reducer;
    ANNAL_RETURN_IF_ERROR(SplitAssignment("--reducer", arg, &category, &reducer));
    if (c->reducers.count(category) != 0)
      return Status::InvalidArgument("--reducer names category '" + category + "' twice");
    ANNAL_RETURN_IF_ERROR(AddReducer(category, reducer, c));
  }
  for (const std::string& arg : every) {
    std::string category, n;
    ANNAL_RETURN_IF_ERROR(SplitAssignment("--snapshot-every-for", arg, &category, &n));
    if (c->snapshot_every_for.count(category) != 0)
      return Status::InvalidArgument("--snapshot-every-for names category '" + category +
                                     "' twice");
    int64_t every_n = -1;
    size_t used = 0;
    try {
      every_n = std::stoll(n, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != n.size())
      return Status::InvalidArgument("--snapshot-every-for " + arg + ": '" + n +
                                     "' is not a number");
    ANNAL_RETURN_IF_ERROR(AddSnapshotEvery(category, every_n, c));
  }
  return Status::Ok();
}

// The file's [reducers] or [snapshot_every_for] table: category = value.
Status ApplyCategoryTable(const std::string& path, const std::string& key, const toml::node& node,
                          ServerConfig* c) {
  const toml::table* table = node.as_table();
  if (table == nullptr)
    return Status::InvalidArgument("config " + path + ": '" + key +
                                   "' must be a table of category = value");
  for (const auto& [category_key, value] : *table) {
    std::string category(category_key.str());
    Status s;
    if (key == "reducers") {
      auto reducer = value.value<std::string>();
      if (!reducer)
        return Status::InvalidArgument("config " + path + ": reducers." + category +
                                       " must be a string");
      s = AddReducer(category, *reducer, c);
    } else {
      auto every = value.value<int64_t>();
      if (!every || !value.is_integer())
        return Status::InvalidArgument("config " + path + ": " + key + "." + category +
                                       " must be an integer");
      s = AddSnapshotEvery(category, *every, c);
    }
    if (!s.ok()) return Status::InvalidArgument("config " + path + ": " + s.message());
  }
  return Status::Ok();
}

// Applies the TOML file's values for keys the command line did not set.
Status ApplyFile(const std::string& path, CLI::App& app, ServerConfig* c) {
  toml::table table;
  try {
    table = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    return Status::InvalidArgument("config " + path + ": " + std::string(e.description()));
  }
  for (const auto& [key, value] : table) {
    if (key.str() == "reducers" || key.str() == "snapshot_every_for") {
      ANNAL_RETURN_IF_ERROR(ApplyCategoryTable(path, std::string(key.str()), value, c));
      continue;
    }
    if (key.str() == "reducer")
      return Status::InvalidArgument("config " + path +
                                     ": reducers go in a [reducers] table: category = \"" +
                                     kJsonMergePatchReducerName + "\" or \"/path/lib.so\"");
    std::string flag = "--" + std::string(key.str());
    for (char& c : flag)
      if (c == '_') c = '-';
    CLI::Option* opt = nullptr;
    try {
      opt = app.get_option(flag);
    } catch (const CLI::Error&) {
      return Status::InvalidArgument("config " + path + ": unknown key '" + std::string(key.str()) + "'");
    }
    if (opt->count() > 0) continue;  // the command line wins
    std::string text;
    if (auto s = value.value<std::string>())
      text = *s;
    else if (auto i = value.value<int64_t>())
      text = std::to_string(*i);
    else
      return Status::InvalidArgument("config " + path + ": key '" + std::string(key.str()) +
                                     "' must be a string or an integer");
    try {
      opt->add_result(text);
      opt->run_callback();
    } catch (const CLI::Error& e) {
      return Status::InvalidArgument("config " + path + ": " + std::string(key.str()) + ": " + e.what());
    }
  }
  return Status::Ok();
}

}  // namespace

Result<ServerConfig> ParseConfig(int argc, char** argv) {
  ServerConfig c;
  CLI::App app{"annald: the annal event store server"};
  std::string config_file;
  app.add_option("--config", config_file, "TOML file with any of these settings (keys use '_')");
  app.add_option("--data-dir", c.data_dir, "data directory, created on first start")->capture_default_str();
  app.add_option("--listen", c.listen_address, "address to listen on")->capture_default_str();
  app.add_option("--port", c.port, "TCP port for clients; 0 picks a free one")->capture_default_str()->check(CLI::Range(0, 65535));
  app.add_option("--metrics-port", c.metrics_port, "HTTP port for GET /metrics; 0 picks a free one, -1 disables")
      ->capture_default_str()->check(CLI::Range(-1, 65535));
  app.add_option("--partitions", c.partitions, "partitions of a new store")->capture_default_str()->check(CLI::Range(1, 256));
  app.add_option("--segment-size-mb", c.segment_size_mb, "segment file size of a new store, MiB")
      ->capture_default_str()->check(CLI::Range(1, 1024));
  app.add_option("--checkpoint-interval-mb", c.checkpoint_interval_mb, "index checkpoint after this much log, MiB")
      ->capture_default_str()->check(CLI::Range(1, 1 << 20));
  app.add_option("--checkpoint-interval-ms", c.checkpoint_interval_ms, "index checkpoint after this long with appends")
      ->capture_default_str()->check(CLI::Range(100, 86'400'000));
  app.add_option("--seal-segments", c.seal_segments, "recompress full segments with zstd in the background")
      ->capture_default_str();
  app.add_option("--seal-block-kb", c.seal_block_kb, "log bytes per compressed block of a sealed segment, KiB")
      ->capture_default_str()->check(CLI::Range(4, 16 * 1024));
  app.add_option("--seal-zstd-level", c.seal_zstd_level, "zstd level for sealing")
      ->capture_default_str()->check(CLI::Range(1, 19));
  app.add_option("--seal-compress-literals", c.seal_compress_literals,
                 "Huffman-code literals when sealing: smaller files, slower reads")
      ->capture_default_str();
  app.add_option("--block-cache-mb", c.block_cache_mb, "memory for decompressed blocks and index pages, MiB")
      ->capture_default_str()->check(CLI::Range(0, 1 << 20));
  app.add_option("--tail-cache-mb", c.tail_cache_mb,
                 "per partition: the newest log bytes kept in memory for readers close behind the writer, MiB")
      ->capture_default_str()->check(CLI::Range(0, 1 << 14));
  app.add_option("--max-frame-bytes", c.max_frame_bytes, "largest frame accepted or sent")
      ->capture_default_str()->check(CLI::Range(protocol::kMinMaxFrameBytes, 256u << 20));
  app.add_option("--max-events-per-append", c.max_events_per_append, "events in one append")
      ->capture_default_str()->check(CLI::Range(1, 10'000));
  app.add_option("--max-read-count", c.max_read_count, "events in one read response")
      ->capture_default_str()->check(CLI::Range(1, 100'000));
  app.add_option("--max-connections", c.max_connections, "client connections at once")
      ->capture_default_str()->check(CLI::Range(1, 65'536));
  app.add_option("--max-in-flight", c.max_in_flight, "unanswered requests per connection")
      ->capture_default_str()->check(CLI::Range(1, 65'536));
  app.add_option("--idle-timeout-ms", c.idle_timeout_ms, "close a silent connection with nothing pending")
      ->capture_default_str()->check(CLI::Range(100, 86'400'000));
  app.add_option("--slow-reader-timeout-ms", c.slow_reader_timeout_ms, "close a connection that takes no bytes for this long")
      ->capture_default_str()->check(CLI::Range(100, 86'400'000));
  app.add_option("--subscription-buffer-bytes", c.subscription_buffer_bytes,
                 "unsent bytes at which a subscription pauses (then reads from disk)")
      ->capture_default_str()->check(CLI::Range(64 * 1024, 1 << 30));
  app.add_option("--max-subscription-lag", c.max_subscription_lag, "positions behind the head at which a subscription is dropped")
      ->capture_default_str()->check(CLI::Range(1'000, 1'000'000'000));
  app.add_option("--snapshot-path", c.snapshot_path,
                 "the snapshot store, an SQLite file (default DATA_DIR/snapshots.db)");
  app.add_option("--snapshot-every", c.snapshot_every,
                 "snapshot a stream with a reducer every N events; 0: never")
      ->capture_default_str()
      ->check(CLI::Range(0u, kMaxSnapshotEvery));
  app.add_option("--snapshot-keep-latest", c.snapshot_keep_latest,
                 "newest snapshots kept per stream and reducer")
      ->capture_default_str()
      ->check(CLI::Range(1, 1'000));
  app.add_option("--snapshot-keep-sparse", c.snapshot_keep_sparse,
                 "of older snapshots, keep one per run of every * N versions; 1: all, 0: none")
      ->capture_default_str()
      ->check(CLI::Range(0, 1'000'000));
  app.add_option("--checkpoint-store,--checkpoint-store-path", c.checkpoint_store_path,
                 "the consumer checkpoint store, an SQLite file (default DATA_DIR/consumers.db)");
  std::vector<std::string> reducer_flags, every_flags;
  app.add_option("--reducer", reducer_flags,
                 "CATEGORY=REDUCER, repeatable: fold the category's streams on the server with "
                 "json-merge-patch or a shared library (a path with '/' or ending in .so)")
      ->allow_extra_args(false);
  app.add_option("--snapshot-every-for", every_flags,
                 "CATEGORY=N, repeatable: the category's snapshot interval")
      ->allow_extra_args(false);
  try {
    app.parse(argc, argv);
    ANNAL_RETURN_IF_ERROR(ApplyCategoryFlags(reducer_flags, every_flags, &c));
    if (!config_file.empty()) {
      Status s = ApplyFile(config_file, app, &c);
      if (!s.ok()) return s;
    }
  } catch (const CLI::CallForHelp&) {
    return Status::Unavailable(app.help());
  } catch (const CLI::ParseError& e) {
    return Status::InvalidArgument(e.what());
  }
  return c;
}

namespace {

Result<std::shared_ptr<const Reducer>> ReducerFor(const std::string& category,
                                                  const std::string& reducer) {
  bool library = reducer.find('/') != std::string::npos ||
                 (reducer.size() >= 3 && reducer.compare(reducer.size() - 3, 3, ".so") == 0);
  if (!library) {
    if (reducer == kJsonMergePatchReducerName) return JsonMergePatchReducer();
    return Status::InvalidArgument(
        "reducer '" + reducer + "' for category '" + category + "' is neither the built-in " +
        kJsonMergePatchReducerName +
        " nor a shared library (a path containing '/' or ending in .so)");
  }
  auto loaded = LoadReducerLibrary(reducer);
  if (!loaded.ok()) {
    std::string why = loaded.status().message();
    if (why.find(reducer) == std::string::npos) why = "cannot load " + reducer + ": " + why;
    return Status::InvalidArgument("reducer for category '" + category + "': " + why);
  }
  return loaded;
}

}  // namespace

std::string CheckpointStorePath(const ServerConfig& config) {
  return config.checkpoint_store_path.empty() ? config.data_dir + "/consumers.db"
                                              : config.checkpoint_store_path;
}

Result<StateOptions> MakeStateOptions(const ServerConfig& config) {
  StateOptions o;
  o.snapshot_path =
      config.snapshot_path.empty() ? config.data_dir + "/snapshots.db" : config.snapshot_path;
  o.policy.every = config.snapshot_every;
  o.policy.keep_latest = config.snapshot_keep_latest;
  o.policy.keep_sparse = config.snapshot_keep_sparse;
  for (const auto& [category, every] : config.snapshot_every_for) {
    SnapshotPolicy p = o.policy;
    p.every = every;
    o.policies.emplace(category, p);
  }
  for (const auto& [category, reducer] : config.reducers) {
    ANNAL_ASSIGN_OR_RETURN(o.reducers[category], ReducerFor(category, reducer));
  }
  return o;
}

}  // namespace annal::server
