#include "primary/assignment_index.h"

#include <filesystem>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kato {
namespace {

using Docs = std::vector<std::pair<std::string, std::string>>;

class AssignmentIndexTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kato-assignment-index-test-XXXXXX";
    dir_ = mkdtemp(tmpl);
    auto s = OpenSqliteStore(dir_ + "/state.db");
    ASSERT_TRUE(s.ok()) << s.error();
    store_ = std::move(*s);
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  static std::string On(const std::string& node) { return R"({"node_id":")" + node + R"("})"; }

  std::string dir_;
  std::unique_ptr<Store> store_;
  AssignmentIndex index_;
};

TEST_F(AssignmentIndexTest, LoadsFromTheStoreAndKeepsEachDeasOwn) {
  ASSERT_TRUE(store_->PutDoc("assignment", "web/0/a", On("n1")).ok());
  ASSERT_TRUE(store_->PutDoc("assignment", "web/1/b", On("n2")).ok());
  ASSERT_TRUE(store_->PutDoc("assignment", "api/0/c", On("n1")).ok());
  ASSERT_TRUE(store_->PutDoc("assignment", "odd/0/d", R"({"index":0})").ok());  // no DEA named
  ASSERT_TRUE(store_->PutDoc("app", "web", On("n1")).ok());                     // another kind
  ASSERT_TRUE(index_.EnsureLoaded(*store_).ok());
  EXPECT_EQ(index_.Of("n1"), (Docs{{"api/0/c", On("n1")}, {"web/0/a", On("n1")}}));
  EXPECT_EQ(index_.Of("n2"), (Docs{{"web/1/b", On("n2")}}));
  EXPECT_TRUE(index_.Of("n3").empty());
}

TEST_F(AssignmentIndexTest, WritesTouchTheOldAndTheNewDea) {
  ASSERT_TRUE(index_.EnsureLoaded(*store_).ok());
  std::set<std::string> touched;
  index_.Apply({"assignment", "web/0/a", On("n1")}, touched);
  EXPECT_EQ(touched, (std::set<std::string>{"n1"}));
  touched.clear();
  index_.Apply({"assignment", "web/0/a", On("n2")}, touched);  // moved: both DEAs learn it
  EXPECT_EQ(touched, (std::set<std::string>{"n1", "n2"}));
  EXPECT_TRUE(index_.Of("n1").empty());
  EXPECT_EQ(index_.Of("n2").size(), 1u);
  touched.clear();
  index_.Apply({"app", "web", On("n3")}, touched);                  // not an assignment
  index_.Apply({"assignment", "nope/0/x", std::nullopt}, touched);  // not there
  EXPECT_TRUE(touched.empty());
  index_.Apply({"assignment", "web/0/a", std::nullopt}, touched);
  EXPECT_EQ(touched, (std::set<std::string>{"n2"}));
  EXPECT_TRUE(index_.Of("n2").empty());
}

TEST_F(AssignmentIndexTest, WritesBeforeTheLoadAreReadByTheLoad) {
  std::set<std::string> touched;
  index_.Apply({"assignment", "web/0/a", On("n1")}, touched);  // not loaded: ignored
  EXPECT_FALSE(index_.loaded());
  ASSERT_TRUE(store_->PutDoc("assignment", "web/0/a", On("n1")).ok());
  ASSERT_TRUE(index_.EnsureLoaded(*store_).ok());
  EXPECT_EQ(index_.Of("n1").size(), 1u);
}

}  // namespace
}  // namespace kato
