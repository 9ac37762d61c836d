// Test helpers for the router's tests: fake backends (a simple HTTP/1.1
// server, and a scripted one whose connections the test drives byte by
// byte), a blocking client, and a fixture that starts a Router on 127.0.0.1.
#pragma once

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "router/proxy.h"
#include "router/route_table.h"

namespace kato {
namespace testing_router {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using ErrorCode = boost::system::error_code;

// --- Fake backend ---

// A blocking HTTP/1.1 server on 127.0.0.1:0, one thread per connection. It
// answers every request with 200 and body `name_`, records what it saw, and
// for a WebSocket upgrade answers 101 and then echoes bytes.
class FakeBackend {
 public:
  explicit FakeBackend(std::string name, bool close_after_response = false)
      : name_(std::move(name)), close_after_response_(close_after_response), acceptor_(ioc_) {
    tcp::endpoint ep(net::ip::make_address("127.0.0.1"), 0);
    acceptor_.open(ep.protocol());
    acceptor_.bind(ep);
    acceptor_.listen();
    port_ = acceptor_.local_endpoint().port();
    accept_thread_ = std::thread([this] { AcceptLoop(); });
  }
  ~FakeBackend() {
    ::shutdown(acceptor_.native_handle(), SHUT_RDWR);
    accept_thread_.join();
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
    }
    for (auto& t : threads_) t.join();
  }

  uint16_t port() const { return port_; }
  // Every response waits this long from now on.
  void set_delay(std::chrono::milliseconds d) { delay_ms_ = static_cast<int>(d.count()); }
  int connections() const { return connections_; }
  int requests() const { return requests_; }
  http::request<http::string_body> last() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_;
  }

 private:
  void AcceptLoop() {
    for (;;) {
      ErrorCode ec;
      tcp::socket s(ioc_);
      acceptor_.accept(s, ec);
      if (ec) return;
      ++connections_;
      std::lock_guard<std::mutex> lock(mu_);
      fds_.push_back(s.native_handle());
      threads_.emplace_back([this, s = std::move(s)]() mutable { Serve(std::move(s)); });
    }
  }

  void Serve(tcp::socket s) {
    ServeRequests(s);
    // Forget the descriptor before closing it, so that the destructor never
    // shuts down an unrelated socket that reuses the number.
    std::lock_guard<std::mutex> lock(mu_);
    std::erase(fds_, s.native_handle());
    ErrorCode ec;
    s.close(ec);
  }

  void ServeRequests(tcp::socket& s) {
    beast::flat_buffer buf;
    for (;;) {
      http::request<http::string_body> req;
      ErrorCode ec;
      http::read(s, buf, req, ec);
      if (ec) return;
      ++requests_;
      {
        std::lock_guard<std::mutex> lock(mu_);
        last_ = req;
      }
      if (beast::iequals(req[http::field::upgrade], "websocket")) return Echo(s, buf);
      if (int d = delay_ms_; d > 0) std::this_thread::sleep_for(std::chrono::milliseconds(d));
      http::response<http::string_body> res(http::status::ok, 11);
      res.body() = name_;
      res.keep_alive(req.keep_alive());
      res.prepare_payload();
      http::write(s, res, ec);
      if (ec || !req.keep_alive() || close_after_response_) return;
    }
  }

  void Echo(tcp::socket& s, beast::flat_buffer& buf) {
    std::string head =
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    ErrorCode ec;
    net::write(s, net::buffer(head), ec);
    if (buf.size() > 0) net::write(s, buf.data(), ec);
    char data[1024];
    for (;;) {
      size_t n = s.read_some(net::buffer(data), ec);
      if (ec) return;
      net::write(s, net::buffer(data, n), ec);
      if (ec) return;
    }
  }

  std::string name_;
  bool close_after_response_;
  net::io_context ioc_;
  tcp::acceptor acceptor_;
  uint16_t port_ = 0;
  std::thread accept_thread_;
  std::mutex mu_;
  std::vector<int> fds_;
  std::vector<std::thread> threads_;
  http::request<http::string_body> last_;
  std::atomic<int> connections_{0};
  std::atomic<int> requests_{0};
  std::atomic<int> delay_ms_{0};
};

