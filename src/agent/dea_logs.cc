#include "agent/dea_logs.h"

#include <algorithm>
#include <cstdlib>

#include "common/json_reply.h"
#include "common/log_tail.h"

namespace kato {

std::optional<HttpResponse> ServeDeaLog(const std::string& data_dir, const HttpRequest& req) {
  if (req.method != "GET") return std::nullopt;
  std::string path = req.target.substr(0, req.target.find('?'));
  struct Kind {
    const char* prefix;
    const char* what;
    const char* file;  // below DATA/dea/<dir>/ID
    const char* dir;
  };
  static const Kind kinds[] = {{"/v1/instances/", "instance", "logs/app.log", "instances"},
                               {"/v1/staging/", "staging task", "staging.log", "staging"}};
  for (const Kind& k : kinds) {
    std::string prefix = k.prefix;
    if (path.rfind(prefix, 0) != 0) continue;
    std::string rest = path.substr(prefix.size());
    std::string id = rest.substr(0, rest.find('/'));
    bool ok_id = !id.empty() && id.size() <= 64 && rest == id + "/log" &&
                 id.find_first_not_of("0123456789abcdef") == std::string::npos;
    if (!ok_id) return ErrorReply(404, std::string("no such ") + k.what + " log: " + path);
    int lines = 100;
    auto q = req.target.find("lines=");
    if (q != std::string::npos) lines = std::clamp(std::atoi(req.target.c_str() + q + 6), 1, 10000);
    auto tail = TailLog(data_dir + "/dea/" + k.dir + "/" + id + "/" + k.file, lines);
    if (!tail)
      return ErrorReply(404, std::string("no log for ") + k.what + " " + id + " on this node");
    return JsonReply(200, {{"end_offset", tail->end_offset}, {"text", tail->text}});
  }
  return std::nullopt;
}

}  // namespace kato
