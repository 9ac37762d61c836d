// The router's data path. Beast/Asio stay in this file.
//
// Every connection belongs to one Worker (one io_context run by one thread),
// so nothing here takes a lock per request. Timeouts are coarse: each
// connection keeps a deadline that its worker's sweep (every kSweepEvery)
// enforces, which costs one clock read per I/O step instead of a timer
// reschedule.
#include "router/proxy.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/buffers_iterator.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <charconv>
#include <ctime>
#include <future>
#include <mutex>
#include <set>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/log.h"

namespace kato {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using Steady = std::chrono::steady_clock;
using ErrorCode = boost::system::error_code;
// Sockets bound to a concrete io_context executor: the default type-erased
// any_io_executor costs a copy and a destroy per asynchronous operation.
using Socket = net::basic_stream_socket<tcp, net::io_context::executor_type>;
using BView = beast::string_view;  // boost::string_view in Boost 1.74

std::string_view Std(BView v) { return {v.data(), v.size()}; }

constexpr auto kSweepEvery = std::chrono::milliseconds(250);
constexpr auto kLingerFor = std::chrono::seconds(2);
constexpr uint32_t kMaxUpstreamHeader = 64 * 1024;
constexpr size_t kTunnelBuffer = 16 * 1024;

// Deadlines only need the sweep's precision: the coarse clock (a few ms) is
// a plain memory read, where steady_clock costs a TSC read per I/O step.
Steady::time_point CoarseNow() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);  // the clock steady_clock reads, coarsely
  return Steady::time_point(std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec));
}

bool IsParseError(const ErrorCode& ec) {
  return ec.category() == http::make_error_code(http::error::end_of_stream).category() &&
         ec != http::error::end_of_stream && ec != http::error::partial_message;
}

bool ContainsToken(BView list, BView token) {
  // Comma-separated, case-insensitive (RFC 9110 5.6.1).
  size_t i = 0;
  while (i < list.size()) {
    size_t comma = list.find(',', i);
    if (comma == BView::npos) comma = list.size();
    BView item = list.substr(i, comma - i);
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    if (beast::iequals(item, token)) return true;
    i = comma + 1;
  }
  return false;
}

std::string Printable(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 200)) out += (c >= 0x20 && c < 0x7f) ? c : '?';
  return out;
}

// --- Shared state and workers. ---

struct Shared {
  Shared(RouterOptions o, const RouteTable& t) : opt(std::move(o)), table(t) {}
  const RouterOptions opt;
  const RouteTable& table;
  std::atomic<bool> draining{false};
  std::atomic<bool> closing{false};  // Drain: finish what is in flight, keep nothing alive
  std::atomic<int> connections{0};   // client connections (not health checks)
  std::optional<ssl::context> tls;
  std::optional<ssl::context> upstream_tls;  // for backends with `tls`

  // Proxies in front of the routers (the cluster's load balancers): their
  // X-Forwarded-Proto and -Host describe the client's request, so they are
  // passed on. Read once per connection.
  bool Trusted(const std::string& ip) {
    std::lock_guard lock(trusted_mu);
    return trusted.count(ip) > 0;
  }
  std::mutex trusted_mu;
  std::set<std::string> trusted;
};

// Something with a deadline that its worker's sweep enforces.
class Timed {
 public:
  virtual ~Timed() = default;
  virtual void Expire() = 0;
  // Called by the sweep while the router drains: close if nothing is in flight.
  virtual void CloseIfIdle() = 0;
  Steady::time_point deadline = Steady::time_point::max();
};

// A connection to a backend: plain, or TLS over its own socket.
struct Upstream {
  explicit Upstream(net::io_context& ioc) : socket(ioc.get_executor()) {}
  Upstream(net::io_context& ioc, ssl::context& ctx)
      : socket(ioc.get_executor()), tls(std::in_place, ioc.get_executor(), ctx) {}
  Socket& Lowest() { return tls ? tls->next_layer() : socket; }
  // Calls `f` with the stream to read and write: the TLS stream or the socket.
  template <class F>
  void Io(F&& f) {
    if (tls) return f(*tls);
    f(socket);
  }
  Socket socket;  // unused with TLS
  std::optional<ssl::stream<Socket>> tls;
  beast::flat_buffer buffer;
  Steady::time_point idle_since;
};

using UpstreamPtr = std::unique_ptr<Upstream>;

struct Worker {
  Worker(Shared& s, int concurrency_hint)
      : shared(s), ioc(concurrency_hint), sweep(ioc), cache(s.table) {}

  void StartSweep() {
    sweep.expires_after(kSweepEvery);
    sweep.async_wait([this](const ErrorCode& ec) {
      if (ec) return;
      Sweep();
      StartSweep();
    });
  }

