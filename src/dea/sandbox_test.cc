#include "dea/sandbox.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/fs.h"
#include "supervisor/launcher.h"

namespace kato {
namespace {

namespace fs = std::filesystem;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;

// Prints connect=ok or connect=failed for the unix socket at argv[1].
constexpr const char* kConnect =
    "import socket, sys\n"
    "s = socket.socket(socket.AF_UNIX)\n"
    "try:\n"
    "    s.connect(sys.argv[1]); print(\"connect=ok\")\n"
    "except OSError as e:\n"
    "    print(\"connect=failed\", e)\n";

// Listens on a unix socket at `path`, as the agent does on its socket.
int ListenUnix(const std::string& path) {
  int sock = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  EXPECT_EQ(::bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  EXPECT_EQ(::listen(sock, 4), 0);
  ::chmod(path.c_str(), 0777);
  return sock;
}

// An instance layout like the DEA's: a node data dir holding an agent socket,
// a secret, and two apps' instance directories. It lives under /var/tmp, not
// /tmp, so that hiding it is the sandbox's doing and not a side effect of the
// private /tmp.
class SandboxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/var/tmp/kato-sandbox-test-XXXXXX";
    root_ = ::mkdtemp(tmpl);
    ::chmod(root_.c_str(), 0711);  // the app user must reach its instance dirs
    data_ = root_ + "/data";
    app_ = data_ + "/instances/a/app";
    home_ = data_ + "/instances/a/home";
    other_ = data_ + "/instances/b/app";
    for (const auto& d : {app_, home_, other_}) ASSERT_TRUE(MakeDirs(d, 0711).ok());
    ::chmod(data_.c_str(), 0711);
    ::chown(home_.c_str(), 65534, 65534);
    ASSERT_TRUE(WriteFileAtomic(data_ + "/secret.txt", "node secret", 0644).ok());
    ASSERT_TRUE(WriteFileAtomic(other_ + "/other.txt", "other app", 0644).ok());
    ASSERT_TRUE(WriteFileAtomic(app_ + "/index.txt", "my app", 0644).ok());

    config_.instance_id = "sbx-" + std::to_string(::getpid()) + "-" + std::to_string(++counter_);
    config_.app_name = "myapp";
    config_.instance_index = 2;
    config_.uris = {"myapp.example.com"};
    config_.app_dir = app_;
    config_.home_dir = home_;
    config_.port = 18080;
    config_.env = {{"GREETING", "hello"}, {"PORT", "1"}};
    config_.hidden_paths = {data_};
  }
  void TearDown() override {
    if (cgroups_) {
      EXPECT_TRUE(cgroups_->Remove(config_.instance_id).ok());
    }
    fs::remove_all(root_);
  }

  void SkipUnlessRoot() {
    if (::geteuid() != 0) GTEST_SKIP() << "sandboxes need root (cgroups, setpriv)";
  }

  // Starts the instance in its cgroup; 0 on failure (already reported).
  pid_t Start() {
    auto made = ProbeCgroups();
    EXPECT_TRUE(made.ok()) << made.error();
    if (!made.ok()) return 0;
    cgroups_ = std::move(*made);
    EXPECT_TRUE(cgroups_->Create(config_.instance_id, InstanceLimits(config_)).ok());
    config_.cgroup_procs_files = cgroups_->ProcsFiles(config_.instance_id);
    std::string args = root_ + "/args-" + std::to_string(runs_ + 1);
    auto launch = InstanceSpec(config_, args);
    EXPECT_TRUE(launch.ok()) << launch.error();
    if (!launch.ok()) return 0;
    EXPECT_TRUE(WriteSandboxArgs(args, launch->sandbox_args).ok());
    log_ = root_ + "/log-" + std::to_string(++runs_) + ".txt";
    auto pid = launcher_.launch(launch->spec, log_);
    EXPECT_TRUE(pid.ok()) << pid.error();
    return pid.ok() ? *pid : 0;
  }

  std::string Log() {
    auto text = ReadFile(log_);
    return text.ok() ? *text : "";
  }

  // Waits (bounded: these are real processes) until `pred` holds.
  bool WaitFor(const std::function<bool()>& pred) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!pred()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return true;
  }

  // Waits for the instance to exit and returns its log.
  std::string Wait(pid_t pid, int* status = nullptr) {
    bool exited = WaitFor([&] {
      for (const auto& e : launcher_.reap()) {
        if (e.pid != pid) continue;
        if (status != nullptr) *status = e.status;
        return true;
      }
      return false;
    });
    if (!exited) {
      launcher_.kill_group(pid, SIGKILL);
      ADD_FAILURE() << "the instance did not exit within 60 s";
    }
    return Log();
  }

