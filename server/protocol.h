// annal's wire protocol, version 1: every constant and message layout, and
// the one codec that the server and the client library share.
// docs/protocol.md is the prose companion (byte tables, worked examples).
//
// All integers are little-endian. A connection is a sequence of frames:
//
//   frame := length:u32 opcode:u8 flags:u8 reserved:u16 request_id:u32 body
//
//   length      the whole frame in bytes, header included: 12..max_frame_bytes
//   opcode      what the body is (Op below); requests < 0x80 <= responses
//   flags       0 in version 1; a receiver refuses unknown bits
//   request_id  chosen by the client; a response carries its request's id; a
//               subscription is known by its SUBSCRIBE's request id, which
//               its SUBSCRIBED, SUB_EVENTS, CAUGHT_UP and SUB_DROPPED carry;
//               UNSUBSCRIBED carries the UNSUBSCRIBE's own id
//
// Strings: str8 := len:u8 bytes, str16 := len:u16 bytes, bytes32 := len:u32 bytes.
// The first frame on a connection must be HELLO; requests may be pipelined
// and are answered in any order.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "annal/consumers.h"
#include "annal/state.h"
#include "annal/status.h"
#include "annal/store.h"
#include "annal/types.h"

namespace annal::protocol {

inline constexpr uint16_t kProtocolVersion = 1;
inline constexpr size_t kFrameHeaderBytes = 12;
// Large enough for the largest append the engine accepts by default (8 MiB).
inline constexpr uint32_t kDefaultMaxFrameBytes = 16 * 1024 * 1024;
inline constexpr uint32_t kMinMaxFrameBytes = 64 * 1024;

enum class Op : uint8_t {
  // requests
  kHello = 0x01,
  kPing = 0x02,
  kAppend = 0x10,
  kReadStream = 0x11,
  kReadAll = 0x12,
  kStreamInfo = 0x13,
  kLoadState = 0x14,
  kWriteSnapshot = 0x15,
  kListSnapshots = 0x16,
  kReadHead = 0x17,
  kReadAllRange = 0x18,
  kSubscribe = 0x20,
  kUnsubscribe = 0x21,
  kGetCheckpoint = 0x30,
  kSetCheckpoint = 0x31,
  kDeleteCheckpoint = 0x32,
  kListCheckpoints = 0x33,
  // responses
  kHelloOk = 0x81,
  kPong = 0x82,
  kAppendOk = 0x90,
  kEvents = 0x91,
  kAllEvents = 0x92,
  kStreamInfoOk = 0x93,
  kState = 0x94,
  kStatePlan = 0x95,
  kSnapshotWritten = 0x96,
  kSnapshots = 0x97,
  kHeadInfo = 0x98,
  kSubscribed = 0xA0,
  kSubEvents = 0xA1,
  kCaughtUp = 0xA2,
  kSubDropped = 0xA3,
  kUnsubscribed = 0xA4,
  kCheckpoint = 0xB0,
  kCheckpointSet = 0xB1,
  kCheckpointDeleted = 0xB2,
  kCheckpoints = 0xB3,
  kError = 0xFF,
};
const char* OpName(Op op);
bool IsRequest(Op op);

enum class ErrorCode : uint16_t {
  // A malformed frame (the server then closes the connection) or a bad
  // argument in a well-formed request (the connection stays open).
  kInvalidRequest = 1,
  kWrongExpectedVersion = 2,  // actual_version says where the stream is (-1: no stream)
  kStreamNotFound = 3,
  kTooLarge = 4,
  kFailStopped = 5,           // the store stopped writing; reads still work
  kOverloaded = 6,            // try again later
  kUnsupportedVersion = 7,
  kUnavailable = 8,           // shutting down, or a retry of an append still in flight
  kCorruption = 9,            // the store found damage; message names file and offset
  kIoError = 10,
  kSubscriptionDropped = 11,  // the subscriber fell too far behind
};
ErrorCode ErrorCodeFor(StatusCode code);
StatusCode StatusCodeFor(ErrorCode code);
Status ToStatus(ErrorCode code, int64_t actual_version, std::string message);

struct FrameHeader {
  uint32_t length = 0;
  Op op = Op::kPing;
  uint8_t flags = 0;
  uint32_t request_id = 0;
};
// Checks length bounds, flags and that the opcode is known.
Status DecodeFrameHeader(const uint8_t* in, uint32_t max_frame_bytes, FrameHeader* h);

// Bounded writer and reader of frame bodies.
class BodyWriter {
 public:
  explicit BodyWriter(std::string* out) : out_(out) {}
  void U8(uint8_t v) { out_->push_back(static_cast<char>(v)); }
  void U16(uint16_t v) { Raw(&v, 2); }
  void U32(uint32_t v) { Raw(&v, 4); }
  void U64(uint64_t v) { Raw(&v, 8); }
  void I64(int64_t v) { Raw(&v, 8); }
  void Raw(const void* p, size_t n) { out_->append(static_cast<const char*>(p), n); }
  void Str8(std::string_view s);    // REQUIRES: s.size() <= 255
  void Str16(std::string_view s);   // REQUIRES: s.size() <= 65535
  void Bytes32(std::string_view s);

