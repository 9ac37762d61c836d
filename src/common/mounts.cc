#include "common/mounts.h"

#include <algorithm>
#include <cctype>
#include <sstream>

#include "common/fs.h"

namespace kato {
namespace {

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string Unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() &&
        std::isdigit(static_cast<unsigned char>(s[i + 1]))) {
      out += static_cast<char>(std::stoi(s.substr(i + 1, 3), nullptr, 8));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

// The mount point of each line.
std::vector<std::string> Targets(const std::string& mountinfo) {
  std::vector<std::string> out;
  std::istringstream in(mountinfo);
  for (std::string line; std::getline(in, line);) {
    std::istringstream f(line);
    std::string id, parent, dev, src, target;
    if (f >> id >> parent >> dev >> src >> target) out.push_back(Unescape(target));
  }
  return out;
}

}  // namespace

std::vector<std::string> MountsUnder(const std::string& mountinfo, const std::string& root) {
  std::vector<std::string> out;
  for (auto& target : Targets(mountinfo))
    if (target.size() > root.size() + 1 && target.rfind(root + "/", 0) == 0) out.push_back(target);
  std::sort(out.begin(), out.end(), [](const std::string& a, const std::string& b) {
    return a.size() != b.size() ? a.size() > b.size() : a > b;
  });
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

bool IsMountPoint(const std::string& mountinfo, const std::string& path) {
  auto t = Targets(mountinfo);
  return std::find(t.begin(), t.end(), path) != t.end();
}

bool IsMounted(const std::string& path) {
  auto info = ReadFile("/proc/self/mountinfo");
  return info && IsMountPoint(*info, path);
}

}  // namespace kato
