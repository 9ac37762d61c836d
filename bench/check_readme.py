#!/usr/bin/env python3
"""Checks that the figures bench/README.md quotes are those of the committed
results files (results.json, results_attach.json, results_run_a.json,
apps_results.json, lb_results.json, tenant_results.json, router_streams_results.json,
harbor_results.json, services_results.json, filesystem_results.json,
staging_results.json, console_results.json, scale_results.json): each
table row named below must hold exactly the listed
numbers, in order, after its label, and each sentence below must appear
verbatim. Exits 1 naming every mismatch. Run by ctest (bench_readme).

bench/router/run.sh writes no results file: its figures are not checked here
(its section says how they were measured); bench/router/streams.sh writes
router_streams_results.json, whose table is.
"""
import json
import os
import re
import sys
from decimal import ROUND_HALF_UP, Decimal

HERE = os.path.dirname(os.path.abspath(__file__))


def load(name):
    with open(os.path.join(HERE, name)) as f:
        return json.load(f)


def rounded(x, places):
    """x rounded half up, as the README was written by hand (0.835 -> 0.84)."""
    q = Decimal(1).scaleb(-places)
    return str(Decimal(repr(x)).quantize(q, rounding=ROUND_HALF_UP))


def f1(x):
    return rounded(x, 1)


def f2(x):
    return rounded(x, 2)


def thousands(n):
    """24835 -> '24 835', as the README writes counts."""
    return f"{round(n):,}".replace(",", " ")


def current_rows(before, now, attach):
    """The "Current figures" table: run A ("before") then the current results ("after";
    attach figures from `attach`)."""
    st, mem = now["status"], now["memory"]
    rows = {"`kato status --all`, 20 nodes (goal ≤ 200)":
            [f1(before["status"]["status --all"][k]) for k in ("median_ms", "p90_ms")] +
            [f1(st["status --all"][k]) for k in ("median_ms", "p90_ms")]}
    for role in ("memcached", "redis"):
        was, att = before["attach"][role], attach["attach"][role]
        rows[f"`attach -e {role}`"] = [f1(was["attach"]["median_ms"]),
                                       f1(att["attach"]["median_ms"]), f1(att["attach"]["p90_ms"])]
        ready = f1(att["server_ready"]["median_ms"])
        rows[f"— overhead beyond {role}'s own {ready} ms to ready"] = [
            f1(was["overhead (paired per run)"]["median_ms"]),
            f1(att["overhead (paired per run)"]["median_ms"])]
    rows["katod RSS, core of the 20-node cluster (MiB)"] = [
        f1(before["memory"]["core_cluster_mib"]), f1(mem["core_cluster_mib"])]
    rows["katod RSS after 1000 `status` + 500 `status --all` (MiB)"] = [
        f1(before["memory"]["core_after_status_all_calls_mib"]),
        f1(mem["core_after_status_all_calls_mib"])]
    return rows


