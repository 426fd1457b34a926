// FaultEnv: an Env whose writer I/O fails on command, for testing the
// fail-stop contract. It wraps the real io_uring Env, so everything that is
// not told to fail goes to disk exactly as in production.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "annal/env.h"

namespace annal::testing {

struct FaultPlan {
  // The Nth SubmitWriteSync of the whole env (counting from 1) fails; 0 = none.
  std::atomic<uint64_t> fail_submit_number{0};
  // How it fails: the write lands whole but its sync reports `error`, or
  // (torn) only its bytes before file offset `torn_at_offset` are written.
  std::atomic<bool> torn{false};
  std::atomic<uint64_t> torn_at_offset{0};
  std::atomic<int> error{EIO};
  std::atomic<uint64_t> submits{0};
};

class FaultEnv final : public Env {
 public:
  explicit FaultEnv(FaultPlan* plan) : plan_(plan) {}
  Status Probe() override { return Env::Default()->Probe(); }
  Result<std::unique_ptr<LogWriterIo>> NewLogWriterIo() override;

 private:
  FaultPlan* plan_;
};

class FaultLogWriterIo final : public LogWriterIo {
 public:
  FaultLogWriterIo(std::unique_ptr<LogWriterIo> real, FaultPlan* plan)
      : real_(std::move(real)), plan_(plan) {}

  Status SubmitWriteSync(int fd, const void* data, size_t len, uint64_t offset, uint64_t tag,
                         SyncMode mode) override {
    uint64_t n = plan_->submits.fetch_add(1) + 1;
    if (n != plan_->fail_submit_number.load())
      return real_->SubmitWriteSync(fd, data, len, offset, tag, mode);
    // The bytes (all, or a torn prefix) reach the disk, but the caller hears
    // of a failure, as after a failed fdatasync. They go through a second,
    // buffered descriptor: a torn prefix is not aligned for O_DIRECT.
    size_t written = len;
    if (plan_->torn) written = plan_->torn_at_offset > offset ? std::min<uint64_t>(len, plan_->torn_at_offset - offset) : 0;
    int plain = ::open(("/proc/self/fd/" + std::to_string(fd)).c_str(), O_WRONLY | O_CLOEXEC);
    if (plain < 0) return Status::FromErrno(errno, "FaultEnv: reopen fd");
    bool ok = ::pwrite(plain, data, written, static_cast<off_t>(offset)) == static_cast<ssize_t>(written) &&
              ::fdatasync(plain) == 0;
    ::close(plain);
    if (!ok) return Status::FromErrno(errno, "FaultEnv: write");
    injected_.push_back(IoCompletion{tag, -plan_->error.load()});
    return Status::Ok();
  }

  Status Reap(std::vector<IoCompletion>* out, bool block) override {
    if (!injected_.empty()) {
      out->insert(out->end(), injected_.begin(), injected_.end());
      injected_.clear();
      return real_->Reap(out, /*block=*/false);
    }
    return real_->Reap(out, block);
  }


 private:
  std::unique_ptr<LogWriterIo> real_;
  FaultPlan* plan_;
  std::vector<IoCompletion> injected_;  // owned by the writer thread
};

inline Result<std::unique_ptr<LogWriterIo>> FaultEnv::NewLogWriterIo() {
  auto real = Env::Default()->NewLogWriterIo();
  if (!real.ok()) return real.status();
  return std::unique_ptr<LogWriterIo>(new FaultLogWriterIo(std::move(*real), plan_));
}

}  // namespace annal::testing
