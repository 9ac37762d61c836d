// The logs a DEA node's agent serves to the controllers (on its TLS port,
// current members only): the tail of an app instance's output and of a
// staging task's build output, both read from the end (common/log_tail.h).
//
//   GET /v1/instances/ID/log?lines=N   DATA/dea/instances/ID/logs/app.log
//   GET /v1/staging/TASK/log?lines=N   DATA/dea/staging/TASK/staging.log
//
// IDs are lowercase hex, so a request names no other file. The reply is
// {"end_offset", "text"}, or 404 with an error.
#pragma once

#include <optional>
#include <string>

#include "common/http.h"

namespace kato {

// The reply to a log request; nullopt when `req` asks for something else.
std::optional<HttpResponse> ServeDeaLog(const std::string& data_dir, const HttpRequest& req);

}  // namespace kato
