// PostgresDriver: postgresql instances on the node's role-wide PostgreSQL
// server. An instance is a login role uID (the record's password) owning a
// database dID that only it may connect to. Prepare() revokes PUBLIC's
// CONNECT on `postgres` and `template1`, so that no instance's role reaches
// another database. Statements are issued only when needed (the catalogs are
// asked first), so that a repeated Provision changes nothing.
#pragma once

#include <memory>

#include "services/service_driver.h"
#include "services/sql_session.h"

namespace kato {

class PostgresDriver final : public ServiceDriver {
 public:
  explicit PostgresDriver(SqlConnector connect) : connect_(std::move(connect)) {}

  Status Prepare() override;
  Result<Progress> Provision(const ServiceRecord& s) override;
  Result<Progress> Remove(const ServiceRecord& s) override;

 private:
  // The open session, connecting when there is none.
  Result<SqlSession*> Session();
  // Runs `sql`; an error drops the session (the next call reconnects).
  Status Exec(const std::string& sql);
  Result<bool> Exists(const std::string& query);

  SqlConnector connect_;
  std::unique_ptr<SqlSession> session_;
};

}  // namespace kato
