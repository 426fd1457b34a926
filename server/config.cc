#include "config.h"

#include <CLI/CLI.hpp>
#include <toml++/toml.h>

namespace annal::server {
namespace {

// Applies the TOML file's values for keys the command line did not set.
Status ApplyFile(const std::string& path, CLI::App& app) {
  toml::table table;
  try {
    table = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    return Status::InvalidArgument("config " + path + ": " + std::string(e.description()));
  }
  for (const auto& [key, value] : table) {
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
  try {
    app.parse(argc, argv);
    if (!config_file.empty()) {
      Status s = ApplyFile(config_file, app);
      if (!s.ok()) return s;
    }
  } catch (const CLI::CallForHelp&) {
    return Status::Unavailable(app.help());
  } catch (const CLI::ParseError& e) {
    return Status::InvalidArgument(e.what());
  }
  return c;
}

}  // namespace annal::server
