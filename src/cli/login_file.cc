#include "cli/login_file.h"

#include <cstdlib>
#include <nlohmann/json.hpp>

#include "common/fs.h"

namespace kato {

using json = nlohmann::json;

std::string LoginFilePath() {
  if (const char* f = std::getenv("KATO_LOGIN_FILE"); f && *f) return f;
  if (const char* x = std::getenv("XDG_CONFIG_HOME"); x && *x)
    return std::string(x) + "/kato/login.json";
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : "/root") + "/.config/kato/login.json";
}

Result<std::optional<LoginRecord>> ReadLogin(const std::string& path) {
  if (!PathExists(path)) return std::optional<LoginRecord>();
  auto text = ReadFile(path);
  if (!text) return Err("cannot read " + path + ": " + text.error());
  json j = json::parse(*text, nullptr, false);
  if (!j.is_object() || !j.contains("url") || !j["url"].is_string() || !j.contains("token") ||
      !j["token"].is_string())
    return Err(path + " is damaged: sign in again with `kato login URL`");
  LoginRecord l{j["url"],
                j["token"],
                j.value("token_id", ""),
                j.value("email", ""),
                j.value("ca_pem", ""),
                j.value("address", "")};
  return std::optional<LoginRecord>(l);
}

Status WriteLogin(const std::string& path, const LoginRecord& l) {
  auto slash = path.rfind('/');
  if (slash != std::string::npos && slash > 0) KATO_TRY(MakeDirs(path.substr(0, slash), 0700));
  json j{{"url", l.url}, {"token", l.token}, {"token_id", l.token_id}, {"email", l.email}};
  if (!l.ca_pem.empty()) j["ca_pem"] = l.ca_pem;
  if (!l.address.empty()) j["address"] = l.address;
  return WriteFileAtomic(path, j.dump(2) + "\n", 0600);
}

Result<ApiUrl> ParseApiUrl(const std::string& url) {
  ApiUrl u;
  std::string rest;
  if (url.rfind("https://", 0) == 0) {
    u.tls = true;
    rest = url.substr(8);
  } else if (url.rfind("http://", 0) == 0) {
    rest = url.substr(7);
  } else {
    return Err("'" + url + "' is not an API URL: give http://HOST[:PORT] or https://HOST[:PORT]");
  }
  std::string hostport = rest.substr(0, rest.find('/'));
  auto colon = hostport.rfind(':');
  u.host = hostport.substr(0, colon);
  u.port = u.tls ? 443 : 80;
  if (colon != std::string::npos) {
    std::string p = hostport.substr(colon + 1);
    if (p.empty() || p.size() > 5 || p.find_first_not_of("0123456789") != std::string::npos ||
        std::atoi(p.c_str()) < 1 || std::atoi(p.c_str()) > 65535)
      return Err("'" + url + "' has no valid port");
    u.port = std::atoi(p.c_str());
  }
  if (u.host.empty() || u.host.find_first_of(" @?#") != std::string::npos)
    return Err("'" + url + "' has no valid host");
  return u;
}

}  // namespace kato
