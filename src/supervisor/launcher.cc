#include "supervisor/launcher.h"

#include <fcntl.h>
#include <grp.h>
#include <netdb.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/fs.h"

namespace kato {
namespace {

// What the child was doing when it failed; sent to the parent over a CLOEXEC
// pipe, whose EOF without data means exec succeeded.
enum class Step : int { kSignals, kSession, kStdio, kChdir, kGroups, kGid, kUid, kExec };

struct ChildError {
  Step step;
  int err;
};

struct UserIds {
  uid_t uid;
  gid_t gid;
  std::vector<gid_t> groups;
};

// A descriptor closed when it goes out of scope.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

std::string Errno(int e) { return std::strerror(e); }

// Resolved in the parent: after fork() only async-signal-safe calls are allowed,
// and getpwnam/initgroups read files and allocate.
Result<UserIds> LookUpUser(const std::string& user, const std::string& process) {
  std::vector<char> buf(16384);
  passwd pw;
  passwd* found = nullptr;
  int rc = ::getpwnam_r(user.c_str(), &pw, buf.data(), buf.size(), &found);
  if (rc != 0) return Err("cannot look up user '" + user + "' for " + process + ": " + Errno(rc));
  if (found == nullptr) {
    return Err("no such user '" + user + "' to run " + process +
               " as; create it (adduser --system " + user + ") or fix the process's user");
  }
  UserIds ids{pw.pw_uid, pw.pw_gid, {}};
  int n = 32;
  for (;;) {
    ids.groups.resize(static_cast<size_t>(n));
    int want = n;
    if (::getgrouplist(user.c_str(), pw.pw_gid, ids.groups.data(), &want) >= 0) {
      ids.groups.resize(static_cast<size_t>(want));
      break;
    }
    n = want > n ? want : n * 2;
  }
  return ids;
}

struct ChildPlan {
  std::vector<char*> argv;
  std::vector<char*> envp;
  const char* cwd;
  const UserIds* user;
  int log_fd;
  int null_fd;
  int max_fd;  // for the close() loop where close_range is missing
};

// Runs in the forked child: only async-signal-safe calls from here to exec.
[[noreturn]] void RunChild(const ChildPlan& plan, int err_fd) {
  auto fail = [&](Step step) {
    ChildError e{step, errno};
    ssize_t n;
    do {
      n = ::write(err_fd, &e, sizeof e);
    } while (n < 0 && errno == EINTR);
    ::_exit(127);
  };
  // The parent blocked every signal around fork(); restore default dispositions
  // before unblocking so that no handler of the agent ever runs in the child.
  struct sigaction dfl = {};
  dfl.sa_handler = SIG_DFL;
  ::sigemptyset(&dfl.sa_mask);
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig != SIGKILL && sig != SIGSTOP) ::sigaction(sig, &dfl, nullptr);  // EINVAL: reserved
  }
  if (::setsid() < 0) fail(Step::kSession);

  // Move our three descriptors above stdio first: any of them may be 0, 1 or 2
  // when the agent runs with a closed stdio.
  int err = ::fcntl(err_fd, F_DUPFD_CLOEXEC, 3);
  if (err < 0) fail(Step::kStdio);
  err_fd = err;
  int log = ::fcntl(plan.log_fd, F_DUPFD_CLOEXEC, 3);
  int null = ::fcntl(plan.null_fd, F_DUPFD_CLOEXEC, 3);
  if (log < 0 || null < 0) fail(Step::kStdio);
  if (::dup2(null, 0) < 0 || ::dup2(log, 1) < 0 || ::dup2(log, 2) < 0) fail(Step::kStdio);
  if (err_fd != 3) {
    if (::dup3(err_fd, 3, O_CLOEXEC) < 0) fail(Step::kStdio);
    err_fd = 3;
  }
  // fd 3 (the error pipe) closes itself on exec; everything else goes now.
  if (::close_range(4, ~0U, 0) != 0) {
    for (int fd = 4; fd < plan.max_fd; ++fd) ::close(fd);
  }

