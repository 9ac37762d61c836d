#include "supervisor/launcher.h"

#include <dirent.h>
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <thread>

#include "common/fs.h"

namespace kato {
namespace {

using std::chrono::milliseconds;
using ::testing::HasSubstr;

// Polls `cond` until it holds or a generous deadline passes: no fixed sleeps.
bool WaitFor(const std::function<bool()>& cond, milliseconds limit = milliseconds(5000)) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!cond()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(milliseconds(2));
  }
  return true;
}

// Live (non-zombie) processes whose process group is `pgid`.
std::vector<pid_t> GroupMembers(pid_t pgid) {
  std::vector<pid_t> out;
  DIR* d = ::opendir("/proc");
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    pid_t pid = static_cast<pid_t>(std::atoi(e->d_name));
    if (pid > 0 && ::getpgid(pid) == pgid && ProcessAlive(pid)) out.push_back(pid);
  }
  ::closedir(d);
  return out;
}

class LauncherTest : public ::testing::Test {
 protected:
  LauncherTest() {
    char tmpl[] = "/tmp/kato_launcher_test_XXXXXX";
    KATO_CHECK(::mkdtemp(tmpl) != nullptr);
    dir_ = tmpl;
  }
  ~LauncherTest() override {
    for (pid_t p : live_) {
      ::kill(-p, SIGKILL);
      ::waitpid(p, nullptr, 0);
    }
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  ProcessSpec Sh(const std::string& script) {
    ProcessSpec s;
    s.name = "t";
    s.argv = {"/bin/sh", "-c", script};
    s.env = {{"PATH", "/usr/bin:/bin"}};
    return s;
  }
  pid_t Launch(const ProcessSpec& spec) {
    auto pid = launcher_.launch(spec, log());
    EXPECT_TRUE(pid.ok()) << pid.error();
    if (!pid.ok()) return 0;
    live_.push_back(*pid);
    return *pid;
  }
  // Reaps until `pid` has exited; returns its wait status (-1 on timeout).
  int WaitExit(pid_t pid) {
    int status = -1;
    WaitFor([&] {
      for (const ExitEvent& e : launcher_.reap()) {
        if (e.pid == pid) status = e.status;
      }
      return status != -1;
    });
    if (status != -1) std::erase(live_, pid);
    return status;
  }
  std::string log() const { return dir_ + "/logs/sub/t.log"; }
  std::string log_text() const {
    auto r = ReadFile(log());
    return r.ok() ? *r : "";
  }

  std::string dir_;
  PosixLauncher launcher_;
  std::vector<pid_t> live_;
};

TEST_F(LauncherTest, ExitStatusAndOutputGoToTheLog) {
  pid_t pid = Launch(Sh("echo hi; echo oops >&2; exit 3"));
  ASSERT_GT(pid, 0);
  int status = WaitExit(pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 3);
  EXPECT_EQ(log_text(), "hi\noops\n");
  struct stat st;
  ASSERT_EQ(::stat(log().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u);

  // A second run appends.
  pid = Launch(Sh("echo again"));
  EXPECT_TRUE(WIFEXITED(WaitExit(pid)));
  EXPECT_EQ(log_text(), "hi\noops\nagain\n");
}

TEST_F(LauncherTest, BadPathIsAClearError) {
  ProcessSpec s;
  s.name = "t";
  s.argv = {"/nonexistent/kato-x"};
  auto pid = launcher_.launch(s, log());
  ASSERT_FALSE(pid.ok());
  EXPECT_EQ(pid.error(), "cannot run /nonexistent/kato-x: No such file or directory");
  EXPECT_TRUE(launcher_.reap().empty());  // the failed child was collected by launch()

  s.argv = {"sleep", "1"};
  pid = launcher_.launch(s, log());
  ASSERT_FALSE(pid.ok());
  EXPECT_THAT(pid.error(), HasSubstr("absolute path"));

  s.argv = {"/bin/true"};
  s.cwd = dir_ + "/no/such/dir";
  pid = launcher_.launch(s, log());
  ASSERT_FALSE(pid.ok());
  EXPECT_THAT(pid.error(), HasSubstr("cannot change to directory " + s.cwd));
}

TEST_F(LauncherTest, EnvironmentIsExactlyTheSpecs) {
  ProcessSpec s;
  s.name = "t";
  s.argv = {"/usr/bin/env"};
  s.env = {{"FOO", "bar baz"}, {"A", "1"}};
  pid_t pid = Launch(s);
  ASSERT_TRUE(WIFEXITED(WaitExit(pid)));
  EXPECT_EQ(log_text(), "A=1\nFOO=bar baz\n");
}

TEST_F(LauncherTest, ChildStartsClean) {
  // Things the agent may have that a child must not inherit.
  int leaked = ::open("/dev/null", O_RDONLY);  // no O_CLOEXEC
  ASSERT_GE(leaked, 3);
  sigset_t usr1, old_mask;
  ::sigemptyset(&usr1);
  ::sigaddset(&usr1, SIGUSR1);
  ::pthread_sigmask(SIG_BLOCK, &usr1, &old_mask);
  struct sigaction ignore = {};
  struct sigaction old_action = {};
  ignore.sa_handler = SIG_IGN;
  ::sigaction(SIGUSR2, &ignore, &old_action);

  std::vector<std::vector<std::string>> commands = {
      {"/bin/pwd"},
      {"/bin/readlink", "/proc/self/fd/0"},
      {"/bin/ls", "/proc/self/fd"},  // 3 is the directory ls reads
      {"/bin/grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"},
  };
  for (const auto& argv : commands) {
    ProcessSpec s;
    s.name = "t";
    s.argv = argv;
    s.cwd = dir_;
    pid_t pid = Launch(s);
    EXPECT_TRUE(WIFEXITED(WaitExit(pid))) << argv[0];
  }

  ::sigaction(SIGUSR2, &old_action, nullptr);
  ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  ::close(leaked);

  EXPECT_EQ(log_text(), dir_ + "\n/dev/null\n0\n1\n2\n3\n" +
                            "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n");
}

TEST_F(LauncherTest, ChildLeadsItsOwnSessionAndGroup) {
  pid_t pid = Launch(Sh("sleep 100"));
  ASSERT_GT(pid, 0);
  EXPECT_EQ(::getpgid(pid), pid);
  EXPECT_EQ(::getsid(pid), pid);
  EXPECT_NE(::getsid(pid), ::getsid(0));
}

TEST_F(LauncherTest, KillGroupKillsChildAndGrandchildren) {
  pid_t pid = Launch(Sh("sleep 100 & sleep 100; true"));
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(WaitFor([&] { return GroupMembers(pid).size() >= 3; }));  // sh and two sleeps
  launcher_.kill_group(pid, SIGKILL);
  int status = WaitExit(pid);
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGKILL);
  EXPECT_TRUE(WaitFor([&] { return GroupMembers(pid).empty(); }));
  launcher_.kill_group(pid, SIGKILL);  // ESRCH now: not an error
}

TEST_F(LauncherTest, ProcessAliveIsFalseForZombies) {
  EXPECT_TRUE(ProcessAlive(::getpid()));
  EXPECT_TRUE(ProcessStartTime(::getpid()).has_value());
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) ::_exit(0);
  auto start = ProcessStartTime(child);
  EXPECT_TRUE(WaitFor([&] { return !ProcessAlive(child); }));
  EXPECT_EQ(::kill(child, 0), 0);  // still exists, as a zombie: kill -0 cannot tell
  if (start) {
    EXPECT_EQ(ProcessStartTime(child), start);
  }
  ASSERT_EQ(::waitpid(child, nullptr, 0), child);
  EXPECT_FALSE(ProcessAlive(child));
  EXPECT_FALSE(ProcessStartTime(child).has_value());
  EXPECT_FALSE(ProcessAlive(0));
}

