#include "cli/app_print.h"

#include <iostream>

namespace kato {

using json = nlohmann::json;

void PrintApp(const Globals& g, const json& a) {
  if (g.json_out) {
    json out = a;
    out["instances"] = a.contains("instance_list") ? a["instance_list"] : json::array();
    out["instance_count"] = a["instances"];
    out.erase("instance_list");
    std::cout << out.dump(2) << "\n";
    return;
  }
  std::string health = a.contains("health") ? a["health"].value("state", "") : "";
  std::cout << a["name"].get<std::string>() << "  " << a["state"].get<std::string>()
            << (health.empty() ? "" : " (" + health + ")") << "  " << a["running"].get<int>() << "/"
            << a["instances"].get<int>() << " running  " << a["memory_mb"].get<int>() << " MB  "
            << Join(a["urls"]) << "\n";
  if (a.contains("instance_list"))
    for (const auto& i : a["instance_list"])
      std::cout << "  #" << i["index"].get<int>() << "  " << Pad(i["state"], 9) << " "
                << i["node_ip"].get<std::string>() << ":" << i["port"].get<int>() << "\n";
}

}  // namespace kato
