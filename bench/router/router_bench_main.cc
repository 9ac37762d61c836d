// kato-router-bench: a Router with a static route table, for bench/router/run.sh.
//   kato-router-bench --listen 127.0.0.1:18080 --threads 1 --route app.bench=127.0.0.1:18081
//     [--tls-port 18443 --tls-cert CERT.pem --tls-key KEY.pem]
// --route may repeat; backends of one host are comma-separated. Runs until SIGINT/SIGTERM.
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "common/fs.h"
#include "router/proxy.h"
#include "router/route_table.h"

namespace {

bool SplitHostPort(const std::string& s, std::string* ip, int* port) {
  size_t colon = s.rfind(':');
  if (colon == std::string::npos) return false;
  *ip = s.substr(0, colon);
  *port = std::atoi(s.c_str() + colon + 1);
  return *port > 0 && *port < 65536;
}

int Usage() {
  std::fprintf(stderr,
               "usage: kato-router-bench --listen IP:PORT [--threads N] "
               "--route HOST=IP:PORT[,IP:PORT...]... "
               "[--tls-port PORT --tls-cert FILE --tls-key FILE] [--max-idle-upstreams N]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  kato::RouterOptions opt;
  kato::RouteMap routes;
  std::string tls_cert, tls_key;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (i + 1 >= argc) return Usage();
    std::string value = argv[++i];
    if (arg == "--listen") {
      if (!SplitHostPort(value, &opt.ip, &opt.port)) return Usage();
    } else if (arg == "--tls-port") {
      opt.tls_port = std::atoi(value.c_str());
    } else if (arg == "--tls-cert") {
      tls_cert = value;
    } else if (arg == "--tls-key") {
      tls_key = value;
    } else if (arg == "--max-idle-upstreams") {
      opt.max_idle_upstreams_total = static_cast<size_t>(std::atol(value.c_str()));
    } else if (arg == "--threads") {
      opt.threads = std::atoi(value.c_str());
    } else if (arg == "--route") {
      size_t eq = value.find('=');
      if (eq == std::string::npos) return Usage();
      auto& backends = routes[value.substr(0, eq)];
      std::string rest = value.substr(eq + 1);
      size_t pos = 0;
      while (pos <= rest.size()) {
        size_t comma = rest.find(',', pos);
        if (comma == std::string::npos) comma = rest.size();
        kato::Backend b;
        int port = 0;
        if (!SplitHostPort(rest.substr(pos, comma - pos), &b.ip, &port)) return Usage();
        b.port = static_cast<uint16_t>(port);
        backends.push_back(b);
        pos = comma + 1;
      }
    } else {
      return Usage();
    }
  }
  if (!tls_cert.empty()) {
    auto cert = kato::ReadFile(tls_cert);
    auto key = kato::ReadFile(tls_key);
    if (!cert || !key) {
      std::fprintf(stderr, "kato-router-bench: cannot read the TLS certificate or key\n");
      return 2;
    }
    opt.tls = kato::ServerTls{"", *cert, *key, ""};
  }
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);  // the I/O threads inherit the mask

  kato::RouteTable table;
  table.Replace(routes);
  kato::Router router(opt, table);
  if (auto s = router.Start(); !s.ok()) {
    std::fprintf(stderr, "kato-router-bench: %s\n", s.error().c_str());
    return 1;
  }
  std::fprintf(stderr, "kato-router-bench: listening on %s:%d with %d thread(s)\n", opt.ip.c_str(),
               router.port(), opt.threads);
  int sig = 0;
  sigwait(&set, &sig);
  router.Stop();
  return 0;
}
