// The router's streaming data path and HTTP/1.1 edge cases: live responses,
// bounded relaying both ways, 1xx, pipelining, the parser's limits, timeouts,
// the connection cap, metrics and the access log, and TLS certificates by SNI.
// Backends are scripted byte by byte (ScriptedBackend) so that each test
// decides what the router sees and when.
#include <openssl/ssl.h>
#include <sys/resource.h>

#include <fstream>
#include <sstream>

#include "common/pki.h"
#include "router/router_test_util.h"

namespace kato {
namespace {

using namespace testing_router;  // NOLINT: the router tests' helpers
using ::testing::HasSubstr;
using ::testing::Not;
using std::chrono::milliseconds;

// A raw client socket with a receive timeout, for byte-exact checks.
class Raw {
 public:
  explicit Raw(int port) : socket_(ioc_) {
    socket_.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), static_cast<uint16_t>(port)));
    timeval tv{5, 0};
    setsockopt(socket_.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  void Send(const std::string& s) {
    ErrorCode ec;
    net::write(socket_, net::buffer(s), ec);
  }
  // Reads until `text` has arrived (or 5 s of silence, or the end): what came.
  std::string Until(const std::string& text) {
    char data[65536];
    while (got_.find(text) == std::string::npos) {
      ErrorCode ec;
      size_t n = socket_.read_some(net::buffer(data), ec);
      if (ec) break;
      got_.append(data, n);
    }
    return got_;
  }
  // Everything until the router closes the connection.
  std::string All() {
    char data[65536];
    for (;;) {
      ErrorCode ec;
      size_t n = socket_.read_some(net::buffer(data), ec);
      if (ec) break;
      got_.append(data, n);
    }
    return got_;
  }
  void Clear() { got_.clear(); }
  tcp::socket& socket() { return socket_; }

 private:
  net::io_context ioc_;
  tcp::socket socket_;
  std::string got_;
};

size_t Count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t i = s.find(what); i != std::string::npos; i = s.find(what, i + 1)) ++n;
  return n;
}

class StreamingTest : public RouterTest {
 protected:
  void Route(uint16_t port) { table_.Replace({{"app", {{"127.0.0.1", port}}}}); }
};

TEST_F(StreamingTest, ResponseBytesReachTheClientAsTheBackendWritesThem) {
  ScriptedBackend b;
  Route(b.port());
  StartRouter();
  Raw c(router_->port());
  c.Send("GET /events HTTP/1.1\r\nHost: app\r\n\r\n");
  auto up = b.Next();
  ASSERT_TRUE(up);
  std::string buf;
  ASSERT_THAT(ScriptedBackend::ReadHead(*up, buf), HasSubstr("GET /events HTTP/1.1"));
  ScriptedBackend::Write(*up, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
                              "data: one\n\n");
  // The first event arrives while the backend still holds the response open.
  std::string got = c.Until("data: one\n\n");
  EXPECT_THAT(got, HasSubstr("Transfer-Encoding: chunked\r\n"));  // close-delimited -> chunked
  EXPECT_THAT(got, HasSubstr("data: one\n\n"));
  ScriptedBackend::Write(*up, "data: two\n\n");
  EXPECT_THAT(c.Until("data: two\n\n"), HasSubstr("data: two\n\n"));
  up->close();  // the end of a close-delimited body: the chunked one gets its last chunk
  EXPECT_THAT(c.Until("0\r\n\r\n"), HasSubstr("\r\n0\r\n\r\n"));
}