  void Sweep() {
    auto now = Steady::now();
    std::vector<Timed*> expired;
    for (Timed* t : timed) {
      if (t->deadline <= now) expired.push_back(t);
    }
    for (Timed* t : expired) {
      t->deadline = Steady::time_point::max();
      t->Expire();
    }
    if (shared.closing.load(std::memory_order_relaxed)) {
      std::vector<Timed*> all(timed.begin(), timed.end());
      for (Timed* t : all) t->CloseIfIdle();
      pool.clear();
    }
    for (auto& [key, idle] : pool) {
      std::erase_if(idle, [&](const UpstreamPtr& u) {
        return u->idle_since + shared.opt.upstream_idle_timeout <= now;
      });
    }
  }

  UpstreamPtr TakeIdle(std::string_view key) {
    auto it = pool.find(key);
    if (it == pool.end() || it->second.empty()) return nullptr;
    UpstreamPtr u = std::move(it->second.back());
    it->second.pop_back();
    return u;
  }

  void GiveBack(std::string_view key, UpstreamPtr u) {
    auto it = pool.find(key);
    if (it == pool.end()) it = pool.emplace(std::string(key), std::vector<UpstreamPtr>()).first;
    if (it->second.size() >= shared.opt.max_idle_upstreams) return;
    u->idle_since = CoarseNow();
    it->second.push_back(std::move(u));
  }

  Shared& shared;
  // Declared before ioc: connections destroyed with ioc's pending handlers
  // unregister themselves here.
  std::unordered_set<Timed*> timed;
  net::io_context ioc;
  std::unordered_map<std::string, std::vector<UpstreamPtr>, StringHash, std::equal_to<>> pool;
  net::steady_timer sweep;
  RouteCache cache;
  std::string host_scratch;
  std::thread thread;
};

// --- One client connection. ---

template <class Stream>
class ClientConn : public Timed, public std::enable_shared_from_this<ClientConn<Stream>> {
  static constexpr bool kTls = !std::is_same_v<Stream, Socket>;
  using Request = http::request<http::string_body>;
  using Response = http::response<http::string_body>;
  enum class State { kHandshake, kReading, kConnecting, kUpstream, kWriting, kTunnel, kLinger };

 public:
  template <class... Args>
  ClientConn(Worker& w, bool health, Args&&... stream_args)
      : w_(w), opt_(w.shared.opt), health_(health), stream_(std::forward<Args>(stream_args)...) {
    w_.timed.insert(this);
    if (!health_) w_.shared.connections.fetch_add(1, std::memory_order_relaxed);
  }
  ~ClientConn() override {
    w_.timed.erase(this);
    if (!health_) w_.shared.connections.fetch_sub(1, std::memory_order_relaxed);
  }

  void Start() {
    ErrorCode ec;
    auto& sock = beast::get_lowest_layer(stream_);
    sock.set_option(tcp::no_delay(true), ec);
    auto ep = sock.remote_endpoint(ec);
    if (ec) return;  // already gone
    peer_ip_ = ep.address().to_string();
    trusted_proxy_ = w_.shared.Trusted(peer_ip_);
    if constexpr (kTls) {
      Arm(State::kHandshake, opt_.request_timeout);
      stream_.async_handshake(ssl::stream_base::server,
                              [self = this->shared_from_this()](const ErrorCode& ec) {
                                if (!ec) self->ReadRequest();
                              });
    } else {
      ReadRequest();
    }
  }

  void Expire() override {
    if (state_ == State::kConnecting || state_ == State::kUpstream) {
      upstream_timed_out_ = true;
      ErrorCode ec;
      if (up_) up_->Lowest().close(ec);
      return;
    }
    CloseAll();
  }

  void CloseIfIdle() override {
    // Between requests with nothing of the next one read yet, or still in the
    // TLS handshake: nothing is lost by closing.
    bool idle = state_ == State::kHandshake ||
                (state_ == State::kReading && buffer_.size() == 0 &&
                 (!parser_ || !parser_->got_some()));
    if (idle || state_ == State::kLinger) CloseAll();
  }

 private:
  void Arm(State s, std::chrono::milliseconds timeout) {
    state_ = s;
    deadline = CoarseNow() + timeout;
  }

  void CloseAll() {
    ErrorCode ec;
    beast::get_lowest_layer(stream_).close(ec);
    if (up_) up_->Lowest().close(ec);
  }

  // --- Reading the client's request. ---

  void ReadRequest() {
    Arm(State::kReading, opt_.client_idle_timeout);
    parser_.emplace();
    parser_->header_limit(opt_.max_header);
    parser_->body_limit(opt_.max_request_body);
    http::async_read_header(
        stream_, buffer_, *parser_,
        [self = this->shared_from_this()](const ErrorCode& ec, size_t) { self->OnHeader(ec); });
  }

