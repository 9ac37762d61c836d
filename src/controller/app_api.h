// ControllerApi: the controller's REST API (issue "Apps"), as a request ->
// response function over the cluster Store, so it is tested without a network.
//
// Every request but a login needs a credential (`Authorization: Bearer TOKEN`):
// the cluster's admin token (the store keeps only its SHA-256), a user's token
// (controller/accounts.h), or a node certificate. What a user may do is decided
// per organization (controller/org_access.h). Bodies are JSON, except app bits, which are a
// .tar.gz uploaded as the raw body of PUT /v2/apps/NAME/bits.
//
//   GET    /v2/info                      version, endpoint, core IP, nodes and roles
//   GET    /v2/apps                      every app
//   POST   /v2/apps                      create {name, org, instances, memory, disk, command, env}
//   GET    /v2/apps/NAME                 one app, with its instances
//   PUT    /v2/apps/NAME                 change {instances, memory, disk, command, env, state}
//   PUT    /v2/apps/NAME/bits            upload the app's source (stored by SHA-256) and stage it
//   GET    /v2/apps/NAME/staging         the last staging and its log (controller/staging.h)
//   POST   /v2/apps/NAME/staged          a DEA's staging outcome (node certificates only)
//   POST   /v2/apps/NAME/restart         new instances for every index (same droplet)
//   GET    /v2/apps/NAME/logs?lines=N   recent output of each instance
//   DELETE /v2/apps/NAME
//   ...    /v2/services...               data services (controller/service_broker.h)
//   ...    /v2/buildpacks...             custom buildpacks (controller/staging.h)
//   ...    /v2/login, whoami, tokens, users, orgs   accounts (controller/accounts.h)
//   ...    /v2/nodes...                  nodes and roles, for admins (controller/node_ops.h)
//   GET    /v2/events                    server-sent events of the cluster revision
//                                        (controller/revision_hub.h; run_controller.cc serves it)
//   ...    /console/...                  the Management Console (controller/console.h)
//
// State lives in the store as documents: "app/NAME" (what the operator asked
// for), "assignment/NAME/INDEX" (which DEA runs which instance; written by the
// health manager) and "instances/NODE_ID" (what each DEA reports). Thread-safe:
// calls only touch the store and the droplet directory.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/http.h"
#include "common/result.h"
#include "controller/accounts.h"
#include "controller/node_ops.h"
#include "controller/service_broker.h"
#include "controller/staging.h"
#include "store/store.h"

namespace kato {

// The stored form of an app (document "app/NAME").
struct AppRecord {
  std::string name;
  int instances = 1;
  int memory_mb = 256;
  int disk_mb = 1024;  // each instance's disk (app, home, tmp)
  std::string command;
  std::map<std::string, std::string> env;
  std::string state = "STARTED";  // STARTED | STOPPED
  int64_t version = 1;            // bumped when instances must be replaced
  std::string droplet_sha256;     // what instances run: empty until staged
  int64_t droplet_size = 0;
  std::string buildpack;           // push --buildpack; empty: detected
  std::string source_sha256;       // the last pushed source
  std::string staged_key;          // what the droplet was staged from (controller/staging.h)
  std::string staged_command;      // the start command staging found (`command` wins)
  std::string detected_buildpack;  // the buildpack that staged the droplet
  std::string org;                 // the organization that owns it ("": the cluster's own)
  int64_t created_ms = 0;
  int64_t updated_ms = 0;
  bool operator==(const AppRecord&) const = default;
};

std::string AppToJson(const AppRecord& app);
Result<AppRecord> AppFromJson(const std::string& text);

// An app name is a DNS label: its URL is NAME.DOMAIN.
Status CheckAppName(const std::string& name);

// Names no app may take: the cluster's own hosts under its domain (api.DOMAIN
// is the API endpoint; the others are kept for consoles and login services).
const std::vector<std::string>& ReservedAppNames();
// Whether a new app may be called `name` on the cluster whose API endpoint is
// `endpoint`: a valid name, not reserved, and whose host NAME.DOMAIN is not
// already the API endpoint's route.
Status CheckNewAppName(const std::string& name, const std::string& endpoint);

// App archives on disk by content: DIR/sha256/HEX.tar.gz. Identical bits are
// kept once, and a droplet is named by what it holds, never by an app's name or
// version: a restart reuses it, and a re-created app cannot get an old app's
// bits. The directory may be shared by several controllers (issue "20-node
// layout": droplets_dir). Thread-safe (every write is an atomic rename).
class DropletStore {
 public:
  explicit DropletStore(std::string dir) : dir_(std::move(dir)) {}
  // Creates the directory if needed and checks that a file can be written there.
  Status CheckWritable() const;
  // Writes the archive atomically (again when it exists, so a concurrent Remove
  // of the same content loses); returns its SHA-256 in hex.
  Result<std::string> Save(const std::string& bytes) const;
  // The file of a droplet; empty when `sha256` is not 64 lowercase hex digits.
  std::string PathOf(const std::string& sha256) const;
  // Removes a droplet's file; nothing happens for an absent file or a bad hash.
  void Remove(const std::string& sha256) const;