  if (::chdir(plan.cwd) < 0) fail(Step::kChdir);
  if (plan.user != nullptr) {
    if (::setgroups(plan.user->groups.size(), plan.user->groups.data()) < 0) fail(Step::kGroups);
    if (::setgid(plan.user->gid) < 0) fail(Step::kGid);
    if (::setuid(plan.user->uid) < 0) fail(Step::kUid);
  }
  sigset_t none;
  ::sigemptyset(&none);
  if (::sigprocmask(SIG_SETMASK, &none, nullptr) < 0) fail(Step::kSignals);
  ::execve(plan.argv[0], plan.argv.data(), plan.envp.data());
  fail(Step::kExec);
  ::_exit(127);  // not reached
}

std::string Describe(const ChildError& e, const ProcessSpec& spec, const std::string& cwd) {
  std::string why = Errno(e.err);
  switch (e.step) {
    case Step::kExec:
      return "cannot run " + spec.argv[0] + ": " + why;
    case Step::kChdir:
      return "cannot start " + spec.name + ": cannot change to directory " + cwd + ": " + why;
    case Step::kGroups:
    case Step::kGid:
    case Step::kUid:
      return "cannot start " + spec.name + " as user " + spec.user + ": " + why +
             (e.err == EPERM ? " (katod must run as root to switch users)" : "");
    case Step::kSignals:
    case Step::kSession:
    case Step::kStdio:
      break;
  }
  return "cannot start " + spec.name + ": setting up the child process failed: " + why;
}

// The spec's command must be absolute; its user (if any) is looked up here.
Result<std::optional<UserIds>> Prepare(const ProcessSpec& spec) {
  if (spec.argv.empty() || spec.argv[0].empty() || spec.argv[0][0] != '/') {
    return Err("cannot start " + spec.name + ": its command must start with an absolute path");
  }
  if (spec.user.empty()) return std::optional<UserIds>();
  auto ids = LookUpUser(spec.user, spec.name);
  if (!ids) return std::move(ids).take_error();
  return std::optional<UserIds>(std::move(*ids));
}

}  // namespace

Result<pid_t> PosixLauncher::launch(const ProcessSpec& spec, const std::string& log_path) {
  auto user = Prepare(spec);
  if (!user) return std::move(user).take_error();
  std::string log_dir = std::filesystem::path(log_path).parent_path().string();
  if (!log_dir.empty()) KATO_TRY(MakeDirs(log_dir, 0755));
  std::string cwd = spec.cwd.empty() ? (log_dir.empty() ? "/" : log_dir) : spec.cwd;
  Fd log(::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640));
  if (log.get() < 0) return Err("cannot open log file " + log_path + ": " + Errno(errno));
  return Spawn(spec, cwd, *user ? &**user : nullptr, log.get());
}

Result<pid_t> PosixLauncher::launch_to_fd(const ProcessSpec& spec, int output_fd) {
  auto user = Prepare(spec);
  if (!user) return std::move(user).take_error();
  return Spawn(spec, spec.cwd.empty() ? "/" : spec.cwd, *user ? &**user : nullptr, output_fd);
}