  void OnHeader(const ErrorCode& ec) {
    if (ec) return OnReadError(ec);
    if (parser_->is_done()) return OnRequest();
    Arm(State::kReading, opt_.request_timeout);
    auto& req = parser_->get();
    if (beast::iequals(req[http::field::expect], "100-continue")) {
      // The client waits for this before sending its body.
      static const std::string kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      req.erase(http::field::expect);
      return net::async_write(stream_, net::buffer(kContinue),
                              [self = this->shared_from_this()](const ErrorCode& ec, size_t) {
                                if (!ec) self->ReadBody();
                              });
    }
    ReadBody();
  }

  void ReadBody() {
    http::async_read(stream_, buffer_, *parser_,
                     [self = this->shared_from_this()](const ErrorCode& ec, size_t) {
                       if (ec) return self->OnReadError(ec);
                       self->OnRequest();
                     });
  }

  void OnReadError(const ErrorCode& ec) {
    if (!IsParseError(ec)) return CloseAll();  // closed, reset, timed out: nobody to answer
    keep_alive_ = false;
    version_ = 11;
    if (ec == http::error::header_limit) {
      return Reply(http::status::request_header_fields_too_large,
                   "kato router: request header too large\n");
    }
    if (ec == http::error::body_limit) {
      return Reply(http::status::payload_too_large, "kato router: request body too large\n");
    }
    Reply(http::status::bad_request, "kato router: malformed request (" + ec.message() + ")\n");
  }

  // --- Routing. ---

  void OnRequest() {
    Request& req = parser_->get();
    keep_alive_ = req.keep_alive() && !w_.shared.closing.load(std::memory_order_relaxed);
    version_ = req.version() == 10 ? 10 : 11;
    head_ = req.method() == http::verb::head;
    if (health_) return OnHealth(req);

    BView host = req[http::field::host];
    if (host.empty()) {
      return Reply(http::status::bad_request, "kato router: the request has no Host header\n");
    }
    const HostRoute* route = RouteTable::Find(w_.cache.Get(), Std(host), &w_.host_scratch);
    if (!route) {
      return Reply(http::status::not_found,
                   "kato router: no app or API at host " + Printable(Std(host)) + "\n");
    }
    if (route->backends.empty()) {
      return Reply(
          http::status::service_unavailable,
          "kato router: the app at host " + Printable(Std(host)) + " has no running instance\n");
    }
    host_.assign(host.data(), host.size());  // reused capacity: usually no allocation
    PrepareUpstreamRequest(req);
    tried_ = 0;
    attempts_ = 0;
    NextBackend();
  }

  void OnHealth(const Request& req) {
    if (req.target() != "/health" ||
        (req.method() != http::verb::get && req.method() != http::verb::head)) {
      return Reply(http::status::not_found, "not found\n");
    }
    if (w_.shared.draining.load(std::memory_order_relaxed)) {
      return Reply(http::status::service_unavailable, "draining\n");
    }
    Reply(http::status::ok, "ok\n");
  }

  // Renders the request for the backend into up_head_ by hand: Beast's
  // serializer walks a chain of buffer views per field, and editing the parsed
  // fields (erase, set) allocates per field. The body was de-chunked by the
  // parser, so it goes out with a Content-Length.
  void PrepareUpstreamRequest(const Request& req) {
    websocket_ = ContainsToken(req[http::field::connection], "upgrade") &&
                 beast::iequals(req[http::field::upgrade], "websocket");
    bool had_length = req.has_content_length() || req.chunked();
    BView connection = req[http::field::connection];
    std::string& h = up_head_;
    h.clear();
    BView method = req.method_string();
    BView target = req.target();
    h.append(method.data(), method.size()).append(" ");
    h.append(target.data(), target.size()).append(" HTTP/1.1\r\n");
    xff_.clear();
    bool proto = false, fhost = false;
    for (const auto& f : req) {
      BView name = f.name_string();
      BView value = f.value();
      switch (f.name()) {
        case http::field::content_length:
        case http::field::transfer_encoding:
        case http::field::connection:
        case http::field::keep_alive:
        case http::field::proxy_connection:
        case http::field::te:
        case http::field::trailer:
        case http::field::upgrade:
          continue;
        case http::field::unknown:
          if (beast::iequals(name, "X-Forwarded-Proto")) {
            if (!trusted_proxy_) continue;  // a client's claim: ours replaces it
            proto = true;
            break;
          }
          if (beast::iequals(name, "X-Forwarded-Host")) {
            if (!trusted_proxy_) continue;
            fhost = true;
            break;
          }
          if (beast::iequals(name, "X-Forwarded-For")) {
            // Earlier proxies' addresses first, ours last (several fields merge).
            xff_.append(value.data(), value.size()).append(", ");
            continue;
          }
          break;
        default:
          break;
      }
      if (!connection.empty() && ContainsToken(connection, name)) continue;  // hop-by-hop too
      AppendField(h, name, value);
    }
    h.append("X-Forwarded-For: ").append(xff_).append(peer_ip_).append("\r\n");
    if (!proto) h.append(kTls ? "X-Forwarded-Proto: https\r\n" : "X-Forwarded-Proto: http\r\n");
    if (!fhost) AppendField(h, "X-Forwarded-Host", req[http::field::host]);
    if (websocket_) {
      h.append("Connection: Upgrade\r\n");
      AppendField(h, "Upgrade", req[http::field::upgrade]);
    }
    if (!req.body().empty() || had_length) AppendLength(h, req.body().size());
    h.append("\r\n");
  }

