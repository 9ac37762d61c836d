#include "dea/assignment_feed.h"

#include "common/log.h"

namespace kato {

AssignmentFeed::AssignmentFeed(Source source, Options options)
    : source_(std::move(source)), options_(options) {}

AssignmentFeed::~AssignmentFeed() { Stop(); }

void AssignmentFeed::Start() {
  std::lock_guard lock(mu_);
  if (thread_.joinable()) return;
  stopping_ = false;
  thread_ = std::thread([this] { Loop(); });
}

void AssignmentFeed::RequestStop() {
  std::lock_guard lock(mu_);
  stopping_ = true;
  cv_.notify_all();
}

void AssignmentFeed::Stop() {
  RequestStop();
  if (thread_.joinable()) thread_.join();
}

std::optional<AssignmentFeed::Docs> AssignmentFeed::Latest() const {
  std::lock_guard lock(mu_);
  return latest_;
}

uint64_t AssignmentFeed::fetches() const {
  std::lock_guard lock(mu_);
  return fetches_;
}

bool AssignmentFeed::Sleep(Millis d) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, d, [&] { return stopping_; });
  return !stopping_;
}

void AssignmentFeed::Loop() {
  int64_t after = 0;
  bool fetched = false;  // since the last watch reply
  bool warned = false;
  while (Sleep(Millis(0))) {
    if (!fetched) {
      auto docs = source_.fetch();
      if (!docs) {
        if (!warned) LogWarn("dea: cannot read this DEA's assignments: {}", docs.error());
        warned = true;
        if (!Sleep(options_.retry)) return;
        continue;
      }
      std::lock_guard lock(mu_);
      latest_ = std::move(*docs);
      ++fetches_;
      fetched = true;
      warned = false;
    }
    auto rev = source_.watch(after, options_.watch_timeout);
    if (!rev) {
      if (!Sleep(options_.retry)) return;
      fetched = false;  // the core may have missed nothing, or everything: read again
      continue;
    }
    // A reply: a change of this DEA's assignments, or the timeout (read again either way;
    // the read is of this DEA's own assignments only).
    after = *rev;
    fetched = false;
  }
}

}  // namespace kato
