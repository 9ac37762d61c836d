"""The filesystem service on a real cluster (a core, a filesystem node, two
DEAs): the node's own sshd serves each service over SFTP from an ext4 image
of the plan's size, and the DEAs mount it with sshfs into the instances'
sandboxes at /app/fs/NAME. Two instances on two DEAs share a file; it
survives a re-push, a DEA killed with everything under it, a restart of the
filesystem node; a lost mount restarts the instance; delete removes the data
and the account."""
import json
import os
import pwd
import subprocess
import tempfile
import time

from conftest import get, wait_for

APPS = os.path.join(os.path.dirname(__file__), "apps")
DOMAIN = "fs.test"


def call(core, app, path, want_index=None, timeout=30):
    """GET path of app through the router (from the instance `want_index` when
    given: requests are repeated until that instance answers)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, body = get(core.ip, f"{app}.{DOMAIN}", path, timeout=10)
            out = json.loads(body) if body.startswith(b"{") else {"error": body.decode(errors="replace")}
            out["_status"] = status
        except OSError as e:
            out = {"_status": 0, "error": str(e)}
        if want_index is None or out.get("index") == want_index:
            return out
        if time.monotonic() > deadline:
            raise AssertionError(f"instance {want_index} of {app} did not answer {path}: {out}")


def read(core, app, name, index=None):
    r = call(core, app, f"/read?name={name}", index)
    assert r["_status"] == 200, r
    return r["value"]


def running(core, app):
    return [i for i in core.json("app", "info", app)["instances"] if i["state"] == "RUNNING"]


def sshfs_mounts(dea_tag, service):
    """The sshfs mounts of `service` on the DEA (one per instance)."""
    with open("/proc/self/mountinfo") as f:
        return [t for t in (line.split()[4] for line in f if " fuse.sshfs " in line)
                if t.startswith(f"/run/kato/dea-{dea_tag}/") and t.endswith(f"/fs/{service}")]


def node_id(node):
    with open(os.path.join(node.data_dir, "node.json")) as f:
        return json.load(f)["id"]


def test_filesystem_shared_persistent_and_isolated(cluster):
    core = cluster.core(1, f"api.{DOMAIN}")
    fsn = cluster.node(2)
    cluster.attach(fsn, core, "filesystem")
    deas = [cluster.node(i) for i in (3, 4)]
    for d in deas:
        cluster.attach(d, core, "dea")
    fsn.wait_running(["services"])

    t0 = time.monotonic()
    files = core.json("service", "create", "filesystem", "files", "--plan", "64M")
    print(f"create filesystem: {time.monotonic() - t0:.2f}s")
    assert files["state"] == "READY" and files["node_ip"] == fsn.ip, files
    assert files["port"] == 9450 and files["plan"] == "64M"
    assert "PRIVATE KEY" not in json.dumps(core.json("service", "info", "files"))
    other = core.json("service", "create", "filesystem", "other", "--plan", "64M")
    assert other["state"] == "READY"

    path = os.path.join(APPS, "filesystem")
    core.ok("app", "push", "fa", "--path", path, "--instances", "2", "--service", "files")
    core.ok("app", "push", "fb", "--path", path, "--service", "other")
    wait_for("the router to serve fa", lambda: call(core, "fa", "/env")["_status"] == 200, 20)
    insts = running(core, "fa")
    assert len(insts) == 2 and len({i["node_ip"] for i in insts}) == 2, insts  # one per DEA
    env = call(core, "fa", "/env")
    assert env["KATO_FILESYSTEM"] == "/app/fs/files" == env["STACKATO_FILESYSTEM"], env
    vcap = json.loads(env["VCAP_SERVICES"])
    assert vcap["filesystem"][0]["credentials"]["dir"] == "/app/fs/files"
    assert "PRIVATE KEY" not in env["VCAP_SERVICES"]

    # Two instances on two DEAs write and read the same files.
    assert call(core, "fa", "/write?name=note&value=from-0", 0)["_status"] == 200
    assert read(core, "fa", "note", 1) == "from-0"
    assert call(core, "fa", "/write?name=reply&value=from-1", 1)["_status"] == 200
    assert read(core, "fa", "reply", 0) == "from-1"
    # On the node: in the service's image, owned by its own account.
    user = files["credentials"]["username"]
    on_node = f"/run/kato-fs-{node_id(fsn)}/root/{user}/data/note"
    assert open(on_node).read() == "from-0"
    assert os.stat(on_node).st_uid == pwd.getpwnam(user).pw_uid
    # Another service is another directory: fb does not see fa's files.
    assert read(core, "fb", "note") is None
    # The plan is a size limit: writing past it fails (ENOSPC on the node,
    # which SFTP version 3 can only report as a failure: EIO in the app).
    fill = call(core, "fa", "/fill?mb=100")
    assert fill["_status"] == 200, fill
    assert fill["error"] in ("No space left on device", "Input/output error"), fill
    assert fill["written_mb"] < 64, fill

    # Only the account's own key gets in: a key of ours is refused by the sshd.
    with tempfile.TemporaryDirectory() as d:
        key = os.path.join(d, "k")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
        r = subprocess.run(["sftp", "-i", key, "-P", "9450", "-o", "BatchMode=yes",
                            "-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={d}/kh",
                            "-b", "-", f"{user}@{fsn.ip}"], input=b"ls\n", capture_output=True,
                           timeout=30)
        assert r.returncode != 0 and b"Permission denied" in r.stderr, r

    # A re-push replaces the instances: the files stay.
    core.ok("app", "push", "fa", "--path", path, "--instances", "2", "--service", "files")
    assert read(core, "fa", "note", 0) == "from-0"
    assert read(core, "fa", "note", 1) == "from-0"

    # A DEA dies with everything under it: the instances start on the other
    # one, which mounts the same service.
    victim = next(d for d in deas if d.ip == running(core, "fa")[0]["node_ip"])
    survivor = next(d for d in deas if d is not victim)
    victim.kill_all()
    wait_for("both instances on the surviving DEA", lambda: (
        len(r := running(core, "fa")) == 2 and all(i["node_ip"] == survivor.ip for i in r)), 60)
    assert read(core, "fa", "note", 0) == "from-0"
    assert read(core, "fa", "reply", 1) == "from-1"
    assert call(core, "fa", "/write?name=after&value=failover", 0)["_status"] == 200

    # The filesystem node's katod restarts: the images come back, the mounts reconnect.
    fsn.stop()
    fsn.start()
    fsn.wait_running(["services"])
    wait_for("the services READY again", lambda: all(
        s["state"] == "READY" for s in core.json("service", "list")), timeout=60)
    wait_for("fa reads its files after the node restart",
             lambda: call(core, "fa", "/read?name=after").get("value") == "failover", 60)

    # A mount that is lost (unmounted under the instance) restarts the
    # instance, which mounts it again; it never writes to the local disk.
    tag = "".join(c for c in node_id(survivor) if c in "0123456789abcdef")[:8]
    mounts = sshfs_mounts(tag, "files")
    assert len(mounts) == 2, mounts
    subprocess.run(["umount", "-l", mounts[0]], check=True)
    wait_for("the instance whose mount was lost replaced", lambda: (
        len(sshfs_mounts(tag, "files")) == 2 and mounts[0] not in sshfs_mounts(tag, "files")
        and len(running(core, "fa")) == 2), 60)
    assert read(core, "fa", "note", 0) == "from-0"
    assert read(core, "fa", "note", 1) == "from-0"

    # Bad input changes nothing.
    before = core.json("service", "list")
    for args, text in [
        (("create", "filesystem", "x", "--plan", "1M"), "between 64M and 64G"),
        (("create", "filesystem", "x", "--node", core.ip), "has no filesystem role"),
        (("create", "filesystem", "files"), "already exists"),
        (("delete", "files", "--yes"), "bound to fa"),
    ]:
        r = core.kato("service", *args)
        assert r.rc != 0 and text in r.err, (args, r)
    assert core.json("service", "list") == before

    # Delete (--force unbinds, replacing fa's instances): the data, the
    # account and its key go.
    image = os.path.join(fsn.data_dir, "services", "filesystem", "images", user[1:] + ".img")
    assert os.path.exists(image)
    core.ok("service", "delete", "files", "--yes", "--force")
    assert not os.path.exists(image)
    assert not os.path.exists(on_node)
    try:
        pwd.getpwnam(user)
        raise AssertionError(f"the account {user} is still there")
    except KeyError:
        pass
    wait_for("fa without its filesystem", lambda: "KATO_FILESYSTEM" not in call(core, "fa", "/env"), 60)
