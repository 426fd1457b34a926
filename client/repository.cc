// Fold and Repository (see repository.h).
#include "annal/repository.h"

#include <utility>

#include "annal/assert.h"

namespace annal::client {
namespace {

std::string Describe(const Reducer& r) {
  return "'" + r.name() + "' schema " + std::to_string(r.schema_version());
}

// Whether `reducer` can start from `snapshot`.
bool Usable(const Snapshot& snapshot, const Reducer& reducer) {
  return snapshot.reducer == reducer.name() && snapshot.schema_version == reducer.schema_version();
}

}  // namespace

Result<State> Fold(const Reducer& reducer, const StatePlan& plan) {
  State out;
  out.reducer = reducer.name();
  out.schema_version = reducer.schema_version();
  out.version = plan.target_version;
  out.recorded_at_ns = plan.target_recorded_at_ns;
  uint64_t next = 0;  // the version the next event must have
  if (plan.snapshot && Usable(*plan.snapshot, reducer)) {
    out.stream = plan.snapshot->stream;
    out.state = plan.snapshot->state;
    out.snapshot_version = plan.snapshot->version;
    next = plan.snapshot->version.get() + 1;
  } else {
    out.state = reducer.Initial();
    if (plan.events.empty() || plan.events.front().version.get() != 0) {
      std::string starts =
          plan.snapshot ? "a snapshot by '" + plan.snapshot->reducer + "' schema " +
                              std::to_string(plan.snapshot->schema_version)
          : plan.events.empty() ? "no events"
                                : "version " + std::to_string(plan.events.front().version.get());
      return Status::InvalidArgument("cannot fold with reducer " + Describe(reducer) +
                                     ": the plan starts from " + starts +
                                     ", not from version 0; load a plan for this reducer");
    }
  }
  if (!plan.events.empty()) out.stream = plan.events.front().stream;
  for (const RecordedEvent& e : plan.events) {
    if (e.version.get() != next)
      return Status::InvalidArgument(
          "cannot fold " + e.stream + ": the plan's events skip from version " +
          std::to_string(next) + " to " + std::to_string(e.version.get()));
    Status s = reducer.Apply(&out.state, e);
    if (!s.ok())
      return s.WithContext("folding " + e.stream + " version " + std::to_string(e.version.get()));
    ++next;
    ++out.events_folded;
  }
  if (next != plan.target_version.get() + 1)
    return Status::InvalidArgument(
        "cannot fold " + out.stream + " up to version " +
        std::to_string(plan.target_version.get()) + ": the plan ends at version " +
        (next == 0 ? std::string("(none)") : std::to_string(next - 1)) +
        " (an incomplete plan: Client::LoadStatePlan returns complete ones)");
  return out;
}

Repository::Repository(Client& client, std::shared_ptr<const Reducer> reducer, Options options)
    : client_(client), reducer_(std::move(reducer)), options_(options) {
  ANNAL_ASSERT(reducer_ != nullptr);
}

Result<Aggregate> Repository::Load(const std::string& stream) {
  Result<StatePlan> plan = client_.LoadStatePlan(stream, StateTarget::Head(), reducer_->name(),
                                                 reducer_->schema_version());
  // At the head, kNotFound can only mean that the stream does not exist.
  if (!plan.ok() && plan.status().code() == StatusCode::kNotFound)
    return Aggregate{reducer_->Initial(), {}};
  if (!plan.ok()) return plan.status();
  ANNAL_ASSIGN_OR_RETURN(State state, Fold(*reducer_, *plan));
  return Aggregate{std::move(state.state), state.version};
}

Result<Executed> Repository::Execute(const std::string& stream, const Decide& decide) {
  // Each pass either returns or counts one more conflict, at most max_retries.
  for (uint32_t conflicts = 0;; ++conflicts) {
    ANNAL_ASSIGN_OR_RETURN(Aggregate loaded, Load(stream));
    Result<std::vector<EventData>> decided = decide(loaded.state);
    if (!decided.ok()) return decided.status();
    std::vector<EventData> events = std::move(decided).value();
    Executed out;
    out.conflicts = conflicts;
    if (events.empty()) {
      out.after = std::move(loaded);
      return out;
    }
    // Ids before the append, so that the events folded below are the ones
    // the store recorded.
    for (EventData& e : events)
      if (IsNilEventId(e.id)) e.id = GenerateEventId();
    ExpectedVersion expected = loaded.version ? ExpectedVersion::Exact(loaded.version->get())
                                              : ExpectedVersion::NoStream();
    Result<AppendResult> r = client_.Append(stream, expected, events);
    if (!r.ok() && r.status().code() == StatusCode::kWrongExpectedVersion &&
        conflicts < options_.max_retries)
      continue;
    if (!r.ok() && r.status().code() == StatusCode::kWrongExpectedVersion)
      return r.status().WithContext("gave up after " + std::to_string(conflicts + 1) +
                                    " conflicts on " + stream);
    if (!r.ok()) return r.status();
    out.after.state = std::move(loaded.state);
    out.after.version = r->last_version;
    Status folded = ApplyAppended(stream, events, *r, &out.after.state);
    if (!folded.ok())
      return folded.WithContext("versions " + std::to_string(r->first_version.get()) + ".." +
                                std::to_string(r->last_version.get()) + " of " + stream +
                                " were appended, but this reducer cannot fold them");
    out.append = *r;
    MaybeSnapshot(stream, *r, &out);
    return out;
  }
}

Status Repository::ApplyAppended(const std::string& stream, const std::vector<EventData>& events,
                                 const AppendResult& r, std::string* state) const {
  // One append's events get consecutive versions and positions and one
  // commit time.
  if (r.last_version.get() - r.first_version.get() + 1 != events.size())
    return Status::Corruption("the server answered an append of " + std::to_string(events.size()) +
                              " events with versions " + std::to_string(r.first_version.get()) +
                              ".." + std::to_string(r.last_version.get()));
  for (size_t i = 0; i < events.size(); ++i) {
    RecordedEvent e;
    e.stream = stream;
    e.version = r.first_version + i;
    e.position = r.first_position + i;
    e.recorded_at_ns = r.recorded_at_ns;
    e.id = events[i].id;
    e.type = events[i].type;
    e.metadata = events[i].metadata;
    e.payload = events[i].payload;
    ANNAL_RETURN_IF_ERROR(reducer_->Apply(state, e));
  }
  return Status::Ok();
}

void Repository::MaybeSnapshot(const std::string& stream, const AppendResult& r, Executed* out) {
  const uint64_t every = options_.snapshot_every;
  if (every == 0) return;
  // Events in the stream before and after the append.
  const uint64_t before = r.first_version.get();
  const uint64_t after = r.last_version.get() + 1;
  if (after / every == before / every) return;
  Snapshot snap;
  snap.stream = stream;
  snap.version = r.last_version;
  snap.reducer = reducer_->name();
  snap.schema_version = reducer_->schema_version();
  snap.state = out->after.state;
  snap.state_size = snap.state.size();
  Result<int64_t> written = client_.WriteSnapshot(snap);
  out->snapshot_written = written.ok();
  if (!written.ok()) out->snapshot_error = written.status();
}

}  // namespace annal::client
