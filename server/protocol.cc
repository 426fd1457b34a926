#include "protocol.h"

#include <cstring>

#include "annal/assert.h"

namespace annal::protocol {
namespace {

// The smallest encodings, to bound counts read from a frame before sizing.
constexpr size_t kMinEventDataBytes = 16 + 1 + 4 + 4;
constexpr size_t kMinRecordedEventBytes = 1 + 8 + 8 + 8 + 16 + 1 + 4 + 4;
constexpr size_t kMaxFilterTypes = 64;
// A STATE_PLAN's snapshot: version, recorded_at, reducer (empty), schema,
// taken_at, state (empty).
constexpr size_t kMinPlanSnapshotBytes = 8 + 8 + 1 + 4 + 8 + 4;
// One snapshot in a SNAPSHOTS body: version, recorded_at, reducer (empty),
// schema, state_size, taken_at.
constexpr size_t kMinSnapshotInfoBytes = 8 + 8 + 1 + 4 + 8 + 8;
// One checkpoint in a CHECKPOINTS body: name (at least 1 byte), position,
// updated_at, blob_size.
constexpr size_t kMinCheckpointInfoBytes = 1 + 1 + 8 + 8 + 8;
// LOAD_STATE flags: bit 0 asks for STATE_PLAN; the other bits are reserved.
constexpr uint8_t kLoadStatePlanOnly = 0x01;

Status Bad(const char* what) { return Status::InvalidArgument(std::string("malformed frame: ") + what); }

Status Finish(const BodyReader& r, const char* what) {
  if (!r.done()) return Bad((std::string(what) + " has trailing bytes").c_str());
  return Status::Ok();
}

void EncodeFilter(const Filter& f, BodyWriter& w) {
  ANNAL_ASSERT(f.event_types.size() <= kMaxFilterTypes);
  w.U8(static_cast<uint8_t>(f.kind));
  w.Str8(f.value);
  w.U8(static_cast<uint8_t>(f.event_types.size()));
  for (const std::string& t : f.event_types) w.Str8(t);
}

bool DecodeFilter(BodyReader& r, Filter* f) {
  uint8_t kind = 0, n = 0;
  if (!r.U8(&kind) || kind > static_cast<uint8_t>(Filter::Kind::kStreamPrefix)) return false;
  f->kind = static_cast<Filter::Kind>(kind);
  if (!r.Str8(&f->value) || !r.U8(&n) || n > kMaxFilterTypes) return false;
  if ((f->kind == Filter::Kind::kNone) != f->value.empty()) return false;
  f->event_types.resize(n);
  for (std::string& t : f->event_types)
    if (!r.Str8(&t) || t.empty()) return false;
  return true;
}

void EncodeEvent(const RecordedEvent& e, BodyWriter& w) {
  w.Str8(e.stream);
  w.U64(e.version.get());
  w.U64(e.position.get());
  w.I64(e.recorded_at_ns);
  w.Raw(e.id.data(), 16);
  w.Str8(e.type);
  w.Bytes32(e.metadata);
  w.Bytes32(e.payload);
}

bool DecodeEvent(BodyReader& r, RecordedEvent* e) {
  uint64_t version = 0, position = 0;
  if (!r.Str8(&e->stream) || !r.U64(&version) || !r.U64(&position) || !r.I64(&e->recorded_at_ns) ||
      !r.Raw(e->id.data(), 16) || !r.Str8(&e->type) || !r.Bytes32(&e->metadata) ||
      !r.Bytes32(&e->payload))
    return false;
  e->version = StreamVersion(version);
  e->position = GlobalPosition(position);
  return true;
}

void EncodeEvents(const std::vector<RecordedEvent>& events, BodyWriter& w) {
  ANNAL_ASSERT(events.size() <= UINT32_MAX);
  w.U32(static_cast<uint32_t>(events.size()));
  for (const RecordedEvent& e : events) EncodeEvent(e, w);
}

bool DecodeEvents(BodyReader& r, std::vector<RecordedEvent>* events) {
  uint32_t count = 0;
  if (!r.U32(&count) || count > r.remaining() / kMinRecordedEventBytes) return false;
  events->resize(count);
  for (RecordedEvent& e : *events)
    if (!DecodeEvent(r, &e)) return false;
  return true;
}

// A consumer name: str8 of at least one byte.
bool DecodeConsumerName(BodyReader& r, std::string* name) { return r.Str8(name) && !name->empty(); }

}  // namespace

const char* OpName(Op op) {
  switch (op) {
    case Op::kHello: return "HELLO";
    case Op::kPing: return "PING";
    case Op::kAppend: return "APPEND";
    case Op::kReadStream: return "READ_STREAM";
    case Op::kReadAll: return "READ_ALL";
    case Op::kStreamInfo: return "STREAM_INFO";
    case Op::kLoadState: return "LOAD_STATE";
    case Op::kWriteSnapshot: return "WRITE_SNAPSHOT";
    case Op::kListSnapshots: return "LIST_SNAPSHOTS";
    case Op::kReadHead: return "READ_HEAD";
    case Op::kReadAllRange: return "READ_ALL_RANGE";
    case Op::kSubscribe: return "SUBSCRIBE";
    case Op::kUnsubscribe: return "UNSUBSCRIBE";
    case Op::kGetCheckpoint: return "GET_CHECKPOINT";
    case Op::kSetCheckpoint: return "SET_CHECKPOINT";
    case Op::kDeleteCheckpoint: return "DELETE_CHECKPOINT";
    case Op::kListCheckpoints: return "LIST_CHECKPOINTS";
    case Op::kHelloOk: return "HELLO_OK";
    case Op::kPong: return "PONG";
    case Op::kAppendOk: return "APPEND_OK";
    case Op::kEvents: return "EVENTS";
    case Op::kAllEvents: return "ALL_EVENTS";
    case Op::kStreamInfoOk: return "STREAM_INFO_OK";
    case Op::kState: return "STATE";
    case Op::kStatePlan: return "STATE_PLAN";
    case Op::kSnapshotWritten: return "SNAPSHOT_WRITTEN";
    case Op::kSnapshots: return "SNAPSHOTS";
    case Op::kHeadInfo: return "HEAD_INFO";
    case Op::kSubscribed: return "SUBSCRIBED";
    case Op::kSubEvents: return "SUB_EVENTS";
    case Op::kCaughtUp: return "CAUGHT_UP";
    case Op::kSubDropped: return "SUB_DROPPED";
    case Op::kUnsubscribed: return "UNSUBSCRIBED";
    case Op::kCheckpoint: return "CHECKPOINT";
    case Op::kCheckpointSet: return "CHECKPOINT_SET";
    case Op::kCheckpointDeleted: return "CHECKPOINT_DELETED";
    case Op::kCheckpoints: return "CHECKPOINTS";
    case Op::kError: return "ERROR";
  }
  return nullptr;
}

bool IsRequest(Op op) { return static_cast<uint8_t>(op) < 0x80; }

ErrorCode ErrorCodeFor(StatusCode code) {
  switch (code) {
    case StatusCode::kInvalidArgument: return ErrorCode::kInvalidRequest;
    case StatusCode::kTooLarge: return ErrorCode::kTooLarge;
    case StatusCode::kWrongExpectedVersion: return ErrorCode::kWrongExpectedVersion;
    case StatusCode::kNotFound: return ErrorCode::kStreamNotFound;
    case StatusCode::kCorruption: return ErrorCode::kCorruption;
    case StatusCode::kIoError: return ErrorCode::kIoError;
    case StatusCode::kFailStopped: return ErrorCode::kFailStopped;
    case StatusCode::kUnavailable: return ErrorCode::kUnavailable;
    case StatusCode::kAlreadyExists: return ErrorCode::kInvalidRequest;
    case StatusCode::kOverloaded: return ErrorCode::kOverloaded;
    case StatusCode::kOk: break;
  }
  return ErrorCode::kInvalidRequest;
}

StatusCode StatusCodeFor(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidRequest: return StatusCode::kInvalidArgument;
    case ErrorCode::kWrongExpectedVersion: return StatusCode::kWrongExpectedVersion;
    case ErrorCode::kStreamNotFound: return StatusCode::kNotFound;
    case ErrorCode::kTooLarge: return StatusCode::kTooLarge;
    case ErrorCode::kFailStopped: return StatusCode::kFailStopped;
    case ErrorCode::kOverloaded: return StatusCode::kOverloaded;
    case ErrorCode::kUnsupportedVersion: return StatusCode::kInvalidArgument;
    case ErrorCode::kUnavailable: return StatusCode::kUnavailable;
    case ErrorCode::kCorruption: return StatusCode::kCorruption;
    case ErrorCode::kIoError: return StatusCode::kIoError;
    case ErrorCode::kSubscriptionDropped: return StatusCode::kUnavailable;
  }
  return StatusCode::kInvalidArgument;
}

