#include "annal_target.h"

#include <cstring>

#include "annal/assert.h"

namespace annal::loadgen {

using protocol::Op;

AnnalTarget::AnnalTarget(const AnnalOptions& o)
    : options_(o), payloads_(o.workload), ids_(o.workload.seed ^ 0x5bd1e995ULL) {
  next_version_.assign(o.workload.streams, 0);
  names_.reserve(o.workload.streams);
  for (uint32_t i = 0; i < o.workload.streams; ++i) names_.push_back(StreamName(o.run_id, i));
  append_.events.resize(o.workload.events_per_append);
  for (EventData& e : append_.events) {
    e.type = kEventType;
    e.metadata = kEventMetadata;
  }
  read_.direction = ReadDirection::kBackward;
  read_.from_version = UINT64_MAX;  // the head, whatever it is
}

Result<std::unique_ptr<AnnalTarget>> AnnalTarget::Connect(const AnnalOptions& o) {
  ANNAL_ASSERT(o.connections > 0 && o.depth > 0);
  std::unique_ptr<AnnalTarget> t(new AnnalTarget(o));
  for (size_t i = 0; i < o.connections; ++i) {
    Conn c;
    ANNAL_ASSIGN_OR_RETURN(c.wire, bench::WireConnection::Connect(o.port, "annal-bench", o.host));
    t->conns_.push_back(std::move(c));
  }
  if (o.subscribers > 0) ANNAL_RETURN_IF_ERROR(t->Subscribe());
  return t;
}

// Finds the head with an append of its own, then subscribes each subscriber
// to the whole store from the position after it and waits until it is live.
Status AnnalTarget::Subscribe() {
  protocol::AppendRequest marker;
  marker.stream = "bench-" + options_.run_id + "-marker";
  marker.events.push_back(EventData{.type = "RunStarted", .payload = "{}"});
  protocol::FrameHeader h;
  std::string body;
  ANNAL_RETURN_IF_ERROR(conns_[0].wire->Call(Op::kAppend, 0, marker, &h, &body));
  if (h.op != Op::kAppendOk) return Status::InvalidArgument("the marker append was refused");
  AppendResult head;
  ANNAL_RETURN_IF_ERROR(protocol::Decode(body, &head));
  for (size_t i = 0; i < options_.subscribers; ++i) {
    Sub s;
    ANNAL_ASSIGN_OR_RETURN(s.wire, bench::WireConnection::Connect(options_.port, "annal-bench-subscriber", options_.host));
    s.subscription_id = static_cast<uint32_t>(i + 1);
    s.last_position = head.last_position.get();
    protocol::SubscribeRequest req;
    req.scope = protocol::SubscribeRequest::Scope::kAll;
    req.from = head.last_position.get() + 1;
    ANNAL_RETURN_IF_ERROR(s.wire->Call(Op::kSubscribe, s.subscription_id, req, &h, &body));
    if (h.op != Op::kSubscribed) return Status::InvalidArgument("SUBSCRIBE was refused");
    ANNAL_RETURN_IF_ERROR(s.wire->WaitForFrame(std::chrono::seconds(10), &h, &body));
    if (h.op != Op::kCaughtUp) return Status::InvalidArgument("a new subscription did not catch up");
    subs_.push_back(std::move(s));
  }
  return Status::Ok();
}

size_t AnnalTarget::FreeSlots(size_t conn) const {
  size_t used = conns_[conn].inflight.size();
  return used >= options_.depth ? 0 : options_.depth - used;
}

Status AnnalTarget::Send(size_t conn, const Request& r) {
  ANNAL_ASSERT(FreeSlots(conn) > 0 && r.stream < names_.size());
  Conn& c = conns_[conn];
  uint32_t id = c.next_request_id++;
  if (c.next_request_id == 0) c.next_request_id = 1;
  c.inflight.emplace(id, r.tag);
  if (r.kind == OpKind::kReadStream) {
    read_.stream = names_[r.stream];
    read_.max_count = r.read_count;
    c.wire->Queue(Op::kReadStream, id, read_);
    return Status::Ok();
  }
  ANNAL_ASSERT(r.events == append_.events.size());
  uint64_t& next = next_version_[r.stream];
  append_.stream = names_[r.stream];
  append_.expected = next == 0 ? ExpectedVersion::NoStream() : ExpectedVersion::Exact(next - 1);
  for (EventData& e : append_.events) {
    uint64_t a = ids_(), b = ids_();
    std::memcpy(e.id.data(), &a, 8);
    std::memcpy(e.id.data() + 8, &b, 8);
    e.payload = payloads_.Make(sequence_++);
  }
  next += r.events;
  c.wire->Queue(Op::kAppend, id, append_);
  return Status::Ok();
}

Status AnnalTarget::Poll(size_t conn, std::vector<Completion>* done) {
  Conn& c = conns_[conn];
  Status failure;
  ANNAL_RETURN_IF_ERROR(c.wire->ReadFrames([&](const protocol::FrameHeader& h, std::string_view body,
                                               const bench::WireConnection::Received&) {
    auto it = c.inflight.find(h.request_id);
    if (it == c.inflight.end()) {
      failure = Status::InvalidArgument(std::string("annald answered an unknown request with ") +
                                        protocol::OpName(h.op));
      return false;
    }
    Completion d;
    d.tag = it->second;
    c.inflight.erase(it);
    if (h.op == Op::kError) {
      protocol::ErrorResponse e;
      if (Status s = protocol::Decode(body, &e); !s.ok()) {
        failure = s;
        return false;
      }
      if (e.code == protocol::ErrorCode::kWrongExpectedVersion) {
        d.outcome = Outcome::kConflict;
      } else if (e.code != protocol::ErrorCode::kStreamNotFound) {
        // A read of a stream nothing was appended to yet is an empty
        // answer, as PostgreSQL's; anything else is an error.
        d.outcome = Outcome::kError;
        d.error = e.message;
      }
    }
    done->push_back(std::move(d));
    return true;
  }));
  return failure;
}

// Checks order as it goes: a subscription that skipped or repeated a
// position would make the delivery figures meaningless.
Status AnnalTarget::PollSubscriber(size_t i, std::vector<Delivery>* out) {
  Sub& s = subs_[i];
  Status failure;
  ANNAL_RETURN_IF_ERROR(s.wire->ReadFrames([&](const protocol::FrameHeader& h, std::string_view body,
                                               const bench::WireConnection::Received& at) {
    if (h.op == Op::kCaughtUp) return true;
    if (h.op != Op::kSubEvents) {
      failure = Status::Unavailable(std::string("subscription ended with ") + protocol::OpName(h.op));
      return false;
    }
    if (Status st = protocol::Decode(body, &s.scratch); !st.ok()) {
      failure = st;
      return false;
    }
    for (const RecordedEvent& e : s.scratch.events) {
      if (e.position.get() <= s.last_position) {
        failure = Status::Corruption("subscriber " + std::to_string(i) + " got position " +
                                     std::to_string(e.position.get()) + " after " +
                                     std::to_string(s.last_position));
        return false;
      }
      s.last_position = e.position.get();
      out->push_back(Delivery{e.recorded_at_ns, at.wall_ns});
    }
    return true;
  }));
  return failure;
}

}  // namespace annal::loadgen
