// Files for the fuzz targets that parse whole files (sealed segments,
// segment indexes) and for make_seeds: a scratch directory of the process's
// own, and writing one input as a file.
#pragma once

#include <stdlib.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>

#include "annal/assert.h"

namespace annal::fuzz {

// A directory made under the temporary directory (`prefix-XXXXXX`), removed
// when this goes out of scope.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& prefix) {
    std::string tmpl = (std::filesystem::temp_directory_path() / (prefix + "-XXXXXX")).string();
    ANNAL_ASSERT_MSG(mkdtemp(tmpl.data()) != nullptr, tmpl.c_str());
    path_ = tmpl;
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Writes a new file each time: on ext4, truncating a file that has data
// and writing it again makes close() flush it (auto_da_alloc), which cost
// milliseconds per input.
inline void WriteFile(const std::string& path, std::string_view bytes) {
  ANNAL_ASSERT(std::remove(path.c_str()) == 0 || errno == ENOENT);
  std::FILE* f = std::fopen(path.c_str(), "wbx");
  ANNAL_ASSERT_MSG(f != nullptr, path.c_str());
  ANNAL_ASSERT(bytes.empty() || std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size());
  ANNAL_ASSERT(std::fclose(f) == 0);
}

}  // namespace annal::fuzz
