// The HTTP client (HttpCall, HttpsCall) and the TLS helpers it shares with
// the server (http_internal.h).
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cctype>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <future>
#include <thread>

#include <poll.h>

#include "common/http.h"
#include "common/http_internal.h"
#include "common/idle_pool.h"
#include "common/log.h"
#include "common/pki.h"

namespace kato {
namespace http_internal {

bool IsHeaderName(std::string_view name) {
  static constexpr std::string_view kPunct = "!#$%&'*+-.^_`|~";
  return !name.empty() && std::all_of(name.begin(), name.end(), [](unsigned char c) {
    return std::isalnum(c) || kPunct.find(static_cast<char>(c)) != std::string_view::npos;
  });
}

bool IsHeaderValue(std::string_view value) {
  return std::none_of(value.begin(), value.end(),
                      [](char c) { return c == '\r' || c == '\n' || c == '\0'; });
}

bool IsFramingHeader(beast::string_view name) {
  return beast::iequals(name, "content-length") || beast::iequals(name, "transfer-encoding") ||
         beast::iequals(name, "connection");
}


std::string CommonNameOf(X509* cert) {
  const X509_NAME* name = X509_get_subject_name(cert);
  int idx = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
  if (idx < 0) return "";
  unsigned char* utf8 = nullptr;
  int len = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx)));
  if (len < 0) {
    ERR_clear_error();
    return "";
  }
  std::string cn(reinterpret_cast<char*>(utf8), static_cast<size_t>(len));
  OPENSSL_free(utf8);
  return cn;
}

std::string PemOf(X509* cert) {
  BIO* bio = BIO_new(BIO_s_mem());
  std::string out;
  if (bio && PEM_write_bio_X509(bio, cert) == 1) {
    char* data = nullptr;
    long len = BIO_get_mem_data(bio, &data);
    out.assign(data, static_cast<size_t>(len));
  }
  BIO_free(bio);
  return out;
}

std::string Sha256Of(X509* cert) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (X509_digest(cert, EVP_sha256(), md, &len) != 1) return "";
  static const char kDigits[] = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < len; ++i) {
    hex += kDigits[md[i] >> 4];
    hex += kDigits[md[i] & 0xf];
  }
  return hex;
}

namespace {
// Never prompts on a terminal for a passphrase: kato keys are unencrypted.
int NoPassphrase(char*, int, int, void*) { return 0; }
}  // namespace

Status CommonTlsSetup(ssl::context& ctx, const std::string& role) {
  beast::error_code ec;
  ctx.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                      ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1,
                  ec);
  if (ec || SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_2_VERSION) != 1) {
    return Err("cannot configure TLS for the " + role);
  }
  SSL_CTX_set_default_passwd_cb(ctx.native_handle(), NoPassphrase);
  return Ok();
}

Status UseCertAndKey(ssl::context& ctx, const std::string& cert_pem, const std::string& chain_pem,
                     const std::string& key_pem, const std::string& what) {
  beast::error_code ec;
  std::string chain = cert_pem;
  if (!chain.empty() && chain.back() != '\n') chain += '\n';
  chain += chain_pem;
  ctx.use_certificate_chain(net::buffer(chain), ec);
  if (ec) return Err(what + " certificate is not valid PEM: " + ec.message());
  ctx.use_private_key(net::buffer(key_pem), ssl::context::pem, ec);
  if (ec && ec.category() == net::error::get_ssl_category() &&
      ERR_GET_REASON(static_cast<unsigned long>(ec.value())) == X509_R_KEY_VALUES_MISMATCH) {
    return Err(what + " key does not belong to its certificate");
  }
  if (ec) return Err(what + " key is not a valid PEM private key: " + ec.message());
  if (SSL_CTX_check_private_key(ctx.native_handle()) != 1) {
    ERR_clear_error();
    return Err(what + " key does not belong to its certificate");
  }
  return Ok();
}

}  // namespace http_internal

namespace {
using namespace http_internal;  // NOLINT
namespace http = beast::http;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;
}  // namespace

// --- Client. ---

