#include "agent/member_set.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "agent/cluster_client.h"
#include "common/log.h"

namespace kato {

using json = nlohmann::json;

// ---- MemberSet ------------------------------------------------------------------

Status MemberSet::Update(const json& cluster) {
  if (!cluster.is_object() || !cluster.contains("nodes") || !cluster["nodes"].is_array())
    return Err("the cluster document has no \"nodes\" list");
  int64_t revision = cluster.contains("revision") && cluster["revision"].is_number_integer()
                         ? cluster["revision"].get<int64_t>()
                         : 0;
  std::set<std::string> ids;
  for (const auto& n : cluster["nodes"])
    if (n.is_object() && n.contains("id") && n["id"].is_string())
      ids.insert(n["id"].get<std::string>());
  std::lock_guard lock(mu_);
  ids_ = std::move(ids);
  revision_ = revision;
  known_ = true;
  return Ok();
}

Status MemberSet::Update(const std::string& cluster_json) {
  json j = json::parse(cluster_json, nullptr, false);
  if (j.is_discarded()) return Err("the cluster document is not JSON");
  return Update(j);
}

void MemberSet::Clear() {
  std::lock_guard lock(mu_);
  ids_.clear();
  revision_ = 0;
  known_ = false;
}

bool MemberSet::Contains(const std::string& node_id) const {
  std::lock_guard lock(mu_);
  return ids_.count(node_id) > 0;
}

int64_t MemberSet::revision() const {
  std::lock_guard lock(mu_);
  return revision_;
}

std::optional<HttpResponse> MemberSet::Refuse(const HttpRequest& req) const {
  auto answer = [](int status, const std::string& message) {
    HttpResponse r;
    r.status = status;
    r.body = json{{"error", message}}.dump();
    return r;
  };
  if (req.peer_cn.empty()) return answer(401, "a node certificate of this cluster is required");
  std::lock_guard lock(mu_);
  if (!known_)
    return answer(503,
                  "this node does not know the cluster's members yet (the core has not "
                  "answered); try again in a few seconds");
  if (ids_.count(req.peer_cn)) return std::nullopt;
  return answer(403, "the certificate of '" + req.peer_cn +
                         "' is not a current member node's (removed nodes and web certificates "
                         "are refused)");
}

// ---- MemberFollower -------------------------------------------------------------

MemberFollower::MemberFollower(MemberSet& members, Source& source, Millis retry)
    : members_(members), source_(source), retry_(retry) {}

MemberFollower::~MemberFollower() { Stop(); }

Status MemberFollower::Fetch() {
  auto doc = source_.Members();
  if (!doc) return Err("cannot read the cluster's members: " + doc.error());
  KATO_TRY(members_.Update(*doc));
  fetched_ = true;
  seen_ = members_.revision();
  // The cluster was at least there when the members last changed.
  cluster_seen_ = std::max(cluster_seen_, seen_);
  return Ok();
}

Status MemberFollower::Step() {
  if (!fetched_ || seen_ != members_.revision()) KATO_TRY(Fetch());
  auto rev = source_.Watch(cluster_seen_);
  if (!rev) return Err("cannot watch the cluster: " + rev.error());
  cluster_seen_ = rev->cluster;
  seen_ = rev->members;
  return Ok();
}

void MemberFollower::Start() {
  if (auto s = Fetch(); !s) LogWarn("{}; retrying", s.error());
  thread_ = std::thread([this] { Run(); });
}

void MemberFollower::Run() {
  std::string last_error;
  for (;;) {
    {
      std::lock_guard lock(mu_);
      if (stop_) return;
    }
    auto s = Step();
    if (s) {
      last_error.clear();
      continue;
    }
    if (s.error() != last_error) LogWarn("{}; keeping the last known members", s.error());
    last_error = s.error();
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, retry_, [this] { return stop_; });
  }
}

void MemberFollower::Stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

// ---- PrimaryMemberSource --------------------------------------------------------

Result<std::string> PrimaryMemberSource::Members() { return client_.Call("GET", "/v1/members"); }

Result<MemberFollower::Source::Revisions> PrimaryMemberSource::Watch(int64_t after) {
  auto w = client_.WatchRevisions(after, poll_);
  if (!w) return Err(w.error());
  return Revisions{w->first, w->second};
}

}  // namespace kato
