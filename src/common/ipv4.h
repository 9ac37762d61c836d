// IPv4 addresses, networks, and the DEA's egress rules, parsed into typed values.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"

namespace kato {

struct Ipv4Net {
  uint32_t base = 0;  // host order, host bits zero
  int prefix = 32;
  uint32_t size() const { return prefix == 0 ? 0xffffffffu : (1u << (32 - prefix)); }
  bool operator==(const Ipv4Net&) const = default;
};
// "10.254.0.0/16"; host bits must be zero.
Result<Ipv4Net> ParseIpv4Net(const std::string& text);
Result<uint32_t> ParseIpv4(const std::string& text);
std::string FormatIpv4(uint32_t addr);
std::string FormatIpv4Net(const Ipv4Net& net);

// One operator rule: instances may reach NET on ports FIRST..LAST (TCP and UDP).
struct EgressRule {
  Ipv4Net net;
  int first_port = 0;
  int last_port = 0;
  bool operator==(const EgressRule&) const = default;
};
// `kato config set dea egress_allow '["10.0.0.0/8:5432", "192.0.2.7:8000-8100"]'`:
// a JSON array of "ADDRESS[/PREFIX]:PORT[-PORT]".
Result<std::vector<EgressRule>> ParseEgressAllow(const std::string& json_text);

}  // namespace kato
