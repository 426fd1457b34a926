#include "fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <filesystem>
#include <thread>
#include <vector>

#include "annal/assert.h"

namespace annal::fs {

Fd& Fd::operator=(Fd&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

Fd::~Fd() {
  if (fd_ >= 0) ::close(fd_);
}

void AlignedBuffer::Reserve(size_t bytes) {
  if (bytes <= capacity_) return;
  size_t rounded = (bytes + alignment_ - 1) / alignment_ * alignment_;
  data_.reset(static_cast<uint8_t*>(std::aligned_alloc(alignment_, rounded)));
  ANNAL_ASSERT_MSG(data_ != nullptr, "out of memory for an I/O buffer");
  capacity_ = rounded;
}

std::string Join(const std::string& dir, const std::string& name) {
  if (dir.empty() || dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

Status CreateDir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) != 0) {
    if (errno == EEXIST) return Status::Ok();
    return Status::FromErrno(errno, "mkdir " + path);
  }
  // Make the new entry durable in its parent.
  std::string parent = std::filesystem::path(path).lexically_normal().parent_path().string();
  return SyncDir(parent.empty() ? "." : parent);
}

Result<std::vector<std::string>> ListDir(const std::string& path) {
  DIR* d = ::opendir(path.c_str());
  if (!d) return Status::FromErrno(errno, "opendir " + path);
  std::vector<std::string> names;
  while (struct dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(std::move(n));
  }
  ::closedir(d);
  return names;
}

Result<Fd> Open(const std::string& path, int flags, int mode) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) return Status::FromErrno(errno, "open " + path);
  return Fd(fd);
}

Result<Fd> OpenDirectIfPossible(const std::string& path, int flags, bool* direct) {
  auto fd = Open(path, flags | O_DIRECT);
  if (direct) *direct = fd.ok();
  return fd.ok() ? std::move(fd) : Open(path, flags);
}

Result<Fd> OpenShared(const std::string& path, int flags) {
  constexpr int kAttempts = 8;
  for (int attempt = 1;; ++attempt) {
    ANNAL_ASSIGN_OR_RETURN(Fd fd, Open(path, flags));
    while (::flock(fd.get(), LOCK_SH) != 0)
      if (errno != EINTR) return Status::FromErrno(errno, "lock " + path);
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) return Status::FromErrno(errno, "fstat " + path);
    // Still linked: it is the file the name stands for, and the lock keeps
    // it whole. Unlinked: it was replaced (and maybe freed) meanwhile.
    if (st.st_nlink > 0 || attempt == kAttempts) return fd;
  }
}

Result<uint64_t> FileSize(int fd, const std::string& path) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return Status::FromErrno(errno, "fstat " + path);
  return static_cast<uint64_t>(st.st_size);
}

Result<size_t> PreadUpTo(int fd, void* buf, size_t len, uint64_t offset, const std::string& path) {
  auto* p = static_cast<uint8_t*>(buf);
  size_t done = 0;
  while (done < len) {
    ssize_t n = ::pread(fd, p + done, len - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "read " + path + " at offset " + std::to_string(offset + done));
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  return done;
}

Status PreadExact(int fd, void* buf, size_t len, uint64_t offset, const std::string& path) {
  ANNAL_ASSIGN_OR_RETURN(size_t done, PreadUpTo(fd, buf, len, offset, path));
  if (done < len)
    return Status::Corruption(path + " at offset " + std::to_string(offset + done) +
                              ": file ends before the data it should hold");
  return Status::Ok();
}

Status PwriteAll(int fd, const void* buf, size_t len, uint64_t offset, const std::string& path) {
  auto* p = static_cast<const uint8_t*>(buf);
  size_t done = 0;
  while (done < len) {
    ssize_t n = ::pwrite(fd, p + done, len - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "write " + path + " at offset " + std::to_string(offset));
    }
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status FreeGradually(int fd, const std::string& path, const std::function<bool()>& stop) {
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) return Status::Unavailable(path + " is still open for reading elsewhere");
    return Status::FromErrno(errno, "lock " + path);
  }
  ANNAL_ASSIGN_OR_RETURN(uint64_t size, FileSize(fd, path));
  while (size > 0 && !stop()) {
    size -= std::min(size, kFreeStepBytes);
    if (::ftruncate(fd, static_cast<off_t>(size)) != 0)
      return Status::FromErrno(errno, "truncate " + path + " to " + std::to_string(size) + " bytes");
    if (size > 0) std::this_thread::sleep_for(kFreeStepPause);
  }
  return Status::Ok();
}