namespace {

// Pinned mode: replaces OpenSSL's chain verification during the handshake, so
// that the request (which carries the join secret) is never written to a
// server that failed it.
struct PinCheck {
  std::string pin;        // lowercase hex SHA-256, or "*": the top of the chain presented
  std::string host;       // not empty: the leaf must name it
  bool mismatch = false;  // no certificate in the chain has that fingerprint
  std::string error;      // the chain does not verify against the pinned certificate
  std::string ca_pem;     // the pinned certificate, once verified
};

int VerifyPinned(X509_STORE_CTX* store_ctx, void* arg) {
  auto* check = static_cast<PinCheck*>(arg);
  X509* leaf = X509_STORE_CTX_get0_cert(store_ctx);
  STACK_OF(X509)* chain = X509_STORE_CTX_get0_untrusted(store_ctx);
  X509* pinned = nullptr;
  if (check->pin == kFirstUse) {
    // Trust on first use: the last certificate the server sent (its CA, for a
    // kato server); the caller shows its fingerprint before relying on it.
    int n = chain ? sk_X509_num(chain) : 0;
    pinned = n > 0 ? sk_X509_value(chain, n - 1) : leaf;
  }
  if (leaf && Sha256Of(leaf) == check->pin) pinned = leaf;
  for (int i = 0; !pinned && chain && i < sk_X509_num(chain); ++i) {
    X509* c = sk_X509_value(chain, i);
    if (Sha256Of(c) == check->pin) pinned = c;
  }
  if (!leaf || !pinned) {
    check->mismatch = true;
    X509_STORE_CTX_set_error(store_ctx, X509_V_ERR_CERT_UNTRUSTED);
    return 0;
  }
  X509_STORE* store = X509_STORE_new();
  X509_STORE_CTX* verify = X509_STORE_CTX_new();
  int ok = store && verify && X509_STORE_add_cert(store, pinned) == 1 &&
           X509_STORE_CTX_init(verify, store, leaf, chain) == 1 &&
           X509_STORE_CTX_set_purpose(verify, X509_PURPOSE_SSL_SERVER) == 1 &&
           X509_verify_cert(verify) == 1;
  if (ok && !check->host.empty() &&
      X509_check_host(leaf, check->host.data(), check->host.size(), 0, nullptr) != 1) {
    ok = 0;
    check->error = "its certificate does not name " + check->host;
    X509_STORE_CTX_set_error(store_ctx, X509_V_ERR_HOSTNAME_MISMATCH);
  } else if (ok) {
    check->ca_pem = PemOf(pinned);
  } else {
    int err = verify ? X509_STORE_CTX_get_error(verify) : X509_V_ERR_UNSPECIFIED;
    check->error = X509_verify_cert_error_string(err);
    X509_STORE_CTX_set_error(store_ctx, err);
  }
  X509_STORE_CTX_free(verify);
  X509_STORE_free(store);
  ERR_clear_error();
  return ok ? 1 : 0;
}

bool IsTlsError(const beast::error_code& ec) {
  return ec.category() == net::error::get_ssl_category() ||
         ec.category() == net::ssl::error::get_stream_category();
}

std::string Describe(const beast::error_code& ec) {
  // The reason is enough; asio's "(SSL routines)" suffix is noise to a user.
  std::string m = ec.message();
  size_t paren = m.rfind(" (SSL routines)");
  if (paren != std::string::npos) m.erase(paren);
  return m;
}

// A client context with the client certificate and, unless pinned, the CA.
Result<std::shared_ptr<ssl::context>> NewClientContext(const ClientTls& tls) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  KATO_TRY(CommonTlsSetup(*ctx, "HTTPS client"));
  if (!tls.cert_pem.empty() || !tls.key_pem.empty()) {
    KATO_TRY(UseCertAndKey(*ctx, tls.cert_pem, "", tls.key_pem, "the client"));
  }
  if (tls.pin_ca_sha256.empty()) {
    beast::error_code ec;
    ctx->add_certificate_authority(net::buffer(tls.ca_pem), ec);
    if (ec) return Err("the cluster CA certificate is not valid PEM: " + ec.message());
  }
  // No hostname check: peers are identified by chaining to the cluster CA.
  ctx->set_verify_mode(ssl::verify_peer);
  return ctx;
}

