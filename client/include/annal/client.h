// annal::client::Client: the C++ client of annald.
//
// One Client owns one TCP connection that carries many requests at once
// (pipelined, answered in any order). Every operation has an asynchronous
// form, whose callback runs on the client's I/O thread and must not block,
// and a blocking form built on it.
//
//   auto c = annal::client::Client::Connect({.port = 7411});
//   auto r = (*c)->Append("account-42", annal::ExpectedVersion::NoStream(),
//                         {{.type = "AccountOpened", .payload = R"({"owner":"ada"})"}});
//
// Reconnects: when the connection drops, the client reconnects with
// exponential backoff and sends again every request still unanswered.
// Appends are safe to send again because the client gives every event an
// id before the first send (when the caller gave none), and the server
// answers a repeated append with the original result instead of writing it
// twice. Subscriptions resume after the last event they delivered, so a
// subscriber sees no gap and no duplicate across a reconnect.
//
// The limit of that guarantee is the store's rule for recognising a retry
// (docs/architecture.md, "Idempotent retries"): an Any or StreamExists append
// is recognised only while its events are still the stream's last. Several
// such appends to ONE stream in flight when the connection drops may be
// written twice. Exact and NoStream appends, and appends to distinct
// streams, never are.
//
// An ERROR kUnavailable answer ("shutting down", or "the original of this
// retry is still being written") is not final: the client sends the request
// again after a backoff, until the request's timeout.
//
// Thread-safety: all methods may be called from any thread. The blocking
// methods must not be called from a callback (they would wait for the
// thread that runs it); there they fail at once with kInvalidArgument.
// The Client must not be destroyed from one of its callbacks.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "annal/consumers.h"
#include "annal/state.h"
#include "annal/status.h"
#include "annal/store.h"
#include "annal/types.h"
#include "protocol.h"

namespace annal::client {

using protocol::Filter;

struct ClientOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 7411;
  std::string client_name = "annal-client";
  std::chrono::milliseconds connect_timeout{2000};
  // A request unanswered this long fails with kUnavailable ("timed out").
  std::chrono::milliseconds request_timeout{30'000};
  // Reconnect backoff: doubles from initial to max; after max_reconnect_attempts
  // failed attempts in a row, unanswered requests fail with kUnavailable.
  std::chrono::milliseconds reconnect_backoff_initial{50};
  std::chrono::milliseconds reconnect_backoff_max{2000};
  int max_reconnect_attempts = 8;
  // Requests submitted and not yet answered; one more fails at once with
  // kUnavailable instead of queueing without bound.
  size_t max_pending_requests = 65'536;
  // Receives one line per connection loss, reconnect, give-up and protocol
  // error. Defaults to stderr. Called from the client's I/O thread.
  std::function<void(const std::string&)> log;
};

// Events LoadStatePlan asks for per READ_STREAM when the server's STATE_PLAN
// stopped short of the target.
inline constexpr uint32_t kPlanPageEvents = 1000;

// Whether `s` is LoadState's answer for a stream whose category has no
// reducer on the server (kUnavailable; the server sent a plan instead).
// The caller may fold the plan itself: LoadStatePlan and Fold (repository.h).
bool IsNoReducer(const Status& s);

struct AllEventsPage {
  std::vector<RecordedEvent> events;
  GlobalPosition next_position;  // where the next ReadAll should start
};

// What a subscription delivers. Callbacks run on the client's I/O thread, in
// order, one at a time, and must not block.
struct SubscriptionHandler {
  std::function<void(const RecordedEvent&)> on_event;
  // Once: every event up to the store's head at that moment was delivered;
  // from now on events arrive as they become durable. Not again after a
  // reconnect.
  std::function<void()> on_caught_up;
  // Once, at the end: the server dropped the subscription (for example it
  // fell too far behind), the client gave up reconnecting, or the Client was
  // destroyed first (kUnavailable). Not called after Stop().
  std::function<void(const Status&)> on_dropped;
};

class Subscription {
 public:
  virtual ~Subscription() = default;
  // Stops delivery; no callback runs after it returns (called from one of
  // the client's callbacks, none runs after that callback returns).
  // Idempotent; the destructor calls it. May outlive the Client.
  virtual void Stop() = 0;
};

class Client {
 public:
  // Connects and completes the HELLO handshake. A refused connection says
  // "cannot connect to HOST:PORT — is annald running?".
  static Result<std::unique_ptr<Client>> Connect(const ClientOptions& options);
  // Fails every unanswered request with kUnavailable and calls on_dropped of
  // every live subscription, then closes the connection.
  virtual ~Client() = default;

