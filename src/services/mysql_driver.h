// MysqlDriver: mysql instances on the node's role-wide MariaDB server. An
// instance is a database dID and a user 'uID'@'%' (the record's password)
// with every privilege on that database and nothing else. SQL goes to
// Debian's `mariadb` client on stdin (never on its command line, which `ps`
// shows), as root through the server's unix socket (root authenticates by
// unix_socket: no password exists for it). Prepare() drops the anonymous
// accounts that mariadb-install-db may have created.
#pragma once

#include <string>

#include "dea/command.h"
#include "services/service_driver.h"

namespace kato {

struct MysqlClient {
  std::string mariadb;  // /usr/bin/mariadb
  std::string socket;   // SVC/mysql/run/mysqld.sock
};

class MysqlDriver final : public ServiceDriver {
 public:
  MysqlDriver(CommandRunner& runner, MysqlClient client) : runner_(runner), client_(std::move(client)) {}

  Status Prepare() override;
  Result<Progress> Provision(const ServiceRecord& s) override;
  Result<Progress> Remove(const ServiceRecord& s) override;

 private:
  Status Run(const std::string& sql);

  CommandRunner& runner_;
  MysqlClient client_;
};

}  // namespace kato
