#!/usr/bin/python3
"""App benchmarks for kato on real katod processes: push-to-serving and DEA failover.

Every node is a katod bound to its own loopback address with its own data dir,
driven by the `kato` CLI through KATO_DATA_DIR as an operator would (the harness of
tests/cluster/conftest.py). The app is tests/cluster/apps/web (Python's http.server).

  1. Push-to-serving, on a core (primary+controller+router) and 3 DEAs at
     127.0.252.N: for each run, the time from starting
     `kato app push pushN --path web --instances 1 --memory 128` until a GET through
     the router (CORE_IP:80, Host pushN.DOMAIN) returns 200, polled every 10 ms; and
     the push command's own wall time. The app is deleted after each run.
  2. Failover, on a core and 4 DEAs at 127.0.253.N: each run pushes a fresh app
     foN with 3 instances (the scheduler spreads them over 3 DEAs; the 4th is
     spare capacity). A client thread sends GETs through the router back to back.
     The agent of the DEA running instance 0 is killed with SIGKILL, then
     everything still running from its data dir. The failover time is from the
     kill until `kato app info foN --json` shows 3 RUNNING instances, none on the
     killed DEA (polled every 50 ms). Traffic continues for --after seconds past
     recovery. The killed DEA's katod is then started again on the same data dir,
     the app is deleted, and the next run starts once the DEA is up and the route is gone.

Standard library only; run as root (katod starts instances as their own users).
Usage: /usr/bin/python3 bench/apps_bench.py --build-dir build [--runs 7]
Prints a table and writes bench/apps_results.json (or --out).
"""
import argparse
import http.client
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "cluster"))
from conftest import Cluster, wait_for  # noqa: E402  (the cluster tests' harness)
WEB_APP = os.path.join(HERE, "..", "tests", "cluster", "apps", "web")
PUSH_GOAL_S = 2.0
FAILOVER_GOAL_S = 3.0


# ---- small helpers ---------------------------------------------------------

def log(msg):
    print(msg, file=sys.stderr, flush=True)