def run_a_rows(a):
    st, mem, cpu = a["status"], a["memory"], a["status"]["cpu_per_status_all"]
    rows = {}
    for label, key in (("`kato status` (local)", "status"), ("`kato status --json`", "status --json"),
                       ("**`kato status --all`**", "status --all"),
                       ("**`kato status --all --json`**", "status --all --json"),
                       ("`kato node list`", "node list")):
        rows[label] = [f1(st[key][k]) for k in ("median_ms", "p90_ms", "min_ms")]
    scaling = st["status --all scaling (nodes: stats)"]
    rows["run A"] = [f1(scaling[n]["median_ms"]) for n in ("1", "5", "10", "20")]
    rows["core katod (20 TLS client calls)"] = [f1(cpu["core_katod_cpu_ms"])]
    rows["the other 19 katods (serving `/v1/status`)"] = [f1(cpu["other_katods_cpu_ms"])]
    rows["primary"] = [f1(cpu["primary_cpu_ms"])]
    rows["CLI"] = [f1(cpu["cli_cpu_ms"])]
    total = sum(cpu[k] for k in ("core_katod_cpu_ms", "other_katods_cpu_ms", "primary_cpu_ms",
                                 "cli_cpu_ms"))
    rows["**total CPU** / wall time"] = [f1(total), f1(cpu["wall_ms"])]
    for role, ready_label in (("memcached", "memcached alone: ready"),
                              ("redis", "redis alone: ready")):
        r = a["attach"][role]
        rows[f"`attach -e {role}`"] = [f1(r["attach"]["median_ms"]), f1(r["attach"]["p90_ms"])]
        rows[ready_label] = [f1(r["server_ready"]["median_ms"]), f1(r["server_ready"]["p90_ms"])]
        rows[f"overhead#{role}"] = [f1(r["overhead (paired per run)"]["median_ms"]),
                                    f1(r["overhead (paired per run)"]["p90_ms"])]
        rows[f"phases#{role}"] = [f1(r["phases"][p]["median_ms"])
                                  for p in ("keygen", "join", "to_running", "after_running")]
    rows["fresh agent, not in a cluster"] = [f1(mem["idle_unattached_node_mib"])]
    rows["idle attached node, no role"] = [f1(mem["idle_attached_node_mib"])]
    rows["core, on its own"] = [f1(mem["core_alone_mib"])]
    rows["core of the 20-node cluster"] = [f1(mem["core_cluster_mib"])]
    rows["core after 1000 `kato status`"] = [f1(mem["core_after_status_calls_mib"])]
    rows["core after 500 more `kato status --all`"] = [f1(mem["core_after_status_all_calls_mib"])]
    rows["primary process (before → after)"] = [f1(mem["primary_process_mib"]),
                                                f1(mem["primary_process_after_mib"])]
    return rows


def apps_rows(apps):
    push, fo = apps["push"], apps["failover"]
    return {
        "push-to-serving (first 200 through the router)": [
            f2(push["serving"][k]) for k in ("median_s", "p90_s", "max_s")] + ["2"],
        "`kato app push` wall time": [f2(push["push_wall"][k])
                                      for k in ("median_s", "p90_s", "max_s")],
        "failover (kill → 3 RUNNING elsewhere)": [
            f2(fo["failover"][k]) for k in ("median_s", "p90_s", "max_s")] + ["3"],
        "— of which, down seen in `app info`": [f2(fo["detected"][k])
                                               for k in ("median_s", "p90_s", "max_s")],
    }


def f3(x):
    return rounded(x, 3)


