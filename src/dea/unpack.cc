#include "dea/unpack.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <set>
#include <vector>

namespace kato {
namespace {

std::string Errno(int e) { return std::strerror(e); }

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Fd& operator=(Fd&& o) noexcept {
    std::swap(fd_, o.fd_);
    return *this;
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

// An entry name as shown in messages: hostile names may hold control bytes.
std::string Shown(const std::string& raw) {
  std::string out;
  for (char c : raw.substr(0, 200)) out += (c >= 0x20 && c < 0x7f) ? c : '?';
  if (raw.size() > 200) out += "...";
  return "'" + out + "'";
}

using Parts = std::vector<std::string>;

std::string Join(const Parts& parts, size_t n) {
  std::string s;
  for (size_t i = 0; i < n; ++i) s += (i ? "/" : "") + parts[i];
  return s;
}

// Splits `path` into components, dropping empty and "." ones.
Parts Split(const std::string& path) {
  Parts parts;
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    std::string c = path.substr(start, end - start);
    if (!c.empty() && c != ".") parts.push_back(std::move(c));
    start = end + 1;
  }
  return parts;
}

// The components of an entry's path, refusing anything that is not a plain
// relative path inside the tree.
Result<Parts> EntryPath(const std::string& raw, int max_depth) {
  if (!raw.empty() && raw[0] == '/') {
    return Err("entry " + Shown(raw) + " has an absolute path; archives must hold relative paths");
  }
  Parts parts = Split(raw);
  for (const auto& c : parts) {
    if (c == "..") {
      return Err("entry " + Shown(raw) +
                 " has a '..' component and would land outside the app directory");
    }
  }
  if (parts.size() > static_cast<size_t>(max_depth)) {
    return Err("entry " + Shown(raw) + " is " + std::to_string(parts.size()) +
               " directories deep, over the limit of " + std::to_string(max_depth));
  }
  return parts;
}

// A symlink may point only inside the tree. Its target must be relative, some
// leading '..' (no more than the link's own depth) then plain names. Since the
// link's parent directories are all real directories (never symlinks: see
// OpenDir), the '..' steps stay inside the tree, and each name below is a real
// file or directory or a symlink that passed this same check, so by induction
// no chain of symlinks resolves outside the tree.
Status CheckSymlink(const std::string& raw_path, const Parts& link, const std::string& target) {
  auto refuse = [&](const std::string& why) {
    return Err("entry " + Shown(raw_path) + " is a symlink to " + Shown(target) + ", which " + why);
  };
  if (target.empty()) return refuse("is empty");
  if (target[0] == '/') return refuse("is an absolute path; links must stay inside the app");
  size_t ups = 0;
  bool named = false;
  for (const auto& c : Split(target)) {
    if (c != "..") {
      named = true;
    } else if (named) {
      return refuse("has a '..' after a name; write the target without it");
    } else {
      ++ups;
    }
  }
  if (ups + 1 > link.size()) return refuse("leaves the app directory");
  return Ok();
}

class Unpacker {
 public:
  Unpacker(int root_fd, const UnpackLimits& limits, std::optional<FileOwner> owner)
      : root_(root_fd), limits_(limits), owner_(owner), buf_(64 * 1024) {}

  Status Entry(archive* a, archive_entry* e) {
    if (++entries_ > limits_.max_entries) {
      return Err("the archive has more than " + std::to_string(limits_.max_entries) + " entries");
    }
    const char* raw_c = archive_entry_pathname(e);
    if (raw_c == nullptr) return Err("an entry has no readable path name");
    std::string raw = raw_c;
    auto parts = EntryPath(raw, limits_.max_depth);
    if (!parts) return std::move(parts).take_error();
    if (parts->empty()) return Ok();  // "./": the archive's root, which is ours

    if (const char* hl = archive_entry_hardlink(e)) return HardLink(raw, *parts, hl);
    mode_t mode = archive_entry_perm(e) & 0777;  // drops setuid, setgid and sticky
    switch (archive_entry_filetype(e)) {
      case AE_IFDIR: {
        auto dir = OpenDir(raw, *parts, parts->size(), true);
        if (!dir) return std::move(dir).take_error();
        dir_modes_.push_back({*parts, mode});
        return Ok();
      }
      case AE_IFREG:
        return File(a, e, raw, *parts, mode);
      case AE_IFLNK: {
        const char* target = archive_entry_symlink(e);
        if (target == nullptr) return Err("entry " + Shown(raw) + " is a symlink with no target");
        return Symlink(raw, *parts, target);
      }
      default:
        return Err("entry " + Shown(raw) +
                   " is a device, fifo or socket; only files, directories and links are allowed");
    }
  }

