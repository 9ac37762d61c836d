#include "dea/stager.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/fs.h"
#include "common/log.h"
#include "common/log_tail.h"
#include "common/pki.h"
#include "dea/port.h"
#include "dea/sandbox.h"
#include "dea/unpack.h"

namespace kato {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr int kTailLines = 20;  // of the log, in a failure's message
constexpr size_t kMaxReleaseBytes = 64 * 1024;

bool SafeName(const std::string& s) {
  if (s.empty() || s.size() > 63) return false;
  for (char c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') return false;
  return true;
}

bool LowerHex(const std::string& s, size_t max) {
  return !s.empty() && s.size() <= max &&
         s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

// An environment variable's name as a file name in ENV_DIR.
bool EnvFileName(const std::string& k) {
  return !k.empty() && k.size() <= 255 && k != "." && k != ".." &&
         k.find_first_of("/=\0", 0, 3) == std::string::npos;
}

// A small regular file the build wrote, read without following a symlink it
// may have put there instead.
Result<std::string> ReadBuildFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return Err("the build left no " + fs::path(path).filename().string());
  struct stat st;
  std::string out;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
      st.st_size > static_cast<off_t>(kMaxReleaseBytes)) {
    ::close(fd);
    return Err("the build's " + fs::path(path).filename().string() +
               " is not a small regular file");
  }
  out.resize(static_cast<size_t>(st.st_size));
  ssize_t n = ::read(fd, out.data(), out.size());
  ::close(fd);
  if (n < 0) return Err("cannot read " + path);
  out.resize(static_cast<size_t>(n));
  return out;
}

std::string FirstLine(const std::string& s) {
  std::string line = s.substr(0, s.find('\n'));
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
  return line;
}

void Append(const std::string& path, const std::string& text) {
  int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return;
  ssize_t ignored = ::write(fd, text.data(), text.size());
  (void)ignored;
  ::close(fd);
}

}  // namespace

std::string BuiltinBuildpacksDir() {
  return fs::path(SelfExeDir() + "/../share/kato/buildpacks").lexically_normal().string();
}

Result<std::optional<StagingTask>> ParseStagingDoc(const std::string& text,
                                                   const std::string& node_id) {
  json d = json::parse(text, nullptr, false);
  if (!d.is_object()) return Err("a staging document is not a JSON object");
  auto str = [&](const char* k) {
    auto it = d.find(k);
    return it != d.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  if (str("node_id") != node_id || str("state") != "STAGING") return std::optional<StagingTask>{};
  StagingTask t;
  t.task_id = str("task_id");
  t.app = str("app");
  t.source_sha256 = str("source_sha256");
  t.buildpack = str("buildpack");
  t.command = str("command");
  if (!LowerHex(t.task_id, 64))
    return Err("staging task id '" + t.task_id + "' is not lowercase hex");
  if (!SafeName(t.app)) return Err("staging task " + t.task_id + " names a bad app");
  if (!IsSha256Hex(t.source_sha256))
    return Err("staging task " + t.task_id + " names no source (SHA-256)");
  if (!t.buildpack.empty() && !SafeName(t.buildpack))
    return Err("staging task " + t.task_id + " names a bad buildpack");
  if (t.command.find('\0') != std::string::npos) return Err("staging task command holds NUL");
  if (auto it = d.find("disk_mb"); it != d.end()) {
    if (!it->is_number_integer() || it->get<int64_t>() < kMinDiskMb ||
        it->get<int64_t>() > kMaxDiskMb)
      return Err("staging task " + t.task_id + " has a bad disk_mb");
    t.disk_mb = it->get<int>();
  }
  if (auto it = d.find("custom_buildpacks"); it != d.end() && it->is_array())
    for (const auto& p : *it) {
      std::string name = p.is_object() ? p.value("name", "") : "";
      std::string sha = p.is_object() ? p.value("sha256", "") : "";
      if (!SafeName(name) || !IsSha256Hex(sha))
        return Err("staging task " + t.task_id + " names a bad custom buildpack");
      t.custom_buildpacks.emplace_back(name, sha);
    }
  if (auto it = d.find("env"); it != d.end() && it->is_object())
    for (const auto& [k, v] : it->items())
      if (v.is_string()) t.env[k] = v.get<std::string>();
  return std::optional<StagingTask>(std::move(t));
}

struct Stager::Job {
  StagingTask task;
  std::string dir, log, id;
  InstanceDisk disk;
  Attachment net;
  int port = 0;
  pid_t pid = 0;
  std::chrono::steady_clock::time_point deadline;
  std::string killed;      // why it was killed; empty: it exited by itself
  bool cancelled = false;  // nobody waits for its outcome
  int memory_mb = 0, timeout_s = 0;
};

Stager::Stager(Deps deps, StagerOptions options) : d_(std::move(deps)), o_(std::move(options)) {}

Stager::~Stager() = default;

std::string Stager::LogPath(const std::string& root, const std::string& task_id) {
  return root + "/" + task_id + "/staging.log";
}

void Stager::SetLimits(int memory_mb, int timeout_s, const std::string& npm_registry) {
  o_.memory_mb = memory_mb;
  o_.timeout_s = timeout_s;
  o_.npm_registry = npm_registry;
}

std::set<int> Stager::ports() const {
  std::set<int> out;
  for (const auto& [id, j] : jobs_) out.insert(j->port);
  return out;
}

void Stager::RemoveLeftovers() {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(o_.root, ec)) {
    std::string name = e.path().filename().string();
    if (d_.cgroups) (void)d_.cgroups->Remove("staging-" + name.substr(0, 16));
    fs::remove_all(e.path(), ec);
  }
}

