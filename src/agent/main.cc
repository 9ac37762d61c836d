// katod: the node agent (and, as `katod primary`, the primary role's process).
#include <signal.h>
#include <sys/prctl.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "agent/agent.h"
#include "common/fs.h"
#include "common/layout.h"
#include "common/limits.h"
#include "controller/run_controller.h"
#include "dea/command.h"
#include "dea/run_dea.h"
#include "lb/run_lb.h"
#include "primary/primary.h"
#include "router/run_router.h"
#include "services/run_harbor.h"
#include "services/run_services.h"

int main(int argc, char** argv) {
  CLI::App app{"katod: the kato node agent. Runs in the foreground; stop it with SIGTERM."};
  app.set_version_flag("--version", KATO_VERSION);
  std::string data_dir = kato::kDefaultDataDir;
  std::string ip;
  app.add_option("--data-dir", data_dir, "the node's data dir")->capture_default_str();
  app.add_option("--ip", ip,
                 "the node's address; its servers bind only this (default: the stored one, else "
                 "the address of the default route's interface)");
  auto* primary = app.add_subcommand("primary", "serve the primary role (started by katod itself)");
  primary->fallthrough();
  auto* controller =
      app.add_subcommand("controller", "serve the controller role (started by katod itself)");
  controller->fallthrough();
  auto* router = app.add_subcommand("router", "serve the router role (started by katod itself)");
  router->fallthrough();
  auto* dea = app.add_subcommand("dea", "serve the dea role (started by katod itself)");
  dea->fallthrough();
  auto* lb = app.add_subcommand("lb", "serve the load_balancer role: nginx (started by katod itself)");
  lb->fallthrough();
  std::string nginx;
  lb->add_option("--nginx", nginx, "the nginx binary (default: found in /usr/sbin and PATH)");
  auto* harbor = app.add_subcommand("harbor", "serve the harbor role: nginx's stream proxy (started by katod itself)");
  harbor->fallthrough();
  harbor->add_option("--nginx", nginx, "the nginx binary (default: found in /usr/sbin and PATH)");
  auto* services = app.add_subcommand(
      "services", "provision the data roles' service instances (started by katod itself)");
  services->fallthrough();
  std::vector<std::string> service_roles;
  services->add_option("--roles", service_roles, "the node's data roles, comma separated")
      ->delimiter(',');
  CLI11_PARSE(app, argc, argv);

  std::string version = KATO_VERSION;
#ifdef KATO_TEST_HOOKS
  // Test builds only (katod-test, never installed): pretend to be another release.
  if (const char* v = std::getenv("KATO_TEST_VERSION")) version = v;
#endif
  data_dir = kato::AbsolutePath(data_dir);
  // Every role process inherits it from katod (routers hold a descriptor per
  // connection); role processes started by hand raise it for themselves.
  auto nofile = kato::RaiseOpenFilesLimit();
  if (!nofile) std::cerr << "katod: " << nofile.error() << " (continuing)\n";
  if (*primary) return kato::RunPrimary({data_dir, ip, version});
  if (*controller) return kato::RunController({data_dir, ip, version});
  if (*router) return kato::RunRouter({data_dir, ip, version});
  if (*dea) return kato::RunDea({data_dir, ip, version});
  if (*lb) return kato::RunLb({data_dir, ip, version, nginx});
  if (*harbor) return kato::RunHarbor({data_dir, ip, version, nginx});
  if (*services) {
    kato::PosixCommandRunner runner(std::chrono::seconds(60));
    return kato::RunServices({data_dir, ip, version, service_roles}, runner);
  }

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGCHLD);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
  std::error_code ec;
  std::string self = std::filesystem::read_symlink("/proc/self/exe", ec).string();
  if (ec) self = argv[0];
  kato::Agent agent({data_dir, ip, version, self});
  return agent.Run();
}
