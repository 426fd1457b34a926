// The `annal` command line against a real annald: every command's human and
// JSON output, every error path and its exit code, and tail's ways of ending.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <mutex>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "annal/client.h"
#include "annald_process.h"
#include "test_util.h"

#ifndef ANNAL_CLI_PATH
#error "ANNAL_CLI_PATH must name the annal binary (set by tests/CMakeLists.txt)"
#endif

namespace annal {
namespace {

using Json = nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::AnnaldProcess;
using testing::TempDir;

constexpr auto kCliTimeout = seconds(30);
const std::regex kRfc3339Micros(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z)");

struct CliResult {
  int exit_code = -1;  // -1: killed or timed out
  std::string out;
  std::string err;
};

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::vector<Json> JsonLines(const std::string& text) {
  std::vector<Json> out;
  for (const std::string& line : Lines(text)) out.push_back(Json::parse(line));
  return out;
}

// A running `annal`, its stdout and stderr read on a thread.
class CliProcess {
 public:
  // `env` entries are NAME=VALUE; ANNAL_HOST and ANNAL_PORT are cleared first
  // so the test's own environment cannot change the outcome.
  CliProcess(const std::vector<std::string>& args, const std::vector<std::string>& env = {}) {
    int out[2], err[2];
    EXPECT_EQ(::pipe2(out, O_CLOEXEC), 0);
    EXPECT_EQ(::pipe2(err, O_CLOEXEC), 0);
    // Everything the child needs is built before fork: between fork and
    // exec a multi-threaded parent's child may not allocate.
    argv_s_ = {ANNAL_CLI_PATH};
    argv_s_.insert(argv_s_.end(), args.begin(), args.end());
    for (char** e = environ; *e != nullptr; ++e) {
      std::string_view var(*e);
      if (!var.starts_with("ANNAL_HOST=") && !var.starts_with("ANNAL_PORT="))
        env_s_.emplace_back(var);
    }
    env_s_.insert(env_s_.end(), env.begin(), env.end());
    std::vector<char*> argv, envp;
    for (auto& a : argv_s_) argv.push_back(a.data());
    argv.push_back(nullptr);
    for (auto& e : env_s_) envp.push_back(e.data());
    envp.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(out[1], STDOUT_FILENO);
      ::dup2(err[1], STDERR_FILENO);
      ::execve(argv[0], argv.data(), envp.data());
      ::_exit(127);
    }
    ::close(out[1]);
    ::close(err[1]);
    reader_ = std::thread([this, o = out[0], e = err[0]] { Read(o, e); });
  }

  ~CliProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (reader_.joinable()) reader_.join();
  }

  // Waits until `pred(stdout, stderr)` holds or the output ends.
  template <typename Pred>
  bool WaitFor(Pred pred, milliseconds timeout = kCliTimeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return pred(out_, err_) || eof_; }) &&
           pred(out_, err_);
  }
  bool WaitForStderr(const std::string& needle) {
    return WaitFor([&](const std::string&, const std::string& err) {
      return err.find(needle) != std::string::npos;
    });
  }

  void Signal(int sig) { ::kill(pid_, sig); }

  // Waits for the exit (killing it after `timeout`) and the end of its output.
  CliResult Finish(milliseconds timeout = kCliTimeout) {
    CliResult r;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    int status = 0;
    while (::waitpid(pid_, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        ADD_FAILURE() << "annal did not exit in time";
        break;
      }
      std::this_thread::sleep_for(milliseconds(5));
    }
    pid_ = -1;
    if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
    reader_.join();
    r.out = out_;
    r.err = err_;
    return r;
  }

 private:
  void Read(int out_fd, int err_fd) {
    pollfd fds[2] = {{out_fd, POLLIN, 0}, {err_fd, POLLIN, 0}};
    int open_fds = 2;
    char buf[65536];
    while (open_fds > 0) {
      if (::poll(fds, 2, -1) < 0) break;
      for (pollfd& p : fds) {
        if (p.fd < 0 || p.revents == 0) continue;
        ssize_t n = ::read(p.fd, buf, sizeof buf);
        if (n <= 0) {
          ::close(p.fd);
          p.fd = -1;
          --open_fds;
          continue;
        }
        std::lock_guard lock(mu_);
        (p.fd == out_fd ? out_ : err_).append(buf, static_cast<size_t>(n));
        cv_.notify_all();
      }
    }
    std::lock_guard lock(mu_);
    eof_ = true;
    cv_.notify_all();
  }

  std::vector<std::string> argv_s_, env_s_;
  pid_t pid_ = -1;
  std::thread reader_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::string out_, err_;  // guarded by mu_
  bool eof_ = false;       // guarded by mu_
};

CliResult RunCli(const std::vector<std::string>& args, const std::vector<std::string>& env = {}) {
  return CliProcess(args, env).Finish();
}

// A loopback port that nothing listens on (bound, then released).
uint16_t UnusedPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t len = sizeof a;
  EXPECT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  ::close(fd);
  return ntohs(a.sin_port);
}

std::string Describe(const CliResult& r) {
  return "exit " + std::to_string(r.exit_code) + "\nstdout:\n" + r.out + "\nstderr:\n" + r.err;
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = AnnaldProcess::Start(dir_.path(), ServerArgs());
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    server_ = std::move(*s);
    port_ = std::to_string(server_->port());
  }

  virtual std::vector<std::string> ServerArgs() const { return {}; }

  // Runs annal against this test's server.
  CliResult Cli(std::vector<std::string> args) {
    args.insert(args.begin(), {"--port", port_});
    return RunCli(args);
  }
  CliResult Ok(std::vector<std::string> args) {
    CliResult r = Cli(args);
    EXPECT_EQ(r.exit_code, 0) << Describe(r);
    return r;
  }
  Json AppendJson(const std::string& stream, const std::string& type, const std::string& data,
                  std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--json", "append", stream, "--type", type, "--data", data};
    args.insert(args.end(), extra.begin(), extra.end());
    CliResult r = Ok(args);
    return r.out.empty() ? Json() : Json::parse(r.out);
  }
  std::unique_ptr<client::Client> Client() {
    auto c = client::Client::Connect({.port = server_->port()});
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return c.ok() ? std::move(*c) : nullptr;
  }

  TempDir dir_{std::string("cli-") +
               ::testing::UnitTest::GetInstance()->current_test_info()->name()};
  std::unique_ptr<AnnaldProcess> server_;
  std::string port_;
};