// How many idle connections the pool keeps (SetHttpsIdleConnections).
std::atomic<size_t> idle_total{256};

// Building a context (parsing PEM keys, loading the CA) costs more CPU than the
// rest of a call, and a node keeps using the same certificates: contexts are
// cached by their inputs. A configured SSL_CTX is safe to share between threads.
Result<std::shared_ptr<ssl::context>> CachedClientContext(const ClientTls& tls) {
  static std::mutex mu;
  static std::map<std::string, std::shared_ptr<ssl::context>> cache;  // guarded by mu
  std::string key = tls.ca_pem + '\0' + tls.cert_pem + '\0' + tls.key_pem;
  {
    std::lock_guard lock(mu);
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
  }
  auto made = NewClientContext(tls);
  if (!made) return made;
  std::lock_guard lock(mu);
  // Certificates changed (re-attach): the old ones go. A process that speaks
  // for many nodes (kato-sim) keeps one per node, as many as its kept connections.
  if (cache.size() >= std::max<size_t>(8, idle_total.load() / 2)) cache.clear();
  cache.emplace(key, *made);
  return made;
}

using Request = http::request<http::string_body>;

// One call's deadline, and the errors that name its peer.
struct CallDeadline {
  CallDeadline(const std::string& host, int port, std::chrono::milliseconds t)
      : where(host + ":" + std::to_string(port)),
        timeout(t),
        deadline(std::chrono::steady_clock::now() + t) {}

  std::chrono::steady_clock::duration Remaining() const {
    return std::max(std::chrono::steady_clock::duration::zero(),
                    deadline - std::chrono::steady_clock::now());
  }
  Error TimedOut() const {
    return Err("timed out after " + std::to_string(timeout.count()) + " ms talking to " + where);
  }

  const std::string where;
  const std::chrono::milliseconds timeout;
  const std::chrono::steady_clock::time_point deadline;
};

// Checks what both calls share and builds their request (one per connection).
Result<Request> BuildRequest(const std::string& host, int port, const std::string& method,
                             const std::string& target, const std::string& body,
                             const std::map<std::string, std::string>& headers,
                             bool keep_alive = false) {
  const http::verb verb = http::string_to_verb(method);
  if (verb == http::verb::unknown) return Err("unsupported HTTP method '" + method + "'");
  if (target.empty() || target[0] != '/') return Err("request target must start with '/'");
  if (port < 1 || port > 65535) return Err("invalid port in " + host + ":" + std::to_string(port));
  Request req{verb, target, 11};
  req.set(http::field::host, host);
  req.set(http::field::user_agent, "kato/" KATO_VERSION);
  if (!body.empty()) req.set(http::field::content_type, "application/json");
  for (const auto& [name, value] : headers) {
    if (!IsHeaderName(name) || !IsHeaderValue(value)) {
      return Err("invalid HTTP header '" + name +
                 "': names are tokens, values hold no line breaks");
    }
    if (!IsFramingHeader(name)) req.set(name, value);
  }
  req.body() = body;
  req.keep_alive(keep_alive);
  req.prepare_payload();
  return req;
}

// The event loop of every client connection in this process, run by one
// thread of its own: a call starts its operations there and waits for them.
// A kept connection then costs one descriptor (its socket), not an event loop
// of its own (epoll, eventfd, timerfd), so a process holds thousands.
// Never destroyed (calls may run at exit); calls must not come from its thread
// (its handlers are the client's own and make none).
class ClientLoop {
 public:
  static ClientLoop& Get() {
    static auto* loop = new ClientLoop;
    return *loop;
  }
  net::io_context& ioc() { return ioc_; }