void Stager::Round(const std::vector<StagingTask>& wanted) {
  std::set<std::string> ids;
  for (const auto& t : wanted) {
    ids.insert(t.task_id);
    if (seen_.insert(t.task_id).second) Start(t);
  }
  if (seen_.size() > 10000) seen_ = ids;  // bounded: only tasks still asked for matter
  auto now = std::chrono::steady_clock::now();
  for (auto& [id, j] : jobs_) {
    if (!j->killed.empty()) continue;
    if (!ids.count(id)) {
      j->cancelled = true;
      Kill(*j, "cancelled: the app was pushed again or deleted");
    } else if (now > j->deadline) {
      Kill(*j, "stopped: the build ran past staging_timeout_s (" + std::to_string(j->timeout_s) +
                   " s; `kato config set dea staging_timeout_s N` allows more)");
    } else {
      struct stat st;
      if (::stat(j->log.c_str(), &st) == 0 && static_cast<uint64_t>(st.st_size) > o_.max_log_bytes)
        Kill(*j, "stopped: the build's output passed " + std::to_string(o_.max_log_bytes >> 20) +
                     " MiB");
    }
  }
}

void Stager::Kill(Job& j, const std::string& why) {
  j.killed = why;
  LogInfo("dea: staging {} of {}: {}", j.task.task_id, j.task.app, why);
  if (j.pid > 0) d_.launcher.kill_group(j.pid, SIGKILL);  // bwrap: its PID namespace goes with it
}

void Stager::StopAll() {
  for (auto& [id, j] : jobs_) {
    j->cancelled = true;
    if (j->killed.empty()) Kill(*j, "stopped: the DEA is stopping");
  }
}

