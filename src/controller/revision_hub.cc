#include "controller/revision_hub.h"

#include <cstdlib>

#include "common/json_reply.h"

namespace kato {

RevisionHub::RevisionHub(Options options, Watch watch)
    : options_(options), watch_(std::move(watch)) {}

RevisionHub::~RevisionHub() { Stop(); }

void RevisionHub::Start() {
  std::lock_guard lock(mu_);
  if (thread_.joinable() || stopping_) return;
  thread_ = std::thread([this] { Loop(); });
}

void RevisionHub::Stop() {
  std::vector<Waiter> left;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    left.swap(waiters_);
  }
  cv_.notify_all();
  for (auto& w : left) w.respond(Reply("retry: 1000\n: the controller is stopping\n\n"));
  if (thread_.joinable()) thread_.join();
}

bool RevisionHub::Serves(const HttpRequest& req) {
  return req.method == "GET" && req.target.substr(0, req.target.find('?')) == "/v2/events";
}

std::string RevisionHub::EventBody(int64_t revision) {
  return "retry: 250\nid: " + std::to_string(revision) +
         "\nevent: revision\ndata: {\"revision\":" + std::to_string(revision) + "}\n\n";
}

HttpResponse RevisionHub::Reply(const std::string& body) {
  HttpResponse r;
  r.body = body;
  r.content_type = "text/event-stream";
  r.headers["Cache-Control"] = "no-store";
  return r;
}

void RevisionHub::Wait(const HttpRequest& req, Responder respond) {
  int64_t after = -1;
  if (auto it = req.headers.find("last-event-id"); it != req.headers.end()) {
    char* end = nullptr;
    long long v = std::strtoll(it->second.c_str(), &end, 10);
    if (end && *end == '\0' && !it->second.empty() && v >= 0) after = v;
  }
  std::unique_lock lock(mu_);
  if (stopping_) {
    lock.unlock();
    return respond(ErrorReply(503, "the controller is stopping"));
  }
  if (revision_ >= 0 && revision_ > after) {
    int64_t rev = revision_;
    lock.unlock();
    return respond(Reply(EventBody(rev)));
  }
  if (waiters_.size() >= options_.max_waiters) {
    lock.unlock();
    HttpResponse busy = ErrorReply(503, "too many pages are watching this controller");
    busy.headers["Retry-After"] = "5";
    return respond(std::move(busy));
  }
  waiters_.push_back({after, std::chrono::steady_clock::now() + options_.hold, std::move(respond)});
  lock.unlock();
  cv_.notify_all();  // the loop watches only while someone waits
}

void RevisionHub::Loop() {
  int64_t seen = -1;
  for (;;) {
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !waiters_.empty(); });
      if (stopping_) return;
    }
    auto rev = watch_(seen, options_.poll);
    std::vector<std::pair<Responder, std::string>> answers;
    {
      std::unique_lock lock(mu_);
      if (stopping_) return;
      if (rev) {
        seen = *rev;
        revision_ = *rev;
      }
      auto now = std::chrono::steady_clock::now();
      std::vector<Waiter> keep;
      for (auto& w : waiters_) {
        if (revision_ >= 0 && revision_ > w.after)
          answers.emplace_back(std::move(w.respond), EventBody(revision_));
        else if (now >= w.deadline)
          answers.emplace_back(std::move(w.respond), "retry: 250\n: nothing changed\n\n");
        else
          keep.push_back(std::move(w));
      }
      waiters_.swap(keep);
      if (!rev) cv_.wait_for(lock, Millis(500), [this] { return stopping_; });  // the core is away
    }
    for (auto& [respond, body] : answers) respond(Reply(body));
  }
}

}  // namespace kato
