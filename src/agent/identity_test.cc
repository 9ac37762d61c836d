#include "agent/identity.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <set>
#include <string>

#include "common/fs.h"

namespace kato {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;

class IdentityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "kato_identity_test.XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    layout_.dir = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(layout_.dir); }

  NodeIdentity Load(const std::string& ip = "", const std::string& hostname = "") {
    auto id = LoadOrCreateIdentity(layout_, ip, hostname);
    EXPECT_TRUE(id.ok()) << id.error();
    return id.ok() ? *id : NodeIdentity{};
  }
  void Write(const std::string& path, const std::string& text) {
    ASSERT_TRUE(WriteFileAtomic(path, text, 0644).ok());
  }

  DataLayout layout_;
};

TEST_F(IdentityTest, CreatesAnIdOnceAndKeepsIt) {
  EXPECT_FALSE(PathExists(layout_.node_file()));
  NodeIdentity first = Load();
  EXPECT_THAT(first.id, MatchesRegex("[0-9a-f]{32}"));
  EXPECT_TRUE(PathExists(layout_.node_file()));
  char host[256] = {};
  ASSERT_EQ(::gethostname(host, sizeof host - 1), 0);
  EXPECT_EQ(first.hostname, host);  // the system's name by default
  EXPECT_EQ(first.ip, "");

  NodeIdentity again = Load();
  EXPECT_EQ(again.id, first.id);
  EXPECT_EQ(again.hostname, first.hostname);
  EXPECT_EQ(Load("10.0.0.5", "web1").id, first.id);  // overrides never change the id
}

TEST_F(IdentityTest, OverridesAreSaved) {
  NodeIdentity a = Load("10.0.0.5", "web1");
  EXPECT_EQ(a.ip, "10.0.0.5");
  EXPECT_EQ(a.hostname, "web1");
  NodeIdentity b = Load();
  EXPECT_EQ(b.ip, "10.0.0.5");
  EXPECT_EQ(b.hostname, "web1");
  NodeIdentity c = Load("10.0.0.6", "");
  EXPECT_EQ(c.ip, "10.0.0.6");
  EXPECT_EQ(c.hostname, "web1");
  EXPECT_EQ(Load().ip, "10.0.0.6");
  EXPECT_EQ(a.id, c.id);
}

TEST_F(IdentityTest, SaveIdentityIsWhatLoadReads) {
  NodeIdentity id{NewNodeId(), "10.1.2.3", "db"};
  ASSERT_TRUE(SaveIdentity(layout_, id).ok());
  NodeIdentity got = Load();
  EXPECT_EQ(got.id, id.id);
  EXPECT_EQ(got.ip, id.ip);
  EXPECT_EQ(got.hostname, id.hostname);
}

TEST_F(IdentityTest, DamagedNodeFileIsAClearErrorAndIsKept) {
  for (const char* text : {"{not json", "[]", "{}", R"({"ip":"10.0.0.5"})", R"({"id":7})",
                           R"({"id":"abc","ip":5})", R"({"id":"abc","hostname":["x"]})"}) {
    SCOPED_TRACE(text);
    Write(layout_.node_file(), text);
    auto id = LoadOrCreateIdentity(layout_, "10.0.0.9", "");
    ASSERT_FALSE(id.ok());
    EXPECT_THAT(id.error(), HasSubstr(layout_.node_file()));
    EXPECT_THAT(id.error(), HasSubstr("damaged"));
    EXPECT_EQ(ReadFile(layout_.node_file()).value(), text);  // never replaced by a new identity
  }
}

TEST_F(IdentityTest, UnwritableDataDirIsAnError) {
  DataLayout missing{layout_.dir + "/no/such/dir"};
  auto id = LoadOrCreateIdentity(missing, "", "");
  ASSERT_FALSE(id.ok());
  EXPECT_THAT(id.error(), HasSubstr("cannot write"));
}

TEST_F(IdentityTest, MissingClusterFileMeansNotAttached) {
  auto m = LoadMembership(layout_);
  ASSERT_TRUE(m.ok()) << m.error();
  EXPECT_FALSE(m->attached);
  EXPECT_EQ(m->core_ip, "");
  EXPECT_TRUE(m->roles.empty());
  EXPECT_EQ(m->revision, 0);
}

TEST_F(IdentityTest, MembershipRoundTrips) {
  Membership m;
  m.attached = true;
  m.core_ip = "10.0.0.1";
  m.endpoint = "api.example.com";
  m.cluster_version = "0.1.3";
  m.roles = {"router", "dea", "base"};
  m.revision = 1234567890123;
  ASSERT_TRUE(SaveMembership(layout_, m).ok());
  auto got = LoadMembership(layout_);
  ASSERT_TRUE(got.ok()) << got.error();
  EXPECT_TRUE(got->attached);
  EXPECT_EQ(got->core_ip, m.core_ip);
  EXPECT_EQ(got->endpoint, m.endpoint);
  EXPECT_EQ(got->cluster_version, m.cluster_version);
  EXPECT_THAT(got->roles, ElementsAre("router", "dea", "base"));
  EXPECT_EQ(got->revision, m.revision);

  m.attached = false;  // a detach is saved too
  m.roles.clear();
  ASSERT_TRUE(SaveMembership(layout_, m).ok());
  EXPECT_FALSE(LoadMembership(layout_)->attached);
  EXPECT_TRUE(LoadMembership(layout_)->roles.empty());
}

TEST_F(IdentityTest, DamagedClusterFileIsAClearError) {
  for (const char* text : {"{not json", "[]", R"({"attached":"yes"})", R"({"core_ip":1})",
                           R"({"revision":"seven"})"}) {
    SCOPED_TRACE(text);
    Write(layout_.cluster_file(), text);
    auto m = LoadMembership(layout_);
    ASSERT_FALSE(m.ok());
    EXPECT_THAT(m.error(), HasSubstr(layout_.cluster_file()));
    EXPECT_THAT(m.error(), HasSubstr("damaged"));
  }
}

TEST(NodeIdTest, ThirtyTwoHexCharsAndNewEachCall) {
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) {
    std::string id = NewNodeId();
    EXPECT_THAT(id, MatchesRegex("[0-9a-f]{32}"));
    seen.insert(id);
  }
  EXPECT_EQ(seen.size(), 100u);
}

}  // namespace
}  // namespace kato
