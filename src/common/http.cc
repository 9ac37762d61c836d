// The HTTP server (and ParseHttpRequest); the client is in http_client.cc.
// With the router, the only translation units that include Beast: keep it
// that way, it is the slowest header set in the build.
#include "common/http.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cctype>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string_view>
#include <thread>
#include <type_traits>
#include <vector>

#include "common/http_internal.h"
#include "common/http_parse.h"
#include "common/log.h"
#include "common/pki.h"

namespace kato {
namespace {

using namespace http_internal;  // NOLINT: the pieces shared with http_client.cc
namespace http = beast::http;
using RequestParser = http::request_parser<http::string_body>;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;
using SteadyDeadline = std::chrono::steady_clock::time_point;


// --- Request parsing, shared by the server and ParseHttpRequest. ---

void ConfigureParser(RequestParser& parser, uint64_t body_limit) {
  parser.header_limit(kMaxRequestHeaderBytes);
  parser.body_limit(body_limit);
}

// "1 MiB", "64 KiB", "1000 bytes".
std::string SizeText(uint64_t bytes) {
  constexpr uint64_t kKiB = 1024, kMiB = 1024 * 1024;
  if (bytes >= kMiB && bytes % kMiB == 0) return std::to_string(bytes / kMiB) + " MiB";
  if (bytes >= kKiB && bytes % kKiB == 0) return std::to_string(bytes / kKiB) + " KiB";
  return std::to_string(bytes) + " bytes";
}

int RejectStatus(const beast::error_code& ec) {
  if (ec == http::error::body_limit) return 413;
  if (ec == http::error::header_limit) return 431;
  return 400;
}

std::string RejectReason(const beast::error_code& ec, uint64_t body_limit) {
  if (ec == http::error::body_limit) return "request body over " + SizeText(body_limit);
  if (ec == http::error::header_limit) return "request header over 8 KiB";
  if (ec == http::error::partial_message || ec == http::error::need_more ||
      ec == http::error::end_of_stream) {
    return "incomplete request";
  }
  return "malformed request: " + ec.message();
}

bool IsHttpParseError(const beast::error_code& ec) {
  return ec.category() == http::make_error_code(http::error::end_of_stream).category();
}

HttpRequest HeadOf(const http::request_header<>& req) {
  HttpRequest out;
  out.method = std::string(req.method_string());
  out.target = std::string(req.target());
  for (const auto& field : req) {
    std::string name(field.name_string());
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    auto [it, inserted] = out.headers.emplace(name, std::string(field.value()));
    if (!inserted) it->second += ", " + std::string(field.value());  // RFC 9110 5.3
  }
  return out;
}

HttpRequest ToHttpRequest(http::request<http::string_body>&& req) {
  HttpRequest out = HeadOf(req);
  out.body = std::move(req.body());
  return out;
}

// --- Server. ---

// What the server needs from a connection of either kind.
class SessionBase {
 public:
  virtual ~SessionBase() = default;
  virtual void Start() = 0;
  // Only from HttpServer::Stop(), once no I/O thread runs.
  virtual void CloseNow() = 0;
  virtual void ReleaseStream() = 0;
};

// What sessions and responders share with the server. It outlives the server
// when a handler keeps a Responder past Stop(): `stopped` then turns the
// responder into a no-op.
struct ServerShared {
  explicit ServerShared(HttpHandler h) : handler(std::move(h)) {}
  const HttpHandler handler;
  std::atomic<uint64_t> body_limit{kMaxRequestBodyBytes};
  HeaderCheck header_check;  // set before Start(), read-only after
  ReadDeadlines deadlines;   // set before Start(), read-only after
  std::mutex mu;
  bool stopped = false;                              // GUARDED_BY(mu)
  std::vector<std::weak_ptr<SessionBase>> sessions;  // GUARDED_BY(mu)

  bool Stopped() {
    std::lock_guard<std::mutex> lock(mu);
    return stopped;
  }
};

HttpResponse ErrorResponse(int status, const std::string& reason) {
  HttpResponse r;
  r.status = status;
  r.body = "{\"error\":\"" + reason + "\"}";  // reasons are fixed text: no escaping needed
  return r;
}

// One connection, plain (Stream = beast::tcp_stream) or TLS (TlsStream). All
// its I/O runs on its strand; responses from other threads are posted there.
// Kept alive by its pending operation, or by the Responder of the request
// being handled.
template <class Stream>
class Session : public SessionBase, public std::enable_shared_from_this<Session<Stream>> {
  static constexpr bool kTls = std::is_same_v<Stream, TlsStream>;

