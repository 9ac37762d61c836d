#include "common/ssh_key.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "common/fs.h"
#include "gmock/gmock.h"

namespace kato {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

TEST(SshKey, PublicLineAndPrivatePem) {
  auto k = CreateSshKey("kato-fs@node");
  ASSERT_TRUE(k) << k.error();
  EXPECT_THAT(k->public_line, StartsWith("ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABB"));
  EXPECT_THAT(k->public_line, HasSubstr(" kato-fs@node"));
  EXPECT_THAT(k->private_pem, StartsWith("-----BEGIN PRIVATE KEY-----"));
  auto other = CreateSshKey("");
  ASSERT_TRUE(other);
  EXPECT_NE(other->public_line, k->public_line);
  EXPECT_EQ(other->public_line.find(' ', 20), std::string::npos);  // no comment: two fields
  EXPECT_FALSE(CreateSshKey("a b"));
  EXPECT_FALSE(CreateSshKey("x\nssh-rsa AAAA evil"));
}

// OpenSSH itself reads the private key and derives the same public key.
TEST(SshKey, OpenSshReadsIt) {
  if (access("/usr/bin/ssh-keygen", X_OK) != 0) GTEST_SKIP() << "no ssh-keygen";
  auto k = CreateSshKey("t");
  ASSERT_TRUE(k);
  char tmpl[] = "/tmp/kato-sshkey-XXXXXX";
  std::string dir = mkdtemp(tmpl);
  ASSERT_TRUE(WriteFileAtomic(dir + "/id", k->private_pem, 0600).ok());
  std::string cmd = "/usr/bin/ssh-keygen -y -f " + dir + "/id 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  char buf[1024];
  std::string out;
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  pclose(p);
  std::filesystem::remove_all(dir);
  // "TYPE BASE64 [COMMENT]": the type and the key must agree.
  auto fields = [](const std::string& line) {
    auto a = line.find(' ');
    auto b = line.find_first_of(" \n", a + 1);
    return line.substr(0, b);
  };
  EXPECT_EQ(fields(out), fields(k->public_line)) << out;
}

}  // namespace
}  // namespace kato
