// RouteTable: which backends serve which Host, for the router's data path.
//
// Contract: the table is replaced as a whole (Replace) by whoever watches the
// cluster state; readers on the I/O threads never take a lock per request:
// they keep a RouteCache that re-reads the immutable snapshot only when the
// table's version changed (one relaxed atomic load per request). Hosts are
// matched exactly but case-insensitively, and a ":port" suffix is ignored.
// Each host's backends are used round-robin; a backend that refused a
// connection is skipped for kFailedFor while other backends remain.
// Thread-safe: Replace, MarkFailed and every const member may run concurrently.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/clock.h"

namespace kato {

struct Backend {
  std::string ip;  // IPv4 literal
  uint16_t port = 0;
  // Speak TLS to it (RouterOptions::upstream_tls): the controllers' API. App
  // instances are plain HTTP.
  bool tls = false;
  bool operator==(const Backend&) const = default;
};

// What callers give Replace: host (any case, no port) -> its backends. A host
// with an empty list is known but has no running instance (the router answers 503).
using RouteMap = std::map<std::string, std::vector<Backend>>;

// One backend inside a snapshot, with the mutable marks the data path updates.
struct BackendSlot {
  Backend backend;
  std::string key;  // "ip:port" ("tls:ip:port" for TLS), the upstream pool's key
  // steady_clock ticks (Clock::now().time_since_epoch()) until which the
  // backend is skipped; 0 when it is not marked.
  mutable std::atomic<int64_t> failed_until{0};
};

struct HostRoute {
  std::vector<std::unique_ptr<BackendSlot>> backends;
  mutable std::atomic<uint32_t> next{0};  // round-robin cursor
};

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

// An immutable snapshot (apart from the atomic marks above).
struct Routes {
  std::unordered_map<std::string, HostRoute, StringHash, std::equal_to<>> hosts;
  uint64_t version = 0;
};

// Lowercases `host` and drops a ":port" suffix (also after "[v6]"), into `out`
// (reused across calls to avoid allocating on the data path).
void NormalizeHost(std::string_view host, std::string* out);

class RouteTable {
 public:
  static constexpr Millis kFailedFor{1000};

  explicit RouteTable(const Clock& clock = RealClock::instance());
  RouteTable(const RouteTable&) = delete;
  RouteTable& operator=(const RouteTable&) = delete;

  // Swaps in a new set of routes. Failure marks of backends present in both
  // the old and the new set are kept.
  void Replace(const RouteMap& routes);

  uint64_t version() const { return version_.load(std::memory_order_acquire); }
  std::shared_ptr<const Routes> Snapshot() const;

  // nullptr for an unknown host. `host` as sent by the client (any case, maybe a port).
  static const HostRoute* Find(const Routes& routes, std::string_view host, std::string* scratch);

  // The next backend of `route` in round-robin order that is not in `tried`
  // (a bitmask over route.backends, so at most 64 are considered) and not
  // marked failed; failed ones only when no other is left. -1 when every
  // backend was tried.
  int Pick(const HostRoute& route, uint64_t tried) const;
  void MarkFailed(const BackendSlot& slot) const;

 private:
  const Clock& clock_;
  mutable std::mutex mu_;
  std::shared_ptr<const Routes> routes_;  // GUARDED_BY(mu_)
  std::atomic<uint64_t> version_{0};
};

// Per-thread view of a RouteTable: Get() is lock-free unless the table changed.
// Not thread-safe: one per I/O thread.
class RouteCache {
 public:
  explicit RouteCache(const RouteTable& table) : table_(table) {}
  const Routes& Get() {
    uint64_t v = table_.version();
    if (!routes_ || v != routes_->version) routes_ = table_.Snapshot();
    return *routes_;
  }

 private:
  const RouteTable& table_;
  std::shared_ptr<const Routes> routes_;
};

}  // namespace kato
