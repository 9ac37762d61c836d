"""The guide's load-balancer layout on loopback addresses: a core (primary,
controller, router), two more routers, a load balancer (attached with -e router,
then `kato node setup load_balancer`) and two DEAs. HTTPS through the load
balancer's real nginx with the cluster's certificate; a router killed while a
client keeps sending requests (0 failures); the pool follows the routers'
health and the cluster; custom certificates; bad input."""
import ast
import base64
import hashlib
import http.client
import json
import os
import pty
import signal
import socket
import ssl
import subprocess
import threading

import pytest

from conftest import Traffic, limit, wait_for

APPS = os.path.join(os.path.dirname(__file__), "apps")
NGINX = "/usr/sbin/nginx"

pytestmark = pytest.mark.skipif(not os.access(NGINX, os.X_OK), reason="nginx is not installed")


def tls_context(ca_file):
    ctx = ssl.create_default_context(cafile=ca_file)
    return ctx


def https_get(ip, host, ctx, timeout=5, headers="", path="/"):
    """GET path over TLS to ip:443 with SNI and Host `host`; (status, body, peer cert DER)."""
    raw = socket.create_connection((ip, 443), timeout=timeout)
    s = ctx.wrap_socket(raw, server_hostname=host)
    try:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{headers}\r\n"
                  .encode())
        r = http.client.HTTPResponse(s)
        r.begin()
        return r.status, r.read(), s.getpeercert(binary_form=True)
    finally:
        s.close()


def http_get(ip, host, timeout=5):
    c = http.client.HTTPConnection(ip, 80, timeout=timeout)
    try:
        c.request("GET", "/", headers={"Host": host})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def lb_state(lb):
    return lb.json("status").get("load_balancer", {})


def pool(lb):
    return set(lb_state(lb).get("pool", []))


def conf_routers(lb):
    with open(os.path.join(lb.data_dir, "lb", "nginx.conf")) as f:
        return {line.split()[1].rsplit(":", 1)[0] for line in f
                if line.strip().startswith("server ") and ":80 " in line}


def served_by(lb, router_ip, host):
    """How many requests for `host` in the load balancer's access log went to router_ip."""
    with open(os.path.join(lb.data_dir, "lb", "logs", "access.log")) as f:
        return sum(1 for line in f if f" {host} " in line and f"upstream={router_ip}:80" in line)


def nginx_pids(lb):
    out = subprocess.run(["pgrep", "-f", os.path.join(lb.data_dir, "lb", "nginx.conf")],
                         capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def on_tty(node, args, answer):
    """`kato ARGS` with a terminal on stdin (so it asks), answering `answer`."""
    master, slave = pty.openpty()
    try:
        os.write(master, answer.encode())
        env = dict(os.environ, KATO_DATA_DIR=node.data_dir)
        return subprocess.run([node.cluster.bins["kato"], *args], stdin=slave,
                              capture_output=True, text=True, env=env, timeout=200)
    finally:
        os.close(master)
        os.close(slave)


def openssl_cert(tmp, name, subject_alt, key_args=("ec", "-pkeyopt", "ec_paramgen_curve:P-256")):
    key, cert = os.path.join(tmp, name + ".key"), os.path.join(tmp, name + ".pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", *key_args, "-nodes", "-keyout", key,
                    "-out", cert, "-days", "30", "-subj", "/CN=" + name,
                    "-addext", "subjectAltName=" + subject_alt],
                   check=True, capture_output=True)
    return key, cert