TEST_F(StreamingTest, ChunkedResponseIsRelayedChunkByChunk) {
  ScriptedBackend b;
  Route(b.port());
  StartRouter();
  Raw c(router_->port());
  c.Send("GET / HTTP/1.1\r\nHost: app\r\n\r\n");
  auto up = b.Next();
  ASSERT_TRUE(up);
  std::string buf;
  ScriptedBackend::ReadHead(*up, buf);
  ScriptedBackend::Write(*up, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n");
  EXPECT_THAT(c.Until("first"), HasSubstr("5\r\nfirst\r\n"));
  ScriptedBackend::Write(*up, "6\r\nsecond\r\n0\r\n\r\n");
  std::string all = c.Until("0\r\n\r\n");
  EXPECT_THAT(all, HasSubstr("6\r\nsecond\r\n0\r\n\r\n"));
  // The connection stays usable: the next request on it is answered.
  c.Clear();
  c.Send("GET /2 HTTP/1.1\r\nHost: app\r\n\r\n");
  buf.clear();
  ASSERT_THAT(ScriptedBackend::ReadHead(*up, buf), HasSubstr("GET /2"));  // pooled connection
  ScriptedBackend::Write(*up, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
  EXPECT_THAT(c.Until("\r\n\r\nok"), HasSubstr("Content-Length: 2\r\n"));
}

TEST_F(StreamingTest, Http10ClientGetsAChunkedResponseCloseDelimited) {
  ScriptedBackend b;
  Route(b.port());
  StartRouter();
  Raw c(router_->port());
  c.Send("GET / HTTP/1.0\r\nHost: app\r\n\r\n");
  auto up = b.Next();
  ASSERT_TRUE(up);
  std::string buf;
  ScriptedBackend::ReadHead(*up, buf);
  ScriptedBackend::Write(*up, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                              "5\r\nhello\r\n0\r\n\r\n");
  std::string all = c.All();
  EXPECT_THAT(all, HasSubstr("HTTP/1.0 200 OK\r\n"));
  EXPECT_THAT(all, Not(HasSubstr("Transfer-Encoding")));
  EXPECT_EQ(all.substr(all.find("\r\n\r\n") + 4), "hello");
}

TEST_F(StreamingTest, BackendDyingMidChunkedResponseLeavesItWithoutItsLastChunk) {
  ScriptedBackend b;
  Route(b.port());
  StartRouter();
  Raw c(router_->port());
  c.Send("GET / HTTP/1.1\r\nHost: app\r\n\r\n");
  auto up = b.Next();
  ASSERT_TRUE(up);
  std::string buf;
  ScriptedBackend::ReadHead(*up, buf);
  ScriptedBackend::Write(*up, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
  c.Until("hello");
  up->close();
  std::string all = c.All();  // the router closes the client connection
  EXPECT_THAT(all, HasSubstr("5\r\nhello\r\n"));
  EXPECT_THAT(all, Not(HasSubstr("0\r\n\r\n")));
  EXPECT_THAT(router_->Metrics(), HasSubstr("kato_router_upstream_errors_total{kind=\"reset\"} 1"));
}

TEST_F(StreamingTest, LargeUploadStreamsToTheBackendBeforeTheClientIsDone) {
  ScriptedBackend b;
  Route(b.port());
  StartRouter();
  Raw c(router_->port());
  const size_t total = 4 << 20;
  c.Send("POST /upload HTTP/1.1\r\nHost: app\r\nContent-Length: " + std::to_string(total) +
         "\r\n\r\n" + std::string(256 << 10, 'a'));
  auto up = b.Next();
  ASSERT_TRUE(up);
  std::string buf;
  std::string head = ScriptedBackend::ReadHead(*up, buf);
  EXPECT_THAT(head, HasSubstr("Content-Length: 4194304\r\n"));
  // The backend gets what was sent so far while the rest is still to come.
  ASSERT_TRUE(ScriptedBackend::ReadAtLeast(*up, buf, 256 << 10));
  EXPECT_EQ(buf.size(), 256u << 10);
  c.Send(std::string(total - (256 << 10), 'b'));
  ASSERT_TRUE(ScriptedBackend::ReadAtLeast(*up, buf, total));
  EXPECT_EQ(buf.size(), total);
  EXPECT_EQ(buf.back(), 'b');
  ScriptedBackend::Write(*up, "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
  EXPECT_THAT(c.Until("\r\n\r\n"), HasSubstr("201 Created"));
}

TEST_F(StreamingTest, ChunkedUploadStaysChunkedWhenItIsLarge) {
  ScriptedBackend b;
  Route(b.port());
  StartRouter();
  Raw c(router_->port());
  std::string piece(100 << 10, 'x');
  char hex[16];
  std::snprintf(hex, sizeof hex, "%zx", piece.size());
  c.Send("POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n" + std::string(hex) +
         "\r\n" + piece + "\r\n");
  auto up = b.Next();
  ASSERT_TRUE(up);
  std::string buf;
  EXPECT_THAT(ScriptedBackend::ReadHead(*up, buf), HasSubstr("Transfer-Encoding: chunked\r\n"));
  c.Send("3\r\nend\r\n0\r\n\r\n");
  ASSERT_TRUE(ScriptedBackend::ReadAtLeast(*up, buf, piece.size() + 10));
  std::string rest;
  while (buf.find("0\r\n\r\n", buf.size() - 5) == std::string::npos) {
    ASSERT_TRUE(ScriptedBackend::ReadAtLeast(*up, buf, buf.size() + 1));
  }
  // De-chunked and re-chunked: the same bytes, ending with the last chunk.
  std::string body;
  size_t pos = 0;
  for (;;) {
    size_t eol = buf.find("\r\n", pos);
    size_t n = std::stoul(buf.substr(pos, eol - pos), nullptr, 16);
    if (n == 0) break;
    body += buf.substr(eol + 2, n);
    pos = eol + 2 + n + 2;
  }
  EXPECT_EQ(body, piece + "end");
  ScriptedBackend::Write(*up, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  EXPECT_THAT(c.Until("\r\n\r\n"), HasSubstr("200 OK"));
}

TEST_F(StreamingTest, SmallChunkedUploadGoesWithAContentLength) {
  FakeBackend a("A");
  Route(a.port());
  StartRouter();
  Client c(router_->port());
  c.SendRaw("POST /up HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n"
            "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
  EXPECT_EQ(c.Read().result_int(), 200);
  EXPECT_EQ(a.last().body(), "hello world");
  EXPECT_EQ(a.last()[http::field::content_length], "11");
}

TEST_F(StreamingTest, EarlyHintsPassAsInterimAndThePooledConnectionStaysInStep) {
  ScriptedBackend b;
  Route(b.port());
  StartRouter();
  Raw c(router_->port());
  c.Send("GET /one HTTP/1.1\r\nHost: app\r\n\r\n");
  auto up = b.Next();
  ASSERT_TRUE(up);
  std::string buf;
  ScriptedBackend::ReadHead(*up, buf);
  ScriptedBackend::Write(*up, "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n");
  EXPECT_THAT(c.Until("rel=preload\r\n\r\n"),
              HasSubstr("HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"));
  ScriptedBackend::Write(*up, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none");
  EXPECT_THAT(c.Until("\r\n\r\none"), HasSubstr("HTTP/1.1 200 OK\r\n"));
  // A second client's request on the same pooled upstream connection gets
  // its own answer, not the first one's.
  Raw d(router_->port());
  d.Send("GET /two HTTP/1.1\r\nHost: app\r\n\r\n");
  buf.clear();
  ASSERT_THAT(ScriptedBackend::ReadHead(*up, buf), HasSubstr("GET /two"));
  ScriptedBackend::Write(*up, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntwo");
  std::string second = d.Until("\r\n\r\ntwo");
  EXPECT_THAT(second, HasSubstr("\r\n\r\ntwo"));
  EXPECT_THAT(second, Not(HasSubstr("103")));
  EXPECT_EQ(b.accepted(), 1);
}

TEST_F(StreamingTest, ContinueIsSentOnceABackendIsConnectedAndTheBodyFollows) {
  ScriptedBackend b;
  Route(b.port());
  StartRouter();
  Raw c(router_->port());
  c.Send("PUT /f HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
  EXPECT_THAT(c.Until("\r\n\r\n"), HasSubstr("HTTP/1.1 100 Continue\r\n\r\n"));
  c.Send("hello");
  auto up = b.Next();
  ASSERT_TRUE(up);
  std::string buf;
  std::string head = ScriptedBackend::ReadHead(*up, buf);
  EXPECT_THAT(head, Not(HasSubstr("Expect")));  // the router answered it
  ASSERT_TRUE(ScriptedBackend::ReadAtLeast(*up, buf, 5));
  EXPECT_EQ(buf, "hello");
  // A 100 from the backend too is not passed on a second time.
  ScriptedBackend::Write(*up, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n");
  std::string all = c.Until("204 No Content\r\n");
  EXPECT_EQ(Count(all, "100 Continue"), 1u) << all;
}

TEST_F(StreamingTest, ContinueIsNotSentWhenNoBackendCanBeReached) {
  table_.Replace({{"app", {{"127.0.0.1", ClosedPort()}}}});
  StartRouter();
  Raw c(router_->port());
  c.Send("PUT /f HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
  std::string all = c.All();
  EXPECT_THAT(all, HasSubstr("502 Bad Gateway"));
  EXPECT_THAT(all, Not(HasSubstr("100 Continue")));
}

TEST_F(StreamingTest, PipelinedRequestsAreAnsweredInOrder) {
  FakeBackend a("A");
  Route(a.port());
  StartRouter();
  Raw c(router_->port());
  c.Send("GET /1 HTTP/1.1\r\nHost: app\r\n\r\n"
         "POST /2 HTTP/1.1\r\nHost: app\r\nContent-Length: 3\r\n\r\nabc"
         "GET /3 HTTP/1.1\r\nHost: nothing-here\r\n\r\n"
         "GET /4 HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n");
  std::string all = c.All();
  size_t first = all.find("HTTP/1.1 200");
  size_t second = all.find("HTTP/1.1 200", first + 1);
  size_t third = all.find("HTTP/1.1 404");
  size_t fourth = all.find("HTTP/1.1 200", third);
  ASSERT_NE(fourth, std::string::npos) << all;
  EXPECT_LT(first, second);
  EXPECT_LT(second, third);
  EXPECT_EQ(a.requests(), 3);
  EXPECT_EQ(a.last().target(), "/4");
}

struct Refusal {
  std::string request;
  int status;
};

class RefusalTest : public StreamingTest, public ::testing::WithParamInterface<Refusal> {};

TEST_P(RefusalTest, IsAnsweredAndClosedWithNothingForwarded) {
  FakeBackend a("A");
  Route(a.port());
  StartRouter();
  Raw c(router_->port());
  c.Send(GetParam().request);
  std::string all = c.All();
  EXPECT_THAT(all, HasSubstr("HTTP/1.1 " + std::to_string(GetParam().status) + " ")) << all;
  EXPECT_THAT(all, HasSubstr("Connection: close\r\n"));
  EXPECT_EQ(a.requests(), 0);
}

std::string ManyFields(int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += "X-F" + std::to_string(i) + ": v\r\n";
  return s;
}

INSTANTIATE_TEST_SUITE_P(
    Http11, RefusalTest,
    ::testing::Values(
        Refusal{"POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: gzip\r\n\r\nxxxx", 400},
        Refusal{"POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
                501},
        Refusal{"POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n"
                "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                400},
        Refusal{"POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 3\r\nTransfer-Encoding: chunked"
                "\r\n\r\n0\r\n\r\n",
                400},
        Refusal{"GET / HTTP/1.1\r\nHost: app\r\nHost: other\r\n\r\n", 400},
        Refusal{"GET / HTTP/1.1\r\n\r\n", 400},
        Refusal{"GET /" + std::string(9000, 'a') + " HTTP/1.1\r\nHost: app\r\n\r\n", 414},
        Refusal{"GET /" + std::string(20000, 'a') + " HTTP/1.1\r\nHost: app\r\n\r\n", 414},
        Refusal{"GET / HTTP/1.1\r\nHost: app\r\nX-Big: " + std::string(20000, 'a') + "\r\n\r\n",
                431},
        Refusal{"GET / HTTP/1.1\r\nHost: app\r\n" + ManyFields(101) + "\r\n", 431},
        Refusal{"GET / HTTP/1.1\r\nHost: app\r\nExpect: magic\r\n\r\n", 417},
        Refusal{"POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400},
        // A chunk line that never ends (an extension of 100 KiB): refused, not buffered.
        Refusal{"POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n5;x=" +
                    std::string(100 << 10, 'e'),
                400}));

TEST_F(StreamingTest, HundredHeaderFieldsAreFine) {
  FakeBackend a("A");
  Route(a.port());
  StartRouter();
  Raw c(router_->port());
  c.Send("GET / HTTP/1.1\r\nHost: app\r\n" + ManyFields(99) + "\r\n");
  EXPECT_THAT(c.Until("\r\n\r\nA"), HasSubstr("HTTP/1.1 200 OK"));
}

TEST_F(StreamingTest, BodyOverTheLimitIs413EvenWhenChunked) {
  FakeBackend a("A");
  Route(a.port());
  RouterOptions opt;
  opt.max_request_body = 100;
  StartRouter(opt);
  Raw c(router_->port());
  c.Send("POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n80\r\n" +
         std::string(128, 'x') + "\r\n0\r\n\r\n");
  EXPECT_THAT(c.All(), HasSubstr("HTTP/1.1 413 "));
  EXPECT_EQ(a.requests(), 0);
}

TEST_F(StreamingTest, SlowHeaderIs408AndIdleKeepAliveIsClosed) {
  FakeBackend a("A");
  Route(a.port());
  RouterOptions opt;
  opt.header_timeout = milliseconds(400);
  opt.keepalive_timeout = milliseconds(600);
  StartRouter(opt);
  Raw slow(router_->port());
  slow.Send("GET / HTTP/1.1\r\nHost: app\r\n");  // and never the end of the header
  auto t0 = std::chrono::steady_clock::now();
  std::string got = slow.All();
  EXPECT_THAT(got, HasSubstr("HTTP/1.1 408 "));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(3));

  Raw idle(router_->port());
  idle.Send("GET / HTTP/1.1\r\nHost: app\r\n\r\n");
  idle.Until("\r\n\r\nA");
  t0 = std::chrono::steady_clock::now();
  idle.All();  // closed without a word after keepalive_timeout
  auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(waited, milliseconds(300));
  EXPECT_LT(waited, std::chrono::seconds(3));
}

TEST_F(StreamingTest, ClientStallingItsBodyIsCutOff) {
  FakeBackend a("A");
  Route(a.port());
  RouterOptions opt;
  opt.upstream_timeout = milliseconds(500);
  StartRouter(opt);
  Raw c(router_->port());
  c.Send("POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 10\r\n\r\nabc");  // 7 bytes short
  auto t0 = std::chrono::steady_clock::now();
  c.All();  // the router closes (a 5 s receive timeout otherwise)
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(3));
  EXPECT_EQ(a.requests(), 0);  // nothing half-sent
}

TEST_F(StreamingTest, SilenceIsTimedFromTheLastTrafficNotFromTheStart) {
  ScriptedBackend b;
  Route(b.port());
  RouterOptions opt;
  opt.upstream_timeout = milliseconds(700);
  StartRouter(opt);
  Raw c(router_->port());
  c.Send("GET / HTTP/1.1\r\nHost: app\r\n\r\n");
  auto up = b.Next();
  ASSERT_TRUE(up);
  std::string buf;
  ScriptedBackend::ReadHead(*up, buf);
  ScriptedBackend::Write(*up, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
  // Six beats 300 ms apart: 1.8 s in all, far past the timeout, never silent for long.
  for (int i = 0; i < 6; ++i) {
    std::this_thread::sleep_for(milliseconds(300));  // the backend's pace, not a wait for the router
    ScriptedBackend::Write(*up, "1\r\n.\r\n");
  }
  ScriptedBackend::Write(*up, "0\r\n\r\n");
  std::string all = c.Until("0\r\n\r\n");
  EXPECT_EQ(Count(all, "1\r\n.\r\n"), 6u);
  EXPECT_THAT(all, HasSubstr("\r\n0\r\n\r\n"));
}

TEST_F(StreamingTest, ConnectionCapRefusesCleanly) {
  FakeBackend a("A");
  Route(a.port());
  RouterOptions opt;
  opt.max_connections = 2;
  StartRouter(opt);
  EXPECT_EQ(router_->max_connections(), 2);
  Raw one(router_->port()), two(router_->port());
  one.Send("GET / HTTP/1.1\r\nHost: app\r\n\r\n");
  two.Send("GET / HTTP/1.1\r\nHost: app\r\n\r\n");
  one.Until("\r\n\r\nA");
  two.Until("\r\n\r\nA");
  Raw three(router_->port());
  std::string refused = three.All();
  EXPECT_THAT(refused, HasSubstr("HTTP/1.1 503 Service Unavailable\r\n"));
  EXPECT_THAT(refused, HasSubstr("too many connections"));
  EXPECT_THAT(router_->Metrics(), HasSubstr("kato_router_refused_connections_total 1\n"));
  // The two held connections keep working.
  one.Clear();
  one.Send("GET / HTTP/1.1\r\nHost: app\r\n\r\n");
  EXPECT_THAT(one.Until("\r\n\r\nA"), HasSubstr("200 OK"));
}

TEST_F(StreamingTest, DefaultConnectionCapFollowsTheOpenFilesLimit) {
  StartRouter();
  rlimit rl{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
  EXPECT_EQ(router_->max_connections(), static_cast<int>(rl.rlim_cur / 4 * 3));
}

TEST_F(StreamingTest, MetricsCountRequestsByAppAndClass) {
  FakeBackend a("A");
  table_.Replace({{"web.example", {{"127.0.0.1", a.port()}}}, {"idle.example", {}}});
  StartRouter();
  Client c(router_->port());
  for (int i = 0; i < 3; ++i) EXPECT_EQ(c.Get("web.example").result_int(), 200);
  EXPECT_EQ(c.Get("idle.example").result_int(), 503);
  EXPECT_EQ(c.Get("nowhere.example").result_int(), 404);
  Client health(router_->health_port());
  auto res = health.Get("x", "/metrics");
  EXPECT_EQ(res.result_int(), 200);
  EXPECT_THAT(res[http::field::content_type], HasSubstr("text/plain; version=0.0.4"));
  const std::string& m = res.body();
  EXPECT_THAT(m, HasSubstr("kato_router_requests_total{app=\"web\",code=\"2xx\"} 3\n"));
  EXPECT_THAT(m, HasSubstr("kato_router_requests_total{app=\"idle\",code=\"5xx\"} 1\n"));
  EXPECT_THAT(m, HasSubstr("kato_router_requests_total{app=\"\",code=\"4xx\"} 1\n"));
  EXPECT_THAT(m, HasSubstr("kato_router_request_duration_seconds_count{app=\"web\"} 3\n"));
  EXPECT_THAT(m, HasSubstr("kato_router_request_duration_seconds_bucket{app=\"web\",le=\"+Inf\"} 3\n"));
  EXPECT_THAT(m, HasSubstr("kato_router_open_connections 1\n"));  // c (not the health check)
}

TEST_F(StreamingTest, AccessLogHasALinePerRequest) {
  FakeBackend a("A");
  Route(a.port());
  RouterOptions opt;
  char dir[] = "/tmp/kato-access-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  opt.access_log = std::string(dir) + "/access.log";
  StartRouter(opt);
  Client c(router_->port());
  EXPECT_EQ(c.Get("app", "/x?\"q\"").result_int(), 200);
  EXPECT_EQ(c.Get("nope").result_int(), 404);
  router_->Stop();  // flushes
  std::ifstream f(opt.access_log);
  std::stringstream ss;
  ss << f.rdbuf();
  std::string log = ss.str();
  EXPECT_EQ(Count(log, "\n"), 2u) << log;
  EXPECT_THAT(log, HasSubstr(" 127.0.0.1 app \"GET /x?\\x22q\\x22\" 200 "));
  EXPECT_THAT(log, HasSubstr(" 127.0.0.1:" + std::to_string(a.port()) + " "));
  EXPECT_THAT(log, HasSubstr(" 127.0.0.1 nope \"GET /\" 404 "));
  std::remove(opt.access_log.c_str());
  rmdir(dir);
}

// --- TLS: certificates chosen by SNI, session resumption. ---

struct Issued {
  std::string cert, key;
};

Issued IssueWeb(const CaBundle& ca, const std::vector<std::string>& names) {
  auto kc = CreateKeyAndCsr("web");
  auto cert = SignServerCsr(ca, kc->csr_pem, names[0], names, 30);
  return {*cert + ca.cert_pem, kc->key_pem};
}

// The certificate the router presents for `sni` (empty: none sent), and
// whether the handshake resumed `session` (SSL_SESSION, may be null).
struct SessionFree {
  void operator()(SSL_SESSION* s) const { SSL_SESSION_free(s); }
};
struct Handshake {
  std::string common_name;
  bool reused = false;
  std::unique_ptr<SSL_SESSION, SessionFree> session;
};

Handshake Connect(int port, const std::string& sni, SSL_SESSION* resume, int max_version) {
  Handshake out;
  net::io_context ioc;
  net::ssl::context ctx(net::ssl::context::tls_client);
  ctx.set_verify_mode(net::ssl::verify_none);
  SSL_CTX_set_max_proto_version(ctx.native_handle(), max_version);
  net::ssl::stream<tcp::socket> s(ioc, ctx);
  s.next_layer().connect(tcp::endpoint(net::ip::make_address("127.0.0.1"),
                                       static_cast<uint16_t>(port)));
  if (!sni.empty()) SSL_set_tlsext_host_name(s.native_handle(), sni.c_str());
  if (resume) SSL_set_session(s.native_handle(), resume);
  ErrorCode ec;
  s.handshake(net::ssl::stream_base::client, ec);
  if (ec) return out;
  // A request and its answer, so that TLS 1.3 tickets have arrived.
  http::request<http::empty_body> req(http::verb::get, "/", 11);
  req.set(http::field::host, sni.empty() ? "app" : sni);
  http::write(s, req, ec);
  beast::flat_buffer buf;
  http::response<http::string_body> res;
  http::read(s, buf, res, ec);
  X509* peer = SSL_get1_peer_certificate(s.native_handle());
  if (peer) {
    char cn[256] = {};
    X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, cn, sizeof cn);
    out.common_name = cn;
    X509_free(peer);
  }
  out.reused = SSL_session_reused(s.native_handle()) == 1;
  out.session.reset(SSL_get1_session(s.native_handle()));
  s.shutdown(ec);  // a session freed without close_notify is not resumable
  return out;
}

TEST_F(StreamingTest, TlsPicksTheCertificateBySniAndResumesSessions) {
  auto ca = CreateCa("cluster");
  ASSERT_TRUE(ca.ok());
  Issued web = IssueWeb(*ca, {"api.example.test", "*.example.test", "example.test"});
  Issued custom = IssueWeb(*ca, {"shop.example.com"});
  FakeBackend a("A");
  table_.Replace({{"app", {{"127.0.0.1", a.port()}}},
                  {"web.example.test", {{"127.0.0.1", a.port()}}},
                  {"shop.example.com", {{"127.0.0.1", a.port()}}}});
  RouterOptions opt;
  auto kc = CreateKeyAndCsr("node");
  opt.tls = ServerTls{"", *SignCsr(*ca, kc->csr_pem, "node-id", 1), kc->key_pem, ca->cert_pem};
  StartRouter(opt);
  ASSERT_TRUE(router_->SetCertificates({{web.cert, web.key}, {custom.cert, custom.key}}).ok());

  EXPECT_EQ(Connect(router_->tls_port(), "web.example.test", nullptr, TLS1_3_VERSION).common_name,
            "api.example.test");
  EXPECT_EQ(Connect(router_->tls_port(), "shop.example.com", nullptr, TLS1_3_VERSION).common_name,
            "shop.example.com");
  // No SNI, or a name no certificate covers: the first one.
  EXPECT_EQ(Connect(router_->tls_port(), "", nullptr, TLS1_3_VERSION).common_name,
            "api.example.test");
  EXPECT_EQ(Connect(router_->tls_port(), "other.test", nullptr, TLS1_3_VERSION).common_name,
            "api.example.test");

  for (int version : {TLS1_2_VERSION, TLS1_3_VERSION}) {
    Handshake first = Connect(router_->tls_port(), "web.example.test", nullptr, version);
    ASSERT_NE(first.session, nullptr);
    EXPECT_FALSE(first.reused);
    Handshake again =
        Connect(router_->tls_port(), "web.example.test", first.session.get(), version);
    EXPECT_TRUE(again.reused) << "TLS version " << std::hex << version;
  }
  // TLS 1.1 is refused.
  EXPECT_EQ(Connect(router_->tls_port(), "web.example.test", nullptr, TLS1_1_VERSION).common_name,
            "");
  // A key that is not the certificate's is refused and changes nothing.
  auto s = router_->SetCertificates({{web.cert, custom.key}});
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(Connect(router_->tls_port(), "shop.example.com", nullptr, TLS1_3_VERSION).common_name,
            "shop.example.com");
}

}  // namespace
}  // namespace kato
