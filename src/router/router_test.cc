// RouteTable unit tests and Router integration tests: a real Router on
// 127.0.0.1 port 0 in front of small fake backends written here.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "common/pki.h"
#include "router/proxy.h"
#include "router/route_table.h"
#include "router/router_test_util.h"

namespace kato {
namespace {

using namespace testing_router;  // NOLINT: the router tests' helpers
using ::testing::HasSubstr;

// --- RouteTable ---

TEST(NormalizeHostTest, LowercasesAndDropsPort) {
  std::string out;
  NormalizeHost("App.Example.COM:8080", &out);
  EXPECT_EQ(out, "app.example.com");
  NormalizeHost("api.kato.local.", &out);
  EXPECT_EQ(out, "api.kato.local");
  NormalizeHost("[::1]:80", &out);
  EXPECT_EQ(out, "[::1]");
  NormalizeHost("", &out);
  EXPECT_EQ(out, "");
}

TEST(RouteTableTest, FindsCaseInsensitivelyAndIgnoresPort) {
  RouteTable table;
  table.Replace({{"App.Example", {{"10.0.0.1", 80}}}, {"empty.example", {}}});
  auto routes = table.Snapshot();
  std::string scratch;
  const HostRoute* r = RouteTable::Find(*routes, "APP.example:80", &scratch);
  ASSERT_NE(r, nullptr);
  ASSERT_EQ(r->backends.size(), 1u);
  EXPECT_EQ(r->backends[0]->key, "10.0.0.1:80");
  const HostRoute* empty = RouteTable::Find(*routes, "empty.example", &scratch);
  ASSERT_NE(empty, nullptr);
  EXPECT_TRUE(empty->backends.empty());
  EXPECT_EQ(RouteTable::Find(*routes, "other.example", &scratch), nullptr);
}

TEST(RouteTableTest, RoundRobinsAndSkipsTried) {
  RouteTable table;
  table.Replace({{"a", {{"10.0.0.1", 80}, {"10.0.0.2", 80}, {"10.0.0.3", 80}}}});
  auto routes = table.Snapshot();
  std::string scratch;
  const HostRoute& r = *RouteTable::Find(*routes, "a", &scratch);
  EXPECT_EQ(table.Pick(r, 0), 0);
  EXPECT_EQ(table.Pick(r, 0), 1);
  EXPECT_EQ(table.Pick(r, 0), 2);
  EXPECT_EQ(table.Pick(r, 0), 0);
  EXPECT_EQ(table.Pick(r, 0b011), 2);
  EXPECT_EQ(table.Pick(r, 0b111), -1);
}

TEST(RouteTableTest, FailedBackendIsSkippedForASecondAndMarksSurviveReplace) {
  FakeClock clock;
  RouteTable table(clock);
  table.Replace({{"a", {{"10.0.0.1", 80}, {"10.0.0.2", 80}}}});
  std::string scratch;
  {
    auto routes = table.Snapshot();
    const HostRoute& r = *RouteTable::Find(*routes, "a", &scratch);
    table.MarkFailed(*r.backends[0]);
  }
  table.Replace({{"a", {{"10.0.0.1", 80}, {"10.0.0.2", 80}}}, {"b", {{"10.0.0.3", 80}}}});
  auto routes = table.Snapshot();
  const HostRoute& r = *RouteTable::Find(*routes, "a", &scratch);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(table.Pick(r, 0), 1);
  // Only the failed one left: better to try it than to fail without trying.
  EXPECT_EQ(table.Pick(r, 0b10), 0);
  clock.advance(RouteTable::kFailedFor);
  std::vector<int> picks;
  for (int i = 0; i < 4; ++i) picks.push_back(table.Pick(r, 0));
  EXPECT_THAT(picks, ::testing::UnorderedElementsAre(0, 0, 1, 1));
}

TEST(RouteTableTest, CacheFollowsVersion) {
  RouteTable table;
  RouteCache cache(table);
  std::string scratch;
  EXPECT_EQ(RouteTable::Find(cache.Get(), "a", &scratch), nullptr);
  table.Replace({{"a", {{"10.0.0.1", 80}}}});
  EXPECT_NE(RouteTable::Find(cache.Get(), "a", &scratch), nullptr);
}

TEST_F(RouterTest, RoutesByHostCaseInsensitively) {
  FakeBackend a("A"), b("B");
  table_.Replace(
      {{"a.example", {{"127.0.0.1", a.port()}}}, {"b.example", {{"127.0.0.1", b.port()}}}});
  StartRouter();
  Client c(router_->port());
  EXPECT_EQ(c.Get("a.example").body(), "A");
  EXPECT_EQ(c.Get("B.Example:80").body(), "B");
  EXPECT_EQ(c.Get("a.example", "/path?q=1").body(), "A");
  EXPECT_EQ(a.last().target(), "/path?q=1");
}

TEST_F(RouterTest, UnknownHostIs404AndHostWithoutInstanceIs503) {
  table_.Replace({{"idle.example", {}}});
  StartRouter();
  Client c(router_->port());
  auto r404 = c.Get("nope.example");
  EXPECT_EQ(r404.result_int(), 404);
  EXPECT_THAT(r404.body(), HasSubstr("kato router: no app or API at host nope.example"));
  auto r503 = c.Get("idle.example");  // same connection: errors keep it alive
  EXPECT_EQ(r503.result_int(), 503);
  EXPECT_THAT(r503.body(), HasSubstr("idle.example has no running instance"));
}

TEST_F(RouterTest, RoundRobinsAcrossBackends) {
  FakeBackend a("A"), b("B");
  table_.Replace({{"app", {{"127.0.0.1", a.port()}, {"127.0.0.1", b.port()}}}});
  StartRouter();
  Client c(router_->port());
  int as = 0, bs = 0;
  for (int i = 0; i < 10; ++i) {
    auto body = c.Get("app").body();
    as += body == "A";
    bs += body == "B";
  }
  EXPECT_EQ(as, 5);
  EXPECT_EQ(bs, 5);
}

TEST_F(RouterTest, RetriesAnotherBackendWhenConnectIsRefused) {
  FakeBackend up("UP");
  table_.Replace({{"app", {{"127.0.0.1", ClosedPort()}, {"127.0.0.1", up.port()}}}});
  StartRouter();
  Client c(router_->port());
  for (int i = 0; i < 20; ++i) {
    auto res = c.Get("app");
    ASSERT_EQ(res.result_int(), 200) << res.body();
    EXPECT_EQ(res.body(), "UP");
  }
}

TEST_F(RouterTest, AllBackendsDownIs502) {
  table_.Replace({{"app", {{"127.0.0.1", ClosedPort()}, {"127.0.0.1", ClosedPort()}}}});
  StartRouter();
  Client c(router_->port());
  auto res = c.Get("app");
  EXPECT_EQ(res.result_int(), 502);
  EXPECT_THAT(res.body(), HasSubstr("could be reached"));
}

TEST_F(RouterTest, SetsForwardedHeaders) {
  FakeBackend a("A");
  table_.Replace({{"app.example", {{"127.0.0.1", a.port()}}}});
  StartRouter();
  Client c(router_->port());
  ASSERT_EQ(c.Get("App.Example:8080").result_int(), 200);
  auto seen = a.last();
  EXPECT_EQ(seen["X-Forwarded-For"], "127.0.0.1");
  EXPECT_EQ(seen["X-Forwarded-Proto"], "http");
  EXPECT_EQ(seen["X-Forwarded-Host"], "App.Example:8080");
  EXPECT_EQ(seen[http::field::host], "App.Example:8080");
  ASSERT_EQ(c.Get("app.example", "/", {{"X-Forwarded-For", "203.0.113.7"}}).result_int(), 200);
  EXPECT_EQ(a.last()["X-Forwarded-For"], "203.0.113.7, 127.0.0.1");
  // Fields after an incoming X-Forwarded-For arrive intact; several merge.
  c.SendRaw("GET / HTTP/1.1\r\nHost: app.example\r\nX-Forwarded-For: 203.0.113.7\r\n"
            "X-Forwarded-Proto: https\r\nX-Forwarded-For: 10.1.1.1\r\nX-After: yes\r\n"
            "X-Forwarded-Host: evil.example\r\n\r\n");
  ASSERT_EQ(c.Read().result_int(), 200);
  seen = a.last();
  EXPECT_EQ(seen["X-Forwarded-For"], "203.0.113.7, 10.1.1.1, 127.0.0.1");
  EXPECT_EQ(seen["X-After"], "yes");
  // A client's own claims about the scheme and host are replaced ...
  EXPECT_EQ(seen["X-Forwarded-Proto"], "http");
  EXPECT_EQ(seen["X-Forwarded-Host"], "app.example");
  EXPECT_EQ(std::distance(seen.equal_range("X-Forwarded-Proto").first,
                          seen.equal_range("X-Forwarded-Proto").second),
            1);
}

TEST_F(RouterTest, PassesForwardedProtoAndHostFromTrustedProxies) {
  FakeBackend a("A");
  table_.Replace({{"app.example", {{"127.0.0.1", a.port()}}}});
  StartRouter();
  router_->SetTrustedProxies({"127.0.0.1"});  // ... but a load balancer's are kept
  Client c(router_->port());
  c.SendRaw("GET / HTTP/1.1\r\nHost: app.example\r\nX-Forwarded-For: 203.0.113.7\r\n"
            "X-Forwarded-Proto: https\r\nX-Forwarded-Host: app.example:443\r\n\r\n");
  ASSERT_EQ(c.Read().result_int(), 200);
  auto seen = a.last();
  EXPECT_EQ(seen["X-Forwarded-Proto"], "https");
  EXPECT_EQ(seen["X-Forwarded-Host"], "app.example:443");
  EXPECT_EQ(seen["X-Forwarded-For"], "203.0.113.7, 127.0.0.1");
  router_->SetTrustedProxies({});
  Client later(router_->port());
  later.SendRaw("GET / HTTP/1.1\r\nHost: app.example\r\nX-Forwarded-Proto: https\r\n\r\n");
  ASSERT_EQ(later.Read().result_int(), 200);
  EXPECT_EQ(a.last()["X-Forwarded-Proto"], "http");
}

TEST_F(RouterTest, ForwardsRequestBodies) {
  FakeBackend a("A");
  table_.Replace({{"app", {{"127.0.0.1", a.port()}}}});
  StartRouter();
  Client c(router_->port());
  c.SendRaw(
      "POST /up HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
  EXPECT_EQ(c.Read().result_int(), 200);
  EXPECT_EQ(a.last().body(), "hello world");
  EXPECT_EQ(a.last()[http::field::content_length], "11");
}

TEST_F(RouterTest, KeepsUpstreamConnectionsAlive) {
  FakeBackend a("A");
  table_.Replace({{"app", {{"127.0.0.1", a.port()}}}});
  StartRouter();
  for (int conn = 0; conn < 3; ++conn) {
    Client c(router_->port());
    for (int i = 0; i < 10; ++i) ASSERT_EQ(c.Get("app").result_int(), 200);
  }
  EXPECT_EQ(a.requests(), 30);
  EXPECT_EQ(a.connections(), 1);  // one router thread, sequential requests: one pooled connection
}

TEST_F(RouterTest, RetriesWhenPooledConnectionWasClosedByBackend) {
  // The backend promises keep-alive but closes after each response, as one
  // does when its idle timeout hits: every reuse of a pooled connection fails.
  FakeBackend a("A", /*close_after_response=*/true);
  table_.Replace({{"app", {{"127.0.0.1", a.port()}}}});
  StartRouter();
  Client c(router_->port());
  for (int i = 0; i < 10; ++i) {
    auto res = c.Get("app");
    ASSERT_EQ(res.result_int(), 200) << res.body();
  }
  EXPECT_EQ(a.requests(), 10);
}

TEST_F(RouterTest, TunnelsWebSocketUpgrades) {
  FakeBackend a("A");
  table_.Replace({{"ws", {{"127.0.0.1", a.port()}}}});
  StartRouter();
  Client c(router_->port());
  c.SendRaw(
      "GET /chat HTTP/1.1\r\nHost: ws\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
  std::string got;
  while (got.find("\r\n\r\n") == std::string::npos) got += c.ReadSome();
  EXPECT_THAT(got, HasSubstr("101 Switching Protocols"));
  EXPECT_EQ(a.last()[http::field::upgrade], "websocket");
  EXPECT_EQ(a.last()["Sec-WebSocket-Key"], "dGhlIHNhbXBsZSBub25jZQ==");
  std::string rest = got.substr(got.find("\r\n\r\n") + 4);
  c.SendRaw("ping-1");
  while (rest.size() < 6) rest += c.ReadSome();
  EXPECT_EQ(rest, "ping-1");
  c.SendRaw(std::string(100000, 'x'));
  std::string echoed;
  while (echoed.size() < 100000) {
    std::string s = c.ReadSome();
    ASSERT_FALSE(s.empty());
    echoed += s;
  }
  EXPECT_EQ(echoed, std::string(100000, 'x'));
}

TEST_F(RouterTest, HealthAndDraining) {
  StartRouter();
  Client c(router_->health_port());
  auto ok = c.Get("whatever", "/health");
  EXPECT_EQ(ok.result_int(), 200);
  EXPECT_EQ(ok.body(), "ok\n");
  router_->SetDraining(true);
  EXPECT_EQ(c.Get("whatever", "/health").result_int(), 503);
  router_->SetDraining(false);
  EXPECT_EQ(c.Get("whatever", "/health").result_int(), 200);
  EXPECT_EQ(c.Get("whatever", "/other").result_int(), 404);
}

TEST_F(RouterTest, DrainFailsHealthFirstThenFinishesRequestsInFlight) {
  FakeBackend a("A");
  table_.Replace({{"app", {{"127.0.0.1", a.port()}}}});
  StartRouter();
  Client idle(router_->port());  // a keep-alive connection between requests
  EXPECT_EQ(idle.Get("app").body(), "A");
  a.set_delay(std::chrono::milliseconds(1500));
  Client busy(router_->port());
  busy.SendRaw("GET / HTTP/1.1\r\nHost: app\r\n\r\n");
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (a.requests() < 2 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_EQ(a.requests(), 2);

  std::thread drain([&] { router_->Drain(std::chrono::milliseconds(200), std::chrono::seconds(10)); });
  Client health(router_->health_port());
  int status = 0;
  while (std::chrono::steady_clock::now() < deadline &&
         (status = health.Get("x", "/health").result_int()) != 503)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(status, 503);
  auto res = busy.Read();  // the request in flight still gets its answer ...
  EXPECT_EQ(res.result_int(), 200);
  EXPECT_EQ(res.body(), "A");
  EXPECT_FALSE(res.keep_alive());  // ... with Connection: close
  EXPECT_TRUE(idle.Closed());      // idle connections are closed
  drain.join();
  EXPECT_ANY_THROW(Client late(router_->port()));  // and nothing new is accepted
}

// Accepts connections, reads a request, sends `answer` (nothing, or the
// start of an answer) and dies.
class DyingBackend {
 public:
  explicit DyingBackend(std::string answer)
      : acceptor_(ioc_, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0)) {
    thread_ = std::thread([this, answer = std::move(answer)] {
      for (;;) {
        ErrorCode ec;
        tcp::socket s(ioc_);
        acceptor_.accept(s, ec);
        if (ec) return;
        beast::flat_buffer buf;
        http::request_parser<http::string_body> p;
        http::read(s, buf, p, ec);
        ++requests_;
        if (!answer.empty()) net::write(s, net::buffer(answer), ec);
      }
    });
  }
  ~DyingBackend() {
    ::shutdown(acceptor_.native_handle(), SHUT_RDWR);
    thread_.join();
  }
  uint16_t port() const { return acceptor_.local_endpoint().port(); }
  int requests() const { return requests_; }

 private:
  net::io_context ioc_;
  tcp::acceptor acceptor_;
  std::thread thread_;
  std::atomic<int> requests_{0};
};

TEST_F(RouterTest, InstanceDyingBeforeItsAnswerIsRetriedOnlyForIdempotentRequests) {
  DyingBackend dying("");  // before its answer's header
  FakeBackend b("B");
  table_.Replace({{"app", {{"127.0.0.1", dying.port()}, {"127.0.0.1", b.port()}}}});
  StartRouter();
  // Round-robin: the dying backend gets some of these first.
  int posts_failed = 0;
  for (int i = 0; i < 4; ++i) {
    Client c(router_->port());
    c.SendRaw("POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 1\r\n\r\nx");
    auto res = c.Read();
    if (res.result_int() == 502) ++posts_failed;
    else EXPECT_EQ(res.body(), "B");
  }
  EXPECT_GE(posts_failed, 1);  // a POST may have had effects: never sent twice
  EXPECT_EQ(b.requests() + dying.requests(), 4);
  int before = dying.requests();
  for (int i = 0; i < 4; ++i) {  // a GET that got no answer is sent to the other
    Client c(router_->port());
    auto res = c.Get("app");
    EXPECT_EQ(res.result_int(), 200);
    EXPECT_EQ(res.body(), "B");
  }
  EXPECT_GT(dying.requests(), before);
  EXPECT_THAT(router_->Metrics(), HasSubstr("kato_router_retries_total "));
}

TEST_F(RouterTest, InstanceDyingWithinASmallAnswerIsRetriedForIdempotentRequests) {
  // The header, then death before the body (a process killed between two writes).
  DyingBackend dying("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab");
  FakeBackend b("B");
  table_.Replace({{"app", {{"127.0.0.1", dying.port()}, {"127.0.0.1", b.port()}}}});
  StartRouter();
  for (int i = 0; i < 4; ++i) {  // round-robin: the dying backend gets some of these first
    Client c(router_->port());
    auto res = c.Get("app");
    EXPECT_EQ(res.result_int(), 200);
    EXPECT_EQ(res.body(), "B");  // never the dying one's 2 of 10 bytes
  }
  EXPECT_GE(dying.requests(), 1);
  int before = dying.requests();
  int posts_failed = 0;
  for (int i = 0; i < 4; ++i) {  // a POST is never sent twice: its answer is not held
    Client c(router_->port());
    c.SendRaw("POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 1\r\n\r\nx");
    std::string got;
    for (std::string s; !(s = c.ReadSome()).empty();) {
      got += s;
      if (got.find("\r\n\r\nB") != std::string::npos) break;  // the good backend's answer
    }
    if (got.find("\r\n\r\nab") != std::string::npos) ++posts_failed;
  }
  EXPECT_EQ(posts_failed, dying.requests() - before);
}

TEST_F(RouterTest, InstanceDyingMidResponseTruncatesItForTheClient) {
  // Past what the router holds (64 KiB), or a POST: the client gets what came.
  for (std::string request : {"GET / HTTP/1.1\r\nHost: app\r\n\r\n",
                              "POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 0\r\n\r\n"}) {
    std::string length = request[0] == 'G' ? "1000000" : "10";
    DyingBackend dying("HTTP/1.1 200 OK\r\nContent-Length: " + length + "\r\n\r\nab");
    table_.Replace({{"app", {{"127.0.0.1", dying.port()}}}});
    if (!router_) StartRouter();
    Client c(router_->port());
    c.SendRaw(request);
    std::string got;
    for (std::string s; !(s = c.ReadSome()).empty();) got += s;  // until the router closes
    EXPECT_THAT(got, HasSubstr("HTTP/1.1 200 OK\r\n"));
    EXPECT_THAT(got, HasSubstr("Content-Length: " + length + "\r\n"));
    EXPECT_EQ(got.substr(got.find("\r\n\r\n") + 4), "ab");  // 2 bytes, then the end
    EXPECT_EQ(dying.requests(), 1);  // the client saw bytes: never retried
  }
}

TEST_F(RouterTest, GarbageIs400AndCloses) {
  StartRouter();
  Client c(router_->port());
  c.SendRaw("\x16\x03\x01 this is not HTTP\r\n\r\n");
  auto res = c.Read();
  EXPECT_EQ(res.result_int(), 400);
  EXPECT_TRUE(c.Closed());
}

TEST_F(RouterTest, OversizedHeaderIs431) {
  StartRouter();
  Client c(router_->port());
  auto res = c.Get("app", "/", {{"X-Big", std::string(20000, 'a')}});
  EXPECT_EQ(res.result_int(), 431);
  EXPECT_TRUE(c.Closed());
}

TEST_F(RouterTest, OversizedBodyIs413) {
  FakeBackend a("A");
  table_.Replace({{"app", {{"127.0.0.1", a.port()}}}});
  RouterOptions opt;
  opt.max_request_body = 10;
  StartRouter(opt);
  Client c(router_->port());
  c.SendRaw("POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 11\r\n\r\nhello world");
  EXPECT_EQ(c.Read().result_int(), 413);
  EXPECT_EQ(a.requests(), 0);
}

TEST_F(RouterTest, UpstreamTimeoutIs504) {
  // A listener that never accepts: the connect succeeds (backlog), no answer comes.
  net::io_context ioc;
  tcp::acceptor silent(ioc, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
  table_.Replace({{"app", {{"127.0.0.1", silent.local_endpoint().port()}}}});
  RouterOptions opt;
  opt.upstream_timeout = std::chrono::milliseconds(300);
  StartRouter(opt);
  Client c(router_->port());
  auto res = c.Get("app");
  EXPECT_EQ(res.result_int(), 504);
  EXPECT_THAT(res.body(), HasSubstr("did not answer in time"));
}

TEST_F(RouterTest, HeldAnswerArrivesWholeOrTimesOutAs504) {
  ScriptedBackend b;
  table_.Replace({{"app", {{"127.0.0.1", b.port()}}}});
  RouterOptions opt;
  opt.upstream_timeout = std::chrono::milliseconds(300);
  StartRouter(opt);
  // The backend answers a GET with these pieces, then stays silent.
  using Response = http::response<http::string_body>;
  auto answer = [&](std::vector<std::string> pieces) {
    Client c(router_->port());
    c.SendRaw("GET / HTTP/1.1\r\nHost: app\r\n\r\n");
    auto s = b.Next();
    std::string buf;
    if (!s || ScriptedBackend::ReadHead(*s, buf).empty()) return Response{};
    for (const auto& p : pieces) ScriptedBackend::Write(*s, p);
    return c.Read();
  };
  // The body in three pieces: the client gets it whole.
  auto res = answer({"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nab", "cd", "ef"});
  EXPECT_EQ(res.result_int(), 200);
  EXPECT_EQ(res.body(), "abcdef");
  // The header, then nothing: the client has seen nothing, so the answer is the router's.
  res = answer({"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nab"});
  EXPECT_EQ(res.result_int(), 504);
  EXPECT_THAT(res.body(), HasSubstr("did not answer in time"));
}

TEST_F(RouterTest, ReplaceWhileRequestsRun) {
  FakeBackend a("A"), b("B");
  table_.Replace({{"app", {{"127.0.0.1", a.port()}}}});
  RouterOptions opt;
  opt.threads = 2;
  StartRouter(opt);
  std::atomic<int> failures{0}, done{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 4; ++t) {
    clients.emplace_back([&] {
      Client c(router_->port());
      for (int i = 0; i < 200; ++i) {
        if (c.Get("app").result_int() != 200) ++failures;
      }
      ++done;
    });
  }
  int flips = 0;
  while (done < 4) {
    ++flips;
    if (flips % 2) {
      table_.Replace({{"app", {{"127.0.0.1", b.port()}}}, {"other", {}}});
    } else {
      table_.Replace({{"app", {{"127.0.0.1", a.port()}, {"127.0.0.1", b.port()}}}});
    }
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(failures, 0);
  EXPECT_GT(flips, 1);
  EXPECT_EQ(a.requests() + b.requests(), 800);
}

TEST_F(RouterTest, ServesHttpsWithForwardedProto) {
  auto ca = CreateCa("router-test");
  ASSERT_TRUE(ca.ok()) << ca.error();
  auto kc = CreateKeyAndCsr("router");
  ASSERT_TRUE(kc.ok());
  auto cert = SignCsr(*ca, kc->csr_pem, "router", 1);
  ASSERT_TRUE(cert.ok());
  FakeBackend a("A");
  table_.Replace({{"app", {{"127.0.0.1", a.port()}}}});
  RouterOptions opt;
  opt.tls = ServerTls{"", *cert, kc->key_pem, ca->cert_pem};
  StartRouter(opt);

  net::io_context ioc;
  net::ssl::context ctx(net::ssl::context::tls_client);
  ctx.set_verify_mode(net::ssl::verify_none);
  net::ssl::stream<tcp::socket> s(ioc, ctx);
  s.next_layer().connect(tcp::endpoint(net::ip::make_address("127.0.0.1"),
                                       static_cast<uint16_t>(router_->tls_port())));
  s.handshake(net::ssl::stream_base::client);
  for (int i = 0; i < 2; ++i) {
    http::request<http::empty_body> req(http::verb::get, "/", 11);
    req.set(http::field::host, "app");
    http::write(s, req);
    beast::flat_buffer buf;
    http::response<http::string_body> res;
    http::read(s, buf, res);
    EXPECT_EQ(res.body(), "A");
  }
  EXPECT_EQ(a.last()["X-Forwarded-Proto"], "https");
}

// A TLS backend (the controllers' API): the router checks its certificate
// against the CA, shows its own, and passes the client's headers on.
TEST_F(RouterTest, ReachesTlsBackendsWithItsCertificate) {
  auto ca = CreateCa("cluster");
  auto other = CreateCa("other");
  ASSERT_TRUE(ca.ok() && other.ok());
  auto issue = [](const CaBundle& by, const std::string& cn) {
    auto kc = CreateKeyAndCsr(cn);
    auto cert = SignCsr(by, kc->csr_pem, cn, 1);
    return std::pair{*cert, kc->key_pem};
  };
  auto serve = [](const CaBundle& ca, std::pair<std::string, std::string> id) {
    auto server = std::make_unique<HttpsServer>(
        ServerTls{ca.cert_pem, id.first, id.second, ""},
        [](const HttpRequest& req, Responder respond) {
          auto auth = req.headers.find("authorization");
          respond(HttpResponse{200, "cn=" + req.peer_cn + " auth=" +
                                        (auth == req.headers.end() ? "-" : auth->second) +
                                        " body=" + req.body});
        });
    EXPECT_TRUE(server->Start("127.0.0.1", 0).ok());
    return server;
  };
  auto controller = serve(*ca, issue(*ca, "controller-node"));
  auto impostor = serve(*other, issue(*other, "impostor"));
  auto [cert, key] = issue(*ca, "router-node");
  table_.Replace({{"api.example", {{"127.0.0.1", static_cast<uint16_t>(controller->port()), true}}},
                  {"fake.example", {{"127.0.0.1", static_cast<uint16_t>(impostor->port()), true}}},
                  {"plain.example", {{"127.0.0.1", static_cast<uint16_t>(controller->port())}}}});
  RouterOptions opt;
  opt.upstream_tls = ClientTls{ca->cert_pem, cert, key, ""};
  StartRouter(opt);

  Client c(router_->port());
  for (int i = 0; i < 2; ++i) {  // the second one on the pooled TLS connection
    auto res = c.Get("api.example", "/v2/info", {{"Authorization", "Bearer sesame"}});
    EXPECT_EQ(res.result_int(), 200u);
    EXPECT_EQ(res.body(), "cn=router-node auth=Bearer sesame body=");
  }
  c.SendRaw("POST /v2/apps HTTP/1.1\r\nHost: api.example\r\nContent-Length: 4\r\n\r\n{\"a\"");
  auto posted = c.Read();
  EXPECT_EQ(posted.body(), "cn=router-node auth=- body={\"a\"");
  // A backend whose certificate is not from the cluster CA is never sent the request.
  auto fake = c.Get("fake.example", "/", {{"Authorization", "Bearer sesame"}});
  EXPECT_EQ(fake.result_int(), 502u);
  // A plain connection to a TLS port gets nowhere either.
  EXPECT_EQ(Client(router_->port()).Get("plain.example").result_int(), 502u);
}

TEST_F(RouterTest, TlsBackendsNeedClientTlsSettings) {
  FakeBackend a("A");
  table_.Replace({{"api.example", {{"127.0.0.1", a.port(), true}}}});
  StartRouter();  // no upstream_tls
  Client c(router_->port());
  EXPECT_EQ(c.Get("api.example").result_int(), 502u);
  EXPECT_EQ(a.requests(), 0);
}

TEST(RouteTableTest, TlsBackendsHaveTheirOwnPoolKey) {
  RouteTable table;
  table.Replace({{"a", {{"10.0.0.1", 9024, true}, {"10.0.0.1", 9024}}}});
  std::string scratch;
  auto routes = table.Snapshot();
  const HostRoute& r = *RouteTable::Find(*routes, "a", &scratch);
  EXPECT_EQ(r.backends[0]->key, "tls:10.0.0.1:9024");
  EXPECT_EQ(r.backends[1]->key, "10.0.0.1:9024");
}

TEST_F(RouterTest, StartFailsOnBusyPort) {
  StartRouter();
  RouterOptions opt;
  opt.port = router_->port();
  Router second(opt, table_);
  auto s = second.Start();
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.error(), HasSubstr("cannot listen"));
}

}  // namespace
}  // namespace kato
