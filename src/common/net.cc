#include "common/net.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>

#include <cstdio>
#include <fstream>
#include <sstream>

namespace kato {

bool IsIPv4(const std::string& s) {
  int parts = 0;
  size_t i = 0;
  while (i <= s.size()) {
    size_t j = s.find('.', i);
    if (j == std::string::npos) j = s.size();
    std::string p = s.substr(i, j - i);
    if (p.empty() || p.size() > 3) return false;
    for (char c : p)
      if (c < '0' || c > '9') return false;
    if (p.size() > 1 && p[0] == '0') return false;
    if (std::stoi(p) > 255) return false;
    ++parts;
    i = j + 1;
    if (j == s.size()) break;
  }
  return parts == 4 && s.back() != '.';
}

Status CheckIPv4(const std::string& s, const std::string& what) {
  if (IsIPv4(s)) return Ok();
  return Err(what + " '" + s + "' is not an IPv4 address (expected a.b.c.d, e.g. 10.0.0.5)");
}

Result<std::string> DefaultRouteIp() {
  // /proc/net/route: Iface Destination Gateway Flags ... ; the default route has destination 0.
  std::ifstream route("/proc/net/route");
  std::string line, iface;
  std::getline(route, line);  // header
  while (std::getline(route, line)) {
    std::istringstream ls(line);
    std::string name, dest;
    ls >> name >> dest;
    if (dest == "00000000") {
      iface = name;
      break;
    }
  }
  if (iface.empty())
    return Err("this machine has no default route; pass the node's address with --ip IP");
  struct ifaddrs* ifs = nullptr;
  if (getifaddrs(&ifs) != 0) return Err("cannot list network interfaces; pass --ip IP");
  std::string ip;
  for (auto* a = ifs; a; a = a->ifa_next) {
    if (!a->ifa_addr || a->ifa_addr->sa_family != AF_INET || iface != a->ifa_name) continue;
    char buf[INET_ADDRSTRLEN];
    auto* sin = reinterpret_cast<struct sockaddr_in*>(a->ifa_addr);
    inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof buf);
    ip = buf;
    break;
  }
  freeifaddrs(ifs);
  if (ip.empty()) return Err("interface " + iface + " has no IPv4 address; pass --ip IP");
  return ip;
}

bool IsHostname(const std::string& s) {
  if (s.empty() || s.size() > 253) return false;
  size_t label = 0;
  char prev = '.';
  for (char c : s) {
    if (c == '.') {
      if (label == 0 || prev == '-') return false;
      label = 0;
    } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '-') {
      if (label == 0 && c == '-') return false;
      if (++label > 63) return false;
    } else {
      return false;
    }
    prev = c;
  }
  return prev != '-' && prev != '.';
}

}  // namespace kato