  // Runs `start(done)` on the loop's thread and returns once `done` has been
  // called (start's operations are all complete). Every operation has a
  // deadline (the streams' timers), so this returns in bounded time.
  template <class Start>
  void Run(Start start) {
    // Shared: the loop's thread may still be in set_value when this returns.
    auto finished = std::make_shared<std::promise<void>>();
    auto future = finished->get_future();
    net::post(ioc_, [&start, finished] { start([finished] { finished->set_value(); }); });
    future.wait();
  }

 private:
  ClientLoop()
      : guard_(net::make_work_guard(ioc_)), thread_([this] {
          for (;;) {
            try {
              ioc_.run();
              return;
            } catch (const std::exception& e) {
              LogError("HTTP client event loop: {}", e.what());
            }
          }
        }) {}
  net::io_context ioc_{1};
  net::executor_work_guard<net::io_context::executor_type> guard_;
  std::thread thread_;  // runs as long as the process: the loop is never destroyed
};

// Resolves `host` and connects `stream` to it before the deadline.
// From `local_ip` when it is not empty.
Status Connect(beast::tcp_stream& stream, const std::string& host, int port,
               const CallDeadline& d, const std::string& local_ip = "") {
  beast::error_code ec;
  std::vector<tcp::endpoint> endpoints;
  auto address = net::ip::make_address(host, ec);
  if (!local_ip.empty()) {
    // One endpoint only: connecting to a list would reopen the bound socket.
    if (ec) return Err("a call from " + local_ip + " needs the server's IP address, not " + host);
    auto local = net::ip::make_address(local_ip, ec);
    if (ec) return Err("'" + local_ip + "' is not an IP address to connect from");
    auto& sock = stream.socket();
    sock.open(local.is_v4() ? tcp::v4() : tcp::v6(), ec);
    if (!ec) sock.bind(tcp::endpoint(local, 0), ec);
    if (ec) return Err("cannot connect from " + local_ip + ": " + ec.message());
    const tcp::endpoint to(address, static_cast<unsigned short>(port));
    ClientLoop::Get().Run([&](auto done) {
      stream.expires_after(d.Remaining());
      stream.async_connect(to, [&ec, done](beast::error_code e) {
        ec = e;
        done();
      });
    });
    if (ec == beast::error::timeout) return d.TimedOut();
    if (ec) return Err("cannot connect to " + d.where + ": " + ec.message());
    return Ok();
  }
  if (!ec) {
    endpoints.emplace_back(address, static_cast<unsigned short>(port));
  } else {
    net::io_context ioc;  // a lookup of its own, bounded by run_for
    tcp::resolver resolver(ioc);
    bool resolved = false;
    resolver.async_resolve(host, std::to_string(port),
                           [&](beast::error_code e, tcp::resolver::results_type results) {
                             ec = e;
                             for (const auto& r : results) endpoints.push_back(r.endpoint());
                             resolved = true;
                           });
    ioc.run_for(d.Remaining());
    ioc.restart();
    if (!resolved) return d.TimedOut();
    if (ec) return Err("cannot resolve " + host + ": " + ec.message());
  }
  ClientLoop::Get().Run([&](auto done) {
    stream.expires_after(d.Remaining());
    stream.async_connect(endpoints, [&ec, done](beast::error_code e, const tcp::endpoint&) {
      ec = e;
      done();
    });
  });
  if (ec == beast::error::timeout) return d.TimedOut();
  if (ec) return Err("cannot connect to " + d.where + ": " + ec.message());
  return Ok();
}

// What an exchange tells its caller besides the response: whether the
// connection may carry another request, and whether a failure happened before
// any byte of the response (a reused connection the server had closed).
struct ExchangeOutcome {
  bool reusable = false;
  bool nothing_received = false;
};

