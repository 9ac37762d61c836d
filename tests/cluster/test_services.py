"""Data services for apps on a real cluster (a core, a node with every data
role, two DEAs): services provisioned on the real servers, bound apps that
write and read through them with Debian's client libraries, isolation between
services and from unbound apps, a restart of the service node, deletion."""
import json
import os
import time
import urllib.parse

import pika
import psycopg2
import pymysql
import pytest
import redis

from conftest import Traffic, get, wait_for

APPS = os.path.join(os.path.dirname(__file__), "apps")
TYPES = ["postgresql", "mysql", "redis", "memcached", "rabbitmq"]
DOMAIN = "svc.test"


def call(core, app, path, timeout=20):
    """GET path of app through the router: its JSON, or the error it reported."""
    status, body = get(core.ip, f"{app}.{DOMAIN}", path, timeout=timeout)
    out = json.loads(body) if body.startswith(b"{") else {"error": body.decode(errors="replace")}
    out["_status"] = status
    return out


def put(core, app, kind, value):
    r = call(core, app, f"/put?type={kind}&value={urllib.parse.quote(value)}")
    assert r["_status"] == 200, (kind, r)


def read(core, app, kind):
    r = call(core, app, f"/get?type={kind}")
    assert r["_status"] == 200, (kind, r)
    return r["value"]


def connects(kind, c, **override):
    """Whether the test host gets in with credentials c (fields overridden)."""
    c = dict(c, **override)
    try:
        if kind == "postgresql":
            psycopg2.connect(host=c["host"], port=c["port"], user=c["username"], password=c["password"],
                             dbname=c["name"], connect_timeout=5).close()
        elif kind == "mysql":
            conn = pymysql.connect(host=c["host"], port=c["port"], user=c["username"],
                                   password=c["password"], connect_timeout=5)
            with conn.cursor() as cur:
                cur.execute(f"USE `{c['name']}`")
            conn.close()
        elif kind == "redis":
            redis.Redis(host=c["host"], port=c["port"], password=c["password"], socket_timeout=5).ping()
        elif kind == "rabbitmq":
            pika.BlockingConnection(pika.ConnectionParameters(
                host=c["host"], port=c["port"], virtual_host=c["vhost"],
                credentials=pika.PlainCredentials(c["username"], c["password"]),
                connection_attempts=1, socket_timeout=5)).close()
        elif kind == "memcached":
            from pymemcache.client.base import Client
            client = Client((c["host"], c["port"]), connect_timeout=5, timeout=5)
            client.set("auth", f'{c["username"]} {c["password"]}', noreply=False)
            client.set("probe", "1", noreply=False)
            return client.get("probe") == b"1"
        return True
    except Exception:
        return False


