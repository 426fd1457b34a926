// annal-bench: an open-loop load generator for annald and, with the same
// workload, for PostgreSQL's events table (the reference design). See
// runner.h for how latency is measured, docs/benchmarks.md for results.
//
//   annal-bench --rate 100000 --duration 20
//   annal-bench --target postgres://annal@127.0.0.1:5432/annal_bench --rate 5000
//   annal-bench --sweep --rate 50000 --sweep-p99-ms 1
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "annal_target.h"
#include "postgres_target.h"
#include "runner.h"

namespace annal::loadgen {
namespace {

struct Cli {
  std::string target = "annal://127.0.0.1:7411";
  size_t connections = 0;  // 0: the target kind's default
  size_t depth = 0;        // 0: the target kind's default
  size_t subscribers = 0;
  std::string arrivals = "constant";
  std::string distribution = "uniform";
  std::string payload = "json";
  double warmup_s = 2, duration_s = 10, tick_us = 50;
  bool json = false, quiet = false;
  bool sweep = false;
  double sweep_factor = 1.25, sweep_max = 2'000'000, sweep_p99_ms = 1;
  int sweep_misses = 2;
  std::string spectrum_file;
  std::string run_id;
  WorkloadOptions workload;
  RunOptions run;
};

std::string Us(uint64_t ns) { return FormatLatency(ns); }

nlohmann::json Percentiles(const LatencyHistogram& h) {
  nlohmann::json j;
  j["count"] = h.count();
  j["mean_us"] = h.mean_ns() / 1e3;
  for (double p : {50.0, 90.0, 99.0, 99.9, 99.99}) {
    char key[32];
    std::snprintf(key, sizeof key, "p%g_us", p);
    j[key] = static_cast<double>(h.ValueAtPercentile(p)) / 1e3;
  }
  j["max_us"] = static_cast<double>(h.max_ns()) / 1e3;
  return j;
}

nlohmann::json ToJson(const RunResult& r, const RunOptions& o) {
  nlohmann::json j;
  j["offered_rate"] = o.rate_per_s;
  j["offered_per_s"] = r.offered_per_s;
  j["achieved_per_s"] = r.achieved_per_s;
  j["window_s"] = r.window_s;
  j["events_appended"] = r.events_appended;
  j["latency"] = Percentiles(r.all);
  for (size_t k = 0; k < kOpKinds; ++k) {
    const OpStats& s = r.ops[k];
    if (s.empty()) continue;
    nlohmann::json op = Percentiles(s.latency);
    op["ok"] = s.ok;
    op["conflicts"] = s.conflicts;
    op["errors"] = s.errors;
    op["timed_out"] = s.timed_out;
    if (!s.first_error.empty()) op["first_error"] = s.first_error;
    j["ops"][OpKindName(static_cast<OpKind>(k))] = op;
  }
  if (r.delivery.count() > 0) j["delivery"] = Percentiles(r.delivery);
  j["client_cpu_s"] = r.client_cpu_s;
  if (r.server_cpu_s >= 0) {
    j["server_cpu_s"] = r.server_cpu_s;
    if (r.events_appended > 0)
      j["server_cpu_us_per_event"] = r.server_cpu_s * 1e6 / static_cast<double>(r.events_appended);
  }
  for (const SecondReport& s : r.seconds)
    j["seconds"].push_back({{"second", s.second}, {"offered", s.offered}, {"completed", s.completed},
                            {"p50_us", s.p50_ns / 1e3}, {"p99_us", s.p99_ns / 1e3},
                            {"p999_us", s.p999_ns / 1e3}, {"max_us", s.max_ns / 1e3}});
  return j;
}

void PrintSummary(const std::string& target, const RunResult& r) {
  std::printf("\n%s: offered %.0f/s (%.0f requests), achieved %.0f/s over %.0f s\n", target.c_str(),
              r.offered_per_s, static_cast<double>(r.offered), r.achieved_per_s, r.window_s);
  for (size_t k = 0; k < kOpKinds; ++k) {
    const OpStats& s = r.ops[k];
    if (s.empty()) continue;
    std::printf("  %-12s ok %llu  conflicts %llu  errors %llu  timed out %llu\n",
                OpKindName(static_cast<OpKind>(k)), static_cast<unsigned long long>(s.ok),
                static_cast<unsigned long long>(s.conflicts), static_cast<unsigned long long>(s.errors),
                static_cast<unsigned long long>(s.timed_out));
    if (!s.first_error.empty()) std::printf("    first error: %s\n", s.first_error.c_str());
    std::printf("    latency from due time:");
    for (double p : {50.0, 75.0, 90.0, 99.0, 99.9, 99.99})
      std::printf("  p%g %s", p, Us(s.latency.ValueAtPercentile(p)).c_str());
    std::printf("  max %s\n", Us(s.latency.max_ns()).c_str());
  }
  if (r.delivery.count() > 0)
    std::printf("  subscription delivery (receipt - commit stamp): p50 %s  p99 %s  p99.9 %s  max %s (%llu deliveries)\n",
                Us(r.delivery.ValueAtPercentile(50)).c_str(), Us(r.delivery.ValueAtPercentile(99)).c_str(),
                Us(r.delivery.ValueAtPercentile(99.9)).c_str(), Us(r.delivery.max_ns()).c_str(),
                static_cast<unsigned long long>(r.delivery.count()));
  std::printf("  client CPU %.2f cores", r.client_cpu_s / r.window_s);
  if (r.server_cpu_s >= 0) {
    std::printf(", server CPU %.2f cores", r.server_cpu_s / r.window_s);
    if (r.events_appended > 0)
      std::printf(", %.2f µs server CPU per event", r.server_cpu_s * 1e6 / static_cast<double>(r.events_appended));
  }
  std::printf("\n");
}

// A run holds its rate when it kept up, failed nothing and met the p99 bound.
bool Holds(const RunResult& r, double p99_bound_ms) {
  uint64_t failed = 0;
  for (const OpStats& s : r.ops) failed += s.failed();
  return failed == 0 && r.achieved_per_s >= 0.95 * r.offered_per_s &&
         static_cast<double>(r.all.ValueAtPercentile(99)) <= p99_bound_ms * 1e6;
}

Result<std::unique_ptr<Target>> MakeTarget(const Cli& c) {
  if (c.target.rfind("postgres://", 0) == 0 || c.target.rfind("postgresql://", 0) == 0) {
    PostgresOptions o;
    o.conninfo = c.target;
    o.connections = c.connections ? c.connections : 32;
    o.depth = c.depth ? c.depth : 1;
    o.run_id = c.run_id;
    o.workload = c.workload;
    if (c.subscribers > 0) return Status::InvalidArgument("--subscribers: PostgreSQL has no subscriptions here");
    ANNAL_ASSIGN_OR_RETURN(auto t, PostgresTarget::Connect(o));
    return std::unique_ptr<Target>(std::move(t));
  }
  std::string rest = c.target;
  if (rest.rfind("annal://", 0) == 0) rest = rest.substr(8);
  size_t colon = rest.rfind(':');
  AnnalOptions o;
  o.host = colon == std::string::npos ? rest : rest.substr(0, colon);
  if (colon != std::string::npos) {
    int port = std::atoi(rest.c_str() + colon + 1);
    if (port <= 0 || port > 65535) return Status::InvalidArgument("--target: bad port in " + c.target);
    o.port = static_cast<uint16_t>(port);
  }
  o.connections = c.connections ? c.connections : 4;
  o.depth = c.depth ? c.depth : 64;
  o.subscribers = c.subscribers;
  o.run_id = c.run_id;
  o.workload = c.workload;
  ANNAL_ASSIGN_OR_RETURN(auto t, AnnalTarget::Connect(o));
  return std::unique_ptr<Target>(std::move(t));
}

void WriteSpectrum(const std::string& path, const LatencyHistogram& h) {
  std::ofstream f(path);
  f << "# percentile latency_us 1/(1-percentile/100)\n";
  for (const auto& [p, v] : h.Spectrum()) {
    double x = p >= 100 ? 1e7 : 1.0 / (1.0 - p / 100.0);
    f << p << ' ' << static_cast<double>(v) / 1e3 << ' ' << x << '\n';
  }
}

int Main(int argc, char** argv) {
  Cli c;
  CLI::App app{"annal-bench: open-loop load against annald or PostgreSQL, latency from each request's due time.",
               "annal-bench"};
  app.add_option("--target", c.target, "annal://HOST:PORT or postgres://USER@HOST:PORT/DB")->capture_default_str();
  app.add_option("--rate", c.run.rate_per_s, "Requests offered per second (all kinds)")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--arrivals", c.arrivals, "constant or poisson")
      ->check(CLI::IsMember({"constant", "poisson"}))->capture_default_str();
  app.add_option("--connections", c.connections, "Connections (default: annal 4, postgres 32)");
  app.add_option("--depth", c.depth, "Requests in flight per connection (default: annal 64, postgres 1)");
  app.add_option("--streams", c.workload.streams, "Streams written and read")
      ->check(CLI::Range(1u, 100'000'000u))->capture_default_str();
  app.add_option("--distribution", c.distribution, "uniform or zipf")
      ->check(CLI::IsMember({"uniform", "zipf"}))->capture_default_str();
  app.add_option("--zipf-exponent", c.workload.zipf_exponent, "Zipf skew s (rank k has weight 1/k^s)")
      ->check(CLI::Range(0.0, 5.0))->capture_default_str();
  app.add_option("--event-bytes", c.workload.event_bytes, "Payload bytes per event")
      ->check(CLI::Range(1u, 1u << 20))->capture_default_str();
  app.add_option("--payload", c.payload, "json or random")
      ->check(CLI::IsMember({"json", "random"}))->capture_default_str();
  app.add_option("--events-per-append", c.workload.events_per_append, "Events per append")
      ->check(CLI::Range(1u, 1000u))->capture_default_str();
  app.add_option("--read-fraction", c.run.read_fraction, "Share of requests that read the last --read-count events of a stream")
      ->check(CLI::Range(0.0, 1.0))->capture_default_str();
  app.add_option("--read-count", c.run.read_count, "Events per read")->check(CLI::Range(1u, 10'000u))->capture_default_str();
  app.add_option("--subscribers", c.subscribers, "annal: connections subscribed to the whole store (delivery latency)");
  app.add_option("--duration", c.duration_s, "Measured seconds")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--warmup", c.warmup_s, "Seconds of load before measuring")->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--tick-us", c.tick_us, "Pacing tick: how often due requests are sent")
      ->check(CLI::Range(1.0, 10'000.0))->capture_default_str();
  app.add_option("--seed", c.workload.seed, "Seed of the workload's random choices")->capture_default_str();
  app.add_option("--run-id", c.run_id, "Names this run's streams (default: time and pid)");
  app.add_option("--server-pid", c.run.server_pids, "Charge this process tree's CPU to the target (repeatable)");
  app.add_option("--spectrum", c.spectrum_file, "Write the latency percentile spectrum (for plots) to this file");
  app.add_flag("--json", c.json, "Print the result as JSON");
  app.add_flag("--quiet", c.quiet, "No line per second");
  app.add_flag("--sweep", c.sweep,
               "Raise the rate from --rate until p99 passes --sweep-p99-ms (--sweep-misses steps in a row); report the knee");
  app.add_option("--sweep-factor", c.sweep_factor, "Rate multiplier per sweep step")->check(CLI::Range(1.01, 10.0))->capture_default_str();
  app.add_option("--sweep-max", c.sweep_max, "Highest rate a sweep tries")->capture_default_str();
  app.add_option("--sweep-misses", c.sweep_misses,
                 "Consecutive steps that miss before a sweep stops (one noisy step does not end it)")
      ->check(CLI::Range(1, 10))->capture_default_str();
  app.add_option("--sweep-p99-ms", c.sweep_p99_ms, "p99 bound of a sustainable rate")->check(CLI::PositiveNumber)->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  c.workload.distribution = c.distribution == "zipf" ? StreamDistribution::kZipf : StreamDistribution::kUniform;
  c.workload.payload = c.payload == "json" ? PayloadKind::kJson : PayloadKind::kRandom;
  if (c.workload.payload == PayloadKind::kJson && c.workload.event_bytes < kMinJsonEventBytes) {
    std::fprintf(stderr, "annal-bench: JSON events need --event-bytes >= %u\n", kMinJsonEventBytes);
    return 2;
  }
  c.run.arrivals = c.arrivals == "poisson" ? Arrivals::kPoisson : Arrivals::kConstant;
  c.run.warmup = std::chrono::nanoseconds(static_cast<int64_t>(c.warmup_s * 1e9));
  c.run.duration = std::chrono::nanoseconds(static_cast<int64_t>(c.duration_s * 1e9));
  c.run.tick = std::chrono::nanoseconds(static_cast<int64_t>(c.tick_us * 1e3));
  if (c.run_id.empty())
    c.run_id = std::to_string(std::chrono::system_clock::now().time_since_epoch().count() / 1'000'000) + "-" +
               std::to_string(::getpid());

  auto target = MakeTarget(c);
  if (!target.ok()) {
    std::fprintf(stderr, "annal-bench: %s\n", target.status().ToString().c_str());
    return 1;
  }
  std::string name = (*target)->name();
  if (!c.quiet && !c.json)
    c.run.on_second = [&](const SecondReport& s) {
      std::printf("%4ds  offered %7llu/s  done %7llu/s  p50 %9s  p99 %9s  p99.9 %9s  max %9s\n", s.second,
                  static_cast<unsigned long long>(s.offered), static_cast<unsigned long long>(s.completed),
                  Us(s.p50_ns).c_str(), Us(s.p99_ns).c_str(), Us(s.p999_ns).c_str(), Us(s.max_ns).c_str());
      std::fflush(stdout);
    };

  nlohmann::json out;
  out["target"] = name;
  out["workload"] = {{"streams", c.workload.streams}, {"distribution", c.distribution},
                     {"event_bytes", c.workload.event_bytes}, {"payload", c.payload},
                     {"events_per_append", c.workload.events_per_append},
                     {"read_fraction", c.run.read_fraction}, {"arrivals", c.arrivals},
                     {"connections", (*target)->connections()}};
  double rate = c.run.rate_per_s;
  double knee = 0;
  int misses = 0;
  while (true) {
    c.run.rate_per_s = rate;
    if (!c.json && c.sweep) std::printf("\n--- %s at %.0f requests/s\n", name.c_str(), rate);
    auto r = Run(**target, c.workload, c.run);
    if (!r.ok()) {
      std::fprintf(stderr, "annal-bench: %s\n", r.status().ToString().c_str());
      return 1;
    }
    if (!c.json) PrintSummary(name, *r);
    if (!c.spectrum_file.empty()) {
      std::string path = c.spectrum_file;
      if (c.sweep) path += "." + std::to_string(static_cast<long long>(rate));
      WriteSpectrum(path, r->all);
    }
    bool holds = Holds(*r, c.sweep_p99_ms);
    if (!c.sweep) {
      out["result"] = ToJson(*r, c.run);
      break;
    }
    nlohmann::json step = ToJson(*r, c.run);
    step["holds"] = holds;
    out["sweep"].push_back(step);
    misses = holds ? 0 : misses + 1;
    if (holds) knee = std::max(knee, r->achieved_per_s);
    if (misses >= c.sweep_misses) break;
    if (rate * c.sweep_factor > c.sweep_max) break;
    rate *= c.sweep_factor;
  }
  if (c.sweep) {
    out["knee_per_s"] = knee;
    out["knee_p99_bound_ms"] = c.sweep_p99_ms;
    if (!c.json)
      std::printf("\nknee (highest rate with p99 <= %g ms, nothing failed, kept up; the sweep stopped after %d "
                  "missed step(s) in a row): %.0f requests/s\n",
                  c.sweep_p99_ms, c.sweep_misses, knee);
  }
  if (c.json) std::cout << out.dump(2) << '\n';
  return 0;
}

}  // namespace
}  // namespace annal::loadgen

int main(int argc, char** argv) { return annal::loadgen::Main(argc, argv); }