// ---- append ----

TEST_F(CliTest, AppendPrintsStreamVersionAndPosition) {
  CliResult first =
      Ok({"append", "account-42", "--type", "Opened", "--data", R"({"owner":"ada"})"});
  EXPECT_TRUE(
      std::regex_match(first.out, std::regex("appended account-42 version 0 at position [0-9]+\n")))
      << first.out;
  CliResult second = Ok({"append", "account-42", "--type", "Deposited", "--data", "10"});
  EXPECT_TRUE(std::regex_match(second.out,
                               std::regex("appended account-42 version 1 at position [0-9]+\n")))
      << second.out;
  EXPECT_EQ(second.err, "");
}

TEST_F(CliTest, AppendJsonHasVersionsPositionsAndRecordedAt) {
  Json a = AppendJson("account-1", "Opened", "{}");
  Json b = AppendJson("account-1", "Deposited", R"({"amount":5})", {"--expected", "0"});
  EXPECT_EQ(a["stream"], "account-1");
  EXPECT_EQ(a["first_version"], 0);
  EXPECT_EQ(a["last_version"], 0);
  EXPECT_EQ(b["first_version"], 1);
  EXPECT_EQ(b["last_version"], 1);
  EXPECT_EQ(a["first_position"], a["last_position"]);
  EXPECT_GT(b["first_position"].get<uint64_t>(), a["last_position"].get<uint64_t>());
  EXPECT_EQ(b["idempotent_replay"], false);
  // recorded_at is RFC 3339 UTC with microseconds, and agrees with the raw ns.
  std::string at = b["recorded_at"];
  int64_t ns = b["recorded_at_ns"];
  EXPECT_TRUE(std::regex_match(at, kRfc3339Micros)) << at;
  char micros[8];
  std::snprintf(micros, sizeof micros, "%06lld", static_cast<long long>((ns / 1000) % 1000000));
  EXPECT_EQ(at.substr(20, 6), micros);
  time_t secs = static_cast<time_t>(ns / 1000000000);
  struct tm tm {};
  gmtime_r(&secs, &tm);
  char date[32];
  std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
  EXPECT_EQ(at.substr(0, 19), date);
}

TEST_F(CliTest, AppendWithSameIdTwiceIsAnIdempotentReplay) {
  const std::string id = "0190a5b2-7c3e-7d4f-8a1b-2c3d4e5f6a7b";
  Json first = AppendJson("order-7", "Placed", "{}", {"--id", id});
  Json again = AppendJson("order-7", "Placed", "{}", {"--id", id});
  EXPECT_EQ(first["idempotent_replay"], false);
  EXPECT_EQ(again["idempotent_replay"], true);
  EXPECT_EQ(again["last_version"], first["last_version"]);
  EXPECT_EQ(again["last_position"], first["last_position"]);
  CliResult human = Ok({"append", "order-7", "--type", "Placed", "--data", "{}", "--id", id});
  EXPECT_NE(human.out.find("idempotent replay"), std::string::npos) << human.out;
  Json read = Json::parse(Ok({"--json", "read", "order-7"}).out);
  EXPECT_EQ(read["id"], id);
}

TEST_F(CliTest, AppendMetadataIsStoredAndReadBackAsJson) {
  AppendJson("user-1", "Registered", R"({"name":"ada"})", {"--metadata", R"({"trace":"abc"})"});
  Json e = Json::parse(Ok({"--json", "read", "user-1"}).out);
  EXPECT_EQ(e["metadata"], Json::parse(R"({"trace":"abc"})"));
  EXPECT_EQ(e["data"], Json::parse(R"({"name":"ada"})"));
}

