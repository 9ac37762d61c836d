#include "controller/accounts.h"

#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kato {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;

TEST(PasswordTest, Argon2idHashVerifiesOnlyTheSamePassword) {
  auto h = HashPassword("correct horse", {1, 64});
  ASSERT_TRUE(h.ok()) << h.error();
  EXPECT_EQ(h->rfind("$argon2id$", 0), 0u);
  EXPECT_EQ(h->find("correct"), std::string::npos);
  EXPECT_TRUE(VerifyPassword(*h, "correct horse"));
  EXPECT_FALSE(VerifyPassword(*h, "correct horsf"));
  EXPECT_FALSE(VerifyPassword(*h, ""));
  EXPECT_FALSE(VerifyPassword("", "correct horse"));
  EXPECT_FALSE(VerifyPassword("$argon2i$garbage", "correct horse"));
  // The same password twice: two salts, two hashes.
  EXPECT_NE(*h, HashPassword("correct horse", {1, 64}).value());
}

TEST(LoginLimiterTest, CountsFailuresPerAccountAndAddressInASlidingMinute) {
  FakeClock clock;
  LoginLimiter limiter({3, 5, 1000}, clock);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(limiter.RetryAfter("a@x.io", "10.0.0.9"), 0);
    limiter.Failed("a@x.io", "10.0.0.9");
  }
  int wait = limiter.RetryAfter("A@X.IO", "10.0.0.9");  // emails compare lowercased
  EXPECT_GT(wait, 0);
  EXPECT_LE(wait, 61);
  // Another account from that address, and that account from elsewhere, still may.
  EXPECT_EQ(limiter.RetryAfter("b@x.io", "10.0.0.9"), 0);
  EXPECT_EQ(limiter.RetryAfter("a@x.io", "10.0.0.8"), 0);
  // Two more failures from the address (other accounts) block it for everyone.
  limiter.Failed("b@x.io", "10.0.0.9");
  limiter.Failed("c@x.io", "10.0.0.9");
  EXPECT_GT(limiter.RetryAfter("d@x.io", "10.0.0.9"), 0);
  clock.advance(std::chrono::seconds(61));
  EXPECT_EQ(limiter.RetryAfter("a@x.io", "10.0.0.9"), 0);
  EXPECT_EQ(limiter.RetryAfter("d@x.io", "10.0.0.9"), 0);
}

TEST(LoginLimiterTest, MemoryIsBoundedUnderAFloodOfAddresses) {
  FakeClock clock;
  LoginLimiter limiter({5, 20, 100}, clock);
  for (int i = 0; i < 10000; ++i) limiter.Failed("a@x.io", "ip" + std::to_string(i));
  // The newest keys are kept and still limit.
  for (int i = 0; i < 4; ++i) limiter.Failed("a@x.io", "ip9999");
  EXPECT_GT(limiter.RetryAfter("a@x.io", "ip9999"), 0);
}

TEST(ClientIpTest, TakesTheRoutersEntryOfXForwardedFor) {
  HttpRequest r;
  r.peer_ip = "127.0.0.5";
  EXPECT_EQ(ClientIp(r, true), "127.0.0.5");
  r.headers["x-forwarded-for"] = "6.6.6.6, 10.1.2.3";  // a client may send the first
  EXPECT_EQ(ClientIp(r, true), "10.1.2.3");
  EXPECT_EQ(ClientIp(r, false), "127.0.0.5");
}

class AccountsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kato-accounts-XXXXXX";
    dir_ = mkdtemp(tmpl);
    store_ = std::move(OpenSqliteStore(dir_ + "/state.db").value());
    Accounts::Options o;
    o.password_cost = {1, 64};
    o.token_ttl = Millis(3600 * 1000);
    o.login_limits = {3, 10, 1000};
    accounts_ = std::make_unique<Accounts>(o, *store_, clock_);
    ASSERT_TRUE(accounts_->AddUser("Ann@Example.com", "ann-password", true).ok());
    ASSERT_TRUE(accounts_->AddUser("dev@example.com", "dev-password", false).ok());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  HttpResponse Call(const std::string& method, const std::string& target, const json& body,
                    const Caller& caller, const std::string& ip = "10.0.0.7") {
    HttpRequest r;
    r.method = method;
    r.target = target;
    r.body = body.is_null() ? "" : body.dump();
    r.peer_ip = ip;
    return accounts_->Handle(r, caller);
  }
  HttpResponse Login(const std::string& email, const std::string& password,
                     const std::string& ip = "10.0.0.7") {
    return Call("POST", "/v2/login", {{"email", email}, {"password", password}}, Caller{}, ip);
  }
  Caller As(const std::string& email, const std::string& password) {
    auto r = Login(email, password);
    EXPECT_EQ(r.status, 200) << r.body;
    auto c = accounts_->Authenticate(json::parse(r.body)["token"]);
    EXPECT_TRUE(c.ok()) << c.error();
    return c.ok() ? *c : Caller{};
  }
  json Json(const HttpResponse& r) { return json::parse(r.body); }

  std::string dir_;
  FakeClock clock_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Accounts> accounts_;
};

