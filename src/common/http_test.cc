#include "common/http.h"

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <future>
#include <mutex>
#include <optional>
#include <vector>

#include "common/http_parse.h"
#include "common/pki.h"

namespace kato {
namespace {

using std::chrono::milliseconds;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr milliseconds kCallTimeout{10000};
// Upper bound for waits that should finish at once; only reached when a test fails.
constexpr auto kBound = std::chrono::seconds(10);

struct Identity {
  std::string cert_pem;
  std::string key_pem;
};

Identity Issue(const CaBundle& ca, const std::string& cn) {
  auto kc = CreateKeyAndCsr(cn);
  EXPECT_TRUE(kc.ok()) << kc.error();
  auto cert = SignCsr(ca, kc->csr_pem, cn, 30);
  EXPECT_TRUE(cert.ok()) << cert.error();
  return {*cert, kc->key_pem};
}

// A queue the server's handler fills and the test drains, with a bounded wait.
template <typename T>
class Mailbox {
 public:
  void Put(T v) {
    std::lock_guard<std::mutex> lock(mu_);
    items_.push_back(std::move(v));
    cv_.notify_all();
  }
  std::optional<T> Take() {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, kBound, [&] { return !items_.empty(); })) return std::nullopt;
    T v = std::move(items_.front());
    items_.pop_front();
    return v;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<T> items_;
};

// A plain TCP connection with a receive timeout, so that no test can hang on it.
int ConnectTcp(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

// A listening socket that never accepts: the kernel completes TCP handshakes
// into its backlog, and nothing ever answers.
struct SilentListener {
  SilentListener() {
    fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(listen(fd, 16), 0);
    socklen_t len = sizeof addr;
    getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    port = ntohs(addr.sin_port);
  }
  ~SilentListener() { close(fd); }
  int fd = -1;
  int port = 0;
};

// A blocking TLS client without verification, for what HttpsCall never sends:
// pipelined requests, malformed HTTP, oversized headers.
class RawTlsClient {
 public:
  explicit RawTlsClient(int port) : fd_(ConnectTcp(port)) {
    ctx_ = SSL_CTX_new(TLS_client_method());
    ssl_ = SSL_new(ctx_);
    SSL_set_fd(ssl_, fd_);
    connected_ = SSL_connect(ssl_) == 1;
  }
  ~RawTlsClient() {
    SSL_free(ssl_);
    SSL_CTX_free(ctx_);
    close(fd_);
  }
  bool connected() const { return connected_; }
  int fd() const { return fd_; }
  void Send(const std::string& data) {
    ASSERT_EQ(SSL_write(ssl_, data.data(), static_cast<int>(data.size())),
              static_cast<int>(data.size()));
  }
  // Everything the server sends until it closes the connection.
  std::string ReadToEnd() {
    std::string out;
    char buf[4096];
    int n;
    while ((n = SSL_read(ssl_, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
    return out;
  }

 private:
  int fd_;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  bool connected_ = false;
};

class HttpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ca = CreateCa("test");
    auto other = CreateCa("other");
    ASSERT_TRUE(ca.ok() && other.ok());
    ca_ = *ca;
    other_ca_ = *other;
    server_id_ = Issue(ca_, "node-srv");
    client_id_ = Issue(ca_, "node-1");
    foreign_id_ = Issue(other_ca_, "node-evil");
  }

  // Starts a server on 127.0.0.1, port 0. The default handler echoes the request.
  void StartServer(HttpHandler handler = nullptr, std::string chain_pem = "",
                   std::optional<Identity> id = std::nullopt,
                   const std::function<void(HttpServer&)>& configure = nullptr) {
    if (!handler) {
      handler = [this](const HttpRequest& req, Responder respond) {
        ++handled_;
        HttpResponse r;
        r.status = req.method == "POST" ? 201 : 200;
        r.content_type = "text/plain";
        auto ct = req.headers.find("content-type");
        r.body = req.method + " " + req.target + " [" + req.body + "] cn=" + req.peer_cn +
                 " ip=" + req.peer_ip +
                 " ct=" + (ct == req.headers.end() ? std::string("-") : ct->second);
        respond(std::move(r));
      };
    }
    Identity use = id ? *id : server_id_;
    server_ = std::make_unique<HttpsServer>(
        ServerTls{ca_.cert_pem, use.cert_pem, use.key_pem, std::move(chain_pem)},
        std::move(handler));
    if (configure) configure(*server_);
    auto started = server_->Start("127.0.0.1", 0);
    ASSERT_TRUE(started.ok()) << started.error();
    ASSERT_GT(server_->port(), 0);
  }

  ClientTls Trusting() const { return ClientTls{ca_.cert_pem, "", "", ""}; }
  ClientTls WithClientCert() const {
    return ClientTls{ca_.cert_pem, client_id_.cert_pem, client_id_.key_pem, ""};
  }

  Result<HttpResponse> Call(const ClientTls& tls, const std::string& method,
                            const std::string& target, const std::string& body = "") {
    return HttpsCall(tls, "127.0.0.1", server_->port(), method, target, body, kCallTimeout);
  }

  CaBundle ca_, other_ca_;
  Identity server_id_, client_id_, foreign_id_;
  std::atomic<int> handled_{0};
  std::unique_ptr<HttpsServer> server_;
};

TEST_F(HttpsTest, GetAndPostRoundTrip) {
  StartServer();
  auto get = Call(Trusting(), "GET", "/v1/watch?after=3");
  ASSERT_TRUE(get.ok()) << get.error();
  EXPECT_EQ(get->status, 200);
  EXPECT_EQ(get->content_type, "text/plain");
  EXPECT_EQ(get->body, "GET /v1/watch?after=3 [] cn= ip=127.0.0.1 ct=-");
  EXPECT_EQ(get->peer_ca_pem, "");

  auto post = Call(Trusting(), "POST", "/v1/apps", R"({"name":"x"})");
  ASSERT_TRUE(post.ok()) << post.error();
  EXPECT_EQ(post->status, 201);
  EXPECT_EQ(post->body, R"(POST /v1/apps [{"name":"x"}] cn= ip=127.0.0.1 ct=application/json)");
  EXPECT_EQ(handled_, 2);
}

TEST_F(HttpsTest, ClientCertCommonNameReachesHandler) {
  StartServer();
  auto with = Call(WithClientCert(), "GET", "/");
  ASSERT_TRUE(with.ok()) << with.error();
  EXPECT_THAT(with->body, HasSubstr("cn=node-1 "));
  auto without = Call(Trusting(), "GET", "/");
  ASSERT_TRUE(without.ok()) << without.error();
  EXPECT_THAT(without->body, HasSubstr("cn= "));
}

// A presented client certificate that does not chain to the cluster CA fails
// the TLS handshake (rather than reaching the handler with an empty peer_cn).
TEST_F(HttpsTest, ClientCertFromAnotherCaIsRefused) {
  StartServer();
  ClientTls tls{ca_.cert_pem, foreign_id_.cert_pem, foreign_id_.key_pem, ""};
  auto r = Call(tls, "POST", "/v1/secret", "{}");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error(), HasSubstr("127.0.0.1:" + std::to_string(server_->port())));
  EXPECT_THAT(r.error(), HasSubstr("TLS"));
  EXPECT_EQ(handled_, 0);
  // The server goes on serving.
  EXPECT_TRUE(Call(WithClientCert(), "GET", "/").ok());
}

TEST_F(HttpsTest, ServerFromAnotherCaIsRefused) {
  StartServer();
  ClientTls tls{other_ca_.cert_pem, "", "", ""};
  auto r = Call(tls, "GET", "/");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error(),
              StartsWith("TLS handshake with 127.0.0.1:" + std::to_string(server_->port()) +
                         " failed: its certificate does not verify against the cluster CA"));
  EXPECT_EQ(handled_, 0);
}

TEST_F(HttpsTest, PinnedModeAcceptsTheRightCa) {
  StartServer(nullptr, ca_.cert_pem);
  ClientTls tls;
  tls.pin_ca_sha256 = *CertFingerprint(ca_.cert_pem);
  auto r = Call(tls, "POST", "/v1/join", R"({"secret":"s"})");
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(r->status, 201);
  EXPECT_EQ(r->peer_ca_pem, ca_.cert_pem);
  EXPECT_EQ(handled_, 1);
}

TEST_F(HttpsTest, PinnedModeRefusesAnotherCaWithoutSendingTheRequest) {
  StartServer(nullptr, ca_.cert_pem);
  ClientTls tls;
  tls.pin_ca_sha256 = *CertFingerprint(other_ca_.cert_pem);
  auto r = Call(tls, "POST", "/v1/join", R"({"secret":"s"})");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), "server at 127.0.0.1:" + std::to_string(server_->port()) +
                           " is not the cluster the token was made for (CA fingerprint mismatch)");
  // Make sure the server would have answered a verified request, so that the
  // handler count below means something.
  EXPECT_TRUE(Call(Trusting(), "GET", "/").ok());
  EXPECT_EQ(handled_, 1);
}

