"""Harbor on a real cluster (a core, a harbor node, two DEAs): a TCP and a UDP
port for apps that are not HTTP, through nginx's stream module on the harbor
node, reached from the host; round robin over the instances; a failed
instance is taken out; bad input changes nothing."""
import json
import os
import socket
import time

from conftest import get, wait_for

APPS = os.path.join(os.path.dirname(__file__), "apps")
DOMAIN = "harbor.test"


def tcp_echo(ip, port, data=b"hello", timeout=3):
    with socket.create_connection((ip, port), timeout=timeout) as s:
        s.sendall(data)
        return s.recv(4096).decode()


def udp_echo(ip, port, data=b"hello", timeout=2):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(data, (ip, port))
        return s.recvfrom(4096)[0].decode()


def answered_by(echo, ip, port, n):
    """The instance indexes that answered n connections (exceptions propagate)."""
    return {echo(ip, port).split(" ")[0] for _ in range(n)}


def test_harbor_tcp_and_udp(cluster):
    core = cluster.core(1, f"api.{DOMAIN}")
    hb = cluster.node(2)
    cluster.attach(hb, core, "harbor")
    for i in (3, 4):
        cluster.attach(cluster.node(i), core, "dea")
    hb.wait_running(["harbor"])

    tcp = core.json("service", "create", "harbor", "echo-tcp")
    udp = core.json("service", "create", "harbor", "echo-udp", "--udp")
    assert tcp["node_ip"] == hb.ip and tcp["state"] == "READY" and tcp["protocol"] == "tcp"
    assert udp["protocol"] == "udp" and udp["port"] != tcp["port"]
    lo, hi = 35000, 40000
    assert lo <= tcp["port"] <= hi and lo <= udp["port"] <= hi

    path = os.path.join(APPS, "harbor")
    core.ok("app", "push", "et", "--path", path, "--instances", "2", "--service", "echo-tcp")
    core.ok("app", "push", "eu", "--path", path, "--service", "echo-udp")
    # The instance listens on HARBOR_PORT inside, and knows the public port.
    wait_for("the router to serve et", lambda: get(core.ip, f"et.{DOMAIN}")[0] == 200, 15)
    info = json.loads(get(core.ip, f"et.{DOMAIN}")[1])
    assert info["harbor_port"] == str(tcp["port"])
    assert info["harbor"]["host"] == hb.ip and info["harbor"]["port"] == tcp["port"]

    # Reached at the harbor node's IP and port from the host, round robin.
    wait_for("TCP echo through harbor",
             lambda: tcp_echo(hb.ip, tcp["port"]).endswith("hello"), timeout=20)
    wait_for("both instances behind the TCP port",
             lambda: answered_by(tcp_echo, hb.ip, tcp["port"], 6) == {"0", "1"}, timeout=20)
    wait_for("UDP echo through harbor",
             lambda: udp_echo(hb.ip, udp["port"], b"ping") == "0 ping", timeout=20)

    # A failed instance is taken out: every connection is answered by the other.
    try:
        tcp_echo(hb.ip, tcp["port"], b"crash", timeout=2)
    except OSError:
        pass
    t0 = time.monotonic()
    survivors = set()
    while time.monotonic() - t0 < 3:
        survivors |= answered_by(tcp_echo, hb.ip, tcp["port"], 1)
    assert len(survivors) >= 1
    # The health manager starts it again; then both answer again.
    wait_for("the crashed instance back behind the port",
             lambda: answered_by(tcp_echo, hb.ip, tcp["port"], 6) == {"0", "1"}, timeout=60)

    # Bad input: a clear error that changes nothing.
    before = core.json("service", "list")
    core.ok("config", "set", "harbor", "port_range", f"{tcp['port']}-{udp['port']}")
    r = core.kato("service", "create", "harbor", "full")
    assert r.rc != 0 and "is full" in r.err, r
    r = core.kato("service", "create", "harbor", "x", "--node", core.ip)
    assert r.rc != 0 and "has no harbor role" in r.err, r
    core.ok("config", "del", "harbor", "port_range")
    assert core.json("service", "list") == before

    # Delete: the port closes.
    core.ok("service", "delete", "echo-tcp", "--yes", "--force")

    def closed():
        try:
            tcp_echo(hb.ip, tcp["port"], timeout=1)
            return False
        except OSError:
            return True
    wait_for("the TCP port closed", closed, timeout=15)
    assert udp_echo(hb.ip, udp["port"], b"still") == "0 still"