Status ToStatus(ErrorCode code, int64_t actual_version, std::string message) {
  if (code == ErrorCode::kWrongExpectedVersion)
    return Status::WrongExpectedVersion(std::move(message), actual_version);
  switch (StatusCodeFor(code)) {
    case StatusCode::kNotFound: return Status::NotFound(std::move(message));
    case StatusCode::kTooLarge: return Status::TooLarge(std::move(message));
    case StatusCode::kFailStopped: return Status::FailStopped(std::move(message));
    case StatusCode::kUnavailable: return Status::Unavailable(std::move(message));
    case StatusCode::kOverloaded: return Status::Overloaded(std::move(message));
    case StatusCode::kCorruption: return Status::Corruption(std::move(message));
    case StatusCode::kIoError: return Status::IoError(std::move(message));
    default: return Status::InvalidArgument(std::move(message));
  }
}

Status DecodeFrameHeader(const uint8_t* in, uint32_t max_frame_bytes, FrameHeader* h) {
  std::memcpy(&h->length, in, 4);
  uint8_t op = in[4];
  h->flags = in[5];
  uint16_t reserved;
  std::memcpy(&reserved, in + 6, 2);
  std::memcpy(&h->request_id, in + 8, 4);
  if (h->length < kFrameHeaderBytes)
    return Status::InvalidArgument("frame length " + std::to_string(h->length) +
                                   " is shorter than the 12-byte header");
  if (h->length > max_frame_bytes)
    return Status::TooLarge("frame length " + std::to_string(h->length) + " exceeds the limit of " +
                            std::to_string(max_frame_bytes) + " bytes");
  h->op = static_cast<Op>(op);
  if (OpName(h->op) == nullptr) return Status::InvalidArgument("unknown opcode " + std::to_string(op));
  if (h->flags != 0 || reserved != 0)
    return Status::InvalidArgument("frame flags and reserved bytes must be 0 in protocol version 1");
  return Status::Ok();
}

