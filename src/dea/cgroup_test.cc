#include "dea/cgroup.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

#include "common/fs.h"

namespace kato {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A scratch tree shaped like /sys/fs/cgroup: the managers only read and write
// files under their root, so their logic is checked without root.
class CgroupTreeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kato-cgroup-test-XXXXXX";
    root_ = ::mkdtemp(tmpl);
  }
  void TearDown() override { fs::remove_all(root_); }
  void Put(const std::string& rel, const std::string& text) {
    ASSERT_TRUE(MakeDirs(fs::path(root_ + "/" + rel).parent_path().string()).ok());
    ASSERT_TRUE(WriteFileAtomic(root_ + "/" + rel, text).ok());
  }
  std::string Get(const std::string& rel) { return ReadFile(root_ + "/" + rel).value(); }

  std::string root_;
};

TEST_F(CgroupTreeTest, MissingControllersAreNamedWithHowToEnableThem) {
  // v1 with memory only: cpu and pids are missing.
  Put("memory/memory.limit_in_bytes", "0");
  auto v1 = ProbeCgroups(root_);
  ASSERT_TRUE(v1.ok()) << v1.error();
  auto s = RequireControllers(**v1);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.error(), HasSubstr("controllers cpu, pids are missing"));
  EXPECT_THAT(s.error(), HasSubstr("mount -t cgroup -o cpu"));
  EXPECT_THAT(s.error(), HasSubstr("allow_unlimited true"));
  Put("cpu/cgroup.procs", "");
  Put("pids/cgroup.procs", "");
  EXPECT_TRUE(RequireControllers(**ProbeCgroups(root_)).ok());
}

TEST_F(CgroupTreeTest, MissingV2ControllerIsNamed) {
  Put("cgroup.controllers", "cpu memory\n");
  auto v2 = ProbeCgroups(root_);
  ASSERT_TRUE(v2.ok()) << v2.error();
  auto s = RequireControllers(**v2);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.error(), HasSubstr("controller pids is missing"));
  EXPECT_THAT(s.error(), HasSubstr("echo +pids > /sys/fs/cgroup/cgroup.subtree_control"));
}

TEST_F(CgroupTreeTest, ProbesV2WhenTheUnifiedTreeHasMemory) {
  Put("cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n");
  Put("memory/memory.limit_in_bytes", "0");  // a v1 tree too: v2 wins
  Put("kato/i1/memory.swap.max", "max");     // what the kernel would offer
  auto m = ProbeCgroups(root_);
  ASSERT_TRUE(m.ok()) << m.error();
  EXPECT_EQ((*m)->version(), 2);
  ASSERT_TRUE((*m)->Create("i1", {64 << 20, 1024, 100}).ok());
  EXPECT_EQ(Get("cgroup.subtree_control"), "+cpu +memory +pids");
  EXPECT_EQ(Get("kato/cgroup.subtree_control"), "+cpu +memory +pids");
  EXPECT_EQ(Get("kato/i1/memory.max"), "67108864");
  EXPECT_EQ(Get("kato/i1/memory.swap.max"), "0");
  EXPECT_EQ(Get("kato/i1/cpu.weight"), "39");  // runc's mapping of the default 1024 shares
  EXPECT_EQ(Get("kato/i1/pids.max"), "100");
  EXPECT_THAT((*m)->ProcsFiles("i1"), ElementsAre(root_ + "/kato/i1/cgroup.procs"));

  Put("kato/i1/cgroup.procs", "12\n34\n");
  EXPECT_THAT((*m)->Pids("i1"), ElementsAre(12, 34));
  Put("kato/i1/memory.events", "low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\noom_group_kill 0\n");
  auto ev = (*m)->ReadMemoryEvents("i1");
  ASSERT_TRUE(ev.ok()) << ev.error();
  EXPECT_EQ(ev->oom_kills, 1u);
  EXPECT_EQ(ev->limit_hits, 7u);
  EXPECT_TRUE((*m)->Remove("never-created").ok());
}

