#include "services/postgres_driver.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "services/service_fakes_test.h"

namespace kato {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

const char kHasRole[] = "SELECT 1 FROM pg_roles WHERE rolname = 'u0123456789abcdef'";
const char kHasDb[] = "SELECT 1 FROM pg_database WHERE datname = 'd0123456789abcdef'";

PostgresDriver Driver(FakeSql::Log& log) {
  return PostgresDriver([&log]() -> Result<std::unique_ptr<SqlSession>> {
    ++log.connects;
    return std::unique_ptr<SqlSession>(new FakeSql(log));
  });
}

TEST(PostgresDriver, ProvisionCreatesARoleOwningADatabaseOnlyItReaches) {
  FakeSql::Log log;
  auto d = Driver(log);
  ASSERT_EQ(*d.Provision(Record("postgresql")), Progress::kDone);
  EXPECT_THAT(log.sql,
              ElementsAre(kHasRole,
                          "CREATE ROLE \"u0123456789abcdef\" LOGIN PASSWORD "
                          "'abcdef0123456789abcdef0123456789'",
                          kHasDb, "CREATE DATABASE \"d0123456789abcdef\" OWNER \"u0123456789abcdef\"",
                          "REVOKE CONNECT, TEMPORARY ON DATABASE \"d0123456789abcdef\" FROM PUBLIC",
                          "GRANT CONNECT, TEMPORARY ON DATABASE \"d0123456789abcdef\" TO "
                          "\"u0123456789abcdef\""));
  EXPECT_EQ(log.connects, 1);
}

TEST(PostgresDriver, ProvisionAgainCreatesNothing) {
  FakeSql::Log log;
  log.rows[kHasRole] = {"1"};
  log.rows[kHasDb] = {"1"};
  auto d = Driver(log);
  ASSERT_TRUE(d.Provision(Record("postgresql")));
  for (const auto& sql : log.sql) EXPECT_THAT(sql, Not(HasSubstr("CREATE"))) << sql;
  EXPECT_THAT(log.sql.back(), HasSubstr("GRANT CONNECT"));
}

TEST(PostgresDriver, AFailureDropsTheSessionAndSaysWhy) {
  FakeSql::Log log;
  log.fail_on = "CREATE DATABASE";
  auto d = Driver(log);
  auto r = d.Provision(Record("postgresql"));
  ASSERT_FALSE(r);
  EXPECT_THAT(r.error(), HasSubstr("boom"));
  EXPECT_THAT(r.error(), Not(HasSubstr("abcdef0123456789abcdef0123456789")));
  log.rows[kHasRole] = {"1"};  // the role was made before the failure
  ASSERT_TRUE(d.Provision(Record("postgresql")));
  EXPECT_EQ(log.connects, 2);
}

TEST(PostgresDriver, ConnectionErrorsAreReturned) {
  PostgresDriver d([]() -> Result<std::unique_ptr<SqlSession>> {
    return Err("cannot connect to PostgreSQL at 127.0.0.9:5432");
  });
  EXPECT_THAT(d.Provision(Record("postgresql")).error(), HasSubstr("cannot connect"));
  EXPECT_FALSE(d.Prepare());
}

TEST(PostgresDriver, PrepareClosesTheSharedDatabases) {
  FakeSql::Log log;
  auto d = Driver(log);
  ASSERT_TRUE(d.Prepare());
  EXPECT_THAT(log.sql, ElementsAre("REVOKE CONNECT, TEMPORARY ON DATABASE postgres FROM PUBLIC",
                                   "REVOKE CONNECT, TEMPORARY ON DATABASE template1 FROM PUBLIC"));
}

TEST(PostgresDriver, RemoveDropsDatabaseThenRole) {
  FakeSql::Log log;
  auto d = Driver(log);
  ASSERT_EQ(*d.Remove(Record("postgresql")), Progress::kDone);
  EXPECT_THAT(log.sql, ElementsAre("DROP DATABASE IF EXISTS \"d0123456789abcdef\" WITH (FORCE)",
                                   "DROP ROLE IF EXISTS \"u0123456789abcdef\""));
}

TEST(SqlQuoting, DoublesQuotes) {
  EXPECT_EQ(SqlLiteral("it's"), "'it''s'");
  EXPECT_EQ(SqlIdentifier("a\"b"), "\"a\"\"b\"");
}

}  // namespace
}  // namespace kato
