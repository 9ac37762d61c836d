#include "services/pg_session.h"

#include <pqxx/pqxx>

#include "common/fs.h"

namespace kato {
namespace {

std::string Trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

// The server's complaint on one line (libpq ends its messages with newlines).
std::string OneLine(std::string s) {
  s = Trimmed(s);
  for (char& c : s)
    if (c == '\n') c = ' ';
  return s;
}

class PgSession final : public SqlSession {
 public:
  explicit PgSession(std::unique_ptr<pqxx::connection> c) : c_(std::move(c)) {}

  Status Exec(const std::string& sql) override {
    try {
      pqxx::nontransaction t(*c_);
      t.exec(sql);
      return Ok();
    } catch (const std::exception& e) {
      return Err("PostgreSQL: " + OneLine(e.what()));
    }
  }

  Result<std::vector<std::string>> Column(const std::string& sql) override {
    try {
      pqxx::nontransaction t(*c_);
      std::vector<std::string> out;
      for (const auto& row : t.exec(sql)) out.push_back(row[0].is_null() ? "" : row[0].c_str());
      return out;
    } catch (const std::exception& e) {
      return Err("PostgreSQL: " + OneLine(e.what()));
    }
  }

 private:
  std::unique_ptr<pqxx::connection> c_;
};

}  // namespace

Result<std::unique_ptr<SqlSession>> ConnectPostgres(const PgServer& server) {
  auto pw = ReadFile(server.password_file);
  if (!pw)
    return Err("cannot read PostgreSQL's superuser password (" + server.password_file +
               ", written when the postgresql server first starts): " + pw.error());
  // Values in single quotes, as libpq's conninfo wants them; the password is hex.
  std::string conninfo = "host='" + server.ip + "' port=" + std::to_string(server.port) +
                         " user=postgres dbname=postgres connect_timeout=5 sslmode=disable "
                         "application_name=kato-services password='" + Trimmed(*pw) + "'";
  try {
    auto c = std::make_unique<pqxx::connection>(conninfo);
    return std::unique_ptr<SqlSession>(new PgSession(std::move(c)));
  } catch (const std::exception& e) {
    return Err("cannot connect to PostgreSQL at " + server.ip + ":" + std::to_string(server.port) +
               " as postgres: " + OneLine(e.what()) + " (is the postgresql process RUNNING? see "
               "`kato process list`)");
  }
}

}  // namespace kato
