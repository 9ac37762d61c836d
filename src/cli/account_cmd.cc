#include "cli/account_cmd.h"

#include <termios.h>
#include <unistd.h>

#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/login_file.h"
#include "common/fs.h"
#include "common/net.h"
#include "common/pki.h"

namespace kato {

using json = nlohmann::json;

namespace {

struct AccountArgs {
  ApiTarget api;
  std::string url, email, org, memory, ca_sha256, address;
  bool admin = false, password_stdin = false, yes = false;
  int64_t instances = -1, services = -1;
};

int Fail(const std::string& e) {
  std::cerr << "kato: " << e << "\n";
  return 1;
}

// A password: one line of stdin (--password-stdin), else asked on the
// terminal without echo.
Result<std::string> ReadPassword(bool from_stdin, const std::string& question) {
  std::string p;
  if (from_stdin || !isatty(0)) {
    if (!from_stdin)
      return Err("no terminal to ask for the password: give it with --password-stdin");
    if (!std::getline(std::cin, p)) return Err("--password-stdin: nothing on stdin");
    if (!p.empty() && p.back() == '\r') p.pop_back();
    return p;
  }
  termios old{};
  bool restore = tcgetattr(0, &old) == 0;
  if (restore) {
    termios quiet = old;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    tcsetattr(0, TCSAFLUSH, &quiet);
  }
  std::cerr << question << ": " << std::flush;
  std::getline(std::cin, p);
  if (restore) tcsetattr(0, TCSAFLUSH, &old);
  std::cerr << "\n";
  return p;
}

std::string Escape(const std::string& email) {
  std::string out;
  for (char c : email) out += c == '@' ? std::string("%40") : std::string(1, c);
  return out;
}

std::string QuotaText(const json& q) {
  auto part = [&](const char* key, const std::string& unit) {
    int64_t v = q.value(key, static_cast<int64_t>(0));
    return v ? std::to_string(v) + unit : std::string("no limit");
  };
  return "memory " + part("memory_mb", " MB") + ", instances " + part("instances", "") +
         ", services " + part("services", "");
}

void Print(const Globals& g, const json& j, const std::string& text) {
  if (g.json_out)
    std::cout << j.dump(2) << "\n";
  else if (!text.empty())
    std::cout << text << "\n";
}

// https: the fingerprint of the CA to pin for this login. "" when the
// machine's CAs (SSL_CERT_FILE or the system's) already vouch for the server;
// else the CA the server presents, once the user has seen its fingerprint and
// said yes (trust on first use). Nothing secret is sent before: the probe is a
// GET of the console's public page.
Result<std::string> ChooseCa(const ApiEndpoint& e, bool stdin_taken) {
  auto trusted = CallApi(e, "", "GET", "/console/", "");
  if (trusted) return std::string();
  if (trusted.error().find("does not verify") == std::string::npos) return Err(trusted.error());
  ApiEndpoint first = e;
  first.pin_ca_sha256 = kFirstUse;
  auto seen = CallApi(first, "", "GET", "/console/", "");
  if (!seen) return Err(seen.error());
  auto fp = CertFingerprint(seen->peer_ca_pem);
  if (!fp) return Err("the server's CA certificate is not valid: " + fp.error());
  const std::string what =
      "the server's certificate is signed by a CA this machine does not trust, with SHA-256 "
      "fingerprint " +
      *fp +
      ". If that is your cluster's CA (its join token, from `kato node "
      "token` on the core, reads KATO1.FINGERPRINT.SECRET)";
  if (stdin_taken || !isatty(0))
    return Err(what + ", run again with --ca-sha256 " + *fp + "; nothing was sent");
  std::string answer = Prompt(what + ", trust it for this login? [y/N]");
  if (answer != "y" && answer != "Y" && answer != "yes")
    return Err("not signed in; nothing was sent");
  return *fp;
}

void AddLogin(CLI::App& app, Globals& g, std::function<int()>& run,
              std::shared_ptr<AccountArgs> a) {
  auto* login = app.add_subcommand("login", "sign in to a cluster's API as a user; stores a token");
  login->add_option("API_URL", a->url,
                    "the API, e.g. https://api.example.com (default: the last one)");
  login->add_option("--email", a->email, "your email (asked when missing)");
  login->add_flag("--password-stdin", a->password_stdin, "read the password from stdin");
  login->add_option(
      "--ca-sha256", a->ca_sha256,
      "https: trust the cluster CA with this SHA-256 fingerprint (the one in its join "
      "token); default: SSL_CERT_FILE or the system's CAs, else ask");
  login->add_option("--address", a->address,
                    "connect to this IP instead of resolving the URL's host (no DNS yet); kept "
                    "for later calls");
  login->add_flag("-j,--json", g.json_out, "print one JSON document");
  login->callback([&g, &run, a] {
    run = [&g, a]() -> int {
      std::string path = LoginFilePath();
      auto old = ReadLogin(path);
      if (a->url.empty() && old && *old) {
        a->url = (*old)->url;
        if (a->address.empty()) a->address = (*old)->address;
      }
      if (a->url.empty()) return Fail("give the API's URL: kato login https://api.DOMAIN");
      while (!a->url.empty() && a->url.back() == '/') a->url.pop_back();
      auto url = ParseApiUrl(a->url);
      if (!url) return Fail(url.error());
      if (!a->address.empty())
        if (auto s = CheckIPv4(a->address, "--address"); !s) return Fail(s.error());
      ApiEndpoint e{a->url, a->address, "", a->ca_sha256};
      if (url->tls && e.pin_ca_sha256.empty()) {
        auto pin = ChooseCa(e, a->password_stdin);
        if (!pin) return Fail(pin.error());
        e.pin_ca_sha256 = *pin;
      }
      if (a->email.empty()) a->email = Prompt("Email");
      auto password = ReadPassword(a->password_stdin, "Password");
      if (!password) return Fail(password.error());
      json body{{"email", a->email}, {"password", *password}, {"client", "kato cli"}};
      auto r = CallApi(e, "", "POST", "/v2/login", body.dump());
      if (!r) return Fail(r.error());
      json reply = json::parse(r->body, nullptr, false);
      if (r->status != 200)
        return Fail(reply.is_object() && reply.contains("error")
                        ? reply["error"].get<std::string>()
                        : "the API answered HTTP " + std::to_string(r->status));
      // A former login's token is revoked: one login file, one live token.
      if (old && *old && !(*old)->token.empty())
        (void)CallApi((*old)->Endpoint(), (*old)->token, "DELETE", "/v2/tokens/current", "");
      LoginRecord l{a->url,
                    reply.value("token", ""),
                    reply.value("token_id", ""),
                    reply["user"].value("email", a->email),
                    r->peer_ca_pem,
                    a->address};
      if (auto s = WriteLogin(path, l); !s) return Fail(s.error());
      json user = reply["user"];
      Print(g,
            {{"url", l.url}, {"user", user}, {"expires_ms", reply["expires_ms"]}, {"file", path}},
            "signed in to " + l.url + " as " + l.email +
                (user.value("admin", false) ? " (admin)" : "") +
                (user["orgs"].empty() ? "" : "; organizations: " + Join(user["orgs"], ", ")));
      return 0;
    };
  });

  auto* logout = app.add_subcommand("logout", "revoke this login's token and forget it");
  logout->callback([&run] {
    run = []() -> int {
      std::string path = LoginFilePath();
      auto l = ReadLogin(path);
      if (!l) return Fail(l.error());
      if (!*l) {
        std::cerr << "not signed in\n";
        return 0;
      }
      auto r = CallApi((*l)->Endpoint(), (*l)->token, "DELETE", "/v2/tokens/current", "");
      // 401: already revoked or expired; either way it no longer works.
      if (!r || (r->status != 200 && r->status != 401))
        return Fail("could not revoke the token on " + (*l)->url + " (" +
                    (r ? "HTTP " + std::to_string(r->status) : r.error()) + "); the login file " +
                    path + " is kept: try again");
      std::remove(path.c_str());
      std::cout << "signed out of " << (*l)->url << "; the token is revoked\n";
      return 0;
    };
  });

  auto* whoami = app.add_subcommand("whoami", "who the API takes you for");
  whoami->add_option("--api", a->api.url, "the API's URL");
  whoami->add_flag("-j,--json", g.json_out, "print one JSON document");
  whoami->callback([&g, &run, a] {
    run = [&g, a]() -> int {
      auto r = AppApi(g, a->api, "GET", "/v2/whoami", "");
      if (!r) return Fail(r.error());
      std::string who = (*r)["kind"] == "user"
                            ? (*r)["email"].get<std::string>()
                            : "the cluster admin (" + (*r)["kind"].get<std::string>() + ")";
      Print(g, *r,
            who + ((*r)["admin"] && (*r)["kind"] == "user" ? " (admin)" : "") +
                ((*r)["orgs"].empty() ? "" : "; organizations: " + Join((*r)["orgs"], ", ")));
      return 0;
    };
  });
}

void AddUser(CLI::App& app, Globals& g, std::function<int()>& run, std::shared_ptr<AccountArgs> a) {
  auto* user = app.add_subcommand("user", "the cluster's users (admins)");
  user->require_subcommand(1);
  user->add_option("--api", a->api.url,
                   "the API's URL; default: the login's, else this node's cluster");
  auto* add = user->add_subcommand("add", "add a user (a developer unless --admin)");
  add->add_option("EMAIL", a->email, "their email, which they sign in with")->required();
  add->add_flag("--admin", a->admin, "an admin: manages users, organizations and the cluster");
  add->add_flag("--password-stdin", a->password_stdin, "read the password from stdin");
  add->add_flag("-j,--json", g.json_out, "print one JSON document");
  add->callback([&g, &run, a] {
    run = [&g, a]() -> int {
      auto p = ReadPassword(a->password_stdin, "Password for " + a->email);
      if (!p) return Fail(p.error());
      if (!a->password_stdin) {
        auto again = ReadPassword(false, "The same again");
        if (!again || *again != *p) return Fail("the passwords differ; nothing changed");
      }
      auto r = AppApi(g, a->api, "POST", "/v2/users",
                      json{{"email", a->email}, {"password", *p}, {"admin", a->admin}}.dump());
      if (!r) return Fail(r.error());
      Print(
          g, *r,
          "added " + std::string(a->admin ? "admin " : "user ") + (*r)["email"].get<std::string>());
      return 0;
    };
  });
  auto* list = user->add_subcommand("list", "every user");
  list->add_flag("-j,--json", g.json_out, "print one JSON document");
  list->callback([&g, &run, a] {
    run = [&g, a]() -> int {
      auto r = AppApi(g, a->api, "GET", "/v2/users", "");
      if (!r) return Fail(r.error());
      if (g.json_out) return Print(g, *r, ""), 0;
      for (const auto& u : *r)
        std::cout << Pad(u["email"], 32) << Pad(u["admin"] ? "admin" : "developer", 11)
                  << Join(u["orgs"], ", ") << "\n";
      return 0;
    };
  });
  auto* remove = user->add_subcommand("remove", "remove a user: their tokens stop working at once");
  remove->add_option("EMAIL", a->email, "the user's email")->required();
  remove->add_flag("-j,--json", g.json_out, "print one JSON document");
  remove->callback([&g, &run, a] {
    run = [&g, a]() -> int {
      auto r = AppApi(g, a->api, "DELETE", "/v2/users/" + Escape(a->email), "");
      if (!r) return Fail(r.error());
      Print(g, *r, "removed user " + a->email);
      return 0;
    };
  });
}

void AddOrg(CLI::App& app, Globals& g, std::function<int()>& run, std::shared_ptr<AccountArgs> a) {
  auto* org =
      app.add_subcommand("org", "organizations: who owns which apps and services, and quotas");
  org->require_subcommand(1);
  org->add_option("--api", a->api.url,
                  "the API's URL; default: the login's, else this node's cluster");
  auto print_org = [&g](const json& o) {
    Print(g, o,
          o["name"].get<std::string>() +
              "  members: " + (o["members"].empty() ? "none" : Join(o["members"], ", ")) +
              "  quota: " + QuotaText(o["quota"]));
  };
  auto* create = org->add_subcommand("create", "create an organization");
  create->add_option("NAME", a->org, "its name (lowercase letters, digits, '-')")->required();
  create->add_flag("-j,--json", g.json_out, "print one JSON document");
  create->callback([&g, &run, a, print_org] {
    run = [&g, a, print_org]() -> int {
      auto r = AppApi(g, a->api, "POST", "/v2/orgs", json{{"name", a->org}}.dump());
      if (!r) return Fail(r.error());
      print_org(*r);
      return 0;
    };
  });
  auto* list = org->add_subcommand("list", "the organizations (a developer: their own)");
  list->add_flag("-j,--json", g.json_out, "print one JSON document");
  list->callback([&g, &run, a, print_org] {
    run = [&g, a, print_org]() -> int {
      auto r = AppApi(g, a->api, "GET", "/v2/orgs", "");
      if (!r) return Fail(r.error());
      if (g.json_out) return Print(g, *r, ""), 0;
      if (r->empty()) std::cout << "no organizations (create one with `kato org create NAME`)\n";
      for (const auto& o : *r) print_org(o);
      return 0;
    };
  });
  for (std::string verb : {"add-user", "remove-user"}) {
    auto* c = org->add_subcommand(
        verb, verb == "add-user" ? "make a user a member" : "take a member out");
    c->add_option("ORG", a->org, "the organization")->required();
    c->add_option("EMAIL", a->email, "the user's email")->required();
    c->add_flag("-j,--json", g.json_out, "print one JSON document");
    c->callback([&g, &run, a, verb, print_org] {
      run = [&g, a, verb, print_org]() -> int {
        auto r = verb == "add-user"
                     ? AppApi(g, a->api, "POST", "/v2/orgs/" + a->org + "/members",
                              json{{"email", a->email}}.dump())
                     : AppApi(g, a->api, "DELETE",
                              "/v2/orgs/" + a->org + "/members/" + Escape(a->email), "");
        if (!r) return Fail(r.error());
        print_org(*r);
        return 0;
      };
    });
  }
  auto* quota = org->add_subcommand("quota", "set an organization's quota (0: no limit)");
  quota->add_option("ORG", a->org, "the organization")->required();
  quota->add_option("--memory", a->memory,
                    "memory of its started instances together, e.g. 4G, 512M");
  quota->add_option("--instances", a->instances, "instances of its apps together")
      ->check(CLI::NonNegativeNumber);
  quota->add_option("--services", a->services, "services it may own")
      ->check(CLI::NonNegativeNumber);
  quota->add_flag("-j,--json", g.json_out, "print one JSON document");
  quota->callback([&g, &run, a, print_org] {
    run = [&g, a, print_org]() -> int {
      json body = json::object();
      if (!a->memory.empty()) {
        auto mb = ParseMegabytes(a->memory);
        if (!mb) return Fail("--memory: " + mb.error());
        body["memory_mb"] = *mb;
      }
      if (a->instances >= 0) body["instances"] = a->instances;
      if (a->services >= 0) body["services"] = a->services;
      if (body.empty()) return Fail("give --memory, --instances or --services; nothing changed");
      auto r = AppApi(g, a->api, "PUT", "/v2/orgs/" + a->org + "/quota", body.dump());
      if (!r) return Fail(r.error());
      print_org(*r);
      return 0;
    };
  });
  auto* del = org->add_subcommand("delete", "delete an organization that owns nothing");
  del->add_option("ORG", a->org, "the organization")->required();
  del->add_flag("-j,--json", g.json_out, "print one JSON document");
  del->callback([&g, &run, a] {
    run = [&g, a]() -> int {
      auto r = AppApi(g, a->api, "DELETE", "/v2/orgs/" + a->org, "");
      if (!r) return Fail(r.error());
      Print(g, *r, "deleted organization " + a->org);
      return 0;
    };
  });
}

}  // namespace

Result<int64_t> ParseMegabytes(const std::string& text) {
  size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  std::string unit = text.substr(digits);
  if (digits == 0 || digits > 9)
    return Err("'" + text + "' is not a size: give a whole number with M or G, e.g. 512M, 4G");
  int64_t n = std::stoll(text.substr(0, digits));
  if (unit.empty() || unit == "M" || unit == "m" || unit == "MB") return n;
  if (unit == "G" || unit == "g" || unit == "GB") return n * 1024;
  if (unit == "T" || unit == "t" || unit == "TB") return n * 1024 * 1024;
  return Err("'" + text + "' is not a size: give a whole number with M or G, e.g. 512M, 4G");
}

void AddAccountCommands(CLI::App& app, Globals& g, std::function<int()>& run) {
  auto a = std::make_shared<AccountArgs>();
  AddLogin(app, g, run, a);
  AddUser(app, g, run, a);
  AddOrg(app, g, run, a);
}

}  // namespace kato
