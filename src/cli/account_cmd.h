// `kato login|logout|whoami`, `kato user ...` and `kato org ...`: users,
// their tokens and organizations (issue "Users, organizations, and the
// Management Console"), through the controller's API (controller/accounts.h).
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <string>

#include "cli/api_client.h"

namespace kato {

// Adds the commands to `app`; a parsed command sets `run`.
void AddAccountCommands(CLI::App& app, Globals& g, std::function<int()>& run);

// "4G" -> 4096, "512M" or "512" -> 512 (MB).
Result<int64_t> ParseMegabytes(const std::string& text);

}  // namespace kato
