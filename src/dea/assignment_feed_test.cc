#include "dea/assignment_feed.h"

#include <atomic>
#include <condition_variable>
#include <mutex>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kato {
namespace {

using Docs = AssignmentFeed::Docs;

// The primary's side: a revision, this DEA's assignments, a watch that waits for a change.
class FakePrimary {
 public:
  void Assign(Docs docs) {
    std::lock_guard lock(mu_);
    docs_ = std::move(docs);
    ++rev_;
    cv_.notify_all();
  }
  void SetDown(bool down) {
    std::lock_guard lock(mu_);
    down_ = down;
  }
  AssignmentFeed::Source Source() {
    return {[this](int64_t after, Millis timeout) -> Result<int64_t> {
              std::unique_lock lock(mu_);
              ++watches_;
              if (down_) return Err("connection refused");
              cv_.wait_for(lock, timeout, [&] { return rev_ > after; });
              return rev_;
            },
            [this]() -> Result<Docs> {
              std::lock_guard lock(mu_);
              ++fetch_attempts_;
              if (down_) return Err("connection refused");
              return docs_;
            }};
  }
  int watches() {
    std::lock_guard lock(mu_);
    return watches_;
  }
  int fetch_attempts() {
    std::lock_guard lock(mu_);
    return fetch_attempts_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int64_t rev_ = 1;
  Docs docs_;
  bool down_ = false;
  int watches_ = 0;
  int fetch_attempts_ = 0;
};

template <class F>
bool WaitUntil(F done, Millis limit = Millis(5000)) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (done()) return true;
    std::this_thread::sleep_for(Millis(5));  // polling the condition, with a deadline
  }
  return done();
}

TEST(AssignmentFeedTest, FollowsTheDeasAssignmentsAsTheyChange) {
  FakePrimary primary;
  primary.Assign({{"web/0/a", "{}"}});
  AssignmentFeed feed(primary.Source(), {Millis(300), Millis(20)});
  EXPECT_FALSE(feed.Latest().has_value());
  feed.Start();
  ASSERT_TRUE(WaitUntil([&] { return feed.Latest() == Docs{{"web/0/a", "{}"}}; }));
  primary.Assign({{"web/0/a", "{}"}, {"web/1/b", "{}"}});
  ASSERT_TRUE(WaitUntil([&] { return feed.Latest() && feed.Latest()->size() == 2; }));
  primary.Assign({});
  ASSERT_TRUE(WaitUntil([&] { return feed.Latest() && feed.Latest()->empty(); }));
  feed.Stop();
}

TEST(AssignmentFeedTest, DoesNotPollWhenNothingChanges) {
  FakePrimary primary;
  AssignmentFeed feed(primary.Source(), {Millis(1000), Millis(20)});
  feed.Start();
  ASSERT_TRUE(WaitUntil([&] { return feed.Latest().has_value(); }));
  // Nothing changes: the feed waits in its watch, it does not read again.
  std::this_thread::sleep_for(Millis(300));  // a span of time in which nothing may happen
  EXPECT_LE(feed.fetches(), 2u);
  EXPECT_LE(primary.watches(), 2);
  feed.Stop();
}

TEST(AssignmentFeedTest, RetriesWhileTheCoreIsAwayAndKeepsTheLastAssignments) {
  FakePrimary primary;
  primary.Assign({{"web/0/a", "{}"}});
  AssignmentFeed feed(primary.Source(), {Millis(100), Millis(20)});
  feed.Start();
  ASSERT_TRUE(WaitUntil([&] { return feed.Latest().has_value(); }));
  primary.SetDown(true);
  primary.Assign({{"web/1/b", "{}"}});
  int before = primary.fetch_attempts();
  ASSERT_TRUE(
      WaitUntil([&] { return primary.fetch_attempts() >= before + 3; }));  // it keeps trying
  EXPECT_EQ(feed.Latest(), (Docs{{"web/0/a", "{}"}}));
  primary.SetDown(false);
  ASSERT_TRUE(WaitUntil([&] { return feed.Latest() == Docs{{"web/1/b", "{}"}}; }));
  feed.Stop();
}

TEST(AssignmentFeedTest, StopEndsAWaitingWatchWithinItsTimeout) {
  FakePrimary primary;
  AssignmentFeed feed(primary.Source(), {Millis(200), Millis(20)});
  feed.Start();
  ASSERT_TRUE(WaitUntil([&] { return primary.watches() >= 1; }));
  auto t0 = std::chrono::steady_clock::now();
  feed.Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, Millis(2000));
}

}  // namespace
}  // namespace kato