void BodyWriter::Str8(std::string_view s) {
  ANNAL_ASSERT(s.size() <= 255);
  U8(static_cast<uint8_t>(s.size()));
  out_->append(s);
}
void BodyWriter::Str16(std::string_view s) {
  ANNAL_ASSERT(s.size() <= 65535);
  U16(static_cast<uint16_t>(s.size()));
  out_->append(s);
}
void BodyWriter::Bytes32(std::string_view s) {
  ANNAL_ASSERT(s.size() <= UINT32_MAX);
  U32(static_cast<uint32_t>(s.size()));
  out_->append(s);
}

bool BodyReader::Raw(void* p, size_t n) {
  if (remaining() < n) return false;
  std::memcpy(p, body_.data() + at_, n);
  at_ += n;
  return true;
}
bool BodyReader::Take(size_t n, std::string* s) {
  if (remaining() < n) return false;
  s->assign(body_.data() + at_, n);
  at_ += n;
  return true;
}
bool BodyReader::Str8(std::string* s) {
  uint8_t n;
  return U8(&n) && Take(n, s);
}
bool BodyReader::Str16(std::string* s) {
  uint16_t n;
  return U16(&n) && Take(n, s);
}
bool BodyReader::Bytes32(std::string* s) {
  uint32_t n;
  return U32(&n) && Take(n, s);
}

bool Filter::Matches(const RecordedEvent& e) const {
  if (kind == Kind::kCategory && StreamCategory(e.stream) != value) return false;
  if (kind == Kind::kStreamPrefix && std::string_view(e.stream).substr(0, value.size()) != value) return false;
  if (event_types.empty()) return true;
  for (const std::string& t : event_types)
    if (t == e.type) return true;
  return false;
}

void Encode(const Hello& m, BodyWriter& w) {
  w.U16(m.version);
  w.Str8(m.client_name);
}
Status Decode(std::string_view body, Hello* m) {
  BodyReader r(body);
  if (!r.U16(&m->version) || !r.Str8(&m->client_name)) return Bad("HELLO");
  return Finish(r, "HELLO");
}

void Encode(const HelloOk& m, BodyWriter& w) {
  w.U16(m.version);
  w.U32(m.max_frame_bytes);
  w.U32(m.max_in_flight);
  w.Str8(m.server_name);
}
Status Decode(std::string_view body, HelloOk* m) {
  BodyReader r(body);
  if (!r.U16(&m->version) || !r.U32(&m->max_frame_bytes) || !r.U32(&m->max_in_flight) ||
      !r.Str8(&m->server_name))
    return Bad("HELLO_OK");
  return Finish(r, "HELLO_OK");
}

void Encode(const Ping& m, BodyWriter& w) { w.U64(m.token); }
Status Decode(std::string_view body, Ping* m) {
  BodyReader r(body);
  if (!r.U64(&m->token)) return Bad("PING");
  return Finish(r, "PING");
}

