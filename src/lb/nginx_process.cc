#include "lb/nginx_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <thread>

#include "common/fs.h"
#include "common/log.h"
#include "roles/roles.h"

namespace kato {

namespace {

constexpr off_t kMaxLogBytes = 64 << 20;

// Runs argv and waits for it; its stdout and stderr, and whether it exited 0.
struct RunResult {
  bool ok = false;
  std::string output;
};
RunResult RunAndWait(const std::vector<std::string>& argv) {
  // Built before fork: other threads may hold malloc's lock at that moment.
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return {false, "pipe failed"};
  pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return {false, "fork failed"};
  }
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    dup2(fds[1], 1);
    dup2(fds[1], 2);
    execv(args[0], args.data());
    _exit(127);
  }
  close(fds[1]);
  RunResult r;
  char buf[4096];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) r.output.append(buf, size_t(n));
  close(fds[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  r.ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  while (!r.output.empty() && (r.output.back() == '\n' || r.output.back() == ' '))
    r.output.pop_back();
  return r;
}

}  // namespace

std::string NginxError(const std::string& output) {
  std::istringstream in(output);
  for (std::string line; std::getline(in, line);) {
    auto level = line.find("] ");
    if (line.find(" [") == std::string::npos || level == std::string::npos) continue;
    auto colon = line.find(": ", level);
    return colon == std::string::npos ? line.substr(level + 2) : line.substr(colon + 2);
  }
  std::string one_line = output;
  std::replace(one_line.begin(), one_line.end(), '\n', ' ');
  return one_line;
}

Result<NginxRole> PrepareNginxRole(const std::string& nginx, const std::string& install_hint) {
  NginxRole r;
  sigemptyset(&r.signals);
  sigaddset(&r.signals, SIGTERM);
  sigaddset(&r.signals, SIGINT);
  sigaddset(&r.signals, SIGCHLD);
  pthread_sigmask(SIG_BLOCK, &r.signals, nullptr);
  r.nginx = nginx.empty() ? SystemRoleEnvironment().FindExecutable("nginx") : nginx;
  if (r.nginx.empty()) return Err("nginx not installed (" + install_hint + ")");
  return r;
}

std::vector<std::string> NginxProcess::Args(const std::string& conf, bool test) const {
  std::vector<std::string> a = {f_.nginx, "-p", f_.prefix + "/", "-e", "stderr", "-c", conf};
  if (test) a.insert(a.begin() + 1, {"-q", "-t"});
  return a;
}

Status NginxProcess::Write(const std::string& conf_text) {
  std::string next = f_.conf + ".next";
  KATO_TRY(WriteFileAtomic(next, conf_text, 0644));
  auto t = RunAndWait(Args(next, true));
  if (!t.ok) return Err("nginx -t refused the new configuration: " + NginxError(t.output));
  if (std::rename(next.c_str(), f_.conf.c_str()) != 0)
    return Err("cannot rename " + next + ": " + strerror(errno));
  return Ok();
}

Status NginxProcess::Start() {
  auto argv = Args(f_.conf, false);
  std::vector<char*> args;  // built before fork (see RunAndWait)
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) return Err("fork failed");
  if (pid == 0) {
    // Its own process group: SIGTERM to the role process's group must not
    // reach nginx, which stops gracefully on the SIGQUIT Stop() sends it.
    setpgid(0, 0);
    // Should the role process die without stopping it, the master stops too (and its workers with it).
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(1);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  setpgid(pid, pid);
  pid_ = pid;
  LogInfo("{}: nginx started (pid {})", f_.tag, pid);
  return Ok();
}

std::optional<std::string> NginxProcess::Exited() {
  if (pid_ <= 0) return std::string("not running");
  int status = 0;
  if (waitpid(pid_, &status, WNOHANG) != pid_) return std::nullopt;
  kill(-pid_, SIGKILL);  // its workers outlive a killed master
  pid_ = 0;
  return WIFEXITED(status) ? "status " + std::to_string(WEXITSTATUS(status))
                           : "signal " + std::to_string(WTERMSIG(status));
}

