// The signed-in user of `kato login`: the API's URL, their token and the
// cluster CA it trusts, in a file of the user's own (mode 0600).
//
// The file is KATO_LOGIN_FILE, else $XDG_CONFIG_HOME/kato/login.json, else
// ~/.config/kato/login.json.
#pragma once

#include <optional>
#include <string>

#include "common/result.h"

namespace kato {

// Where an API is and how it is trusted.
struct ApiEndpoint {
  std::string url;            // http://HOST[:PORT] or https://HOST[:PORT]
  std::string address;        // connect here instead of resolving HOST (no DNS yet); "" = HOST
  std::string ca_pem;         // https: trust this CA; empty: SSL_CERT_FILE or the system's
  std::string pin_ca_sha256;  // https: or the CA with this fingerprint (ClientTls)
};

struct LoginRecord {
  std::string url;       // http://HOST[:PORT] or https://HOST[:PORT]
  std::string token;     // kato_ID_SECRET
  std::string token_id;  // to revoke it (`kato logout`)
  std::string email;
  std::string ca_pem;   // https: the CA pinned at login; empty: SSL_CERT_FILE or the system's
  std::string address;  // `kato login --address`: where HOST is, without DNS
  bool operator==(const LoginRecord&) const = default;
  ApiEndpoint Endpoint() const { return {url, address, ca_pem, ""}; }
};

std::string LoginFilePath();
// nullopt when there is no login file; an error for an unreadable or damaged one.
Result<std::optional<LoginRecord>> ReadLogin(const std::string& path);
Status WriteLogin(const std::string& path, const LoginRecord& login);

// An API URL split into its parts: "https://api.example.com:9024/x" ->
// {true, "api.example.com", 9024}. Default ports 80 and 443.
struct ApiUrl {
  bool tls = false;
  std::string host;
  int port = 0;
};
Result<ApiUrl> ParseApiUrl(const std::string& url);

}  // namespace kato
