#include "cli/log_follow.h"

#include <gtest/gtest.h>

namespace kato {
namespace {

TEST(LogFollowerTest, PrintsEachByteOnceAcrossAnswersAndRotations) {
  LogFollower f;
  EXPECT_EQ(f.Unseen("a", 6, "l1\nl2\n"), "l1\nl2\n");
  // The next answer repeats the tail and adds a line.
  EXPECT_EQ(f.Unseen("a", 9, "l2\nl3\n"), "l3\n");
  // Nothing new.
  EXPECT_EQ(f.Unseen("a", 9, "l3\n"), "");
  // The log rotated: the offset keeps counting, only the new line is printed.
  EXPECT_EQ(f.Unseen("a", 12, "l4\n"), "l4\n");
  // More was written than the answer holds: what is returned is printed.
  EXPECT_EQ(f.Unseen("a", 100, "l9\n"), "l9\n");
  // Instances are followed apart.
  EXPECT_EQ(f.Unseen("b", 3, "x\n\n"), "x\n\n");
}

}  // namespace
}  // namespace kato
