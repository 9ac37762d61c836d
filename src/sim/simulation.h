// Simulation: kato-sim's N hollow nodes in one process. They join with the
// real token (in parallel), then heartbeat once a second each, spread evenly
// over the second, and each watches its own scope of the cluster (a change
// there makes it heartbeat at once, as an agent does). Nodes with the dea
// role act as DEAs that start nothing: each round one read of the cluster's
// assignments, and every DEA whose share changed reports its instances as
// RUNNING at once; each DEA also reports twice per heartbeat interval (an
// empty report at first, which makes it a place for instances).
// Stop ends every thread (joined) and then the nodes leave the cluster.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "common/result.h"
#include "sim/hollow_node.h"

namespace kato {

struct SimOptions {
  HollowCore core;
  std::string token;               // the cluster's join token (kato node token on the core)
  int nodes = 0;                   // how many
  std::vector<std::string> roles;  // each node's roles at join (base is implied)
  std::string first_ip = "127.1.0.1";
  std::string data_dir;  // each node's certificate and key go to DIR/IP/; empty: kept in memory
  Millis heartbeat{1000};
  Millis watch_timeout{15000};
  int join_threads = 8;
  int heartbeat_threads = 4;
  Millis dea_round{250};      // how often the DEAs read their assignments (as real ones)
  int dea_memory_mb = 16384;  // what each simulated DEA offers
};

// Checks the options (addresses, counts); the error names the bad value.
Status CheckSimOptions(const SimOptions& options);

class Simulation {
 public:
  explicit Simulation(SimOptions options);
  ~Simulation();
  Simulation(const Simulation&) = delete;
  Simulation& operator=(const Simulation&) = delete;

  // Joins every node; `progress` is told the count now and then. Stops at the
  // first refusal (the error says which node and why); nodes joined so far
  // stay joined until Stop.
  Status Join(const std::function<void(int joined)>& progress);
  // Starts the heartbeats and watches. Call once, after Join.
  void Start();
  // Ends the threads, then every node leaves the cluster. Idempotent.
  Status Stop();

  struct Stats {
    uint64_t heartbeats = 0;        // answered
    uint64_t heartbeat_errors = 0;  // refused or unanswered
    uint64_t wakeups = 0;           // watches that saw a change of their node's scope
    double heartbeat_ms_max = 0;    // slowest heartbeat so far
    uint64_t instances = 0;         // reported running by the simulated DEAs, last round
    uint64_t report_errors = 0;     // assignment reads and reports that failed
  };
  Stats stats() const;
  int joined() const;

 private:
  struct Node;
  void HeartbeatLoop(int which, int threads);
  void WatchLoop(Node& node);
  void DeaLoop();
  void DeaRound();
  Status SaveIdentity(const HollowNode& node);
  bool WaitUntil(SteadyTime t);  // false when stopping

  const SimOptions opt_;
  std::vector<std::unique_ptr<Node>> nodes_;  // filled by Join, fixed after
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;  // guarded by mu_
  bool stopped_ = false;   // guarded by mu_
  std::atomic<uint64_t> heartbeats_{0}, errors_{0}, wakeups_{0}, instances_{0}, report_errors_{0};
  std::atomic<int64_t> slowest_us_{0};
};

}  // namespace kato
