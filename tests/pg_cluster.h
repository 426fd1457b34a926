// A throwaway PostgreSQL cluster for tests: bench/pg-cluster.sh run on a
// free loopback port in a fresh directory under /tmp (the postgres system
// user must reach it when the tests run as root), stopped and removed when
// the PgCluster goes away. Used by postgres_target_test.cc and
// bank_test.cc; tests skip (GTEST_SKIP) only when the script says the
// server binaries are not installed (its exit status 3).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>

#ifndef ANNAL_SOURCE_DIR
#error "ANNAL_SOURCE_DIR must name the source tree (set by tests/CMakeLists.txt)"
#endif

namespace annal::testing {

// A loopback port the kernel hands out as free now (0 when none).
inline uint16_t FreePgPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  uint16_t port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
    port = ntohs(addr.sin_port);
  ::close(fd);
  return port;
}

struct ScriptRun {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

// Runs bench/pg-cluster.sh with `args` (already quoted for the shell).
inline ScriptRun RunClusterScript(const std::string& args) {
  std::string command = "bash '" ANNAL_SOURCE_DIR "/bench/pg-cluster.sh' " + args + " 2>&1";
  ScriptRun run;
  FILE* f = ::popen(command.c_str(), "r");
  if (f == nullptr) {
    run.output = "popen failed";
    return run;
  }
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) run.output.append(buf, n);
  int status = ::pclose(f);
  if (WIFEXITED(status)) run.exit_code = WEXITSTATUS(status);
  return run;
}

inline std::string LastLine(std::string s) {
  while (!s.empty() && s.back() == '\n') s.pop_back();
  size_t nl = s.rfind('\n');
  return nl == std::string::npos ? s : s.substr(nl + 1);
}

// Exit status of pg-cluster.sh when the server binaries are missing.
inline constexpr int kPgNotInstalled = 3;

class PgCluster {
 public:
  enum class Outcome { kStarted, kNotInstalled, kFailed };

  PgCluster() = default;
  PgCluster(const PgCluster&) = delete;
  PgCluster& operator=(const PgCluster&) = delete;
  ~PgCluster() {
    if (dir_.empty()) return;
    RunClusterScript("stop '" + dir_ + "'");
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  // Creates and starts the cluster. output() says why when it did not.
  Outcome Start() {
    char dir[] = "/tmp/annal-pg-test-XXXXXX";
    if (::mkdtemp(dir) == nullptr) {
      output_ = "mkdtemp failed";
      return Outcome::kFailed;
    }
    dir_ = dir;
    uint16_t port = FreePgPort();
    ScriptRun run = RunClusterScript("start '" + dir_ + "' " + std::to_string(port));
    output_ = run.output;
    if (run.exit_code == kPgNotInstalled) return Outcome::kNotInstalled;
    if (run.exit_code != 0) return Outcome::kFailed;
    conninfo_ = LastLine(run.output);
    return conninfo_.rfind("postgresql://", 0) == 0 ? Outcome::kStarted : Outcome::kFailed;
  }

  const std::string& conninfo() const { return conninfo_; }
  const std::string& dir() const { return dir_; }
  const std::string& output() const { return output_; }

 private:
  std::string dir_;
  std::string conninfo_;  // postgresql://annal@127.0.0.1:PORT/annal_bench
  std::string output_;
};

}  // namespace annal::testing
