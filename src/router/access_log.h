// AccessLog: one line per request the router answers, appended to a file that
// is rotated by size (PATH becomes PATH.1, the previous PATH.1 is dropped).
//
// Line format (fields separated by one space; `-` for a missing value):
//   TIME CLIENT HOST "METHOD TARGET" STATUS BYTES UPSTREAM_S INSTANCE TOTAL_S
// TIME is UTC with milliseconds (2026-12-01T10:00:00.123Z); BYTES what was
// sent to the client (header and body); UPSTREAM_S the time until the
// instance's response header arrived; INSTANCE the ip:port that answered;
// TOTAL_S the time from the request's header to the end of the answer. HOST
// and TARGET are cut to a bounded length and every byte outside printable
// ASCII, and `"` and `\`, is written as \xHH: a client cannot forge lines.
//
// Contract: each I/O thread formats into its own Buffer (no lock per request);
// a Buffer is written out when it holds more than kFlushAt bytes or on Flush
// (the router calls it every sweep, 250 ms). Writes of whole buffers go
// through one mutex, so lines never interleave. Thread-safe as described.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

#include "common/result.h"

namespace kato {

struct AccessRecord {
  int64_t wall_ms = 0;
  std::string_view client, host, method, target, instance;
  int status = 0;
  uint64_t bytes = 0;
  double upstream_s = -1;  // < 0: no upstream answered
  double total_s = 0;
};

class AccessLog {
 public:
  static constexpr size_t kFlushAt = 32 * 1024;
  static constexpr size_t kMaxHost = 256;
  static constexpr size_t kMaxTarget = 2048;

  struct Buffer {
    std::string text;
    int64_t second = -1;  // the second whose text is cached below
    char stamp[24] = {};
  };

  // max_bytes: rotate once the file reaches this size (0: never).
  AccessLog(std::string path, uint64_t max_bytes);
  ~AccessLog();
  AccessLog(const AccessLog&) = delete;
  AccessLog& operator=(const AccessLog&) = delete;

  // Opens (creates, mode 0640) the file for appending.
  Status Open();
  void Append(Buffer& buffer, const AccessRecord& r);
  void Flush(Buffer& buffer);
  const std::string& path() const { return path_; }

  // The line for `r`, without its newline (exposed for tests).
  static void Format(Buffer& buffer, const AccessRecord& r, std::string* out);

 private:
  void RotateLocked();

  const std::string path_;
  const uint64_t max_bytes_;
  std::mutex mu_;
  int fd_ = -1;         // GUARDED_BY(mu_)
  uint64_t size_ = 0;   // GUARDED_BY(mu_)
};

}  // namespace kato
