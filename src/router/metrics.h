// RouterMetrics: the router's counters, served as Prometheus text (format
// 0.0.4) on the health port's GET /metrics.
//
// Contract: one Shard per I/O thread; only that thread writes to it (no lock
// and no atomic read-modify-write on the data path: single-writer relaxed
// atomics), while Render may run on any thread at any time and sums the shards.
// Per-app series are created on an app's first request and live as long as the
// router (their number is bounded by the apps the cluster ever routed; hosts
// that are not routed are counted under app="").
// Thread-safety: as above; Render is safe to call concurrently with writers.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace kato {

// Upper bounds (seconds) of the request-duration histogram's buckets (+Inf implied).
inline constexpr std::array<double, 13> kLatencyBuckets = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60};

enum class UpstreamError { kConnect, kTimeout, kReset, kMalformed, kCount };

// A counter written by one thread and read by others.
class Counter {
 public:
  void Add(uint64_t n) { v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
  uint64_t Get() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> v_{0};
};

struct AppStats {
  std::array<Counter, 5> by_class;  // 1xx .. 5xx
  std::array<Counter, kLatencyBuckets.size()> buckets;  // non-cumulative
  Counter duration_us;  // sum, microseconds
  Counter count;
};

class RouterMetrics {
 public:
  class Shard {
   public:
    // The series of `app` (created on first use; pointers stay valid).
    AppStats* App(std::string_view app);
    static void Record(AppStats* app, int status, double seconds);
    void UpstreamFailed(UpstreamError kind) { upstream_errors_[static_cast<int>(kind)].Add(1); }
    void Retried() { retries_.Add(1); }
    void Received(uint64_t bytes) { received_.Add(bytes); }
    void Sent(uint64_t bytes) { sent_.Add(bytes); }

   private:
    friend class RouterMetrics;
    // Inserted by the owning thread under mu_; Render iterates under mu_.
    mutable std::mutex mu_;
    std::map<std::string, std::unique_ptr<AppStats>, std::less<>> apps_;
    std::array<Counter, static_cast<int>(UpstreamError::kCount)> upstream_errors_;
    Counter retries_, received_, sent_;
  };

  explicit RouterMetrics(int shards);
  Shard& shard(int i) { return *shards_[static_cast<size_t>(i)]; }
  // From the accepting thread (any), rarely.
  void Refused() { refused_.fetch_add(1, std::memory_order_relaxed); }
  // The whole text exposition, with the gauges given by the caller.
  std::string Render(int64_t open_connections, int64_t max_connections) const;

 private:
  std::vector<std::unique_ptr<Shard>> shards_;
  std::atomic<uint64_t> refused_{0};
};

// The app a host belongs to, for the app label: its first DNS label (apps are
// NAME.DOMAIN, the API is api.DOMAIN).
std::string_view AppOfHost(std::string_view normalized_host);

}  // namespace kato
