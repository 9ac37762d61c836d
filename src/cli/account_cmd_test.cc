#include "cli/account_cmd.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "cli/login_file.h"
#include "gtest/gtest.h"

namespace kato {
namespace {

TEST(ParseMegabytesTest, SizesWithUnits) {
  EXPECT_EQ(ParseMegabytes("4G").value(), 4096);
  EXPECT_EQ(ParseMegabytes("512M").value(), 512);
  EXPECT_EQ(ParseMegabytes("300").value(), 300);
  for (const char* bad : {"", "G", "4X", "-1G", "1.5G", "99999999999G"})
    EXPECT_FALSE(ParseMegabytes(bad).ok()) << bad;
}

TEST(ApiUrlTest, SchemesHostsAndPorts) {
  auto u = ParseApiUrl("https://api.example.com");
  ASSERT_TRUE(u.ok());
  EXPECT_TRUE(u->tls);
  EXPECT_EQ(u->host, "api.example.com");
  EXPECT_EQ(u->port, 443);
  u = ParseApiUrl("http://127.0.0.2:9022/v2");
  ASSERT_TRUE(u.ok());
  EXPECT_FALSE(u->tls);
  EXPECT_EQ(u->port, 9022);
  for (const char* bad : {"api.example.com", "ftp://x", "http://", "http://x:0", "http://x:99999",
                          "http://x:80a", "http://user@x"})
    EXPECT_FALSE(ParseApiUrl(bad).ok()) << bad;
}

TEST(LoginFileTest, RoundTripsPrivately) {
  char tmpl[] = "/tmp/kato-login-XXXXXX";
  std::string dir = mkdtemp(tmpl);
  std::string path = dir + "/conf/kato/login.json";
  EXPECT_FALSE(ReadLogin(path).value().has_value());
  LoginRecord l{"https://api.example.com", "kato_x_y", "x", "a@example.com", "PEM"};
  ASSERT_TRUE(WriteLogin(path, l).ok());
  EXPECT_EQ(ReadLogin(path).value(), l);
  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_TRUE(WriteLogin(path + ".bad", l).ok());
  FILE* f = fopen((path + ".bad").c_str(), "w");
  fputs("{garbage", f);
  fclose(f);
  EXPECT_FALSE(ReadLogin(path + ".bad").ok());
  std::filesystem::remove_all(dir);
}

TEST(LoginFileTest, PathFollowsTheEnvironment) {
  setenv("KATO_LOGIN_FILE", "/x/login.json", 1);
  EXPECT_EQ(LoginFilePath(), "/x/login.json");
  unsetenv("KATO_LOGIN_FILE");
  setenv("XDG_CONFIG_HOME", "/cfg", 1);
  EXPECT_EQ(LoginFilePath(), "/cfg/kato/login.json");
  unsetenv("XDG_CONFIG_HOME");
  setenv("HOME", "/home/ann", 1);
  EXPECT_EQ(LoginFilePath(), "/home/ann/.config/kato/login.json");
}

}  // namespace
}  // namespace kato