// A port nothing listens on: connecting is refused.
inline uint16_t ClosedPort() {
  net::io_context ioc;
  tcp::acceptor a(ioc, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
  return a.local_endpoint().port();  // closed when `a` goes
}

// --- Client ---

class Client {
 public:
  explicit Client(int port) : socket_(ioc_) {
    socket_.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), static_cast<uint16_t>(port)));
  }

  http::response<http::string_body> Get(
      const std::string& host, const std::string& target = "/",
      const std::vector<std::pair<std::string, std::string>>& headers = {}) {
    http::request<http::empty_body> req(http::verb::get, target, 11);
    req.set(http::field::host, host);
    for (const auto& [k, v] : headers) req.set(k, v);
    http::write(socket_, req);
    return Read();
  }

  http::response<http::string_body> Read() {
    http::response<http::string_body> res;
    ErrorCode ec;
    http::read(socket_, buf_, res, ec);
    if (ec) res.result(599);  // no response: shows up as a failed expectation
    return res;
  }

  void SendRaw(const std::string& raw) { net::write(socket_, net::buffer(raw)); }
  std::string ReadSome() {
    if (buf_.size() > 0) {
      std::string s = beast::buffers_to_string(buf_.data());
      buf_.consume(buf_.size());
      return s;
    }
    char data[1024];
    ErrorCode ec;
    size_t n = socket_.read_some(net::buffer(data), ec);
    return ec ? "" : std::string(data, n);
  }
  // True when the router closed the connection (after any buffered bytes).
  bool Closed() {
    char c;
    ErrorCode ec;
    socket_.read_some(net::buffer(&c, 1), ec);
    return ec == net::error::eof || ec == net::error::connection_reset;
  }

 private:
  net::io_context ioc_;
  tcp::socket socket_;
  beast::flat_buffer buf_;
};

class RouterTest : public ::testing::Test {
 protected:
  void StartRouter(RouterOptions opt = {}) {
    opt.health_port = 0;
    router_ = std::make_unique<Router>(opt, table_);
    auto s = router_->Start();
    ASSERT_TRUE(s.ok()) << s.error();
  }

  RouteTable table_;
  std::unique_ptr<Router> router_;
};


// A backend whose connections the test drives: Next() hands over each
// accepted connection as a blocking socket (reads time out after 5 s).
class ScriptedBackend {
 public:
  ScriptedBackend() : acceptor_(ioc_, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0)) {
    port_ = acceptor_.local_endpoint().port();
    thread_ = std::thread([this] {
      for (;;) {
        auto s = std::make_unique<tcp::socket>(ioc_);
        ErrorCode ec;
        acceptor_.accept(*s, ec);
        if (ec) return;
        timeval tv{5, 0};
        setsockopt(s->native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        std::lock_guard lock(mu_);
        accepted_.push_back(std::move(s));
        cv_.notify_all();
      }
    });
  }
  ~ScriptedBackend() {
    ::shutdown(acceptor_.native_handle(), SHUT_RDWR);
    thread_.join();
  }
  uint16_t port() const { return port_; }
  int accepted() {
    std::lock_guard lock(mu_);
    return total_ + static_cast<int>(accepted_.size());
  }

  // The next accepted connection (nullptr after 5 s without one).
  std::unique_ptr<tcp::socket> Next() {
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, std::chrono::seconds(5), [&] { return !accepted_.empty(); }))
      return nullptr;
    auto s = std::move(accepted_.front());
    accepted_.pop_front();
    ++total_;
    return s;
  }

  // Reads one request head from `s` (into `buf`, which keeps what follows).
  static std::string ReadHead(tcp::socket& s, std::string& buf) {
    char data[4096];
    while (buf.find("\r\n\r\n") == std::string::npos) {
      ErrorCode ec;
      size_t n = s.read_some(net::buffer(data), ec);
      if (ec) return "";
      buf.append(data, n);
    }
    size_t end = buf.find("\r\n\r\n") + 4;
    std::string head = buf.substr(0, end);
    buf.erase(0, end);
    return head;
  }
  // Reads until `buf` holds at least n bytes.
  static bool ReadAtLeast(tcp::socket& s, std::string& buf, size_t n) {
    char data[65536];
    while (buf.size() < n) {
      ErrorCode ec;
      size_t got = s.read_some(net::buffer(data), ec);
      if (ec) return false;
      buf.append(data, got);
    }
    return true;
  }
  static void Write(tcp::socket& s, const std::string& data) {
    ErrorCode ec;
    net::write(s, net::buffer(data), ec);
  }

 private:
  net::io_context ioc_;
  tcp::acceptor acceptor_;
  uint16_t port_ = 0;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<tcp::socket>> accepted_;
  int total_ = 0;
};

// Waits (bounded) for a condition that another thread makes true.
template <class F>
bool Eventually(F&& f, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (f()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return f();
}

}  // namespace testing_router
}  // namespace kato
