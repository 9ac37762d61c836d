#include "services/mysql_driver.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "services/service_fakes_test.h"

namespace kato {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

MysqlDriver Driver(FakeRunner& r) { return MysqlDriver(r, {"/usr/bin/mariadb", "/d/mysql/run/mysqld.sock"}); }

TEST(MysqlDriver, SqlGoesOnStdinAsRootOverTheSocket) {
  FakeRunner r;
  auto d = Driver(r);
  ASSERT_EQ(*d.Provision(Record("mysql")), Progress::kDone);
  ASSERT_EQ(r.ran.size(), 1u);
  EXPECT_THAT(r.ran[0].argv, ElementsAre("/usr/bin/mariadb", "--no-defaults", "--protocol=socket",
                                         "--socket=/d/mysql/run/mysqld.sock", "--user=root",
                                         "--batch", "--skip-column-names"));
  for (const auto& a : r.ran[0].argv) EXPECT_THAT(a, Not(HasSubstr(kPassword)));
  EXPECT_EQ(r.ran[0].input,
            "CREATE DATABASE IF NOT EXISTS `d0123456789abcdef`;\n"
            "CREATE USER IF NOT EXISTS 'u0123456789abcdef'@'%' IDENTIFIED BY "
            "'abcdef0123456789abcdef0123456789';\n"
            "GRANT ALL PRIVILEGES ON `d0123456789abcdef`.* TO 'u0123456789abcdef'@'%';\n");
  // Idempotent statements: a second run is the same and harmless.
  ASSERT_TRUE(d.Provision(Record("mysql")));
  EXPECT_EQ(r.ran[1].input, r.ran[0].input);
}

TEST(MysqlDriver, RemoveAndPrepare) {
  FakeRunner r;
  auto d = Driver(r);
  ASSERT_TRUE(d.Remove(Record("mysql")));
  EXPECT_THAT(r.ran[0].input, HasSubstr("DROP DATABASE IF EXISTS `d0123456789abcdef`;"));
  EXPECT_THAT(r.ran[0].input, HasSubstr("DROP USER IF EXISTS 'u0123456789abcdef'@'%';"));
  EXPECT_THAT(r.ran[0].input, HasSubstr("KILL USER 'u0123456789abcdef';"));  // its open sessions
  EXPECT_LT(r.ran[0].input.find("DROP USER"), r.ran[0].input.find("DROP DATABASE"));
  ASSERT_TRUE(d.Prepare());
  EXPECT_THAT(r.ran[1].input, HasSubstr("DELETE FROM mysql.global_priv WHERE User = ''"));
}

TEST(MysqlDriver, ClientErrorsSayWhatToCheck) {
  FakeRunner r;
  r.failures = {"/usr/bin/mariadb ... failed (exit status 1): ERROR 2002: Can't connect"};
  auto d = Driver(r);
  auto p = d.Provision(Record("mysql"));
  ASSERT_FALSE(p);
  EXPECT_THAT(p.error(), HasSubstr("Can't connect"));
  EXPECT_THAT(p.error(), HasSubstr("kato process list"));
}

}  // namespace
}  // namespace kato
