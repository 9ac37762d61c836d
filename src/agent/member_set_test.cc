#include "agent/member_set.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace kato {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;

json Cluster(int64_t revision, const std::vector<std::string>& ids) {
  json nodes = json::array();
  for (const auto& id : ids) nodes.push_back({{"id", id}, {"ip", "10.0.0.1"}});
  return json{{"revision", revision}, {"nodes", nodes}};
}

HttpRequest From(const std::string& cn) {
  HttpRequest r;
  r.method = "GET";
  r.target = "/v1/status";
  r.peer_cn = cn;
  return r;
}

// The status a request gets (200: served).
int StatusFor(const MemberSet& m, const std::string& cn) {
  auto refused = m.Refuse(From(cn));
  return refused ? refused->status : 200;
}

TEST(MemberSetTest, NobodyIsAMemberUntilTheFirstUpdate) {
  MemberSet m;
  EXPECT_EQ(StatusFor(m, "node-a"), 503);
  EXPECT_THAT(m.Refuse(From("node-a"))->body, HasSubstr("try again"));
  EXPECT_EQ(StatusFor(m, ""), 401);
  EXPECT_FALSE(m.Contains("node-a"));
}

TEST(MemberSetTest, ServesMembersOnly) {
  MemberSet m;
  ASSERT_TRUE(m.Update(Cluster(3, {"node-a", "node-b"})).ok());
  EXPECT_EQ(m.revision(), 3);
  EXPECT_EQ(StatusFor(m, "node-a"), 200);
  EXPECT_EQ(StatusFor(m, "node-b"), 200);
  EXPECT_EQ(StatusFor(m, ""), 401);
  // A web certificate's CommonName is a host name, never a node id.
  auto refused = m.Refuse(From("api.example.com"));
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused->status, 403);
  EXPECT_THAT(json::parse(refused->body)["error"].get<std::string>(),
              HasSubstr("'api.example.com' is not a current member"));
}

TEST(MemberSetTest, ARemovedNodeIsRefusedFromTheNextUpdate) {
  MemberSet m;
  ASSERT_TRUE(m.Update(Cluster(3, {"node-a", "node-b"}).dump()).ok());
  ASSERT_TRUE(m.Update(Cluster(4, {"node-a"}).dump()).ok());
  EXPECT_EQ(StatusFor(m, "node-b"), 403);
  EXPECT_EQ(StatusFor(m, "node-a"), 200);
  m.Clear();  // the node itself left the cluster
  EXPECT_EQ(StatusFor(m, "node-a"), 503);
}

TEST(MemberSetTest, ADocumentWithoutNodesChangesNothing) {
  MemberSet m;
  ASSERT_TRUE(m.Update(Cluster(3, {"node-a"})).ok());
  for (const std::string bad : {"not json", "{}", R"({"nodes": 5})", "[1]"}) {
    SCOPED_TRACE(bad);
    EXPECT_FALSE(m.Update(bad).ok());
  }
  EXPECT_EQ(StatusFor(m, "node-a"), 200);
  EXPECT_EQ(m.revision(), 3);
  // Entries without a string id are skipped, the others count.
  ASSERT_TRUE(
      m.Update(json{{"revision", 5}, {"nodes", {{{"id", 7}}, {{"id", "node-c"}}, 3}}}).ok());
  EXPECT_EQ(StatusFor(m, "node-c"), 200);
  EXPECT_EQ(StatusFor(m, "node-a"), 403);
}

// The primary, as far as the follower sees it. Watches answer at once unless
// `blocking`, then they wait for a change or Close().
class FakeSource final : public MemberFollower::Source {
 public:
  explicit FakeSource(bool blocking) : blocking_(blocking) {}

  Result<std::string> Members() override {
    std::lock_guard lock(mu_);
    ++cluster_calls_;
    if (away_) return Err("connection refused");
    return kato::Cluster(members_revision_, ids_).dump();
  }
  Result<Revisions> Watch(int64_t after) override {
    std::unique_lock lock(mu_);
    ++watch_calls_;
    cv_.notify_all();
    if (away_) return Err("connection refused");
    if (blocking_) cv_.wait(lock, [&] { return revision_ > after || closed_; });
    return Revisions{revision_, members_revision_};
  }

  // The members change at `revision`.
  void Set(int64_t revision, std::vector<std::string> ids) {
    std::lock_guard lock(mu_);
    revision_ = members_revision_ = revision;
    ids_ = std::move(ids);
    cv_.notify_all();
  }
  // Something else changes (an app, an instance).
  void SetOther(int64_t revision) {
    std::lock_guard lock(mu_);
    revision_ = revision;
    cv_.notify_all();
  }
  void SetAway(bool away) {
    std::lock_guard lock(mu_);
    away_ = away;
  }
  void Close() {
    std::lock_guard lock(mu_);
    closed_ = true;
    cv_.notify_all();
  }
  int cluster_calls() {
    std::lock_guard lock(mu_);
    return cluster_calls_;
  }
  // Waits (bounded) until Watch has been called `n` times in all.
  bool WaitWatchCalls(int n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [&] { return watch_calls_ >= n; });
  }

 private:
  const bool blocking_;
  std::mutex mu_;
  std::condition_variable cv_;
  int64_t revision_ = 1, members_revision_ = 1;
  std::vector<std::string> ids_{"node-a", "node-b"};
  bool away_ = false, closed_ = false;
  int cluster_calls_ = 0, watch_calls_ = 0;
};

