#include "services/mysql_driver.h"

namespace kato {
namespace {

// Names and passwords were checked to be letters and digits (CheckServiceRecord).
std::string Account(const ServiceRecord& s) { return "'" + s.username + "'@'%'"; }
std::string Database(const ServiceRecord& s) { return "`" + s.dbname + "`"; }

}  // namespace

Status MysqlDriver::Run(const std::string& sql) {
  auto r = runner_.Run({client_.mariadb, "--no-defaults", "--protocol=socket",
                        "--socket=" + client_.socket, "--user=root", "--batch",
                        "--skip-column-names"},
                       sql);
  if (!r)
    return Err("MariaDB: " + r.error() + " (is the mysql process RUNNING? see `kato process list`)");
  return Ok();
}

Status MysqlDriver::Prepare() {
  // Anonymous accounts let anyone in without a name; global_priv holds every account.
  return Run("DELETE FROM mysql.global_priv WHERE User = '';\nFLUSH PRIVILEGES;\n");
}

Result<Progress> MysqlDriver::Provision(const ServiceRecord& s) {
  KATO_TRY(Run("CREATE DATABASE IF NOT EXISTS " + Database(s) + ";\n" +
               "CREATE USER IF NOT EXISTS " + Account(s) + " IDENTIFIED BY '" + s.password + "';\n" +
               "GRANT ALL PRIVILEGES ON " + Database(s) + ".* TO " + Account(s) + ";\n"));
  return Progress::kDone;
}

Result<Progress> MysqlDriver::Remove(const ServiceRecord& s) {
  // The account first (no new sessions), then the sessions it has open (DROP
  // USER leaves them), then the data.
  KATO_TRY(Run("DROP USER IF EXISTS " + Account(s) + ";\n" + "KILL USER '" + s.username + "';\n" +
               "DROP DATABASE IF EXISTS " + Database(s) + ";\n"));
  return Progress::kDone;
}

}  // namespace kato
