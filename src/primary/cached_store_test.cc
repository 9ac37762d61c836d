#include "primary/cached_store.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <string>

namespace kato {
namespace {

class CachedStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = "/tmp/kato-cached-store-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    auto s = OpenSqliteStore(dir_ + "/state.db");
    ASSERT_TRUE(s.ok()) << s.error();
    inner_ = std::move(*s);
    cached_ = std::make_unique<CachedStore>(*inner_);
  }
  void TearDown() override {
    cached_.reset();
    inner_.reset();
    (void)system(("rm -rf " + dir_).c_str());
  }
  static NodeRecord Node(const std::string& id, const std::string& ip) {
    return NodeRecord{id, ip, "host-" + id, "0.1.0", {"base"}, 1};
  }

  std::string dir_;
  std::unique_ptr<Store> inner_;
  std::unique_ptr<CachedStore> cached_;
};

TEST_F(CachedStoreTest, ReadsAreServedFromMemoryUntilAWriteThroughIt) {
  ASSERT_TRUE(cached_->PutNode(Node("a", "127.0.0.2")).ok());
  ASSERT_TRUE(cached_->SetSetting("endpoint", "api.one").ok());
  ASSERT_EQ((*cached_->GetNode("a"))->ip, "127.0.0.2");
  ASSERT_EQ(**cached_->GetSetting("endpoint"), "api.one");
  int64_t rev = *cached_->Revision();
  EXPECT_FALSE(*cached_->IsRemoved("a"));

  // Written behind its back (never done in the primary): the cache does not see it,
  // which shows the reads above did not go to the database again.
  ASSERT_TRUE(inner_->PutNode(Node("a", "127.0.0.9")).ok());
  ASSERT_TRUE(inner_->SetSetting("endpoint", "api.two").ok());
  EXPECT_EQ((*cached_->GetNode("a"))->ip, "127.0.0.2");
  EXPECT_EQ(**cached_->GetSetting("endpoint"), "api.one");
  EXPECT_EQ(*cached_->Revision(), rev);

  // A write through it drops what that write can change.
  ASSERT_TRUE(cached_->SetSetting("endpoint", "api.three").ok());
  EXPECT_EQ(**cached_->GetSetting("endpoint"), "api.three");
  EXPECT_GT(*cached_->Revision(), rev);
  ASSERT_TRUE(cached_->PutNode(Node("b", "127.0.0.3")).ok());
  EXPECT_EQ((*cached_->GetNode("a"))->ip, "127.0.0.9");
  EXPECT_EQ((*cached_->FindNodeByIp("127.0.0.3"))->id, "b");
  EXPECT_EQ(cached_->ListNodes()->size(), 2u);
}

TEST_F(CachedStoreTest, EveryWriteMovesTheRevisionSeen) {
  int64_t rev = *cached_->Revision();
  auto moved = [&] {
    int64_t now = *cached_->Revision();
    bool m = now > rev;
    rev = now;
    return m;
  };
  ASSERT_TRUE(cached_->PutDoc("app", "web", "{}").ok());
  EXPECT_TRUE(moved());
  ASSERT_TRUE(*cached_->DeleteDoc("app", "web"));
  EXPECT_TRUE(moved());
  ASSERT_TRUE(cached_->WriteDocs({{"app", "web", "{}"}, {"app", "api", "{}"}}).ok());
  EXPECT_TRUE(moved());
  ASSERT_TRUE(cached_->SetConfig(ConfigEntry{"dea", "x", "1"}).ok());
  EXPECT_TRUE(moved());
  ASSERT_TRUE(cached_->PutNode(Node("a", "127.0.0.2")).ok());
  EXPECT_TRUE(moved());
  ASSERT_TRUE(cached_->RemoveNode("a").ok());
  EXPECT_TRUE(moved());
}

TEST_F(CachedStoreTest, RemovalAndRejoinAreSeenAtOnce) {
  ASSERT_TRUE(cached_->PutNode(Node("a", "127.0.0.2")).ok());
  EXPECT_FALSE(*cached_->IsRemoved("a"));
  ASSERT_TRUE(cached_->RemoveNode("a").ok());
  EXPECT_TRUE(*cached_->IsRemoved("a"));
  EXPECT_FALSE(cached_->GetNode("a")->has_value());
  ASSERT_TRUE(cached_->PutNode(Node("a", "127.0.0.2")).ok());
  ASSERT_TRUE(cached_->ClearRemoved("a").ok());
  EXPECT_FALSE(*cached_->IsRemoved("a"));
  EXPECT_TRUE(cached_->GetNode("a")->has_value());
}

TEST_F(CachedStoreTest, LoadReplacesEverything) {
  ASSERT_TRUE(cached_->PutNode(Node("a", "127.0.0.2")).ok());
  ASSERT_TRUE(cached_->SetSetting("endpoint", "api.one").ok());
  auto snap = cached_->Dump();
  ASSERT_TRUE(snap.ok()) << snap.error();
  // Into an empty store whose (empty) answers are in the cache.
  auto other = OpenSqliteStore(dir_ + "/other.db");
  ASSERT_TRUE(other.ok()) << other.error();
  CachedStore fresh(**other);
  ASSERT_FALSE(fresh.GetSetting("endpoint")->has_value());
  ASSERT_FALSE(fresh.GetNode("a")->has_value());
  ASSERT_TRUE(fresh.Load(*snap).ok());
  EXPECT_EQ(**fresh.GetSetting("endpoint"), "api.one");
  EXPECT_TRUE(fresh.GetNode("a")->has_value());
}

}  // namespace
}  // namespace kato
