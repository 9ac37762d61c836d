"""Cluster test harness: real katod processes on their own 127.0.0.N addresses.

Each node gets its own data dir and address; `kato` runs against it through
KATO_DATA_DIR, exactly as an operator would. Waiting is always for a condition
with a deadline (wait_for), never a bare sleep.

Under the sanitizer build (ASan + UBSan, found from --build-dir's CMake cache)
every kato process writes its ASan reports into one directory per run (UBSan's
go to its stderr, so the nodes' logs and kato's stderr are searched too), and a
test after which a report is found fails with it (Cluster.close). Time
limits that a test asserts go through limit(), which allows the slower
sanitized build a fixed factor.
"""
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest


def pytest_addoption(parser):
    parser.addoption("--build-dir", default=os.path.join(os.path.dirname(__file__), "../../build"))


# How much longer a timed step may take in the sanitized build than the README's
# figure plus its margin: ASan + UBSan at -O1 run kato's code about 2x slower, but
# the timed steps are mostly fixed intervals (heartbeats, leases, grace periods).
SANITIZED_TIME_FACTOR = 1.5


def is_sanitized_build(build_dir):
    try:
        with open(os.path.join(build_dir, "CMakeCache.txt")) as f:
            return "CMAKE_BUILD_TYPE:STRING=Sanitize\n" in f.read()
    except FileNotFoundError:
        return False


def sanitizer_options(log_dir):
    """The sanitizers' settings for every kato process of the run. katod passes
    them on to its own role processes (src/roles/roles.cc); app instances and
    the data-service servers are not kato code and never see them.

    Leak checking stays on, as in the unit tests: katod and its role processes
    leave on SIGTERM through their normal exit, and the sanitizer pass's cluster
    tests reported no leak there. Processes killed with SIGKILL report nothing."""
    log = f"log_path={log_dir}/san"
    return {
        "ASAN_OPTIONS": f"{log}:abort_on_error=0:halt_on_error=1:detect_leaks=1",
        "UBSAN_OPTIONS": f"{log}:print_stacktrace=1:halt_on_error=1",
    }


def pytest_configure(config):
    build = os.path.abspath(config.getoption("--build-dir"))
    sanitized = is_sanitized_build(build)
    # Read by limit() below; set here so that it is the same for every test module.
    os.environ["KATO_TEST_TIME_FACTOR"] = str(SANITIZED_TIME_FACTOR if sanitized else 1.0)
    # One report directory per run, outside every node's data dir; only katod and
    # its role processes (root) write there, so it is not world-writable.
    log_dir = tempfile.mkdtemp(prefix="kato-sanitizer-")
    os.chmod(log_dir, 0o755)
    os.environ.update(sanitizer_options(log_dir))
    os.environ["KATO_TEST_SANITIZER_DIR"] = log_dir


def limit(seconds):
    """A time limit from the README's figure plus its margin, stretched for the
    sanitized build (SANITIZED_TIME_FACTOR)."""
    return seconds * float(os.environ.get("KATO_TEST_TIME_FACTOR", "1"))


# A sanitizer report in a process's output. GCC's UBSan runtime ignores
# log_path when ASan is linked too, so its reports ("FILE:LINE:COL: runtime
# error: ...") land on stderr: in katod.log, DATA_DIR/logs/NAME.log, or what
# `kato` printed.
SANITIZER_REPORT = re.compile(r"^\S+:\d+:\d+: runtime error: |==\d+==ERROR: \w+Sanitizer",
                              re.MULTILINE)


def sanitizer_reports_in_logs(data_dirs):
    """The logs of these nodes (katod's and its processes') that hold a sanitizer report."""
    found = []
    for d in data_dirs:
        logs = [os.path.join(d, "katod.log")]
        if os.path.isdir(os.path.join(d, "logs")):
            logs += [os.path.join(d, "logs", n) for n in sorted(os.listdir(os.path.join(d, "logs")))]
        for path in logs:
            if not os.path.isfile(path):
                continue
            with open(path, errors="replace") as f:
                text = f.read()
            m = SANITIZER_REPORT.search(text)
            if m:
                found.append(f"--- {path}\n{text[max(0, m.start() - 2000):m.start() + 6000]}")
    return found


def check_sanitizer_reports(data_dirs=()):
    """Fails with the content of every sanitizer report written since the last
    check (each report file is then renamed *.seen, so it fails exactly one
    test), and of the logs under `data_dirs` that hold one."""
    reports = sanitizer_reports_in_logs(data_dirs)
    log_dir = os.environ.get("KATO_TEST_SANITIZER_DIR")
    names = sorted(os.listdir(log_dir)) if log_dir and os.path.isdir(log_dir) else []
    for name in names:
        path = os.path.join(log_dir, name)
        if name.endswith(".seen"):
            continue
        with open(path, errors="replace") as f:
            text = f.read()
        os.rename(path, path + ".seen")
        if text.strip():
            reports.append(f"--- {path}\n{text}")
    assert not reports, "sanitizer reports from kato processes:\n" + "\n".join(reports)


