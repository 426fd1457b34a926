// The C++ client against a real annald: each operation's round trip,
// pipelining, appends in flight when the server is killed (written exactly
// once after the reconnect), and subscriptions that hand over from catch-up
// to live without gap or duplicate, across a server restart too.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "annal/client.h"
#include "annald_process.h"
#include "test_util.h"

namespace annal {
namespace {

using client::Client;
using client::ClientOptions;
using client::Filter;
using client::Subscription;
using client::SubscriptionHandler;
using testing::AnnaldProcess;
using testing::Event;
using testing::IdFrom;
using testing::TempDir;
using namespace std::chrono_literals;

std::string CurrentTestName() { return ::testing::UnitTest::GetInstance()->current_test_info()->name(); }

// What a subscription delivered, for the test thread to wait on and check.
class Recorder {
 public:
  SubscriptionHandler Handler() {
    SubscriptionHandler h;
    h.on_event = [this](const RecordedEvent& e) {
      std::lock_guard lock(mu_);
      events_.push_back(e);
      cv_.notify_all();
    };
    h.on_caught_up = [this] {
      std::lock_guard lock(mu_);
      if (caught_up_ == 0) events_before_caught_up_ = events_.size();
      ++caught_up_;
      cv_.notify_all();
    };
    h.on_dropped = [this](const Status& s) {
      std::lock_guard lock(mu_);
      dropped_.push_back(s);
      cv_.notify_all();
    };
    return h;
  }

  bool WaitForEvents(size_t n, std::chrono::milliseconds timeout = 60s) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return events_.size() >= n; });
  }
  bool WaitForCaughtUp(std::chrono::milliseconds timeout = 30s) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return caught_up_ > 0; });
  }
  bool WaitForDropped(std::chrono::milliseconds timeout = 30s) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return !dropped_.empty(); });
  }
  std::vector<RecordedEvent> events() {
    std::lock_guard lock(mu_);
    return events_;
  }
  size_t count() {
    std::lock_guard lock(mu_);
    return events_.size();
  }
  int caught_up() {
    std::lock_guard lock(mu_);
    return caught_up_;
  }
  size_t events_before_caught_up() {
    std::lock_guard lock(mu_);
    return events_before_caught_up_;
  }
  std::vector<Status> dropped() {
    std::lock_guard lock(mu_);
    return dropped_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<RecordedEvent> events_;
  int caught_up_ = 0;
  size_t events_before_caught_up_ = 0;
  std::vector<Status> dropped_;
};

// Collects async append results and waits for them.
class AppendResults {
 public:
  explicit AppendResults(size_t n) : results_(n) {}
  Client::AppendCallback Callback(size_t i) {
    return [this, i](Result<AppendResult> r) {
      std::lock_guard lock(mu_);
      results_[i] = std::move(r);
      ++completed_;
      cv_.notify_all();
    };
  }
  // Waits until fewer than `limit` of `submitted` are unanswered.
  void WaitForRoom(size_t submitted, size_t limit) {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return submitted - completed_ < limit; });
  }
  bool WaitForCompleted(size_t n, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return completed_ >= n; });
  }
  size_t completed() {
    std::lock_guard lock(mu_);
    return completed_;
  }
  const std::optional<Result<AppendResult>>& operator[](size_t i) const { return results_[i]; }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::optional<Result<AppendResult>>> results_;
  size_t completed_ = 0;
};

// A loopback TCP proxy in front of annald that the test can cut: Cut()
// breaks every connection through it at once, as a network failure would,
// while the server runs on; later connections go through again.
class CuttableProxy {
 public:
  explicit CuttableProxy(uint16_t target_port) : target_port_(target_port) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr = Loopback(0);
    socklen_t len = sizeof addr;
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(listen_fd_, 64) != 0 ||
        ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
      return;
    port_ = ntohs(addr.sin_port);
    acceptor_ = std::thread([this] { Accept(); });
  }
  ~CuttableProxy() {
    ::shutdown(listen_fd_, SHUT_RDWR);
    if (acceptor_.joinable()) acceptor_.join();
    ::close(listen_fd_);
    Cut();
  }
  uint16_t port() const { return port_; }

  // Connections accepted while it runs are left alone.
  void Cut() {
    std::vector<Link> links;
    {
      std::lock_guard lock(mu_);
      links.swap(links_);
    }
    for (Link& l : links) {
      ::shutdown(l.client, SHUT_RDWR);
      ::shutdown(l.server, SHUT_RDWR);
    }
    for (Link& l : links) {
      l.up.join();
      l.down.join();
      ::close(l.client);
      ::close(l.server);
    }
  }

 private:
  static sockaddr_in Loopback(uint16_t port) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return addr;
  }

  void Accept() {
    while (true) {
      int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (client < 0) return;
      int server = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in addr = Loopback(target_port_);
      if (::connect(server, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        ::close(server);
        ::close(client);
        continue;
      }
      std::lock_guard lock(mu_);
      links_.push_back(Link{client, server, std::thread([client, server] { Pump(client, server); }),
                            std::thread([client, server] { Pump(server, client); })});
    }
  }

  // Copies bytes from one socket to the other until either side ends.
  static void Pump(int from, int to) {
    char buf[64 * 1024];
    while (true) {
      ssize_t n = ::recv(from, buf, sizeof buf, 0);
      if (n <= 0) break;
      if (::send(to, buf, static_cast<size_t>(n), MSG_NOSIGNAL) != n) break;
    }
    ::shutdown(from, SHUT_RDWR);
    ::shutdown(to, SHUT_RDWR);
  }

  uint16_t target_port_;
  uint16_t port_ = 0;
  int listen_fd_ = -1;
  std::thread acceptor_;
  // One connection through the proxy: its two sockets, and a thread per direction.
  struct Link {
    int client, server;
    std::thread up, down;
  };
  std::mutex mu_;
  std::vector<Link> links_;  // guarded by mu_
};

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::make_unique<TempDir>("client-" + CurrentTestName());
    StartServer();
  }

  void TearDown() override {
    if (!HasFailure()) return;
    for (const std::string& l : ClientLog()) std::fprintf(stderr, "client log: %s\n", l.c_str());
    if (server_)
      for (const std::string& l : server_->Lines()) std::fprintf(stderr, "server log: %s\n", l.c_str());
  }

  // On port_ when it is set (so that a restarted server is found again).
  void StartServer(std::vector<std::string> args = {}) {
    auto p = port_ == 0 ? AnnaldProcess::Start(dir_->path(), std::move(args))
                        : AnnaldProcess::StartOnPort(dir_->path(), port_, std::move(args));
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    server_ = std::move(*p);
  }

  void RestartServer() {
    server_->Kill(SIGKILL);
    server_.reset();
    StartServer();
  }

  ClientOptions Options() {
    ClientOptions o;
    o.port = server_->port();
    o.client_name = "client-test";
    o.log = [this](const std::string& line) {
      std::lock_guard lock(log_mu_);
      log_.push_back(line);
    };
    return o;
  }

  // Options for a client that reaches the server through `proxy` and comes
  // back quickly when the proxy cuts its connection.
  ClientOptions ThroughProxy(const CuttableProxy& proxy) {
    ClientOptions o = Options();
    o.port = proxy.port();
    o.reconnect_backoff_initial = 10ms;
    return o;
  }

  std::unique_ptr<Client> Connect(const ClientOptions& o) {
    auto c = Client::Connect(o);
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return c.ok() ? std::move(*c) : nullptr;
  }

  std::vector<std::string> ClientLog() {
    std::lock_guard lock(log_mu_);
    return log_;
  }
  bool ClientLogged(const std::string& needle) {
    for (const std::string& l : ClientLog())
      if (l.find(needle) != std::string::npos) return true;
    return false;
  }

  std::unique_ptr<TempDir> dir_;
  uint16_t port_ = 0;
  std::unique_ptr<AnnaldProcess> server_;
  std::mutex log_mu_;
  std::vector<std::string> log_;
};