// Sends `req` on a connected stream and reads the response.
template <class Stream>
Result<HttpResponse> Exchange(Stream& stream, const Request& req, const CallDeadline& d,
                              ExchangeOutcome* outcome = nullptr) {
  beast::tcp_stream& lowest = beast::get_lowest_layer(stream);
  // Write and read at once: a server may answer early (413) and close while
  // the body is still being sent; the answer is what the caller needs.
  http::response_parser<http::string_body> parser;
  parser.body_limit(kMaxResponseBodyBytes);
  parser.header_limit(kMaxResponseHeaderBytes);
  beast::flat_buffer buffer;
  beast::error_code write_ec, read_ec;
  bool write_done = false;
  ClientLoop::Get().Run([&](auto done) {
    auto pending = std::make_shared<int>(2);  // both handlers run on the loop's thread
    auto finish = [pending, done] {
      if (--*pending == 0) done();
    };
    lowest.expires_after(d.Remaining());
    http::async_write(stream, req, [&, finish](beast::error_code e, size_t) {
      write_ec = e;
      write_done = true;
      finish();
    });
    http::async_read(stream, buffer, parser, [&, finish](beast::error_code e, size_t) {
      read_ec = e;
      if (!write_done) lowest.cancel();
      finish();
    });
  });
  if (read_ec) {
    if (read_ec == beast::error::timeout || write_ec == beast::error::timeout) return d.TimedOut();
    if (outcome) outcome->nothing_received = !parser.got_some();
    const beast::error_code& first = write_ec ? write_ec : read_ec;
    if (IsTlsError(first)) {
      return Err("TLS connection with " + d.where + " failed: " + Describe(first));
    }
    if (write_ec) {
      return Err("sending the request to " + d.where + " failed: " + Describe(write_ec));
    }
    return Err("reading the response from " + d.where + " failed: " + Describe(read_ec));
  }
  auto& res = parser.get();
  if (outcome) outcome->reusable = !write_ec && res.keep_alive() && req.keep_alive();
  HttpResponse out;
  out.status = static_cast<int>(res.result_int());
  out.content_type = std::string(res[http::field::content_type]);
  for (const auto& field : res) {
    std::string name(field.name_string());
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    auto [it, inserted] = out.headers.emplace(name, std::string(field.value()));
    if (!inserted) it->second += ", " + std::string(field.value());
  }
  out.body = std::move(res.body());
  return out;
}

// A TLS connection to one server, on the client's event loop.
struct TlsConnection {
  explicit TlsConnection(std::shared_ptr<ssl::context> c)
      : ctx(std::move(c)), stream(ClientLoop::Get().ioc(), *ctx) {}
  std::shared_ptr<ssl::context> ctx;
  TlsStream stream;
};

// Whether the server closed (or wrote to) a connection while it sat idle:
// either way it cannot carry the next request.
bool PeerClosed(TlsConnection& c) {
  pollfd p{beast::get_lowest_layer(c.stream).socket().native_handle(), POLLIN | POLLRDHUP, 0};
  return ::poll(&p, 1, 0) != 0;
}

// Idle connections of this process, kept for the next call to the same server
// with the same certificates. Never destroyed (calls may run at exit).
std::atomic<uint64_t> stat_calls{0}, stat_connections{0}, stat_resumed{0};
IdlePool<TlsConnection>& Pool() {
  static auto* pool = new IdlePool<TlsConnection>(
      RealClock::instance(), IdlePool<TlsConnection>::Limits{.total = idle_total.load()});
  return *pool;
}

// The last TLS session of each destination, so that a new connection resumes
// it (an abbreviated handshake: no certificates, no signatures).
class SessionCache {
 public:
  void Remember(const std::string& key, SSL* ssl) {
    // A copy: OpenSSL marks a connection's own session not resumable when
    // that connection is freed without a TLS shutdown, as kept ones are.
    SSL_SESSION* session = SSL_get0_session(ssl) ? SSL_SESSION_dup(SSL_get0_session(ssl)) : nullptr;
    if (!session) return;
    if (SSL_SESSION_is_resumable(session) != 1) {
      SSL_SESSION_free(session);
      return;
    }
    std::lock_guard lock(mu_);
    if (by_key_.size() >= kMaxSessions && !by_key_.count(key)) ClearLocked();
    SSL_SESSION*& slot = by_key_[key];
    if (slot) SSL_SESSION_free(slot);
    slot = session;
  }
  void Offer(const std::string& key, SSL* ssl) {
    std::lock_guard lock(mu_);
    auto it = by_key_.find(key);
    if (it != by_key_.end()) SSL_set_session(ssl, it->second);
  }
  void Forget(const std::string& key) {
    std::lock_guard lock(mu_);
    auto it = by_key_.find(key);
    if (it == by_key_.end()) return;
    SSL_SESSION_free(it->second);
    by_key_.erase(it);
  }