  static void AppendField(std::string& h, BView name, BView value) {
    h.append(name.data(), name.size()).append(": ").append(value.data(), value.size());
    h.append("\r\n");
  }

  static void AppendLength(std::string& h, size_t n) {
    char digits[24];
    auto [end, ec] = std::to_chars(digits, digits + sizeof digits, n);
    h.append("Content-Length: ").append(digits, end).append("\r\n");
  }

  // Picks the next untried backend; a new connection or an idle pooled one.
  void NextBackend() {
    const HostRoute* route = RouteTable::Find(w_.cache.Get(), host_, &w_.host_scratch);
    int idx = route ? w_.shared.table.Pick(*route, tried_) : -1;
    if (idx < 0 || attempts_ >= 64) {
      return Reply(http::status::bad_gateway, "kato router: no instance of the app at host " +
                                                  Printable(host_) + " could be reached\n");
    }
    ++attempts_;
    tried_ |= uint64_t{1} << idx;
    const BackendSlot& slot = *route->backends[static_cast<size_t>(idx)];
    key_.assign(slot.key);
    backend_ip_.assign(slot.backend.ip);
    backend_port_ = slot.backend.port;
    backend_tls_ = slot.backend.tls;
    up_ = w_.TakeIdle(key_);
    reused_ = up_ != nullptr;
    if (reused_) return SendUpstream();
    Connect();
  }

  void Connect() {
    ErrorCode ec;
    auto addr = net::ip::make_address(backend_ip_, ec);
    if (ec) return OnConnectFailed();
    if (backend_tls_ && !w_.shared.upstream_tls) {
      LogWarn("router: backend {} needs TLS and the router has no client TLS settings", key_);
      return OnConnectFailed();
    }
    up_ = backend_tls_ ? std::make_unique<Upstream>(w_.ioc, *w_.shared.upstream_tls)
                       : std::make_unique<Upstream>(w_.ioc);
    upstream_timed_out_ = false;
    Arm(State::kConnecting, opt_.connect_timeout);
    up_->Lowest().async_connect(tcp::endpoint(addr, backend_port_),
                                [self = this->shared_from_this()](const ErrorCode& ec) {
                                  if (ec) return self->OnConnectFailed();
                                  ErrorCode ignored;
                                  self->up_->Lowest().set_option(tcp::no_delay(true), ignored);
                                  if (self->up_->tls) return self->Handshake();
                                  self->SendUpstream();
                                });
  }

  // TLS backends: the handshake counts as part of connecting (same deadline);
  // a backend whose certificate does not chain to the cluster CA is not used.
  void Handshake() {
    up_->tls->async_handshake(
        ssl::stream_base::client, [self = this->shared_from_this()](const ErrorCode& ec) {
          if (!ec) return self->SendUpstream();
          if (!self->upstream_timed_out_)
            LogWarn("router: TLS with backend {} failed: {}", self->key_, ec.message());
          self->OnConnectFailed();
        });
  }

  void OnConnectFailed() {
    up_.reset();
    if (!beast::get_lowest_layer(stream_).is_open()) return;  // router stopping
    const HostRoute* route = RouteTable::Find(w_.cache.Get(), host_, &w_.host_scratch);
    if (route) {
      for (const auto& slot : route->backends) {
        if (slot->key == key_) w_.shared.table.MarkFailed(*slot);
      }
    }
    NextBackend();
  }

  // --- The upstream exchange. ---

  void SendUpstream() {
    upstream_timed_out_ = false;
    Arm(State::kUpstream, opt_.upstream_timeout);
    const std::string& body = parser_->get().body();
    std::array<net::const_buffer, 2> out{net::buffer(up_head_), net::buffer(body)};
    up_->Io([&](auto& up) {
      net::async_write(up, out, [self = this->shared_from_this()](const ErrorCode& ec, size_t) {
        if (ec) return self->OnUpstreamError(ec);
        self->ReadUpstream();
      });
    });
  }

  void ReadUpstream() {
    res_parser_.emplace();
    res_parser_->header_limit(kMaxUpstreamHeader);
    res_parser_->body_limit(opt_.max_response_body);
    if (head_) res_parser_->skip(true);
    up_->Io([&](auto& up) {
      http::async_read(up, up_->buffer, *res_parser_,
                       [self = this->shared_from_this()](const ErrorCode& ec, size_t) {
                         if (ec) return self->OnUpstreamError(ec);
                         self->OnUpstreamResponse();
                       });
    });
  }

