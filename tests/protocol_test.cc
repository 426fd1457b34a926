// The wire codec (server/protocol.h): every message round trips through
// AppendFrame + DecodeFrameHeader + Decode, and every check a decoder makes
// refuses the bytes it is meant to refuse. docs/protocol.md describes the
// layouts these tests pin.
#include "protocol.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "frame_bytes.h"
#include "test_util.h"

namespace annal::protocol {
namespace {

constexpr int64_t kSomeTimeNs = 1764000000000000000;

// --- building and taking apart frames

template <typename M>
std::string Frame(Op op, uint32_t request_id, const M& m) {
  std::string out;
  AppendFrame(&out, op, request_id, m);
  return out;
}

std::string_view BodyOf(const std::string& frame) {
  return std::string_view(frame).substr(kFrameHeaderBytes);
}

FrameHeader HeaderOf(const std::string& frame, uint32_t max_frame_bytes = kDefaultMaxFrameBytes) {
  FrameHeader h;
  Status s = DecodeFrameHeader(reinterpret_cast<const uint8_t*>(frame.data()), max_frame_bytes, &h);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return h;
}

// Decodes `frame` as a whole: its header must name `op` and `request_id`
// and cover exactly the frame, and its body must decode into `m`. Then the
// pair assertion: `m` encodes back to the same bytes.
template <typename M>
void DecodeWhole(const std::string& frame, Op op, uint32_t request_id, M* m) {
  ASSERT_GE(frame.size(), kFrameHeaderBytes);
  FrameHeader h = HeaderOf(frame);
  EXPECT_EQ(h.length, frame.size());
  EXPECT_EQ(h.op, op);
  EXPECT_EQ(h.flags, 0);
  EXPECT_EQ(h.request_id, request_id);
  Status s = Decode(BodyOf(frame), m);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(Frame(op, request_id, *m), frame);
}

template <typename M>
Status DecodeBody(std::string_view body) {
  M m;
  return Decode(body, &m);
}

// --- sample messages

EventId SomeId(uint8_t first) {
  EventId id;
  for (size_t i = 0; i < id.size(); ++i) id[i] = static_cast<uint8_t>(first + i);
  return id;
}

RecordedEvent SampleEvent(uint64_t version, uint64_t position) {
  RecordedEvent e;
  e.stream = "account-42";
  e.version = StreamVersion(version);
  e.position = GlobalPosition(position);
  e.recorded_at_ns = kSomeTimeNs + static_cast<int64_t>(position);
  e.id = SomeId(static_cast<uint8_t>(position));
  e.type = "AccountCredited";
  e.metadata = R"({"user":"u1"})";
  e.payload = std::string("{\"amount\":10}\0\xff", 15);  // binary bytes survive
  return e;
}

void ExpectSameEvent(const RecordedEvent& a, const RecordedEvent& b) {
  EXPECT_EQ(a.stream, b.stream);
  EXPECT_EQ(a.version, b.version);
  EXPECT_EQ(a.position, b.position);
  EXPECT_EQ(a.recorded_at_ns, b.recorded_at_ns);
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(a.type, b.type);
  EXPECT_EQ(a.metadata, b.metadata);
  EXPECT_EQ(a.payload, b.payload);
}

void ExpectSameEvents(const std::vector<RecordedEvent>& a, const std::vector<RecordedEvent>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) ExpectSameEvent(a[i], b[i]);
}

void ExpectSameFilter(const Filter& a, const Filter& b) {
  EXPECT_EQ(a.kind, b.kind);
  EXPECT_EQ(a.value, b.value);
  EXPECT_EQ(a.event_types, b.event_types);
}

AppendRequest SampleAppend() {
  AppendRequest m;
  m.stream = "account-42";
  m.expected = ExpectedVersion::Exact(41);
  EventData a = testing::Event("AccountCredited", R"({"amount":10})", R"({"user":"u1"})");
  a.id = SomeId(0x10);
  EventData b = testing::Event("AccountDebited", std::string("\0\x01\xff", 3), "");
  m.events = {a, b};
  return m;
}

ReadAllRequest SampleReadAll() {
  ReadAllRequest m;
  m.from_position = 1000;
  m.max_count = 500;
  m.filter.kind = Filter::Kind::kCategory;
  m.filter.value = "account";
  m.filter.event_types = {"AccountCredited", "AccountDebited"};
  return m;
}

SubscribeRequest SampleSubscribeAll() {
  SubscribeRequest m;
  m.scope = SubscribeRequest::Scope::kAll;
  m.from = 77;
  m.filter.kind = Filter::Kind::kStreamPrefix;
  m.filter.value = "account-4";
  return m;
}

ErrorResponse SampleError() {
  ErrorResponse m;
  m.code = ErrorCode::kWrongExpectedVersion;
  m.actual_version = 40;
  m.message = "stream account-42 is at version 40, not 41";
  return m;
}

LoadStateRequest SampleLoadState() {
  LoadStateRequest m;
  m.stream = "account-42";
  m.target = StateTarget::AsOf(kSomeTimeNs + 3);
  m.reducer = "balance";
  m.schema_version = 7;
  m.max_events = 500;
  m.plan_only = true;
  return m;
}

State SampleState() {
  State s;
  s.stream = "account-42";
  s.reducer = "json-merge-patch";
  s.schema_version = 1;
  s.version = StreamVersion(42);
  s.recorded_at_ns = kSomeTimeNs;
  s.state = R"({"balance":10})";
  s.snapshot_version = StreamVersion(39);
  s.events_folded = 3;
  return s;
}

Snapshot SampleSnapshot(uint64_t version) {
  Snapshot s;
  s.stream = "account-42";
  s.version = StreamVersion(version);
  s.recorded_at_ns = kSomeTimeNs + static_cast<int64_t>(version);
  s.reducer = "balance";
  s.schema_version = 7;
  s.state = std::string("\0\x01{\"b\":10}\xff", 11);  // binary bytes survive
  s.state_size = s.state.size();
  s.taken_at_ns = kSomeTimeNs + 1000;
  return s;
}

StatePlan SamplePlan() {
  StatePlan p;
  p.target_version = StreamVersion(2);
  p.target_recorded_at_ns = kSomeTimeNs + 6;
  p.complete = false;
  p.snapshot = SampleSnapshot(0);
  p.events = {SampleEvent(1, 5), SampleEvent(2, 6)};
  return p;
}

// As a SNAPSHOTS list carries them: no stream, no state, its size only.
std::vector<Snapshot> SampleSnapshotList() {
  std::vector<Snapshot> list;
  for (uint64_t version : {99, 199}) {
    Snapshot s = SampleSnapshot(version);
    s.stream.clear();
    s.state.clear();
    s.state_size = 1234 + version;
    list.push_back(s);
  }
  list[1].reducer = "json-merge-patch";
  list[1].schema_version = 1;
  return list;
}

ReadAllRangeRequest SampleReadAllRange() {
  ReadAllRangeRequest m;
  m.from_position = 1000;
  m.until_position = 1999;
  m.max_count = 500;
  m.filter.kind = Filter::Kind::kCategory;
  m.filter.value = "account";
  m.filter.event_types = {"AccountCredited"};
  return m;
}

ConsumerCheckpoint SampleCheckpoint() {
  ConsumerCheckpoint c;
  c.name = "balances";
  c.position = GlobalPosition(4711);
  c.blob = std::string("{\"rows\":3}\0\xff", 13);  // binary bytes survive
  c.blob_size = c.blob.size();
  c.updated_at_ns = kSomeTimeNs;
  return c;
}

SetCheckpointRequest SampleSetCheckpoint() {
  SetCheckpointRequest m;
  m.name = "balances";
  m.position = 4711;
  m.expected = CheckpointExpectation::At(GlobalPosition(4700));
  m.blob = SampleCheckpoint().blob;
  return m;
}

std::vector<ConsumerCheckpoint> SampleCheckpointList() {
  std::vector<ConsumerCheckpoint> list(2, SampleCheckpoint());
  list[1].name = "balances-eu";
  list[1].position = GlobalPosition(12);
  for (ConsumerCheckpoint& c : list) c.blob.clear();  // not sent; blob_size is
  return list;
}

// One valid frame of every opcode whose body has a decoder, with a decoder
// that takes only the body. UNSUBSCRIBED and READ_HEAD have an empty body
// and no decoder.
struct Sample {
  const char* name;
  Op op;
  std::string frame;
  std::function<Status(std::string_view)> decode;
};

std::vector<Sample> AllSamples() {
  HelloOk hello_ok;
  hello_ok.max_in_flight = 256;
  hello_ok.server_name = "annald 0.1.0";
  AppendResult appended;
  appended.first_version = StreamVersion(41);
  appended.last_version = StreamVersion(42);
  appended.first_position = GlobalPosition(1001);
  appended.last_position = GlobalPosition(1002);
  appended.recorded_at_ns = kSomeTimeNs;
  appended.idempotent_replay = true;
  StreamInfo info;
  info.stream = "account-42";
  info.head_version = StreamVersion(42);
  info.event_count = 43;
  info.first_recorded_at_ns = kSomeTimeNs - 5;
  info.last_recorded_at_ns = kSomeTimeNs;
  SubscribeRequest one_stream;
  one_stream.scope = SubscribeRequest::Scope::kStream;
  one_stream.stream = "account-42";
  one_stream.from = 3;
  EventsResponse events{{SampleEvent(0, 1), SampleEvent(1, 5)}};
  ErrorResponse dropped{ErrorCode::kSubscriptionDropped, -1, "subscriber fell behind"};
  State no_snapshot_state = SampleState();
  no_snapshot_state.snapshot_version.reset();
  no_snapshot_state.state.clear();
  StatePlan replay_plan = SamplePlan();
  replay_plan.snapshot.reset();
  replay_plan.complete = true;
  ConsumerCheckpoint no_blob = SampleCheckpoint();
  no_blob.blob.clear();
  no_blob.blob_size = 0;
  SetCheckpointRequest set_none{"balances", 0, CheckpointExpectation::None(), ""};
  return {
      {"HELLO", Op::kHello, Frame(Op::kHello, 1, Hello{1, "test"}), DecodeBody<Hello>},
      {"HELLO_OK", Op::kHelloOk, Frame(Op::kHelloOk, 1, hello_ok), DecodeBody<HelloOk>},
      {"PING", Op::kPing, Frame(Op::kPing, 2, Ping{0x0102030405060708}), DecodeBody<Ping>},
      {"PONG", Op::kPong, Frame(Op::kPong, 2, Ping{0x0102030405060708}), DecodeBody<Ping>},
      {"APPEND", Op::kAppend, Frame(Op::kAppend, 3, SampleAppend()), DecodeBody<AppendRequest>},
      {"APPEND_OK", Op::kAppendOk, Frame(Op::kAppendOk, 3, appended), DecodeBody<AppendResult>},
      {"READ_STREAM", Op::kReadStream,
       Frame(Op::kReadStream, 4, ReadStreamRequest{"account-42", 7, ReadDirection::kBackward, 9}),
       DecodeBody<ReadStreamRequest>},
      {"EVENTS", Op::kEvents, Frame(Op::kEvents, 4, events), DecodeBody<EventsResponse>},
      {"READ_ALL", Op::kReadAll, Frame(Op::kReadAll, 5, SampleReadAll()),
       DecodeBody<ReadAllRequest>},
      {"ALL_EVENTS", Op::kAllEvents, Frame(Op::kAllEvents, 5, AllEventsResponse{9, events.events}),
       DecodeBody<AllEventsResponse>},
      {"STREAM_INFO", Op::kStreamInfo, Frame(Op::kStreamInfo, 6, StreamInfoRequest{"account-42"}),
       DecodeBody<StreamInfoRequest>},
      {"STREAM_INFO_OK", Op::kStreamInfoOk, Frame(Op::kStreamInfoOk, 6, info),
       DecodeBody<StreamInfo>},
      {"SUBSCRIBE(all)", Op::kSubscribe, Frame(Op::kSubscribe, 7, SampleSubscribeAll()),
       DecodeBody<SubscribeRequest>},
      {"SUBSCRIBE(stream)", Op::kSubscribe, Frame(Op::kSubscribe, 8, one_stream),
       DecodeBody<SubscribeRequest>},
      {"UNSUBSCRIBE", Op::kUnsubscribe, Frame(Op::kUnsubscribe, 9, UnsubscribeRequest{7}),
       DecodeBody<UnsubscribeRequest>},
      {"SUBSCRIBED", Op::kSubscribed, Frame(Op::kSubscribed, 7, SubscribedResponse{1002}),
       DecodeBody<SubscribedResponse>},
      {"SUB_EVENTS", Op::kSubEvents, Frame(Op::kSubEvents, 7, events), DecodeBody<EventsResponse>},
      {"CAUGHT_UP", Op::kCaughtUp, Frame(Op::kCaughtUp, 7, CaughtUp{1002}), DecodeBody<CaughtUp>},
      {"SUB_DROPPED", Op::kSubDropped, Frame(Op::kSubDropped, 8, dropped),
       DecodeBody<ErrorResponse>},
      {"ERROR", Op::kError, Frame(Op::kError, 3, SampleError()), DecodeBody<ErrorResponse>},
      {"LOAD_STATE", Op::kLoadState, Frame(Op::kLoadState, 11, SampleLoadState()),
       DecodeBody<LoadStateRequest>},
      {"STATE", Op::kState, Frame(Op::kState, 11, StateResponse{SampleState()}),
       DecodeBody<StateResponse>},
      {"STATE(no snapshot)", Op::kState, Frame(Op::kState, 11, StateResponse{no_snapshot_state}),
       DecodeBody<StateResponse>},
      {"STATE_PLAN", Op::kStatePlan, Frame(Op::kStatePlan, 12, StatePlanResponse{SamplePlan()}),
       DecodeBody<StatePlanResponse>},
      {"STATE_PLAN(no snapshot)", Op::kStatePlan,
       Frame(Op::kStatePlan, 12, StatePlanResponse{replay_plan}), DecodeBody<StatePlanResponse>},
      {"WRITE_SNAPSHOT", Op::kWriteSnapshot,
       Frame(Op::kWriteSnapshot, 13, WriteSnapshotRequest{SampleSnapshot(41)}),
       DecodeBody<WriteSnapshotRequest>},
      {"SNAPSHOT_WRITTEN", Op::kSnapshotWritten,
       Frame(Op::kSnapshotWritten, 13, SnapshotWritten{kSomeTimeNs}), DecodeBody<SnapshotWritten>},
      {"LIST_SNAPSHOTS", Op::kListSnapshots,
       Frame(Op::kListSnapshots, 14, ListSnapshotsRequest{"account-42"}),
       DecodeBody<ListSnapshotsRequest>},
      {"SNAPSHOTS", Op::kSnapshots,
       Frame(Op::kSnapshots, 14, SnapshotsResponse{SampleSnapshotList()}),
       DecodeBody<SnapshotsResponse>},
      {"HEAD_INFO", Op::kHeadInfo, Frame(Op::kHeadInfo, 15, HeadInfo{1002, kSomeTimeNs, 4}),
       DecodeBody<HeadInfo>},
      {"READ_ALL_RANGE", Op::kReadAllRange, Frame(Op::kReadAllRange, 16, SampleReadAllRange()),
       DecodeBody<ReadAllRangeRequest>},
      {"GET_CHECKPOINT", Op::kGetCheckpoint,
       Frame(Op::kGetCheckpoint, 17, GetCheckpointRequest{"balances"}),
       DecodeBody<GetCheckpointRequest>},
      {"CHECKPOINT", Op::kCheckpoint, Frame(Op::kCheckpoint, 17, CheckpointResponse{SampleCheckpoint()}),
       DecodeBody<CheckpointResponse>},
      {"CHECKPOINT(no blob)", Op::kCheckpoint, Frame(Op::kCheckpoint, 17, CheckpointResponse{no_blob}),
       DecodeBody<CheckpointResponse>},
      {"CHECKPOINT(none)", Op::kCheckpoint, Frame(Op::kCheckpoint, 17, CheckpointResponse{}),
       DecodeBody<CheckpointResponse>},
      {"SET_CHECKPOINT", Op::kSetCheckpoint, Frame(Op::kSetCheckpoint, 18, SampleSetCheckpoint()),
       DecodeBody<SetCheckpointRequest>},
      {"SET_CHECKPOINT(none)", Op::kSetCheckpoint, Frame(Op::kSetCheckpoint, 18, set_none),
       DecodeBody<SetCheckpointRequest>},
      {"CHECKPOINT_SET", Op::kCheckpointSet, Frame(Op::kCheckpointSet, 18, CheckpointSet{kSomeTimeNs}),
       DecodeBody<CheckpointSet>},
      {"DELETE_CHECKPOINT", Op::kDeleteCheckpoint,
       Frame(Op::kDeleteCheckpoint, 19, DeleteCheckpointRequest{"balances"}),
       DecodeBody<DeleteCheckpointRequest>},
      {"CHECKPOINT_DELETED", Op::kCheckpointDeleted,
       Frame(Op::kCheckpointDeleted, 19, CheckpointDeleted{true}), DecodeBody<CheckpointDeleted>},
      {"LIST_CHECKPOINTS", Op::kListCheckpoints,
       Frame(Op::kListCheckpoints, 20, ListCheckpointsRequest{"bal"}),
       DecodeBody<ListCheckpointsRequest>},
      {"CHECKPOINTS", Op::kCheckpoints,
       Frame(Op::kCheckpoints, 20, CheckpointsResponse{SampleCheckpointList()}),
       DecodeBody<CheckpointsResponse>},
  };
}

// Writes a frame header around `body` by hand, for bodies the encoders
// would refuse to build.
std::string RawFrame(Op op, uint32_t request_id, std::string_view body) {
  std::string out(kFrameHeaderBytes, '\0');
  out.append(body);
  FinishFrame(&out, 0, op, request_id);
  return out;
}

void PutU32At(std::string* s, size_t at, uint32_t v) { std::memcpy(s->data() + at, &v, 4); }

// ============================================================ round trips

TEST(ProtocolTest, HelloRoundTrip) {
  Hello m;
  DecodeWhole(Frame(Op::kHello, 0xfffffffe, Hello{1, "annal-cli"}), Op::kHello, 0xfffffffe, &m);
  EXPECT_EQ(m.version, 1);
  EXPECT_EQ(m.client_name, "annal-cli");
  DecodeWhole(Frame(Op::kHello, 1, Hello{7, ""}), Op::kHello, 1, &m);
  EXPECT_EQ(m.version, 7);
  EXPECT_EQ(m.client_name, "");
}

TEST(ProtocolTest, HelloOkRoundTrip) {
  HelloOk in;
  in.version = 1;
  in.max_frame_bytes = kMinMaxFrameBytes;
  in.max_in_flight = 4096;
  in.server_name = std::string(255, 's');
  HelloOk m;
  DecodeWhole(Frame(Op::kHelloOk, 1, in), Op::kHelloOk, 1, &m);
  EXPECT_EQ(m.version, 1);
  EXPECT_EQ(m.max_frame_bytes, kMinMaxFrameBytes);
  EXPECT_EQ(m.max_in_flight, 4096u);
  EXPECT_EQ(m.server_name, in.server_name);
}

TEST(ProtocolTest, PingAndPongRoundTrip) {
  for (Op op : {Op::kPing, Op::kPong}) {
    Ping m;
    DecodeWhole(Frame(op, 2, Ping{0xfedcba9876543210}), op, 2, &m);
    EXPECT_EQ(m.token, 0xfedcba9876543210u);
  }
}

TEST(ProtocolTest, AppendRoundTripEveryExpectedVersionKind) {
  for (ExpectedVersion expected :
       {ExpectedVersion::Any(), ExpectedVersion::NoStream(), ExpectedVersion::StreamExists(),
        ExpectedVersion::Exact(0), ExpectedVersion::Exact(UINT64_MAX - 1)}) {
    AppendRequest in = SampleAppend();
    in.expected = expected;
    AppendRequest m;
    DecodeWhole(Frame(Op::kAppend, 3, in), Op::kAppend, 3, &m);
    EXPECT_EQ(m.stream, in.stream);
    EXPECT_EQ(m.expected.kind(), expected.kind());
    EXPECT_EQ(m.expected.version(), expected.version());
    ASSERT_EQ(m.events.size(), 2u);
    for (size_t i = 0; i < 2; ++i) {
      EXPECT_EQ(m.events[i].id, in.events[i].id);
      EXPECT_EQ(m.events[i].type, in.events[i].type);
      EXPECT_EQ(m.events[i].metadata, in.events[i].metadata);
      EXPECT_EQ(m.events[i].payload, in.events[i].payload);
    }
  }
}

TEST(ProtocolTest, AppendRoundTripLongestNamesAndNoEvents) {
  AppendRequest in;
  in.stream = std::string(255, 'x');
  EventData e =
      testing::Event(std::string(255, 't'), std::string(70'000, 'p'), std::string(300, 'm'));
  in.events = {e};
  AppendRequest m;
  DecodeWhole(Frame(Op::kAppend, 3, in), Op::kAppend, 3, &m);
  EXPECT_EQ(m.stream, in.stream);
  ASSERT_EQ(m.events.size(), 1u);
  EXPECT_EQ(m.events[0].type, e.type);
  EXPECT_EQ(m.events[0].payload, e.payload);
  EXPECT_EQ(m.events[0].metadata, e.metadata);

  // The codec carries an empty append; refusing it is the store's business.
  in.events.clear();
  DecodeWhole(Frame(Op::kAppend, 3, in), Op::kAppend, 3, &m);
  EXPECT_TRUE(m.events.empty());
}

// The expected version's u64 is meaningful only for kExact; anywhere else
// it must be 0, so that every APPEND has one encoding.
TEST(ProtocolTest, AppendRefusesAVersionUnlessExact) {
  AppendRequest in = SampleAppend();
  in.expected = ExpectedVersion::Any();
  std::string frame = Frame(Op::kAppend, 3, in);
  const size_t version_at = kFrameHeaderBytes + 1 + in.stream.size() + 1;
  uint64_t junk = 99;
  std::memcpy(frame.data() + version_at, &junk, 8);
  AppendRequest m;
  EXPECT_FALSE(Decode(BodyOf(frame), &m).ok());
  junk = 0;
  std::memcpy(frame.data() + version_at, &junk, 8);
  ASSERT_TRUE(Decode(BodyOf(frame), &m).ok());
  EXPECT_EQ(m.expected.kind(), ExpectedVersion::Kind::kAny);
}

TEST(ProtocolTest, AppendResultRoundTrip) {
  for (bool replay : {false, true}) {
    AppendResult in;
    in.first_version = StreamVersion(0);
    in.last_version = StreamVersion(9);
    in.first_position = GlobalPosition(1);
    in.last_position = GlobalPosition(UINT64_MAX);
    in.recorded_at_ns = -1;  // signed: the bit pattern survives
    in.idempotent_replay = replay;
    AppendResult m;
    DecodeWhole(Frame(Op::kAppendOk, 3, in), Op::kAppendOk, 3, &m);
    EXPECT_EQ(m.first_version, in.first_version);
    EXPECT_EQ(m.last_version, in.last_version);
    EXPECT_EQ(m.first_position, in.first_position);
    EXPECT_EQ(m.last_position, in.last_position);
    EXPECT_EQ(m.recorded_at_ns, -1);
    EXPECT_EQ(m.idempotent_replay, replay);
  }
}

TEST(ProtocolTest, ReadStreamRoundTripBothDirections) {
  for (ReadDirection d : {ReadDirection::kForward, ReadDirection::kBackward}) {
    ReadStreamRequest m;
    DecodeWhole(Frame(Op::kReadStream, 4, ReadStreamRequest{"orders-7", 12, d, 100'000}),
                Op::kReadStream, 4, &m);
    EXPECT_EQ(m.stream, "orders-7");
    EXPECT_EQ(m.from_version, 12u);
    EXPECT_EQ(m.direction, d);
    EXPECT_EQ(m.max_count, 100'000u);
  }
}

TEST(ProtocolTest, ReadAllRoundTripEveryFilterKind) {
  std::vector<Filter> filters(4);
  filters[1] = SampleReadAll().filter;
  filters[2].kind = Filter::Kind::kStreamPrefix;
  filters[2].value = std::string(255, 'p');
  filters[3].event_types.assign(64, std::string(255, 't'));  // the most types there may be
  for (const Filter& f : filters) {
    ReadAllRequest in = SampleReadAll();
    in.filter = f;
    ReadAllRequest m;
    DecodeWhole(Frame(Op::kReadAll, 5, in), Op::kReadAll, 5, &m);
    EXPECT_EQ(m.from_position, in.from_position);
    EXPECT_EQ(m.max_count, in.max_count);
    ExpectSameFilter(m.filter, f);
  }
}

TEST(ProtocolTest, StreamInfoRoundTrip) {
  StreamInfoRequest req;
  DecodeWhole(Frame(Op::kStreamInfo, 6, StreamInfoRequest{"account-42"}), Op::kStreamInfo, 6, &req);
  EXPECT_EQ(req.stream, "account-42");

  StreamInfo in;
  in.stream = "account-42";
  in.head_version = StreamVersion(42);
  in.event_count = 43;
  in.first_recorded_at_ns = kSomeTimeNs - 5;
  in.last_recorded_at_ns = kSomeTimeNs;
  StreamInfo m;
  DecodeWhole(Frame(Op::kStreamInfoOk, 6, in), Op::kStreamInfoOk, 6, &m);
  EXPECT_EQ(m.stream, in.stream);
  EXPECT_EQ(m.head_version, in.head_version);
  EXPECT_EQ(m.event_count, 43u);
  EXPECT_EQ(m.first_recorded_at_ns, in.first_recorded_at_ns);
  EXPECT_EQ(m.last_recorded_at_ns, in.last_recorded_at_ns);
}

TEST(ProtocolTest, SubscribeRoundTripBothScopes) {
  SubscribeRequest m;
  DecodeWhole(Frame(Op::kSubscribe, 7, SampleSubscribeAll()), Op::kSubscribe, 7, &m);
  EXPECT_EQ(m.scope, SubscribeRequest::Scope::kAll);
  EXPECT_EQ(m.stream, "");
  EXPECT_EQ(m.from, 77u);
  ExpectSameFilter(m.filter, SampleSubscribeAll().filter);

  SubscribeRequest all_unfiltered;
  all_unfiltered.from = 1;
  DecodeWhole(Frame(Op::kSubscribe, 7, all_unfiltered), Op::kSubscribe, 7, &m);
  EXPECT_EQ(m.scope, SubscribeRequest::Scope::kAll);
  EXPECT_TRUE(m.filter.empty());

  SubscribeRequest one;
  one.scope = SubscribeRequest::Scope::kStream;
  one.stream = "account-42";
  one.from = 5;
  DecodeWhole(Frame(Op::kSubscribe, 8, one), Op::kSubscribe, 8, &m);
  EXPECT_EQ(m.scope, SubscribeRequest::Scope::kStream);
  EXPECT_EQ(m.stream, "account-42");
  EXPECT_EQ(m.from, 5u);
  EXPECT_TRUE(m.filter.empty());
}

TEST(ProtocolTest, UnsubscribeAndUnsubscribedRoundTrip) {
  UnsubscribeRequest m;
  DecodeWhole(Frame(Op::kUnsubscribe, 9, UnsubscribeRequest{0xabcdef01}), Op::kUnsubscribe, 9, &m);
  EXPECT_EQ(m.subscription_id, 0xabcdef01u);

  std::string empty;
  AppendEmptyFrame(&empty, Op::kUnsubscribed, 9);
  ASSERT_EQ(empty.size(), kFrameHeaderBytes);
  FrameHeader h = HeaderOf(empty);
  EXPECT_EQ(h.length, kFrameHeaderBytes);
  EXPECT_EQ(h.op, Op::kUnsubscribed);
  EXPECT_EQ(h.request_id, 9u);
}

TEST(ProtocolTest, EventsAndSubEventsRoundTrip) {
  std::vector<RecordedEvent> events = {SampleEvent(0, 1), SampleEvent(1, 2), SampleEvent(2, 99)};
  RecordedEvent bare;  // the smallest event there is: every string empty
  events.push_back(bare);
  for (Op op : {Op::kEvents, Op::kSubEvents}) {
    EventsResponse m;
    DecodeWhole(Frame(op, 4, EventsResponse{events}), op, 4, &m);
    ExpectSameEvents(m.events, events);
    DecodeWhole(Frame(op, 4, EventsResponse{}), op, 4, &m);
    EXPECT_TRUE(m.events.empty());
  }
}

TEST(ProtocolTest, AllEventsRoundTrip) {
  AllEventsResponse in{12345, {SampleEvent(0, 1), SampleEvent(0, 12344)}};
  AllEventsResponse m;
  DecodeWhole(Frame(Op::kAllEvents, 5, in), Op::kAllEvents, 5, &m);
  EXPECT_EQ(m.next_position, 12345u);
  ExpectSameEvents(m.events, in.events);
  // A page whose events the filter all skipped still moves the position on.
  DecodeWhole(Frame(Op::kAllEvents, 5, AllEventsResponse{777, {}}), Op::kAllEvents, 5, &m);
  EXPECT_EQ(m.next_position, 777u);
  EXPECT_TRUE(m.events.empty());
}

TEST(ProtocolTest, SubscribedAndCaughtUpRoundTrip) {
  SubscribedResponse s;
  DecodeWhole(Frame(Op::kSubscribed, 7, SubscribedResponse{1002}), Op::kSubscribed, 7, &s);
  EXPECT_EQ(s.durable_head, 1002u);
  CaughtUp c;
  DecodeWhole(Frame(Op::kCaughtUp, 7, CaughtUp{1003}), Op::kCaughtUp, 7, &c);
  EXPECT_EQ(c.position, 1003u);
}

TEST(ProtocolTest, ErrorAndSubDroppedRoundTripEveryCode) {
  for (uint16_t code = 1; code <= static_cast<uint16_t>(ErrorCode::kSubscriptionDropped); ++code) {
    for (Op op : {Op::kError, Op::kSubDropped}) {
      ErrorResponse in{static_cast<ErrorCode>(code), code == 2 ? 40 : -1,
                       "message " + std::to_string(code)};
      ErrorResponse m;
      DecodeWhole(Frame(op, code, in), op, code, &m);
      EXPECT_EQ(m.code, in.code);
      EXPECT_EQ(m.actual_version, in.actual_version);
      EXPECT_EQ(m.message, in.message);
    }
  }
}

TEST(ProtocolTest, ErrorMessageLongerThanStr16IsCut) {
  ErrorResponse in{ErrorCode::kCorruption, -1, std::string(70'000, 'c')};
  std::string frame = Frame(Op::kError, 1, in);
  EXPECT_EQ(frame.size(), kFrameHeaderBytes + 2 + 8 + 2 + 65535);
  ErrorResponse m;
  ASSERT_TRUE(Decode(BodyOf(frame), &m).ok());
  EXPECT_EQ(m.message, std::string(65535, 'c'));
}

TEST(ProtocolTest, EverySampleRoundTripsAndFramesConcatenate) {
  // A stream of frames, as a connection carries them: each header says
  // where the next frame starts.
  std::vector<Sample> samples = AllSamples();
  std::string stream;
  for (const Sample& s : samples) stream += s.frame;
  AppendEmptyFrame(&stream, Op::kUnsubscribed, 9);
  size_t at = 0;
  for (const Sample& s : samples) {
    SCOPED_TRACE(s.name);
    ASSERT_LE(at + kFrameHeaderBytes, stream.size());
    FrameHeader h;
    ASSERT_TRUE(DecodeFrameHeader(reinterpret_cast<const uint8_t*>(stream.data() + at),
                                  kDefaultMaxFrameBytes, &h)
                    .ok());
    EXPECT_EQ(h.op, s.op);
    ASSERT_EQ(h.length, s.frame.size());
    EXPECT_TRUE(s.decode(std::string_view(stream).substr(at + kFrameHeaderBytes,
                                                         h.length - kFrameHeaderBytes))
                    .ok());
    at += h.length;
  }
  FrameHeader h;
  ASSERT_TRUE(DecodeFrameHeader(reinterpret_cast<const uint8_t*>(stream.data() + at),
                                kDefaultMaxFrameBytes, &h)
                  .ok());
  EXPECT_EQ(h.op, Op::kUnsubscribed);
  EXPECT_EQ(at + h.length, stream.size());
}

TEST(ProtocolTest, FrameHeaderLayoutIsLittleEndian) {
  std::string f = Frame(Op::kPing, 0x0a0b0c0d, Ping{0x1122334455667788});
  const std::string expected(
      "\x14\x00\x00\x00"                   // length 20
      "\x02"                               // PING
      "\x00"                               // flags
      "\x00\x00"                           // reserved
      "\x0d\x0c\x0b\x0a"                   // request id
      "\x88\x77\x66\x55\x44\x33\x22\x11",  // token
      20);
  EXPECT_EQ(f, expected);
}

TEST(ProtocolTest, EncodedSizeIsTheEventsWireSize) {
  for (const RecordedEvent& e : {SampleEvent(0, 1), RecordedEvent{}}) {
    std::string f = Frame(Op::kEvents, 1, EventsResponse{{e}});
    EXPECT_EQ(f.size(), kFrameHeaderBytes + 4 + EncodedSize(e));
  }
}

void ExpectSameSnapshot(const Snapshot& a, const Snapshot& b) {
  EXPECT_EQ(a.version, b.version);
  EXPECT_EQ(a.recorded_at_ns, b.recorded_at_ns);
  EXPECT_EQ(a.reducer, b.reducer);
  EXPECT_EQ(a.schema_version, b.schema_version);
  EXPECT_EQ(a.state, b.state);
  EXPECT_EQ(a.state_size, b.state_size);
  EXPECT_EQ(a.taken_at_ns, b.taken_at_ns);
}

TEST(ProtocolTest, LoadStateRoundTripEveryTargetKind) {
  for (StateTarget target :
       {StateTarget::Head(), StateTarget::Version(0), StateTarget::Version(UINT64_MAX),
        StateTarget::AsOf(kSomeTimeNs), StateTarget::AsOf(-1), StateTarget::AsOf(0)}) {
    for (bool plan_only : {false, true}) {
      SCOPED_TRACE(target.ToString());
      LoadStateRequest in = SampleLoadState();
      in.target = target;
      in.plan_only = plan_only;
      LoadStateRequest out;
      DecodeWhole(Frame(Op::kLoadState, 11, in), Op::kLoadState, 11, &out);
      EXPECT_EQ(out.stream, in.stream);
      EXPECT_EQ(out.target.kind, target.kind);
      EXPECT_EQ(out.target.version, target.version);
      EXPECT_EQ(out.target.time_ns, target.time_ns);
      EXPECT_EQ(out.reducer, "balance");
      EXPECT_EQ(out.schema_version, 7u);
      EXPECT_EQ(out.max_events, 500u);
      EXPECT_EQ(out.plan_only, plan_only);
    }
  }
  LoadStateRequest bare;
  bare.stream = "order-1";
  LoadStateRequest out;
  DecodeWhole(Frame(Op::kLoadState, 1, bare), Op::kLoadState, 1, &out);
  EXPECT_EQ(out.target.kind, StateTarget::Kind::kHead);
  EXPECT_EQ(out.reducer, "");
  EXPECT_EQ(out.max_events, 0u);
  EXPECT_FALSE(out.plan_only);
}

// A target field its kind does not use goes on the wire as 0, so every
// LOAD_STATE has one encoding.
TEST(ProtocolTest, LoadStateSendsTheFieldsItsTargetKindDoesNotUseAsZero) {
  LoadStateRequest tidy = SampleLoadState();
  LoadStateRequest messy = tidy;
  tidy.target = StateTarget::Head();
  messy.target = StateTarget{StateTarget::Kind::kHead, 5, 6};
  EXPECT_EQ(Frame(Op::kLoadState, 1, messy), Frame(Op::kLoadState, 1, tidy));
  tidy.target = StateTarget::Version(5);
  messy.target = StateTarget{StateTarget::Kind::kVersion, 5, 6};
  EXPECT_EQ(Frame(Op::kLoadState, 1, messy), Frame(Op::kLoadState, 1, tidy));
  tidy.target = StateTarget::AsOf(6);
  messy.target = StateTarget{StateTarget::Kind::kTime, 5, 6};
  EXPECT_EQ(Frame(Op::kLoadState, 1, messy), Frame(Op::kLoadState, 1, tidy));
}

TEST(ProtocolTest, LoadStateLayoutIsTheDocumentedOne) {
  LoadStateRequest m;
  m.stream = "ab";
  m.target = StateTarget::Version(0x0102);
  m.reducer = "r";
  m.schema_version = 3;
  m.max_events = 0x10;
  m.plan_only = true;
  const std::string expected(
      "\002ab"                            // stream
      "\x01"                              // target kind: version
      "\x02\x01\x00\x00\x00\x00\x00\x00"  // version
      "\x00\x00\x00\x00\x00\x00\x00\x00"  // time_ns
      "\001r"                             // reducer
      "\x03\x00\x00\x00"                  // schema_version
      "\x10\x00\x00\x00"                  // max_events
      "\x01",                             // flags: plan_only
      31);
  EXPECT_EQ(BodyOf(Frame(Op::kLoadState, 1, m)), expected);
}

TEST(ProtocolTest, StateRoundTripWithAndWithoutSnapshot) {
  StateResponse out;
  DecodeWhole(Frame(Op::kState, 11, StateResponse{SampleState()}), Op::kState, 11, &out);
  const State& s = out.state;
  EXPECT_EQ(s.stream, "account-42");
  EXPECT_EQ(s.reducer, "json-merge-patch");
  EXPECT_EQ(s.schema_version, 1u);
  EXPECT_EQ(s.version, StreamVersion(42));
  EXPECT_EQ(s.recorded_at_ns, kSomeTimeNs);
  ASSERT_TRUE(s.snapshot_version.has_value());
  EXPECT_EQ(*s.snapshot_version, StreamVersion(39));
  EXPECT_EQ(s.events_folded, 3u);
  EXPECT_EQ(s.state, R"({"balance":10})");

  State replayed = SampleState();
  replayed.snapshot_version.reset();
  replayed.events_folded = 43;
  DecodeWhole(Frame(Op::kState, 11, StateResponse{replayed}), Op::kState, 11, &out);
  EXPECT_FALSE(out.state.snapshot_version.has_value());
  EXPECT_EQ(out.state.events_folded, 43u);
  // Without a snapshot the body is 8 bytes shorter.
  EXPECT_EQ(Frame(Op::kState, 11, StateResponse{SampleState()}).size(),
            Frame(Op::kState, 11, StateResponse{replayed}).size() + 8);
}

TEST(ProtocolTest, StatePlanRoundTripWithSnapshotAndEvents) {
  StatePlanResponse out;
  StatePlan in = SamplePlan();
  DecodeWhole(Frame(Op::kStatePlan, 12, StatePlanResponse{in}), Op::kStatePlan, 12, &out);
  const StatePlan& p = out.plan;
  EXPECT_EQ(p.target_version, StreamVersion(2));
  EXPECT_EQ(p.target_recorded_at_ns, kSomeTimeNs + 6);
  EXPECT_FALSE(p.complete);
  ASSERT_TRUE(p.snapshot.has_value());
  ExpectSameSnapshot(*p.snapshot, *in.snapshot);
  EXPECT_EQ(p.snapshot->stream, "") << "the snapshot's stream is the request's; it is not sent";
  ExpectSameEvents(p.events, in.events);
}

TEST(ProtocolTest, StatePlanRoundTripWithoutSnapshotOrEvents) {
  StatePlan in;
  in.target_version = StreamVersion(0);
  in.target_recorded_at_ns = kSomeTimeNs;
  StatePlanResponse out;
  DecodeWhole(Frame(Op::kStatePlan, 12, StatePlanResponse{in}), Op::kStatePlan, 12, &out);
  EXPECT_TRUE(out.plan.complete);
  EXPECT_FALSE(out.plan.snapshot.has_value());
  EXPECT_TRUE(out.plan.events.empty());
  EXPECT_EQ(Frame(Op::kStatePlan, 12, StatePlanResponse{in}).size(), kStatePlanFrameOverheadBytes);
}

TEST(ProtocolTest, WriteSnapshotRoundTrip) {
  WriteSnapshotRequest out;
  Snapshot in = SampleSnapshot(41);
  DecodeWhole(Frame(Op::kWriteSnapshot, 13, WriteSnapshotRequest{in}), Op::kWriteSnapshot, 13,
              &out);
  EXPECT_EQ(out.snapshot.stream, "account-42");
  EXPECT_EQ(out.snapshot.version, StreamVersion(41));
  EXPECT_EQ(out.snapshot.reducer, "balance");
  EXPECT_EQ(out.snapshot.schema_version, 7u);
  EXPECT_EQ(out.snapshot.state, in.state);
  EXPECT_EQ(out.snapshot.state_size, in.state.size());
  // recorded_at and taken_at are the server's to set.
  EXPECT_EQ(out.snapshot.recorded_at_ns, 0);
  EXPECT_EQ(out.snapshot.taken_at_ns, 0);
}

TEST(ProtocolTest, SnapshotWrittenAndListSnapshotsRoundTrip) {
  SnapshotWritten written;
  DecodeWhole(Frame(Op::kSnapshotWritten, 13, SnapshotWritten{-5}), Op::kSnapshotWritten, 13,
              &written);
  EXPECT_EQ(written.recorded_at_ns, -5);
  ListSnapshotsRequest list;
  DecodeWhole(Frame(Op::kListSnapshots, 14, ListSnapshotsRequest{"account-42"}), Op::kListSnapshots,
              14, &list);
  EXPECT_EQ(list.stream, "account-42");
}

TEST(ProtocolTest, SnapshotsRoundTripWithoutStates) {
  SnapshotsResponse out;
  std::vector<Snapshot> in = SampleSnapshotList();
  DecodeWhole(Frame(Op::kSnapshots, 14, SnapshotsResponse{in}), Op::kSnapshots, 14, &out);
  ASSERT_EQ(out.snapshots.size(), 2u);
  for (size_t i = 0; i < in.size(); ++i) ExpectSameSnapshot(out.snapshots[i], in[i]);
  // A snapshot's state is never in the list, only its size.
  std::vector<Snapshot> with_state = in;
  with_state[0].state = "not sent";
  EXPECT_EQ(Frame(Op::kSnapshots, 14, SnapshotsResponse{with_state}),
            Frame(Op::kSnapshots, 14, SnapshotsResponse{in}));
  DecodeWhole(Frame(Op::kSnapshots, 14, SnapshotsResponse{}), Op::kSnapshots, 14, &out);
  EXPECT_TRUE(out.snapshots.empty());
}

TEST(ProtocolTest, EncodedSizesAreTheStateFramesWireSizes) {
  StatePlan plan = SamplePlan();
  size_t expected = kStatePlanFrameOverheadBytes + EncodedSize(*plan.snapshot);
  for (const RecordedEvent& e : plan.events) expected += EncodedSize(e);
  EXPECT_EQ(Frame(Op::kStatePlan, 1, StatePlanResponse{plan}).size(), expected);
  std::vector<Snapshot> list = SampleSnapshotList();
  EXPECT_EQ(Frame(Op::kSnapshots, 1, SnapshotsResponse{list}).size(),
            kSnapshotsFrameOverheadBytes + EncodedSnapshotInfoSize(list[0]) +
                EncodedSnapshotInfoSize(list[1]));
}

// ============================================================ refusals

TEST(ProtocolTest, EveryDecoderRefusesEveryTruncatedBody) {
  for (const Sample& s : AllSamples()) {
    SCOPED_TRACE(s.name);
    std::string_view body = BodyOf(s.frame);
    ASSERT_TRUE(s.decode(body).ok());
    for (size_t n = 0; n < body.size(); ++n)
      EXPECT_FALSE(s.decode(body.substr(0, n)).ok()) << "a " << n << "-byte prefix decoded";
  }
}

TEST(ProtocolTest, EveryDecoderRefusesTrailingBytes) {
  for (const Sample& s : AllSamples()) {
    SCOPED_TRACE(s.name);
    for (std::string_view extra : {std::string_view("\0", 1), std::string_view("junk")}) {
      std::string body(BodyOf(s.frame));
      body.append(extra);
      Status st = s.decode(body);
      EXPECT_FALSE(st.ok());
      EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
    }
  }
}

TEST(ProtocolTest, AppendRefusesUnknownExpectedVersionKind) {
  std::string frame = Frame(Op::kAppend, 3, SampleAppend());
  const size_t kind_at = kFrameHeaderBytes + 1 + SampleAppend().stream.size();
  for (int kind : {4, 5, 0x80, 0xff}) {
    std::string bad = frame;
    bad[kind_at] = static_cast<char>(kind);
    EXPECT_FALSE(DecodeBody<AppendRequest>(BodyOf(bad)).ok()) << kind;
  }
}

TEST(ProtocolTest, AppendOkRefusesReplayFlagAboveOne) {
  std::string frame = Frame(Op::kAppendOk, 3, AppendResult{});
  for (int flag : {2, 0xff}) {
    frame.back() = static_cast<char>(flag);
    EXPECT_FALSE(DecodeBody<AppendResult>(BodyOf(frame)).ok()) << flag;
  }
}

TEST(ProtocolTest, ReadStreamRefusesUnknownDirection) {
  std::string frame =
      Frame(Op::kReadStream, 4, ReadStreamRequest{"s", 0, ReadDirection::kForward, 1});
  const size_t direction_at = kFrameHeaderBytes + 2 + 8;
  for (int d : {2, 0xff}) {
    frame[direction_at] = static_cast<char>(d);
    EXPECT_FALSE(DecodeBody<ReadStreamRequest>(BodyOf(frame)).ok()) << d;
  }
}

TEST(ProtocolTest, FilterRefusesUnknownKind) {
  std::string frame = Frame(Op::kReadAll, 5, SampleReadAll());
  const size_t kind_at = kFrameHeaderBytes + 8 + 4;
  for (int kind : {3, 0xff}) {
    frame[kind_at] = static_cast<char>(kind);
    EXPECT_FALSE(DecodeBody<ReadAllRequest>(BodyOf(frame)).ok()) << kind;
  }
}

TEST(ProtocolTest, SubscribeRefusesUnknownScope) {
  std::string frame = Frame(Op::kSubscribe, 7, SampleSubscribeAll());
  for (int scope : {2, 0xff}) {
    frame[kFrameHeaderBytes] = static_cast<char>(scope);
    EXPECT_FALSE(DecodeBody<SubscribeRequest>(BodyOf(frame)).ok()) << scope;
  }
}

TEST(ProtocolTest, ErrorRefusesUnknownCode) {
  std::string frame = Frame(Op::kError, 1, SampleError());
  for (uint16_t code : {0, 12, 0x100, 0xffff}) {
    std::memcpy(frame.data() + kFrameHeaderBytes, &code, 2);
    EXPECT_FALSE(DecodeBody<ErrorResponse>(BodyOf(frame)).ok()) << code;
  }
}

// A count is checked against the bytes left before anything is sized by
// it, so a lying count costs nothing.
TEST(ProtocolTest, AppendRefusesEventCountLargerThanTheFrame) {
  AppendRequest in = SampleAppend();
  std::string frame = Frame(Op::kAppend, 3, in);
  const size_t count_at = kFrameHeaderBytes + 1 + in.stream.size() + 1 + 8;
  for (uint16_t count : {3, 4, 100, 0xffff}) {
    std::memcpy(frame.data() + count_at, &count, 2);
    EXPECT_FALSE(DecodeBody<AppendRequest>(BodyOf(frame)).ok()) << count;
  }
  // And a count below the real one leaves trailing bytes.
  uint16_t one = 1;
  std::memcpy(frame.data() + count_at, &one, 2);
  EXPECT_FALSE(DecodeBody<AppendRequest>(BodyOf(frame)).ok());
}

TEST(ProtocolTest, EventsRefuseCountLargerThanTheFrame) {
  std::vector<RecordedEvent> two = {SampleEvent(0, 1), SampleEvent(1, 2)};
  std::string events = Frame(Op::kEvents, 4, EventsResponse{two});
  std::string all = Frame(Op::kAllEvents, 5, AllEventsResponse{3, two});
  for (uint32_t count : {3u, 1000u, 0x7fffffffu, 0xffffffffu}) {
    PutU32At(&events, kFrameHeaderBytes, count);
    EXPECT_FALSE(DecodeBody<EventsResponse>(BodyOf(events)).ok()) << count;
    PutU32At(&all, kFrameHeaderBytes + 8, count);
    EXPECT_FALSE(DecodeBody<AllEventsResponse>(BodyOf(all)).ok()) << count;
  }
  // Counts alone, with no events behind them.
  std::string bare = RawFrame(Op::kEvents, 4, std::string_view("\xff\xff\xff\xff", 4));
  EXPECT_FALSE(DecodeBody<EventsResponse>(BodyOf(bare)).ok());
}

TEST(ProtocolTest, StringLengthsLargerThanTheFrameAreRefused) {
  // A str8 that claims 200 bytes, a bytes32 that claims 4 GiB.
  EXPECT_FALSE(DecodeBody<StreamInfoRequest>(std::string_view("\xc8"
                                                              "abc",
                                                              4))
                   .ok());
  RecordedEvent e = SampleEvent(0, 1);
  std::string frame = Frame(Op::kEvents, 4, EventsResponse{{e}});
  const size_t metadata_len_at =
      kFrameHeaderBytes + 4 + 1 + e.stream.size() + 8 + 8 + 8 + 16 + 1 + e.type.size();
  PutU32At(&frame, metadata_len_at, 0xffffffff);
  EXPECT_FALSE(DecodeBody<EventsResponse>(BodyOf(frame)).ok());
}

// Filter bytes: kind, value (str8), type count (u8), types (str8 each).
std::string FilterBytes(uint8_t kind, std::string_view value, const std::vector<std::string>& types,
                        int count = -1) {
  std::string out;
  BodyWriter w(&out);
  w.U8(kind);
  w.Str8(value);
  w.U8(static_cast<uint8_t>(count >= 0 ? count : static_cast<int>(types.size())));
  for (const std::string& t : types) w.Str8(t);
  return out;
}

Status DecodeReadAllWithFilter(const std::string& filter) {
  std::string body;
  BodyWriter w(&body);
  w.U64(1);
  w.U32(10);
  body += filter;
  return DecodeBody<ReadAllRequest>(body);
}

TEST(ProtocolTest, FilterKindNoneWithAValueIsRefused) {
  EXPECT_TRUE(DecodeReadAllWithFilter(FilterBytes(0, "", {})).ok());
  EXPECT_TRUE(DecodeReadAllWithFilter(FilterBytes(0, "", {"Deposited"})).ok());
  EXPECT_FALSE(DecodeReadAllWithFilter(FilterBytes(0, "account", {})).ok());
}

TEST(ProtocolTest, FilterCategoryOrPrefixWithoutAValueIsRefused) {
  EXPECT_FALSE(DecodeReadAllWithFilter(FilterBytes(1, "", {})).ok());
  EXPECT_FALSE(DecodeReadAllWithFilter(FilterBytes(2, "", {"Deposited"})).ok());
}

TEST(ProtocolTest, FilterEmptyEventTypeIsRefused) {
  EXPECT_FALSE(DecodeReadAllWithFilter(FilterBytes(1, "account", {"Deposited", ""})).ok());
}

TEST(ProtocolTest, FilterMoreThan64TypesIsRefused) {
  std::vector<std::string> types;
  for (int i = 0; i < 65; ++i) types.push_back("T" + std::to_string(i));
  EXPECT_FALSE(DecodeReadAllWithFilter(FilterBytes(0, "", types)).ok());
  EXPECT_FALSE(DecodeReadAllWithFilter(FilterBytes(0, "", {}, 255)).ok());
  types.pop_back();
  EXPECT_TRUE(DecodeReadAllWithFilter(FilterBytes(0, "", types)).ok());
  // A count of 64 with fewer types behind it is a truncated body.
  types.pop_back();
  EXPECT_FALSE(DecodeReadAllWithFilter(FilterBytes(0, "", types, 64)).ok());
}

// SUBSCRIBE bytes: scope, stream (str8), from (u64), filter.
std::string SubscribeBody(uint8_t scope, std::string_view stream, const std::string& filter) {
  std::string out;
  BodyWriter w(&out);
  w.U8(scope);
  w.Str8(stream);
  w.U64(1);
  out += filter;
  return out;
}

TEST(ProtocolTest, SubscribeNamesAStreamExactlyWhenItsScopeIsOneStream) {
  const std::string none = FilterBytes(0, "", {});
  EXPECT_TRUE(DecodeBody<SubscribeRequest>(SubscribeBody(0, "account-42", none)).ok());
  EXPECT_TRUE(DecodeBody<SubscribeRequest>(SubscribeBody(1, "", none)).ok());
  EXPECT_FALSE(DecodeBody<SubscribeRequest>(SubscribeBody(0, "", none)).ok());
  EXPECT_FALSE(DecodeBody<SubscribeRequest>(SubscribeBody(1, "account-42", none)).ok());
}

TEST(ProtocolTest, SubscribeToOneStreamTakesNoFilter) {
  EXPECT_FALSE(
      DecodeBody<SubscribeRequest>(SubscribeBody(0, "account-42", FilterBytes(1, "account", {})))
          .ok());
  EXPECT_FALSE(
      DecodeBody<SubscribeRequest>(SubscribeBody(0, "account-42", FilterBytes(0, "", {"T"}))).ok());
  EXPECT_TRUE(
      DecodeBody<SubscribeRequest>(SubscribeBody(1, "", FilterBytes(1, "account", {"T"}))).ok());
}

// ============================================================ state refusals

// LOAD_STATE with the target kind, flags and target fields at chosen bytes.
std::string LoadStateBody(uint8_t kind, uint64_t version, int64_t time_ns, uint8_t flags) {
  std::string out;
  BodyWriter w(&out);
  w.Str8("account-42");
  w.U8(kind);
  w.U64(version);
  w.I64(time_ns);
  w.Str8("");
  w.U32(0);
  w.U32(0);
  w.U8(flags);
  return out;
}

TEST(ProtocolTest, LoadStateRefusesUnknownTargetKind) {
  EXPECT_TRUE(DecodeBody<LoadStateRequest>(LoadStateBody(2, 0, 5, 0)).ok());
  for (uint8_t kind : {3, 4, 0x80, 0xff})
    EXPECT_FALSE(DecodeBody<LoadStateRequest>(LoadStateBody(kind, 0, 0, 0)).ok()) << int{kind};
}

TEST(ProtocolTest, LoadStateRefusesAVersionOrTimeItsTargetKindDoesNotUse) {
  EXPECT_TRUE(DecodeBody<LoadStateRequest>(LoadStateBody(1, 5, 0, 0)).ok());
  EXPECT_TRUE(DecodeBody<LoadStateRequest>(LoadStateBody(2, 0, -5, 0)).ok());
  EXPECT_FALSE(DecodeBody<LoadStateRequest>(LoadStateBody(0, 5, 0, 0)).ok());
  EXPECT_FALSE(DecodeBody<LoadStateRequest>(LoadStateBody(0, 0, 5, 0)).ok());
  EXPECT_FALSE(DecodeBody<LoadStateRequest>(LoadStateBody(1, 5, 5, 0)).ok());
  EXPECT_FALSE(DecodeBody<LoadStateRequest>(LoadStateBody(2, 5, 5, 0)).ok());
}

TEST(ProtocolTest, LoadStateRefusesUnknownFlagBits) {
  EXPECT_TRUE(DecodeBody<LoadStateRequest>(LoadStateBody(0, 0, 0, 1)).ok());
  for (int bit = 1; bit < 8; ++bit) {
    Status s =
        DecodeBody<LoadStateRequest>(LoadStateBody(0, 0, 0, static_cast<uint8_t>(1u << bit)));
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << "flag bit " << bit;
  }
}

TEST(ProtocolTest, StateRefusesHasSnapshotAboveOne) {
  State st = SampleState();
  std::string frame = Frame(Op::kState, 1, StateResponse{st});
  const size_t has_at =
      kFrameHeaderBytes + 1 + st.stream.size() + 1 + st.reducer.size() + 4 + 8 + 8;
  ASSERT_EQ(frame[has_at], 1);
  for (char bad : {'\x02', '\xff'}) {
    frame[has_at] = bad;
    EXPECT_FALSE(DecodeBody<StateResponse>(BodyOf(frame)).ok()) << int{bad};
  }
  // 0 says no snapshot version follows: its 8 bytes are then left over.
  frame[has_at] = 0;
  EXPECT_FALSE(DecodeBody<StateResponse>(BodyOf(frame)).ok());
}

TEST(ProtocolTest, StatePlanRefusesCompleteOrHasSnapshotAboveOne) {
  std::string frame = Frame(Op::kStatePlan, 1, StatePlanResponse{SamplePlan()});
  const size_t complete_at = kFrameHeaderBytes + 16, has_at = complete_at + 1;
  for (size_t at : {complete_at, has_at}) {
    std::string bad = frame;
    bad[at] = 2;
    EXPECT_FALSE(DecodeBody<StatePlanResponse>(BodyOf(bad)).ok()) << at;
  }
  std::string no_snapshot = frame;
  no_snapshot[has_at] = 0;  // the snapshot's bytes are read as events
  EXPECT_FALSE(DecodeBody<StatePlanResponse>(BodyOf(no_snapshot)).ok());
}

TEST(ProtocolTest, StatePlanAndSnapshotsRefuseCountsLargerThanTheFrame) {
  StatePlan plan = SamplePlan();
  std::string frame = Frame(Op::kStatePlan, 1, StatePlanResponse{plan});
  const size_t count_at = kFrameHeaderBytes + 18 + EncodedSize(*plan.snapshot);
  std::string list = Frame(Op::kSnapshots, 1, SnapshotsResponse{SampleSnapshotList()});
  for (uint32_t count : {3u, 1000u, 0xffffffffu}) {
    PutU32At(&frame, count_at, count);
    EXPECT_FALSE(DecodeBody<StatePlanResponse>(BodyOf(frame)).ok()) << count;
    PutU32At(&list, kFrameHeaderBytes, count);
    EXPECT_FALSE(DecodeBody<SnapshotsResponse>(BodyOf(list)).ok()) << count;
  }
  PutU32At(&list, kFrameHeaderBytes, 1);  // fewer than there are: trailing bytes
  EXPECT_FALSE(DecodeBody<SnapshotsResponse>(BodyOf(list)).ok());
}

TEST(ProtocolTest, StateStringsLongerThanTheFrameAreRefused) {
  // STATE's state and WRITE_SNAPSHOT's state claim 4 GiB.
  State st = SampleState();
  std::string state = Frame(Op::kState, 1, StateResponse{st});
  PutU32At(&state, state.size() - st.state.size() - 4, 0xffffffff);
  EXPECT_FALSE(DecodeBody<StateResponse>(BodyOf(state)).ok());
  Snapshot snap = SampleSnapshot(1);
  std::string write = Frame(Op::kWriteSnapshot, 1, WriteSnapshotRequest{snap});
  PutU32At(&write, write.size() - snap.state.size() - 4, 0xffffffff);
  EXPECT_FALSE(DecodeBody<WriteSnapshotRequest>(BodyOf(write)).ok());
}

TEST(ProtocolTest, WriteSnapshotWithoutAReducerIsRefused) {
  Snapshot snap = SampleSnapshot(1);
  snap.reducer.clear();
  std::string frame = Frame(Op::kWriteSnapshot, 1, WriteSnapshotRequest{snap});
  Status s = DecodeBody<WriteSnapshotRequest>(BodyOf(frame));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("reducer"), std::string::npos) << s.message();
}

// A random body never crashes `message`'s decoder; a refusal is always
// kInvalidArgument, and what decodes encodes back to the same bytes.
template <typename M>
void CheckGarbage(M message, Op op, std::string_view body) {
  Status s = Decode(body, &message);
  if (!s.ok()) {
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    return;
  }
  EXPECT_EQ(BodyOf(Frame(op, 1, message)), body);
}

// Calls `each` with 20,000 random bodies of up to `max_len` bytes, biased
// to zeros (and ones, when `ones`) so that counts and flags often decode.
void ForRandomBodies(uint32_t seed, size_t max_len, bool ones, const std::function<void(std::string_view)>& each) {
  std::mt19937 rng(seed);
  for (int i = 0; i < 20000; ++i) {
    std::string body(rng() % max_len, '\0');
    for (char& b : body) b = static_cast<char>(rng() % 4 == 0 ? 0 : ones && rng() % 8 == 0 ? 1 : rng());
    each(body);
  }
}

TEST(ProtocolTest, StateDecodersSurviveGarbage) {
  ForRandomBodies(5, 80, false, [](std::string_view body) {
    CheckGarbage(LoadStateRequest{}, Op::kLoadState, body);
    CheckGarbage(StateResponse{}, Op::kState, body);
    CheckGarbage(StatePlanResponse{}, Op::kStatePlan, body);
    CheckGarbage(WriteSnapshotRequest{}, Op::kWriteSnapshot, body);
    CheckGarbage(SnapshotWritten{}, Op::kSnapshotWritten, body);
    CheckGarbage(ListSnapshotsRequest{}, Op::kListSnapshots, body);
    CheckGarbage(SnapshotsResponse{}, Op::kSnapshots, body);
  });
}

// ============================================================ projections

TEST(ProtocolTest, HeadInfoRoundTrip) {
  HeadInfo m;
  DecodeWhole(Frame(Op::kHeadInfo, 15, HeadInfo{1002, kSomeTimeNs, 4}), Op::kHeadInfo, 15, &m);
  EXPECT_EQ(m.durable_head, 1002u);
  EXPECT_EQ(m.last_recorded_at_ns, kSomeTimeNs);
  EXPECT_EQ(m.partitions, 4u);
  EXPECT_EQ(Frame(Op::kHeadInfo, 15, m).size(), kFrameHeaderBytes + 8 + 8 + 4);
}

TEST(ProtocolTest, ReadAllRangeRoundTripEveryFilterKind) {
  std::vector<Filter> filters(3);
  filters[1] = SampleReadAllRange().filter;
  filters[2].kind = Filter::Kind::kStreamPrefix;
  filters[2].value = "acc";
  for (const Filter& f : filters) {
    ReadAllRangeRequest in = SampleReadAllRange();
    in.filter = f;
    ReadAllRangeRequest m;
    DecodeWhole(Frame(Op::kReadAllRange, 16, in), Op::kReadAllRange, 16, &m);
    EXPECT_EQ(m.from_position, 1000u);
    EXPECT_EQ(m.until_position, 1999u);
    EXPECT_EQ(m.max_count, 500u);
    ExpectSameFilter(m.filter, f);
  }
}

TEST(ProtocolTest, ReadAllRangeRefusesUnknownFilterKind) {
  std::string frame = Frame(Op::kReadAllRange, 16, SampleReadAllRange());
  const size_t kind_at = kFrameHeaderBytes + 8 + 8 + 4;
  for (int kind : {3, 0xff}) {
    frame[kind_at] = static_cast<char>(kind);
    EXPECT_FALSE(DecodeBody<ReadAllRangeRequest>(BodyOf(frame)).ok()) << kind;
  }
}

TEST(ProtocolTest, CheckpointRoundTripPresentAndAbsent) {
  CheckpointResponse m;
  DecodeWhole(Frame(Op::kCheckpoint, 17, CheckpointResponse{SampleCheckpoint()}), Op::kCheckpoint, 17, &m);
  ASSERT_TRUE(m.checkpoint.has_value());
  ConsumerCheckpoint want = SampleCheckpoint();
  EXPECT_EQ(m.checkpoint->name, want.name);
  EXPECT_EQ(m.checkpoint->position, want.position);
  EXPECT_EQ(m.checkpoint->blob, want.blob);
  EXPECT_EQ(m.checkpoint->blob_size, want.blob.size());
  EXPECT_EQ(m.checkpoint->updated_at_ns, want.updated_at_ns);
  DecodeWhole(Frame(Op::kCheckpoint, 17, CheckpointResponse{}), Op::kCheckpoint, 17, &m);
  EXPECT_FALSE(m.checkpoint.has_value());
  EXPECT_EQ(Frame(Op::kCheckpoint, 17, CheckpointResponse{}).size(), kFrameHeaderBytes + 1);
}

TEST(ProtocolTest, SetCheckpointRoundTripEveryExpectationKind) {
  for (CheckpointExpectation e : {CheckpointExpectation::Any(), CheckpointExpectation::None(),
                                  CheckpointExpectation::At(GlobalPosition(0)),
                                  CheckpointExpectation::At(GlobalPosition(UINT64_MAX))}) {
    SetCheckpointRequest in = SampleSetCheckpoint();
    in.expected = e;
    SetCheckpointRequest m;
    DecodeWhole(Frame(Op::kSetCheckpoint, 18, in), Op::kSetCheckpoint, 18, &m);
    EXPECT_EQ(m.name, in.name);
    EXPECT_EQ(m.position, in.position);
    EXPECT_EQ(m.expected.kind, e.kind);
    EXPECT_EQ(m.expected.position, e.position);
    EXPECT_EQ(m.blob, in.blob);
  }
}

TEST(ProtocolTest, SetCheckpointSendsAnUnusedExpectedPositionAsZero) {
  SetCheckpointRequest sloppy = SampleSetCheckpoint();
  sloppy.expected = {CheckpointExpectation::Kind::kAny, GlobalPosition(99)};
  SetCheckpointRequest tidy = SampleSetCheckpoint();
  tidy.expected = CheckpointExpectation::Any();
  EXPECT_EQ(Frame(Op::kSetCheckpoint, 18, sloppy), Frame(Op::kSetCheckpoint, 18, tidy));
}

// SET_CHECKPOINT bytes: name, position, expectation kind, expected position, blob.
std::string SetCheckpointBody(std::string_view name, uint8_t kind, uint64_t expected) {
  std::string out;
  BodyWriter w(&out);
  w.Str8(name);
  w.U64(10);
  w.U8(kind);
  w.U64(expected);
  w.Bytes32("");
  return out;
}

TEST(ProtocolTest, SetCheckpointRefusesUnknownKindsStrayPositionsAndEmptyNames) {
  EXPECT_TRUE(DecodeBody<SetCheckpointRequest>(SetCheckpointBody("c", 2, 7)).ok());
  EXPECT_TRUE(DecodeBody<SetCheckpointRequest>(SetCheckpointBody("c", 1, 0)).ok());
  for (uint8_t kind : {3, 4, 0x80, 0xff})
    EXPECT_FALSE(DecodeBody<SetCheckpointRequest>(SetCheckpointBody("c", kind, 0)).ok()) << int(kind);
  EXPECT_FALSE(DecodeBody<SetCheckpointRequest>(SetCheckpointBody("c", 0, 7)).ok());
  EXPECT_FALSE(DecodeBody<SetCheckpointRequest>(SetCheckpointBody("c", 1, 7)).ok());
  EXPECT_FALSE(DecodeBody<SetCheckpointRequest>(SetCheckpointBody("", 0, 0)).ok());
}

TEST(ProtocolTest, CheckpointRequestsRefuseAnEmptyName) {
  EXPECT_FALSE(DecodeBody<GetCheckpointRequest>(std::string_view("\0", 1)).ok());
  EXPECT_FALSE(DecodeBody<DeleteCheckpointRequest>(std::string_view("\0", 1)).ok());
  // An empty prefix lists every consumer.
  EXPECT_TRUE(DecodeBody<ListCheckpointsRequest>(std::string_view("\0", 1)).ok());
}

TEST(ProtocolTest, CheckpointFlagsAboveOneAreRefused) {
  for (int flag : {2, 0xff}) {
    std::string present(1, static_cast<char>(flag));
    EXPECT_FALSE(DecodeBody<CheckpointResponse>(present).ok()) << flag;
    EXPECT_FALSE(DecodeBody<CheckpointDeleted>(present).ok()) << flag;
  }
  CheckpointDeleted m;
  DecodeWhole(Frame(Op::kCheckpointDeleted, 19, CheckpointDeleted{false}), Op::kCheckpointDeleted, 19, &m);
  EXPECT_FALSE(m.existed);
}

TEST(ProtocolTest, CheckpointsRoundTripWithoutBlobs) {
  CheckpointsResponse m;
  std::vector<ConsumerCheckpoint> in = SampleCheckpointList();
  std::string frame = Frame(Op::kCheckpoints, 20, CheckpointsResponse{in});
  DecodeWhole(frame, Op::kCheckpoints, 20, &m);
  ASSERT_EQ(m.checkpoints.size(), 2u);
  for (size_t i = 0; i < in.size(); ++i) {
    EXPECT_EQ(m.checkpoints[i].name, in[i].name);
    EXPECT_EQ(m.checkpoints[i].position, in[i].position);
    EXPECT_EQ(m.checkpoints[i].updated_at_ns, in[i].updated_at_ns);
    EXPECT_EQ(m.checkpoints[i].blob_size, SampleCheckpoint().blob.size());
    EXPECT_TRUE(m.checkpoints[i].blob.empty());
  }
  EXPECT_EQ(frame.size(), kCheckpointsFrameOverheadBytes + EncodedCheckpointInfoSize(in[0]) +
                              EncodedCheckpointInfoSize(in[1]));
}

TEST(ProtocolTest, CheckpointsRefuseCountsLargerThanTheFrameAndEmptyNames) {
  std::string frame = Frame(Op::kCheckpoints, 20, CheckpointsResponse{SampleCheckpointList()});
  for (uint32_t count : {3u, 1000u, 0xffffffffu}) {
    std::string bad = frame;
    PutU32At(&bad, kFrameHeaderBytes, count);
    EXPECT_FALSE(DecodeBody<CheckpointsResponse>(BodyOf(bad)).ok()) << count;
  }
  ConsumerCheckpoint nameless;
  EXPECT_FALSE(DecodeBody<CheckpointsResponse>(BodyOf(Frame(Op::kCheckpoints, 20, CheckpointsResponse{{nameless}}))).ok());
}

TEST(ProtocolTest, ProjectionDecodersSurviveGarbage) {
  ForRandomBodies(7, 64, true, [](std::string_view body) {
    CheckGarbage(HeadInfo{}, Op::kHeadInfo, body);
    CheckGarbage(ReadAllRangeRequest{}, Op::kReadAllRange, body);
    CheckGarbage(GetCheckpointRequest{}, Op::kGetCheckpoint, body);
    CheckGarbage(CheckpointResponse{}, Op::kCheckpoint, body);
    CheckGarbage(SetCheckpointRequest{}, Op::kSetCheckpoint, body);
    CheckGarbage(CheckpointSet{}, Op::kCheckpointSet, body);
    CheckGarbage(DeleteCheckpointRequest{}, Op::kDeleteCheckpoint, body);
    CheckGarbage(CheckpointDeleted{}, Op::kCheckpointDeleted, body);
    CheckGarbage(ListCheckpointsRequest{}, Op::kListCheckpoints, body);
    CheckGarbage(CheckpointsResponse{}, Op::kCheckpoints, body);
  });
}

// ============================================================ frame header

Status DecodeHeader(const std::string& h, uint32_t max_frame_bytes, FrameHeader* out) {
  return DecodeFrameHeader(reinterpret_cast<const uint8_t*>(h.data()), max_frame_bytes, out);
}

TEST(ProtocolTest, FrameHeaderRefusesLengthBelowTheHeader) {
  for (uint32_t length : {0u, 1u, 4u, 11u}) {
    FrameHeader h;
    EXPECT_FALSE(DecodeHeader(Header(length, 0x02, 0, 0, 5), kDefaultMaxFrameBytes, &h).ok())
        << length;
  }
  FrameHeader h;
  EXPECT_TRUE(DecodeHeader(Header(12, 0xa4, 0, 0, 5), kDefaultMaxFrameBytes, &h).ok());
}

TEST(ProtocolTest, FrameHeaderRefusesLengthAboveTheMaximumAsTooLarge) {
  for (uint32_t max : {kMinMaxFrameBytes, kDefaultMaxFrameBytes}) {
    FrameHeader h;
    EXPECT_TRUE(DecodeHeader(Header(max, 0x10, 0, 0, 5), max, &h).ok());
    EXPECT_EQ(h.length, max);
    for (uint32_t length : {max + 1, UINT32_MAX}) {
      Status s = DecodeHeader(Header(length, 0x10, 0, 0, 5), max, &h);
      EXPECT_EQ(s.code(), StatusCode::kTooLarge) << length;
    }
  }
}

TEST(ProtocolTest, FrameHeaderRefusesNonzeroFlagsAndReserved) {
  for (int bit = 0; bit < 8; ++bit) {
    FrameHeader h;
    Status s = DecodeHeader(Header(20, 0x02, static_cast<uint8_t>(1 << bit), 0, 5),
                            kDefaultMaxFrameBytes, &h);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << "flag bit " << bit;
  }
  for (int bit = 0; bit < 16; ++bit) {
    FrameHeader h;
    Status s = DecodeHeader(Header(20, 0x02, 0, static_cast<uint16_t>(1 << bit), 5),
                            kDefaultMaxFrameBytes, &h);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << "reserved bit " << bit;
  }
}

TEST(ProtocolTest, FrameHeaderAcceptsExactlyTheKnownOpcodes) {
  const std::vector<int> known = {0x01, 0x02, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17,
                                  0x18, 0x20, 0x21, 0x30, 0x31, 0x32, 0x33, 0x81, 0x82, 0x90,
                                  0x91, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0xa0, 0xa1,
                                  0xa2, 0xa3, 0xa4, 0xb0, 0xb1, 0xb2, 0xb3, 0xff};
  for (int op = 0; op < 256; ++op) {
    bool is_known = std::find(known.begin(), known.end(), op) != known.end();
    FrameHeader h;
    Status s =
        DecodeHeader(Header(20, static_cast<uint8_t>(op), 0, 0, 5), kDefaultMaxFrameBytes, &h);
    EXPECT_EQ(s.ok(), is_known) << "opcode " << op;
    if (!is_known) {
      EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << "opcode " << op;
      continue;
    }
    EXPECT_EQ(static_cast<int>(h.op), op);
    ASSERT_NE(OpName(h.op), nullptr);
    EXPECT_EQ(IsRequest(h.op), op < 0x80) << OpName(h.op);
  }
}

// The server answers a refused header with an ERROR that carries the
// header's request id, so the decoder fills it in even when it refuses.
TEST(ProtocolTest, FrameHeaderReportsRequestIdOfARefusedHeader) {
  for (const std::string& bad :
       {Header(4, 0x02, 0, 0, 0xdeadbeef), Header(UINT32_MAX, 0x02, 0, 0, 0xdeadbeef),
        Header(20, 0x03, 0, 0, 0xdeadbeef), Header(20, 0x02, 1, 0, 0xdeadbeef)}) {
    FrameHeader h;
    EXPECT_FALSE(DecodeHeader(bad, kDefaultMaxFrameBytes, &h).ok());
    EXPECT_EQ(h.request_id, 0xdeadbeefu);
  }
}

TEST(ProtocolTest, FramesAppendAfterWhatIsAlreadyInTheBuffer) {
  std::string out = "prefix";
  AppendFrame(&out, Op::kPing, 1, Ping{1});
  AppendEmptyFrame(&out, Op::kUnsubscribed, 2);
  ASSERT_EQ(out.size(), 6 + 20 + 12);
  FrameHeader h;
  ASSERT_TRUE(
      DecodeFrameHeader(reinterpret_cast<const uint8_t*>(out.data() + 6), kDefaultMaxFrameBytes, &h)
          .ok());
  EXPECT_EQ(h.length, 20u);
  ASSERT_TRUE(DecodeFrameHeader(reinterpret_cast<const uint8_t*>(out.data() + 26),
                                kDefaultMaxFrameBytes, &h)
                  .ok());
  EXPECT_EQ(h.op, Op::kUnsubscribed);
  EXPECT_EQ(h.request_id, 2u);
}

// ============================================================ error codes

TEST(ProtocolTest, ErrorCodesMapToStatusAndBack) {
  for (StatusCode c :
       {StatusCode::kInvalidArgument, StatusCode::kTooLarge, StatusCode::kWrongExpectedVersion,
        StatusCode::kNotFound, StatusCode::kCorruption, StatusCode::kIoError,
        StatusCode::kFailStopped, StatusCode::kUnavailable, StatusCode::kOverloaded}) {
    EXPECT_EQ(StatusCodeFor(ErrorCodeFor(c)), c) << StatusCodeName(c);
  }
  EXPECT_EQ(ErrorCodeFor(StatusCode::kAlreadyExists), ErrorCode::kInvalidRequest);
  Status s = ToStatus(ErrorCode::kWrongExpectedVersion, 40, "at 40");
  EXPECT_EQ(s.code(), StatusCode::kWrongExpectedVersion);
  EXPECT_EQ(s.actual_version(), 40);
  EXPECT_EQ(s.message(), "at 40");
  EXPECT_EQ(ToStatus(ErrorCode::kOverloaded, -1, "busy").code(), StatusCode::kOverloaded);
  EXPECT_EQ(ToStatus(ErrorCode::kSubscriptionDropped, -1, "slow").code(), StatusCode::kUnavailable);
  EXPECT_EQ(ToStatus(ErrorCode::kUnsupportedVersion, -1, "v2").code(),
            StatusCode::kInvalidArgument);
}

// ============================================================ Filter::Matches

RecordedEvent EventIn(std::string stream, std::string type) {
  RecordedEvent e;
  e.stream = std::move(stream);
  e.type = std::move(type);
  return e;
}

TEST(ProtocolTest, EmptyFilterMatchesEverything) {
  Filter f;
  EXPECT_TRUE(f.empty());
  EXPECT_TRUE(f.Matches(EventIn("account-42", "Opened")));
  EXPECT_TRUE(f.Matches(EventIn("x", "y")));
}

TEST(ProtocolTest, CategoryFilterMatchesTheNameBeforeTheFirstDash) {
  Filter f{Filter::Kind::kCategory, "account", {}};
  EXPECT_FALSE(f.empty());
  EXPECT_TRUE(f.Matches(EventIn("account-42", "Opened")));
  EXPECT_TRUE(f.Matches(EventIn("account-42-b", "Opened")));  // up to the first '-' only
  EXPECT_TRUE(f.Matches(EventIn("account", "Opened")));       // no '-': the whole name
  EXPECT_TRUE(f.Matches(EventIn("account-", "Opened")));
  EXPECT_FALSE(f.Matches(EventIn("accounts-1", "Opened")));
  EXPECT_FALSE(f.Matches(EventIn("acc-1", "Opened")));
  EXPECT_FALSE(f.Matches(EventIn("sub-account-1", "Opened")));
  EXPECT_FALSE(f.Matches(EventIn("Account-1", "Opened")));  // case matters
}

TEST(ProtocolTest, StreamPrefixFilterMatchesLeadingBytes) {
  Filter f{Filter::Kind::kStreamPrefix, "account-4", {}};
  EXPECT_TRUE(f.Matches(EventIn("account-4", "T")));
  EXPECT_TRUE(f.Matches(EventIn("account-42", "T")));
  EXPECT_TRUE(f.Matches(EventIn("account-4-x", "T")));
  EXPECT_FALSE(f.Matches(EventIn("account-5", "T")));
  EXPECT_FALSE(f.Matches(EventIn("account-", "T")));  // shorter than the prefix
  EXPECT_FALSE(f.Matches(EventIn("xaccount-42", "T")));
}

TEST(ProtocolTest, EventTypeFilterMatchesAnyListedTypeExactly) {
  Filter f{Filter::Kind::kNone, "", {"Deposited", "Withdrawn"}};
  EXPECT_FALSE(f.empty());
  EXPECT_TRUE(f.Matches(EventIn("account-1", "Deposited")));
  EXPECT_TRUE(f.Matches(EventIn("order-1", "Withdrawn")));
  EXPECT_FALSE(f.Matches(EventIn("account-1", "Opened")));
  EXPECT_FALSE(f.Matches(EventIn("account-1", "deposited")));
  EXPECT_FALSE(f.Matches(EventIn("account-1", "Deposited2")));
}

TEST(ProtocolTest, StreamAndTypeFiltersMustBothMatch) {
  Filter f{Filter::Kind::kCategory, "account", {"Deposited"}};
  EXPECT_TRUE(f.Matches(EventIn("account-1", "Deposited")));
  EXPECT_FALSE(f.Matches(EventIn("order-1", "Deposited")));
  EXPECT_FALSE(f.Matches(EventIn("account-1", "Withdrawn")));
  Filter p{Filter::Kind::kStreamPrefix, "acc", {"Deposited"}};
  EXPECT_TRUE(p.Matches(EventIn("account-1", "Deposited")));
  EXPECT_FALSE(p.Matches(EventIn("order-1", "Deposited")));
  EXPECT_FALSE(p.Matches(EventIn("account-1", "Opened")));
}

}  // namespace
}  // namespace annal::protocol
