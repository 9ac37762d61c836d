#include "services/process_driver.h"

#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/fs.h"
#include "common/log.h"

namespace kato {
namespace {

struct Owner {
  uid_t uid = 0;
  gid_t gid = 0;
};

Result<Owner> LookUp(const std::string& user) {
  struct passwd pw {};
  struct passwd* found = nullptr;
  char buf[4096];
  if (::getpwnam_r(user.c_str(), &pw, buf, sizeof buf, &found) != 0 || found == nullptr)
    return Err("no user '" + user + "' on this node (the server's Debian package creates it)");
  return Owner{pw.pw_uid, pw.pw_gid};
}

Status Own(const std::string& path, const Owner& o, int mode) {
  if (::chown(path.c_str(), o.uid, o.gid) != 0 || ::chmod(path.c_str(), mode) != 0)
    return Err("cannot set the owner and mode of " + path + ": " + std::strerror(errno));
  return Ok();
}

bool IsInstanceId(const std::string& s) {
  return s.size() == 16 && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

}  // namespace

Status ProcessDriver::WriteFiles(const ServiceRecord& s, const std::string& dir) {
  auto owner = LookUp(config_.user);
  if (!owner) return Err(owner.error());
  KATO_TRY(MakeDirs(config_.root, 0711));
  // Its parents must let the server's user through (mode 0711: no listing).
  KATO_TRY(MakeDirs(dir, 0700));
  KATO_TRY(Own(dir, *owner, 0700));
  for (const auto& f : Files(s, dir)) {
    const std::string path = dir + "/" + f.name;
    auto now = ReadFile(path);
    if (!now || *now != f.content) KATO_TRY(WriteFileAtomic(path, f.content, f.mode));
    KATO_TRY(Own(path, *owner, f.mode));
  }
  return Ok();
}

Result<Progress> ProcessDriver::Provision(const ServiceRecord& s) {
  const std::string dir = Dir(s.id);
  KATO_TRY(WriteFiles(s, dir));
  ProcessSpec spec = Spec(s, dir);
  spec.name = Name(s.id);
  spec.env = {{"PATH", "/usr/sbin:/usr/bin:/sbin:/bin"}, {"LANG", "C.UTF-8"}};
  spec.cwd = dir;
  spec.ready = ReadinessCheck{config_.ip, s.port};
  spec.start_timeout = std::chrono::seconds(30);
  host_.Want(spec);
  auto st = host_.Status(spec.name);
  if (st && st->state == ProcState::kRunning) return Progress::kDone;
  if (st && st->state == ProcState::kFatal)
    return Err(kind_ + " of this service does not start: " + st->message + " (see " + st->log_path +
               ")");
  return Progress::kPending;
}

Result<Progress> ProcessDriver::RemoveId(const std::string& id) {
  host_.Drop(Name(id));
  if (host_.Status(Name(id))) return Progress::kPending;
  std::error_code ec;
  std::filesystem::remove_all(Dir(id), ec);
  if (ec) return Err("cannot remove " + Dir(id) + ": " + ec.message());
  if (!config_.log_dir.empty()) std::filesystem::remove(config_.log_dir + "/" + Name(id) + ".log", ec);
  return Progress::kDone;
}

Result<Progress> ProcessDriver::Remove(const ServiceRecord& s) { return RemoveId(s.id); }

void ProcessDriver::Sweep(const std::set<std::string>& live) {
  std::set<std::string> gone;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(config_.root, ec)) {
    const std::string id = e.path().filename().string();
    if (IsInstanceId(id) && !live.count(id)) gone.insert(id);
  }
  const std::string prefix = kind_ + "-";
  for (const auto& name : host_.Names()) {
    const std::string id = name.rfind(prefix, 0) == 0 ? name.substr(prefix.size()) : "";
    if (IsInstanceId(id) && !live.count(id)) gone.insert(id);
  }
  for (const auto& id : gone) {
    auto r = RemoveId(id);
    if (!r) LogWarn("services: {}", r.error());
    else if (*r == Progress::kDone) LogInfo("services: removed {} instance {} (no service names it)", kind_, id);
  }
}

}  // namespace kato
