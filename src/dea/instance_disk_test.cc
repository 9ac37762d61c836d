#include "dea/instance_disk.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "common/fs.h"

namespace kato {
namespace {

using ::testing::HasSubstr;

class RootDiskTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "loop mounts need root";
    char tmpl[] = "/tmp/kato-disk-test-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    root_ = "/run/kato-disk-test-" + std::to_string(::getpid());
  }
  void TearDown() override {
    if (dir_.empty()) return;
    InstanceDisks(run_, root_).RemoveLeftovers().ok();
    std::filesystem::remove_all(root_);
    std::filesystem::remove_all(dir_);
  }
  std::string dir_, root_;
  PosixCommandRunner run_;
};

TEST_F(RootDiskTest, ROOT_AnInstanceStopsAtItsQuotaAndLeavesNothing) {
  InstanceDisks disks(run_, root_);
  auto d = disks.Create("inst1", dir_ + "/disk.img", 64, 65534, 65534);
  ASSERT_TRUE(d.ok()) << d.error();
  struct stat st;
  ASSERT_EQ(::stat(d->home().c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 65534u);
  EXPECT_FALSE(PathExists(d->app())) << "the droplet is unpacked there";
  // The image is sparse: it takes only what is written.
  ASSERT_EQ(::stat(d->image.c_str(), &st), 0);
  EXPECT_LT(st.st_blocks * 512, 16 << 20);
  // Writing past the size fails with ENOSPC; the data dir's filesystem is untouched.
  auto r =
      run_.Run({"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/bin/sh",
                "-c", "dd if=/dev/zero of=" + d->home() + "/fill bs=1M count=200 2>&1; exit 0"});
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_THAT(*r, HasSubstr("No space left on device"));
  ASSERT_EQ(::stat((d->home() + "/fill").c_str(), &st), 0);
  EXPECT_LE(st.st_size, 64 << 20);
  ASSERT_TRUE(disks.Remove(*d).ok());
  EXPECT_FALSE(PathExists(d->image));
  EXPECT_FALSE(PathExists(d->mount));
  auto info = ReadFile("/proc/self/mountinfo");
  ASSERT_TRUE(info.ok());
  EXPECT_TRUE(MountsUnder(*info, root_).empty());
}

TEST_F(RootDiskTest, ROOT_LeftoversOfAKilledRunAreUnmounted) {
  InstanceDisks disks(run_, root_);
  ASSERT_TRUE(disks.Create("a", dir_ + "/a.img", 64, 65534, 65534).ok());
  ASSERT_TRUE(disks.Create("b", dir_ + "/b.img", 64, 65534, 65534).ok());
  // A new DEA (the old one was killed) clears them.
  InstanceDisks again(run_, root_);
  ASSERT_TRUE(again.RemoveLeftovers().ok());
  auto info = ReadFile("/proc/self/mountinfo");
  ASSERT_TRUE(info.ok());
  EXPECT_TRUE(MountsUnder(*info, root_).empty());
}

TEST_F(RootDiskTest, ROOT_BadSizesAreRefused) {
  InstanceDisks disks(run_, root_);
  EXPECT_THAT(disks.Create("x", dir_ + "/x.img", 1, 65534, 65534).error(),
              HasSubstr("between 64 and"));
}

}  // namespace
}  // namespace kato
