// annal: the command line for people (and scripts) talking to annald.
//
//   annal append account-42 --type Deposited --data '{"amount":10}' --expected 2
//   annal read account-42 --backward --limit 5
//   annal read-all --category account --type Deposited --json
//   annal tail account-42
//   annal info account-42
//   annal state account-42 --at 2026-11-26T10:00:00Z
//   annal snapshots account-42
//   annal data ls /var/lib/annal        (storage commands: files, no annald)
//
// This file only parses arguments (CLI11) and dispatches; the commands live
// in cli_commands.cc, input checks in cli_input.cc, output in cli_output.cc,
// and the storage commands in storage_commands.cc and storage_verify.cc.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <optional>
#include <string>

#include "cli_commands.h"
#include "cli_input.h"
#include "storage_commands.h"

namespace annal::cli {
namespace {

constexpr const char* kFooter = R"(
--host, --port and --json may come before or after the command.
Exit codes: 0 ok; 1 usage or invalid input (nothing was sent); 2 the server
answered with an error (wrong expected version, unknown stream, ...);
3 cannot connect to annald.
The storage commands (data, segment, verify, index, checkpoint, repair) read
a data directory's files directly, without annald; they exit 1 when DIR is
not a data directory, 4 when they find damage, 5 when a file cannot be read.)";

constexpr const char* kTailDetails = R"(
tail prints events as they are stored, until Ctrl-C (exit 0), --count events
or --until-caught-up. Without --from it shows only new events: for a STREAM
those after its current head version (the whole stream if it does not exist
yet); with --all those after the store's latest event when tail starts (found
with a few reads). A line on stderr says where it started.)";

constexpr const char* kStateDetails = R"(
state asks annald to fold the stream's events with the reducer configured for
its category (annald --reducer CATEGORY=json-merge-patch) and prints the
result, starting from the newest usable snapshot. --version V folds events
0..V; --at TIME folds exactly the events recorded at or before TIME. Times are
shown rounded down to microseconds: to include an event exactly, give its
recorded_at_ns (from --json output) as TIME.)";

struct Parsed {
  GlobalOptions global;
  AppendArgs append;
  ReadArgs read;
  ReadAllArgs read_all;
  TailArgs tail;
  InfoArgs info;
  StateArgs state;
  SnapshotsArgs snapshots;
  // Raw values whose presence matters (CLI11 has no std::optional).
  std::string metadata, id, tail_stream;
  std::string state_at;
  uint64_t read_from = 0, tail_from = 0, tail_count = 0, state_version = 0;
  // Storage commands: a data directory or segment file, and their options.
  std::string path, index_stream;
  uint64_t dump_from = 0, dump_limit = 0;
  bool repair_dry_run = false;
};

// The storage commands, each reached through its group ("segment dump").
struct StorageCommands {
  CLI::App *data_ls, *segment_dump, *segment_stats, *verify, *index_dump, *checkpoint_dump, *repair;
};

// A command group, such as `segment`, that needs one of its commands.
CLI::App* AddGroup(CLI::App& app, const char* name, const char* description) {
  CLI::App* group = app.add_subcommand(name, description);
  group->require_subcommand(1);
  return group;
}

