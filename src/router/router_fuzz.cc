// libFuzzer target: arbitrary bytes from a client to the router (it listens on
// port 80 of every router node). Each input is sent on a fresh connection,
// then the client half-closes; the router must answer with HTTP (or close
// without a word) and close, never crash or hang. Hosts route to an unknown
// app, an app with no instance, an app whose backend refuses connections, and
// a live backend (a second router's health listener), and a scripted backend
// that answers in turn with an interim 103 then a chunked body, a
// close-delimited body, and a Content-Length body cut short by its close, so
// that the upstream path (request rewrite, body relay both ways, 1xx,
// re-framing, truncation, the connection pool) runs too.
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "router/proxy.h"
#include "router/route_table.h"

namespace {

// Reads request heads (bodies are taken for heads too: a backend that does
// not follow is part of what the router must survive) and answers each.
class Scripted {
 public:
  Scripted() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(fd_, 64) != 0)
      std::abort();
    socklen_t len = sizeof a;
    getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    std::thread([this] {
      for (;;) {
        int c = accept(fd_, nullptr, nullptr);
        if (c < 0) continue;
        std::thread([this, c] { Serve(c); }).detach();  // lives as long as the fuzzer
      }
    }).detach();
  }
  uint16_t port() const { return port_; }

 private:
  void Serve(int c) {
    timeval tv{2, 0};
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::string in;
    char buf[4096];
    for (;;) {
      ssize_t n = recv(c, buf, sizeof buf, 0);
      if (n <= 0) break;
      in.append(buf, static_cast<size_t>(n));
      size_t end;
      while ((end = in.find("\r\n\r\n")) != std::string::npos) {
        in.erase(0, end + 4);
        static const char* const kAnswers[] = {
            "HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n"
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
            "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort",
        };
        int which = next_++ % 3;
        std::string answer = kAnswers[which];
        send(c, answer.data(), answer.size(), MSG_NOSIGNAL);
        if (which > 0) {
          close(c);
          return;
        }
      }
    }
    close(c);
  }
  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<int> next_{0};
};

struct World {
  Scripted scripted;
  kato::RouteTable table;
  kato::RouteTable no_routes;
  std::unique_ptr<kato::Router> backend;
  std::unique_ptr<kato::Router> router;

  World() {
    kato::RouterOptions b;
    b.health_port = 0;
    backend = std::make_unique<kato::Router>(b, no_routes);
    if (!backend->Start().ok()) std::abort();
    table.Replace({{"live", {{"127.0.0.1", static_cast<uint16_t>(backend->health_port())}}},
                   {"down", {{"127.0.0.1", 1}}},
                   {"chunky", {{"127.0.0.1", scripted.port()}}},
                   {"idle", {}}});
    kato::RouterOptions r;
    r.max_request_body = 200000;
    r.header_timeout = std::chrono::milliseconds(1000);
    r.upstream_timeout = std::chrono::milliseconds(1500);
    router = std::make_unique<kato::Router>(r, table);
    if (!router->Start().ok()) std::abort();
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static World w;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(w.router->port()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{5, 0};  // a hang is a bug: the router closes within its own deadlines
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return 0;
  }
  size_t sent = 0;
  while (sent < size) {
    ssize_t n = send(fd, data + sent, size - sent, MSG_NOSIGNAL);
    if (n <= 0) break;  // the router rejected the request and closed early
    sent += static_cast<size_t>(n);
  }
  shutdown(fd, SHUT_WR);
  std::string reply;
  char buf[4096];
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n == 0) break;
    if (n < 0) {
      if (errno == ECONNRESET) break;
      std::fprintf(stderr, "router_fuzz: no close within 5 s (errno %d)\n", errno);
      std::abort();
    }
    reply.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  if (!reply.empty() && reply.rfind("HTTP/1.", 0) != 0) {
    std::fprintf(stderr, "router_fuzz: reply is not HTTP: %.40s\n", reply.c_str());
    std::abort();
  }
  return 0;
}