  using AppendCallback = std::function<void(Result<AppendResult>)>;
  virtual void AppendAsync(std::string stream, ExpectedVersion expected,
                           std::vector<EventData> events, AppendCallback done) = 0;
  virtual Result<AppendResult> Append(std::string stream, ExpectedVersion expected,
                                      std::vector<EventData> events) = 0;

  virtual Result<std::vector<RecordedEvent>> ReadStream(const std::string& stream,
                                                        StreamVersion from,
                                                        ReadDirection direction,
                                                        uint32_t max_count) = 0;
  virtual Result<AllEventsPage> ReadAll(GlobalPosition from, uint32_t max_count,
                                        const Filter& filter = {}) = 0;
  virtual Result<StreamInfo> GetStreamInfo(const std::string& stream) = 0;
  virtual Status Ping() = 0;

  // The state of `stream` at `target`, folded by the server with the reducer
  // it has for the stream's category (annald --reducer CATEGORY=NAME).
  // Errors: kNotFound when the stream does not exist, did not exist at the
  // target time, or has no such version; kUnavailable with IsNoReducer()
  // when the server has no reducer for the category.
  using StateCallback = std::function<void(Result<State>)>;
  virtual void LoadStateAsync(std::string stream, StateTarget target, StateCallback done) = 0;
  virtual Result<State> LoadState(const std::string& stream, StateTarget target) = 0;

  // What a reducer that lives in the client needs to fold `stream` up to
  // `target`: the newest snapshot of `reducer` at `schema_version` at or
  // before the target (an empty `reducer`: none) and every event after it up
  // to the target. The server's STATE_PLAN holds at most `max_events` events
  // (0: the server's limit); the rest are read here with READ_STREAM, so the
  // plan returned is always complete. Same kNotFound errors as LoadState.
  virtual Result<StatePlan> LoadStatePlan(const std::string& stream, StateTarget target,
                                          const std::string& reducer, uint32_t schema_version,
                                          uint32_t max_events = 0) = 0;

  // Stores a snapshot the client computed (its recorded_at_ns and
  // taken_at_ns are ignored: the server sets them). Its version must exist.
  // Returns the recorded_at of the event at that version.
  virtual Result<int64_t> WriteSnapshot(const Snapshot& snapshot) = 0;

  // Every snapshot the server keeps of `stream`, of all reducers, ascending
  // by version; the state bytes are left out (state_size says how many).
  virtual Result<std::vector<Snapshot>> ListSnapshots(const std::string& stream) = 0;

  // Where the global log ends now (READ_HEAD).
  virtual Result<protocol::HeadInfo> ReadHead() = 0;
  // Like ReadAll, but never past `until` (inclusive): one slice of the log,
  // for rebuilds that read several slices in parallel. The page's
  // next_position passes `until` when the slice is done.
  virtual Result<AllEventsPage> ReadAllRange(GlobalPosition from, GlobalPosition until, uint32_t max_count,
                                             const Filter& filter = {}) = 0;

  // Consumer checkpoints kept by the server (annal/consumers.h): std::nullopt
  // when the consumer has none; Set returns the checkpoint's updated_at and
  // fails with kWrongExpectedVersion (actual_version: the stored position,
  // -1 for none) when `expected` does not hold; Delete says whether there
  // was one; List leaves the blobs out.
  virtual Result<std::optional<ConsumerCheckpoint>> GetCheckpoint(const std::string& name) = 0;
  virtual Result<int64_t> SetCheckpoint(const std::string& name, GlobalPosition position,
                                        const std::string& blob = {},
                                        CheckpointExpectation expected = CheckpointExpectation::Any()) = 0;
  virtual Result<bool> DeleteCheckpoint(const std::string& name) = 0;
  virtual Result<std::vector<ConsumerCheckpoint>> ListCheckpoints(const std::string& prefix = {}) = 0;

  // Delivers the stream's events from version `from` on: first those
  // already stored, then each new one as soon as it is durable. Returns once
  // the server confirmed the subscription; callbacks may run before it
  // returns.
  virtual Result<std::unique_ptr<Subscription>> SubscribeToStream(const std::string& stream,
                                                                  StreamVersion from,
                                                                  SubscriptionHandler handler) = 0;
  // The same for the global log from position `from` (1 = the beginning),
  // with an optional server-side filter.
  virtual Result<std::unique_ptr<Subscription>> SubscribeToAll(GlobalPosition from,
                                                               const Filter& filter,
                                                               SubscriptionHandler handler) = 0;
};

}  // namespace annal::client
