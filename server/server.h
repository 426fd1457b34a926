// annald's network server: one I/O thread (epoll) that owns every client
// socket, parses frames and answers them; appends go to the engine
// asynchronously and are answered from the engine's writer threads through
// each connection's outbox; a subscription thread pushes events to
// subscribers. See docs/architecture.md ("The server").
//
// Threads and what they own
// - I/O thread: the listening socket, every connection's socket and input
//   buffer, the connection table, timeouts. Reads (read-stream, read-all,
//   read-all-range, read-head, stream info) run here, inline: they are
//   page-cache reads.
// - Engine writer threads: run append callbacks, which encode the response
//   into the connection's outbox (Connection::Send) and wake the I/O thread.
// - Subscription thread: owns the subscriptions; reads the log past each
//   one's position and queues SUB_EVENTS frames (Connection::Send).
// - State worker thread: runs LOAD_STATE, WRITE_SNAPSHOT and LIST_SNAPSHOTS
//   (a load may fold thousands of events) and the consumer checkpoint
//   requests (a SET_CHECKPOINT waits for an fsync) from a bounded queue,
//   which the I/O thread fills, and answers them through Connection::Send.
//   The state engine's own snapshot taker runs beside it (annal/state.h).
// - Metrics thread: renders GET /metrics.
// A connection's outbox is guarded by its own mutex; every other piece of
// connection state belongs to the I/O thread, except the atomics.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <variant>
#include <vector>

#include "annal/consumers.h"
#include "annal/state.h"
#include "annal/store.h"
#include "config.h"
#include "metrics.h"
#include "protocol.h"

namespace annal::server {

struct Connection;
struct Subscription;

// A state or checkpoint request the I/O thread decoded, waiting for the
// state worker.
struct StateJob {
  using Request = std::variant<protocol::LoadStateRequest, protocol::WriteSnapshotRequest,
                               protocol::ListSnapshotsRequest, protocol::GetCheckpointRequest,
                               protocol::SetCheckpointRequest, protocol::DeleteCheckpointRequest,
                               protocol::ListCheckpointsRequest>;
  std::weak_ptr<Connection> connection;
  uint32_t request_id = 0;
  Request request;
  std::chrono::steady_clock::time_point arrived;
};

class Server {
 public:
  using Logger = std::function<void(const std::string&)>;
  // Serves `store` as `config` says, with a state engine over it opened
  // with `state` (MakeStateOptions(config) for annald; its log is replaced
  // by `log`) and the consumer checkpoint store at CheckpointStorePath(config),
  // which must open (checkpoints are not optional data); listening starts
  // before it returns.
  static Result<std::unique_ptr<Server>> Start(const ServerConfig& config,
                                               std::unique_ptr<Store> store, StateOptions state,
                                               Logger log);
  ~Server();

  uint16_t port() const { return port_; }
  uint16_t metrics_port() const { return metrics_.port(); }
  Store& store() { return *store_; }

  // Stops accepting and reading requests, finishes appends and state
  // requests in flight and flushes their answers (bounded), closes
  // connections, stops the subscription and state worker threads, closes
  // the state engine and then the store (which writes a checkpoint).
  Status Shutdown();

  // Any thread: `c` has output to flush or its in-flight count dropped.
  void Wake(const std::shared_ptr<Connection>& c);

 private:
  Server(const ServerConfig& config, std::unique_ptr<Store> store, Logger log);
  Status Listen();

