#include "common/fs.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <string>
#include <thread>
#include <vector>

namespace kato {
namespace {

class FsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kato-fs-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(FsTest, AtomicWriteReplacesTheFileWithItsMode) {
  const std::string path = dir_ + "/state.json";
  ASSERT_TRUE(WriteFileAtomic(path, "one").ok());
  ASSERT_TRUE(WriteFileAtomic(path, "two", 0640).ok());
  EXPECT_EQ(*ReadFile(path), "two");
  EXPECT_EQ(std::filesystem::status(path).permissions() & std::filesystem::perms::all,
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write |
                std::filesystem::perms::group_read);
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir_), {}), 1) << "no temporary left";
}

// Threads of one process writing the same file at once (an agent's command and
// its watch both save the membership): every write succeeds, one of them wins.
TEST_F(FsTest, ConcurrentAtomicWritesOfOneFileAllSucceed) {
  const std::string path = dir_ + "/cluster.json";
  constexpr int kThreads = 8, kWrites = 50;
  std::vector<std::thread> threads;
  std::vector<int> failures(kThreads, 0);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kWrites; ++i)
        if (!WriteFileAtomic(path, std::string(1000, static_cast<char>('a' + t))).ok())
          ++failures[t];
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(failures[t], 0) << "thread " << t;
  auto content = ReadFile(path);
  ASSERT_TRUE(content.ok());
  ASSERT_EQ(content->size(), 1000u);
  EXPECT_EQ(content->find_first_not_of(content->front()), std::string::npos) << "one write, whole";
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir_), {}), 1) << "no temporary left";
}

TEST_F(FsTest, AWriteIntoAMissingDirectoryIsAClearError) {
  auto s = WriteFileAtomic(dir_ + "/missing/file", "x");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().find("cannot write " + dir_ + "/missing/file.tmp."), std::string::npos)
      << s.error();
}

}  // namespace
}  // namespace kato
