#include "cli/service_cmd.h"

#include <unistd.h>

#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/app_wait.h"

namespace kato {

using json = nlohmann::json;

namespace {

struct ServiceArgs {
  ApiTarget api;
  std::string type, name, app, node, plan;
  bool yes = false, force = false, udp = false;
};

int Fail(const std::string& e) {
  std::cerr << "kato: " << e << "\n";
  return 1;
}

void PrintService(const json& s, bool with_credentials) {
  std::cout << Pad(s.value("name", ""), 20) << Pad(s.value("type", ""), 12)
            << Pad(s.value("plan", ""), 7) << Pad(s.value("state", ""), 13)
            << s.value("node_ip", "") << ":" << s.value("port", 0)
            << (s.contains("protocol") ? "/" + s["protocol"].get<std::string>() : "")
            << (s["bound_apps"].empty() ? "" : "  bound: " + Join(s["bound_apps"], ", ")) << "\n";
  if (!s.value("message", "").empty()) std::cout << "  " << s["message"].get<std::string>() << "\n";
  if (!with_credentials || !s.contains("credentials")) return;
  for (const auto& [k, v] : s["credentials"].items())
    std::cout << "  " << Pad(k + ":", 10) << (v.is_string() ? v.get<std::string>() : v.dump()) << "\n";
}

// After a bind or unbind: the app's instances are replaced one at a time.
int WaitForRollout(const Globals& g, const ApiTarget& api, const json& reply, const std::string& app) {
  if (!reply.contains("app_version")) return 0;
  auto a = WaitForAppVersion(g, api, app, reply["app_version"].get<int64_t>(), 120, true);
  if (!a) return Fail(a.error());
  if (!g.json_out) std::cerr << "  " << app << ": " << (*a)["running"].get<int>() << " instances running\n";
  return 0;
}

}  // namespace

void AddServiceCommands(CLI::App& app, Globals& g, std::function<int()>& run) {
  auto a = std::make_shared<ServiceArgs>();
  auto* svc = app.add_subcommand("service", "data services for apps: create, bind, delete");
  svc->require_subcommand(1);
  svc->add_option("--api", a->api.url, "the API's URL (with KATO_API_TOKEN or `kato login`'s token); default: the login's, else this node's cluster");
  svc->add_option("--org", a->api.org, "the organization a new service goes to (default: your only one)");
  auto add_json = [&g](CLI::App* c) { c->add_flag("-j,--json", g.json_out, "print one JSON document"); };

  auto* create = svc->add_subcommand("create", "provision a service instance with its own credentials");
  create->add_option("TYPE", a->type, "postgresql, mysql, redis, memcached, rabbitmq, filesystem or harbor")->required();
  create->add_option("NAME", a->name, "the service's name")->required();
  create->add_option("--node", a->node, "the node's IP (default: the least loaded node with the role)");
  create->add_option("--plan", a->plan, "size for redis, memcached (default 64M) and filesystem (default 1G), e.g. 64M, 1G");
  create->add_flag("--udp", a->udp, "harbor: a UDP port (default TCP)");
  add_json(create);
  create->callback([&g, &run, a] {
    run = [&g, a] {
      json body{{"type", a->type}, {"name", a->name}};
      if (!a->node.empty()) body["node"] = a->node;
      if (!a->plan.empty()) body["plan"] = a->plan;
      if (a->udp) body["udp"] = true;
      if (!a->api.org.empty()) body["org"] = a->api.org;
      if (!g.json_out) std::cerr << "  provisioning " << a->type << " service " << a->name << "\n";
      auto r = AppApi(g, a->api, "POST", "/v2/services", body.dump());
      if (!r) return Fail(r.error());
      if (g.json_out) std::cout << r->dump(2) << "\n";
      else PrintService(*r, false);
      return 0;
    };
  });

  auto* list = svc->add_subcommand("list", "every service");
  add_json(list);
  list->callback([&g, &run, a] {
    run = [&g, a] {
      auto r = AppApi(g, a->api, "GET", "/v2/services", "");
      if (!r) return Fail(r.error());
      if (g.json_out) {
        std::cout << r->dump(2) << "\n";
      } else if (r->empty()) {
        std::cout << "no services (create one with `kato service create TYPE NAME`)\n";
      } else {
        for (const auto& s : *r) PrintService(s, false);
      }
      return 0;
    };
  });

  auto* info = svc->add_subcommand("info", "one service, with its credentials");
  info->add_option("NAME", a->name, "the service's name")->required();
  add_json(info);
  info->callback([&g, &run, a] {
    run = [&g, a] {
      auto r = AppApi(g, a->api, "GET", "/v2/services/" + a->name, "");
      if (!r) return Fail(r.error());
      if (g.json_out) std::cout << r->dump(2) << "\n";
      else PrintService(*r, true);
      return 0;
    };
  });

  auto* del = svc->add_subcommand("delete", "delete a service and its data");
  del->add_option("NAME", a->name, "the service's name")->required();
  del->add_flag("-y,--yes", a->yes, "do not ask for confirmation");
  del->add_flag("--force", a->force, "unbind it from its apps first");
  add_json(del);
  del->callback([&g, &run, a] {
    run = [&g, a] {
      if (!a->yes) {
        if (!isatty(0))
          return Fail("deleting service " + a->name +
                      " removes its data: confirm with --yes (not interactive, so kato cannot "
                      "ask); nothing changed");
        std::string answer = Prompt("delete service " + a->name + " and all its data? [y/N]");
        if (answer != "y" && answer != "Y" && answer != "yes") {
          std::cerr << "nothing changed\n";
          return 1;
        }
      }
      auto r = AppApi(g, a->api, "DELETE", "/v2/services/" + a->name + (a->force ? "?force=1" : ""), "");
      if (!r) return Fail(r.error());
      if (g.json_out) std::cout << r->dump(2) << "\n";
      else if (r->contains("message")) std::cout << a->name << ": " << (*r)["message"].get<std::string>() << "\n";
      else std::cout << "deleted service " << a->name << "\n";
      return 0;
    };
  });

  for (std::string verb : {"bind", "unbind"}) {
    auto* c = svc->add_subcommand(verb, verb == "bind" ? "give an app a service's credentials (restarts its instances one at a time)"
                                                       : "take a service from an app (restarts its instances one at a time)");
    c->add_option("NAME", a->name, "the service's name")->required();
    c->add_option("APP", a->app, "the app's name")->required();
    add_json(c);
    c->callback([&g, &run, a, verb] {
      run = [&g, a, verb] {
        auto r = verb == "bind"
                     ? AppApi(g, a->api, "POST", "/v2/services/" + a->name + "/bindings",
                              json{{"app", a->app}}.dump())
                     : AppApi(g, a->api, "DELETE", "/v2/services/" + a->name + "/bindings/" + a->app, "");
        if (!r) return Fail(r.error());
        if (!g.json_out)
          std::cerr << "  " << (verb == "bind" ? "bound " : "unbound ") << a->name
                    << (verb == "bind" ? " to " : " from ") << a->app << "; replacing its instances\n";
        int rc = WaitForRollout(g, a->api, *r, a->app);
        if (rc == 0 && g.json_out) std::cout << r->dump(2) << "\n";
        return rc;
      };
    });
  }
}

}  // namespace kato
