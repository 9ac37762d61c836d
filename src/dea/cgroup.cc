#include "dea/cgroup.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <sstream>
#include <thread>

#include "common/fs.h"

namespace kato {
namespace {

std::string Errno(int e) { return std::strerror(e); }

// Control files exist already on a real cgroup fs; O_CREAT lets the same code
// run against a scratch tree in tests and is a no-op on the real one.
Status WriteControl(const std::string& path, const std::string& value) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Err("cannot open " + path + ": " + Errno(errno));
  ssize_t n = ::write(fd, value.data(), value.size());
  int err = errno;
  ::close(fd);
  if (n != static_cast<ssize_t>(value.size())) {
    return Err("cannot write '" + value + "' to " + path + ": " + Errno(n < 0 ? err : EIO));
  }
  return Ok();
}

Status MakeDir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
    return Err("cannot create cgroup " + path + ": " + Errno(errno) +
               " (katod needs root and a writable cgroup hierarchy)");
  }
  return Ok();
}

std::vector<pid_t> ReadPids(const std::string& procs_file) {
  std::vector<pid_t> pids;
  auto text = ReadFile(procs_file);
  if (!text) return pids;
  std::istringstream in(*text);
  for (long pid; in >> pid;) {
    if (pid > 0) pids.push_back(static_cast<pid_t>(pid));
  }
  return pids;
}

// "key value" lines (memory.events, memory.oom_control): the value of `key`.
uint64_t KeyedValue(const std::string& text, const std::string& key) {
  std::istringstream in(text);
  std::string k;
  uint64_t v = 0;
  while (in >> k >> v) {
    if (k == key) return v;
  }
  return 0;
}

Result<uint64_t> ReadNumber(const std::string& path) {
  auto text = ReadFile(path);
  if (!text) return std::move(text).take_error();
  try {
    return static_cast<uint64_t>(std::stoull(*text));
  } catch (const std::exception&) {
    return Err("unexpected contents in " + path);
  }
}

