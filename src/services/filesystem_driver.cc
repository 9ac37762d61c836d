#include "services/filesystem_driver.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "common/fs.h"
#include "common/log.h"
#include "common/mounts.h"
#include "common/ssh_key.h"
#include "services/fs_sshd_config.h"

namespace kato {
namespace {

Status Mode(const std::string& path, mode_t mode) {
  if (::chown(path.c_str(), 0, 0) != 0 || ::chmod(path.c_str(), mode) != 0)
    return Err("cannot make " + path + " root's (mode " + std::to_string(mode) + "): " +
               std::strerror(errno));
  return Ok();
}

// A directory root owns and nobody else may write (what sshd checks).
Status RootDir(const std::string& path) {
  KATO_TRY(MakeDirs(path, 0755));
  return Mode(path, 0755);
}

bool Exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

bool IsServiceId(const std::string& s) {
  return s.size() == 16 && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

}  // namespace

std::optional<Account> FilesystemDriver::SystemUser(const std::string& user) {
  struct passwd pw {};
  struct passwd* found = nullptr;
  char buf[4096];
  if (::getpwnam_r(user.c_str(), &pw, buf, sizeof buf, &found) != 0 || found == nullptr)
    return std::nullopt;
  return Account{pw.pw_uid, pw.pw_gid};
}

std::optional<gid_t> FilesystemDriver::SystemGroup(const std::string& group) {
  struct group gr {};
  struct group* found = nullptr;
  char buf[8192];
  if (::getgrnam_r(group.c_str(), &gr, buf, sizeof buf, &found) != 0 || found == nullptr)
    return std::nullopt;
  return gr.gr_gid;
}

int SignalUid(uid_t uid, int sig) {
  int n = 0;
  DIR* d = ::opendir("/proc");
  if (!d) return 0;
  while (dirent* e = ::readdir(d)) {
    std::string pid = e->d_name;
    if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream status("/proc/" + pid + "/status");
    for (std::string line; std::getline(status, line);) {
      if (line.rfind("Uid:", 0) != 0) continue;
      if (std::stoul(line.substr(4)) == uid && ::kill(std::stoi(pid), sig) == 0) ++n;
      break;
    }
  }
  ::closedir(d);
  return n;
}

FilesystemDriver::FilesystemDriver(FilesystemDriverConfig config, CommandRunner& run,
                                   InstanceHost& host, Publish publish, LookUp user,
                                   GroupLookUp group)
    : config_(std::move(config)),
      run_(run),
      host_(host),
      publish_(std::move(publish)),
      user_(std::move(user)),
      group_(std::move(group)) {}

Status FilesystemDriver::Prepare() {
  const FilesystemDriverConfig& c = config_;
  for (const auto& [path, package] :
       std::vector<std::pair<std::string, std::string>>{{c.sshd, "openssh-server"},
                                                        {c.useradd, "passwd"},
                                                        {c.userdel, "passwd"},
                                                        {c.groupadd, "passwd"},
                                                        {c.mkfs, "e2fsprogs"},
                                                        {c.mount, "mount"},
                                                        {c.umount, "mount"},
                                                        {c.nologin, "login"}})
    if (path.empty())
      return Err("the filesystem role needs sshd, useradd, userdel, groupadd, mkfs.ext4, mount, "
                 "umount and nologin (apt-get install " + package + ")");
  KATO_TRY(MakeDirs(c.state_dir + "/images", 0700));
  const std::string key = c.state_dir + "/host_key";
  auto pub = ReadFile(key + ".pub");
  if (!pub || !Exists(key)) {
    auto made = CreateSshKey("kato-fs-host");
    if (!made) return Err(made.error());
    KATO_TRY(WriteFileAtomic(key, made->private_pem, 0600));
    KATO_TRY(WriteFileAtomic(key + ".pub", made->public_line + "\n", 0644));
    pub = made->public_line + "\n";
  }
  std::string public_line = *pub;
  while (!public_line.empty() && public_line.back() == '\n') public_line.pop_back();
  // sshd's privilege separation directory (Debian's init script makes it).
  KATO_TRY(RootDir("/run/sshd"));
  KATO_TRY(RootDir(c.run_root));
  KATO_TRY(RootDir(c.run_root + "/root"));
  KATO_TRY(RootDir(c.run_root + "/keys"));
  if (!group_(c.group))
    if (auto r = run_.Run({c.groupadd, "--force", "--system", c.group}); !r)
      return Err("cannot create the group " + c.group + ": " + r.error());
  auto text = FsSshdConfig({c.ip, c.port, key, c.run_root + "/sshd.pid", c.run_root + "/keys",
                            c.run_root + "/root", c.group});
  if (!text) return Err(text.error());
  const std::string conf = c.state_dir + "/sshd_config";
  KATO_TRY(WriteFileAtomic(conf, *text, 0600));
  if (auto t = run_.Run({c.sshd, "-t", "-f", conf}); !t)
    return Err("sshd refuses its configuration: " + t.error());
  ProcessSpec spec;
  spec.name = kSshdName;
  spec.argv = {c.sshd, "-D", "-e", "-f", conf};
  spec.env = {{"PATH", "/usr/sbin:/usr/bin:/sbin:/bin"}, {"LANG", "C.UTF-8"}};
  spec.cwd = "/";
  spec.ready = ReadinessCheck{c.ip, c.port};
  host_.Want(spec);
  return publish_(FsHost{c.ip, c.port, public_line});
}

Result<Progress> FilesystemDriver::SshdProgress() const {
  auto st = host_.Status(kSshdName);
  if (st && st->state == ProcState::kRunning) return Progress::kDone;
  if (st && st->state == ProcState::kFatal)
    return Err("the filesystem node's sshd does not start: " + st->message + " (see " +
               st->log_path + ")");
  return Progress::kPending;
}

Result<Account> FilesystemDriver::EnsureAccount(const std::string& user) {
  auto gid = group_(config_.group);
  if (!gid) return Err("no group " + config_.group + " on this node");
  if (auto a = user_(user)) return Account{a->uid, *gid};
  // A system account without a home or a shell; sshd chroots it and forces
  // internal-sftp, so neither is ever used. Its password is "*": no password
  // opens it, and it is not locked ("!"), which sshd would refuse keys for.
  if (auto r = run_.Run({config_.useradd, "--system", "--no-create-home", "--home-dir",
                         "/nonexistent", "--shell", config_.nologin, "--gid", config_.group,
                         "--password", "*", user});
      !r && !user_(user))
    return Err("cannot create the account " + user + ": " + r.error());
  auto a = user_(user);
  if (!a) return Err("the account " + user + " was created but is not found");
  return Account{a->uid, *gid};
}

Status FilesystemDriver::EnsureImage(const std::string& id, int size_mb) {
  const std::string image = Image(id);
  if (Exists(image)) return Ok();  // never formatted twice: it holds the service's files
  const std::string fresh = image + ".new";
  int fd = ::open(fresh.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Err("cannot create " + fresh + ": " + std::strerror(errno));
  int rc = ::ftruncate(fd, static_cast<off_t>(size_mb) << 20);
  int err = errno;
  ::close(fd);
  if (rc != 0) {
    ::unlink(fresh.c_str());
    return Err("cannot size " + fresh + ": " + std::strerror(err));
  }
  // With a journal (the files outlive every instance), root-owned root.
  if (auto r = run_.Run({config_.mkfs, "-q", "-F", "-m", "0", "-E", "nodiscard,root_owner=0:0", fresh});
      !r) {
    ::unlink(fresh.c_str());
    return Err(r.error());
  }
  if (::rename(fresh.c_str(), image.c_str()) != 0)
    return Err("cannot rename " + fresh + ": " + std::strerror(errno));
  return Ok();
}

Result<Progress> FilesystemDriver::Provision(const ServiceRecord& s) {
  const std::string user = "u" + s.id;
  auto account = EnsureAccount(user);
  if (!account) return Err(account.error());
  KATO_TRY(EnsureImage(s.id, s.plan_mb));
  const std::string root = Chroot(s.id);
  KATO_TRY(RootDir(root));
  if (!IsMounted(root))
    if (auto r = run_.Run({config_.mount, "-o", "loop,nosuid,nodev,noexec", Image(s.id), root}); !r)
      return Err("cannot mount the service's image: " + r.error());
  KATO_TRY(Mode(root, 0755));  // the image's root: the chroot
  const std::string data = root + "/data";
  if (::mkdir(data.c_str(), 0700) != 0 && errno != EEXIST)
    return Err("cannot create " + data + ": " + std::strerror(errno));
  if (::chown(data.c_str(), account->uid, account->gid) != 0)
    return Err("cannot give " + data + " to " + user + ": " + std::strerror(errno));
  const std::string keys = "restrict " + s.ssh_public_key + "\n";
  auto now = ReadFile(KeyFile(s.id));
  if (!now || *now != keys) KATO_TRY(WriteFileAtomic(KeyFile(s.id), keys, 0644));
  KATO_TRY(Mode(KeyFile(s.id), 0644));
  return SshdProgress();
}

Result<Progress> FilesystemDriver::Remove(const ServiceRecord& s) { return RemoveId(s.id); }

Result<Progress> FilesystemDriver::RemoveId(const std::string& id) {
  const std::string user = "u" + id;
  if (::unlink(KeyFile(id).c_str()) != 0 && errno != ENOENT)
    return Err("cannot remove " + KeyFile(id) + ": " + std::strerror(errno));
  // Its open sessions end with it (no new one can start: the key is gone).
  if (auto a = user_(user)) SignalUid(a->uid, SIGKILL);
  const std::string root = Chroot(id);
  if (IsMounted(root))
    if (auto r = run_.Run({config_.umount, root}); !r)
      if (auto l = run_.Run({config_.umount, "-l", root}); !l)
        return Err("cannot unmount " + root + ": " + l.error());
  if (!IsMounted(root)) {  // what is left is the empty mount point (or a half-made one)
    std::error_code ec;
    std::filesystem::remove_all(root, ec);
  }
  for (const auto& f : {Image(id), Image(id) + ".new"})
    if (::unlink(f.c_str()) != 0 && errno != ENOENT)
      return Err("cannot remove " + f + ": " + std::strerror(errno));
  if (user_(user))
    if (auto r = run_.Run({config_.userdel, user}); !r && user_(user))
      return Err("cannot remove the account " + user + ": " + r.error());
  return Progress::kDone;
}

void FilesystemDriver::Sweep(const std::set<std::string>& live) {
  DIR* d = ::opendir((config_.state_dir + "/images").c_str());
  if (!d) return;
  std::set<std::string> gone;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    std::string id = name.substr(0, name.find('.'));
    if (IsServiceId(id) && !live.count(id)) gone.insert(id);
  }
  ::closedir(d);
  for (const auto& id : gone) {
    auto r = RemoveId(id);
    if (!r) LogWarn("services: cannot remove the leftover filesystem {}: {}", id, r.error());
    else LogInfo("services: removed the leftover filesystem {} (no service names it)", id);
  }
}

}  // namespace kato