TEST_F(CliTest, AppendRefusesInvalidDataJsonAndSendsNothing) {
  CliResult r = Cli({"append", "account-1", "--type", "Opened", "--data", "{owner: ada}"});
  EXPECT_EQ(r.exit_code, 1) << Describe(r);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(Lines(r.err).size(), 1u) << r.err;
  EXPECT_NE(r.err.find("--data is not valid JSON"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("line 1, column 2"), std::string::npos) << r.err;
  Json info = Json::parse(Ok({"--json", "info", "account-1"}).out);
  EXPECT_EQ(info["exists"], false);
}

TEST_F(CliTest, AppendRefusesInvalidMetadataJson) {
  CliResult r =
      Cli({"append", "account-1", "--type", "Opened", "--data", "{}", "--metadata", "[1,"});
  EXPECT_EQ(r.exit_code, 1) << Describe(r);
  EXPECT_NE(r.err.find("--metadata is not valid JSON"), std::string::npos) << r.err;
  EXPECT_EQ(Json::parse(Ok({"--json", "info", "account-1"}).out)["exists"], false);
}

TEST_F(CliTest, AppendRefusesBadExpectedVersionIdAndEmptyType) {
  CliResult bad_expected =
      Cli({"append", "s", "--type", "T", "--data", "1", "--expected", "latest"});
  EXPECT_EQ(bad_expected.exit_code, 1) << Describe(bad_expected);
  EXPECT_NE(bad_expected.err.find("--expected"), std::string::npos) << bad_expected.err;
  CliResult bad_id = Cli({"append", "s", "--type", "T", "--data", "1", "--id", "not-a-uuid"});
  EXPECT_EQ(bad_id.exit_code, 1) << Describe(bad_id);
  EXPECT_NE(bad_id.err.find("--id must be a UUID"), std::string::npos) << bad_id.err;
  CliResult empty_type = Cli({"append", "s", "--type", "", "--data", "1"});
  EXPECT_EQ(empty_type.exit_code, 1) << Describe(empty_type);
  CliResult missing_data = Cli({"append", "s", "--type", "T"});
  EXPECT_EQ(missing_data.exit_code, 1) << Describe(missing_data);
  EXPECT_NE(missing_data.err.find("--data"), std::string::npos) << missing_data.err;
}

TEST_F(CliTest, WrongExpectedVersionExitsTwoAndPrintsTheActualVersion) {
  for (int i = 0; i < 3; ++i) AppendJson("account-9", "Deposited", std::to_string(i));
  CliResult r =
      Cli({"append", "account-9", "--type", "Withdrawn", "--data", "1", "--expected", "0"});
  EXPECT_EQ(r.exit_code, 2) << Describe(r);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(Lines(r.err).size(), 1u) << r.err;
  EXPECT_NE(r.err.find("wrong expected version"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("expected 0"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("actual version 2"), std::string::npos) << r.err;

  CliResult no_stream =
      Cli({"append", "account-9", "--type", "Opened", "--data", "1", "--expected", "no-stream"});
  EXPECT_EQ(no_stream.exit_code, 2) << Describe(no_stream);
  EXPECT_NE(no_stream.err.find("actual version 2"), std::string::npos) << no_stream.err;

  CliResult exists =
      Cli({"append", "account-10", "--type", "T", "--data", "1", "--expected", "exists"});
  EXPECT_EQ(exists.exit_code, 2) << Describe(exists);
  EXPECT_NE(exists.err.find("does not exist"), std::string::npos) << exists.err;

  // Nothing was written by the refused appends.
  EXPECT_EQ(Json::parse(Ok({"--json", "info", "account-9"}).out)["head_version"], 2);
}

TEST_F(CliTest, ExpectedVersionThatMatchesAppends) {
  AppendJson("cart-1", "Created", "{}", {"--expected", "no-stream"});
  AppendJson("cart-1", "ItemAdded", "{}", {"--expected", "exists"});
  Json r = AppendJson("cart-1", "ItemAdded", "{}", {"--expected", "1"});
  EXPECT_EQ(r["last_version"], 2);
}

// ---- read ----

TEST_F(CliTest, ReadPrintsAlignedTableOfVersionPositionTimeTypeData) {
  AppendJson("account-5", "Opened", R"({ "owner" : "ada" })");
  AppendJson("account-5", "Deposited", R"({"amount": 10})");
  CliResult r = Ok({"read", "account-5"});
  std::vector<std::string> lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 3u) << r.out;
  EXPECT_TRUE(std::regex_match(lines[0], std::regex("VERSION +POSITION +RECORDED_AT +TYPE +DATA")))
      << lines[0];
  EXPECT_TRUE(std::regex_match(
      lines[1],
      std::regex(R"(0 +\d+ +\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z +Opened +\{"owner":"ada"\})")))
      << lines[1];
  EXPECT_TRUE(std::regex_match(lines[2], std::regex(R"(1 +\d+ +\S+Z +Deposited +\{"amount":10\})")))
      << lines[2];
  // Columns line up: DATA starts at the same offset on every line.
  EXPECT_EQ(lines[0].find("DATA"), lines[1].find("{\"owner\""));
  EXPECT_EQ(lines[0].find("DATA"), lines[2].find("{\"amount\""));
}

TEST_F(CliTest, ReadTruncatesLongDataForPeopleButNotInJson) {
  std::string big = "\"" + std::string(500, 'x') + "\"";
  AppendJson("blob-1", "Big", big);
  CliResult human = Ok({"read", "blob-1"});
  std::vector<std::string> lines = Lines(human.out);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_LT(lines[1].size(), 250u) << lines[1];
  EXPECT_NE(lines[1].find("…"), std::string::npos) << lines[1];
  Json e = Json::parse(Ok({"--json", "read", "blob-1"}).out);
  EXPECT_EQ(e["data"], std::string(500, 'x'));
}

TEST_F(CliTest, ReadJsonIsOneObjectPerLineWithEmbeddedJson) {
  AppendJson("account-3", "Opened", R"({"owner":"ada","tags":["a","b"]})",
             {"--metadata", R"({"by":"cli"})"});
  AppendJson("account-3", "Deposited", "42");
  CliResult r = Ok({"read", "account-3", "--json"});  // --json after the command
  std::vector<Json> events = JsonLines(r.out);
  ASSERT_EQ(events.size(), 2u) << r.out;
  const Json& e = events[0];
  EXPECT_EQ(e["stream"], "account-3");
  EXPECT_EQ(e["version"], 0);
  EXPECT_EQ(e["type"], "Opened");
  EXPECT_EQ(e["data"], Json::parse(R"({"owner":"ada","tags":["a","b"]})"));
  EXPECT_EQ(e["metadata"], Json::parse(R"({"by":"cli"})"));
  EXPECT_TRUE(std::regex_match(e["recorded_at"].get<std::string>(), kRfc3339Micros));
  EXPECT_GT(e["recorded_at_ns"].get<int64_t>(), 0);
  EXPECT_GT(e["position"].get<uint64_t>(), 0u);
  EXPECT_EQ(e["id"].get<std::string>().size(), 36u);
  EXPECT_EQ(events[1]["version"], 1);
  EXPECT_EQ(events[1]["data"], 42);
  EXPECT_GT(events[1]["position"].get<uint64_t>(), e["position"].get<uint64_t>());
}

TEST_F(CliTest, ReadShowsPayloadsThatAreNotJsonAsStrings) {
  auto c = Client();
  ASSERT_TRUE(c);
  EventData text{.type = "Note", .metadata = "plain metadata", .payload = "hello\nworld"};
  EventData binary{.type = "Blob", .metadata = "", .payload = std::string("\xff\x00\x01", 3)};
  auto a = c->Append("misc-1", ExpectedVersion::Any(), {text, binary});
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  std::vector<Json> events = JsonLines(Ok({"--json", "read", "misc-1"}).out);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0]["data"], "hello\nworld");
  EXPECT_EQ(events[0]["metadata"], "plain metadata");
  EXPECT_TRUE(events[1]["data"].is_string());  // invalid UTF-8 replaced, still valid JSON
  EXPECT_EQ(events[1]["metadata"], "");
  // For people, still one line per event.
  EXPECT_EQ(Lines(Ok({"read", "misc-1"}).out).size(), 3u);
}