  // Applies directory modes last (a read-only directory must still take its
  // entries), deepest first so that each directory is still reachable.
  Status Finish() {
    std::stable_sort(dir_modes_.begin(), dir_modes_.end(),
                     [](const auto& x, const auto& y) { return x.first.size() > y.first.size(); });
    for (const auto& [parts, mode] : dir_modes_) {
      auto dir = OpenDir(Join(parts, parts.size()), parts, parts.size(), false);
      if (!dir) return std::move(dir).take_error();
      if (::fchmod(dir->get(), mode) != 0)
        return Err("cannot set a directory's mode: " + Errno(errno));
    }
    if (::fchmod(root_, 0755) != 0) return Err("cannot set the directory's mode: " + Errno(errno));
    return Chown(root_);
  }

 private:
  Status Chown(int fd) {
    if (owner_ && ::fchown(fd, owner_->uid, owner_->gid) != 0) {
      return Err("cannot give the files to uid " + std::to_string(owner_->uid) + ": " +
                 Errno(errno));
    }
    return Ok();
  }

  // Opens the directory made of the first `n` components, creating missing
  // ones when `create`. Each step is O_NOFOLLOW|O_DIRECTORY, so an entry can
  // never be written through a symlink or a file planted by an earlier entry.
  Result<Fd> OpenDir(const std::string& raw, const Parts& parts, size_t n, bool create) {
    Fd cur(::openat(root_, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (cur.get() < 0) return Err("cannot open the staging directory: " + Errno(errno));
    for (size_t i = 0; i < n; ++i) {
      bool made = create && ::mkdirat(cur.get(), parts[i].c_str(), 0700) == 0;
      if (create && !made && errno != EEXIST) {
        return Err("cannot create directory " + Shown(Join(parts, i + 1)) + " for entry " +
                   Shown(raw) + ": " + Errno(errno));
      }
      Fd next(
          ::openat(cur.get(), parts[i].c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (next.get() < 0) {
        int err = errno;
        if (err == ELOOP || err == ENOTDIR) {
          return Err("entry " + Shown(raw) + " goes through " + Shown(Join(parts, i + 1)) +
                     ", which is a symlink or a file, not a directory");
        }
        return Err("cannot open directory " + Shown(Join(parts, i + 1)) + " for entry " +
                   Shown(raw) + ": " + Errno(err));
      }
      if (made) KATO_TRY(Chown(next.get()));
      cur = std::move(next);
    }
    return cur;
  }

  Status Exists(const std::string& raw) {
    return Err("entry " + Shown(raw) +
               " appears twice in the archive (or clashes with a directory)");
  }

  Status File(archive* a, archive_entry* e, const std::string& raw, const Parts& parts,
              mode_t mode) {
    if (archive_entry_size_is_set(e) && archive_entry_size(e) > limits_.max_file_bytes) {
      return TooBig(raw);
    }
    auto dir = OpenDir(raw, parts, parts.size() - 1, true);
    if (!dir) return std::move(dir).take_error();
    Fd out(::openat(dir->get(), parts.back().c_str(),
                    O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (out.get() < 0) {
      if (errno == EEXIST) return Exists(raw);
      return Err("cannot create " + Shown(raw) + ": " + Errno(errno));
    }
    int64_t size = 0;
    for (;;) {
      la_ssize_t n = archive_read_data(a, buf_.data(), buf_.size());
      if (n < 0) return Err("cannot read entry " + Shown(raw) + ": " + LibError(a));
      if (n == 0) break;
      size += n;
      total_ += n;
      if (size > limits_.max_file_bytes) return TooBig(raw);
      if (total_ > limits_.max_total_bytes) {
        return Err("the archive unpacks to more than " + std::to_string(limits_.max_total_bytes) +
                   " bytes (stopped at entry " + Shown(raw) + ")");
      }
      for (la_ssize_t off = 0; off < n;) {
        ssize_t w = ::write(out.get(), buf_.data() + off, static_cast<size_t>(n - off));
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return Err("cannot write " + Shown(raw) + ": " + Errno(errno));
        off += w;
      }
    }
    if (::fchmod(out.get(), mode) != 0) return Err("cannot set the mode of " + Shown(raw));
    KATO_TRY(Chown(out.get()));
    timespec times[2] = {{0, UTIME_OMIT}, {archive_entry_mtime(e), 0}};
    if (archive_entry_mtime_is_set(e)) ::futimens(out.get(), times);  // cosmetic: best effort
    files_.insert(Join(parts, parts.size()));
    return Ok();
  }

  Status TooBig(const std::string& raw) {
    return Err("entry " + Shown(raw) + " is larger than the limit of " +
               std::to_string(limits_.max_file_bytes) + " bytes");
  }

  Status Symlink(const std::string& raw, const Parts& parts, const std::string& target) {
    KATO_TRY(CheckSymlink(raw, parts, target));
    auto dir = OpenDir(raw, parts, parts.size() - 1, true);
    if (!dir) return std::move(dir).take_error();
    if (::symlinkat(target.c_str(), dir->get(), parts.back().c_str()) != 0) {
      if (errno == EEXIST) return Exists(raw);
      return Err("cannot create symlink " + Shown(raw) + ": " + Errno(errno));
    }
    if (owner_ && ::fchownat(dir->get(), parts.back().c_str(), owner_->uid, owner_->gid,
                             AT_SYMLINK_NOFOLLOW) != 0) {
      return Err("cannot give symlink " + Shown(raw) + " to its owner: " + Errno(errno));
    }
    return Ok();
  }

  Status HardLink(const std::string& raw, const Parts& parts, const std::string& target_raw) {
    auto target = EntryPath(target_raw, limits_.max_depth);
    std::string key = target ? Join(*target, target->size()) : "";
    if (!target || target->empty() || !files_.count(key)) {
      return Err("entry " + Shown(raw) + " is a hardlink to " + Shown(target_raw) +
                 ", which is not a file unpacked before it from this archive");
    }
    auto from = OpenDir(target_raw, *target, target->size() - 1, false);
    if (!from) return std::move(from).take_error();
    auto dir = OpenDir(raw, parts, parts.size() - 1, true);
    if (!dir) return std::move(dir).take_error();
    // Flags 0: linkat never follows a symlink, and the target is a file we made.
    if (::linkat(from->get(), target->back().c_str(), dir->get(), parts.back().c_str(), 0) != 0) {
      if (errno == EEXIST) return Exists(raw);
      return Err("cannot create hardlink " + Shown(raw) + ": " + Errno(errno));
    }
    files_.insert(Join(parts, parts.size()));
    return Ok();
  }

  static std::string LibError(archive* a) {
    const char* s = archive_error_string(a);
    return s ? s : "unknown libarchive error";
  }

  int root_;
  UnpackLimits limits_;
  std::optional<FileOwner> owner_;
  std::vector<char> buf_;
  int64_t entries_ = 0;
  int64_t total_ = 0;
  std::set<std::string> files_;  // regular files unpacked so far: the only hardlink targets
  std::vector<std::pair<Parts, mode_t>> dir_modes_;
};

struct ArchiveCloser {
  void operator()(archive* a) const { archive_read_free(a); }
};

Status Extract(const std::string& archive_path, int root_fd, const UnpackLimits& limits,
               std::optional<FileOwner> owner) {
  std::unique_ptr<archive, ArchiveCloser> a(archive_read_new());
  if (!a) return Err("out of memory");
  // ARCHIVE_WARN here would mean libarchive falls back to running an external
  // gzip program; we only accept its built-in zlib decoder.
  if (archive_read_support_filter_gzip(a.get()) != ARCHIVE_OK ||
      archive_read_support_format_tar(a.get()) != ARCHIVE_OK) {
    return Err("libarchive lacks built-in gzip or tar support");
  }
  if (archive_read_open_filename(a.get(), archive_path.c_str(), 64 * 1024) != ARCHIVE_OK) {
    const char* s = archive_error_string(a.get());
    return Err(std::string("not a .tar.gz or .tar archive: ") + (s ? s : "unknown error"));
  }
  Unpacker unpacker(root_fd, limits, owner);
  for (;;) {
    archive_entry* e = nullptr;
    int rc = archive_read_next_header(a.get(), &e);
    if (rc == ARCHIVE_EOF) break;
    if (rc != ARCHIVE_OK && rc != ARCHIVE_WARN) {
      const char* s = archive_error_string(a.get());
      return Err(std::string("not a .tar.gz or .tar archive, or a damaged one: ") +
                 (s ? s : "unknown error"));
    }
    KATO_TRY(unpacker.Entry(a.get(), e));
  }
  return unpacker.Finish();
}

}  // namespace

Status UnpackArchive(const std::string& archive_path, const std::string& dest_dir,
                     const UnpackLimits& limits, std::optional<FileOwner> owner) {
  namespace fs = std::filesystem;
  auto fail = [&](const std::string& why) {
    return Err("cannot unpack " + archive_path + " into " + dest_dir + ": " + why);
  };
  fs::path dest = fs::path(dest_dir).lexically_normal();
  if (dest.filename().empty()) dest = dest.parent_path();
  struct stat st;
  if (::lstat(dest.c_str(), &st) == 0) return fail("it already exists; remove it first");
  fs::path parent = dest.has_parent_path() ? dest.parent_path() : fs::path(".");
  std::string tmpl = (parent / ("." + dest.filename().string() + ".unpack-XXXXXX")).string();
  if (::mkdtemp(tmpl.data()) == nullptr) {
    return fail("cannot create a staging directory in " + parent.string() + ": " + Errno(errno));
  }
  Status result = [&]() -> Status {
    Fd root(::open(tmpl.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (root.get() < 0) return Err("cannot open the staging directory: " + Errno(errno));
    KATO_TRY(Extract(archive_path, root.get(), limits, owner));
    if (::renameat2(AT_FDCWD, tmpl.c_str(), AT_FDCWD, dest.c_str(), RENAME_NOREPLACE) != 0) {
      return Err("cannot move the staging directory into place: " + Errno(errno));
    }
    return Ok();
  }();
  if (!result.ok()) {
    std::error_code ec;
    fs::remove_all(tmpl, ec);  // never follows symlinks
    return fail(result.error());
  }
  return Ok();
}

}  // namespace kato
