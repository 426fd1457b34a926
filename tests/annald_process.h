// AnnaldProcess: a real annald started for a test, on free loopback ports
// (--port 0 --metrics-port 0; StartOnPort fixes the client port so that a
// restarted server is found again), with its own data directory. It reads the
// server's log lines (stdout and stderr) on a thread, learns the ports from
// the start line, and kills the server when it goes away.
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "annal/status.h"

#ifndef ANNAL_ANNALD_PATH
#error "ANNAL_ANNALD_PATH must name the annald binary (set by tests/CMakeLists.txt)"
#endif

namespace annal::testing {

class AnnaldProcess {
 public:
  // Starts annald on `data_dir` with `extra_args`, waiting (up to 20 s)
  // until it logs that it listens.
  static Result<std::unique_ptr<AnnaldProcess>> Start(const std::string& data_dir,
                                                      std::vector<std::string> extra_args = {}) {
    auto p = std::unique_ptr<AnnaldProcess>(new AnnaldProcess());
    Status s = p->Spawn(data_dir, std::move(extra_args));
    if (!s.ok()) return s;
    return p;
  }

  // The same on a given client `port` (not 0), so that a test can restart
  // the server where its clients will reconnect.
  static Result<std::unique_ptr<AnnaldProcess>> StartOnPort(const std::string& data_dir, uint16_t port,
                                                            std::vector<std::string> extra_args = {}) {
    auto p = std::unique_ptr<AnnaldProcess>(new AnnaldProcess());
    Status s = p->Spawn(data_dir, std::move(extra_args), port);
    if (!s.ok()) return s;
    return p;
  }

  // A loopback port that is free now, below the kernel's ephemeral range
  // (32768 and up by default), so that no outgoing connection, such as a
  // client's reconnect attempt, takes it while its server restarts.
  static uint16_t FreeLoopbackPort() {
    std::mt19937 random(std::random_device{}());
    for (int attempt = 0; attempt < 200; ++attempt) {
      uint16_t port = static_cast<uint16_t>(20000 + random() % 12000);
      int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_port = htons(port);
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      bool free = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
      ::close(fd);
      if (free) return port;
    }
    return 0;
  }

  ~AnnaldProcess() {
    if (pid_ > 0) Kill(SIGKILL);
    if (reader_.joinable()) reader_.join();
    if (out_fd_ >= 0) ::close(out_fd_);
  }

  uint16_t port() const { return port_; }
  uint16_t metrics_port() const { return metrics_port_; }
  pid_t pid() const { return pid_; }

  // Sends `sig` and waits for the process to end; returns its wait status.
  int Kill(int sig) {
    if (pid_ <= 0) return exit_status_;
    ::kill(pid_, sig);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    exit_status_ = status;
    return status;
  }

  // SIGTERM, then waits up to `timeout` for a clean exit. True when it
  // exited with status 0 in time.
  bool Stop(std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    if (pid_ <= 0) return WIFEXITED(exit_status_) && WEXITSTATUS(exit_status_) == 0;
    ::kill(pid_, SIGTERM);
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        exit_status_ = status;
        return WIFEXITED(status) && WEXITSTATUS(status) == 0;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    Kill(SIGKILL);
    return false;
  }

  // Every line the server logged so far.
  std::vector<std::string> Lines() {
    std::lock_guard lock(mu_);
    return lines_;
  }
  bool Logged(const std::string& needle) {
    for (const std::string& l : Lines())
      if (l.find(needle) != std::string::npos) return true;
    return false;
  }

 private:
  AnnaldProcess() = default;

  Status Spawn(const std::string& data_dir, std::vector<std::string> extra_args, uint16_t port = 0) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return Status::FromErrno(errno, "pipe");
    std::vector<std::string> args = {ANNAL_ANNALD_PATH, "--data-dir", data_dir, "--port", std::to_string(port),
                                     "--metrics-port", "0"};
    for (auto& a : extra_args) args.push_back(std::move(a));
    pid_ = ::fork();
    if (pid_ < 0) return Status::FromErrno(errno, "fork");
    if (pid_ == 0) {
      ::dup2(fds[1], STDOUT_FILENO);
      ::dup2(fds[1], STDERR_FILENO);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      std::fprintf(stderr, "exec %s: %s\n", argv[0], std::strerror(errno));
      ::_exit(127);
    }
    ::close(fds[1]);
    out_fd_ = fds[0];
    reader_ = std::thread([this] { ReadLines(); });
    std::unique_lock lock(mu_);
    bool started = cv_.wait_for(lock, std::chrono::seconds(20), [&] { return port_ != 0 || eof_; });
    if (!started || port_ == 0) {
      std::string log;
      for (const auto& l : lines_) log += "\n  " + l;
      return Status::Unavailable("annald did not start listening; its output:" + log);
    }
    return Status::Ok();
  }

  void ReadLines() {
    std::string pending;
    char buf[4096];
    static const std::regex kListening(R"(listening on [0-9.]+:([0-9]+).*metrics on [0-9.]+:([0-9]+))");
    while (true) {
      ssize_t n = ::read(out_fd_, buf, sizeof buf);
      if (n <= 0) break;
      pending.append(buf, static_cast<size_t>(n));
      size_t nl;
      while ((nl = pending.find('\n')) != std::string::npos) {
        std::string line = pending.substr(0, nl);
        pending.erase(0, nl + 1);
        std::lock_guard lock(mu_);
        std::smatch m;
        if (port_ == 0 && std::regex_search(line, m, kListening)) {
          port_ = static_cast<uint16_t>(std::stoi(m[1]));
          metrics_port_ = static_cast<uint16_t>(std::stoi(m[2]));
        }
        lines_.push_back(std::move(line));
        cv_.notify_all();
      }
    }
    std::lock_guard lock(mu_);
    eof_ = true;
    cv_.notify_all();
  }

  pid_t pid_ = -1;
  int exit_status_ = 0;
  int out_fd_ = -1;
  std::thread reader_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> lines_;  // guarded by mu_
  uint16_t port_ = 0, metrics_port_ = 0;  // guarded by mu_ until started
  bool eof_ = false;
};

}  // namespace annal::testing