@pytest.fixture(scope="session", autouse=True)
def sanitizer_reports():
    """Reports from processes that outlived their test's cluster fail the run."""
    yield
    try:
        check_sanitizer_reports()
    finally:
        shutil.rmtree(os.environ["KATO_TEST_SANITIZER_DIR"], ignore_errors=True)


@pytest.fixture(scope="session")
def bins(request):
    build = os.path.abspath(request.config.getoption("--build-dir"))
    b = {
        "kato": os.path.join(build, "bin", "kato"),
        "katod": os.path.join(build, "bin", "katod"),
        "katod_test": os.path.join(build, "test-bin", "katod-test"),
    }
    for path in b.values():
        assert os.access(path, os.X_OK), f"{path} is missing: build first"
    return b


def wait_for(what, predicate, timeout=30.0, interval=0.05):
    """Polls predicate until it returns a truthy value; fails naming `what` after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as e:  # a transient failure while the condition is not yet true
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def get(ip, host, path="/", timeout=3):
    """GET path from ip:80 with Host `host` on a new connection: (status, body)."""
    c = http.client.HTTPConnection(ip, 80, timeout=timeout)
    try:
        c.request("GET", path, headers={"Host": host})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


class Traffic:
    """Client threads sending requests back to back while a test breaks things.

    `request()` returns an HTTP status; anything else than 200, and any
    exception, is a failure. Use as a context manager: the threads stop on exit.
    """

    def __init__(self, request, threads=1):
        self.request = request
        self.total = 0
        self.failures = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self):
        while not self._stop.is_set():
            try:
                status = self.request()
                if status != 200:
                    self.failures.append(status)
            except Exception as e:  # a failed request, whatever the cause
                self.failures.append(repr(e))
            self.total += 1

    def wait_more(self, n, timeout=60):
        """Waits until n more requests have been sent."""
        target = self.total + n
        wait_for(f"{n} more requests", lambda: self.total >= target, timeout=timeout)

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join()


class Result:
    def __init__(self, proc, elapsed):
        self.rc = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr
        self.elapsed = elapsed

    def json(self):
        return json.loads(self.out)

    def __repr__(self):
        return f"<rc={self.rc} out={self.out[:2000]!r} err={self.err[:2000]!r}>"


class Node:
    def __init__(self, cluster, index, binary):
        self.cluster = cluster
        self.ip = f"127.0.{cluster.subnet}.{index}"
        self.data_dir = os.path.join(cluster.root, f"node{index}")
        os.makedirs(self.data_dir, exist_ok=True)
        os.chmod(self.data_dir, 0o755)  # services running as their own users traverse it
        self.binary = binary
        self.env_extra = {}
        self.proc = None
        self.log_path = os.path.join(self.data_dir, "katod.log")

    def start(self):
        env = dict(os.environ, **self.env_extra)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [self.binary, "--data-dir", self.data_dir, "--ip", self.ip],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        wait_for(f"katod at {self.ip} to listen on its socket",
                 lambda: self.kato("status").rc == 0, timeout=15)
        return self

    def env(self):
        """The environment of a `kato` run on this node."""
        e = dict(os.environ, KATO_DATA_DIR=self.data_dir)
        e.pop("KATO_TOKEN", None)
        e.pop("KATO_API_TOKEN", None)
        # Root on the node, not signed in (`kato login`): the cluster admin through the agent.
        e["KATO_LOGIN_FILE"] = os.path.join(self.data_dir, "no-login.json")
        return e

    def cmd(self, *args):
        return [self.cluster.bins["kato"], *args]

    def kato(self, *args, input=None, timeout=300, env=None):
        e = self.env()
        if env:
            e.update(env)
        t0 = time.monotonic()
        p = subprocess.run(self.cmd(*args), capture_output=True, text=True,
                           env=e, input=input, timeout=timeout)
        # A sanitized `kato` that aborts exits non-zero, which must not pass for an expected error.
        assert not SANITIZER_REPORT.search(p.stderr), f"kato {' '.join(args)}:\n{p.stderr}"
        return Result(p, time.monotonic() - t0)

    def ok(self, *args, **kw):
        r = self.kato(*args, **kw)
        assert r.rc == 0, f"kato {' '.join(args)} failed on {self.ip}: {r}"
        return r

    def json(self, *args):
        return self.ok(*args, "--json").json()

    def processes(self):
        return {p["name"]: p for p in self.json("process", "list")}

    def wait_running(self, names, timeout=120):
        def check():
            procs = self.processes()
            return all(procs.get(n, {}).get("state") == "RUNNING" for n in names) and procs
        return wait_for(f"{names} RUNNING on {self.ip}", check, timeout=timeout)

    def stop(self, sig=signal.SIGTERM, timeout=90):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill9(self):
        """kill -9 of the agent alone: its role processes stay behind."""
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    def kill_all(self):
        """kill -9 of the agent and everything under it: the node dies."""
        self.kill9()
        subprocess.run(["pkill", "-9", "-f", self.data_dir], check=False)


def unmount_node_leftovers(data_dir):
    """Lazily unmounts what a node left mounted under its /run directories: a
    filesystem node's images (they stay mounted while its katod is down, as a
    database's files stay on disk), a killed DEA's instance disks and sshfs."""
    try:
        with open(os.path.join(data_dir, "node.json")) as f:
            node_id = json.load(f)["id"]
    except (OSError, ValueError, KeyError):
        return
    tag = "".join(c for c in node_id.lower() if c in "0123456789abcdef")[:8].ljust(8, "0")
    roots = [f"/run/kato-fs-{node_id}/", f"/run/kato/dea-{tag}/"]
    with open("/proc/self/mountinfo") as f:
        targets = [line.split()[4].replace("\\040", " ") for line in f]
    for t in sorted((t for t in targets if any(t.startswith(r) for r in roots)), key=len, reverse=True):
        subprocess.run(["umount", "-l", t], capture_output=True, check=False)
    shutil.rmtree(roots[0], ignore_errors=True)
    # And the filesystem services' accounts (the node deletes them with their services).
    images = os.path.join(data_dir, "services", "filesystem", "images")
    for name in os.listdir(images) if os.path.isdir(images) else []:
        subprocess.run(["userdel", "u" + name.split(".")[0]], capture_output=True, check=False)


def _subnet_range():
    # KATO_TEST_SUBNETS=LO-HI keeps concurrent test runs on one machine apart.
    lo, _, hi = os.environ.get("KATO_TEST_SUBNETS", "10-249").partition("-")
    return iter(range(int(lo), int(hi) + 1))


class Cluster:
    _subnets = _subnet_range()

    def __init__(self, bins, subnet=None, keep=False):
        """subnet: the N of 127.0.N.x (default: the next of KATO_TEST_SUBNETS);
        keep: leave the data dirs (and their logs) behind on close()."""
        self.bins = bins
        self.subnet = subnet if subnet is not None else next(Cluster._subnets)
        self.keep = keep
        self.root = tempfile.mkdtemp(prefix=f"kato-cluster-{self.subnet}-")
        os.chmod(self.root, 0o755)
        self.nodes = []

    def node(self, index, test_version=None):
        binary = self.bins["katod_test"] if test_version else self.bins["katod"]
        n = Node(self, index, binary)
        if test_version:
            n.env_extra["KATO_TEST_VERSION"] = test_version
        self.nodes.append(n)
        return n.start()

    def core(self, index=1, host="api.kato.test"):
        n = self.node(index)
        n.ok("node", "setup", "core", host)
        return n

    def token(self, core):
        return core.ok("node", "token").out.strip()

    def attach(self, node, core, *roles, extra=()):
        args = ["node", "attach", "--token", self.token(core)]
        if roles:
            args += ["-e", ",".join(roles)]
        return node.ok(*args, *extra, core.ip)

    def close(self):
        for n in reversed(self.nodes):  # the core last: the others never wait for it
            n.stop()
        # Safety net: anything still running from these data dirs (after a kill -9 of an agent).
        subprocess.run(["pkill", "-9", "-f", self.root], check=False)
        # RabbitMQ leaves Erlang's port mapper running as a daemon of its own.
        subprocess.run(["epmd", "-kill"], capture_output=True, check=False)
        # Mounts a killed node left (filesystem images, instance disks, sshfs).
        for n in self.nodes:
            unmount_node_leftovers(n.data_dir)
        try:
            check_sanitizer_reports([n.data_dir for n in self.nodes])
        finally:
            if self.keep:
                print(f"kept the data dirs under {self.root}", file=sys.stderr)
            else:
                shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def cluster(bins):
    # KATO_TEST_KEEP=1 leaves the data dirs (and their logs) for a look after a failure.
    c = Cluster(bins, keep=bool(os.environ.get("KATO_TEST_KEEP")))
    yield c
    c.close()
