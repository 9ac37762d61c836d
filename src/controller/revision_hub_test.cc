#include "controller/revision_hub.h"

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kato {
namespace {

using ::testing::HasSubstr;

// A watch the test drives: it answers when the revision passes `after`, or after `timeout`.
class FakeWatch {
 public:
  Result<int64_t> Watch(int64_t after, Millis timeout) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return revision_ > after || stop_; });
    return revision_;
  }
  void Set(int64_t rev) {
    {
      std::lock_guard lock(mu_);
      revision_ = rev;
    }
    cv_.notify_all();
  }
  void Stop() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int64_t revision_ = 5;
  bool stop_ = false;
};

struct Answers {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<HttpResponse> got;
  kato::Responder Reply() {
    return [this](HttpResponse r) {
      std::lock_guard lock(mu);
      got.push_back(std::move(r));
      cv.notify_all();
    };
  }
  bool WaitFor(size_t n, Millis within = Millis(5000)) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, within, [&] { return got.size() >= n; });
  }
};

HttpRequest Events(const std::string& last_id = "") {
  HttpRequest r;
  r.method = "GET";
  r.target = "/v2/events";
  if (!last_id.empty()) r.headers["last-event-id"] = last_id;
  return r;
}

TEST(RevisionHubTest, AnswersWhenTheRevisionPassesWhatThePageSaw) {
  FakeWatch watch;
  RevisionHub hub({Millis(10000), 10}, [&](int64_t a, Millis t) { return watch.Watch(a, t); });
  hub.Start();
  Answers first;
  // A first request (no Last-Event-ID) learns the current revision at once.
  for (int i = 0; i < 100 && first.got.empty(); ++i) {
    hub.Wait(Events(), first.Reply());
    if (!first.WaitFor(1, Millis(50))) continue;
  }
  ASSERT_FALSE(first.got.empty());
  EXPECT_EQ(first.got[0].content_type, "text/event-stream");
  EXPECT_THAT(first.got[0].body, HasSubstr("id: 5\n"));
  // One that has seen 5 waits for 6.
  Answers next;
  hub.Wait(Events("5"), next.Reply());
  EXPECT_FALSE(next.WaitFor(1, Millis(100)));
  watch.Set(6);
  ASSERT_TRUE(next.WaitFor(1));
  EXPECT_THAT(next.got[0].body, HasSubstr("id: 6\nevent: revision\ndata: {\"revision\":6}"));
  watch.Stop();
  hub.Stop();
}

TEST(RevisionHubTest, WaitsAreBoundedAndStopAnswersEveryone) {
  FakeWatch watch;
  RevisionHub hub({Millis(200), 2}, [&](int64_t a, Millis t) { return watch.Watch(a, t); });
  hub.Start();
  Answers a;
  hub.Wait(Events("5"), a.Reply());
  ASSERT_TRUE(a.WaitFor(1, Millis(3000)));  // after the hold: a comment, no event
  EXPECT_THAT(a.got[0].body, HasSubstr(": nothing changed"));
  EXPECT_EQ(a.got[0].body.find("id:"), std::string::npos);
  Answers b;
  hub.Wait(Events("5"), b.Reply());
  hub.Wait(Events("5"), b.Reply());
  hub.Wait(Events("5"), b.Reply());  // the third is over the limit
  ASSERT_TRUE(b.WaitFor(1));
  EXPECT_EQ(b.got[0].status, 503);
  watch.Stop();
  hub.Stop();
  EXPECT_TRUE(b.WaitFor(3));
  Answers late;
  hub.Wait(Events("5"), late.Reply());
  ASSERT_TRUE(late.WaitFor(1));
  EXPECT_EQ(late.got[0].status, 503);
  EXPECT_TRUE(RevisionHub::Serves(Events()));
  HttpRequest post = Events();
  post.method = "POST";
  EXPECT_FALSE(RevisionHub::Serves(post));
}

TEST(RevisionHubTest, IdleItPollsNothingAndStopsPromptly) {
  FakeWatch watch;
  std::atomic<int> calls{0};
  RevisionHub hub({Millis(10000), 10, Millis(300)}, [&](int64_t a, Millis t) {
    ++calls;
    return watch.Watch(a, t);
  });
  hub.Start();
  std::this_thread::sleep_for(Millis(200));  // a span with nobody waiting, not a condition
  EXPECT_EQ(calls, 0);
  Answers a;
  hub.Wait(Events("5"), a.Reply());  // waits for a revision past 5: the watch is polled
  auto start = std::chrono::steady_clock::now();
  while (calls == 0 && std::chrono::steady_clock::now() - start < Millis(5000))
    std::this_thread::yield();
  EXPECT_GT(calls, 0);
  // The controller's shutdown: at most one poll, not the page's whole hold.
  start = std::chrono::steady_clock::now();
  hub.Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, Millis(2000));
  ASSERT_TRUE(a.WaitFor(1));
  watch.Stop();
}

}  // namespace
}  // namespace kato
