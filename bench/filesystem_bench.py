#!/usr/bin/python3
"""Filesystem-service benchmark for kato on real katod processes: what an app
instance gets from a filesystem service (sshfs from the filesystem node's
sshd, at /app/fs/NAME) against its own local disk (/home/app, the instance's
ext4 image), side by side in the same instance and run.

On a core (primary+controller+router), a filesystem node and one DEA at
127.0.247.N (the harness of tests/cluster/conftest.py), the app
tests/cluster/apps/filesystem is pushed bound to a 1G filesystem service.
Each run, for each place (local, then fs), the app itself measures:
  write   MB of 1 MB writes to a new file, then fsync: MB/s
  read    the file read back, after the host dropped its page cache
          (`sync; echo 3 > /proc/sys/vm/drop_caches`, so that neither read
          comes from memory): MB/s
  files   small files created (open, 4 KB write, close): files/s
Medians over the runs, and the ratio fs/local. The machine is shared: the
ratios are the figures to compare.

Run as root. Usage: /usr/bin/python3 bench/filesystem_bench.py --build-dir build [--runs 5]
Prints a table and writes bench/filesystem_results.json (or --out).
"""
import argparse
import http.client
import json
import os
import platform
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "cluster"))
from conftest import Cluster, wait_for  # noqa: E402  (the cluster tests' harness)
APP = os.path.join(HERE, "..", "tests", "cluster", "apps", "filesystem")
DOMAIN = "fs.bench"
PLACES = ["local", "fs"]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def call(ip, path, timeout=300):
    c = http.client.HTTPConnection(ip, 80, timeout=timeout)
    try:
        c.request("GET", path, headers={"Host": f"bench.{DOMAIN}"})
        r = c.getresponse()
        body = json.loads(r.read() or b"{}")
        if r.status != 200:
            raise RuntimeError(f"{path}: HTTP {r.status}: {body}")
        return body
    finally:
        c.close()


def drop_caches():
    subprocess.run(["sync"], check=True)
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def one_run(ip, mb, files):
    out = {}
    for where in PLACES:
        w = call(ip, f"/bench/write?where={where}&mb={mb}")["seconds"]
        cold = drop_caches()
        r = call(ip, f"/bench/read?where={where}")
        f = call(ip, f"/bench/files?where={where}&n={files}")["seconds"]
        out[where] = {"write_mb_s": mb / w, "read_mb_s": r["mb"] / r["seconds"],
                      "files_per_s": files / f, "read_cold": cold}
    return out


def median(xs):
    return round(statistics.median(xs), 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build-dir", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mb", type=int, default=128, help="size of the sequential file")
    ap.add_argument("--files", type=int, default=500, help="small files per run")
    ap.add_argument("--keep", action="store_true", help="keep the data dirs (logs)")
    ap.add_argument("--out", default=os.path.join(HERE, "filesystem_results.json"))
    args = ap.parse_args()
    build = os.path.abspath(args.build_dir)
    bins = {"kato": os.path.join(build, "bin", "kato"), "katod": os.path.join(build, "bin", "katod"),
            "katod_test": os.path.join(build, "test-bin", "katod-test")}
    results = {"machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                           "loadavg_start": os.getloadavg()},
               "runs": args.runs, "mb": args.mb, "files": args.files, "places": {}}
    c = Cluster(bins, subnet=247, keep=args.keep)
    samples = []
    try:
        core = c.core(1, f"api.{DOMAIN}")
        fsn = c.node(2)
        c.attach(fsn, core, "filesystem")
        c.attach(c.node(3), core, "dea")
        fsn.wait_running(["services"])
        core.ok("service", "create", "filesystem", "files", "--plan", "1G")
        core.ok("app", "push", "bench", "--path", APP, "--memory", "512", "--service", "files")
        wait_for("the router to serve the app", lambda: call(core.ip, "/env", 5), 20)
        for n in range(args.runs):
            r = one_run(core.ip, args.mb, args.files)
            samples.append(r)
            log(f"  run {n}: " + ", ".join(
                f"{w} write {r[w]['write_mb_s']:.0f} MB/s read {r[w]['read_mb_s']:.0f} MB/s "
                f"files {r[w]['files_per_s']:.0f}/s" for w in PLACES))
        for where in PLACES:
            results["places"][where] = {
                k: median([s[where][k] for s in samples])
                for k in ("write_mb_s", "read_mb_s", "files_per_s")}
            results["places"][where]["read_cold"] = all(s[where]["read_cold"] for s in samples)
        results["ratio_fs_local"] = {
            k: round(statistics.median([s["fs"][k] / s["local"][k] for s in samples]), 2)
            for k in ("write_mb_s", "read_mb_s", "files_per_s")}
    finally:
        results["machine"]["loadavg_end"] = os.getloadavg()
        c.close()
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=2)
    print(f"{'place':<8}{'write MB/s':>12}{'read MB/s':>12}{'files/s':>10}  (medians of {args.runs})")
    for where, r in results["places"].items():
        print(f"{where:<8}{r['write_mb_s']:>12}{r['read_mb_s']:>12}{r['files_per_s']:>10}")
    if "ratio_fs_local" in results:
        q = results["ratio_fs_local"]
        print(f"{'fs/local':<8}{q['write_mb_s']:>12}{q['read_mb_s']:>12}{q['files_per_s']:>10}")


if __name__ == "__main__":
    main()
