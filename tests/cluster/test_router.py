"""The router streams: a Node.js app (tests/cluster/apps/stream) behind a real
router on a real cluster (a core with primary, controller and router; two
DEAs). Large downloads and uploads with the router's memory sampled, live
responses (server-sent events, a slow chunked body), a WebSocket echo,
thousands of idle connections, instances dying mid-request, the access log,
/metrics checked by promtool, the open-files limit, and the certificate
served on 443."""
import hashlib
import http.client
import json
import os
import re
import resource
import socket
import ssl
import subprocess
import threading
import time
import uuid

import pytest

from conftest import Cluster, Traffic, limit, wait_for

APPS = os.path.join(os.path.dirname(__file__), "apps")
HOST = "stream.rt.test"
MiB = 1 << 20
# README: bounded buffers per connection. Under ASan (its shadow memory and
# quarantine) the bound is looser, but still far below the bodies' sizes.
SANITIZED = float(os.environ.get("KATO_TEST_TIME_FACTOR", "1")) > 1
RSS_LIMIT_MIB = 512 if SANITIZED else 64


@pytest.fixture(scope="module")
def rt(bins):
    """One cluster for the whole file: the app is pushed once."""
    c = Cluster(bins)
    # katod starts with the usual low soft open-files limit; it raises it itself.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
    try:
        core = c.core(1, "api.rt.test")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    deas = [c.node(i) for i in (2, 3)]
    for d in deas:
        c.attach(d, core, "dea")
    core.ok("app", "push", "stream", "--path", os.path.join(APPS, "stream"), "--instances", "2",
            "--memory", "256")
    wait_for("both instances RUNNING", lambda: len(running(core)) == 2, timeout=60)
    yield c, core
    c.close()


def running(core):
    return [i for i in core.json("app", "info", "stream")["instances"] if i["state"] == "RUNNING"]


def router_pid(core):
    return core.processes()["router"]["pid"]


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


class RssSampler:
    """Samples a process's resident memory every 50 ms while in use."""

    def __init__(self, pid):
        self.pid, self.peak, self.samples = pid, 0.0, 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mib(self.pid))
            self.samples += 1
            self._stop.wait(0.05)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def conn(core, timeout=30):
    return http.client.HTTPConnection(core.ip, 80, timeout=timeout)


def metrics(core):
    c = http.client.HTTPConnection(core.ip, 9444, timeout=5)
    c.request("GET", "/metrics")
    r = c.getresponse()
    assert r.status == 200
    assert r.getheader("Content-Type").startswith("text/plain; version=0.0.4")
    return r.read().decode()


def metric(text, name):
    m = re.search(r"^" + re.escape(name) + r" (\d+)$", text, re.MULTILINE)
    return int(m.group(1)) if m else 0


def test_a_1gib_download_streams_with_bounded_router_memory(rt):
    _, core = rt
    size = 1 << 30
    with RssSampler(router_pid(core)) as rss:
        c = conn(core)
        t0 = time.monotonic()
        c.request("GET", f"/download?size={size}", headers={"Host": HOST})
        r = c.getresponse()
        first = r.read(1)
        ttfb = time.monotonic() - t0
        got, buf = len(first), bytearray(MiB)
        while True:
            n = r.readinto(buf)
            if not n:
                break
            got += n
        seconds = time.monotonic() - t0
        c.close()
    print(f"1 GiB: first byte after {ttfb * 1000:.1f} ms, {size / MiB / seconds:.0f} MiB/s, "
          f"router RSS peak {rss.peak:.1f} MiB over {rss.samples} samples")
    assert r.status == 200 and r.getheader("Content-Length") == str(size)
    assert got == size
    assert ttfb < limit(1.0), ttfb  # the first byte does not wait for the last
    assert rss.samples > 5
    assert rss.peak < RSS_LIMIT_MIB, rss.peak


def test_server_sent_events_arrive_one_by_one(rt):
    _, core = rt
    c = conn(core)
    c.request("GET", "/sse?n=5&interval_ms=300", headers={"Host": HOST, "Accept": "text/event-stream"})
    r = c.getresponse()
    assert r.status == 200 and r.getheader("Content-Type") == "text/event-stream"
    arrivals = []
    while len(arrivals) < 5:
        line = r.readline()
        assert line, "the stream ended early"
        if line.startswith(b"data: "):
            arrivals.append((time.time() * 1000, json.loads(line[6:])))
    c.close()
    for i, (at, event) in enumerate(arrivals):
        assert event["i"] == i
        # Each event reaches the client when the app writes it, not at the end.
        assert at - event["t"] < limit(150), (i, at - event["t"])
    gaps = [arrivals[i + 1][0] - arrivals[i][0] for i in range(4)]
    print("SSE gaps (ms):", [round(g) for g in gaps])
    assert all(g > 150 for g in gaps), gaps


