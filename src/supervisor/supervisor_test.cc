#include "supervisor/supervisor.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <thread>

#include "common/fs.h"

namespace kato {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

int Exited(int code) { return W_EXITCODE(code, 0); }
int Signaled(int sig) { return W_EXITCODE(0, sig); }

// Records launches and signals; the test decides when processes exit.
class FakeLauncher : public ProcessLauncher {
 public:
  struct Launch {
    ProcessSpec spec;
    std::string log_path;
    pid_t pid;
  };

  Result<pid_t> launch(const ProcessSpec& spec, const std::string& log_path) override {
    if (auto it = fail_.find(spec.name); it != fail_.end()) return Err(it->second);
    pid_t pid = next_pid_++;
    launches.push_back({spec, log_path, pid});
    return pid;
  }
  void kill_group(pid_t pgid, int sig) override { kills.emplace_back(pgid, sig); }
  std::vector<ExitEvent> reap() override { return std::exchange(exits_, {}); }

  void exit(pid_t pid, int status) { exits_.push_back({pid, status}); }
  void fail(const std::string& name, const std::string& error) { fail_[name] = error; }
  void clear_failures() { fail_.clear(); }

  pid_t pid_of(const std::string& name) const {
    for (auto it = launches.rbegin(); it != launches.rend(); ++it) {
      if (it->spec.name == name) return it->pid;
    }
    return 0;
  }
  int count(const std::string& name) const {
    return static_cast<int>(std::count_if(launches.begin(), launches.end(),
                                          [&](const Launch& l) { return l.spec.name == name; }));
  }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& l : launches) out.push_back(l.spec.name);
    return out;
  }
  bool signalled(pid_t pid, int sig) const {
    return std::find(kills.begin(), kills.end(), std::make_pair(pid, sig)) != kills.end();
  }

  std::vector<Launch> launches;
  std::vector<std::pair<pid_t, int>> kills;

 private:
  // Far above the pids of this machine's processes, so /proc has nothing for them.
  pid_t next_pid_ = 4'100'000;
  std::vector<ExitEvent> exits_;
  std::map<std::string, std::string> fail_;
};

