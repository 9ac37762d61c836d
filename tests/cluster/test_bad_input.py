"""Bad input of any kind: a clear error, no crash, nothing changed."""
import json
import os
import socket
import ssl



def unchanged(core):
    return json.dumps(core.json("node", "list"), sort_keys=True)


def test_bad_cli_input(cluster):
    core = cluster.core(1)
    n2 = cluster.node(2)
    cluster.attach(n2, core, "memcached")
    before = unchanged(core)
    cases = [
        (core, ["role", "add", "nosuchrole"], "unknown role"),
        (core, ["role", "add", "-n", "300.1.1.1", "redis"], "not an IPv4 address"),
        (n2, ["node", "attach", "--token", "x", "10.0.0.300"], "not an IPv4 address"),
        (core, ["node", "remove", "1.2.3"], "not an IPv4 address"),
        (n2, ["role", "add", "primary"], "primary"),
        (n2, ["role", "add", "load_balancer"], "load_balancer"),
        (n2, ["role", "add", "mdns"], "not yet available"),
        (core, ["role", "remove", "base"], "base"),
        (core, ["role", "remove", "primary"], "primary"),
        (core, ["node", "migrate", "1.2.3.4", "5.6.7.8"], "neither"),
        (core, ["config", "get", "nosuch", "key"], "no config value"),
    ]
    for node, args, words in cases:
        r = node.kato(*args)
        assert r.rc != 0, (args, r)
        assert words in r.err, (args, r)
        assert len(r.err.strip().splitlines()) == 1, (args, r)  # one line that says what to do
        assert r.out == "", (args, r)
    assert unchanged(core) == before
    # Usage errors exit 2 and -h works everywhere.
    assert core.kato("nosuchcommand").rc == 2
    for cmd in (["node", "attach"], ["role", "add"], ["status"], ["config", "set"], ["op", "static_ip"]):
        r = core.kato(*cmd, "-h")
        assert r.rc == 0 and "Usage" in r.out, cmd


def test_config_types(cluster):
    core = cluster.core(1)
    core.ok("config", "set", "controller", "max_instances", "20")
    assert core.json("config", "get", "controller", "max_instances")["value"] == 20
    r = core.kato("config", "set", "controller", "max_instances", "lots")
    assert r.rc != 0 and "number" in r.err
    assert core.ok("config", "get", "controller", "max_instances").out.strip() == "20"
    core.ok("config", "set", "controller", "name", "hello")
    assert core.ok("config", "get", "controller", "name").out.strip() == "hello"
    core.ok("config", "del", "controller", "name")
    assert core.kato("config", "get", "controller", "name").rc != 0


def test_garbage_on_agent_socket(cluster):
    core = cluster.core(1)
    sock_path = os.path.join(core.data_dir, "kato.sock")
    for payload in [b"garbage\n", b"{\"cmd\": 5}\n", b"\x00\xff" * 1000 + b"\n", b"[1,2]\n",
                    b'{"cmd": "status", "args": {"all": "yes"}}\n',
                    b'{"cmd": "node.token", "args": {"rotate": [1]}}\n']:
        s = socket.socket(socket.AF_UNIX)
        s.connect(sock_path)
        s.sendall(payload)
        reply = json.loads(s.makefile().readline())
        assert reply["ok"] is False and "bad request" in reply["error"]
        s.close()
    # A client that connects and says nothing does not block others.
    idle = socket.socket(socket.AF_UNIX)
    idle.connect(sock_path)
    assert core.ok("status").out
    idle.close()
    # The socket is for root (or the kato group) only.
    assert oct(os.stat(sock_path).st_mode & 0o777) == "0o660"
    assert core.json("status")["processes"][0]["state"] == "RUNNING"


def test_garbage_on_cluster_ports(cluster):
    core = cluster.core(1)
    for port in (9440, 9441):
        for payload in [b"GET / HTTP/1.1\r\n\r\n", os.urandom(4096), b"\x16\x03\x01\x00\x05hello"]:
            with socket.create_connection((core.ip, port), timeout=5) as s:
                s.sendall(payload)
                s.settimeout(5)
                try:
                    s.recv(1024)
                except (socket.timeout, ConnectionResetError):
                    pass
        # TLS without a client certificate: refused by the API, server still up.
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with socket.create_connection((core.ip, port), timeout=5) as raw:
            with ctx.wrap_socket(raw) as s:
                s.sendall(b"GET /v1/cluster HTTP/1.1\r\nHost: x\r\n\r\n")
                head = s.recv(4096)
                assert b" 401 " in head or b" 404 " in head, head
        with socket.create_connection((core.ip, port), timeout=5) as raw:
            with ctx.wrap_socket(raw) as s:
                s.sendall(b"POST /v1/join HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n{garbage}")
                head = s.recv(4096)
                assert b" 400 " in head or b" 401 " in head or b" 404 " in head, head
        if port == 9440:  # join is open to nodes without a certificate: values of the wrong type
            body = json.dumps({"secret": "x", "node_id": "n", "ip": "1.2.3.4", "version": "0.1.0",
                               "csr": "x", "force": "yes", "roles": "redis"}).encode()
            with socket.create_connection((core.ip, port), timeout=5) as raw:
                with ctx.wrap_socket(raw) as s:
                    s.sendall(b"POST /v1/join HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                              % (len(body), body))
                    head = s.recv(4096)
                    assert b" 400 " in head or b" 403 " in head, head
    # Still serving.
    assert core.json("status", "--all")["nodes"][0]["state"] == "up"


def test_static_ip(cluster, tmp_path):
    core = cluster.core(1)
    args = ["op", "static_ip", "--interface", "eth0", "--ip", "10.0.0.5", "--netmask",
            "255.255.255.0", "--gateway", "10.0.0.1", "--dns", "10.0.0.2"]
    env = {"KATO_SYSROOT": str(tmp_path)}
    r = core.ok(*args, "--dry-run", env=env)
    assert "address 10.0.0.5" in r.out
    assert not (tmp_path / "etc").exists()
    core.ok(*args, env=env)
    text = (tmp_path / "etc/network/interfaces.d/kato-eth0").read_text()
    assert "iface eth0 inet static" in text and "gateway 10.0.0.1" in text
    r = core.kato("op", "static_ip", "--ip", "10.0.0.5", "--netmask", "255.0.255.0",
                  "--gateway", "10.0.0.1", "--dns", "1.1.1.1", env=env)
    assert r.rc == 2 and "netmask" in r.err
    r = core.kato("op", "static_ip", "--ip", "10.0.0.5", env=env)
    assert r.rc == 2 and "missing --netmask" in r.err
