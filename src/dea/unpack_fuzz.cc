// libFuzzer target: arbitrary bytes as an app's uploaded archive. UnpackArchive
// must never crash, and must never leave anything but its destination in the
// staging parent (nor anything at all when it refuses the archive).
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "common/fs.h"
#include "dea/unpack.h"

namespace {

namespace fs = std::filesystem;

struct World {
  std::string dir;     // holds the archive and `parent`, nothing else
  std::string parent;  // UnpackArchive's dest's parent
  std::string archive;
  World() {
    char tmpl[] = "/tmp/kato-unpack-fuzz-XXXXXX";
    dir = ::mkdtemp(tmpl);
    parent = dir + "/instances";
    archive = dir + "/bits.tar.gz";
    fs::create_directory(parent);
  }
  ~World() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "unpack_fuzz: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static World w;
  Check(
      kato::WriteFileAtomic(w.archive, std::string(reinterpret_cast<const char*>(data), size)).ok(),
      "cannot write the input");
  kato::UnpackLimits limits;
  limits.max_entries = 1000;
  limits.max_file_bytes = 1 << 20;
  limits.max_total_bytes = 4 << 20;
  limits.max_depth = 16;
  std::string dest = w.parent + "/app";
  kato::Status s = kato::UnpackArchive(w.archive, dest, limits);

  size_t in_parent = 0;
  for (const auto& e : fs::directory_iterator(w.parent)) {
    Check(e.path() == dest, "something besides the destination was left in its parent");
    ++in_parent;
  }
  Check(in_parent == (s.ok() ? 1u : 0u), "the destination's presence disagrees with the result");
  size_t in_dir = 0;
  for (const auto& e : fs::directory_iterator(w.dir)) {
    Check(e.path() == w.parent || e.path() == w.archive, "an entry escaped its parent");
    ++in_dir;
  }
  Check(in_dir == 2, "the staging parent vanished");
  if (s.ok()) {
    // Symlinks are not followed by remove_all; chmod in case of 0000 dirs.
    for (const auto& e : fs::recursive_directory_iterator(dest)) {
      if (e.is_directory() && !e.is_symlink()) {
        fs::permissions(e.path(), fs::perms::owner_all, fs::perm_options::add);
      }
    }
    fs::remove_all(dest);
  }
  return 0;
}
