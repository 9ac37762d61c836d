// Router: kato's HTTP/1.1 reverse proxy. It routes each request by its Host
// header through a RouteTable to one of the host's backends, round-robin.
//
// Data path: every I/O thread owns an io_context, its connections and its
// pool of idle upstream connections, so threads share nothing but the route
// table (read lock-free) and the listeners. Client connections are kept
// alive; upstream connections are kept alive and reused per thread and
// backend. A backend that refuses a connection (or does not accept within
// connect_timeout) is marked failed and the request goes to another backend
// of the host, each at most once, before the client gets 502. An idempotent
// request whose backend closes the connection before its whole response has
// arrived (the instance died) is retried the same way: responses are
// buffered, so the client has seen nothing of the failed attempt. The backend
// sees X-Forwarded-For (appended), X-Forwarded-Proto and X-Forwarded-Host.
// Backends flagged `tls` (the controllers' API) are reached over TLS: their
// certificate must chain to upstream_tls.ca_pem, and the router shows its own
// (upstream_tls.cert_pem); other headers, Authorization included, pass as they are.
// WebSocket upgrades are tunnelled byte for byte after the backend's 101.
// Request and response bodies are buffered up to their limits (413 / 502).
// Unknown host: 404; known host with no backend: 503; malformed request: 400
// (431 for an oversized header) and the connection is closed.
//
// A separate health listener answers GET /health with 200 "ok", or 503
// "draining" after SetDraining(true), so that load balancers stop sending.
//
// Thread-safety: Start/Stop from one controlling thread; SetDraining and the
// accessors from any thread. The RouteTable must outlive the Router.
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

  size_t max_request_body = 64ull << 20;
  size_t max_response_body = 256ull << 20;
  uint32_t max_header = 16 << 10;
  std::chrono::milliseconds connect_timeout{1000};
  std::chrono::milliseconds client_idle_timeout{60'000};  // between requests on a connection
  std::chrono::milliseconds request_timeout{60'000};      // to read one request, write one response
  std::chrono::milliseconds upstream_timeout{60'000};     // backend's whole response
  std::chrono::milliseconds tunnel_idle_timeout{3'600'000};  // WebSocket with no traffic
  std::chrono::milliseconds upstream_idle_timeout{30'000};   // pooled idle upstream connection
  size_t max_idle_upstreams = 64;                            // per thread and backend
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
