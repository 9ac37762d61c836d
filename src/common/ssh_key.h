// SSH key pairs the cluster generates (the filesystem service's accounts):
// an ECDSA P-256 key, its private half as PEM (PKCS#8, which OpenSSH's ssh
// and sshfs read as an IdentityFile) and its public half as one line of
// OpenSSH's authorized_keys format ("ecdsa-sha2-nistp256 BASE64 COMMENT").
#pragma once

#include <string>

#include "common/result.h"

namespace kato {

struct SshKeyPair {
  std::string private_pem;
  std::string public_line;  // without a newline
};

// `comment` may hold letters, digits and "-_.@" only (it ends the line).
Result<SshKeyPair> CreateSshKey(const std::string& comment);

}  // namespace kato