class FakeProber : public ReadinessProber {
 public:
  bool ready(const ReadinessCheck& check) override { return up.count(check.port) > 0; }
  std::set<int> up;
};

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/kato_supervisor_test_XXXXXX";
    KATO_CHECK(::mkdtemp(tmpl) != nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

ProcessSpec Spec(const std::string& name, int order = 0, int port = 0) {
  ProcessSpec s;
  s.name = name;
  s.argv = {"/usr/bin/" + name};
  s.order = order;
  if (port != 0) s.ready = ReadinessCheck{"127.0.0.2", port};
  return s;
}

class SupervisorTest : public ::testing::Test {
 protected:
  SupervisorTest() { spdlog::set_level(spdlog::level::warn); }

  ProcState state(const std::string& name) const { return sup_.status(name)->state; }
  std::string message(const std::string& name) const { return sup_.status(name)->message; }
  pid_t pid(const std::string& name) const { return sup_.status(name)->pid; }
  void advance(milliseconds d) { clock_.advance(d); }
  void tick_after(milliseconds d) {
    clock_.advance(d);
    sup_.tick();
  }
  // Brings a process without a readiness check to RUNNING.
  void run(const std::string& name) {
    sup_.tick();
    tick_after(seconds(1));
    ASSERT_EQ(state(name), ProcState::kRunning);
  }

  TempDir dir_;
  FakeClock clock_;
  FakeLauncher launcher_;
  FakeProber prober_;
  Supervisor sup_{clock_, launcher_, prober_, dir_.path() + "/log", dir_.path() + "/run"};
};

TEST_F(SupervisorTest, StartsInOrderOnceLowerOrdersAreReady) {
  sup_.set_desired({Spec("web", 20), Spec("db", 10, 5432), Spec("cache", 20), Spec("dns", 0)});
  sup_.tick();
  EXPECT_THAT(launcher_.names(), ElementsAre("dns"));
  EXPECT_EQ(state("db"), ProcState::kStopped);

  tick_after(seconds(1));  // dns: RUNNING after start_secs; db starts
  EXPECT_EQ(state("dns"), ProcState::kRunning);
  EXPECT_THAT(launcher_.names(), ElementsAre("dns", "db"));
  EXPECT_EQ(state("db"), ProcState::kStarting);
  EXPECT_EQ(message("db"), "waiting for 127.0.0.2:5432");

  tick_after(seconds(10));  // db still not answering: web and cache wait
  EXPECT_EQ(state("db"), ProcState::kStarting);
  EXPECT_THAT(launcher_.names(), ElementsAre("dns", "db"));

  prober_.up.insert(5432);
  tick_after(milliseconds(100));
  EXPECT_EQ(state("db"), ProcState::kRunning);
  EXPECT_THAT(launcher_.names(), ElementsAre("dns", "db", "cache", "web"));
}

TEST_F(SupervisorTest, NoCheckMeansRunningAfterStartSecs) {
  auto s = Spec("a");
  s.start_secs = milliseconds(2500);
  sup_.set_desired({s});
  sup_.tick();
  EXPECT_EQ(state("a"), ProcState::kStarting);
  tick_after(milliseconds(2499));
  EXPECT_EQ(state("a"), ProcState::kStarting);
  tick_after(milliseconds(1));
  EXPECT_EQ(state("a"), ProcState::kRunning);
  EXPECT_EQ(pid("a"), launcher_.pid_of("a"));
}

TEST_F(SupervisorTest, StartTimeoutBacksOffThenGoesFatal) {
  auto s = Spec("db", 0, 5432);
  s.start_timeout = seconds(30);
  s.start_retries = 3;
  sup_.set_desired({s});
  sup_.tick();
  pid_t first = launcher_.pid_of("db");

  tick_after(milliseconds(29999));
  EXPECT_EQ(state("db"), ProcState::kStarting);
  tick_after(milliseconds(1));
  EXPECT_EQ(state("db"), ProcState::kBackoff);
  EXPECT_TRUE(launcher_.signalled(first, SIGKILL));
  EXPECT_EQ(message("db"), "not ready on 127.0.0.2:5432 after 30s; retrying in 1s");

  // The retry waits for the killed process to be reaped, and for the delay.
  tick_after(seconds(5));
  EXPECT_EQ(launcher_.count("db"), 1);
  launcher_.exit(first, Signaled(SIGKILL));
  sup_.tick();
  EXPECT_EQ(state("db"), ProcState::kStarting);
  EXPECT_EQ(launcher_.count("db"), 2);

  // Second failure: 2 s of back-off, exactly.
  tick_after(seconds(30));
  EXPECT_EQ(state("db"), ProcState::kBackoff);
  EXPECT_THAT(message("db"), HasSubstr("retrying in 2s"));
  launcher_.exit(launcher_.pid_of("db"), Signaled(SIGKILL));
  tick_after(milliseconds(1999));
  EXPECT_EQ(launcher_.count("db"), 2);
  tick_after(milliseconds(1));
  EXPECT_EQ(launcher_.count("db"), 3);

  // Third failure: FATAL, and nothing more.
  tick_after(seconds(30));
  EXPECT_EQ(state("db"), ProcState::kFatal);
  EXPECT_THAT(message("db"), HasSubstr("not ready on 127.0.0.2:5432 after 30s; gave up after 3"));
  EXPECT_FALSE(sup_.all_stopped());  // the last one is not reaped yet
  launcher_.exit(launcher_.pid_of("db"), Signaled(SIGKILL));
  tick_after(std::chrono::hours(1));
  EXPECT_EQ(launcher_.count("db"), 3);
  EXPECT_EQ(state("db"), ProcState::kFatal);
  EXPECT_EQ(pid("db"), 0);
  EXPECT_TRUE(sup_.all_stopped());
}

TEST_F(SupervisorTest, ExitWhileStartingBacksOffWithDoublingDelays) {
  auto s = Spec("a");
  s.start_retries = 4;
  sup_.set_desired({s});
  sup_.tick();
  for (int delay_ms : {1000, 2000, 4000}) {
    launcher_.exit(launcher_.pid_of("a"), Exited(1));
    sup_.tick();
    ASSERT_EQ(state("a"), ProcState::kBackoff);
    EXPECT_EQ(message("a"),
              "exited with status 1; retrying in " + std::to_string(delay_ms / 1000) + "s");
    int launches = launcher_.count("a");
    tick_after(milliseconds(delay_ms - 1));
    EXPECT_EQ(launcher_.count("a"), launches);
    tick_after(milliseconds(1));
    EXPECT_EQ(launcher_.count("a"), launches + 1);
  }
  launcher_.exit(launcher_.pid_of("a"), Exited(1));
  sup_.tick();
  EXPECT_EQ(state("a"), ProcState::kFatal);
}

TEST_F(SupervisorTest, LaunchErrorCountsAsFailedStart) {
  auto s = Spec("a");
  s.start_retries = 2;
  sup_.set_desired({s});
  launcher_.fail("a", "cannot run /usr/bin/a: No such file or directory");
  sup_.tick();
  EXPECT_EQ(state("a"), ProcState::kBackoff);
  EXPECT_EQ(message("a"), "cannot run /usr/bin/a: No such file or directory; retrying in 1s");
  tick_after(seconds(1));
  EXPECT_EQ(state("a"), ProcState::kFatal);
  EXPECT_THAT(message("a"), HasSubstr("cannot run /usr/bin/a"));
}

TEST_F(SupervisorTest, StartFromFatalResetsRetries) {
  auto s = Spec("a");
  s.start_retries = 2;
  sup_.set_desired({s});
  launcher_.fail("a", "cannot run /usr/bin/a: No such file or directory");
  sup_.tick();
  tick_after(seconds(1));
  ASSERT_EQ(state("a"), ProcState::kFatal);
  tick_after(std::chrono::hours(1));
  EXPECT_EQ(state("a"), ProcState::kFatal);

  launcher_.clear_failures();
  EXPECT_TRUE(sup_.start("a"));
  sup_.tick();
  EXPECT_EQ(state("a"), ProcState::kStarting);
  // The count starts over: one failure is a BACKOFF again, not FATAL.
  launcher_.exit(launcher_.pid_of("a"), Exited(2));
  sup_.tick();
  EXPECT_EQ(state("a"), ProcState::kBackoff);
  EXPECT_EQ(message("a"), "exited with status 2; retrying in 1s");
  EXPECT_FALSE(sup_.start("nope"));
}

TEST_F(SupervisorTest, CrashWhileRunningRestartsWithBackoff) {
  sup_.set_desired({Spec("a")});
  run("a");
  pid_t first = pid("a");
  launcher_.exit(first, Signaled(SIGKILL));
  sup_.tick();
  EXPECT_EQ(state("a"), ProcState::kExited);
  EXPECT_EQ(message("a"), "killed by signal 9 (SIGKILL); restarting in 1s");
  EXPECT_EQ(pid("a"), 0);
  EXPECT_TRUE(launcher_.signalled(first, SIGKILL));  // leftovers of its group
  tick_after(milliseconds(999));
  EXPECT_EQ(launcher_.count("a"), 1);
  tick_after(milliseconds(1));
  EXPECT_EQ(launcher_.count("a"), 2);
  EXPECT_EQ(state("a"), ProcState::kStarting);

  // Crashing again soon after: 2 s, then 4 s.
  for (int delay_s : {2, 4}) {
    tick_after(seconds(1));
    ASSERT_EQ(state("a"), ProcState::kRunning);
    launcher_.exit(pid("a"), Exited(1));
    sup_.tick();
    EXPECT_EQ(message("a"), "exited with status 1; restarting in " + std::to_string(delay_s) + "s");
    int n = launcher_.count("a");
    tick_after(seconds(delay_s) - milliseconds(1));
    EXPECT_EQ(launcher_.count("a"), n);
    tick_after(milliseconds(1));
    EXPECT_EQ(launcher_.count("a"), n + 1);
  }

  // After 60 s of RUNNING the back-off starts over at 1 s.
  tick_after(seconds(1));
  ASSERT_EQ(state("a"), ProcState::kRunning);
  tick_after(seconds(60));
  launcher_.exit(pid("a"), Exited(1));
  sup_.tick();
  EXPECT_EQ(message("a"), "exited with status 1; restarting in 1s");
}

TEST_F(SupervisorTest, RestartBackoffIsCappedAt30Seconds) {
  sup_.set_desired({Spec("a")});
  run("a");
  std::vector<std::string> messages;
  for (int i = 0; i < 7; ++i) {
    launcher_.exit(pid("a"), Exited(1));
    sup_.tick();
    messages.push_back(message("a"));
    tick_after(seconds(30));
    tick_after(seconds(1));
    ASSERT_EQ(state("a"), ProcState::kRunning);
  }
  std::vector<std::string> want;
  for (const char* d : {"1s", "2s", "4s", "8s", "16s", "30s", "30s"}) {
    want.push_back(std::string("exited with status 1; restarting in ") + d);
  }
  EXPECT_EQ(messages, want);
}

TEST_F(SupervisorTest, OperatorStopEscalatesToSigkillAndStaysStopped) {
  sup_.set_desired({Spec("a")});
  run("a");
  pid_t p = pid("a");
  EXPECT_TRUE(sup_.stop("a"));
  sup_.tick();
  EXPECT_EQ(state("a"), ProcState::kStopping);
  EXPECT_TRUE(launcher_.signalled(p, SIGTERM));
  tick_after(milliseconds(9999));
  EXPECT_FALSE(launcher_.signalled(p, SIGKILL));
  tick_after(milliseconds(1));
  EXPECT_TRUE(launcher_.signalled(p, SIGKILL));
  EXPECT_EQ(state("a"), ProcState::kStopping);
  launcher_.exit(p, Signaled(SIGKILL));
  sup_.tick();
  EXPECT_EQ(state("a"), ProcState::kStopped);
  EXPECT_EQ(pid("a"), 0);
  EXPECT_THAT(message("a"), HasSubstr("killed after not stopping within 10s"));
  tick_after(std::chrono::hours(1));
  EXPECT_EQ(launcher_.count("a"), 1);
  EXPECT_TRUE(sup_.all_stopped());
  EXPECT_FALSE(sup_.stop("nope"));
}

TEST_F(SupervisorTest, StopUsesTheSpecsSignalAndSettlesOnExit) {
  auto s = Spec("a");
  s.stop_signal = SIGINT;
  sup_.set_desired({s});
  run("a");
  pid_t p = pid("a");
  sup_.stop("a");
  sup_.tick();
  EXPECT_TRUE(launcher_.signalled(p, SIGINT));
  EXPECT_FALSE(launcher_.signalled(p, SIGTERM));
  launcher_.exit(p, Exited(0));
  sup_.tick();
  EXPECT_EQ(state("a"), ProcState::kStopped);
  EXPECT_EQ(message("a"), "stopped");
  tick_after(seconds(20));
  EXPECT_EQ(std::count(launcher_.kills.begin(), launcher_.kills.end(), std::make_pair(p, SIGKILL)),
            1);  // only the group clean-up after the exit, no escalation
}

TEST_F(SupervisorTest, StopDuringBackoffStopsWithoutSignals) {
  sup_.set_desired({Spec("a")});
  sup_.tick();
  launcher_.exit(launcher_.pid_of("a"), Exited(1));
  sup_.tick();
  ASSERT_EQ(state("a"), ProcState::kBackoff);
  sup_.stop("a");
  sup_.tick();
  EXPECT_EQ(state("a"), ProcState::kStopped);
  tick_after(seconds(10));
  EXPECT_EQ(launcher_.count("a"), 1);
}

TEST_F(SupervisorTest, RestartStopsThenStartsAgain) {
  sup_.set_desired({Spec("a")});
  run("a");
  pid_t first = pid("a");
  EXPECT_TRUE(sup_.restart("a"));
  sup_.tick();
  EXPECT_EQ(state("a"), ProcState::kStopping);
  EXPECT_TRUE(launcher_.signalled(first, SIGTERM));
  launcher_.exit(first, Exited(0));
  sup_.tick();
  EXPECT_EQ(state("a"), ProcState::kStarting);
  EXPECT_EQ(launcher_.count("a"), 2);
  EXPECT_NE(pid("a"), first);

  // restart of a stopped process starts it.
  sup_.stop("a");
  sup_.tick();
  launcher_.exit(pid("a"), Exited(0));
  sup_.tick();
  ASSERT_EQ(state("a"), ProcState::kStopped);
  EXPECT_TRUE(sup_.restart("a"));
  sup_.tick();
  EXPECT_EQ(launcher_.count("a"), 3);
  EXPECT_FALSE(sup_.restart("nope"));
}

TEST_F(SupervisorTest, SetDesiredAddsRemovesAndRestartsChangedSpecs) {
  sup_.set_desired({Spec("a"), Spec("b")});
  sup_.tick();
  tick_after(seconds(1));
  pid_t a1 = pid("a"), b1 = pid("b");

  // The same specs again change nothing.
  sup_.set_desired({Spec("b"), Spec("a")});
  sup_.tick();
  EXPECT_THAT(launcher_.kills, IsEmpty());

  auto a2 = Spec("a");
  a2.env = {{"PGPORT", "5433"}};
  sup_.set_desired({a2, Spec("c")});
  sup_.tick();
  EXPECT_TRUE(launcher_.signalled(a1, SIGTERM));  // changed: restart
  EXPECT_TRUE(launcher_.signalled(b1, SIGTERM));  // removed: stop
  EXPECT_EQ(launcher_.count("c"), 1);             // new: start
  EXPECT_EQ(state("a"), ProcState::kStopping);
  ASSERT_TRUE(sup_.status("b").has_value());

  launcher_.exit(b1, Exited(0));
  sup_.tick();
  EXPECT_FALSE(sup_.status("b").has_value());  // forgotten once stopped
  EXPECT_FALSE(sup_.stop("b"));

  launcher_.exit(a1, Exited(0));
  sup_.tick();
  EXPECT_EQ(state("a"), ProcState::kStarting);
  EXPECT_EQ(launcher_.launches.back().spec, a2);
  EXPECT_EQ(launcher_.count("b"), 1);
}

TEST_F(SupervisorTest, ChangedSpecRearmsAFatalProcess) {
  auto s = Spec("a");
  s.start_retries = 1;
  sup_.set_desired({s});
  launcher_.fail("a", "cannot run /usr/bin/a: Permission denied");
  sup_.tick();
  ASSERT_EQ(state("a"), ProcState::kFatal);
  launcher_.clear_failures();
  s.argv = {"/usr/sbin/a"};
  sup_.set_desired({s});
  sup_.tick();
  EXPECT_EQ(state("a"), ProcState::kStarting);
  EXPECT_EQ(launcher_.launches.back().spec.argv[0], "/usr/sbin/a");
}

TEST_F(SupervisorTest, OperatorStoppedStaysStoppedAcrossSetDesired) {
  sup_.set_desired({Spec("a")});
  run("a");
  sup_.stop("a");
  sup_.tick();
  launcher_.exit(pid("a"), Exited(0));
  sup_.tick();
  sup_.set_desired({Spec("a"), Spec("b")});
  sup_.tick();
  EXPECT_EQ(state("a"), ProcState::kStopped);
  EXPECT_EQ(launcher_.count("a"), 1);
  EXPECT_EQ(launcher_.count("b"), 1);
}

TEST_F(SupervisorTest, StopAllGoesInReverseOrder) {
  sup_.set_desired({Spec("a", 0), Spec("b", 1), Spec("c", 2), Spec("d", 2)});
  for (int i = 0; i < 4; ++i) tick_after(seconds(1));
  for (const auto& s : sup_.status()) ASSERT_EQ(s.state, ProcState::kRunning) << s.name;
  std::map<std::string, pid_t> pids;
  for (const auto& s : sup_.status()) pids[s.name] = s.pid;

  sup_.stop_all();
  EXPECT_FALSE(sup_.all_stopped());
  sup_.tick();
  EXPECT_EQ(launcher_.kills,
            (std::vector<std::pair<pid_t, int>>{{pids["d"], SIGTERM}, {pids["c"], SIGTERM}}));
  launcher_.exit(pids["c"], Exited(0));
  sup_.tick();
  EXPECT_EQ(state("b"), ProcState::kRunning);  // d is still up
  launcher_.exit(pids["d"], Exited(0));
  sup_.tick();
  EXPECT_EQ(state("b"), ProcState::kStopping);
  EXPECT_EQ(state("a"), ProcState::kRunning);
  launcher_.exit(pids["b"], Exited(0));
  sup_.tick();
  EXPECT_EQ(state("a"), ProcState::kStopping);
  EXPECT_FALSE(sup_.all_stopped());
  launcher_.exit(pids["a"], Exited(0));
  sup_.tick();
  EXPECT_TRUE(sup_.all_stopped());

  // Nothing comes back by itself, not even newly desired processes.
  sup_.set_desired({Spec("a", 0), Spec("b", 1), Spec("c", 2), Spec("d", 2), Spec("e", 3)});
  tick_after(seconds(30));
  EXPECT_EQ(launcher_.launches.size(), 4u);
}

TEST_F(SupervisorTest, StopAllDuringStartupStopsEverything) {
  sup_.set_desired({Spec("a", 0, 1), Spec("b", 1)});
  sup_.tick();
  ASSERT_EQ(state("a"), ProcState::kStarting);
  sup_.stop_all();
  sup_.tick();
  EXPECT_EQ(state("a"), ProcState::kStopping);
  EXPECT_EQ(state("b"), ProcState::kStopped);
  launcher_.exit(pid("a"), Exited(0));
  sup_.tick();
  EXPECT_TRUE(sup_.all_stopped());
  EXPECT_EQ(launcher_.count("b"), 0);
}

TEST_F(SupervisorTest, StatusIsInStartOrderWithPathsAndTimes) {
  int64_t t0 = clock_.wall_ms();
  sup_.set_desired({Spec("z", 2), Spec("m", 1), Spec("a", 1)});
  std::vector<std::string> names;
  for (const auto& s : sup_.status()) names.push_back(s.name);
  EXPECT_THAT(names, ElementsAre("a", "m", "z"));
  EXPECT_EQ(sup_.status("a")->log_path, dir_.path() + "/log/a.log");
  EXPECT_EQ(sup_.status("a")->since_ms, t0);
  EXPECT_EQ(std::string(ToString(state("a"))), "STOPPED");
  EXPECT_FALSE(sup_.status("nope").has_value());

  tick_after(seconds(5));
  EXPECT_EQ(sup_.status("a")->since_ms, t0 + 5000);
  EXPECT_EQ(launcher_.launches[0].log_path, dir_.path() + "/log/a.log");
  tick_after(seconds(1));
  EXPECT_EQ(std::string(ToString(state("a"))), "RUNNING");
  EXPECT_EQ(sup_.status("a")->since_ms, t0 + 6000);
}

TEST_F(SupervisorTest, PidFileLivesAsLongAsTheProcess) {
  sup_.set_desired({Spec("a")});
  sup_.tick();
  std::string path = dir_.path() + "/run/a.pid";
  auto content = ReadFile(path);
  ASSERT_TRUE(content.ok()) << content.error();
  EXPECT_EQ(*content, std::to_string(pid("a")) + "\n");  // fake pid: no start time
  launcher_.exit(pid("a"), Exited(1));
  sup_.tick();
  EXPECT_FALSE(PathExists(path));
}

TEST_F(SupervisorTest, UnknownPidsAreIgnored) {
  sup_.set_desired({Spec("a")});
  run("a");
  launcher_.exit(12345, Exited(0));
  sup_.tick();
  EXPECT_EQ(state("a"), ProcState::kRunning);
}

// ---- recover(): real processes, since it reads /proc ----

bool WaitFor(const std::function<bool()>& cond, milliseconds limit = seconds(5)) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!cond()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(milliseconds(5));
  }
  return true;
}

