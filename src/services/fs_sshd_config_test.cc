#include "services/fs_sshd_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace kato {
namespace {

using ::testing::HasSubstr;

FsSshdInput Input() {
  return {"127.0.0.5", 9448, "/run/kato-fs-ab/host_key", "/run/kato-fs-ab/sshd.pid",
          "/run/kato-fs-ab/keys", "/run/kato-fs-ab/root", "kato-fs"};
}

TEST(FsSshdConfig, SftpOnlyChrootedKeysOnly) {
  auto c = FsSshdConfig(Input());
  ASSERT_TRUE(c) << c.error();
  for (const char* line :
       {"ListenAddress 127.0.0.5:9448\n", "AuthorizedKeysFile /run/kato-fs-ab/keys/%u\n",
        "PasswordAuthentication no\n", "PermitRootLogin no\n", "AllowGroups kato-fs\n",
        "AllowTcpForwarding no\n", "PermitTTY no\n", "ChrootDirectory /run/kato-fs-ab/root/%u\n",
        "ForceCommand internal-sftp -d /data\n", "AuthenticationMethods publickey\n"})
    EXPECT_THAT(*c, HasSubstr(line));
}

TEST(FsSshdConfig, RefusesWhatCannotGoIntoTheFile) {
  auto bad = Input();
  bad.listen_ip = "0.0.0.0 \nPermitRootLogin yes";
  EXPECT_FALSE(FsSshdConfig(bad));
  bad = Input();
  bad.keys_dir = "/run/x\nPasswordAuthentication yes";
  EXPECT_FALSE(FsSshdConfig(bad));
  bad = Input();
  bad.chroot_root = "/run/../etc";
  EXPECT_FALSE(FsSshdConfig(bad));
  bad = Input();
  bad.group = "kato fs";
  EXPECT_FALSE(FsSshdConfig(bad));
  bad = Input();
  bad.port = 0;
  EXPECT_FALSE(FsSshdConfig(bad));
}

}  // namespace
}  // namespace kato