def tenant_rows(t):
    """The tenant-isolation tables: before/after medians with the change in
    percent, and the DNAT bench's medians."""
    rows = {}
    for label, part, key in (("push-to-serving", "push", "serving"),
                             ("failover (kill -9 → 3 RUNNING elsewhere)", "failover", "failover")):
        was = t["apps_before"][part][key]["median_s"]
        now = t["apps_after"][part][key]
        change = round(abs(now["median_s"] - was) / was * 100)
        rows[label] = [f3(was), f3(now["median_s"]), f3(now["p90_s"]), str(change), "10"]
    d = t["dnat"]
    for label, key in (("through the namespace (DNAT, veth)", "dnat"),
                       ("directly on the host", "direct")):
        p50 = sorted(r["p50_ms"] for r in d["rounds"] if r["path"] == key)
        rows[label] = [thousands(d["median_rps"][key]), f3(p50[len(p50) // 2]),
                       f2(d["median_p99_ms"][key])]
    return rows


def tenant_sentences(t):
    fo = t["apps_after"]["failover"]
    return [f"0 of {thousands(fo['requests_total'])} requests failed during the failovers",
            f"Ratio DNAT / direct = **{f3(t['dnat']['ratio_dnat_over_direct'])}**"]


def lb_rows(lb):
    t = lb["throughput"]
    return {label: [thousands(t[key]["rps_median"]), f2(t[key]["p50_ms_median"]),
                    f2(t[key]["p99_ms_median"])]
            for label, key in (("one router directly", "router"),
                               ("load balancer (HTTP), 2 routers", "lb-http"),
                               ("load balancer (HTTPS), 2 routers", "lb-https"))}


# The streaming shapes' table: label -> (shape, key, format), kato then nginx
# (then kato/nginx for rates).
STREAM_ROWS = {
    "small responses, req/s": ("small", "req_s", "rate"),
    "small responses, p99 ms": ("small", "p99_ms", "ms"),
    "1 MiB responses, req/s": ("1mib", "req_s", "rate"),
    "1 MiB responses, p99 ms": ("1mib", "p99_ms", "ms"),
    "1 GiB download, MiB/s": ("1gib", "mib_s", "rate"),
    "1 GiB download, first byte ms": ("1gib", "ttfb_ms", "ms"),
    "1 KiB download, first byte ms": ("1gib", "ttfb_1kib_ms", "ms"),
    "1 GiB download, proxy RSS peak MiB": ("1gib", "rss_peak_mib", "mib"),
    "ten 1 GiB downloads, MiB/s in all": ("ten_1gib", "mib_s", "rate"),
    "ten 1 GiB downloads, proxy RSS peak MiB": ("ten_1gib", "rss_peak_mib", "mib"),
    "1,000 connections, req/s": ("conns_1000", "req_s", "rate"),
    "1,000 connections, p99 ms": ("conns_1000", "p99_ms", "ms"),
    "10,000 connections, req/s": ("conns_10000", "req_s", "rate"),
    "10,000 connections, p99 ms": ("conns_10000", "p99_ms", "ms"),
    "10,000 idle connections, proxy RSS MiB": ("idle_10000", "rss_mib", "mib"),
    "HTTPS keep-alive, req/s": ("tls_keepalive", "req_s", "rate"),
    "HTTPS keep-alive, p99 ms": ("tls_keepalive", "p99_ms", "ms"),
    "new TLS handshakes/s": ("tls_handshakes", "req_s", "rate"),
    "new TLS handshakes, p99 ms": ("tls_handshakes", "p99_ms", "ms"),
}


def stream_rows(r):
    rows = {}
    for label, (shape, key, fmt) in STREAM_ROWS.items():
        k = r["shapes"][shape]["kato"]["median"][key]
        n = r["shapes"][shape]["nginx"]["median"][key]
        if fmt == "rate":
            rows[label] = [thousands(k), thousands(n), f2(k / n)]
        elif fmt == "ms":
            rows[label] = [f2(k), f2(n)]
        else:
            rows[label] = [f1(k), f1(n)]
    return rows


def harbor_rows(h):
    return {f"{n} client{'s' if n > 1 else ''}": [
        thousands(h["shapes"][f"{n} clients"]["direct_rt_per_s"]),
        thousands(h["shapes"][f"{n} clients"]["harbor_rt_per_s"]),
        f2(h["shapes"][f"{n} clients"]["ratio"])] for n in (1, 8)}


def services_rows(r):
    return {t: [f2(v[k]["median_s"]) for k in ("total_s", "create_s", "bind_s", "first_answer_s")]
            + [str(round(v["goal_s"]))] for t, v in r["types"].items()}


def filesystem_rows(r):
    p, q = r["places"], r["ratio_fs_local"]
    return {label: [f1(p["local"][k]), f1(p["fs"][k]), f2(q[k])]
            for label, k in (("sequential write, MB/s", "write_mb_s"),
                             ("sequential read (cold), MB/s", "read_mb_s"),
                             ("small files created, files/s", "files_per_s"))}


def staging_rows(r):
    return {f"{kind} ({v['buildpack']})" if kind != v["buildpack"] else kind:
            [f2(v[k]["median_s"]) for k in ("first_s", "second_s", "direct_first_s", "direct_second_s")]
            for kind, v in r["apps"].items()}


def console_rows(r):
    fp, nodes, rl = r["first_paint"], r["nodes_page"], r["rate_limit"]
    row = lambda st: [f1(st[k]) for k in ("median_ms", "min_ms", "max_ms")]
    gq, gu = rl["good_logins_quiet"], rl["good_logins_under_guessing"]
    return {"console first paint": row(fp["console_fcp"]),
            "console sign-in form shown": row(fp["console_sign_in_shown"]),
            "nginx, same files: first paint": row(fp["nginx_fcp"]),
            "Cluster Nodes at 20 nodes shown": row(nodes["shown_20_nodes"]),
            "GET /v2/nodes (from Python)": row(nodes["api_v2_nodes"]),
            "one client, one account": [str(rl["guesses"]), str(rl["guesses_checked_401"]),
                                        str(rl["guesses_refused_429"])],
            "alone": [str(gq["ok"]), str(gq["of"]), f1(gq["median_ms"])],
            "during the guessing": [str(gu["ok"]), str(gu["of"]), f1(gu["median_ms"])]}


def scale_rows(r):
    """The control-plane table: per size, primary and controller CPU (% of a
    core), primary memory (MiB), status --all median and p90 (ms), connections
    to the primary, and the join time (none without simulated nodes)."""
    rows = {}
    for k, m in r["sizes"].items():
        label = "no simulated node" if k == "0" else f"{thousands(int(k))} nodes"
        st = m["status_all"]
        row = [f1(m["primary_cpu_pct"]), f1(m["controller_cpu_pct"]), f1(m["primary_rss_mib"]),
               f1(st["median_ms"]), f1(st["p90_ms"]), thousands(m["connections_to_primary"])]
        if "join_s" in m:
            row.append(f1(m["join_s"]))
        rows[label] = row
    return rows


def placement_rows(r):
    """The scheduling table: per run and the median, placed s, placements/s and
    all RUNNING s."""
    rows = {}
    for i, m in enumerate(r["runs"]):
        rows[f"run {i + 1}"] = [f"{m['placed_s']:.3f}", thousands(m["placements_per_s"]),
                                f"{m['running_s']:.3f}"]
    m = r["median"]
    rows["median"] = [f"{m['placed_s']:.3f}", thousands(round(m["placements_per_s"])),
                      f"{m['running_s']:.3f}"]
    return rows


def sentences(attach, run_a, apps, lb):
    """Figures quoted in running text."""
    fo, push = apps["failover"], apps["push"]
    phase = {p: " / ".join(f1(attach["attach"][r]["phases"][p]["median_ms"])
                           for r in ("memcached", "redis"))
             for p in ("keygen", "join", "to_running")}
    per_run = ", ".join(f"{r['requests_failed']}/{r['requests_total']}" for r in fo["runs"])
    warmup = next(r for r in push["runs"] if r["warmup"])
    fail = lb["failure"]
    trend = ", ".join(f1(m) for _, m in run_a["memory"]["core_trend_status_all (calls, MiB)"][1:])
    return [
        f"Attach phases now (medians, memcached / redis): keygen {phase['keygen']} ms,",
        f"certificate writes) {phase['join']} ms, until RUNNING {phase['to_running']} ms.",
        f"run A's quarter samples were {trend}.",
        f"Failed requests during failover: **{fo['requests_failed']} of "
        f"{thousands(fo['requests_total'])}** (per run: {per_run}).",
        f"The warm-up push took {f2(warmup['serving_s'])} s to serve.",
        f"**A router dies: {fail['failed']} of {thousands(fail['requests'])} requests failed",
        f"left nginx's pool {f2(fail['left_pool_s'])} s after the kill",
        f"was back {f2(fail['back_in_pool_s'])} s after its katod restarted",
        f"counted apart ({fail['retried_on_closed_keepalive']} in this run",
    ]


NUMBER = re.compile(r"\d{1,3}(?: \d{3})+(?:\.\d+)?|\d+(?:\.\d+)?")


def numbers_after(line, label):
    """The numbers in the cells after the cell holding `label`."""
    cells = line.split("|")
    i = next(i for i, c in enumerate(cells) if label in c)
    return NUMBER.findall("|".join(cells[i + 1:]))


def check_rows(lines, rows, start, end, where):
    """Each label names one table row between the lines `start` and `end`. The
    attach table repeats two labels per role: 'overhead#ROLE' and 'phases#ROLE'
    are the first such row after ROLE's `attach -e ROLE` row."""
    errors = []
    section = lines[start:end]
    for label, want in rows.items():
        text = label.split("#")[0]
        if "#" in label:  # repeated labels (**overhead**, phases): in role order
            role = label.split("#")[1]
            text = {"overhead": "**overhead**", "phases": "phases:"}[text]
            anchor = next(i for i, l in enumerate(section) if f"`attach -e {role}`" in l)
            matches = [l for l in section[anchor:] if l.startswith("|") and text in l][:1]
        else:
            matches = [l for l in section
                       if l.startswith("|") and l.split("|")[1].strip() == text]
        if len(matches) != 1:
            errors.append(f"{where}: expected one table row '{text}', found {len(matches)}")
            continue
        got = numbers_after(matches[0], text)
        if got != want:
            errors.append(f"{where}: row '{text}': README has {got}, the results say {want}")
    return errors


def section_bounds(lines, heading, next_heading):
    start = lines.index(heading)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith(next_heading)),
               len(lines))
    return start, end