void Encode(const AppendRequest& m, BodyWriter& w) {
  ANNAL_ASSERT(m.events.size() <= UINT16_MAX);
  w.Str8(m.stream);
  w.U8(static_cast<uint8_t>(m.expected.kind()));
  w.U64(m.expected.version());
  w.U16(static_cast<uint16_t>(m.events.size()));
  for (const EventData& e : m.events) {
    w.Raw(e.id.data(), 16);
    w.Str8(e.type);
    w.Bytes32(e.metadata);
    w.Bytes32(e.payload);
  }
}
Status Decode(std::string_view body, AppendRequest* m) {
  BodyReader r(body);
  uint8_t kind = 0;
  uint64_t version = 0;
  uint16_t count = 0;
  if (!r.Str8(&m->stream) || !r.U8(&kind) || !r.U64(&version) || !r.U16(&count))
    return Bad("APPEND header");
  if (kind != static_cast<uint8_t>(ExpectedVersion::Kind::kExact) && version != 0)
    return Bad("APPEND expected version must be 0 unless its kind is exact");
  switch (static_cast<ExpectedVersion::Kind>(kind)) {
    case ExpectedVersion::Kind::kAny: m->expected = ExpectedVersion::Any(); break;
    case ExpectedVersion::Kind::kNoStream: m->expected = ExpectedVersion::NoStream(); break;
    case ExpectedVersion::Kind::kStreamExists: m->expected = ExpectedVersion::StreamExists(); break;
    case ExpectedVersion::Kind::kExact: m->expected = ExpectedVersion::Exact(version); break;
    default: return Bad("APPEND expected-version kind");
  }
  if (count > r.remaining() / kMinEventDataBytes) return Bad("APPEND event count exceeds the frame");
  m->events.resize(count);
  for (EventData& e : m->events)
    if (!r.Raw(e.id.data(), 16) || !r.Str8(&e.type) || !r.Bytes32(&e.metadata) || !r.Bytes32(&e.payload))
      return Bad("APPEND event");
  return Finish(r, "APPEND");
}

void Encode(const AppendResult& m, BodyWriter& w) {
  w.U64(m.first_version.get());
  w.U64(m.last_version.get());
  w.U64(m.first_position.get());
  w.U64(m.last_position.get());
  w.I64(m.recorded_at_ns);
  w.U8(m.idempotent_replay ? 1 : 0);
}
Status Decode(std::string_view body, AppendResult* m) {
  BodyReader r(body);
  uint64_t fv, lv, fp, lp;
  uint8_t flags;
  if (!r.U64(&fv) || !r.U64(&lv) || !r.U64(&fp) || !r.U64(&lp) || !r.I64(&m->recorded_at_ns) ||
      !r.U8(&flags) || flags > 1)
    return Bad("APPEND_OK");
  m->first_version = StreamVersion(fv);
  m->last_version = StreamVersion(lv);
  m->first_position = GlobalPosition(fp);
  m->last_position = GlobalPosition(lp);
  m->idempotent_replay = flags == 1;
  return Finish(r, "APPEND_OK");
}

void Encode(const ReadStreamRequest& m, BodyWriter& w) {
  w.Str8(m.stream);
  w.U64(m.from_version);
  w.U8(m.direction == ReadDirection::kBackward ? 1 : 0);
  w.U32(m.max_count);
}
Status Decode(std::string_view body, ReadStreamRequest* m) {
  BodyReader r(body);
  uint8_t direction;
  if (!r.Str8(&m->stream) || !r.U64(&m->from_version) || !r.U8(&direction) || direction > 1 ||
      !r.U32(&m->max_count))
    return Bad("READ_STREAM");
  m->direction = direction == 1 ? ReadDirection::kBackward : ReadDirection::kForward;
  return Finish(r, "READ_STREAM");
}

void Encode(const ReadAllRequest& m, BodyWriter& w) {
  w.U64(m.from_position);
  w.U32(m.max_count);
  EncodeFilter(m.filter, w);
}
Status Decode(std::string_view body, ReadAllRequest* m) {
  BodyReader r(body);
  if (!r.U64(&m->from_position) || !r.U32(&m->max_count) || !DecodeFilter(r, &m->filter))
    return Bad("READ_ALL");
  return Finish(r, "READ_ALL");
}

void Encode(const StreamInfoRequest& m, BodyWriter& w) { w.Str8(m.stream); }
Status Decode(std::string_view body, StreamInfoRequest* m) {
  BodyReader r(body);
  if (!r.Str8(&m->stream)) return Bad("STREAM_INFO");
  return Finish(r, "STREAM_INFO");
}

void Encode(const StreamInfo& m, BodyWriter& w) {
  w.Str8(m.stream);
  w.U64(m.head_version.get());
  w.U64(m.event_count);
  w.I64(m.first_recorded_at_ns);
  w.I64(m.last_recorded_at_ns);
}
Status Decode(std::string_view body, StreamInfo* m) {
  BodyReader r(body);
  uint64_t head;
  if (!r.Str8(&m->stream) || !r.U64(&head) || !r.U64(&m->event_count) ||
      !r.I64(&m->first_recorded_at_ns) || !r.I64(&m->last_recorded_at_ns))
    return Bad("STREAM_INFO_OK");
  m->head_version = StreamVersion(head);
  return Finish(r, "STREAM_INFO_OK");
}

