"""Tenant isolation on a real cluster (issue "Tenant isolation"): a probe app
tries, from inside its instance, everything an app must not reach; a disk
filler and a fork bomb stop at their limits; an app's environment never
reaches a privileged process; and nothing of the instances' networks, disks
or rules outlives them (kill -9 of the DEA, detach)."""
import json
import os
import shutil
import socket
import subprocess
import tempfile

from conftest import get, wait_for

APPS = os.path.join(os.path.dirname(__file__), "apps")


def probe(core, host, path, timeout=10):
    # `app push` returns on the controller's RUNNING; the router may follow
    # its watch a moment later (bounded: it re-reads at least every 3 s).
    wait_for(f"{host} served", lambda: b"no running instance" not in get(core.ip, host, "/whoami")[1],
             timeout=10)
    status, body = get(core.ip, host, path, timeout=timeout)
    assert status == 200, (path, status, body)
    return json.loads(body)


def reachable_from_host(ip, port, send=None):
    try:
        with socket.create_connection((ip, port), timeout=2) as s:
            if send is None:
                return True
            s.sendall(send)
            return bool(s.recv(64))
    except OSError:
        return False


def dea_leftovers(dea):
    """What exists on the host of this DEA's namespaces, veths, DNAT entries and disks."""
    tag = dea.json("info")["id"][:8].lower()
    netns = sorted(n for n in os.listdir("/run/netns") if n.startswith(f"kato-{tag}-")) \
        if os.path.isdir("/run/netns") else []
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    veths = sorted(l.split(": ")[1].split("@")[0] for l in links.splitlines()
                   if l.split(": ")[1].startswith(f"k{tag}-"))
    table = subprocess.run(["nft", "-j", "list", "map", "ip", f"kato_{tag}", "ports"],
                           capture_output=True, text=True)
    dnat = None
    if table.returncode == 0:
        maps = [o["map"] for o in json.loads(table.stdout)["nftables"] if "map" in o]
        dnat = len(maps[0].get("elem", []))
    mounts = [l.split()[4] for l in open("/proc/self/mountinfo")
              if l.split()[4].startswith(f"/run/kato/dea-{tag}/")]
    return {"netns": netns, "veths": veths, "dnat": dnat, "table": table.returncode == 0,
            "mounts": sorted(mounts)}


def instances_on(core, node_ip):
    return [i for a in core.json("app", "list") for i in core.json("app", "info", a["name"])["instances"]
            if i["node_ip"] == node_ip and i["state"] == "RUNNING"]


def test_an_instance_reaches_only_what_it_is_meant_to(cluster):
    core = cluster.core(1, "api.tenant.test")
    dea = cluster.node(2)
    cluster.attach(dea, core, "dea", "redis", "memcached", "postgresql", "mysql")
    core.ok("app", "push", "probe", "--path", os.path.join(APPS, "probe"), "--memory", "128")
    core.ok("app", "push", "web", "--path", os.path.join(APPS, "web"), "--memory", "64")
    host = "probe.tenant.test"
    web = core.json("app", "info", "web")["instances"][0]

    # Everything below is listening: the host reaches it (the control).
    targets = {
        "redis": (dea.ip, 6379, "PING\r\n"),
        "memcached": (dea.ip, 11211, "version\r\n"),
        "postgresql": (dea.ip, 5432, None),
        "mariadb": (dea.ip, 3306, None),
        "controller-api": (core.ip, 9022, None),
        "controller-internal": (core.ip, 9023, None),
        "primary": (core.ip, 9440, None),
        "agent": (dea.ip, 9441, None),
        "other-app": (dea.ip, web["port"], None),
        "router-health": (core.ip, 9444, None),
    }
    for name, (ip, port, send) in targets.items():
        assert reachable_from_host(ip, port, send and send.encode()), name
    # From inside the instance, each is refused.
    reached = {}
    for name, (ip, port, send) in targets.items():
        q = f"/connect?host={ip}&port={port}" + (f"&send={send}" if send else "")
        reached[name] = probe(core, host, q.replace("\r\n", "%0D%0A"))
    assert all(not r["connected"] for r in reached.values()), reached

    # The same app still serves through the router and reaches another app through it.
    assert probe(core, host, f"/http?host={core.ip}&name=web.tenant.test")["status"] == 200
    # An operator rule opens one service (within about a second: the DEA's settings refresh).
    core.ok("config", "set", "dea", "egress_allow", f'["{dea.ip}/32:6379"]')
    wait_for("redis allowed by egress_allow", lambda: probe(
        core, host, f"/connect?host={dea.ip}&port=6379&send=PING%0D%0A").get("reply", "").startswith(
        "+PONG") or "-NOAUTH" in probe(core, host, f"/connect?host={dea.ip}&port=6379&send=PING%0D%0A")
        .get("reply", ""), timeout=10)
    assert not probe(core, host, f"/connect?host={dea.ip}&port=11211")["connected"]
    core.ok("config", "del", "dea", "egress_allow")
    wait_for("redis refused again", lambda: not probe(
        core, host, f"/connect?host={dea.ip}&port=6379")["connected"], timeout=10)
    # Bad rules are refused and change nothing.
    r = core.kato("config", "set", "dea", "egress_allow", '["10.0.0.0/8"]')
    assert r.rc != 0 and "no :PORT" in r.err


