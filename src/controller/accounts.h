// Accounts: the cluster's users, their API tokens and organizations (issue
// "Users, organizations, and the Management Console"), as a request ->
// response function over the cluster Store, like ControllerApi.
//
//   POST   /v2/login                 {email, password} -> {token, expires_ms, user}; no credential
//   GET    /v2/whoami                the caller: {kind, email, admin, orgs}
//   GET    /v2/tokens                the caller's tokens (ids, never secrets)
//   DELETE /v2/tokens/ID             revoke one (`current` = the one making the call)
//   GET    /v2/users                 every user (admins)
//   POST   /v2/users                 {email, password, admin} (admins)
//   DELETE /v2/users/EMAIL           the user, their tokens and memberships (admins)
//   GET    /v2/orgs                  the organizations (a developer: their own)
//   POST   /v2/orgs                  {name, quota?} (admins)
//   GET    /v2/orgs/NAME             one organization, with its usage
//   PUT    /v2/orgs/NAME/quota       {memory_mb, instances, services}; 0 = no limit (admins)
//   POST   /v2/orgs/NAME/members     {email} (admins)
//   DELETE /v2/orgs/NAME/members/EMAIL (admins)
//   DELETE /v2/orgs/NAME             only when it owns no apps or services (admins)
//
// Documents: "user/KEY" (KEY: a hash of the lowercased email, so that any email
// is a valid key) with the Argon2id hash of the password, never the password;
// "api_token/ID" with the SHA-256 of the token's secret; "org/NAME".
//
// A token is "kato_" ID "_" SECRET (16 and 32 hex digits). Tokens expire
// (Options::token_ttl) and are checked against the store on every call, so a
// revoked token or a removed user stops working at once.
//
// Failed logins are rate-limited (LoginLimiter): a client that guesses gets 429
// with Retry-After before its password is even hashed.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "common/http.h"
#include "common/result.h"
#include "store/store.h"

namespace kato {

// Who makes an API call. The cluster admin credential and a node certificate
// act as admin; a user is admin or a developer of their organizations.
struct Caller {
  enum class Kind { kAdmin, kNode, kUser };
  Kind kind = Kind::kUser;  // by default nobody: a user of no organization
  std::string email;              // users
  bool admin_user = false;        // users: an admin account
  std::vector<std::string> orgs;  // users: the organizations they belong to (sorted)
  std::string token_id;           // users: the token of this call

  bool admin() const { return kind != Kind::kUser || admin_user; }
  bool node() const { return kind == Kind::kNode; }
  // Whether the caller may act on what organization `org` owns ("" = the
  // cluster's own, admins only).
  bool InOrg(const std::string& org) const;
};

struct Quota {
  int64_t memory_mb = 0;  // of the started instances together; 0 = no limit
  int64_t instances = 0;
  int64_t services = 0;
  bool operator==(const Quota&) const = default;
};

struct OrgRecord {
  std::string name;
  std::vector<std::string> members;  // emails, sorted
  Quota quota;
  int64_t created_ms = 0;
  bool operator==(const OrgRecord&) const = default;
};

std::string OrgToJson(const OrgRecord& org);
Result<OrgRecord> OrgFromJson(const std::string& text);
Result<std::optional<OrgRecord>> LoadOrg(Store& store, const std::string& name);
// An organization's name is a DNS label, like an app's.
Status CheckOrgName(const std::string& name);

// Argon2id, in its encoded form ($argon2id$v=19$m=...,t=...,p=...$salt$hash).
struct PasswordCost {
  uint32_t t_cost = 2;
  uint32_t m_cost_kib = 19456;  // OWASP's minimum for Argon2id
};
Result<std::string> HashPassword(const std::string& password, const PasswordCost& cost);
bool VerifyPassword(const std::string& encoded, const std::string& password);

// Counts failed logins in a sliding minute, by (email, client IP) and by client
// IP. Thread-safe; its memory is bounded (max_keys per map).
class LoginLimiter {
 public:
  struct Limits {
    int per_email_ip = 5;  // failures a minute for one account from one address
    int per_ip = 20;       // failures a minute from one address
    size_t max_keys = 100000;
  };
  LoginLimiter(Limits limits, const Clock& clock) : limits_(limits), clock_(clock) {}
  // 0 when a login may be tried now, else the seconds to wait.
  int RetryAfter(const std::string& email, const std::string& ip);
  void Failed(const std::string& email, const std::string& ip);

 private:
  int WaitFor(std::deque<SteadyTime>& hits, int limit, SteadyTime now);
  void Record(std::map<std::string, std::deque<SteadyTime>>& hits, const std::string& key,
              int limit, SteadyTime now);
  Limits limits_;
  const Clock& clock_;
  std::mutex mu_;
  // The times of the last failures (at most the limit's number), by key.
  std::map<std::string, std::deque<SteadyTime>> by_ip_;
  std::map<std::string, std::deque<SteadyTime>> by_email_ip_;  // "email\nip"
};

class Accounts {
 public:
  struct Options {
    Millis token_ttl{7LL * 24 * 3600 * 1000};
    PasswordCost password_cost;
    LoginLimiter::Limits login_limits;
  };
  Accounts(Options options, Store& store, const Clock& clock);

  static bool Serves(const std::string& path);
  // The only API call without a credential.
  static bool IsLogin(const HttpRequest& req);
  // The user whose token `bearer` is; an error (the 401's text) when it is not
  // a token, unknown, revoked or expired, or its user is gone.
  Result<Caller> Authenticate(const std::string& bearer) const;
  HttpResponse Handle(const HttpRequest& req, const Caller& caller);

  // Writes a user (the CLI's first admin, tests). Fails for a bad email, a
  // short password or an existing user.
  Status AddUser(const std::string& email, const std::string& password, bool admin);

 private:
  HttpResponse Login(const HttpRequest& req);
  HttpResponse Users(const HttpRequest& req, const std::string& path, const Caller& caller);
  HttpResponse Orgs(const HttpRequest& req, const std::string& path, const Caller& caller);
  HttpResponse Tokens(const HttpRequest& req, const std::string& path, const Caller& caller);

  Options options_;
  Store& store_;
  const Clock& clock_;
  LoginLimiter limiter_;
  std::mutex mu_;  // serializes read-modify-write of users and orgs on this controller
};

// The client address of a request: peer_ip, or for one passed on by a router
// (`via_router`) the address the router appended to X-Forwarded-For.
std::string ClientIp(const HttpRequest& req, bool via_router);

}  // namespace kato