// An impostor can send the real (public) CA certificate in its chain; its leaf
// still has to verify against it.
TEST_F(HttpsTest, PinnedModeRefusesALeafThatDoesNotChainToThePinnedCa) {
  StartServer(nullptr, ca_.cert_pem, Issue(other_ca_, "impostor"));
  ClientTls tls;
  tls.pin_ca_sha256 = *CertFingerprint(ca_.cert_pem);
  auto r = Call(tls, "POST", "/v1/join", R"({"secret":"s"})");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error(), HasSubstr("does not chain to the pinned cluster CA"));
  EXPECT_EQ(handled_, 0);
}

TEST_F(HttpsTest, TimesOutAgainstAServerThatNeverAnswers) {
  SilentListener silent;
  auto start = std::chrono::steady_clock::now();
  auto r = HttpsCall(Trusting(), "127.0.0.1", silent.port, "GET", "/", "", milliseconds(300));
  auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(),
            "timed out after 300 ms talking to 127.0.0.1:" + std::to_string(silent.port));
  EXPECT_GE(elapsed, milliseconds(250));
  EXPECT_LT(elapsed, milliseconds(3000));
}

TEST_F(HttpsTest, ConnectionRefusedNamesTheAddress) {
  int port;
  {
    SilentListener closed_soon;
    port = closed_soon.port;
  }
  auto r = HttpsCall(Trusting(), "127.0.0.1", port, "GET", "/", "", kCallTimeout);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(),
            "cannot connect to 127.0.0.1:" + std::to_string(port) + ": Connection refused");
}