 private:
  std::string* out_;
};

class BodyReader {
 public:
  explicit BodyReader(std::string_view body) : body_(body) {}
  bool U8(uint8_t* v) { return Raw(v, 1); }
  bool U16(uint16_t* v) { return Raw(v, 2); }
  bool U32(uint32_t* v) { return Raw(v, 4); }
  bool U64(uint64_t* v) { return Raw(v, 8); }
  bool I64(int64_t* v) { return Raw(v, 8); }
  bool Raw(void* p, size_t n);
  bool Str8(std::string* s);
  bool Str16(std::string* s);
  bool Bytes32(std::string* s);
  size_t remaining() const { return body_.size() - at_; }
  bool done() const { return at_ == body_.size(); }

 private:
  bool Take(size_t n, std::string* s);
  std::string_view body_;
  size_t at_ = 0;
};

// A read-all / subscribe-to-all filter: by category (the stream name's part
// before its first '-') or stream-name prefix, and by event types.
struct Filter {
  enum class Kind : uint8_t { kNone = 0, kCategory = 1, kStreamPrefix = 2 };
  Kind kind = Kind::kNone;
  std::string value;                     // the category or the prefix
  std::vector<std::string> event_types;  // empty: every type; at most 64
  bool Matches(const RecordedEvent& e) const;
  bool empty() const { return kind == Kind::kNone && event_types.empty(); }
};

// --- messages. Each has Encode(BodyWriter&) and a Decode that checks
// every length and leaves nothing unread.
struct Hello {
  uint16_t version = kProtocolVersion;
  std::string client_name;
};
struct HelloOk {
  uint16_t version = kProtocolVersion;
  uint32_t max_frame_bytes = kDefaultMaxFrameBytes;
  uint32_t max_in_flight = 0;
  std::string server_name;
};
struct Ping {
  uint64_t token = 0;
};
struct AppendRequest {
  std::string stream;
  ExpectedVersion expected = ExpectedVersion::Any();
  std::vector<EventData> events;
};
struct ReadStreamRequest {
  std::string stream;
  uint64_t from_version = 0;
  ReadDirection direction = ReadDirection::kForward;
  uint32_t max_count = 0;
};
struct ReadAllRequest {
  uint64_t from_position = 0;
  uint32_t max_count = 0;
  Filter filter;
};
struct StreamInfoRequest {
  std::string stream;
};
struct SubscribeRequest {
  enum class Scope : uint8_t { kStream = 0, kAll = 1 };
  Scope scope = Scope::kAll;
  std::string stream;  // kStream only
  uint64_t from = 0;   // first version (kStream) or position (kAll) to deliver
  Filter filter;       // kAll only
};
struct UnsubscribeRequest {
  uint32_t subscription_id = 0;
};
struct EventsResponse {  // kEvents and kSubEvents
  std::vector<RecordedEvent> events;
};
struct AllEventsResponse {
  // Where the next read-all should start: past the last event returned, or
  // past events the filter skipped.
  uint64_t next_position = 0;
  std::vector<RecordedEvent> events;
};
struct SubscribedResponse {
  uint64_t durable_head = 0;  // the store's durable head when it started
};
struct CaughtUp {
  // The store's durable head when the subscription caught up: every event
  // it wants at or below this position was delivered; live from now on.
  uint64_t position = 0;
};
// LOAD_STATE: the state of a stream at its head, a version, or a time.
// The server answers STATE, folded with the reducer it has for the stream's
// category, when it has one, `plan_only` is not set and `reducer` is empty or
// names that reducer. Otherwise it answers STATE_PLAN: the newest snapshot
// of `reducer` at `schema_version` at or before the target (none when
// `reducer` is empty) and the events after it, for the client to fold.
struct LoadStateRequest {
  std::string stream;
  StateTarget target;
  std::string reducer;          // str8; may be empty
  uint32_t schema_version = 0;
  uint32_t max_events = 0;      // STATE_PLAN: events in the reply; 0: the server's limit
  bool plan_only = false;       // bit 0 of the body's last byte (not the frame header's flags)
};
struct StateResponse {  // kState
  State state;
};
struct StatePlanResponse {  // kStatePlan
  StatePlan plan;
};
struct WriteSnapshotRequest {  // recorded_at_ns and taken_at_ns are not sent
  Snapshot snapshot;
};
struct SnapshotWritten {
  int64_t recorded_at_ns = 0;  // of the event at the snapshot's version
};
struct ListSnapshotsRequest {
  std::string stream;
};
struct SnapshotsResponse {  // state bytes are not sent; state_size is
  std::vector<Snapshot> snapshots;
};
// READ_HEAD: where the global log ends now; empty body.
struct HeadInfo {
  uint64_t durable_head = 0;       // every event at or below it is durable and readable
  int64_t last_recorded_at_ns = 0; // of the event at durable_head; 0 for an empty store
  uint32_t partitions = 0;
};
// READ_ALL_RANGE: like READ_ALL, but never past `until_position`
// (inclusive), so a rebuild can read disjoint slices of the log in parallel.
// Answered with ALL_EVENTS; next_position > until_position means the slice
// is done.
struct ReadAllRangeRequest {
  uint64_t from_position = 0;
  uint64_t until_position = 0;
  uint32_t max_count = 0;
  Filter filter;
};
// Consumer checkpoints (annal/consumers.h).
struct GetCheckpointRequest {
  std::string name;
};
struct CheckpointResponse {  // kCheckpoint
  std::optional<ConsumerCheckpoint> checkpoint;  // none: the consumer has none
};
struct SetCheckpointRequest {  // WRONG_EXPECTED_VERSION carries the stored position (-1: none)
  std::string name;
  uint64_t position = 0;
  CheckpointExpectation expected;
  std::string blob;
};
struct CheckpointSet {
  int64_t updated_at_ns = 0;
};
struct DeleteCheckpointRequest {
  std::string name;
};
struct CheckpointDeleted {
  bool existed = false;
};
struct ListCheckpointsRequest {
  std::string prefix;  // may be empty
};
struct CheckpointsResponse {  // blobs are not sent; blob_size is
  std::vector<ConsumerCheckpoint> checkpoints;
};
struct ErrorResponse {  // kError and kSubDropped
  ErrorCode code = ErrorCode::kInvalidRequest;
  int64_t actual_version = -1;
  std::string message;
};

void Encode(const Hello& m, BodyWriter& w);
void Encode(const HelloOk& m, BodyWriter& w);
void Encode(const Ping& m, BodyWriter& w);
void Encode(const AppendRequest& m, BodyWriter& w);
void Encode(const AppendResult& m, BodyWriter& w);
void Encode(const ReadStreamRequest& m, BodyWriter& w);
void Encode(const ReadAllRequest& m, BodyWriter& w);
void Encode(const StreamInfoRequest& m, BodyWriter& w);
void Encode(const StreamInfo& m, BodyWriter& w);
void Encode(const SubscribeRequest& m, BodyWriter& w);
void Encode(const UnsubscribeRequest& m, BodyWriter& w);
void Encode(const EventsResponse& m, BodyWriter& w);
void Encode(const AllEventsResponse& m, BodyWriter& w);
void Encode(const SubscribedResponse& m, BodyWriter& w);
void Encode(const CaughtUp& m, BodyWriter& w);
void Encode(const ErrorResponse& m, BodyWriter& w);
void Encode(const LoadStateRequest& m, BodyWriter& w);
void Encode(const StateResponse& m, BodyWriter& w);
void Encode(const StatePlanResponse& m, BodyWriter& w);
void Encode(const WriteSnapshotRequest& m, BodyWriter& w);
void Encode(const SnapshotWritten& m, BodyWriter& w);
void Encode(const ListSnapshotsRequest& m, BodyWriter& w);
void Encode(const SnapshotsResponse& m, BodyWriter& w);
void Encode(const HeadInfo& m, BodyWriter& w);
void Encode(const ReadAllRangeRequest& m, BodyWriter& w);
void Encode(const GetCheckpointRequest& m, BodyWriter& w);
void Encode(const CheckpointResponse& m, BodyWriter& w);
void Encode(const SetCheckpointRequest& m, BodyWriter& w);
void Encode(const CheckpointSet& m, BodyWriter& w);
void Encode(const DeleteCheckpointRequest& m, BodyWriter& w);
void Encode(const CheckpointDeleted& m, BodyWriter& w);
void Encode(const ListCheckpointsRequest& m, BodyWriter& w);
void Encode(const CheckpointsResponse& m, BodyWriter& w);

Status Decode(std::string_view body, Hello* m);
Status Decode(std::string_view body, HelloOk* m);
Status Decode(std::string_view body, Ping* m);
Status Decode(std::string_view body, AppendRequest* m);
Status Decode(std::string_view body, AppendResult* m);
Status Decode(std::string_view body, ReadStreamRequest* m);
Status Decode(std::string_view body, ReadAllRequest* m);
Status Decode(std::string_view body, StreamInfoRequest* m);
Status Decode(std::string_view body, StreamInfo* m);
Status Decode(std::string_view body, SubscribeRequest* m);
Status Decode(std::string_view body, UnsubscribeRequest* m);
Status Decode(std::string_view body, EventsResponse* m);
Status Decode(std::string_view body, AllEventsResponse* m);
Status Decode(std::string_view body, SubscribedResponse* m);
Status Decode(std::string_view body, CaughtUp* m);
Status Decode(std::string_view body, ErrorResponse* m);
Status Decode(std::string_view body, LoadStateRequest* m);
Status Decode(std::string_view body, StateResponse* m);
Status Decode(std::string_view body, StatePlanResponse* m);
Status Decode(std::string_view body, WriteSnapshotRequest* m);
Status Decode(std::string_view body, SnapshotWritten* m);
Status Decode(std::string_view body, ListSnapshotsRequest* m);
Status Decode(std::string_view body, SnapshotsResponse* m);
Status Decode(std::string_view body, HeadInfo* m);
Status Decode(std::string_view body, ReadAllRangeRequest* m);
Status Decode(std::string_view body, GetCheckpointRequest* m);
Status Decode(std::string_view body, CheckpointResponse* m);
Status Decode(std::string_view body, SetCheckpointRequest* m);
Status Decode(std::string_view body, CheckpointSet* m);
Status Decode(std::string_view body, DeleteCheckpointRequest* m);
Status Decode(std::string_view body, CheckpointDeleted* m);
Status Decode(std::string_view body, ListCheckpointsRequest* m);
Status Decode(std::string_view body, CheckpointsResponse* m);

// Fills in the header of the frame that starts at out[start].
void FinishFrame(std::string* out, size_t start, Op op, uint32_t request_id);

// Appends one whole frame (header and body) to `out`.
template <typename M>
void AppendFrame(std::string* out, Op op, uint32_t request_id, const M& message) {
  size_t start = out->size();
  out->resize(start + kFrameHeaderBytes);
  BodyWriter w(out);
  Encode(message, w);
  FinishFrame(out, start, op, request_id);
}
// A frame whose body is empty (kUnsubscribed).
void AppendEmptyFrame(std::string* out, Op op, uint32_t request_id);

// The wire size of one event in an events response; lets a sender bound
// the frames it builds.
size_t EncodedSize(const RecordedEvent& e);
size_t EncodedEventSize(size_t stream, size_t type, size_t metadata, size_t payload);
// Bytes an ALL_EVENTS or EVENTS frame needs besides its events.
inline constexpr size_t kEventsFrameOverheadBytes = kFrameHeaderBytes + 8 + 4;
// The wire size of a snapshot in a STATE_PLAN (state included), and of one
// entry of a SNAPSHOTS list (state left out).
size_t EncodedSize(const Snapshot& s);
size_t EncodedSnapshotInfoSize(const Snapshot& s);
// Bytes a STATE_PLAN frame needs besides its snapshot and events, and a
// SNAPSHOTS frame besides its entries.
inline constexpr size_t kStatePlanFrameOverheadBytes = kFrameHeaderBytes + 8 + 8 + 1 + 1 + 4;
inline constexpr size_t kSnapshotsFrameOverheadBytes = kFrameHeaderBytes + 4;
// The wire size of one entry of a CHECKPOINTS list, and the bytes that
// frame needs besides its entries.
size_t EncodedCheckpointInfoSize(const ConsumerCheckpoint& c);
inline constexpr size_t kCheckpointsFrameOverheadBytes = kFrameHeaderBytes + 4;

}  // namespace annal::protocol
