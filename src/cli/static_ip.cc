#include "cli/static_ip.h"

#include <arpa/inet.h>

#include "common/net.h"

namespace kato {

namespace {
uint32_t ToU32(const std::string& ip) {
  in_addr a{};
  inet_pton(AF_INET, ip.c_str(), &a);
  return ntohl(a.s_addr);
}
bool IsInterfaceName(const std::string& s) {
  if (s.empty() || s.size() > 15) return false;
  for (char c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.')
      return false;
  return true;
}
}  // namespace

Status ValidateStaticIp(const StaticIp& s) {
  if (!IsInterfaceName(s.interface))
    return Err("--interface '" + s.interface + "' is not a network interface name (e.g. eth0)");
  KATO_TRY(CheckIPv4(s.ip, "--ip"));
  KATO_TRY(CheckIPv4(s.netmask, "--netmask"));
  uint32_t mask = ToU32(s.netmask);
  if (mask == 0 || ((~mask + 1) & ~mask) != 0)
    return Err("--netmask '" + s.netmask + "' is not a netmask (expected e.g. 255.255.255.0)");
  uint32_t host_bits = ~mask;
  if (host_bits > 1 && ((ToU32(s.ip) & host_bits) == 0 || (ToU32(s.ip) & host_bits) == host_bits))
    return Err("--ip " + s.ip + " is the network or broadcast address of its subnet " +
               s.netmask + "; give a host address");
  KATO_TRY(CheckIPv4(s.gateway, "--gateway"));
  if (host_bits > 1 &&
      ((ToU32(s.gateway) & host_bits) == 0 || (ToU32(s.gateway) & host_bits) == host_bits))
    return Err("--gateway " + s.gateway + " is the network or broadcast address of its subnet " +
               s.netmask + "; give the router's address");
  if ((ToU32(s.ip) & mask) != (ToU32(s.gateway) & mask))
    return Err("--gateway " + s.gateway + " is not in the subnet of " + s.ip + "/" + s.netmask);
  if (s.ip == s.gateway)
    return Err("--gateway " + s.gateway + " is this host's own address; it must be the router's");
  if (s.dns.empty()) return Err("--dns needs at least one name server address");
  for (const auto& d : s.dns) KATO_TRY(CheckIPv4(d, "--dns"));
  return Ok();
}

std::string InterfacesStanza(const StaticIp& s) {
  std::string dns;
  for (const auto& d : s.dns) dns += (dns.empty() ? "" : " ") + d;
  return "# Written by `kato op static_ip`.\n"
         "auto " + s.interface + "\n"
         "iface " + s.interface + " inet static\n"
         "    address " + s.ip + "\n"
         "    netmask " + s.netmask + "\n"
         "    gateway " + s.gateway + "\n"
         "    dns-nameservers " + dns + "\n";
}

std::string InterfacesPath(const std::string& root, const std::string& iface) {
  return root + "/etc/network/interfaces.d/kato-" + iface;
}

}  // namespace kato