TEST_F(HttpsTest, GarbageOnTheTlsPortDoesNotHurtTheServer) {
  StartServer();
  for (const std::string& garbage :
       {std::string("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), std::string(5000, '\x16'),
        std::string("\x16\x03\x01\xff\xff")}) {
    int fd = ConnectTcp(server_->port());
    ASSERT_EQ(write(fd, garbage.data(), garbage.size()), static_cast<ssize_t>(garbage.size()));
    shutdown(fd, SHUT_WR);
    char buf[1024];
    while (read(fd, buf, sizeof buf) > 0) {
    }
    close(fd);
  }
  auto r = Call(Trusting(), "GET", "/still-here");
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_THAT(r->body, HasSubstr("/still-here"));
}

TEST_F(HttpsTest, BodyLimit) {
  StartServer();
  auto at_limit = Call(Trusting(), "POST", "/", std::string(kMaxRequestBodyBytes, 'a'));
  ASSERT_TRUE(at_limit.ok()) << at_limit.error();
  EXPECT_EQ(at_limit->status, 201);
  auto over = Call(Trusting(), "POST", "/", std::string(kMaxRequestBodyBytes + 1, 'a'));
  ASSERT_TRUE(over.ok()) << over.error();
  EXPECT_EQ(over->status, 413);
  EXPECT_EQ(handled_, 1);
}

TEST_F(HttpsTest, MalformedRequestGets400AndClose) {
  StartServer();
  // Beast's serializer does not validate the target: the server sees "GET /a b HTTP/1.1".
  auto r = Call(Trusting(), "GET", "/a b");
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(r->status, 400);

  RawTlsClient raw(server_->port());
  ASSERT_TRUE(raw.connected());
  raw.Send("GET / HTTP/1.1\r\nHost: x\r\n" + std::string(9000, 'X') + ": y\r\n\r\n");
  EXPECT_THAT(raw.ReadToEnd(), StartsWith("HTTP/1.1 431 "));
  EXPECT_EQ(handled_, 0);
}

TEST_F(HttpsTest, HeaderCheckSeesTheClientCertificate) {
  StartServer(nullptr, "", std::nullopt, [](HttpServer& s) {
    s.SetBodyLimit(64 << 20);
    s.SetHeaderCheck([](const HttpRequest& head) -> std::optional<HttpResponse> {
      if (!head.peer_cn.empty()) return std::nullopt;
      return HttpResponse{401, R"({"error":"a node certificate is required"})"};
    });
  });
  RawTlsClient raw(server_->port());  // no client certificate
  ASSERT_TRUE(raw.connected());
  raw.Send("PUT /bits HTTP/1.1\r\nHost: x\r\nContent-Length: 52428800\r\n\r\n");
  std::string out = raw.ReadToEnd();  // the body was never sent
  EXPECT_THAT(out, StartsWith("HTTP/1.1 401 "));
  EXPECT_THAT(out, HasSubstr("a node certificate is required"));
  EXPECT_EQ(handled_, 0);
  auto r = Call(WithClientCert(), "POST", "/in", "{}");
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(r->status, 201);
  EXPECT_THAT(r->body, HasSubstr("cn=node-1"));
}

TEST_F(HttpsTest, ABodyDrippedOneByteAtATimeIsCutOff) {
  StartServer(nullptr, "", std::nullopt, [](HttpServer& s) {
    ReadDeadlines d;
    d.request = milliseconds(300);
    d.min_body_rate = 1000;
    s.SetReadDeadlines(d);
  });
  RawTlsClient raw(server_->port());
  ASSERT_TRUE(raw.connected());
  auto start = std::chrono::steady_clock::now();
  raw.Send("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n");
  pollfd p{raw.fd(), POLLIN, 0};
  while (poll(&p, 1, 10) == 0 && std::chrono::steady_clock::now() - start < kBound) raw.Send("a");
  EXPECT_THAT(raw.ReadToEnd(), StartsWith("HTTP/1.1 408 "));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_EQ(handled_, 0);
}

TEST_F(HttpsTest, KeepAliveServesSeveralRequestsOnOneConnection) {
  StartServer();
  RawTlsClient raw(server_->port());
  ASSERT_TRUE(raw.connected());
  raw.Send(
      "GET /one HTTP/1.1\r\nHost: x\r\n\r\n"
      "POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
      "GET /three HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  std::string all = raw.ReadToEnd();
  EXPECT_THAT(all, HasSubstr("GET /one []"));
  EXPECT_THAT(all, HasSubstr("POST /two [abc]"));
  EXPECT_THAT(all, HasSubstr("GET /three []"));
  EXPECT_THAT(all, HasSubstr("Connection: close"));
  EXPECT_EQ(handled_, 3);
}

TEST_F(HttpsTest, CallsToOneServerShareAKeptConnection) {
  StartServer();
  const auto before = GetHttpsClientStats();
  for (int i = 0; i < 5; ++i) {
    auto r = Call(WithClientCert(), "POST", "/v1/heartbeat", "{}");
    ASSERT_TRUE(r.ok()) << r.error();
    EXPECT_THAT(r->body, HasSubstr("cn=node-1 "));
  }
  EXPECT_EQ(server_->connections_accepted(), 1u);
  // From another local address: another connection, kept as well.
  ClientTls from = WithClientCert();
  from.local_ip = "127.0.0.7";
  for (int i = 0; i < 3; ++i) {
    auto r = Call(from, "GET", "/");
    ASSERT_TRUE(r.ok()) << r.error();
    EXPECT_THAT(r->body, HasSubstr("ip=127.0.0.7 "));
  }
  EXPECT_EQ(server_->connections_accepted(), 2u);
  const auto after = GetHttpsClientStats();
  EXPECT_EQ(after.calls - before.calls, 8u);
  EXPECT_EQ(after.connections - before.connections, 2u);
  // Another certificate is another client: its own connection.
  ASSERT_TRUE(Call(Trusting(), "GET", "/").ok());
  EXPECT_EQ(server_->connections_accepted(), 3u);
}

TEST_F(HttpsTest, ConcurrentCallsEachGetAConnectionAndAllAreKept) {
  Mailbox<Responder> pending;
  StartServer([&](const HttpRequest&, Responder respond) { pending.Put(std::move(respond)); });
  auto a = std::async(std::launch::async, [&] { return Call(Trusting(), "GET", "/a"); });
  auto b = std::async(std::launch::async, [&] { return Call(Trusting(), "GET", "/b"); });
  auto ra = pending.Take(), rb = pending.Take();  // both requests are in the server at once
  ASSERT_TRUE(ra && rb);
  (*ra)(HttpResponse{});
  (*rb)(HttpResponse{});
  ASSERT_TRUE(a.get().ok());
  ASSERT_TRUE(b.get().ok());
  EXPECT_EQ(server_->connections_accepted(), 2u);
  auto c = std::async(std::launch::async, [&] { return Call(Trusting(), "GET", "/c"); });
  auto rc = pending.Take();
  ASSERT_TRUE(rc);
  (*rc)(HttpResponse{});
  ASSERT_TRUE(c.get().ok());
  EXPECT_EQ(server_->connections_accepted(), 2u);  // a kept one carried it
}

TEST_F(HttpsTest, ANewConnectionResumesTheTlsSessionAndKeepsTheClientIdentity) {
  StartServer();
  ASSERT_TRUE(Call(WithClientCert(), "GET", "/").ok());
  DropIdleHttpsConnections();
  const auto before = GetHttpsClientStats();
  auto r = Call(WithClientCert(), "GET", "/again");
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_THAT(r->body, HasSubstr("cn=node-1 "));  // the resumed session carries the certificate
  const auto after = GetHttpsClientStats();
  EXPECT_EQ(after.connections - before.connections, 1u);
  EXPECT_EQ(after.resumed - before.resumed, 1u);
  EXPECT_EQ(server_->connections_accepted(), 2u);
}

TEST_F(HttpsTest, AKeptConnectionToAServerThatWentAwayIsReplaced) {
  StartServer();
  ASSERT_TRUE(Call(Trusting(), "GET", "/").ok());
  int port = server_->port();
  server_->Stop();  // closes the kept connection from the server's side
  server_ = std::make_unique<HttpsServer>(
      ServerTls{ca_.cert_pem, server_id_.cert_pem, server_id_.key_pem, ""},
      [](const HttpRequest& req, Responder respond) {
        HttpResponse r;
        r.body = "new " + req.target;
        respond(std::move(r));
      });
  ASSERT_TRUE(server_->Start("127.0.0.1", port).ok());
  auto r = HttpsCall(Trusting(), "127.0.0.1", port, "POST", "/x", "{}", kCallTimeout);
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(r->body, "new /x");
}

TEST_F(HttpsTest, ResponderCalledLaterFromAnotherThread) {
  Mailbox<Responder> pending;
  StartServer([&](const HttpRequest&, Responder respond) { pending.Put(std::move(respond)); });
  auto call = std::async(std::launch::async, [&] { return Call(Trusting(), "GET", "/v1/watch"); });
  auto respond = pending.Take();
  ASSERT_TRUE(respond);
  HttpResponse r;
  r.body = R"({"events":[]})";
  (*respond)(r);
  (*respond)(HttpResponse{500, "second call is ignored"});
  auto got = call.get();
  ASSERT_TRUE(got.ok()) << got.error();
  EXPECT_EQ(got->status, 200);
  EXPECT_EQ(got->body, R"({"events":[]})");
}

TEST_F(HttpsTest, DroppedResponderAnswers500) {
  StartServer([](const HttpRequest&, Responder) {});
  auto r = Call(Trusting(), "GET", "/");
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(r->status, 500);
}

TEST_F(HttpsTest, ThrowingHandlerAnswers500) {
  StartServer([](const HttpRequest&, Responder) { throw std::runtime_error("boom"); });
  auto r = Call(Trusting(), "GET", "/");
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(r->status, 500);
}

TEST_F(HttpsTest, StopWithAnOutstandingLongPollReturnsPromptly) {
  Mailbox<Responder> pending;
  StartServer([&](const HttpRequest&, Responder respond) { pending.Put(std::move(respond)); });
  auto call = std::async(std::launch::async, [&] { return Call(Trusting(), "GET", "/v1/watch"); });
  auto respond = pending.Take();
  ASSERT_TRUE(respond);

  auto start = std::chrono::steady_clock::now();
  server_->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
  auto got = call.get();  // the connection was closed under it
  EXPECT_FALSE(got.ok());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));

  // A Responder that outlives its server is harmless, called or not.
  (*respond)(HttpResponse{});
  server_.reset();
  (*respond)(HttpResponse{});
  respond.reset();
}

