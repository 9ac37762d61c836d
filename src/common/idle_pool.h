// IdlePool: the idle connections a client keeps for reuse, by destination.
//
// A call takes an idle connection to its destination (or makes a new one) and
// puts it back once its response has been read in full, if the server keeps
// it open. Connections idle longer than `max_idle` are dropped, well before
// a kato server drops them (10 s of silence), so that a reused connection
// is rarely one the server has just closed; the caller still retries once on
// a fresh connection when a reused one fails before any byte of the response.
// At most `per_key` idle connections are kept per destination and `total`
// overall; the oldest go first. Thread-safe; time comes from the Clock.
#pragma once

#include <cstddef>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "common/clock.h"

namespace kato {

template <class Conn>
class IdlePool {
 public:
  struct Limits {
    // Under the servers' 10 s idle drop (HttpServer), and well over a 1 s
    // heartbeat even when the server answers slowly: a connection dropped
    // here costs the server a new handshake when it is busiest.
    Millis max_idle{8000};
    size_t per_key = 8;
    size_t total = 256;
  };

  IdlePool(const Clock& clock, Limits limits) : clock_(clock), limits_(limits) {}
  IdlePool(const IdlePool&) = delete;
  IdlePool& operator=(const IdlePool&) = delete;

  // The most recently used idle connection to `key` that is still fresh, or
  // null. Stale ones met on the way are dropped.
  std::unique_ptr<Conn> Take(const std::string& key) {
    std::unique_ptr<Conn> out;
    std::deque<Entry> stale;  // destroyed outside the lock
    {
      std::lock_guard lock(mu_);
      auto it = idle_.find(key);
      if (it == idle_.end()) return nullptr;
      auto& list = it->second;
      const SteadyTime now = clock_.now();
      while (!list.empty() && !out) {
        Entry e = std::move(list.back());
        list.pop_back();
        --count_;
        if (now - e.since <= limits_.max_idle)
          out = std::move(e.conn);
        else
          stale.push_back(std::move(e));
      }
      // Whatever is left is older than what was stale: drop it too.
      DropExpired(list, now, stale);
      if (list.empty()) idle_.erase(it);
    }
    return out;
  }

  // Keeps `conn` for the next call to `key`.
  void Put(const std::string& key, std::unique_ptr<Conn> conn) {
    if (!conn || limits_.per_key == 0 || limits_.total == 0) return;
    std::deque<Entry> dropped;
    {
      std::lock_guard lock(mu_);
      const SteadyTime now = clock_.now();
      auto& list = idle_[key];
      DropExpired(list, now, dropped);
      list.push_back(Entry{std::move(conn), now});
      ++count_;
      if (list.size() > limits_.per_key) {
        dropped.push_back(std::move(list.front()));
        list.pop_front();
        --count_;
      }
      while (count_ > limits_.total) EvictOldest(dropped);
    }
  }

  // Drops every idle connection (e.g. certificates changed).
  void Clear() {
    std::map<std::string, std::deque<Entry>> all;
    {
      std::lock_guard lock(mu_);
      all.swap(idle_);
      count_ = 0;
    }
  }

  size_t size() const {
    std::lock_guard lock(mu_);
    return count_;
  }

 private:
  struct Entry {
    std::unique_ptr<Conn> conn;
    SteadyTime since;
  };

  // Oldest first in each list: expired ones are at the front.
  void DropExpired(std::deque<Entry>& list, SteadyTime now, std::deque<Entry>& out) {
    while (!list.empty() && now - list.front().since > limits_.max_idle) {
      out.push_back(std::move(list.front()));
      list.pop_front();
      --count_;
    }
  }

  void EvictOldest(std::deque<Entry>& out) {
    auto oldest = idle_.end();
    for (auto it = idle_.begin(); it != idle_.end(); ++it)
      if (!it->second.empty() &&
          (oldest == idle_.end() || it->second.front().since < oldest->second.front().since))
        oldest = it;
    if (oldest == idle_.end()) return;
    out.push_back(std::move(oldest->second.front()));
    oldest->second.pop_front();
    --count_;
    if (oldest->second.empty()) idle_.erase(oldest);
  }

  const Clock& clock_;
  const Limits limits_;
  mutable std::mutex mu_;
  std::map<std::string, std::deque<Entry>> idle_;  // guarded by mu_
  size_t count_ = 0;                               // guarded by mu_
};

}  // namespace kato