 private:
  std::string dir_;
};

// GET /v1/droplets/HEX (the controller's internal port, for DEAs): the archive
// whose SHA-256 is HEX, or 404. The caller checks who asks.
HttpResponse ServeDroplet(const DropletStore& droplets, const HttpRequest& req);
// PUT /v1/droplets (the internal port, from the DEA that staged it): stores
// a droplet (.tar.gz, at most `max_bytes`) and answers {"sha256"}.
HttpResponse ReceiveDroplet(const DropletStore& droplets, const HttpRequest& req, size_t max_bytes);

class ControllerApi {
 public:
  // The lease that makes one controller of several the leader: the one that
  // runs the scheduler and the health manager (every controller serves the API).
  static constexpr const char* kLeaderLease = "controller-leader";

  struct Options {
    std::string admin_token_hash;  // SHA-256 hex of the admin token
    std::string version;
    size_t max_bits_bytes = 64u << 20;
    int max_instances = 10000;  // per app (a scale-up across thousands of DEAs)
    int max_memory_mb = 16384;
    int max_disk_mb = 65536;
    // Fetches the tail of one instance's log from its DEA: {"end_offset", "text"}
    // as JSON text. Unset: logs are not available.
    std::function<Result<std::string>(const std::string& node_ip, const std::string& instance_id,
                                      int lines)>
        fetch_log;
    // The health manager's verdict on an app: {state, message} (e.g. FLAPPING,
    // UNPLACEABLE with the scheduler's reason). Unset: not shown.
    std::function<std::pair<std::string, std::string>(const std::string& app)> app_health;
    // The services API under /v2/services (see controller/service_broker.h).
    ServiceBroker::Options services;
    // Staging and buildpacks (see controller/staging.h).
    StagingApi::Options staging;
    // Users, tokens and organizations (see controller/accounts.h).
    Accounts::Options accounts;
    // The nodes for the console (see controller/node_ops.h).
    NodeOps::Options nodes;
  };
  ControllerApi(Options options, Store& store, const DropletStore& droplets, const Clock& clock);

  HttpResponse Handle(const HttpRequest& req);
  // The credential check of every request, from its header alone (for
  // HttpServer::SetHeaderCheck, so that a request without one is refused before
  // its body is read): a 401 reply, or nullopt when the admin's bearer token or
  // a verified node certificate (peer_cn) comes with it.
  std::optional<HttpResponse> CheckCredential(const HttpRequest& head) const;
  // Who makes the request: a node (its certificate), the admin (the cluster's
  // admin token) or a user (their token); an error (a 401's text) otherwise.
  Result<Caller> Identify(const HttpRequest& head) const;

 private:
  HttpResponse HandleApi(const HttpRequest& req);
  Options options_;
  Store& store_;
  const DropletStore& droplets_;
  const Clock& clock_;
  ServiceBroker services_;
  StagingApi staging_;
  Accounts accounts_;
  NodeOps nodes_;
};

}  // namespace kato
