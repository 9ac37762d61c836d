// kato-instance-net: one app instance's network, made by the DEA's own code
// (InstanceNetwork), for bench/router/dnat.sh.
//   kato-instance-net --node-ip 127.0.250.3 --port 18091
// Prints "NETNS_PATH INSTANCE_IP" on stdout once NODE_IP:PORT is DNATed into
// the namespace; removes everything on SIGINT/SIGTERM.
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "dea/command.h"
#include "dea/instance_network.h"

int main(int argc, char** argv) {
  std::string node_ip;
  int port = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string arg = argv[i];
    if (arg == "--node-ip") node_ip = argv[i + 1];
    if (arg == "--port") port = std::atoi(argv[i + 1]);
  }
  if (node_ip.empty() || port <= 0) {
    std::fprintf(stderr, "usage: kato-instance-net --node-ip IP --port PORT\n");
    return 2;
  }
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  kato::PosixCommandRunner run;
  kato::NetworkOptions opt;
  opt.node_id = "be9c4000bench";
  opt.node_ip = node_ip;
  kato::InstanceNetwork net(run, opt);
  kato::EgressPolicy policy;
  policy.nodes = {node_ip};
  if (auto s = net.Init(policy); !s.ok()) {
    std::fprintf(stderr, "kato-instance-net: %s\n", s.error().c_str());
    return 1;
  }
  auto a = net.Attach(port);
  if (!a.ok()) {
    std::fprintf(stderr, "kato-instance-net: %s\n", a.error().c_str());
    (void)net.Shutdown();
    return 1;
  }
  std::printf("%s %s\n", a->netns_path.c_str(), a->ip.c_str());
  std::fflush(stdout);
  int sig = 0;
  sigwait(&set, &sig);
  (void)net.Detach(*a);
  (void)net.Shutdown();
  return 0;
}
