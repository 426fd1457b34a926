#include "cli_commands.h"

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <limits>
#include <memory>
#include <mutex>

#include "annal/client.h"
#include "cli_input.h"
#include "cli_output.h"

namespace annal::cli {
namespace {

// How often tail looks at the Ctrl-C flag while no event arrives.
constexpr auto kTailPollInterval = std::chrono::milliseconds(50);
// Requests FindLogEnd may make: a doubling and a bisection over 64 bits.
constexpr int kLogEndProbesMax = 2 * 64 + 2;

// ---- messages and exit codes ----

// Prints "annal: MESSAGE" on one line of stderr and returns `code`.
int Fail(int code, std::string message) {
  std::replace(message.begin(), message.end(), '\n', ' ');
  std::fprintf(stderr, "annal: %s\n", message.c_str());
  return code;
}

std::string Address(const GlobalOptions& g) { return g.host + ":" + std::to_string(g.port); }

std::string CannotConnect(const GlobalOptions& g) {
  return "cannot connect to " + Address(g) + " — is annald running?";
}

// One-shot commands end with one line of their own on any failure, so the
// client's notes (connection lost, reconnecting, giving up) are dropped.
// tail runs for long and passes them on: they explain a silence.
enum class ClientLog { kQuiet, kStderr };

client::ClientOptions OptionsFor(const GlobalOptions& g, ClientLog log = ClientLog::kQuiet) {
  client::ClientOptions options;
  options.host = g.host;
  options.port = g.port;
  options.client_name = "annal-cli";
  if (log == ClientLog::kQuiet) options.log = [](const std::string&) {};
  return options;
}

// Whether annald accepts a new connection at --host:--port. Asked after an
// "unavailable" error, which may come from a server that answered (it is
// overloaded or shutting down) or from a connection the client gave up on;
// only the second is exit code 3.
bool ServerReachable(const GlobalOptions& g) { return client::Client::Connect(OptionsFor(g)).ok(); }

// Reports a failed request; `doing` says what was attempted ("reading account-42").
int FailRequest(const GlobalOptions& g, const Status& s, const std::string& doing) {
  if (s.code() == StatusCode::kUnavailable && !ServerReachable(g)) {
    bool said = s.message().find(CannotConnect(g)) != std::string::npos;
    return Fail(kExitCannotConnect,
                doing + ": " + s.message() + (said ? "" : "; " + CannotConnect(g)));
  }
  return Fail(kExitServerError, doing + ": " + s.ToString());
}

int FailWrongExpectedVersion(const std::string& stream, const ExpectedVersion& expected,
                             const Status& s) {
  std::string actual = s.actual_version() < 0
                           ? "actual: the stream does not exist"
                           : "actual version " + std::to_string(s.actual_version());
  return Fail(kExitServerError, "wrong expected version appending to " + stream + ": expected " +
                                    expected.ToString() + ", " + actual);
}

int FailStreamNotFound(const std::string& stream) {
  return Fail(kExitServerError, "stream '" + stream + "' does not exist");
}

// ---- stdout ----

bool WriteOut(const std::string& text) {
  return std::fwrite(text.data(), 1, text.size(), stdout) == text.size();
}

// Flushes stdout. A reader that went away (`annal read s | head -1`) is not
// an error; any other failed write is.
int FinishOutput() {
  if (std::fflush(stdout) == 0 && !std::ferror(stdout)) return kExitOk;
  if (errno == EPIPE) return kExitOk;
  return Fail(kExitUsage, std::string("cannot write to stdout: ") + std::strerror(errno));
}

// Events on their way to stdout: JSON Lines at once, or a table at the end.
class EventPrinter {
 public:
  EventPrinter(bool json, bool with_stream) : json_(json), table_(with_stream) {}
  void Add(const RecordedEvent& e) {
    if (json_)
      WriteOut(DumpJson(EventToJson(e)) + "\n");
    else
      table_.Add(e);
  }
  int Finish() {
    if (!json_) WriteOut(table_.Render());
    return FinishOutput();
  }

