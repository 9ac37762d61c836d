#!/usr/bin/python3
"""Staging benchmark for kato on real katod processes: push-to-serving for
each built-in buildpack, first push (cold build cache) and second push
(changed source, warm cache), beside the same build run directly on the host.

On a core (primary+controller+router) and one DEA at 127.0.248.N (the
harness of tests/cluster/conftest.py), each run pushes every app of
tests/cluster/apps/staging under a new name (a first push: nothing cached
on the DEA), then pushes it again with one more file (release.txt), so that
the source changes and is staged again with the app's build cache. The time
is from the start of `kato app push` (archive, upload, staging in the
sandbox, droplet upload, the instance started) until the app answers 200
through the router (polled every 10 ms).

The reference is the buildpack's own work: the same bin/compile run
directly on the host in a fresh copy of the app (no sandbox, no disk image,
no upload), with an empty cache for the first push and the cache that run
left for the second. Goals (issue "Staging"): second push of the Express
app under 5 s, of the static site under 2 s; `cf push` is published in tens
of seconds.

Run as root. Usage: /usr/bin/python3 bench/staging_bench.py --build-dir build [--runs 3]
Prints a table and writes bench/staging_results.json (or --out).
"""
import argparse
import http.client
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "cluster"))
from conftest import Cluster  # noqa: E402  (the cluster tests' harness)
APPS = os.path.join(HERE, "..", "tests", "cluster", "apps", "staging")
PACKS = os.path.join(HERE, "..", "buildpacks")
KINDS = {"express": "nodejs", "flask": "python", "static": "static", "go": "go",
         "procfile": "procfile"}
GOALS_S = {"express": 5.0, "static": 2.0}  # second push
DOMAIN = "stage.bench"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def stats(samples):
    s = sorted(samples)
    return {"n": len(s), "median_s": round(statistics.median(s), 3), "min_s": round(s[0], 3),
            "max_s": round(s[-1], 3)}


def answers(ip, host):
    c = http.client.HTTPConnection(ip, 80, timeout=5)
    try:
        c.request("GET", "/", headers={"Host": host})
        r = c.getresponse()
        r.read()
        return r.status == 200
    except OSError:
        return False
    finally:
        c.close()


def push_to_serving(core, name, path):
    t0 = time.monotonic()
    core.ok("app", "push", name, "--path", path, timeout=600)
    deadline = time.monotonic() + 30
    while not answers(core.ip, f"{name}.{DOMAIN}"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} never answered through the router")
        time.sleep(0.01)  # polling the condition, bounded
    return time.monotonic() - t0


def direct_compile(kind, src, cache):
    """The buildpack's bin/compile on the host, in a fresh copy of the app."""
    with tempfile.TemporaryDirectory() as tmp:
        build, env = os.path.join(tmp, "app"), os.path.join(tmp, "env")
        shutil.copytree(src, build)
        os.mkdir(env)
        t0 = time.monotonic()
        subprocess.run([os.path.join(PACKS, KINDS[kind], "bin", "compile"), build, cache, env],
                       check=True, capture_output=True, cwd=build,
                       env=dict(os.environ, HOME=tmp))
        return time.monotonic() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build-dir", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the data dirs (logs)")
    ap.add_argument("--out", default=os.path.join(HERE, "staging_results.json"))
    args = ap.parse_args()
    build = os.path.abspath(args.build_dir)
    bins = {"kato": os.path.join(build, "bin", "kato"), "katod": os.path.join(build, "bin", "katod"),
            "katod_test": os.path.join(build, "test-bin", "katod-test")}
    results = {"machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                           "loadavg_start": os.getloadavg()}, "runs": args.runs, "apps": {}}
    samples = {k: {"first_s": [], "second_s": [], "direct_first_s": [], "direct_second_s": []}
               for k in KINDS}
    c = Cluster(bins, subnet=248, keep=args.keep)
    work = tempfile.mkdtemp(prefix="kato-staging-bench-")
    try:
        core = c.core(1, f"api.{DOMAIN}")
        c.attach(c.node(2), core, "dea")
        for n in range(args.runs):
            for kind in KINDS:
                src = os.path.join(work, f"{kind}{n}")
                shutil.copytree(os.path.join(APPS, kind), src)
                name = f"{kind}{n}"
                first = push_to_serving(core, name, src)
                with open(os.path.join(src, "release.txt"), "w") as f:
                    f.write(f"run {n}\n")
                second = push_to_serving(core, name, src)
                core.ok("app", "delete", name)
                cache = os.path.join(work, f"cache-{kind}{n}")
                os.mkdir(cache)
                direct_first = direct_compile(kind, src, cache)
                direct_second = direct_compile(kind, src, cache)
                for k, v in (("first_s", first), ("second_s", second),
                             ("direct_first_s", direct_first), ("direct_second_s", direct_second)):
                    samples[kind][k].append(v)
                log(f"  run {n} {kind}: first {first:.2f} s, second {second:.2f} s; "
                    f"compile on the host {direct_first:.2f} / {direct_second:.2f} s")
        for kind in KINDS:
            r = {k: stats(v) for k, v in samples[kind].items()}
            r["buildpack"] = KINDS[kind]
            if kind in GOALS_S:
                r["goal_second_s"] = GOALS_S[kind]
            results["apps"][kind] = r
    finally:
        results["machine"]["loadavg_end"] = os.getloadavg()
        c.close()
        shutil.rmtree(work, ignore_errors=True)
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=2)
    print(f"{'app':<10}{'first':>8}{'second':>8}{'host 1st':>10}{'host 2nd':>10}  (medians, s)")
    for kind, r in results["apps"].items():
        print(f"{kind:<10}{r['first_s']['median_s']:>8}{r['second_s']['median_s']:>8}"
              f"{r['direct_first_s']['median_s']:>10}{r['direct_second_s']['median_s']:>10}")


if __name__ == "__main__":
    main()
