#include "dea/instance_log.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "common/fs.h"
#include "common/log_tail.h"

namespace kato {
namespace {

class InstanceLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kato-log-test-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    path_ = dir_ + "/app.log";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  off_t Size(const std::string& p) {
    struct stat st;
    return ::stat(p.c_str(), &st) == 0 ? st.st_size : -1;
  }
  std::string dir_, path_;
};

TEST_F(InstanceLogTest, RotatesAtItsSizeAndKeepsTwoFiles) {
  RotatingLog log(path_, 4096);
  ASSERT_TRUE(log.Open().ok());
  std::string line(99, 'x');
  line += '\n';
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(log.Write(line.data(), line.size()).ok());
  EXPECT_LE(Size(path_), 4096);
  EXPECT_LE(Size(path_ + ".1"), 4096);
  EXPECT_FALSE(PathExists(path_ + ".2"));
  // Every byte ever written is counted.
  auto tail = TailLog(path_, 3);
  ASSERT_TRUE(tail.ok()) << tail.error();
  EXPECT_EQ(tail->end_offset, 100000u);
  EXPECT_EQ(tail->text, line + line + line);
}

TEST_F(InstanceLogTest, TailReadsOnlyTheEndAndContinuesIntoTheRotatedFile) {
  ASSERT_TRUE(WriteFileAtomic(path_ + ".1", "a\nb\nc\n").ok());
  ASSERT_TRUE(WriteFileAtomic(path_, "d\ne").ok());
  ASSERT_TRUE(WriteFileAtomic(path_ + ".offset", "6\n").ok());
  auto t = TailLog(path_, 3);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->text, "c\nd\ne");
  EXPECT_EQ(t->end_offset, 9u);
  EXPECT_EQ(TailLog(path_, 1)->text, "e");
  EXPECT_EQ(TailLog(path_, 100)->text, "a\nb\nc\nd\ne");
  // A bound on what is read: the first, partial line is dropped.
  std::string big;
  for (int i = 0; i < 1000; ++i) big += "line " + std::to_string(i) + "\n";
  ASSERT_TRUE(WriteFileAtomic(path_, big).ok());
  std::filesystem::remove(path_ + ".1");
  auto bounded = TailLog(path_, 10000, 100);
  ASSERT_TRUE(bounded.ok());
  EXPECT_LE(bounded->text.size(), 100u);
  EXPECT_EQ(bounded->text.substr(0, 5), "line ");
  EXPECT_EQ(bounded->text.substr(bounded->text.size() - 9), "line 999\n");
  EXPECT_FALSE(TailLog(dir_ + "/none", 3).ok());
}

TEST_F(InstanceLogTest, PumpCopiesAPipeToItsLogAndClosesAtEof) {
  LogPump pump(1 << 20);
  auto fd = pump.Open("i1", path_);
  ASSERT_TRUE(fd.ok()) << fd.error();
  std::string msg = "hello from the app\n";
  ASSERT_EQ(::write(*fd, msg.data(), msg.size()), static_cast<ssize_t>(msg.size()));
  ::close(*fd);  // the instance exits
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (pump.open_count() > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(pump.open_count(), 0u);
  EXPECT_EQ(ReadFile(path_).value(), msg);
}

}  // namespace
}  // namespace kato
