// Minimal HTTP/1.1 server and client, plain or over TLS (HTTPS), for
// node-to-node traffic and the cluster's REST APIs.
//
// Built on Boost.Beast/Asio + OpenSSL; this header keeps them out of includers.
// Every request has a deadline: the client never waits longer than its timeout;
// the server drops connections that send nothing for 10 s, and answers 408
// (and closes) when a request is not read within 30 s plus one second per
// 64 KiB of body received so far: a large upload may take long as long as it
// keeps a steady rate, a body dripped one byte at a time is cut off (see
// ReadDeadlines). A server may refuse a request from its header alone (see
// SetHeaderCheck), before its body is read. Malformed requests get 400 and the
// connection is closed. Bodies over the server's limit (1 MiB unless raised)
// get 413, headers over 8 KiB get 431. Connections are kept alive between
// requests when the client asks for it. HttpsCall keeps its connections for
// the next call to the same server (and resumes TLS sessions for new ones):
// nodes talk over long-lived connections; HttpCall sends one request per
// connection.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <optional>
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
  // Client side: every response header, lowercase names, repeated ones joined
  // with ", ". Server side: extra headers to send; Content-Length,
  // Transfer-Encoding and Connection are the server's own and are ignored here,
  // a Content-Type here wins over content_type.
  std::map<std::string, std::string> headers;
};

// Called once per request, possibly concurrently from several I/O threads;
// must call `respond` once, from any thread, possibly later (long polls).
// Further calls are ignored; dropping every copy of `respond` without calling
// it answers 500. After Stop(), `respond` does nothing. Handlers must not block
// for long: the server runs them on its I/O threads.
using Responder = std::function<void(HttpResponse)>;
using HttpHandler = std::function<void(const HttpRequest&, Responder)>;

// Decides on a request from its header alone, before its body is read: a
// response returned is sent at once and the connection closed without reading
// the body (a request without credentials never gets to upload 64 MiB);
// nullopt lets the request through to the handler. `head` has every field of
// the request but its body. Runs on the server's I/O threads: must be quick.
using HeaderCheck = std::function<std::optional<HttpResponse>(const HttpRequest& head)>;

// How long the server waits while reading one request.
struct ReadDeadlines {
  // No byte for this long (between requests too): the connection is dropped
  // without an answer.
  std::chrono::milliseconds idle{10000};
  // The request (header and body) must be read within `request`, plus one
  // second for every `min_body_rate` bytes of body received so far; otherwise
  // it is answered 408 and the connection closed.
  std::chrono::milliseconds request{30000};
  size_t min_body_rate = 64 * 1024;  // bytes per second
};

struct ServerTls {
  std::string ca_pem;    // trust anchor for client certificates
  std::string cert_pem;  // server certificate
  std::string key_pem;
  std::string chain_pem;  // extra certificates sent after cert_pem (the CA, for pinning)
};

// Serves HTTP (plain) or HTTPS, chosen at construction. Thread-safe apart from
// the ordering rules below.
class HttpServer {
 public:
  // HTTPS. Client certificates are requested and verified against tls.ca_pem
  // when presented (one that does not verify fails the TLS handshake); requests
  // without one have an empty peer_cn (the handler decides).
  HttpServer(ServerTls tls, HttpHandler handler, int threads = 2);
  // Plain HTTP, for APIs served behind a TLS-terminating router or on a
  // trusted network: peer_cn is always empty, the handler authenticates.
  explicit HttpServer(HttpHandler handler, int threads = 2);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Largest request body accepted (default 1 MiB); larger ones get 413. Bodies
  // are held in memory. Call before Start().
  void SetBodyLimit(size_t bytes);
  // See HeaderCheck; none by default. Call before Start().
  void SetHeaderCheck(HeaderCheck check);
  // See ReadDeadlines (the defaults hold otherwise). Call before Start().
  void SetReadDeadlines(const ReadDeadlines& deadlines);
  // Connections accepted so far.
  uint64_t connections_accepted() const;
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

// The name from before plain HTTP existed; the same class.
using HttpsServer = HttpServer;

inline constexpr char kFirstUse[] = "*";

struct ClientTls {
  std::string ca_pem;    // verify the server against this CA (when pin is empty)
  std::string cert_pem;  // optional client certificate
  std::string key_pem;
  // Pinned mode (join): accept the server only if the chain it presents
  // contains a certificate whose SHA-256 is this, and its leaf verifies against
  // that certificate. ca_pem is then ignored; response.peer_ca_pem is set.
  // kFirstUse: accept the top of the chain the server presents (trust on
  // first use); peer_ca_pem tells the caller which CA that was.
  std::string pin_ca_sha256;
  // Not empty: the server's certificate must also name this host (and it is
  // sent as SNI). Cluster peers are named by the CA alone and leave it empty.
  std::string verify_host;
  // Not empty: connect from this local address (kato-sim's nodes, each on its own).
  std::string local_ip;
};

// How many idle connections HttpsCall keeps in this process (256 unless set;
// kato-sim holds one per simulated node). Call before the first call.
void SetHttpsIdleConnections(size_t total);
// Closes every idle connection HttpsCall keeps (the TLS sessions stay).
void DropIdleHttpsConnections();

// What HttpsCall did in this process so far.
struct HttpsClientStats {
  uint64_t calls = 0;        // requests sent
  uint64_t connections = 0;  // new connections (handshakes) among them
  uint64_t resumed = 0;      // new connections that resumed an earlier TLS session
};
HttpsClientStats GetHttpsClientStats();

// One request, on a kept connection to the same server when there is one
// (unless pinned: join and first use get a connection of their own), else on
// a new one. A kept connection the server closed before answering is replaced
// by a new one for the same request, once. `headers` are sent as given (after Host,
// User-Agent and, with a body, Content-Type: application/json, which they can
// replace); Content-Length and Connection are set by the call. Errors: bad
// arguments / cannot connect / TLS failure / timeout, each naming host:port. A
// non-2xx status is not an error.
Result<HttpResponse> HttpsCall(const ClientTls& tls, const std::string& host, int port,
                               const std::string& method, const std::string& target,
                               const std::string& body, std::chrono::milliseconds timeout,
                               const std::map<std::string, std::string>& headers = {});

// The same without TLS.
Result<HttpResponse> HttpCall(const std::string& host, int port, const std::string& method,
                              const std::string& target, const std::string& body,
                              std::chrono::milliseconds timeout,
                              const std::map<std::string, std::string>& headers = {});

}  // namespace kato
