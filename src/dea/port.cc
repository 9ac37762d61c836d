#include "dea/port.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <random>

namespace kato {
namespace {

// True when nothing holds `port`: a bind on the wildcard address fails with
// EADDRINUSE if any socket (listening or not, on any address) has it.
bool FreeOnHost(int port) {
  int s4 = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s4 < 0) return false;
  sockaddr_in a4{};
  a4.sin_family = AF_INET;
  a4.sin_port = htons(static_cast<uint16_t>(port));
  a4.sin_addr.s_addr = htonl(INADDR_ANY);
  bool free = ::bind(s4, reinterpret_cast<sockaddr*>(&a4), sizeof a4) == 0;
  ::close(s4);
  if (!free) return false;

  int s6 = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s6 < 0) return true;  // no IPv6 on this host: nothing can hold a v6 port
  int on = 1;
  ::setsockopt(s6, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on);
  sockaddr_in6 a6{};
  a6.sin6_family = AF_INET6;
  a6.sin6_port = htons(static_cast<uint16_t>(port));
  a6.sin6_addr = in6addr_any;
  free = ::bind(s6, reinterpret_cast<sockaddr*>(&a6), sizeof a6) == 0 ||
         errno == EADDRNOTAVAIL;  // IPv6 disabled on every interface
  ::close(s6);
  return free;
}

}  // namespace

Result<int> AllocatePort(int range_lo, int range_hi, const std::set<int>& in_use) {
  if (range_lo < 1 || range_hi > 65535 || range_lo > range_hi) {
    return Err("bad port range " + std::to_string(range_lo) + "-" + std::to_string(range_hi));
  }
  int n = range_hi - range_lo + 1;
  thread_local std::mt19937 rng{std::random_device{}()};
  int start = std::uniform_int_distribution<int>(0, n - 1)(rng);
  for (int i = 0; i < n; ++i) {
    int port = range_lo + (start + i) % n;
    if (!in_use.count(port) && FreeOnHost(port)) return port;
  }
  return Err("no free port in " + std::to_string(range_lo) + "-" + std::to_string(range_hi) +
             " for a new instance: stop some instances or widen the DEA's port range");
}

}  // namespace kato