 private:
  static constexpr size_t kMaxSessions = 16384;
  void ClearLocked() {
    for (auto& [k, s] : by_key_) SSL_SESSION_free(s);
    by_key_.clear();
  }
  std::mutex mu_;
  std::map<std::string, SSL_SESSION*> by_key_;  // guarded by mu_
};

SessionCache& Sessions() {
  static auto* cache = new SessionCache;
  return *cache;
}

// Connects and completes the TLS handshake, or says why not.
Status OpenTls(TlsConnection& c, const ClientTls& tls, const std::string& host, int port,
               const CallDeadline& d, const PinCheck& pin) {
  if (!tls.verify_host.empty()) {
    // A server outside the cluster: its certificate must name the host (SNI says which).
    SSL_set_tlsext_host_name(c.stream.native_handle(), tls.verify_host.c_str());
    SSL_set_hostflags(c.stream.native_handle(), X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (SSL_set1_host(c.stream.native_handle(), tls.verify_host.c_str()) != 1)
      return Err("cannot check the certificate of " + d.where + " against '" + tls.verify_host + "'");
  }
  beast::tcp_stream& lowest = beast::get_lowest_layer(c.stream);
  KATO_TRY(Connect(lowest, host, port, d, tls.local_ip));

  beast::error_code ec;
  ClientLoop::Get().Run([&](auto done) {
    lowest.expires_after(d.Remaining());
    c.stream.async_handshake(ssl::stream_base::client, [&ec, done](beast::error_code e) {
      ec = e;
      done();
    });
  });
  if (ec == beast::error::timeout) return d.TimedOut();
  if (pin.mismatch) {
    return Err("server at " + d.where +
               " is not the cluster the token was made for (CA fingerprint mismatch)");
  }
  if (!pin.error.empty() && pin.error.rfind("its certificate does not name", 0) == 0)
    return Err("TLS handshake with " + d.where + " failed: " + pin.error);
  if (!pin.error.empty()) {
    return Err("TLS handshake with " + d.where +
               " failed: its certificate does not chain to the pinned cluster CA (" + pin.error +
               ")");
  }
  if (ec) {
    std::string why = Describe(ec);
    long verify = SSL_get_verify_result(c.stream.native_handle());
    if (verify != X509_V_OK) {
      why = "its certificate does not verify against the cluster CA (" +
            std::string(X509_verify_cert_error_string(verify)) + ")";
    }
    return Err("TLS handshake with " + d.where + " failed: " + why);
  }
  return Ok();
}

// Pinned mode (join, first use): one request on a connection of its own, whose
// context's verify callback points at this call's PinCheck.
Result<HttpResponse> PinnedCall(const ClientTls& tls, const std::string& host, int port,
                                const Request& req, const CallDeadline& d) {
  PinCheck pin;
  auto made = NewClientContext(tls);
  if (!made) return Err(made.error());
  pin.pin = tls.pin_ca_sha256;
  std::transform(pin.pin.begin(), pin.pin.end(), pin.pin.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  pin.host = tls.verify_host;
  SSL_CTX_set_cert_verify_callback((*made)->native_handle(), VerifyPinned, &pin);
  TlsConnection c(*made);
  KATO_TRY(OpenTls(c, tls, host, port, d, pin));
  auto out = Exchange(c.stream, req, d);
  if (out) out->peer_ca_pem = pin.ca_pem;
  return out;
}

Result<HttpResponse> Call(const ClientTls& tls, const std::string& host, int port,
                          const std::string& method, const std::string& target,
                          const std::string& body, std::chrono::milliseconds timeout,
                          const std::map<std::string, std::string>& headers) {
  const bool pinned = !tls.pin_ca_sha256.empty();
  auto req = BuildRequest(host, port, method, target, body, headers, !pinned);
  if (!req) return std::move(req).take_error();
  const CallDeadline d(host, port, timeout);
  if (pinned) return PinnedCall(tls, host, port, *req, d);

  if (tls.ca_pem.empty()) return Err("no CA certificate to verify " + d.where + " against");
  auto ctx = CachedClientContext(tls);
  if (!ctx) return Err(ctx.error());
  // Connections are shared by calls with the same server, certificates
  // (one cached context each) and name and source checks.
  const std::string key = d.where + '\0' + std::to_string(reinterpret_cast<uintptr_t>(ctx->get())) +
                          '\0' + tls.verify_host + '\0' + tls.local_ip;
  for (int attempt = 0;; ++attempt) {
    std::unique_ptr<TlsConnection> c = attempt == 0 ? Pool().Take(key) : nullptr;
    if (c && PeerClosed(*c)) c.reset();
    const bool reused = c != nullptr;
    if (!c) {
      c = std::make_unique<TlsConnection>(*ctx);
      Sessions().Offer(key, c->stream.native_handle());
      if (auto s = OpenTls(*c, tls, host, port, d, PinCheck{}); !s) {
        Sessions().Forget(key);  // a session the server no longer takes must not fail the next
        return std::move(s).take_error();
      }
    }
    if (!reused) {
      stat_connections.fetch_add(1, std::memory_order_relaxed);
      if (SSL_session_reused(c->stream.native_handle()) == 1)
        stat_resumed.fetch_add(1, std::memory_order_relaxed);
    }
    stat_calls.fetch_add(1, std::memory_order_relaxed);
    ExchangeOutcome outcome;
    auto out = Exchange(c->stream, *req, d, &outcome);
    // The server closed a reused connection before answering (it had timed
    // out on its side): the request was not handled; send it on a new one.
    if (!out && reused && outcome.nothing_received && attempt == 0 &&
        d.Remaining() > std::chrono::steady_clock::duration::zero())
      continue;
    if (out && !reused) Sessions().Remember(key, c->stream.native_handle());
    if (out && outcome.reusable) Pool().Put(key, std::move(c));
    return out;
  }
}

Result<HttpResponse> PlainCall(const std::string& host, int port, const std::string& method,
                               const std::string& target, const std::string& body,
                               std::chrono::milliseconds timeout,
                               const std::map<std::string, std::string>& headers) {
  auto req = BuildRequest(host, port, method, target, body, headers);
  if (!req) return std::move(req).take_error();
  const CallDeadline d(host, port, timeout);
  beast::tcp_stream stream(ClientLoop::Get().ioc());
  KATO_TRY(Connect(stream, host, port, d));
  return Exchange(stream, *req, d);
}

}  // namespace

void SetHttpsIdleConnections(size_t total) { idle_total = total; }
void DropIdleHttpsConnections() { Pool().Clear(); }
HttpsClientStats GetHttpsClientStats() {
  return HttpsClientStats{stat_calls.load(), stat_connections.load(), stat_resumed.load()};
}

Result<HttpResponse> HttpsCall(const ClientTls& tls, const std::string& host, int port,
                               const std::string& method, const std::string& target,
                               const std::string& body, std::chrono::milliseconds timeout,
                               const std::map<std::string, std::string>& headers) {
  try {
    return Call(tls, host, port, method, target, body, timeout, headers);
  } catch (const std::exception& e) {  // allocation failure, or a Beast precondition
    return Err("HTTPS call to " + host + ":" + std::to_string(port) + " failed: " + e.what());
  }
}

Result<HttpResponse> HttpCall(const std::string& host, int port, const std::string& method,
                              const std::string& target, const std::string& body,
                              std::chrono::milliseconds timeout,
                              const std::map<std::string, std::string>& headers) {
  try {
    return PlainCall(host, port, method, target, body, timeout, headers);
  } catch (const std::exception& e) {  // allocation failure, or a Beast precondition
    return Err("HTTP call to " + host + ":" + std::to_string(port) + " failed: " + e.what());
  }
}

}  // namespace kato
