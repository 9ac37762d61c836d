// libFuzzer target: arbitrary requests to the controller's API as anyone (no
// credential, a developer's token, the admin's, a node): logins, users,
// tokens, organizations, and the apps and services they own. Every request
// must be answered with a status code, never crash, and leave the store usable;
// a developer must never get a 2xx for another organization's app.
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/pki.h"
#include "controller/app_api.h"
#include "store/store.h"

namespace {

struct World {
  std::string dir;
  std::unique_ptr<kato::Store> store;
  kato::FakeClock clock;
  std::unique_ptr<kato::DropletStore> droplets;
  std::unique_ptr<kato::ControllerApi> api;
  std::string dev_token;

  kato::HttpResponse Call(const std::string& m, const std::string& target, const std::string& body,
                          const std::string& token) {
    kato::HttpRequest r;
    r.method = m;
    r.target = target;
    r.body = body;
    if (!token.empty()) r.headers["authorization"] = "Bearer " + token;
    return api->Handle(r);
  }

  World() {
    char tmpl[] = "/tmp/kato-accounts-fuzz-XXXXXX";
    dir = mkdtemp(tmpl);
    store = std::move(kato::OpenSqliteStore(dir + "/state.db").value());
    (void)store->SetSetting("endpoint", "api.fuzz.test");
    droplets = std::make_unique<kato::DropletStore>(dir + "/droplets");
    kato::ControllerApi::Options o;
    o.admin_token_hash = kato::Sha256Hex("admin");
    o.accounts.password_cost = {1, 8};
    o.services.provision_wait = kato::Millis(0);
    o.services.poll_pause = [] {};
    api = std::make_unique<kato::ControllerApi>(o, *store, *droplets, clock);
    Call("POST", "/v2/users", R"({"email":"dev@fuzz.test","password":"password"})", "admin");
    Call("POST", "/v2/orgs", R"({"name":"blue"})", "admin");
    Call("POST", "/v2/orgs", R"({"name":"red"})", "admin");
    Call("POST", "/v2/orgs/blue/members", R"({"email":"dev@fuzz.test"})", "admin");
    Call("POST", "/v2/apps", R"({"name":"redapp","org":"red"})", "admin");
    auto login =
        Call("POST", "/v2/login", R"({"email":"dev@fuzz.test","password":"password"})", "");
    dev_token = nlohmann::json::parse(login.body).value("token", "");
    if (dev_token.empty()) std::abort();
  }
};

const std::vector<std::string> kPaths = {"/v2/login",
                                         "/v2/whoami",
                                         "/v2/tokens",
                                         "/v2/tokens/current",
                                         "/v2/users",
                                         "/v2/users/dev%40fuzz.test",
                                         "/v2/orgs",
                                         "/v2/orgs/blue",
                                         "/v2/orgs/blue/quota",
                                         "/v2/orgs/blue/members",
                                         "/v2/orgs/red/members/dev%40fuzz.test",
                                         "/v2/apps",
                                         "/v2/apps/redapp",
                                         "/v2/apps/blueapp",
                                         "/v2/apps/redapp/restart",
                                         "/v2/services",
                                         "/v2/services/x/bindings",
                                         "/v2/info",
                                         "/v2/buildpacks",
                                         "/v2/orgs/%2e%2e"};
const std::vector<std::string> kMethods = {"GET", "POST", "PUT", "DELETE"};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static World w;
  if (size < 3) return 0;
  kato::HttpRequest req;
  req.method = kMethods[data[0] % kMethods.size()];
  req.target = kPaths[data[1] % kPaths.size()];
  int who = data[2] % 4;  // 0 nobody, 1 developer, 2 admin, 3 node
  if (who == 1) req.headers["authorization"] = "Bearer " + w.dev_token;
  if (who == 2) req.headers["authorization"] = "Bearer admin";
  if (who == 3) req.peer_cn = "node-1";
  req.body.assign(reinterpret_cast<const char*>(data + 3), size - 3);
  // Before the call: is "redapp" an app of an organization the developer is not in?
  bool foreign = false;
  if (auto app = w.store->GetDoc("app", "redapp"); app && *app) {
    std::string org = nlohmann::json::parse(**app, nullptr, false).value("org", "");
    auto o = w.store->GetDoc("org", org);
    foreign = org.empty() || !o || !*o || (*o)->find("\"dev@fuzz.test\"") == std::string::npos;
  }
  auto r = w.api->Handle(req);
  if (r.status < 200 || r.status > 599) std::abort();
  if (foreign && who == 1 && req.target.rfind("/v2/apps/redapp", 0) == 0 && r.status < 300)
    std::abort();
  if (!w.store->Revision().ok()) std::abort();
  return 0;
}
