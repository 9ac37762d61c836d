#!/usr/bin/env python3
"""Scheduling benchmark: one controller places 10,000 instances on 1,000 simulated DEAs.

A core katod (primary + controller + router, SQLite) runs on 127.0.SUBNET.1 and a
real DEA on 127.0.SUBNET.2, which stages the test app (`kato app push web
--memory 64`: one instance). Then `kato-sim --nodes --deas --roles dea` joins
simulated DEAs (from --first-ip on), each offering 16 GiB; they read the
assignments once per 250 ms for all of them and report their own as RUNNING at
once. Once the controller knows every DEA (a warm-up scale to one instance per
DEA, all RUNNING on distinct DEAs, then back to 1), each run:

  - `kato app scale web --instances` (from 1), then polls the controller's app
    view (`kato app list --json`: "placed", "running") every --poll seconds;
  - placed_s: from the scale command to every instance assigned to a DEA, and
    placements_per_s = (instances - 1) / placed_s (Nomad's C1M: 3,750/s on 5 servers);
  - running_s: until every instance is reported RUNNING by its DEA;
  - then scales back to 1 and waits for the other assignments to go.

Usage:
  python3 bench/placement_bench.py --build-dir build [--deas 1000 --instances 10000 --runs 3]
Writes bench/placement_results.json (or --out) and prints a table.
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
sys.path.insert(0, os.path.join(HERE, "..", "tests", "cluster"))
from conftest import Cluster, wait_for  # noqa: E402  (the cluster tests' harness)
sys.path.insert(0, HERE)
from cluster_bench import stop_sim  # noqa: E402

WEB_APP = os.path.join(HERE, "..", "tests", "cluster", "apps", "web")
GOAL_PLACEMENTS_PER_S = 4000.0


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def app_view(core):
    apps = json.loads(core.ok("app", "list", "--json").out)
    return next(a for a in apps if a["name"] == "web")


def start_sim(bins, c, core, n, first_ip):
    binary = os.path.join(os.path.dirname(bins["katod"]), "kato-sim")
    sim_log = open(os.path.join(c.root, "kato-sim.log"), "w")
    sim = subprocess.Popen([binary, "--core", core.ip, "--token", c.token(core), "--nodes", str(n),
                            "--roles", "dea", "--first-ip", first_ip],
                           stdout=subprocess.PIPE, stderr=sim_log, text=True,
                           start_new_session=True)
    t0 = time.monotonic()
    for line in sim.stdout:
        if line.strip() == f"{n} nodes up":
            log(f"  {n} simulated DEAs up in {time.monotonic() - t0:.1f} s")
            return sim, sim_log
    raise RuntimeError(f"kato-sim ended before its nodes were up (see {sim_log.name})")


def scale_back(core, timeout):
    core.ok("app", "scale", "web", "1")
    wait_for("the app scaled back to 1", lambda: app_view(core)["placed"] == 1,
             timeout=timeout, interval=0.5)


def one_run(core, n, poll, timeout):
    t0 = time.monotonic()
    core.ok("app", "scale", "web", str(n))
    placed_s = running_s = None
    polls = 0
    while time.monotonic() - t0 < timeout and running_s is None:
        v = app_view(core)
        polls += 1
        now = time.monotonic() - t0
        if placed_s is None and v["placed"] >= n:
            placed_s = now
        if placed_s is not None and v["running"] >= n:
            running_s = now
        if running_s is None:
            time.sleep(poll)
    if running_s is None:
        raise RuntimeError(f"{n} instances not all running after {timeout} s: {v}")
    return {"placed_s": round(placed_s, 3), "running_s": round(running_s, 3),
            "placements_per_s": round((n - 1) / placed_s), "polls": polls}


def median(runs, key):
    return statistics.median(r[key] for r in runs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build-dir", default="build")
    ap.add_argument("--deas", type=int, default=1000)
    ap.add_argument("--instances", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--poll", type=float, default=0.05)
    ap.add_argument("--subnet", type=int, default=242)
    ap.add_argument("--first-ip", default="127.3.0.1")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--out", default=os.path.join(HERE, "placement_results.json"))
    args = ap.parse_args()
    bin_dir = os.path.abspath(os.path.join(args.build_dir, "bin"))
    bins = {b: os.path.join(bin_dir, b) for b in ("katod", "kato", "kato-sim")}
    bins["katod_test"] = os.path.join(bin_dir, "..", "test-bin", "katod-test")  # unused here
    for b, path in bins.items():
        if b != "katod_test" and not os.access(path, os.X_OK):
            sys.exit(f"{path} missing: build first (scripts/build)")
    results = {"machine": {"cpus": os.cpu_count(), "kernel": platform.release()},
               "command": "python3 bench/placement_bench.py " + " ".join(sys.argv[1:]),
               "date": time.strftime("%Y-%m-%d"), "store": "sqlite", "deas": args.deas,
               "instances": args.instances, "goal_placements_per_s": GOAL_PLACEMENTS_PER_S}
    c = Cluster(bins, subnet=args.subnet)
    sim = None
    try:
        core = c.core(1, "api.place.bench")
        dea = c.node(2)
        c.attach(dea, core, "dea")
        core.ok("app", "push", "web", "--path", WEB_APP, "--memory", "64")
        sim, sim_log = start_sim(bins, c, core, args.deas, args.first_ip)
        # Warm-up: the controller has seen every DEA when the instances run on (nearly) one
        # DEA each: a DEA it had not heard from yet when placing gets none (then try again).
        # Not exactly one each: the real DEA's instance, and reports of instances just
        # stopped, count for the spread.
        warm = args.deas + 1
        for attempt in range(1, 4):
            core.ok("app", "scale", "web", str(warm))

            def all_running():
                info = core.json("app", "info", "web")["instances"]
                run = [i for i in info if i["state"] == "RUNNING"]
                return len(run) == warm and run
            run = wait_for(f"{warm} instances running", all_running, timeout=args.timeout,
                           interval=1.0)
            spread = len({i["node_ip"] for i in run})
            log(f"  warm-up {attempt}: {warm} instances running on {spread} DEAs")
            scale_back(core, args.timeout)
            if spread >= args.deas:
                break
        else:
            raise RuntimeError(f"the controller never spread {warm} instances over the DEAs")
        runs = []
        for r in range(args.runs):
            m = one_run(core, args.instances, args.poll, args.timeout)
            log(f"  run {r + 1}: {args.instances} placed in {m['placed_s']} s "
                f"({m['placements_per_s']}/s), all running in {m['running_s']} s")
            runs.append(m)
            scale_back(core, args.timeout)
        results["runs"] = runs
        results["median"] = {k: median(runs, k)
                             for k in ("placed_s", "running_s", "placements_per_s")}
    finally:
        if sim:
            stop_sim(sim, sim_log)
        c.close()
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    m = results["median"]
    print(f"{args.instances} instances on {args.deas} simulated DEAs, median of {args.runs}: "
          f"placed in {m['placed_s']} s ({m['placements_per_s']}/s; goal "
          f"{GOAL_PLACEMENTS_PER_S:.0f}/s), all RUNNING in {m['running_s']} s")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
