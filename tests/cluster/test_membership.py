"""The guide's flow on a real multi-node cluster: setup core, attach with roles,
info, status --all, role add/remove, node remove, rename, migrate."""
import json
import socket
import time

from conftest import limit, wait_for


def test_setup_core_attach_info_status(cluster):
    core = cluster.core(1, "api.kato.test")
    info = core.json("info")
    for key in ("id", "hostname", "ip", "version", "core_ip", "endpoint", "roles"):
        assert key in info
    assert info["ip"] == core.ip and info["core_ip"] == core.ip
    assert info["endpoint"] == "api.kato.test"
    assert set(info["roles"]["assigned"]) == {"primary", "controller", "router", "base"}
    assert "redis" in info["roles"]["available"]
    assert "harbor" in info["roles"]["available"]
    assert "filesystem" in info["roles"]["available"]
    assert "mdns" not in info["roles"]["available"]  # not yet implemented: never faked
    # The token core setup made is valid for 24 h; `node token` says until when.
    token = core.json("node", "token")
    day_ms = 24 * 3600 * 1000
    assert abs(token["expires_ms"] - (time.time() * 1000 + day_ms)) < 10 * 60 * 1000, token
    assert "Valid until" in core.ok("node", "token").err

    n2 = cluster.node(2)
    # A node that is not in a cluster says so, and still exits 0.
    r = n2.ok("info")
    assert "not in a cluster" in r.out
    assert n2.json("info")["roles"]["assigned"] == []

    r = cluster.attach(n2, core, "redis", "memcached")
    procs = n2.processes()
    assert procs["redis"]["state"] == "RUNNING" and procs["memcached"]["state"] == "RUNNING"
    assert n2.json("info")["core_ip"] == core.ip
    # The servers bind the node's own address (and want a password).
    with socket.create_connection((n2.ip, 6379), timeout=2) as s:
        s.sendall(b"PING\r\n")
        assert s.recv(64).startswith(b"-NOAUTH")

    status = core.json("status", "--all")
    nodes = {n["ip"]: n for n in status["nodes"]}
    assert set(nodes) == {core.ip, n2.ip}
    for n in nodes.values():
        for key in ("id", "ip", "hostname", "state", "roles", "processes"):
            assert key in n
        assert n["state"] == "up"
        for p in n["processes"]:
            assert {"name", "state", "pid"} <= set(p)
    assert {p["name"] for p in nodes[n2.ip]["processes"]} == {"redis", "memcached", "services"}

    listing = core.json("node", "list")
    assert {n["ip"] for n in listing} == {core.ip, n2.ip}
    for n in listing:
        assert {"id", "ip", "hostname", "state", "roles"} <= set(n)
    text = core.ok("node", "list").out.splitlines()
    assert sorted(line.split(" ")[0] for line in text) == sorted([core.ip, n2.ip])
    line = next(l for l in text if l.startswith(n2.ip + " "))
    assert set(line.split(" ")[1:]) == {"redis", "memcached", "base"}

    hist = core.json("history")
    assert any("node setup core" in h["command"] for h in hist)
    assert any("node attach" in h["command"] and h["node"] == n2.ip for h in hist)
    # The join token is never recorded: the command is kept with it masked.
    assert any("node attach --token *** " in h["command"] for h in hist), hist
    secret = cluster.token(core).split(".")[-1]
    assert secret not in json.dumps(hist) and secret not in core.ok("history").out


def test_role_add_remove_and_remote(cluster):
    core = cluster.core(1)
    n2 = cluster.node(2)
    cluster.attach(n2, core, "memcached")
    n2.ok("role", "add", "redis")
    n2.wait_running(["redis", "memcached"])
    assert set(n2.json("info")["roles"]["assigned"]) == {"base", "memcached", "redis"}
    n2.ok("role", "remove", "memcached")
    wait_for("memcached gone", lambda: "memcached" not in n2.processes(), timeout=30)
    # From the core, acting on another node (-n).
    core.ok("role", "add", "-n", n2.ip, "memcached")
    n2.wait_running(["memcached"])
    core.ok("role", "remove", "-n", n2.ip, "redis")
    wait_for("redis gone", lambda: "redis" not in n2.processes(), timeout=30)
    # The change reaches the node by the watch: the core's view agrees.
    nodes = {n["ip"]: n for n in core.json("node", "list")}
    assert set(nodes[n2.ip]["roles"]) == {"base", "memcached"}
    info = core.json("role", "info", "redis", "base")
    assert info[0]["processes"] == ["redis", "services"] and info[1]["processes"] == []


