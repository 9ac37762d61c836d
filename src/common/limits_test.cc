#include "common/limits.h"

#include <gtest/gtest.h>
#include <sys/resource.h>

namespace kato {
namespace {

TEST(LimitsTest, RaisesTheSoftOpenFilesLimitToTheHardOne) {
  rlimit before{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &before), 0);
  if (before.rlim_max < 128) GTEST_SKIP() << "hard limit too low to lower the soft one";
  rlimit low = before;
  low.rlim_cur = 64;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
  auto r = RaiseOpenFilesLimit();
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(*r, before.rlim_max);
  rlimit after{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &after), 0);
  EXPECT_EQ(after.rlim_cur, before.rlim_max);
  EXPECT_EQ(after.rlim_max, before.rlim_max);
  // Already raised: nothing to do, same answer.
  EXPECT_EQ(*RaiseOpenFilesLimit(), before.rlim_max);
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &before), 0);
}

}  // namespace
}  // namespace kato