TEST_F(AccountsTest, LoginGivesATokenThatNamesTheUser) {
  auto r = Login("ann@example.com", "ann-password");
  ASSERT_EQ(r.status, 200) << r.body;
  std::string token = Json(r)["token"];
  EXPECT_THAT(token, ::testing::MatchesRegex("kato_[0-9a-f]{16}_[0-9a-f]{32}"));
  auto c = accounts_->Authenticate(token);
  ASSERT_TRUE(c.ok()) << c.error();
  EXPECT_EQ(c->email, "ann@example.com");
  EXPECT_TRUE(c->admin());
  // The store holds neither the password nor the token's secret.
  for (const char* kind : {"user", "api_token"}) {
    auto docs = store_->ListDocs(kind).value();
    for (const auto& [k, v] : docs) {
      EXPECT_EQ(v.find("ann-password"), std::string::npos);
      EXPECT_EQ(v.find(token.substr(22)), std::string::npos);
    }
  }
}

TEST_F(AccountsTest, WrongPasswordsAndUnknownUsersGetTheSameAnswer) {
  auto wrong = Login("ann@example.com", "nope-nope");
  auto unknown = Login("nobody@example.com", "nope-nope");
  EXPECT_EQ(wrong.status, 401);
  EXPECT_EQ(unknown.status, 401);
  EXPECT_EQ(wrong.body, unknown.body);
  EXPECT_EQ(Call("POST", "/v2/login", {{"email", "ann@example.com"}}, Caller{}).status, 400);
  EXPECT_EQ(Call("POST", "/v2/login", {{"email", 3}, {"password", "x"}}, Caller{}).status, 400);
  HttpRequest garbage;
  garbage.method = "POST";
  garbage.target = "/v2/login";
  garbage.body = "{not json";
  EXPECT_EQ(accounts_->Handle(garbage, Caller{}).status, 400);
}

TEST_F(AccountsTest, GuessingIsRateLimitedWhileOthersStillSignIn) {
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(Login("ann@example.com", "guess" + std::to_string(i)).status, 401);
  auto limited = Login("ann@example.com", "ann-password");  // even the right one, from there
  EXPECT_EQ(limited.status, 429);
  EXPECT_FALSE(limited.headers["Retry-After"].empty());
  EXPECT_EQ(Login("ann@example.com", "ann-password", "10.0.0.8").status, 200);
  EXPECT_EQ(Login("dev@example.com", "dev-password").status, 200);
  clock_.advance(std::chrono::seconds(61));
  EXPECT_EQ(Login("ann@example.com", "ann-password").status, 200);
}

TEST_F(AccountsTest, RevokedAndExpiredTokensStopAtOnce) {
  auto r = Login("dev@example.com", "dev-password");
  std::string token = Json(r)["token"];
  auto c = accounts_->Authenticate(token).value();
  auto list = Json(Call("GET", "/v2/tokens", nullptr, c));
  ASSERT_EQ(list.size(), 1u);
  EXPECT_TRUE(list[0]["current"]);
  EXPECT_EQ(Call("DELETE", "/v2/tokens/current", nullptr, c).status, 200);
  auto after = accounts_->Authenticate(token);
  ASSERT_FALSE(after.ok());
  EXPECT_THAT(after.error(), HasSubstr("revoked"));

  std::string token2 = Json(Login("dev@example.com", "dev-password"))["token"];
  ASSERT_TRUE(accounts_->Authenticate(token2).ok());
  clock_.advance(std::chrono::hours(2));
  auto expired = accounts_->Authenticate(token2);
  ASSERT_FALSE(expired.ok());
  EXPECT_THAT(expired.error(), HasSubstr("expired"));
  // Forged and malformed tokens.
  std::string forged = token2.substr(0, 22) + std::string(32, '0');
  EXPECT_FALSE(accounts_->Authenticate(forged).ok());
  EXPECT_FALSE(accounts_->Authenticate("kato_../../x").ok());
  EXPECT_FALSE(accounts_->Authenticate("").ok());
}