  void OnUpstreamError(const ErrorCode& ec) {
    bool got_some = res_parser_ && res_parser_->got_some();
    up_.reset();
    if (upstream_timed_out_) {
      return Reply(
          http::status::gateway_timeout,
          "kato router: the app at host " + Printable(host_) + " did not answer in time\n");
    }
    if (reused_ && !got_some) {
      // The backend closed the idle connection as we reused it: the request
      // was never processed, so send it again on a fresh connection.
      reused_ = false;
      res_parser_.reset();
      return Connect();
    }
    if (Idempotent() && ec != http::error::body_limit && !IsParseError(ec)) {
      // The instance went away while the request was in flight (it died, or
      // its DEA did), maybe midway through its response. Responses are
      // buffered, so nothing has reached the client yet: another instance can
      // safely take an idempotent request, as nginx's proxy_next_upstream does.
      res_parser_.reset();
      return OnConnectFailed();
    }
    std::string what = ec == http::error::body_limit ? "sent a response over the router's limit"
                       : IsParseError(ec)            ? "sent a malformed response"
                                                     : "closed the connection";
    Reply(http::status::bad_gateway,
          "kato router: the app at host " + Printable(host_) + " " + what + "\n");
  }

  bool Idempotent() const {
    switch (parser_->get().method()) {
      case http::verb::get:
      case http::verb::head:
      case http::verb::options:
      case http::verb::put:
      case http::verb::delete_:
      case http::verb::trace:
        return true;
      default:
        return false;
    }
  }

  void OnUpstreamResponse() {
    Response& res = res_parser_->get();
    bool switching = res.result() == http::status::switching_protocols;
    if (switching && websocket_) return StartTunnel();
    if (res.keep_alive() && up_->buffer.size() == 0 && !switching) {
      w_.GiveBack(key_, std::move(up_));
    }
    up_.reset();
    WriteResponse(res);
  }

  // --- Answers to the client. ---

  void Reply(http::status status, std::string body) {
    own_.emplace();
    own_->version(version_);
    own_->result(status);
    own_->set(http::field::server, "kato");
    own_->set(http::field::content_type, "text/plain; charset=utf-8");
    own_->body() = std::move(body);
    own_->content_length(own_->body().size());
    own_->keep_alive(keep_alive_);
    if (head_) own_->body().clear();  // Content-Length stays as for GET
    WriteResponse(*own_);
  }

  // Renders the header for the client by hand (see PrepareUpstreamRequest)
  // into out_head_: hop-by-hop fields go, framing and Connection are ours.
  void RenderResponseHead(const Response& res) {
    unsigned status = res.result_int();
    // No body follows whatever Content-Length says: pass that through as it is.
    bool bodiless = head_ || status / 100 == 1 || status == 204 || status == 304;
    BView connection = res[http::field::connection];
    std::string& h = out_head_;
    h.clear();
    char code[4] = {char('0' + status / 100 % 10), char('0' + status / 10 % 10),
                    char('0' + status % 10), ' '};
    h.append(version_ == 10 ? "HTTP/1.0 " : "HTTP/1.1 ").append(code, sizeof code);
    BView reason = res.reason();
    h.append(reason.data(), reason.size()).append("\r\n");
    for (const auto& f : res) {
      switch (f.name()) {
        case http::field::content_length:
          if (!bodiless) continue;
          break;
        case http::field::transfer_encoding:
        case http::field::connection:
        case http::field::keep_alive:
        case http::field::proxy_connection:
        case http::field::te:
        case http::field::trailer:
        case http::field::upgrade:
          continue;
        default:
          break;
      }
      if (!connection.empty() && ContainsToken(connection, f.name_string())) continue;
      AppendField(h, f.name_string(), f.value());
    }
    if (!bodiless) AppendLength(h, res.body().size());
    if (version_ == 11 && !keep_alive_) h.append("Connection: close\r\n");
    if (version_ == 10 && keep_alive_) h.append("Connection: keep-alive\r\n");
    h.append("\r\n");
  }

  void WriteResponse(const Response& res) {
    Arm(State::kWriting, opt_.request_timeout);
    if (w_.shared.closing.load(std::memory_order_relaxed)) keep_alive_ = false;
    RenderResponseHead(res);
    std::array<net::const_buffer, 2> out{net::buffer(out_head_), net::buffer(res.body())};
    net::async_write(stream_, out, [self = this->shared_from_this()](const ErrorCode& ec, size_t) {
      if (ec) return self->CloseAll();
      // Bodies can be large: hold no memory while the connection idles.
      self->own_.reset();
      self->res_parser_.reset();
      self->parser_.reset();
      if (self->keep_alive_) return self->ReadRequest();
      self->Linger();
    });
  }