 public:
  // `ctx` is used in TLS mode only.
  Session(tcp::socket socket, ssl::context* ctx, std::shared_ptr<ServerShared> shared)
      : shared_(std::move(shared)) {
    if constexpr (kTls) {
      stream_.emplace(std::move(socket), *ctx);
    } else {
      (void)ctx;
      stream_.emplace(std::move(socket));
    }
    request_timer_.emplace(stream_->get_executor());
  }

  void Start() override {
    net::dispatch(stream_->get_executor(), [self = this->shared_from_this()] { self->Begin(); });
  }

  // Called from any thread, at most once per request (see ResponseGuard).
  void PostResponse(HttpResponse response) {
    std::lock_guard<std::mutex> lock(shared_->mu);
    if (shared_->stopped) return;  // stream_ may be gone; nobody is listening anyway
    net::post(stream_->get_executor(),
              [self = this->shared_from_this(), r = std::move(response)] { self->Write(r); });
  }

  void CloseNow() override {
    request_timer_->cancel();
    Lowest().close();
  }
  void ReleaseStream() override {
    request_timer_.reset();
    stream_.reset();
  }

 private:
  beast::tcp_stream& Lowest() { return beast::get_lowest_layer(*stream_); }

  void Begin() {
    beast::error_code ec;
    auto endpoint = Lowest().socket().remote_endpoint(ec);
    if (!ec) peer_ip_ = endpoint.address().to_string();
    if constexpr (kTls) {
      Lowest().expires_after(kIoDeadline);
      stream_->async_handshake(ssl::stream_base::server,
                               [self = this->shared_from_this()](beast::error_code ec) {
                                 if (ec) return;  // bad client cert, garbage, timeout: drop it
                                 self->OnHandshake();
                               });
    } else {
      Read();
    }
  }

  void OnHandshake() {
    SSL* ssl = stream_->native_handle();
    X509* peer = SSL_get0_peer_certificate(ssl);
    // The handshake already failed for a presented certificate that does not verify.
    if (peer && SSL_get_verify_result(ssl) == X509_V_OK) peer_cn_ = CommonNameOf(peer);
    Read();
  }

  // Two clocks run while a request is read (ReadDeadlines): the idle one,
  // renewed by every read, drops a silent peer; the request timer bounds the
  // whole request, its deadline moving out as body bytes arrive.
  void Read() {
    if (shared_->Stopped()) return;
    parser_.emplace();
    ConfigureParser(*parser_, shared_->body_limit.load());
    read_start_ = std::chrono::steady_clock::now();
    body_bytes_ = 0;
    reading_ = true;
    ++read_generation_;
    ArmRequestTimer();
    Lowest().expires_after(shared_->deadlines.idle);
    http::async_read_header(*stream_, buffer_, *parser_,
                            [self = this->shared_from_this()](beast::error_code ec, size_t) {
                              if (ec || self->timed_out_) return self->OnRead(ec);
                              self->OnHeader();
                            });
  }

  // The header is in: the server's HeaderCheck may answer before the body is read.
  void OnHeader() {
    if (shared_->header_check) {
      HttpRequest head = HeadOf(parser_->get());
      head.peer_cn = peer_cn_;
      head.peer_ip = peer_ip_;
      std::optional<HttpResponse> refusal;
      try {
        refusal = shared_->header_check(head);
      } catch (const std::exception& e) {
        LogError("HTTP header check for {} {} threw: {}", head.method, head.target, e.what());
        refusal = ErrorResponse(500, "the request could not be checked");
      }
      if (refusal) {
        reading_ = false;
        request_timer_->cancel();
        version_ = parser_->get().version();
        keep_alive_ = false;
        rejected_ = true;  // the body may still be on its way: Linger, do not reset
        return Write(*refusal);
      }
    }
    ReadBody();
  }

  void ReadBody() {
    if (parser_->is_done()) return OnRead({});
    Lowest().expires_after(shared_->deadlines.idle);
    http::async_read_some(*stream_, buffer_, *parser_,
                          [self = this->shared_from_this()](beast::error_code ec, size_t n) {
                            self->body_bytes_ += n;
                            if (ec || self->timed_out_) return self->OnRead(ec);
                            self->ReadBody();
                          });
  }

