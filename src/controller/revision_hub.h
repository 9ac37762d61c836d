// RevisionHub: server-sent events of the cluster revision for the Management
// Console (GET /v2/events), so that its pages update as the cluster changes
// instead of being reloaded.
//
// One thread long-polls the primary's watch for the whole controller; each
// browser's request waits here (not on an API worker thread) until the
// revision passes the one it has seen (its Last-Event-ID), and is answered
// with one event. EventSource then reconnects at once (`retry`), so a page
// holds one request at a time and a change reaches it within one round trip. A
// request waits at most `hold`; then it gets a comment and reconnects. With
// no page waiting, nothing is polled.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "common/http.h"
#include "common/result.h"

namespace kato {

class RevisionHub {
 public:
  // Long-polls until the revision passes `after` or `timeout` passes; the revision.
  using Watch = std::function<Result<int64_t>(int64_t after, Millis timeout)>;
  struct Options {
    Millis hold{15000};
    size_t max_waiters = 1000;  // one more gets 503
    // One long poll of the primary's watch: short, so that Stop (and so the
    // controller's shutdown) never waits long for it.
    Millis poll{1000};
  };
  RevisionHub(Options options, Watch watch);
  ~RevisionHub();  // Stop()

  void Start();
  // Answers every waiting request (with a comment) and joins the thread. Idempotent.
  void Stop();

  static bool Serves(const HttpRequest& req);
  // Answers now when the revision already passed the request's Last-Event-ID
  // (or it has none), else once it does, or after `hold`.
  void Wait(const HttpRequest& req, Responder respond);

  // The SSE body of one event.
  static std::string EventBody(int64_t revision);

 private:
  struct Waiter {
    int64_t after;
    SteadyTime deadline;
    Responder respond;
  };
  void Loop();
  static HttpResponse Reply(const std::string& body);

  Options options_;
  Watch watch_;
  std::mutex mu_;
  std::condition_variable cv_;
  int64_t revision_ = -1;  // -1 until the first watch answers
  bool stopping_ = false;
  std::vector<Waiter> waiters_;
  std::thread thread_;
};

}  // namespace kato
