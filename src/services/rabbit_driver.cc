#include "services/rabbit_driver.h"

#include <nlohmann/json.hpp>

#include "common/pki.h"

namespace kato {
namespace {

std::string FromHex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  return out;
}

// rabbitmqctl's ways of saying that a user or vhost is not there.
bool SaysAbsent(const std::string& error) {
  return error.find("does not exist") != std::string::npos ||
         error.find("no_such_") != std::string::npos || error.find("not_found") != std::string::npos;
}

}  // namespace

std::string RabbitPasswordHash(const std::string& password, const std::string& salt) {
  return Base64Encode(salt + FromHex(Sha256Hex(salt + password)));
}

std::string RabbitDefinitions(const ServiceRecord& s, const std::string& password_hash) {
  using json = nlohmann::json;
  return json{{"users", {{{"name", s.username},
                          {"password_hash", password_hash},
                          {"hashing_algorithm", "rabbit_password_hashing_sha256"},
                          {"tags", json::array()}}}},
              {"vhosts", {{{"name", s.dbname}}}},
              {"permissions", {{{"user", s.username},
                                {"vhost", s.dbname},
                                {"configure", ".*"},
                                {"write", ".*"},
                                {"read", ".*"}}}}}
      .dump();
}

Result<std::string> RabbitDriver::Ctl(std::vector<std::string> args, const std::string& input) {
  std::vector<std::string> argv = ctl_;
  argv.insert(argv.end(), args.begin(), args.end());
  auto r = runner_.Run(argv, input);
  if (!r)
    return Err("RabbitMQ: " + r.error() + " (is the rabbitmq process RUNNING? see `kato process list`)");
  return r;
}

Status RabbitDriver::Delete(const std::string& what, const std::string& name) {
  auto r = Ctl({"--quiet", "delete_" + what, name});
  if (!r && !SaysAbsent(r.error())) return Err(r.error());
  return Ok();
}

Status RabbitDriver::Prepare() { return Delete("user", "guest"); }

Result<Progress> RabbitDriver::Provision(const ServiceRecord& s) {
  const std::string salt = FromHex(RandomHex(4));
  auto r = Ctl({"--quiet", "import_definitions", "--format", "json"},
               RabbitDefinitions(s, RabbitPasswordHash(s.password, salt)));
  if (!r) return Err(r.error());
  return Progress::kDone;
}

Result<Progress> RabbitDriver::Remove(const ServiceRecord& s) {
  KATO_TRY(Delete("vhost", s.dbname));  // its queues and exchanges go with it
  KATO_TRY(Delete("user", s.username));
  return Progress::kDone;
}

}  // namespace kato
