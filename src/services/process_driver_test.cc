#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "common/fs.h"
#include "services/memcached_driver.h"
#include "services/redis_driver.h"
#include "services/service_fakes_test.h"

namespace kato {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

class ProcessDriverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kato-procdrv-XXXXXX";
    root_ = ::mkdtemp(tmpl);
    user_ = ::getpwuid(::geteuid())->pw_name;  // tests own their files
  }
  void TearDown() override { std::filesystem::remove_all(root_); }
  ProcessDriverConfig Config(const std::string& bin) {
    return {root_ + "/instances", "127.0.0.9", bin, user_, root_ + "/logs"};
  }
  static int Mode(const std::string& path) {
    struct stat st {};
    ::stat(path.c_str(), &st);
    return st.st_mode & 0777;
  }
  std::string root_, user_;
  FakeHost host_;
};

TEST_F(ProcessDriverTest, RedisGetsItsOwnConfigAndProcess) {
  RedisDriver d(Config("/usr/bin/redis-server"), host_);
  const ServiceRecord s = Record("redis");
  ASSERT_EQ(*d.Provision(s), Progress::kPending);  // starting
  const std::string dir = root_ + "/instances/" + s.id;
  const ProcessSpec& spec = host_.wanted.at("redis-" + s.id);
  EXPECT_THAT(spec.argv, ElementsAre("/usr/bin/redis-server", dir + "/redis.conf"));
  EXPECT_EQ(spec.user, user_);
  EXPECT_EQ(spec.ready->host, "127.0.0.9");
  EXPECT_EQ(spec.ready->port, 42001);
  EXPECT_EQ(spec.cwd, dir);
  for (const auto& a : spec.argv) EXPECT_THAT(a, Not(HasSubstr(kPassword)));
  auto conf = ReadFile(dir + "/redis.conf");
  ASSERT_TRUE(conf);
  EXPECT_THAT(*conf, HasSubstr("requirepass abcdef0123456789abcdef0123456789\n"));
  EXPECT_THAT(*conf, HasSubstr("bind 127.0.0.9\nport 42001\n"));
  EXPECT_THAT(*conf, HasSubstr("maxmemory 64mb\nmaxmemory-policy noeviction\n"));
  EXPECT_THAT(*conf, HasSubstr("dir " + dir + "\nappendonly yes\n"));
  EXPECT_EQ(Mode(dir + "/redis.conf"), 0600);
  EXPECT_EQ(Mode(dir), 0700);
  host_.states["redis-" + s.id] = ProcState::kRunning;
  EXPECT_EQ(*d.Provision(s), Progress::kDone);
  EXPECT_EQ(host_.wanted.size(), 1u);
}

TEST_F(ProcessDriverTest, MemcachedAuthenticatesFromAFileOnlyItReads) {
  MemcachedDriver d(Config("/usr/bin/memcached"), host_);
  ServiceRecord s = Record("memcached");
  s.plan_mb = 128;
  ASSERT_TRUE(d.Provision(s));
  const std::string dir = root_ + "/instances/" + s.id;
  EXPECT_THAT(host_.wanted.at("memcached-" + s.id).argv,
              ElementsAre("/usr/bin/memcached", "-l", "127.0.0.9", "-p", "42001", "-U", "0", "-u",
                          user_, "-m", "128", "-Y", dir + "/auth"));
  EXPECT_EQ(*ReadFile(dir + "/auth"), "u0123456789abcdef:abcdef0123456789abcdef0123456789\n");
  EXPECT_EQ(Mode(dir + "/auth"), 0400);
}

TEST_F(ProcessDriverTest, AProcessThatWillNotStartFails) {
  RedisDriver d(Config("/usr/bin/redis-server"), host_);
  const ServiceRecord s = Record("redis");
  host_.states["redis-" + s.id] = ProcState::kFatal;
  auto r = d.Provision(s);
  ASSERT_FALSE(r);
  EXPECT_THAT(r.error(), HasSubstr("exited with status 1"));
  EXPECT_THAT(r.error(), HasSubstr("/logs/redis-" + s.id + ".log"));
}

TEST_F(ProcessDriverTest, RemoveStopsFirstThenDeletesTheDirectory) {
  RedisDriver d(Config("/usr/bin/redis-server"), host_);
  const ServiceRecord s = Record("redis");
  ASSERT_TRUE(d.Provision(s));
  const std::string dir = root_ + "/instances/" + s.id;
  ASSERT_EQ(*d.Remove(s), Progress::kPending);  // stopping
  EXPECT_TRUE(PathExists(dir));
  EXPECT_FALSE(host_.wanted.count("redis-" + s.id));
  host_.states.erase("redis-" + s.id);  // it exited
  ASSERT_EQ(*d.Remove(s), Progress::kDone);
  EXPECT_FALSE(PathExists(dir));
  EXPECT_EQ(*d.Remove(s), Progress::kDone);  // again: nothing left, no error
}

TEST_F(ProcessDriverTest, SweepRemovesInstancesNoRecordNames) {
  RedisDriver d(Config("/usr/bin/redis-server"), host_);
  const ServiceRecord kept = Record("redis", "1111111111111111");
  const ServiceRecord gone = Record("redis", "2222222222222222");
  ASSERT_TRUE(d.Provision(kept));
  ASSERT_TRUE(d.Provision(gone));
  ASSERT_TRUE(MakeDirs(root_ + "/instances/not-an-id", 0700));
  host_.states["memcached-3333333333333333"] = ProcState::kRunning;  // another driver's
  d.Sweep({kept.id});
  EXPECT_TRUE(host_.wanted.count("redis-" + kept.id));
  EXPECT_FALSE(host_.wanted.count("redis-" + gone.id));
  host_.states.erase("redis-" + gone.id);
  d.Sweep({kept.id});
  EXPECT_FALSE(PathExists(root_ + "/instances/" + gone.id));
  EXPECT_TRUE(PathExists(root_ + "/instances/" + kept.id));
  EXPECT_TRUE(PathExists(root_ + "/instances/not-an-id"));
  EXPECT_EQ(host_.states.at("memcached-3333333333333333"), ProcState::kRunning);
}

}  // namespace
}  // namespace kato