TEST_F(HttpsTest, StartErrors) {
  StartServer();
  HttpsServer same_port(ServerTls{ca_.cert_pem, server_id_.cert_pem, server_id_.key_pem, ""},
                        [](const HttpRequest&, Responder) {});
  auto busy = same_port.Start("127.0.0.1", server_->port());
  EXPECT_THAT(busy.error(),
              StartsWith("cannot listen on 127.0.0.1:" + std::to_string(server_->port())));

  HttpsServer bad_ip(ServerTls{ca_.cert_pem, server_id_.cert_pem, server_id_.key_pem, ""},
                     [](const HttpRequest&, Responder) {});
  EXPECT_THAT(bad_ip.Start("300.1.1.1", 0).error(), HasSubstr("not an IP address"));

  HttpsServer bad_cert(ServerTls{ca_.cert_pem, "garbage", server_id_.key_pem, ""},
                       [](const HttpRequest&, Responder) {});
  EXPECT_THAT(bad_cert.Start("127.0.0.1", 0).error(), HasSubstr("certificate is not valid PEM"));

  HttpsServer wrong_key(ServerTls{ca_.cert_pem, server_id_.cert_pem, client_id_.key_pem, ""},
                        [](const HttpRequest&, Responder) {});
  EXPECT_FALSE(wrong_key.Start("127.0.0.1", 0).ok());

  EXPECT_FALSE(server_->Start("127.0.0.1", 0).ok());  // already started
}