bool IgnoresSigterm(pid_t pid) {
  auto status = ReadFile("/proc/" + std::to_string(pid) + "/status");
  if (!status.ok()) return false;
  auto at = status->find("SigIgn:");
  if (at == std::string::npos) return false;
  unsigned long long mask = std::stoull(status->substr(at + 7), nullptr, 16);
  return (mask >> (SIGTERM - 1)) & 1;
}

class SupervisorRecoverTest : public ::testing::Test {
 protected:
  SupervisorRecoverTest() { spdlog::set_level(spdlog::level::err); }
  ~SupervisorRecoverTest() override {
    for (pid_t p : children_) {
      ::kill(-p, SIGKILL);
      ::waitpid(p, nullptr, 0);
    }
  }

  // A process started by an "earlier agent": launched and recorded by a
  // supervisor that is then dropped without stopping it.
  pid_t start_orphan(std::vector<std::string> argv) {
    Supervisor old(RealClock::instance(), launcher_, prober_, dir_.path() + "/log", run_dir());
    ProcessSpec s;
    s.name = "old";
    s.argv = std::move(argv);
    s.env = {{"PATH", "/usr/bin:/bin"}};
    old.set_desired({s});
    old.tick();
    pid_t p = old.status("old")->pid;
    if (p > 0) children_.push_back(p);
    return p;
  }
  std::string run_dir() const { return dir_.path() + "/run"; }
  std::string pid_file() const { return run_dir() + "/old.pid"; }