TEST_F(CliTest, ReadBackwardFromAndLimit) {
  for (int i = 0; i < 5; ++i) AppendJson("seq-1", "N", std::to_string(i));
  auto versions = [&](std::vector<std::string> args) {
    args.insert(args.begin(), "--json");
    std::vector<uint64_t> v;
    for (const Json& e : JsonLines(Ok(args).out)) v.push_back(e["version"]);
    return v;
  };
  EXPECT_EQ(versions({"read", "seq-1"}), (std::vector<uint64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(versions({"read", "seq-1", "--backward", "--limit", "2"}),
            (std::vector<uint64_t>{4, 3}));
  EXPECT_EQ(versions({"read", "seq-1", "--from", "2", "--limit", "2"}),
            (std::vector<uint64_t>{2, 3}));
  EXPECT_EQ(versions({"read", "seq-1", "--backward", "--from", "1"}),
            (std::vector<uint64_t>{1, 0}));
  EXPECT_EQ(versions({"read", "seq-1", "--from", "9"}), (std::vector<uint64_t>{}));
  EXPECT_EQ(Ok({"read", "seq-1", "--from", "9"}).out, "(no events)\n");
}

TEST_F(CliTest, ReadLimitSpansManyRequests) {
  auto c = Client();
  ASSERT_TRUE(c);
  std::vector<EventData> events;
  for (int i = 0; i < 2500; ++i) events.push_back({.type = "N", .payload = std::to_string(i)});
  auto a = c->Append("many-1", ExpectedVersion::NoStream(), std::move(events));
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  std::vector<Json> got = JsonLines(Ok({"--json", "read", "many-1", "--limit", "2200"}).out);
  ASSERT_EQ(got.size(), 2200u);
  for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i]["version"], i);
  std::vector<Json> back =
      JsonLines(Ok({"--json", "read", "many-1", "--backward", "--limit", "5000"}).out);
  ASSERT_EQ(back.size(), 2500u);
  EXPECT_EQ(back.front()["version"], 2499);
  EXPECT_EQ(back.back()["version"], 0);
  EXPECT_EQ(Lines(Ok({"read", "many-1"}).out).size(), 101u);  // default --limit 100, plus header
}

TEST_F(CliTest, ReadOfUnknownStreamExitsTwo) {
  CliResult r = Cli({"read", "nope-1"});
  EXPECT_EQ(r.exit_code, 2) << Describe(r);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err, "annal: stream 'nope-1' does not exist\n");
  CliResult j = Cli({"--json", "read", "nope-1"});
  EXPECT_EQ(j.exit_code, 2) << Describe(j);
}

// ---- read-all ----

class CliReadAllTest : public CliTest {
 protected:
  void SetUp() override {
    CliTest::SetUp();
    if (HasFatalFailure()) return;
    AppendJson("account-1", "Opened", "1");
    AppendJson("order-1", "Placed", "2");
    AppendJson("account-2", "Opened", "3");
    AppendJson("account-1", "Deposited", "4");
    AppendJson("order-1", "Shipped", "5");
  }
  std::vector<std::string> StreamsAndTypes(std::vector<std::string> args) {
    args.insert(args.begin(), {"--json", "read-all"});
    std::vector<std::string> out;
    for (const Json& e : JsonLines(Ok(args).out))
      out.push_back(e["stream"].get<std::string>() + "/" + e["type"].get<std::string>());
    return out;
  }
};

TEST_F(CliReadAllTest, ReadsEveryStreamInPositionOrderWithStreamColumn) {
  EXPECT_EQ(StreamsAndTypes({}),
            (std::vector<std::string>{"account-1/Opened", "order-1/Placed", "account-2/Opened",
                                      "account-1/Deposited", "order-1/Shipped"}));
  std::vector<std::string> lines = Lines(Ok({"read-all"}).out);
  ASSERT_EQ(lines.size(), 6u);
  EXPECT_TRUE(
      std::regex_match(lines[0], std::regex("STREAM +VERSION +POSITION +RECORDED_AT +TYPE +DATA")))
      << lines[0];
  EXPECT_TRUE(std::regex_match(lines[2], std::regex(R"(order-1 +0 +\d+ +\S+Z +Placed +2)")))
      << lines[2];
  std::vector<Json> all = JsonLines(Ok({"--json", "read-all"}).out);
  for (size_t i = 1; i < all.size(); ++i)
    EXPECT_GT(all[i]["position"].get<uint64_t>(), all[i - 1]["position"].get<uint64_t>());
}

TEST_F(CliReadAllTest, FromLimitCategoryAndTypes) {
  std::vector<Json> all = JsonLines(Ok({"--json", "read-all"}).out);
  ASSERT_EQ(all.size(), 5u);
  std::string third = std::to_string(all[2]["position"].get<uint64_t>());
  EXPECT_EQ(
      StreamsAndTypes({"--from", third}),
      (std::vector<std::string>{"account-2/Opened", "account-1/Deposited", "order-1/Shipped"}));
  EXPECT_EQ(StreamsAndTypes({"--limit", "2"}),
            (std::vector<std::string>{"account-1/Opened", "order-1/Placed"}));
  EXPECT_EQ(StreamsAndTypes({"--category", "order"}),
            (std::vector<std::string>{"order-1/Placed", "order-1/Shipped"}));
  EXPECT_EQ(StreamsAndTypes({"--type", "Opened", "Shipped"}),
            (std::vector<std::string>{"account-1/Opened", "account-2/Opened", "order-1/Shipped"}));
  EXPECT_EQ(StreamsAndTypes({"--type", "Opened", "--type", "Placed"}),
            (std::vector<std::string>{"account-1/Opened", "order-1/Placed", "account-2/Opened"}));
  EXPECT_EQ(StreamsAndTypes({"--category", "account", "--type", "Deposited"}),
            (std::vector<std::string>{"account-1/Deposited"}));
  EXPECT_EQ(StreamsAndTypes({"--category", "nothing"}), (std::vector<std::string>{}));
  EXPECT_EQ(Ok({"read-all", "--category", "nothing"}).out, "(no events)\n");
}

