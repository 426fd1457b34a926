// annald: serves one annal data directory over TCP.
//
//   annald [--data-dir DIR] [--port N] [--metrics-port N] [--config FILE] ...
//          [--reducer CATEGORY=json-merge-patch|LIB.so] [--snapshot-every N] ...
//   annald --help
//
// SIGTERM or SIGINT: stop accepting, finish appends and state requests in
// flight, write a checkpoint, exit 0. One log line on stderr per start, stop, error and
// fail-stop.
#include <signal.h>

#include <cstdio>
#include <string>

#include "annal/store.h"
#include "config.h"
#include "server.h"

namespace {

void Log(const std::string& line) { std::fprintf(stderr, "annald: %s\n", line.c_str()); }

}  // namespace

int main(int argc, char** argv) {
  auto config = annal::server::ParseConfig(argc, argv);
  if (!config.ok()) {
    if (config.status().code() == annal::StatusCode::kUnavailable) {  // --help
      std::fputs(config.status().message().c_str(), stdout);
      return 0;
    }
    Log(config.status().message());
    return 2;
  }
  std::setvbuf(stderr, nullptr, _IOLBF, 0);
  // Signals are taken synchronously by the main thread; every thread started
  // from here inherits the blocked mask.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  // Reducer libraries are loaded before the store is opened, so that a bad
  // path fails the start at once.
  auto state_options = annal::server::MakeStateOptions(*config);
  if (!state_options.ok()) {
    Log("cannot start: " + state_options.status().message());
    return 2;
  }

  annal::Options options;
  options.partitions = config->partitions;
  options.segment_size_bytes = config->segment_size_mb * 1024 * 1024;
  options.checkpoint_interval_bytes = config->checkpoint_interval_mb * 1024 * 1024;
  options.checkpoint_interval_ms = config->checkpoint_interval_ms;
  options.seal_segments = config->seal_segments;
  options.seal_block_bytes = config->seal_block_kb * 1024;
  options.seal_zstd_level = config->seal_zstd_level;
  options.seal_compress_literals = config->seal_compress_literals;
  options.block_cache_bytes = config->block_cache_mb * 1024 * 1024;
  options.tail_cache_bytes = config->tail_cache_mb * 1024 * 1024;
  options.log = Log;
  auto store = annal::Store::Open(config->data_dir, options);
  if (!store.ok()) {
    Log("cannot open " + config->data_dir + ": " + store.status().ToString());
    return 1;
  }
  uint64_t head = (*store)->DurableHead().get();
  auto server =
      annal::server::Server::Start(*config, std::move(*store), std::move(*state_options), Log);
  if (!server.ok()) {
    Log("cannot start: " + server.status().ToString());
    return 1;
  }
  std::string metrics = config->metrics_port < 0
                            ? std::string("metrics off")
                            : "metrics on " + config->listen_address + ":" + std::to_string((*server)->metrics_port());
  Log("listening on " + config->listen_address + ":" + std::to_string((*server)->port()) + ", " + metrics +
      ", data " + config->data_dir + " (durable head " + std::to_string(head) + ")");

  int sig = 0;
  sigwait(&stop_signals, &sig);
  Log(std::string("stopping on ") + (sig == SIGTERM ? "SIGTERM" : "SIGINT"));
  annal::Status s = (*server)->Shutdown();
  if (!s.ok()) {
    Log("stopped with an error: " + s.ToString());
    return 1;
  }
  Log("stopped");
  return 0;
}