def main():
    with open(os.path.join(HERE, "README.md")) as f:
        readme = f.read()
    lines = readme.splitlines()
    now, run_a = load("results.json"), load("results_run_a.json")
    apps, lb = load("apps_results.json"), load("lb_results.json")
    attach_now = load("results_attach.json")

    errors = []
    s, e = section_bounds(lines, "## Current figures (after the fixes below)", "## ")
    errors += check_rows(lines, current_rows(run_a, now, attach_now), s, e, "Current figures")
    s, e = section_bounds(lines, "## Earlier results (run A, before the fixes)", "## ")
    errors += check_rows(lines, run_a_rows(run_a), s, e, "Earlier results (run A)")
    s, e = section_bounds(lines, "# Apps: push-to-serving and failover", "# ")
    errors += check_rows(lines, apps_rows(apps), s, e, "Apps")
    s, e = section_bounds(lines, "# Load balancer: nginx over two routers, and a router dying",
                          "# ")
    errors += check_rows(lines, lb_rows(lb), s, e, "Load balancer")
    tenant = load("tenant_results.json")
    s, e = section_bounds(lines, "# Tenant isolation: push, failover and the router through DNAT",
                          "# ")
    errors += check_rows(lines, tenant_rows(tenant), s, e, "Tenant isolation")
    s, e = section_bounds(lines, "## Streaming, connections and TLS (bench/router/streams.sh)",
                          "#")
    errors += check_rows(lines, stream_rows(load("router_streams_results.json")), s, e,
                         "Router streaming")
    s, e = section_bounds(lines, "# Harbor: TCP echo through nginx's stream proxy vs directly", "# ")
    errors += check_rows(lines, harbor_rows(load("harbor_results.json")), s, e, "Harbor")
    s, e = section_bounds(lines, "# Data services: provision + bind + the app serving with the "
                          "credentials", "# ")
    errors += check_rows(lines, services_rows(load("services_results.json")), s, e, "Data services")
    s, e = section_bounds(lines, "# Filesystem service: sshfs vs the instance's local disk", "# ")
    errors += check_rows(lines, filesystem_rows(load("filesystem_results.json")), s, e, "Filesystem")
    s, e = section_bounds(lines, "# Control plane at scale: kato-sim's nodes on one core", "# ")
    errors += check_rows(lines, scale_rows(load("scale_results.json")), s, e, "Control plane")
    s, e = section_bounds(lines, "# Scheduling at scale: 10,000 instances on 1,000 simulated DEAs",
                          "# ")
    errors += check_rows(lines, placement_rows(load("placement_results.json")), s, e,
                         "Scheduling")
    s, e = section_bounds(lines, "# Staging: push-to-serving per buildpack", "# ")
    errors += check_rows(lines, staging_rows(load("staging_results.json")), s, e, "Staging")
    s, e = section_bounds(lines, "# Management Console: first paint, Cluster Nodes at 20 nodes, "
                          "login rate limits", "# ")
    errors += check_rows(lines, console_rows(load("console_results.json")), s, e, "Console")
    flat = " ".join(readme.split())
    for sentence in sentences(attach_now, run_a, apps, lb) + tenant_sentences(tenant):
        if sentence not in flat:
            errors.append(f"text: README does not say {sentence!r}")
    for err in errors:
        print(err, file=sys.stderr)
    if errors:
        print(f"bench/README.md: {len(errors)} figure(s) differ from the results files",
              file=sys.stderr)
        return 1
    print("bench/README.md: every checked figure matches the results files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
