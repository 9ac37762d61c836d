"""The data-services node of the guide: real PostgreSQL, MariaDB, Redis,
memcached and RabbitMQ from Debian, supervised by katod on the node's address."""
import os
import socket
import subprocess

from conftest import wait_for


def answers(ip, port, send=None, expect=None):
    with socket.create_connection((ip, port), timeout=3) as s:
        if send is None:
            return True
        s.sendall(send)
        s.settimeout(3)
        data = s.recv(256)
        return expect in data


def test_data_services_node(cluster):
    core = cluster.core(1)
    n2 = cluster.node(2)
    r = cluster.attach(n2, core, "data-services")
    # mongodb is skipped (Debian has no server) and says why.
    assert "skipping mongodb" in r.err
    info = n2.json("info")
    assert {"postgresql", "mysql", "redis", "memcached", "rabbit", "filesystem"} \
        <= set(info["roles"]["assigned"])
    procs = n2.processes()
    for name in ("postgresql", "mysql", "redis", "memcached", "rabbitmq", "services"):
        assert procs[name]["state"] == "RUNNING", procs
    ip = n2.ip
    svc = f"{n2.data_dir}/services"
    # The role-wide servers let nobody in without credentials (made by their
    # wrappers, in files only root and the server's user can read).
    assert answers(ip, 6379, b"PING\r\n", b"-NOAUTH")
    password = open(f"{svc}/redis/kato.conf").read().split()[1]
    assert answers(ip, 6379, f"AUTH {password}\r\nPING\r\n".encode(), b"+OK")
    assert answers(ip, 11211, b"version\r\n", b"CLIENT_ERROR unauthenticated")
    user, _, pw = open(f"{svc}/memcached/auth").read().strip().partition(":")
    auth = f"{user} {pw}".encode()
    assert answers(ip, 11211, b"set a 0 0 %d\r\n%s\r\n" % (len(auth), auth), b"STORED")
    for path in (f"{svc}/redis/kato.conf", f"{svc}/memcached/auth"):
        assert os.stat(path).st_mode & 0o077 == 0, path
    # An AMQP 0-9-1 header gets Connection.Start (a method frame, type 1).
    assert answers(ip, 5672, b"AMQP\x00\x00\x09\x01", b"\x01\x00\x00")
    pg = subprocess.run(["pg_isready", "-h", ip, "-p", "5432"], capture_output=True, text=True)
    assert pg.returncode == 0, pg.stdout + pg.stderr
    with socket.create_connection((ip, 3306), timeout=3) as s:
        assert b"MariaDB" in s.recv(256)  # the server greeting names itself
    # Data lives under the node's data dir.
    assert subprocess.run(["test", "-f", f"{n2.data_dir}/services/postgresql/data/PG_VERSION"]).returncode == 0

    # A killed server is restarted by katod.
    pid = procs["postgresql"]["pid"]
    subprocess.run(["kill", "-9", str(pid)])
    wait_for("postgresql back", lambda: (lambda p: p["postgresql"]["state"] == "RUNNING" and
             p["postgresql"]["pid"] != pid)(n2.processes()), timeout=60)

    # Stop and start by role.
    n2.ok("stop", "redis")
    assert n2.processes()["redis"]["state"] == "STOPPED"
    n2.ok("start", "redis")
    assert n2.processes()["redis"]["state"] == "RUNNING"
    # Removing the group stops them all.
    n2.ok("role", "remove", "data-services")
    wait_for("servers stopped", lambda: n2.processes() == {}, timeout=60)