  TempDir dir_;
  PosixLauncher launcher_;
  TcpProber prober_;
  std::vector<pid_t> children_;
};

TEST_F(SupervisorRecoverTest, StopsRecordedProcessGroup) {
  pid_t p = start_orphan({"/bin/sleep", "30"});
  ASSERT_GT(p, 0);
  auto content = ReadFile(pid_file());
  ASSERT_TRUE(content.ok());
  EXPECT_EQ(*content, std::to_string(p) + " " + std::to_string(*ProcessStartTime(p)) + "\n");

  Supervisor fresh(RealClock::instance(), launcher_, prober_, dir_.path() + "/log", run_dir());
  auto t0 = std::chrono::steady_clock::now();
  fresh.recover(seconds(5));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, seconds(4));  // SIGTERM sufficed
  EXPECT_FALSE(ProcessAlive(p));
  EXPECT_FALSE(PathExists(pid_file()));
  int status = 0;
  ASSERT_EQ(::waitpid(p, &status, 0), p);
  children_.clear();
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM);
}

TEST_F(SupervisorRecoverTest, KillsWhatIgnoresSigterm) {
  // The ignored SIGTERM is inherited by sleep through exec.
  pid_t p = start_orphan({"/bin/sh", "-c", "trap '' TERM; sleep 30; true"});
  ASSERT_GT(p, 0);
  ASSERT_TRUE(WaitFor([&] { return IgnoresSigterm(p); }));  // the trap has run
  Supervisor fresh(RealClock::instance(), launcher_, prober_, dir_.path() + "/log", run_dir());
  fresh.recover(milliseconds(200));
  EXPECT_FALSE(ProcessAlive(p));
  int status = 0;
  ASSERT_EQ(::waitpid(p, &status, 0), p);
  children_.clear();
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
}