TEST_F(HttpsTest, ClientArgumentErrors) {
  StartServer();
  EXPECT_THAT(Call(Trusting(), "FETCH", "/").error(), HasSubstr("unsupported HTTP method"));
  EXPECT_THAT(Call(Trusting(), "GET", "v1").error(), HasSubstr("must start with '/'"));
  EXPECT_THAT(Call(ClientTls{}, "GET", "/").error(), HasSubstr("no CA certificate"));
  EXPECT_THAT(Call(ClientTls{"garbage", "", "", ""}, "GET", "/").error(),
              HasSubstr("not valid PEM"));
  EXPECT_THAT(Call(ClientTls{ca_.cert_pem, client_id_.cert_pem, server_id_.key_pem, ""}, "GET", "/")
                  .error(),
              HasSubstr("does not belong"));
}

TEST_F(HttpsTest, ExtraHeadersGoBothWays) {
  StartServer([](const HttpRequest& req, Responder respond) {
    HttpResponse r;
    r.body = req.headers.count("x-kato-token") ? req.headers.at("x-kato-token") : "-";
    r.headers["X-Kato-Seen"] = "yes";
    respond(std::move(r));
  });
  auto r = HttpsCall(Trusting(), "127.0.0.1", server_->port(), "GET", "/", "", kCallTimeout,
                     {{"X-Kato-Token", "t0k"}});
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(r->body, "t0k");
  EXPECT_EQ(r->headers["x-kato-seen"], "yes");
}

// --- Plain HTTP. ---

// Sends `data` on a new plain TCP connection and returns everything the server
// sends until it closes the connection.
std::string RawExchange(int port, const std::vector<std::string>& pieces) {
  int fd = ConnectTcp(port);
  for (const auto& piece : pieces) {
    EXPECT_EQ(write(fd, piece.data(), piece.size()), static_cast<ssize_t>(piece.size()));
  }
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  close(fd);
  return out;
}

class HttpTest : public ::testing::Test {
 protected:
  // Starts a plain server on 127.0.0.1, port 0. The default handler echoes the
  // request, with the X-Echo header if any.
  void StartServer(HttpHandler handler = nullptr, size_t body_limit = 0,
                   const std::function<void(HttpServer&)>& configure = nullptr) {
    if (!handler) {
      handler = [this](const HttpRequest& req, Responder respond) {
        ++handled_;
        HttpResponse r;
        r.status = req.method == "POST" ? 201 : 200;
        r.content_type = "text/plain";
        auto header = [&](const std::string& name) {
          auto it = req.headers.find(name);
          return it == req.headers.end() ? std::string("-") : it->second;
        };
        r.body = req.method + " " + req.target + " [" +
                 (req.body.size() > 100 ? std::to_string(req.body.size()) + " bytes" : req.body) +
                 "] cn=" + req.peer_cn + " ip=" + req.peer_ip + " ct=" + header("content-type") +
                 " echo=" + header("x-echo");
        respond(std::move(r));
      };
    }
    server_ = std::make_unique<HttpServer>(std::move(handler));
    if (body_limit) server_->SetBodyLimit(body_limit);
    if (configure) configure(*server_);
    auto started = server_->Start("127.0.0.1", 0);
    ASSERT_TRUE(started.ok()) << started.error();
    ASSERT_GT(server_->port(), 0);
  }

  Result<HttpResponse> Call(const std::string& method, const std::string& target,
                            const std::string& body = "",
                            const std::map<std::string, std::string>& headers = {}) {
    return HttpCall("127.0.0.1", server_->port(), method, target, body, kCallTimeout, headers);
  }

  std::atomic<int> handled_{0};
  std::unique_ptr<HttpServer> server_;
};

TEST_F(HttpTest, GetAndPostRoundTrip) {
  StartServer();
  auto get = Call("GET", "/v1/apps?limit=3");
  ASSERT_TRUE(get.ok()) << get.error();
  EXPECT_EQ(get->status, 200);
  EXPECT_EQ(get->content_type, "text/plain");
  EXPECT_EQ(get->body, "GET /v1/apps?limit=3 [] cn= ip=127.0.0.1 ct=- echo=-");

  auto post = Call("POST", "/v1/apps", R"({"name":"x"})");
  ASSERT_TRUE(post.ok()) << post.error();
  EXPECT_EQ(post->status, 201);
  EXPECT_EQ(post->body,
            R"(POST /v1/apps [{"name":"x"}] cn= ip=127.0.0.1 ct=application/json echo=-)");
  EXPECT_EQ(handled_, 2);
}

// Includes a body that arrives in pieces, as large uploads do.
TEST_F(HttpTest, KeepAliveServesSeveralRequestsOnOneConnection) {
  StartServer();
  std::string all = RawExchange(
      server_->port(), {"GET /one HTTP/1.1\r\nHost: x\r\n\r\n"
                        "POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nab",
                        "cd", "ef", "GET /three HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"});
  EXPECT_THAT(all, StartsWith("HTTP/1.1 200 OK"));
  EXPECT_THAT(all, HasSubstr("GET /one []"));
  EXPECT_THAT(all, HasSubstr("POST /two [abcdef]"));
  EXPECT_THAT(all, HasSubstr("GET /three []"));
  EXPECT_THAT(all, HasSubstr("Connection: close"));
  EXPECT_EQ(handled_, 3);
}