void Stager::Start(const StagingTask& t) {
  auto job = std::make_unique<Job>();
  Job& j = *job;
  j.task = t;
  j.dir = o_.root + "/" + t.task_id;
  j.log = LogPath(o_.root, t.task_id);
  j.id = "staging-" + t.task_id.substr(0, 16);
  j.memory_mb = o_.memory_mb;
  j.timeout_s = o_.timeout_s;
  auto fail = [&](const std::string& why) {
    Append(j.log, "kato: staging failed: " + why + "\n");
    LogWarn("dea: staging {} of {} cannot start: {}", t.task_id, t.app, why);
    Cleanup(j);
    StagingOutcome out{t.task_id, t.app, false, why + "\n" + Tail(t.task_id), "", "", ""};
    d_.done(out);
  };
  // One log kept per app: the last build's.
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(o_.root, ec)) {
    std::string other = e.path().filename().string();
    if (other == t.task_id || jobs_.count(other)) continue;
    auto app = ReadFile(e.path().string() + "/app");
    if (app && *app == t.app) fs::remove_all(e.path(), ec);
  }
  if (auto s = MakeDirs(j.dir, 0700); !s) return fail(s.error());
  (void)WriteFileAtomic(j.dir + "/app", t.app, 0600);
  Append(j.log,
         "-----> Staging " + t.app + " on this DEA (task " + t.task_id.substr(0, 12) + ")\n");
  auto source = d_.fetch(t.source_sha256);
  if (!source) return fail(source.error());
  auto disk = d_.disks.Create(j.id, j.dir + "/disk.img", t.disk_mb, o_.uid, o_.gid);
  if (!disk) return fail(disk.error());
  j.disk = *disk;
  FileOwner owner{o_.uid, o_.gid};
  if (auto s = UnpackArchive(*source, j.disk.app(), UnpackLimits{}, owner); !s)
    return fail("the app's archive was refused: " + s.error());
  // The build cache this DEA kept for the app (it went through the same unpacking).
  std::string cache = j.disk.mount + "/cache";
  std::string cache_tar = o_.cache_root + "/" + t.app + ".tar";
  if (!PathExists(cache_tar) || !UnpackArchive(cache_tar, cache, UnpackLimits{}, owner).ok()) {
    fs::remove_all(cache, ec);
    if (auto s = MakeDirs(cache, 0700); !s) return fail(s.error());
    if (::chown(cache.c_str(), o_.uid, o_.gid) != 0)
      return fail("cannot give the build cache to the app user");
  } else {
    Append(j.log, "-----> Restoring the build cache\n");
  }
  // ENV_DIR: one file per variable (root's, readable).
  std::string env_dir = j.disk.tmp() + "/kato-env";
  if (auto s = MakeDirs(env_dir, 0755); !s) return fail(s.error());
  std::map<std::string, std::string> env = t.env;
  if (!o_.npm_registry.empty()) env.emplace("NPM_CONFIG_REGISTRY", o_.npm_registry);
  for (const auto& [k, v] : env)
    if (EnvFileName(k)) {
      if (auto s = WriteFileAtomic(env_dir + "/" + k, v, 0644); !s) return fail(s.error());
    }
  // The buildpacks: a copy in the disk, read-only in the sandbox.
  std::string packs = j.disk.mount + "/buildpacks";
  fs::copy(o_.buildpacks_dir, packs, fs::copy_options::recursive, ec);
  if (ec) return fail("cannot copy the buildpacks from " + o_.buildpacks_dir + ": " + ec.message());
  if (!t.custom_buildpacks.empty()) {
    std::string order;
    for (const auto& [name, sha] : t.custom_buildpacks) {
      std::string dir = packs + "/" + name;
      if (PathExists(dir)) return fail("buildpack " + name + " is a built-in one's name");
      auto archive = d_.fetch(sha);
      if (!archive) return fail("cannot fetch buildpack " + name + ": " + archive.error());
      if (auto s = UnpackArchive(*archive, dir, UnpackLimits{}); !s)
        return fail("buildpack " + name + "'s archive was refused: " + s.error());
      order += name + "\n";
    }
    auto builtin = ReadFile(packs + "/order");
    if (!builtin) return fail(builtin.error());
    if (auto s = WriteFileAtomic(packs + "/order", order + *builtin, 0644); !s)
      return fail(s.error());
  }
  std::set<int> in_use = d_.ports_in_use();
  for (int p : ports()) in_use.insert(p);
  auto port = AllocatePort(o_.port_lo, o_.port_hi, in_use);
  if (!port) return fail(port.error());
  j.port = *port;
  auto net = d_.network.Attach(j.port);
  if (!net) return fail(net.error());
  j.net = *net;

  InstanceConfig c;
  c.instance_id = j.id;
  c.app_name = t.app;
  c.app_dir = j.disk.app();
  c.home_dir = j.disk.home();
  c.tmp_dir = j.disk.tmp();
  c.app_writable = true;
  c.cache_dir = cache;
  c.buildpacks_dir = packs;
  c.netns_path = j.net.netns_path;
  c.port = j.port;
  c.memory_mb = j.memory_mb;
  c.uid = o_.uid;
  c.gid = o_.gid;
  c.hidden_paths = o_.hidden_paths;
  c.command = "exec /bin/sh /buildpacks/stage";
  if (!t.buildpack.empty()) c.env["KATO_BUILDPACK"] = t.buildpack;
  if (!t.command.empty()) c.env["KATO_COMMAND"] = t.command;
  if (d_.cgroups) {
    if (auto s = d_.cgroups->Create(j.id, InstanceLimits(c)); !s) return fail(s.error());
    c.cgroup_procs_files = d_.cgroups->ProcsFiles(j.id);
  }
  std::string args = j.dir + "/sandbox.args";
  auto launch = InstanceSpec(c, args);
  if (!launch) return fail(launch.error());
  if (auto s = WriteSandboxArgs(args, launch->sandbox_args); !s) return fail(s.error());
  auto pid = d_.launcher.launch(launch->spec, j.log);
  if (!pid) return fail(pid.error());
  j.pid = *pid;
  j.deadline = std::chrono::steady_clock::now() + std::chrono::seconds(j.timeout_s);
  LogInfo("dea: staging {} (task {}) as pid {}, at most {} MB and {} s", t.app, t.task_id, j.pid,
          j.memory_mb, j.timeout_s);
  jobs_[t.task_id] = std::move(job);
}

