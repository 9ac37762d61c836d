#include "dea/instance_log.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "common/fs.h"
#include "common/log.h"

namespace kato {

RotatingLog::RotatingLog(std::string path, size_t max_bytes)
    : path_(std::move(path)), max_(max_bytes < 1024 ? 1024 : max_bytes) {}

RotatingLog::~RotatingLog() {
  if (fd_ >= 0) ::close(fd_);
}

Status RotatingLog::Open() {
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd_ < 0) return Err("cannot open log " + path_ + ": " + std::strerror(errno));
  struct stat st;
  if (::fstat(fd_, &st) == 0) size_ = static_cast<uint64_t>(st.st_size);
  if (auto o = ReadFile(path_ + ".offset"); o) offset_ = std::strtoull(o->c_str(), nullptr, 10);
  return Ok();
}

Status RotatingLog::Rotate() {
  ::close(fd_);
  fd_ = -1;
  if (::rename(path_.c_str(), (path_ + ".1").c_str()) != 0)
    return Err("cannot rotate " + path_ + ": " + std::strerror(errno));
  offset_ += size_;
  size_ = 0;
  KATO_TRY(WriteFileAtomic(path_ + ".offset", std::to_string(offset_) + "\n", 0640));
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_TRUNC | O_CLOEXEC, 0640);
  if (fd_ < 0) return Err("cannot open log " + path_ + ": " + std::strerror(errno));
  return Ok();
}

Status RotatingLog::Write(const char* data, size_t n) {
  if (fd_ < 0) return Err("log " + path_ + " is not open");
  if (n > max_) {
    data += n - max_;
    n = max_;
  }
  if (size_ + n > max_ && size_ > 0) KATO_TRY(Rotate());
  while (n > 0) {
    ssize_t w = ::write(fd_, data, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return Err("cannot write " + path_ + ": " + std::strerror(errno));
    data += w;
    n -= static_cast<size_t>(w);
    size_ += static_cast<uint64_t>(w);
  }
  return Ok();
}

LogPump::LogPump(size_t max_bytes) : max_(max_bytes) {
  KATO_CHECK(::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) == 0);
  thread_ = std::thread([this] { Run(); });
}

LogPump::~LogPump() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  Wake();
  thread_.join();
  for (auto& [key, s] : streams_) ::close(s.fd);
  ::close(wake_[0]);
  ::close(wake_[1]);
}

void LogPump::Wake() {
  char c = 1;
  (void)!::write(wake_[1], &c, 1);
}

Result<int> LogPump::Open(const std::string& key, const std::string& path) {
  auto log = std::make_unique<RotatingLog>(path, max_);
  KATO_TRY(log->Open());
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0)
    return Err(std::string("cannot create a pipe: ") + std::strerror(errno));
  ::fcntl(p[0], F_SETFL, O_NONBLOCK);
  {
    std::lock_guard lock(mu_);
    if (auto it = streams_.find(key); it != streams_.end()) ::close(it->second.fd);
    streams_[key] = Stream{p[0], std::move(log)};
  }
  Wake();
  return p[1];
}

void LogPump::Close(const std::string& key) {
  std::lock_guard lock(mu_);
  auto it = streams_.find(key);
  if (it == streams_.end()) return;
  ::close(it->second.fd);
  streams_.erase(it);
  Wake();
}

size_t LogPump::open_count() const {
  std::lock_guard lock(mu_);
  return streams_.size();
}

void LogPump::Run() {
  std::vector<char> buf(64 << 10);
  for (;;) {
    std::vector<pollfd> fds{{wake_[0], POLLIN, 0}};
    {
      std::lock_guard lock(mu_);
      if (stop_) return;
      for (const auto& [key, s] : streams_) fds.push_back({s.fd, POLLIN, 0});
    }
    if (::poll(fds.data(), fds.size(), -1) < 0 && errno != EINTR) {
      LogWarn("dea: polling instance output failed: {}", std::strerror(errno));
      return;
    }
    if (fds[0].revents) {
      while (::read(wake_[0], buf.data(), buf.size()) > 0) {
      }
    }
    std::lock_guard lock(mu_);
    for (size_t i = 1; i < fds.size(); ++i) {
      if (!fds[i].revents) continue;
      // The stream may have been closed (and its fd number reused) meanwhile.
      auto it = std::find_if(streams_.begin(), streams_.end(),
                             [&](const auto& kv) { return kv.second.fd == fds[i].fd; });
      if (it == streams_.end()) continue;
      ssize_t n = ::read(it->second.fd, buf.data(), buf.size());
      if (n > 0) {
        if (auto s = it->second.log->Write(buf.data(), static_cast<size_t>(n)); !s)
          LogWarn("dea: {}", s.error());
      } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        ::close(it->second.fd);
        streams_.erase(it);
      }
    }
  }
}

}  // namespace kato
