#!/usr/bin/python3
"""Load balancer benchmark: the guide's "Load Balancer and Multiple Routers" layout
on real katod processes (the harness of tests/cluster/conftest.py).

Cluster, on 127.0.SUBNET.N: node 1 the core (primary, controller, router),
node 2 a second router, node 3 the load balancer (attached with -e router, then
`kato node setup load_balancer --yes`: nginx over the two routers), nodes 4 and
5 DEAs. The app is bench/apps/fast (an asyncio HTTP server, ~50k req/s on one
core, so that the proxies are what is measured), pushed with 2 instances.

  1. Throughput, ROUNDS interleaved rounds of `wrk -t1 -c50 -dDURATION --latency`
     against: one router directly (http://CORE:80), the load balancer over HTTP
     (http://LB:80) and over HTTPS (https://LB:443, TLS terminated by nginx).
     Medians of requests/s, p50 and p99. Nothing is pinned: every process
     shares this machine's cores, so the load balancer's figures include the
     cost of its extra hop.
  2. A router dies: 4 client threads send GETs through the load balancer on
     keep-alive connections; the second router's node is killed (SIGKILL of its
     agent and everything under it) and later started again. Failed requests
     (goal 0) and the time until the load balancer's pool has the router again.

Usage: /usr/bin/python3 bench/lb_bench.py --build-dir build [--rounds 5] [--duration 10] [--subnet 230]
Prints a table and writes bench/lb_results.json (or --out).
"""
import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "cluster"))
from conftest import Cluster, wait_for  # noqa: E402  (the cluster tests' harness)

FAST_APP = os.path.join(HERE, "apps", "fast")
HOST = "fast.lb.bench"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def to_ms(v):
    n = float(re.match(r"[0-9.]+", v).group(0))
    if v.endswith("us"):
        return n / 1000
    if v.endswith("ms"):
        return n
    return n * 1000  # seconds