// SIGKILLs every process listed in `procs_file` until none is left or a short
// deadline passes. The processes are the instance's, never ours: they were
// put there by the join step of the instance's own command line.
Status KillAll(const std::string& procs_file, const std::string& id) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  for (;;) {
    auto pids = ReadPids(procs_file);
    if (pids.empty()) return Ok();
    if (std::chrono::steady_clock::now() > deadline) {
      return Err("processes of instance " + id +
                 " survive SIGKILL (first: " + std::to_string(pids[0]) + ")");
    }
    for (pid_t pid : pids) ::kill(pid, SIGKILL);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

Status RemoveDir(const std::string& path) {
  if (::rmdir(path.c_str()) != 0 && errno != ENOENT) {
    return Err("cannot remove cgroup " + path + ": " + Errno(errno));
  }
  return Ok();
}

class CgroupV1 final : public CgroupManager {
 public:
  CgroupV1(std::string root, std::string parent, std::vector<std::string> hierarchies)
      : root_(std::move(root)), parent_(std::move(parent)), hierarchies_(std::move(hierarchies)) {}

  int version() const override { return 1; }
  bool HasController(const std::string& c) const override { return Has(c); }

  Status Create(const std::string& id, const CgroupLimits& limits) override {
    for (const auto& h : hierarchies_) {
      KATO_TRY(MakeDir(root_ + "/" + h + "/" + parent_));
      KATO_TRY(MakeDir(Dir(h, id)));
    }
    std::string mem = Dir("memory", id);
    bool memsw = PathExists(mem + "/memory.memsw.limit_in_bytes");
    // memsw (memory + swap) may never be below the memory limit: lift it first,
    // so that both a new and a reused group accept the new pair.
    if (memsw) KATO_TRY(WriteControl(mem + "/memory.memsw.limit_in_bytes", "-1"));
    std::string bytes = limits.memory_bytes > 0 ? std::to_string(limits.memory_bytes) : "-1";
    KATO_TRY(WriteControl(mem + "/memory.limit_in_bytes", bytes));
    if (memsw) KATO_TRY(WriteControl(mem + "/memory.memsw.limit_in_bytes", bytes));
    if (Has("cpu")) {
      int shares = std::clamp(limits.cpu_shares, 2, 262144);
      KATO_TRY(WriteControl(Dir("cpu", id) + "/cpu.shares", std::to_string(shares)));
    }
    if (Has("pids")) {
      KATO_TRY(WriteControl(Dir("pids", id) + "/pids.max",
                            limits.pids_max > 0 ? std::to_string(limits.pids_max) : "max"));
    }
    return Ok();
  }

  std::vector<std::string> ProcsFiles(const std::string& id) const override {
    std::vector<std::string> files;
    for (const auto& h : hierarchies_) files.push_back(Dir(h, id) + "/cgroup.procs");
    return files;
  }

  std::vector<pid_t> Pids(const std::string& id) const override {
    return ReadPids(Dir("memory", id) + "/cgroup.procs");
  }

  Result<MemoryEvents> ReadMemoryEvents(const std::string& id) const override {
    std::string mem = Dir("memory", id);
    auto oom = ReadFile(mem + "/memory.oom_control");
    if (!oom) return std::move(oom).take_error();
    auto failcnt = ReadNumber(mem + "/memory.failcnt");
    if (!failcnt) return std::move(failcnt).take_error();
    return MemoryEvents{KeyedValue(*oom, "oom_kill"), *failcnt};
  }

  Status Remove(const std::string& id) override {
    // Every v1 hierarchy holds the same processes; the memory one always exists.
    KATO_TRY(KillAll(Dir("memory", id) + "/cgroup.procs", id));
    for (const auto& h : hierarchies_) KATO_TRY(RemoveDir(Dir(h, id)));
    return Ok();
  }

 private:
  std::string Dir(const std::string& h, const std::string& id) const {
    return root_ + "/" + h + "/" + parent_ + "/" + id;
  }
  bool Has(const std::string& h) const {
    return std::find(hierarchies_.begin(), hierarchies_.end(), h) != hierarchies_.end();
  }

  std::string root_, parent_;
  std::vector<std::string> hierarchies_;  // "memory" first, then "cpu", "pids" when mounted
};

class CgroupV2 final : public CgroupManager {
 public:
  CgroupV2(std::string root, std::string parent, std::string controllers)
      : root_(std::move(root)), parent_(std::move(parent)), controllers_(std::move(controllers)) {}

  int version() const override { return 2; }
  bool HasController(const std::string& c) const override { return Enabled(c); }

  Status Create(const std::string& id, const CgroupLimits& limits) override {
    // Controllers must be enabled in each ancestor's subtree_control to appear
    // in the instance's group.
    KATO_TRY(WriteControl(root_ + "/cgroup.subtree_control", controllers_));
    KATO_TRY(MakeDir(root_ + "/" + parent_));
    KATO_TRY(WriteControl(root_ + "/" + parent_ + "/cgroup.subtree_control", controllers_));
    std::string dir = Dir(id);
    KATO_TRY(MakeDir(dir));
    KATO_TRY(WriteControl(dir + "/memory.max",
                          limits.memory_bytes > 0 ? std::to_string(limits.memory_bytes) : "max"));
    if (PathExists(dir + "/memory.swap.max")) KATO_TRY(WriteControl(dir + "/memory.swap.max", "0"));
    if (Enabled("cpu")) {
      // runc's mapping of cpu.shares [2, 262144] onto cpu.weight [1, 10000].
      int64_t shares = std::clamp(limits.cpu_shares, 2, 262144);
      int64_t weight = 1 + ((shares - 2) * 9999) / 262142;
      KATO_TRY(WriteControl(dir + "/cpu.weight", std::to_string(weight)));
    }
    if (Enabled("pids")) {
      KATO_TRY(WriteControl(dir + "/pids.max",
                            limits.pids_max > 0 ? std::to_string(limits.pids_max) : "max"));
    }
    return Ok();
  }

  std::vector<std::string> ProcsFiles(const std::string& id) const override {
    return {Dir(id) + "/cgroup.procs"};
  }

  std::vector<pid_t> Pids(const std::string& id) const override {
    return ReadPids(Dir(id) + "/cgroup.procs");
  }

  Result<MemoryEvents> ReadMemoryEvents(const std::string& id) const override {
    auto events = ReadFile(Dir(id) + "/memory.events");
    if (!events) return std::move(events).take_error();
    return MemoryEvents{KeyedValue(*events, "oom_kill"), KeyedValue(*events, "max")};
  }

  Status Remove(const std::string& id) override {
    std::string dir = Dir(id);
    if (!PathExists(dir)) return Ok();
    // cgroup.kill (Linux 5.14) kills the whole group atomically, forks included.
    if (PathExists(dir + "/cgroup.kill")) KATO_TRY(WriteControl(dir + "/cgroup.kill", "1"));
    KATO_TRY(KillAll(dir + "/cgroup.procs", id));
    return RemoveDir(dir);
  }

 private:
  std::string Dir(const std::string& id) const { return root_ + "/" + parent_ + "/" + id; }
  bool Enabled(const std::string& c) const {
    return controllers_.find("+" + c) != std::string::npos;
  }

  std::string root_, parent_;
  std::string controllers_;  // e.g. "+memory +cpu +pids": those the kernel offers
};

}  // namespace