  SteadyDeadline RequestDeadline() const {
    const ReadDeadlines& d = shared_->deadlines;
    auto allowance =
        std::chrono::milliseconds(body_bytes_ * 1000 / std::max<uint64_t>(d.min_body_rate, 1));
    return read_start_ + d.request + allowance;
  }

  void ArmRequestTimer() {
    request_timer_->expires_at(RequestDeadline());
    request_timer_->async_wait([self = this->shared_from_this(), generation = read_generation_](
                                   beast::error_code ec) { self->OnRequestTimer(ec, generation); });
  }

  void OnRequestTimer(beast::error_code ec, uint64_t generation) {
    if (ec || generation != read_generation_ || !reading_ || shared_->Stopped()) return;
    if (std::chrono::steady_clock::now() < RequestDeadline()) return ArmRequestTimer();
    if (buffer_.size() == 0 && !parser_->got_some()) {
      // Nothing of a request yet (an idle keep-alive connection): drop it
      // quietly, as the idle deadline would, so that no client reads a 408 as
      // the answer to a request it is sending right now.
      return Lowest().close();
    }
    timed_out_ = true;
    Lowest().cancel();  // the pending read completes, and OnRead answers 408
  }

  void OnRead(beast::error_code ec) {
    reading_ = false;
    request_timer_->cancel();
    if (timed_out_) {
      keep_alive_ = false;
      rejected_ = true;
      return Write(ErrorResponse(408, "request not received in time"));
    }
    if (ec == http::error::end_of_stream) return Close();
    if (ec) {
      if (!IsHttpParseError(ec)) return;  // timeout, reset, TLS error: nothing to answer
      keep_alive_ = false;
      rejected_ = true;
      return Write(ErrorResponse(RejectStatus(ec), RejectReason(ec, shared_->body_limit.load())));
    }
    keep_alive_ = parser_->get().keep_alive();
    version_ = parser_->get().version();
    HttpRequest request = ToHttpRequest(parser_->release());
    request.peer_cn = peer_cn_;
    request.peer_ip = peer_ip_;
    if (shared_->Stopped()) return;

    // The guard answers 500 if the handler drops the Responder without calling it.
    struct ResponseGuard {
      std::shared_ptr<Session> session;
      std::atomic<bool> done{false};
      ~ResponseGuard() {
        if (!done.exchange(true)) {
          session->PostResponse(ErrorResponse(500, "the request handler gave no response"));
        }
      }
    };
    auto guard = std::make_shared<ResponseGuard>();
    guard->session = this->shared_from_this();
    Responder respond = [guard](HttpResponse r) {
      if (!guard->done.exchange(true)) guard->session->PostResponse(std::move(r));
    };
    guard.reset();
    try {
      shared_->handler(request, std::move(respond));
    } catch (const std::exception& e) {
      LogError("HTTP handler for {} {} threw: {}", request.method, request.target, e.what());
    } catch (...) {
      LogError("HTTP handler for {} {} threw", request.method, request.target);
    }
  }

  void Write(const HttpResponse& r) {
    if (shared_->Stopped()) return;
    res_ = {};
    res_.version(version_);
    res_.result(r.status >= 100 && r.status <= 599 ? static_cast<unsigned>(r.status) : 500u);
    res_.set(http::field::server, "kato");
    if (!r.content_type.empty()) res_.set(http::field::content_type, r.content_type);
    for (const auto& [name, value] : r.headers) {
      if (IsFramingHeader(name)) continue;
      if (!IsHeaderName(name) || !IsHeaderValue(value)) {
        LogError("HTTP handler gave an invalid response header '{}': not sent", name);
        continue;
      }
      res_.set(name, value);
    }
    res_.body() = r.body;
    res_.keep_alive(keep_alive_);
    res_.prepare_payload();
    Lowest().expires_after(kIoDeadline);
    http::async_write(*stream_, res_,
                      [self = this->shared_from_this()](beast::error_code ec, size_t) {
                        if (ec) return;
                        if (self->keep_alive_) return self->Read();
                        if (self->rejected_) return self->Linger();
                        self->Close();
                      });
  }

  // After rejecting a request the client may still be sending its body.
  // Closing now would answer that with a TCP reset, which can destroy the
  // response in the client's receive queue before it is read; so send FIN and
  // discard input until the client closes or the close deadline passes.
  void Linger() {
    beast::error_code ec;
    Lowest().socket().shutdown(tcp::socket::shutdown_send, ec);
    Lowest().expires_after(kCloseDeadline);
    drain_.resize(16 * 1024);
    Discard();
  }

