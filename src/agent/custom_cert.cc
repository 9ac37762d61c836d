#include "agent/custom_cert.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/fs.h"
#include "common/pki.h"
#include "lb/lb_layout.h"
#include "router/router_layout.h"

namespace kato {

using json = nlohmann::json;

namespace {
std::string Str(const json& j, const char* key) {
  return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : "";
}
}  // namespace

CertPlace LoadBalancerCertPlace(const std::string& data_dir) {
  LbLayout lb(data_dir);
  return {"nginx",           "load_balancer",   lb.custom_dir(), lb.custom_bundle(),
          lb.custom_info(), lb.web_cert(),     lb.state_file()};
}

CertPlace RouterCertPlace(const std::string& data_dir) {
  RouterLayout r(data_dir);
  return {"the router",     "router",      r.custom_dir(), r.custom_bundle(),
          r.custom_info(), r.web_cert(), r.state_file()};
}

CustomCerts::CustomCerts(CertPlace place, std::function<bool()> running, const Clock& clock)
    : place_(std::move(place)), running_(std::move(running)), clock_(clock) {}

json CustomCerts::State() {
  auto text = ReadFile(place_.state_file);
  json j = text ? json::parse(*text, nullptr, false) : json();
  return j.is_object() ? j : json::object();
}

Result<bool> CustomCerts::WaitServed(const std::string& fingerprint, Millis limit) {
  if (!running_()) return false;
  auto deadline = clock_.now() + limit;
  while (clock_.now() < deadline) {
    json st = State();
    if (st.contains("cert") && st["cert"].is_object() &&
        Str(st["cert"], "fingerprint") == fingerprint)
      return true;
    if (st.contains("refused_cert") && st["refused_cert"].is_object() &&
        Str(st["refused_cert"], "fingerprint") == fingerprint)
      return Err(Str(st["refused_cert"], "error"));
    std::this_thread::sleep_for(Millis(50));  // polling a condition, bounded
  }
  return false;
}

Result<json> CustomCerts::Install(const std::string& key, const std::string& cert, bool wildcard,
                                  const std::string& endpoint) {
  auto info = CheckKeyAndCert(key, cert, clock_.wall_ms() / 1000);
  if (!info) return Err(info.error() + "; nothing changed");
  std::string domain = endpoint.rfind("api.", 0) == 0 ? endpoint.substr(4) : endpoint;
  std::string names = json(info->dns_names.empty() ? std::vector<std::string>{info->common_name}
                                                   : info->dns_names)
                          .dump();
  if (!endpoint.empty() && !CertCoversHost(*info, endpoint))
    return Err("the certificate does not name the API endpoint " + endpoint + " (it names " +
               names + "); nothing changed");
  if (wildcard && !CertCoversHost(*info, "app." + domain))
    return Err("--wildcard: the certificate does not cover the apps' *." + domain + " (it names " +
               names + "); nothing changed");
  KATO_TRY(MakeDirs(place_.custom_dir, 0700));
  std::string bundle = cert;
  if (!bundle.empty() && bundle.back() != '\n') bundle += '\n';
  bundle += key;
  json meta{{"fingerprint", info->fingerprint},
            {"names", info->dns_names},
            {"common_name", info->common_name},
            {"not_after_s", info->not_after_s},
            {"wildcard", wildcard},
            {"installed_ms", clock_.wall_ms()}};
  auto old_bundle = ReadFile(place_.custom_bundle);
  auto old_info = ReadFile(place_.custom_info);
  KATO_TRY(WriteFileAtomic(place_.custom_info, meta.dump(2) + "\n", 0600));
  KATO_TRY(WriteFileAtomic(place_.custom_bundle, bundle, 0600));
  auto served = WaitServed(info->fingerprint, Millis(15000));
  if (!served) {
    // The server would not load it: put back what was there.
    if (old_bundle) {
      (void)WriteFileAtomic(place_.custom_bundle, *old_bundle, 0600);
      if (old_info) (void)WriteFileAtomic(place_.custom_info, *old_info, 0600);
    } else {
      ::unlink(place_.custom_bundle.c_str());
      ::unlink(place_.custom_info.c_str());
    }
    return Err(place_.server + " refused the certificate (" + served.error() +
               "); nothing changed");
  }
  meta["active"] = *served;
  meta["server"] = place_.server;
  return meta;
}

Result<json> CustomCerts::Remove() {
  if (!PathExists(place_.custom_bundle))
    return Err("no custom certificate is installed on this node; nothing changed");
  if (::unlink(place_.custom_bundle.c_str()) != 0)
    return Err("cannot remove " + place_.custom_bundle + ": " + strerror(errno));
  ::unlink(place_.custom_info.c_str());
  // Back to the cluster's certificate.
  json out{{"removed", true}, {"active", "cluster"}, {"server", place_.server}};
  auto web = ReadFile(place_.web_cert);
  auto info = web ? InspectCert(*web) : Result<CertInfo>(Err("none"));
  auto served = info ? WaitServed(info->fingerprint, Millis(15000)) : Result<bool>(false);
  out["serving_cluster_cert"] = served && *served;
  return out;
}

Result<json> CustomCerts::List() {
  json st = State();
  std::string active =
      st.contains("cert") && st["cert"].is_object() ? Str(st["cert"], "fingerprint") : "";
  json out = json::array();
  auto add = [&](const std::string& source, const std::string& path, bool wildcard) {
    auto text = ReadFile(path);
    if (!text) return;
    auto info = InspectCert(*text);
    if (!info) return;
    out.push_back({{"source", source},
                   {"names", info->dns_names},
                   {"common_name", info->common_name},
                   {"not_after_s", info->not_after_s},
                   {"fingerprint", info->fingerprint},
                   {"wildcard", wildcard},
                   {"active", info->fingerprint == active}});
  };
  auto meta_text = ReadFile(place_.custom_info);
  json meta = json::parse(meta_text ? *meta_text : "{}", nullptr, false);
  add("custom", place_.custom_bundle, meta.is_object() && meta.value("wildcard", false));
  add("cluster", place_.web_cert, false);
  return out;
}

}  // namespace kato
