#include "common/mounts.h"

#include <gtest/gtest.h>

namespace kato {
namespace {

TEST(MountsUnderTest, FindsMountsBelowTheRootDeepestFirst) {
  std::string info =
      "22 27 0:21 / /proc rw - proc proc rw\n"
      "90 27 7:1 / /run/kato/dea-x/a rw,nosuid - ext4 /dev/loop1 rw\n"
      "91 90 0:50 / /run/kato/dea-x/a/deeper rw - tmpfs tmpfs rw\n"
      "92 27 7:2 / /run/kato/dea-xy/b rw - ext4 /dev/loop2 rw\n"
      "93 27 7:3 / /run/kato/dea-x/with\\040space rw - ext4 /dev/loop3 rw\n";
  EXPECT_EQ(
      MountsUnder(info, "/run/kato/dea-x"),
      (std::vector<std::string>{"/run/kato/dea-x/with space", "/run/kato/dea-x/a/deeper",
                                "/run/kato/dea-x/a"}));  // longest first: a child before its parent
  EXPECT_TRUE(MountsUnder(info, "/nowhere").empty());
}

TEST(MountsTest, IsMountPointMatchesWholePathsOnly) {
  std::string info =
      "90 27 7:1 / /run/kato-fs-n1/root/u00 rw,nosuid - ext4 /dev/loop1 rw\n"
      "91 27 0:50 / /run/kato/dea-x/i1/fs/with\\040space rw - fuse.sshfs u@h: rw\n";
  EXPECT_TRUE(IsMountPoint(info, "/run/kato-fs-n1/root/u00"));
  EXPECT_FALSE(IsMountPoint(info, "/run/kato-fs-n1/root/u0"));
  EXPECT_FALSE(IsMountPoint(info, "/run/kato-fs-n1/root"));
  EXPECT_TRUE(IsMountPoint(info, "/run/kato/dea-x/i1/fs/with space"));
  EXPECT_FALSE(IsMountPoint("", "/"));
}

TEST(MountsTest, IsMountedReadsThisProcesssMounts) {
  EXPECT_TRUE(IsMounted("/proc"));
  EXPECT_FALSE(IsMounted("/proc/self"));
}

}  // namespace
}  // namespace kato
