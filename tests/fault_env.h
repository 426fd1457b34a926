// FaultEnv: an Env whose writer I/O fails on command, for testing the
// fail-stop contract. It wraps the real io_uring Env, so everything that is
// not told to fail goes to disk exactly as in production.
#pragma once

#include <atomic>
#include <cerrno>
#include <memory>
#include <mutex>
#include <set>
#include <vector>

#include "annal/env.h"

namespace annal::testing {

struct FaultPlan {
  // The Nth SubmitWriteSync of the whole env (counting from 1) fails; 0 = none.
  std::atomic<uint64_t> fail_submit_number{0};
  // How it fails: the write lands whole but fdatasync reports `error`, or
  // (torn) only the first `torn_bytes` bytes are written before the error.
  std::atomic<bool> torn{false};
  std::atomic<size_t> torn_bytes{0};
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

  Status SubmitWriteSync(int fd, const void* data, size_t len, uint64_t offset,
                         uint64_t tag) override {
    uint64_t n = plan_->submits.fetch_add(1) + 1;
    if (n != plan_->fail_submit_number.load()) return real_->SubmitWriteSync(fd, data, len, offset, tag);
    size_t written = plan_->torn ? std::min(len, plan_->torn_bytes.load()) : len;
    // The bytes reach the file (through the real ring, synced), but the
    // caller hears of a failure, as after a failed fdatasync.
    failing_.insert(tag);
    return real_->SubmitWriteSync(fd, data, written == 0 ? 1 : written, offset, tag);
  }

  Status Reap(std::vector<IoCompletion>* out, bool block) override {
    size_t before = out->size();
    Status s = real_->Reap(out, block);
    for (size_t i = before; i < out->size(); ++i)
      if (failing_.erase((*out)[i].tag)) (*out)[i].result = -plan_->error.load();
    return s;
  }

  void Wake() override { real_->Wake(); }

 private:
  std::unique_ptr<LogWriterIo> real_;
  FaultPlan* plan_;
  std::set<uint64_t> failing_;  // owned by the writer thread
};

inline Result<std::unique_ptr<LogWriterIo>> FaultEnv::NewLogWriterIo() {
  auto real = Env::Default()->NewLogWriterIo();
  if (!real.ok()) return real.status();
  return std::unique_ptr<LogWriterIo>(new FaultLogWriterIo(std::move(*real), plan_));
}

}  // namespace annal::testing
