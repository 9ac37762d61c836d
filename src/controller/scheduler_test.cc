#include "controller/scheduler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>

namespace kato {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

DeaInfo Dea(const std::string& id, int memory_mb, bool up = true) {
  return DeaInfo{id, "127.0.0." + id.substr(id.size() - 1), memory_mb, up};
}

AppSpec App(const std::string& name, int instances, int memory_mb) {
  return AppSpec{name, instances, memory_mb, "STARTED", 1};
}

InstanceReport Running(const std::string& app, int index, const std::string& dea, int memory_mb,
                       const std::string& state = "RUNNING") {
  InstanceReport r;
  r.instance_id = app + "-" + std::to_string(index) + "@" + dea;
  r.app = app;
  r.app_version = 1;
  r.index = index;
  r.dea_node_id = dea;
  r.state = state;
  r.memory_mb = memory_mb;
  return r;
}

std::map<std::string, int> CountByDea(const std::vector<Placement>& placements) {
  std::map<std::string, int> count;
  for (const Placement& p : placements) ++count[p.dea_node_id];
  return count;
}

TEST(SchedulerTest, SpreadsAnAppAcrossDeas) {
  auto placed = Place(App("web", 3, 256), {0, 1, 2},
                      {Dea("dea1", 4096), Dea("dea2", 4096), Dea("dea3", 4096)}, {});
  ASSERT_TRUE(placed.ok()) << placed.error();
  EXPECT_EQ(CountByDea(*placed),
            (std::map<std::string, int>{{"dea1", 1}, {"dea2", 1}, {"dea3", 1}}));
  // Equal DEAs: ties go to the node id, in index order.
  EXPECT_THAT(*placed,
              ElementsAre(Placement{0, "dea1"}, Placement{1, "dea2"}, Placement{2, "dea3"}));
}

TEST(SchedulerTest, SixInstancesOnThreeDeasTwoEach) {
  auto placed = Place(App("web", 6, 256), {0, 1, 2, 3, 4, 5},
                      {Dea("dea1", 4096), Dea("dea2", 8192), Dea("dea3", 2048)}, {});
  ASSERT_TRUE(placed.ok()) << placed.error();
  EXPECT_EQ(CountByDea(*placed),
            (std::map<std::string, int>{{"dea1", 2}, {"dea2", 2}, {"dea3", 2}}));
}

TEST(SchedulerTest, FewestInstancesOfThisAppWinsOverMoreFreeMemory) {
  // dea1 is nearly empty but already runs web; dea2 is busy with other apps.
  std::vector<InstanceReport> running = {Running("web", 0, "dea1", 256),
                                         Running("db", 0, "dea2", 2048),
                                         Running("cache", 0, "dea2", 1024)};
  auto placed = Place(App("web", 2, 256), {1}, {Dea("dea1", 8192), Dea("dea2", 4096)}, running);
  ASSERT_TRUE(placed.ok()) << placed.error();
  EXPECT_THAT(*placed, ElementsAre(Placement{1, "dea2"}));
}

TEST(SchedulerTest, MoreFreeMemoryBreaksTies) {
  std::vector<InstanceReport> running = {Running("other", 0, "dea1", 1024)};
  auto placed = Place(App("web", 1, 256), {0}, {Dea("dea1", 4096), Dea("dea2", 4096)}, running);
  ASSERT_TRUE(placed.ok()) << placed.error();
  EXPECT_THAT(*placed, ElementsAre(Placement{0, "dea2"}));
}

TEST(SchedulerTest, OnlyStartingAndRunningInstancesHoldMemory) {
  std::vector<InstanceReport> running = {Running("other", 0, "dea1", 900, "CRASHED"),
                                         Running("other", 1, "dea1", 900, "STOPPED"),
                                         Running("other", 2, "dea1", 512, "STARTING")};
  auto fits = Place(App("web", 1, 512), {0}, {Dea("dea1", 1024)}, running);
  ASSERT_TRUE(fits.ok()) << fits.error();
  auto full = Place(App("web", 1, 513), {0}, {Dea("dea1", 1024)}, running);
  EXPECT_FALSE(full.ok());
}

TEST(SchedulerTest, MemoryExhaustionSaysWhatDidNotFit) {
  std::vector<InstanceReport> running = {Running("db", 0, "dea1", 1024 - 128),
                                         Running("db", 1, "dea2", 1024 - 64)};
  DeaInfo dea1{"dea1", "127.0.0.5", 1024, true};
  DeaInfo dea2{"dea2", "127.0.0.6", 1024, true};
  auto placed = Place(App("web", 4, 256), {3}, {dea1, dea2}, running);
  ASSERT_FALSE(placed.ok());
  EXPECT_EQ(placed.error(),
            "no DEA can fit instance 3 of app 'web' (needs 256 MB; the most free on any DEA is "
            "128 MB on 127.0.0.5)");
}

TEST(SchedulerTest, AllOrNothing) {
  // Room for two instances in all: placing three places none.
  auto placed = Place(App("web", 3, 512), {0, 1, 2}, {Dea("dea1", 512), Dea("dea2", 700)}, {});
  ASSERT_FALSE(placed.ok());
  EXPECT_EQ(placed.error(),
            "no DEA can fit instance 2 of app 'web' (needs 512 MB; the most free on any DEA is "
            "188 MB on 127.0.0.2)");
  // The same two indices alone fit, counting the first placement's memory.
  auto two = Place(App("web", 3, 512), {0, 1}, {Dea("dea1", 512), Dea("dea2", 700)}, {});
  ASSERT_TRUE(two.ok()) << two.error();
  EXPECT_EQ(CountByDea(*two), (std::map<std::string, int>{{"dea1", 1}, {"dea2", 1}}));
}

TEST(SchedulerTest, DownDeasAreIgnored) {
  auto placed =
      Place(App("web", 2, 256), {0, 1},
            {Dea("dea1", 4096, /*up=*/false), Dea("dea2", 1024), Dea("dea3", 8192, false)}, {});
  ASSERT_TRUE(placed.ok()) << placed.error();
  EXPECT_THAT(*placed, ElementsAre(Placement{0, "dea2"}, Placement{1, "dea2"}));

  auto none = Place(App("web", 1, 256), {0}, {Dea("dea1", 4096, false)}, {});
  ASSERT_FALSE(none.ok());
  EXPECT_THAT(none.error(), ::testing::StartsWith("no DEA is up"));
  auto empty = Place(App("web", 1, 256), {0}, {}, {});
  ASSERT_FALSE(empty.ok());
  EXPECT_THAT(empty.error(), ::testing::StartsWith("no DEA is up"));
}

TEST(SchedulerTest, InstancesOnUnknownDeasAreIgnored) {
  auto placed =
      Place(App("web", 1, 1024), {0}, {Dea("dea1", 1024)}, {Running("web", 0, "gone", 1024)});
  ASSERT_TRUE(placed.ok()) << placed.error();
  EXPECT_THAT(*placed, ElementsAre(Placement{0, "dea1"}));
}

TEST(SchedulerTest, NothingToPlaceIsNotAnError) {
  auto placed = Place(App("web", 0, 256), {}, {}, {});
  ASSERT_TRUE(placed.ok());
  EXPECT_THAT(*placed, IsEmpty());
}

TEST(SchedulerTest, DeterministicWhateverTheInputOrder) {
  std::vector<DeaInfo> deas = {Dea("dea1", 2048), Dea("dea2", 2048), Dea("dea3", 2048),
                               Dea("dea4", 2048)};
  std::vector<InstanceReport> running = {Running("web", 0, "dea2", 256),
                                         Running("other", 0, "dea3", 512)};
  auto first = Place(App("web", 5, 256), {1, 2, 3, 4}, deas, running);
  ASSERT_TRUE(first.ok()) << first.error();
  std::reverse(deas.begin(), deas.end());
  std::reverse(running.begin(), running.end());
  auto second = Place(App("web", 5, 256), {1, 2, 3, 4}, deas, running);
  ASSERT_TRUE(second.ok()) << second.error();
  EXPECT_EQ(*first, *second);
  // dea1 and dea4 (no web, most free) first, then dea3 (no web, less free), then the
  // emptiest of those with one web instance.
  EXPECT_THAT(*first, ElementsAre(Placement{1, "dea1"}, Placement{2, "dea4"}, Placement{3, "dea3"},
                                  Placement{4, "dea1"}));
}

}  // namespace
}  // namespace kato
