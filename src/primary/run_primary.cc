// `katod primary`: the process that serves the primary role.
#include <signal.h>

#include <atomic>
#include <thread>

#include "common/fs.h"
#include "common/layout.h"
#include "common/log.h"
#include "common/signals.h"
#include "primary/cached_store.h"
#include "primary/primary.h"
#include "roles/roles.h"

namespace kato {

// The primary's handlers are short and mostly serialized by its lock: one I/O
// thread serves thousands of nodes' heartbeats with fewer context switches
// than two handing work to each other.
constexpr int kIoThreads = 1;

int RunPrimary(const PrimaryConfig& config) {
  DataLayout layout{config.data_dir};
  sigset_t set = BlockStopSignals();

  auto spec = StoreSpecOf(config.data_dir);
  if (!spec) {
    LogError("primary: {}", spec.error());
    return 1;
  }
  auto store = OpenStore(*spec);
  if (!store) {
    LogError("{}", store.error());
    return 1;
  }
  LogInfo("primary: cluster state in {} ({})", MaskStoreSpec(*spec), StoreKind(*spec));
  auto cert = ReadFile(layout.node_cert());
  auto key = ReadFile(layout.node_key());
  auto ca = ReadFile(layout.ca_cert());
  if (!cert || !key || !ca) {
    LogError("primary: missing certificates in {}: run `kato node setup core` first",
             layout.pki_dir());
    return 1;
  }
  // Heartbeats read nodes and settings from memory (see cached_store.h).
  CachedStore cached(**store);
  PrimaryService service(config, cached, RealClock::instance());
  HttpsServer server(ServerTls{*ca, *cert, *key, *ca},
                     [&](const HttpRequest& req, Responder r) { service.Handle(req, std::move(r)); },
                     kIoThreads);
  if (auto s = server.Start(config.ip, kPrimaryPort); !s) {
    LogError("primary: {}", s.error());
    return 1;
  }
  LogInfo("primary: serving the cluster state on {}:{}", config.ip, kPrimaryPort);
  std::atomic<bool> done{false};
  std::thread expirer([&] {
    while (!done) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));  // watch deadline granularity
      service.ExpireWatches();
    }
  });
  int sig = 0;
  sigwait(&set, &sig);
  LogInfo("primary: signal {}, stopping", sig);
  done = true;
  expirer.join();
  server.Stop();
  return 0;
}

}  // namespace kato
