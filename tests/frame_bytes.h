// The bytes of a wire frame header written by hand, so that tests can make
// every field wrong on purpose (the codec's own encoder would refuse to).
// Layout: docs/protocol.md, "Frames".
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

#include "protocol.h"

namespace annal::protocol {

inline std::string Header(uint32_t length, uint8_t op, uint8_t flags, uint16_t reserved,
                          uint32_t request_id) {
  std::string h(kFrameHeaderBytes, '\0');
  std::memcpy(h.data(), &length, 4);
  h[4] = static_cast<char>(op);
  h[5] = static_cast<char>(flags);
  std::memcpy(h.data() + 6, &reserved, 2);
  std::memcpy(h.data() + 8, &request_id, 4);
  return h;
}

}  // namespace annal::protocol
