"""A private PostgreSQL server for cluster tests (Debian's postgresql-15).

Usage:

    from pgserver import PgServer

    with PgServer(ip="127.0.0.1") as pg:     # initdb + start, on a free port
        url = pg.url("kato")                  # creates database "kato" (once), gives its URL:
                                              # postgresql://kato:PASSWORD@IP:PORT/kato
        pg.sql("kato", "SELECT 1")            # psql as the superuser, returns stdout
        pg.restart()                          # a fast restart (cuts every connection)
    # stopped, and its directory removed

- The server runs in its own temporary directory, listening on `ip` (a loopback
  address such as 127.0.N.x) and a free port (or `port=`), with its Unix socket
  in that directory, so it never touches a system instance.
- PostgreSQL refuses to run as root: as root, every server command runs as the
  `postgres` user (the directory is chowned to it); otherwise as the caller.
- The superuser is `user` (default "kato") with password `password`
  (scram-sha-256 over TCP), so the URLs carry real credentials.
- stop() (or leaving the with block) stops it with `pg_ctl -m immediate` and
  removes the directory; it is safe to call twice. Every wait is bounded.
"""
import os
import pwd
import shutil
import socket
import subprocess
import tempfile

PG_BIN = "/usr/lib/postgresql/15/bin"


def _free_port(ip):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


class PgServer:
    def __init__(self, ip="127.0.0.1", port=None, user="kato", password="kato-Test-pw1"):
        self.ip = ip
        self.port = port or _free_port(ip)
        self.user = user
        self.password = password
        self.dir = None
        self._databases = set()
        self._as_postgres = os.geteuid() == 0

    # -- lifecycle ----------------------------------------------------------
    def start(self):
        if not os.path.exists(os.path.join(PG_BIN, "postgres")):
            raise RuntimeError(f"{PG_BIN}/postgres is missing: install postgresql-15 "
                               "(scripts/install-deps)")
        self.dir = tempfile.mkdtemp(prefix="kato-pg-")
        pwfile = os.path.join(self.dir, "pw")
        with open(pwfile, "w") as f:
            f.write(self.password + "\n")
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        self._run([f"{PG_BIN}/initdb", "-D", self.data, "-U", self.user, f"--pwfile={pwfile}",
                   "-A", "scram-sha-256", "-E", "UTF8", "--no-sync"], timeout=120)
        os.unlink(pwfile)
        self._pg_ctl("start")
        return self

    def stop(self):
        if self.dir is None:
            return
        try:
            self._run([f"{PG_BIN}/pg_ctl", "-D", self.data, "-m", "immediate", "-w", "-t", "30",
                       "stop"], timeout=60, check=False)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def restart(self):
        self._pg_ctl("restart", "-m", "fast")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- databases ----------------------------------------------------------
    def url(self, dbname="kato", password=None):
        """The URL of database `dbname`, created empty on first use."""
        if dbname not in self._databases:
            self.sql("postgres", f'CREATE DATABASE "{dbname}"')
            self._databases.add(dbname)
        return self.url_only(dbname, password)

    def url_only(self, dbname, password=None):
        """The URL of `dbname` without creating it (for tests of missing databases)."""
        pw = self.password if password is None else password
        return f"postgresql://{self.user}:{pw}@{self.ip}:{self.port}/{dbname}"

    def sql(self, dbname, statement):
        """Runs `statement` with psql in `dbname` as the superuser; its output (unaligned)."""
        p = self._run([f"{PG_BIN}/psql", "-h", self.ip, "-p", str(self.port), "-U", self.user, "-d", dbname,
                       "-v", "ON_ERROR_STOP=1", "-At", "-c", statement],
                      timeout=60, env={"PGPASSWORD": self.password})
        return p.stdout

    # -- internals ----------------------------------------------------------
    @property
    def data(self):
        return os.path.join(self.dir, "data")

    def _pg_ctl(self, action, *extra):
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses={self.ip}"
        self._run([f"{PG_BIN}/pg_ctl", "-D", self.data, "-w", "-t", "60", "-l",
                   os.path.join(self.dir, "log"), *extra, "-o", opts, action], timeout=90)

    def _run(self, argv, timeout, check=True, env=None):
        if self._as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        e = dict(os.environ, **(env or {}))
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=e,
                           cwd=self.dir or "/")
        if check and p.returncode != 0:
            log = ""
            if self.dir and os.path.exists(os.path.join(self.dir, "log")):
                with open(os.path.join(self.dir, "log")) as f:
                    log = f.read()[-2000:]
            raise RuntimeError(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.strip()} "
                               f"{log}")
        return p
