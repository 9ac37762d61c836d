#include "services/fs_sshd_config.h"

#include <cctype>
#include <sstream>

#include "common/ipv4.h"

namespace kato {

namespace {
bool SafePath(const std::string& p) {
  if (p.empty() || p[0] != '/' || p.find("..") != std::string::npos) return false;
  for (char c : p)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '/' || c == '_' || c == '-' || c == '.'))
      return false;
  return true;
}
}  // namespace

Result<std::string> FsSshdConfig(const FsSshdInput& in) {
  if (!ParseIpv4(in.listen_ip)) return Err("filesystem: '" + in.listen_ip + "' is not an IPv4 address");
  if (in.port <= 0 || in.port > 65535) return Err("filesystem: " + std::to_string(in.port) + " is not a port");
  for (const auto* p : {&in.host_key, &in.pid_file, &in.keys_dir, &in.chroot_root})
    if (!SafePath(*p)) return Err("filesystem: path '" + *p + "' cannot go into sshd_config");
  bool group_ok = !in.group.empty();
  for (char c : in.group) group_ok = group_ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '-');
  if (!group_ok) return Err("filesystem: group '" + in.group + "' is not a plain name");
  std::ostringstream c;
  c << "# Written by katod for the filesystem service: SFTP only, chrooted, keys only.\n"
    << "ListenAddress " << in.listen_ip << ":" << in.port << "\n"
    << "HostKey " << in.host_key << "\n"
    << "PidFile " << in.pid_file << "\n"
    << "AuthorizedKeysFile " << in.keys_dir << "/%u\n"
    << "AuthenticationMethods publickey\n"
    << "PubkeyAuthentication yes\n"
    << "PasswordAuthentication no\n"
    << "KbdInteractiveAuthentication no\n"
    << "PermitRootLogin no\n"
    << "AllowGroups " << in.group << "\n"
    << "UsePAM no\n"
    << "StrictModes yes\n"
    << "PermitTTY no\n"
    << "PermitUserRC no\n"
    << "PermitUserEnvironment no\n"
    << "X11Forwarding no\n"
    << "AllowTcpForwarding no\n"
    << "AllowAgentForwarding no\n"
    << "AllowStreamLocalForwarding no\n"
    << "PermitTunnel no\n"
    << "GatewayPorts no\n"
    << "ClientAliveInterval 15\n"
    << "ClientAliveCountMax 3\n"
    << "Subsystem sftp internal-sftp\n"
    << "ChrootDirectory " << in.chroot_root << "/%u\n"
    << "ForceCommand internal-sftp -d /data\n";
  return c.str();
}

}  // namespace kato
