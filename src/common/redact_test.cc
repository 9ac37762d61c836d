#include "common/redact.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace kato {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

const std::string kToken =
    "KATO1.0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef."
    "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

TEST(RedactTest, TokenFlagValueIsMasked) {
  EXPECT_EQ(RedactCommandLine("kato node attach --token " + kToken + " 127.0.0.1"),
            "kato node attach --token *** 127.0.0.1");
  EXPECT_EQ(RedactCommandLine("kato node attach --token=" + kToken + " 127.0.0.1"),
            "kato node attach --token=*** 127.0.0.1");
  // Whatever the value looks like.
  EXPECT_EQ(RedactCommandLine("kato x --token hunter2 --force"), "kato x --token *** --force");
}

TEST(RedactTest, PasswordFlagsAreMasked) {
  EXPECT_EQ(RedactCommandLine("kato x --password hunter2 y"), "kato x --password *** y");
  EXPECT_EQ(RedactCommandLine("kato x --password=hunter2 y"), "kato x --password=*** y");
  EXPECT_EQ(RedactCommandLine("kato x --db-password hunter2"), "kato x --db-password ***");
  EXPECT_EQ(RedactCommandLine("kato x --client-secret=s3"), "kato x --client-secret=***");
}

TEST(RedactTest, JoinTokenAnywhereIsMasked) {
  EXPECT_EQ(RedactCommandLine("kato node attach " + kToken + " 127.0.0.1"),
            "kato node attach KATO1.*** 127.0.0.1");
  EXPECT_EQ(RedactCommandLine("echo x" + kToken + "y"), "echo xKATO1.***y");
  // Upper-case hex and prefix are still a token.
  std::string upper = "kato1.ABCDEF.0123";
  EXPECT_EQ(RedactCommandLine("a " + upper), "a kato1.***");
}

TEST(RedactTest, UrlPasswordIsMasked) {
  EXPECT_EQ(RedactCommandLine("kato node setup core api.x --store postgresql://u:pw@h:5432/db"),
            "kato node setup core api.x --store postgresql://u:***@h:5432/db");
  EXPECT_EQ(RedactCommandLine("kato op migrate_store postgres://u:p%40ss@h/db --yes"),
            "kato op migrate_store postgres://u:***@h/db --yes");
  EXPECT_EQ(RedactCommandLine("kato x --store=postgresql://u:pw@h/db"),
            "kato x --store=postgresql://u:***@h/db");
  // A user without a password, and no user, stay as they are.
  EXPECT_EQ(RedactCommandLine("x postgresql://u@h/db"), "x postgresql://u@h/db");
  EXPECT_EQ(RedactCommandLine("x postgresql://h/db"), "x postgresql://h/db");
  // An '@' in the path is not userinfo.
  EXPECT_EQ(RedactCommandLine("x http://h/a:b@c"), "x http://h/a:b@c");
}

TEST(RedactTest, PasswordQueryParameterIsMasked) {
  EXPECT_EQ(RedactCommandLine("x postgresql://u@h/db?password=pw&sslmode=require"),
            "x postgresql://u@h/db?password=***&sslmode=require");
  EXPECT_EQ(RedactCommandLine("x postgresql://h/db?sslmode=require&password=pw"),
            "x postgresql://h/db?sslmode=require&password=***");
  EXPECT_EQ(RedactCommandLine("x postgresql://u:a@h/db?password=b"),
            "x postgresql://u:***@h/db?password=***");
}

TEST(RedactTest, SecretAssignmentsAreMasked) {
  EXPECT_EQ(RedactCommandLine("kato app push a --env DB_PASSWORD=pw --env PORT=80"),
            "kato app push a --env DB_PASSWORD=*** --env PORT=80");
  EXPECT_EQ(RedactCommandLine("kato app push a --env GITHUB_TOKEN=t"),
            "kato app push a --env GITHUB_TOKEN=***");
}

TEST(RedactTest, ConfigSetOfASecretKeyIsMasked) {
  EXPECT_EQ(RedactCommandLine("kato config set redis password hunter2"),
            "kato config set redis password ***");
  EXPECT_EQ(RedactCommandLine("kato config set svc admin_token {\"a\": 1}"),
            "kato config set svc admin_token *** ***");
  EXPECT_EQ(RedactCommandLine("kato config set controller droplets_dir /mnt/c"),
            "kato config set controller droplets_dir /mnt/c");
}

TEST(RedactTest, OrdinaryCommandsAreUnchanged) {
  for (const std::string c :
       {"kato node token --rotate --ttl 30m", "kato node token", "kato role add -n 1.2.3.4 redis",
        "kato node setup core api.kato.test", "kato app push web --path /tmp/a --instances 2", "",
        "kato  double  spaces"})
    EXPECT_EQ(RedactCommandLine(c), c);
}

TEST(RedactTest, SecretNames) {
  for (const char* n : {"--token", "password", "DB_PASSWD", "Client-Secret", "api_key"})
    EXPECT_TRUE(IsSecretName(n)) << n;
  for (const char* n : {"--ttl", "--store", "--rotate", "key", "droplets_dir"})
    EXPECT_FALSE(IsSecretName(n)) << n;
}

TEST(RedactTest, MaskingTwiceChangesNothing) {
  std::string once = RedactCommandLine("kato node attach --token " + kToken +
                                       " --store postgresql://u:pw@h/db?password=x 1.2.3.4");
  EXPECT_EQ(RedactCommandLine(once), once);
  EXPECT_THAT(once, Not(HasSubstr("pw")));
  EXPECT_THAT(once, Not(HasSubstr("fedcba")));
}

}  // namespace
}  // namespace kato
