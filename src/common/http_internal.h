// What the HTTP server (http.cc) and client (http_client.cc) share: Beast's
// names, deadlines, header checks and TLS setup. Internal to src/common.
#pragma once

#include <openssl/x509.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/result.h"

namespace kato::http_internal {

namespace beast = boost::beast;
namespace net = boost::asio;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;

// A peer gets this long for the TLS handshake, for writing each response, and
// (client side) for reading each response: enough for any real client, short
// enough that idle or stuck connections do not pile up. Reading requests has
// its own deadlines (ReadDeadlines).
constexpr auto kIoDeadline = std::chrono::seconds(10);
constexpr auto kCloseDeadline = std::chrono::seconds(2);
constexpr uint64_t kMaxResponseBodyBytes = 64ull * 1024 * 1024;
constexpr uint32_t kMaxResponseHeaderBytes = 64 * 1024;

// Header names and values go on the wire as given: refuse what would let them
// end the header line (CR, LF) or is not a token (RFC 9110 5.1, 5.5).
bool IsHeaderName(std::string_view name);
bool IsHeaderValue(std::string_view value);
// Framing headers that the server and the client compute themselves.
bool IsFramingHeader(beast::string_view name);

std::string CommonNameOf(X509* cert);
std::string PemOf(X509* cert);
std::string Sha256Of(X509* cert);
// TLS 1.2 or later, no passphrase prompts.
Status CommonTlsSetup(ssl::context& ctx, const std::string& role);
Status UseCertAndKey(ssl::context& ctx, const std::string& cert_pem, const std::string& chain_pem,
                     const std::string& key_pem, const std::string& what);

}  // namespace kato::http_internal
