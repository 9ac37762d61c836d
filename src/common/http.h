// Minimal HTTPS (HTTP/1.1 over TLS) server and client for node-to-node traffic.
//
// Built on Boost.Beast/Asio + OpenSSL; this header keeps them out of includers.
// Every request has a deadline: the client never waits longer than its timeout,
// the server drops connections that send nothing for 10 s. Malformed requests
// get 400 and the connection is closed. Bodies over 1 MiB get 413, headers
// over 8 KiB get 431. Connections are kept alive between requests when the
// client asks for it; HttpsCall sends one request per connection.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "common/result.h"

namespace kato {

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string target;  // path with query, e.g. "/v1/watch?after=3"
  std::string body;
  std::map<std::string, std::string> headers;  // lowercase names
  std::string peer_cn;  // CommonName of the verified client certificate; empty without one
  std::string peer_ip;
};

struct HttpResponse {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
  std::string peer_ca_pem;  // client side, pinned mode: the CA the server chained to
};

// Called once per request, possibly concurrently from several I/O threads;
// must call `respond` once, from any thread, possibly later (long polls).
// Further calls are ignored; dropping every copy of `respond` without calling
// it answers 500. After Stop(), `respond` does nothing. Handlers must not block
// for long: the server runs them on its I/O threads.
using Responder = std::function<void(HttpResponse)>;
using HttpHandler = std::function<void(const HttpRequest&, Responder)>;

struct ServerTls {
  std::string ca_pem;    // trust anchor for client certificates
  std::string cert_pem;  // server certificate
  std::string key_pem;
  std::string chain_pem;  // extra certificates sent after cert_pem (the CA, for pinning)
};

class HttpsServer {
 public:
  // Client certificates are requested and verified against tls.ca_pem when
  // presented (one that does not verify fails the TLS handshake); requests
  // without one have an empty peer_cn (the handler decides).
  HttpsServer(ServerTls tls, HttpHandler handler, int threads = 2);
  ~HttpsServer();
  HttpsServer(const HttpsServer&) = delete;
  HttpsServer& operator=(const HttpsServer&) = delete;

  // Binds ip:port (port 0: any) and starts serving on background threads.
  Status Start(const std::string& ip, int port);
  int port() const;
  // Closes the listener and every connection (outstanding long polls too) and
  // joins the threads. Idempotent; not from a handler. The destructor calls it.
  void Stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct ClientTls {
  std::string ca_pem;    // verify the server against this CA (when pin is empty)
  std::string cert_pem;  // optional client certificate
  std::string key_pem;
  // Pinned mode (join): accept the server only if the chain it presents
  // contains a certificate whose SHA-256 is this, and its leaf verifies against
  // that certificate. ca_pem is then ignored; response.peer_ca_pem is set.
  std::string pin_ca_sha256;
};

// One request on a new connection. Errors: cannot connect / TLS failure /
// timeout, each naming host:port. A non-2xx status is not an error.
Result<HttpResponse> HttpsCall(const ClientTls& tls, const std::string& host, int port,
                               const std::string& method, const std::string& target,
                               const std::string& body, std::chrono::milliseconds timeout);

}  // namespace kato
