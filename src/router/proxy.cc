// The router's data path. Beast/Asio stay in this file.
//
// Every connection belongs to one Worker (one io_context run by one thread),
// so nothing here takes a lock per request. Timeouts are coarse: each
// connection keeps a deadline that its worker's sweep (every kSweepEvery)
// enforces, which costs one clock read per I/O step instead of a timer
// reschedule.
//
// An exchange (one request and its response) moves through: the request
// header (Beast's parser), a backend (pooled or connected), up to
// kReplayLimit of request body read ahead ("pre-read", kept for a retry),
// the upstream request, then the response relayed piece by piece through a
// kRelayBuffer buffer while the rest of a large request body is relayed the
// other way (the pump). Bodies are framed by BodyIn (what arrives) and
// FrameBody (what leaves): Content-Length bodies are read straight into the
// relay buffer, chunked ones go through the parser (buffer_body).
#include "router/proxy.h"

#include <openssl/ssl.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <charconv>
#include <cstring>
#include <ctime>
#include <future>
#include <limits>
#include <mutex>
#include <set>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/log.h"
#include "common/pki.h"
#include "router/access_log.h"
#include "router/body_relay.h"
#include "router/cert_set.h"
#include "router/metrics.h"

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

using namespace router_detail;  // NOLINT: the data path's own pieces (body_relay.h, cert_set.h)

std::string_view Std(BView v) { return {v.data(), v.size()}; }

constexpr auto kSweepEvery = std::chrono::milliseconds(250);
constexpr uint64_t kFlushSessionsEvery = 240;  // sweeps: a minute
constexpr auto kLingerFor = std::chrono::seconds(2);
constexpr uint32_t kMaxUpstreamHeader = 64 * 1024;
constexpr size_t kTunnelBuffer = 16 * 1024;
constexpr size_t kReplayLimit = 64 * 1024;  // request body read ahead (and kept for a retry)
static_assert(kReplayLimit <= kRelayBuffer, "the read-ahead lives in a relay buffer");
constexpr uint64_t kNoLimit = std::numeric_limits<uint64_t>::max();

// Deadlines only need the sweep's precision: the coarse clock (a few ms) is
// a plain memory read, where steady_clock costs a TSC read per I/O step.
Steady::time_point CoarseNow() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);  // the clock steady_clock reads, coarsely
  return Steady::time_point(std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec));
}

int64_t WallMs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME_COARSE, &ts);
  return int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1'000'000;
}

double Seconds(Steady::duration d) { return std::chrono::duration<double>(d).count(); }

bool IsParseError(const ErrorCode& ec) {
  return ec.category() == http::make_error_code(http::error::end_of_stream).category() &&
         ec != http::error::end_of_stream && ec != http::error::partial_message;
}


template <class F>
void ForEachToken(BView list, F&& f) {
  // Comma-separated, case-insensitive (RFC 9110 5.6.1).
  size_t i = 0;
  while (i <= list.size()) {
    size_t comma = list.find(',', i);
    if (comma == BView::npos) comma = list.size();
    BView item = list.substr(i, comma - i);
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    if (!item.empty()) f(item);
    i = comma + 1;
  }
}

bool ContainsToken(BView list, BView token) {
  bool found = false;
  ForEachToken(list, [&](BView item) { found = found || beast::iequals(item, token); });
  return found;
}

std::string Printable(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 200)) out += (c >= 0x20 && c < 0x7f) ? c : '?';
  return out;
}

void AppendField(std::string& h, BView name, BView value) {
  h.append(name.data(), name.size()).append(": ").append(value.data(), value.size());
  h.append("\r\n");
}

void AppendLength(std::string& h, uint64_t n) {
  char digits[24];
  auto [end, ec] = std::to_chars(digits, digits + sizeof digits, n);
  h.append("Content-Length: ").append(digits, end).append("\r\n");
}

bool HopByHop(http::field f) {
  switch (f) {
    case http::field::content_length:
    case http::field::transfer_encoding:
    case http::field::connection:
    case http::field::keep_alive:
    case http::field::proxy_connection:
    case http::field::te:
    case http::field::trailer:
    case http::field::upgrade:
      return true;
    default:
      return false;
  }
}

// --- Shared state and workers. ---

struct Shared {
  Shared(RouterOptions o, const RouteTable& t, int shards)
      : opt(std::move(o)), table(t), metrics(shards) {}
  const RouterOptions opt;
  const RouteTable& table;
  std::atomic<bool> draining{false};
  std::atomic<bool> closing{false};  // Drain: finish what is in flight, keep nothing alive
  std::atomic<int> connections{0};   // client connections (not health checks)
  int max_connections = 0;
  std::optional<ssl::context> upstream_tls;  // for backends with `tls`
  RouterMetrics metrics;
  std::unique_ptr<AccessLog> access_log;

  std::shared_ptr<CertSet> Certs() {
    std::lock_guard lock(certs_mu);
    return certs;
  }
  std::mutex certs_mu;
  std::shared_ptr<CertSet> certs;  // GUARDED_BY(certs_mu)

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
  // An idle connection is usable if the backend has neither closed it nor
  // sent anything unasked (a close_notify, garbage): nothing to read.
  bool StillIdle() {
    char c;
    ssize_t n = ::recv(Lowest().native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && buffer.size() == 0;
  }
  Socket socket;  // unused with TLS
  std::optional<ssl::stream<Socket>> tls;
  beast::flat_buffer buffer;
  Steady::time_point idle_since;
};

using UpstreamPtr = std::unique_ptr<Upstream>;

struct Worker {
  Worker(Shared& s, int i, int concurrency_hint)
      : index(i),
        shared(s),
        metrics(s.metrics.shard(i)),
        ioc(concurrency_hint),
        sweep(ioc),
        cache(s.table) {}

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
      pooled = 0;
    }
    for (auto& [key, idle] : pool) {
      pooled -= std::erase_if(idle, [&](const UpstreamPtr& u) {
        return u->idle_since + shared.opt.upstream_idle_timeout <= now;
      });
    }
    if (shared.access_log) shared.access_log->Flush(log_buffer);
    if (index == 0 && ++sweeps % kFlushSessionsEvery == 0) FlushSessions();
  }

  // Drops expired TLS sessions from the caches (the cache evicts the oldest
  // when full, but only this removes the expired ones).
  void FlushSessions() {
    auto certs = shared.Certs();
    if (!certs) return;
    long now = static_cast<long>(std::time(nullptr));
    for (const auto& ctx : certs->contexts) SSL_CTX_flush_sessions(ctx->native_handle(), now);
  }

  // The most recently pooled connection to `key`. With `check`, one the
  // backend has not closed meanwhile (a syscall: only for requests that could
  // not be sent again if the connection turned out dead).
  UpstreamPtr TakeIdle(std::string_view key, bool check) {
    auto it = pool.find(key);
    if (it == pool.end()) return nullptr;
    while (!it->second.empty()) {
      UpstreamPtr u = std::move(it->second.back());
      it->second.pop_back();
      --pooled;
      if (!check || u->StillIdle()) return u;
    }
    return nullptr;
  }

  void GiveBack(std::string_view key, UpstreamPtr u) {
    auto it = pool.find(key);
    if (it == pool.end()) it = pool.emplace(std::string(key), std::vector<UpstreamPtr>()).first;
    if (it->second.size() >= shared.opt.max_idle_upstreams || pooled >= max_pooled) return;
    u->idle_since = CoarseNow();
    it->second.push_back(std::move(u));
    ++pooled;
  }

  // Relay buffers (kRelayBuffer bytes) are lent to exchanges while they move
  // bodies, and kept here for the next ones (at most kFreeBuffers).
  using Buffer = std::unique_ptr<char[]>;
  static constexpr size_t kFreeBuffers = 64;
  Buffer TakeBuffer() {
    if (free_buffers.empty()) return Buffer(new char[kRelayBuffer]);
    Buffer b = std::move(free_buffers.back());
    free_buffers.pop_back();
    return b;
  }
  void GiveBack(Buffer b) {
    if (b && free_buffers.size() < kFreeBuffers) free_buffers.push_back(std::move(b));
  }

  const int index;
  Shared& shared;
  RouterMetrics::Shard& metrics;
  AccessLog::Buffer log_buffer;
  std::vector<Buffer> free_buffers;
  uint64_t sweeps = 0;
  // Declared before ioc: connections destroyed with ioc's pending handlers
  // unregister themselves here.
  std::unordered_set<Timed*> timed;
  net::io_context ioc;
  std::unordered_map<std::string, std::vector<UpstreamPtr>, StringHash, std::equal_to<>> pool;
  size_t pooled = 0;      // connections in `pool`
  size_t max_pooled = 0;  // set by Router::Start
  net::steady_timer sweep;
  RouteCache cache;
  std::string host_scratch;
  std::thread thread;
};

