#include "cli/app_wait.h"

#include <chrono>
#include <iostream>
#include <set>
#include <thread>

namespace kato {

using json = nlohmann::json;

Result<json> WaitForAppVersion(const Globals& g, const ApiTarget& api, const std::string& name,
                               int64_t version, int timeout_s, bool until_old_gone) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  std::set<int> shown;
  for (;;) {
    auto a = AppApi(g, api, "GET", "/v2/apps/" + name, "");
    if (!a) return a;
    int running = 0;  // of the version asked for (older ones go once these run)
    int old = 0;
    for (const auto& i : (*a)["instance_list"]) {
      if (i.value("version", version) != version) {
        ++old;
        continue;
      }
      if (i["state"] == "RUNNING") {
        ++running;
        if (shown.insert(i["index"].get<int>()).second && !g.json_out)
          std::cerr << "  instance " << i["index"].get<int>() << " RUNNING on "
                    << i["node_ip"].get<std::string>() << ":" << i["port"].get<int>() << "\n";
      }
      if (i["state"] == "CRASHED") {
        // Show what the app said before it died.
        auto logs = AppApi(g, api, "GET", "/v2/apps/" + name + "/logs?lines=20", "");
        if (logs)
          for (const auto& l : *logs)
            if (l.value("instance_id", "") == i.value("instance_id", "") && l.contains("text"))
              std::cerr << "  last lines of instance " << i["index"].get<int>() << ":\n"
                        << l["text"].get<std::string>();
        return Err("instance " + std::to_string(i["index"].get<int>()) + " of " + name +
                   " crashed: " + i.value("message", std::string("no message")));
      }
    }
    if (a->contains("health")) {
      std::string h = (*a)["health"].value("state", "");
      if (h == "UNPLACEABLE" || h == "FLAPPING")
        return Err("app " + name + " is " + h + ": " + (*a)["health"].value("message", std::string("")));
    }
    if ((*a)["version"].get<int64_t>() == version && running >= (*a)["instances"].get<int>() &&
        (!until_old_gone || old == 0))
      return a;
    if (std::chrono::steady_clock::now() > deadline)
      return Err("app " + name + " is not running after " + std::to_string(timeout_s) + " s (" +
                 std::to_string(running) + " of " + std::to_string((*a)["instances"].get<int>()) +
                 " instances RUNNING); see `kato app info " + name + "`");
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // polling a condition, bounded
  }
}

}  // namespace kato
