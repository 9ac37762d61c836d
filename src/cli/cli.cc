#include "cli/cli.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <set>
#include <sstream>
#include <thread>
#include <nlohmann/json.hpp>

#include "cli/account_cmd.h"
#include "cli/api_client.h"
#include "cli/app_print.h"
#include "cli/app_wait.h"
#include "cli/log_follow.h"
#include "cli/service_cmd.h"
#include "cli/staging_cmd.h"
#include "cli/static_ip.h"
#include "cli/time_text.h"
#include "common/fs.h"
#include "common/http.h"
#include "common/pki.h"
#include "common/layout.h"
#include "common/net.h"
#include "common/redact.h"
#include "common/unix_socket.h"

namespace kato {

using json = nlohmann::json;

namespace {





void PrintProcesses(const json& procs) {
  for (const auto& p : procs) {
    std::string line = "  " + Pad(p.value("name", ""), 16) + Pad(p.value("state", ""), 10);
    if (p.value("pid", 0) > 0) line += "pid " + std::to_string(p.value("pid", 0));
    std::string msg = p.value("message", "");
    if (!msg.empty() && p.value("state", "") != "RUNNING") line += "  " + msg;
    std::cout << line << "\n";
  }
}

void PrintNodeStatus(const json& n) {
  std::cout << Pad(n.value("ip", ""), 16) << Pad(n.value("state", ""), 6) << n.value("hostname", "")
            << "  roles: " << Join(n["roles"]) << "\n";
  if (n.contains("error") && n.value("state", "") == "down")
    std::cout << "  (" << n["error"].get<std::string>() << ")\n";
  PrintProcesses(n["processes"]);
  if (n.contains("load_balancer") && n["load_balancer"].is_object() &&
      n["load_balancer"].contains("pool")) {
    const json& lb = n["load_balancer"];
    std::cout << "  load balancer pool: " << (lb["pool"].empty() ? "(none)" : Join(lb["pool"], ", "))
              << "  healthy: " << (lb["healthy"].empty() ? "(none)" : Join(lb["healthy"], ", "))
              << "  certificate: " << lb["cert"].value("source", "") << "\n";
  }
}


}  // namespace

int RunCli(int argc, char** argv) {
  Globals g;
  for (int i = 0; i < argc; ++i) g.command_line += (i ? " " : "") + std::string(i ? argv[i] : "kato");
  g.command_line = RedactCommandLine(g.command_line);  // it is recorded in `kato history`
  const char* env_dir = std::getenv("KATO_DATA_DIR");
  g.data_dir = env_dir && *env_dir ? env_dir : kDefaultDataDir;

  CLI::App app{"kato: manage a kato cluster node (through the katod agent of its data dir)"};
  app.require_subcommand(1);
  app.add_option("--data-dir", g.data_dir, "the node's data dir (or KATO_DATA_DIR)")
      ->capture_default_str();
  app.set_version_flag("--version", KATO_VERSION);

  // The work a command does once parsed; it returns the exit code.
  std::function<int()> run;
  // Runs a read command: --json prints the one document, else `text` prints it.
  auto read_cmd = [&](std::string cmd, std::function<json()> args,
                      std::function<void(const json&)> text, Millis wait = Millis(30000)) {
    return [&g, cmd, args, text, wait]() {
      auto r = Ask(g, cmd, args(), wait);
      if (!r) {
        std::cerr << "kato: " << r.error() << "\n";
        return 1;
      }
      if (g.json_out)
        std::cout << r->dump(2) << "\n";
      else
        text(*r);
      return 0;
    };
  };
  auto add_json = [&](CLI::App* c) { c->add_flag("-j,--json", g.json_out, "print one JSON document"); };

  // ---- info, status, version, history ----
  auto* info = app.add_subcommand("info", "this node: id, address, cluster, roles");
  add_json(info);
  info->callback([&] {
    run = read_cmd("info", [] { return json::object(); }, [](const json& r) {
      std::cout << "node id:          " << r["id"].get<std::string>() << "\n"
                << "hostname:         " << r["hostname"].get<std::string>() << "\n"
                << "ip:               " << r["ip"].get<std::string>() << "\n"
                << "version:          " << r["version"].get<std::string>() << "\n";
      if (!r.value("attached", false)) {
        std::cout << "cluster:          not in a cluster yet (make it the core with `kato node "
                     "setup core API_HOST`, or `kato node attach CORE_IP`)\n";
      } else {
        std::cout << "core ip:          " << r["core_ip"].get<std::string>() << "\n"
                  << "api endpoint:     " << r["endpoint"].get<std::string>() << "\n";
        if (r.contains("store") && r["store"].is_object())
          std::cout << "state store:      " << r["store"].value("kind", "") << " "
                    << r["store"].value("location", "") << "\n";
      }
      std::cout << "assigned roles:   " << Join(r["roles"]["assigned"]) << "\n"
                << "available roles:  " << Join(r["roles"]["available"]) << "\n";
      for (auto& [role, why] : r["roles"]["unavailable"].items())
        std::cout << "  not available:  " << why.get<std::string>() << "\n";
    });
  });

  bool all = false;
  auto* status = app.add_subcommand("status", "this node's roles and processes (--all: every node)");
  status->add_flag("--all", all, "every node of the cluster, contacted concurrently");
  add_json(status);
  status->callback([&] {
    run = read_cmd("status", [&] { return json{{"all", all}}; }, [&](const json& r) {
      if (all) {
        for (const auto& n : r["nodes"]) PrintNodeStatus(n);
      } else {
        PrintNodeStatus(r);
      }
    });
  });

  auto* version = app.add_subcommand("version", "the versions of kato and of this node's agent");
  add_json(version);
  version->callback([&] {
    run = [&] {
      auto r = Ask(g, "version", json::object(), Millis(5000));
      json out{{"kato", KATO_VERSION}, {"katod", r ? (*r)["version"] : json(nullptr)}};
      if (g.json_out) {
        std::cout << out.dump(2) << "\n";
      } else {
        std::cout << "kato " << KATO_VERSION << "\n";
        if (r) std::cout << "katod " << (*r)["version"].get<std::string>() << "\n";
        else std::cerr << "kato: " << r.error() << "\n";
      }
      return 0;
    };
  });

  int limit = 100;
  auto* history = app.add_subcommand("history", "the commands that changed the cluster");
  history->add_option("-n,--limit", limit, "how many of the newest entries")->check(CLI::Range(1, 10000));
  add_json(history);
  history->callback([&] {
    run = read_cmd("history", [&] { return json{{"limit", limit}}; }, [](const json& r) {
      for (const auto& e : r)
        std::cout << TimeText(e["time_ms"].get<int64_t>()) << "  " << Pad(e["node"], 16)
                  << Pad(e["user"], 10) << e["command"].get<std::string>() << "\n";
    });
  });

  // ---- node ----
  auto* node = app.add_subcommand("node", "cluster membership: setup, attach, remove, ...");
  node->require_subcommand(1);
  auto* setup = node->add_subcommand("setup", "make this node the core (or a load balancer)");
  setup->require_subcommand(1);
  std::string api_host, store_url;
  auto* core = setup->add_subcommand("core", "make this node the core of a new cluster");
  core->add_option("API_HOST", api_host, "the API endpoint, e.g. api.example.com")->required();
  core->add_option("--store", store_url,
                   "keep the cluster state in PostgreSQL: postgresql://USER:PASSWORD@HOST:PORT/DB "
                   "(an empty database; default: SQLite in the data dir)");
  add_json(core);
  core->callback([&] {
    run = read_cmd(
        "node.setup_core",
        [&] {
          json a{{"api_host", api_host}};
          if (!store_url.empty()) a["store"] = store_url;
          return a;
        },
        [](const json& r) {
          std::cout << "This node is the core of a new cluster at "
                    << r["core_ip"].get<std::string>() << " (API endpoint "
                    << r["endpoint"].get<std::string>() << ").\n"
                    << "Join token:\n  " << r["token"].get<std::string>() << "\n  "
                    << TokenExpiryText({{"expires_ms", r.value("token_expires_ms", 0LL)}}) << "\n"
                    << "Attach other nodes with:\n  " << r["attach_command"].get<std::string>()
                    << "\n";
        },
        Millis(120000));
  });
  std::vector<std::string> lb_routers;
  bool lb_force = false, lb_yes = false;
  auto* lb = setup->add_subcommand(
      "load_balancer",
      "make this node the load balancer: nginx over the cluster's routers, SSL on 443");
  lb->add_option("ROUTER_IP", lb_routers,
                 "balance over these routers only (default: every router of the cluster, "
                 "following it as routers come and go)");
  lb->add_flag("--force", lb_force, "use every router of the cluster, whatever IPs are given");
  lb->add_flag("-y,--yes", lb_yes, "do not ask for confirmation");
  add_json(lb);
  lb->callback([&] {
    run = [&] {
      for (const auto& ip : lb_routers)
        if (auto s = CheckIPv4(ip, "ROUTER_IP"); !s) {
          std::cerr << "kato: " << s.error() << "; nothing changed\n";
          return 2;
        }
      json args{{"routers", lb_routers}, {"force", lb_force}, {"dry_run", true}};
      auto plan = Ask(g, "node.setup_load_balancer", args, Millis(30000));
      if (!plan) {
        std::cerr << "kato: " << plan.error() << "\n";
        return 1;
      }
      std::string pool = (*plan)["pool"].empty() ? "no router yet" : Join((*plan)["pool"], ", ");
      if (!lb_yes) {
        if (!isatty(STDIN_FILENO)) {
          std::cerr << "kato: not interactive, so kato cannot ask: pass --yes to confirm; "
                       "nothing changed\n";
          return 2;
        }
        std::cerr << "This node (" << (*plan)["ip"].get<std::string>()
                  << ") becomes the load balancer over: " << pool
                  << ((*plan)["follow_cluster"].get<bool>()
                          ? " (following the cluster's routers)"
                          : " (only these)")
                  << ".\n";
        if (!(*plan)["remove_roles"].empty())
          std::cerr << "Its router role is replaced by load_balancer (its own address is never "
                       "in the pool).\n";
        std::string a = Prompt("Proceed? [y/N]");
        if (a != "y" && a != "Y" && a != "yes") {
          std::cerr << "kato: nothing changed\n";
          return 1;
        }
      }
      args["dry_run"] = false;
      auto r = Ask(g, "node.setup_load_balancer", args, Millis(180000));
      if (!r) {
        std::cerr << "kato: " << r.error() << "\n";
        return 1;
      }
      if (g.json_out) {
        std::cout << r->dump(2) << "\n";
      } else {
        std::cout << "this node is the load balancer (HTTP on 80, HTTPS on 443) over: " << pool
                  << "\n";
      }
      return 0;
    };
  });

  bool rotate = false;
  std::string ttl;
  auto* token = node->add_subcommand("token", "print the cluster's join token (on the core)");
  token->add_flag("--rotate", rotate, "make a new token; the old one stops working");
  bool api_token = false;
  token->add_flag("--api", api_token, "print the REST API's admin credential instead");
  token->add_option("--ttl", ttl, "with --rotate: how long the token stays valid (e.g. 30m, 24h, 7d)");
  add_json(token);
  token->callback([&] {
    run = [&] {
      json args{{"rotate", rotate}, {"api", api_token}};
      if (!ttl.empty()) {
        if (!rotate) {
          std::cerr << "kato: --ttl applies to a new token; add --rotate\n";
          return 2;
        }
        char unit = ttl.back();
        int64_t mult = unit == 's' ? 1 : unit == 'm' ? 60 : unit == 'h' ? 3600 : unit == 'd' ? 86400 : 0;
        int64_t n = 0;
        try {
          size_t used = 0;
          n = std::stoll(ttl.substr(0, ttl.size() - 1), &used);
          if (used != ttl.size() - 1) mult = 0;
        } catch (...) {
          mult = 0;
        }
        if (mult == 0 || n <= 0) {
          std::cerr << "kato: --ttl '" << ttl << "' is not a duration (e.g. 90s, 30m, 24h, 7d)\n";
          return 2;
        }
        args["ttl_s"] = n * mult;
      }
      auto r = Ask(g, "node.token", args, Millis(15000));
      if (!r) {
        std::cerr << "kato: " << r.error() << "\n";
        return 1;
      }
      if (g.json_out) {
        std::cout << r->dump(2) << "\n";
        return 0;
      }
      std::cout << (*r)["token"].get<std::string>() << "\n";
      // On stderr, so that `$(kato node token)` is the token alone.
      if (!api_token) std::cerr << TokenExpiryText(*r) << "\n";
      return 0;
    };
  });

  std::vector<std::string> enable;
  std::string token_arg, core_ip;
  bool force = false;
  auto* attach = node->add_subcommand("attach", "attach this node to the cluster at CORE_IP");
  attach->add_option("-e,--enable", enable, "roles and role groups to enable (ROLE[,ROLE...])");
  attach->add_option("--token", token_arg, "the join token (else KATO_TOKEN, else a prompt)");
  attach->add_flag("--force", force, "attach even when the versions are not compatible");
  attach->add_option("CORE_IP", core_ip, "the core node's address")->required();
  add_json(attach);
  attach->callback([&] {
    run = [&] {
      if (token_arg.empty()) {
        const char* t = std::getenv("KATO_TOKEN");
        if (t && *t) token_arg = t;
      }
      if (token_arg.empty()) {
        if (!isatty(STDIN_FILENO)) {
          std::cerr << "kato: no join token: pass --token TOKEN or set KATO_TOKEN (print it with "
                       "`kato node token` on the core)\n";
          return 2;
        }
        token_arg = Prompt("Join token (from `kato node token` on the core)");
      }
      if (auto s = CheckIPv4(core_ip, "CORE_IP"); !s) {
        std::cerr << "kato: " << s.error() << "\n";
        return 2;
      }
      auto r = Ask(g, "node.attach",
                   json{{"core_ip", core_ip}, {"token", token_arg}, {"roles", enable}, {"force", force}},
                   Millis(300000));
      if (!r) {
        std::cerr << "kato: " << r.error() << "\n";
        return 1;
      }
      if (g.json_out)
        std::cout << r->dump(2) << "\n";
      else
        std::cout << "attached to " << (*r)["core_ip"].get<std::string>() << " with roles: "
                  << Join((*r)["roles"]["assigned"]) << "\n";
      return 0;
    };
  });

  auto* detach = node->add_subcommand("detach", "leave the cluster and stop the cluster roles");
  add_json(detach);
  detach->callback([&] {
    run = read_cmd("node.detach", [] { return json::object(); }, [](const json& r) {
      std::cout << "detached from the cluster\n";
      if (!r.value("warning", "").empty()) std::cerr << "warning: " << r["warning"].get<std::string>() << "\n";
    }, Millis(60000));
  });

  std::string node_ip;
  auto* remove = node->add_subcommand("remove", "remove a node from the cluster (on the core)");
  remove->add_option("NODE_IP", node_ip, "the node's address")->required();
  add_json(remove);
  remove->callback([&] {
    run = read_cmd("node.remove", [&] { return json{{"ip", node_ip}}; }, [&](const json& r) {
      std::cout << "removed " << node_ip << " from the cluster\n";
      if (r.contains("warning")) std::cerr << "warning: " << r["warning"].get<std::string>() << "\n";
    }, Millis(15000));
  });

  auto* list = node->add_subcommand("list", "the cluster's nodes: IP role role ...");
  add_json(list);
  list->callback([&] {
    run = read_cmd("node.list", [] { return json::object(); }, [](const json& r) {
      for (const auto& n : r) std::cout << n["ip"].get<std::string>() << " " << Join(n["roles"]) << "\n";
    });
  });

  std::string hostname;
  bool no_restart = false, system = false;
  auto* rename = node->add_subcommand("rename", "set this node's host name in the cluster");
  rename->add_option("HOSTNAME", hostname, "the fully qualified host name")->required();
  rename->add_flag("--no-restart", no_restart, "do not restart role processes (none need it)");
  rename->add_flag("--system", system, "also write /etc/hostname and set the running host name");
  add_json(rename);
  rename->callback([&] {
    run = read_cmd("node.rename",
                   [&] { return json{{"hostname", hostname}, {"system", system}, {"no_restart", no_restart}}; },
                   [](const json& r) {
                     std::cout << "hostname is now " << r["hostname"].get<std::string>() << "\n";
                     if (!r["endpoint"].get<std::string>().empty())
                       std::cout << "API endpoint: " << r["endpoint"].get<std::string>() << "\n";
                   });
  });

  std::string old_ip, new_ip;
  auto* migrate = node->add_subcommand("migrate", "the node (or the core) now lives at NEW_IP");
  migrate->add_option("OLD_IP", old_ip, "the old address")->required();
  migrate->add_option("NEW_IP", new_ip, "the new address")->required();
  add_json(migrate);
  migrate->callback([&] {
    run = read_cmd("node.migrate", [&] { return json{{"old_ip", old_ip}, {"new_ip", new_ip}}; },
                   [](const json& r) {
                     std::cout << "node " << r["ip"].get<std::string>() << ", core "
                               << r["core_ip"].get<std::string>() << "\n";
                   },
                   Millis(180000));
  });

  // ---- role ----
  auto* role = app.add_subcommand("role", "add, remove and describe roles");
  role->require_subcommand(1);
  std::vector<std::string> roles, all_but;
  bool role_all = false;
  std::string on_node;
  auto* radd = role->add_subcommand("add", "add roles to this node (or -n NODE_IP)");
  radd->add_option("ROLE", roles, "roles or role groups");
  radd->add_flag("--all", role_all, "every available role (not primary or load_balancer)");
  radd->add_option("--all-but", all_but, "every available role but these");
  radd->add_option("-n,--node", on_node, "act on the node at this address");
  add_json(radd);
  radd->callback([&] {
    run = [&] {
      int forms = !roles.empty() + role_all + !all_but.empty();
      if (forms != 1) {
        std::cerr << "kato: give roles, or --all, or --all-but ROLE...\n";
        return 2;
      }
      json args{{"roles", roles}, {"all", role_all}};
      if (!all_but.empty()) args["all_but"] = all_but;
      if (!on_node.empty()) args["node"] = on_node;
      auto r = Ask(g, "role.add", args, Millis(300000));
      if (!r) {
        std::cerr << "kato: " << r.error() << "\n";
        return 1;
      }
      if (g.json_out) std::cout << r->dump(2) << "\n";
      else std::cout << "roles: " << Join((*r)["roles"]) << "\n";
      return 0;
    };
  });
  auto* rrem = role->add_subcommand("remove", "remove roles from this node (or -n NODE_IP)");
  rrem->add_option("ROLE", roles, "roles or role groups")->required();
  rrem->add_option("-n,--node", on_node, "act on the node at this address");
  add_json(rrem);
  rrem->callback([&] {
    run = read_cmd("role.remove", [&] {
      json a{{"roles", roles}};
      if (!on_node.empty()) a["node"] = on_node;
      return a;
    }, [](const json& r) { std::cout << "roles: " << Join(r["roles"]) << "\n"; }, Millis(120000));
  });
  auto* rinfo = role->add_subcommand("info", "the processes of each role");
  rinfo->add_option("ROLE", roles, "roles (default: all)");
  rinfo->add_option("-n,--node", on_node, "the node at this address");
  add_json(rinfo);
  rinfo->callback([&] {
    run = read_cmd("role.info", [&] {
      json a{{"roles", roles}};
      if (!on_node.empty()) a["node"] = on_node;
      return a;
    }, [](const json& r) {
      for (const auto& e : r) {
        std::string state = e["assigned"].get<bool>() ? "assigned" : e["available"].get<bool>() ? "available" : "unavailable";
        std::string procs = e["processes"].empty() ? "(served by katod itself)" : Join(e["processes"]);
        std::cout << Pad(e["role"], 15) << Pad(state, 13) << procs << "\n";
        if (!e["available"].get<bool>()) std::cout << "  " << e["reason"].get<std::string>() << "\n";
      }
    });
  });

  // ---- start / stop / restart, process ----
  for (std::string verb : {"start", "stop", "restart"}) {
    auto* c = app.add_subcommand(verb, verb + " the processes of roles (default: all of this node's)");
    c->add_option("ROLE", roles, "roles");
    c->add_option("-n,--node", on_node, "act on the node at this address");
    add_json(c);
    c->callback([&, verb] {
      run = read_cmd(verb, [&] {
        json a{{"roles", roles}};
        if (!on_node.empty()) a["node"] = on_node;
        return a;
      }, [](const json& r) { PrintProcesses(r); }, Millis(180000));
    });
  }
  auto* process = app.add_subcommand("process", "list, start, stop and restart processes");
  process->require_subcommand(1);
  std::vector<std::string> procs;
  auto* plist = process->add_subcommand("list", "this node's processes and their states");
  plist->add_option("-n,--node", on_node, "the node at this address");
  add_json(plist);
  plist->callback([&] {
    run = read_cmd("process.list", [&] {
      json a = json::object();
      if (!on_node.empty()) a["node"] = on_node;
      return a;
    }, [](const json& r) { PrintProcesses(r); });
  });
  for (std::string verb : {"start", "stop", "restart"}) {
    auto* c = process->add_subcommand(verb, verb + " processes (default: all of this node's)");
    c->add_option("PROCESS", procs, "process names (see `kato process list`)");
    c->add_option("-n,--node", on_node, "act on the node at this address");
    add_json(c);
    c->callback([&, verb] {
      run = read_cmd("process." + verb, [&] {
        json a{{"names", procs}};
        if (!on_node.empty()) a["node"] = on_node;
        return a;
      }, [](const json& r) { PrintProcesses(r); }, Millis(180000));
    });
  }

  // ---- config ----
  auto* config = app.add_subcommand("config", "settings kept in the cluster state");
  config->require_subcommand(1);
  std::string component, key, value;
  for (std::string verb : {"get", "set", "del"}) {
    auto* c = config->add_subcommand(verb, verb + " a setting");
    c->add_option("COMPONENT", component, "e.g. controller")->required();
    c->add_option("KEY", key, "the setting's name")->required();
    if (verb == "set")
      c->add_option("VALUE", value, "a JSON value (number, true/false, [..], {..}) or a string")->required();
    add_json(c);
    c->callback([&, verb] {
      run = read_cmd("config." + verb,
                     [&] { return json{{"component", component}, {"key", key}, {"value", value}}; },
                     [verb](const json& r) {
                       if (verb == "get")
                         std::cout << (r["value"].is_string() ? r["value"].get<std::string>()
                                                             : r["value"].dump())
                                   << "\n";
                     });
    });
  }

  AddServiceCommands(app, g, run);
  AddAccountCommands(app, g, run);
  AddBuildpackCommands(app, g, run);

  // ---- app ----
  auto* appc = app.add_subcommand("app", "push and manage apps (through a controller)");
  appc->require_subcommand(1);
  ApiTarget api;
  appc->add_option("--api", api.url, "the API's URL (with KATO_API_TOKEN or `kato login`'s token); default: the login's, else this node's cluster");
  appc->add_option("--org", api.org, "the organization a new app goes to (default: your only one)");
  std::string app_name, app_path, app_command, app_buildpack;
  int app_instances = 0, app_memory = 0, app_disk = 0;
  std::vector<std::string> app_env, app_services;
  auto fail = [](const std::string& e) {
    std::cerr << "kato: " << e << "\n";
    return 1;
  };
  auto print_app = [&g](const json& a) { PrintApp(g, a); };
  auto* push = appc->add_subcommand("push", "create or update an app from a directory and start it");
  push->add_option("NAME", app_name, "the app's name (its URL is NAME.DOMAIN)")->required();
  push->add_option("--path", app_path, "the app's directory")->required();
  push->add_option("--command", app_command, "how to start it (default: the Procfile's web: line, else the buildpack's)");
  push->add_option("--buildpack", app_buildpack, "stage with this buildpack (`kato buildpack list`; default: the first that detects the app)");
  push->add_option("--instances", app_instances, "how many instances")->check(CLI::Range(1, 10000));
  push->add_option("--memory", app_memory, "memory limit of each instance, MB")->check(CLI::Range(16, 16384));
  push->add_option("--disk", app_disk, "disk space of each instance (app, home, tmp), MB; default 1024")
      ->check(CLI::Range(64, 65536));
  push->add_option("--env", app_env, "K=V, repeatable");
  push->add_option("--service", app_services, "bind the service NAME (`kato service create`), repeatable");
  add_json(push);
  push->callback([&] {
    run = [&]() -> int {
      // The start command and the buildpack are the push's: none given clears them
      // (staging then finds them: the Procfile's, the buildpack's).
      json body{{"name", app_name}, {"command", app_command}, {"buildpack", app_buildpack}};
      if (!api.org.empty()) body["org"] = api.org;
      if (app_instances) body["instances"] = app_instances;
      if (app_memory) body["memory"] = app_memory;
      if (app_disk) body["disk"] = app_disk;
      if (!app_env.empty()) {
        json env = json::object();
        for (const auto& kv : app_env) {
          auto eq = kv.find('=');
          if (eq == std::string::npos || eq == 0) return fail("--env takes K=V, not '" + kv + "'");
          env[kv.substr(0, eq)] = kv.substr(eq + 1);
        }
        body["env"] = env;
      }
      struct stat st {};
      if (stat(app_path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
        return fail("--path " + app_path + " is not a directory");
      auto bits = Capture({"tar", "-C", app_path, "-czf", "-", "."});
      if (!bits) return fail("cannot archive " + app_path + ": " + bits.error());
      // Every service named must exist before anything changes.
      std::vector<std::string> to_bind;
      for (const auto& svc : app_services) {
        auto s = AppApi(g, api, "GET", "/v2/services/" + svc, "");
        if (!s) return fail(s.error());
        const json& bound = (*s)["bound_apps"];
        if (std::find(bound.begin(), bound.end(), app_name) == bound.end()) to_bind.push_back(svc);
      }
      int status = 0;
      auto existing = AppApi(g, api, "GET", "/v2/apps/" + app_name, "", false, &status);
      if (!existing && status != 404) return fail(existing.error());
      if (!existing) {
        std::cerr << "  creating app " << app_name << "\n";
        if (auto r = AppApi(g, api, "POST", "/v2/apps", body.dump()); !r) return fail(r.error());
      } else {
        body.erase("name");
        std::cerr << "  updating app " << app_name << "\n";
        if (auto r = AppApi(g, api, "PUT", "/v2/apps/" + app_name, body.dump()); !r)
          return fail(r.error());
      }
      for (const auto& svc : to_bind) {
        std::cerr << "  binding service " << svc << "\n";
        if (auto r = AppApi(g, api, "POST", "/v2/services/" + svc + "/bindings",
                            json{{"app", app_name}}.dump());
            !r)
          return fail(r.error());
      }
      std::cerr << "  uploading " << bits->size() << " bytes\n";
      auto up = AppApi(g, api, "PUT", "/v2/apps/" + app_name + "/bits", *bits, true);
      if (!up) return fail(up.error());
      int64_t version = (*up)["version"].get<int64_t>();
      if (up->contains("staging") && (*up)["staging"].is_object()) {
        auto staged = FollowStaging(g, api, app_name, (*up)["staging"]);
        if (!staged) return fail(staged.error());
        version = *staged;
      }
      auto a = WaitForAppVersion(g, api, app_name, version);
      if (!a) return fail(a.error());
      print_app(*a);
      return 0;
    };
  });
  auto* alist = appc->add_subcommand("list", "every app");
  add_json(alist);
  alist->callback([&] {
    run = [&]() -> int {
      auto r = AppApi(g, api, "GET", "/v2/apps", "");
      if (!r) return fail(r.error());
      if (g.json_out) {
        std::cout << r->dump(2) << "\n";
      } else {
        for (const auto& a : *r) print_app(a);
      }
      return 0;
    };
  });
  auto* ainfo = appc->add_subcommand("info", "one app and its instances");
  ainfo->add_option("NAME", app_name, "the app")->required();
  add_json(ainfo);
  ainfo->callback([&] {
    run = [&]() -> int {
      auto r = AppApi(g, api, "GET", "/v2/apps/" + app_name, "");
      if (!r) return fail(r.error());
      print_app(*r);
      return 0;
    };
  });
  int scale_to = 0;
  auto* ascale = appc->add_subcommand("scale", "set the number of instances");
  ascale->add_option("NAME", app_name, "the app")->required();
  ascale->add_option("N", scale_to, "instances")->required()->check(CLI::Range(0, 10000));
  add_json(ascale);
  ascale->callback([&] {
    run = [&]() -> int {
      auto r = AppApi(g, api, "PUT", "/v2/apps/" + app_name, json{{"instances", scale_to}}.dump());
      if (!r) return fail(r.error());
      print_app(*r);
      return 0;
    };
  });
  for (std::string verb : {"start", "stop", "restart", "delete"}) {
    auto* c = appc->add_subcommand(verb, verb + " an app");
    c->add_option("NAME", app_name, "the app")->required();
    add_json(c);
    c->callback([&, verb] {
      run = [&, verb]() -> int {
        Result<json> r = verb == "delete"    ? AppApi(g, api, "DELETE", "/v2/apps/" + app_name, "")
                         : verb == "restart" ? AppApi(g, api, "POST", "/v2/apps/" + app_name + "/restart", "")
                                             : AppApi(g, api, "PUT", "/v2/apps/" + app_name,
                                                      json{{"state", verb == "start" ? "STARTED" : "STOPPED"}}.dump());
        if (!r) return fail(r.error());
        if (g.json_out) std::cout << r->dump(2) << "\n";
        else if (verb == "delete") std::cout << "deleted " << app_name << "\n";
        else print_app(*r);
        return 0;
      };
    });
  }
  int log_lines = 50;
  bool follow = false;
  auto* alogs = appc->add_subcommand("logs", "the recent output of each instance");
  alogs->add_option("NAME", app_name, "the app")->required();
  alogs->add_option("-n,--lines", log_lines, "lines per instance")->check(CLI::Range(1, 10000));
  alogs->add_flag("-f,--follow", follow, "keep printing new lines (Ctrl-C to stop)");
  bool staging_log = false;
  alogs->add_flag("--staging", staging_log, "the log of the app's last staging (its build)");
  add_json(alogs);
  alogs->callback([&] {
    run = [&]() -> int {
      if (staging_log) return PrintStagingLog(g, api, app_name, log_lines);
      LogFollower follower;
      for (bool first = true;; first = false) {
        auto r = AppApi(g, api, "GET",
                        "/v2/apps/" + app_name + "/logs?lines=" + std::to_string(log_lines), "");
        if (!r) return fail(r.error());
        if (g.json_out) {
          std::cout << r->dump(2) << "\n";
          return 0;
        }
        for (const auto& i : *r) {
          std::string id = i.value("instance_id", "");
          std::string prefix = "[" + std::to_string(i.value("index", 0)) + "] ";
          if (i.contains("error")) {
            if (first) std::cerr << prefix << "(" << i["error"].get<std::string>() << ")\n";
            continue;
          }
          std::istringstream in(follower.Unseen(id, i.value("end_offset", uint64_t{0}),
                                                i.value("text", "")));
          for (std::string l; std::getline(in, l);) std::cout << prefix << l << "\n";
        }
        std::cout << std::flush;
        if (!follow) return 0;
        std::this_thread::sleep_for(std::chrono::seconds(1));  // --follow polls once a second
      }
    };
  });

  // ---- op ----
  auto* op = app.add_subcommand("op", "operating-system chores");
  op->require_subcommand(1);
  StaticIp sip;
  bool dry_run = false;
  auto* static_ip = op->add_subcommand("static_ip", "configure a static IPv4 address (Debian ifupdown)");
  static_ip->add_option("--interface", sip.interface, "network interface (default eth0)");
  static_ip->add_option("--ip", sip.ip, "the address");
  static_ip->add_option("--netmask", sip.netmask, "e.g. 255.255.255.0");
  static_ip->add_option("--gateway", sip.gateway, "the default gateway");
  static_ip->add_option("--dns", sip.dns, "name server addresses");
  static_ip->add_flag("--dry-run", dry_run, "print what would be written; change nothing");
  static_ip->callback([&] {
    run = [&] {
      bool interactive = isatty(STDIN_FILENO);
      if (sip.interface.empty()) sip.interface = "eth0";
      auto ask = [&](std::string& field, const std::string& name) {
        if (!field.empty()) return true;
        if (!interactive) {
          std::cerr << "kato: missing --" << name << " (not interactive, so kato cannot ask)\n";
          return false;
        }
        field = Prompt(name);
        return true;
      };
      if (!ask(sip.ip, "ip") || !ask(sip.netmask, "netmask") || !ask(sip.gateway, "gateway"))
        return 2;
      if (sip.dns.empty()) {
        std::string d;
        if (!ask(d, "dns")) return 2;
        sip.dns.push_back(d);
      }
      if (auto s = ValidateStaticIp(sip); !s) {
        std::cerr << "kato: " << s.error() << "; nothing changed\n";
        return 2;
      }
      const char* root = std::getenv("KATO_SYSROOT");  // for tests: a fake system root
      std::string path = InterfacesPath(root ? root : "", sip.interface);
      std::string text = InterfacesStanza(sip);
      if (dry_run) {
        std::cout << "would write " << path << ":\n" << text;
        return 0;
      }
      std::string dir = path.substr(0, path.rfind('/'));
      if (auto s = MakeDirs(dir); !s) {
        std::cerr << "kato: " << s.error() << "\n";
        return 1;
      }
      if (auto s = WriteFileAtomic(path, text, 0644); !s) {
        std::cerr << "kato: " << s.error() << "\n";
        return 1;
      }
      std::cout << "wrote " << path << "; apply it with `ifdown " << sip.interface
                << " && ifup " << sip.interface << "` or a reboot\n";
      return 0;
    };
  });

  auto* custom = op->add_subcommand(
      "custom_ssl_cert", "the operator's SSL certificate instead of the cluster's on this node");
  custom->require_subcommand(1);
  std::string cert_key_file, cert_file;
  bool wildcard = false;
  auto* cinstall = custom->add_subcommand(
      "install", "serve KEY and CERT (with its chain) on this node's port 443");
  cinstall->add_option("KEY", cert_key_file, "the private key (PEM, unencrypted)")->required();
  cinstall->add_option("CERT", cert_file, "the certificate, then its chain (PEM)")->required();
  cinstall->add_flag("--wildcard", wildcard,
                     "the certificate must also cover the apps (*.DOMAIN); checked");
  add_json(cinstall);
  cinstall->callback([&] {
    run = [&] {
      auto key = ReadFile(cert_key_file);
      auto cert = ReadFile(cert_file);
      if (!key || !cert) {
        std::cerr << "kato: " << (!key ? key.error() : cert.error()) << "; nothing changed\n";
        return 2;
      }
      auto r = Ask(g, "lb.cert_install",
                   json{{"key_pem", *key}, {"cert_pem", *cert}, {"wildcard", wildcard}},
                   Millis(30000));
      if (!r) {
        std::cerr << "kato: " << r.error() << "\n";
        return 1;
      }
      if (g.json_out) {
        std::cout << r->dump(2) << "\n";
      } else {
        std::cout << "installed the certificate for " << Join((*r)["names"], ", ")
                  << "; " << r->value("server", std::string("nginx"))
                  << (r->value("active", false) ? " serves it now"
                                                : " serves it once its process runs")
                  << "\n";
      }
      return 0;
    };
  });
  auto* cremove = custom->add_subcommand("remove", "go back to the cluster's certificate");
  add_json(cremove);
  cremove->callback([&] {
    run = read_cmd("lb.cert_remove", [] { return json::object(); }, [](const json&) {
      std::cout << "removed the custom certificate; the cluster's certificate is served\n";
    });
  });
  auto* clist = custom->add_subcommand("list", "the certificates this node serves on 443");
  add_json(clist);
  clist->callback([&] {
    run = read_cmd("lb.cert_list", [] { return json::object(); }, [](const json& r) {
      for (const auto& c : r) {
        std::time_t t = c["not_after_s"].get<int64_t>();
        char day[16];
        std::strftime(day, sizeof day, "%Y-%m-%d", std::gmtime(&t));
        std::cout << (c.value("active", false) ? "* " : "  ") << Pad(c["source"], 9)
                  << "until " << day << "  " << Join(c["names"], ", ")
                  << (c.value("wildcard", false) ? "  (wildcard)" : "") << "\n";
      }
    });
  });

  std::string migrate_url;
  bool migrate_yes = false;
  auto* migrate_store = op->add_subcommand(
      "migrate_store", "move the cluster state into an empty PostgreSQL database (on the core)");
  migrate_store
      ->add_option("URL", migrate_url,
                   "postgresql://USER:PASSWORD@HOST:PORT/DB (an empty database)")
      ->required();
  migrate_store->add_flag("-y,--yes", migrate_yes, "do not ask for confirmation");
  add_json(migrate_store);
  migrate_store->callback([&] {
    run = [&] {
      if (!migrate_yes) {
        if (!isatty(STDIN_FILENO)) {
          std::cerr
              << "kato: migrate_store stops the primary while it copies the cluster state; "
                 "confirm with --yes (not interactive, so kato cannot ask); nothing changed\n";
          return 2;
        }
        std::string a = Prompt(
            "Move the cluster state into this PostgreSQL database? The primary stops during the "
            "copy [y/N]");
        if (a != "y" && a != "Y" && a != "yes") {
          std::cerr << "kato: nothing changed\n";
          return 1;
        }
      }
      return read_cmd(
          "op.migrate_store",
          [&] {
            return json{{"url", migrate_url}};
          },
          [](const json& r) {
            std::cout << "The cluster state moved from " << r.value("from", "") << " to "
                      << r.value("to", "") << " (revision "
                      << r.value("revision", static_cast<int64_t>(0)) << ").\n";
            if (r.contains("backup"))
              std::cout << "The SQLite file is kept as a backup: " << r["backup"].get<std::string>()
                        << "\n";
          },
          Millis(300000))();
    };
  });

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  g.data_dir = AbsolutePath(g.data_dir);
  return run ? run() : 2;
}

}  // namespace kato
