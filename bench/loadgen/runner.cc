#include "runner.h"

#include <sys/epoll.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <deque>
#include <dirent.h>
#include <fstream>
#include <random>
#include <sstream>
#include <unordered_map>

#include "annal/assert.h"
#include "wire_connection.h"

namespace annal::loadgen {

const char* OpKindName(OpKind kind) {
  switch (kind) {
    case OpKind::kAppend: return "append";
    case OpKind::kReadStream: return "read-stream";
  }
  return "?";
}

namespace {

int64_t SteadyNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int64_t WallNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

double SelfCpuSeconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// Due times, in nanoseconds from the start of the run.
class ArrivalClock {
 public:
  ArrivalClock(Arrivals kind, double rate_per_s, uint64_t seed)
      : kind_(kind), gap_ns_(1e9 / rate_per_s), rng_(seed), exp_(1.0) {}
  int64_t Next() {
    int64_t due = static_cast<int64_t>(at_ns_);
    at_ns_ += kind_ == Arrivals::kConstant ? gap_ns_ : gap_ns_ * exp_(rng_);
    return due;
  }

 private:
  Arrivals kind_;
  double gap_ns_;
  double at_ns_ = 0;
  std::mt19937_64 rng_;
  std::exponential_distribution<double> exp_;
};

struct Pending {
  uint64_t tag;
  int64_t due_ns;  // steady clock
  OpKind kind;
  uint32_t stream;
  bool measured;
};

struct Inflight {
  int64_t due_ns;
  OpKind kind;
  bool measured;
};

class Loop {
 public:
  Loop(Target& t, const WorkloadOptions& w, const RunOptions& o)
      : target_(t), workload_(w), options_(o), chooser_(w),
        arrivals_(o.arrivals, o.rate_per_s, w.seed * 7919 + 17), kind_rng_(w.seed + 3),
        waiting_(t.connections()) {}
  Result<RunResult> Run();

 private:
  void Setup();
  void Generate(int64_t now);
  Status SendWaiting(size_t conn);
  Status OnReady(uint32_t index);
  void Complete(const Completion& c, int64_t done_ns);
  void CloseSecond(int64_t now);

  Target& target_;
  const WorkloadOptions& workload_;
  const RunOptions& options_;
  StreamChooser chooser_;
  ArrivalClock arrivals_;
  std::mt19937_64 kind_rng_;
  std::vector<std::deque<Pending>> waiting_;  // per connection, due but not sent
  std::vector<bool> watching_output_;
  std::unordered_map<uint64_t, Inflight> inflight_;
  std::vector<Completion> done_;
  std::vector<Delivery> deliveries_;
  bench::Poller poller_;
  uint64_t next_tag_ = 1;

  int64_t start_ns_ = 0;          // steady: due time 0
  int64_t window_begin_ns_ = 0;   // steady: first measured due time
  int64_t window_end_ns_ = 0;     // steady: first due time not offered
  int64_t window_begin_wall_ns_ = 0;
  int64_t next_due_ns_ = 0;
  bool generating_ = true;
  RunResult result_;
  uint64_t measured_done_ = 0;
  int64_t last_measured_done_ns_ = 0;

