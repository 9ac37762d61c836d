// MemberSet: the ids of the cluster's current member nodes, as the primary last
// said; MemberFollower keeps one current for a role process.
//
// Servers that take client certificates (the agent port, the controller's
// internal port) serve only certificates whose CommonName is a current
// member's id: a removed node's certificate still chains to the cluster CA, and
// so does the load balancer's web certificate (whose CN is a host name, never a
// node id). The set is replaced from a cluster document (GET /v1/cluster or a
// heartbeat reply: both carry "revision" and "nodes"); until the first one
// nobody is a member (fail closed). While the core is away the last set stays.
// Thread-safe.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include "common/clock.h"
#include "common/http.h"
#include "common/result.h"

namespace kato {

class ClusterClient;

class MemberSet {
 public:
  // Replaces the members with the ids under "nodes" (and the revision with
  // "revision"). A document without a "nodes" array is an error and changes
  // nothing.
  Status Update(const nlohmann::json& cluster);
  Status Update(const std::string& cluster_json);
  // Forgets every member (the node left the cluster).
  void Clear();

  bool Contains(const std::string& node_id) const;
  // The revision of the document applied last; 0 before any.
  int64_t revision() const;

  // The answer for a request whose client certificate is not a current
  // member's: 401 without a certificate, 503 before the first update, 403
  // otherwise. Nothing for a member.
  std::optional<HttpResponse> Refuse(const HttpRequest& req) const;

 private:
  mutable std::mutex mu_;
  bool known_ = false;         // guarded by mu_
  int64_t revision_ = 0;       // guarded by mu_
  std::set<std::string> ids_;  // guarded by mu_
};

// Keeps a MemberSet current: fetches the members, then long-polls the cluster
// revision and fetches again when the members' revision moved, so a removal
// is applied within milliseconds. Owns one thread.
class MemberFollower {
 public:
  // Where the members come from (the primary; a fake in tests).
  class Source {
   public:
    virtual ~Source() = default;
    // The members document (GET /v1/members): "nodes", and "revision", the
    // revision at which the set of members last changed.
    virtual Result<std::string> Members() = 0;
    struct Revisions {
      int64_t cluster = 0;  // the cluster's revision
      int64_t members = 0;  // the members document's
    };
    // Blocks until the cluster revision passes `after` or a bounded timeout.
    virtual Result<Revisions> Watch(int64_t after) = 0;
  };

  // `retry`: the wait after a failed round (the core is away).
  MemberFollower(MemberSet& members, Source& source, Millis retry = Millis(500));
  ~MemberFollower();
  MemberFollower(const MemberFollower&) = delete;
  MemberFollower& operator=(const MemberFollower&) = delete;

  // Fetches the members once (so that a server started next knows them), then
  // follows them on a thread. Call once.
  void Start();
  // Ends the thread; waits at most for the watch in flight. Idempotent.
  void Stop();

  // One round, as the thread repeats it: fetch the members if their
  // revision moved since the last fetch, then watch. Other changes of the
  // cluster (apps, instances) fetch nothing. For tests.
  Status Step();

 private:
  Status Fetch();
  void Run();

  MemberSet& members_;
  Source& source_;
  const Millis retry_;
  bool fetched_ = false;  // used by Step's caller only (the thread, or a test)
  int64_t seen_ = 0;          // the members revision the last watch reported
  int64_t cluster_seen_ = 0;  // the cluster revision the last watch reported
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // guarded by mu_
  std::thread thread_;
};

// The Source over the primary (the node's certificate, through its agent's
// data dir); a watch waits at most `poll`.
class PrimaryMemberSource final : public MemberFollower::Source {
 public:
  explicit PrimaryMemberSource(ClusterClient& client, Millis poll = Millis(3000))
      : client_(client), poll_(poll) {}
  Result<std::string> Members() override;
  Result<Revisions> Watch(int64_t after) override;

 private:
  ClusterClient& client_;
  const Millis poll_;
};

}  // namespace kato