Status WriteBackGradually(int fd, const std::string& path, uint64_t end, uint64_t* written_back) {
  if (end < *written_back + kWriteBackChunkBytes) return Status::Ok();
  auto range = [&](uint64_t from, uint64_t to, unsigned flags) -> Status {
    if (::sync_file_range(fd, static_cast<off_t>(from), static_cast<off_t>(to - from), flags) != 0)
      return Status::FromErrno(errno, "write back " + path + " at offset " + std::to_string(from));
    return Status::Ok();
  };
  ANNAL_RETURN_IF_ERROR(range(*written_back, end, SYNC_FILE_RANGE_WRITE));
  if (*written_back > 0) ANNAL_RETURN_IF_ERROR(range(0, *written_back, SYNC_FILE_RANGE_WAIT_AFTER));
  *written_back = end;
  return Status::Ok();
}

Status Fdatasync(int fd, const std::string& path) {
  if (::fdatasync(fd) != 0) return Status::FromErrno(errno, "fdatasync " + path);
  return Status::Ok();
}

Status SyncDir(const std::string& dir) {
  ANNAL_ASSIGN_OR_RETURN(Fd fd, Open(dir, O_RDONLY | O_DIRECTORY));
  if (::fsync(fd.get()) != 0) return Status::FromErrno(errno, "fsync directory " + dir);
  return Status::Ok();
}

Status WriteFileAtomically(const std::string& dir, const std::string& name,
                           const std::string& data) {
  std::string tmp = Join(dir, name + ".tmp"), final_path = Join(dir, name);
  {
    ANNAL_ASSIGN_OR_RETURN(Fd fd, Open(tmp, O_WRONLY | O_CREAT | O_TRUNC));
    uint64_t written_back = 0;
    for (size_t at = 0; at < data.size();) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(kWriteBackChunkBytes, data.size() - at));
      ANNAL_RETURN_IF_ERROR(PwriteAll(fd.get(), data.data() + at, n, at, tmp));
      at += n;
      ANNAL_RETURN_IF_ERROR(WriteBackGradually(fd.get(), tmp, at, &written_back));
    }
    if (::fsync(fd.get()) != 0) return Status::FromErrno(errno, "fsync " + tmp);
  }
  // The file being replaced stays open across the rename, so that its
  // blocks are freed gradually rather than at once (FreeGradually).
  auto old = Open(final_path, O_WRONLY);
  if (::rename(tmp.c_str(), final_path.c_str()) != 0)
    return Status::FromErrno(errno, "rename " + tmp + " to " + final_path);
  ANNAL_RETURN_IF_ERROR(SyncDir(dir));
  // Best effort: closing the old file frees whatever this leaves.
  if (old.ok()) (void)FreeGradually(old->get(), final_path, [] { return false; });
  return Status::Ok();
}

Result<std::string> ReadWholeFile(const std::string& path) {
  ANNAL_ASSIGN_OR_RETURN(Fd fd, OpenShared(path, O_RDONLY));
  ANNAL_ASSIGN_OR_RETURN(uint64_t size, FileSize(fd.get(), path));
  std::string data(size, '\0');
  ANNAL_RETURN_IF_ERROR(PreadExact(fd.get(), data.data(), size, 0, path));
  return data;
}

Status WriteZeros(int fd, uint64_t from, uint64_t to, const std::string& path) {
  std::vector<uint8_t> zeros(static_cast<size_t>(std::min<uint64_t>(1 << 20, to - from)), 0);
  for (uint64_t at = from; at < to;) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(zeros.size(), to - at));
    ANNAL_RETURN_IF_ERROR(PwriteAll(fd, zeros.data(), n, at, path));
    at += n;
  }
  return Fdatasync(fd, path);
}

}  // namespace annal::fs
