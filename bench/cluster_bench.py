#!/usr/bin/env python3
"""Cluster-membership benchmarks for kato, on real katod processes.

Every node is a katod bound to its own loopback address (127.0.SUBNET.N) with its
own data dir, driven by the `kato` CLI through KATO_DATA_DIR exactly as an
operator would (the harness of tests/cluster/conftest.py). Measures:

  1. `kato status --all` (text and --json) on a cluster of --nodes nodes, run on
     the core, as subprocess wall time; `kato status` and `kato node list` for
     comparison, and status --all at smaller sizes to show how it scales.
  2. Attach time (`kato node attach -e memcached|redis`, which returns once every
     process of the node is RUNNING) on fresh nodes, against the same server
     binary started directly with equivalent arguments (time to accept TCP).
  3. katod's resident memory (VmRSS) idle, on the core of the cluster, and
     after --leak-calls `kato status` calls (and status --all calls).

Standard library only. Usage:
  python3 bench/cluster_bench.py --build-dir build [--nodes 20] [--runs 30]
Prints a table and writes bench/results.json (or --out).
"""
import argparse
import json
import os
import platform
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
AGENT_PORT = 9441  # src/roles/roles.h kAgentPort
STATUS_GOAL_MS = 200.0


# ---- small helpers ---------------------------------------------------------