StorageCommands AddStorageCommands(CLI::App& app, Parsed& p) {
  constexpr const char* kDir = "The data directory (holding MANIFEST)";
  StorageCommands c;
  CLI::App* data = AddGroup(app, "data", "Inspect a data directory (reads files, not annald)");
  c.data_ls = data->add_subcommand("ls", "List partitions, segments, their states and ranges");
  c.data_ls->add_option("DIR", p.path, kDir)->required();

  CLI::App* segment = AddGroup(app, "segment", "Inspect segment files (reads files, not annald)");
  c.segment_dump = segment->add_subcommand("dump", "Show a segment's batch headers and events");
  c.segment_dump->add_option("FILE", p.path, "DIR/partition-NNN/segment-NNNNNNNN.log")->required();
  c.segment_dump->add_option("--from", p.dump_from, "Start at the first batch at or after OFFSET");
  c.segment_dump->add_option("--limit", p.dump_limit, "Stop after N events (0: all)")
      ->capture_default_str();
  c.segment_stats = segment->add_subcommand(
      "stats", "Count events, streams and bytes of a segment FILE or of every segment in DIR");
  c.segment_stats->add_option("PATH", p.path, "A segment file or a data directory")->required();

  c.verify = app.add_subcommand("verify", "Check every checksum and invariant of a data directory");
  c.verify->add_option("DIR", p.path, kDir)->required();

  CLI::App* index = AddGroup(app, "index", "Inspect segment index files (reads files, not annald)");
  c.index_dump = index->add_subcommand("dump", "Show segment indexes: runs, offsets, samples");
  c.index_dump->add_option("DIR", p.path, kDir)->required();
  c.index_dump->add_option("--stream", p.index_stream, "Only the runs of this stream");

  CLI::App* checkpoint =
      AddGroup(app, "checkpoint", "Inspect index checkpoints (reads files, not annald)");
  c.checkpoint_dump = checkpoint->add_subcommand("dump", "Show each partition's index checkpoint");
  c.checkpoint_dump->add_option("DIR", p.path, kDir)->required();

  c.repair = app.add_subcommand("repair", "Truncate torn tails of a data directory's segments");
  c.repair->add_option("DIR", p.path, kDir)->required();
  c.repair->add_flag("--dry-run", p.repair_dry_run, "Say what would be done; write nothing");
  return c;
}

// The storage command that was parsed, run; nullopt when none was.
std::optional<int> RunStorageCommand(const StorageCommands& c, const Parsed& p) {
  namespace st = storage;
  const bool json = p.global.json;
  if (c.data_ls->parsed()) return st::DataLs(p.path, json);
  if (c.segment_dump->parsed()) return st::SegmentDump(p.path, p.dump_from, p.dump_limit, json);
  if (c.segment_stats->parsed()) return st::SegmentStats(p.path, json);
  if (c.verify->parsed()) return st::Verify(p.path, json);
  if (c.index_dump->parsed()) return st::IndexDump(p.path, p.index_stream, json);
  if (c.checkpoint_dump->parsed()) return st::CheckpointDump(p.path, json);
  if (c.repair->parsed()) return st::Repair(p.path, p.repair_dry_run, json);
  return std::nullopt;
}

