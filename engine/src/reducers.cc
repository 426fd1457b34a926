// The built-in JSON merge-patch reducer and reducers loaded from shared
// libraries through annal/reducer_abi.h.
#include <dlfcn.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "annal/reducer_abi.h"
#include "annal/state.h"

namespace annal {
namespace {

using Json = nlohmann::json;

class JsonMergePatch final : public Reducer {
 public:
  const std::string& name() const override { return name_; }
  uint32_t schema_version() const override { return 1; }
  std::string Initial() const override { return "{}"; }

  Status Apply(std::string* state, const RecordedEvent& event) const override {
    size_t applied = 0;
    return ApplyAll(state, std::span(&event, 1), &applied);
  }

  // Decodes the state once, applies every patch, encodes it once.
  Status ApplyAll(std::string* state, std::span<const RecordedEvent> events, size_t* applied) const override {
    *applied = 0;
    Json doc = Json::parse(*state, nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded()) return Status::Corruption("state is not JSON");
    for (const RecordedEvent& e : events) {
      Json patch = Json::parse(e.payload, nullptr, /*allow_exceptions=*/false);
      if (patch.is_discarded()) {
        *state = doc.dump();
        return Status::InvalidArgument("payload of type '" + e.type + "' is not JSON");
      }
      doc.merge_patch(patch);
      ++*applied;
    }
    *state = doc.dump();
    return Status::Ok();
  }

 private:
  const std::string name_ = "json-merge-patch";
};

// Collects what a library hands back through annal_state_out::set.
struct Output {
  annal_state_out out{};
  std::string bytes;
  bool set = false;

  Output() {
    out.opaque = this;
    out.set = [](annal_state_out* self, const char* data, size_t len) {
      auto* o = static_cast<Output*>(self->opaque);
      o->bytes.assign(data, len);
      o->set = true;
    };
  }
};

class LibraryReducer final : public Reducer {
 public:
  LibraryReducer(const annal_reducer_v1* r, std::string path) : r_(r), name_(r->name), path_(std::move(path)) {}

  const std::string& name() const override { return name_; }
  uint32_t schema_version() const override { return r_->schema_version; }

  std::string Initial() const override {
    Output o;
    char err[256] = {};
    if (r_->initial(&o.out, err, sizeof err) != 0 || !o.set) return {};
    return o.bytes;
  }

  Status Apply(std::string* state, const RecordedEvent& e) const override {
    annal_event_view v{};
    v.stream = e.stream.data();
    v.stream_len = e.stream.size();
    v.version = e.version.get();
    v.position = e.position.get();
    v.recorded_at_ns = e.recorded_at_ns;
    v.id = e.id.data();
    v.type = e.type.data();
    v.type_len = e.type.size();
    v.metadata = e.metadata.data();
    v.metadata_len = e.metadata.size();
    v.payload = e.payload.data();
    v.payload_len = e.payload.size();
    Output o;
    char err[256] = {};
    int rc = r_->apply(state->data(), state->size(), &v, &o.out, err, sizeof err - 1);
    if (rc != 0)
      return Status::InvalidArgument("reducer " + name_ + " (" + path_ + ") failed with " + std::to_string(rc) +
                                     (err[0] ? ": " + std::string(err) : std::string()));
    if (!o.set) return Status::InvalidArgument("reducer " + name_ + " (" + path_ + ") returned no state");
    *state = std::move(o.bytes);
    return Status::Ok();
  }

 private:
  const annal_reducer_v1* r_;
  const std::string name_;
  const std::string path_;
};

}  // namespace

Status Reducer::ApplyAll(std::string* state, std::span<const RecordedEvent> events, size_t* applied) const {
  for (*applied = 0; *applied < events.size(); ++*applied) ANNAL_RETURN_IF_ERROR(Apply(state, events[*applied]));
  return Status::Ok();
}

std::shared_ptr<const Reducer> JsonMergePatchReducer() {
  static const auto reducer = std::make_shared<const JsonMergePatch>();
  return reducer;
}

Result<std::shared_ptr<const Reducer>> LoadReducerLibrary(const std::string& path) {
  // RTLD_NODELETE: reducers may be referenced until the process exits.
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
  if (handle == nullptr) return Status::InvalidArgument("cannot load reducer library: " + std::string(dlerror()));
  auto get = reinterpret_cast<annal_reducer_v1_get_fn>(dlsym(handle, "annal_reducer_v1_get"));
  if (get == nullptr)
    return Status::InvalidArgument("reducer library " + path + " does not export annal_reducer_v1_get");
  const annal_reducer_v1* r = get();
  if (r == nullptr || r->abi_version != ANNAL_REDUCER_ABI_VERSION)
    return Status::InvalidArgument("reducer library " + path + " speaks ABI " +
                                   (r ? std::to_string(r->abi_version) : std::string("(none)")) +
                                   ", annal speaks " + std::to_string(ANNAL_REDUCER_ABI_VERSION));
  if (r->name == nullptr || std::strlen(r->name) == 0 || std::strlen(r->name) > 255 || r->initial == nullptr ||
      r->apply == nullptr)
    return Status::InvalidArgument("reducer library " + path +
                                   ": its annal_reducer_v1 lacks a name (1..255 bytes), initial or apply");
  return std::shared_ptr<const Reducer>(std::make_shared<const LibraryReducer>(r, path));
}

std::string StateTarget::ToString() const {
  switch (kind) {
    case Kind::kHead: return "head";
    case Kind::kVersion: return "version " + std::to_string(version);
    case Kind::kTime: return "time " + FormatTimestamp(time_ns);
  }
  return "?";
}

}  // namespace annal
