// Replies of kato's JSON APIs (the primary's, the controller's): a JSON body
// with a status; an error is {"error": "what went wrong and what to do"}.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "common/http.h"

namespace kato {

inline HttpResponse JsonReply(int status, const nlohmann::json& body) {
  HttpResponse r;
  r.status = status;
  r.body = body.dump();
  return r;
}

inline HttpResponse ErrorReply(int status, const std::string& message) {
  return JsonReply(status, nlohmann::json{{"error", message}});
}

}  // namespace kato
