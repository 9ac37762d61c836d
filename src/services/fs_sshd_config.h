// The filesystem node's own sshd (issue "Data services for apps",
// filesystem role; not wired yet): SFTP only, one chrooted account per
// filesystem service, keys the cluster generates, nothing else.
//
// sshd's StrictModes and ChrootDirectory want every component of the
// authorized-keys and chroot paths owned by root and writable by nobody else,
// so they live under /run (a node's data dir may be under /tmp on test
// machines); the service's data is a loop-mounted image there.
#pragma once

#include <string>

#include "common/result.h"

namespace kato {

struct FsSshdInput {
  std::string listen_ip;
  int port = 0;
  std::string host_key;     // the node's host key (private, 0600)
  std::string pid_file;
  std::string keys_dir;     // KEYS/%u: each account's authorized_keys
  std::string chroot_root;  // ROOT/%u: each account's chroot (its data in ROOT/%u/data)
  std::string group;        // only accounts of this group may log in
};

// sshd_config text, or an error naming a field that cannot go into it.
Result<std::string> FsSshdConfig(const FsSshdInput& in);

}  // namespace kato
