#include "services/record_check.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "services/service_fakes_test.h"

namespace kato {
namespace {

using ::testing::HasSubstr;

TEST(CheckServiceRecord, AcceptsWhatTheControllerWrites) {
  for (const char* t : {"postgresql", "mysql", "redis", "memcached", "rabbitmq", "filesystem"})
    EXPECT_TRUE(CheckServiceRecord(Record(t))) << t << ": " << CheckServiceRecord(Record(t)).error();
}

TEST(CheckServiceRecord, RefusesAnythingThatCouldReachSqlArgvOrPaths) {
  auto bad = [](auto change) {
    ServiceRecord s = Record("postgresql");
    change(s);
    return CheckServiceRecord(s);
  };
  EXPECT_THAT(bad([](auto& s) { s.id = "0123456789ABCDEF"; }).error(), HasSubstr("16 lowercase hex"));
  EXPECT_FALSE(bad([](auto& s) { s.id = "../../etc/passwd"; }));
  EXPECT_THAT(bad([](auto& s) { s.password = "x' OR '1'='1xxxxxxxxxxxxx"; }).error(),
              HasSubstr("letters and digits"));
  EXPECT_FALSE(bad([](auto& s) { s.password = "short"; }));
  EXPECT_THAT(bad([](auto& s) { s.username = "postgres"; }).error(), HasSubstr("u0123456789abcdef"));
  EXPECT_THAT(bad([](auto& s) { s.dbname = "template1"; }).error(), HasSubstr("d0123456789abcdef"));
  EXPECT_THAT(bad([](auto& s) { s.port = 5433; }).error(), HasSubstr("(5432)"));
  EXPECT_FALSE(bad([](auto& s) { s.type = "harbor"; }));
  ServiceRecord r = Record("redis");
  r.port = 6379;  // the role-wide server's
  EXPECT_THAT(CheckServiceRecord(r).error(), HasSubstr("outside 42000-42999"));
  r = Record("redis");
  r.username = "u" + r.id;
  EXPECT_FALSE(CheckServiceRecord(r));
  r = Record("memcached");
  r.plan_mb = 1 << 20;
  EXPECT_THAT(CheckServiceRecord(r).error(), HasSubstr("MB"));
}

TEST(CheckServiceRecord, AFilesystemsKeyAndSizeCannotReachItsFiles) {
  auto bad = [](auto change) {
    ServiceRecord s = Record("filesystem");
    change(s);
    return CheckServiceRecord(s);
  };
  // The public key goes into the sshd's authorized_keys file: one plain line.
  EXPECT_THAT(bad([](auto& s) { s.ssh_public_key += "\ncommand=\"sh\" ssh-ed25519 AAAA x"; }).error(),
              HasSubstr("authorized_keys line"));
  EXPECT_FALSE(bad([](auto& s) { s.ssh_public_key = "command=\"/bin/sh\" " + s.ssh_public_key; }));
  EXPECT_FALSE(bad([](auto& s) { s.ssh_public_key = "ecdsa-sha2-nistp256 AAAA bad,comment"; }));
  EXPECT_FALSE(bad([](auto& s) { s.ssh_public_key = ""; }));
  EXPECT_THAT(bad([](auto& s) { s.username = "root"; }).error(), HasSubstr("u0123456789abcdef"));
  EXPECT_THAT(bad([](auto& s) { s.port = 22; }).error(), HasSubstr("9450"));
  EXPECT_THAT(bad([](auto& s) { s.plan_mb = 8; }).error(), HasSubstr("64-65536 MB"));
  EXPECT_FALSE(bad([](auto& s) { s.id = "../x"; }));
}

TEST(InstanceMemoryMb, DefaultsTo64) {
  ServiceRecord s = Record("redis");
  s.plan_mb = 0;
  EXPECT_EQ(InstanceMemoryMb(s), 64);
  s.plan_mb = 128;
  EXPECT_EQ(InstanceMemoryMb(s), 128);
}

}  // namespace
}  // namespace kato
