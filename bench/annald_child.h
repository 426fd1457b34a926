// AnnaldChild: the annald binary run as a child process for a benchmark,
// on free loopback ports, serving one data directory.
//
// Start() fork/execs annald with --port 0 --metrics-port 0, reads its log
// (stdout and stderr, one pipe) until the start line names the port, and
// then keeps draining the pipe on a thread so that annald never blocks on a
// full pipe. The last kKeptLogLines lines are kept for error messages; with
// ANNAL_BENCH_VERBOSE set they also go to stderr.
//
// Thread-safety: one thread starts and stops the child; Log() may be called
// from any thread.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "annal/status.h"

#ifndef ANNAL_ANNALD_PATH
#error "ANNAL_ANNALD_PATH must name the annald binary (set by bench/CMakeLists.txt)"
#endif

namespace annal::bench {

class AnnaldChild {
 public:
  static constexpr std::chrono::seconds kStartTimeout{30};
  static constexpr std::chrono::seconds kStopTimeout{30};
  static constexpr size_t kKeptLogLines = 50;

  // Starts annald serving `data_dir`; returns once it listens.
  static Result<std::unique_ptr<AnnaldChild>> Start(const std::string& data_dir) {
    std::unique_ptr<AnnaldChild> child(new AnnaldChild());
    Status s = child->Spawn(data_dir);
    if (!s.ok()) return s;
    return child;
  }

  ~AnnaldChild() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (drainer_.joinable()) drainer_.join();
    if (out_fd_ >= 0) ::close(out_fd_);
  }
  AnnaldChild(const AnnaldChild&) = delete;
  AnnaldChild& operator=(const AnnaldChild&) = delete;

  uint16_t port() const { return port_; }
  pid_t pid() const { return pid_; }

  // SIGTERM, then waits for a clean exit (status 0), SIGKILL after kStopTimeout.
  Status Stop() {
    if (pid_ <= 0) return Status::Ok();
    ::kill(pid_, SIGTERM);
    auto deadline = std::chrono::steady_clock::now() + kStopTimeout;
    int status = 0;
    while (::waitpid(pid_, &status, WNOHANG) != pid_) {
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        pid_ = -1;
        return Status::Unavailable("annald did not stop within 30 s of SIGTERM; log:" + Log());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    pid_ = -1;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      return Status::IoError("annald stopped with wait status " + std::to_string(status) +
                             "; log:" + Log());
    return Status::Ok();
  }

  // The last lines annald logged, each on its own indented line.
  std::string Log() {
    std::lock_guard lock(mu_);
    std::string out;
    for (const std::string& line : lines_) out += "\n  " + line;
    return out;
  }

 private:
  AnnaldChild() = default;

  Status Spawn(const std::string& data_dir) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return Status::FromErrno(errno, "pipe");
    std::vector<std::string> args = {ANNAL_ANNALD_PATH, "--data-dir", data_dir, "--port", "0",
                                     "--metrics-port",  "0"};
    pid_ = ::fork();
    if (pid_ < 0) return Status::FromErrno(errno, "fork");
    if (pid_ == 0) {
      ::dup2(fds[1], STDOUT_FILENO);
      ::dup2(fds[1], STDERR_FILENO);
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      std::fprintf(stderr, "exec %s: %s\n", argv[0], std::strerror(errno));
      ::_exit(127);
    }
    ::close(fds[1]);
    out_fd_ = fds[0];
    ANNAL_RETURN_IF_ERROR(WaitForListening());
    drainer_ = std::thread([this] { Drain(); });
    return Status::Ok();
  }

  // Reads log lines until the start line "listening on ADDRESS:PORT, ...".
  Status WaitForListening() {
    auto deadline = std::chrono::steady_clock::now() + kStartTimeout;
    while (port_ == 0) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      pollfd p{out_fd_, POLLIN, 0};
      if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0)
        return Status::Unavailable("annald did not start listening within 30 s; log:" + Log());
      if (!ReadSome()) return Status::Unavailable("annald exited before listening; log:" + Log());
    }
    return Status::Ok();
  }

  void Drain() {
    while (ReadSome()) {
    }
  }

  // One read from the pipe, split into lines. False at end of file.
  bool ReadSome() {
    char buf[4096];
    ssize_t n = ::read(out_fd_, buf, sizeof buf);
    if (n < 0 && errno == EINTR) return true;
    if (n <= 0) return false;
    pending_.append(buf, static_cast<size_t>(n));
    size_t nl;
    while ((nl = pending_.find('\n')) != std::string::npos) {
      std::string line = pending_.substr(0, nl);
      pending_.erase(0, nl + 1);
      if (port_ == 0) port_ = ParsePort(line);
      if (std::getenv("ANNAL_BENCH_VERBOSE") != nullptr) std::fprintf(stderr, "%s\n", line.c_str());
      std::lock_guard lock(mu_);
      lines_.push_back(std::move(line));
      if (lines_.size() > kKeptLogLines) lines_.pop_front();
    }
    return true;
  }

  // The port of "... listening on 127.0.0.1:PORT, ...", or 0.
  static uint16_t ParsePort(const std::string& line) {
    static constexpr std::string_view kMarker = "listening on ";
    size_t at = line.find(kMarker);
    if (at == std::string::npos) return 0;
    size_t colon = line.find(':', at + kMarker.size());
    if (colon == std::string::npos) return 0;
    long port = std::strtol(line.c_str() + colon + 1, nullptr, 10);
    return (port > 0 && port < 65536) ? static_cast<uint16_t>(port) : 0;
  }

  pid_t pid_ = -1;
  int out_fd_ = -1;
  uint16_t port_ = 0;    // written before drainer_ starts
  std::string pending_;  // the spawning thread, then drainer_
  std::thread drainer_;
  std::mutex mu_;
  std::deque<std::string> lines_;  // guarded by mu_
};

}  // namespace annal::bench