TEST_F(HttpTest, ExtraRequestHeadersReachTheHandler) {
  StartServer();
  auto r = Call("PUT", "/v1/apps/x/bits", "zipbytes",
                {{"X-Echo", "hello"}, {"Content-Type", "application/zip"}});
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(r->body,
            "PUT /v1/apps/x/bits [zipbytes] cn= ip=127.0.0.1 ct=application/zip echo=hello");

  // Framing is the call's own: a caller's Content-Length cannot desynchronize it.
  auto framed = Call("POST", "/", "abc", {{"Content-Length", "1"}});
  ASSERT_TRUE(framed.ok()) << framed.error();
  EXPECT_THAT(framed->body, HasSubstr("[abc]"));

  EXPECT_THAT(Call("GET", "/", "", {{"X-Bad", "a\r\nInjected: 1"}}).error(),
              HasSubstr("invalid HTTP header 'X-Bad'"));
  EXPECT_THAT(Call("GET", "/", "", {{"Bad Name", "a"}}).error(), HasSubstr("invalid HTTP header"));
  EXPECT_EQ(handled_, 2);
}

TEST_F(HttpTest, ResponseHeadersReachTheClient) {
  StartServer([](const HttpRequest&, Responder respond) {
    HttpResponse r;
    r.status = 201;
    r.body = "{}";
    r.headers = {{"Location", "/v1/apps/7"},
                 {"Content-Length", "999"},  // the server's own: ignored
                 {"X-Bad", "a\r\nInjected: 1"}};
    respond(std::move(r));
  });
  auto r = Call("POST", "/v1/apps", "{}");
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(r->status, 201);
  EXPECT_EQ(r->body, "{}");
  EXPECT_EQ(r->headers["location"], "/v1/apps/7");
  EXPECT_EQ(r->headers["content-length"], "2");
  EXPECT_EQ(r->headers["content-type"], "application/json");
  EXPECT_EQ(r->headers["server"], "kato");
  EXPECT_EQ(r->headers.count("x-bad"), 0u);
  EXPECT_EQ(r->headers.count("injected"), 0u);
}

TEST_F(HttpTest, DefaultBodyLimitRefusesTwoMiB) {
  StartServer();
  auto over = Call("POST", "/", std::string(2 * 1024 * 1024, 'a'));
  ASSERT_TRUE(over.ok()) << over.error();
  EXPECT_EQ(over->status, 413);
  EXPECT_EQ(over->body, R"({"error":"request body over 1 MiB"})");
  EXPECT_EQ(handled_, 0);
}

TEST_F(HttpTest, RaisedBodyLimitAcceptsLargeUploads) {
  StartServer(nullptr, 6 * 1024 * 1024);
  auto five = Call("POST", "/v1/bits", std::string(5 * 1024 * 1024, 'a'));
  ASSERT_TRUE(five.ok()) << five.error();
  EXPECT_EQ(five->status, 201);
  EXPECT_EQ(five->body,
            "POST /v1/bits [5242880 bytes] cn= ip=127.0.0.1 ct=application/json echo=-");
  auto over = Call("POST", "/v1/bits", std::string(6 * 1024 * 1024 + 1, 'a'));
  ASSERT_TRUE(over.ok()) << over.error();
  EXPECT_EQ(over->status, 413);
  EXPECT_EQ(over->body, R"({"error":"request body over 6 MiB"})");
  EXPECT_EQ(handled_, 1);
}

// Refuses requests without an Authorization header from their header alone.
void RequireAuthorization(HttpServer& server) {
  server.SetHeaderCheck([](const HttpRequest& head) -> std::optional<HttpResponse> {
    if (head.headers.count("authorization")) return std::nullopt;
    HttpResponse r;
    r.status = 401;
    r.body = R"({"error":"no credential for )" + head.method + " " + head.target + " from " +
             head.peer_ip + R"("})";
    return r;
  });
}

TEST_F(HttpTest, HeaderCheckRefusesBeforeTheBodyIsSent) {
  StartServer(nullptr, 64 << 20, RequireAuthorization);
  // Only the header of a 50 MiB upload: the answer comes without any of the body.
  std::string out =
      RawExchange(server_->port(),
                  {"PUT /v2/apps/x/bits HTTP/1.1\r\nHost: h\r\nContent-Length: 52428800\r\n\r\n"});
  EXPECT_THAT(out, StartsWith("HTTP/1.1 401 "));
  EXPECT_THAT(out, HasSubstr("no credential for PUT /v2/apps/x/bits from 127.0.0.1"));
  EXPECT_THAT(out, HasSubstr("Connection: close"));
  EXPECT_EQ(handled_, 0);
  // With the header, the request and its body reach the handler.
  auto r = Call("POST", "/up", std::string(2 << 20, 'a'), {{"Authorization", "Bearer x"}});
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(r->status, 201);
  EXPECT_THAT(r->body, StartsWith("POST /up [2097152 bytes]"));
  EXPECT_EQ(handled_, 1);
}

// Sends `header`, then the body one byte per `pace` until the server answers;
// returns the answer (everything until the server closes) and how long it took.
std::pair<std::string, std::chrono::steady_clock::duration> Drip(int port,
                                                                 const std::string& header,
                                                                 size_t body_bytes,
                                                                 milliseconds pace) {
  int fd = ConnectTcp(port);
  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(write(fd, header.data(), header.size()), static_cast<ssize_t>(header.size()));
  pollfd p{fd, POLLIN, 0};
  for (size_t sent = 0; sent < body_bytes && std::chrono::steady_clock::now() - start < kBound;
       ++sent) {
    if (poll(&p, 1, static_cast<int>(pace.count())) != 0) break;  // the server answered
    if (write(fd, "a", 1) != 1) break;
  }
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  close(fd);
  return {out, std::chrono::steady_clock::now() - start};
}

