// State in the client: folding a plan with a reducer that lives in the
// client, and an aggregate repository that loads an entity, runs a command
// against its state and appends the command's events under optimistic
// concurrency.
//
//   annal::client::Repository accounts(*client, std::make_shared<AccountReducer>(),
//                                      {.snapshot_every = 100});
//   auto r = accounts.Execute("account-42", [](const std::string& state)
//       -> annal::Result<std::vector<annal::EventData>> {
//     if (Balance(state) < 10) return annal::Status::InvalidArgument("insufficient funds");
//     return std::vector<annal::EventData>{{.type = "Debited", .payload = R"({"amount":10})"}};
//   });
//
// Thread-safety: Fold is a plain function. A Repository may be used from
// many threads at once when its reducer's methods may be (the built-in
// reducers' are); it holds no state of its own besides its options. Like
// the Client's blocking methods, its methods must not be called from a
// client callback.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "annal/client.h"
#include "annal/state.h"
#include "annal/status.h"
#include "annal/types.h"

namespace annal::client {

// Folds `plan` with `reducer`: from the plan's snapshot when it was written
// by this reducer at this schema version, else from reducer.Initial(), in
// which case the plan must start at version 0 (kInvalidArgument otherwise:
// load a plan for this reducer). The plan must be complete (LoadStatePlan's
// always are). A reducer error is returned with the stream and version
// added to its message.
Result<State> Fold(const Reducer& reducer, const StatePlan& plan);

struct RepositoryOptions {
  // After an append that takes the stream past a multiple of this many
  // events, write a snapshot of the new state. 0: never.
  uint32_t snapshot_every = 0;
  // Conflicts (kWrongExpectedVersion) answered by loading again and asking
  // the command again; one more fails Execute.
  uint32_t max_retries = 8;
};

// An entity as loaded: its state, and the version it reflects.
struct Aggregate {
  std::string state;
  std::optional<StreamVersion> version;  // none: the stream does not exist
};

// What Execute did.
struct Executed {
  Aggregate after;                     // the state and version after the append
  std::optional<AppendResult> append;  // none: the command decided on no events
  uint32_t conflicts = 0;              // attempts that lost to a concurrent writer
  bool snapshot_written = false;
  Status snapshot_error;  // why a snapshot that was due is missing; ok otherwise
};

// Loads entities of one reducer's kind and runs commands against them.
//
// Execute(stream, decide):
//   1. loads the stream's state (Load) and the version it reflects;
//   2. calls decide(state), which returns the events the command produces,
//      or an error, which Execute returns unchanged (nothing is written);
//   3. appends them with ExpectedVersion::Exact(version), or NoStream when
//      the stream did not exist;
//   4. on kWrongExpectedVersion someone else appended in between: nothing
//      was written, so it starts again at 1, with the newer state, up to
//      max_retries times; after that the conflict is returned.
// So decide may run several times for one Execute, and must have no effect
// besides its result. Events are given ids (when nil) once per attempt, so
// a retry of the client's after a lost connection is still recognised. Each
// append is all or nothing: a command's events are never split or lost, and
// no concurrent command's update is lost either. If the reducer cannot fold
// the events it just appended, Execute returns that error: the events are
// written, and the stream will not load with this reducer until it can.
//
// Snapshots: when the append takes the stream's event count past a
// multiple of snapshot_every, the new state, folded locally from the loaded
// state and the appended events, is stored as a snapshot at the new head
// version, so the next Load starts there. (For one-event appends that is
// the engine's rule too: versions v with (v + 1) % every == 0.) It is written after the append
// succeeded, synchronously; if it fails, Execute still succeeds and says why
// in Executed::snapshot_error. annald refuses a client's snapshot under the
// name of the reducer it folds the category with itself (it takes those
// snapshots itself, and Load already gets them).
class Repository {
 public:
  using Options = RepositoryOptions;
  using Decide = std::function<Result<std::vector<EventData>>(const std::string& state)>;

  // `client` must outlive the repository. REQUIRES: reducer != nullptr.
  Repository(Client& client, std::shared_ptr<const Reducer> reducer, Options options = {});

  // The stream's state at its head: LoadStatePlan with this reducer (so the
  // server sends the newest snapshot this reducer wrote, and the events
  // after it), folded here. A stream that does not exist loads as
  // Initial() with no version.
  Result<Aggregate> Load(const std::string& stream);

  Result<Executed> Execute(const std::string& stream, const Decide& decide);

  const Reducer& reducer() const { return *reducer_; }

 private:
  // Folds `events`, just appended as `r`, into `state`.
  Status ApplyAppended(const std::string& stream, const std::vector<EventData>& events,
                       const AppendResult& r, std::string* state) const;
  void MaybeSnapshot(const std::string& stream, const AppendResult& r, Executed* out);

  Client& client_;
  std::shared_ptr<const Reducer> reducer_;
  Options options_;
};

}  // namespace annal::client