def stats(samples_s):
    """Summary in seconds: median, p90 (nearest rank), min, max, n."""
    s = sorted(samples_s)
    if not s:
        return {}
    p90 = s[min(len(s) - 1, max(0, -(-len(s) * 9 // 10) - 1))]
    return {"n": len(s), "median_s": round(statistics.median(s), 3), "p90_s": round(p90, 3),
            "min_s": round(s[0], 3), "max_s": round(s[-1], 3)}


def get(ip, host, timeout=5.0):
    """One GET / through the router with the given Host; returns the status."""
    c = http.client.HTTPConnection(ip, 80, timeout=timeout)
    try:
        c.request("GET", "/", headers={"Host": host})
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


def app_info(core, app):
    return core.json("app", "info", app)


def running(info):
    return [i for i in info["instances"] if i["state"] == "RUNNING"]


def build_core_and_deas(bins, subnet, n_deas, host, keep):
    c = Cluster(bins, subnet=subnet, keep=keep)
    core = c.core(1, host)
    deas = []
    for i in range(2, 2 + n_deas):
        d = c.node(i)
        c.attach(d, core, "dea")
        deas.append(d)
    log(f"  cluster at 127.0.{subnet}.x: core + {n_deas} DEAs ({c.root})")
    return c, core, deas


# ---- benchmark 1: push-to-serving -----------------------------------------

def push_run(core, app, domain):
    """One push; returns (serving seconds, push wall seconds, push output)."""
    host = f"{app}.{domain}"
    t0 = time.monotonic()
    p = subprocess.Popen(core.cmd("app", "push", app, "--path", WEB_APP, "--instances", "1",
                                  "--memory", "128"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=core.env())
    # Drain output in the background so the CLI never blocks on a full pipe.
    out = {}
    th = threading.Thread(target=lambda: out.update(zip(("out", "err"), p.communicate())))
    th.start()
    serving = None
    push_wall = None
    last = None
    deadline = t0 + 120
    while time.monotonic() < deadline and (serving is None or push_wall is None):
        if push_wall is None and p.poll() is not None:
            push_wall = time.monotonic() - t0
            if p.returncode != 0:
                break
        if serving is None:
            try:
                last = get(core.ip, host, timeout=2)
                if last == 200:
                    serving = time.monotonic() - t0
            except Exception as e:
                last = repr(e)
        if serving is None or push_wall is None:
            time.sleep(0.01)
    th.join()
    if p.returncode != 0:
        raise RuntimeError(f"push of {app} failed (rc={p.returncode}): "
                           f"{out.get('err', '')}{out.get('out', '')}")
    if serving is None:
        raise RuntimeError(f"{host} never answered 200 (last: {last!r})")
    return serving, push_wall, out


def bench_push(bins, args, results):
    c, core, _ = build_core_and_deas(bins, 252, 3, "api.push.bench", args.keep)
    domain = "push.bench"
    runs, errors = [], []
    try:
        for n in range(args.warmup + args.runs):
            app = f"push{n}"
            warm = n < args.warmup
            try:
                serving, wall, _ = push_run(core, app, domain)
                runs.append({"app": app, "warmup": warm, "serving_s": round(serving, 3),
                             "push_wall_s": round(wall, 3)})
                log(f"  {'warm-up ' if warm else ''}{app}: serving {serving:.3f} s, "
                    f"push returned {wall:.3f} s")
            except Exception as e:
                errors.append({"app": app, "error": str(e)})
                log(f"  {app}: FAILED: {e}")
            if core.kato("app", "delete", app).rc == 0:
                wait_for(f"route of {app} gone",
                         lambda: get(core.ip, f"{app}.{domain}", timeout=2) == 404, 15)
    finally:
        c.close()
    measured = [r for r in runs if not r["warmup"]]
    results["push"] = {
        "cluster": "core (primary+controller+router) + 3 DEAs, 127.0.252.x",
        "command": "kato app push pushN --path tests/cluster/apps/web --instances 1 --memory 128",
        "serving": stats([r["serving_s"] for r in measured]),
        "push_wall": stats([r["push_wall_s"] for r in measured]),
        "runs": runs, "errors": errors,
    }


# ---- benchmark 2: failover -------------------------------------------------

class Client(threading.Thread):
    """Sends GETs through the router back to back; records failures with their time."""

    def __init__(self, ip, host):
        super().__init__(daemon=True)
        self.ip, self.host = ip, host
        self.total = 0
        self.failures = []  # (monotonic time, what)
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            try:
                s = get(self.ip, self.host, timeout=5)
                if s != 200:
                    self.failures.append((time.monotonic(), f"HTTP {s}"))
            except Exception as e:  # a failed request, whatever the cause
                self.failures.append((time.monotonic(), repr(e)))
            self.total += 1

    def stop(self):
        self.stopping.set()
        self.join()


def failover_run(c, core, deas, app, domain, after_s):
    host = f"{app}.{domain}"
    core.ok("app", "push", app, "--path", WEB_APP, "--instances", "3", "--memory", "128")
    info = app_info(core, app)
    run = running(info)
    if len(run) != 3 or len({i["node_ip"] for i in run}) != 3:
        raise RuntimeError(f"{app} did not start as 3 RUNNING instances on 3 DEAs: "
                           f"{info['instances']}")
    wait_for(f"{host} to answer 200", lambda: get(core.ip, host, timeout=2) == 200, 10, 0.01)
    victim_ip = next(i["node_ip"] for i in info["instances"] if i["index"] == 0)
    victim = next(d for d in deas if d.ip == victim_ip)

    client = Client(core.ip, host)
    client.start()
    try:
        wait_for("some traffic", lambda: client.total > 20, 10, 0.01)
        before = client.total
        t_kill = time.monotonic()
        victim.kill_all()
        t_killed = time.monotonic()
        t_detect = None  # first app info in which an instance on the victim is not RUNNING

        def recovered():
            nonlocal t_detect
            i = app_info(core, app)
            if t_detect is None and not any(x["node_ip"] == victim_ip and x["state"] == "RUNNING"
                                            for x in i["instances"]):
                t_detect = time.monotonic()
            r = running(i)
            return len(r) == 3 and all(x["node_ip"] != victim_ip for x in r) and i

        final = wait_for(f"3 instances of {app} RUNNING off {victim_ip}", recovered, 60, 0.05)
        t_rec = time.monotonic()
        time.sleep(after_s)  # traffic goes on past recovery: late failures count too
    finally:
        client.stop()
    fails = client.failures
    rec = {
        "app": app, "victim": victim_ip,
        "failover_s": round(t_rec - t_kill, 3),
        "kill_s": round(t_killed - t_kill, 3),
        "detected_s": round(t_detect - t_kill, 3) if t_detect else None,
        "requests_total": client.total, "requests_before_kill": before,
        "requests_failed": len(fails),
        "failures": [{"at_s": round(t - t_kill, 3), "what": w} for t, w in fails[:20]],
        "placement_after": sorted(x["node_ip"] for x in running(final)),
    }
    # Restore: the killed DEA comes back (same data dir), the app goes.
    victim.start()
    wait_for(f"{victim_ip} to be up again", lambda: any(
        n["ip"] == victim_ip and n["state"] == "up" for n in core.json("node", "list")), 30)
    core.ok("app", "delete", app)
    wait_for(f"route of {app} gone", lambda: get(core.ip, host, timeout=2) == 404, 15)
    return rec


def bench_failover(bins, args, results):
    c, core, deas = build_core_and_deas(bins, 253, 4, "api.fo.bench", args.keep)
    runs, errors = [], []
    try:
        for n in range(args.runs):
            app = f"fo{n}"
            try:
                r = failover_run(c, core, deas, app, "fo.bench", args.after)
                runs.append(r)
                log(f"  {app}: failover {r['failover_s']:.3f} s (down seen at "
                    f"{r['detected_s']} s), requests {r['requests_total']}, "
                    f"failed {r['requests_failed']}"
                    + (f" first: {r['failures'][0]}" if r['failures'] else ""))
            except Exception as e:
                errors.append({"app": app, "error": str(e)})
                log(f"  {app}: FAILED: {e}")
                # Bring every DEA back so the next run starts from 4 up.
                for d in deas:
                    if d.proc is None:
                        d.start()
                core.kato("app", "delete", app)
    finally:
        c.close()
    results["failover"] = {
        "cluster": "core (primary+controller+router) + 4 DEAs, 127.0.253.x; "
                   "3 instances --memory 128, fresh app per run",
        "failover": stats([r["failover_s"] for r in runs]),
        "detected": stats([r["detected_s"] for r in runs if r["detected_s"] is not None]),
        "requests_total": sum(r["requests_total"] for r in runs),
        "requests_failed": sum(r["requests_failed"] for r in runs),
        "runs": runs, "errors": errors,
    }


# ---- report ----------------------------------------------------------------

def print_table(results):
    p, f = results.get("push"), results.get("failover")
    print()
    print(f"{'(seconds)':40} {'median':>8} {'p90':>8} {'max':>8} {'n':>4}  goal")
    if p and p["serving"]:
        for label, k, goal in (("push-to-serving (first 200)", "serving", "<= 2 s"),
                               ("kato app push wall time", "push_wall", "")):
            s = p[k]
            print(f"{label:40} {s['median_s']:8.3f} {s['p90_s']:8.3f} {s['max_s']:8.3f} "
                  f"{s['n']:4}  {goal}")
    if f and f["failover"]:
        for label, k, goal in (("failover (kill -> 3 RUNNING elsewhere)", "failover", "<= 3 s"),
                               ("  of which: down seen in app info", "detected", "")):
            s = f[k]
            if s:
                print(f"{label:40} {s['median_s']:8.3f} {s['p90_s']:8.3f} {s['max_s']:8.3f} "
                      f"{s['n']:4}  {goal}")
        print(f"failover requests: {f['requests_total']} total, {f['requests_failed']} failed "
              f"(goal 0); per run: "
              + ", ".join(f"{r['requests_failed']}/{r['requests_total']}" for r in f["runs"]))
    for part in (p, f):
        for e in (part or {}).get("errors", []):
            print(f"ERROR {e['app']}: {e['error']}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build-dir", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=1, help="push runs not counted")
    ap.add_argument("--after", type=float, default=1.0,
                    help="seconds of traffic kept after recovery")
    ap.add_argument("--only", choices=("push", "failover"))
    ap.add_argument("--keep", action="store_true", help="keep the data dirs (logs)")
    ap.add_argument("--out", default=os.path.join(HERE, "apps_results.json"))
    args = ap.parse_args()
    build = os.path.abspath(args.build_dir)
    bins = {"kato": os.path.join(build, "bin", "kato"),
            "katod": os.path.join(build, "bin", "katod"),
            "katod_test": os.path.join(build, "test-bin", "katod-test")}
    for path in (bins["kato"], bins["katod"]):
        if not os.access(path, os.X_OK):
            sys.exit(f"{path} is missing: build first")
    results = {"machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                           "loadavg_start": os.getloadavg()},
               "runs": args.runs}
    try:
        if args.only in (None, "push"):
            log("push-to-serving:")
            bench_push(bins, args, results)
        if args.only in (None, "failover"):
            log("failover:")
            bench_failover(bins, args, results)
    finally:
        results["machine"]["loadavg_end"] = os.getloadavg()
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=2)
    print_table(results)


if __name__ == "__main__":
    main()