  // Closing right after a rejected request (maybe with a body still in flight)
  // would answer with a TCP reset that can destroy the response before the
  // client reads it: so half-close and discard input until the peer closes.
  void Linger() {
    ErrorCode ec;
    if constexpr (kTls) return CloseAll();
    beast::get_lowest_layer(stream_).shutdown(Socket::shutdown_send, ec);
    Arm(State::kLinger, std::chrono::duration_cast<std::chrono::milliseconds>(kLingerFor));
    Discard();
  }

  void Discard() {
    drain_.resize(4096);
    beast::get_lowest_layer(stream_).async_read_some(
        net::buffer(drain_), [self = this->shared_from_this()](const ErrorCode& ec, size_t) {
          if (ec) return self->CloseAll();
          self->Discard();
        });
  }

  // --- WebSocket tunnel. ---

  void StartTunnel() {
    Response& res = res_parser_->get();
    res.version(11);
    Arm(State::kTunnel, opt_.tunnel_idle_timeout);
    http::async_write(stream_, res, [self = this->shared_from_this()](const ErrorCode& ec, size_t) {
      if (ec) return self->CloseAll();
      self->FlushLeftovers();
    });
  }

  // Bytes read past the request or the 101 response belong to the tunnel.
  void FlushLeftovers() {
    to_up_.resize(kTunnelBuffer);
    to_client_.resize(kTunnelBuffer);
    size_t from_client = buffer_.size();
    size_t from_up = up_->buffer.size();
    auto self = this->shared_from_this();
    if (from_client > 0) {
      pending_writes_++;
      std::vector<char> copy(net::buffers_begin(buffer_.data()), net::buffers_end(buffer_.data()));
      buffer_.consume(from_client);
      auto data = std::make_shared<std::vector<char>>(std::move(copy));
      up_->Io([&](auto& up) {
        net::async_write(up, net::buffer(*data), [self, data](const ErrorCode& ec, size_t) {
          if (ec) return self->CloseAll();
          if (--self->pending_writes_ == 0) self->Pump();
        });
      });
    }
    if (from_up > 0) {
      pending_writes_++;
      std::vector<char> copy(net::buffers_begin(up_->buffer.data()),
                             net::buffers_end(up_->buffer.data()));
      up_->buffer.consume(from_up);
      auto data = std::make_shared<std::vector<char>>(std::move(copy));
      net::async_write(stream_, net::buffer(*data), [self, data](const ErrorCode& ec, size_t) {
        if (ec) return self->CloseAll();
        if (--self->pending_writes_ == 0) self->Pump();
      });
    }
    if (pending_writes_ == 0) Pump();
  }

  void Pump() {
    ClientToUpstream();
    UpstreamToClient();
  }

  void ClientToUpstream() {
    stream_.async_read_some(
        net::buffer(to_up_), [self = this->shared_from_this()](const ErrorCode& ec, size_t n) {
          if (ec) return self->TunnelEnded(true);
          self->deadline = CoarseNow() + self->opt_.tunnel_idle_timeout;
          self->up_->Io([&](auto& up) {
            net::async_write(up, net::buffer(self->to_up_.data(), n),
                             [self](const ErrorCode& ec, size_t) {
                               if (ec) return self->CloseAll();
                               self->ClientToUpstream();
                             });
          });
        });
  }

  void UpstreamToClient() {
    up_->Io([&](auto& up) {
      up.async_read_some(net::buffer(to_client_),
                         [self = this->shared_from_this()](const ErrorCode& ec, size_t n) {
                           if (ec) return self->TunnelEnded(false);
                           self->deadline = CoarseNow() + self->opt_.tunnel_idle_timeout;
                           net::async_write(self->stream_, net::buffer(self->to_client_.data(), n),
                                            [self](const ErrorCode& ec, size_t) {
                                              if (ec) return self->CloseAll();
                                              self->UpstreamToClient();
                                            });
                         });
    });
  }

  // One direction reached its end: pass the half-close on (plain TCP), or
  // close both when the other direction already ended or TLS cannot half-close.
  void TunnelEnded(bool client_side) {
    ++ended_;
    ErrorCode ec;
    if (kTls || up_->tls || ended_ == 2) return CloseAll();
    if (client_side) {
      up_->socket.shutdown(Socket::shutdown_send, ec);
    } else {
      beast::get_lowest_layer(stream_).shutdown(Socket::shutdown_send, ec);
    }
    if (ec) CloseAll();
  }

  Worker& w_;
  const RouterOptions& opt_;
  const bool health_;
  Stream stream_;
  beast::flat_buffer buffer_;
  State state_ = State::kReading;
  std::string peer_ip_;
  bool trusted_proxy_ = false;  // peer is one of the cluster's load balancers
  std::string xff_;             // incoming X-Forwarded-For values (capacity reused)

