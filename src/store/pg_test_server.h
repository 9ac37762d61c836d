// For unit tests only: a private PostgreSQL server (Debian's postgresql-15)
// in a temporary directory on 127.0.0.1 and a free port, started on first use
// and stopped by the test binary's environment at the end. PostgreSQL refuses
// to run as root, so as root it runs as the `postgres` user. The superuser
// `kato` logs in with a password (scram-sha-256), so tests see real
// authentication.
#pragma once

#include <netinet/in.h>
#include <pwd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <pqxx/pqxx>
#include <string>

#include "common/result.h"

namespace kato {

class PgTestServer {
 public:
  static constexpr const char* kUser = "kato";
  static constexpr const char* kPassword = "pw-Secret-4711";

  // The server, started on first call; an error when it cannot be started.
  static Result<PgTestServer*> Get() {
    static std::string failure;
    auto& server = Slot();
    if (!server && failure.empty()) {
      auto s = std::unique_ptr<PgTestServer>(new PgTestServer());
      Status st = s->Start();
      if (st.ok())
        server = std::move(s);
      else
        failure = st.error();
    }
    if (!server) return Err("cannot start a test PostgreSQL server: " + failure);
    return server.get();
  }
  // Stops the server if it was started (the environment's TearDown).
  static void StopIfStarted() { Slot().reset(); }

  int port() const { return port_; }
  std::string Url(const std::string& db, const std::string& password = kPassword) const {
    return std::string("postgresql://") + kUser + ":" + password +
           "@127.0.0.1:" + std::to_string(port_) + "/" + db;
  }

  // A new, empty database; its URL.
  Result<std::string> NewDatabase() {
    std::string name = "kato_t" + std::to_string(++counter_);
    try {
      pqxx::connection c(Url("postgres"));
      pqxx::nontransaction n(c);
      n.exec("CREATE DATABASE " + name);
    } catch (const std::exception& e) {
      return Err(std::string("cannot create a test database: ") + e.what());
    }
    return Url(name);
  }

  // Runs `sql` in database `db` behind any store's back.
  Status Exec(const std::string& db, const std::string& sql) {
    try {
      pqxx::connection c(Url(db));
      pqxx::nontransaction n(c);
      n.exec(sql);
    } catch (const std::exception& e) {
      return Err(e.what());
    }
    return Ok();
  }

  // A fast restart: every open connection is cut.
  Status Restart() {
    return Run(PgCtl() + " -m fast -w -t 30 -l " + dir_ + "/log restart -o \"" + Options() + "\"");
  }

  ~PgTestServer() { Stop(); }

 private:
  PgTestServer() = default;
  static std::unique_ptr<PgTestServer>& Slot() {
    static std::unique_ptr<PgTestServer> server;
    return server;
  }

  static std::string Bin(const std::string& name) { return "/usr/lib/postgresql/15/bin/" + name; }
  std::string PgCtl() const { return Bin("pg_ctl") + " -D " + dir_ + "/data"; }
  std::string Options() const {
    return "-p " + std::to_string(port_) + " -k " + dir_ + " -c listen_addresses=127.0.0.1";
  }

  // Runs a shell command as the postgres user when root; output to the log.
  Status Run(const std::string& cmd) const {
    std::string full = ::geteuid() == 0 ? "runuser -u postgres -- " + cmd : cmd;
    full += " >> " + dir_ + "/commands.log 2>&1";
    if (std::system(full.c_str()) != 0)
      return Err("`" + cmd + "` failed; see " + dir_ + "/commands.log and " + dir_ + "/log");
    return Ok();
  }

  static int FreePort() {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = 0;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
      port = ntohs(a.sin_port);
    ::close(fd);
    return port;
  }

  Status Start() {
    if (!std::filesystem::exists(Bin("postgres")))
      return Err(Bin("postgres") + " is missing: install postgresql-15 (scripts/install-deps)");
    std::string tmpl = (std::filesystem::temp_directory_path() / "kato-pg-test.XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) return Err("mkdtemp failed");
    dir_ = tmpl;
    if (::geteuid() == 0) {
      passwd* pw = ::getpwnam("postgres");
      if (!pw) return Err("there is no postgres user (install postgresql-15)");
      if (::chown(dir_.c_str(), pw->pw_uid, pw->pw_gid) != 0) return Err("chown failed");
    }
    {
      std::ofstream pwfile(dir_ + "/pw");
      pwfile << kPassword << "\n";
    }
    if (::geteuid() == 0) {
      passwd* pw = ::getpwnam("postgres");
      if (::chown((dir_ + "/pw").c_str(), pw->pw_uid, pw->pw_gid) != 0) return Err("chown failed");
    }
    port_ = FreePort();
    if (port_ == 0) return Err("no free port");
    KATO_TRY(Run(Bin("initdb") + " -D " + dir_ + "/data -U " + kUser + " --pwfile=" + dir_ +
                 "/pw -A scram-sha-256 -E UTF8 --no-sync"));
    KATO_TRY(Run(PgCtl() + " -w -t 30 -l " + dir_ + "/log start -o \"" + Options() + "\""));
    started_ = true;
    return Ok();
  }

  void Stop() {
    if (!dir_.empty() && started_) (void)Run(PgCtl() + " -m immediate -w -t 30 stop");
    started_ = false;
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
    dir_.clear();
  }

  std::string dir_;
  int port_ = 0;
  bool started_ = false;
  std::atomic<int> counter_{0};
};

}  // namespace kato