TEST_F(CgroupTreeTest, V2WithoutLimitsWritesMax) {
  Put("cgroup.controllers", "memory\n");
  auto m = ProbeCgroups(root_, "kato-dea1");
  ASSERT_TRUE(m.ok()) << m.error();
  ASSERT_TRUE((*m)->Create("i2", {0, 1024, 0}).ok());
  EXPECT_EQ(Get("cgroup.subtree_control"), "+memory");
  EXPECT_EQ(Get("kato-dea1/i2/memory.max"), "max");
  EXPECT_FALSE(fs::exists(root_ + "/kato-dea1/i2/cpu.weight")) << "cpu is not enabled";
  EXPECT_FALSE(fs::exists(root_ + "/kato-dea1/i2/memory.swap.max")) << "no swap accounting";
}

TEST_F(CgroupTreeTest, ProbesV1WhenV2HasNoMemoryController) {
  Put("cgroup.controllers", "hugetlb\n");  // like a hybrid host's /sys/fs/cgroup/unified
  Put("memory/memory.limit_in_bytes", "9223372036854771712");
  Put("memory/kato/i1/memory.memsw.limit_in_bytes", "9223372036854771712");
  Put("cpu/cgroup.procs", "");
  auto m = ProbeCgroups(root_);
  ASSERT_TRUE(m.ok()) << m.error();
  EXPECT_EQ((*m)->version(), 1);
  ASSERT_TRUE((*m)->Create("i1", {64 << 20, 512, 100}).ok());
  EXPECT_EQ(Get("memory/kato/i1/memory.limit_in_bytes"), "67108864");
  EXPECT_EQ(Get("memory/kato/i1/memory.memsw.limit_in_bytes"), "67108864");
  EXPECT_EQ(Get("cpu/kato/i1/cpu.shares"), "512");
  EXPECT_FALSE(fs::exists(root_ + "/pids/kato/i1")) << "no pids hierarchy mounted";
  EXPECT_THAT((*m)->ProcsFiles("i1"), ElementsAre(root_ + "/memory/kato/i1/cgroup.procs",
                                                  root_ + "/cpu/kato/i1/cgroup.procs"));
  Put("memory/kato/i1/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n");
  Put("memory/kato/i1/memory.failcnt", "40\n");
  auto ev = (*m)->ReadMemoryEvents("i1");
  ASSERT_TRUE(ev.ok()) << ev.error();
  EXPECT_EQ(ev->oom_kills, 2u);
  EXPECT_EQ(ev->limit_hits, 40u);
}

TEST_F(CgroupTreeTest, RefusesAHostWithoutAMemoryController) {
  Put("cgroup.controllers", "cpu pids\n");
  auto m = ProbeCgroups(root_);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(m.error(), HasSubstr("no usable cgroup memory controller"));
}

// The real hierarchy: a process joined through ProcsFiles is counted, limited
// and killed by Remove.
TEST(CgroupRealTest, ROOT_CreateJoinAndRemove) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  auto m = ProbeCgroups();
  ASSERT_TRUE(m.ok()) << m.error();
  std::string id = "test-" + std::to_string(::getpid());
  ASSERT_TRUE((*m)->Create(id, {32 << 20, 256, 50}).ok());
  auto files = (*m)->ProcsFiles(id);
  pid_t child = ::fork();
  if (child == 0) {
    char pid[32];
    int n = std::snprintf(pid, sizeof pid, "%d", ::getpid());
    for (const auto& f : files) {
      int fd = ::open(f.c_str(), O_WRONLY);
      if (fd < 0 || ::write(fd, pid, static_cast<size_t>(n)) != n) _exit(3);
      ::close(fd);
    }
    ::pause();
    _exit(0);
  }
  // Wait (bounded) for the child to appear in the group.
  bool joined = false;
  for (int i = 0; i < 500 && !joined; ++i) {
    auto pids = (*m)->Pids(id);
    joined = std::find(pids.begin(), pids.end(), child) != pids.end();
    if (!joined) ::usleep(2000);
  }
  EXPECT_TRUE(joined);
  auto ev = (*m)->ReadMemoryEvents(id);
  ASSERT_TRUE(ev.ok()) << ev.error();
  EXPECT_EQ(ev->oom_kills, 0u);
  ASSERT_TRUE((*m)->Remove(id).ok());
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  EXPECT_TRUE((*m)->Pids(id).empty());
  for (const auto& f : files) EXPECT_FALSE(fs::exists(fs::path(f).parent_path())) << f;
}

}  // namespace
}  // namespace kato
