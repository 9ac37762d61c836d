#include "common/log_tail.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/fs.h"

namespace kato {
namespace {

// The last `want` bytes of a file (fewer when it is shorter); "" when missing.
// `size` gets the file's size when it was read.
Result<std::string> ReadEnd(const std::string& path, size_t want, bool must_exist,
                            size_t* size_out = nullptr) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (!must_exist && errno == ENOENT) return std::string();
    return Err("cannot read " + path + ": " + std::strerror(errno));
  }
  struct stat st;
  std::string out;
  if (::fstat(fd, &st) == 0) {
    size_t size = static_cast<size_t>(st.st_size);
    if (size_out) *size_out = size;
    size_t n = std::min(size, want);
    out.resize(n);
    size_t got = 0;
    while (got < n) {
      ssize_t r = ::pread(fd, out.data() + got, n - got, static_cast<off_t>(size - n + got));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) break;
      got += static_cast<size_t>(r);
    }
    out.resize(got);
  }
  ::close(fd);
  return out;
}

// The start of the last `lines` lines of `text` (a line ends with '\n'; an
// unterminated last line counts as one).
size_t StartOfLastLines(const std::string& text, int lines, bool* enough) {
  size_t pos = text.size();
  if (pos > 0 && text[pos - 1] == '\n') --pos;
  int seen = 0;
  while (pos > 0) {
    size_t nl = text.rfind('\n', pos - 1);
    if (nl == std::string::npos) break;
    if (++seen == lines) {
      *enough = true;
      return nl + 1;
    }
    pos = nl;
  }
  *enough = false;
  return 0;
}

}  // namespace

Result<LogTail> TailLog(const std::string& path, int lines, size_t max_bytes) {
  if (lines < 1) lines = 1;
  uint64_t offset = 0;
  if (auto o = ReadFile(path + ".offset"); o) offset = std::strtoull(o->c_str(), nullptr, 10);
  size_t size = 0;
  auto cur = ReadEnd(path, max_bytes, true, &size);
  if (!cur) return Err("no log at " + path);
  LogTail tail;
  tail.end_offset = offset + size;
  bool enough = false;
  size_t start = StartOfLastLines(*cur, lines, &enough);
  bool whole = cur->size() == size;
  if (!enough && whole && cur->size() < max_bytes) {
    // The current file holds fewer lines: the rest comes from the rotated one.
    auto old = ReadEnd(path + ".1", max_bytes - cur->size(), false);
    if (old && !old->empty()) {
      std::string both = *old + *cur;
      start = StartOfLastLines(both, lines, &enough);
      // A partial first line (cut by max_bytes) is dropped.
      if (!enough && both.size() == max_bytes) start = std::min(both.find('\n') + 1, both.size());
      tail.text = both.substr(start);
      return tail;
    }
  }
  if (!enough && !whole) start = std::min(cur->find('\n') + 1, cur->size());
  tail.text = cur->substr(start);
  return tail;
}

}  // namespace kato