  // The current second of the measured window.
  int64_t second_end_ns_ = 0;
  SecondReport second_;
  LatencyHistogram second_latency_;
};

void Loop::Setup() {
  watching_output_.assign(target_.connections(), false);
  for (size_t i = 0; i < target_.connections(); ++i) poller_.Add(target_.fd(i), static_cast<uint32_t>(i));
  for (size_t i = 0; i < target_.subscribers(); ++i)
    poller_.Add(target_.subscriber_fd(i), static_cast<uint32_t>(target_.connections() + i));
}

// Offers every request due by `now` (the schedule never waits for the
// target: a request is queued on its connection even when it cannot be sent).
void Loop::Generate(int64_t now) {
  while (generating_ && next_due_ns_ <= now) {
    Pending p;
    p.tag = next_tag_++;
    p.due_ns = next_due_ns_;
    p.kind = options_.read_fraction > 0 &&
                     std::uniform_real_distribution<double>(0, 1)(kind_rng_) < options_.read_fraction
                 ? OpKind::kReadStream
                 : OpKind::kAppend;
    p.stream = chooser_.Next();
    p.measured = p.due_ns >= window_begin_ns_;
    if (p.measured) {
      ++result_.offered;
      ++second_.offered;
    }
    waiting_[p.stream % waiting_.size()].push_back(p);
    int64_t next = start_ns_ + arrivals_.Next();
    if (next >= window_end_ns_) generating_ = false;
    next_due_ns_ = next;
  }
}

Status Loop::SendWaiting(size_t conn) {
  auto& q = waiting_[conn];
  while (!q.empty() && target_.FreeSlots(conn) > 0) {
    const Pending& p = q.front();
    Request r;
    r.tag = p.tag;
    r.kind = p.kind;
    r.stream = p.stream;
    r.events = workload_.events_per_append;
    r.read_count = options_.read_count;
    ANNAL_RETURN_IF_ERROR(target_.Send(conn, r));
    inflight_.emplace(p.tag, Inflight{p.due_ns, p.kind, p.measured});
    q.pop_front();
  }
  if (target_.HasOutput(conn)) ANNAL_RETURN_IF_ERROR(target_.Flush(conn));
  // Asks epoll for writability only while the connection has output the
  // kernel did not take, so an idle connection never wakes the loop.
  bool want = target_.HasOutput(conn);
  if (want != watching_output_[conn]) {
    poller_.WantWrite(target_.fd(conn), static_cast<uint32_t>(conn), want);
    watching_output_[conn] = want;
  }
  return Status::Ok();
}

void Loop::Complete(const Completion& c, int64_t done_ns) {
  auto it = inflight_.find(c.tag);
  // A late answer to a request an earlier run gave up on (drain timeout).
  if (it == inflight_.end()) return;
  Inflight f = it->second;
  inflight_.erase(it);
  if (!f.measured) return;
  ++measured_done_;
  last_measured_done_ns_ = done_ns;
  ++second_.completed;
  OpStats& s = result_.ops[static_cast<size_t>(f.kind)];
  uint64_t latency = static_cast<uint64_t>(std::max<int64_t>(0, done_ns - f.due_ns));
  switch (c.outcome) {
    case Outcome::kOk:
      ++s.ok;
      s.latency.Record(latency);
      result_.all.Record(latency);
      second_latency_.Record(latency);
      if (f.kind == OpKind::kAppend) result_.events_appended += workload_.events_per_append;
      break;
    case Outcome::kConflict: ++s.conflicts; break;
    case Outcome::kError:
      if (s.errors++ == 0) s.first_error = c.error;
      break;
  }
  if (options_.on_complete) options_.on_complete(f.kind, f.due_ns, done_ns);
}

Status Loop::OnReady(uint32_t index) {
  size_t conns = target_.connections();
  if (index >= conns) {
    deliveries_.clear();
    ANNAL_RETURN_IF_ERROR(target_.PollSubscriber(index - conns, &deliveries_));
    for (const Delivery& d : deliveries_)
      if (window_begin_wall_ns_ > 0 && d.recorded_at_ns >= window_begin_wall_ns_)
        result_.delivery.Record(static_cast<uint64_t>(std::max<int64_t>(0, d.received_ns - d.recorded_at_ns)));
    return Status::Ok();
  }
  done_.clear();
  ANNAL_RETURN_IF_ERROR(target_.Poll(index, &done_));
  int64_t now = SteadyNs();
  for (const Completion& c : done_) Complete(c, now);
  return SendWaiting(index);
}

void Loop::CloseSecond(int64_t now) {
  while (second_end_ns_ <= now && second_end_ns_ <= window_end_ns_) {
    second_.second = static_cast<int>(result_.seconds.size()) + 1;
    second_.p50_ns = second_latency_.ValueAtPercentile(50);
    second_.p99_ns = second_latency_.ValueAtPercentile(99);
    second_.p999_ns = second_latency_.ValueAtPercentile(99.9);
    second_.max_ns = second_latency_.max_ns();
    result_.seconds.push_back(second_);
    if (options_.on_second) options_.on_second(second_);
    second_ = SecondReport{};
    second_latency_.Reset();
    second_end_ns_ += 1'000'000'000;
  }
}

Result<RunResult> Loop::Run() {
  ANNAL_ASSERT(options_.rate_per_s > 0 && target_.connections() > 0);
  Setup();
  start_ns_ = SteadyNs() + 1'000'000;
  window_begin_ns_ = start_ns_ + options_.warmup.count();
  window_end_ns_ = window_begin_ns_ + options_.duration.count();
  second_end_ns_ = window_begin_ns_ + 1'000'000'000;
  next_due_ns_ = start_ns_ + arrivals_.Next();
  bool window_open = false;
  double client_cpu0 = 0;
  std::vector<double> server_cpu0;
  int64_t drain_deadline = 0;
  while (true) {
    int64_t now = SteadyNs();
    if (!window_open && now >= window_begin_ns_) {
      window_open = true;
      window_begin_wall_ns_ = WallNs();
      client_cpu0 = SelfCpuSeconds();
      for (int pid : options_.server_pids) server_cpu0.push_back(ProcessTreeCpuSeconds(pid));
    }
    Generate(now);
    for (size_t c = 0; c < waiting_.size(); ++c)
      if (!waiting_[c].empty()) ANNAL_RETURN_IF_ERROR(SendWaiting(c));
    if (window_open) CloseSecond(now);
    if (!generating_) {
      if (drain_deadline == 0) {
        // The window is over: charge its CPU now, before the drain.
        result_.client_cpu_s = SelfCpuSeconds() - client_cpu0;
        if (!options_.server_pids.empty()) {
          result_.server_cpu_s = 0;
          for (size_t i = 0; i < options_.server_pids.size(); ++i)
            result_.server_cpu_s += ProcessTreeCpuSeconds(options_.server_pids[i]) - server_cpu0[i];
        }
        drain_deadline = now + options_.drain_timeout.count();
      }
      bool idle = inflight_.empty();
      for (const auto& q : waiting_) idle = idle && q.empty();
      if (idle || now >= drain_deadline) break;
    }
    // Sleep until the next due time, rounded up to the pacing tick.
    int64_t wake = generating_ ? next_due_ns_ : now + options_.tick.count() * 20;
    int64_t tick = std::max<int64_t>(1, options_.tick.count());
    wake = (wake - start_ns_ + tick - 1) / tick * tick + start_ns_;
    ANNAL_RETURN_IF_ERROR(poller_.Wait(std::chrono::nanoseconds(wake - now),
                                       [&](uint32_t index, uint32_t) { return OnReady(index); }));
  }
  // What is still unanswered, sent or not, is charged what it has waited so far.
  int64_t now = SteadyNs();
  auto charge = [&](OpKind kind, int64_t due_ns) {
    OpStats& s = result_.ops[static_cast<size_t>(kind)];
    ++s.timed_out;
    s.latency.Record(static_cast<uint64_t>(now - due_ns));
    result_.all.Record(static_cast<uint64_t>(now - due_ns));
  };
  for (const auto& [tag, f] : inflight_)
    if (f.measured) charge(f.kind, f.due_ns);
  for (const auto& q : waiting_)
    for (const Pending& p : q)
      if (p.measured) charge(p.kind, p.due_ns);
  result_.window_s = static_cast<double>(options_.duration.count()) / 1e9;
  result_.offered_per_s = static_cast<double>(result_.offered) / result_.window_s;
  // Achieved: answered requests over the time from the window's start to
  // the last answer, so a target that falls behind shows a lower rate.
  uint64_t ok = 0;
  for (const OpStats& s : result_.ops) ok += s.ok;
  double span_s = static_cast<double>(std::max(last_measured_done_ns_, window_end_ns_) - window_begin_ns_) / 1e9;
  result_.achieved_per_s = static_cast<double>(ok) / span_s;
  return std::move(result_);
}

}  // namespace

Result<RunResult> Run(Target& target, const WorkloadOptions& workload, const RunOptions& options) {
  Loop loop(target, workload, options);
  return loop.Run();
}

double ProcessTreeCpuSeconds(int pid) {
  // /proc/<pid>/stat: "pid (comm) state ppid ... utime(14) stime(15) ..."
  // comm may hold spaces and parentheses, so fields count from the last ')'.
  struct Proc {
    int ppid;
    double cpu_s;
  };
  std::unordered_map<int, Proc> procs;
  double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
  DIR* d = ::opendir("/proc");
  if (d == nullptr) return -1;
  while (dirent* e = ::readdir(d)) {
    char* end = nullptr;
    long p = std::strtol(e->d_name, &end, 10);
    if (*end != '\0' || p <= 0) continue;
    std::ifstream f(std::string("/proc/") + e->d_name + "/stat");
    std::string line;
    if (!std::getline(f, line)) continue;
    size_t close = line.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(line.substr(close + 2));
    std::string state;
    long long ppid = 0, skip = 0, utime = 0, stime = 0;
    rest >> state >> ppid;
    for (int i = 0; i < 9; ++i) rest >> skip;  // fields 5..13
    rest >> utime >> stime;
    procs[static_cast<int>(p)] = Proc{static_cast<int>(ppid), static_cast<double>(utime + stime) / ticks};
  }
  ::closedir(d);
  if (!procs.contains(pid)) return -1;
  double total = 0;
  for (const auto& [p, info] : procs) {
    // Walk up to the root: counted when `pid` is an ancestor (or itself).
    int at = p;
    for (int hops = 0; hops < 64 && at > 0; ++hops) {
      if (at == pid) {
        total += info.cpu_s;
        break;
      }
      auto up = procs.find(at);
      if (up == procs.end()) break;
      at = up->second.ppid;
    }
  }
  return total;
}

}  // namespace annal::loadgen
