#include "controller/accounts.h"

#include <argon2.h>
#include <openssl/crypto.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "common/json_reply.h"
#include "common/pki.h"

namespace kato {

using json = nlohmann::json;

namespace {

constexpr size_t kMinPassword = 8;
constexpr size_t kMaxPassword = 1024;  // Argon2 takes any length; a bound keeps bodies small

std::string Lower(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return s;
}

// Emails are compared lowercased; the document key is a hash of that form.
std::string UserKey(const std::string& email) { return Sha256Hex(Lower(email)).substr(0, 40); }

Status CheckEmail(const std::string& email) {
  auto at = email.find('@');
  bool ok = email.size() >= 3 && email.size() <= 254 && at != std::string::npos && at > 0 &&
            at + 1 < email.size() && email.find('@', at + 1) == std::string::npos;
  for (unsigned char c : email) ok = ok && c > 0x20 && c < 0x7f && c != '"' && c != '\\';
  if (ok) return Ok();
  return Err("'" + email + "' is not an email address (NAME@DOMAIN, printable ASCII, no spaces)");
}

Status CheckPassword(const std::string& p) {
  if (p.size() < kMinPassword)
    return Err("a password needs at least " + std::to_string(kMinPassword) + " characters");
  if (p.size() > kMaxPassword)
    return Err("a password may have at most " + std::to_string(kMaxPassword) + " characters");
  return Ok();
}

struct UserRecord {
  std::string email;
  std::string password_hash;
  bool admin = false;
  int64_t created_ms = 0;
};

std::string UserToJson(const UserRecord& u) {
  return json{{"email", u.email},
              {"password_hash", u.password_hash},
              {"admin", u.admin},
              {"created_ms", u.created_ms}}
      .dump();
}

Result<std::optional<UserRecord>> LoadUser(Store& store, const std::string& email) {
  auto d = store.GetDoc("user", UserKey(email));
  if (!d) return Err(d.error());
  if (!*d) return std::optional<UserRecord>();
  json j = json::parse(**d, nullptr, false);
  if (!j.is_object() || !j.contains("email") || !j["email"].is_string())
    return Err("the stored user " + email + " is damaged");
  UserRecord u{j["email"], j.value("password_hash", ""), j.value("admin", false),
               j.value("created_ms", static_cast<int64_t>(0))};
  return std::optional<UserRecord>(u);
}

// The organizations `email` belongs to, sorted.
Result<std::vector<std::string>> OrgsOf(Store& store, const std::string& email) {
  auto docs = store.ListDocs("org");
  if (!docs) return Err(docs.error());
  std::vector<std::string> out;
  std::string lower = Lower(email);
  for (const auto& [name, value] : *docs)
    if (auto o = OrgFromJson(value); o)
      if (std::count(o->members.begin(), o->members.end(), lower)) out.push_back(o->name);
  return out;
}

json UserView(const UserRecord& u, const std::vector<std::string>& orgs) {
  return {{"email", u.email}, {"admin", u.admin}, {"orgs", orgs}, {"created_ms", u.created_ms}};
}

HttpResponse Forbidden(const std::string& what) {
  return ErrorReply(403, what + " needs an admin: ask one of the cluster's admins");
}

Result<json> Body(const HttpRequest& req) {
  if (req.body.empty()) return json::object();
  json body = json::parse(req.body, nullptr, false);
  if (body.is_discarded() || !body.is_object()) return Err("request body is not a JSON object");
  return body;
}

Result<std::string> Str(const json& body, const char* key);

// A body with an "email" and a "password" (a login, a new user).
struct EmailPassword {
  json body;
  std::string email, password;
};
Result<EmailPassword> ReadEmailPassword(const HttpRequest& req) {
  auto body = Body(req);
  if (!body) return Err(body.error());
  auto email = Str(*body, "email");
  if (!email) return Err(email.error());
  auto password = Str(*body, "password");
  if (!password) return Err(password.error());
  return EmailPassword{*body, *email, *password};
}

Result<std::string> Str(const json& body, const char* key) {
  if (!body.contains(key) || !body[key].is_string())
    return Err(std::string("'") + key + "' must be a string");
  return body[key].get<std::string>();
}

// Removes "%40"-style escapes from a path segment (an email in a URL).
std::string Unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out += static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

Result<Quota> QuotaFrom(const json& q, Quota base) {
  if (!q.is_object()) return Err("'quota' must be an object {memory_mb, instances, services}");
  for (auto [key, field] :
       {std::pair{"memory_mb", &base.memory_mb}, std::pair{"instances", &base.instances},
        std::pair{"services", &base.services}}) {
    if (!q.contains(key)) continue;
    if (!q[key].is_number_integer() || q[key].get<int64_t>() < 0 ||
        q[key].get<int64_t>() > (int64_t{1} << 40))
      return Err(std::string("quota '") + key + "' must be a whole number, 0 for no limit");
    *field = q[key].get<int64_t>();
  }
  return base;
}

}  // namespace

bool Caller::InOrg(const std::string& org) const {
  if (admin()) return true;
  return !org.empty() && std::binary_search(orgs.begin(), orgs.end(), org);
}

std::string OrgToJson(const OrgRecord& o) {
  return json{{"name", o.name},
              {"members", o.members},
              {"quota",
               {{"memory_mb", o.quota.memory_mb},
                {"instances", o.quota.instances},
                {"services", o.quota.services}}},
              {"created_ms", o.created_ms}}
      .dump();
}

Result<OrgRecord> OrgFromJson(const std::string& text) {
  json j = json::parse(text, nullptr, false);
  if (!j.is_object()) return Err("stored organization is not a JSON object");
  try {
    OrgRecord o;
    o.name = j.at("name").get<std::string>();
    o.members = j.value("members", std::vector<std::string>{});
    std::sort(o.members.begin(), o.members.end());
    json q = j.value("quota", json::object());
    o.quota.memory_mb = q.value("memory_mb", static_cast<int64_t>(0));
    o.quota.instances = q.value("instances", static_cast<int64_t>(0));
    o.quota.services = q.value("services", static_cast<int64_t>(0));
    o.created_ms = j.value("created_ms", static_cast<int64_t>(0));
    return o;
  } catch (const json::exception& e) {
    return Err(std::string("stored organization is damaged: ") + e.what());
  }
}

Result<std::optional<OrgRecord>> LoadOrg(Store& store, const std::string& name) {
  KATO_TRY(CheckOrgName(name));
  auto d = store.GetDoc("org", name);
  if (!d) return Err(d.error());
  if (!*d) return std::optional<OrgRecord>();
  auto o = OrgFromJson(**d);
  if (!o) return Err(o.error());
  return std::optional<OrgRecord>(*o);
}

Status CheckOrgName(const std::string& name) {
  bool ok =
      !name.empty() && name.size() <= 63 && name[0] >= 'a' && name[0] <= 'z' && name.back() != '-';
  for (char c : name) ok = ok && ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-');
  if (ok) return Ok();
  return Err("organization name '" + name +
             "' is not valid: use 1-63 lowercase letters, digits and '-', starting with a letter");
}

Result<std::string> HashPassword(const std::string& password, const PasswordCost& cost) {
  std::string salt = RandomHex(16);  // 16 random bytes' worth of text: 64 bits per 8 chars
  size_t len = argon2_encodedlen(cost.t_cost, cost.m_cost_kib, 1, salt.size(), 32, Argon2_id);
  std::string encoded(len, '\0');
  int rc = argon2id_hash_encoded(cost.t_cost, cost.m_cost_kib, 1, password.data(), password.size(),
                                 salt.data(), salt.size(), 32, encoded.data(), encoded.size());
  if (rc != ARGON2_OK)
    return Err(std::string("hashing the password failed: ") + argon2_error_message(rc));
  encoded.resize(encoded.find('\0'));
  return encoded;
}

bool VerifyPassword(const std::string& encoded, const std::string& password) {
  if (encoded.rfind("$argon2id$", 0) != 0) return false;
  return argon2id_verify(encoded.c_str(), password.data(), password.size()) == ARGON2_OK;
}

// ---- LoginLimiter ------------------------------------------------------------

int LoginLimiter::WaitFor(std::deque<SteadyTime>& hits, int limit, SteadyTime now) {
  const auto window = std::chrono::minutes(1);
  while (!hits.empty() && now - hits.front() >= window) hits.pop_front();
  if (static_cast<int>(hits.size()) < limit) return 0;
  auto wait = std::chrono::duration_cast<std::chrono::seconds>(hits.front() + window - now);
  return std::max<int>(1, static_cast<int>(wait.count()) + 1);
}

int LoginLimiter::RetryAfter(const std::string& email, const std::string& ip) {
  std::lock_guard lock(mu_);
  auto now = clock_.now();
  int wait = 0;
  if (auto it = by_ip_.find(ip); it != by_ip_.end())
    wait = std::max(wait, WaitFor(it->second, limits_.per_ip, now));
  if (auto it = by_email_ip_.find(Lower(email) + "\n" + ip); it != by_email_ip_.end())
    wait = std::max(wait, WaitFor(it->second, limits_.per_email_ip, now));
  return wait;
}

void LoginLimiter::Record(std::map<std::string, std::deque<SteadyTime>>& hits,
                          const std::string& key, int limit, SteadyTime now) {
  if (hits.size() >= limits_.max_keys && !hits.count(key)) {
    for (auto it = hits.begin(); it != hits.end();)
      it = it->second.empty() || now - it->second.back() >= std::chrono::minutes(1) ? hits.erase(it)
                                                                                    : std::next(it);
    // Still full of fresh keys (made-up emails): start over. The map by
    // address, which a client cannot fake over TCP, still limits them.
    if (hits.size() >= limits_.max_keys) hits.clear();
  }
  auto& q = hits[key];
  q.push_back(now);
  while (q.size() > static_cast<size_t>(limit)) q.pop_front();
}

void LoginLimiter::Failed(const std::string& email, const std::string& ip) {
  std::lock_guard lock(mu_);
  auto now = clock_.now();
  Record(by_ip_, ip, limits_.per_ip, now);
  Record(by_email_ip_, Lower(email) + "\n" + ip, limits_.per_email_ip, now);
}

// ---- Accounts ------------------------------------------------------------------

Accounts::Accounts(Options options, Store& store, const Clock& clock)
    : options_(std::move(options)),
      store_(store),
      clock_(clock),
      limiter_(options_.login_limits, clock) {}

bool Accounts::Serves(const std::string& path) {
  for (const char* p : {"/v2/login", "/v2/whoami", "/v2/tokens", "/v2/users", "/v2/orgs"}) {
    std::string prefix = p;
    if (path == prefix || path.rfind(prefix + "/", 0) == 0) return true;
  }
  return false;
}

bool Accounts::IsLogin(const HttpRequest& req) {
  return req.method == "POST" && req.target.substr(0, req.target.find('?')) == "/v2/login";
}

Result<Caller> Accounts::Authenticate(const std::string& bearer) const {
  const std::string bad = "the token is not valid: sign in again with `kato login`";
  // kato_ + 16 hex + _ + 32 hex
  if (bearer.size() != 5 + 16 + 1 + 32 || bearer.rfind("kato_", 0) != 0 || bearer[21] != '_')
    return Err(bad);
  std::string id = bearer.substr(5, 16), secret = bearer.substr(22);
  if (id.find_first_not_of("0123456789abcdef") != std::string::npos) return Err(bad);
  auto doc = store_.GetDoc("api_token", id);
  if (!doc) return Err("cannot check the token: " + doc.error());
  if (!*doc)
    return Err("the token has been revoked or never existed: sign in again with `kato login`");
  json t = json::parse(**doc, nullptr, false);
  if (!t.is_object()) return Err(bad);
  std::string want = t.value("secret_sha256", ""), got = Sha256Hex(secret);
  if (want.size() != got.size() || CRYPTO_memcmp(want.data(), got.data(), got.size()) != 0)
    return Err(bad);
  if (t.value("expires_ms", static_cast<int64_t>(0)) <= clock_.wall_ms())
    return Err("the token has expired: sign in again with `kato login`");
  std::string email = t.value("email", "");
  auto user = LoadUser(store_, email);
  if (!user) return Err("cannot check the token: " + user.error());
  if (!*user) return Err("the token's user " + email + " no longer exists");
  auto orgs = OrgsOf(store_, email);
  if (!orgs) return Err("cannot check the token: " + orgs.error());
  Caller c;
  c.kind = Caller::Kind::kUser;
  c.email = (*user)->email;
  c.admin_user = (*user)->admin;
  c.orgs = *orgs;
  c.token_id = id;
  return c;
}

Status Accounts::AddUser(const std::string& email, const std::string& password, bool admin) {
  KATO_TRY(CheckEmail(email));
  KATO_TRY(CheckPassword(password));
  std::lock_guard lock(mu_);
  auto existing = LoadUser(store_, email);
  if (!existing) return Err(existing.error());
  if (*existing) return Err("a user " + email + " already exists");
  auto hash = HashPassword(password, options_.password_cost);
  if (!hash) return Err(hash.error());
  UserRecord u{Lower(email), *hash, admin, clock_.wall_ms()};
  return store_.PutDoc("user", UserKey(email), UserToJson(u));
}

HttpResponse Accounts::Handle(const HttpRequest& req, const Caller& caller) {
  std::string path = req.target.substr(0, req.target.find('?'));
  if (path == "/v2/login") {
    if (req.method != "POST")
      return ErrorReply(405, "sign in with POST /v2/login {email, password}");
    return Login(req);
  }
  if (path == "/v2/whoami" && req.method == "GET") {
    json who{{"kind", caller.kind == Caller::Kind::kUser   ? "user"
                      : caller.kind == Caller::Kind::kNode ? "node"
                                                           : "admin"},
             {"admin", caller.admin()},
             {"email", caller.email},
             {"orgs", caller.orgs}};
    if (caller.admin()) {
      // An admin sees every organization.
      json all = json::array();
      if (auto docs = store_.ListDocs("org"); docs)
        for (const auto& [name, v] : *docs) all.push_back(name);
      who["orgs"] = all;
    }
    return JsonReply(200, who);
  }
  if (path == "/v2/tokens" || path.rfind("/v2/tokens/", 0) == 0) return Tokens(req, path, caller);
  if (path == "/v2/users" || path.rfind("/v2/users/", 0) == 0) return Users(req, path, caller);
  if (path == "/v2/orgs" || path.rfind("/v2/orgs/", 0) == 0) return Orgs(req, path, caller);
  return ErrorReply(404, "no such API: " + req.method + " " + path);
}

HttpResponse Accounts::Login(const HttpRequest& req) {
  auto in = ReadEmailPassword(req);
  if (!in) return ErrorReply(400, in.error());
  const json& body = in->body;
  const std::string& email = in->email;
  const std::string& password = in->password;
  if (auto s = CheckEmail(email); !s) return ErrorReply(400, s.error());
  if (password.size() > kMaxPassword) return ErrorReply(400, CheckPassword(password).error());
  const std::string& ip = req.peer_ip;
  if (int wait = limiter_.RetryAfter(email, ip)) {
    HttpResponse r = ErrorReply(429, "too many failed sign-ins from " + (ip.empty() ? "here" : ip) +
                                         ": try again in " + std::to_string(wait) + " s");
    r.headers["Retry-After"] = std::to_string(wait);
    return r;
  }
  auto user = LoadUser(store_, email);
  if (!user) return ErrorReply(500, user.error());
  // Hash even for an unknown user, so that timing does not tell which emails exist.
  static const std::string kDummy = HashPassword("not a password", options_.password_cost).value();
  bool ok = VerifyPassword(*user ? (*user)->password_hash : kDummy, password) && *user;
  if (!ok) {
    limiter_.Failed(email, ip);
    return ErrorReply(401, "wrong email or password");
  }
  std::string id = RandomHex(8), secret = RandomHex(16);
  int64_t now = clock_.wall_ms();
  json t{{"email", (*user)->email},
         {"secret_sha256", Sha256Hex(secret)},
         {"created_ms", now},
         {"expires_ms", now + options_.token_ttl.count()},
         {"client", body.value("client", std::string())}};
  if (auto s = store_.PutDoc("api_token", id, t.dump()); !s) return ErrorReply(500, s.error());
  auto orgs = OrgsOf(store_, (*user)->email);
  return JsonReply(200, {{"token", "kato_" + id + "_" + secret},
                         {"token_id", id},
                         {"expires_ms", now + options_.token_ttl.count()},
                         {"ttl_ms", options_.token_ttl.count()},
                         {"user", UserView(**user, orgs ? *orgs : std::vector<std::string>{})}});
}

HttpResponse Accounts::Tokens(const HttpRequest& req, const std::string& path,
                              const Caller& caller) {
  if (caller.kind != Caller::Kind::kUser)
    return ErrorReply(400,
                      "tokens belong to users: this call is made with the cluster's admin "
                      "credential or a node certificate");
  auto docs = store_.ListDocs("api_token");
  if (!docs) return ErrorReply(500, docs.error());
  if (path == "/v2/tokens" && req.method == "GET") {
    json out = json::array();
    for (const auto& [id, value] : *docs) {
      json t = json::parse(value, nullptr, false);
      if (!t.is_object() || Lower(t.value("email", "")) != Lower(caller.email)) continue;
      out.push_back({{"id", id},
                     {"created_ms", t.value("created_ms", static_cast<int64_t>(0))},
                     {"expires_ms", t.value("expires_ms", static_cast<int64_t>(0))},
                     {"client", t.value("client", "")},
                     {"current", id == caller.token_id}});
    }
    return JsonReply(200, out);
  }
  if (path.rfind("/v2/tokens/", 0) == 0 && req.method == "DELETE") {
    std::string id = path.substr(11);
    if (id == "current") id = caller.token_id;
    for (const auto& [key, value] : *docs) {
      json t = json::parse(value, nullptr, false);
      if (key != id || !t.is_object()) continue;
      // An admin may revoke anyone's token; a developer only their own.
      if (Lower(t.value("email", "")) != Lower(caller.email) && !caller.admin()) break;
      if (auto d = store_.DeleteDoc("api_token", id); !d) return ErrorReply(500, d.error());
      return JsonReply(200, {{"revoked", id}});
    }
    return ErrorReply(404, "no token " + id + " of yours (see GET /v2/tokens)");
  }
  return ErrorReply(404, "no such API: " + req.method + " " + path);
}

HttpResponse Accounts::Users(const HttpRequest& req, const std::string& path,
                             const Caller& caller) {
  if (!caller.admin()) return Forbidden("managing users");
  if (path == "/v2/users" && req.method == "GET") {
    auto docs = store_.ListDocs("user");
    if (!docs) return ErrorReply(500, docs.error());
    json out = json::array();
    for (const auto& [key, value] : *docs) {
      json j = json::parse(value, nullptr, false);
      if (!j.is_object()) continue;
      UserRecord u{j.value("email", ""), "", j.value("admin", false),
                   j.value("created_ms", static_cast<int64_t>(0))};
      auto orgs = OrgsOf(store_, u.email);
      out.push_back(UserView(u, orgs ? *orgs : std::vector<std::string>{}));
    }
    std::sort(out.begin(), out.end(),
              [](const json& a, const json& b) { return a["email"] < b["email"]; });
    return JsonReply(200, out);
  }
  if (path == "/v2/users" && req.method == "POST") {
    auto in = ReadEmailPassword(req);
    if (!in) return ErrorReply(400, in.error());
    const json& body = in->body;
    const std::string& email = in->email;
    const std::string& password = in->password;
    if (body.contains("admin") && !body["admin"].is_boolean())
      return ErrorReply(400, "'admin' must be true or false");
    if (auto s = AddUser(email, password, body.value("admin", false)); !s)
      return ErrorReply(s.error().find("already exists") != std::string::npos ? 409 : 400,
                        s.error());
    UserRecord u{Lower(email), "", body.value("admin", false), clock_.wall_ms()};
    return JsonReply(201, UserView(u, {}));
  }
  if (path.rfind("/v2/users/", 0) == 0 && req.method == "DELETE") {
    std::string email = Lower(Unescape(path.substr(10)));
    if (auto s = CheckEmail(email); !s) return ErrorReply(400, s.error());
    std::lock_guard lock(mu_);
    auto user = LoadUser(store_, email);
    if (!user) return ErrorReply(500, user.error());
    if (!*user) return ErrorReply(404, "no user " + email + " (see `kato user list`)");
    if (auto d = store_.DeleteDoc("user", UserKey(email)); !d) return ErrorReply(500, d.error());
    if (auto docs = store_.ListDocs("api_token"); docs)
      for (const auto& [id, value] : *docs)
        if (Lower(json::parse(value, nullptr, false).value("email", "")) == email)
          (void)store_.DeleteDoc("api_token", id);
    if (auto docs = store_.ListDocs("org"); docs)
      for (const auto& [name, value] : *docs)
        if (auto o = OrgFromJson(value);
            o && std::count(o->members.begin(), o->members.end(), email)) {
          o->members.erase(std::remove(o->members.begin(), o->members.end(), email),
                           o->members.end());
          (void)store_.PutDoc("org", name, OrgToJson(*o));
        }
    return JsonReply(200, {{"deleted", email}});
  }
  return ErrorReply(404, "no such API: " + req.method + " " + path);
}

HttpResponse Accounts::Orgs(const HttpRequest& req, const std::string& path, const Caller& caller) {
  const std::string& m = req.method;
  if (path == "/v2/orgs" && m == "GET") {
    auto docs = store_.ListDocs("org");
    if (!docs) return ErrorReply(500, docs.error());
    json out = json::array();
    for (const auto& [name, value] : *docs)
      if (auto o = OrgFromJson(value); o && caller.InOrg(o->name))
        out.push_back(json::parse(OrgToJson(*o)));
    return JsonReply(200, out);
  }
  auto body = Body(req);
  if (!body) return ErrorReply(400, body.error());
  if (path == "/v2/orgs" && m == "POST") {
    if (!caller.admin()) return Forbidden("creating an organization");
    auto name = Str(*body, "name");
    if (!name) return ErrorReply(400, name.error());
    if (auto s = CheckOrgName(*name); !s) return ErrorReply(400, s.error());
    OrgRecord o;
    o.name = *name;
    o.created_ms = clock_.wall_ms();
    if (body->contains("quota")) {
      auto q = QuotaFrom((*body)["quota"], o.quota);
      if (!q) return ErrorReply(400, q.error());
      o.quota = *q;
    }
    std::lock_guard lock(mu_);
    auto existing = LoadOrg(store_, *name);
    if (!existing) return ErrorReply(500, existing.error());
    if (*existing) return ErrorReply(409, "an organization named '" + *name + "' already exists");
    if (auto s = store_.PutDoc("org", o.name, OrgToJson(o)); !s) return ErrorReply(500, s.error());
    return JsonReply(201, json::parse(OrgToJson(o)));
  }
  std::string rest = path.size() > 9 ? path.substr(9) : "";  // after "/v2/orgs/"
  std::string name = rest.substr(0, rest.find('/'));
  std::string sub = rest.substr(name.size());
  if (auto s = CheckOrgName(name); !s) return ErrorReply(400, s.error());
  std::lock_guard lock(mu_);
  auto org = LoadOrg(store_, name);
  if (!org) return ErrorReply(500, org.error());
  // A developer learns nothing of other organizations, not even that they exist.
  if (!*org || !caller.InOrg(name))
    return ErrorReply(404, "no organization named '" + name + "' (see `kato org list`)");
  OrgRecord& o = **org;
  if (sub.empty() && m == "GET") return JsonReply(200, json::parse(OrgToJson(o)));
  if (!caller.admin()) return Forbidden("changing an organization");
  if (sub == "/quota" && m == "PUT") {
    auto q = QuotaFrom(*body, o.quota);
    if (!q) return ErrorReply(400, q.error());
    o.quota = *q;
  } else if (sub == "/members" && m == "POST") {
    auto email = Str(*body, "email");
    if (!email) return ErrorReply(400, email.error());
    auto user = LoadUser(store_, *email);
    if (!user) return ErrorReply(500, user.error());
    if (!*user) return ErrorReply(404, "no user " + *email + " (add one with `kato user add`)");
    std::string e = Lower(*email);
    if (!std::count(o.members.begin(), o.members.end(), e)) o.members.push_back(e);
    std::sort(o.members.begin(), o.members.end());
  } else if (sub.rfind("/members/", 0) == 0 && m == "DELETE") {
    std::string e = Lower(Unescape(sub.substr(9)));
    auto it = std::find(o.members.begin(), o.members.end(), e);
    if (it == o.members.end()) return ErrorReply(404, e + " is not a member of '" + name + "'");
    o.members.erase(it);
  } else if (sub.empty() && m == "DELETE") {
    for (const char* kind : {"app", "service"}) {
      auto docs = store_.ListDocs(kind);
      if (!docs) return ErrorReply(500, docs.error());
      for (const auto& [key, value] : *docs)
        if (json::parse(value, nullptr, false).value("org", "") == name)
          return ErrorReply(409, "organization '" + name + "' still owns the " + kind + " '" + key +
                                     "': delete its apps and services first");
    }
    if (auto d = store_.DeleteDoc("org", name); !d) return ErrorReply(500, d.error());
    return JsonReply(200, {{"deleted", name}});
  } else {
    return ErrorReply(404, "no such API: " + m + " " + path);
  }
  if (auto s = store_.PutDoc("org", name, OrgToJson(o)); !s) return ErrorReply(500, s.error());
  return JsonReply(200, json::parse(OrgToJson(o)));
}

std::string ClientIp(const HttpRequest& req, bool via_router) {
  if (!via_router) return req.peer_ip;
  auto it = req.headers.find("x-forwarded-for");
  if (it == req.headers.end()) return req.peer_ip;
  std::string v = it->second;
  auto comma = v.rfind(',');
  std::string last = comma == std::string::npos ? v : v.substr(comma + 1);
  last.erase(0, last.find_first_not_of(' '));
  last.erase(last.find_last_not_of(' ') + 1);
  return last.empty() ? req.peer_ip : last;
}

}  // namespace kato
