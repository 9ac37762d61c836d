// `kato op static_ip`: the static address configuration the guide describes,
// as a Debian ifupdown stanza in /etc/network/interfaces.d/.
#pragma once

#include <string>
#include <vector>

#include "common/result.h"

namespace kato {

struct StaticIp {
  std::string interface;  // e.g. eth0
  std::string ip;
  std::string netmask;  // dotted quad, contiguous
  std::string gateway;  // in the same subnet as ip
  std::vector<std::string> dns;
};

// Checks every field; the error names the field, the value and what is expected.
Status ValidateStaticIp(const StaticIp& s);
// The file's contents (call ValidateStaticIp first).
std::string InterfacesStanza(const StaticIp& s);
// Where it goes: ROOT/etc/network/interfaces.d/kato-IFACE.
std::string InterfacesPath(const std::string& root, const std::string& iface);

}  // namespace kato