void Encode(const SubscribeRequest& m, BodyWriter& w) {
  w.U8(static_cast<uint8_t>(m.scope));
  w.Str8(m.stream);
  w.U64(m.from);
  EncodeFilter(m.filter, w);
}
Status Decode(std::string_view body, SubscribeRequest* m) {
  BodyReader r(body);
  uint8_t scope;
  if (!r.U8(&scope) || scope > 1 || !r.Str8(&m->stream) || !r.U64(&m->from) ||
      !DecodeFilter(r, &m->filter))
    return Bad("SUBSCRIBE");
  m->scope = static_cast<SubscribeRequest::Scope>(scope);
  if ((m->scope == SubscribeRequest::Scope::kStream) == m->stream.empty())
    return Bad("SUBSCRIBE names a stream exactly when its scope is one stream");
  if (m->scope == SubscribeRequest::Scope::kStream && !m->filter.empty())
    return Bad("SUBSCRIBE to one stream takes no filter");
  return Finish(r, "SUBSCRIBE");
}

void Encode(const UnsubscribeRequest& m, BodyWriter& w) { w.U32(m.subscription_id); }
Status Decode(std::string_view body, UnsubscribeRequest* m) {
  BodyReader r(body);
  if (!r.U32(&m->subscription_id)) return Bad("UNSUBSCRIBE");
  return Finish(r, "UNSUBSCRIBE");
}

void Encode(const EventsResponse& m, BodyWriter& w) { EncodeEvents(m.events, w); }
Status Decode(std::string_view body, EventsResponse* m) {
  BodyReader r(body);
  if (!DecodeEvents(r, &m->events)) return Bad("EVENTS");
  return Finish(r, "EVENTS");
}

void Encode(const AllEventsResponse& m, BodyWriter& w) {
  w.U64(m.next_position);
  EncodeEvents(m.events, w);
}
Status Decode(std::string_view body, AllEventsResponse* m) {
  BodyReader r(body);
  if (!r.U64(&m->next_position) || !DecodeEvents(r, &m->events)) return Bad("ALL_EVENTS");
  return Finish(r, "ALL_EVENTS");
}

void Encode(const SubscribedResponse& m, BodyWriter& w) { w.U64(m.durable_head); }
Status Decode(std::string_view body, SubscribedResponse* m) {
  BodyReader r(body);
  if (!r.U64(&m->durable_head)) return Bad("SUBSCRIBED");
  return Finish(r, "SUBSCRIBED");
}

void Encode(const CaughtUp& m, BodyWriter& w) { w.U64(m.position); }
Status Decode(std::string_view body, CaughtUp* m) {
  BodyReader r(body);
  if (!r.U64(&m->position)) return Bad("CAUGHT_UP");
  return Finish(r, "CAUGHT_UP");
}

void Encode(const ErrorResponse& m, BodyWriter& w) {
  w.U16(static_cast<uint16_t>(m.code));
  w.I64(m.actual_version);
  w.Str16(m.message.size() <= 65535 ? std::string_view(m.message) : std::string_view(m.message).substr(0, 65535));
}
Status Decode(std::string_view body, ErrorResponse* m) {
  BodyReader r(body);
  uint16_t code;
  if (!r.U16(&code) || code < 1 || code > static_cast<uint16_t>(ErrorCode::kSubscriptionDropped) ||
      !r.I64(&m->actual_version) || !r.Str16(&m->message))
    return Bad("ERROR");
  m->code = static_cast<ErrorCode>(code);
  return Finish(r, "ERROR");
}

void Encode(const LoadStateRequest& m, BodyWriter& w) {
  using Kind = StateTarget::Kind;
  w.Str8(m.stream);
  w.U8(static_cast<uint8_t>(m.target.kind));
  // A field the target's kind does not use is sent as 0 (its one encoding).
  w.U64(m.target.kind == Kind::kVersion ? m.target.version : 0);
  w.I64(m.target.kind == Kind::kTime ? m.target.time_ns : 0);
  w.Str8(m.reducer);
  w.U32(m.schema_version);
  w.U32(m.max_events);
  w.U8(m.plan_only ? kLoadStatePlanOnly : 0);
}
Status Decode(std::string_view body, LoadStateRequest* m) {
  using Kind = StateTarget::Kind;
  BodyReader r(body);
  uint8_t kind = 0, flags = 0;
  if (!r.Str8(&m->stream) || !r.U8(&kind) || !r.U64(&m->target.version) ||
      !r.I64(&m->target.time_ns) || !r.Str8(&m->reducer) || !r.U32(&m->schema_version) ||
      !r.U32(&m->max_events) || !r.U8(&flags))
    return Bad("LOAD_STATE");
  if (kind > static_cast<uint8_t>(Kind::kTime)) return Bad("LOAD_STATE target kind");
  m->target.kind = static_cast<Kind>(kind);
  if (m->target.kind != Kind::kVersion && m->target.version != 0)
    return Bad("LOAD_STATE target version must be 0 unless its kind is version");
  if (m->target.kind != Kind::kTime && m->target.time_ns != 0)
    return Bad("LOAD_STATE target time must be 0 unless its kind is time");
  if ((flags & ~kLoadStatePlanOnly) != 0) return Bad("LOAD_STATE flags has unknown bits");
  m->plan_only = (flags & kLoadStatePlanOnly) != 0;
  return Finish(r, "LOAD_STATE");
}

