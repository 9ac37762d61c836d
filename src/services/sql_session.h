// SqlSession: one connection to a SQL server, behind an interface so that
// the PostgreSQL driver's statements are unit tested with a fake. Statements
// run outside any transaction (CREATE DATABASE cannot run inside one).
// Errors carry the server's message; implementations never put the
// statement's text into them (it may hold a password).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"

namespace kato {

class SqlSession {
 public:
  virtual ~SqlSession() = default;
  virtual Status Exec(const std::string& sql) = 0;
  // The first column of every row the query returns.
  virtual Result<std::vector<std::string>> Column(const std::string& sql) = 0;
};

// Opens a new session (called again after an error drops the last one).
using SqlConnector = std::function<Result<std::unique_ptr<SqlSession>>()>;

// SQL literals and identifiers for names the node chose itself (checked by
// CheckServiceRecord); quoting is a second line of defence, not the first.
std::string SqlLiteral(const std::string& s);     // 'it''s'
std::string SqlIdentifier(const std::string& s);  // "a""b"

}  // namespace kato