  // I/O thread.
  void IoLoop();
  void AcceptAll();
  void HandleWakeups();
  void OnReadable(const std::shared_ptr<Connection>& c);
  void ParseFrames(const std::shared_ptr<Connection>& c);
  void Dispatch(const std::shared_ptr<Connection>& c, const protocol::FrameHeader& h, std::string_view body);
  void HandleHello(const std::shared_ptr<Connection>& c, uint32_t rid, std::string_view body);
  void HandleAppend(const std::shared_ptr<Connection>& c, uint32_t rid, std::string_view body);
  void HandleReadStream(const std::shared_ptr<Connection>& c, uint32_t rid, std::string_view body);
  void HandleReadAll(const std::shared_ptr<Connection>& c, uint32_t rid, std::string_view body);
  void HandleStreamInfo(const std::shared_ptr<Connection>& c, uint32_t rid, std::string_view body);
  void HandleReadAllRange(const std::shared_ptr<Connection>& c, uint32_t rid, std::string_view body);
  void HandleReadHead(const std::shared_ptr<Connection>& c, uint32_t rid, std::string_view body);
  // READ_ALL and READ_ALL_RANGE: the page from `from` on, never past
  // min(until, durable head).
  Result<protocol::AllEventsResponse> ReadAllPage(uint64_t from, uint64_t until, uint32_t max_count,
                                                  const protocol::Filter& filter);
  void HandleSubscribe(const std::shared_ptr<Connection>& c, uint32_t rid, std::string_view body);
  void HandleUnsubscribe(const std::shared_ptr<Connection>& c, uint32_t rid, std::string_view body);
  // Decodes a state request and queues it for the state worker.
  void HandleStateRequest(const std::shared_ptr<Connection>& c, protocol::Op op, uint32_t rid,
                          std::string_view body);
  // Answers with ERROR; `close` also ends the connection once it is sent.
  void Fail(const std::shared_ptr<Connection>& c, uint32_t rid, const Status& s, bool close);
  void Flush(const std::shared_ptr<Connection>& c);
  void UpdateInterest(const std::shared_ptr<Connection>& c);
  void Close(const std::shared_ptr<Connection>& c, const std::string& why);
  void CheckTimeouts();
  bool Drained();

  // Subscription thread.
  void SubscriptionLoop();
  bool Ready(Subscription& s, uint64_t head);
  void MarkCaughtUp(Subscription& s, uint64_t head);
  bool ServeAll(uint64_t position, const std::vector<Subscription*>& group, uint64_t head);
  bool ServeStream(Subscription& s, uint64_t head);
  void Drop(Subscription& s, Connection& c, const std::string& why);

  // State worker thread. Each returns the answer's frame.
  void StateLoop();
  std::string LoadState(uint32_t rid, const protocol::LoadStateRequest& req);
  std::string WriteSnapshot(uint32_t rid, protocol::WriteSnapshotRequest req);
  std::string ListSnapshots(uint32_t rid, const protocol::ListSnapshotsRequest& req);
  std::string GetCheckpoint(uint32_t rid, const protocol::GetCheckpointRequest& req);
  std::string SetCheckpoint(uint32_t rid, const protocol::SetCheckpointRequest& req);
  std::string DeleteCheckpoint(uint32_t rid, const protocol::DeleteCheckpointRequest& req);
  std::string ListCheckpoints(uint32_t rid, const protocol::ListCheckpointsRequest& req);

  const ServerConfig config_;
  std::unique_ptr<Store> store_;
  Logger log_;
  ServerMetrics metrics_state_;
  MetricsEndpoint metrics_;

  int listen_fd_ = -1;
  uint16_t port_ = 0;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  std::thread io_thread_;
  std::unordered_map<int, std::shared_ptr<Connection>> connections_;  // I/O thread
  uint64_t next_connection_id_ = 1;                                    // I/O thread
  std::atomic<bool> shutting_down_{false};

  std::mutex wake_mu_;
  std::vector<std::shared_ptr<Connection>> woken_;  // guarded by wake_mu_

  std::mutex subs_mu_;
  std::vector<std::shared_ptr<Subscription>> subs_;  // guarded by subs_mu_
  // With no subscriptions the subscription thread sleeps here rather than
  // waking on every durable batch; a new subscription or Shutdown wakes it.
  std::condition_variable subs_cv_;
  std::atomic<bool> stop_subscriptions_{false};
  std::thread sub_thread_;

  uint32_t partitions_ = 0;               // of the store; fixed once it is open
  std::unique_ptr<StateEngine> states_;  // opened in Start, closed in Shutdown
  // Opened in Start, closed in Shutdown after the state worker stopped; used
  // by the state worker only.
  std::unique_ptr<CheckpointStore> checkpoints_;
  std::mutex state_mu_;
  std::condition_variable state_cv_;
  std::deque<StateJob> state_jobs_;  // guarded by state_mu_; bounded
  bool stop_state_ = false;          // guarded by state_mu_
  std::thread state_thread_;
};

}  // namespace annal::server