TEST(MemberFollowerTest, FetchesAgainOnlyWhenTheRevisionMoves) {
  MemberSet m;
  FakeSource source(/*blocking=*/false);
  MemberFollower f(m, source);
  ASSERT_TRUE(f.Step().ok());
  EXPECT_EQ(source.cluster_calls(), 1);
  EXPECT_TRUE(m.Contains("node-b"));
  ASSERT_TRUE(f.Step().ok());  // the watch timed out on the same revision
  EXPECT_EQ(source.cluster_calls(), 1);

  source.Set(2, {"node-a"});   // node-b removed
  ASSERT_TRUE(f.Step().ok());  // the watch sees revision 2
  ASSERT_TRUE(f.Step().ok());  // which is fetched
  EXPECT_EQ(source.cluster_calls(), 2);
  EXPECT_FALSE(m.Contains("node-b"));
  EXPECT_EQ(m.revision(), 2);
}

TEST(MemberFollowerTest, OtherChangesOfTheClusterFetchNothing) {
  MemberSet m;
  FakeSource source(/*blocking=*/false);
  MemberFollower f(m, source);
  ASSERT_TRUE(f.Step().ok());
  EXPECT_EQ(source.cluster_calls(), 1);
  for (int rev = 2; rev < 6; ++rev) {
    source.SetOther(rev);  // e.g. an app scaled: the members are the same
    ASSERT_TRUE(f.Step().ok());
  }
  EXPECT_EQ(source.cluster_calls(), 1);
  source.Set(7, {"node-a"});
  ASSERT_TRUE(f.Step().ok());
  ASSERT_TRUE(f.Step().ok());
  EXPECT_EQ(source.cluster_calls(), 2);
  EXPECT_FALSE(m.Contains("node-b"));
}

TEST(MemberFollowerTest, KeepsTheLastMembersWhileTheCoreIsAway) {
  MemberSet m;
  FakeSource source(/*blocking=*/false);
  MemberFollower f(m, source);
  ASSERT_TRUE(f.Step().ok());
  source.SetAway(true);
  source.Set(2, {});
  auto s = f.Step();
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.error(), HasSubstr("connection refused"));
  EXPECT_TRUE(m.Contains("node-a"));
  source.SetAway(false);
  ASSERT_TRUE(f.Step().ok());
  ASSERT_TRUE(f.Step().ok());
  EXPECT_FALSE(m.Contains("node-a"));
}

TEST(MemberFollowerTest, ARevisionLowerThanTheLastIsFetchedToo) {
  // A new primary (a restored store) may count from lower: follow it.
  MemberSet m;
  FakeSource source(/*blocking=*/false);
  source.Set(9, {"node-a"});
  MemberFollower f(m, source);
  ASSERT_TRUE(f.Step().ok());
  source.Set(4, {"node-c"});
  ASSERT_TRUE(f.Step().ok());
  ASSERT_TRUE(f.Step().ok());
  EXPECT_TRUE(m.Contains("node-c"));
  EXPECT_EQ(m.revision(), 4);
}

TEST(MemberFollowerTest, StartKnowsTheMembersAndTheThreadFollowsTheWatch) {
  MemberSet m;
  FakeSource source(/*blocking=*/true);
  MemberFollower f(m, source);
  f.Start();
  EXPECT_TRUE(m.Contains("node-b"));  // fetched before Start returns
  ASSERT_TRUE(source.WaitWatchCalls(1));
  source.Set(2, {"node-a"});
  // The second watch starts once the change has been fetched and applied.
  ASSERT_TRUE(source.WaitWatchCalls(2));
  EXPECT_FALSE(m.Contains("node-b"));
  EXPECT_TRUE(m.Contains("node-a"));
  source.Close();
  f.Stop();
  f.Stop();  // idempotent
}

TEST(MemberFollowerTest, StopEndsARetryWaitAtOnce) {
  MemberSet m;
  FakeSource source(/*blocking=*/false);
  source.SetAway(true);
  MemberFollower f(m, source, /*retry=*/Millis(600'000));
  f.Start();
  ASSERT_TRUE(source.WaitWatchCalls(0));
  auto t0 = std::chrono::steady_clock::now();
  f.Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(60));
  EXPECT_EQ(StatusFor(m, "node-a"), 503);  // never known: fail closed
}

}  // namespace
}  // namespace kato
