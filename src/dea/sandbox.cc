#include "dea/sandbox.h"

#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

namespace kato {
namespace {

namespace fs = std::filesystem;

// Joins the cgroups named before "--", then execs the rest. Exit 125 (like
// env(1) and chroot(1) for their own failures) tells a failed join apart from
// the app's exit codes; sh has already logged which file failed.
constexpr const char* kJoinScript =
    "while [ \"$1\" != -- ]; do echo $$ > \"$1\" || exit 125; shift; done; shift; exec \"$@\"";

// Top-level host entries the sandbox never gets: kernel and device trees (it
// gets fresh ones), places holding other users' files and live sockets (a
// read-only mount does not stop connect() on a unix socket), and /app.
const std::set<std::string> kNotShared = {"proc", "dev", "sys", "tmp", "run",
                                          "home", "root", "lost+found", "app"};

// The app user can reach `path` when it may search every directory on the way
// (setpriv clears supplementary groups, so only the primary gid counts).
Status CheckReachable(const std::string& path, uid_t uid, gid_t gid, const std::string& what) {
  fs::path p = fs::path(path).lexically_normal();
  fs::path cur = "/";
  for (auto it = ++p.begin(); it != p.end(); ++it) {
    if (it->empty()) continue;
    struct stat st;
    if (::stat(cur.c_str(), &st) != 0) return Err("cannot stat " + cur.string());
    mode_t need = st.st_uid == uid ? S_IXUSR : st.st_gid == gid ? S_IXGRP : S_IXOTH;
    if ((st.st_mode & need) == 0) {
      return Err("the app user (uid " + std::to_string(uid) + ") cannot reach the " + what + " " +
                 path + " because it may not search " + cur.string() +
                 "; make it searchable (chmod o+x) or keep instances elsewhere");
    }
    cur /= *it;
  }
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return Err("the " + what + " " + path + " is not a directory");
  }
  return Ok();
}

std::string VcapApplication(const InstanceConfig& c) {
  nlohmann::json j = {
      {"name", c.app_name},
      {"application_name", c.app_name},
      {"instance_id", c.instance_id},
      {"instance_index", c.instance_index},
      {"uris", c.uris},
      {"application_uris", c.uris},
      {"port", c.port},
      {"host", "0.0.0.0"},
      {"limits", {{"mem", c.memory_mb}}},
  };
  return j.dump();
}

}  // namespace

CgroupLimits InstanceLimits(const InstanceConfig& c) {
  return {int64_t{c.memory_mb} << 20, c.cpu_shares, c.pids_max};
}

void SignalInstance(const CgroupManager& cgroups, const std::string& id, pid_t sandbox_pid,
                    int sig) {
  for (pid_t pid : cgroups.Pids(id)) {
    if (pid != sandbox_pid) ::kill(pid, sig);
  }
}

Result<ProcessSpec> InstanceSpec(const InstanceConfig& c) {
  if (c.instance_id.empty() || c.instance_id.find('/') != std::string::npos) {
    return Err("instance id '" + c.instance_id + "' must be non-empty and hold no '/'");
  }
  if (c.command.empty()) return Err("app " + c.app_name + " has no command to run");
  if (c.port <= 0 || c.port > 65535) return Err("instance " + c.instance_id + " has no port");
  if (c.uid == 0) return Err("instances must not run as root; give an unprivileged uid");
  for (const auto& p : {c.app_dir, c.home_dir}) {
    if (p.empty() || p[0] != '/') return Err("instance directories must be absolute paths");
  }
  KATO_TRY(CheckReachable(c.app_dir, c.uid, c.gid, "app directory"));
  KATO_TRY(CheckReachable(c.home_dir, c.uid, c.gid, "home directory"));

  std::vector<std::string> a = {"/bin/sh", "-c", kJoinScript, "kato-instance"};
  for (const auto& f : c.cgroup_procs_files) a.push_back(f);
  a.insert(a.end(), {"--", c.setpriv, "--reuid=" + std::to_string(c.uid),
                     "--regid=" + std::to_string(c.gid), "--clear-groups", "--no-new-privs", "--",
                     c.bwrap, "--unshare-user", "--uid", std::to_string(c.uid), "--gid",
                     std::to_string(c.gid), "--unshare-pid", "--unshare-ipc", "--unshare-uts",
                     "--hostname", c.app_name.empty() ? "app" : c.app_name.substr(0, 63),
                     "--die-with-parent",
                     "--new-session"});

  // bwrap's root is a fresh tmpfs; the host's system directories are mounted
  // into it one by one (rather than --ro-bind / /) so that /app and /home/app
  // can be created, and it is made read-only at the end.
  std::vector<fs::directory_entry> top;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/", ec)) top.push_back(e);
  if (ec) return Err("cannot list /: " + ec.message());
  std::sort(top.begin(), top.end());
  for (const auto& e : top) {
    std::string name = e.path().filename().string();
    if (kNotShared.count(name)) continue;
    if (e.is_symlink(ec)) {
      a.insert(a.end(), {"--symlink", fs::read_symlink(e.path(), ec).string(), e.path().string()});
    } else if (e.is_directory(ec)) {
      a.insert(a.end(), {"--ro-bind", e.path().string(), e.path().string()});
    }
  }
  a.insert(a.end(), {"--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/run",
                     "--tmpfs", "/home", "--tmpfs", "/root"});
  // Runtimes read the CPU count here; the rest of /sys stays out of sight.
  if (fs::is_directory("/sys/devices/system/cpu", ec)) {
    a.insert(a.end(), {"--ro-bind", "/sys/devices/system/cpu", "/sys/devices/system/cpu"});
  }
  for (const auto& h : c.hidden_paths) {
    struct stat st;
    if (h.empty() || h[0] != '/') return Err("hidden path '" + h + "' must be absolute");
    if (::lstat(h.c_str(), &st) != 0) continue;  // nothing there to hide
    if (S_ISDIR(st.st_mode)) {
      a.insert(a.end(), {"--tmpfs", h});
    } else {
      a.insert(a.end(), {"--ro-bind", "/dev/null", h});
    }
  }
  a.insert(a.end(), {"--ro-bind", c.app_dir, kSandboxAppDir, "--bind", c.home_dir,
                     kSandboxHomeDir, "--remount-ro", "/", "--chdir", kSandboxAppDir, "--",
                     "/bin/sh", "-c", c.command});

  ProcessSpec spec;
  spec.name = "app-" + c.instance_id;
  spec.argv = std::move(a);
  spec.env = c.env;
  std::string port = std::to_string(c.port);
  spec.env["PORT"] = port;
  spec.env["VCAP_APP_PORT"] = port;
  spec.env["VCAP_APP_HOST"] = "0.0.0.0";
  spec.env["VCAP_APPLICATION"] = VcapApplication(c);
  spec.env["HOME"] = kSandboxHomeDir;
  spec.env["TMPDIR"] = "/tmp";
  spec.env.emplace("PATH", "/usr/local/bin:/usr/bin:/bin");
  spec.env.emplace("LANG", "C.UTF-8");
  spec.cwd = "/";
  spec.ready = ReadinessCheck{"127.0.0.1", c.port};
  return spec;
}

}  // namespace kato
