#include "dea/port.h"

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

namespace kato {
namespace {

using ::testing::HasSubstr;

// A listening socket on `ip` and a kernel-chosen port, closed at scope exit.
class Held {
 public:
  explicit Held(const char* ip) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    ::inet_pton(AF_INET, ip, &a.sin_addr);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(fd_, 1), 0);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
  }
  ~Held() { Close(); }
  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

TEST(AllocatePortTest, SkipsAPortHeldOnTheWildcardAddress) {
  Held held("0.0.0.0");
  auto p = AllocatePort(held.port(), held.port(), {});
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(p.error(), HasSubstr("no free port"));
}

TEST(AllocatePortTest, SkipsAPortHeldOnLoopbackOnly) {
  // Another DEA's app on 127.0.0.1 would still clash with ours on 0.0.0.0.
  Held held("127.0.0.1");
  EXPECT_FALSE(AllocatePort(held.port(), held.port(), {}).ok());
  held.Close();
  auto p = AllocatePort(held.port(), held.port(), {});
  ASSERT_TRUE(p.ok()) << p.error();
  EXPECT_EQ(*p, held.port());
}

TEST(AllocatePortTest, SkipsPortsInUseByThisDea) {
  Held probe("127.0.0.1");
  int port = probe.port();
  probe.Close();
  EXPECT_FALSE(AllocatePort(port, port, {port}).ok());
  // A held port and an in-use one around a free one: only the free one is given.
  Held a("0.0.0.0");
  Held b("127.0.0.1");
  std::set<int> in_use;
  for (int q = 1024; q < 65536; ++q) {
    if (q != port && q != a.port() && q != b.port()) in_use.insert(q);
  }
  for (int i = 0; i < 5; ++i) {
    auto p = AllocatePort(1024, 65535, in_use);
    ASSERT_TRUE(p.ok()) << p.error();
    EXPECT_EQ(*p, port);
  }
}

TEST(AllocatePortTest, RefusesABadRange) {
  EXPECT_FALSE(AllocatePort(2000, 1000, {}).ok());
  EXPECT_FALSE(AllocatePort(0, 10, {}).ok());
  EXPECT_FALSE(AllocatePort(60000, 70000, {}).ok());
}

}  // namespace
}  // namespace kato