Result<pid_t> PosixLauncher::Spawn(const ProcessSpec& spec, const std::string& cwd,
                                   const void* user_ids, int log_fd) {
  const UserIds* user = static_cast<const UserIds*>(user_ids);
  Fd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
  if (null.get() < 0) return Err("cannot open /dev/null: " + Errno(errno));

  // Everything the child needs is built before fork(): the child must not allocate.
  std::vector<std::string> env;
  for (const auto& [k, v] : spec.env) env.push_back(k + "=" + v);
  ChildPlan plan;
  for (const auto& a : spec.argv) plan.argv.push_back(const_cast<char*>(a.c_str()));
  plan.argv.push_back(nullptr);
  for (auto& e : env) plan.envp.push_back(e.data());
  plan.envp.push_back(nullptr);
  plan.cwd = cwd.c_str();
  plan.user = user;
  plan.log_fd = log_fd;
  plan.null_fd = null.get();
  long max_fd = ::sysconf(_SC_OPEN_MAX);
  plan.max_fd = max_fd > 0 && max_fd < (1 << 20) ? static_cast<int>(max_fd) : (1 << 16);

  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return Err("cannot create a pipe: " + Errno(errno));
  Fd err_read(pipe_fds[0]);
  Fd err_write(pipe_fds[1]);

  sigset_t all, old;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  pid_t pid = ::fork();
  if (pid == 0) RunChild(plan, err_write.get());
  int fork_errno = errno;
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  err_write.reset();
  if (pid < 0) return Err("cannot fork to start " + spec.name + ": " + Errno(fork_errno));

  ChildError report{};
  ssize_t n;
  do {
    n = ::read(err_read.get(), &report, sizeof report);
  } while (n < 0 && errno == EINTR);
  if (n == 0) return pid;  // EOF: exec succeeded and closed the pipe
  // The child failed before exec (or the read failed): collect it here so that
  // reap() never reports a process the caller was never told about.
  while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
  }
  if (n != static_cast<ssize_t>(sizeof report)) {
    return Err("cannot start " + spec.name + ": lost track of the child: " + Errno(errno));
  }
  return Err(Describe(report, spec, cwd));
}

void PosixLauncher::kill_group(pid_t pgid, int sig) {
  // kill(-1) or kill(0) would signal every process we may signal, or ourselves.
  KATO_CHECK(pgid > 1);
  if (::kill(-pgid, sig) != 0 && errno != ESRCH) {
    spdlog::warn("cannot send signal {} to process group {}: {}", sig, pgid, Errno(errno));
  }
}

std::vector<ExitEvent> PosixLauncher::reap() {
  std::vector<ExitEvent> events;
  for (;;) {
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      events.push_back({pid, status});
    } else if (pid < 0 && errno == EINTR) {
      continue;
    } else {
      break;  // 0: children left but none exited; ECHILD: no children
    }
  }
  return events;
}

bool TcpProber::ready(const ReadinessCheck& check) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  if (::getaddrinfo(check.host.c_str(), std::to_string(check.port).c_str(), &hints, &res) != 0) {
    return false;
  }
  Fd sock(::socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  bool ok = false;
  if (sock.get() >= 0) {
    if (::connect(sock.get(), res->ai_addr, res->ai_addrlen) == 0) {
      ok = true;
    } else if (errno == EINPROGRESS) {
      pollfd pfd{sock.get(), POLLOUT, 0};
      int rc;
      do {
        rc = ::poll(&pfd, 1, 200);
      } while (rc < 0 && errno == EINTR);
      int so_error = 0;
      socklen_t len = sizeof so_error;
      ok = rc == 1 && ::getsockopt(sock.get(), SOL_SOCKET, SO_ERROR, &so_error, &len) == 0 &&
           so_error == 0;
    }
  }
  ::freeaddrinfo(res);
  return ok;
}

void BecomeChildSubreaper() {
  if (::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) {
    spdlog::warn("cannot become a child subreaper: {}", Errno(errno));
  }
}

namespace {

// The fields of /proc/PID/stat after the command name, which may itself hold
// spaces and parentheses (hence the last ')'). Field 3 (state) comes first.
std::optional<std::vector<std::string>> StatFields(pid_t pid) {
  if (pid <= 0) return std::nullopt;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!in || !std::getline(in, line)) return std::nullopt;
  size_t close = line.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream rest(line.substr(close + 1));
  std::vector<std::string> fields;
  for (std::string f; rest >> f;) fields.push_back(f);
  if (fields.empty()) return std::nullopt;
  return fields;
}

}  // namespace

bool ProcessAlive(pid_t pid) {
  auto fields = StatFields(pid);
  if (!fields) return false;
  const std::string& state = (*fields)[0];
  return state != "Z" && state != "X" && state != "x";
}

std::optional<unsigned long long> ProcessStartTime(pid_t pid) {
  auto fields = StatFields(pid);
  constexpr size_t kStartTime = 22 - 3;  // fields[0] is field 3
  if (!fields || fields->size() <= kStartTime) return std::nullopt;
  try {
    return std::stoull((*fields)[kStartTime]);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

}  // namespace kato
