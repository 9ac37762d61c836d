// RevisionWatch: wakes a role process's main loop when the cluster changes.
// A thread of its own long-polls the cluster revision (ClusterClient::Watch)
// and raises a flag that the loop takes with changed(); while the core is
// away it asks again every second. The thread is joined by the destructor.
#pragma once

#include <atomic>
#include <thread>

#include "agent/cluster_client.h"

namespace kato {

class RevisionWatch {
 public:
  explicit RevisionWatch(ClusterClient& client);
  ~RevisionWatch();
  RevisionWatch(const RevisionWatch&) = delete;
  RevisionWatch& operator=(const RevisionWatch&) = delete;

  // True once after each change (and at first); clears the flag.
  bool changed() { return changed_.exchange(false); }

 private:
  void Run();

  ClusterClient& client_;
  std::atomic<bool> done_{false}, changed_{true};
  std::thread thread_;
};

}  // namespace kato