ReadDeadlines ShortDeadlines() {
  ReadDeadlines d;
  d.idle = std::chrono::seconds(5);
  d.request = milliseconds(300);
  d.min_body_rate = 1000;  // bytes per second
  return d;
}

TEST_F(HttpTest, ABodyDrippedOneByteAtATimeIsCutOff) {
  StartServer(nullptr, 0, [](HttpServer& s) { s.SetReadDeadlines(ShortDeadlines()); });
  // 100 bytes per second: the idle deadline never fires, the request deadline does.
  auto [out, took] =
      Drip(server_->port(), "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n", 100000,
           milliseconds(10));
  EXPECT_THAT(out, StartsWith("HTTP/1.1 408 "));
  EXPECT_THAT(out, HasSubstr("request not received in time"));
  EXPECT_GE(took, milliseconds(300));
  EXPECT_LT(took, std::chrono::seconds(5));  // before the idle deadline could have
  EXPECT_EQ(handled_, 0);
  auto r = Call("GET", "/still-here");
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(r->status, 200);
}

TEST_F(HttpTest, ASteadyBodyMayTakeLongerThanTheRequestDeadline) {
  StartServer(nullptr, 0, [](HttpServer& s) { s.SetReadDeadlines(ShortDeadlines()); });
  int fd = ConnectTcp(server_->port());
  std::string header = "POST /slow HTTP/1.1\r\nHost: h\r\nContent-Length: 20000\r\n\r\n";
  ASSERT_EQ(write(fd, header.data(), header.size()), static_cast<ssize_t>(header.size()));
  // 1000 bytes every 50 ms for a second: well above 1000 bytes/s, longer than 300 ms.
  pollfd p{fd, POLLIN, 0};
  for (int i = 0; i < 20; ++i) {
    ASSERT_EQ(poll(&p, 1, 50), 0) << "the server answered before the body was sent";
    ASSERT_EQ(write(fd, std::string(1000, 'a').data(), 1000), 1000);
  }
  char buf[4096];
  ssize_t n = read(fd, buf, sizeof buf);
  close(fd);
  ASSERT_GT(n, 0);
  EXPECT_THAT(std::string(buf, static_cast<size_t>(n)), StartsWith("HTTP/1.1 201 "));
}

TEST_F(HttpTest, AnIdleConnectionIsClosedWithoutAnAnswer) {
  StartServer(nullptr, 0, [](HttpServer& s) { s.SetReadDeadlines(ShortDeadlines()); });
  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(RawExchange(server_->port(), {}), "");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

TEST_F(HttpTest, GarbageGets400AndClose) {
  StartServer();
  EXPECT_THAT(RawExchange(server_->port(), {"\x16\x03\x01garbage\r\n\r\n"}),
              StartsWith("HTTP/1.1 400 "));
  EXPECT_THAT(RawExchange(server_->port(), {"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"}),
              StartsWith("HTTP/1.1 400 "));
  EXPECT_THAT(RawExchange(server_->port(), {"GET / HTTP/1.1\r\nHost: x\r\n" +
                                            std::string(9000, 'X') + ": y\r\n\r\n"}),
              StartsWith("HTTP/1.1 431 "));
  // A TLS client on the plain port is garbage too.
  auto tls = HttpsCall(ClientTls{"unused", "", "", ""}, "127.0.0.1", server_->port(), "GET", "/",
                       "", kCallTimeout);
  EXPECT_FALSE(tls.ok());
  EXPECT_EQ(handled_, 0);
  auto r = Call("GET", "/still-here");
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(r->status, 200);
}

TEST_F(HttpTest, DelayedAndDroppedResponders) {
  Mailbox<Responder> pending;
  StartServer([&](const HttpRequest& req, Responder respond) {
    if (req.target == "/later") pending.Put(std::move(respond));
  });
  auto call = std::async(std::launch::async, [&] { return Call("GET", "/later"); });
  auto respond = pending.Take();
  ASSERT_TRUE(respond);
  (*respond)(HttpResponse{202, "later"});
  auto got = call.get();
  ASSERT_TRUE(got.ok()) << got.error();
  EXPECT_EQ(got->status, 202);
  EXPECT_EQ(got->body, "later");

  auto dropped = Call("GET", "/dropped");
  ASSERT_TRUE(dropped.ok()) << dropped.error();
  EXPECT_EQ(dropped->status, 500);
}

TEST_F(HttpTest, StopWithAnOutstandingLongPollReturnsPromptly) {
  Mailbox<Responder> pending;
  StartServer([&](const HttpRequest&, Responder respond) { pending.Put(std::move(respond)); });
  auto call = std::async(std::launch::async, [&] { return Call("GET", "/v1/watch"); });
  auto respond = pending.Take();
  ASSERT_TRUE(respond);

  auto start = std::chrono::steady_clock::now();
  server_->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
  auto got = call.get();  // the connection was closed under it
  EXPECT_FALSE(got.ok());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  (*respond)(HttpResponse{});
  server_.reset();
  (*respond)(HttpResponse{});
}

TEST_F(HttpTest, ClientTimesOutAgainstAServerThatNeverAnswers) {
  SilentListener silent;
  auto start = std::chrono::steady_clock::now();
  auto r = HttpCall("127.0.0.1", silent.port, "GET", "/", "", milliseconds(300));
  auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(),
            "timed out after 300 ms talking to 127.0.0.1:" + std::to_string(silent.port));
  EXPECT_GE(elapsed, milliseconds(250));
  EXPECT_LT(elapsed, milliseconds(3000));
}

