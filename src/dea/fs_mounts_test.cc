#include "dea/fs_mounts.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>

namespace kato {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;

SshfsInput Input() {
  SshfsInput in;
  in.sshfs = "/usr/bin/sshfs";
  in.service.name = "files";
  in.service.type = "filesystem";
  in.service.username = "u0123456789abcdef";
  in.service.ssh_key = "-----BEGIN PRIVATE KEY-----\nsecret\n-----END PRIVATE KEY-----\n";
  in.host = {"127.0.0.7", kFilesystemSshPort, "ecdsa-sha2-nistp256 AAAA kato-fs-host"};
  in.key_file = "/data/i1/fs-files.key";
  in.known_hosts_file = "/data/i1/fs-files.known_hosts";
  in.log_home = "/data/i1";
  in.mount_point = "/run/kato/dea/i1/fs/files";
  in.uid = 1234;
  in.gid = 5678;
  return in;
}

TEST(SshfsSpec, ChecksTheHostKeyStrictlyAndUsesOnlyTheServicesKey) {
  ProcessSpec p = SshfsSpec(Input());
  ASSERT_GE(p.argv.size(), 7u);
  EXPECT_EQ(p.argv[0], "/usr/bin/sshfs");
  EXPECT_THAT(p.argv, Contains("-f"));  // the DEA's child: its exit is seen
  EXPECT_THAT(p.argv, Contains("/dev/null"));  // -F: no ssh config file applies
  EXPECT_EQ(p.argv[p.argv.size() - 2], "u0123456789abcdef@127.0.0.7:/data");
  EXPECT_EQ(p.argv.back(), "/run/kato/dea/i1/fs/files");
  auto o = std::find(p.argv.begin(), p.argv.end(), "-o");
  ASSERT_NE(o, p.argv.end());
  const std::string& opts = *(o + 1);
  for (const char* want :
       {"IdentityFile=/data/i1/fs-files.key", "UserKnownHostsFile=/data/i1/fs-files.known_hosts",
        "GlobalKnownHostsFile=/dev/null", "StrictHostKeyChecking=yes", "BatchMode=yes",
        "IdentitiesOnly=yes", "reconnect", "allow_other", "uid=1234", "gid=5678", "port=9450"})
    EXPECT_THAT(opts, HasSubstr(want));
  // The key is in a file of root's, never on a command line or in the environment.
  for (const auto& a : p.argv) EXPECT_THAT(a, Not(HasSubstr("secret")));
  for (const auto& [k, v] : p.env) EXPECT_THAT(v, Not(HasSubstr("secret"))) << k;
}

TEST(KnownHostsLine, NamesTheNonStandardPort) {
  EXPECT_EQ(KnownHostsLine({"127.0.0.7", 9450, "ecdsa-sha2-nistp256 AAAA c"}),
            "[127.0.0.7]:9450 ecdsa-sha2-nistp256 AAAA c");
}

TEST(FsMounts, LostNamesAMountThatIsGone) {
  std::vector<FsMount> mounts = {{"a", "/run/d/i1/fs/a", "/app/fs/a", 10},
                                 {"b", "/run/d/i1/fs/b", "/app/fs/b", 11}};
  std::string both =
      "90 27 0:50 / /run/d/i1/fs/a rw - fuse.sshfs u@h:/data rw\n"
      "91 27 0:51 / /run/d/i1/fs/b rw - fuse.sshfs u@h:/data rw\n";
  EXPECT_EQ(FsMounts::Lost(mounts, both), "");
  EXPECT_EQ(FsMounts::Lost(mounts, "90 27 0:50 / /run/d/i1/fs/a rw - fuse.sshfs u@h:/data rw\n"), "b");
  EXPECT_EQ(FsMounts::Lost({}, ""), "");
}

}  // namespace
}  // namespace kato