TEST_F(LauncherTest, BecomeChildSubreaper) {
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {  // in a child, so that this test process keeps its settings
    BecomeChildSubreaper();
    int on = 0;
    ::prctl(PR_GET_CHILD_SUBREAPER, &on, 0, 0, 0);
    ::_exit(on == 1 ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST_F(LauncherTest, ROOT_RunsAsUser) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  ProcessSpec s = Sh("id -u; id -g");
  s.user = "nobody";
  pid_t pid = Launch(s);
  ASSERT_TRUE(WIFEXITED(WaitExit(pid)));
  EXPECT_EQ(log_text(), "65534\n65534\n");
}

TEST_F(LauncherTest, UnknownUserIsAClearError) {
  ProcessSpec s = Sh("true");
  s.user = "kato-no-such-user";
  auto pid = launcher_.launch(s, log());
  ASSERT_FALSE(pid.ok());
  EXPECT_THAT(pid.error(), HasSubstr("no such user 'kato-no-such-user'"));
}

TEST(TcpProberTest, ReadyOnlyWhileSomethingListens) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(fd, 4), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  int port = ntohs(addr.sin_port);

  TcpProber prober;
  EXPECT_TRUE(prober.ready({"127.0.0.1", port}));
  ::close(fd);
  EXPECT_FALSE(prober.ready({"127.0.0.1", port}));
  EXPECT_FALSE(prober.ready({"localhost.invalid", port}));  // names are not resolved
}

}  // namespace
}  // namespace kato