// --- One client connection. ---

template <class Stream>
class ClientConn : public Timed, public std::enable_shared_from_this<ClientConn<Stream>> {
  static constexpr bool kTls = !std::is_same_v<Stream, Socket>;
  using RequestParser = http::request_parser<http::buffer_body>;
  using ResponseParser = http::response_parser<http::buffer_body>;
  enum class State {
    kHandshake,   // TLS handshake
    kIdle,        // between requests, nothing of the next one read
    kHeader,      // reading a request header
    kConnecting,  // to a backend
    kExchange,    // request and response under way
    kWriting,     // the router's own answer
    kTunnel,      // WebSocket
    kLinger,      // half-closed after a final answer
  };

 public:
  template <class... Args>
  ClientConn(Worker& w, bool health, std::shared_ptr<CertSet> certs, Args&&... stream_args)
      : w_(w),
        opt_(w.shared.opt),
        health_(health),
        certs_(std::move(certs)),
        stream_(std::forward<Args>(stream_args)...) {
    w_.timed.insert(this);  // counted in shared.connections when accepted (Listener::Hand)
  }
  ~ClientConn() override {
    // Freed without a close_notify exchanged, OpenSSL would drop the session
    // from the cache (no resumption): mark the connection as shut down, as nginx does.
    if constexpr (kTls) SSL_set_shutdown(stream_.native_handle(), SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    w_.timed.erase(this);
    if (!health_) w_.shared.connections.fetch_sub(1, std::memory_order_relaxed);
  }

  void Start() {
    ErrorCode ec;
    auto& sock = beast::get_lowest_layer(stream_);
    sock.set_option(tcp::no_delay(true), ec);
    auto ep = sock.remote_endpoint(ec);
    if (ec) return;  // already gone
    if constexpr (!kTls) sock.non_blocking(true, ec);  // for the writes and reads at once
    peer_ip_ = ep.address().to_string();
    trusted_proxy_ = w_.shared.Trusted(peer_ip_);
    if constexpr (kTls) {
      Arm(State::kHandshake, opt_.header_timeout);  // a handshake is part of the first request
      stream_.async_handshake(ssl::stream_base::server,
                              [self = this->shared_from_this()](const ErrorCode& ec) {
                                if (!ec) self->ReadRequest();
                              });
    } else {
      ReadRequest();
    }
  }

  void Expire() override {
    switch (state_) {
      case State::kConnecting:
        upstream_timed_out_ = true;
        if (up_) up_->Lowest().close(ignored_);  // the connect's handler moves on
        return;
      case State::kExchange:
        // Reading the body ahead: the client is the slow one, and no upstream
        // operation would notice a closed backend.
        if (pre_reading_) return CloseAll();
        if (!response_started_ && !client_writing_ && up_) {
          upstream_timed_out_ = true;  // the exchange's handlers answer 504
          up_->Lowest().close(ignored_);
          return;
        }
        return CloseAll();
      case State::kIdle:
        return IdleExpired();
      case State::kHeader:
        if (!client_writing_ && parser_ && (parser_->got_some() || buffer_.size() > 0)) {
          // Slow headers (slowloris): the pending read goes, a 408 is the answer.
          header_timed_out_ = true;
          beast::get_lowest_layer(stream_).cancel(ignored_);
          BeginExchange();
          return Refuse(http::status::request_timeout,
                        "kato router: the request header did not arrive in time\n");
        }
        return CloseAll();
      default:
        return CloseAll();
    }
  }

  void CloseIfIdle() override {
    // Between requests with nothing of the next one read yet, still in the
    // TLS handshake, or after the last answer: nothing is lost by closing.
    bool waiting = state_ == State::kIdle && buffer_.size() == 0 && parser_ && !parser_->got_some();
    if (state_ == State::kHandshake || waiting || state_ == State::kLinger) CloseAll();
  }

 private:
  void Arm(State s, std::chrono::milliseconds timeout) {
    state_ = s;
    deadline = CoarseNow() + timeout;
  }
  // Traffic moved: the exchange's silence deadline starts again.
  void Touch() { deadline = CoarseNow() + opt_.upstream_timeout; }

  void CloseAll() {
    beast::get_lowest_layer(stream_).close(ignored_);
    if (up_) up_->Lowest().close(ignored_);
  }
  bool ClientOpen() { return beast::get_lowest_layer(stream_).is_open(); }

  // --- Reading the client's request. ---

  // Waits for the next request. Plain: for the socket to be readable, then
  // the header has header_timeout from its first byte (waiting first also
  // spares a read that would fail with EAGAIN on every keep-alive request).
  // TLS cannot tell from the socket whether decrypted bytes wait in the
  // stream: the header read starts at once, and the sweep tells idling from
  // a header in progress (IdleExpired).
  void ReadRequest() {
    parser_.reset();
    res_parser_.reset();
    w_.GiveBack(std::move(pre_));  // the exchange is over: an idle connection holds no buffer
    w_.GiveBack(std::move(req_buf_));
    w_.GiveBack(std::move(res_buf_));
    if (buffer_.size() > 0) return ReadHeader();  // pipelined: the next request is here
    buffer_.shrink_to_fit();
    idle_since_ = CoarseNow();
    if constexpr (kTls) {
      ReadHeader();
      state_ = State::kIdle;
      deadline = idle_since_ + std::min(opt_.header_timeout, opt_.keepalive_timeout);
    } else {
      Arm(State::kIdle, opt_.keepalive_timeout);
      stream_.async_wait(Socket::wait_read, [self = this->shared_from_this()](const ErrorCode& ec) {
        if (ec) return self->CloseAll();
        self->ReadHeaderNow();
      });
    }
  }

  void ReadHeader() {
    StartHeader();
    http::async_read_header(
        stream_, buffer_, *parser_,
        [self = this->shared_from_this()](const ErrorCode& ec, size_t) { self->OnHeader(ec); });
  }
  void StartHeader() {
    Arm(State::kHeader, opt_.header_timeout);
    parser_.emplace();
    parser_->header_limit(opt_.max_header);
    parser_->body_limit(kNoLimit);  // the router counts (max_request_body)
  }

  // Plain, the socket readable: the header is read at once (non-blocking), and
  // only a header still incomplete waits on asynchronously. Only from the
  // wait's handler: pipelined requests go through the queue, so that a client
  // cannot nest one answer in the next.
  void ReadHeaderNow() {
    StartHeader();
    ErrorCode ec;
    http::read_header(stream_, buffer_, *parser_, ec);
    if (ec != net::error::would_block && ec != net::error::try_again) return OnHeader(ec);
    http::async_read_header(
        stream_, buffer_, *parser_,
        [self = this->shared_from_this()](const ErrorCode& ec, size_t) { self->OnHeader(ec); });
  }

  // The sweep's look at a connection waiting for a request (kIdle). TLS:
  // bytes of a header have come since the last look, so the header gets
  // header_timeout from now (from its first byte, give or take one look).
  // Otherwise nothing came, and the connection idles on until keepalive_timeout.
  void IdleExpired() {
    auto now = CoarseNow();
    if (parser_ && (parser_->got_some() || buffer_.size() > 0)) {
      state_ = State::kHeader;
      deadline = now + opt_.header_timeout;
      return;
    }
    if (idle_since_ + opt_.keepalive_timeout <= now) return CloseAll();
    deadline = std::min(now + opt_.header_timeout, idle_since_ + opt_.keepalive_timeout);
  }

  void OnHeader(const ErrorCode& ec) {
    if (header_timed_out_) return;  // the 408 is on its way
    if (ec) return OnReadError(ec);
    BeginExchange();
    auto& req = parser_->get();
    keep_alive_ = req.keep_alive() && !w_.shared.closing.load(std::memory_order_relaxed);
    version_ = req.version() == 10 ? 10 : 11;
    head_ = req.method() == http::verb::head;
    // The body's framing first: an answer that leaves a body unread must close.
    if (req.chunked()) {
      req_in_.Start(Framing::kChunked, 0, &*parser_);
    } else if (req.has_content_length()) {
      req_in_.Start(Framing::kLength, *parser_->content_length(), &*parser_);
    } else {
      req_in_.Start(Framing::kNone, 0, &*parser_);
    }
    had_length_ = req.has_content_length() || req.chunked();
    if (auto bad = CheckRequest(req)) return Refuse(bad->first, bad->second);
    if (health_) return OnHealth(req);
    if (opt_.max_request_body && req.has_content_length() &&
        *parser_->content_length() > opt_.max_request_body) {
      return Refuse(http::status::payload_too_large, "kato router: request body too large\n");
    }

    BView host = req[http::field::host];
    const HostRoute* route = RouteTable::Find(w_.cache.Get(), Std(host), &w_.host_scratch);
    stats_ = w_.metrics.App(route ? AppOfHost(w_.host_scratch) : std::string_view());
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
    expect_continue_ = version_ == 11 && beast::iequals(req[http::field::expect], "100-continue");
    PrepareUpstreamRequest(req);
    NextBackend();
  }

  void BeginExchange() {
    started_at_ = Steady::now();
    upstream_header_at_ = {};
    bytes_out_ = 0;
    body_in_ = 0;
    status_ = 0;
    stats_ = nullptr;
    tried_ = 0;
    attempts_ = 0;
    pre_len_ = 0;
    response_started_ = interim_sent_ = streaming_ = pump_active_ = discard_ = false;
    own_answer_ = recorded_ = pre_reading_ = false;
    retired_.reset();
    continue_sent_ = expect_continue_ = false;
    upstream_timed_out_ = false;
    key_.clear();
    req_in_.Start(Framing::kNone, 0, nullptr);
    res_in_.Start(Framing::kNone, 0, nullptr);
  }

  // What HTTP/1.1 says a proxy must refuse, before anything is forwarded.
  std::optional<std::pair<http::status, std::string>> CheckRequest(
      const http::request<http::buffer_body>& req) {
    if (req.target().size() > opt_.max_request_line)
      return std::pair{http::status::uri_too_long, std::string("kato router: request line too long\n")};
    size_t fields = 0, hosts = 0;
    int codings = 0, chunked = 0;
    bool last_chunked = false;
    for (const auto& f : req) {
      ++fields;
      if (f.name() == http::field::host) ++hosts;
      if (f.name() == http::field::transfer_encoding) {
        ForEachToken(f.value(), [&](BView t) {
          ++codings;
          last_chunked = beast::iequals(t, "chunked");
          chunked += last_chunked;
        });
      }
    }
    if (fields > opt_.max_header_fields)
      return std::pair{http::status::request_header_fields_too_large,
                       "kato router: more than " + std::to_string(opt_.max_header_fields) +
                           " header fields\n"};
    if (hosts == 0 && (version_ == 11 || !health_))
      return std::pair{http::status::bad_request,
                       std::string("kato router: the request has no Host header\n")};
    if (hosts > 1)
      return std::pair{http::status::bad_request,
                       std::string("kato router: the request has several Host headers\n")};
    if (codings > 0) {
      // RFC 9112 6.1: chunked exactly once and last, or the length is unknown.
      if (!last_chunked || chunked > 1 || version_ == 10)
        return std::pair{http::status::bad_request,
                         std::string("kato router: Transfer-Encoding must end with chunked, "
                                     "once, in HTTP/1.1\n")};
      if (codings > chunked)
        return std::pair{http::status::not_implemented,
                         std::string("kato router: only the chunked transfer coding is supported\n")};
    }
    BView expect = req[http::field::expect];
    if (!expect.empty() && !beast::iequals(expect, "100-continue"))
      return std::pair{http::status::expectation_failed,
                       std::string("kato router: only Expect: 100-continue is supported\n")};
    return std::nullopt;
  }

  void OnReadError(const ErrorCode& ec) {
    if (!IsParseError(ec)) return CloseAll();  // closed, reset, timed out: nobody to answer
    BeginExchange();
    version_ = 11;
    if (ec == http::error::header_limit) {
      // The parser takes the request line first: without it, that line is what is too long.
      if (parser_->get().target().empty())
        return Refuse(http::status::uri_too_long, "kato router: request line too long\n");
      return Refuse(http::status::request_header_fields_too_large,
                    "kato router: request header too large\n");
    }
    Refuse(http::status::bad_request, "kato router: malformed request (" + ec.message() + ")\n");
  }

  // A final answer after which the connection closes.
  void Refuse(http::status status, std::string body) {
    keep_alive_ = false;
    Reply(status, std::move(body));
  }

  void OnHealth(const http::request<http::buffer_body>& req) {
    bool get = req.method() == http::verb::get || req.method() == http::verb::head;
    if (get && req.target() == "/metrics") {
      return Reply(http::status::ok,
                   w_.shared.metrics.Render(w_.shared.connections.load(std::memory_order_relaxed),
                                            w_.shared.max_connections),
                   "text/plain; version=0.0.4; charset=utf-8");
    }
    if (!get || req.target() != "/health") return Reply(http::status::not_found, "not found\n");
    if (w_.shared.draining.load(std::memory_order_relaxed)) {
      return Reply(http::status::service_unavailable, "draining\n");
    }
    Reply(http::status::ok, "ok\n");
  }

  // Renders the request for the backend into up_head_ by hand, but for its
  // framing (SendUpstream adds it, once it knows how much body it holds):
  // Beast's serializer walks a chain of buffer views per field, and editing
  // the parsed fields (erase, set) allocates per field.
  void PrepareUpstreamRequest(const http::request<http::buffer_body>& req) {
    websocket_ = ContainsToken(req[http::field::connection], "upgrade") &&
                 beast::iequals(req[http::field::upgrade], "websocket");
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
      if (HopByHop(f.name()) || f.name() == http::field::expect) continue;
      if (f.name() == http::field::unknown) {
        if (beast::iequals(name, "X-Forwarded-Proto")) {
          if (!trusted_proxy_) continue;  // a client's claim: ours replaces it
          proto = true;
        } else if (beast::iequals(name, "X-Forwarded-Host")) {
          if (!trusted_proxy_) continue;
          fhost = true;
        } else if (beast::iequals(name, "X-Forwarded-For")) {
          // Earlier proxies' addresses first, ours last (several fields merge).
          xff_.append(value.data(), value.size()).append(", ");
          continue;
        }
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
    up_head_fields_ = h.size();
  }

  // --- Choosing and reaching a backend. ---

  // A body that will not fit the read-ahead streams: it cannot be sent again,
  // so it never goes out on a pooled connection that might turn out closed.
  bool WillStream() const {
    return req_in_.framing() == Framing::kChunked ||
           (req_in_.framing() == Framing::kLength && !pre_done() &&
            *parser_->content_length() > kReplayLimit);
  }
  bool pre_done() const { return req_in_.done() || pre_len_ == kReplayLimit; }

  // Picks the next untried backend; a new connection or an idle pooled one.
  void NextBackend() {
    const HostRoute* route = RouteTable::Find(w_.cache.Get(), host_, &w_.host_scratch);
    int idx = route ? w_.shared.table.Pick(*route, tried_) : -1;
    if (idx < 0 || attempts_ >= 64) {
      return Reply(http::status::bad_gateway, "kato router: no instance of the app at host " +
                                                  Printable(host_) + " could be reached\n");
    }
    if (attempts_ > 0) w_.metrics.Retried();
    ++attempts_;
    tried_ |= uint64_t{1} << idx;
    const BackendSlot& slot = *route->backends[static_cast<size_t>(idx)];
    key_.assign(slot.key);
    backend_ip_.assign(slot.backend.ip);
    backend_port_ = slot.backend.port;
    backend_tls_ = slot.backend.tls;
    up_ = WillStream() ? nullptr : w_.TakeIdle(key_, !Idempotent());
    reused_ = up_ != nullptr;
    if (reused_) return OnUpstreamReady();
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
    reused_ = false;
    Arm(State::kConnecting, opt_.connect_timeout);
    up_->Lowest().async_connect(tcp::endpoint(addr, backend_port_),
                                [self = this->shared_from_this()](const ErrorCode& ec) {
                                  if (ec) return self->OnConnectFailed();
                                  self->up_->Lowest().set_option(tcp::no_delay(true),
                                                                 self->ignored_);
                                  if (!self->up_->tls) self->up_->socket.non_blocking(true, self->ignored_);
                                  if (self->up_->tls) return self->Handshake();
                                  self->OnUpstreamReady();
                                });
  }

  // TLS backends: the handshake counts as part of connecting (same deadline);
  // a backend whose certificate does not chain to the cluster CA is not used.
  void Handshake() {
    up_->tls->async_handshake(
        ssl::stream_base::client, [self = this->shared_from_this()](const ErrorCode& ec) {
          if (!ec) return self->OnUpstreamReady();
          if (!self->upstream_timed_out_)
            LogWarn("router: TLS with backend {} failed: {}", self->key_, ec.message());
          self->OnConnectFailed();
        });
  }

  void OnConnectFailed() {
    up_.reset();
    if (!ClientOpen()) return;  // router stopping, or the client left
    w_.metrics.UpstreamFailed(upstream_timed_out_ ? UpstreamError::kTimeout
                                                  : UpstreamError::kConnect);
    upstream_timed_out_ = false;
    const HostRoute* route = RouteTable::Find(w_.cache.Get(), host_, &w_.host_scratch);
    if (route) {
      for (const auto& slot : route->backends) {
        if (slot->key == key_) w_.shared.table.MarkFailed(*slot);
      }
    }
    NextBackend();
  }

  // --- The request, upstream. ---

  void OnUpstreamReady() {
    Arm(State::kExchange, opt_.upstream_timeout);
    if (!pre_done()) return PreRead();
    SendUpstream();
  }

  // Reads the request body ahead, up to kReplayLimit (after 100 Continue when
  // the client waits for it).
  void PreRead() {
    auto self = this->shared_from_this();
    if (expect_continue_ && !continue_sent_ && buffer_.size() == 0) {
      static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      continue_sent_ = client_writing_ = true;
      net::async_write(stream_, net::buffer(kContinue.data(), kContinue.size()),
                       [self](const ErrorCode& ec, size_t) {
                         self->client_writing_ = false;
                         if (ec) return self->CloseAll();
                         self->PreRead();
                       });
      return;
    }
    continue_sent_ = true;
    if (!pre_) pre_ = w_.TakeBuffer();
    pre_reading_ = true;
    req_in_.Read(stream_, buffer_, pre_.get() + pre_len_, kReplayLimit - pre_len_,
                 [self](const ErrorCode& ec, size_t n) {
                   self->pre_reading_ = false;
                   if (ec) return self->OnClientBodyError(ec);
                   self->pre_len_ += n;
                   if (!self->CountBody(n)) return;
                   self->Touch();
                   if (self->pre_done()) return self->SendUpstream();
                   self->PreRead();
                 });
  }

  // Counts request body bytes; false (and the answer given) past max_request_body.
  bool CountBody(size_t n) {
    body_in_ += n;
    w_.metrics.Received(n);
    if (!opt_.max_request_body || body_in_ <= opt_.max_request_body) return true;
    if (response_started_ || client_writing_ || own_answer_) {
      CloseAll();
    } else {
      TakeOverAnswer();
      Refuse(http::status::payload_too_large, "kato router: request body too large\n");
    }
    return false;
  }

  void OnClientBodyError(const ErrorCode& ec) {
    // A malformed chunk can still be answered; a client gone cannot.
    if (IsParseError(ec) && !response_started_ && !client_writing_ && !own_answer_) {
      TakeOverAnswer();
      return Refuse(http::status::bad_request,
                    "kato router: malformed request body (" + ec.message() + ")\n");
    }
    CloseAll();
  }

  // The router answers itself from now on: whatever the backend still does
  // is ignored (its connection closes).
  void TakeOverAnswer() {
    own_answer_ = true;
    discard_ = true;
    if (up_) up_->Lowest().close(ignored_);
  }

  // The upstream connection goes; while the pump may still have a write on
  // it, the object stays (closed) until the exchange ends.
  void DropUpstream() {
    if (!up_) return;
    if (!pump_active_) return up_.reset();
    up_->Lowest().close(ignored_);
    retired_ = std::move(up_);
  }

  void SendUpstream() {
    Touch();
    up_head_.resize(up_head_fields_);
    bool complete = req_in_.done();
    Framing out = Framing::kLength;
    if (complete) {
      if (pre_len_ > 0 || had_length_) AppendLength(up_head_, pre_len_);
    } else if (req_in_.framing() == Framing::kLength) {
      AppendLength(up_head_, *parser_->content_length());
    } else {
      out = Framing::kChunked;
      up_head_.append("Transfer-Encoding: chunked\r\n");
    }
    up_head_.append("\r\n");
    streaming_ = !complete;
    req_framing_ = out;
    Framed f = FrameBody(out, up_head_, pre_.get(), pre_len_, false, req_chunk_);
    up_->Io([&](auto& up) {
      WriteFramed(up, f, [self = this->shared_from_this()](const ErrorCode& ec, size_t) {
        if (ec) return self->OnUpstreamFailed(ec);
        self->Touch();
        self->ReadResponseHeader();
        if (self->streaming_) {
          self->pump_active_ = true;
          self->Pump();
        }
      });
    });
  }

  // The rest of a large request body, relayed while the response is read.
  void Pump() {
    if (!req_buf_) req_buf_ = w_.TakeBuffer();
    req_in_.Read(stream_, buffer_, req_buf_.get(), kRelayBuffer,
                 [self = this->shared_from_this()](const ErrorCode& ec, size_t n) {
                   self->OnPumped(ec, n);
                 });
  }

  void OnPumped(const ErrorCode& ec, size_t n) {
    if (discard_) {
      // The backend is gone or the answer is given: read what the client
      // still sends, so that closing does not reset the answer away.
      if (ec || req_in_.done()) {
        pump_active_ = false;
        if (ec || state_ == State::kLinger) CloseAll();
        return;
      }
      return Pump();
    }
    if (ec) {
      pump_active_ = false;
      return OnClientBodyError(ec);
    }
    if (!CountBody(n)) {
      pump_active_ = false;
      return;
    }
    Touch();
    Framed f = FrameBody(req_framing_, {}, req_buf_.get(), n,
                         req_in_.done() && req_framing_ == Framing::kChunked, req_chunk_);
    up_->Io([&](auto& up) {
      WriteFramed(up, f, [self = this->shared_from_this()](const ErrorCode& ec, size_t) {
        if (ec || !self->up_) {
          // The response side sees the backend fail and answers.
          self->discard_ = true;
          return self->OnPumped(ErrorCode{}, 0);
        }
        self->Touch();
        if (self->req_in_.done()) {
          self->pump_active_ = false;
          return;
        }
        self->Pump();
      });
    });
  }

  // --- The response. ---

  void ReadResponseHeader() {
    res_parser_.emplace();
    res_parser_->header_limit(kMaxUpstreamHeader);
    res_parser_->body_limit(kNoLimit);
    if (head_) res_parser_->skip(true);
    up_->Io([&](auto& up) {
      http::async_read_header(up, up_->buffer, *res_parser_,
                              [self = this->shared_from_this()](const ErrorCode& ec, size_t) {
                                self->OnResponseHeader(ec);
                              });
    });
  }

  void OnResponseHeader(const ErrorCode& ec) {
    if (own_answer_) return DropUpstream();
    if (ec) return OnUpstreamFailed(ec);
    Touch();
    auto& res = res_parser_->get();
    unsigned status = res.result_int();
    if (status / 100 == 1) {
      if (status == 101) {
        if (websocket_ && !streaming_) return StartTunnel();
        return OnUpstreamFailed(http::error::bad_status);
      }
      // 100 Continue is the router's own; HTTP/1.0 clients get no interim answers.
      if (status == 100 || version_ == 10) return ReadResponseHeader();
      RenderHead(res, Framing::kNone, /*interim=*/true);
      interim_sent_ = client_writing_ = true;
      net::async_write(stream_, net::buffer(out_head_),
                       [self = this->shared_from_this()](const ErrorCode& ec, size_t n) {
                         self->client_writing_ = false;
                         self->bytes_out_ += n;
                         if (ec) return self->CloseAll();
                         self->ReadResponseHeader();
                       });
      return;
    }
    status_ = static_cast<int>(status);
    upstream_header_at_ = Steady::now();
    Framing in;
    uint64_t length = 0;
    if (head_ || status == 204 || status == 304) {
      in = Framing::kNone;
    } else if (res.chunked()) {
      in = Framing::kChunked;
    } else if (res.has_content_length()) {
      length = *res_parser_->content_length();
      in = Framing::kLength;
    } else {
      in = Framing::kUntilClose;
    }
    res_in_.Start(in, length, &*res_parser_);
    res_framing_ = in;
    if (in == Framing::kUntilClose) res_framing_ = version_ == 11 ? Framing::kChunked : in;
    if (in == Framing::kChunked && version_ == 10) res_framing_ = Framing::kUntilClose;
    // A client still uploading, or one whose answer ends with the connection,
    // cannot send another request on it.
    if (streaming_ && !req_in_.done()) keep_alive_ = false;
    if (res_framing_ == Framing::kUntilClose) keep_alive_ = false;
    if (w_.shared.closing.load(std::memory_order_relaxed)) keep_alive_ = false;
    RenderHead(res, res_framing_, /*interim=*/false);
    if (!res_buf_) res_buf_ = w_.TakeBuffer();
    // A small answer to a request that another instance could take is held
    // until it is complete: an instance that dies between its header and its
    // body costs a resend, not a truncated answer.
    bool hold = in == Framing::kLength && length <= kRelayBuffer && !streaming_ &&
                !interim_sent_ && Idempotent();
    if (!hold) response_started_ = true;
    ErrorCode tec;
    size_t n = res_in_.Take(up_->buffer, res_buf_.get(), kRelayBuffer, tec);
    if (tec && hold) return OnUpstreamFailed(tec, /*held=*/true);
    if (tec) return UpstreamBroke(UpstreamError::kMalformed);
    if (hold && !res_in_.done()) return HoldBody(n);
    response_started_ = true;
    WriteBody(n, /*with_head=*/true);
  }

  // Reads the rest of a held answer into res_buf_, after the `have` bytes
  // already there; sends it once it is complete.
  void HoldBody(size_t have) {
    up_->Io([&](auto& up) {
      res_in_.Read(up, up_->buffer, res_buf_.get() + have, kRelayBuffer - have,
                   [self = this->shared_from_this(), have](const ErrorCode& ec, size_t n) {
                     if (self->own_answer_) return self->DropUpstream();
                     if (ec) return self->OnUpstreamFailed(ec, /*held=*/true);
                     self->Touch();
                     if (!self->res_in_.done()) return self->HoldBody(have + n);
                     self->response_started_ = true;
                     self->WriteBody(have + n, /*with_head=*/true);
                   });
    });
  }

  // Writes n bytes of res_buf_ (after the head, the first time) to the client.
  void WriteBody(size_t n, bool with_head) {
    bool last = res_in_.done();
    Framed f = FrameBody(res_framing_, with_head ? std::string_view(out_head_) : std::string_view(),
                         res_buf_.get(), n, last && res_framing_ == Framing::kChunked, res_chunk_);
    client_writing_ = true;
    WriteFramed(stream_, f, [self = this->shared_from_this()](const ErrorCode& ec, size_t n) {
      self->client_writing_ = false;
      self->bytes_out_ += n;
      if (ec) {
        self->Record();  // the client left mid-response: logged with what it got
        return self->CloseAll();
      }
      self->Touch();
      if (self->res_in_.done()) return self->FinishExchange();
      self->PumpResponse();
    });
  }

  void PumpResponse() {
    up_->Io([&](auto& up) {
      res_in_.Read(up, up_->buffer, res_buf_.get(), kRelayBuffer,
                   [self = this->shared_from_this()](const ErrorCode& ec, size_t n) {
                     if (ec) {
                       return self->UpstreamBroke(IsParseError(ec) && ec != http::error::partial_message
                                                      ? UpstreamError::kMalformed
                                                      : UpstreamError::kReset);
                     }
                     self->Touch();
                     self->WriteBody(n, false);
                   });
    });
  }

  // The backend failed after the response began: the client's connection
  // closes, so that it sees a truncated response, never a complete one.
  void UpstreamBroke(UpstreamError kind) {
    w_.metrics.UpstreamFailed(kind);
    if (upstream_timed_out_) w_.metrics.UpstreamFailed(UpstreamError::kTimeout);
    keep_alive_ = false;
    Record();
    CloseAll();
  }

  // The backend failed before the response began (held: within an answer
  // the client has seen nothing of yet).
  void OnUpstreamFailed(const ErrorCode& ec, bool held = false) {
    bool got_some = interim_sent_ || (!held && res_parser_ && res_parser_->got_some());
    bool malformed = IsParseError(ec) && ec != http::error::partial_message;
    DropUpstream();
    if (own_answer_) return;
    if (!ClientOpen() || response_started_) return CloseAll();
    if (upstream_timed_out_) {
      w_.metrics.UpstreamFailed(UpstreamError::kTimeout);
      discard_ = true;
      return Reply(
          http::status::gateway_timeout,
          "kato router: the app at host " + Printable(host_) + " did not answer in time\n");
    }
    w_.metrics.UpstreamFailed(malformed ? UpstreamError::kMalformed : UpstreamError::kReset);
    bool resendable = !streaming_ && !got_some && !malformed && Idempotent();
    if (resendable && reused_) {
      // The backend closed the pooled connection as we reused it: send the
      // request again on a fresh connection to the same backend.
      w_.metrics.Retried();
      res_parser_.reset();
      return Connect();
    }
    if (resendable) {
      // The instance went away before it answered (it died, or its DEA did):
      // another instance can safely take an idempotent request, as nginx's
      // proxy_next_upstream does.
      res_parser_.reset();
      return OnConnectFailed();
    }
    discard_ = true;
    std::string what = malformed ? "sent a malformed response" : "closed the connection";
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

  void FinishExchange() {
    Record();
    auto& res = res_parser_->get();
    bool reusable = res_framing_ != Framing::kUntilClose && res_in_.framing() != Framing::kUntilClose &&
                    res.keep_alive() && req_in_.done() && !pump_active_ && up_ &&
                    up_->buffer.size() == 0;
    if (reusable) w_.GiveBack(key_, std::move(up_));
    DropUpstream();
    EndAnswer();
  }

  // After a final answer: the next request, or the end of the connection.
  void EndAnswer() {
    if (w_.shared.closing.load(std::memory_order_relaxed)) keep_alive_ = false;
    if (keep_alive_ && !pump_active_ && (req_in_.done() || req_in_.framing() == Framing::kNone))
      return ReadRequest();
    Linger();
  }

  // Metrics and the access log line of the exchange, once.
  void Record() {
    if (recorded_) return;
    recorded_ = true;
    auto end = Steady::now();
    double total = Seconds(end - started_at_);
    if (!stats_ && !health_) stats_ = w_.metrics.App({});  // refused before routing
    if (stats_) RouterMetrics::Shard::Record(stats_, status_, total);
    w_.metrics.Sent(bytes_out_);
    if (!w_.shared.access_log || health_) return;
    const auto& req = parser_->get();
    AccessRecord r;
    r.wall_ms = WallMs();
    r.client = peer_ip_;
    r.host = Std(req[http::field::host]);
    r.method = Std(req.method_string());
    r.target = Std(req.target());
    r.instance = key_;
    r.status = status_;
    r.bytes = bytes_out_;
    r.upstream_s = upstream_header_at_ == Steady::time_point{}
                       ? -1
                       : Seconds(upstream_header_at_ - started_at_);
    r.total_s = total;
    w_.shared.access_log->Append(w_.log_buffer, r);
  }

  // --- Answers to the client. ---

  void Reply(http::status status, std::string body,
             std::string_view content_type = "text/plain; charset=utf-8") {
    // A body of the request that was not read would be taken for the next request.
    if (!req_in_.done()) keep_alive_ = false;
    if (w_.shared.closing.load(std::memory_order_relaxed)) keep_alive_ = false;
    status_ = static_cast<int>(status);
    own_body_ = std::move(body);
    std::string& h = out_head_;
    h.clear();
    h.append(version_ == 10 ? "HTTP/1.0 " : "HTTP/1.1 ")
        .append(std::to_string(status_))
        .append(" ")
        .append(Std(http::obsolete_reason(status)))
        .append("\r\nServer: kato\r\nContent-Type: ")
        .append(content_type)
        .append("\r\n");
    AppendLength(h, own_body_.size());
    if (version_ == 11 && !keep_alive_) h.append("Connection: close\r\n");
    if (version_ == 10 && keep_alive_) h.append("Connection: keep-alive\r\n");
    h.append("\r\n");
    if (head_) own_body_.clear();  // Content-Length stays as for GET
    if (state_ != State::kExchange) Arm(State::kWriting, opt_.upstream_timeout);
    client_writing_ = true;
    Framed out;
    out.Add(net::buffer(out_head_));
    out.Add(net::buffer(own_body_));
    // The handler may run at once (WriteFramed), and the sweep calls in here
    // without holding the connection: `self` keeps it until the write's end.
    auto self = this->shared_from_this();
    WriteFramed(stream_, out, [self](const ErrorCode& ec, size_t n) {
      self->client_writing_ = false;
      self->bytes_out_ += n;
      self->Record();
      if (ec) return self->CloseAll();
      self->own_body_.clear();
      self->EndAnswer();
    });
  }

  // Renders a response header for the client into out_head_: hop-by-hop
  // fields go, framing and Connection are the router's.
  void RenderHead(const http::response<http::buffer_body>& res, Framing framing, bool interim) {
    unsigned status = res.result_int();
    BView connection = res[http::field::connection];
    std::string& h = out_head_;
    h.clear();
    char code[4] = {char('0' + status / 100 % 10), char('0' + status / 10 % 10),
                    char('0' + status % 10), ' '};
    h.append(version_ == 10 ? "HTTP/1.0 " : "HTTP/1.1 ").append(code, sizeof code);
    BView reason = res.reason();
    h.append(reason.data(), reason.size()).append("\r\n");
    // HEAD, 204 and 304 have no body whatever Content-Length says: pass that through.
    bool bodiless = head_ || status == 204 || status == 304;
    for (const auto& f : res) {
      if (f.name() == http::field::content_length && bodiless) {
        AppendField(h, f.name_string(), f.value());
        continue;
      }
      if (HopByHop(f.name())) continue;
      if (!connection.empty() && ContainsToken(connection, f.name_string())) continue;
      AppendField(h, f.name_string(), f.value());
    }
    if (!interim) {
      if (framing == Framing::kLength) AppendLength(h, *res_parser_->content_length());
      if (framing == Framing::kChunked) h.append("Transfer-Encoding: chunked\r\n");
      if (version_ == 11 && !keep_alive_) h.append("Connection: close\r\n");
      if (version_ == 10 && keep_alive_) h.append("Connection: keep-alive\r\n");
    }
    h.append("\r\n");
  }

  // Closing right after a final answer (maybe with a body still in flight)
  // would answer with a TCP reset that can destroy the answer before the
  // client reads it: so half-close and discard input until the peer closes.
  void Linger() {
    if constexpr (kTls) return CloseAll();
    beast::get_lowest_layer(stream_).shutdown(Socket::shutdown_send, ignored_);
    Arm(State::kLinger, std::chrono::duration_cast<std::chrono::milliseconds>(kLingerFor));
    if (pump_active_) {
      discard_ = true;  // the pump's read goes on, and discards
      return;
    }
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
    auto& res = res_parser_->get();
    status_ = 101;
    response_started_ = true;
    upstream_header_at_ = Steady::now();
    std::string& h = out_head_;
    h.assign("HTTP/1.1 101 ");
    h.append(res.reason().data(), res.reason().size()).append("\r\n");
    for (const auto& f : res) AppendField(h, f.name_string(), f.value());
    h.append("\r\n");
    Arm(State::kTunnel, opt_.tunnel_idle_timeout);
    net::async_write(stream_, net::buffer(out_head_),
                     [self = this->shared_from_this()](const ErrorCode& ec, size_t n) {
                       self->bytes_out_ += n;
                       self->Record();
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
      auto data = std::make_shared<std::string>(beast::buffers_to_string(buffer_.data()));
      buffer_.consume(from_client);
      up_->Io([&](auto& up) {
        net::async_write(up, net::buffer(*data), [self, data](const ErrorCode& ec, size_t) {
          if (ec) return self->CloseAll();
          if (--self->pending_writes_ == 0) self->Pump2();
        });
      });
    }
    if (from_up > 0) {
      pending_writes_++;
      auto data = std::make_shared<std::string>(beast::buffers_to_string(up_->buffer.data()));
      up_->buffer.consume(from_up);
      net::async_write(stream_, net::buffer(*data), [self, data](const ErrorCode& ec, size_t) {
        if (ec) return self->CloseAll();
        if (--self->pending_writes_ == 0) self->Pump2();
      });
    }
    if (pending_writes_ == 0) Pump2();
  }

  void Pump2() {
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
  std::shared_ptr<CertSet> certs_;  // TLS: the contexts the stream uses live as long
  Stream stream_;
  beast::flat_buffer buffer_;
  State state_ = State::kIdle;
  Steady::time_point idle_since_;  // kIdle: since when
  std::string peer_ip_;
  bool trusted_proxy_ = false;  // peer is one of the cluster's load balancers
  std::string xff_;             // incoming X-Forwarded-For values (capacity reused)
  ErrorCode ignored_;

  std::optional<RequestParser> parser_;
  std::optional<ResponseParser> res_parser_;
  BodyIn<true> req_in_;
  BodyIn<false> res_in_;
  bool keep_alive_ = true;
  unsigned version_ = 11;
  bool head_ = false;
  bool websocket_ = false;
  bool had_length_ = false;
  bool expect_continue_ = false, continue_sent_ = false;

  // The exchange.
  Steady::time_point started_at_, upstream_header_at_;
  uint64_t bytes_out_ = 0, body_in_ = 0;
  int status_ = 0;
  AppStats* stats_ = nullptr;
  std::string host_;
  std::string up_head_, out_head_, own_body_;  // rendered headers, capacity reused
  size_t up_head_fields_ = 0;                  // up_head_ without its framing
  std::string key_;
  std::string backend_ip_;
  uint16_t backend_port_ = 0;
  bool backend_tls_ = false;
  uint64_t tried_ = 0;
  int attempts_ = 0;
  UpstreamPtr up_;
  bool reused_ = false;
  bool upstream_timed_out_ = false;
  bool response_started_ = false;  // a final response header came: no retry, no own answer
  bool interim_sent_ = false;      // a 1xx went to the client: no retry
  bool client_writing_ = false;    // a write to the client is in flight
  bool own_answer_ = false;        // the router answers this request itself
  bool recorded_ = false;          // metrics and access log written for this exchange
  bool pre_reading_ = false;       // a read of the body ahead is in flight
  bool header_timed_out_ = false;  // a 408 replaced the header read
  UpstreamPtr retired_;            // dropped while the pump still wrote to it
  bool streaming_ = false;         // the request body did not fit the read-ahead
  bool pump_active_ = false;       // its rest is being relayed
  bool discard_ = false;           // the answer is given: request body is read and dropped
  Framing req_framing_ = Framing::kNone, res_framing_ = Framing::kNone;
  Worker::Buffer pre_, req_buf_, res_buf_;  // lent by the worker for one exchange
  size_t pre_len_ = 0;
  char req_chunk_[24], res_chunk_[24];

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
    if (!ec) acceptor_.non_blocking(true, ec);  // for the batches in Accept
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
      Hand(w, std::move(socket));
      // More may be waiting (thousands of clients connecting at once): take
      // them now rather than one per trip through the worker's queue. Not on
      // TLS: each brings a handshake, costly enough that a batch of them
      // ahead in the queue delays the requests of the connections already
      // open (one per trip, as nginx does without multi_accept).
      const int batch = kind_ == Kind::kHttps ? 0 : kAcceptBatch;
      for (int i = 0; i < batch; ++i) {
        Worker& next = *workers_[next_++ % workers_.size()];
        ErrorCode again;
        Socket more = acceptor_.accept(next.ioc.get_executor(), again);
        if (again) break;  // would block: none left
        Hand(next, std::move(more));
      }
      Accept();
    });
  }

 private:
  static constexpr int kAcceptBatch = 64;

  void Hand(Worker& w, Socket socket) {
    if (kind_ != Kind::kHealth) {
      // Counted here, on the accepting thread, so that a batch cannot overshoot
      // the cap; the connection's destructor gives the place back.
      if (shared_.connections.load(std::memory_order_relaxed) >= shared_.max_connections)
        return Refuse(socket);
      shared_.connections.fetch_add(1, std::memory_order_relaxed);
    }
    net::post(w.ioc, [this, &w, s = std::move(socket)]() mutable { Serve(w, std::move(s)); });
  }

  // At the connection cap: a short answer (on plain HTTP) and the connection
  // closed, without giving it a place.
  void Refuse(Socket& socket) {
    static constexpr std::string_view kBusy =
        "HTTP/1.1 503 Service Unavailable\r\nServer: kato\r\nContent-Type: text/plain\r\n"
        "Retry-After: 1\r\nConnection: close\r\nContent-Length: 47\r\n\r\n"
        "kato router: too many connections, try again\r\n";
    shared_.metrics.Refused();
    if (kind_ == Kind::kHttp)
      (void)::send(socket.native_handle(), kBusy.data(), kBusy.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    ErrorCode ec;
    socket.shutdown(Socket::shutdown_both, ec);
    socket.close(ec);
  }

  void Serve(Worker& w, Socket socket) {
    if (kind_ == Kind::kHttps) {
      auto certs = shared_.Certs();
      ssl::context& ctx = *certs->contexts[0];
      std::make_shared<ClientConn<ssl::stream<Socket>>>(w, false, std::move(certs),
                                                        std::move(socket), ctx)
          ->Start();
    } else {
      std::make_shared<ClientConn<Socket>>(w, kind_ == Kind::kHealth, nullptr, std::move(socket))
          ->Start();
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

int ConnectionCap(const RouterOptions& opt) {
  if (opt.max_connections > 0) return opt.max_connections;
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return 1 << 20;
  return std::max<int>(16, static_cast<int>(rl.rlim_cur / 4 * 3));
}

}  // namespace

struct Router::Impl {
  Impl(const RouterOptions& o, const RouteTable& t) : shared(o, t, std::max(1, o.threads)) {}
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
  if (opt.tls) {
    std::string chain = opt.tls->cert_pem;
    if (!chain.empty() && chain.back() != '\n') chain += '\n';
    chain += opt.tls->chain_pem;
    KATO_TRY(SetCertificates({ServedCert{chain, opt.tls->key_pem}}));
  }
  if (opt.upstream_tls) KATO_TRY(MakeUpstreamTlsContext(*opt.upstream_tls, im.shared.upstream_tls));
  if (!opt.access_log.empty()) {
    im.shared.access_log = std::make_unique<AccessLog>(opt.access_log, opt.access_log_max_bytes);
    KATO_TRY(im.shared.access_log->Open());
  }
  im.shared.max_connections = ConnectionCap(opt);
  int threads = std::max(1, opt.threads);
  // With one worker every socket and timer lives on its thread (Start sets
  // them up before the thread runs), so the reactor's per-descriptor locks
  // can go; Stop's ioc.stop() goes through the scheduler, which stays locked.
  // Several workers share workers[0]'s acceptors: they need the locks.
  int hint = threads == 1 ? BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO : 1;
  size_t pooled_total = opt.max_idle_upstreams_total
                            ? opt.max_idle_upstreams_total
                            : static_cast<size_t>(im.shared.max_connections) / 4;
  for (int i = 0; i < threads; ++i) {
    im.workers.push_back(std::make_unique<Worker>(im.shared, i, hint));
    im.workers.back()->max_pooled = std::max<size_t>(1, pooled_total / static_cast<size_t>(threads));
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
  if (im.shared.access_log)
    for (auto& w : im.workers) im.shared.access_log->Flush(w->log_buffer);
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
int Router::max_connections() const { return impl_->shared.max_connections; }
void Router::SetDraining(bool draining) { impl_->shared.draining.store(draining); }

Status Router::SetCertificates(const std::vector<ServedCert>& certs) {
  auto set = MakeCertSet(certs);
  if (!set) return Err(set.error());
  std::lock_guard lock(impl_->shared.certs_mu);
  impl_->shared.certs = std::move(*set);
  return Ok();
}

std::string Router::Metrics() const {
  return impl_->shared.metrics.Render(impl_->shared.connections.load(),
                                      impl_->shared.max_connections);
}

void Router::SetTrustedProxies(const std::vector<std::string>& ips) {
  std::lock_guard lock(impl_->shared.trusted_mu);
  impl_->shared.trusted = std::set<std::string>(ips.begin(), ips.end());
}

}  // namespace kato
