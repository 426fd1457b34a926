// Helpers shared by the engine tests.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "annal/store.h"

namespace annal::testing {

// A fresh directory on the real filesystem below the working directory
// (fsync, fallocate and O_DIRECT behave there as in production), removed
// when the object goes away.
class TempDir {
 public:
  explicit TempDir(const std::string& name) {
    path_ = std::filesystem::absolute("test-data-" + name + "-" + std::to_string(::getpid()));
    std::filesystem::remove_all(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string path() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

inline EventData Event(std::string type, std::string payload, std::string metadata = "{}") {
  EventData e;
  e.type = std::move(type);
  e.payload = std::move(payload);
  e.metadata = std::move(metadata);
  return e;
}

inline EventId IdFrom(uint64_t a, uint64_t b = 0) {
  EventId id{};
  for (int i = 0; i < 8; ++i) {
    id[i] = static_cast<uint8_t>(a >> (8 * i));
    id[8 + i] = static_cast<uint8_t>(b >> (8 * i));
  }
  return id;
}

inline Options SmallOptions() {
  Options o;
  o.partitions = 3;
  o.segment_size_bytes = 1024 * 1024;
  o.log = [](const std::string&) {};
  return o;
}

}  // namespace annal::testing
