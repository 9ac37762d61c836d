#include "common/unix_socket.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace kato {

namespace {
Result<sockaddr_un> Address(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof a.sun_path)
    return Err("socket path " + path + " is too long (max " +
               std::to_string(sizeof a.sun_path - 1) + " bytes); use a shorter --data-dir");
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  return a;
}
}  // namespace

Result<int> UnixListen(const std::string& path, int mode) {
  auto addr = Address(path);
  if (!addr) return Err(addr.error());
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Err(std::string("socket: ") + std::strerror(errno));
  ::unlink(path.c_str());
  mode_t old = ::umask(0777 & ~mode);
  int rc = ::bind(fd, reinterpret_cast<sockaddr*>(&*addr), sizeof(sockaddr_un));
  ::umask(old);
  if (rc != 0 || ::listen(fd, 64) != 0) {
    std::string e = std::strerror(errno);
    ::close(fd);
    return Err("cannot listen on " + path + ": " + e);
  }
  ::chmod(path.c_str(), mode);
  return fd;
}

Result<int> UnixConnect(const std::string& path) {
  auto addr = Address(path);
  if (!addr) return Err(addr.error());
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Err(std::string("socket: ") + std::strerror(errno));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&*addr), sizeof(sockaddr_un)) != 0) {
    std::string e = std::strerror(errno);
    ::close(fd);
    return Err(e);
  }
  return fd;
}

Result<std::string> ReadLine(int fd, std::string& buffer, size_t max, Millis timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto nl = buffer.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffer.substr(0, nl);
      buffer.erase(0, nl + 1);
      return line;
    }
    if (buffer.size() > max) return Err("line longer than " + std::to_string(max) + " bytes");
    auto left = std::chrono::duration_cast<Millis>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return Err("timed out");
    pollfd p{fd, POLLIN, 0};
    int rc = ::poll(&p, 1, static_cast<int>(left.count()));
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0) return Err(std::string("poll: ") + std::strerror(errno));
    if (rc == 0) return Err("timed out");
    char chunk[65536];
    ssize_t n = ::read(fd, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Err(std::string("read: ") + std::strerror(errno));
    if (n == 0) return Err("connection closed");
    buffer.append(chunk, static_cast<size_t>(n));
  }
}

Status WriteAll(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Err(std::string("write: ") + std::strerror(errno));
    off += static_cast<size_t>(n);
  }
  return Ok();
}

}  // namespace kato