def test_a_slow_chunked_response_arrives_as_it_is_written(rt):
    _, core = rt
    c = conn(core)
    c.request("GET", "/slow-chunked?n=4&interval_ms=400", headers={"Host": HOST})
    r = c.getresponse()
    assert r.getheader("Transfer-Encoding") == "chunked"
    seen = []
    while len(seen) < 4:
        line = r.readline()
        assert line, "the response ended early"
        if line.startswith(b"piece "):
            seen.append((time.time() * 1000, int(line.split()[-1])))
    assert r.read() == b""  # ends cleanly after the last piece
    c.close()
    for at, written in seen:
        assert at - written < limit(150), at - written


def test_a_100mib_upload_streams_to_the_app(rt):
    _, core = rt
    size = 100 * MiB
    piece = os.urandom(MiB)
    digest = hashlib.sha256()
    done_at = {}

    def body():
        for i in range(100):
            digest.update(piece)
            yield piece
            if i == 49:
                time.sleep(0.5)  # a pause halfway: the app must already have the first half
        done_at["ms"] = time.time() * 1000

    with RssSampler(router_pid(core)) as rss:
        c = conn(core, timeout=60)
        c.request("POST", "/upload", body=body(),
                  headers={"Host": HOST, "Content-Length": str(size)})
        r = c.getresponse()
        answer = json.loads(r.read())
        c.close()
    print(f"100 MiB upload: app's first byte {done_at['ms'] - answer['first_byte_ms']:.0f} ms "
          f"before the client finished; router RSS peak {rss.peak:.1f} MiB")
    assert r.status == 200
    assert answer["bytes"] == size
    assert answer["sha256"] == digest.hexdigest()
    # The app saw the start long before the client sent the end (over the 0.5 s pause).
    assert done_at["ms"] - answer["first_byte_ms"] > 400
    assert rss.peak < RSS_LIMIT_MIB, rss.peak