// Tests that restart the server on the same port.
class ClientRestartTest : public ClientTest {
 protected:
  void SetUp() override {
    dir_ = std::make_unique<TempDir>("client-" + CurrentTestName());
    port_ = AnnaldProcess::FreeLoopbackPort();
    ASSERT_NE(port_, 0);
    StartServer();
  }

  // Patient enough to outlast a restart.
  ClientOptions Options() {
    ClientOptions o = ClientTest::Options();
    o.max_reconnect_attempts = 200;
    o.reconnect_backoff_initial = 10ms;
    o.reconnect_backoff_max = 100ms;
    o.request_timeout = 60s;
    return o;
  }
};

std::vector<EventData> Events(const std::string& type, int first, int n) {
  std::vector<EventData> events;
  for (int i = first; i < first + n; ++i) events.push_back(Event(type, std::to_string(i)));
  return events;
}

// Reads the whole global log (matching `filter`) page by page.
std::vector<RecordedEvent> ReadWholeLog(Client& c, const Filter& filter = {}, uint32_t page = 1000) {
  std::vector<RecordedEvent> all;
  GlobalPosition from(1);
  for (int pages = 0; pages < 100'000; ++pages) {
    auto r = c.ReadAll(from, page, filter);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (!r.ok()) break;
    EXPECT_GE(r->next_position, from);
    if (r->events.empty() && r->next_position == from) break;
    for (RecordedEvent& e : r->events) all.push_back(std::move(e));
    from = r->next_position;
  }
  return all;
}

// --- round trips

TEST_F(ClientTest, AppendWithEachExpectedVersionKind) {
  auto c = Connect(Options());
  ASSERT_NE(c, nullptr);
  auto r = c->Append("account-1", ExpectedVersion::NoStream(), {Event("AccountOpened", R"({"owner":"ada"})")});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->first_version, StreamVersion(0));
  EXPECT_EQ(r->last_version, StreamVersion(0));
  EXPECT_FALSE(r->idempotent_replay);
  EXPECT_GT(r->recorded_at_ns, 0);
  GlobalPosition previous = r->last_position;

  r = c->Append("account-1", ExpectedVersion::Exact(0), {Event("Credited", "10"), Event("Credited", "20")});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->first_version, StreamVersion(1));
  EXPECT_EQ(r->last_version, StreamVersion(2));
  EXPECT_GT(r->first_position, previous);
  EXPECT_GT(r->last_position, r->first_position);
  previous = r->last_position;

  r = c->Append("account-1", ExpectedVersion::StreamExists(), {Event("Debited", "5")});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->first_version, StreamVersion(3));
  EXPECT_GT(r->first_position, previous);

  r = c->Append("account-1", ExpectedVersion::Any(), {Event("Debited", "1")});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->first_version, StreamVersion(4));

  r = c->Append("account-2", ExpectedVersion::Any(), {Event("AccountOpened", "{}")});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->first_version, StreamVersion(0));
}

TEST_F(ClientTest, WrongExpectedVersionCarriesTheActualVersion) {
  auto c = Connect(Options());
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(c->Append("account-1", ExpectedVersion::NoStream(), Events("E", 0, 2)).ok());

  auto r = c->Append("account-1", ExpectedVersion::Exact(5), Events("E", 2, 1));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kWrongExpectedVersion) << r.status().ToString();
  EXPECT_EQ(r.status().actual_version(), 1);

  r = c->Append("account-1", ExpectedVersion::NoStream(), Events("E", 2, 1));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kWrongExpectedVersion);
  EXPECT_EQ(r.status().actual_version(), 1);

  r = c->Append("ghost-1", ExpectedVersion::StreamExists(), Events("E", 0, 1));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kWrongExpectedVersion);
  EXPECT_EQ(r.status().actual_version(), -1);

  r = c->Append("ghost-1", ExpectedVersion::Exact(0), Events("E", 0, 1));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().actual_version(), -1);

  // Nothing was written by the failed appends, and the connection goes on.
  auto info = c->GetStreamInfo("account-1");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->event_count, 2u);
  EXPECT_TRUE(c->Ping().ok());
}

