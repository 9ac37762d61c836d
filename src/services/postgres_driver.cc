#include "services/postgres_driver.h"

namespace kato {

Result<SqlSession*> PostgresDriver::Session() {
  if (!session_) {
    auto s = connect_();
    if (!s) return Err(s.error());
    session_ = std::move(*s);
  }
  return session_.get();
}

Status PostgresDriver::Exec(const std::string& sql) {
  auto s = Session();
  if (!s) return Err(s.error());
  Status r = (*s)->Exec(sql);
  if (!r) session_.reset();
  return r;
}

Result<bool> PostgresDriver::Exists(const std::string& query) {
  auto s = Session();
  if (!s) return Err(s.error());
  auto rows = (*s)->Column(query);
  if (!rows) {
    session_.reset();
    return Err(rows.error());
  }
  return !rows->empty();
}

Status PostgresDriver::Prepare() {
  KATO_TRY(Exec("REVOKE CONNECT, TEMPORARY ON DATABASE postgres FROM PUBLIC"));
  return Exec("REVOKE CONNECT, TEMPORARY ON DATABASE template1 FROM PUBLIC");
}

Result<Progress> PostgresDriver::Provision(const ServiceRecord& s) {
  const std::string role = SqlIdentifier(s.username), db = SqlIdentifier(s.dbname);
  auto has_role = Exists("SELECT 1 FROM pg_roles WHERE rolname = " + SqlLiteral(s.username));
  if (!has_role) return Err(has_role.error());
  // One statement makes the role with its password: a crash leaves it whole or absent.
  if (!*has_role) KATO_TRY(Exec("CREATE ROLE " + role + " LOGIN PASSWORD " + SqlLiteral(s.password)));
  auto has_db = Exists("SELECT 1 FROM pg_database WHERE datname = " + SqlLiteral(s.dbname));
  if (!has_db) return Err(has_db.error());
  if (!*has_db) KATO_TRY(Exec("CREATE DATABASE " + db + " OWNER " + role));
  KATO_TRY(Exec("REVOKE CONNECT, TEMPORARY ON DATABASE " + db + " FROM PUBLIC"));
  KATO_TRY(Exec("GRANT CONNECT, TEMPORARY ON DATABASE " + db + " TO " + role));
  return Progress::kDone;
}

Result<Progress> PostgresDriver::Remove(const ServiceRecord& s) {
  // FORCE ends the database's sessions first (PostgreSQL 13 and later).
  KATO_TRY(Exec("DROP DATABASE IF EXISTS " + SqlIdentifier(s.dbname) + " WITH (FORCE)"));
  KATO_TRY(Exec("DROP ROLE IF EXISTS " + SqlIdentifier(s.username)));
  return Progress::kDone;
}

}  // namespace kato
