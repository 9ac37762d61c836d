// What kato's command groups share: the global options, a request to the
// node agent, a request to the controller's API, and small text helpers.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/clock.h"
#include "cli/login_file.h"
#include "common/http.h"
#include "common/result.h"

namespace kato {

struct Globals {
  std::string data_dir;
  bool json_out = false;
  std::string command_line;
};

// Asks the agent; progress goes to stderr so that --json keeps stdout to one document.
Result<nlohmann::json> Ask(const Globals& g, const std::string& cmd, const nlohmann::json& args,
                           Millis wait);

// One request to the controller's API: to --api URL (with KATO_API_TOKEN, or
// the token of `kato login`), else to the signed-in user's API (`kato login`,
// cli/login_file.h), else through this node's agent (its node certificate
// authenticates: root on a node acts as the cluster admin).
struct ApiTarget {
  std::string url;  // empty: the login's, else through the agent
  std::string org;  // --org: the organization new apps and services go to
};
// The reply's JSON body; an error (with the API's message) for HTTP >= 300.
// `raw`: the body is bytes (app bits), not JSON text.
Result<nlohmann::json> AppApi(const Globals& g, const ApiTarget& t, const std::string& method,
                              const std::string& path, const std::string& body, bool raw = false,
                              int* status_out = nullptr);

// One call to an API: http:// or https:// (verified against `ca_pem`, else
// SSL_CERT_FILE or the system's CAs, or pinned; the certificate must name the
// URL's host), with a bearer token when not empty. A pinned call's reply has
// the server's CA in peer_ca_pem.
Result<HttpResponse> CallApi(const ApiEndpoint& endpoint, const std::string& token,
                             const std::string& method, const std::string& path,
                             const std::string& body);

// The output of a command run without a shell (for `tar`).
Result<std::string> Capture(const std::vector<std::string>& argv);

std::string Join(const nlohmann::json& arr, const std::string& sep = " ");
std::string Pad(std::string s, size_t n);
// Asks on stderr, reads one line from stdin.
std::string Prompt(const std::string& question);

}  // namespace kato