def test_load_balancer_layout(cluster, tmp_path):
    core = cluster.core(1, "api.lb.test")
    routers = [cluster.node(i) for i in (2, 3)]
    for r in routers:
        cluster.attach(r, core, "router")
    lb = cluster.node(4)
    cluster.attach(lb, core, "router")
    deas = [cluster.node(i) for i in (5, 6)]
    for d in deas:
        cluster.attach(d, core, "dea")

    # Bad input first: load_balancer on a node with another role, refused with nothing changed.
    r = deas[0].kato("node", "setup", "load_balancer", "--yes")
    assert r.rc != 0 and "this node has dea" in r.err and "nothing changed" in r.err, r
    assert set(deas[0].json("info")["roles"]["assigned"]) == {"base", "dea"}
    r = lb.kato("node", "setup", "load_balancer", "--yes", deas[0].ip)
    assert r.rc != 0 and "not a router" in r.err, r
    r = lb.kato("node", "setup", "load_balancer", "--yes", lb.ip)
    assert r.rc != 0 and "own address" in r.err, r
    r = lb.kato("node", "setup", "load_balancer", "--yes", "10.1.2")
    assert r.rc != 0 and "ROUTER_IP" in r.err, r
    r = core.kato("node", "setup", "load_balancer", "--yes")
    assert r.rc != 0 and "is the core" in r.err, r
    # Not interactive and no --yes: it cannot ask, so it changes nothing.
    r = lb.kato("node", "setup", "load_balancer")
    assert r.rc != 0 and "--yes" in r.err, r
    assert set(lb.json("info")["roles"]["assigned"]) == {"base", "router"}

    out = lb.json("node", "setup", "load_balancer", "--yes")
    everyone = {core.ip} | {r.ip for r in routers}
    assert set(out["pool"]) == everyone and out["follow_cluster"] is True
    assert set(lb.json("info")["roles"]["assigned"]) == {"base", "load_balancer"}
    lb.wait_running(["load_balancer"])
    assert lb_state(lb)["nginx_pid"] > 0
    wait_for("the router process gone", lambda: "router" not in lb.processes(), timeout=20)
    wait_for("the pool of every router but the load balancer's own",
             lambda: pool(lb) == everyone and conf_routers(lb) == everyone, timeout=15)
    assert nginx_pids(lb), "nginx runs under katod lb"
    # No role can be added to a load balancer.
    r = lb.kato("role", "add", "dea")
    assert r.rc != 0 and "load_balancer cannot be combined" in r.err, r

    core.ok("app", "push", "web", "--path", os.path.join(APPS, "web"), "--instances", "2",
            "--memory", "128")
    ctx = tls_context(os.path.join(core.data_dir, "pki", "ca.pem"))
    status, body, _ = https_get(lb.ip, "web.lb.test", ctx)
    assert status == 200 and json.loads(body)["port"]
    assert http_get(lb.ip, "web.lb.test")[0] == 200
    # The certificate names the API endpoint too; a foreign name fails verification.
    status, _, _ = https_get(lb.ip, "api.lb.test", ctx)
    assert status in (200, 401, 404)
    # The Management Console, through the load balancer with the cluster's certificate.
    status, body, _ = https_get(lb.ip, "api.lb.test", ctx, path="/console/")
    assert status == 200 and b'<label for="email">Email</label>' in body
    with pytest.raises(ssl.SSLCertVerificationError):
        https_get(lb.ip, "web.other.test", ctx)

    # A client keeps sending requests while one router's process is killed.
    failures, total = [], [0]
    stop = threading.Event()

    def client():
        while not stop.is_set():
            try:
                s, _, _ = https_get(lb.ip, "web.lb.test", ctx)
                if s != 200:
                    failures.append(s)
            except Exception as e:  # a failed request, whatever the cause
                failures.append(repr(e))
            total[0] += 1

    th = threading.Thread(target=client)
    th.start()
    try:
        wait_for("some traffic", lambda: total[0] > 20)
        victim = routers[0]
        pid = victim.processes()["router"]["pid"]
        os.kill(pid, signal.SIGKILL)
        wait_for("the dead router to leave nginx's pool",
                 lambda: victim.ip not in pool(lb) and victim.ip not in conf_routers(lb),
                 timeout=10)
        wait_for("the router to come back into the pool",
                 lambda: victim.ip in pool(lb) and victim.ip in conf_routers(lb), timeout=60)
        seen = total[0]
        wait_for("more traffic", lambda: total[0] > seen + 50, timeout=30)
    finally:
        stop.set()
        th.join()
    print(f"requests {total[0]}, failed {len(failures)}")
    assert failures == [], failures[:5]
    assert total[0] > 70

    # A router attached later joins the pool and gets traffic, with no new setup.
    late = cluster.node(7)
    cluster.attach(late, core, "router")
    wait_for("the new router in the pool", lambda: late.ip in pool(lb), timeout=20)
    assert late.ip in conf_routers(lb)

    def late_served():
        for _ in range(6):
            https_get(lb.ip, "web.lb.test", ctx)
        return served_by(lb, late.ip, "web.lb.test") > 0
    wait_for("traffic through the new router", late_served, timeout=15)
    # And a removed router leaves it.
    core.ok("node", "remove", late.ip)
    wait_for("the removed router to leave the pool", lambda: late.ip not in pool(lb), timeout=20)

    # The operator's certificate: a key that does not match is refused, nothing changed.
    key, cert = openssl_cert(str(tmp_path), "lbtest",
                             "DNS:api.lb.test,DNS:*.lb.test,DNS:lb.test")
    other_key, _ = openssl_cert(str(tmp_path), "other", "DNS:other.test")
    before = lb_state(lb)["cert"]["fingerprint"]
    r = lb.kato("op", "custom_ssl_cert", "install", other_key, cert)
    assert r.rc != 0 and "does not match" in r.err and "nothing changed" in r.err, r
    r = lb.kato("op", "custom_ssl_cert", "install", cert, cert)
    assert r.rc != 0 and "private key" in r.err, r
    assert lb_state(lb)["cert"]["fingerprint"] == before
    assert [c["source"] for c in lb.json("op", "custom_ssl_cert", "list")] == ["cluster"]
    _, wrong_cert = openssl_cert(str(tmp_path), "narrow", "DNS:api.lb.test")
    r = lb.kato("op", "custom_ssl_cert", "install", os.path.join(str(tmp_path), "narrow.key"),
                wrong_cert, "--wildcard")
    assert r.rc != 0 and "*.lb.test" in r.err, r

    # A certificate that passes kato's checks but that nginx refuses (a 512-bit RSA
    # key is below OpenSSL's security level): never loaded; the old one stays.
    weak_key, weak_cert = openssl_cert(str(tmp_path), "weak", "DNS:api.lb.test,DNS:*.lb.test",
                                       key_args=("rsa:512",))
    r = lb.kato("op", "custom_ssl_cert", "install", weak_key, weak_cert)
    assert r.rc != 0 and "nginx refused" in r.err and "nothing changed" in r.err, r
    assert len(r.err.strip().splitlines()) == 1, r
    assert lb_state(lb)["cert"]["fingerprint"] == before
    assert [c["source"] for c in lb.json("op", "custom_ssl_cert", "list")] == ["cluster"]
    assert https_get(lb.ip, "web.lb.test", ctx)[0] == 200

    out = lb.json("op", "custom_ssl_cert", "install", key, cert, "--wildcard")
    assert out["active"] is True, out
    custom_ctx = tls_context(cert)
    # (Old workers may finish a connection or two with the old certificate.)
    status, _, _ = wait_for("the custom certificate served",
                            lambda: https_get(lb.ip, "web.lb.test", custom_ctx), timeout=10)
    assert status == 200
    listed = {c["source"]: c for c in lb.json("op", "custom_ssl_cert", "list")}
    assert listed["custom"]["active"] and not listed["cluster"]["active"]
    assert listed["custom"]["wildcard"] is True
    lb.ok("op", "custom_ssl_cert", "remove")
    status, _, _ = wait_for("the cluster's certificate again",
                            lambda: https_get(lb.ip, "web.lb.test", ctx), timeout=10)
    assert status == 200
    r = lb.kato("op", "custom_ssl_cert", "remove")
    assert r.rc != 0 and "no custom certificate" in r.err
    # The core's router serves HTTPS too: its own certificates (tests/cluster/test_router.py).
    assert [c["source"] for c in core.json("op", "custom_ssl_cert", "list")] == ["cluster"]
    r = deas[0].kato("op", "custom_ssl_cert", "list")
    assert r.rc != 0 and "serves no HTTPS" in r.err, r

    # katod lb and the nginx master killed together: the restarted katod lb
    # clears what is left (orphaned workers hold the ports) and serves again.
    lb_pid = lb.processes()["load_balancer"]["pid"]
    master = lb_state(lb)["nginx_pid"]
    os.kill(master, signal.SIGKILL)
    os.kill(lb_pid, signal.SIGKILL)

    def restarted():
        p = lb.processes()["load_balancer"]
        st = lb_state(lb)
        return (p["state"] == "RUNNING" and p["pid"] != lb_pid and
                st.get("nginx_pid", 0) not in (0, master))
    wait_for("katod lb and nginx restarted", restarted, timeout=60)
    assert subprocess.run(["pgrep", "-g", str(master)], capture_output=True).stdout == b""
    status, _, _ = wait_for("HTTPS again", lambda: https_get(lb.ip, "web.lb.test", ctx),
                            timeout=10)
    assert status == 200

    # -h everywhere.
    for cmd in (["node", "setup", "load_balancer"], ["op", "custom_ssl_cert", "install"],
                ["op", "custom_ssl_cert", "list"]):
        r = lb.kato(*cmd, "-h")
        assert r.rc == 0 and "Usage" in r.out, cmd

    # Stopping the role stops nginx gracefully with it.
    lb.ok("stop", "load_balancer")
    wait_for("nginx gone", lambda: not nginx_pids(lb), timeout=20)


