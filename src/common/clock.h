// Clock: every read of time goes through this interface so that the supervisor,
// heartbeat and liveness logic are tested with a FakeClock, without real time
// passing. Implementations are thread-safe.
#pragma once

#include <chrono>
#include <cstdint>

namespace kato {

using SteadyTime = std::chrono::steady_clock::time_point;
using Millis = std::chrono::milliseconds;

class Clock {
 public:
  virtual ~Clock() = default;
  // Monotonic time for timeouts and back-off.
  virtual SteadyTime now() const = 0;
  // Wall-clock time in milliseconds since the Unix epoch, for records people read.
  virtual int64_t wall_ms() const = 0;
};

class RealClock final : public Clock {
 public:
  SteadyTime now() const override { return std::chrono::steady_clock::now(); }
  int64_t wall_ms() const override {
    return std::chrono::duration_cast<Millis>(std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
  static RealClock& instance() {
    static RealClock c;
    return c;
  }
};

// A clock that moves only when told to. Single-threaded tests only.
class FakeClock final : public Clock {
 public:
  SteadyTime now() const override { return now_; }
  int64_t wall_ms() const override { return wall_ms_; }
  void advance(Millis d) {
    now_ += d;
    wall_ms_ += d.count();
  }

 private:
  SteadyTime now_{std::chrono::hours(1000)};
  int64_t wall_ms_ = 1'800'000'000'000;
};

}  // namespace kato
