#include "roles/router_settings.h"

#include <nlohmann/json.hpp>

namespace kato {
namespace {

struct IntKey {
  const char* name;
  int min, max;
  int RouterSettings::*field;
};

constexpr IntKey kIntKeys[] = {
    {"max_connections", 16, 1 << 20, &RouterSettings::max_connections},
    {"keepalive_timeout_s", 1, 3600, &RouterSettings::keepalive_timeout_s},
    {"header_timeout_s", 1, 600, &RouterSettings::header_timeout_s},
    {"upstream_timeout_s", 1, 86400, &RouterSettings::upstream_timeout_s},
    {"max_request_body_mb", 0, 1 << 20, &RouterSettings::max_request_body_mb},
};

Status Apply(RouterSettings& s, const std::string& key, const std::string& value_json) {
  auto v = nlohmann::json::parse(value_json, nullptr, false);
  for (const auto& k : kIntKeys) {
    if (key != k.name) continue;
    if (!v.is_number_integer() || v.get<int64_t>() < k.min || v.get<int64_t>() > k.max)
      return Err("router " + key + " must be a whole number from " + std::to_string(k.min) +
                 " to " + std::to_string(k.max));
    s.*k.field = static_cast<int>(v.get<int64_t>());
    return Ok();
  }
  if (key == "access_log") {
    if (!v.is_boolean()) return Err("router access_log must be true or false");
    s.access_log = v.get<bool>();
    return Ok();
  }
  std::string known;
  for (const auto& k : kIntKeys) known += std::string(k.name) + ", ";
  return Err("router has no setting '" + key + "' (it has " + known + "access_log)");
}

}  // namespace

Status CheckRouterSetting(const std::string& key, const std::string& value_json) {
  RouterSettings scratch;
  return Apply(scratch, key, value_json);
}

RouterSettings ParseRouterSettings(const std::vector<std::pair<std::string, std::string>>& entries,
                                   std::vector<std::string>* warnings) {
  RouterSettings s;
  for (const auto& [key, value] : entries) {
    if (auto st = Apply(s, key, value); !st) warnings->push_back(st.error() + "; using the default");
  }
  return s;
}

}  // namespace kato