def test_outside_destinations_are_reachable_and_masqueraded(cluster):
    """An address outside the cluster's nodes (a namespace standing for the
    internet) is reachable, from the instance's own range, NATed."""
    ns = f"kato-test-out-{cluster.subnet}"
    host_if, out_if = f"ktout{cluster.subnet}", "eth0"
    prefix = f"198.18.{cluster.subnet}"
    server = None
    try:
        for cmd in ([f"ip netns add {ns}"],
                    [f"ip link add {host_if} type veth peer name {out_if} netns {ns}"],
                    [f"ip addr add {prefix}.1/30 dev {host_if}", f"ip link set {host_if} up"],
                    [f"ip -n {ns} addr add {prefix}.2/30 dev {out_if}", f"ip -n {ns} link set {out_if} up",
                     f"ip -n {ns} link set lo up"]):
            for c in cmd:
                subprocess.run(c.split(), check=True)
        server = subprocess.Popen(
            ["ip", "netns", "exec", ns, "/usr/bin/python3", "-c",
             "import socket\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
             f"s.bind(('{prefix}.2', 8080)); s.listen(8)\n"
             "while True:\n    c, peer = s.accept(); c.sendall(peer[0].encode()); c.close()\n"])
        core = cluster.core(1, "api.out.test")
        dea = cluster.node(2)
        cluster.attach(dea, core, "dea")
        core.ok("app", "push", "probe", "--path", os.path.join(APPS, "probe"), "--memory", "64")
        r = wait_for("the outside server", lambda: (lambda r: r if r.get("connected") else None)(
            probe(core, "probe.out.test", f"/connect?host={prefix}.2&port=8080&send=x")), timeout=10)
        # The server saw the host's address, not the instance's: masqueraded.
        assert r["reply"] == f"{prefix}.1", r
    finally:
        if server:
            server.kill()
            server.wait()
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_limits_environment_and_leftovers(cluster):
    core = cluster.core(1, "api.limits.test")
    dea = cluster.node(2)
    cluster.attach(dea, core, "dea")

    # App A ships a library; app B names it by its host path in LD_PRELOAD.
    # Its constructor would write a file on the host if it ran outside a sandbox.
    work = tempfile.mkdtemp(prefix="kato-preload-")
    try:
        proof = f"/tmp/kato-preload-proof-{cluster.subnet}"
        if os.path.exists(proof):
            os.remove(proof)
        shutil.copytree(os.path.join(APPS, "web"), os.path.join(work, "a"))
        src = os.path.join(work, "probe.c")
        with open(src, "w") as f:
            f.write('#include <stdio.h>\n#include <unistd.h>\n'
                    '__attribute__((constructor)) static void probe(void) {\n'
                    f'  FILE* f = fopen("{proof}", "a");\n'
                    '  if (f) { fprintf(f, "uid=%d\\n", (int)getuid()); fclose(f); }\n}\n')
        subprocess.run(["cc", "-shared", "-fPIC", "-o", os.path.join(work, "a", "evil.so"), src],
                       check=True)
        core.ok("app", "push", "a", "--path", os.path.join(work, "a"), "--memory", "64")
        a_id = core.json("app", "info", "a")["instances"][0]["instance_id"]
        tag = dea.json("info")["id"][:8].lower()
        lib = f"/run/kato/dea-{tag}/{a_id}/app/evil.so"
        assert os.path.exists(lib), "the library's host path (what an attacker would name)"
        core.ok("app", "push", "b", "--path", os.path.join(APPS, "web"), "--memory", "64",
                "--env", f"LD_PRELOAD={lib}")
        # RUNNING is the controller's word; the router follows its watch a moment later.
        wait_for("b served", lambda: get(core.ip, "b.limits.test")[0] == 200, timeout=10)
        assert not os.path.exists(proof), open(proof).read()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    # Disk: a filler stops at its quota; the node's data dir is untouched.
    core.ok("app", "push", "filler", "--path", os.path.join(APPS, "probe"), "--memory", "512",
            "--disk", "64")
    r = probe(core, "filler.limits.test", "/fill?mb=200", timeout=60)
    assert r["error"] and "No space left" in r["error"], r
    assert r["written"] <= 64 << 20, r
    # What it took of the node's disk is its image, bounded by the quota.
    filler = core.json("app", "info", "filler")["instances"][0]["instance_id"]
    image = os.path.join(dea.data_dir, "dea", "instances", filler, "disk.img")
    assert os.stat(image).st_blocks * 512 <= 64 << 20

    # Processes: a fork bomb stops at the pids limit; the node keeps working.
    r = probe(core, "filler.limits.test", "/forkbomb?limit=5000", timeout=60)
    assert r["error"] and r["started"] < 1024, r
    assert get(core.ip, "a.limits.test")[0] == 200
    assert dea.ok("status").rc == 0

    # Leftovers: kill -9 of the DEA node with everything under it, then restart.
    wait_for("3 instances running", lambda: len(instances_on(core, dea.ip)) == 3, timeout=30)
    running = 3
    left = dea_leftovers(dea)
    assert len(left["netns"]) == running and len(left["veths"]) == running, left
    assert left["dnat"] == running and len(left["mounts"]) == running, left
    dea.kill_all()
    dea.start()
    dea.wait_running(["dea"])
    wait_for("the instances back", lambda: len(instances_on(core, dea.ip)) == 3, timeout=60)

    def only_current(left):
        return (len(left["netns"]) == len(left["veths"]) == left["dnat"] == len(left["mounts"])
                == running)
    # The restarted DEA cleared the killed one's namespaces, veths, rules and
    # disks, and made its instances again: exactly one of each per instance.
    wait_for("one namespace, veth, DNAT entry and disk per instance",
             lambda: only_current(dea_leftovers(dea)), timeout=30)

    # Detach: nothing remains.
    dea.ok("node", "detach")
    wait_for("everything of the DEA removed", lambda: (lambda l: not l["netns"] and not l["veths"]
             and not l["table"] and not l["mounts"])(dea_leftovers(dea)), timeout=30)
