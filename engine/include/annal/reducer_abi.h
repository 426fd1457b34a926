/* The C ABI of annal's custom reducers, for shared libraries that annald
 * loads (`[reducers] category = "/path/to/libreducer.so"`) or that an
 * embedder loads with annal::LoadReducerLibrary.
 *
 * A library exports one function:
 *
 *   const annal_reducer_v1* annal_reducer_v1_get(void);
 *
 * returning a pointer to a static description that stays valid while the
 * library is loaded. annal calls `initial` once per load and `apply` once per
 * event, possibly from several threads at once: both must be reentrant.
 * Neither may keep the pointers it is given past the call. They hand their
 * result back through `out->set(out, bytes, len)`, which copies the bytes;
 * calling it once is required on success.
 *
 * Both return 0 on success. A failing `apply` fails the load; it may first
 * write a NUL-terminated reason into `err` (at most `err_cap` bytes), which
 * annal includes in the error it reports. A failing `initial` counts as an
 * empty initial state.
 *
 * Build one with: g++ -shared -fPIC -I<annal>/engine/include -o libr.so r.cc
 * (tests/plugins/counter_reducer.cc is a complete example).
 */
#ifndef ANNAL_REDUCER_ABI_H_
#define ANNAL_REDUCER_ABI_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ANNAL_REDUCER_ABI_VERSION 1u

typedef struct annal_event_view {
  const char* stream;
  size_t stream_len;
  uint64_t version;
  uint64_t position;
  int64_t recorded_at_ns;
  const uint8_t* id; /* 16 bytes */
  const char* type;
  size_t type_len;
  const char* metadata;
  size_t metadata_len;
  const char* payload;
  size_t payload_len;
} annal_event_view;

typedef struct annal_state_out {
  void (*set)(struct annal_state_out* self, const char* data, size_t len);
  void* opaque; /* annal's; do not touch */
} annal_state_out;

typedef struct annal_reducer_v1 {
  uint32_t abi_version; /* ANNAL_REDUCER_ABI_VERSION */
  const char* name;     /* 1..255 bytes, NUL-terminated */
  uint32_t schema_version;
  int (*initial)(annal_state_out* out, char* err, size_t err_cap);
  int (*apply)(const char* state, size_t state_len, const annal_event_view* event,
               annal_state_out* out, char* err, size_t err_cap);
} annal_reducer_v1;

typedef const annal_reducer_v1* (*annal_reducer_v1_get_fn)(void);

#ifdef __cplusplus
}
#endif

#endif /* ANNAL_REDUCER_ABI_H_ */
