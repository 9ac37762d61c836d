#include "services/record_check.h"

#include <algorithm>
#include <cctype>

namespace kato {
namespace {

bool IsLowerHex(const std::string& s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

bool IsAlnum(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)); });
}

std::string ExpectedUser(const ServiceRecord& s) {
  return s.type == "redis" ? "" : "u" + s.id;
}

std::string ExpectedDb(const ServiceRecord& s) {
  if (s.type == "postgresql" || s.type == "mysql") return "d" + s.id;
  if (s.type == "rabbitmq") return "v" + s.id;
  return "";
}

}  // namespace

int RoleWidePort(const std::string& type) {
  if (type == "postgresql") return 5432;
  if (type == "mysql") return 3306;
  if (type == "rabbitmq") return 5672;
  return 0;
}

int InstanceMemoryMb(const ServiceRecord& s) { return s.plan_mb > 0 ? s.plan_mb : 64; }

// One authorized_keys line as the controller makes them (it goes into a file
// of the node's sshd): the key type, base64, a plain comment.
bool PlainPublicKey(const std::string& line) {
  const std::string type = "ecdsa-sha2-nistp256 ";
  if (line.rfind(type, 0) != 0 || line.size() > 512) return false;
  size_t sp = line.find(' ', type.size());
  if (sp == std::string::npos || sp == type.size()) return false;
  for (size_t i = type.size(); i < sp; ++i)
    if (!(std::isalnum(static_cast<unsigned char>(line[i])) || line[i] == '+' || line[i] == '/' ||
          line[i] == '='))
      return false;
  for (size_t i = sp + 1; i < line.size(); ++i)
    if (!(std::isalnum(static_cast<unsigned char>(line[i])) || std::string("-_.@").find(line[i]) != std::string::npos))
      return false;
  return sp + 1 < line.size();
}

Status CheckServiceRecord(const ServiceRecord& s) {
  const std::string what = "service " + s.name + ": ";
  if (s.type == "harbor" || !IsServiceType(s.type))
    return Err(what + "type '" + s.type + "' is not provisioned by the services process");
  if (s.id.size() != 16 || !IsLowerHex(s.id))
    return Err(what + "its id is not 16 lowercase hex digits; delete and create it again");
  if (s.type == "filesystem") {
    if (s.username != "u" + s.id)
      return Err(what + "its username is not the one its id gives (u" + s.id + ")");
    if (s.port != kFilesystemSshPort)
      return Err(what + "its port " + std::to_string(s.port) + " is not the filesystem sshd's (" +
                 std::to_string(kFilesystemSshPort) + ")");
    if (!PlainPublicKey(s.ssh_public_key))
      return Err(what + "its public key is not an ecdsa-sha2-nistp256 authorized_keys line");
    if (s.plan_mb < kMinFilesystemMb || s.plan_mb > 65536)
      return Err(what + "its size " + std::to_string(s.plan_mb) + " MB is outside " +
                 std::to_string(kMinFilesystemMb) + "-65536 MB");
    return Ok();
  }
  if (s.password.size() < 16 || s.password.size() > 64 || !IsAlnum(s.password))
    return Err(what + "its password is not 16 to 64 letters and digits; delete and create it again");
  if (s.username != ExpectedUser(s))
    return Err(what + "its username is not the one its id gives (" +
               (ExpectedUser(s).empty() ? "none" : ExpectedUser(s)) + ")");
  if (s.dbname != ExpectedDb(s))
    return Err(what + "its database name is not the one its id gives (" +
               (ExpectedDb(s).empty() ? "none" : ExpectedDb(s)) + ")");
  if (int role_port = RoleWidePort(s.type)) {
    if (s.port != role_port)
      return Err(what + "its port " + std::to_string(s.port) + " is not the " + s.type +
                 " server's (" + std::to_string(role_port) + ")");
    return Ok();
  }
  if (s.port < kServicePortLo || s.port > kServicePortHi)
    return Err(what + "its port " + std::to_string(s.port) + " is outside " +
               std::to_string(kServicePortLo) + "-" + std::to_string(kServicePortHi));
  if (s.plan_mb < 0 || s.plan_mb > 65536)
    return Err(what + "its plan's memory " + std::to_string(s.plan_mb) +
               " MB is outside 1-65536 MB");
  return Ok();
}

}  // namespace kato
