// The certificates the router serves on its TLS port (internal to
// src/router/proxy.cc): one TLS context per certificate, [0] the default, and
// an SNI callback on [0] that moves a handshake to the first context whose
// certificate covers the name. Contexts are TLS 1.2+, with a server-side
// session cache (flushed by the caller: no automatic clear on the handshake
// path), tickets, and no buffers held by idle connections. A set is
// immutable once made; connections keep the set they started with alive.
#pragma once

#include <boost/asio/ssl/context.hpp>
#include <memory>
#include <vector>

#include "common/pki.h"
#include "common/result.h"
#include "router/proxy.h"

namespace kato {
namespace router_detail {

struct CertSet {
  std::vector<std::unique_ptr<boost::asio::ssl::context>> contexts;
  std::vector<CertInfo> infos;
};

// Errors name the certificate that does not load (or whose key is not its own).
Result<std::shared_ptr<CertSet>> MakeCertSet(const std::vector<ServedCert>& certs);

}  // namespace router_detail
}  // namespace kato
