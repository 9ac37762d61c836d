#include "services/filesystem_driver.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "common/fs.h"
#include "services/service_fakes_test.h"

namespace kato {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// The commands run through a fake (no accounts, mounts or sshd are made);
// the files and directories are real, in a temporary directory.
class FilesystemDriverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "the driver gives files to accounts: needs root";
    char tmpl[] = "/tmp/kato-fsdrv-XXXXXX";
    dir_ = mkdtemp(tmpl);
    ::chmod(dir_.c_str(), 0755);
    FilesystemDriverConfig c;
    c.state_dir = dir_ + "/state";
    c.run_root = dir_ + "/run";
    c.ip = "127.0.0.9";
    c.sshd = "/usr/sbin/sshd";
    c.useradd = "/usr/sbin/useradd";
    c.userdel = "/usr/sbin/userdel";
    c.groupadd = "/usr/sbin/groupadd";
    c.mkfs = "/sbin/mkfs.ext4";
    c.mount = "/bin/mount";
    c.umount = "/bin/umount";
    c.nologin = "/usr/sbin/nologin";
    driver_ = std::make_unique<FilesystemDriver>(
        c, runner_, host_,
        [this](const FsHost& h) {
          published_.push_back(h);
          return Ok();
        },
        [this](const std::string& user) -> std::optional<Account> {
          if (!accounts_.count(user)) return std::nullopt;
          return Account{accounts_[user], 999};
        },
        [this](const std::string&) -> std::optional<gid_t> {
          if (!group_) return std::nullopt;
          return 4242;
        });
  }
  void TearDown() override {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  std::vector<std::string> Tools() {
    std::vector<std::string> out;
    for (const auto& r : runner_.ran) out.push_back(std::filesystem::path(r.argv[0]).filename());
    return out;
  }

  std::string dir_;
  FakeRunner runner_;
  FakeHost host_;
  std::vector<FsHost> published_;
  std::map<std::string, uid_t> accounts_;
  bool group_ = false;
  std::unique_ptr<FilesystemDriver> driver_;
};

