// The router's settings in the cluster config (`kato config set router KEY
// VALUE`), read when the router starts (`kato restart router` applies a
// change). Values are checked by the primary before they are stored
// (CheckRouterSetting), so a router only ever reads sound ones.
//
//   key                   value                      default
//   max_connections       client connections, 16..1048576   3/4 of the open-files limit
//   keepalive_timeout_s   idle keep-alive connection closed after, 1..3600   60
//   header_timeout_s      a request header must arrive within, 1..600        10
//   upstream_timeout_s    an instance silent this long: 504 (or close), 1..86400   60
//   max_request_body_mb   largest request body, 0 (no limit)..1048576        0
//   access_log            write DATA/router/access.log (true/false)          true
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "common/result.h"

namespace kato {

struct RouterSettings {
  int max_connections = 0;  // 0: from the open-files limit
  int keepalive_timeout_s = 60;
  int header_timeout_s = 10;
  int upstream_timeout_s = 60;
  int max_request_body_mb = 0;
  bool access_log = true;
};

// An error naming the key and what it takes; unknown keys are refused too.
Status CheckRouterSetting(const std::string& key, const std::string& value_json);

// From the config entries of component "router" (key, JSON text). Entries
// that do not check out keep the default (stored by an older kato) and are
// named in *warnings.
RouterSettings ParseRouterSettings(const std::vector<std::pair<std::string, std::string>>& entries,
                                   std::vector<std::string>* warnings);

}  // namespace kato
