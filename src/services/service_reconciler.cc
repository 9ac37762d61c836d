#include "services/service_reconciler.h"

#include "common/log.h"
#include "services/record_check.h"

namespace kato {

ServiceReconciler::ServiceReconciler(Store& store, std::string node_id,
                                     std::map<std::string, ServiceDriver*> drivers,
                                     const Clock& clock, Options options)
    : store_(store), node_id_(std::move(node_id)), drivers_(std::move(drivers)), clock_(clock),
      options_(options) {}

// Logs a message once, until it changes (rounds repeat every few seconds).
void ServiceReconciler::Warn(const std::string& key, const std::string& message) {
  auto& last = warned_[key];
  if (last == message) return;
  last = message;
  if (!message.empty()) LogWarn("services: {}", message);
}

void ServiceReconciler::PrepareDrivers() {
  for (const auto& [type, driver] : drivers_) {
    if (prepared_.count(type)) continue;
    Status s = driver->Prepare();
    if (s) {
      prepared_.insert(type);
      prepare_error_.erase(type);
      Warn("prepare/" + type, "");
      LogInfo("services: the {} server is prepared for instances", type);
    } else {
      prepare_error_[type] = s.error();
      Warn("prepare/" + type, "the " + type + " server is not ready yet: " + s.error());
    }
  }
}

bool ServiceReconciler::Round() {
  pending_ = false;
  PrepareDrivers();
  auto docs = store_.ListDocs("service");
  auto states = docs ? store_.ListDocs("service_state") : docs;
  if (!docs || !states) {
    Warn("store", "cannot read the services from the core (retrying): " +
                      (docs ? states.error() : docs.error()));
    return false;
  }
  Warn("store", "");
  std::map<std::string, ServiceState> state_of;
  for (const auto& [name, text] : *states)
    if (auto st = ServiceStateFromJson(text)) state_of[name] = *st;
  std::map<std::string, std::set<std::string>> live;  // type -> ids named by documents
  std::set<std::string> names;
  bool all_read = true;  // a record that cannot be read may be one of ours
  for (const auto& [key, text] : *docs) {
    auto s = ServiceFromJson(text);
    if (!s) {
      Warn("doc/" + key, "ignoring service/" + key + ": " + s.error());
      all_read = false;
      continue;
    }
    if (s->node_id != node_id_ || s->type == "harbor") continue;  // harbor: `katod harbor`
    if (s->name != key) s->name = key;  // the document's key is the name states are kept under
    std::optional<ServiceState> now;
    if (auto it = state_of.find(s->name); it != state_of.end()) now = it->second;
    if (!drivers_.count(s->type)) {
      if (s->state == "ACTIVE")
        Tell(*s, now, "FAILED", "node " + s->node_ip + " serves no " + RoleOfServiceType(s->type) +
                                    " role (see `kato node list`)");
      continue;
    }
    live[s->type].insert(s->id);
    names.insert(s->name);
    if (s->state == "DELETING") Delete(*s, now);
    else Ensure(*s, now);
  }
  // Leftovers go only when every record was read: never a service's data
  // because its record could not be parsed (e.g. written by a newer kato).
  if (all_read)
    for (const auto& [type, driver] : drivers_) driver->Sweep(live[type]);
  for (auto it = provisioned_.begin(); it != provisioned_.end();)
    it = names.count(it->first) ? std::next(it) : provisioned_.erase(it);
  return pending_;
}

void ServiceReconciler::Tell(const ServiceRecord& s, const std::optional<ServiceState>& now,
                             const std::string& state, const std::string& message) {
  if (now && now->id == s.id && now->state == state && now->message == message) return;
  ServiceState st{s.id, state, message, clock_.wall_ms()};
  if (auto w = store_.PutDoc("service_state", s.name, ServiceStateToJson(st)); !w) {
    Warn("state/" + s.name, "cannot tell the core that service " + s.name + " is " + state + ": " +
                                w.error());
    return;
  }
  if (state == "READY") LogInfo("services: {} {} ({}) is READY", s.type, s.name, s.id);
  else LogWarn("services: {} {} ({}) is {}: {}", s.type, s.name, s.id, state, message);
}

void ServiceReconciler::Failed(const ServiceRecord& s, const std::optional<ServiceState>& now,
                               const std::string& why, bool at_once) {
  const SteadyTime first = failing_since_.emplace(s.name + "/" + s.id, clock_.now()).first->second;
  provisioned_.erase(s.name);
  if (at_once || clock_.now() - first >= options_.give_up) Tell(s, now, "FAILED", why);
  else Tell(s, now, "PROVISIONING", "retrying: " + why);
}

void ServiceReconciler::Ensure(const ServiceRecord& s, const std::optional<ServiceState>& now) {
  auto it = provisioned_.find(s.name);
  if (it != provisioned_.end() && it->second == s.id) {
    Tell(s, now, "READY", "");  // writes only when someone else changed it
    return;
  }
  if (Status ok = CheckServiceRecord(s); !ok) return Failed(s, now, ok.error(), true);
  if (!prepared_.count(s.type))
    return Failed(s, now, "the " + s.type + " server is not ready yet: " + prepare_error_[s.type],
                  false);
  auto r = drivers_.at(s.type)->Provision(s);
  if (!r) return Failed(s, now, r.error(), false);
  if (*r == Progress::kPending) {
    pending_ = true;
    return;
  }
  provisioned_[s.name] = s.id;
  failing_since_.erase(s.name + "/" + s.id);
  Tell(s, now, "READY", "");
}

void ServiceReconciler::Delete(const ServiceRecord& s, const std::optional<ServiceState>& now) {
  provisioned_.erase(s.name);
  // A record the node refused was never provisioned: there is nothing to remove.
  if (CheckServiceRecord(s)) {
    auto r = drivers_.at(s.type)->Remove(s);
    if (!r) {
      Tell(s, now, "FAILED", "cannot remove it (retrying): " + r.error());
      return;
    }
    if (*r == Progress::kPending) {
      pending_ = true;
      return;
    }
  }
  // The state first: the controller waits for "service/NAME" to go.
  if (auto d = store_.DeleteDoc("service_state", s.name); !d)
    return Warn("delete/" + s.name, "cannot delete service_state/" + s.name + ": " + d.error());
  if (auto d = store_.DeleteDoc("service", s.name); !d)
    return Warn("delete/" + s.name, "cannot delete service/" + s.name + ": " + d.error());
  failing_since_.erase(s.name + "/" + s.id);
  warned_.erase("delete/" + s.name);
  LogInfo("services: removed {} {} ({})", s.type, s.name, s.id);
}

}  // namespace kato