def wait_for(what, predicate, timeout=30.0, interval=0.02):
    """Polls predicate until truthy; raises naming `what` after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as e:  # transient while the condition is not yet true
            last = e
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def stats(samples_s):
    """Summary in milliseconds: median, p90 (nearest rank), min, max, n."""
    ms = sorted(s * 1000.0 for s in samples_s)
    if not ms:
        return {}
    p90 = ms[min(len(ms) - 1, max(0, -(-len(ms) * 9 // 10) - 1))]
    return {"n": len(ms), "median_ms": round(statistics.median(ms), 1), "p90_ms": round(p90, 1),
            "min_ms": round(ms[0], 1), "max_ms": round(ms[-1], 1)}


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    raise RuntimeError(f"no VmRSS for pid {pid}")


def thread_count(pid):
    return len(os.listdir(f"/proc/{pid}/task"))


def port_open(ip, port):
    try:
        with socket.create_connection((ip, port), timeout=0.2):
            return True
    except OSError:
        return False


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---- the cluster harness ---------------------------------------------------

class Node:
    def __init__(self, cluster, index):
        self.cluster = cluster
        self.ip = f"127.0.{cluster.subnet}.{index}"
        self.data_dir = os.path.join(cluster.root, f"node{index}")
        os.makedirs(self.data_dir, exist_ok=True)
        os.chmod(self.data_dir, 0o755)  # service users traverse it
        self.proc = None
        self.log = None

    def start(self):
        self.log = open(os.path.join(self.data_dir, "katod.log"), "ab")
        self.proc = subprocess.Popen(
            [self.cluster.bins["katod"], "--data-dir", self.data_dir, "--ip", self.ip],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(f"katod at {self.ip} to answer", lambda: self.run("status")[0] == 0, 15)
        return self

    def env(self):
        e = dict(os.environ, KATO_DATA_DIR=self.data_dir)
        e.pop("KATO_TOKEN", None)
        return e

    def run(self, *args, timeout=300):
        """Runs kato; returns (rc, stdout, stderr, wall seconds)."""
        t0 = time.perf_counter()
        p = subprocess.run([self.cluster.bins["kato"], *args], capture_output=True, text=True,
                           env=self.env(), timeout=timeout)
        return p.returncode, p.stdout, p.stderr, time.perf_counter() - t0

    def ok(self, *args, timeout=300):
        rc, out, err, dt = self.run(*args, timeout=timeout)
        if rc != 0:
            raise RuntimeError(f"kato {' '.join(args)} failed on {self.ip}: {err or out}")
        return out, err, dt

    def json(self, *args):
        return json.loads(self.ok(*args, "--json")[0])

    def timed_attach(self, token, core_ip, role):
        """Runs `kato node attach`; returns wall time and the time each progress line arrived."""
        t0 = time.perf_counter()
        p = subprocess.Popen([self.cluster.bins["kato"], "node", "attach", "--token", token,
                              "-e", role, core_ip], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=self.env())
        marks = []
        for line in p.stderr:  # progress lines are streamed, unbuffered
            marks.append((time.perf_counter() - t0, line.strip()))
        out = p.stdout.read()
        rc = p.wait(timeout=300)
        total = time.perf_counter() - t0
        if rc != 0:
            raise RuntimeError(f"attach of {self.ip} failed: {marks} {out}")
        return total, marks

    def stop(self, timeout=90):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self.log:
            self.log.close()
            self.log = None


class Cluster:
    def __init__(self, bins, subnet):
        self.bins = bins
        self.subnet = subnet
        self.root = tempfile.mkdtemp(prefix=f"kato-bench-{subnet}-")
        os.chmod(self.root, 0o755)
        self.nodes = []
        self.closed = False

    def node(self, index):
        n = Node(self, index)
        self.nodes.append(n)
        return n.start()

    def core(self, index=1):
        n = self.node(index)
        n.ok("node", "setup", "core", "api.kato.bench")
        return n

    def token(self, core):
        return core.ok("node", "token")[0].strip()

    def attach(self, node, core, roles=()):
        args = ["node", "attach", "--token", self.token(core)]
        if roles:
            args += ["-e", ",".join(roles)]
        return node.ok(*args, core.ip)

    def close(self):
        if self.closed:
            return
        self.closed = True
        for n in self.nodes:
            n.stop()
        # Safety net: processes left from this cluster's data dirs, found and ended by pid.
        for pid in leftover_pids(self.root):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)


def stop_sim(sim, sim_log):
    """Stops a kato-sim process (SIGTERM: its nodes leave) and logs its summary line."""
    sim.send_signal(signal.SIGTERM)
    try:
        rest = sim.communicate(timeout=600)[0]
        log(f"  kato-sim: {' '.join(rest.split())[:300]}")
    except subprocess.TimeoutExpired:
        sim.kill()
        sim.wait()
    sim_log.close()


def leftover_pids(root):
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                if root.encode() in f.read():
                    pids.append(int(d))
        except OSError:
            pass
    return pids


# ---- benchmark 1 + 3: status on an N-node cluster, memory ------------------

def bench_status(bins, args, results):
    c = Cluster(bins, args.subnet)
    results_status = {}
    memory = {}
    try:
        core = c.core(1)
        memory["core_alone_mib"] = rss_mib(core.proc.pid)
        scaling = {}

        def scale_point(size):
            for _ in range(2):
                core.ok("status", "--all")  # warm-up
            samples = [core.ok("status", "--all")[2] for _ in range(10)]
            scaling[str(size)] = stats(samples)
            log(f"  status --all with {size} nodes: median {scaling[str(size)]['median_ms']} ms")

        scale_point(1)
        memcached_on = set(range(2, 2 + args.memcached_nodes))
        for i in range(2, args.nodes + 1):
            n = c.node(i)
            if i == args.nodes:
                # A fresh agent, not in a cluster, after settling: the idle figure.
                time.sleep(1.0)
                memory["idle_unattached_node_mib"] = rss_mib(n.proc.pid)
            c.attach(n, core, ["memcached"] if i in memcached_on else ())
            log(f"  attached {n.ip}{' with memcached' if i in memcached_on else ''}")
            if i in (5, 10) and i < args.nodes:
                scale_point(i)
        nodes_json = core.json("status", "--all")["nodes"]
        down = [n["ip"] for n in nodes_json if n["state"] != "up"]
        if len(nodes_json) != args.nodes or down:
            raise RuntimeError(f"cluster not fully up: {len(nodes_json)} nodes, down: {down}")

        commands = {
            "status": ["status"],
            "status --json": ["status", "--json"],
            "status --all": ["status", "--all"],
            "status --all --json": ["status", "--all", "--json"],
            "node list": ["node", "list"],
        }
        for argv in commands.values():  # warm-up
            core.ok(*argv)
        samples = {k: [] for k in commands}
        for _ in range(args.runs):  # interleaved so that noise hits every command alike
            for k, argv in commands.items():
                samples[k].append(core.ok(*argv)[2])
        for k in commands:
            results_status[k] = stats(samples[k])
        scale_point(args.nodes)
        results_status["status --all scaling (nodes: stats)"] = scaling
        results_status["cpu_per_status_all"] = cpu_per_status_all(c, core, args.runs)
        results_status["tls_probe"] = tls_probe(core, nodes_json, args.runs)

        # Memory: an idle attached node with no role, the core, then the leak checks.
        idle = c.nodes[-1]
        memory["idle_attached_node_mib"] = rss_mib(idle.proc.pid)
        memory["core_cluster_mib"] = rss_mib(core.proc.pid)
        memory["core_threads"] = thread_count(core.proc.pid)
        primary = next((p for p in core.json("process", "list") if p["name"] == "primary"), None)
        if primary and primary.get("pid"):
            memory["primary_process_mib"] = rss_mib(primary["pid"])
        trend = [(0, memory["core_cluster_mib"])]
        for i in range(1, args.leak_calls + 1):
            core.ok("status")
            if i % max(1, args.leak_calls // 4) == 0:
                trend.append((i, rss_mib(core.proc.pid)))
        memory["core_after_status_calls_mib"] = rss_mib(core.proc.pid)
        memory["status_calls"] = args.leak_calls
        memory["core_trend_status (calls, MiB)"] = trend
        trend_all = [(0, rss_mib(core.proc.pid))]
        for i in range(1, args.leak_all_calls + 1):
            core.ok("status", "--all")
            if i % max(1, args.leak_all_calls // 4) == 0:
                trend_all.append((i, rss_mib(core.proc.pid)))
        memory["core_after_status_all_calls_mib"] = rss_mib(core.proc.pid)
        memory["status_all_calls"] = args.leak_all_calls
        memory["core_trend_status_all (calls, MiB)"] = trend_all
        memory["core_threads_after"] = thread_count(core.proc.pid)
        if primary and primary.get("pid"):
            memory["primary_process_after_mib"] = rss_mib(primary["pid"])
    finally:
        c.close()
    results["status"] = results_status
    results["memory"] = memory


def cpu_ms(pid):
    """User + system CPU time of a process so far, in ms (10 ms resolution)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000.0 / os.sysconf("SC_CLK_TCK")


