#include "common/ipv4.h"

#include <arpa/inet.h>

#include <nlohmann/json.hpp>

namespace kato {
namespace {

bool AllDigits(const std::string& s) {
  return !s.empty() && s.size() <= 9 && s.find_first_not_of("0123456789") == std::string::npos;
}

Result<int> ParsePort(const std::string& s) {
  if (!AllDigits(s)) return Err("'" + s + "' is not a port number");
  int p = std::stoi(s);
  if (p < 1 || p > 65535) return Err("port " + s + " is not between 1 and 65535");
  return p;
}

}  // namespace

Result<uint32_t> ParseIpv4(const std::string& text) {
  in_addr a{};
  if (text.empty() || ::inet_pton(AF_INET, text.c_str(), &a) != 1)
    return Err("'" + text + "' is not an IPv4 address");
  return ntohl(a.s_addr);
}

std::string FormatIpv4(uint32_t addr) {
  in_addr a{htonl(addr)};
  char buf[INET_ADDRSTRLEN];
  ::inet_ntop(AF_INET, &a, buf, sizeof buf);
  return buf;
}

Result<Ipv4Net> ParseIpv4Net(const std::string& text) {
  auto slash = text.find('/');
  auto addr = ParseIpv4(text.substr(0, slash));
  if (!addr) return Err("'" + text + "' is not an IPv4 network (expected a.b.c.d/N)");
  Ipv4Net n{*addr, 32};
  if (slash != std::string::npos) {
    std::string p = text.substr(slash + 1);
    if (!AllDigits(p) || std::stoi(p) > 32)
      return Err("'" + text + "' has a bad prefix length (expected 0 to 32)");
    n.prefix = std::stoi(p);
  }
  uint32_t mask = n.prefix == 0 ? 0 : ~0u << (32 - n.prefix);
  if ((n.base & ~mask) != 0)
    return Err("'" + text + "' has host bits set; did you mean " + FormatIpv4(n.base & mask) + "/" +
               std::to_string(n.prefix) + "?");
  return n;
}

std::string FormatIpv4Net(const Ipv4Net& net) {
  return FormatIpv4(net.base) + "/" + std::to_string(net.prefix);
}

Result<std::vector<EgressRule>> ParseEgressAllow(const std::string& json_text) {
  auto j = nlohmann::json::parse(json_text, nullptr, false);
  const char* form =
      "egress_allow must be a JSON array of \"ADDRESS[/PREFIX]:PORT[-PORT]\", e.g. "
      "[\"10.0.0.0/8:5432\"]";
  if (!j.is_array()) return Err(form);
  std::vector<EgressRule> rules;
  for (const auto& e : j) {
    if (!e.is_string()) return Err(form);
    std::string s = e.get<std::string>();
    auto colon = s.rfind(':');
    if (colon == std::string::npos) return Err("egress rule '" + s + "' has no :PORT; " + form);
    auto net = ParseIpv4Net(s.substr(0, colon));
    if (!net) return Err("egress rule '" + s + "': " + net.error());
    std::string ports = s.substr(colon + 1);
    auto dash = ports.find('-');
    auto first = ParsePort(ports.substr(0, dash));
    if (!first) return Err("egress rule '" + s + "': " + first.error());
    auto last = dash == std::string::npos ? first : ParsePort(ports.substr(dash + 1));
    if (!last) return Err("egress rule '" + s + "': " + last.error());
    if (*last < *first) return Err("egress rule '" + s + "': the port range is reversed");
    rules.push_back({*net, *first, *last});
  }
  return rules;
}

}  // namespace kato