  std::optional<http::request_parser<http::string_body>> parser_;
  std::optional<http::response_parser<http::string_body>> res_parser_;
  std::optional<Response> own_;
  bool keep_alive_ = true;
  unsigned version_ = 11;
  bool head_ = false;
  bool websocket_ = false;

  std::string host_;
  std::string up_head_, out_head_;  // rendered headers, capacity reused
  std::string key_;
  std::string backend_ip_;
  uint16_t backend_port_ = 0;
  bool backend_tls_ = false;
  uint64_t tried_ = 0;
  int attempts_ = 0;
  UpstreamPtr up_;
  bool reused_ = false;
  bool upstream_timed_out_ = false;

  std::vector<char> drain_, to_up_, to_client_;
  int pending_writes_ = 0;
  int ended_ = 0;
};

// --- Listeners. ---

enum class Kind { kHttp, kHttps, kHealth };

class Listener {
 public:
  Listener(Shared& shared, std::vector<std::unique_ptr<Worker>>& workers, Kind kind)
      : shared_(shared),
        workers_(workers),
        kind_(kind),
        acceptor_(workers[0]->ioc),
        retry_(workers[0]->ioc) {}

  Status Bind(const std::string& ip, int port, const char* what) {
    ErrorCode ec;
    auto addr = net::ip::make_address(ip, ec);
    if (ec) return Err("router: '" + ip + "' is not an IP address");
    tcp::endpoint ep(addr, static_cast<uint16_t>(port));
    acceptor_.open(ep.protocol(), ec);
    if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(ep, ec);
    if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
    if (ec) {
      return Err(std::string("router: cannot listen for ") + what + " on " + ip + ":" +
                 std::to_string(port) + ": " + ec.message() +
                 " (is another process using the port?)");
    }
    port_ = acceptor_.local_endpoint(ec).port();
    return Ok();
  }

  int port() const { return port_; }
  Kind kind() const { return kind_; }
  // On workers[0]'s thread: no new connections (pending accepts are aborted).
  void Close() {
    ErrorCode ec;
    acceptor_.close(ec);
    retry_.cancel();
  }
  void Accept() {
    Worker& w = *workers_[next_++ % workers_.size()];
    acceptor_.async_accept(w.ioc.get_executor(), [this, &w](const ErrorCode& ec, Socket socket) {
      if (ec == net::error::operation_aborted) return;
      if (ec) {
        // Out of descriptors, most likely: back off instead of spinning.
        LogWarn("router: accept failed: {}", ec.message());
        retry_.expires_after(std::chrono::milliseconds(100));
        retry_.async_wait([this](const ErrorCode& ec) {
          if (!ec) Accept();
        });
        return;
      }
      net::post(w.ioc, [this, &w, s = std::move(socket)]() mutable { Serve(w, std::move(s)); });
      Accept();
    });
  }

 private:
  void Serve(Worker& w, Socket socket) {
    if (kind_ == Kind::kHttps) {
      std::make_shared<ClientConn<ssl::stream<Socket>>>(w, false, std::move(socket), *shared_.tls)
          ->Start();
    } else {
      std::make_shared<ClientConn<Socket>>(w, kind_ == Kind::kHealth, std::move(socket))->Start();
    }
  }

  Shared& shared_;
  std::vector<std::unique_ptr<Worker>>& workers_;
  const Kind kind_;
  tcp::acceptor acceptor_;
  net::steady_timer retry_;
  size_t next_ = 0;
  int port_ = 0;
};

Status MakeTlsContext(const ServerTls& tls, std::optional<ssl::context>& out) {
  out.emplace(ssl::context::tls_server);
  ErrorCode ec;
  out->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                       ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 |
                       ssl::context::single_dh_use,
                   ec);
  std::string chain = tls.cert_pem;
  if (!chain.empty() && chain.back() != '\n') chain += '\n';
  chain += tls.chain_pem;
  out->use_certificate_chain(net::buffer(chain), ec);
  if (ec) return Err("router: the TLS certificate is not valid PEM: " + ec.message());
  out->use_private_key(net::buffer(tls.key_pem), ssl::context::pem, ec);
  if (ec) return Err("router: the TLS key is not a valid PEM private key: " + ec.message());
  return Ok();
}

// For TLS backends: verify them against tls.ca_pem, show tls.cert_pem.
Status MakeUpstreamTlsContext(const ClientTls& tls, std::optional<ssl::context>& out) {
  out.emplace(ssl::context::tls_client);
  ErrorCode ec;
  out->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                       ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1,
                   ec);
  out->add_certificate_authority(net::buffer(tls.ca_pem), ec);
  if (ec) return Err("router: the CA for TLS backends is not valid PEM: " + ec.message());
  out->set_verify_mode(ssl::verify_peer);
  if (tls.cert_pem.empty()) return Ok();
  out->use_certificate_chain(net::buffer(tls.cert_pem), ec);
  if (ec) return Err("router: the client certificate is not valid PEM: " + ec.message());
  out->use_private_key(net::buffer(tls.key_pem), ssl::context::pem, ec);
  if (ec) return Err("router: the client key is not a valid PEM private key: " + ec.message());
  return Ok();
}

}  // namespace