def cpu_per_status_all(c, core, runs):
    """Where the CPU of one `status --all` goes: the core's katod (one thread and one
    TLS client per node), the other katods (serving /v1/status), the primary, the CLI."""
    primary = next((p["pid"] for p in core.json("process", "list") if p["name"] == "primary"))
    pids = {n.ip: n.proc.pid for n in c.nodes}
    before = {ip: cpu_ms(pid) for ip, pid in pids.items()}
    prim0 = cpu_ms(primary)
    ch0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    for _ in range(runs):
        core.ok("status", "--all")
    wall = (time.perf_counter() - t0) * 1000.0 / runs
    ch1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    after = {ip: cpu_ms(pid) for ip, pid in pids.items()}
    peers = sum(after[ip] - before[ip] for ip in pids if ip != core.ip)
    return {"calls": runs, "wall_ms": round(wall, 1),
            "core_katod_cpu_ms": round((after[core.ip] - before[core.ip]) / runs, 1),
            "other_katods_cpu_ms": round(peers / runs, 1),
            "primary_cpu_ms": round((cpu_ms(primary) - prim0) / runs, 1),
            "cli_cpu_ms": round((ch1.ru_utime + ch1.ru_stime - ch0.ru_utime - ch0.ru_stime)
                                * 1000.0 / runs, 1)}


def tls_probe(core, nodes_json, runs):
    """One agent call as katod makes it: a new TCP + TLS handshake (client certificate)
    then GET /v1/status, timed in parts from Python with the core's certificate."""
    pki = os.path.join(core.data_dir, "pki")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # agents are identified by the CA, not by name
    ctx.load_verify_locations(os.path.join(pki, "ca.pem"))
    ctx.load_cert_chain(os.path.join(pki, "node.pem"), os.path.join(pki, "node.key"))
    target = next(n["ip"] for n in nodes_json if n["ip"] != core.ip)
    connect, handshake, request = [], [], []
    version = cipher = None
    for _ in range(runs):
        t0 = time.perf_counter()
        raw = socket.create_connection((target, AGENT_PORT), timeout=5)
        t1 = time.perf_counter()
        s = ctx.wrap_socket(raw)
        t2 = time.perf_counter()
        version, cipher = s.version(), s.cipher()[0]
        s.sendall(f"GET /v1/status HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n"
                  .encode())
        data = read_response(s)  # by Content-Length, as katod's client reads it
        t3 = time.perf_counter()
        s.close()
        if not data.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"agent probe failed: {data[:200]!r}")
        connect.append(t1 - t0)
        handshake.append(t2 - t1)
        request.append(t3 - t2)
    return {"target": target, "tls": version, "cipher": cipher, "tcp_connect": stats(connect),
            "tls_handshake": stats(handshake), "request": stats(request)}