  // Runs the instance to completion and returns its log.
  std::string Run(int* status = nullptr) {
    pid_t pid = Start();
    return pid > 0 ? Wait(pid, status) : "";
  }

  static inline int counter_ = 0;
  int runs_ = 0;
  std::string log_;
  std::string root_, data_, app_, home_, other_;
  InstanceConfig config_;
  PosixLauncher launcher_;
  std::unique_ptr<CgroupManager> cgroups_;
};

// bwrap's arguments as a list, and the environment they set.
std::vector<std::string> SplitArgs(const std::string& nul_separated) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < nul_separated.size()) {
    size_t j = nul_separated.find('\0', i);
    out.push_back(nul_separated.substr(i, j - i));
    i = j + 1;
  }
  return out;
}
std::map<std::string, std::string> SetEnv(const std::vector<std::string>& b) {
  std::map<std::string, std::string> env;
  for (size_t i = 0; i + 2 < b.size(); ++i)
    if (b[i] == "--setenv") env[b[i + 1]] = b[i + 2];
  return env;
}

TEST_F(SandboxTest, SpecCarriesPortAndVcapApplication) {
  config_.cgroup_procs_files = {"/sys/fs/cgroup/memory/kato/x/cgroup.procs"};
  config_.command = "python3 -m http.server $PORT";
  config_.netns_path = "/run/netns/kato-x-1";
  config_.probe_host = "10.254.0.3";
  auto launch = InstanceSpec(config_, "/data/args");
  ASSERT_TRUE(launch.ok()) << launch.error();
  const ProcessSpec& spec = launch->spec;
  EXPECT_EQ(spec.name, "app-" + config_.instance_id);
  EXPECT_EQ(spec.user, "") << "the join step runs as root; setpriv drops privileges";
  auto b = SplitArgs(launch->sandbox_args);
  auto env = SetEnv(b);
  EXPECT_EQ(env.at("PORT"), "18080") << "the platform's PORT wins over the user's";
  EXPECT_EQ(env.at("VCAP_APP_PORT"), "18080");
  EXPECT_EQ(env.at("GREETING"), "hello");
  EXPECT_EQ(env.at("HOME"), "/home/app");
  auto vcap = nlohmann::json::parse(env.at("VCAP_APPLICATION"));
  EXPECT_EQ(vcap["name"], "myapp");
  EXPECT_EQ(vcap["instance_index"], 2);
  EXPECT_EQ(vcap["uris"], nlohmann::json::array({"myapp.example.com"}));
  ASSERT_TRUE(spec.ready.has_value());
  EXPECT_EQ(spec.ready->port, 18080);
  EXPECT_EQ(spec.ready->host, "10.254.0.3");
  // The privileged steps get a fixed environment: nothing of the user's.
  EXPECT_EQ(spec.env, (std::map<std::string, std::string>{
                          {"PATH", "/usr/sbin:/usr/bin:/sbin:/bin"}, {"LANG", "C.UTF-8"}}));
  // --clearenv comes before every --setenv.
  auto clear = std::find(b.begin(), b.end(), "--clearenv");
  ASSERT_NE(clear, b.end());
  EXPECT_LT(clear - b.begin(), std::find(b.begin(), b.end(), "--setenv") - b.begin());

  const auto& a = spec.argv;
  EXPECT_EQ(a[0], "/bin/sh");
  EXPECT_EQ(a[4], "/data/args");
  EXPECT_EQ(a[5], "/sys/fs/cgroup/memory/kato/x/cgroup.procs");
  EXPECT_EQ(a[6], "--");
  EXPECT_EQ(a[7], "/usr/bin/nsenter");
  EXPECT_EQ(a[8], "--net=/run/netns/kato-x-1");
  EXPECT_THAT(a, Contains("/usr/bin/prlimit"));
  EXPECT_THAT(a, Contains("--nofile=4096:4096"));
  EXPECT_THAT(a, Contains("/usr/bin/setpriv"));
  EXPECT_THAT(a, Contains("/usr/bin/bwrap"));
  for (const auto& arg : a) EXPECT_THAT(arg, Not(HasSubstr("hello"))) << "env on a command line";
  for (const char* flag : {"--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-user",
                           "--disable-userns", "--die-with-parent", "--new-session",
                           "--remount-ro"}) {
    EXPECT_THAT(b, Contains(flag));
  }
  EXPECT_THAT(b, Not(Contains("--share-net")));
  auto hidden = std::find(b.begin(), b.end(), data_);
  ASSERT_NE(hidden, b.end());
  EXPECT_EQ(*(hidden - 1), "--tmpfs");
  EXPECT_EQ(a.back(), config_.command);
  EXPECT_EQ(*(a.end() - 2), "-c");
}

