// annal-demo: the engine embedded in a program. Opens (or creates) a store,
// appends a small bank account's history with optimistic concurrency, and
// reads it back by stream and in global order. Run it twice: the second run
// finds the first run's events and continues after them.
//
//   annal-demo [DATA_DIR]      (default ./data)
#include <chrono>
#include <cstdio>
#include <string>

#include "annal/store.h"

namespace {

int Fail(const annal::Status& s) {
  std::fprintf(stderr, "annal-demo: %s\n", s.ToString().c_str());
  return 1;
}

annal::EventData Event(std::string type, std::string payload) {
  annal::EventData e;
  e.type = std::move(type);
  e.payload = std::move(payload);
  e.metadata = R"({"user":"annal-demo"})";
  return e;
}

void Print(const annal::RecordedEvent& e) {
  std::printf("  %-12s v%-3llu pos %-5llu %s  %-16s %s\n", e.stream.c_str(),
              static_cast<unsigned long long>(e.version.get()),
              static_cast<unsigned long long>(e.position.get()), annal::FormatTimestamp(e.recorded_at_ns).c_str(),
              e.type.c_str(), e.payload.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = argc > 1 ? argv[1] : "./data";
  annal::Options options;
  auto opened = annal::Store::Open(dir, options);
  if (!opened.ok()) return Fail(opened.status());
  annal::Store& store = **opened;

  // Open the account once; later runs find it and credit it again.
  auto info = store.GetStreamInfo("account-42");
  annal::ExpectedVersion expected = annal::ExpectedVersion::NoStream();
  std::vector<annal::EventData> events;
  if (info.ok()) {
    expected = annal::ExpectedVersion::Exact(info->head_version.get());
  } else {
    events.push_back(Event("AccountOpened", R"({"owner":"ada"})"));
  }
  events.push_back(Event("AccountCredited", R"({"amount":100})"));
  events.push_back(Event("AccountDebited", R"({"amount":30})"));
  auto appended = store.Append("account-42", expected, std::move(events));
  if (!appended.ok()) return Fail(appended.status());
  std::printf("appended account-42 versions %llu..%llu (durable, fsynced) at positions %llu..%llu\n",
              static_cast<unsigned long long>(appended->first_version.get()),
              static_cast<unsigned long long>(appended->last_version.get()),
              static_cast<unsigned long long>(appended->first_position.get()),
              static_cast<unsigned long long>(appended->last_position.get()));

  // A stale expected version is refused, atomically, with the actual version.
  auto stale = store.Append("account-42", annal::ExpectedVersion::NoStream(),
                            {Event("AccountOpened", R"({"owner":"eve"})")});
  std::printf("a second AccountOpened with expected no-stream: %s\n", stale.status().ToString().c_str());

  auto read = store.ReadStream("account-42", annal::StreamVersion(0), annal::ReadDirection::kForward, 100);
  if (!read.ok()) return Fail(read.status());
  std::printf("stream account-42, %zu events:\n", read->size());
  for (const auto& e : *read) Print(e);

  auto all = store.ReadAll(annal::GlobalPosition(1), 20);
  if (!all.ok()) return Fail(all.status());
  std::printf("the global log from position 1 (first %zu):\n", all->size());
  for (const auto& e : *all) Print(e);
  std::printf("durable head: %llu; data in %s\n",
              static_cast<unsigned long long>(store.DurableHead().get()), dir.c_str());
  annal::Status closed = store.Close();
  return closed.ok() ? 0 : Fail(closed);
}