 private:
  bool json_;
  EventTable table_;
};

// ---- connecting ----

// The connected client, or the exit code after reporting why not.
struct Connection {
  std::unique_ptr<client::Client> client;
  int exit_code = kExitOk;
};

Connection Connect(const GlobalOptions& g, ClientLog log = ClientLog::kQuiet) {
  auto r = client::Client::Connect(OptionsFor(g, log));
  if (r.ok()) return {std::move(r).value(), kExitOk};
  // Whatever stopped the handshake, the person's next step is the same:
  // check that annald runs there. Keep the client's detail when it adds some.
  std::string message = CannotConnect(g);
  if (r.status().message().find("cannot connect") == std::string::npos)
    message += " (" + r.status().ToString() + ")";
  return {nullptr, Fail(kExitCannotConnect, message)};
}

// The first position after every event that is durable now: where "new
// events" begin. ReadAll(p, 1) is empty exactly when no event sits at or
// after p, so a doubling and then a bisection find it in O(log head) reads.
Result<GlobalPosition> FindLogEnd(client::Client& c) {
  uint64_t lo = 1;  // the end is at or after lo...
  uint64_t hi = 0;  // ...and at or before hi, once hi != 0
  for (int probes = 0; probes < kLogEndProbesMax; ++probes) {
    if (hi != 0 && lo >= hi) return GlobalPosition(hi);
    uint64_t probe;
    if (hi != 0)
      probe = lo + (hi - lo) / 2;
    else if (probes == 0)
      probe = 1;
    else
      probe = lo > std::numeric_limits<uint64_t>::max() / 2 ? std::numeric_limits<uint64_t>::max()
                                                            : lo * 2;
    auto page = c.ReadAll(GlobalPosition(probe), 1);
    if (!page.ok()) return page.status();
    if (page->events.empty()) {
      hi = probe;
    } else {
      uint64_t at = page->events.back().position.get();
      if (at < probe)
        return Status::Corruption("the server answered a read-all from before `from`");
      lo = at + 1;
    }
  }
  return Status::Unavailable("could not find the end of the log");
}

}  // namespace

// ---- append ----

int RunAppend(const GlobalOptions& g, const AppendArgs& args) {
  if (auto err = CheckStreamName(args.stream)) return Fail(kExitUsage, *err);
  if (auto err = CheckEventType(args.type)) return Fail(kExitUsage, *err);
  if (auto err = CheckJson(args.data)) return Fail(kExitUsage, "--data is not valid JSON: " + *err);
  if (args.metadata)
    if (auto err = CheckJson(*args.metadata))
      return Fail(kExitUsage, "--metadata is not valid JSON: " + *err);
  auto expected = ParseExpectedVersion(args.expected);
  if (IsError(expected)) return Fail(kExitUsage, std::get<std::string>(expected));
  EventData event;
  event.type = args.type;
  event.payload = args.data;
  event.metadata = args.metadata.value_or("");
  if (args.id) {
    auto id = ParseEventId(*args.id);
    if (IsError(id)) return Fail(kExitUsage, std::get<std::string>(id));
    event.id = std::get<EventId>(id);
  }

  Connection conn = Connect(g);
  if (!conn.client) return conn.exit_code;
  const ExpectedVersion ev = std::get<ExpectedVersion>(expected);
  auto r = conn.client->Append(args.stream, ev, {std::move(event)});
  if (!r.ok()) {
    if (r.status().code() == StatusCode::kWrongExpectedVersion)
      return FailWrongExpectedVersion(args.stream, ev, r.status());
    return FailRequest(g, r.status(), "appending to " + args.stream);
  }
  WriteOut(
      (g.json ? DumpJson(AppendResultToJson(args.stream, *r)) : DescribeAppend(args.stream, *r)) +
      "\n");
  return FinishOutput();
}

// ---- read ----

int RunRead(const GlobalOptions& g, const ReadArgs& args) {
  if (auto err = CheckStreamName(args.stream)) return Fail(kExitUsage, *err);
  Connection conn = Connect(g);
  if (!conn.client) return conn.exit_code;

  const ReadDirection direction =
      args.backward ? ReadDirection::kBackward : ReadDirection::kForward;
  // Backward from past the head starts at the head.
  uint64_t from =
      args.from_version.value_or(args.backward ? std::numeric_limits<uint64_t>::max() : 0);
  EventPrinter printer(g.json, /*with_stream=*/false);
  uint64_t remaining = args.limit;
  while (remaining > 0) {
    uint32_t ask = static_cast<uint32_t>(std::min<uint64_t>(remaining, kReadPageEvents));
    auto page = conn.client->ReadStream(args.stream, StreamVersion(from), direction, ask);
    if (!page.ok()) {
      if (page.status().code() == StatusCode::kNotFound) return FailStreamNotFound(args.stream);
      return FailRequest(g, page.status(), "reading " + args.stream);
    }
    if (page->empty()) break;
    for (const RecordedEvent& e : *page) {
      if (remaining == 0) break;
      printer.Add(e);
      --remaining;
    }
    // Each page must move on, or a misbehaving server would loop us forever.
    uint64_t last = page->back().version.get();
    if (args.backward) {
      if (last == 0 || last > from) break;
      from = last - 1;
    } else {
      if (last < from || last == std::numeric_limits<uint64_t>::max()) break;
      from = last + 1;
    }
  }
  return printer.Finish();
}

// ---- read-all ----

int RunReadAll(const GlobalOptions& g, const ReadAllArgs& args) {
  auto filter = MakeFilter(args.category, args.types);
  if (IsError(filter)) return Fail(kExitUsage, std::get<std::string>(filter));
  Connection conn = Connect(g);
  if (!conn.client) return conn.exit_code;

  EventPrinter printer(g.json, /*with_stream=*/true);
  uint64_t from = args.from_position;
  uint64_t remaining = args.limit;
  // A filter may skip a whole page: follow next_position until the limit is
  // met or the server stops moving it (nothing more to read).
  while (remaining > 0) {
    uint32_t ask = static_cast<uint32_t>(std::min<uint64_t>(remaining, kReadPageEvents));
    auto page = conn.client->ReadAll(GlobalPosition(from), ask, std::get<protocol::Filter>(filter));
    if (!page.ok()) return FailRequest(g, page.status(), "reading all events");
    for (const RecordedEvent& e : page->events) {
      if (remaining == 0) break;
      printer.Add(e);
      --remaining;
    }
    if (page->next_position.get() <= from) break;
    from = page->next_position.get();
  }
  return printer.Finish();
}

// ---- info ----

int RunInfo(const GlobalOptions& g, const InfoArgs& args) {
  if (auto err = CheckStreamName(args.stream)) return Fail(kExitUsage, *err);
  Connection conn = Connect(g);
  if (!conn.client) return conn.exit_code;
  auto info = conn.client->GetStreamInfo(args.stream);
  // A stream that does not exist is an answer, not an error: info says so.
  if (!info.ok() && info.status().code() != StatusCode::kNotFound)
    return FailRequest(g, info.status(), "getting info on " + args.stream);
  if (g.json)
    WriteOut(DumpJson(info.ok() ? StreamInfoToJson(*info) : MissingStreamInfoToJson(args.stream)) +
             "\n");
  else
    WriteOut(info.ok() ? DescribeStreamInfo(*info) : DescribeMissingStream(args.stream));
  return FinishOutput();
}

// ---- state ----

namespace {

// Explains why LOAD_STATE found nothing: the stream does not exist, did not
// exist yet at the target time, or has no such version. GetStreamInfo tells
// them apart, so the message does not depend on the server's wording.
int FailStateNotFound(const GlobalOptions& g, client::Client& c, const std::string& stream,
                      const StateTarget& target, const Status& s) {
  auto info = c.GetStreamInfo(stream);
  if (!info.ok() && info.status().code() == StatusCode::kNotFound)
    return FailStreamNotFound(stream);
  if (info.ok() && target.kind == StateTarget::Kind::kTime)
    return Fail(kExitServerError, "stream '" + stream + "' did not exist at " +
                                      FormatTimestamp(target.time_ns) +
                                      ": its first event was recorded at " +
                                      FormatTimestamp(info->first_recorded_at_ns));
  if (info.ok() && target.kind == StateTarget::Kind::kVersion)
    return Fail(kExitServerError, "stream '" + stream + "' has no version " +
                                      std::to_string(target.version) + ": its last version is " +
                                      std::to_string(info->head_version.get()));
  return FailRequest(g, s, "loading the state of " + stream);
}

int FailNoReducer(const std::string& stream) {
  const std::string category(StreamCategory(stream));
  return Fail(kExitServerError,
              "annald has no reducer configured for category '" + category +
                  "', so it cannot compute the state of " + stream + ". Start annald with " +
                  "--reducer " + category + "=json-merge-patch (each event's data is then a " +
                  "JSON merge patch of the state), or read the events: annal read " + stream);
}

}  // namespace

int RunState(const GlobalOptions& g, const StateArgs& args) {
  if (auto err = CheckStreamName(args.stream)) return Fail(kExitUsage, *err);
  StateTarget target = StateTarget::Head();
  if (args.version) target = StateTarget::Version(*args.version);
  if (args.at) {
    auto t = ParseTime(*args.at);
    if (IsError(t)) return Fail(kExitUsage, std::get<std::string>(t));
    target = StateTarget::AsOf(std::get<int64_t>(t));
  }
  Connection conn = Connect(g);
  if (!conn.client) return conn.exit_code;
  auto state = conn.client->LoadState(args.stream, target);
  if (!state.ok()) {
    if (client::IsNoReducer(state.status())) return FailNoReducer(args.stream);
    if (state.status().code() == StatusCode::kNotFound)
      return FailStateNotFound(g, *conn.client, args.stream, target, state.status());
    return FailRequest(g, state.status(), "loading the state of " + args.stream);
  }
  WriteOut(g.json ? DumpJson(StateToJson(*state, target)) + "\n" : DescribeState(*state, target));
  return FinishOutput();
}

// ---- snapshots ----

int RunSnapshots(const GlobalOptions& g, const SnapshotsArgs& args) {
  if (auto err = CheckStreamName(args.stream)) return Fail(kExitUsage, *err);
  Connection conn = Connect(g);
  if (!conn.client) return conn.exit_code;
  auto snapshots = conn.client->ListSnapshots(args.stream);
  if (!snapshots.ok()) {
    if (snapshots.status().code() == StatusCode::kNotFound) return FailStreamNotFound(args.stream);
    return FailRequest(g, snapshots.status(), "listing the snapshots of " + args.stream);
  }
  // No snapshots of a stream that does not exist is a typo, not an answer.
  if (snapshots->empty()) {
    auto info = conn.client->GetStreamInfo(args.stream);
    if (!info.ok() && info.status().code() == StatusCode::kNotFound)
      return FailStreamNotFound(args.stream);
  }
  if (g.json) {
    for (const Snapshot& s : *snapshots) WriteOut(DumpJson(SnapshotToJson(s)) + "\n");
  } else {
    WriteOut(SnapshotTable(*snapshots));
  }
  return FinishOutput();
}

// ---- tail ----

namespace {

std::atomic<bool> g_interrupted{false};
static_assert(std::atomic<bool>::is_always_lock_free, "set from a signal handler");

void OnInterrupt(int) { g_interrupted.store(true); }

// Events travel from the client's I/O thread (which must not block) to the
// main thread (which writes stdout) through this queue.
struct TailQueue {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<RecordedEvent> events;         // guarded by mu
  size_t bytes = 0;                         // guarded by mu: payloads etc. in `events`
  uint64_t delivered = 0;                   // guarded by mu: events ever queued
  std::optional<uint64_t> caught_up_after;  // guarded by mu: `delivered` at on_caught_up
  std::optional<Status> dropped;            // guarded by mu
  bool overflowed = false;                  // guarded by mu
};

size_t EventBytes(const RecordedEvent& e) {
  return sizeof e + e.stream.size() + e.type.size() + e.metadata.size() + e.payload.size();
}

client::SubscriptionHandler QueueingHandler(std::shared_ptr<TailQueue> q) {
  client::SubscriptionHandler h;
  h.on_event = [q](const RecordedEvent& e) {
    std::lock_guard lock(q->mu);
    if (q->overflowed) return;
    size_t n = EventBytes(e);
    if (!q->events.empty() && q->bytes + n > kTailQueueBytesMax) {
      q->overflowed = true;
    } else {
      q->events.push_back(e);
      q->bytes += n;
      ++q->delivered;
    }
    q->cv.notify_one();
  };
  h.on_caught_up = [q] {
    std::lock_guard lock(q->mu);
    q->caught_up_after = q->delivered;
    q->cv.notify_one();
  };
  h.on_dropped = [q](const Status& s) {
    std::lock_guard lock(q->mu);
    q->dropped = s;
    q->cv.notify_one();
  };
  return h;
}

void InstallInterruptHandler() {
  struct sigaction sa {};
  sa.sa_handler = OnInterrupt;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

// Prints queued events until --count, --until-caught-up, Ctrl-C or a drop.
int PrintUntilDone(const GlobalOptions& g, const TailArgs& args, TailQueue& q) {
  const bool with_stream = !args.stream.has_value();
  uint64_t printed = 0;
  while (true) {
    std::deque<RecordedEvent> batch;
    std::optional<uint64_t> caught_up_after;
    std::optional<Status> dropped;
    bool overflowed;
    {
      std::unique_lock lock(q.mu);
      q.cv.wait_for(lock, kTailPollInterval, [&] {
        return !q.events.empty() || q.dropped || q.overflowed ||
               (args.until_caught_up && q.caught_up_after) || g_interrupted.load();
      });
      batch.swap(q.events);
      q.bytes = 0;
      caught_up_after = q.caught_up_after;
      dropped = q.dropped;
      overflowed = q.overflowed;
    }
    for (const RecordedEvent& e : batch) {
      WriteOut((g.json ? DumpJson(EventToJson(e)) : EventLine(e, with_stream)) + "\n");
      ++printed;
      if (args.count && printed >= *args.count) return FinishOutput();
    }
    if (std::fflush(stdout) != 0) return FinishOutput();
    if (g_interrupted.load()) return kExitOk;
    if (args.until_caught_up && caught_up_after && printed >= *caught_up_after) return kExitOk;
    if (dropped) return FailRequest(g, *dropped, "tail: the subscription ended");
    if (overflowed)
      return Fail(kExitUsage, "tail: stdout fell " + std::to_string(kTailQueueBytesMax >> 20) +
                                  " MiB behind the subscription; stopped");
  }
}

}  // namespace

int RunTail(const GlobalOptions& g, const TailArgs& args) {
  if (args.stream)
    if (auto err = CheckStreamName(*args.stream)) return Fail(kExitUsage, *err);
  auto filter = MakeFilter(args.category, args.types);
  if (IsError(filter)) return Fail(kExitUsage, std::get<std::string>(filter));
  InstallInterruptHandler();
  Connection conn = Connect(g, ClientLog::kStderr);
  if (!conn.client) return conn.exit_code;

  auto q = std::make_shared<TailQueue>();
  std::unique_ptr<client::Subscription> sub;
  std::string notice;
  if (args.stream) {
    const std::string& stream = *args.stream;
    uint64_t from = 0;  // a stream that does not exist yet: all of it is new
    if (args.from) {
      from = *args.from;
    } else {
      auto info = conn.client->GetStreamInfo(stream);
      if (info.ok())
        from = info->head_version.get() + 1;
      else if (info.status().code() != StatusCode::kNotFound)
        return FailRequest(g, info.status(), "getting info on " + stream);
    }
    auto r = conn.client->SubscribeToStream(stream, StreamVersion(from), QueueingHandler(q));
    if (!r.ok()) return FailRequest(g, r.status(), "subscribing to " + stream);
    sub = std::move(r).value();
    notice = "tailing " + stream + " from version " + std::to_string(from);
  } else {
    GlobalPosition from(args.from.value_or(0));
    if (!args.from) {
      auto end = FindLogEnd(*conn.client);
      if (!end.ok()) return FailRequest(g, end.status(), "finding the end of the log");
      from = *end;
    }
    auto r =
        conn.client->SubscribeToAll(from, std::get<protocol::Filter>(filter), QueueingHandler(q));
    if (!r.ok()) return FailRequest(g, r.status(), "subscribing to all events");
    sub = std::move(r).value();
    notice = "tailing all events from position " + std::to_string(from.get());
  }
  std::fprintf(stderr, "%s; Ctrl-C to stop\n", notice.c_str());
  int code = PrintUntilDone(g, args, *q);
  sub->Stop();
  return code;
}

}  // namespace annal::cli