  void Discard() {
    if (shared_->Stopped()) return;
    Lowest().async_read_some(net::buffer(drain_),
                             [self = this->shared_from_this()](beast::error_code ec, size_t) {
                               if (!ec) self->Discard();
                             });
  }

  void Close() {
    if constexpr (kTls) {
      Lowest().expires_after(kCloseDeadline);
      stream_->async_shutdown([self = this->shared_from_this()](beast::error_code) {});
    } else {
      Linger();  // plain TCP has no close handshake of its own: FIN, then wait for the client's
    }
  }

  std::optional<Stream> stream_;
  std::optional<net::steady_timer> request_timer_;  // on the stream's strand
  const std::shared_ptr<ServerShared> shared_;
  beast::flat_buffer buffer_;
  std::optional<RequestParser> parser_;
  http::response<http::string_body> res_;
  std::string peer_cn_;
  std::string peer_ip_;
  bool keep_alive_ = true;
  bool rejected_ = false;
  // The request being read (see Read()).
  SteadyDeadline read_start_;
  uint64_t body_bytes_ = 0;
  uint64_t read_generation_ = 0;
  bool reading_ = false;
  bool timed_out_ = false;
  unsigned version_ = 11;
  std::vector<char> drain_;
};

}  // namespace

Result<HttpRequest> ParseHttpRequest(std::string_view raw, int* reject_status) {
  RequestParser parser;
  ConfigureParser(parser, kMaxRequestBodyBytes);
  parser.eager(true);
  beast::error_code ec;
  size_t used = 0;
  while (!parser.is_done()) {
    if (used == raw.size()) {  // all of `raw` was not enough
      if (parser.got_some()) {
        parser.put_eof(ec);
      } else {
        ec = http::error::end_of_stream;
      }
      if (!ec && !parser.is_done()) ec = http::error::partial_message;
      break;
    }
    size_t n = parser.put(net::buffer(raw.data() + used, raw.size() - used), ec);
    used += n;
    if (ec == http::error::need_more) ec = {};
    if (ec) break;
    // The parser needs a whole header in one buffer: no progress means the rest is not enough.
    if (n == 0) used = raw.size();
  }
  if (ec) {
    if (reject_status) *reject_status = RejectStatus(ec);
    return Err(RejectReason(ec, kMaxRequestBodyBytes));
  }
  return ToHttpRequest(parser.release());
}

struct HttpServer::Impl {
  Impl(std::optional<ServerTls> t, HttpHandler h, int n)
      : tls(std::move(t)),
        threads(std::max(n, 1)),
        shared(std::make_shared<ServerShared>(std::move(h))) {
    if (tls) ctx.emplace(ssl::context::tls_server);
  }

  const char* Kind() const { return tls ? "HTTPS" : "HTTP"; }

  void Accept() {
    acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
      if (ec == net::error::operation_aborted || shared->Stopped()) return;
      if (ec) {  // e.g. out of file descriptors: back off instead of spinning
        LogWarn("{} server on port {}: accept failed: {}", Kind(), bound_port, ec.message());
        retry.expires_after(std::chrono::milliseconds(100));
        retry.async_wait([this](beast::error_code ec) {
          if (!ec) Accept();
        });
        return;
      }
      accepted.fetch_add(1, std::memory_order_relaxed);
      std::shared_ptr<SessionBase> session;
      if (ctx) {
        session = std::make_shared<Session<TlsStream>>(std::move(socket), &*ctx, shared);
      } else {
        session = std::make_shared<Session<beast::tcp_stream>>(std::move(socket), nullptr, shared);
      }
      {
        std::lock_guard<std::mutex> lock(shared->mu);
        auto& all = shared->sessions;
        all.erase(std::remove_if(all.begin(), all.end(), [](auto& w) { return w.expired(); }),
                  all.end());
        all.push_back(session);
      }
      session->Start();
      Accept();
    });
  }

  const std::optional<ServerTls> tls;  // none: plain HTTP
  const int threads;
  const std::shared_ptr<ServerShared> shared;
  // Declared first among the I/O objects so that it is destroyed last.
  net::io_context ioc;
  std::optional<ssl::context> ctx;  // set when tls is
  tcp::acceptor acceptor{ioc};
  net::steady_timer retry{ioc};
  std::vector<std::thread> workers;
  int bound_port = 0;
  bool started = false;
  std::atomic<uint64_t> accepted{0};
};

