// libFuzzer target (clang only; built by tests/fuzz/CMakeLists.txt): the bytes
// a TLS peer can send after the handshake, through the server's request parse,
// and the join token parser, which reads text a user pasted. Neither may crash,
// hang or leak, and what they accept must respect their own contracts.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/http_parse.h"
#include "common/pki.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view raw(reinterpret_cast<const char*>(data), size);

  int status = 0;
  auto request = kato::ParseHttpRequest(raw, &status);
  if (request.ok()) {
    if (request->body.size() > kato::kMaxRequestBodyBytes || request->method.empty()) {
      __builtin_trap();
    }
  } else if (status != 400 && status != 413 && status != 431) {
    __builtin_trap();
  }

  auto token = kato::ParseJoinToken(std::string(raw));
  if (token.ok()) {
    // The canonical form parses back to itself.
    auto again = kato::ParseJoinToken(token->str());
    if (!again.ok() || again->str() != token->str()) __builtin_trap();
  }
  return 0;
}
