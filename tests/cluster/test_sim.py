"""kato-sim next to real nodes: 200 simulated nodes (hollow DEAs) join a real
core with the real token, and the cluster stays usable: `status --all` lists
every node in bounded time and still shows a dead one down, a role change on
a real node works as usual, and an app scales up across the simulated DEAs."""
import json
import os
import signal
import subprocess
import time

from conftest import wait_for

APPS = os.path.join(os.path.dirname(__file__), "apps")
SIM_NODES = 200


class Sim:
    """build/bin/kato-sim, started and stopped (SIGTERM: its nodes leave)."""

    def __init__(self, bins, cluster, core, nodes, *extra):
        self.log = open(os.path.join(cluster.root, "kato-sim.log"), "w")
        binary = os.path.join(os.path.dirname(bins["katod"]), "kato-sim")
        # Its own range of addresses per test subnet: 127.2.SUBNET.1 on.
        self.proc = subprocess.Popen(
            [binary, "--core", core.ip, "--token", cluster.token(core), "--nodes", str(nodes),
             "--first-ip", f"127.2.{cluster.subnet}.1", *extra],
            stdout=subprocess.PIPE, stderr=self.log, text=True, start_new_session=True)
        self.nodes = nodes

    def wait_up(self, timeout=120):
        deadline = time.monotonic() + timeout
        for line in self.proc.stdout:
            if line.strip() == f"{self.nodes} nodes up":
                return
            assert time.monotonic() < deadline, "kato-sim did not bring its nodes up in time"
        raise AssertionError(f"kato-sim exited ({self.proc.wait()}) before its nodes were up; "
                             f"see {self.log.name}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out = self.proc.communicate(timeout=120)[0]
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out = self.proc.communicate()[0]
        self.log.close()
        return self.proc.returncode, out


def test_two_hundred_simulated_deas_next_to_real_nodes(cluster, bins):
    core = cluster.core(1, "api.sim.test")
    real_dea = cluster.node(2)
    cluster.attach(real_dea, core, "dea")
    other = cluster.node(3)
    cluster.attach(other, core)
    # An app staged and running on the real DEA before the simulated ones come.
    core.ok("app", "push", "web", "--path", os.path.join(APPS, "web"), "--memory", "64")

    sim = Sim(bins, cluster, core, SIM_NODES, "--roles", "dea")
    try:
        sim.wait_up()
        prefix = f"127.2.{cluster.subnet}."

        def status_all():
            return json.loads(core.ok("status", "--all", "--json").out)["nodes"]

        # Joined; within a heartbeat each reports its DEA process.
        wait_for("every simulated node reporting its dea process", lambda: all(
            [p["name"] for p in n["processes"]] == ["dea"]
            for n in status_all() if n["ip"].startswith(prefix)), timeout=30, interval=0.5)
        # status --all: every node, all up, in bounded time (from the heartbeats).
        t0 = time.monotonic()
        nodes = status_all()
        status_s = time.monotonic() - t0
        assert len(nodes) == SIM_NODES + 3
        assert len([n for n in nodes if n["ip"].startswith(prefix)]) == SIM_NODES
        assert [n["ip"] for n in nodes if n["state"] != "up"] == []
        assert status_s < 5, f"status --all took {status_s:.2f} s at {len(nodes)} nodes"

        # A role change on a real node, among them.
        core.ok("role", "add", "-n", other.ip, "memcached")
        other.wait_running(["memcached"])
        assert "memcached" in other.json("info")["roles"]["assigned"]

        # A dead real node is still shown down, its processes unknown.
        other.kill9()
        def other_down():
            n = next(n for n in status_all() if n["ip"] == other.ip)
            return n["state"] == "down" and n
        down = wait_for("the killed node shown down", other_down, timeout=30)
        assert down["processes"] == []

        # Scale-up across the simulated DEAs: the scheduler spreads the instances.
        core.ok("app", "scale", "web", "400")
        def all_running():
            insts = core.json("app", "info", "web")["instances"]
            run = [i for i in insts if i["state"] == "RUNNING"]
            return len(run) == 400 and run
        run = wait_for("400 instances running", all_running, timeout=120, interval=0.5)
        on = {}
        for i in run:
            on[i["node_ip"]] = on.get(i["node_ip"], 0) + 1
        assert len(on) >= SIM_NODES, f"400 instances on only {len(on)} DEAs"
        assert max(on.values()) <= 3, f"uneven spread: {max(on.values())} on one DEA"
        # The real DEA keeps its instance.
        assert on.get(real_dea.ip, 0) >= 1

        core.ok("app", "scale", "web", "1")
        wait_for("scaled back to 1",
                 lambda: len(core.json("app", "info", "web")["instances"]) == 1, timeout=60,
                 interval=0.5)
    finally:
        rc, out = sim.stop()
    assert rc == 0, out
    assert f"{SIM_NODES} nodes detached" in out
    # They left: the real nodes remain.
    wait_for("the simulated nodes gone",
             lambda: len(core.json("node", "list")) == 3, timeout=60, interval=0.5)
