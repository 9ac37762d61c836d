#include "common/work_queue.h"

#include <atomic>
#include <future>
#include <memory>

#include "gtest/gtest.h"

namespace kato {
namespace {

// A task that blocks until released, and says when it has started.
struct Gate {
  std::promise<void> started, release;
  std::shared_future<void> released{release.get_future().share()};
  std::function<void()> Task() {
    return [this] {
      started.set_value();
      released.wait();
    };
  }
};

TEST(WorkQueueTest, RunsEveryTaskOnItsThreads) {
  WorkQueue q(2, 16);
  std::atomic<int> ran{0};
  std::promise<void> all;
  for (int i = 0; i < 10; ++i)
    ASSERT_TRUE(q.TrySubmit([&] {
      if (++ran == 10) all.set_value();
    }));
  all.get_future().wait();
  EXPECT_EQ(ran, 10);
}

TEST(WorkQueueTest, AFullQueueRefusesAtOnce) {
  WorkQueue q(1, 2);
  Gate busy;
  ASSERT_TRUE(q.TrySubmit(busy.Task()));
  busy.started.get_future().wait();  // the only thread is taken
  std::atomic<int> ran{0};
  EXPECT_TRUE(q.TrySubmit([&] { ++ran; }));
  EXPECT_TRUE(q.TrySubmit([&] { ++ran; }));
  EXPECT_EQ(q.queued(), 2u);
  bool refused_ran = false;
  EXPECT_FALSE(q.TrySubmit([&] { refused_ran = true; }));
  busy.release.set_value();
  std::promise<void> after;
  // Space again once the thread is free: the queue drains in order.
  while (!q.TrySubmit([&] { after.set_value(); })) std::this_thread::yield();
  after.get_future().wait();
  EXPECT_EQ(ran, 2);
  EXPECT_FALSE(refused_ran);
}

TEST(WorkQueueTest, StopFinishesRunningTasksAndDropsWaitingOnes) {
  WorkQueue q(1, 4);
  Gate busy;
  ASSERT_TRUE(q.TrySubmit(busy.Task()));
  busy.started.get_future().wait();
  // A waiting task is destroyed without running (what it owns is released).
  auto owned = std::make_shared<int>(1);
  std::weak_ptr<int> watch = owned;
  bool waiting_ran = false;
  ASSERT_TRUE(q.TrySubmit([&waiting_ran, owned = std::move(owned)] { waiting_ran = true; }));
  std::atomic<bool> running_done{false};
  auto stopper = std::async(std::launch::async, [&] {
    q.Stop();
    return running_done.load();
  });
  // Stop waits for the running task: release it, and Stop returns after it.
  while (!watch.expired()) std::this_thread::yield();  // Stop has dropped the waiting task
  running_done = true;
  busy.release.set_value();
  EXPECT_TRUE(stopper.get());
  EXPECT_FALSE(waiting_ran);
  EXPECT_FALSE(q.TrySubmit([] {}));  // stopped: refuses
  q.Stop();                          // idempotent
}

TEST(WorkQueueTest, ATaskThatThrowsDoesNotKillItsThread) {
  WorkQueue q(1, 4);
  ASSERT_TRUE(q.TrySubmit([] { throw std::runtime_error("boom"); }));
  std::promise<void> next;
  ASSERT_TRUE(q.TrySubmit([&] { next.set_value(); }));
  next.get_future().wait();
}

}  // namespace
}  // namespace kato