def wrk(url, duration):
    out = subprocess.run(["wrk", "-t1", "-c50", f"-d{duration}s", "--latency", "-H",
                          f"Host: {HOST}", url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
    p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    errors = re.findall(r"(Non-2xx.*|Socket errors.*)", out)
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "errors": errors}


def get(ip, port=80, timeout=5):
    c = http.client.HTTPConnection(ip, port, timeout=timeout)
    try:
        c.request("GET", "/", headers={"Host": HOST})
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


def pool(lb):
    """The routers in the load balancer's nginx pool, as `kato status` reports them."""
    return sorted(lb.json("status").get("load_balancer", {}).get("pool", []))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build-dir", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--subnet", type=int, default=230)
    ap.add_argument("--out", default=os.path.join(HERE, "lb_results.json"))
    args = ap.parse_args()
    build = os.path.abspath(args.build_dir)
    bins = {"kato": os.path.join(build, "bin", "kato"), "katod": os.path.join(build, "bin", "katod"),
            "katod_test": os.path.join(build, "test-bin", "katod-test")}
    Cluster._subnets = iter([args.subnet])
    c = Cluster(bins)
    results = {"rounds": args.rounds, "duration_s": args.duration, "throughput": {}, "failure": {}}
    try:
        log("starting the cluster")
        core = c.node(1)
        core.ok("node", "setup", "core", "api.lb.bench")
        router2 = c.node(2)
        c.attach(router2, core, "router")
        lb = c.node(3)
        c.attach(lb, core, "router")  # as the guide does it: then it becomes the load balancer
        lb.ok("node", "setup", "load_balancer", "--yes")
        for i in (4, 5):
            c.attach(c.node(i), core, "dea")
        core.ok("app", "push", "fast", "--path", FAST_APP, "--instances", "2", "--memory", "64")
        wait_for("the app through the load balancer", lambda: get(lb.ip) == 200, timeout=30)
        wait_for("both routers in the pool", lambda: pool(lb) == sorted([core.ip, router2.ip]))

        targets = {"router": f"http://{core.ip}:80/", "lb-http": f"http://{lb.ip}:80/",
                   "lb-https": f"https://{lb.ip}:443/"}
        for url in targets.values() if args.rounds else ():  # warm-up: pools, TLS sessions
            wrk(url, 2)
        runs = {name: [] for name in targets}
        for rnd in range(args.rounds):
            order = list(targets) if rnd % 2 == 0 else list(reversed(targets))
            for name in order:
                r = wrk(targets[name], args.duration)
                runs[name].append(r)
                log(f"round {rnd + 1} {name:9} {r['rps']:10.0f} req/s  p50 {r['p50_ms']:.3f} ms  "
                    f"p99 {r['p99_ms']:.3f} ms {' '.join(r['errors'])}")
        for name, rs in runs.items():
            if not rs:
                continue
            results["throughput"][name] = {
                "rps_median": statistics.median(r["rps"] for r in rs),
                "p50_ms_median": statistics.median(r["p50_ms"] for r in rs),
                "p99_ms_median": statistics.median(r["p99_ms"] for r in rs),
                "runs": rs}

        log("a router dies while clients send requests through the load balancer")
        failures, total, retried = [], [0], [0]
        stop = threading.Event()

        def client():
            # Keep-alive, as browsers and curl: a request on a reused connection
            # that the server closed before answering (nginx's old workers close
            # idle connections when it reloads) is sent again once on a new one
            # (RFC 9112 9.3.1); such retries are counted apart, not as failures.
            conn, used = None, 0
            while not stop.is_set():
                for attempt in (1, 2):
                    try:
                        if conn is None:
                            conn, used = http.client.HTTPConnection(lb.ip, 80, timeout=5), 0
                        conn.request("GET", "/", headers={"Host": HOST})
                        r = conn.getresponse()
                        r.read()
                        used += 1
                        if r.status != 200:
                            failures.append(r.status)
                        break
                    except (http.client.RemoteDisconnected, ConnectionResetError,
                            BrokenPipeError) as e:
                        reused = used > 0
                        conn.close()
                        conn = None
                        if attempt == 1 and reused:
                            retried[0] += 1
                            continue
                        failures.append(repr(e))
                        break
                    except Exception as e:  # a failed request, whatever the cause
                        failures.append(repr(e))
                        conn = None
                        break
                total[0] += 1

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        wait_for("some traffic", lambda: total[0] > 500)
        t_kill = time.monotonic()
        router2.kill_all()
        left = wait_for("the dead router to leave the pool", lambda: pool(lb) == [core.ip], 30)
        out_s = time.monotonic() - t_kill
        before = total[0]
        wait_for("traffic without it", lambda: total[0] > before + 2000, 60)
        router2.start()
        t_back = time.monotonic()
        wait_for("the router back in the pool",
                 lambda: pool(lb) == sorted([core.ip, router2.ip]), 60)
        back_s = time.monotonic() - t_back
        before = total[0]
        wait_for("traffic with it", lambda: total[0] > before + 2000, 60)
        stop.set()
        for t in threads:
            t.join()
        results["failure"] = {"requests": total[0], "failed": len(failures),
                              "retried_on_closed_keepalive": retried[0],
                              "failures": [str(f) for f in failures[:10]],
                              "left_pool_s": out_s, "back_in_pool_s": back_s}
        del left
    finally:
        c.close()

    print(f"{'target':10} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for name, r in results["throughput"].items():
        print(f"{name:10} {r['rps_median']:10.0f} {r['p50_ms_median']:8.3f} {r['p99_ms_median']:8.3f}")
    f = results["failure"]
    if f:
        print(f"router killed: {f['failed']} of {f['requests']} requests failed (goal 0), "
              f"{f['retried_on_closed_keepalive']} resent once after nginx closed an idle "
              f"keep-alive connection; "
              f"out of the pool after {f['left_pool_s']:.2f} s, back {f['back_in_pool_s']:.2f} s "
              f"after its restart")
    with open(args.out, "w") as out:
        json.dump(results, out, indent=2)
    return 0 if f and f["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
