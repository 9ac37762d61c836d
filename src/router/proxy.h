// Router: kato's HTTP/1.1 reverse proxy. It routes each request by its Host
// header through a RouteTable to one of the host's backends, round-robin.
//
// Data path: every I/O thread owns an io_context, its connections and its
// pool of idle upstream connections, so threads share nothing but the route
// table (read lock-free), the listeners, the certificates and the access log.
// Client connections are kept alive; upstream connections are kept alive and
// reused per thread and backend (a pooled one the backend closed meanwhile is
// noticed before reuse).
//
// Streaming: bodies are relayed both ways through bounded buffers (64 KiB per
// direction and connection), so memory does not grow with a body's size and a
// slow reader slows its writer (backpressure). A response reaches the client
// as the backend writes it (server-sent events, chunked and long-poll
// responses); every deadline on an exchange is reset by traffic. Request
// bodies of up to kReplayLimit are read before they are sent, so that such a
// request can be sent again; larger ones stream as they arrive. Responses are
// framed for the client by the router: Content-Length passed through, else
// chunked (close-delimited for HTTP/1.0 clients).
//
// Retries: while nothing has been sent to the client, a request goes to
// another backend of its host (each at most once) when connecting fails (the
// backend is marked failed), and an idempotent request with its whole body in
// hand also when the backend fails before its response header. After the
// first byte of a response, a backend failure closes the client connection
// (a chunked response then lacks its last chunk: never a fake complete one).
// A non-idempotent request is never sent to a second backend.
//
// HTTP/1.1: pipelined requests are answered in order; 1xx responses are
// passed on as interim answers (100 Continue is the router's own: it is sent
// when the client waits for it and a backend is connected); 101 only for
// WebSocket upgrades, which are then tunnelled byte for byte. Refused with
// the connection closed: malformed requests (400), a Transfer-Encoding other
// than chunked (501, or 400 when chunked is not last), several Host headers
// or none (400), a request line over max_request_line (414), a header over
// max_header bytes or max_header_fields fields (431), a body over
// max_request_body (413). Unknown host: 404; known host with no backend: 503;
// no backend reachable: 502; a backend silent for upstream_timeout: 504.
//
// Protection: a request header must arrive within header_timeout of its first
// byte (408), an idle keep-alive connection is closed after keepalive_timeout,
// and at most max_connections client connections are open: one more gets a
// 503 with Connection: close.
//
// The backend sees X-Forwarded-For (appended), X-Forwarded-Proto and
// X-Forwarded-Host. Backends flagged `tls` (the controllers' API) are reached
// over TLS: their certificate must chain to upstream_tls.ca_pem, and the
// router shows its own (upstream_tls.cert_pem).
//
// TLS (tls_port): the certificates given to SetCertificates (initially
// options.tls); the client's SNI picks the first that covers the name, the
// first is the default. TLS 1.2+, session resumption (tickets and a session
// cache).
//
// A separate health listener answers GET /health with 200 "ok", or 503
// "draining" after SetDraining(true), so that load balancers stop sending,
// and GET /metrics with the Prometheus text of RouterMetrics.
//
// Thread-safety: Start/Stop from one controlling thread; SetDraining,
// SetCertificates and the accessors from any thread. The RouteTable must
// outlive the Router.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/http.h"
#include "common/result.h"
#include "router/route_table.h"

namespace kato {

struct RouterOptions {
  std::string ip = "127.0.0.1";
  int port = 0;  // 0: any free port (see Router::port())
  int threads = 1;
  std::optional<ServerTls> tls;  // serve HTTPS too (only cert, key and chain are used)
  // For backends with `tls`: the CA their certificates must chain to, and the
  // router's client certificate. Unset: such backends cannot be reached (502).
  std::optional<ClientTls> upstream_tls;
  int tls_port = 0;
  std::optional<int> health_port;  // serve GET /health on ip:health_port (0: any)
  std::string access_log;          // path; empty: no access log
  uint64_t access_log_max_bytes = 64ull << 20;

  uint64_t max_request_body = 0;  // 0: no limit (bodies stream)
  uint32_t max_header = 16 << 10;
  uint32_t max_request_line = 8 << 10;
  uint32_t max_header_fields = 100;
  // 0: derived from RLIMIT_NOFILE (three quarters of it: proxied requests
  // hold an upstream descriptor too).
  int max_connections = 0;
  std::chrono::milliseconds connect_timeout{1000};
  std::chrono::milliseconds header_timeout{10'000};     // first byte to end of a request header
  std::chrono::milliseconds keepalive_timeout{60'000};  // idle between requests
  // Silence during an exchange (waiting for the response header, or no byte
  // moving either way): 504 before the response began, else the connection closes.
  std::chrono::milliseconds upstream_timeout{60'000};
  std::chrono::milliseconds tunnel_idle_timeout{3'600'000};  // WebSocket with no traffic
  // A pooled idle upstream connection is closed after this: below the
  // keep-alive timeouts of common app servers (Node.js 5 s), so that the
  // router, not the app, ends idle connections; and a pool grown in a burst
  // shrinks back soon (idle upstream sockets by the thousand cost the data
  // path measurably: bench/README.md, "Router").
  std::chrono::milliseconds upstream_idle_timeout{4'000};
  // Idle upstream connections kept for reuse: per thread and backend, and in
  // all (0: a quarter of max_connections, shared among the threads). A pool
  // smaller than the concurrency means a new upstream connection per request.
  size_t max_idle_upstreams = 1024;
  size_t max_idle_upstreams_total = 0;
};

// A certificate to serve on the TLS port: the leaf followed by its chain, and
// the leaf's private key.
struct ServedCert {
  std::string cert_pem;
  std::string key_pem;
};

class Router {
 public:
  Router(RouterOptions options, const RouteTable& routes);
  ~Router();  // Stop()
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  // Binds the listeners and starts the I/O threads. Errors name the address
  // that could not be bound or the TLS material that is wrong.
  Status Start();
  // Closes listeners and every connection, joins the threads. Idempotent.
  void Stop();
  // Graceful stop: /health fails at once; after `notice` (for load balancers
  // to notice) no new connection is accepted, idle keep-alive connections are
  // closed, requests in flight finish (answered with Connection: close); then,
  // when none is left or `limit` has passed, Stop().
  void Drain(std::chrono::milliseconds notice, std::chrono::milliseconds limit);

  int port() const;
  int tls_port() const;
  int health_port() const;
  int max_connections() const;
  // Replaces what the TLS port serves (see the header comment) for
  // handshakes from now on. Errors name the certificate that does not load;
  // nothing changes then.
  Status SetCertificates(const std::vector<ServedCert>& certs);
  // The Prometheus text served on /metrics.
  std::string Metrics() const;
  void SetDraining(bool draining);
  // Peers whose X-Forwarded-Proto and X-Forwarded-Host are passed on (the
  // cluster's load balancers); from anyone else they are replaced. Applies
  // to connections accepted afterwards.
  void SetTrustedProxies(const std::vector<std::string>& ips);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kato
