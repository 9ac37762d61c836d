#include "router/access_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "common/log.h"

namespace kato {
namespace {

void AppendSafe(std::string* out, std::string_view s, size_t max) {
  static const char kHex[] = "0123456789abcdef";
  if (s.empty()) {
    out->push_back('-');
    return;
  }
  for (unsigned char c : s.substr(0, max)) {
    if (c > 0x20 && c < 0x7f && c != '"' && c != '\\') {
      out->push_back(static_cast<char>(c));
    } else {
      out->append("\\x");
      out->push_back(kHex[c >> 4]);
      out->push_back(kHex[c & 15]);
    }
  }
}

void AppendSeconds(std::string* out, double s) {
  if (s < 0) {
    out->push_back('-');
    return;
  }
  char buf[32];
  int n = std::snprintf(buf, sizeof buf, "%.3f", s);
  out->append(buf, static_cast<size_t>(n));
}

void AppendNumber(std::string* out, uint64_t v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out->append(buf, end);
}

}  // namespace

AccessLog::AccessLog(std::string path, uint64_t max_bytes)
    : path_(std::move(path)), max_bytes_(max_bytes) {}

AccessLog::~AccessLog() {
  if (fd_ >= 0) ::close(fd_);
}

Status AccessLog::Open() {
  std::lock_guard lock(mu_);
  int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) return Err("cannot open the access log " + path_ + ": " + std::strerror(errno));
  struct stat st {};
  ::fstat(fd, &st);
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
  size_ = static_cast<uint64_t>(st.st_size);
  return Ok();
}

void AccessLog::Format(Buffer& b, const AccessRecord& r, std::string* out) {
  int64_t second = r.wall_ms / 1000;
  if (second != b.second) {
    time_t t = static_cast<time_t>(second);
    tm utc{};
    gmtime_r(&t, &utc);
    std::strftime(b.stamp, sizeof b.stamp, "%Y-%m-%dT%H:%M:%S", &utc);
    b.second = second;
  }
  char ms[8];
  std::snprintf(ms, sizeof ms, ".%03dZ ", static_cast<int>(r.wall_ms % 1000));
  out->append(b.stamp).append(ms);
  AppendSafe(out, r.client, 64);
  out->push_back(' ');
  AppendSafe(out, r.host, kMaxHost);
  out->append(" \"");
  AppendSafe(out, r.method, 32);
  out->push_back(' ');
  AppendSafe(out, r.target, kMaxTarget);
  out->append("\" ");
  AppendNumber(out, static_cast<uint64_t>(r.status));
  out->push_back(' ');
  AppendNumber(out, r.bytes);
  out->push_back(' ');
  AppendSeconds(out, r.upstream_s);
  out->push_back(' ');
  AppendSafe(out, r.instance, 64);
  out->push_back(' ');
  AppendSeconds(out, r.total_s);
}

void AccessLog::Append(Buffer& b, const AccessRecord& r) {
  Format(b, r, &b.text);
  b.text.push_back('\n');
  if (b.text.size() >= kFlushAt) Flush(b);
}

void AccessLog::Flush(Buffer& b) {
  if (b.text.empty()) return;
  std::lock_guard lock(mu_);
  if (fd_ >= 0) {
    size_t off = 0;
    while (off < b.text.size()) {
      ssize_t n = ::write(fd_, b.text.data() + off, b.text.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;  // disk full: the lines are lost, requests go on
      off += static_cast<size_t>(n);
    }
    size_ += off;
    if (max_bytes_ > 0 && size_ >= max_bytes_) RotateLocked();
  }
  b.text.clear();
}

void AccessLog::RotateLocked() {
  std::string old = path_ + ".1";
  if (::rename(path_.c_str(), old.c_str()) != 0) {
    LogWarn("router: cannot rotate the access log {}: {}", path_, std::strerror(errno));
    size_ = 0;  // try again after another max_bytes
    return;
  }
  int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) {
    LogWarn("router: cannot reopen the access log {}: {}", path_, std::strerror(errno));
    return;  // keep writing to the renamed file rather than losing lines
  }
  ::close(fd_);
  fd_ = fd;
  size_ = 0;
}

}  // namespace kato