def test_websocket_echo(rt):
    _, core = rt
    s = socket.create_connection((core.ip, 80), timeout=10)
    s.sendall(f"GET /ws HTTP/1.1\r\nHost: {HOST}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
              .encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(4096)
    assert head.startswith(b"HTTP/1.1 101 ")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
    rest = head.split(b"\r\n\r\n", 1)[1]
    payload = os.urandom(300000)
    s.sendall(payload)
    got = rest
    while len(got) < len(payload):
        data = s.recv(65536)
        assert data, "the tunnel closed early"
        got += data
    assert got == payload
    s.close()


def test_thousands_of_idle_connections_while_requests_keep_succeeding(rt):
    _, core = rt
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    idle = []
    try:
        with Traffic(lambda: get_status(core, "/")) as traffic:
            for _ in range(2000):
                idle.append(socket.create_connection((core.ip, 80), timeout=10))
            wait_for("2000 open connections in the router's metrics",
                     lambda: metric(metrics(core), "kato_router_open_connections") >= 2000,
                     timeout=20)
            traffic.wait_more(50)
            rss = rss_mib(router_pid(core))
        print(f"2000 idle connections: router RSS {rss:.1f} MiB, {traffic.total} requests meanwhile")
        assert traffic.failures == [], traffic.failures[:5]
        # The idle ones still work.
        for s in idle[:3]:
            s.sendall(f"GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
            assert s.recv(4096).startswith(b"HTTP/1.1 200 ")
    finally:
        for s in idle:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def get_status(core, path, method="GET"):
    c = conn(core, timeout=10)
    try:
        c.request(method, path, headers={"Host": HOST})
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


def test_instance_dying_mid_download_truncates_the_response(rt):
    _, core = rt
    size = 64 * MiB
    c = conn(core)
    c.request("GET", f"/die-mid?size={size}", headers={"Host": HOST})
    r = c.getresponse()
    assert r.status == 200 and r.getheader("Content-Length") == str(size)
    with pytest.raises(http.client.IncompleteRead) as e:
        r.read()
    assert len(e.value.partial) < size  # never a fake complete one
    c.close()
    wait_for("the instance to be running again", lambda: len(running(core)) == 2, timeout=30)


def test_get_whose_instance_dies_is_retried_and_post_is_never_sent_twice(rt):
    _, core = rt
    wait_for("both instances RUNNING", lambda: len(running(core)) == 2, timeout=30)
    before = metric(metrics(core), "kato_router_retries_total")
    # Instance 0 dies on this request; round-robin sends some to it: each is
    # retried on instance 1 and succeeds.
    statuses = [get_status(core, "/die-before?index=0&id=g") for _ in range(4)]
    assert statuses == [200] * 4
    assert metric(metrics(core), "kato_router_retries_total") > before

    wait_for("both instances RUNNING", lambda: len(running(core)) == 2, timeout=30)
    posts = {}
    for _ in range(8):
        pid = uuid.uuid4().hex
        posts[pid] = get_status(core, f"/die-before?index=0&id={pid}", method="POST")
        if posts[pid] == 502:
            break
        wait_for("both instances RUNNING", lambda: len(running(core)) == 2, timeout=30)
    failed = [p for p, s in posts.items() if s == 502]
    assert failed, posts  # one POST reached instance 0, which died: the client gets 502 ...
    logs = core.ok("app", "logs", "stream", "--lines", "500").out
    assert logs.count(f"POST /die-before?index=0&id={failed[0]}") <= 1  # ... and nobody else got it
    for line in logs.splitlines():
        if f"id={failed[0]}" in line:
            assert "instance 1" not in line, line


def test_access_log_and_metrics(rt):
    c, core = rt
    assert get_status(core, "/?marker=access-log-check") == 200
    log = os.path.join(core.data_dir, "router", "access.log")
    line = wait_for("the request's access log line", lambda: next(
        (l for l in open(log).read().splitlines() if "marker=access-log-check" in l), None),
        timeout=5)
    fields = line.split(" ")
    assert fields[1].startswith("127.")  # the client
    assert fields[2] == HOST
    assert fields[3:5] == ['"GET', '/?marker=access-log-check"']
    assert fields[5] == "200"
    assert re.fullmatch(r"127\.0\.\d+\.\d+:\d+", fields[8])  # the instance that answered
    text = metrics(core)
    assert re.search(r'^kato_router_requests_total\{app="stream",code="2xx"\} [1-9]\d*$', text,
                     re.MULTILINE)
    # promtool (Debian's prometheus package) accepts the exposition.
    p = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_router_has_the_raised_open_files_limit(rt):
    _, core = rt
    with open(f"/proc/{router_pid(core)}/limits") as f:
        line = next(l for l in f if l.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    assert soft == hard, line  # katod raised soft to hard; the supervisor passed it on
    state = json.load(open(os.path.join(core.data_dir, "router", "state.json")))
    assert state["max_connections"] == int(soft) // 4 * 3


def test_443_serves_the_cluster_web_certificate_for_the_domain(rt):
    _, core = rt
    ctx = ssl.create_default_context(cafile=os.path.join(core.data_dir, "pki", "ca.pem"))

    def served(name):
        with socket.create_connection((core.ip, 443), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname=name) as s:
                s.sendall(f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
                return s.getpeercert(), s.recv(4096)

    cert, reply = wait_for("the web certificate on 443", lambda: served(HOST), timeout=20)
    names = sorted(v for k, v in cert["subjectAltName"] if k == "DNS")
    assert names == sorted(["api.rt.test", "*.rt.test", "rt.test"])
    assert reply.startswith(b"HTTP/1.1 200 ")
    # The API endpoint verifies too (a client that checks the name).
    cert, _ = served("api.rt.test")
    assert ("DNS", "api.rt.test") in cert["subjectAltName"]


def test_custom_certificate_on_the_router(rt, tmp_path):
    _, core = rt
    key, cert = str(tmp_path / "c.key"), str(tmp_path / "c.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert, "-days", "30",
                    "-subj", "/CN=custom", "-addext", "subjectAltName=DNS:api.rt.test,DNS:*.rt.test"],
                   check=True, capture_output=True)
    # Checked before the router sees it: a key that is not the certificate's.
    other_key = str(tmp_path / "o.key")
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-out", other_key], check=True, capture_output=True)
    r = core.kato("op", "custom_ssl_cert", "install", other_key, cert)
    assert r.rc != 0 and "nothing changed" in r.err, r

    out = core.json("op", "custom_ssl_cert", "install", key, cert, "--wildcard")
    assert out["active"] is True and out["server"] == "the router", out
    custom = ssl.create_default_context(cafile=cert)

    def get(ctx, name):
        with socket.create_connection((core.ip, 443), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname=name) as s:
                s.sendall(f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
                return s.recv(4096)

    assert get(custom, HOST).startswith(b"HTTP/1.1 200 ")
    listed = {c["source"]: c for c in core.json("op", "custom_ssl_cert", "list")}
    assert listed["custom"]["active"] and not listed["cluster"]["active"]
    core.ok("op", "custom_ssl_cert", "remove")
    cluster_ca = ssl.create_default_context(cafile=os.path.join(core.data_dir, "pki", "ca.pem"))
    reply = wait_for("the cluster's certificate again", lambda: get(cluster_ca, HOST), timeout=10)
    assert reply.startswith(b"HTTP/1.1 200 ")
