// Staging from the command line (issue "Staging"): following a push's build
// as it happens, the last build's log, and `kato buildpack ...`.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/api_client.h"
#include "common/result.h"

namespace kato {

// After a push that started staging (`staging` from PUT .../bits: {task_id,
// node_ip, state}): prints the build's output to stderr as it comes, until
// the build ends or `timeout_s` passes. Returns the app version that the
// droplet runs as; a failed build is an error with the buildpack's message
// (the running version is untouched).
Result<int64_t> FollowStaging(const Globals& g, const ApiTarget& api, const std::string& app,
                              const nlohmann::json& staging, int timeout_s = 900);

// `kato app logs NAME --staging`: the last build's state and log.
int PrintStagingLog(const Globals& g, const ApiTarget& api, const std::string& app, int lines);

// Adds the `buildpack` command group (list, add, remove) to `app`; a parsed
// command sets `run`.
void AddBuildpackCommands(CLI::App& app, Globals& g, std::function<int()>& run);

}  // namespace kato