Result<std::unique_ptr<CgroupManager>> ProbeCgroups(const std::string& root,
                                                    const std::string& parent) {
  if (auto text = ReadFile(root + "/cgroup.controllers"); text) {
    std::istringstream in(*text);
    std::string controllers;
    bool memory = false;
    for (std::string c; in >> c;) {
      if (c == "memory" || c == "cpu" || c == "pids") {
        controllers += (controllers.empty() ? "+" : " +") + c;
        memory = memory || c == "memory";
      }
    }
    if (memory) return std::unique_ptr<CgroupManager>(new CgroupV2(root, parent, controllers));
  }
  if (PathExists(root + "/memory/memory.limit_in_bytes")) {
    std::vector<std::string> hierarchies = {"memory"};
    for (const char* h : {"cpu", "pids"}) {
      if (PathExists(root + "/" + h + "/cgroup.procs")) hierarchies.push_back(h);
    }
    return std::unique_ptr<CgroupManager>(new CgroupV1(root, parent, std::move(hierarchies)));
  }
  return Err("no usable cgroup memory controller under " + root +
             ": mount cgroup v2 with the memory controller, or the v1 memory hierarchy at " + root +
             "/memory");
}

Status RequireControllers(const CgroupManager& cgroups) {
  std::vector<std::string> missing;
  for (const char* c : {"memory", "cpu", "pids"})
    if (!cgroups.HasController(c)) missing.push_back(c);
  if (missing.empty()) return Ok();
  std::string names;
  for (const auto& m : missing) names += (names.empty() ? "" : ", ") + m;
  std::string how = cgroups.version() == 2
                        ? "enable it in the cgroup v2 tree (e.g. echo +" + missing[0] +
                              " > /sys/fs/cgroup/cgroup.subtree_control)"
                        : "mount its v1 hierarchy (e.g. mount -t cgroup -o " + missing[0] +
                              " cgroup /sys/fs/cgroup/" + missing[0] + ")";
  return Err("the cgroup controller" + std::string(missing.size() > 1 ? "s " : " ") + names +
             (missing.size() > 1 ? " are" : " is") + " missing, so app instances could not be "
             "limited: " + how + "; `kato config set dea allow_unlimited true` runs apps without "
             "limits anyway (not for untrusted apps)");
}

}  // namespace kato
