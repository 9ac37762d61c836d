// Waiting for an app's new instances: after a push, a bind or an unbind.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/api_client.h"
#include "common/result.h"

namespace kato {

// Waits (bounded by `timeout_s`) until as many instances of `version` of app
// `name` run as the app asks for, and returns the app as the API shows it.
// Progress goes to stderr (unless --json). A crashed instance (with the last
// lines of its log), an unplaceable or flapping app, and the timeout are errors.
// `until_old_gone`: also until no instance of an older version is listed any
// more (bind and unbind: the old instances' access changes with them).
Result<nlohmann::json> WaitForAppVersion(const Globals& g, const ApiTarget& api,
                                         const std::string& name, int64_t version,
                                         int timeout_s = 120, bool until_old_gone = false);

}  // namespace kato
