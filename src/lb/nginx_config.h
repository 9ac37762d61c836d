// The load balancer's logic that needs no OS: nginx's configuration from the
// router pool, which routers form the pool, and active health tracking.
// Pure functions and a plain class; not thread-safe (callers lock).
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/result.h"
#include "store/store.h"

namespace kato {

struct NginxConfigInput {
  std::string listen_ip;  // nginx binds only the node's address
  int http_port = 80;
  int https_port = 443;
  std::vector<std::string> routers;  // IPv4 addresses; empty: every request gets 503
  int router_port = 80;
  std::string cert_path, key_path;  // PEM; the certificate file may hold its chain
  std::string run_dir;              // pid file and temp dirs
  std::string log_dir;              // error.log, access.log
  std::string user;                 // worker user and group ("nobody nogroup"), or empty
};

// nginx.conf for the input, or an error naming a field that cannot go into
// the file (a path with characters nginx would parse, an address that is not
// IPv4). Round-robin over the routers with keepalive; a failed or 502/503
// answer goes to the next router; passive health (max_fails/fail_timeout);
// WebSocket upgrades; X-Forwarded-For/-Proto/-Host; HTTP and HTTPS.
Result<std::string> NginxConfig(const NginxConfigInput& in);

// The routers a load balancer may use: nodes with the router role, never its
// own address, and only those in `only` when it is not empty. Sorted.
std::vector<std::string> RouterCandidates(const std::vector<NodeRecord>& nodes,
                                          const std::string& own_ip,
                                          const std::vector<std::string>& only);

// Active health from periodic checks of each router's /health. A router seen
// for the first time counts as healthy after one passing check; after that it
// goes down after kFall failures in a row and comes back after kRise passes.
class RouterHealth {
 public:
  static constexpr int kFall = 2;
  static constexpr int kRise = 2;

  void Observe(const std::string& ip, bool passed);
  // Forgets routers that are no longer candidates.
  void Retain(const std::vector<std::string>& candidates);
  bool Healthy(const std::string& ip) const;

  // The pool nginx gets: the healthy candidates, or every candidate when none
  // is healthy (nginx's own retries may still find one that works).
  std::vector<std::string> Pool(const std::vector<std::string>& candidates) const;

 private:
  struct State {
    bool healthy = false;
    bool seen_pass = false;
    int streak = 0;  // checks in a row that disagree with `healthy`
  };
  std::map<std::string, State> state_;
};

}  // namespace kato