HttpServer::HttpServer(ServerTls tls, HttpHandler handler, int threads)
    : impl_(std::make_unique<Impl>(std::move(tls), std::move(handler), threads)) {}

HttpServer::HttpServer(HttpHandler handler, int threads)
    : impl_(std::make_unique<Impl>(std::nullopt, std::move(handler), threads)) {}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::SetBodyLimit(size_t bytes) { impl_->shared->body_limit = bytes; }

void HttpServer::SetHeaderCheck(HeaderCheck check) {
  impl_->shared->header_check = std::move(check);
}

void HttpServer::SetReadDeadlines(const ReadDeadlines& deadlines) {
  impl_->shared->deadlines = deadlines;
}

Status HttpServer::Start(const std::string& ip, int port) {
  Impl& s = *impl_;
  if (s.started || s.shared->Stopped()) {
    return Err(std::string("the ") + s.Kind() + " server was already started");
  }
  const std::string where = ip + ":" + std::to_string(port);
  if (port < 0 || port > 65535) return Err("invalid port " + std::to_string(port));
  beast::error_code ec;
  if (s.tls) {
    KATO_TRY(CommonTlsSetup(*s.ctx, "HTTPS server"));
    KATO_TRY(
        UseCertAndKey(*s.ctx, s.tls->cert_pem, s.tls->chain_pem, s.tls->key_pem, "the server"));
    s.ctx->add_certificate_authority(net::buffer(s.tls->ca_pem), ec);
    if (ec) return Err("the server's CA certificate is not valid PEM: " + ec.message());
    // Request a client certificate and verify it when given; requests without
    // one reach the handler with an empty peer_cn.
    s.ctx->set_verify_mode(ssl::verify_peer);
    static const unsigned char kSessionContext[] = "kato";
    SSL_CTX_set_session_id_context(s.ctx->native_handle(), kSessionContext, 4);
  }

  auto address = net::ip::make_address(ip, ec);
  if (ec) return Err("cannot listen on " + where + ": '" + ip + "' is not an IP address");
  tcp::endpoint endpoint(address, static_cast<unsigned short>(port));
  s.acceptor.open(endpoint.protocol(), ec);
  if (!ec) s.acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) s.acceptor.bind(endpoint, ec);
  if (!ec) s.acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    beast::error_code ignored;
    s.acceptor.close(ignored);
    return Err("cannot listen on " + where + ": " + ec.message());
  }
  s.bound_port = s.acceptor.local_endpoint(ec).port();
  s.started = true;
  s.Accept();
  for (int i = 0; i < s.threads; ++i) {
    s.workers.emplace_back([&s] {
      for (;;) {
        try {
          s.ioc.run();
          return;
        } catch (const std::exception& e) {
          LogError("{} server I/O thread: {}", s.Kind(), e.what());
        }
      }
    });
  }
  return Ok();
}

int HttpServer::port() const { return impl_->bound_port; }

uint64_t HttpServer::connections_accepted() const { return impl_->accepted.load(); }

void HttpServer::Stop() {
  Impl& s = *impl_;
  {
    std::lock_guard<std::mutex> lock(s.shared->mu);
    if (s.shared->stopped) return;
    s.shared->stopped = true;  // from here on, no Responder touches a session
  }
  // Stop the I/O threads first, so that closing the sockets below races with nothing.
  s.ioc.stop();
  for (auto& t : s.workers) t.join();
  s.workers.clear();
  beast::error_code ec;
  s.acceptor.close(ec);
  s.retry.cancel();
  std::vector<std::shared_ptr<SessionBase>> live;
  {
    std::lock_guard<std::mutex> lock(s.shared->mu);
    for (auto& w : s.shared->sessions) {
      if (auto session = w.lock()) live.push_back(std::move(session));
    }
    s.shared->sessions.clear();
  }
  for (auto& session : live) session->CloseNow();
  // Let the aborted operations complete, so that they release their sessions;
  // none starts new work once `stopped` is set.
  s.ioc.restart();
  s.ioc.run_for(std::chrono::seconds(2));
  // A Responder kept past this point holds its session: make sure that session
  // holds nothing that points into this server's io_context.
  for (auto& session : live) session->ReleaseStream();
}

}  // namespace kato