def test_load_balancer_with_chosen_routers(cluster, tmp_path):
    core = cluster.core(1, "api.pick.test")
    r2 = cluster.node(2)
    cluster.attach(r2, core, "router")
    lb = cluster.node(3)
    cluster.attach(lb, core)
    # Interactive: it asks first; "n" changes nothing, "y" goes ahead.
    r = on_tty(lb, ["node", "setup", "load_balancer", r2.ip], "n\n")
    assert r.returncode != 0 and "Proceed?" in r.stderr and "nothing changed" in r.stderr, r
    assert f"over: {r2.ip} (only these)" in r.stderr, r
    assert set(lb.json("info")["roles"]["assigned"]) == {"base"}
    r = on_tty(lb, ["node", "setup", "load_balancer", "--json", r2.ip], "y\n")
    assert r.returncode == 0, r
    out = json.loads(r.stdout)
    assert out["pool"] == [r2.ip] and out["follow_cluster"] is False
    lb.wait_running(["load_balancer"])
    wait_for("only the chosen router", lambda: pool(lb) == {r2.ip}, timeout=15)
    wait_for("the pool in `kato status`",
             lambda: f"load balancer pool: {r2.ip}  healthy: {r2.ip}  certificate: cluster"
             in lb.ok("status").out, timeout=10)
    assert lb.ok("op", "custom_ssl_cert", "list").out.startswith("* cluster ")
    assert lb.json("config", "get", "load_balancer",
                   "routers." + lb.json("info")["id"])["value"] == [r2.ip]
    # A router attached later stays out of a chosen pool until setup follows the
    # cluster again (--force: every router).
    r4 = cluster.node(4)
    cluster.attach(r4, core, "router")
    lb.ok("node", "setup", "load_balancer", "--yes", "--force")
    wait_for("every router", lambda: pool(lb) == {core.ip, r2.ip, r4.ip}, timeout=15)
    r = lb.kato("config", "get", "load_balancer", "routers." + lb.json("info")["id"])
    assert r.rc != 0 and "no config value" in r.err

    # A custom certificate that nginx refuses, put in place behind kato's back,
    # does not keep the load balancer down: it starts with the cluster's.
    weak_key, weak_cert = openssl_cert(str(tmp_path), "weak", "DNS:api.pick.test,DNS:*.pick.test",
                                       key_args=("rsa:512",))
    custom = os.path.join(lb.data_dir, "lb", "custom")
    os.makedirs(custom, exist_ok=True)
    with open(os.path.join(custom, "bundle.pem"), "w") as f:
        f.write(open(weak_cert).read() + open(weak_key).read())
    lb.ok("restart", "load_balancer")

    def started_without_it():
        st = lb_state(lb)
        return (st.get("nginx_pid", 0) > 0 and st["cert"]["source"] == "cluster" and
                "ee key too small" in (st.get("refused_cert") or {}).get("error", ""))
    wait_for("nginx with the cluster's certificate", started_without_it, timeout=30)


