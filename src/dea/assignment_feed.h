// AssignmentFeed: a DEA's own instance assignments, followed from the primary
// without polling. Its thread fetches them (GET /v1/docs/assignment?node=ID,
// from the primary's index) and long-polls the DEA's assignment scope
// (GET /v1/watch?node=ID&assignments=1), which wakes only when an assignment
// of this DEA is written; then it fetches again. Each watch reply's revision
// is the next watch's `after`, and every fetch follows the watch that woke
// it, so no change falls between the two. When the core is away it retries
// every `retry`. The thread is owned: Stop() joins it (within the watch's
// timeout, when a watch is in flight).
#pragma once

#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "common/result.h"

namespace kato {

class AssignmentFeed {
 public:
  using Docs = std::vector<std::pair<std::string, std::string>>;  // (key, value_json)
  struct Source {
    // Waits until this DEA's assignments change past `after` (or the timeout): a revision.
    std::function<Result<int64_t>(int64_t after, Millis timeout)> watch;
    // This DEA's assignments.
    std::function<Result<Docs>()> fetch;
  };
  struct Options {
    Millis watch_timeout{5000};
    Millis retry{1000};
  };

  AssignmentFeed(Source source, Options options);
  ~AssignmentFeed();
  AssignmentFeed(const AssignmentFeed&) = delete;
  AssignmentFeed& operator=(const AssignmentFeed&) = delete;

  void Start();
  // Asks the thread to end (it does after its call in flight); Stop() joins it.
  void RequestStop();
  void Stop();

  // The assignments as last fetched; nullopt until the first fetch succeeded.
  std::optional<Docs> Latest() const;
  // How many fetches succeeded (for tests and logs).
  uint64_t fetches() const;

 private:
  void Loop();
  bool Sleep(Millis d);  // false when stopping

  Source source_;
  Options options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::optional<Docs> latest_;
  uint64_t fetches_ = 0;
  std::thread thread_;
};

}  // namespace kato
