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

#include "common/fs.h"

namespace kato {
namespace {

namespace fs = std::filesystem;

// $1 is the sandbox's argument file; then the cgroups to join up to "--";
// then the command, exec'd with the argument file on fd 3. Exit 125 (like
// env(1) and chroot(1) for their own failures) tells a failed step apart from
// the app's exit codes; sh has already logged which file failed.
constexpr const char* kJoinScript =
    "a=$1; shift; while [ \"$1\" != -- ]; do echo $$ > \"$1\" || exit 125; shift; done; shift; "
    "exec \"$@\" 3<\"$a\" || exit 125";

// The environment of the privileged steps: fixed, nothing of the user's.
const std::map<std::string, std::string> kPrivilegedEnv = {
    {"PATH", "/usr/sbin:/usr/bin:/sbin:/bin"}, {"LANG", "C.UTF-8"}};

constexpr const char* kSmallTmpfs = "16777216";  // /run, /home, /root: 16 MiB each

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

Status WriteSandboxArgs(const std::string& args_path, const std::string& sandbox_args) {
  return WriteFileAtomic(args_path, sandbox_args, 0600);
}

Result<InstanceLaunch> InstanceSpec(const InstanceConfig& c, const std::string& args_path) {
  if (c.instance_id.empty() || c.instance_id.find('/') != std::string::npos) {
    return Err("instance id '" + c.instance_id + "' must be non-empty and hold no '/'");
  }
  if (c.command.empty()) return Err("app " + c.app_name + " has no command to run");
  if (c.port <= 0 || c.port > 65535) return Err("instance " + c.instance_id + " has no port");
  if (c.uid == 0) return Err("instances must not run as root; give an unprivileged uid");
  if (args_path.empty() || args_path[0] != '/') return Err("the sandbox's argument file must be an absolute path");
  for (const auto& p : {c.app_dir, c.home_dir}) {
    if (p.empty() || p[0] != '/') return Err("instance directories must be absolute paths");
  }
  if (!c.tmp_dir.empty() && c.tmp_dir[0] != '/') return Err("instance directories must be absolute paths");
  KATO_TRY(CheckReachable(c.app_dir, c.uid, c.gid, "app directory"));
  KATO_TRY(CheckReachable(c.home_dir, c.uid, c.gid, "home directory"));
  if (!c.tmp_dir.empty()) KATO_TRY(CheckReachable(c.tmp_dir, c.uid, c.gid, "tmp directory"));
  for (const auto& [p, what] : {std::pair{c.cache_dir, "build cache"}, {c.buildpacks_dir, "buildpacks"}}) {
    if (p.empty()) continue;
    if (p[0] != '/') return Err(std::string("the ") + what + " directory must be an absolute path");
    KATO_TRY(CheckReachable(p, c.uid, c.gid, std::string(what) + " directory"));
  }
  for (const auto& [host, inside] : c.binds) {
    if (host.empty() || host[0] != '/' || inside.rfind(std::string(kSandboxAppDir) + "/", 0) != 0 ||
        inside.find("..") != std::string::npos)
      return Err("bind " + host + " -> " + inside + ": an absolute host path onto a path under /app");
    KATO_TRY(CheckReachable(host, c.uid, c.gid, "service directory"));
  }
  if (c.open_files < 64 || c.open_files > (1 << 20))
    return Err("open_files must be between 64 and 1048576");

  // The environment the app sees: the user's, then the platform's (which win).
  std::map<std::string, std::string> env = c.env;
  std::string port = std::to_string(c.port);
  env["PORT"] = port;
  env["VCAP_APP_PORT"] = port;
  env["VCAP_APP_HOST"] = "0.0.0.0";
  env["VCAP_APPLICATION"] = VcapApplication(c);
  env["HOME"] = kSandboxHomeDir;
  env["TMPDIR"] = "/tmp";
  env.emplace("PATH", "/usr/local/bin:/usr/bin:/bin");
  env.emplace("LANG", "C.UTF-8");
  for (const auto& [k, v] : env) {
    if (k.empty() || k.find('=') != std::string::npos || k.find('\0') != std::string::npos ||
        v.find('\0') != std::string::npos)
      return Err("environment variable '" + k + "' has a name or value kato cannot pass on");
  }

  // bwrap's arguments, read from fd 3.
  std::vector<std::string> b = {"--unshare-user", "--uid", std::to_string(c.uid), "--gid",
                                std::to_string(c.gid), "--disable-userns", "--unshare-pid",
                                "--unshare-ipc", "--unshare-uts", "--hostname",
                                c.app_name.empty() ? "app" : c.app_name.substr(0, 63),
                                "--die-with-parent", "--new-session"};
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
      b.insert(b.end(), {"--symlink", fs::read_symlink(e.path(), ec).string(), e.path().string()});
    } else if (e.is_directory(ec)) {
      b.insert(b.end(), {"--ro-bind", e.path().string(), e.path().string()});
    }
  }
  b.insert(b.end(), {"--proc", "/proc", "--dev", "/dev", "--size", kSmallTmpfs, "--tmpfs", "/run",
                     "--size", kSmallTmpfs, "--tmpfs", "/home", "--size", kSmallTmpfs, "--tmpfs",
                     "/root"});
  if (c.tmp_dir.empty()) {
    b.insert(b.end(), {"--size", "67108864", "--tmpfs", "/tmp"});
  } else {
    b.insert(b.end(), {"--bind", c.tmp_dir, "/tmp"});
  }
  // Runtimes read the CPU count here; the rest of /sys stays out of sight.
  if (fs::is_directory("/sys/devices/system/cpu", ec)) {
    b.insert(b.end(), {"--ro-bind", "/sys/devices/system/cpu", "/sys/devices/system/cpu"});
  }
  for (const auto& h : c.hidden_paths) {
    struct stat st;
    if (h.empty() || h[0] != '/') return Err("hidden path '" + h + "' must be absolute");
    if (::lstat(h.c_str(), &st) != 0) continue;  // nothing there to hide
    if (S_ISDIR(st.st_mode)) {
      b.insert(b.end(), {"--tmpfs", h});
    } else {
      b.insert(b.end(), {"--ro-bind", "/dev/null", h});
    }
  }
  b.insert(b.end(), {c.app_writable ? "--bind" : "--ro-bind", c.app_dir, kSandboxAppDir});
  if (!c.cache_dir.empty()) b.insert(b.end(), {"--bind", c.cache_dir, kSandboxCacheDir});
  if (!c.buildpacks_dir.empty())
    b.insert(b.end(), {"--ro-bind", c.buildpacks_dir, kSandboxBuildpacksDir});
  for (const auto& [host, inside] : c.binds) b.insert(b.end(), {"--bind", host, inside});
  b.insert(b.end(), {"--bind", c.home_dir, kSandboxHomeDir, "--remount-ro", "/", "--chdir",
                     kSandboxAppDir, "--clearenv"});
  for (const auto& [k, v] : env) b.insert(b.end(), {"--setenv", k, v});
  InstanceLaunch out;
  for (const auto& arg : b) {
    out.sandbox_args += arg;
    out.sandbox_args.push_back('\0');
  }

  std::vector<std::string> a = {"/bin/sh", "-c", kJoinScript, "kato-instance", args_path};
  for (const auto& f : c.cgroup_procs_files) a.push_back(f);
  a.push_back("--");
  if (!c.netns_path.empty()) a.insert(a.end(), {c.nsenter, "--net=" + c.netns_path, "--"});
  std::string nofile = std::to_string(c.open_files);
  a.insert(a.end(), {c.prlimit, "--nofile=" + nofile + ":" + nofile, "--core=0", "--"});
  a.insert(a.end(), {c.setpriv, "--reuid=" + std::to_string(c.uid),
                     "--regid=" + std::to_string(c.gid), "--clear-groups", "--no-new-privs", "--",
                     c.bwrap, "--args", "3", "--", "/bin/sh", "-c", c.command});

  out.spec.name = "app-" + c.instance_id;
  out.spec.argv = std::move(a);
  out.spec.env = kPrivilegedEnv;
  out.spec.cwd = "/";
  out.spec.ready = ReadinessCheck{c.probe_host, c.port};
  return out;
}

}  // namespace kato