TEST_F(SupervisorRecoverTest, LeavesAReusedPidAlone) {
  pid_t p = start_orphan({"/bin/sleep", "30"});
  ASSERT_GT(p, 0);
  // Same pid, another start time: not the process the earlier agent started.
  ASSERT_TRUE(WriteFileAtomic(pid_file(), std::to_string(p) + " 1\n").ok());
  ASSERT_TRUE(WriteFileAtomic(run_dir() + "/gone.pid", "4100000 77\n").ok());
  ASSERT_TRUE(WriteFileAtomic(run_dir() + "/junk.pid", "not a pid\n").ok());
  Supervisor fresh(RealClock::instance(), launcher_, prober_, dir_.path() + "/log", run_dir());
  fresh.recover(seconds(5));
  EXPECT_TRUE(ProcessAlive(p));
  EXPECT_FALSE(PathExists(pid_file()));
  EXPECT_FALSE(PathExists(run_dir() + "/gone.pid"));
  EXPECT_FALSE(PathExists(run_dir() + "/junk.pid"));
}

TEST_F(SupervisorRecoverTest, MissingRunDirIsFine) {
  Supervisor fresh(RealClock::instance(), launcher_, prober_, dir_.path() + "/log",
                   dir_.path() + "/nothing");
  fresh.recover(seconds(1));
  EXPECT_TRUE(fresh.all_stopped());
}

}  // namespace
}  // namespace kato
