// WorkQueue: a fixed set of threads that run submitted tasks in order, with a
// bounded backlog, for work that must stay off a server's I/O threads (the
// controller's API calls the primary several times per request).
//
// A full queue refuses at once instead of growing: the caller answers "busy"
// (HTTP 503) rather than piling up requests and threads. The queue owns its
// threads and joins them in Stop(), so tasks may refer to objects that outlive
// the queue. Thread-safe.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace kato {

class WorkQueue {
 public:
  // Starts `threads` (at least 1) threads; at most `max_queued` tasks wait for one.
  WorkQueue(int threads, size_t max_queued);
  ~WorkQueue();  // Stop()
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;

  // Queues `task`. False, and the task is destroyed without running, when
  // `max_queued` tasks are waiting already or the queue is stopped.
  bool TrySubmit(std::function<void()> task);

  // Stops taking tasks, lets running tasks finish, destroys the ones still
  // waiting without running them, and joins the threads. Idempotent; not from a task.
  void Stop();

  // Tasks waiting for a thread (not counting running ones).
  size_t queued() const;

 private:
  void Work();

  const size_t max_queued_;
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> tasks_;  // GUARDED_BY(mu_)
  bool stopping_ = false;                    // GUARDED_BY(mu_)
  std::vector<std::thread> threads_;         // GUARDED_BY(mu_) after construction
};

}  // namespace kato