TEST_F(SandboxTest, SpecRefusesEnvironmentItCannotPass) {
  config_.command = "true";
  config_.env = {{"BAD", std::string("a\0b", 3)}};
  EXPECT_THAT(InstanceSpec(config_, "/data/args").error(), HasSubstr("cannot pass on"));
}

TEST_F(SandboxTest, SpecRefusesBadConfigs) {
  config_.command = "true";
  auto c = config_;
  c.uid = 0;
  EXPECT_THAT(InstanceSpec(c, "/data/args").error(), HasSubstr("must not run as root"));
  c = config_;
  c.port = 0;
  EXPECT_THAT(InstanceSpec(c, "/data/args").error(), HasSubstr("has no port"));
  c = config_;
  c.instance_id = "../x";
  EXPECT_THAT(InstanceSpec(c, "/data/args").error(), HasSubstr("must be non-empty and hold no '/'"));
  c = config_;
  c.command = "";
  EXPECT_THAT(InstanceSpec(c, "/data/args").error(), HasSubstr("no command"));
  c = config_;
  ::chmod(root_.c_str(), 0700);
  EXPECT_THAT(InstanceSpec(c, "/data/args").error(),
              HasSubstr("cannot reach the app directory " + app_ + " because it may not search " +
                        root_));
}

TEST_F(SandboxTest, SpecRefusesBindsOutsideApp) {
  config_.command = "true";
  auto c = config_;
  c.binds = {{home_, "/etc"}};
  EXPECT_THAT(InstanceSpec(c, "/data/args").error(), HasSubstr("a path under /app"));
  c.binds = {{home_, "/app/../etc"}};
  EXPECT_FALSE(InstanceSpec(c, "/data/args").ok());
  c.binds = {{"relative", "/app/fs/x"}};
  EXPECT_FALSE(InstanceSpec(c, "/data/args").ok());
}

// A filesystem service's directory (here a plain one; the DEA binds its
// sshfs mount) is writable at /app/fs/NAME while the rest of /app is not.
TEST_F(SandboxTest, ROOT_ABoundServiceDirectoryIsWritableUnderApp) {
  SkipUnlessRoot();
  std::string shared = root_ + "/shared";
  fs::create_directories(shared);
  ::chown(shared.c_str(), config_.uid, config_.gid);
  fs::create_directories(app_ + "/fs/files");
  config_.binds = {{shared, "/app/fs/files"}};
  config_.command =
      "echo hello > /app/fs/files/note && echo fs=writable; "
      "touch /app/y 2>/dev/null || echo app=readonly";
  int status = -1;
  std::string log = Run(&status);
  SCOPED_TRACE(log);
  EXPECT_THAT(log, HasSubstr("fs=writable"));
  EXPECT_THAT(log, HasSubstr("app=readonly"));
  EXPECT_EQ(*ReadFile(shared + "/note"), "hello\n");
  EXPECT_FALSE(fs::exists(app_ + "/fs/files/note")) << "written through the bind, not into the droplet";
}

// Staging: the build dir is writable at /app, the cache at /cache, and the
// buildpacks are there to run but not to change.
TEST_F(SandboxTest, ROOT_StagingSeesAWritableAppAndCacheAndReadOnlyBuildpacks) {
  SkipUnlessRoot();
  std::string cache = root_ + "/cache", packs = root_ + "/packs";
  fs::create_directories(cache);
  fs::create_directories(packs + "/x/bin");
  ::chown(cache.c_str(), config_.uid, config_.gid);
  ::chown(app_.c_str(), config_.uid, config_.gid);
  ASSERT_TRUE(WriteFileAtomic(packs + "/x/bin/detect", "#!/bin/sh\necho detected-x\n", 0755).ok());
  config_.app_writable = true;
  config_.cache_dir = cache;
  config_.buildpacks_dir = packs;
  config_.command =
      "/buildpacks/x/bin/detect; echo built > /app/out && echo app=writable; "
      "echo c > /cache/c && echo cache=writable; "
      "touch /buildpacks/y 2>/dev/null || echo buildpacks=readonly";
  int status = -1;
  std::string log = Run(&status);
  SCOPED_TRACE(log);
  EXPECT_THAT(log, HasSubstr("detected-x"));
  EXPECT_THAT(log, HasSubstr("app=writable"));
  EXPECT_THAT(log, HasSubstr("cache=writable"));
  EXPECT_THAT(log, HasSubstr("buildpacks=readonly"));
  EXPECT_EQ(*ReadFile(app_ + "/out"), "built\n");
  EXPECT_EQ(*ReadFile(cache + "/c"), "c\n");
}

