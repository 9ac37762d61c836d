// StagingApi: the controller's part of staging (issue "Staging"): pushed
// source becomes a droplet, built on a DEA by buildpacks (dea/stager.h).
//
//   PUT    /v2/apps/NAME/bits             (through ControllerApi) the source; staged on a DEA
//   GET    /v2/apps/NAME/staging?lines=N  the app's last staging: its state and its log's tail
//   POST   /v2/apps/NAME/staged           a DEA's outcome {task_id, ok, message,
//                                         droplet_sha256, command, buildpack}
//   GET    /v2/buildpacks                 the buildpacks, in the order they detect
//   PUT    /v2/buildpacks/NAME            add or replace a custom one (its .tar.gz as the body)
//   DELETE /v2/buildpacks/NAME
//
// A push stores the source by SHA-256 (DropletStore) and writes the document
// "staging/APP" naming a task id and the DEA that builds it (an up DEA with
// the fewest builds); that DEA stages it and posts the outcome. A success
// sets the app's droplet and start command and bumps its version (the health
// manager then replaces its instances one at a time); a failure leaves the
// app as it was. A new push of the same app supersedes its staging (the DEA
// stops the old build). A push of the same source, buildpack, command, env
// and custom buildpacks as the running droplet's is not staged again.
//
// Custom buildpacks ("buildpack/NAME", their archives in the DropletStore)
// detect before the built-in ones (dea/buildpacks), in the order they were
// added; each staging document lists them. Thread-safe: calls only touch
// the store and the droplet directory.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/http.h"
#include "common/result.h"
#include "controller/model.h"
#include "store/store.h"

namespace kato {

struct AppRecord;
class DropletStore;

// The built-in buildpacks, in the order they detect (buildpacks/order).
const std::vector<std::string>& BuiltinBuildpacks();

// Removes a stored archive that nothing needs any more: no app's droplet or
// source, no custom buildpack, no staging under way. Kept when unsure.
void ForgetArchive(Store& store, const DropletStore& droplets, const std::string& sha256);

class StagingApi {
 public:
  struct Options {
    // The DEAs that are up (the health manager's view). Unset: none.
    std::function<std::vector<DeaInfo>()> deas;
    // The tail of a staging task's log from its DEA: {"end_offset", "text"}
    // as JSON text. Unset: no logs.
    std::function<Result<std::string>(const std::string& node_ip, const std::string& task_id,
                                      int lines)>
        fetch_log;
    // A staging this old without an outcome failed (its DEA died): above
    // the DEAs' staging_timeout_s.
    int64_t give_up_ms = 15 * 60 * 1000;
    size_t max_buildpack_bytes = 16u << 20;
  };
  StagingApi(Options options, Store& store, const DropletStore& droplets, const Clock& clock);

  static bool Serves(const std::string& path) {
    return path == "/v2/buildpacks" || path.rfind("/v2/buildpacks/", 0) == 0;
  }
  HttpResponse HandleBuildpacks(const HttpRequest& req);

  // New source for `app` (stored already, its SHA-256 given): stages it;
  // `staging` is then {task_id, node_ip, state}, or null when the app's
  // droplet was staged from the same things (the app is only given a new
  // version, as a restart). Changes `app`; the caller saves it.
  struct Started {
    int status = 200;  // else an error with its HTTP status
    std::string error;
    nlohmann::json staging;
  };
  Started Stage(AppRecord& app, const std::string& source_sha256);
  // GET .../staging: the document, STAGING ones past give_up_ms shown FAILED,
  // with the log's tail ("log": {end_offset, text} or "log_error").
  HttpResponse Status(const std::string& app, const HttpRequest& req);
  // POST .../staged from the DEA named in the document (peer_cn).
  HttpResponse Staged(const std::string& app, const HttpRequest& req);
  // The app is deleted: its staging goes (a running build is stopped).
  void ForgetApp(const std::string& app);

 private:
  Result<nlohmann::json> CustomBuildpacks();
  std::string StagedKey(const AppRecord& app, const std::string& source,
                        const nlohmann::json& custom) const;

  Options options_;
  Store& store_;
  const DropletStore& droplets_;
  const Clock& clock_;
};

}  // namespace kato
