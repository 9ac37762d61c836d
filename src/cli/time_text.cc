#include "cli/time_text.h"

#include <ctime>
#include <nlohmann/json.hpp>

namespace kato {

std::string TimeText(int64_t ms) {
  std::time_t t = static_cast<std::time_t>(ms / 1000);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", std::localtime(&t));
  return buf;
}

std::string TokenExpiryText(const nlohmann::json& t) {
  int64_t ms = t.value("expires_ms", static_cast<int64_t>(0));
  if (ms == 0)
    return "This token does not expire (make one that does with `kato node token --rotate`).";
  if (t.value("expired", false))
    return "This token expired at " + TimeText(ms) +
           "; make a new one with `kato node token --rotate [--ttl 24h]`.";
  return "Valid until " + TimeText(ms) + " (`kato node token --rotate [--ttl 24h]` for a new one).";
}

}  // namespace kato
