#!/usr/bin/python3
"""Data-service benchmark for kato on real katod processes: provision + bind +
the app serving with the credentials, per service type.

On a core (primary+controller+router), a node with every data role and one DEA
at 127.0.249.N (the harness of tests/cluster/conftest.py), the app
tests/cluster/apps/services is pushed once with no service. Each run, for each
type (postgresql, mysql, redis, memcached, rabbitmq, filesystem):
  t0  `kato service create TYPE NAME` starts (it returns once the service
      node has provisioned it: a database and role, a vhost and user, its own
      redis or memcached process, a filesystem's account and image)
  t1  `kato service bind NAME bench` starts (it returns once the app's
      instance was replaced by one with the credentials and is RUNNING)
  t2  bind has returned
  t3  GET /get?type=TYPE through the router answers 200: the app connected
      with the credentials it found in VCAP_SERVICES (polled every 10 ms)
The time per type is t3 - t0 (total), split into create (t1 - t0), bind
(t2 - t1) and first answer (t3 - t2). The service is then unbound and
deleted (not timed). Goal (issue "Data services for apps"): under 2 s for
every type but rabbitmq, under 5 s for rabbitmq.

Run as root. Usage: /usr/bin/python3 bench/services_bench.py --build-dir build [--runs 5]
Prints a table and writes bench/services_results.json (or --out).
"""
import argparse
import http.client
import json
import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "cluster"))
from conftest import Cluster, wait_for  # noqa: E402  (the cluster tests' harness)
APP = os.path.join(HERE, "..", "tests", "cluster", "apps", "services")
TYPES = ["postgresql", "mysql", "redis", "memcached", "rabbitmq", "filesystem"]
GOAL_S = {t: (5.0 if t == "rabbitmq" else 2.0) for t in TYPES}  # filesystem: the app's mount answering
DOMAIN = "svc.bench"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def stats(samples):
    s = sorted(samples)
    if not s:
        return {}
    return {"n": len(s), "median_s": round(statistics.median(s), 3), "min_s": round(s[0], 3),
            "max_s": round(s[-1], 3)}


def get_status(ip, path):
    c = http.client.HTTPConnection(ip, 80, timeout=5)
    try:
        c.request("GET", path, headers={"Host": f"bench.{DOMAIN}"})
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


def one_run(core, kind, n):
    name = f"{kind[:5]}{n}"
    t0 = time.monotonic()
    core.ok("service", "create", kind, name)
    t1 = time.monotonic()
    core.ok("service", "bind", name, "bench")
    t2 = time.monotonic()
    deadline = t2 + 30
    while get_status(core.ip, f"/get?type={kind}") != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the app never served with {kind} service {name}")
        time.sleep(0.01)  # polling the condition, bounded
    t3 = time.monotonic()
    core.ok("service", "delete", name, "--yes", "--force")
    return {"total_s": t3 - t0, "create_s": t1 - t0, "bind_s": t2 - t1, "first_answer_s": t3 - t2}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build-dir", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--keep", action="store_true", help="keep the data dirs (logs)")
    ap.add_argument("--out", default=os.path.join(HERE, "services_results.json"))
    args = ap.parse_args()
    build = os.path.abspath(args.build_dir)
    bins = {"kato": os.path.join(build, "bin", "kato"), "katod": os.path.join(build, "bin", "katod"),
            "katod_test": os.path.join(build, "test-bin", "katod-test")}
    results = {"machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                           "loadavg_start": os.getloadavg()}, "runs": args.runs, "types": {}}
    c = Cluster(bins, subnet=249, keep=args.keep)
    try:
        core = c.core(1, f"api.{DOMAIN}")
        svc = c.node(2)
        c.attach(svc, core, "data-services")
        c.attach(c.node(3), core, "dea")
        svc.wait_running(["postgresql", "mysql", "redis", "memcached", "rabbitmq", "services"])
        core.ok("app", "push", "bench", "--path", APP)
        wait_for("the router to serve the app", lambda: get_status(core.ip, "/") == 200, 15)
        samples = {t: [] for t in TYPES}
        for n in range(args.runs):
            for kind in TYPES:
                r = one_run(core, kind, n)
                samples[kind].append(r)
                log(f"  run {n} {kind}: {r['total_s']:.2f} s (create {r['create_s']:.2f}, "
                    f"bind {r['bind_s']:.2f}, first answer {r['first_answer_s']:.2f})")
        for kind in TYPES:
            results["types"][kind] = {k: stats([s[k] for s in samples[kind]])
                                      for k in ("total_s", "create_s", "bind_s", "first_answer_s")}
            results["types"][kind]["goal_s"] = GOAL_S[kind]
    finally:
        results["machine"]["loadavg_end"] = os.getloadavg()
        c.close()
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=2)
    print(f"{'type':<12}{'total':>8}{'create':>8}{'bind':>8}{'answer':>8}{'goal':>6}  (medians, s)")
    for kind, r in results["types"].items():
        print(f"{kind:<12}{r['total_s']['median_s']:>8}{r['create_s']['median_s']:>8}"
              f"{r['bind_s']['median_s']:>8}{r['first_answer_s']['median_s']:>8}{r['goal_s']:>6}")


if __name__ == "__main__":
    main()
