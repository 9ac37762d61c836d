// The Management Console's sessions through the controller's API: cookies,
// CSRF, and the pages' security headers.
#include "controller/console.h"

#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/pki.h"
#include "controller/app_api.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kato {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;

class ConsoleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kato-console-XXXXXX";
    dir_ = mkdtemp(tmpl);
    store_ = std::move(OpenSqliteStore(dir_ + "/state.db").value());
    ASSERT_TRUE(store_->SetSetting("endpoint", "api.example.com").ok());
    droplets_ = std::make_unique<DropletStore>(dir_ + "/droplets");
    ControllerApi::Options o;
    o.admin_token_hash = Sha256Hex("sesame");
    o.accounts.password_cost = {1, 64};
    api_ = std::make_unique<ControllerApi>(o, *store_, *droplets_, clock_);
    HttpRequest add;
    add.method = "POST";
    add.target = "/v2/users";
    add.headers["authorization"] = "Bearer sesame";
    add.body = json{{"email", "ann@example.com"}, {"password", "ann-password"}}.dump();
    ASSERT_EQ(api_->Handle(add).status, 201);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  HttpResponse Call(const std::string& method, const std::string& target,
                    const std::string& body = "",
                    const std::map<std::string, std::string>& headers = {}) {
    HttpRequest r;
    r.method = method;
    r.target = target;
    r.body = body;
    r.headers = headers;
    if (auto refused = api_->CheckCredential(r)) return *refused;  // as the server does
    return api_->Handle(r);
  }
  // Signs in; the cookie header value and the CSRF token.
  std::pair<std::string, std::string> SignIn() {
    auto r = Call("POST", "/console/login",
                  json{{"email", "ann@example.com"}, {"password", "ann-password"}}.dump());
    EXPECT_EQ(r.status, 200) << r.body;
    std::string cookie = r.headers["Set-Cookie"];
    return {cookie.substr(0, cookie.find(';')), json::parse(r.body).value("csrf", "")};
  }

  std::string dir_;
  FakeClock clock_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<DropletStore> droplets_;
  std::unique_ptr<ControllerApi> api_;
};

TEST_F(ConsoleTest, PagesNeedNoCredentialAndCarryACsp) {
  auto index = Call("GET", "/console/");
  ASSERT_EQ(index.status, 200);
  EXPECT_THAT(index.content_type, HasSubstr("text/html"));
  EXPECT_THAT(index.body, HasSubstr("<label for=\"email\">Email</label>"));
  EXPECT_THAT(index.body, HasSubstr("<label for=\"password\">Password</label>"));
  EXPECT_THAT(index.headers["Content-Security-Policy"], HasSubstr("script-src 'self'"));
  EXPECT_THAT(index.headers["Content-Security-Policy"], HasSubstr("frame-ancestors 'none'"));
  EXPECT_EQ(index.headers["X-Content-Type-Options"], "nosniff");
  auto js = Call("GET", "/console/console.js");
  ASSERT_EQ(js.status, 200);
  EXPECT_THAT(js.content_type, HasSubstr("javascript"));
  EXPECT_EQ(Call("GET", "/console/nope.js").status, 404);
  EXPECT_EQ(Call("GET", "/console/../state.db").status, 404);
  EXPECT_EQ(Call("GET", "/console/session").status, 401);
  // API replies carry the headers too.
  EXPECT_EQ(Call("GET", "/v2/apps").headers["X-Content-Type-Options"], "nosniff");
}

TEST_F(ConsoleTest, SignInSetsAStrictCookieThatCallsTheApi) {
  auto r = Call("POST", "/console/login",
                json{{"email", "ann@example.com"}, {"password", "ann-password"}}.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  std::string cookie = r.headers["Set-Cookie"];
  EXPECT_THAT(cookie, HasSubstr("kato_session=kato_"));
  for (const char* attr : {"HttpOnly", "Secure", "SameSite=Strict", "Path=/"})
    EXPECT_THAT(cookie, HasSubstr(attr));
  EXPECT_EQ(json::parse(r.body)["user"]["email"], "ann@example.com");
  EXPECT_EQ(
      Call("POST", "/console/login", json{{"email", "ann@example.com"}, {"password", "x"}}.dump())
          .status,
      401);

  auto [c, csrf] = SignIn();
  std::map<std::string, std::string> session{{"cookie", "theme=dark; " + c}};
  EXPECT_EQ(Call("GET", "/v2/whoami", "", session).status, 200);
  auto who = Call("GET", "/console/session", "", session);
  ASSERT_EQ(who.status, 200);
  EXPECT_EQ(json::parse(who.body)["csrf"], csrf);
  // A change without the CSRF token (a form of another site) is refused, and does nothing.
  auto forged = Call("POST", "/v2/apps", json{{"name", "web"}}.dump(), session);
  EXPECT_EQ(forged.status, 403);
  EXPECT_THAT(forged.body, HasSubstr("CSRF"));
  auto wrong = session;
  wrong["x-csrf-token"] = std::string(64, 'a');
  EXPECT_EQ(Call("POST", "/v2/apps", json{{"name", "web"}}.dump(), wrong).status, 403);
  EXPECT_EQ(store_->GetDoc("app", "web").value(), std::nullopt);
  auto good = session;
  good["x-csrf-token"] = csrf;
  EXPECT_EQ(Call("PUT", "/v2/orgs/none/quota", "{}", good).status, 404);  // got through to the API

  // Sign-out revokes the session's token: the cookie no longer works.
  EXPECT_EQ(Call("POST", "/console/logout", "", session).status, 403);  // not without CSRF
  auto out = Call("POST", "/console/logout", "", good);
  EXPECT_EQ(out.status, 200);
  EXPECT_THAT(out.headers["Set-Cookie"], HasSubstr("Max-Age=0"));
  EXPECT_EQ(Call("GET", "/v2/whoami", "", session).status, 401);
}

TEST_F(ConsoleTest, OpenRequestsAreSmall) {
  // No credential is checked before these bodies are read: the header check bounds them.
  HttpRequest head;
  head.method = "POST";
  head.target = "/console/login";
  head.headers["content-length"] = "67108864";
  ASSERT_TRUE(api_->CheckCredential(head).has_value());
  EXPECT_EQ(api_->CheckCredential(head)->status, 413);
  head.target = "/v2/login";
  EXPECT_EQ(api_->CheckCredential(head)->status, 413);
  head.headers.erase("content-length");
  head.headers["transfer-encoding"] = "chunked";
  EXPECT_EQ(api_->CheckCredential(head)->status, 413);
  head.headers.erase("transfer-encoding");
  head.headers["content-length"] = "60";
  EXPECT_FALSE(api_->CheckCredential(head).has_value());
}

TEST(ConsoleCookieTest, FindsTheSessionAmongCookies) {
  HttpRequest r;
  EXPECT_EQ(Console::SessionToken(r), "");
  r.headers["cookie"] = "a=1; kato_session=kato_x_y; b=2";
  EXPECT_EQ(Console::SessionToken(r), "kato_x_y");
  r.headers["cookie"] = "not_kato_session=z";
  EXPECT_EQ(Console::SessionToken(r), "");
  EXPECT_NE(Console::CsrfFor("kato_a"), Console::CsrfFor("kato_b"));
}

}  // namespace
}  // namespace kato
