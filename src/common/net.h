// Address helpers.
#pragma once

#include <string>

#include "common/result.h"

namespace kato {

// A dotted-quad IPv4 address such as 127.0.0.12 (no leading zeros, no host names).
bool IsIPv4(const std::string& s);
// Ok, or an error like "'10.0.0.300' is not an IPv4 address (expected a.b.c.d)".
Status CheckIPv4(const std::string& s, const std::string& what);
// The IPv4 address of the interface that holds the default route, or an error
// telling the user to pass --ip.
Result<std::string> DefaultRouteIp();
// A hostname as DNS allows it: labels of letters, digits and '-', dot-separated, <= 253 chars.
bool IsHostname(const std::string& s);

}  // namespace kato