TEST_F(SandboxTest, SpecRefusesRelativeStagingDirs) {
  config_.command = "true";
  auto c = config_;
  c.cache_dir = "cache";
  EXPECT_THAT(InstanceSpec(c, "/data/args").error(), HasSubstr("build cache"));
  c = config_;
  c.buildpacks_dir = "packs";
  EXPECT_THAT(InstanceSpec(c, "/data/args").error(), HasSubstr("buildpacks"));
}

TEST_F(SandboxTest, ROOT_InstanceIsIsolated) {
  SkipUnlessRoot();
  std::string sock_path = data_ + "/kato.sock";
  int sock = ListenUnix(sock_path);
  std::string probe = "/tmp/kato-sandbox-probe-" + config_.instance_id;
  config_.command =
      "echo uid=$(id -u) gid=$(id -g); "
      "cat " + data_ + "/secret.txt 2>/dev/null || echo secret=hidden; "
      "test -e " + sock_path + " || echo sock=hidden; "
      "python3 -c '" + kConnect + "' " + sock_path + "; "
      "test -e " + other_ + "/other.txt || echo other=hidden; "
      "touch /usr/kato-sandbox-test 2>/dev/null || echo usr=readonly; "
      "touch /app/x 2>/dev/null || echo app=readonly; "
      "touch /home/app/h && echo home=writable; "
      "echo private > " + probe + " && echo tmp=writable; "
      "echo nprocs=$(ls /proc | grep -c '^[0-9]'); "
      "echo pid1=$(tr '\\0' ' ' < /proc/1/cmdline); "
      "echo cwd=$(pwd) port=$PORT vcap_port=$VCAP_APP_PORT greeting=$GREETING; "
      "echo vcap=$VCAP_APPLICATION; cat /app/index.txt; echo";
  int status = -1;
  std::string log = Run(&status);
  ::close(sock);
  SCOPED_TRACE(log);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_THAT(log, HasSubstr("uid=65534 gid=65534"));
  EXPECT_THAT(log, HasSubstr("secret=hidden"));
  EXPECT_THAT(log, Not(HasSubstr("node secret")));
  EXPECT_THAT(log, HasSubstr("sock=hidden"));
  EXPECT_THAT(log, HasSubstr("connect=failed"));
  EXPECT_THAT(log, HasSubstr("other=hidden"));
  EXPECT_THAT(log, HasSubstr("usr=readonly"));
  EXPECT_THAT(log, HasSubstr("app=readonly"));
  EXPECT_THAT(log, HasSubstr("home=writable"));
  EXPECT_THAT(log, HasSubstr("tmp=writable"));
  EXPECT_FALSE(fs::exists(probe)) << "the instance's /tmp must be private";
  EXPECT_TRUE(fs::exists(home_ + "/h")) << "the home is the instance's own dir";
  EXPECT_THAT(log, HasSubstr("pid1=/usr/bin/bwrap")) << "pid 1 is the sandbox's, not init";
  EXPECT_THAT(log, HasSubstr("cwd=/app port=18080 vcap_port=18080 greeting=hello"));
  EXPECT_THAT(log, HasSubstr("\"instance_index\":2"));
  EXPECT_THAT(log, HasSubstr("\"uris\":[\"myapp.example.com\"]"));
  EXPECT_THAT(log, HasSubstr("my app"));
  auto n = log.find("nprocs=");
  ASSERT_NE(n, std::string::npos);
  EXPECT_LE(std::stoi(log.substr(n + 7)), 8) << "the instance must see only its own processes";
  EXPECT_FALSE(fs::exists("/usr/kato-sandbox-test"));
}