void Encode(const StateResponse& m, BodyWriter& w) {
  const State& s = m.state;
  w.Str8(s.stream);
  w.Str8(s.reducer);
  w.U32(s.schema_version);
  w.U64(s.version.get());
  w.I64(s.recorded_at_ns);
  w.U8(s.snapshot_version.has_value() ? 1 : 0);
  if (s.snapshot_version.has_value()) w.U64(s.snapshot_version->get());
  w.U64(s.events_folded);
  w.Bytes32(s.state);
}
Status Decode(std::string_view body, StateResponse* m) {
  State& s = m->state;
  BodyReader r(body);
  uint64_t version = 0, snapshot_version = 0;
  uint8_t has_snapshot = 0;
  if (!r.Str8(&s.stream) || !r.Str8(&s.reducer) || !r.U32(&s.schema_version) || !r.U64(&version) ||
      !r.I64(&s.recorded_at_ns) || !r.U8(&has_snapshot) || has_snapshot > 1 ||
      (has_snapshot == 1 && !r.U64(&snapshot_version)) || !r.U64(&s.events_folded) ||
      !r.Bytes32(&s.state))
    return Bad("STATE");
  s.version = StreamVersion(version);
  s.snapshot_version.reset();
  if (has_snapshot == 1) s.snapshot_version = StreamVersion(snapshot_version);
  return Finish(r, "STATE");
}

// STATE_PLAN: the plan's target, then its snapshot (without the stream,
// which is the request's), then its events as an EVENTS body carries them.
void Encode(const StatePlanResponse& m, BodyWriter& w) {
  const StatePlan& p = m.plan;
  w.U64(p.target_version.get());
  w.I64(p.target_recorded_at_ns);
  w.U8(p.complete ? 1 : 0);
  w.U8(p.snapshot.has_value() ? 1 : 0);
  if (p.snapshot.has_value()) {
    const Snapshot& s = *p.snapshot;
    w.U64(s.version.get());
    w.I64(s.recorded_at_ns);
    w.Str8(s.reducer);
    w.U32(s.schema_version);
    w.I64(s.taken_at_ns);
    w.Bytes32(s.state);
  }
  EncodeEvents(p.events, w);
}
Status Decode(std::string_view body, StatePlanResponse* m) {
  StatePlan& p = m->plan;
  BodyReader r(body);
  uint64_t target = 0;
  uint8_t complete = 0, has_snapshot = 0;
  if (!r.U64(&target) || !r.I64(&p.target_recorded_at_ns) || !r.U8(&complete) || complete > 1 ||
      !r.U8(&has_snapshot) || has_snapshot > 1)
    return Bad("STATE_PLAN");
  p.target_version = StreamVersion(target);
  p.complete = complete == 1;
  p.snapshot.reset();
  if (has_snapshot == 1) {
    Snapshot s;
    uint64_t version = 0;
    if (!r.U64(&version) || !r.I64(&s.recorded_at_ns) || !r.Str8(&s.reducer) ||
        !r.U32(&s.schema_version) || !r.I64(&s.taken_at_ns) || !r.Bytes32(&s.state))
      return Bad("STATE_PLAN snapshot");
    s.version = StreamVersion(version);
    s.state_size = s.state.size();
    p.snapshot = std::move(s);
  }
  if (!DecodeEvents(r, &p.events)) return Bad("STATE_PLAN events");
  return Finish(r, "STATE_PLAN");
}

void Encode(const WriteSnapshotRequest& m, BodyWriter& w) {
  const Snapshot& s = m.snapshot;
  w.Str8(s.stream);
  w.U64(s.version.get());
  w.Str8(s.reducer);
  w.U32(s.schema_version);
  w.Bytes32(s.state);
}
Status Decode(std::string_view body, WriteSnapshotRequest* m) {
  Snapshot& s = m->snapshot;
  BodyReader r(body);
  uint64_t version = 0;
  if (!r.Str8(&s.stream) || !r.U64(&version) || !r.Str8(&s.reducer) || !r.U32(&s.schema_version) ||
      !r.Bytes32(&s.state))
    return Bad("WRITE_SNAPSHOT");
  if (s.reducer.empty()) return Bad("WRITE_SNAPSHOT names no reducer");
  s.version = StreamVersion(version);
  s.state_size = s.state.size();
  return Finish(r, "WRITE_SNAPSHOT");
}

void Encode(const SnapshotWritten& m, BodyWriter& w) { w.I64(m.recorded_at_ns); }
Status Decode(std::string_view body, SnapshotWritten* m) {
  BodyReader r(body);
  if (!r.I64(&m->recorded_at_ns)) return Bad("SNAPSHOT_WRITTEN");
  return Finish(r, "SNAPSHOT_WRITTEN");
}