TEST_F(ClientTest, ReadStreamForwardAndBackward) {
  auto c = Connect(Options());
  ASSERT_NE(c, nullptr);
  std::vector<EventData> events;
  for (int i = 0; i < 10; ++i)
    events.push_back(Event(i % 2 == 0 ? "Even" : "Odd", "payload-" + std::to_string(i),
                           R"({"i":)" + std::to_string(i) + "}"));
  events[0].id = IdFrom(42);  // a caller's id is kept; the others get generated ones
  ASSERT_TRUE(c->Append("reader-1", ExpectedVersion::NoStream(), events).ok());

  auto forward = c->ReadStream("reader-1", StreamVersion(3), ReadDirection::kForward, 4);
  ASSERT_TRUE(forward.ok()) << forward.status().ToString();
  ASSERT_EQ(forward->size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    const RecordedEvent& e = (*forward)[i];
    EXPECT_EQ(e.stream, "reader-1");
    EXPECT_EQ(e.version, StreamVersion(3 + i));
    EXPECT_EQ(e.payload, "payload-" + std::to_string(3 + i));
    EXPECT_EQ(e.metadata, R"({"i":)" + std::to_string(3 + i) + "}");
    EXPECT_EQ(e.type, (3 + i) % 2 == 0 ? "Even" : "Odd");
    EXPECT_GT(e.recorded_at_ns, 0);
  }

  auto backward = c->ReadStream("reader-1", StreamVersion(9), ReadDirection::kBackward, 3);
  ASSERT_TRUE(backward.ok()) << backward.status().ToString();
  ASSERT_EQ(backward->size(), 3u);
  EXPECT_EQ((*backward)[0].version, StreamVersion(9));
  EXPECT_EQ((*backward)[1].version, StreamVersion(8));
  EXPECT_EQ((*backward)[2].version, StreamVersion(7));
  EXPECT_GT((*backward)[0].position, (*backward)[2].position);

  auto past_head = c->ReadStream("reader-1", StreamVersion(10), ReadDirection::kForward, 5);
  ASSERT_TRUE(past_head.ok());
  EXPECT_TRUE(past_head->empty());

  auto all = c->ReadStream("reader-1", StreamVersion(0), ReadDirection::kForward, 100);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 10u);
  EXPECT_EQ((*all)[0].id, IdFrom(42));
  std::set<EventId> ids;
  for (const RecordedEvent& e : *all) {
    EXPECT_FALSE(IsNilEventId(e.id));
    ids.insert(e.id);
  }
  EXPECT_EQ(ids.size(), 10u);
}

TEST_F(ClientTest, ReadAllFiltersByCategoryAndEventTypeAndSaysWhereToContinue) {
  auto c = Connect(Options());
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(c->Append("order-1", ExpectedVersion::Any(), {Event("OrderPlaced", "a"), Event("OrderShipped", "b")}).ok());
  ASSERT_TRUE(c->Append("account-1", ExpectedVersion::Any(), {Event("AccountOpened", "c")}).ok());
  ASSERT_TRUE(c->Append("order-2", ExpectedVersion::Any(), {Event("OrderPlaced", "d")}).ok());
  ASSERT_TRUE(
      c->Append("account-2", ExpectedVersion::Any(), {Event("AccountOpened", "e"), Event("AccountCredited", "f")}).ok());
  ASSERT_TRUE(c->Append("orderbook-1", ExpectedVersion::Any(), {Event("OrderPlaced", "g")}).ok());

  auto everything = c->ReadAll(GlobalPosition(1), 100);
  ASSERT_TRUE(everything.ok()) << everything.status().ToString();
  ASSERT_EQ(everything->events.size(), 7u);
  for (size_t i = 1; i < 7; ++i) EXPECT_GT(everything->events[i].position, everything->events[i - 1].position);
  GlobalPosition head = everything->events.back().position;
  EXPECT_EQ(everything->next_position, head + 1);

  auto payloads = [](const std::vector<RecordedEvent>& events) {
    std::string s;
    for (const RecordedEvent& e : events) s += e.payload;
    return s;
  };
  Filter category{Filter::Kind::kCategory, "order", {}};
  auto orders = c->ReadAll(GlobalPosition(1), 100, category);
  ASSERT_TRUE(orders.ok()) << orders.status().ToString();
  EXPECT_EQ(payloads(orders->events), "abd");  // not orderbook-1
  EXPECT_EQ(orders->next_position, head + 1);  // past what the filter skipped

  Filter prefix{Filter::Kind::kStreamPrefix, "order", {}};
  auto prefixed = c->ReadAll(GlobalPosition(1), 100, prefix);
  ASSERT_TRUE(prefixed.ok());
  EXPECT_EQ(payloads(prefixed->events), "abdg");

  Filter types{Filter::Kind::kNone, "", {"OrderPlaced", "AccountOpened"}};
  auto typed = c->ReadAll(GlobalPosition(1), 100, types);
  ASSERT_TRUE(typed.ok());
  EXPECT_EQ(payloads(typed->events), "acdeg");

  Filter both{Filter::Kind::kCategory, "account", {"AccountCredited"}};
  auto credited = c->ReadAll(GlobalPosition(1), 100, both);
  ASSERT_TRUE(credited.ok());
  EXPECT_EQ(payloads(credited->events), "f");

  // A page of one: next_position is just past the event returned.
  auto first = c->ReadAll(GlobalPosition(1), 1, category);
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(first->events.size(), 1u);
  EXPECT_EQ(first->next_position, first->events[0].position + 1);
  EXPECT_EQ(payloads(ReadWholeLog(*c, category, 1)), "abd");
  EXPECT_EQ(payloads(ReadWholeLog(*c, {}, 2)), "abcdefg");

  Filter nothing{Filter::Kind::kCategory, "nothing", {}};
  auto none = c->ReadAll(GlobalPosition(1), 100, nothing);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->events.empty());
  EXPECT_EQ(none->next_position, head + 1);
}