// The app's environment applies only inside the sandbox: a library named in
// LD_PRELOAD by its host path (as another app could name one from its own
// instance dir) must never load into the privileged steps (sh, nsenter,
// prlimit, setpriv, bwrap), while the app itself may preload one (jemalloc).
TEST_F(SandboxTest, ROOT_AppEnvironmentNeverReachesPrivilegedSteps) {
  SkipUnlessRoot();
  std::string cc = PathExists("/usr/bin/cc") ? "/usr/bin/cc" : "";
  if (cc.empty()) GTEST_SKIP() << "needs a C compiler to build the probe library";
  std::string src = root_ + "/probe.c";
  ASSERT_TRUE(WriteFileAtomic(src,
                              "#include <stdio.h>\n#include <unistd.h>\n"
                              "__attribute__((constructor)) static void probe(void) {\n"
                              "  fprintf(stderr, \"preload-ran uid=%d\\n\", (int)getuid());\n}\n",
                              0644)
                  .ok());
  std::string lib = app_ + "/probe.so";
  ASSERT_EQ(std::system((cc + " -shared -fPIC -o " + lib + " " + src).c_str()), 0);
  ::chmod(lib.c_str(), 0755);
  config_.env["LD_PRELOAD"] = lib + ":/app/probe.so";
  config_.command = "echo app-ran";
  std::string log = Run();
  SCOPED_TRACE(log);
  EXPECT_THAT(log, HasSubstr("app-ran"));
  EXPECT_THAT(log, HasSubstr("preload-ran uid=65534")) << "the app may preload its own library";
  EXPECT_THAT(log, Not(HasSubstr("preload-ran uid=0"))) << "a privileged step loaded it";
}

// The control for the test above: without hiding, the same probes see the
// data dir, so "secret=hidden" and "connect=failed" there are the sandbox's work.
TEST_F(SandboxTest, ROOT_DataDirIsVisibleWhenNotHidden) {
  SkipUnlessRoot();
  config_.hidden_paths.clear();
  int sock = ListenUnix(data_ + "/kato.sock");
  config_.command = "cat " + data_ + "/secret.txt; python3 -c '" + std::string(kConnect) + "' " +
                    data_ + "/kato.sock";
  std::string log = Run();
  ::close(sock);
  EXPECT_THAT(log, HasSubstr("node secret"));
  // A read-only mount does not stop connect(): sockets must be hidden, not just read-only.
  EXPECT_THAT(log, HasSubstr("connect=ok"));
}

TEST_F(SandboxTest, ROOT_MemoryLimitKillsAndIsReportedAsOom) {
  SkipUnlessRoot();
  config_.memory_mb = 64;
  config_.command = "python3 -c 'x = bytearray(300 * 1024 * 1024); print(\"survived\")'";
  int status = -1;
  std::string log = Run(&status);
  EXPECT_THAT(log, Not(HasSubstr("survived")));
  EXPECT_FALSE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << log;
  ASSERT_TRUE(cgroups_);
  auto ev = cgroups_->ReadMemoryEvents(config_.instance_id);
  ASSERT_TRUE(ev.ok()) << ev.error();
  EXPECT_GE(ev->oom_kills, 1u);
}

TEST_F(SandboxTest, ROOT_RemoveKillsALeftoverProcess) {
  SkipUnlessRoot();
  // The instance backgrounds a sleeper and exits: the cgroup still holds it.
  config_.command = "setsid sleep 300 >/dev/null 2>&1 & echo started";
  std::string log = Run();
  ASSERT_THAT(log, HasSubstr("started"));
  // bwrap's pid 1 exiting takes the namespace down, so nothing may be left;
  // either way Remove must leave no process and no group.
  ASSERT_TRUE(cgroups_->Remove(config_.instance_id).ok());
  EXPECT_TRUE(cgroups_->Pids(config_.instance_id).empty());
  for (const auto& f : config_.cgroup_procs_files) EXPECT_FALSE(fs::exists(f));
}

}  // namespace
}  // namespace kato

namespace kato {
namespace {

TEST_F(SandboxTest, ROOT_SignalInstanceStopsTheAppGracefully) {
  SkipUnlessRoot();
  config_.command = "trap 'echo got-term; exit 0' TERM; echo ready; while :; do sleep 0.05; done";
  pid_t pid = Start();
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(WaitFor([&] { return Log().find("ready") != std::string::npos; })) << Log();
  SignalInstance(*cgroups_, config_.instance_id, pid, SIGTERM);
  int status = -1;
  std::string log = Wait(pid, &status);
  EXPECT_THAT(log, HasSubstr("got-term")) << "the app must see SIGTERM, not die with bwrap";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << " " << log;
}

}  // namespace
}  // namespace kato