TEST_F(HttpTest, ClientErrors) {
  int port;
  {
    SilentListener closed_soon;
    port = closed_soon.port;
  }
  auto refused = HttpCall("127.0.0.1", port, "GET", "/", "", kCallTimeout);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error(),
            "cannot connect to 127.0.0.1:" + std::to_string(port) + ": Connection refused");
  EXPECT_THAT(HttpCall("127.0.0.1", 80, "FETCH", "/", "", kCallTimeout).error(),
              HasSubstr("unsupported HTTP method"));
  EXPECT_THAT(HttpCall("127.0.0.1", 80, "GET", "v1", "", kCallTimeout).error(),
              HasSubstr("must start with '/'"));
  EXPECT_THAT(HttpCall("127.0.0.1", 0, "GET", "/", "", kCallTimeout).error(),
              HasSubstr("invalid port in 127.0.0.1:0"));
}

TEST_F(HttpTest, StartTwiceAndPortInUse) {
  StartServer();
  HttpServer same_port([](const HttpRequest&, Responder) {});
  EXPECT_THAT(same_port.Start("127.0.0.1", server_->port()).error(),
              StartsWith("cannot listen on 127.0.0.1:" + std::to_string(server_->port())));
  EXPECT_EQ(server_->Start("127.0.0.1", 0).error(), "the HTTP server was already started");
}

TEST(ParseHttpRequestTest, ParsesARequest) {
  auto r = ParseHttpRequest(
      "POST /v1/x?y=1 HTTP/1.1\r\nHost: h\r\nX-Kato: a\r\nx-kato: b\r\nContent-Length: 5\r\n\r\n"
      "hello<next request>");
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(r->method, "POST");
  EXPECT_EQ(r->target, "/v1/x?y=1");
  EXPECT_EQ(r->body, "hello");
  EXPECT_EQ(r->headers.at("host"), "h");
  EXPECT_EQ(r->headers.at("x-kato"), "a, b");

  auto chunked = ParseHttpRequest(
      "PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
  ASSERT_TRUE(chunked.ok()) << chunked.error();
  EXPECT_EQ(chunked->body, "abcde");
}

TEST(ParseHttpRequestTest, RejectsWithTheRightStatus) {
  struct Case {
    std::string raw;
    int status;
    std::string error;
  };
  const Case cases[] = {
      {"", 400, "incomplete"},
      {"GET / HTTP/1.1\r\nHost: x\r\n", 400, "incomplete"},
      {"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", 400, "incomplete"},
      {"\x16\x03\x01garbage\r\n\r\n", 400, "malformed"},
      {"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400, "malformed"},
      {"POST / HTTP/1.1\r\nContent-Length: 1048577\r\n\r\n", 413, "over 1 MiB"},
      {"GET / HTTP/1.1\r\nX: " + std::string(9000, 'a') + "\r\n\r\n", 431, "over 8 KiB"},
  };
  for (const auto& c : cases) {
    int status = 0;
    auto r = ParseHttpRequest(c.raw, &status);
    ASSERT_FALSE(r.ok()) << c.raw;
    EXPECT_EQ(status, c.status) << c.raw;
    EXPECT_THAT(r.error(), HasSubstr(c.error)) << c.raw;
  }
}

}  // namespace
}  // namespace kato

namespace kato {
namespace {

// verify_host: a server outside the cluster must hold a certificate for the
// host asked for (the CLI's https:// API URLs), not just any that chains.
TEST_F(HttpsTest, VerifyHostChecksTheCertificatesNames) {
  auto kc = CreateKeyAndCsr("web");
  ASSERT_TRUE(kc.ok());
  auto cert = SignServerCsr(ca_, kc->csr_pem, "api.example.com", {"api.example.com"}, 30);
  ASSERT_TRUE(cert.ok()) << cert.error();
  StartServer(nullptr, "", Identity{*cert, kc->key_pem});
  ClientTls tls = Trusting();
  tls.verify_host = "api.example.com";
  auto good = Call(tls, "GET", "/v2/info");
  ASSERT_TRUE(good.ok()) << good.error();
  EXPECT_EQ(good->status, 200);
  tls.verify_host = "evil.example.com";
  auto bad = Call(tls, "GET", "/v2/info");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.error(), ::testing::HasSubstr("hostname mismatch"));
  // A node certificate names no host: a client that asks for one refuses it.
  StartServer();
  tls.verify_host = "api.example.com";
  EXPECT_FALSE(Call(tls, "GET", "/v2/info").ok());
}

// Trust on first use: the top of the presented chain, reported to the caller;
// with a host to check, the leaf must name it in that mode too.
TEST_F(HttpsTest, FirstUseReportsThePresentedCaAndChecksTheHost) {
  auto kc = CreateKeyAndCsr("web");
  ASSERT_TRUE(kc.ok());
  auto cert = SignServerCsr(ca_, kc->csr_pem, "api.example.com", {"api.example.com"}, 30);
  ASSERT_TRUE(cert.ok()) << cert.error();
  StartServer(nullptr, ca_.cert_pem, Identity{*cert, kc->key_pem});
  ClientTls tls;
  tls.pin_ca_sha256 = kFirstUse;
  tls.verify_host = "api.example.com";
  auto r = Call(tls, "GET", "/console/");
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(r->peer_ca_pem, ca_.cert_pem);
  tls.verify_host = "evil.example.com";
  auto bad = Call(tls, "GET", "/console/");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.error(), HasSubstr("does not name evil.example.com"));
  // Pinned to the CA it reported: the same check of the host.
  tls.pin_ca_sha256 = *CertFingerprint(ca_.cert_pem);
  EXPECT_FALSE(Call(tls, "GET", "/").ok());
  tls.verify_host = "api.example.com";
  EXPECT_TRUE(Call(tls, "GET", "/").ok());
}

}  // namespace
}  // namespace kato
