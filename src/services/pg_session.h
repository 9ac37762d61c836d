// A SqlSession on libpqxx: the PostgreSQL server of the node's postgresql
// role, as its superuser `postgres`, over TCP (scram-sha-256).
#pragma once

#include "services/sql_session.h"

namespace kato {

struct PgServer {
  std::string ip;
  int port = 5432;
  std::string password_file;  // SVC/postgresql/superuser.pw, written by the server's wrapper
};

// Connects (5 s connect timeout); the error says what to check.
Result<std::unique_ptr<SqlSession>> ConnectPostgres(const PgServer& server);

}  // namespace kato
