// The production Env: one io_uring per partition writer. A batch is written
// with IORING_OP_WRITE linked (IOSQE_IO_LINK) to an IORING_OP_FSYNC with
// IORING_FSYNC_DATASYNC, so the kernel starts the fdatasync only after the
// write completed, and one system call submits both. (With O_DIRECT the
// writer uses one RWF_DSYNC write instead; see SyncMode.) The ring is only
// waited on while a batch is in flight; an idle writer sleeps on its queue.
#include <liburing.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <unordered_map>

#include "annal/assert.h"
#include "annal/env.h"

namespace annal {
namespace {

constexpr unsigned kRingEntries = 64;
// user_data values: tag << 2 | kind.
constexpr uint64_t kKindWrite = 0, kKindSync = 1;

class UringLogWriterIo final : public LogWriterIo {
 public:
  static Result<std::unique_ptr<LogWriterIo>> Create() {
    auto io = std::unique_ptr<UringLogWriterIo>(new UringLogWriterIo());
    int rc = io_uring_queue_init(kRingEntries, &io->ring_, 0);
    if (rc < 0) return Status::FromErrno(-rc, "io_uring_queue_init");
    io->ring_ready_ = true;
    return std::unique_ptr<LogWriterIo>(std::move(io));
  }

  ~UringLogWriterIo() override {
    if (ring_ready_) io_uring_queue_exit(&ring_);
  }

  Status SubmitWriteSync(int fd, const void* data, size_t len, uint64_t offset, uint64_t tag,
                         SyncMode mode) override {
    ANNAL_ASSERT(tag < (1ull << 60));
    io_uring_sqe* w = io_uring_get_sqe(&ring_);
    ANNAL_ASSERT_MSG(w, "io_uring submission queue full: more in flight than designed");
    io_uring_prep_write(w, fd, data, static_cast<unsigned>(len), offset);
    if (mode == SyncMode::kDsyncWrite) {
      w->rw_flags = RWF_DSYNC;
      // The write is the whole operation: its completion is the last one.
      io_uring_sqe_set_data64(w, tag << 2 | kKindSync);
      pending_[tag] = Pending{len, 0, true};
    } else {
      io_uring_sqe* s = io_uring_get_sqe(&ring_);
      ANNAL_ASSERT_MSG(s, "io_uring submission queue full: more in flight than designed");
      w->flags |= IOSQE_IO_LINK;
      io_uring_sqe_set_data64(w, tag << 2 | kKindWrite);
      io_uring_prep_fsync(s, fd, IORING_FSYNC_DATASYNC);
      io_uring_sqe_set_data64(s, tag << 2 | kKindSync);
      pending_[tag] = Pending{len, 0, false};
    }
    int rc = io_uring_submit(&ring_);
    if (rc < 0) return Status::FromErrno(-rc, "io_uring_submit");
    return Status::Ok();
  }

  Status Reap(std::vector<IoCompletion>* out, bool block) override {
    io_uring_cqe* cqe = nullptr;
    if (block) {
      int rc;
      do rc = io_uring_wait_cqe(&ring_, &cqe);
      while (rc == -EINTR);
      if (rc < 0) return Status::FromErrno(-rc, "io_uring_wait_cqe");
    }
    unsigned head, seen = 0;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      ++seen;
      Handle(io_uring_cqe_get_data64(cqe), cqe->res, out);
    }
    io_uring_cq_advance(&ring_, seen);
    return Status::Ok();
  }

 private:
  struct Pending {
    size_t len;
    int32_t write_result;
    bool single;  // a kDsyncWrite: the sync completion carries the write's result
  };

  UringLogWriterIo() = default;

  void Handle(uint64_t data, int32_t res, std::vector<IoCompletion>* out) {
    uint64_t kind = data & 3, tag = data >> 2;
    auto it = pending_.find(tag);
    ANNAL_ASSERT(it != pending_.end());
    if (kind == kKindWrite) {
      // A short write breaks the link: the fsync then completes -ECANCELED.
      it->second.write_result = res < 0 ? res : (static_cast<size_t>(res) == it->second.len ? 0 : -EIO);
      return;
    }
    int32_t result = it->second.write_result != 0 ? it->second.write_result : res;
    if (it->second.single)
      result = res < 0 ? res : (static_cast<size_t>(res) == it->second.len ? 0 : -EIO);
    pending_.erase(it);
    out->push_back(IoCompletion{tag, result});
  }

  io_uring ring_{};
  bool ring_ready_ = false;
  std::unordered_map<uint64_t, Pending> pending_;
};

class UringEnv final : public Env {
 public:
  Status Probe() override {
    io_uring ring;
    int rc = io_uring_queue_init(4, &ring, 0);
    if (rc < 0)
      return Status::Unavailable(
          std::string("io_uring is not usable here (io_uring_queue_init: ") + std::strerror(-rc) +
          "). annal needs Linux 5.6 or later with io_uring enabled: check that "
          "/proc/sys/kernel/io_uring_disabled is 0 and that no seccomp profile (as container "
          "runtimes apply by default) blocks the io_uring_setup system call.");
    io_uring_probe* probe = io_uring_get_probe_ring(&ring);
    bool ok = probe && io_uring_opcode_supported(probe, IORING_OP_WRITE) &&
              io_uring_opcode_supported(probe, IORING_OP_FSYNC);
    if (probe) io_uring_free_probe(probe);
    io_uring_queue_exit(&ring);
    if (!ok)
      return Status::Unavailable(
          "this kernel's io_uring lacks IORING_OP_WRITE or IORING_OP_FSYNC; "
          "annal needs Linux 5.6 or later");
    return Status::Ok();
  }

  Result<std::unique_ptr<LogWriterIo>> NewLogWriterIo() override {
    return UringLogWriterIo::Create();
  }
};

}  // namespace

Env* Env::Default() {
  static UringEnv env;
  return &env;
}

}  // namespace annal