TEST_F(CliTest, ReadAllFillsLimitPastEventsTheFilterSkips) {
  auto c = Client();
  ASSERT_TRUE(c);
  // Many more non-matching events than one request asks for, then matches.
  std::vector<EventData> noise;
  for (int i = 0; i < 3000; ++i) noise.push_back({.type = "Noise", .payload = "0"});
  ASSERT_TRUE(c->Append("noise-1", ExpectedVersion::Any(), noise).ok());
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(c->Append("wanted-" + std::to_string(i), ExpectedVersion::Any(),
                          {{.type = "Hit", .payload = "1"}})
                    .ok());
  ASSERT_TRUE(c->Append("noise-1", ExpectedVersion::Any(), noise).ok());
  ASSERT_TRUE(
      c->Append("wanted-9", ExpectedVersion::Any(), {{.type = "Hit", .payload = "1"}}).ok());
  std::vector<Json> got =
      JsonLines(Ok({"--json", "read-all", "--category", "wanted", "--limit", "4"}).out);
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got[3]["stream"], "wanted-9");
  got = JsonLines(Ok({"--json", "read-all", "--type", "Hit"}).out);
  EXPECT_EQ(got.size(), 4u);
}

// ---- info ----

TEST_F(CliTest, InfoShowsHeadVersionCountAndTimes) {
  Json first = AppendJson("account-4", "Opened", "{}");
  AppendJson("account-4", "Deposited", "1");
  Json last = AppendJson("account-4", "Deposited", "2");
  CliResult human = Ok({"info", "account-4"});
  EXPECT_NE(human.out.find("account-4"), std::string::npos) << human.out;
  EXPECT_TRUE(std::regex_search(human.out, std::regex(R"(exists: +yes)"))) << human.out;
  EXPECT_TRUE(std::regex_search(human.out, std::regex(R"(head version: +2\n)"))) << human.out;
  EXPECT_TRUE(std::regex_search(human.out, std::regex(R"(event count: +3\n)"))) << human.out;
  EXPECT_NE(human.out.find(first["recorded_at"].get<std::string>()), std::string::npos)
      << human.out;
  EXPECT_NE(human.out.find(last["recorded_at"].get<std::string>()), std::string::npos) << human.out;

  Json j = Json::parse(Ok({"info", "account-4", "--json"}).out);
  EXPECT_EQ(j["stream"], "account-4");
  EXPECT_EQ(j["exists"], true);
  EXPECT_EQ(j["head_version"], 2);
  EXPECT_EQ(j["event_count"], 3);
  EXPECT_EQ(j["first_recorded_at_ns"], first["recorded_at_ns"]);
  EXPECT_EQ(j["last_recorded_at_ns"], last["recorded_at_ns"]);
  EXPECT_EQ(j["first_recorded_at"], first["recorded_at"]);
  EXPECT_EQ(j["last_recorded_at"], last["recorded_at"]);
}

TEST_F(CliTest, InfoOnUnknownStreamSaysItDoesNotExist) {
  CliResult human = Ok({"info", "ghost-1"});
  EXPECT_TRUE(std::regex_search(human.out, std::regex(R"(exists: +no)"))) << human.out;
  Json j = Json::parse(Ok({"--json", "info", "ghost-1"}).out);
  EXPECT_EQ(j, Json::parse(R"({"stream":"ghost-1","exists":false})"));
}

// ---- state and snapshots ----

// annald folds "account" with json-merge-patch and snapshots it every 2
// events; "order" has no reducer.
class CliStateTest : public CliTest {
 protected:
  std::vector<std::string> ServerArgs() const override {
    return {"--reducer", "account=json-merge-patch", "--snapshot-every", "2"};
  }
  void SetUp() override {
    CliTest::SetUp();
    if (HasFatalFailure()) return;
    for (const char* data : {R"({"owner":"ada","balance":0})", R"({"balance":100})",
                             R"({"balance":70,"note":"atm"})"}) {
      appended_.push_back(AppendJson("account-42", "Changed", data));
      // Apart in time, so that --at can fall between two events.
      std::this_thread::sleep_for(milliseconds(3));
    }
  }
  int64_t RecordedAt(size_t i) { return appended_.at(i)["recorded_at_ns"].get<int64_t>(); }
  CliResult Fails(std::vector<std::string> args, int code) {
    CliResult r = Cli(args);
    EXPECT_EQ(r.exit_code, code) << Describe(r);
    EXPECT_EQ(r.out, "") << Describe(r);
    return r;
  }

  std::vector<Json> appended_;
};

