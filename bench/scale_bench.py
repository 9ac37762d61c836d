#!/usr/bin/env python3
"""Control-plane scale benchmark: a real core node and kato-sim's simulated nodes.

A core katod (primary + controller + router, SQLite) runs on 127.0.SUBNET.1; for
each size in --sizes, `kato-sim --nodes N` joins N simulated nodes with the real
join token (each on its own address from 127.1.0.1), which heartbeat once a
second over kept TLS connections and watch their own scope of the cluster.
Once all are up and a settling time has passed, the benchmark measures over
--window seconds:

  - CPU of the primary process (percent of one core) and of the controller,
    from /proc/PID/stat, and their resident memory;
  - `kato status --all --json` on the core (wall time, median of --runs), with
    a check that it lists N+1 nodes, all up;
  - the TLS connections the primary accepted in the window (kept connections:
    about none once the nodes are up).

For reference, the same window is measured with no simulated node at all.
Then kato-sim is stopped (SIGTERM: the nodes leave) before the next size.

Usage:
  python3 bench/scale_bench.py --build-dir build [--sizes 100,1000,5000]
Writes bench/scale_results.json (or --out) and prints a table.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from cluster_bench import (Cluster, cpu_ms, log, rss_mib, stats, stop_sim,  # noqa: E402
                           wait_for)

GOALS = {"status_all_ms_at_1000": 1000.0, "primary_cpu_pct_at_5000": 25.0}


def process_pid(core, name):
    for p in core.json("process", "list"):
        if p["name"] == name and p.get("pid"):
            return p["pid"]
    raise RuntimeError(f"no {name} process on the core")


def primary_connections(pid):
    """Established TCP connections to the primary's port 9440 (ss, from the kernel)."""
    out = subprocess.run(["ss", "-Htn", "state", "established", "( sport = :9440 )"],
                         capture_output=True, text=True).stdout
    return len([l for l in out.splitlines() if l.strip()])


def measure(core, pids, window, runs, expect_nodes):
    before = {k: cpu_ms(p) for k, p in pids.items()}
    t0 = time.monotonic()
    samples = []
    # status --all runs spread over the window; CPU is measured over the whole window,
    # so it includes them (as a real operator's use would).
    next_run = t0
    while time.monotonic() - t0 < window:
        if len(samples) < runs and time.monotonic() >= next_run:
            s0 = time.perf_counter()
            out, _, _ = core.ok("status", "--all", "--json")
            samples.append(time.perf_counter() - s0)
            nodes = json.loads(out)["nodes"]
            down = [n["ip"] for n in nodes if n["state"] != "up"]
            if len(nodes) != expect_nodes or down:
                raise RuntimeError(f"status --all: {len(nodes)} nodes (expected {expect_nodes}), "
                                   f"down: {down[:5]}")
            next_run = time.monotonic() + window / (runs + 1)
        time.sleep(0.05)
    elapsed = time.monotonic() - t0
    cpu = {k: round((cpu_ms(p) - before[k]) / (elapsed * 10.0), 1) for k, p in pids.items()}
    return {
        "window_s": round(elapsed, 1),
        "primary_cpu_pct": cpu["primary"],
        "controller_cpu_pct": cpu["controller"],
        "primary_rss_mib": rss_mib(pids["primary"]),
        "controller_rss_mib": rss_mib(pids["controller"]),
        "status_all": stats(samples),
        "connections_to_primary": primary_connections(pids["primary"]),
    }


def run_size(bins, core, token, n, args):
    log(f"kato-sim: {n} nodes")
    sim_log = open(os.path.join(core.cluster.root, f"sim-{n}.log"), "w")
    t0 = time.monotonic()
    sim = subprocess.Popen([bins["kato-sim"], "--core", core.ip, "--token", token,
                            "--nodes", str(n), "--first-ip", args.first_ip],
                           stdout=subprocess.PIPE, stderr=sim_log, text=True,
                           start_new_session=True)
    try:
        for line in sim.stdout:
            if line.strip() == f"{n} nodes up":
                break
            if line.startswith("joined"):
                log(f"  {line.strip()} ({time.monotonic() - t0:.0f} s)")
        else:
            raise RuntimeError(f"kato-sim ended before its nodes were up (see {sim_log.name})")
        join_s = time.monotonic() - t0
        log(f"  {n} nodes up in {join_s:.1f} s; settling {args.settle} s")
        time.sleep(args.settle)  # the benchmark measures a steady state, after the joins
        pids = {"primary": process_pid(core, "primary"),
                "controller": process_pid(core, "controller")}
        m = measure(core, pids, args.window, args.runs, n + 1)
        m["join_s"] = round(join_s, 1)
        m["nodes"] = n
        log(f"  primary {m['primary_cpu_pct']}% of a core, controller {m['controller_cpu_pct']}%, "
            f"status --all median {m['status_all'].get('median_ms')} ms")
        return m
    finally:
        stop_sim(sim, sim_log)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build-dir", default="build")
    ap.add_argument("--sizes", default="100,1000,5000")
    ap.add_argument("--subnet", type=int, default=240)
    ap.add_argument("--first-ip", default="127.1.0.1")
    ap.add_argument("--settle", type=float, default=10.0)
    ap.add_argument("--window", type=float, default=20.0)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--out", default=os.path.join(HERE, "scale_results.json"))
    args = ap.parse_args()
    bin_dir = os.path.join(args.build_dir, "bin")
    bins = {b: os.path.join(bin_dir, b) for b in ("katod", "kato", "kato-sim")}
    for b, path in bins.items():
        if not os.access(path, os.X_OK):
            sys.exit(f"{path} missing: build first (scripts/build)")
    sizes = [int(s) for s in args.sizes.split(",") if s]
    results = {"machine": {"cpus": os.cpu_count(), "kernel": platform.release()},
               "command": "python3 bench/scale_bench.py " + " ".join(sys.argv[1:]),
               "date": time.strftime("%Y-%m-%d"), "store": "sqlite", "sizes": {}}
    c = Cluster(bins, args.subnet)
    try:
        core = c.core(1)
        token = c.token(core)
        pids = {"primary": process_pid(core, "primary"),
                "controller": process_pid(core, "controller")}
        time.sleep(args.settle / 2)
        results["sizes"]["0"] = measure(core, pids, args.window / 2, args.runs // 2, 1)
        log(f"no simulated node: primary {results['sizes']['0']['primary_cpu_pct']}%")
        for n in sizes:
            results["sizes"][str(n)] = run_size(bins, core, token, n, args)
            wait_for("the simulated nodes to leave",
                     lambda: len(core.json("node", "list")) == 1, timeout=600, interval=1.0)
    finally:
        c.close()
    results["goals"] = GOALS
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    print(f"{'nodes':>6} {'join s':>7} {'primary %':>10} {'ctrl %':>7} {'primary MiB':>12} "
          f"{'status --all ms':>16}")
    for k, m in results["sizes"].items():
        print(f"{k:>6} {m.get('join_s', 0):>7} {m['primary_cpu_pct']:>10} "
              f"{m['controller_cpu_pct']:>7} {m['primary_rss_mib']:>12} "
              f"{m['status_all'].get('median_ms', 0):>16}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
