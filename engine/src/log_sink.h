// The line sink behind Options::log and StateOptions::log.
#pragma once

#include <functional>
#include <string>

namespace annal {

using LogSink = std::function<void(const std::string&)>;

// Wraps `sink` (stderr, each line after `stderr_prefix`, when empty) so
// that calls from any thread of any store or state engine in the process
// reach it one at a time.
LogSink OneLineAtATime(LogSink sink, const char* stderr_prefix);

}  // namespace annal
