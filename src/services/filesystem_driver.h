// FilesystemDriver: the filesystem role's service instances (issue "Data
// services for apps"), as Stackato served them: the node runs its own sshd
// (SFTP only, fs_sshd_config.h) on kFilesystemSshPort, and each service is
// one account of it, "u"+id in the group kato-fs, chrooted into its own
// ext4 image of the plan's size (so a full service gets ENOSPC and nothing
// else fills up), logging in only with the key the controller made for it.
// The DEAs mount it with sshfs (dea/fs_mounts.h).
//
// On the node:
//   STATE/host_key, STATE/sshd_config      the sshd's (STATE: DATA/services/filesystem)
//   STATE/images/ID.img                    the service's data (sparse; kept across restarts)
//   RUN/root/uID                           the image, mounted: the account's chroot
//   RUN/root/uID/data                      its files, owned by the account
//   RUN/keys/uID                           its authorized key ("restrict KEY")
// RUN is /run/kato-fs-NODE_ID: sshd's StrictModes and ChrootDirectory want
// root-owned paths that nobody else may write all the way up, which a data
// dir under /tmp is not. The sshd's host key is published as "fs_host/NODE_ID"
// (service_model.h) for the DEAs to check.
//
// Provision is idempotent and never formats an existing image: a restarted
// node (or machine) mounts what it had.
#pragma once

#include <sys/types.h>

#include <functional>
#include <optional>
#include <set>
#include <string>

#include "dea/command.h"
#include "services/instance_host.h"
#include "services/service_driver.h"

namespace kato {

struct FilesystemDriverConfig {
  std::string state_dir;  // STATE
  std::string run_root;   // RUN
  std::string ip;         // sshd listens here
  int port = kFilesystemSshPort;
  std::string group = "kato-fs";
  // Absolute paths of the tools (empty: missing, and Prepare says which).
  std::string sshd, useradd, userdel, groupadd, mkfs, mount, umount, nologin;
};

struct Account {
  uid_t uid = 0;
  gid_t gid = 0;
};

class FilesystemDriver final : public ServiceDriver {
 public:
  using Publish = std::function<Status(const FsHost&)>;
  using LookUp = std::function<std::optional<Account>(const std::string& user)>;
  using GroupLookUp = std::function<std::optional<gid_t>(const std::string& group)>;

  FilesystemDriver(FilesystemDriverConfig config, CommandRunner& run, InstanceHost& host,
                   Publish publish, LookUp user = SystemUser, GroupLookUp group = SystemGroup);

  Status Prepare() override;
  Result<Progress> Provision(const ServiceRecord& s) override;
  Result<Progress> Remove(const ServiceRecord& s) override;
  void Sweep(const std::set<std::string>& live) override;

  std::string Image(const std::string& id) const { return config_.state_dir + "/images/" + id + ".img"; }
  std::string Chroot(const std::string& id) const { return config_.run_root + "/root/u" + id; }
  std::string KeyFile(const std::string& id) const { return config_.run_root + "/keys/u" + id; }
  static constexpr const char* kSshdName = "filesystem-sshd";

  static std::optional<Account> SystemUser(const std::string& user);
  static std::optional<gid_t> SystemGroup(const std::string& group);

 private:
  Result<Progress> RemoveId(const std::string& id);
  Result<Account> EnsureAccount(const std::string& user);
  Status EnsureImage(const std::string& id, int size_mb);
  Result<Progress> SshdProgress() const;

  FilesystemDriverConfig config_;
  CommandRunner& run_;
  InstanceHost& host_;
  Publish publish_;
  LookUp user_;
  GroupLookUp group_;
};

// Signals every process whose real uid is `uid` (an account's SFTP sessions,
// before the account goes). Returns how many were signalled.
int SignalUid(uid_t uid, int sig);

}  // namespace kato
