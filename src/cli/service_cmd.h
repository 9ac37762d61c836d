// `kato service ...`: data services (issue "Data services for apps"), through
// the controller's API (/v2/services).
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

#include "cli/api_client.h"

namespace kato {

// Adds the `service` command group to `app`; a parsed command sets `run`.
void AddServiceCommands(CLI::App& app, Globals& g, std::function<int()>& run);

}  // namespace kato