int Run(int argc, char** argv) {
  CLI::App app{
      "annal: append, read and follow events, and show state, in an annald server;\n"
      "inspect, verify and repair a data directory's files.",
      "annal"};
  app.footer(kFooter);
  // Global options may also follow the command: `annal read s --json`.
  app.fallthrough();
  app.require_subcommand(1);
  Parsed p;
  app.add_option("--host", p.global.host, "annald's address")
      ->envname("ANNAL_HOST")
      ->capture_default_str();
  app.add_option("--port", p.global.port, "annald's port")
      ->envname("ANNAL_PORT")
      ->check(CLI::Range(1, 65535))
      ->capture_default_str();
  app.add_flag("--json", p.global.json, "Machine-readable output (JSON; one object per line)");

  CLI::App* append = app.add_subcommand("append", "Append one event to a stream");
  append->add_option("STREAM", p.append.stream, "Stream name, e.g. account-42")->required();
  append->add_option("--type", p.append.type, "Event type")->required();
  append->add_option("--data", p.append.data, "Payload, a JSON document")->required();
  CLI::Option* metadata = append->add_option("--metadata", p.metadata, "Metadata, a JSON document");
  append
      ->add_option("--expected", p.append.expected,
                   "The stream's current version: a number, any, no-stream or exists")
      ->capture_default_str();
  CLI::Option* id = append->add_option(
      "--id", p.id, "Event id (UUID); retrying with the same id does not append twice");

  CLI::App* read = app.add_subcommand("read", "Read a stream's events");
  read->add_option("STREAM", p.read.stream, "Stream name")->required();
  read->add_flag("--backward", p.read.backward, "Newest first");
  CLI::Option* read_from =
      read->add_option("--from", p.read_from,
                       "First version to show (default: the first, or the last if --backward)");
  read->add_option("--limit", p.read.limit, "Most events to show")
      ->check(CLI::Range(uint64_t{1}, kMaxLimitEvents))
      ->capture_default_str();

  CLI::App* read_all = app.add_subcommand("read-all", "Read the global log of every stream");
  read_all->add_option("--from", p.read_all.from_position, "First global position")
      ->capture_default_str();
  read_all->add_option("--category", p.read_all.category,
                       "Only streams of this category (the name before its first '-')");
  read_all->add_option("--type", p.read_all.types, "Only these event types (repeatable)");
  read_all->add_option("--limit", p.read_all.limit, "Most events to show")
      ->check(CLI::Range(uint64_t{1}, kMaxLimitEvents))
      ->capture_default_str();

  CLI::App* tail = app.add_subcommand("tail", "Follow new events of a stream or of all streams");
  tail->footer(std::string(kTailDetails) + "\n" + kFooter);
  CLI::Option* tail_stream = tail->add_option("STREAM", p.tail_stream, "Stream to follow");
  bool tail_all = false;
  CLI::Option* all = tail->add_flag("--all", tail_all, "Follow every stream");
  CLI::Option* tail_from = tail->add_option(
      "--from", p.tail_from, "First version (STREAM) or global position (--all) to show");
  CLI::Option* category =
      tail->add_option("--category", p.tail.category, "With --all: only streams of this category");
  CLI::Option* types =
      tail->add_option("--type", p.tail.types, "With --all: only these event types (repeatable)");
  CLI::Option* count = tail->add_option("--count", p.tail_count, "Exit after this many events")
                           ->check(CLI::Range(uint64_t{1}, kMaxLimitEvents));
  tail->add_flag("--until-caught-up", p.tail.until_caught_up,
                 "Exit once every event stored at the start was shown");
  all->excludes(tail_stream);
  category->needs(all);
  types->needs(all);

  CLI::App* info = app.add_subcommand("info", "Show a stream's head version, size and times");
  info->add_option("STREAM", p.info.stream, "Stream name")->required();

  CLI::App* state =
      app.add_subcommand("state", "Show a stream's state: now, at a version, or as of a time");
  state->footer(std::string(kStateDetails) + "\n" + kFooter);
  state->add_option("STREAM", p.state.stream, "Stream name")->required();
  CLI::Option* state_at = state->add_option(
      "--at", p.state_at,
      "As of TIME: 2026-11-26T10:00:00Z (RFC 3339) or nanoseconds since the epoch");
  CLI::Option* state_version =
      state->add_option("--version", p.state_version, "At version V: the last event folded in");
  state_at->excludes(state_version);

  CLI::App* snapshots = app.add_subcommand("snapshots", "List the snapshots kept of a stream");
  snapshots->add_option("STREAM", p.snapshots.stream, "Stream name")->required();

  const StorageCommands storage_commands = AddStorageCommands(app, p);

  try {
    app.parse(argc, argv);
    if (tail->parsed() && tail_stream->count() == 0 && all->count() == 0)
      throw CLI::ValidationError("tail needs a STREAM or --all");
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    std::string message = e.what();
    std::replace(message.begin(), message.end(), '\n', ' ');
    std::fprintf(stderr, "annal: %s (see annal --help)\n", message.c_str());
    return kExitUsage;
  }

  if (metadata->count() > 0) p.append.metadata = p.metadata;
  if (id->count() > 0) p.append.id = p.id;
  if (read_from->count() > 0) p.read.from_version = p.read_from;
  if (tail_stream->count() > 0) p.tail.stream = p.tail_stream;
  if (tail_from->count() > 0) p.tail.from = p.tail_from;
  if (count->count() > 0) p.tail.count = p.tail_count;
  if (state_at->count() > 0) p.state.at = p.state_at;
  if (state_version->count() > 0) p.state.version = p.state_version;

  if (std::optional<int> status = RunStorageCommand(storage_commands, p)) return *status;
  if (append->parsed()) return RunAppend(p.global, p.append);
  if (read->parsed()) return RunRead(p.global, p.read);
  if (read_all->parsed()) return RunReadAll(p.global, p.read_all);
  if (tail->parsed()) return RunTail(p.global, p.tail);
  if (state->parsed()) return RunState(p.global, p.state);
  if (snapshots->parsed()) return RunSnapshots(p.global, p.snapshots);
  return RunInfo(p.global, p.info);
}

}  // namespace
}  // namespace annal::cli

int main(int argc, char** argv) {
  // A closed stdout or socket shows up as EPIPE from write, handled there;
  // the default SIGPIPE would kill annal without a word.
  signal(SIGPIPE, SIG_IGN);
  return annal::cli::Run(argc, argv);
}
