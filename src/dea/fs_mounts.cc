#include "dea/fs_mounts.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "common/fs.h"
#include "common/log_tail.h"
#include "common/mounts.h"
#include "store/store.h"

namespace kato {
namespace {

constexpr std::chrono::seconds kMountWait{20};

// A directory of root's that is really one (not a symlink an archive put
// there), made when missing.
Status PlainDir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST)
    return Err("cannot create " + path + ": " + std::strerror(errno));
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return Err(path + " is not a directory (the app's archive may not hold one there)");
  if (::chown(path.c_str(), 0, 0) != 0 || ::chmod(path.c_str(), 0755) != 0)
    return Err("cannot make " + path + " root's: " + std::strerror(errno));
  return Ok();
}

}  // namespace

std::string KnownHostsLine(const FsHost& host) {
  return "[" + host.ip + "]:" + std::to_string(host.port) + " " + host.public_key;
}

ProcessSpec SshfsSpec(const SshfsInput& in) {
  const ServiceRecord& s = in.service;
  std::string opts = "IdentityFile=" + in.key_file + ",UserKnownHostsFile=" + in.known_hosts_file +
                     ",GlobalKnownHostsFile=/dev/null,StrictHostKeyChecking=yes,BatchMode=yes,"
                     "IdentitiesOnly=yes,PasswordAuthentication=no,ConnectTimeout=10,"
                     "ServerAliveInterval=5,ServerAliveCountMax=3,reconnect,allow_other,"
                     "uid=" + std::to_string(in.uid) + ",gid=" + std::to_string(in.gid) +
                     ",port=" + std::to_string(in.host.port);
  ProcessSpec p;
  p.name = "sshfs-" + s.name;
  p.argv = {in.sshfs, "-f", "-F", "/dev/null", "-o", opts,
            s.username + "@" + in.host.ip + ":/data", in.mount_point};
  p.env = {{"PATH", "/usr/bin:/bin"}, {"HOME", in.log_home}, {"LANG", "C.UTF-8"}};
  p.cwd = "/";
  return p;
}

FsMounts::FsMounts(PosixLauncher& launcher, CommandRunner& run)
    : launcher_(launcher), run_(run), sshfs_(FindTool("sshfs")), umount_(FindTool("umount")) {}

Status FsMounts::Mount(const std::string& instance_dir, const std::string& disk_mount,
                       const std::string& app_dir, const std::vector<ServiceRecord>& services,
                       Store& store, uid_t uid, gid_t gid, std::vector<FsMount>& mounted) {
  for (const auto& s : services) {
    if (s.type != "filesystem") continue;
    if (sshfs_.empty())
      return Err("the app is bound to filesystem service " + s.name +
                 ", and this DEA has no sshfs (apt-get install sshfs)");
    auto doc = store.GetDoc("fs_host", s.node_id);
    if (!doc) return Err("cannot read the filesystem node's host key: " + doc.error());
    if (!*doc)
      return Err("filesystem node " + s.node_ip + " has not published its sshd's host key yet");
    auto host = FsHostFromJson(**doc);
    if (!host) return Err(host.error());
    const std::string prefix = instance_dir + "/fs-" + s.name;
    KATO_TRY(WriteFileAtomic(prefix + ".key", s.ssh_key, 0600));
    KATO_TRY(WriteFileAtomic(prefix + ".known_hosts", KnownHostsLine(*host) + "\n", 0600));
    KATO_TRY(PlainDir(disk_mount + "/fs"));
    KATO_TRY(PlainDir(disk_mount + "/fs/" + s.name));
    KATO_TRY(PlainDir(app_dir + "/fs"));
    KATO_TRY(PlainDir(app_dir + "/fs/" + s.name));
    FsMount m{s.name, disk_mount + "/fs/" + s.name, FilesystemMountPoint(s.name), 0};
    SshfsInput in{sshfs_, s, *host, prefix + ".key", prefix + ".known_hosts", instance_dir,
                  m.host_dir, uid, gid};
    const std::string log = instance_dir + "/logs/fs-" + s.name + ".log";
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) return Err("cannot open " + log + ": " + std::strerror(errno));
    auto pid = launcher_.launch_to_fd(SshfsSpec(in), fd);
    ::close(fd);
    if (!pid) return Err("cannot start sshfs: " + pid.error());
    m.pid = *pid;
    mounted.push_back(m);
    auto deadline = std::chrono::steady_clock::now() + kMountWait;
    for (;;) {
      // Mounted, and answering (sshfs may mount before its SFTP session is up).
      struct stat st {};
      bool mounted = IsMounted(m.host_dir);
      if (mounted && ::stat(m.host_dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) break;
      bool alive = ProcessAlive(m.pid);
      if (!alive || mounted || std::chrono::steady_clock::now() > deadline) {
        auto tail = TailLog(log, 5);
        std::string why = tail && !tail->text.empty() ? tail->text : "no output";
        while (!why.empty() && why.back() == '\n') why.pop_back();
        return Err("cannot mount filesystem service " + s.name + " from " + s.node_ip + ": " +
                   (mounted ? "the mount does not answer: " : alive ? "not mounted within 20 s: " : "") +
                   why);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(25));  // the poll's pace, bounded above
    }
  }
  return Ok();
}

void FsMounts::Unmount(std::vector<FsMount>& mounts) {
  for (auto& m : mounts) {
    if (IsMounted(m.host_dir) && !umount_.empty())
      if (auto r = run_.Run({umount_, m.host_dir}); !r) (void)run_.Run({umount_, "-l", m.host_dir});
    if (m.pid > 0) ::kill(m.pid, SIGTERM);  // exits with its mount; reaped by the DEA
    m.pid = 0;
  }
}

std::string FsMounts::Lost(const std::vector<FsMount>& mounts, const std::string& mountinfo) {
  for (const auto& m : mounts)
    if (!IsMountPoint(mountinfo, m.host_dir)) return m.service;
  return "";
}

}  // namespace kato
