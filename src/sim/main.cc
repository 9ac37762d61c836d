// kato-sim: N simulated nodes in one process, for measuring the control plane
// at scale (see simulation.h and bench/scale_bench.py).
#include <signal.h>
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <iostream>

#include "common/log.h"
#include "common/signals.h"
#include "roles/roles.h"
#include "sim/simulation.h"

int main(int argc, char** argv) {
  using namespace kato;
  SimOptions o;
  o.core.port = kPrimaryPort;
  o.core.version = KATO_VERSION;
  std::string roles;
  CLI::App app{
      "kato-sim: join N simulated nodes to a cluster (each on its own loopback address, with the "
      "real token and certificates); they heartbeat and watch like agents until SIGTERM, when "
      "they leave the cluster"};
  app.add_option("--core", o.core.ip, "the core node's IP address")->required();
  app.add_option("--token", o.token, "the join token (`kato node token` on the core)")->required();
  app.add_option("--nodes", o.nodes, "how many nodes")->required();
  app.add_option("--roles", roles, "their roles, comma-separated (default: base only)");
  app.add_option("--first-ip", o.first_ip, "the first node's address; the others follow")
      ->capture_default_str();
  app.add_option("--data-dir", o.data_dir, "keep each node's certificate and key in DIR/IP/");
  app.add_option("--dea-memory-mb", o.dea_memory_mb, "the memory each simulated DEA offers")
      ->check(CLI::Range(1, 1 << 24))
      ->capture_default_str();
  app.add_option("--heartbeat-threads", o.heartbeat_threads, "threads sending the heartbeats")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  for (size_t i = 0; i < roles.size();) {
    size_t j = roles.find(',', i);
    if (j == std::string::npos) j = roles.size();
    std::string r = roles.substr(i, j - i);
    if (!r.empty()) {
      if (!IsRole(r)) {
        std::cerr << "kato-sim: unknown role '" << r << "'\n";
        return 2;
      }
      if (r != "base" && r != "dea") {
        std::cerr << "kato-sim: role '" << r
                  << "' is not simulated (a simulated node is base, or a DEA)\n";
        return 2;
      }
      o.roles.push_back(r);
    }
    i = j + 1;
  }
  if (auto s = CheckSimOptions(o); !s) {
    std::cerr << "kato-sim: " << s.error() << "\n";
    return 2;
  }
  // A kept connection per node for heartbeats and one for its watch (a
  // socket each, on the client's one event loop). Root may raise the hard limit.
  const rlim_t need = static_cast<rlim_t>(o.nodes) * 2 + 1024;
  rlimit nofile{};
  if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < need) {
    rlimit want{std::max(nofile.rlim_cur, need), std::max(nofile.rlim_max, need)};
    if (::setrlimit(RLIMIT_NOFILE, &want) != 0) {
      nofile.rlim_cur = nofile.rlim_max;
      (void)::setrlimit(RLIMIT_NOFILE, &nofile);
      if (nofile.rlim_cur < need) {
        std::cerr << "kato-sim: " << o.nodes << " nodes need " << need
                  << " open files; the limit is " << nofile.rlim_cur << " (ulimit -n)\n";
        return 2;
      }
    }
  }
  SetHttpsIdleConnections(static_cast<size_t>(o.nodes) * 2 + 64);
  sigset_t set = BlockStopSignals();

  Simulation sim(o);
  auto joined =
      sim.Join([&](int n) { std::cout << "joined " << n << "/" << o.nodes << std::endl; });
  if (!joined) {
    std::cerr << "kato-sim: " << joined.error() << "\n";
    if (auto s = sim.Stop(); !s) std::cerr << "kato-sim: " << s.error() << "\n";
    return 1;
  }
  sim.Start();
  std::cout << o.nodes << " nodes up" << std::endl;
  int sig = 0;
  sigwait(&set, &sig);
  auto st = sim.stats();
  std::cout << "stopping: " << st.heartbeats << " heartbeats (" << st.heartbeat_errors
            << " failed, slowest " << st.heartbeat_ms_max << " ms), " << st.wakeups
            << " watch wake-ups, " << st.instances << " instances reported running ("
            << st.report_errors << " failed reads or reports)" << std::endl;
  if (auto s = sim.Stop(); !s) {
    std::cerr << "kato-sim: " << s.error() << "\n";
    return 1;
  }
  std::cout << o.nodes << " nodes detached" << std::endl;
  return 0;
}
