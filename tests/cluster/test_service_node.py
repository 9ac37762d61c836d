"""The service node's own processes (`katod services`): a per-instance redis
survives a crash of the provisioning process without a duplicate, keeps its
data, needs its password, and is gone (process and files) after delete."""
import os
import signal
import subprocess

import redis

from conftest import wait_for


def instance_pids(c):
    """redis-server names itself by its address in ps."""
    out = subprocess.run(["pgrep", "-f", f"redis-server {c['host']}:{c['port']}"],
                         capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_services_process_crash_and_delete(cluster):
    core = cluster.core(1)
    node = cluster.node(2)
    cluster.attach(node, core, "redis")
    node.wait_running(["redis", "services"])
    s = core.json("service", "create", "redis", "cache")
    assert s["state"] == "READY", s
    c = s["credentials"]
    dirs = os.listdir(f"{node.data_dir}/services/instances/redis")
    assert len(dirs) == 1  # named by the service's random id
    sid = dirs[0]
    try:
        redis.Redis(host=c["host"], port=c["port"], socket_timeout=5).ping()
        raise AssertionError("the instance answered without its password")
    except redis.exceptions.AuthenticationError:
        pass
    r = redis.Redis(host=c["host"], port=c["port"], password=c["password"], socket_timeout=5)
    r.set("k", "v")
    # The password is in no process's command line.
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert c["password"] not in ps
    assert len(instance_pids(c)) == 1

    # The provisioning process dies hard: its replacement takes the instance
    # over without running a second redis-server on the port.
    old = node.processes()["services"]["pid"]
    os.kill(old, signal.SIGKILL)
    wait_for("services back", lambda: (lambda p: p["services"]["state"] == "RUNNING" and
             p["services"]["pid"] != old)(node.processes()), timeout=60)
    wait_for("the instance serving again", lambda: r.get("k") == b"v", timeout=30)
    assert len(instance_pids(c)) == 1

    core.ok("service", "delete", "cache", "--yes")
    assert not os.path.exists(f"{node.data_dir}/services/instances/redis/{sid}")
    wait_for("its process gone", lambda: instance_pids(c) == [], timeout=15)
