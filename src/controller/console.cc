#include "controller/console.h"

#include <openssl/crypto.h>

#include <nlohmann/json.hpp>

#include "common/json_reply.h"
#include "common/pki.h"

namespace kato {

using json = nlohmann::json;

namespace {

std::string PathOf(const HttpRequest& req) { return req.target.substr(0, req.target.find('?')); }

std::string SessionCookie(const std::string& token, int64_t max_age_s) {
  return std::string(Console::kCookie) + "=" + token +
         "; Path=/; Max-Age=" + std::to_string(max_age_s) + "; HttpOnly; Secure; SameSite=Strict";
}

}  // namespace

bool Console::IsPublic(const HttpRequest& req) {
  std::string path = PathOf(req);
  if (!Serves(path)) return false;
  if (req.method == "POST") return path == "/console/login";
  return req.method == "GET" && path != "/console/session";
}

std::string Console::SessionToken(const HttpRequest& req) {
  auto it = req.headers.find("cookie");
  if (it == req.headers.end()) return "";
  const std::string& c = it->second;
  const std::string key = std::string(kCookie) + "=";
  for (size_t pos = 0; pos < c.size();) {
    size_t end = c.find(';', pos);
    if (end == std::string::npos) end = c.size();
    std::string part = c.substr(pos, end - pos);
    part.erase(0, part.find_first_not_of(' '));
    if (part.rfind(key, 0) == 0) return part.substr(key.size());
    pos = end + 1;
  }
  return "";
}

std::string Console::CsrfFor(const std::string& token) { return Sha256Hex("kato-csrf\n" + token); }

bool Console::CsrfOk(const HttpRequest& req, const std::string& token) {
  if (req.method == "GET" || req.method == "HEAD") return true;
  auto it = req.headers.find("x-csrf-token");
  std::string want = CsrfFor(token);
  return it != req.headers.end() && it->second.size() == want.size() &&
         CRYPTO_memcmp(it->second.data(), want.data(), want.size()) == 0;
}

void Console::AddSecurityHeaders(HttpResponse& r) {
  r.headers["Content-Security-Policy"] =
      "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
      "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
  r.headers["X-Content-Type-Options"] = "nosniff";
  r.headers["Referrer-Policy"] = "no-referrer";
  r.headers["X-Frame-Options"] = "DENY";
  if (!r.headers.count("Cache-Control")) r.headers["Cache-Control"] = "no-store";
}

HttpResponse Console::Handle(const HttpRequest& req, Accounts& accounts,
                             const std::optional<Caller>& caller) {
  std::string path = PathOf(req);
  HttpResponse r;
  if (path == "/console/login" && req.method == "POST") {
    HttpRequest login = req;
    login.target = "/v2/login";
    json body = json::parse(req.body, nullptr, false);
    if (body.is_object()) {
      body["client"] = "console";
      login.body = body.dump();
    }
    r = accounts.Handle(login, Caller{});
    json reply = json::parse(r.body, nullptr, false);
    if (r.status == 200 && reply.is_object()) {
      std::string token = reply.value("token", "");
      int64_t ttl_s = std::max<int64_t>(1, reply.value("ttl_ms", int64_t{0}) / 1000);
      r = JsonReply(200, {{"user", reply["user"]}, {"csrf", CsrfFor(token)}});
      r.headers["Set-Cookie"] = SessionCookie(token, ttl_s);
    }
  } else if (path == "/console/session" && req.method == "GET") {
    std::string token = SessionToken(req);
    if (!caller || token.empty()) {
      r = ErrorReply(401, "not signed in");
    } else {
      r = JsonReply(
          200,
          {{"user", {{"email", caller->email}, {"admin", caller->admin()}, {"orgs", caller->orgs}}},
           {"csrf", CsrfFor(token)}});
    }
  } else if (path == "/console/logout" && req.method == "POST" && !SessionToken(req).empty() &&
             !CsrfOk(req, SessionToken(req))) {
    r = ErrorReply(403, "signing out needs the console's CSRF token (X-CSRF-Token)");
  } else if (path == "/console/logout" && req.method == "POST") {
    std::string token = SessionToken(req);
    if (caller && !token.empty()) {
      HttpRequest revoke = req;
      revoke.method = "DELETE";
      revoke.target = "/v2/tokens/current";
      (void)accounts.Handle(revoke, *caller);
    }
    r = JsonReply(200, {{"signed_out", true}});
    r.headers["Set-Cookie"] = SessionCookie("", 0);
  } else if (req.method == "GET") {
    std::string name = path == "/console" || path == "/console/" ? "index.html" : path.substr(9);
    const auto& assets = ConsoleAssets();
    auto it = assets.find(name);
    if (name.find('/') != std::string::npos || it == assets.end()) {
      r = ErrorReply(404, "no page " + path + " in the console");
    } else {
      r.body = it->second.body;
      r.content_type = it->second.content_type;
      r.headers["Cache-Control"] = name == "index.html" ? "no-store" : "max-age=300";
    }
  } else {
    r = ErrorReply(405, "the console's pages are read with GET");
  }
  AddSecurityHeaders(r);
  return r;
}

}  // namespace kato
