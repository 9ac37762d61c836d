// How `kato app` prints an app: one line and its instances, or with --json
// one document (the instances as a list, their count as instance_count).
#pragma once

#include <nlohmann/json.hpp>

#include "cli/api_client.h"

namespace kato {

void PrintApp(const Globals& g, const nlohmann::json& app);

}  // namespace kato