def test_role_change_reaches_node_within_a_second(cluster):
    """The agent watches the cluster revision: no slow poll."""
    core = cluster.core(1)
    n2 = cluster.node(2)
    cluster.attach(n2, core)
    t0 = time.monotonic()
    core.ok("role", "add", "-n", n2.ip, "memcached")
    n2.wait_running(["memcached"], timeout=30)
    # README: "a role change reaches the node within milliseconds". Timed here is the
    # whole `role add` until memcached is RUNNING (bench: attach to RUNNING < 0.1 s),
    # polled with a `kato` run every 50 ms; margin to 1 s for a loaded CI machine.
    assert time.monotonic() - t0 < limit(1.0)


def test_node_remove_and_never_comes_back(cluster):
    core = cluster.core(1)
    n2 = cluster.node(2)
    cluster.attach(n2, core, "memcached")
    r = core.ok("node", "remove", n2.ip)
    assert r.elapsed < 10  # README: "bounded (< 10 s)": a bound of the code, no margin
    t_removed = time.monotonic()
    assert n2.ip not in [n["ip"] for n in core.json("node", "list")]
    # The node learns it was removed and stops its cluster roles.
    wait_for("removed node to leave", lambda: not n2.json("info")["attached"], timeout=10)
    # README: "A removed node learns it at its next heartbeat" (one a second); margin
    # 1 s for a loaded CI machine.
    assert time.monotonic() - t_removed < limit(2.0)
    wait_for("its processes to stop", lambda: n2.processes() == {}, timeout=30)
    # Restarting its agent does not bring it back.
    n2.stop()
    n2.start()
    assert not n2.json("info")["attached"]
    assert n2.ip not in [n["ip"] for n in core.json("node", "list")]
    # An explicit attach with a token does.
    cluster.attach(n2, core)
    assert n2.ip in [n["ip"] for n in core.json("node", "list")]


def test_detach(cluster):
    core = cluster.core(1)
    n2 = cluster.node(2)
    cluster.attach(n2, core, "memcached")
    n2.ok("node", "detach")
    assert n2.processes() == {}
    assert n2.ip not in [n["ip"] for n in core.json("node", "list")]
    r = core.kato("node", "detach")
    assert r.rc != 0 and "core" in r.err


def test_rename(cluster):
    core = cluster.core(1, "api.old.test")
    n2 = cluster.node(2)
    cluster.attach(n2, core)
    core.ok("node", "rename", "cloud.example.com", "--no-restart")
    info = core.json("info")
    assert info["hostname"] == "cloud.example.com"
    assert info["endpoint"] == "api.cloud.example.com"
    nodes = {n["ip"]: n for n in core.json("node", "list")}
    assert nodes[core.ip]["hostname"] == "cloud.example.com"
    n2.ok("node", "rename", "dea-1.example.com")
    nodes = {n["ip"]: n for n in core.json("node", "list")}
    assert nodes[n2.ip]["hostname"] == "dea-1.example.com"
    # Every node learns the new endpoint.
    wait_for("endpoint on n2", lambda: n2.json("info")["endpoint"] == "api.cloud.example.com", 10)
    r = core.kato("node", "rename", "bad_name!")
    assert r.rc != 0 and "not a valid host name" in r.err


def test_migrate_core(cluster):
    core = cluster.core(1)
    n2 = cluster.node(2)
    cluster.attach(n2, core, "memcached")
    old_id = n2.json("info")["id"]
    old, new = core.ip, f"127.0.{cluster.subnet}.21"
    core.ok("node", "migrate", old, new)
    core.ip = new
    info = core.json("info")
    assert info["ip"] == new and info["core_ip"] == new
    core.wait_running(["primary"])
    # The other node runs it too, keeping its identity, roles and certificates.
    n2.ok("node", "migrate", old, new)
    info2 = n2.json("info")
    assert info2["core_ip"] == new and info2["id"] == old_id
    status = wait_for("both nodes up", lambda: (lambda s: all(
        n["state"] == "up" for n in s["nodes"]) and s)(core.json("status", "--all")), timeout=10)
    assert {n["ip"] for n in status["nodes"]} == {new, n2.ip}
    assert n2.processes()["memcached"]["state"] == "RUNNING"
    # The core's services now bind the new address.
    socket.create_connection((new, 9440), timeout=2).close()
