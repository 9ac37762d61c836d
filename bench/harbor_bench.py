#!/usr/bin/python3
"""Harbor benchmark: TCP echo round trips per second through harbor (nginx's
stream proxy on the harbor node) vs directly to the instance, side by side in
the same run.

On a core (primary+controller+router), a harbor node and one DEA at
127.0.248.N (the harbor of tests/cluster/conftest.py), the echo app
tests/cluster/apps/harbor is pushed with one instance bound to a TCP harbor
service. "direct" is the instance's harbor port on its DEA (the DEA's DNAT to
the instance, as harbor's nginx reaches it); "harbor" is the public port on the
harbor node. Each measurement: C client threads, each with its own connection,
send 64-byte messages and wait for each echo, for --seconds; round trips per
second summed over the threads. The two targets alternate, --runs times each;
medians are reported, and the harbor/direct ratio.

Run as root. Usage: /usr/bin/python3 bench/harbor_bench.py --build-dir build [--runs 5]
Prints a table and writes bench/harbor_results.json (or --out).
"""
import argparse
import json
import os
import platform
import socket
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "cluster"))
from conftest import Cluster, wait_for  # noqa: E402  (the cluster tests' harness)
APP = os.path.join(HERE, "..", "tests", "cluster", "apps", "harbor")


def round_trips(ip, port, clients, seconds):
    counts = [0] * clients
    stop = time.monotonic() + seconds
    msg = b"x" * 64

    def run(i):
        with socket.create_connection((ip, port), timeout=5) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while time.monotonic() < stop:
                s.sendall(msg)
                got = 0
                while got < len(msg) + 2:  # "0 " + the message
                    got += len(s.recv(4096))
                counts[i] += 1
    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build-dir", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--clients", default="1,8", help="comma-separated client counts")
    ap.add_argument("--out", default=os.path.join(HERE, "harbor_results.json"))
    args = ap.parse_args()
    build = os.path.abspath(args.build_dir)
    bins = {"kato": os.path.join(build, "bin", "kato"), "katod": os.path.join(build, "bin", "katod"),
            "katod_test": os.path.join(build, "test-bin", "katod-test")}
    results = {"machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                           "loadavg_start": os.getloadavg()},
               "runs": args.runs, "seconds": args.seconds, "shapes": {}}
    c = Cluster(bins, subnet=248)
    try:
        core = c.core(1, "api.harbor.bench")
        hb = c.node(2)
        c.attach(hb, core, "harbor")
        dea = c.node(3)
        c.attach(dea, core, "dea")
        svc = core.json("service", "create", "harbor", "echo")
        core.ok("app", "push", "echo", "--path", APP, "--service", "echo")
        inst = core.json("app", "info", "echo")["instances"][0]
        direct = (inst["node_ip"], inst["harbor"][0]["port"])
        public = (hb.ip, svc["port"])
        wait_for("echo through harbor", lambda: round_trips(*public, 1, 0.2) > 0, 20)
        for clients in [int(x) for x in args.clients.split(",")]:
            samples = {"direct": [], "harbor": []}
            for _ in range(args.runs):
                for name, target in (("direct", direct), ("harbor", public)):
                    samples[name].append(round_trips(*target, clients, args.seconds))
            med = {k: statistics.median(v) for k, v in samples.items()}
            results["shapes"][f"{clients} clients"] = {
                "direct_rt_per_s": round(med["direct"]), "harbor_rt_per_s": round(med["harbor"]),
                "ratio": round(med["harbor"] / med["direct"], 2),
                "samples": {k: [round(x) for x in v] for k, v in samples.items()}}
            print(f"  {clients} clients: direct {med['direct']:.0f}/s, harbor {med['harbor']:.0f}/s",
                  file=sys.stderr, flush=True)
    finally:
        results["machine"]["loadavg_end"] = os.getloadavg()
        c.close()
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=2)
    print(f"{'shape':<12}{'direct/s':>10}{'harbor/s':>10}{'ratio':>7}  (medians)")
    for shape, r in results["shapes"].items():
        print(f"{shape:<12}{r['direct_rt_per_s']:>10}{r['harbor_rt_per_s']:>10}{r['ratio']:>7}")


if __name__ == "__main__":
    main()