bool Stager::OnExit(const ExitEvent& e) {
  for (auto it = jobs_.begin(); it != jobs_.end(); ++it) {
    if (it->second->pid != e.pid) continue;
    std::unique_ptr<Job> j = std::move(it->second);
    jobs_.erase(it);
    j->pid = 0;
    Finish(*j, e.status);
    return true;
  }
  return false;
}

void Stager::Finish(Job& j, int status) {
  StagingOutcome out{j.task.task_id, j.task.app, false, "", "", "", ""};
  auto failed = [&](const std::string& why) {
    Append(j.log, "kato: staging failed: " + why + "\n");
    out.message = why + "\n" + Tail(j.task.task_id);
  };
  bool oom = false;
  if (d_.cgroups)
    if (auto m = d_.cgroups->ReadMemoryEvents(j.id); m && m->oom_kills > 0) oom = true;
  if (!j.killed.empty()) {
    failed(j.killed);
  } else if (oom) {
    failed("stopped: the build ran out of memory (staging_memory_mb " +
           std::to_string(j.memory_mb) +
           "; `kato config set dea staging_memory_mb N` allows more)");
  } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    failed(WIFEXITED(status)
               ? "the build failed (the staging driver exited with status " +
                     std::to_string(WEXITSTATUS(status)) + ")"
               : "the build was killed by signal " + std::to_string(WTERMSIG(status)));
  } else {
    auto release = ReadBuildFile(j.disk.tmp() + "/kato-release");
    auto buildpack = ReadBuildFile(j.disk.tmp() + "/kato-buildpack");
    std::string droplet = j.dir + "/droplet.tar.gz";
    if (!release || !buildpack) {
      failed(!release ? release.error() : buildpack.error());
    } else if (auto tar =
                   d_.run.Run({"/bin/tar", "-C", j.disk.app(), "--numeric-owner", "--owner=0",
                               "--group=0", "--mode=a+rX", "-czf", droplet, "."});
               !tar) {
      failed("cannot archive the build: " + tar.error());
    } else {
      out.ok = true;
      out.droplet_path = droplet;
      out.command = j.task.command.empty() ? FirstLine(*release) : j.task.command;
      out.buildpack = FirstLine(*buildpack);
      struct stat st;
      off_t size = ::stat(droplet.c_str(), &st) == 0 ? st.st_size : 0;
      Append(j.log, "-----> Droplet: " + std::to_string((size + 1023) / 1024) + " KiB\n");
      // The cache for the next build of the app on this DEA.
      std::string tmp = o_.cache_root + "/" + j.task.app + ".tar.tmp";
      if (MakeDirs(o_.cache_root, 0700).ok() &&
          d_.run
              .Run({"/bin/tar", "-C", j.disk.mount + "/cache", "--numeric-owner", "-cf", tmp, "."})
              .ok())
        ::rename(tmp.c_str(), (o_.cache_root + "/" + j.task.app + ".tar").c_str());
    }
  }
  Cleanup(j);
  if (!j.cancelled) d_.done(out);
  std::error_code ec;
  if (!out.droplet_path.empty()) fs::remove(out.droplet_path, ec);  // a controller has it now
}

void Stager::Cleanup(Job& j) {
  if (d_.cgroups) (void)d_.cgroups->Remove(j.id);
  if (j.net.index >= 0) {
    if (auto s = d_.network.Detach(j.net); !s)
      LogWarn("dea: staging {}: {}", j.task.task_id, s.error());
    j.net = Attachment{};
  }
  if (!j.disk.mount.empty()) {
    if (auto s = d_.disks.Remove(j.disk); !s)
      LogWarn("dea: staging {}: {}", j.task.task_id, s.error());
    j.disk = InstanceDisk{};
  }
  std::error_code ec;
  fs::remove(j.dir + "/sandbox.args", ec);
}

std::string Stager::Tail(const std::string& task_id) const {
  auto tail = TailLog(LogPath(o_.root, task_id), kTailLines, 64 * 1024);
  return tail ? tail->text : "";
}

}  // namespace kato
