#include "cli/staging_cmd.h"

#include <sys/stat.h>

#include <chrono>
#include <iostream>
#include <memory>
#include <thread>

#include "cli/log_follow.h"

namespace kato {

using json = nlohmann::json;

namespace {

int Fail(const std::string& e) {
  std::cerr << "kato: " << e << "\n";
  return 1;
}

bool IsExecutable(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0111);
}

}  // namespace

Result<int64_t> FollowStaging(const Globals& g, const ApiTarget& api, const std::string& app,
                              const json& staging, int timeout_s) {
  std::string task = staging.value("task_id", "");
  if (!g.json_out) std::cerr << "  staging on " << staging.value("node_ip", "") << "\n";
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  LogFollower follower;
  bool streamed = false;
  // A DEA that never starts the build (it went down as it was chosen) is not waited for long.
  auto start_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (;;) {
    auto s = AppApi(g, api, "GET", "/v2/apps/" + app + "/staging?lines=10000", "");
    if (!s) return Err(s.error());
    if (s->value("task_id", "") != task)
      return Err("the staging of " + app + " was superseded by another push");
    if (s->contains("log") && (*s)["log"].is_object()) {
      std::string text = follower.Unseen(task, (*s)["log"].value("end_offset", uint64_t{0}),
                                         (*s)["log"].value("text", ""));
      if (!text.empty()) {
        std::cerr << text << std::flush;
        streamed = true;
      }
    }
    std::string state = s->value("state", "");
    if (state == "STAGING" && !s->contains("log") &&
        std::chrono::steady_clock::now() > start_deadline)
      return Err("the DEA at " + staging.value("node_ip", std::string()) +
                 " has not started staging " + app + " in 60 s (" + s->value("log_error", "") +
                 "); push again");
    if (state == "STAGED") return s->value("version", int64_t{0});
    if (state == "FAILED") {
      // The log's last lines came with it; the message repeats them when they did not.
      std::string message = s->value("message", "the build failed");
      if (streamed) message = message.substr(0, message.find('\n'));
      return Err("staging " + app + " failed: " + message +
                 "\n(the running version, if any, goes on; `kato app logs " + app +
                 " --staging` shows the build's log)");
    }
    if (std::chrono::steady_clock::now() > deadline)
      return Err("staging " + app + " has not ended after " + std::to_string(timeout_s) +
                 " s; `kato app logs " + app + " --staging` shows how far it got");
    std::this_thread::sleep_for(std::chrono::milliseconds(250));  // polling the build, bounded
  }
}

int PrintStagingLog(const Globals& g, const ApiTarget& api, const std::string& app, int lines) {
  auto s = AppApi(g, api, "GET", "/v2/apps/" + app + "/staging?lines=" + std::to_string(lines), "");
  if (!s) return Fail(s.error());
  if (g.json_out) {
    std::cout << s->dump(2) << "\n";
    return 0;
  }
  std::cout << "staging of " << app << ": " << s->value("state", "") << " on "
            << s->value("node_ip", "");
  if (!s->value("detected_buildpack", "").empty())
    std::cout << " (buildpack " << (*s)["detected_buildpack"].get<std::string>() << ")";
  std::cout << "\n";
  if (s->contains("log") && (*s)["log"].is_object())
    std::cout << (*s)["log"].value("text", "");
  else
    std::cout << "(no log: " << s->value("log_error", "") << ")\n";
  if (s->value("state", "") == "FAILED")
    std::cout << "failed: " << s->value("message", "").substr(0, s->value("message", "").find('\n'))
              << "\n";
  return 0;
}

void AddBuildpackCommands(CLI::App& app, Globals& g, std::function<int()>& run) {
  struct Args {
    ApiTarget api;
    std::string name, dir;
  };
  auto a = std::make_shared<Args>();
  auto* bp = app.add_subcommand("buildpack", "the buildpacks that stage apps: list, add, remove");
  bp->require_subcommand(1);
  bp->add_option("--api", a->api.url,
                 "the API's URL (with KATO_API_TOKEN or `kato login`'s token); default: the login's, else this node's cluster");
  auto add_json = [&g](CLI::App* c) {
    c->add_flag("-j,--json", g.json_out, "print one JSON document");
  };

  auto* list = bp->add_subcommand("list", "every buildpack, in the order they detect apps");
  add_json(list);
  list->callback([&g, &run, a] {
    run = [&g, a]() -> int {
      auto r = AppApi(g, a->api, "GET", "/v2/buildpacks", "");
      if (!r) return Fail(r.error());
      if (g.json_out) {
        std::cout << r->dump(2) << "\n";
        return 0;
      }
      for (const auto& p : *r)
        std::cout << Pad(std::to_string(p.value("position", 0)), 4) << Pad(p.value("name", ""), 20)
                  << (p.value("builtin", false)
                          ? "built-in"
                          : "custom, " + std::to_string(p.value("size", 0)) + " bytes")
                  << "\n";
      return 0;
    };
  });

  auto* add = bp->add_subcommand(
      "add", "add a buildpack (Heroku's interface: bin/detect, bin/compile, bin/release)");
  add->add_option("NAME", a->name, "its name (--buildpack NAME on push)")->required();
  add->add_option("DIR", a->dir, "its directory")->required();
  add_json(add);
  add->callback([&g, &run, a] {
    run = [&g, a]() -> int {
      for (const char* f : {"bin/detect", "bin/compile"})
        if (!IsExecutable(a->dir + "/" + f))
          return Fail(a->dir + " is not a buildpack: it has no executable " + f);
      auto bits = Capture({"tar", "-C", a->dir, "-czf", "-", "."});
      if (!bits) return Fail("cannot archive " + a->dir + ": " + bits.error());
      auto r = AppApi(g, a->api, "PUT", "/v2/buildpacks/" + a->name, *bits, true);
      if (!r) return Fail(r.error());
      if (g.json_out)
        std::cout << r->dump(2) << "\n";
      else
        std::cout << "buildpack " << a->name << " added (it detects before the built-in ones)\n";
      return 0;
    };
  });

  auto* remove = bp->add_subcommand("remove", "remove a custom buildpack");
  remove->add_option("NAME", a->name, "the buildpack")->required();
  add_json(remove);
  remove->callback([&g, &run, a] {
    run = [&g, a]() -> int {
      auto r = AppApi(g, a->api, "DELETE", "/v2/buildpacks/" + a->name, "");
      if (!r) return Fail(r.error());
      if (g.json_out)
        std::cout << r->dump(2) << "\n";
      else
        std::cout << "buildpack " << a->name << " removed\n";
      return 0;
    };
  });
}

}  // namespace kato