TEST_F(AccountsTest, AdminsManageUsersAndOrgsDevelopersSeeTheirOwn) {
  Caller admin = As("ann@example.com", "ann-password");
  Caller dev = As("dev@example.com", "dev-password");
  EXPECT_EQ(Call("GET", "/v2/users", nullptr, dev).status, 403);
  EXPECT_EQ(Call("POST", "/v2/orgs", {{"name", "blue"}}, dev).status, 403);
  ASSERT_EQ(Call("POST", "/v2/orgs", {{"name", "blue"}}, admin).status, 201);
  ASSERT_EQ(Call("POST", "/v2/orgs", {{"name", "red"}}, admin).status, 201);
  EXPECT_EQ(Call("POST", "/v2/orgs", {{"name", "red"}}, admin).status, 409);
  EXPECT_EQ(Call("POST", "/v2/orgs", {{"name", "Bad Name"}}, admin).status, 400);
  EXPECT_EQ(Call("POST", "/v2/orgs/blue/members", {{"email", "DEV@example.com"}}, admin).status,
            200);
  EXPECT_EQ(Call("POST", "/v2/orgs/blue/members", {{"email", "ghost@example.com"}}, admin).status,
            404);
  auto q = Call("PUT", "/v2/orgs/blue/quota", {{"memory_mb", 4096}, {"services", 10}}, admin);
  ASSERT_EQ(q.status, 200) << q.body;
  EXPECT_EQ(Json(q)["quota"]["memory_mb"], 4096);
  EXPECT_EQ(Call("PUT", "/v2/orgs/blue/quota", {{"memory_mb", -1}}, admin).status, 400);
  EXPECT_EQ(Call("PUT", "/v2/orgs/blue/quota", {{"memory_mb", "4G"}}, admin).status, 400);

  dev = accounts_->Authenticate(Json(Login("dev@example.com", "dev-password"))["token"]).value();
  EXPECT_EQ(dev.orgs, std::vector<std::string>{"blue"});
  auto orgs = Json(Call("GET", "/v2/orgs", nullptr, dev));
  ASSERT_EQ(orgs.size(), 1u);
  EXPECT_EQ(orgs[0]["name"], "blue");
  EXPECT_EQ(Call("GET", "/v2/orgs/red", nullptr, dev).status, 404);  // not even its existence
  EXPECT_EQ(Call("PUT", "/v2/orgs/blue/quota", {{"memory_mb", 1 << 20}}, dev).status, 403);

  auto users = Json(Call("GET", "/v2/users", nullptr, admin));
  ASSERT_EQ(users.size(), 2u);
  EXPECT_EQ(users[0]["email"], "ann@example.com");
  EXPECT_EQ(users[1]["orgs"], json::array({"blue"}));
  for (const auto& u : users) EXPECT_FALSE(u.contains("password_hash"));

  // Removing a user ends their tokens and memberships.
  std::string dev_token = Json(Login("dev@example.com", "dev-password"))["token"];
  EXPECT_EQ(Call("DELETE", "/v2/users/dev%40example.com", nullptr, admin).status, 200);
  EXPECT_FALSE(accounts_->Authenticate(dev_token).ok());
  EXPECT_EQ(Json(Call("GET", "/v2/orgs/blue", nullptr, admin))["members"].size(), 0u);
  EXPECT_EQ(Login("dev@example.com", "dev-password").status, 401);
  EXPECT_EQ(Call("DELETE", "/v2/orgs/blue", nullptr, admin).status, 200);
}

TEST_F(AccountsTest, UsersNeedAnEmailAndAPassword) {
  EXPECT_FALSE(accounts_->AddUser("not-an-email", "long-enough", false).ok());
  EXPECT_FALSE(accounts_->AddUser("a b@example.com", "long-enough", false).ok());
  EXPECT_FALSE(accounts_->AddUser("x@example.com", "short", false).ok());
  auto dup = accounts_->AddUser("ANN@example.com", "long-enough", false);
  ASSERT_FALSE(dup.ok());
  EXPECT_THAT(dup.error(), HasSubstr("already exists"));
}

}  // namespace
}  // namespace kato
