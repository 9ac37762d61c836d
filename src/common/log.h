// Logging: thin wrappers over spdlog so that callers don't spell its names.
// katod logs to stderr (its supervisor or terminal keeps it); role processes
// log to their own file in the data dir.
#pragma once

#include <spdlog/spdlog.h>

namespace kato {

template <typename... A>
void LogInfo(spdlog::format_string_t<A...> f, A&&... a) {
  spdlog::info(f, std::forward<A>(a)...);
}
template <typename... A>
void LogWarn(spdlog::format_string_t<A...> f, A&&... a) {
  spdlog::warn(f, std::forward<A>(a)...);
}
template <typename... A>
void LogError(spdlog::format_string_t<A...> f, A&&... a) {
  spdlog::error(f, std::forward<A>(a)...);
}
template <typename... A>
void LogDebug(spdlog::format_string_t<A...> f, A&&... a) {
  spdlog::debug(f, std::forward<A>(a)...);
}

}  // namespace kato