// RFC 3339 with all nine fractional digits, so no event is rounded away.
std::string Rfc3339Nanos(int64_t ns) {
  time_t seconds = static_cast<time_t>(ns / 1'000'000'000);
  struct tm tm {};
  gmtime_r(&seconds, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%09lldZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<long long>(ns % 1'000'000'000));
  return buf;
}

TEST_F(CliStateTest, StateShowsVersionTimeHowComputedAndPrettyJson) {
  CliResult r = Ok({"state", "account-42"});
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(^stream: +account-42\nversion: +2\n)")))
      << r.out;
  EXPECT_NE(r.out.find("recorded at:   " + appended_[2]["recorded_at"].get<std::string>() + "\n"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("reducer:       json-merge-patch (schema 1)\n"), std::string::npos) << r.out;
  // The background snapshot at version 1 may or may not be there yet.
  EXPECT_TRUE(std::regex_search(
      r.out, std::regex(R"(computed from: (a full replay of 3 events|the snapshot at version 1 )"
                        R"(and 1 event after it)\n)")))
      << r.out;
  const std::string pretty =
      "state:\n{\n  \"balance\": 70,\n  \"note\": \"atm\",\n  \"owner\": \"ada\"\n}\n";
  ASSERT_GE(r.out.size(), pretty.size());
  EXPECT_EQ(r.out.substr(r.out.size() - pretty.size()), pretty) << r.out;
  EXPECT_EQ(r.err, "");
}

TEST_F(CliStateTest, StateJsonEmbedsTheStateAndSaysHowItWasComputed) {
  Json j = Json::parse(Ok({"--json", "state", "account-42"}).out);
  EXPECT_EQ(j["stream"], "account-42");
  EXPECT_EQ(j["version"], 2);
  EXPECT_EQ(j["recorded_at_ns"], appended_[2]["recorded_at_ns"]);
  EXPECT_EQ(j["recorded_at"], appended_[2]["recorded_at"]);
  EXPECT_EQ(j["reducer"], "json-merge-patch");
  EXPECT_EQ(j["schema_version"], 1);
  EXPECT_EQ(j["state"], Json::parse(R"({"owner":"ada","balance":70,"note":"atm"})"));
  EXPECT_FALSE(j.contains("as_of"));
  uint64_t from = j["snapshot_version"].is_null() ? 0 : j["snapshot_version"].get<uint64_t>() + 1;
  EXPECT_EQ(from + j["events_folded"].get<uint64_t>(), 3u) << j.dump();
}

TEST_F(CliStateTest, StateAtVersionAndAsOfTime) {
  Json v0 = Json::parse(Ok({"--json", "state", "account-42", "--version", "0"}).out);
  EXPECT_EQ(v0["version"], 0);
  EXPECT_EQ(v0["state"], Json::parse(R"({"owner":"ada","balance":0})"));

  // Exactly at event 1's recorded_at, given in nanoseconds or in RFC 3339.
  for (const std::string& at : {std::to_string(RecordedAt(1)), Rfc3339Nanos(RecordedAt(1))}) {
    Json j = Json::parse(Ok({"--json", "state", "account-42", "--at", at}).out);
    EXPECT_EQ(j["version"], 1) << at;
    EXPECT_EQ(j["state"], Json::parse(R"({"owner":"ada","balance":100})")) << at;
    EXPECT_EQ(j["as_of_ns"], RecordedAt(1)) << at;
  }
  Json before = Json::parse(
      Ok({"--json", "state", "account-42", "--at", std::to_string(RecordedAt(1) - 1)}).out);
  EXPECT_EQ(before["version"], 0);

  CliResult human = Ok({"state", "account-42", "--at", Rfc3339Nanos(RecordedAt(2) + 1000)});
  EXPECT_TRUE(std::regex_search(human.out, std::regex(R"(\nas of: +\d{4}-.*Z\n)"))) << human.out;
  EXPECT_TRUE(std::regex_search(human.out, std::regex(R"(\nversion: +2\n)"))) << human.out;
}

TEST_F(CliStateTest, StateBeforeTheFirstEventSaysDidNotExistAndExitsTwo) {
  CliResult r = Fails({"state", "account-42", "--at", "2000-01-01T00:00:00Z"}, 2);
  EXPECT_EQ(r.err,
            "annal: stream 'account-42' did not exist at 2000-01-01T00:00:00.000000Z: its "
            "first event was recorded at " +
                appended_[0]["recorded_at"].get<std::string>() + "\n");
  Fails({"--json", "state", "account-42", "--at", "2000-01-01T00:00:00Z"}, 2);
}

// The "did not exist" message echoes the time as parsed, in UTC.
TEST_F(CliStateTest, AtAcceptsRfc3339WithFractionsAndOffsetsAndNanoseconds) {
  const std::pair<std::string, std::string> cases[] = {
      {"2000-01-01T00:00:00Z", "2000-01-01T00:00:00.000000Z"},
      {"2000-01-01t02:00:00.5+02:00", "2000-01-01T00:00:00.500000Z"},
      {"1999-12-31T19:30:00.123456789-04:30", "2000-01-01T00:00:00.123456Z"},
      {"2000-02-29T12:00:00z", "2000-02-29T12:00:00.000000Z"},
      {"946684800000000000", "2000-01-01T00:00:00.000000Z"},
  };
  for (const auto& [at, shown] : cases) {
    CliResult r = Fails({"state", "account-42", "--at", at}, 2);
    EXPECT_NE(r.err.find("did not exist at " + shown + ":"), std::string::npos) << at << "\n"
                                                                                << Describe(r);
  }
}

TEST_F(CliStateTest, BadTimesAndBothTargetsAreRefusedBeforeSending) {
  for (const char* at : {"yesterday", "2026-11-26", "2026-11-26T10:00:00", "2100-02-29T00:00:00Z",
                         "2026-11-26T24:00:00Z", "2026-11-26T10:00:00.1234567890Z",
                         "2026-11-26T10:00:00Z junk", "99999999999999999999"}) {
    CliResult r = Fails({"state", "account-42", "--at", at}, 1);
    EXPECT_EQ(r.err.rfind("annal: --at ", 0), 0u) << at << "\n" << Describe(r);
    EXPECT_EQ(Lines(r.err).size(), 1u) << Describe(r);
  }
  CliResult both = Fails({"state", "account-42", "--at", "0", "--version", "1"}, 1);
  EXPECT_NE(both.err.find("excludes"), std::string::npos) << Describe(both);
}

TEST_F(CliStateTest, StateOfUnknownStreamOrVersionPastTheHeadExitsTwo) {
  EXPECT_EQ(Fails({"state", "account-404"}, 2).err, "annal: stream 'account-404' does not exist\n");
  EXPECT_EQ(Fails({"state", "account-42", "--version", "9"}, 2).err,
            "annal: stream 'account-42' has no version 9: its last version is 2\n");
}

TEST_F(CliStateTest, StateWithoutAReducerSaysHowToConfigureOne) {
  AppendJson("order-1", "Placed", "{}");
  CliResult r = Fails({"state", "order-1"}, 2);
  EXPECT_NE(r.err.find("no reducer configured for category 'order'"), std::string::npos)
      << Describe(r);
  EXPECT_NE(r.err.find("annald with --reducer order=json-merge-patch"), std::string::npos)
      << Describe(r);
  EXPECT_EQ(Lines(r.err).size(), 1u) << Describe(r);
}

TEST_F(CliStateTest, SnapshotsListsVersionTimesReducerSchemaAndSize) {
  AppendJson("account-42", "Changed", R"({"balance":60})");  // version 3: snapshots at 1 and 3
  std::vector<Json> listed;
  for (int i = 0; i < 500 && listed.size() < 2; ++i) {
    listed = JsonLines(Ok({"--json", "snapshots", "account-42"}).out);
    if (listed.size() < 2) std::this_thread::sleep_for(milliseconds(20));
  }
  ASSERT_EQ(listed.size(), 2u);
  EXPECT_EQ(listed[0]["version"], 1);
  EXPECT_EQ(listed[1]["version"], 3);
  EXPECT_EQ(listed[0]["recorded_at_ns"], appended_[1]["recorded_at_ns"]);
  for (const Json& s : listed) {
    EXPECT_EQ(s["stream"], "account-42");
    EXPECT_EQ(s["reducer"], "json-merge-patch");
    EXPECT_EQ(s["schema_version"], 1);
    EXPECT_GT(s["size_bytes"].get<uint64_t>(), 0u);
    EXPECT_TRUE(std::regex_match(s["taken_at"].get<std::string>(), kRfc3339Micros)) << s.dump();
  }
  EXPECT_EQ(listed[0]["size_bytes"], std::string(R"({"balance":100,"owner":"ada"})").size());

  std::vector<std::string> table = Lines(Ok({"snapshots", "account-42"}).out);
  ASSERT_EQ(table.size(), 3u);
  EXPECT_TRUE(std::regex_match(
      table[0], std::regex("VERSION +RECORDED_AT +REDUCER +SCHEMA +BYTES +TAKEN_AT")))
      << table[0];
  EXPECT_TRUE(std::regex_match(table[1], std::regex(R"(1 +\S+Z +json-merge-patch +1 +\d+ +\S+Z)")))
      << table[1];
  EXPECT_EQ(table[2].rfind("3 ", 0), 0u) << table[2];
}

TEST_F(CliStateTest, SnapshotsOfAStreamWithoutAnyAndOfAnUnknownStream) {
  AppendJson("order-1", "Placed", "{}");
  EXPECT_EQ(Ok({"snapshots", "order-1"}).out, "(no snapshots)\n");
  EXPECT_EQ(Ok({"--json", "snapshots", "order-1"}).out, "");
  EXPECT_EQ(Fails({"snapshots", "order-404"}, 2).err, "annal: stream 'order-404' does not exist\n");
}

// ---- connecting, options and usage ----

TEST(CliConnectTest, NothingListeningExitsThreeWithExactMessage) {
  const std::string port = std::to_string(UnusedPort());
  const std::string expected =
      "annal: cannot connect to 127.0.0.1:" + port + " — is annald running?\n";
  const std::vector<std::vector<std::string>> commands = {
      {"append", "s-1", "--type", "T", "--data", "{}"},
      {"read", "s-1"},
      {"read-all"},
      {"info", "s-1"},
      {"tail", "s-1"},
      {"tail", "--all"},
      {"--json", "read", "s-1"},
  };
  for (std::vector<std::string> args : commands) {
    args.insert(args.begin(), {"--port", port});
    CliResult r = RunCli(args);
    EXPECT_EQ(r.exit_code, 3) << args[2] << "\n" << Describe(r);
    EXPECT_EQ(r.err, expected) << args[2];
    EXPECT_EQ(r.out, "") << args[2];
  }
}

TEST(CliConnectTest, EnvironmentPortIsUsedAndFlagOverridesIt) {
  const std::string port = std::to_string(UnusedPort());
  CliResult env = RunCli({"info", "s-1"}, {"ANNAL_PORT=" + port});
  EXPECT_EQ(env.exit_code, 3) << Describe(env);
  EXPECT_NE(env.err.find("127.0.0.1:" + port), std::string::npos) << env.err;
  CliResult host = RunCli({"info", "s-1"}, {"ANNAL_PORT=" + port, "ANNAL_HOST=127.0.0.2"});
  EXPECT_EQ(host.exit_code, 3) << Describe(host);
  EXPECT_NE(host.err.find("cannot connect to 127.0.0.2:" + port), std::string::npos) << host.err;
  CliResult flag = RunCli({"--port", "1", "info", "s-1"}, {"ANNAL_PORT=" + port});
  EXPECT_NE(flag.err.find("127.0.0.1:1 "), std::string::npos) << flag.err;
}

TEST_F(CliTest, EnvironmentReachesTheServer) {
  CliResult r = RunCli({"info", "s-1", "--json"}, {"ANNAL_HOST=127.0.0.1", "ANNAL_PORT=" + port_});
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
}

TEST(CliUsageTest, BadArgumentsExitOneWithOneLine) {
  const std::vector<std::vector<std::string>> cases = {
      {},
      {"frobnicate"},
      {"read"},
      {"read", "s", "--limit", "0"},
      {"read", "s", "--bogus"},
      {"--port", "70000", "info", "s"},
      {"tail"},
      {"tail", "s", "--all"},
      {"tail", "s", "--category", "x"},
      {"tail", "--all", "--count", "0"},
  };
  for (const auto& args : cases) {
    CliResult r = RunCli(args);
    std::string what = args.empty() ? "(none)" : args[0];
    EXPECT_EQ(r.exit_code, 1) << what << "\n" << Describe(r);
    EXPECT_EQ(Lines(r.err).size(), 1u) << what << "\n" << r.err;
    EXPECT_EQ(r.err.rfind("annal: ", 0), 0u) << r.err;
  }
  CliResult help = RunCli({"--help"});
  EXPECT_EQ(help.exit_code, 0);
  for (const char* command : {"append", "read", "read-all", "tail", "info"})
    EXPECT_NE(help.out.find(command), std::string::npos) << command;
  CliResult tail_help = RunCli({"tail", "--help"});
  EXPECT_EQ(tail_help.exit_code, 0);
  EXPECT_NE(tail_help.out.find("--until-caught-up"), std::string::npos);
  EXPECT_NE(tail_help.out.find("Without --from"), std::string::npos);
}

// ---- tail ----

TEST_F(CliTest, TailCountPrintsOnlyNewEventsAppendedConcurrently) {
  AppendJson("live-1", "Old", "0");
  AppendJson("live-1", "Old", "1");
  CliProcess tail({"--port", port_, "--json", "tail", "live-1", "--count", "3"});
  ASSERT_TRUE(tail.WaitForStderr("tailing live-1 from version 2"));
  std::thread writer([&] {
    for (int i = 2; i < 6; ++i) AppendJson("live-1", "New", std::to_string(i));
  });
  CliResult r = tail.Finish();
  writer.join();
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
  std::vector<Json> events = JsonLines(r.out);
  ASSERT_EQ(events.size(), 3u) << r.out;
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(events[i]["version"], 2 + i);
    EXPECT_EQ(events[i]["type"], "New");
    EXPECT_EQ(events[i]["data"], 2 + i);
  }
}

TEST_F(CliTest, TailOfStreamNotYetCreatedSeesItsFirstEvent) {
  CliProcess tail({"--port", port_, "tail", "fresh-1", "--count", "2"});
  ASSERT_TRUE(tail.WaitForStderr("tailing fresh-1 from version 0"));
  AppendJson("fresh-1", "Created", R"({"a":1})");
  AppendJson("other-1", "Unrelated", "0");
  AppendJson("fresh-1", "Changed", R"({"a":2})");
  CliResult r = tail.Finish();
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
  std::vector<std::string> lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 2u) << r.out;
  EXPECT_TRUE(std::regex_match(lines[0], std::regex(R"(0  \d+  \S+Z  Created  \{"a":1\})")))
      << lines[0];
  EXPECT_TRUE(std::regex_match(lines[1], std::regex(R"(1  \d+  \S+Z  Changed  \{"a":2\})")))
      << lines[1];
}

TEST_F(CliTest, TailFromVersionUntilCaughtUpPrintsStoredEventsAndExits) {
  for (int i = 0; i < 4; ++i) AppendJson("hist-1", "N", std::to_string(i));
  CliResult r = Ok({"--json", "tail", "hist-1", "--from", "1", "--until-caught-up"});
  std::vector<Json> events = JsonLines(r.out);
  ASSERT_EQ(events.size(), 3u) << r.out;
  for (int i = 0; i < 3; ++i) EXPECT_EQ(events[i]["version"], 1 + i);
  // Without --from only new events count: none were stored after the head.
  EXPECT_EQ(Ok({"tail", "hist-1", "--until-caught-up"}).out, "");
}

TEST_F(CliTest, TailAllUntilCaughtUpWithFilter) {
  AppendJson("account-1", "Opened", "1");
  AppendJson("order-1", "Placed", "2");
  AppendJson("account-2", "Opened", "3");
  std::vector<Json> all =
      JsonLines(Ok({"--json", "tail", "--all", "--from", "1", "--until-caught-up"}).out);
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[1]["stream"], "order-1");
  std::vector<Json> accounts = JsonLines(
      Ok({"--json", "tail", "--all", "--from", "1", "--category", "account", "--until-caught-up"})
          .out);
  ASSERT_EQ(accounts.size(), 2u);
  EXPECT_EQ(accounts[1]["stream"], "account-2");
  std::vector<Json> placed = JsonLines(
      Ok({"--json", "tail", "--all", "--from", "1", "--type", "Placed", "--until-caught-up"}).out);
  ASSERT_EQ(placed.size(), 1u);
  EXPECT_EQ(placed[0]["type"], "Placed");
  CliResult human = Ok({"tail", "--all", "--from", "1", "--until-caught-up"});
  EXPECT_TRUE(std::regex_search(human.out, std::regex(R"(order-1  0  \d+  \S+Z  Placed  2)")))
      << human.out;
}

TEST_F(CliTest, TailAllStartsAfterTheLatestEvent) {
  Json last;
  for (int i = 0; i < 13; ++i)
    last = AppendJson("before-" + std::to_string(i % 3), "Old", std::to_string(i));
  const uint64_t next = last["last_position"].get<uint64_t>() + 1;
  CliProcess tail({"--port", port_, "--json", "tail", "--all", "--count", "2"});
  ASSERT_TRUE(tail.WaitForStderr("tailing all events from position " + std::to_string(next)));
  AppendJson("after-1", "New", "1");
  AppendJson("after-2", "New", "2");
  CliResult r = tail.Finish();
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
  std::vector<Json> events = JsonLines(r.out);
  ASSERT_EQ(events.size(), 2u) << r.out;
  EXPECT_EQ(events[0]["stream"], "after-1");
  EXPECT_EQ(events[1]["stream"], "after-2");
}

TEST_F(CliTest, TailAllOnEmptyStoreStartsAtTheBeginning) {
  CliProcess tail({"--port", port_, "--json", "tail", "--all", "--count", "1"});
  ASSERT_TRUE(tail.WaitForStderr("tailing all events from position 1"));
  AppendJson("first-1", "New", "1");
  CliResult r = tail.Finish();
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
  ASSERT_EQ(JsonLines(r.out).size(), 1u) << r.out;
}

TEST_F(CliTest, TailExitsZeroOnCtrlC) {
  AppendJson("quiet-1", "Old", "0");
  CliProcess tail({"--port", port_, "tail", "quiet-1"});
  ASSERT_TRUE(tail.WaitForStderr("Ctrl-C to stop"));
  AppendJson("quiet-1", "New", "1");
  ASSERT_TRUE(tail.WaitFor([](const std::string& out, const std::string&) {
    return out.find("New") != std::string::npos;
  }));
  auto start = std::chrono::steady_clock::now();
  tail.Signal(SIGINT);
  CliResult r = tail.Finish(seconds(5));
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(2));
  EXPECT_EQ(Lines(r.out).size(), 1u) << r.out;
}

TEST_F(CliTest, TailReportsLostServer) {
  CliProcess tail({"--port", port_, "tail", "gone-1"});
  ASSERT_TRUE(tail.WaitForStderr("Ctrl-C to stop"));
  server_->Kill(SIGKILL);
  // The client reconnects with backoff, then gives up and drops the subscription.
  CliResult r = tail.Finish(seconds(60));
  EXPECT_EQ(r.exit_code, 3) << Describe(r);
  // The "tailing" notice, the client's notes on reconnecting, then one error.
  std::vector<std::string> err = Lines(r.err);
  ASSERT_GE(err.size(), 2u) << r.err;
  EXPECT_EQ(err.back().rfind("annal: tail: ", 0), 0u) << err.back();
  EXPECT_NE(err.back().find("cannot connect to 127.0.0.1:" + port_ + " — is annald running?"),
            std::string::npos)
      << err.back();
}

}  // namespace
}  // namespace annal
