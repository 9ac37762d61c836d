#include "services/rabbit_driver.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "common/pki.h"
#include "services/service_fakes_test.h"

namespace kato {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

TEST(RabbitDriver, OneImportWithTheHashOnStdin) {
  FakeRunner r;
  RabbitDriver d(r, {"/usr/bin/env", "HOME=/d/rabbitmq", "/usr/sbin/rabbitmqctl"});
  ASSERT_EQ(*d.Provision(Record("rabbitmq")), Progress::kDone);
  ASSERT_EQ(r.ran.size(), 1u);
  EXPECT_THAT(r.ran[0].argv, ElementsAre("/usr/bin/env", "HOME=/d/rabbitmq", "/usr/sbin/rabbitmqctl",
                                         "--quiet", "import_definitions", "--format", "json"));
  EXPECT_THAT(r.ran[0].input, Not(HasSubstr(kPassword)));
  auto j = nlohmann::json::parse(r.ran[0].input);
  EXPECT_EQ(j["users"][0]["name"], "u0123456789abcdef");
  EXPECT_EQ(j["users"][0]["hashing_algorithm"], "rabbit_password_hashing_sha256");
  EXPECT_EQ(j["vhosts"][0]["name"], "v0123456789abcdef");
  EXPECT_EQ(j["permissions"][0]["vhost"], "v0123456789abcdef");
  EXPECT_EQ(j["permissions"][0]["user"], "u0123456789abcdef");
  // The hash checks out: base64(salt + sha256(salt + password)).
  auto raw = Base64Decode(j["users"][0]["password_hash"].get<std::string>());
  ASSERT_TRUE(raw);
  ASSERT_EQ(raw->size(), 36u);
  EXPECT_EQ(j["users"][0]["password_hash"], RabbitPasswordHash(kPassword, raw->substr(0, 4)));
}

TEST(RabbitPasswordHash, KnownValue) {
  // base64(salt + sha256(salt + "secret")), computed with Python's hashlib.
  EXPECT_EQ(RabbitPasswordHash("secret", std::string("\x01\x02\x03\x04", 4)),
            "AQIDBDB9kM21iEUzN1lZ+6VReCsdNqS0sERdAQTcY6Xs3PMz");
}

TEST(RabbitDriver, RemoveAndPrepareTolerateWhatIsAlreadyGone) {
  FakeRunner r;
  RabbitDriver d(r, {"/ctl"});
  r.failures = {"Error: Virtual host 'v0123456789abcdef' does not exist", ""};
  ASSERT_TRUE(d.Remove(Record("rabbitmq")));
  EXPECT_THAT(r.ran[0].argv, ElementsAre("/ctl", "--quiet", "delete_vhost", "v0123456789abcdef"));
  EXPECT_THAT(r.ran[1].argv, ElementsAre("/ctl", "--quiet", "delete_user", "u0123456789abcdef"));
  r.failures = {"Error:\nUser \"guest\" does not exist"};
  ASSERT_TRUE(d.Prepare());
  EXPECT_THAT(r.ran[2].argv, ElementsAre("/ctl", "--quiet", "delete_user", "guest"));
  r.failures = {"Error: unable to perform an operation on node 'kato-x@localhost'"};
  auto p = d.Prepare();
  ASSERT_FALSE(p);
  EXPECT_THAT(p.error(), HasSubstr("unable to perform"));
}

}  // namespace
}  // namespace kato