TEST_F(ClientTest, StreamInfoAndNotFound) {
  auto c = Connect(Options());
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(c->Append("info-1", ExpectedVersion::NoStream(), Events("E", 0, 3)).ok());
  auto info = c->GetStreamInfo("info-1");
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->stream, "info-1");
  EXPECT_EQ(info->head_version, StreamVersion(2));
  EXPECT_EQ(info->event_count, 3u);
  EXPECT_GT(info->first_recorded_at_ns, 0);
  EXPECT_LE(info->first_recorded_at_ns, info->last_recorded_at_ns);

  auto missing = c->GetStreamInfo("missing-1");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound) << missing.status().ToString();
  auto read = c->ReadStream("missing-1", StreamVersion(0), ReadDirection::kForward, 10);
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.status().code(), StatusCode::kNotFound) << read.status().ToString();
}

TEST_F(ClientTest, PingIsAnswered) {
  auto c = Connect(Options());
  ASSERT_NE(c, nullptr);
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(c->Ping().ok());
}

TEST_F(ClientTest, ConnectingToNoServerAsksWhetherAnnaldRuns) {
  ClientOptions o = Options();
  o.port = AnnaldProcess::FreeLoopbackPort();
  auto c = Client::Connect(o);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(c.status().message().find("cannot connect to 127.0.0.1:" + std::to_string(o.port) +
                                      " — is annald running?"),
            std::string::npos)
      << c.status().message();
}