def test_websocket_and_forwarded_headers_through_the_load_balancer(cluster):
    core = cluster.core(1, "api.lb.test")
    dea = cluster.node(2)
    cluster.attach(dea, core, "dea")
    lb = cluster.node(3)
    cluster.attach(lb, core)
    lb.ok("node", "setup", "load_balancer", "--yes")
    ctx = tls_context(os.path.join(core.data_dir, "pki", "ca.pem"))
    core.ok("app", "push", "ws", "--path", os.path.join(APPS, "ws"), "--memory", "64")
    # The app sees the client's headers and who asked (X-Forwarded-For: the client first).
    status, body, _ = https_get(lb.ip, "ws.lb.test", ctx, headers="X-Kato-Test: 1\r\n")
    assert status == 200
    seen = dict(ast.literal_eval(body.decode()))
    assert seen["host"] == "ws.lb.test"
    assert seen.get("x-kato-test") == "1", seen
    assert [a.strip() for a in seen["x-forwarded-for"].split(",")] == ["127.0.0.1", lb.ip], seen
    assert seen.get("x-forwarded-proto") == "https", seen  # the load balancer's, kept by routers
    # WebSockets through nginx and a router, over TLS.
    raw = socket.create_connection((lb.ip, 443), timeout=5)
    s = ctx.wrap_socket(raw, server_hostname="ws.lb.test")
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall((f"GET /chat HTTP/1.1\r\nHost: ws.lb.test\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                   f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            assert chunk, head
            head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head
        want = base64.b64encode(hashlib.sha1(
            key.encode() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        assert b"Sec-WebSocket-Accept: " + want in head, head
        frame = b"\x81\x85\x01\x02\x03\x04" + bytes(b ^ m for b, m in zip(b"hello", b"\x01\x02\x03\x04\x01"))
        s.sendall(frame)
        echoed = head.split(b"\r\n\r\n", 1)[1]
        while len(echoed) < len(frame):
            echoed += s.recv(4096)
        assert echoed == frame
    finally:
        s.close()


def test_a_router_stopped_by_the_operator_drains_without_failures(cluster):
    """`kato stop router` behind the load balancer: /health fails first, the load
    balancer takes it out, requests in flight finish; nothing fails, on new or
    kept-alive connections to nginx alike."""
    core = cluster.core(1, "api.drain.test")
    r2 = cluster.node(2)
    cluster.attach(r2, core, "router")
    lb = cluster.node(3)
    cluster.attach(lb, core)
    lb.ok("node", "setup", "load_balancer", "--yes")
    dea = cluster.node(4)
    cluster.attach(dea, core, "dea")
    core.ok("app", "push", "web", "--path", os.path.join(APPS, "web"), "--instances", "2",
            "--memory", "64")
    wait_for("both routers in the pool", lambda: pool(lb) == {core.ip, r2.ip})
    with Traffic(lambda: http_get(lb.ip, "web.drain.test")[0], threads=2) as traffic:
        traffic.wait_more(50)
        stop = r2.ok("stop", "router")
        wait_for("the stopped router out of the pool", lambda: pool(lb) == {core.ip}, timeout=15)
        traffic.wait_more(50)
        r2.ok("start", "router")
        wait_for("the router back in the pool", lambda: pool(lb) == {core.ip, r2.ip}, timeout=15)
        traffic.wait_more(50)
    print(f"drain: requests {traffic.total}, failed {len(traffic.failures)}, "
          f"stop {stop.elapsed:.2f}s")
    assert traffic.failures == [], traffic.failures[:5]
    # README: "and then the router exits (at most 5 s)"; `kato stop` returns once it
    # has; margin 1 s for the command and a loaded CI machine.
    assert stop.elapsed < limit(6.0), stop.elapsed
    assert served_by(lb, r2.ip, "web.drain.test") > 0

    # nginx's access log past 64 MiB is rotated, and nginx writes a new one.
    access = os.path.join(lb.data_dir, "lb", "logs", "access.log")
    with open(access, "ab") as f:
        f.write(b"#" * (65 << 20) + b"\n")
    wait_for("the rotated log", lambda: os.path.exists(access + ".1"), timeout=30)
    assert http_get(lb.ip, "web.drain.test")[0] == 200
    wait_for("a new access log", lambda: served_by(lb, core.ip, "web.drain.test") +
             served_by(lb, r2.ip, "web.drain.test") > 0 and os.path.getsize(access) < 1 << 20)
