#include "common/idle_pool.h"

#include <gtest/gtest.h>

namespace kato {
namespace {

struct FakeConn {
  int id;
};

using Pool = IdlePool<FakeConn>;

std::unique_ptr<FakeConn> Conn(int id) { return std::make_unique<FakeConn>(FakeConn{id}); }

TEST(IdlePoolTest, TakesTheMostRecentConnectionOfItsKey) {
  FakeClock clock;
  Pool pool(clock, {});
  EXPECT_EQ(pool.Take("a"), nullptr);
  pool.Put("a", Conn(1));
  pool.Put("a", Conn(2));
  pool.Put("b", Conn(3));
  EXPECT_EQ(pool.size(), 3u);
  EXPECT_EQ(pool.Take("a")->id, 2);
  EXPECT_EQ(pool.Take("a")->id, 1);
  EXPECT_EQ(pool.Take("a"), nullptr);
  EXPECT_EQ(pool.Take("b")->id, 3);
  EXPECT_EQ(pool.size(), 0u);
}

TEST(IdlePoolTest, ConnectionsIdleTooLongAreDropped) {
  FakeClock clock;
  Pool pool(clock, Pool::Limits{.max_idle = Millis(4000)});
  pool.Put("a", Conn(1));
  clock.advance(Millis(3000));
  pool.Put("a", Conn(2));
  clock.advance(Millis(1500));  // 1 is 4.5 s idle, 2 is 1.5 s
  EXPECT_EQ(pool.Take("a")->id, 2);
  EXPECT_EQ(pool.Take("a"), nullptr);  // 1 was stale
  EXPECT_EQ(pool.size(), 0u);
  pool.Put("a", Conn(3));
  clock.advance(Millis(4001));
  EXPECT_EQ(pool.Take("a"), nullptr);
  EXPECT_EQ(pool.size(), 0u);
}

TEST(IdlePoolTest, KeepsAtMostPerKeyAndTotalDroppingTheOldest) {
  FakeClock clock;
  Pool pool(clock, Pool::Limits{.per_key = 2, .total = 3});
  pool.Put("a", Conn(1));
  clock.advance(Millis(1));
  pool.Put("a", Conn(2));
  clock.advance(Millis(1));
  pool.Put("a", Conn(3));  // 1 goes: two per key
  EXPECT_EQ(pool.size(), 2u);
  clock.advance(Millis(1));
  pool.Put("b", Conn(4));
  clock.advance(Millis(1));
  pool.Put("c", Conn(5));  // four in all: the oldest (2) goes
  EXPECT_EQ(pool.size(), 3u);
  EXPECT_EQ(pool.Take("a")->id, 3);
  EXPECT_EQ(pool.Take("a"), nullptr);
  EXPECT_EQ(pool.Take("b")->id, 4);
  EXPECT_EQ(pool.Take("c")->id, 5);
}

TEST(IdlePoolTest, ClearDropsEverything) {
  FakeClock clock;
  Pool pool(clock, {});
  pool.Put("a", Conn(1));
  pool.Put("b", Conn(2));
  pool.Clear();
  EXPECT_EQ(pool.size(), 0u);
  EXPECT_EQ(pool.Take("a"), nullptr);
}

TEST(IdlePoolTest, AZeroLimitKeepsNothing) {
  FakeClock clock;
  Pool pool(clock, Pool::Limits{.total = 0});
  pool.Put("a", Conn(1));
  EXPECT_EQ(pool.size(), 0u);
}

}  // namespace
}  // namespace kato
