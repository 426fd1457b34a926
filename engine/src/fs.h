// Thin, checked wrappers over the POSIX file calls the engine uses outside
// the writer's io_uring: opening, positional reads, atomic file replacement,
// directory syncs. Every error names the path.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <functional>
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

// Offsets, lengths and buffers of direct I/O are multiples of this.
inline constexpr size_t kDirectIoAlignment = 4096;

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
// Opens with O_DIRECT added to `flags`, or without it where the filesystem
// refuses direct I/O (tmpfs); `*direct`, when given, says which.
Result<Fd> OpenDirectIfPossible(const std::string& path, int flags, bool* direct = nullptr);
// Opens a file of the store that the store may replace (segments, index
// files, checkpoints) and holds a shared flock(2) on it while open, so that
// FreeGradually leaves it alone: another process (a tool reading a live
// store's directory) keeps reading what it opened. A file replaced between
// the open and the lock is opened again by its name.
Result<Fd> OpenShared(const std::string& path, int flags);
Result<uint64_t> FileSize(int fd, const std::string& path);

// Reads up to len bytes at offset, fewer only where the file ends; returns
// how many.
Result<size_t> PreadUpTo(int fd, void* buf, size_t len, uint64_t offset, const std::string& path);
// Reads exactly len bytes at offset; a short read is kCorruption (the file
// is shorter than its structure claims).
Status PreadExact(int fd, void* buf, size_t len, uint64_t offset, const std::string& path);
Status PwriteAll(int fd, const void* buf, size_t len, uint64_t offset, const std::string& path);
Status Fdatasync(int fd, const std::string& path);
// Shrinks the file open as `fd` to nothing, kFreeStepBytes at a time with a
// pause of kFreeStepPause between steps, stopping early (leaving the rest to
// its last close) once `stop` says so. It first takes an exclusive flock on
// `fd`, and when another descriptor holds the file (OpenShared) it frees
// nothing and returns kUnavailable: the file is still being read. On a
// filesystem mounted with online discard, freeing a file's blocks all at
// once (the last close of an unlinked file) is one long discard in front of
// every other request: 64 MiB held this machine's disk for about 13 ms, and
// 1 MiB for 0.35 ms.
inline constexpr uint64_t kFreeStepBytes = 1 << 20;
inline constexpr std::chrono::microseconds kFreeStepPause{1000};
Status FreeGradually(int fd, const std::string& path, const std::function<bool()>& stop);

// For a file written sequentially in the background and fdatasynced at the
// end: once `end` is kWriteBackChunkBytes past `*written_back`, starts
// writing [*written_back, end) to the device and waits for what was started
// before it, so the final fdatasync finds little left and the device never
// gets the whole file in one burst in front of the log's syncs.
inline constexpr uint64_t kWriteBackChunkBytes = 1 << 20;
Status WriteBackGradually(int fd, const std::string& path, uint64_t end, uint64_t* written_back);
Status SyncDir(const std::string& dir);

// Replaces dir/name with `data` so that a crash leaves the old or the new
// content, never a mix: write dir/name.tmp, fsync, rename, fsync dir.
// Background-friendly: the data goes to the device as it is written
// (WriteBackGradually) and the replaced file is freed a step at a time.
Status WriteFileAtomically(const std::string& dir, const std::string& name,
                           const std::string& data);
Result<std::string> ReadWholeFile(const std::string& path);

// Writes zeros over [from, to), extending the file if needed, and syncs.
// Real zeros rather than FALLOC_FL_ZERO_RANGE or fallocate: those leave
// unwritten extents, which make every later sync of a write there slower.
Status WriteZeros(int fd, uint64_t from, uint64_t to, const std::string& path);

}  // namespace annal::fs