TEST_F(ClientTest, BadArgumentsFailHereAndTheConnectionGoesOn) {
  auto c = Connect(Options());
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->Append("", ExpectedVersion::Any(), Events("E", 0, 1)).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(c->Append("s-1", ExpectedVersion::Any(), {}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(c->Append("s-1", ExpectedVersion::Any(), {Event(std::string(300, 't'), "")}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(c->ReadStream(std::string(256, 's'), StreamVersion(0), ReadDirection::kForward, 1).status().code(),
            StatusCode::kInvalidArgument);
  Filter bad{Filter::Kind::kCategory, "", {}};
  EXPECT_EQ(c->ReadAll(GlobalPosition(1), 10, bad).status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(c->Ping().ok());
  EXPECT_FALSE(ClientLogged("lost the connection"));
}

TEST_F(ClientTest, AppendOverTheServersFrameLimitIsTooLargeAndTheConnectionGoesOn) {
  server_.reset();
  StartServer({"--max-frame-bytes", "65536"});
  auto c = Connect(Options());
  ASSERT_NE(c, nullptr);
  auto r = c->Append("big-1", ExpectedVersion::Any(), {Event("Big", std::string(100'000, 'x'))});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kTooLarge) << r.status().ToString();
  EXPECT_TRUE(c->Append("big-1", ExpectedVersion::Any(), {Event("Small", std::string(1000, 'x'))}).ok());
  EXPECT_FALSE(ClientLogged("lost the connection"));
}

TEST_F(ClientTest, AppendSentTwiceWithTheSameIdsIsAReplay) {
  auto c = Connect(Options());
  ASSERT_NE(c, nullptr);
  std::vector<EventData> events = Events("E", 0, 2);
  events[0].id = IdFrom(1);
  events[1].id = IdFrom(2);
  auto first = c->Append("replay-1", ExpectedVersion::NoStream(), events);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  auto again = c->Append("replay-1", ExpectedVersion::NoStream(), events);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_TRUE(again->idempotent_replay);
  EXPECT_EQ(again->first_position, first->first_position);
  EXPECT_EQ(again->last_version, first->last_version);
}

TEST_F(ClientTest, BlockingCallFromACallbackFailsInsteadOfDeadlocking) {
  auto c = Connect(Options());
  ASSERT_NE(c, nullptr);
  std::promise<Status> from_callback;
  c->AppendAsync("cb-1", ExpectedVersion::Any(), Events("E", 0, 1),
                 [&](Result<AppendResult>) { from_callback.set_value(c->Ping()); });
  auto f = from_callback.get_future();
  ASSERT_EQ(f.wait_for(30s), std::future_status::ready);
  EXPECT_EQ(f.get().code(), StatusCode::kInvalidArgument);
}

// --- pipelining

TEST_F(ClientTest, ThousandPipelinedAppendsAllCompleteWithContiguousVersions) {
  auto c = Connect(Options());
  ASSERT_NE(c, nullptr);
  constexpr size_t kAppends = 1000;
  AppendResults results(kAppends);
  // From four threads at once; nothing waits for an answer before the next send.
  std::vector<std::thread> threads;
  for (size_t t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (size_t i = t; i < kAppends; i += 4)
        c->AppendAsync("pipe-1", ExpectedVersion::Any(), {Event("Tick", std::to_string(i))}, results.Callback(i));
    });
  for (auto& t : threads) t.join();
  ASSERT_TRUE(results.WaitForCompleted(kAppends, 60s)) << results.completed() << " completed";

  std::map<uint64_t, size_t> by_version;  // version -> append
  for (size_t i = 0; i < kAppends; ++i) {
    ASSERT_TRUE(results[i].has_value() && results[i]->ok()) << i << ": " << results[i]->status().ToString();
    by_version[(*results[i])->first_version.get()] = i;
  }
  ASSERT_EQ(by_version.size(), kAppends);
  EXPECT_EQ(by_version.begin()->first, 0u);
  EXPECT_EQ(by_version.rbegin()->first, kAppends - 1);

  auto events = c->ReadStream("pipe-1", StreamVersion(0), ReadDirection::kForward, 2 * kAppends);
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), kAppends);
  for (const RecordedEvent& e : *events) EXPECT_EQ(e.payload, std::to_string(by_version[e.version.get()]));
}

// --- reconnects

// Append i goes either to a chain (a stream appended with Exact, in order)
// or alone to its own stream with Any: both are recognised as retries.
struct Planned {
  std::string stream;
  ExpectedVersion expected = ExpectedVersion::Any();
  uint64_t version = 0;
};
constexpr size_t kChains = 20;
Planned Plan(size_t i) {
  if (i % 2 == 1) return {"solo-" + std::to_string(i), ExpectedVersion::Any(), 0};
  size_t chain = (i / 2) % kChains, k = (i / 2) / kChains;
  return {"chain-" + std::to_string(chain), k == 0 ? ExpectedVersion::NoStream() : ExpectedVersion::Exact(k - 1), k};
}

// Submits appends 0..n-1 of the plan from a thread of its own, with at most
// `max_outstanding` of them unanswered at a time.
std::thread SubmitPlanned(Client& c, AppendResults& results, size_t n, size_t max_outstanding) {
  return std::thread([&c, &results, n, max_outstanding] {
    for (size_t i = 0; i < n; ++i) {
      results.WaitForRoom(i, max_outstanding);
      Planned p = Plan(i);
      c.AppendAsync(p.stream, p.expected, {Event("Step", std::to_string(i))}, results.Callback(i));
    }
  });
}

// Every planned append was acknowledged at its planned version and is in the
// log exactly once, where its acknowledgement says. Counts in `replays` the
// appends answered as idempotent replays.
void ExpectEachPlannedAppendOnce(Client& c, AppendResults& results, size_t n, size_t* replays) {
  std::map<std::string, std::vector<size_t>> by_stream;
  for (size_t i = 0; i < n; ++i) {
    ASSERT_TRUE(results[i]->ok()) << "append " << i << ": " << results[i]->status().ToString();
    EXPECT_EQ((*results[i])->first_version.get(), Plan(i).version) << "append " << i;
    *replays += (*results[i])->idempotent_replay ? 1 : 0;
    by_stream[Plan(i).stream].push_back(i);
  }
  for (const auto& [stream, appends] : by_stream) {
    auto events = c.ReadStream(stream, StreamVersion(0), ReadDirection::kForward, 1000);
    ASSERT_TRUE(events.ok()) << stream << ": " << events.status().ToString();
    ASSERT_EQ(events->size(), appends.size()) << stream;
    for (size_t k = 0; k < appends.size(); ++k) {
      EXPECT_EQ((*events)[k].payload, std::to_string(appends[k])) << stream << "@" << k;
      EXPECT_EQ((*events)[k].position, (*results[appends[k]])->first_position) << stream << "@" << k;
    }
  }
  EXPECT_EQ(ReadWholeLog(c).size(), n);
}

TEST_F(ClientRestartTest, AppendsInFlightWhenTheServerIsKilledAreWrittenExactlyOnce) {
  auto c = Connect(Options());
  ASSERT_NE(c, nullptr);
  constexpr size_t kAppends = 2 * kChains * 60;
  constexpr size_t kMaxOutstanding = 256;
  AppendResults results(kAppends);
  // Submission goes on while the server is down: those requests wait in the client.
  std::thread submitter = SubmitPlanned(*c, results, kAppends, kMaxOutstanding);
  ASSERT_TRUE(results.WaitForCompleted(kAppends / 4, 60s));
  size_t completed_before_kill = results.completed();
  RestartServer();
  submitter.join();
  ASSERT_TRUE(results.WaitForCompleted(kAppends, 120s)) << results.completed() << " completed";
  ASSERT_LT(completed_before_kill, kAppends) << "the kill came too late to catch appends in flight";
  EXPECT_TRUE(ClientLogged("reconnected")) << "the client did not notice the restart";

  size_t replays = 0;
  ExpectEachPlannedAppendOnce(*c, results, kAppends, &replays);
  if (HasFatalFailure()) return;
  RecordProperty("appends_before_kill", static_cast<int>(completed_before_kill));
  RecordProperty("idempotent_replays", static_cast<int>(replays));
}

TEST_F(ClientTest, AppendsInFlightWhenTheConnectionIsCutAreWrittenExactlyOnce) {
  CuttableProxy proxy(server_->port());
  ASSERT_NE(proxy.port(), 0);
  ClientOptions o = ThroughProxy(proxy);
  o.request_timeout = 60s;
  auto c = Connect(o);
  ASSERT_NE(c, nullptr);
  constexpr size_t kAppends = 2 * kChains * 100;
  constexpr size_t kMaxOutstanding = 512;
  AppendResults results(kAppends);
  std::thread submitter = SubmitPlanned(*c, results, kAppends, kMaxOutstanding);
  // The server goes on writing what it read; its answers are lost, and the
  // client sends those appends again.
  for (size_t cut = 1; cut <= 3; ++cut) {
    ASSERT_TRUE(results.WaitForCompleted(cut * kAppends / 5, 60s));
    proxy.Cut();
  }
  submitter.join();
  ASSERT_TRUE(results.WaitForCompleted(kAppends, 120s)) << results.completed() << " completed";

  size_t replays = 0;
  ExpectEachPlannedAppendOnce(*c, results, kAppends, &replays);
  if (HasFatalFailure()) return;
  RecordProperty("idempotent_replays", static_cast<int>(replays));
}

TEST_F(ClientTest, SubscriptionResumesAfterTheConnectionIsCutWithoutGapOrDuplicate) {
  CuttableProxy proxy(server_->port());
  ASSERT_NE(proxy.port(), 0);
  ClientOptions o = ThroughProxy(proxy);
  auto c = Connect(o);
  auto writer = Connect(Options());
  ASSERT_TRUE(c && writer);
  constexpr int kEvents = 3000, kBatch = 10;
  Recorder stream_rec, all_rec;
  auto by_stream = c->SubscribeToStream("cut-1", StreamVersion(0), stream_rec.Handler());
  ASSERT_TRUE(by_stream.ok()) << by_stream.status().ToString();
  auto to_all = c->SubscribeToAll(GlobalPosition(1), {}, all_rec.Handler());
  ASSERT_TRUE(to_all.ok()) << to_all.status().ToString();
  std::thread appender([&] {
    for (int i = 0; i < kEvents; i += kBatch) {
      auto r = writer->Append("cut-1", ExpectedVersion::Any(), Events("E", i, kBatch));
      EXPECT_TRUE(r.ok()) << r.status().ToString();
    }
  });
  for (int cut = 1; cut <= 3; ++cut) {
    ASSERT_TRUE(stream_rec.WaitForEvents(static_cast<size_t>(cut * kEvents / 5)));
    proxy.Cut();
  }
  appender.join();
  ASSERT_TRUE(stream_rec.WaitForEvents(kEvents)) << stream_rec.count() << " events";
  ASSERT_TRUE(all_rec.WaitForEvents(kEvents)) << all_rec.count() << " events";
  ASSERT_TRUE(c->Ping().ok());
  std::this_thread::sleep_for(100ms);

  std::vector<RecordedEvent> events = stream_rec.events();
  ASSERT_EQ(events.size(), static_cast<size_t>(kEvents));
  for (int k = 0; k < kEvents; ++k) ASSERT_EQ(events[k].version, StreamVersion(k)) << "at " << k;
  std::vector<RecordedEvent> all = all_rec.events();
  ASSERT_EQ(all.size(), static_cast<size_t>(kEvents));
  for (int k = 0; k < kEvents; ++k) ASSERT_EQ(all[k].position, events[k].position) << "at " << k;
  EXPECT_EQ(stream_rec.caught_up(), 1);
  EXPECT_EQ(all_rec.caught_up(), 1);
  EXPECT_TRUE(stream_rec.dropped().empty());
  EXPECT_TRUE(ClientLogged("lost the connection"));
}

TEST_F(ClientTest, ConnectionTheServerClosedForIdlenessIsReopenedByTheNextRequest) {
  server_.reset();
  StartServer({"--idle-timeout-ms", "200"});
  auto c = Connect(Options());
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(c->Ping().ok());
  for (int i = 0; i < 500 && !server_->Logged("idle for"); ++i) std::this_thread::sleep_for(10ms);
  ASSERT_TRUE(server_->Logged("idle for")) << "the server did not close the idle connection";
  std::this_thread::sleep_for(50ms);
  // Nothing was outstanding, so the client waited for this request to reconnect.
  EXPECT_TRUE(ClientLog().empty());
  auto r = c->Append("idle-1", ExpectedVersion::NoStream(), Events("E", 0, 1));
  EXPECT_TRUE(r.ok()) << r.status().ToString();
}

TEST_F(ClientTest, DestroyingTheClientDropsItsSubscriptionsWhichMayOutliveIt) {
  auto c = Connect(Options());
  ASSERT_NE(c, nullptr);
  Recorder rec;
  auto sub = c->SubscribeToAll(GlobalPosition(1), {}, rec.Handler());
  ASSERT_TRUE(sub.ok()) << sub.status().ToString();
  ASSERT_TRUE(rec.WaitForCaughtUp());
  c.reset();
  ASSERT_EQ(rec.dropped().size(), 1u);
  EXPECT_EQ(rec.dropped()[0].code(), StatusCode::kUnavailable);
  (*sub)->Stop();  // after the client is gone: harmless
  sub->reset();
}

TEST_F(ClientTest, GivingUpOnReconnectingFailsRequestsAndDropsSubscriptions) {
  ClientOptions o = Options();
  o.max_reconnect_attempts = 3;
  o.reconnect_backoff_initial = 10ms;
  o.reconnect_backoff_max = 20ms;
  auto c = Connect(o);
  ASSERT_NE(c, nullptr);
  Recorder rec;
  auto sub = c->SubscribeToAll(GlobalPosition(1), {}, rec.Handler());
  ASSERT_TRUE(sub.ok()) << sub.status().ToString();
  server_->Kill(SIGKILL);

  auto r = c->Append("after-1", ExpectedVersion::Any(), Events("E", 0, 1));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("is annald running?"), std::string::npos) << r.status().message();
  ASSERT_TRUE(rec.WaitForDropped());
  EXPECT_EQ(rec.dropped()[0].code(), StatusCode::kUnavailable);
  EXPECT_EQ(rec.dropped().size(), 1u);
}

// True once /proc says every thread of `pid` is stopped (state T), within 5 s.
bool WaitUntilStopped(pid_t pid) {
  namespace fs = std::filesystem;
  for (int i = 0; i < 500; ++i) {
    bool all = true;
    std::error_code ec;
    for (const auto& task : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
      std::ifstream stat(task.path() / "stat");
      std::string line((std::istreambuf_iterator<char>(stat)), {});
      size_t paren = line.rfind(')');
      if (paren == std::string::npos || paren + 2 >= line.size() || line[paren + 2] != 'T') all = false;
    }
    if (all && !ec) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

TEST_F(ClientTest, RequestTimesOutWhenTheServerStalls) {
  ClientOptions o = Options();
  o.request_timeout = 300ms;
  auto c = Connect(o);
  ASSERT_NE(c, nullptr);
  ASSERT_EQ(::kill(server_->pid(), SIGSTOP), 0);
  // kill() returns before the process has stopped; until it has, it may
  // still answer.
  ASSERT_TRUE(WaitUntilStopped(server_->pid())) << "annald did not stop";
  auto start = std::chrono::steady_clock::now();
  Status s = c->Ping();
  auto waited = std::chrono::steady_clock::now() - start;
  ::kill(server_->pid(), SIGCONT);
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  EXPECT_NE(s.message().find("timed out"), std::string::npos) << s.message();
  EXPECT_GE(waited, 250ms);
  EXPECT_LT(waited, 10s);
  // The late PONG is ignored; the connection serves the next request.
  EXPECT_TRUE(c->Ping().ok());
}

// --- subscriptions

TEST_F(ClientTest, StreamSubscriptionCatchesUpThenGoesLiveWithoutGapOrDuplicate) {
  auto c = Connect(Options());
  auto writer = Connect(Options());
  ASSERT_TRUE(c && writer);
  constexpr int kBefore = 300, kTotal = 1000, kBatch = 10;
  for (int i = 0; i < kBefore; i += kBatch)
    ASSERT_TRUE(writer->Append("live-1", ExpectedVersion::Any(), Events("E", i, kBatch)).ok());
  // Appends go on while the subscription catches up and turns live.
  std::thread appender([&] {
    for (int i = kBefore; i < kTotal; i += kBatch) {
      auto r = writer->Append("live-1", ExpectedVersion::Any(), Events("E", i, kBatch));
      EXPECT_TRUE(r.ok()) << r.status().ToString();
    }
  });
  Recorder rec, middle;
  auto sub = c->SubscribeToStream("live-1", StreamVersion(0), rec.Handler());
  ASSERT_TRUE(sub.ok()) << sub.status().ToString();
  auto from_middle = c->SubscribeToStream("live-1", StreamVersion(500), middle.Handler());
  ASSERT_TRUE(from_middle.ok()) << from_middle.status().ToString();
  appender.join();
  ASSERT_TRUE(rec.WaitForEvents(kTotal)) << rec.count() << " events";
  ASSERT_TRUE(middle.WaitForEvents(kTotal - 500)) << middle.count() << " events";
  ASSERT_TRUE(c->Ping().ok());  // anything more would have arrived by now
  std::this_thread::sleep_for(100ms);

  std::vector<RecordedEvent> events = rec.events();
  ASSERT_EQ(events.size(), static_cast<size_t>(kTotal));
  for (int i = 0; i < kTotal; ++i) {
    ASSERT_EQ(events[i].version, StreamVersion(i)) << "at " << i;
    EXPECT_EQ(events[i].payload, std::to_string(i));
  }
  EXPECT_EQ(rec.caught_up(), 1);
  EXPECT_GE(rec.events_before_caught_up(), static_cast<size_t>(kBefore));
  EXPECT_TRUE(rec.dropped().empty());

  std::vector<RecordedEvent> tail = middle.events();
  ASSERT_EQ(tail.size(), static_cast<size_t>(kTotal - 500));
  for (size_t i = 0; i < tail.size(); ++i) ASSERT_EQ(tail[i].version, StreamVersion(500 + i));
  EXPECT_EQ(middle.caught_up(), 1);
}

TEST_F(ClientTest, SubscriptionToAllWithAFilterDeliversOnlyMatchingEventsInOrder) {
  auto c = Connect(Options());
  auto writer = Connect(Options());
  ASSERT_TRUE(c && writer);
  auto append_round = [&](int round) {
    for (int n = 0; n < 5; ++n) {
      std::string id = std::to_string(n);
      auto r = writer->Append("cart-" + id, ExpectedVersion::Any(),
                              {Event("Added", std::to_string(round)), Event("Removed", std::to_string(round))});
      EXPECT_TRUE(r.ok()) << r.status().ToString();
      r = writer->Append("user-" + id, ExpectedVersion::Any(), {Event("Added", std::to_string(round))});
      EXPECT_TRUE(r.ok()) << r.status().ToString();
    }
  };
  for (int round = 0; round < 20; ++round) append_round(round);
  std::thread appender([&] {
    for (int round = 20; round < 60; ++round) append_round(round);
  });
  Filter filter{Filter::Kind::kCategory, "cart", {"Added"}};
  Recorder rec, everything;
  auto sub = c->SubscribeToAll(GlobalPosition(1), filter, rec.Handler());
  ASSERT_TRUE(sub.ok()) << sub.status().ToString();
  auto all = c->SubscribeToAll(GlobalPosition(1), {}, everything.Handler());
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  appender.join();

  std::vector<RecordedEvent> expected = ReadWholeLog(*c, filter);
  ASSERT_EQ(expected.size(), 60u * 5);
  std::vector<RecordedEvent> log = ReadWholeLog(*c);
  ASSERT_EQ(log.size(), 60u * 5 * 3);
  ASSERT_TRUE(rec.WaitForEvents(expected.size())) << rec.count() << " events";
  ASSERT_TRUE(everything.WaitForEvents(log.size())) << everything.count() << " events";
  ASSERT_TRUE(c->Ping().ok());
  std::this_thread::sleep_for(100ms);

  std::vector<RecordedEvent> got = rec.events();
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].position, expected[i].position) << "at " << i;
    EXPECT_EQ(got[i].type, "Added");
    EXPECT_EQ(StreamCategory(got[i].stream), "cart");
  }
  EXPECT_EQ(rec.caught_up(), 1);
  std::vector<RecordedEvent> every = everything.events();
  ASSERT_EQ(every.size(), log.size());
  for (size_t i = 0; i < every.size(); ++i) ASSERT_EQ(every[i].position, log[i].position) << "at " << i;

  // From a position in the middle: that event first.
  Recorder later;
  GlobalPosition middle = log[log.size() / 2].position;
  auto from_middle = c->SubscribeToAll(middle, {}, later.Handler());
  ASSERT_TRUE(from_middle.ok());
  ASSERT_TRUE(later.WaitForEvents(log.size() - log.size() / 2));
  ASSERT_TRUE(later.WaitForCaughtUp());
  EXPECT_EQ(later.events().front().position, middle);
  EXPECT_EQ(later.count(), log.size() - log.size() / 2);
}

TEST_F(ClientTest, StopEndsDeliveryAndNoCallbackRunsAfterItReturns) {
  auto c = Connect(Options());
  auto writer = Connect(Options());
  ASSERT_TRUE(c && writer);
  std::atomic<bool> stop_returned{false};
  std::atomic<int> delivered{0}, after_stop{0};
  SubscriptionHandler h;
  h.on_event = [&](const RecordedEvent&) {
    if (stop_returned) after_stop++;
    delivered++;
    std::this_thread::sleep_for(1ms);  // widen the window for a racing Stop
  };
  h.on_caught_up = [&] {
    if (stop_returned) after_stop++;
  };
  h.on_dropped = [&](const Status&) { after_stop++; };
  auto sub = c->SubscribeToStream("stop-1", StreamVersion(0), h);
  ASSERT_TRUE(sub.ok()) << sub.status().ToString();
  std::atomic<bool> done{false};
  std::thread appender([&] {
    for (int i = 0; !done && i < 2000; ++i) (void)writer->Append("stop-1", ExpectedVersion::Any(), Events("E", i, 1));
  });
  for (int i = 0; i < 3000 && delivered < 50; ++i) std::this_thread::sleep_for(1ms);
  EXPECT_GE(delivered.load(), 50);
  (*sub)->Stop();
  stop_returned = true;
  int at_stop = delivered;
  std::this_thread::sleep_for(200ms);
  done = true;
  appender.join();
  ASSERT_TRUE(c->Ping().ok());
  EXPECT_EQ(after_stop.load(), 0);
  EXPECT_EQ(delivered.load(), at_stop);
  (*sub)->Stop();  // idempotent
}

TEST_F(ClientTest, StopFromInsideTheCallbackEndsDeliveryThere) {
  auto c = Connect(Options());
  ASSERT_NE(c, nullptr);
  std::atomic<Subscription*> self{nullptr};
  std::atomic<int> delivered{0};
  SubscriptionHandler h;
  h.on_event = [&](const RecordedEvent&) {
    if (++delivered == 3) self.load()->Stop();
  };
  auto sub = c->SubscribeToStream("inner-1", StreamVersion(0), h);  // no such stream yet
  ASSERT_TRUE(sub.ok()) << sub.status().ToString();
  self = sub->get();
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(c->Append("inner-1", ExpectedVersion::Any(), Events("E", i, 1)).ok());
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(delivered.load(), 3);
}

TEST_F(ClientRestartTest, SubscriptionResumesAfterAServerRestartWithoutGapOrDuplicate) {
  auto c = Connect(Options());
  auto writer = Connect(Options());
  ASSERT_TRUE(c && writer);
  constexpr int kEvents = 600;
  Recorder stream_rec, all_rec;
  auto by_stream = c->SubscribeToStream("durable-1", StreamVersion(0), stream_rec.Handler());
  ASSERT_TRUE(by_stream.ok()) << by_stream.status().ToString();
  auto to_all = c->SubscribeToAll(GlobalPosition(1), {}, all_rec.Handler());
  ASSERT_TRUE(to_all.ok()) << to_all.status().ToString();
  std::atomic<int> failed{0};
  std::thread appender([&] {
    for (int k = 0; k < kEvents; ++k) {
      auto expected = k == 0 ? ExpectedVersion::NoStream() : ExpectedVersion::Exact(k - 1);
      auto r = writer->Append("durable-1", expected, Events("E", k, 1));
      if (!r.ok()) {
        ADD_FAILURE() << "append " << k << ": " << r.status().ToString();
        failed++;
      }
    }
  });
  ASSERT_TRUE(stream_rec.WaitForEvents(200));
  RestartServer();
  appender.join();
  ASSERT_EQ(failed.load(), 0);
  ASSERT_TRUE(stream_rec.WaitForEvents(kEvents)) << stream_rec.count() << " events";
  ASSERT_TRUE(all_rec.WaitForEvents(kEvents)) << all_rec.count() << " events";
  ASSERT_TRUE(c->Ping().ok());
  std::this_thread::sleep_for(100ms);

  std::vector<RecordedEvent> events = stream_rec.events();
  ASSERT_EQ(events.size(), static_cast<size_t>(kEvents));
  for (int k = 0; k < kEvents; ++k) {
    ASSERT_EQ(events[k].version, StreamVersion(k)) << "at " << k;
    EXPECT_EQ(events[k].payload, std::to_string(k));
  }
  std::vector<RecordedEvent> all = all_rec.events();
  ASSERT_EQ(all.size(), static_cast<size_t>(kEvents));
  for (int k = 0; k < kEvents; ++k) EXPECT_EQ(all[k].position, events[k].position) << "at " << k;
  EXPECT_EQ(stream_rec.caught_up(), 1);
  EXPECT_EQ(all_rec.caught_up(), 1);
  EXPECT_TRUE(stream_rec.dropped().empty());
  EXPECT_TRUE(all_rec.dropped().empty());
  EXPECT_TRUE(ClientLogged("reconnected"));
}

}  // namespace
}  // namespace annal
