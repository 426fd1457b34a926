// Thin, checked wrappers over the POSIX file calls the engine uses outside
// the writer's io_uring: opening, positional reads, atomic file replacement,
// directory syncs. Every error names the path.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "annal/status.h"

namespace annal::fs {

// An owned file descriptor; closes on destruction.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Fd& operator=(Fd&& o) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd();
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

// A heap buffer aligned for direct I/O. Grows, never shrinks.
class AlignedBuffer {
 public:
  explicit AlignedBuffer(size_t alignment) : alignment_(alignment) {}
  // Ensures room for `bytes`; the contents are not kept.
  void Reserve(size_t bytes);
  uint8_t* data() { return data_.get(); }

 private:
  struct Free {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  size_t alignment_;
  size_t capacity_ = 0;
  std::unique_ptr<uint8_t, Free> data_;
};

std::string Join(const std::string& dir, const std::string& name);
bool Exists(const std::string& path);
// Ok when it already exists; a new directory is fsynced into its parent.
Status CreateDir(const std::string& path);
Result<std::vector<std::string>> ListDir(const std::string& path);
Result<Fd> Open(const std::string& path, int flags, int mode = 0644);
Result<uint64_t> FileSize(int fd, const std::string& path);

// Reads exactly len bytes at offset; a short read is kCorruption (the file
// is shorter than its structure claims).
Status PreadExact(int fd, void* buf, size_t len, uint64_t offset, const std::string& path);
Status PwriteAll(int fd, const void* buf, size_t len, uint64_t offset, const std::string& path);
Status Fdatasync(int fd, const std::string& path);
Status SyncDir(const std::string& dir);

// Replaces dir/name with `data` so that a crash leaves the old or the new
// content, never a mix: write dir/name.tmp, fsync, rename, fsync dir.
Status WriteFileAtomically(const std::string& dir, const std::string& name,
                           const std::string& data);
Result<std::string> ReadWholeFile(const std::string& path);

// Writes zeros over [from, to), extending the file if needed, and syncs.
// Real zeros rather than FALLOC_FL_ZERO_RANGE or fallocate: those leave
// unwritten extents, which make every later sync of a write there slower.
Status WriteZeros(int fd, uint64_t from, uint64_t to, const std::string& path);

}  // namespace annal::fs