struct Router::Impl {
  Impl(RouterOptions o, const RouteTable& t) : shared(std::move(o), t) {}
  Shared shared;
  // Destroyed in reverse order: listeners (on workers[0]'s io_context) first.
  std::vector<std::unique_ptr<Worker>> workers;
  std::vector<std::unique_ptr<Listener>> listeners;
  std::vector<net::executor_work_guard<net::io_context::executor_type>> guards;
  int port = 0, tls_port = 0, health_port = 0;
  bool started = false;
};

Router::Router(RouterOptions options, const RouteTable& routes)
    : impl_(std::make_unique<Impl>(std::move(options), routes)) {}

Router::~Router() { Stop(); }

Status Router::Start() {
  Impl& im = *impl_;
  if (im.started) return Err("router: already started");
  const RouterOptions& opt = im.shared.opt;
  if (opt.tls) KATO_TRY(MakeTlsContext(*opt.tls, im.shared.tls));
  if (opt.upstream_tls) KATO_TRY(MakeUpstreamTlsContext(*opt.upstream_tls, im.shared.upstream_tls));
  int threads = std::max(1, opt.threads);
  // With one worker every socket and timer lives on its thread (Start sets
  // them up before the thread runs), so the reactor's per-descriptor locks
  // can go; Stop's ioc.stop() goes through the scheduler, which stays locked.
  // Several workers share workers[0]'s acceptors: they need the locks.
  int hint = threads == 1 ? BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO : 1;
  for (int i = 0; i < threads; ++i) {
    im.workers.push_back(std::make_unique<Worker>(im.shared, hint));
  }

  auto add = [&](Kind kind, int port, const char* what, int* bound) -> Status {
    auto l = std::make_unique<Listener>(im.shared, im.workers, kind);
    KATO_TRY(l->Bind(opt.ip, port, what));
    *bound = l->port();
    im.listeners.push_back(std::move(l));
    return Ok();
  };
  Status s = add(Kind::kHttp, opt.port, "HTTP", &im.port);
  if (s.ok() && opt.tls) s = add(Kind::kHttps, opt.tls_port, "HTTPS", &im.tls_port);
  if (s.ok() && opt.health_port)
    s = add(Kind::kHealth, *opt.health_port, "health checks", &im.health_port);
  if (!s.ok()) {
    im.listeners.clear();
    im.workers.clear();
    return s;
  }
  for (auto& l : im.listeners) l->Accept();
  for (auto& w : im.workers) {
    im.guards.push_back(net::make_work_guard(w->ioc));
    w->StartSweep();
    w->thread = std::thread([io = &w->ioc] {
      ErrorCode ec;
      io->run(ec);
    });
  }
  im.started = true;
  return Ok();
}

void Router::Stop() {
  Impl& im = *impl_;
  if (!im.started) return;
  im.started = false;
  for (auto& w : im.workers) w->ioc.stop();
  for (auto& w : im.workers) {
    if (w->thread.joinable()) w->thread.join();
  }
  im.guards.clear();
  im.listeners.clear();
  im.workers.clear();  // destroys every connection with its io_context's handlers
}

void Router::Drain(std::chrono::milliseconds notice, std::chrono::milliseconds limit) {
  Impl& im = *impl_;
  if (!im.started) return;
  SetDraining(true);
  // Load balancers poll /health: give them this long to stop sending here.
  std::this_thread::sleep_for(notice);
  std::promise<void> closed;
  net::post(im.workers[0]->ioc, [&] {
    for (auto& l : im.listeners)
      if (l->kind() != Kind::kHealth) l->Close();
    closed.set_value();
  });
  closed.get_future().wait();
  im.shared.closing.store(true);  // the sweeps close idle connections from now on
  auto deadline = Steady::now() + limit;
  while (im.shared.connections.load() > 0 && Steady::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  if (int left = im.shared.connections.load(); left > 0)
    LogWarn("router: {} connection(s) still busy after {} ms of draining: closing them", left,
            limit.count());
  Stop();
}

int Router::port() const { return impl_->port; }
int Router::tls_port() const { return impl_->tls_port; }
int Router::health_port() const { return impl_->health_port; }
void Router::SetDraining(bool draining) { impl_->shared.draining.store(draining); }

void Router::SetTrustedProxies(const std::vector<std::string>& ips) {
  std::lock_guard lock(impl_->shared.trusted_mu);
  impl_->shared.trusted = std::set<std::string>(ips.begin(), ips.end());
}

}  // namespace kato