void Encode(const ListSnapshotsRequest& m, BodyWriter& w) { w.Str8(m.stream); }
Status Decode(std::string_view body, ListSnapshotsRequest* m) {
  BodyReader r(body);
  if (!r.Str8(&m->stream)) return Bad("LIST_SNAPSHOTS");
  return Finish(r, "LIST_SNAPSHOTS");
}

void Encode(const SnapshotsResponse& m, BodyWriter& w) {
  ANNAL_ASSERT(m.snapshots.size() <= UINT32_MAX);
  w.U32(static_cast<uint32_t>(m.snapshots.size()));
  for (const Snapshot& s : m.snapshots) {
    w.U64(s.version.get());
    w.I64(s.recorded_at_ns);
    w.Str8(s.reducer);
    w.U32(s.schema_version);
    w.U64(s.state_size);
    w.I64(s.taken_at_ns);
  }
}
Status Decode(std::string_view body, SnapshotsResponse* m) {
  BodyReader r(body);
  uint32_t count = 0;
  if (!r.U32(&count) || count > r.remaining() / kMinSnapshotInfoBytes)
    return Bad("SNAPSHOTS count");
  m->snapshots.assign(count, Snapshot{});
  for (Snapshot& s : m->snapshots) {
    uint64_t version = 0;
    if (!r.U64(&version) || !r.I64(&s.recorded_at_ns) || !r.Str8(&s.reducer) ||
        !r.U32(&s.schema_version) || !r.U64(&s.state_size) || !r.I64(&s.taken_at_ns))
      return Bad("SNAPSHOTS");
    s.version = StreamVersion(version);
  }
  return Finish(r, "SNAPSHOTS");
}

void Encode(const HeadInfo& m, BodyWriter& w) {
  w.U64(m.durable_head);
  w.I64(m.last_recorded_at_ns);
  w.U32(m.partitions);
}
Status Decode(std::string_view body, HeadInfo* m) {
  BodyReader r(body);
  if (!r.U64(&m->durable_head) || !r.I64(&m->last_recorded_at_ns) || !r.U32(&m->partitions))
    return Bad("HEAD_INFO");
  return Finish(r, "HEAD_INFO");
}

void Encode(const ReadAllRangeRequest& m, BodyWriter& w) {
  w.U64(m.from_position);
  w.U64(m.until_position);
  w.U32(m.max_count);
  EncodeFilter(m.filter, w);
}
Status Decode(std::string_view body, ReadAllRangeRequest* m) {
  BodyReader r(body);
  if (!r.U64(&m->from_position) || !r.U64(&m->until_position) || !r.U32(&m->max_count) ||
      !DecodeFilter(r, &m->filter))
    return Bad("READ_ALL_RANGE");
  return Finish(r, "READ_ALL_RANGE");
}

void Encode(const GetCheckpointRequest& m, BodyWriter& w) { w.Str8(m.name); }
Status Decode(std::string_view body, GetCheckpointRequest* m) {
  BodyReader r(body);
  if (!DecodeConsumerName(r, &m->name)) return Bad("GET_CHECKPOINT");
  return Finish(r, "GET_CHECKPOINT");
}

void Encode(const CheckpointResponse& m, BodyWriter& w) {
  w.U8(m.checkpoint.has_value() ? 1 : 0);
  if (!m.checkpoint.has_value()) return;
  const ConsumerCheckpoint& c = *m.checkpoint;
  w.Str8(c.name);
  w.U64(c.position.get());
  w.I64(c.updated_at_ns);
  w.Bytes32(c.blob);
}
Status Decode(std::string_view body, CheckpointResponse* m) {
  BodyReader r(body);
  uint8_t present = 0;
  if (!r.U8(&present) || present > 1) return Bad("CHECKPOINT");
  m->checkpoint.reset();
  if (present == 1) {
    ConsumerCheckpoint c;
    uint64_t position = 0;
    if (!DecodeConsumerName(r, &c.name) || !r.U64(&position) || !r.I64(&c.updated_at_ns) ||
        !r.Bytes32(&c.blob))
      return Bad("CHECKPOINT");
    c.position = GlobalPosition(position);
    c.blob_size = c.blob.size();
    m->checkpoint = std::move(c);
  }
  return Finish(r, "CHECKPOINT");
}

void Encode(const SetCheckpointRequest& m, BodyWriter& w) {
  using Kind = CheckpointExpectation::Kind;
  w.Str8(m.name);
  w.U64(m.position);
  w.U8(static_cast<uint8_t>(m.expected.kind));
  // Sent as 0 unless the kind is "at" (its one encoding).
  w.U64(m.expected.kind == Kind::kAt ? m.expected.position.get() : 0);
  w.Bytes32(m.blob);
}
Status Decode(std::string_view body, SetCheckpointRequest* m) {
  using Kind = CheckpointExpectation::Kind;
  BodyReader r(body);
  uint8_t kind = 0;
  uint64_t expected = 0;
  if (!DecodeConsumerName(r, &m->name) || !r.U64(&m->position) || !r.U8(&kind) || !r.U64(&expected) ||
      !r.Bytes32(&m->blob))
    return Bad("SET_CHECKPOINT");
  if (kind > static_cast<uint8_t>(Kind::kAt)) return Bad("SET_CHECKPOINT expectation kind");
  if (kind != static_cast<uint8_t>(Kind::kAt) && expected != 0)
    return Bad("SET_CHECKPOINT expected position must be 0 unless its kind is at");
  m->expected = {static_cast<Kind>(kind), GlobalPosition(expected)};
  return Finish(r, "SET_CHECKPOINT");
}