def read_response(s):
    """Reads one HTTP/1.1 response up to its Content-Length (not to EOF: the server
    lingers for the TLS close_notify, which a real client never waits for)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


# ---- benchmark 2: attach time vs the server's own start ---------------------

def reference_start(role, ip, workdir):
    """Starts the server as kato's role spec does (same binary, same arguments, same user),
    without kato; returns seconds until it accepts TCP on its port."""
    if role == "memcached":
        argv = [shutil.which("memcached"), "-l", ip, "-p", "11211", "-U", "0", "-u", "memcache",
                "-m", "64"]
        port = 11211
    else:
        d = os.path.join(workdir, "redis")
        os.makedirs(d)
        shutil.chown(d, "redis", "redis")
        os.chmod(d, 0o700)
        argv = ["setpriv", "--reuid=redis", "--regid=redis", "--init-groups", "--",
                shutil.which("redis-server"), "--bind", ip, "--port", "6379", "--dir", d,
                "--daemonize", "no", "--protected-mode", "no", "--appendonly", "yes"]
        port = 6379
    if port_open(ip, port):
        raise RuntimeError(f"{ip}:{port} is still in use before the reference start")
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         cwd=workdir, start_new_session=True)
    try:
        while True:
            try:
                with socket.create_connection((ip, port), timeout=1):
                    break
            except OSError:
                if p.poll() is not None:
                    raise RuntimeError(f"reference {role} exited with {p.returncode}")
                if time.perf_counter() - t0 > 30:
                    raise RuntimeError(f"reference {role} not ready after 30 s")
                time.sleep(0.001)
        return time.perf_counter() - t0
    finally:
        p.terminate()
        p.wait(timeout=30)


def phase(marks, needle):
    return next((t for t, line in marks if needle in line), None)


def bench_attach(bins, args, results):
    c = Cluster(bins, args.subnet + 1)
    out = {}
    try:
        core = c.core(1)
        index = 10
        for role in ("memcached", "redis"):
            attach, ref, overhead, phases = [], [], [], {"keygen": [], "join": [], "to_running": [],
                                                         "after_running": []}
            for run in range(args.attach_runs):
                n = c.node(index)  # a fresh node: new address, new data dir (untimed)
                index += 1
                token = c.token(core)
                total, marks = n.timed_attach(token, core.ip, role)
                procs = {p["name"]: p for p in n.json("process", "list")}
                if procs.get(role, {}).get("state") != "RUNNING":
                    raise RuntimeError(f"{role} not RUNNING after attach: {procs}")
                t_contact = phase(marks, "contacting the core")
                t_attached = phase(marks, "attached as node")
                t_running = phase(marks, f"{role} RUNNING")
                if None not in (t_contact, t_attached, t_running):
                    phases["keygen"].append(t_contact)
                    phases["join"].append(t_attached - t_contact)
                    phases["to_running"].append(t_running - t_attached)
                    phases["after_running"].append(total - t_running)
                n.ok("node", "detach")
                n.stop()
                # The reference on the same, now free, address, right after: same conditions.
                work = tempfile.mkdtemp(dir=c.root)
                os.chmod(work, 0o755)
                r = reference_start(role, n.ip, work)
                attach.append(total)
                ref.append(r)
                overhead.append(total - r)
                log(f"  attach -e {role} #{run + 1}: {total * 1000:.0f} ms "
                    f"(server alone {r * 1000:.0f} ms)")
            out[role] = {"attach": stats(attach), "server_ready": stats(ref),
                         "overhead (paired per run)": stats(overhead),
                         "overhead_of_medians_ms": round(
                             (statistics.median(attach) - statistics.median(ref)) * 1000, 1),
                         "phases": {k: stats(v) for k, v in phases.items()}}
    finally:
        c.close()
    results["attach"] = out


# ---- report ----------------------------------------------------------------

def fmt_row(name, s):
    return (f"  {name:<34} {s['median_ms']:>9.1f} {s['p90_ms']:>9.1f} {s['min_ms']:>9.1f}"
            f" {s['n']:>5}")


def print_report(res):
    head = f"  {'':<34} {'median':>9} {'p90':>9} {'min':>9} {'n':>5}   (ms)"
    st = res.get("status", {})
    if st:
        print(f"\n1. CLI wall time on the core of a {res['config']['nodes']}-node cluster")
        print(head)
        for k in ("status", "status --json", "status --all", "status --all --json", "node list"):
            print(fmt_row("kato " + k, st[k]))
        for size, s in st["status --all scaling (nodes: stats)"].items():
            print(fmt_row(f"kato status --all, {size} node(s)", s))
        cp = st["cpu_per_status_all"]
        total = sum(v for k, v in cp.items() if k.endswith("cpu_ms"))
        print(f"  CPU per status --all (ms, {cp['calls']} calls, wall {cp['wall_ms']}): core katod "
              f"{cp['core_katod_cpu_ms']}, other katods {cp['other_katods_cpu_ms']}, primary "
              f"{cp['primary_cpu_ms']}, CLI {cp['cli_cpu_ms']} = {total:.1f} ms of CPU")
        tp = st["tls_probe"]
        print(f"  one agent call from Python ({tp['tls']}, {tp['cipher']}):")
        for k in ("tcp_connect", "tls_handshake", "request"):
            print(fmt_row("  " + k, tp[k]))
        sa = st["status --all"]
        goal = sa["median_ms"] <= STATUS_GOAL_MS
        print(f"  goal status --all <= {STATUS_GOAL_MS:.0f} ms: {'MET' if goal else 'NOT MET'} "
              f"(median {sa['median_ms']} ms, p90 {sa['p90_ms']} ms)")
    at = res.get("attach", {})
    if at:
        print("\n2. Attach (until every process is RUNNING) vs the server started directly")
        print(head)
        for role, a in at.items():
            print(fmt_row(f"attach -e {role}", a["attach"]))
            print(fmt_row(f"  {role} alone: ready", a["server_ready"]))
            print(fmt_row("  overhead (attach - ready)", a["overhead (paired per run)"]))
            for k, s in a["phases"].items():
                if s:
                    print(fmt_row(f"    phase {k}", s))
    mem = res.get("memory", {})
    if mem:
        print("\n3. katod resident memory (VmRSS, MiB)")
        for k, v in mem.items():
            print(f"  {k:<40} {v}")
    m = res["machine"]
    print(f"\nmachine: {m['cpus']} CPUs, load average {m['loadavg_start'][0]:.2f} at start, "
          f"{m['loadavg_end'][0]:.2f} at end")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build-dir", default="build")
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--attach-runs", type=int, default=10)
    ap.add_argument("--memcached-nodes", type=int, default=3)
    ap.add_argument("--leak-calls", type=int, default=1000)
    ap.add_argument("--leak-all-calls", type=int, default=500)
    ap.add_argument("--subnet", type=int, default=250,
                    help="127.0.SUBNET.x for the cluster, SUBNET+1 for attach (tests use 10+)")
    ap.add_argument("--only", choices=["status", "attach"], help="run one benchmark")
    ap.add_argument("--out", default=os.path.join(HERE, "results.json"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: katod starts servers as their own users")
    build = os.path.abspath(args.build_dir)
    bins = {b: os.path.join(build, "bin", b) for b in ("kato", "katod")}
    for p in bins.values():
        if not os.access(p, os.X_OK):
            sys.exit(f"{p} is missing: build kato and katod first")
    for b in ("memcached", "redis-server"):
        if not shutil.which(b):
            sys.exit(f"{b} is not installed")

    results = {"config": {"nodes": args.nodes, "runs": args.runs, "attach_runs": args.attach_runs,
                          "memcached_nodes": args.memcached_nodes, "build_dir": build},
               "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                           "loadavg_start": os.getloadavg()}}
    # Clean up on Ctrl-C or SIGTERM too: every katod gets SIGTERM (Cluster.close).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    t0 = time.monotonic()
    if args.only in (None, "status"):
        log(f"benchmark 1+3: {args.nodes}-node cluster on 127.0.{args.subnet}.x")
        bench_status(bins, args, results)
    if args.only in (None, "attach"):
        log(f"benchmark 2: attach on 127.0.{args.subnet + 1}.x")
        bench_attach(bins, args, results)
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["elapsed_s"] = round(time.monotonic() - t0, 1)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    print_report(results)
    print(f"\nwrote {args.out} ({results['elapsed_s']} s)")


if __name__ == "__main__":
    main()
