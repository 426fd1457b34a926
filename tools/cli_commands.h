// The commands of `annal`, each run against one annald through the client
// library. A command prints its result on stdout, or one line starting with
// "annal: " on stderr, and returns the process exit code (cli_input.h).
//
// Thread-safety: each Run* function is called once, from main.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace annal::cli {

// Events one read request asks for; --limit is filled with as many requests
// as it takes.
inline constexpr uint32_t kReadPageEvents = 1000;
// The largest --limit (read, read-all) and --count (tail) accepted.
inline constexpr uint64_t kMaxLimitEvents = 10'000'000;
// Bytes of events tail holds between the client's I/O thread and stdout.
// Past it the output cannot keep up and tail gives up instead of growing.
inline constexpr size_t kTailQueueBytesMax = 256 * 1024 * 1024;

struct GlobalOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 7411;
  bool json = false;
};

struct AppendArgs {
  std::string stream;
  std::string type;
  std::string data;
  std::optional<std::string> metadata;
  std::string expected = "any";
  std::optional<std::string> id;
};

struct ReadArgs {
  std::string stream;
  bool backward = false;
  std::optional<uint64_t> from_version;  // default: first (forward) or last (backward)
  uint64_t limit = 100;
};

struct ReadAllArgs {
  uint64_t from_position = 1;
  std::string category;
  std::vector<std::string> types;
  uint64_t limit = 100;
};

struct TailArgs {
  std::optional<std::string> stream;  // empty: --all
  std::optional<uint64_t> from;       // version (stream) or position (--all)
  std::string category;
  std::vector<std::string> types;
  std::optional<uint64_t> count;
  bool until_caught_up = false;
};

struct InfoArgs {
  std::string stream;
};

struct StateArgs {
  std::string stream;
  std::optional<std::string> at;    // --at TIME, unparsed
  std::optional<uint64_t> version;  // --version V; excludes --at
};

struct SnapshotsArgs {
  std::string stream;
};

int RunAppend(const GlobalOptions& g, const AppendArgs& args);
int RunRead(const GlobalOptions& g, const ReadArgs& args);
int RunReadAll(const GlobalOptions& g, const ReadAllArgs& args);
int RunTail(const GlobalOptions& g, const TailArgs& args);
int RunInfo(const GlobalOptions& g, const InfoArgs& args);
int RunState(const GlobalOptions& g, const StateArgs& args);
int RunSnapshots(const GlobalOptions& g, const SnapshotsArgs& args);

}  // namespace annal::cli