def test_services_provision_bind_isolate_restart_delete(cluster):
    core = cluster.core(1, f"api.{DOMAIN}")
    svc = cluster.node(2)
    cluster.attach(svc, core, "data-services")
    for i in (3, 4):
        cluster.attach(cluster.node(i), core, "dea")
    svc.wait_running(["postgresql", "mysql", "redis", "memcached", "rabbitmq", "services"])

    # Two services of each type; each has credentials of its own.
    first, second = {}, {}
    for kind in TYPES:
        t0 = time.monotonic()
        first[kind] = core.json("service", "create", kind, f"{kind}-1")
        print(f"create {kind}: {time.monotonic() - t0:.2f}s")
        second[kind] = core.json("service", "create", kind, f"{kind}-2")
        for s in (first[kind], second[kind]):
            assert s["state"] == "READY" and s["node_ip"] == svc.ip, s
        assert first[kind]["credentials"]["password"] != second[kind]["credentials"]["password"]
    listed = {s["name"]: s for s in core.json("service", "list")}
    assert set(listed) == {f"{k}-{n}" for k in TYPES for n in (1, 2)}
    assert all("credentials" not in s for s in listed.values())
    info = core.json("service", "info", "redis-1")
    assert info["credentials"] == first["redis"]["credentials"]

    # app a uses the first of each type, app b the second ones, app c none.
    path = os.path.join(APPS, "services")
    core.ok("app", "push", "a", "--path", path, "--instances", "2",
            *[x for k in TYPES for x in ("--service", f"{k}-1")])
    core.ok("app", "push", "b", "--path", path, *[x for k in TYPES for x in ("--service", f"{k}-2")])
    core.ok("app", "push", "c", "--path", path)
    for app in ("a", "b", "c"):
        wait_for(f"the router to serve {app}", lambda: call(core, app, "/")["_status"] == 200,
                 timeout=15)
    env = call(core, "a", "/env")
    vcap = json.loads(env["VCAP_SERVICES"])
    assert set(vcap) == set(TYPES)
    pg = vcap["postgresql"][0]
    assert pg["name"] == "postgresql-1" and pg["label"] == "postgresql" and "plan" in pg
    assert {"uri", "host", "port", "username", "password", "name"} <= set(pg["credentials"])
    assert env["DATABASE_URL"].startswith("postgres://")
    assert env["REDIS_URL"].startswith("redis://") and env["RABBITMQ_URL"].startswith("amqp://")
    assert env["MEMCACHE_SERVERS"] == f"{svc.ip}:{first['memcached']['port']}"
    assert call(core, "c", "/env") == {"_status": 200}

    for kind in TYPES:
        put(core, "a", kind, f"{kind}-value-a")
        assert read(core, "a", kind) == f"{kind}-value-a"
        # The second service of the type does not have the first one's data.
        assert read(core, "b", kind) is None, kind

    # Isolation from the host: no way in without credentials, and one
    # service's credentials do not open another's data.
    for kind in TYPES:
        c1, c2 = first[kind]["credentials"], second[kind]["credentials"]
        assert connects(kind, c1), kind
        assert not connects(kind, c1, password="wrong"), kind
        if kind in ("postgresql", "mysql"):
            assert not connects(kind, c2, name=c1["name"]), kind
        if kind == "rabbitmq":
            assert not connects(kind, c2, vhost=c1["vhost"])
            assert not connects(kind, c1, username="guest", password="guest")
        if kind in ("redis", "memcached"):
            assert not connects(kind, c2, port=c1["port"]), kind
    # The role-wide servers need credentials too.
    assert not connects("redis", {"host": svc.ip, "port": 6379, "password": None})
    assert not connects("memcached", {"host": svc.ip, "port": 11211, "username": "x", "password": "y"})

    # An unbound instance reaches none of the services; a bound one only its own.
    for kind in TYPES:
        port = first[kind]["port"]
        assert call(core, "c", f"/probe?host={svc.ip}&port={port}")["connect"].startswith("refused")
        assert call(core, "a", f"/probe?host={svc.ip}&port={port}")["connect"] == "ok"
    assert call(core, "a", f"/probe?host={svc.ip}&port={second['redis']['port']}")["connect"] \
        .startswith("refused")

    # The service node restarts: every instance comes back with its data
    # (memcached is a cache: its process restarts empty, with the same credentials).
    svc.stop()
    svc.start()
    svc.wait_running(["postgresql", "mysql", "redis", "memcached", "rabbitmq", "services"])
    wait_for("every service READY again", lambda: all(
        s["state"] == "READY" for s in core.json("service", "list")), timeout=60)
    for kind in TYPES:
        if kind == "memcached":
            wait_for("memcached back", lambda: connects(kind, first[kind]["credentials"]), timeout=30)
            put(core, "a", kind, "again")
            assert read(core, "a", kind) == "again"
            continue
        assert wait_for(f"{kind} read back after the restart",
                        lambda: read(core, "a", kind) == f"{kind}-value-a", timeout=30)

    # Bad input: a clear error that changes nothing.
    before = core.json("service", "list")
    for args, text in [
        (("create", "oracle", "x"), "unknown service type 'oracle'"),
        (("create", "redis", "redis-1"), "already exists"),
        (("create", "redis", "x", "--node", core.ip), "has no redis role"),
        (("create", "redis", "x", "--plan", "lots"), "is not a size"),
        (("bind", "redis-2", "ghost"), "no app named 'ghost'"),
        (("bind", "redis-1", "a"), "already bound"),
        (("delete", "redis-1", "--yes"), "bound to a"),
        (("delete", "redis-1"), "confirm with --yes"),
        (("info", "nope"), "no service named 'nope'"),
    ]:
        r = core.kato("service", *args)
        assert r.rc != 0 and text in r.err, (args, r)
    assert core.json("service", "list") == before

    # Unbind: the app's instances are replaced without the service, one at a
    # time, while requests keep being answered.
    with Traffic(lambda: get(core.ip, f"a.{DOMAIN}", "/", timeout=5)[0]) as traffic:
        traffic.wait_more(10)
        core.ok("service", "unbind", "redis-1", "a")
        traffic.wait_more(10)
    assert traffic.failures == [], traffic.failures[:5]
    assert "redis" not in json.loads(call(core, "a", "/env")["VCAP_SERVICES"])
    # The old instances are gone when unbind returns (a router may still hold
    # one for a moment; it is being stopped): then no instance gets in.
    wait_for("a's instances refused by the unbound redis", lambda: all(
        call(core, "a", f"/probe?host={svc.ip}&port={first['redis']['port']}")["connect"]
        .startswith("refused") for _ in range(4)), timeout=10)

    # Delete removes data, processes and credentials; --force unbinds first.
    # A session the app (or anyone) still has open is ended with it.
    c = first["mysql"]["credentials"]
    open_session = pymysql.connect(host=c["host"], port=c["port"], user=c["username"],
                                   password=c["password"], database=c["name"], connect_timeout=5)
    for kind in TYPES:
        name = f"{kind}-1"
        args = ["service", "delete", name, "--yes"] + (["--force"] if kind != "redis" else [])
        core.ok(*args)
        assert not connects(kind, first[kind]["credentials"]), kind
    with pytest.raises(pymysql.err.OperationalError):
        with open_session.cursor() as cur:
            cur.execute("SELECT 1")
    assert {s["name"] for s in core.json("service", "list")} == {f"{k}-2" for k in TYPES}
    # delete --force replaced a's instances; a router may hold an old one for a moment.
    wait_for("a's instances without services", lambda: all(
        "VCAP_SERVICES" not in call(core, "a", "/env") for _ in range(4)), timeout=10)
    # The second ones are untouched.
    for kind in TYPES:
        assert connects(kind, second[kind]["credentials"]), kind
    # A re-created service of the same name starts empty.
    core.ok("service", "create", "postgresql", "postgresql-1")
    core.ok("service", "bind", "postgresql-1", "a")
    assert read(core, "a", "postgresql") is None
