// Fakes shared by the drivers' unit tests: a command runner and a SQL session
// that record what they were asked, and an instance host without processes.
#pragma once

#include <deque>
#include <map>
#include <string>
#include <vector>

#include "dea/command.h"
#include "services/instance_host.h"
#include "services/service_model.h"
#include "services/sql_session.h"

namespace kato {

struct Ran {
  std::vector<std::string> argv;
  std::string input;
};

class FakeRunner final : public CommandRunner {
 public:
  Result<std::string> Run(const std::vector<std::string>& argv, const std::string& input) override {
    ran.push_back({argv, input});
    if (failures.empty()) return std::string();
    std::string f = failures.front();
    failures.pop_front();
    if (f.empty()) return std::string();
    return Err(f);
  }
  std::vector<Ran> ran;
  std::deque<std::string> failures;  // per run, in order: "" succeeds, else the error
};

// Answers every query from `rows` (by exact text; none: no rows).
class FakeSql final : public SqlSession {
 public:
  struct Log {
    std::vector<std::string> sql;
    std::map<std::string, std::vector<std::string>> rows;
    std::string fail_on;  // a statement prefix that fails once
    int connects = 0;
  };
  explicit FakeSql(Log& log) : log_(log) {}
  Status Exec(const std::string& sql) override {
    log_.sql.push_back(sql);
    if (!log_.fail_on.empty() && sql.rfind(log_.fail_on, 0) == 0) {
      log_.fail_on.clear();
      return Err("PostgreSQL: ERROR: boom");
    }
    return Ok();
  }
  Result<std::vector<std::string>> Column(const std::string& sql) override {
    log_.sql.push_back(sql);
    auto it = log_.rows.find(sql);
    return it == log_.rows.end() ? std::vector<std::string>{} : it->second;
  }

 private:
  Log& log_;
};

class FakeHost final : public InstanceHost {
 public:
  void Want(const ProcessSpec& spec) override {
    wanted[spec.name] = spec;
    if (!states.count(spec.name)) states[spec.name] = ProcState::kStarting;
  }
  void Drop(const std::string& name) override {
    wanted.erase(name);
    if (states.count(name)) states[name] = ProcState::kStopping;
  }
  std::optional<ProcessStatus> Status(const std::string& name) const override {
    auto it = states.find(name);
    if (it == states.end()) return std::nullopt;
    ProcessStatus st;
    st.name = name;
    st.state = it->second;
    st.message = "exited with status 1";
    st.log_path = "/logs/" + name + ".log";
    return st;
  }
  std::vector<std::string> Names() const override {
    std::vector<std::string> out;
    for (const auto& [n, s] : states) out.push_back(n);
    return out;
  }
  std::map<std::string, ProcessSpec> wanted;
  std::map<std::string, ProcState> states;
};

// The password of every Record(): tests check it reaches no command line or log.
constexpr char kPassword[] = "abcdef0123456789abcdef0123456789";

inline ServiceRecord Record(const std::string& type, const std::string& id = "0123456789abcdef") {
  ServiceRecord s;
  s.name = type + "-1";
  s.type = type;
  s.id = id;
  s.node_id = "node-a";
  s.node_ip = "127.0.0.9";
  s.password = kPassword;
  s.username = type == "redis" ? "" : "u" + id;
  if (type == "postgresql" || type == "mysql") s.dbname = "d" + id;
  if (type == "rabbitmq") s.dbname = "v" + id;
  s.port = type == "postgresql" ? 5432 : type == "mysql" ? 3306 : type == "rabbitmq" ? 5672 : 42001;
  s.plan_mb = type == "redis" || type == "memcached" ? 64 : 0;
  if (type == "filesystem") {
    s.password.clear();
    s.port = kFilesystemSshPort;
    s.plan_mb = 64;
    s.ssh_key = "-----BEGIN PRIVATE KEY-----\nMIGHAgEA\n-----END PRIVATE KEY-----\n";
    s.ssh_public_key = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTY= kato-fs-" + id;
  }
  return s;
}

}  // namespace kato