void NginxProcess::KillStale() {
  auto text = ReadFile(f_.pid_file);
  if (!text) return;
  pid_t pgid = static_cast<pid_t>(std::atoi(text->c_str()));
  if (pgid <= 1) return;
  auto members = [&] {
    std::vector<pid_t> out;
    std::error_code ec;
    for (std::filesystem::directory_iterator it("/proc", ec), end; !ec && it != end;
         it.increment(ec)) {
      std::string name = it->path().filename().string();
      if (name.empty() || !std::isdigit(static_cast<unsigned char>(name[0]))) continue;
      auto stat = ReadFile("/proc/" + name + "/stat");
      if (!stat) continue;
      // pid (comm) state ppid pgrp ...
      auto open = stat->find('('), close = stat->rfind(')');
      if (open == std::string::npos || close == std::string::npos) continue;
      std::string comm = stat->substr(open + 1, close - open - 1);
      std::istringstream rest(stat->substr(close + 1));
      std::string state;
      long ppid = 0, pgrp = 0;
      rest >> state >> ppid >> pgrp;
      if (comm == "nginx" && pgrp == pgid && state != "Z") out.push_back(static_cast<pid_t>(std::stol(name)));
    }
    return out;
  };
  auto stale = members();
  if (stale.empty()) return;
  LogWarn("{}: stopping {} nginx process(es) left by an earlier run (group {})", f_.tag,
          stale.size(), pgid);
  for (pid_t p : stale) kill(p, SIGKILL);
  auto deadline = std::chrono::steady_clock::now() + Millis(5000);
  while (!members().empty() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(Millis(20));  // polling a condition, bounded
}

std::optional<std::set<std::string>> NginxProcess::Workers() const {
  std::string p = "/proc/" + std::to_string(pid_) + "/task/" + std::to_string(pid_) + "/children";
  auto text = ReadFile(p);
  if (!text) return std::nullopt;
  std::set<std::string> out;
  std::istringstream in(*text);
  for (std::string pid; in >> pid;) out.insert(pid);
  return out;
}

void NginxProcess::Reload() {
  if (pid_ <= 0) return;
  auto before = Workers();
  kill(pid_, SIGHUP);  // graceful: old workers finish their requests
  // Done when the master has started workers with the new configuration
  // (bounded: a reload that fails leaves the old ones).
  if (!before) return;
  auto deadline = std::chrono::steady_clock::now() + Millis(5000);
  while (std::chrono::steady_clock::now() < deadline) {
    auto now = Workers();
    if (!now) return;
    for (const auto& pid : *now)
      if (!before->count(pid)) return;
    std::this_thread::sleep_for(Millis(10));  // polling a condition, bounded
  }
  LogWarn("{}: nginx started no new workers within 5 s of the reload; see {}/error.log", f_.tag,
          f_.log_dir);
}

void NginxProcess::RotateLogs() {
  auto now = std::chrono::steady_clock::now();
  if (now < next_rotate_check_) return;
  next_rotate_check_ = now + std::chrono::seconds(10);
  bool rotated = false;
  for (const char* name : {"access.log", "error.log"}) {
    std::string path = f_.log_dir + "/" + name;
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0 || st.st_size < kMaxLogBytes) continue;
    if (::rename(path.c_str(), (path + ".1").c_str()) == 0) rotated = true;
    else LogWarn("{}: cannot rotate {}: {}", f_.tag, path, std::strerror(errno));
  }
  if (rotated && pid_ > 0) {
    kill(pid_, SIGUSR1);
    LogInfo("{}: rotated nginx's logs (over {} MiB)", f_.tag, kMaxLogBytes >> 20);
  }
}

void NginxProcess::Stop(Millis grace) {
  if (pid_ <= 0) return;
  kill(pid_, SIGQUIT);
  auto deadline = std::chrono::steady_clock::now() + grace;
  for (;;) {
    if (waitpid(pid_, nullptr, WNOHANG) == pid_) break;
    if (std::chrono::steady_clock::now() > deadline) {
      LogWarn("{}: nginx did not stop within {} s; killing it", f_.tag, grace.count() / 1000);
      kill(-pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
      break;
    }
    std::this_thread::sleep_for(Millis(20));  // polling a condition, bounded
  }
  kill(-pid_, SIGKILL);  // workers that outlived their master, if any
  pid_ = 0;
}

}  // namespace kato