TEST_F(FilesystemDriverTest, PrepareStartsItsSshdAndPublishesTheHostKey) {
  ASSERT_TRUE(driver_->Prepare()) << driver_->Prepare().error();
  EXPECT_THAT(Tools(), ElementsAre("groupadd", "sshd"));  // the group, then `sshd -t`
  EXPECT_THAT(runner_.ran[1].argv, ElementsAre("/usr/sbin/sshd", "-t", "-f", dir_ + "/state/sshd_config"));
  ASSERT_TRUE(host_.wanted.count(FilesystemDriver::kSshdName));
  const ProcessSpec& sshd = host_.wanted[FilesystemDriver::kSshdName];
  EXPECT_THAT(sshd.argv, ElementsAre("/usr/sbin/sshd", "-D", "-e", "-f", dir_ + "/state/sshd_config"));
  EXPECT_EQ(sshd.ready->port, kFilesystemSshPort);
  auto conf = ReadFile(dir_ + "/state/sshd_config");
  ASSERT_TRUE(conf.ok());
  EXPECT_THAT(*conf, HasSubstr("ChrootDirectory " + dir_ + "/run/root/%u"));
  EXPECT_THAT(*conf, HasSubstr("AuthorizedKeysFile " + dir_ + "/run/keys/%u"));
  struct stat st {};
  ASSERT_EQ(::stat((dir_ + "/state/host_key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(published_.size(), 1u);
  EXPECT_EQ(published_[0].ip, "127.0.0.9");
  EXPECT_THAT(published_[0].public_key, HasSubstr("ecdsa-sha2-nistp256 "));
  EXPECT_EQ(published_[0].public_key + "\n", *ReadFile(dir_ + "/state/host_key.pub"));
  // Again (a restarted node): the same host key, the group already there.
  group_ = true;
  runner_.ran.clear();
  ASSERT_TRUE(driver_->Prepare());
  EXPECT_THAT(Tools(), ElementsAre("sshd"));
  EXPECT_EQ(published_[1], published_[0]);
}

TEST_F(FilesystemDriverTest, AConfigSshdRefusesIsAnError) {
  runner_.failures = {"", "sshd: bad configuration"};
  auto s = driver_->Prepare();
  ASSERT_FALSE(s);
  EXPECT_THAT(s.error(), HasSubstr("sshd refuses its configuration"));
  EXPECT_FALSE(host_.wanted.count(FilesystemDriver::kSshdName));
}

TEST_F(FilesystemDriverTest, ProvisionMakesTheAccountImageChrootAndKeyOnce) {
  group_ = true;
  ASSERT_TRUE(driver_->Prepare());
  ServiceRecord s = Record("filesystem");
  runner_.ran.clear();
  // useradd runs for a missing account (the fake makes none: an error).
  auto r = driver_->Provision(s);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error(), HasSubstr("was created but is not found"));
  ASSERT_EQ(runner_.ran.size(), 1u);
  EXPECT_THAT(runner_.ran[0].argv,
              ElementsAre("/usr/sbin/useradd", "--system", "--no-create-home", "--home-dir",
                          "/nonexistent", "--shell", "/usr/sbin/nologin", "--gid", "kato-fs",
                          "--password", "*", "u" + s.id));
  accounts_["u" + s.id] = 4321;
  runner_.ran.clear();
  r = driver_->Provision(s);
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(*r, Progress::kPending) << "sshd is still starting";
  EXPECT_THAT(Tools(), ElementsAre("mkfs.ext4", "mount"));
  EXPECT_THAT(runner_.ran[1].argv, ElementsAre("/bin/mount", "-o", "loop,nosuid,nodev,noexec",
                                               driver_->Image(s.id), driver_->Chroot(s.id)));
  struct stat st {};
  ASSERT_EQ(::stat(driver_->Image(s.id).c_str(), &st), 0);
  EXPECT_EQ(st.st_size, int64_t{64} << 20);  // the plan's size
  EXPECT_EQ(*ReadFile(driver_->KeyFile(s.id)), "restrict " + s.ssh_public_key + "\n");

  host_.states[FilesystemDriver::kSshdName] = ProcState::kRunning;
  runner_.ran.clear();
  r = driver_->Provision(s);
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(*r, Progress::kDone);
  // The image exists: never formatted again; the account exists: not added again.
  EXPECT_THAT(Tools(), ElementsAre("mount"));
  ASSERT_EQ(::stat((driver_->Chroot(s.id) + "/data").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 4321u);
  EXPECT_EQ(st.st_gid, 4242u);
  ASSERT_EQ(::stat(driver_->Chroot(s.id).c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(st.st_mode & 0777, 0755u);  // sshd's ChrootDirectory rule
}

TEST_F(FilesystemDriverTest, AFailedFormatLeavesNoImage) {
  group_ = true;
  accounts_["u0123456789abcdef"] = 4321;
  ASSERT_TRUE(driver_->Prepare());
  runner_.failures = {"mkfs.ext4: no space"};
  auto r = driver_->Provision(Record("filesystem"));
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error(), HasSubstr("no space"));
  EXPECT_FALSE(std::filesystem::exists(driver_->Image("0123456789abcdef")));
  EXPECT_FALSE(std::filesystem::exists(driver_->Image("0123456789abcdef") + ".new"));
}

TEST_F(FilesystemDriverTest, RemoveAndSweepTakeTheDataKeyAndAccount) {
  group_ = true;
  ASSERT_TRUE(driver_->Prepare());
  host_.states[FilesystemDriver::kSshdName] = ProcState::kRunning;
  ServiceRecord a = Record("filesystem", "00000000000000aa");
  ServiceRecord b = Record("filesystem", "00000000000000bb");
  accounts_["u" + a.id] = 4001;
  accounts_["u" + b.id] = 4002;
  ASSERT_TRUE(driver_->Provision(a).ok());
  ASSERT_TRUE(driver_->Provision(b).ok());
  runner_.ran.clear();
  auto r = driver_->Remove(a);
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(*r, Progress::kDone);
  EXPECT_FALSE(std::filesystem::exists(driver_->Image(a.id)));
  EXPECT_FALSE(std::filesystem::exists(driver_->KeyFile(a.id)));
  EXPECT_FALSE(std::filesystem::exists(driver_->Chroot(a.id)));
  ASSERT_EQ(runner_.ran.size(), 1u);
  EXPECT_THAT(runner_.ran[0].argv, ElementsAre("/usr/sbin/userdel", "u" + a.id));
  EXPECT_TRUE(std::filesystem::exists(driver_->Image(b.id)));
  // Sweep: b is live, a leftover image of c is not.
  ASSERT_TRUE(WriteFileAtomic(driver_->Image("00000000000000cc"), "", 0600));
  driver_->Sweep({b.id});
  EXPECT_TRUE(std::filesystem::exists(driver_->Image(b.id)));
  EXPECT_FALSE(std::filesystem::exists(driver_->Image("00000000000000cc")));
  // Removing what is gone is no error.
  EXPECT_TRUE(driver_->Remove(a).ok());
}

}  // namespace
}  // namespace kato
