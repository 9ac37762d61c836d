#include "dea/command.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace kato {
namespace {

std::string Joined(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) s += (s.empty() ? "" : " ") + a;
  return s.size() > 300 ? s.substr(0, 300) + "..." : s;
}

// The last few lines of a tool's complaint, on one line.
std::string Tail(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  if (text.size() > 600) text = "..." + text.substr(text.size() - 600);
  for (char& c : text)
    if (c == '\n') c = ' ';
  return text;
}

void CloseIf(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

}  // namespace

std::string FindTool(const std::string& name) {
  for (const char* dir : {"/usr/sbin/", "/usr/bin/", "/sbin/", "/bin/"}) {
    std::string p = dir + name;
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return "";
}

Result<std::string> PosixCommandRunner::Run(const std::vector<std::string>& argv,
                                            const std::string& input) {
  if (argv.empty() || argv[0].empty() || argv[0][0] != '/')
    return Err("internal: a command must start with an absolute path");
  int in[2], out[2], err[2];
  if (::pipe2(in, O_CLOEXEC) != 0)
    return Err("cannot create a pipe: " + std::string(strerror(errno)));
  if (::pipe2(out, O_CLOEXEC) != 0) {
    ::close(in[0]), ::close(in[1]);
    return Err("cannot create a pipe: " + std::string(strerror(errno)));
  }
  if (::pipe2(err, O_CLOEXEC) != 0) {
    ::close(in[0]), ::close(in[1]), ::close(out[0]), ::close(out[1]);
    return Err("cannot create a pipe: " + std::string(strerror(errno)));
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);  // the caller may block signals (sigwait)
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  char path_env[] = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";
  char lang_env[] = "LC_ALL=C";
  char* envp[] = {path_env, lang_env, nullptr};
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, argv[0].c_str(), &fa, &attr, args.data(), envp);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  ::close(in[0]), ::close(out[1]), ::close(err[1]);
  if (rc != 0) {
    ::close(in[1]), ::close(out[0]), ::close(err[0]);
    return Err("cannot run " + argv[0] + ": " + strerror(rc));
  }
  int fds[3] = {in[1], out[0], err[0]};
  for (int fd : fds) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  if (input.empty()) CloseIf(fds[0]);
  size_t written = 0;
  std::string stdout_text, stderr_text;
  auto deadline = std::chrono::steady_clock::now() + timeout_;
  bool timed_out = false;
  while (fds[1] >= 0 || fds[2] >= 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd p[3];
    int n = 0;
    int which[3];
    if (fds[0] >= 0) p[n] = {fds[0], POLLOUT, 0}, which[n++] = 0;
    if (fds[1] >= 0) p[n] = {fds[1], POLLIN, 0}, which[n++] = 1;
    if (fds[2] >= 0) p[n] = {fds[2], POLLIN, 0}, which[n++] = 2;
    int r = ::poll(p, n, static_cast<int>(left.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) break;
    for (int i = 0; i < n; ++i) {
      if (!p[i].revents) continue;
      int k = which[i];
      if (k == 0) {
        ssize_t w = ::write(fds[0], input.data() + written, input.size() - written);
        if (w > 0) written += static_cast<size_t>(w);
        if (w < 0 && errno != EAGAIN) CloseIf(fds[0]);
        if (written == input.size()) CloseIf(fds[0]);
        continue;
      }
      char buf[4096];
      ssize_t got = ::read(fds[k], buf, sizeof buf);
      if (got > 0) {
        std::string& s = k == 1 ? stdout_text : stderr_text;
        if (s.size() < (8u << 20)) s.append(buf, static_cast<size_t>(got));
      } else if (got == 0 || errno != EAGAIN) {
        CloseIf(fds[k]);
      }
    }
  }
  for (int& fd : fds) CloseIf(fd);
  if (timed_out) ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out)
    return Err(Joined(argv) + " did not finish within " + std::to_string(timeout_.count() / 1000) +
               " s and was killed");
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return stdout_text;
  std::string why = WIFEXITED(status) ? "exit status " + std::to_string(WEXITSTATUS(status))
                                      : "signal " + std::to_string(WTERMSIG(status));
  std::string said = Tail(stderr_text.empty() ? stdout_text : stderr_text);
  return Err(Joined(argv) + " failed (" + why + ")" + (said.empty() ? "" : ": " + said));
}

}  // namespace kato
