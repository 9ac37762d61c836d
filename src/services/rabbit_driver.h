// RabbitDriver: rabbitmq instances on the node's role-wide RabbitMQ server.
// An instance is a vhost vID and a user uID (the record's password) with all
// permissions on that vhost only. Every rabbitmqctl run starts an Erlang VM
// (about a second), so Provision is one `import_definitions` of the user,
// vhost and permissions, read from stdin: the password never appears on a
// command line, and only its salted SHA-256 (RabbitMQ's own hash format)
// reaches the server. Prepare() deletes the default `guest` user.
#pragma once

#include <string>
#include <vector>

#include "dea/command.h"
#include "services/service_driver.h"

namespace kato {

class RabbitDriver final : public ServiceDriver {
 public:
  // `rabbitmqctl`: the argv that runs rabbitmqctl against the node's server
  // (as the rabbitmq user, with the server's environment; see RabbitEnv in
  // roles.h); its arguments follow.
  RabbitDriver(CommandRunner& runner, std::vector<std::string> rabbitmqctl)
      : runner_(runner), ctl_(std::move(rabbitmqctl)) {}

  Status Prepare() override;
  Result<Progress> Provision(const ServiceRecord& s) override;
  Result<Progress> Remove(const ServiceRecord& s) override;

 private:
  Result<std::string> Ctl(std::vector<std::string> args, const std::string& input = "");
  // Deletes a user or vhost; one that does not exist is no error.
  Status Delete(const std::string& what, const std::string& name);

  CommandRunner& runner_;
  std::vector<std::string> ctl_;
};

// RabbitMQ's rabbit_password_hashing_sha256 form of `password` with `salt`
// (4 bytes): base64(salt + SHA-256(salt + password)).
std::string RabbitPasswordHash(const std::string& password, const std::string& salt);

// The definitions that create the instance `s` (user, vhost, permissions).
std::string RabbitDefinitions(const ServiceRecord& s, const std::string& password_hash);

}  // namespace kato
