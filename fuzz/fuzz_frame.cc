// Fuzzes the wire codec (server/protocol.h) the way annald and the client
// read a connection: the input is the bytes a peer sent, a sequence of
// frames. Each frame's 12-byte header goes through DecodeFrameHeader with a
// maximum frame size; the body then goes to the Decode its opcode names.
// Reading stops where a server would close the connection (a refused
// header) or wait for more bytes (a frame longer than what is left).
//
// Pair assertions: every body that decodes is encoded again with
// AppendFrame, and the new frame must be the input frame byte for byte
// (every message has exactly one encoding). Whatever decodes must also
// satisfy the rules the decoders promise (filters, subscribe scope, error
// codes, state targets and flags, snapshot sizes, checkpoint names and
// expectations).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "annal/assert.h"
#include "protocol.h"

namespace {

using namespace annal::protocol;

// Small enough that the fuzzer reaches the too-large path with short
// inputs, and the smallest maximum a server accepts.
constexpr uint32_t kMaxFrameBytes = kMinMaxFrameBytes;

// Every event a frame of this input decoded, for Filter::Matches below.
std::vector<annal::RecordedEvent>& SeenEvents() {
  static std::vector<annal::RecordedEvent> events;
  return events;
}

void CheckFilter(const Filter& f) {
  ANNAL_ASSERT(f.event_types.size() <= 64);
  ANNAL_ASSERT((f.kind == Filter::Kind::kNone) == f.value.empty());
  for (const std::string& t : f.event_types) ANNAL_ASSERT(!t.empty());
  // Matching is total: any decoded filter against any decoded event.
  for (const annal::RecordedEvent& e : SeenEvents()) {
    bool matched = f.Matches(e);
    if (f.empty()) ANNAL_ASSERT(matched);
  }
}

void Check(const ErrorResponse& m) {
  uint16_t code = static_cast<uint16_t>(m.code);
  ANNAL_ASSERT(code >= 1 && code <= static_cast<uint16_t>(ErrorCode::kSubscriptionDropped));
}
void Check(const ReadAllRequest& m) { CheckFilter(m.filter); }
void Check(const SubscribeRequest& m) {
  CheckFilter(m.filter);
  bool one_stream = m.scope == SubscribeRequest::Scope::kStream;
  ANNAL_ASSERT(one_stream != m.stream.empty());
  if (one_stream) ANNAL_ASSERT(m.filter.empty());
}
void Check(const EventsResponse& m) {
  for (const annal::RecordedEvent& e : m.events) SeenEvents().push_back(e);
}
void Check(const AllEventsResponse& m) {
  for (const annal::RecordedEvent& e : m.events) SeenEvents().push_back(e);
}
void Check(const LoadStateRequest& m) {
  using Kind = annal::StateTarget::Kind;
  ANNAL_ASSERT(m.target.kind == Kind::kHead || m.target.kind == Kind::kVersion ||
               m.target.kind == Kind::kTime);
  if (m.target.kind != Kind::kVersion) ANNAL_ASSERT(m.target.version == 0);
  if (m.target.kind != Kind::kTime) ANNAL_ASSERT(m.target.time_ns == 0);
}
void Check(const StatePlanResponse& m) {
  if (m.plan.snapshot.has_value())
    ANNAL_ASSERT(m.plan.snapshot->state_size == m.plan.snapshot->state.size());
  for (const annal::RecordedEvent& e : m.plan.events) SeenEvents().push_back(e);
}
void Check(const WriteSnapshotRequest& m) {
  ANNAL_ASSERT(!m.snapshot.reducer.empty());
  ANNAL_ASSERT(m.snapshot.state_size == m.snapshot.state.size());
}
void Check(const SnapshotsResponse& m) {
  for (const annal::Snapshot& s : m.snapshots) ANNAL_ASSERT(s.state.empty() && s.stream.empty());
}
void Check(const ReadAllRangeRequest& m) { CheckFilter(m.filter); }
void Check(const GetCheckpointRequest& m) { ANNAL_ASSERT(!m.name.empty()); }
void Check(const DeleteCheckpointRequest& m) { ANNAL_ASSERT(!m.name.empty()); }
void Check(const SetCheckpointRequest& m) {
  using Kind = annal::CheckpointExpectation::Kind;
  ANNAL_ASSERT(!m.name.empty());
  ANNAL_ASSERT(m.expected.kind == Kind::kAny || m.expected.kind == Kind::kNone ||
               m.expected.kind == Kind::kAt);
  if (m.expected.kind != Kind::kAt) ANNAL_ASSERT(m.expected.position.get() == 0);
}
void Check(const CheckpointResponse& m) {
  if (!m.checkpoint.has_value()) return;
  ANNAL_ASSERT(!m.checkpoint->name.empty());
  ANNAL_ASSERT(m.checkpoint->blob_size == m.checkpoint->blob.size());
}
void Check(const CheckpointsResponse& m) {
  for (const annal::ConsumerCheckpoint& c : m.checkpoints) ANNAL_ASSERT(!c.name.empty() && c.blob.empty());
}
template <typename M>
void Check(const M&) {}

template <typename M>
void DecodeAndReencode(const FrameHeader& h, std::string_view frame) {
  M m;
  std::string_view body = frame.substr(kFrameHeaderBytes);
  annal::Status s = Decode(body, &m);
  if (!s.ok()) {
    // Refusals are always "malformed": the server answers kInvalidRequest.
    ANNAL_ASSERT(s.code() == annal::StatusCode::kInvalidArgument);
    return;
  }
  Check(m);
  std::string again;
  AppendFrame(&again, h.op, h.request_id, m);
  ANNAL_ASSERT(again == frame);
  // The bytes decode to the same message again.
  M twice;
  ANNAL_ASSERT(Decode(std::string_view(again).substr(kFrameHeaderBytes), &twice).ok());
  std::string third;
  AppendFrame(&third, h.op, h.request_id, twice);
  ANNAL_ASSERT(third == again);
}

void DecodeFrame(const FrameHeader& h, std::string_view frame) {
  switch (h.op) {
    case Op::kHello:
      return DecodeAndReencode<Hello>(h, frame);
    case Op::kHelloOk:
      return DecodeAndReencode<HelloOk>(h, frame);
    case Op::kPing:
    case Op::kPong:
      return DecodeAndReencode<Ping>(h, frame);
    case Op::kAppend:
      return DecodeAndReencode<AppendRequest>(h, frame);
    case Op::kAppendOk:
      return DecodeAndReencode<annal::AppendResult>(h, frame);
    case Op::kReadStream:
      return DecodeAndReencode<ReadStreamRequest>(h, frame);
    case Op::kReadAll:
      return DecodeAndReencode<ReadAllRequest>(h, frame);
    case Op::kStreamInfo:
      return DecodeAndReencode<StreamInfoRequest>(h, frame);
    case Op::kStreamInfoOk:
      return DecodeAndReencode<annal::StreamInfo>(h, frame);
    case Op::kLoadState:
      return DecodeAndReencode<LoadStateRequest>(h, frame);
    case Op::kWriteSnapshot:
      return DecodeAndReencode<WriteSnapshotRequest>(h, frame);
    case Op::kListSnapshots:
      return DecodeAndReencode<ListSnapshotsRequest>(h, frame);
    case Op::kState:
      return DecodeAndReencode<StateResponse>(h, frame);
    case Op::kStatePlan:
      return DecodeAndReencode<StatePlanResponse>(h, frame);
    case Op::kSnapshotWritten:
      return DecodeAndReencode<SnapshotWritten>(h, frame);
    case Op::kSnapshots:
      return DecodeAndReencode<SnapshotsResponse>(h, frame);
    case Op::kReadAllRange:
      return DecodeAndReencode<ReadAllRangeRequest>(h, frame);
    case Op::kHeadInfo:
      return DecodeAndReencode<HeadInfo>(h, frame);
    case Op::kGetCheckpoint:
      return DecodeAndReencode<GetCheckpointRequest>(h, frame);
    case Op::kCheckpoint:
      return DecodeAndReencode<CheckpointResponse>(h, frame);
    case Op::kSetCheckpoint:
      return DecodeAndReencode<SetCheckpointRequest>(h, frame);
    case Op::kCheckpointSet:
      return DecodeAndReencode<CheckpointSet>(h, frame);
    case Op::kDeleteCheckpoint:
      return DecodeAndReencode<DeleteCheckpointRequest>(h, frame);
    case Op::kCheckpointDeleted:
      return DecodeAndReencode<CheckpointDeleted>(h, frame);
    case Op::kListCheckpoints:
      return DecodeAndReencode<ListCheckpointsRequest>(h, frame);
    case Op::kCheckpoints:
      return DecodeAndReencode<CheckpointsResponse>(h, frame);
    case Op::kSubscribe:
      return DecodeAndReencode<SubscribeRequest>(h, frame);
    case Op::kUnsubscribe:
      return DecodeAndReencode<UnsubscribeRequest>(h, frame);
    case Op::kEvents:
    case Op::kSubEvents:
      return DecodeAndReencode<EventsResponse>(h, frame);
    case Op::kAllEvents:
      return DecodeAndReencode<AllEventsResponse>(h, frame);
    case Op::kSubscribed:
      return DecodeAndReencode<SubscribedResponse>(h, frame);
    case Op::kCaughtUp:
      return DecodeAndReencode<CaughtUp>(h, frame);
    case Op::kError:
    case Op::kSubDropped:
      return DecodeAndReencode<ErrorResponse>(h, frame);
    case Op::kUnsubscribed:
    case Op::kReadHead:
      // No body; a receiver refuses any. The empty frame is canonical.
      if (h.length == kFrameHeaderBytes) {
        std::string again;
        AppendEmptyFrame(&again, h.op, h.request_id);
        ANNAL_ASSERT(again == frame);
      }
      return;
  }
  ANNAL_ASSERT_MSG(false, "DecodeFrameHeader accepted an opcode DecodeFrame does not know");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  SeenEvents().clear();
  std::string_view in(reinterpret_cast<const char*>(data), size);
  // Bounded: every accepted frame consumes at least its 12-byte header.
  while (in.size() >= kFrameHeaderBytes) {
    FrameHeader h;
    annal::Status s =
        DecodeFrameHeader(reinterpret_cast<const uint8_t*>(in.data()), kMaxFrameBytes, &h);
    uint32_t raw_length;
    std::memcpy(&raw_length, in.data(), 4);
    ANNAL_ASSERT(h.length == raw_length);
    if (!s.ok()) {
      // A server answers ERROR and closes the connection here.
      ANNAL_ASSERT(s.code() == annal::StatusCode::kInvalidArgument ||
                   s.code() == annal::StatusCode::kTooLarge);
      return 0;
    }
    ANNAL_ASSERT(h.length >= kFrameHeaderBytes && h.length <= kMaxFrameBytes);
    ANNAL_ASSERT(h.flags == 0);
    ANNAL_ASSERT(OpName(h.op) != nullptr);
    ANNAL_ASSERT(IsRequest(h.op) == (static_cast<uint8_t>(h.op) < 0x80));
    if (h.length > in.size()) return 0;  // a server waits for the rest
    DecodeFrame(h, in.substr(0, h.length));
    in.remove_prefix(h.length);
  }
  return 0;
}
