// A reducer in a shared library, for the tests of annal/reducer_abi.h: the
// state is "<events>:<sum of payload bytes>" in decimal; an event of type
// "Poison" fails it.
#include <cstdio>
#include <cstring>

#include "annal/reducer_abi.h"

namespace {

int Initial(annal_state_out* out, char*, size_t) {
  out->set(out, "0:0", 3);
  return 0;
}

int Apply(const char* state, size_t state_len, const annal_event_view* e, annal_state_out* out, char* err,
          size_t err_cap) {
  if (e->type_len == 6 && std::memcmp(e->type, "Poison", 6) == 0) {
    std::snprintf(err, err_cap, "poisoned at version %llu", static_cast<unsigned long long>(e->version));
    return 7;
  }
  char in[64] = {};
  std::memcpy(in, state, state_len < 63 ? state_len : 63);
  unsigned long long events = 0, bytes = 0;
  if (std::sscanf(in, "%llu:%llu", &events, &bytes) != 2) {
    std::snprintf(err, err_cap, "bad state");
    return 1;
  }
  char next[64];
  int n = std::snprintf(next, sizeof next, "%llu:%llu", events + 1, bytes + e->payload_len);
  out->set(out, next, static_cast<size_t>(n));
  return 0;
}

const annal_reducer_v1 kReducer = {ANNAL_REDUCER_ABI_VERSION, "test-counter", 3, Initial, Apply};

}  // namespace

extern "C" __attribute__((visibility("default"))) const annal_reducer_v1* annal_reducer_v1_get(void) {
  return &kReducer;
}
