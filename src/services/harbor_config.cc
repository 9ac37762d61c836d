#include "services/harbor_config.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/ipv4.h"

namespace kato {

using json = nlohmann::json;

std::vector<HarborListener> HarborListeners(
    const std::string& node_id, const std::vector<ServiceRecord>& services,
    const std::vector<std::pair<std::string, std::string>>& instance_reports,
    const std::vector<NodeRecord>& nodes) {
  std::map<std::string, std::string> ip_of;
  for (const auto& n : nodes) ip_of[n.id] = n.ip;
  // service name -> its backends, from every DEA's report.
  std::map<std::string, std::vector<HarborBackend>> backends;
  for (const auto& [dea, text] : instance_reports) {
    json r = json::parse(text, nullptr, false);
    if (!r.is_object() || !r.contains("instances") || !r["instances"].is_array() || !ip_of.count(dea))
      continue;
    for (const auto& i : r["instances"]) {
      if (!i.is_object() || i.value("state", "") != "RUNNING" || !i.contains("harbor") ||
          !i["harbor"].is_array())
        continue;
      for (const auto& h : i["harbor"]) {
        if (!h.is_object() || !h.contains("service") || !h["service"].is_string() ||
            !h.contains("port") || !h["port"].is_number_integer())
          continue;
        int port = h["port"].get<int>();
        if (port <= 0 || port > 65535) continue;
        backends[h["service"].get<std::string>()].push_back({ip_of[dea], port});
      }
    }
  }
  std::vector<HarborListener> out;
  for (const auto& s : services) {
    if (s.type != "harbor" || s.node_id != node_id || s.state != "ACTIVE") continue;
    HarborListener l{s.name, s.id, s.port, s.protocol, backends[s.name]};
    std::sort(l.backends.begin(), l.backends.end(), [](const auto& a, const auto& b) {
      return std::tie(a.ip, a.port) < std::tie(b.ip, b.port);
    });
    out.push_back(std::move(l));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.port < b.port; });
  return out;
}

namespace {
bool SafePath(const std::string& p) {
  if (p.empty() || p[0] != '/') return false;
  for (char c : p)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '/' || c == '_' || c == '-' || c == '.'))
      return false;
  return true;
}
bool SafeId(const std::string& id) {
  return !id.empty() && std::all_of(id.begin(), id.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c));
  });
}
}  // namespace

Result<std::string> HarborNginxConfig(const HarborConfigInput& in) {
  if (!ParseIpv4(in.listen_ip)) return Err("harbor: listen address '" + in.listen_ip + "' is not IPv4");
  for (const auto* p : {&in.module_path, &in.run_dir, &in.log_dir})
    if (!SafePath(*p)) return Err("harbor: path '" + *p + "' cannot go into nginx.conf");
  std::ostringstream c;
  c << "# Written by katod harbor; replaced whenever harbor services or their instances change.\n"
    << "load_module " << in.module_path << ";\n"
    << "daemon off;\n"
    << "worker_processes 1;\n"
    << "pid " << in.run_dir << "/nginx.pid;\n"
    << "error_log " << in.log_dir << "/error.log warn;\n";
  if (!in.user.empty()) c << "user " << in.user << ";\n";
  c << "events { worker_connections 4096; }\n"
    << "stream {\n";
  for (const auto& l : in.listeners) {
    if (!SafeId(l.id)) return Err("harbor: service id '" + l.id + "' is not alphanumeric");
    if (l.port <= 0 || l.port > 65535) return Err("harbor: port " + std::to_string(l.port) + " is not a port");
    if (l.protocol != "tcp" && l.protocol != "udp")
      return Err("harbor: protocol '" + l.protocol + "' is neither tcp nor udp");
    c << "  # service " << l.id << " (" << l.protocol << ")\n"
      << "  upstream h_" << l.id << " {\n";
    if (l.backends.empty()) c << "    server 127.0.0.1:9 down;  # no running instance\n";
    for (const auto& b : l.backends) {
      if (!ParseIpv4(b.ip) || b.port <= 0 || b.port > 65535)
        return Err("harbor: backend '" + b.ip + ":" + std::to_string(b.port) + "' is not IPv4:PORT");
      c << "    server " << b.ip << ":" << b.port << " max_fails=1 fail_timeout=5s;\n";
    }
    c << "  }\n"
      << "  server {\n"
      << "    listen " << in.listen_ip << ":" << l.port << (l.protocol == "udp" ? " udp" : "") << ";\n"
      << "    proxy_pass h_" << l.id << ";\n"
      << "    proxy_connect_timeout 2s;\n"
      << "    proxy_next_upstream_tries 3;\n";
    if (l.protocol == "udp") c << "    proxy_timeout 30s;\n";
    c << "  }\n";
  }
  c << "}\n";
  return c.str();
}

}  // namespace kato
