// Internal to kato_common: the HTTP/1.1 request parse that HttpsServer applies
// to the bytes it reads, exposed without TLS so that tests and the fuzz target
// (http_fuzz.cc) exercise the same parser configuration and request mapping.
// Not for use outside src/common/. Thread-safe (no shared state).
#pragma once

#include <cstddef>
#include <string_view>

#include "common/http.h"

namespace kato {

inline constexpr size_t kMaxRequestHeaderBytes = 8 * 1024;
inline constexpr size_t kMaxRequestBodyBytes = 1024 * 1024;

// Parses one complete request from `raw` (bytes after it are ignored). On
// failure the error says what is wrong and, when `reject_status` is given, it
// is set to the status the server answers with: 400 (malformed or incomplete),
// 413 (body over kMaxRequestBodyBytes) or 431 (header over kMaxRequestHeaderBytes).
// peer_cn and peer_ip are left empty.
Result<HttpRequest> ParseHttpRequest(std::string_view raw, int* reject_status = nullptr);

}  // namespace kato
