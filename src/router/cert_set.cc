#include "router/cert_set.h"

#include <openssl/ssl.h>

#include <boost/asio/buffer.hpp>
#include <string>

namespace kato {
namespace router_detail {
namespace {

namespace net = boost::asio;
namespace ssl = net::ssl;
using ErrorCode = boost::system::error_code;

int PickCertBySni(SSL* ssl, int*, void* arg) {
  const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (!name) return SSL_TLSEXT_ERR_OK;
  auto* set = static_cast<CertSet*>(arg);
  for (size_t i = 0; i < set->infos.size(); ++i) {
    if (!CertCoversHost(set->infos[i], name)) continue;
    if (i > 0) SSL_set_SSL_CTX(ssl, set->contexts[i]->native_handle());
    break;
  }
  return SSL_TLSEXT_ERR_OK;
}

}  // namespace

Result<std::shared_ptr<CertSet>> MakeCertSet(const std::vector<ServedCert>& certs) {
  if (certs.empty()) return Err("router: no TLS certificate to serve");
  auto set = std::make_shared<CertSet>();
  static const unsigned char kSessionContext[] = "kato-router";
  for (const auto& c : certs) {
    auto info = InspectCert(c.cert_pem);
    if (!info) return Err("router: a TLS certificate cannot be read: " + info.error());
    auto ctx = std::make_unique<ssl::context>(ssl::context::tls_server);
    ErrorCode ec;
    ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                         ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                         ssl::context::no_tlsv1_1 | ssl::context::single_dh_use,
                     ec);
    ctx->use_certificate_chain(net::buffer(c.cert_pem), ec);
    if (ec) return Err("router: the TLS certificate is not valid PEM: " + ec.message());
    ctx->use_private_key(net::buffer(c.key_pem), ssl::context::pem, ec);
    if (ec) return Err("router: the TLS key is not a valid PEM private key: " + ec.message());
    SSL_CTX* native = ctx->native_handle();
    if (SSL_CTX_check_private_key(native) != 1)
      return Err("router: the TLS key is not the certificate's (" + info->fingerprint + ")");
    // Resumption: a server-side session cache (TLS 1.2 ids) and tickets (default on).
    // OpenSSL would walk the whole cache for expired sessions every 255
    // handshakes, on the handshake's path: the sweep does it instead (FlushSessions).
    SSL_CTX_set_session_cache_mode(native, SSL_SESS_CACHE_SERVER | SSL_SESS_CACHE_NO_AUTO_CLEAR);
    SSL_CTX_set_session_id_context(native, kSessionContext, sizeof kSessionContext - 1);
    // An idle TLS connection keeps no read/write buffers.
    SSL_CTX_set_mode(native, SSL_MODE_RELEASE_BUFFERS);
    set->contexts.push_back(std::move(ctx));
    set->infos.push_back(std::move(*info));
  }
  SSL_CTX* first = set->contexts[0]->native_handle();
  SSL_CTX_set_tlsext_servername_callback(first, PickCertBySni);
  SSL_CTX_set_tlsext_servername_arg(first, set.get());
  return set;
}

}  // namespace router_detail
}  // namespace kato
