// PrimaryService: the cluster-state service of the primary role.
//
// Serves the cluster API (HTTPS with client certificates, port 9440) over the
// Store: joins (token + CA pinning on the client side), heartbeats and node
// liveness, role assignment with the cluster's rules, node removal, rename and
// migrate, config, history, join tokens, and a long-poll watch on the cluster
// revision so agents react to changes within milliseconds.
//
// Liveness is observed, not stored: a node is "up" while its heartbeats keep
// arriving (within kDownAfter); after a restart of the primary every node is
// "down" until its next heartbeat (one second).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/http.h"
#include "common/result.h"
#include "store/store.h"

namespace kato {

constexpr Millis kHeartbeatInterval{1000};
constexpr Millis kDownAfter{3000};
// How long a join token is valid unless `kato node token --rotate --ttl` says otherwise.
constexpr Millis kJoinTokenTtl{24 * 3600 * 1000};

struct PrimaryConfig {
  std::string data_dir;
  std::string ip;
  std::string version;  // this release's version (the cluster's version)
};

class PrimaryService {
 public:
  PrimaryService(PrimaryConfig config, Store& store, const Clock& clock);
  ~PrimaryService();

  // The HTTP handler to serve (see primary.cc for the routes).
  void Handle(const HttpRequest& req, Responder respond);

  // Wakes long polls whose revision is behind; called after every mutation.
  void NotifyChanged();
  // Completes long polls whose deadline has passed. Called periodically.
  void ExpireWatches();

 private:
  void HandleUnsafe(const HttpRequest& req, Responder respond);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Runs `katod primary`: opens the store in the data dir and serves on ip:9440
// until SIGTERM/SIGINT. Returns the process exit code.
int RunPrimary(const PrimaryConfig& config);

// The names the cluster's web certificate covers (POST /v1/webcert): for the
// endpoint api.HOST, "api.HOST", "*.HOST" (the apps) and "HOST".
std::vector<std::string> WebCertNames(const std::string& endpoint);
constexpr int kWebCertDays = 397;  // what browsers accept for a server certificate

// Whether two versions may be in one cluster: the same MAJOR.MINOR.
bool VersionsCompatible(const std::string& a, const std::string& b);

}  // namespace kato