void Encode(const CheckpointSet& m, BodyWriter& w) { w.I64(m.updated_at_ns); }
Status Decode(std::string_view body, CheckpointSet* m) {
  BodyReader r(body);
  if (!r.I64(&m->updated_at_ns)) return Bad("CHECKPOINT_SET");
  return Finish(r, "CHECKPOINT_SET");
}

void Encode(const DeleteCheckpointRequest& m, BodyWriter& w) { w.Str8(m.name); }
Status Decode(std::string_view body, DeleteCheckpointRequest* m) {
  BodyReader r(body);
  if (!DecodeConsumerName(r, &m->name)) return Bad("DELETE_CHECKPOINT");
  return Finish(r, "DELETE_CHECKPOINT");
}

void Encode(const CheckpointDeleted& m, BodyWriter& w) { w.U8(m.existed ? 1 : 0); }
Status Decode(std::string_view body, CheckpointDeleted* m) {
  BodyReader r(body);
  uint8_t existed = 0;
  if (!r.U8(&existed) || existed > 1) return Bad("CHECKPOINT_DELETED");
  m->existed = existed == 1;
  return Finish(r, "CHECKPOINT_DELETED");
}

void Encode(const ListCheckpointsRequest& m, BodyWriter& w) { w.Str8(m.prefix); }
Status Decode(std::string_view body, ListCheckpointsRequest* m) {
  BodyReader r(body);
  if (!r.Str8(&m->prefix)) return Bad("LIST_CHECKPOINTS");
  return Finish(r, "LIST_CHECKPOINTS");
}

void Encode(const CheckpointsResponse& m, BodyWriter& w) {
  ANNAL_ASSERT(m.checkpoints.size() <= UINT32_MAX);
  w.U32(static_cast<uint32_t>(m.checkpoints.size()));
  for (const ConsumerCheckpoint& c : m.checkpoints) {
    w.Str8(c.name);
    w.U64(c.position.get());
    w.I64(c.updated_at_ns);
    w.U64(c.blob_size);
  }
}
Status Decode(std::string_view body, CheckpointsResponse* m) {
  BodyReader r(body);
  uint32_t count = 0;
  if (!r.U32(&count) || count > r.remaining() / kMinCheckpointInfoBytes) return Bad("CHECKPOINTS count");
  m->checkpoints.assign(count, ConsumerCheckpoint{});
  for (ConsumerCheckpoint& c : m->checkpoints) {
    uint64_t position = 0;
    if (!DecodeConsumerName(r, &c.name) || !r.U64(&position) || !r.I64(&c.updated_at_ns) ||
        !r.U64(&c.blob_size))
      return Bad("CHECKPOINTS");
    c.position = GlobalPosition(position);
  }
  return Finish(r, "CHECKPOINTS");
}

size_t EncodedCheckpointInfoSize(const ConsumerCheckpoint& c) {
  return kMinCheckpointInfoBytes - 1 + c.name.size();
}

void FinishFrame(std::string* out, size_t start, Op op, uint32_t request_id) {
  size_t length = out->size() - start;
  ANNAL_ASSERT(length >= kFrameHeaderBytes && length <= UINT32_MAX);
  uint8_t* h = reinterpret_cast<uint8_t*>(out->data() + start);
  uint32_t len32 = static_cast<uint32_t>(length);
  std::memcpy(h, &len32, 4);
  h[4] = static_cast<uint8_t>(op);
  h[5] = 0;
  h[6] = h[7] = 0;
  std::memcpy(h + 8, &request_id, 4);
}

void AppendEmptyFrame(std::string* out, Op op, uint32_t request_id) {
  size_t start = out->size();
  out->resize(start + kFrameHeaderBytes);
  FinishFrame(out, start, op, request_id);
}

size_t EncodedEventSize(size_t stream, size_t type, size_t metadata, size_t payload) {
  return kMinRecordedEventBytes + stream + type + metadata + payload;
}

size_t EncodedSize(const RecordedEvent& e) {
  return EncodedEventSize(e.stream.size(), e.type.size(), e.metadata.size(), e.payload.size());
}

size_t EncodedSize(const Snapshot& s) {
  return kMinPlanSnapshotBytes + s.reducer.size() + s.state.size();
}

size_t EncodedSnapshotInfoSize(const Snapshot& s) {
  return kMinSnapshotInfoBytes + s.reducer.size();
}

}  // namespace annal::protocol
