"""Faults: a role process killed, an agent killed, tokens that must be refused,
an incompatible version, and restarts that must not leave duplicates."""
import os
import signal
import subprocess
import time

from conftest import wait_for


def test_killed_role_process_is_restarted(cluster):
    core = cluster.core(1)
    n2 = cluster.node(2)
    cluster.attach(n2, core, "redis")
    pid = n2.processes()["redis"]["pid"]
    os.kill(pid, signal.SIGKILL)
    procs = wait_for("redis restarted with a new pid", lambda: (lambda p: p["redis"]["state"] ==
                     "RUNNING" and p["redis"]["pid"] != pid and p)(n2.processes()), timeout=20)
    assert procs["redis"]["pid"] != pid


def test_killed_agent_shows_down_and_can_be_removed(cluster):
    core = cluster.core(1)
    n2 = cluster.node(2)
    n3 = cluster.node(3)
    cluster.attach(n2, core, "memcached")
    cluster.attach(n3, core)
    n2.kill9()
    t0 = time.monotonic()
    def down():
        s = core.json("status", "--all")
        return {n["ip"]: n["state"] for n in s["nodes"]}.get(n2.ip) == "down" and s
    s = wait_for("n2 shown down", down, timeout=10)
    assert time.monotonic() - t0 < 10
    states = {n["ip"]: n for n in s["nodes"]}
    assert states[n2.ip]["processes"] == []  # never its last good state
    assert states[n3.ip]["state"] == "up"
    # Every command stays bounded with a dead node.
    r = core.kato("status", "--all")
    assert r.rc == 0 and r.elapsed < 5
    r = core.kato("role", "add", "-n", n2.ip, "redis")
    assert r.rc != 0 and "does not answer" in r.err and r.elapsed < 5
    r = core.kato("node", "list")
    assert r.rc == 0 and r.elapsed < 5
    r = core.ok("node", "remove", n2.ip)
    assert r.elapsed < 10  # README: "bounded (< 10 s) even when it is dead": no margin
    assert n2.ip not in [n["ip"] for n in core.json("node", "list")]
    # When it comes back it learns it was removed and stops its roles.
    n2.start()
    wait_for("n2 to leave", lambda: not n2.json("info")["attached"], timeout=15)
    wait_for("n2's processes to stop", lambda: n2.processes() == {}, timeout=30)
    assert n2.ip not in [n["ip"] for n in core.json("node", "list")]


def test_agent_restart_leaves_no_duplicates(cluster):
    core = cluster.core(1)
    n2 = cluster.node(2)
    cluster.attach(n2, core, "redis")
    old = n2.processes()["redis"]["pid"]
    n2.kill9()  # redis keeps running, orphaned
    assert os.path.exists(f"/proc/{old}")
    n2.start()
    procs = n2.wait_running(["redis"], timeout=30)
    assert procs["redis"]["pid"] != old
    wait_for("the orphan to be gone", lambda: not os.path.exists(f"/proc/{old}") or
             open(f"/proc/{old}/stat").read().split(")")[1].split()[0] == "Z", timeout=15)
    # Exactly one redis-server for this node's address.
    out = subprocess.run(["pgrep", "-f", f"redis-server.*{n2.ip}"], capture_output=True, text=True)
    assert len(out.stdout.split()) == 1, out.stdout
    # SIGTERM stops katod and its processes.
    pid = n2.processes()["redis"]["pid"]
    n2.stop()
    wait_for("redis stopped with katod", lambda: not os.path.exists(f"/proc/{pid}"), timeout=30)


def test_tokens_refused(cluster):
    core = cluster.core(1)
    n2 = cluster.node(2)
    good = cluster.token(core)
    prefix, ca_hash, secret = good.split(".")

    # Malformed.
    r = n2.kato("node", "attach", "--token", "hello", core.ip)
    assert r.rc != 0 and "not a kato join token" in r.err
    # Right CA, wrong secret.
    bad = f"KATO1.{ca_hash}.{'0' * 64}"
    r = n2.kato("node", "attach", "--token", bad, core.ip)
    assert r.rc != 0 and "not valid" in r.err
    # Another cluster's CA: refused before any secret is sent.
    other = f"KATO1.{'a' * 64}.{secret}"
    r = n2.kato("node", "attach", "--token", other, core.ip)
    assert r.rc != 0 and "fingerprint" in r.err.lower()
    # Rotated.
    new = core.ok("node", "token", "--rotate").out.strip()
    assert new != good
    r = n2.kato("node", "attach", "--token", good, core.ip)
    assert r.rc != 0 and "rotated" in r.err
    # Expired.
    short = core.json("node", "token", "--rotate", "--ttl", "1s")
    assert short["expires_ms"] > 0
    wait_for("the token's expiry time", lambda: time.time() * 1000 > short["expires_ms"] + 50)
    r = n2.kato("node", "attach", "--token", short["token"], core.ip)
    assert r.rc != 0 and "expired" in r.err
    # Nothing changed: still one node.
    assert [n["ip"] for n in core.json("node", "list")] == [core.ip]
    assert not n2.json("info")["attached"]
    # From the environment.
    ok = core.ok("node", "token", "--rotate").out.strip()
    n2.ok("node", "attach", core.ip, env={"KATO_TOKEN": ok})
    assert n2.json("info")["attached"]
    # No token and no terminal: a clear error.
    n3 = cluster.node(3)
    r = n3.kato("node", "attach", core.ip)
    assert r.rc != 0 and "KATO_TOKEN" in r.err


def test_incompatible_version_refused(cluster):
    core = cluster.core(1)
    n2 = cluster.node(2, test_version="9.9.0")
    r = n2.kato("node", "attach", "--token", cluster.token(core), core.ip)
    assert r.rc != 0
    assert "9.9.0" in r.err and core.json("info")["version"] in r.err
    assert [n["ip"] for n in core.json("node", "list")] == [core.ip]
    # --force overrides.
    n2.ok("node", "attach", "--force", "--token", cluster.token(core), core.ip)
    assert n2.ip in [n["ip"] for n in core.json("node", "list")]


def test_node_keeps_running_while_core_is_away(cluster):
    """DESIGN.md: unlike the original (FATAL after 90 s), a node keeps what it
    runs while the core is unreachable, and reconciles when it returns."""
    core = cluster.core(1)
    n2 = cluster.node(2)
    cluster.attach(n2, core, "memcached")
    pid = n2.processes()["memcached"]["pid"]
    core.stop()  # the primary goes down with the core's agent
    wait_for("n2 to notice", lambda: "core unreachable" in open(n2.log_path).read(), timeout=10)
    assert n2.processes()["memcached"] == {**n2.processes()["memcached"], "state": "RUNNING",
                                           "pid": pid}
    # Commands that need the core say so, quickly; local ones still work.
    r = n2.kato("role", "add", "redis")
    assert r.rc != 0 and "cannot reach the core" in r.err and r.elapsed < 10
    assert n2.json("info")["roles"]["assigned"] == ["memcached", "base"]
    core.start()
    status = wait_for("both nodes up again", lambda: (lambda s: all(
        n["state"] == "up" for n in s["nodes"]) and s)(core.json("status", "--all")), timeout=15)
    assert len(status["nodes"]) == 2
    n2.ok("role", "add", "redis")
    assert n2.processes()["memcached"]["pid"] == pid  # never restarted
