// Instance output: each instance's stdout and stderr go into a pipe that the
// DEA drains into a log that rotates at a fixed size (PATH -> PATH.1, two
// files kept; PATH.offset counts the bytes rotated away, see
// common/log_tail.h), so an app that prints without end cannot fill the disk.
//
// RotatingLog is one such file (not thread-safe). LogPump owns one thread
// that polls every instance's pipe and writes to its log; Open() and Close()
// may be called from any thread. A pipe whose writers are all gone (the
// instance exited) is drained to the end and then closed by the pump.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/result.h"

namespace kato {

constexpr size_t kInstanceLogMax = 16u << 20;

class RotatingLog {
 public:
  RotatingLog(std::string path, size_t max_bytes);
  ~RotatingLog();
  RotatingLog(const RotatingLog&) = delete;
  RotatingLog& operator=(const RotatingLog&) = delete;

  Status Open();
  // Appends, rotating first when the file would grow past max_bytes (a
  // single write larger than that is cut to it).
  Status Write(const char* data, size_t n);

 private:
  Status Rotate();
  std::string path_;
  size_t max_;
  int fd_ = -1;
  uint64_t size_ = 0;
  uint64_t offset_ = 0;
};

class LogPump {
 public:
  explicit LogPump(size_t max_bytes = kInstanceLogMax);
  ~LogPump();  // stops and joins the thread, closing every pipe
  LogPump(const LogPump&) = delete;
  LogPump& operator=(const LogPump&) = delete;

  // A new pipe whose output goes to the log at `path`; returns the write end,
  // which the caller hands to the process and then closes.
  Result<int> Open(const std::string& key, const std::string& path);
  // Stops writing `key`'s output (its remaining output is dropped).
  void Close(const std::string& key);
  size_t open_count() const;

 private:
  void Run();
  void Wake();
  struct Stream {
    int fd = -1;
    std::unique_ptr<RotatingLog> log;
  };
  size_t max_;
  int wake_[2] = {-1, -1};
  mutable std::mutex mu_;
  std::map<std::string, Stream> streams_;  // guarded by mu_
  bool stop_ = false;                      // guarded by mu_
  std::thread thread_;
};

}  // namespace kato
