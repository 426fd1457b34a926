// The storage engineer's commands: they read a data directory's files
// directly, without annald, and are safe to run while annald uses the
// directory (every command but `repair` only reads; a file that annald
// replaces while it is read, as sealing does, is read as one version).
//
//   annal data ls DIR                 partitions, segments, sizes, ranges
//   annal segment dump FILE           batch headers and events
//   annal segment stats FILE|DIR      events, streams, bytes, ratio, times
//   annal verify DIR                  every checksum and invariant
//   annal index dump DIR              segment indexes (runs per stream)
//   annal checkpoint dump DIR         index checkpoints
//   annal repair DIR                  the one writing command
//
// Every function prints to stdout (human-readable, or one JSON document
// with `json`), problems to stderr, and returns the exit status. A torn
// batch at the very end of a partition's log (annald may be writing it) is
// a warning on stderr, not a problem; one with data after it is damage.
#pragma once

#include <cstdint>
#include <string>

namespace annal::cli::storage {

inline constexpr int kOk = 0;
inline constexpr int kUsage = 1;        // bad arguments, not a data directory
inline constexpr int kProblems = 4;     // verify found problems; repair refused or found damage it cannot repair
inline constexpr int kIoError = 5;      // a file could not be read

int DataLs(const std::string& dir, bool json);
int SegmentDump(const std::string& file, uint64_t from_offset, uint64_t limit, bool json);
int SegmentStats(const std::string& file_or_dir, bool json);
int IndexDump(const std::string& dir, const std::string& stream, bool json);  // stream "" = all
int CheckpointDump(const std::string& dir, bool json);
int Verify(const std::string& dir, bool json);
// Truncates torn tails; `dry_run` says what it would do and writes nothing.
int Repair(const std::string& dir, bool dry_run, bool json);

}  // namespace annal::cli::storage
