// Times and join-token expiry as the CLI prints them for people.
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>

namespace kato {

// Local time, "YYYY-MM-DD HH:MM:SS", of a Unix time in milliseconds.
std::string TimeText(int64_t ms);

// When a join token ({"expires_ms", "expired"}) stops working.
std::string TokenExpiryText(const nlohmann::json& token);

}  // namespace kato
