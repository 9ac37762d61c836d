"""The cluster state on PostgreSQL: a core set up with --store on a private
PostgreSQL server, an SQLite cluster moved onto PostgreSQL with
`kato op migrate_store`, and bad input refused with nothing changed."""
import glob
import json
import os
import sqlite3
import threading

from conftest import get, wait_for
from pgserver import PgServer

APPS = os.path.join(os.path.dirname(__file__), "apps")


def serves(ip, host):
    return wait_for(f"{host} to answer 200 through {ip}",
                    lambda: get(ip, host)[0] == 200, timeout=60)


def push_web(core, instances=1):
    core.ok("app", "push", "web", "--path", os.path.join(APPS, "web"), "--instances",
            str(instances), "--memory", "128")


def node_list(core):
    """The cluster's nodes without their up/down state (which follows heartbeats)."""
    return [{k: v for k, v in n.items() if k != "state"} for n in core.json("node", "list")]


def app_summary(core):
    info = core.json("app", "info", "web")
    return {"name": info["name"], "urls": info["urls"],
            "instances": sorted((i["index"], i["node_ip"]) for i in info["instances"])}


def restart_core(core):
    core.stop()
    core.start()
    core.wait_running(["primary", "controller", "router"])
    wait_for("the core to be up in its cluster again",
             lambda: core.kato("app", "info", "web").rc == 0, timeout=60)


def test_core_on_postgresql_survives_restart(cluster):
    with PgServer(ip=f"127.0.{cluster.subnet}.200") as pg:
        try:
            url = pg.url("kato")
            core = cluster.node(1)
            core.ok("node", "setup", "core", "api.pg.test", "--store", url)
            info = core.json("info")
            assert info["store"] == {"kind": "postgresql",
                                     "location": url.replace(pg.password, "***")}
            assert pg.password not in json.dumps(info)
            text = core.ok("info").out
            assert "state store:      postgresql postgresql://kato:***@" in text
            assert pg.password not in text
            # The state really is in PostgreSQL, not in an SQLite file.
            assert not os.path.exists(os.path.join(core.data_dir, "state.db"))
            assert os.stat(os.path.join(core.data_dir, "state-store")).st_mode & 0o777 == 0o600
            assert pg.sql("kato", "SELECT count(*) FROM nodes").strip() == "1"

            dea = cluster.node(2)
            cluster.attach(dea, core, "dea")
            push_web(core)
            serves(core.ip, "web.pg.test")
            assert pg.sql("kato", "SELECT count(*) FROM nodes").strip() == "2"
            assert pg.sql("kato", "SELECT count(*) FROM docs WHERE kind = 'app'").strip() == "1"
            nodes = node_list(core)
            app = app_summary(core)
            history = core.json("history")

            restart_core(core)
            assert node_list(core) == nodes
            assert app_summary(core) == app
            assert core.json("history")[:len(history)] == history
            serves(core.ip, "web.pg.test")
        finally:
            cluster.close()  # before the server goes away under the primary


def revision_of_sqlite(path):
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()[0]
    finally:
        db.close()


def test_migrate_sqlite_cluster_to_postgresql(cluster):
    core = cluster.core(1, "api.mig.test")
    dea = cluster.node(2)
    cluster.attach(dea, core, "dea")
    core.ok("config", "set", "controller", "quota", '{"mem": 4096}')
    push_web(core)
    serves(core.ip, "web.mig.test")
    token = cluster.token(core)
    nodes = node_list(core)
    app = app_summary(core)
    history = core.json("history")
    state_db = os.path.join(core.data_dir, "state.db")

    with PgServer(ip=f"127.0.{cluster.subnet}.200") as pg:
        try:
            url = pg.url("kato")
            # Not interactive and no --yes: refused, nothing changed.
            r = core.kato("op", "migrate_store", url)
            assert r.rc != 0 and "--yes" in r.err and "nothing changed" in r.err, r
            assert core.json("info")["store"]["kind"] == "sqlite"

            # The app keeps serving while the state moves.
            failures, total, stop = [], [0], threading.Event()

            def client():
                while not stop.is_set():
                    try:
                        s, _ = get(core.ip, "web.mig.test", timeout=5)
                        if s != 200:
                            failures.append(s)
                    except Exception as e:  # a failed request, whatever the cause
                        failures.append(repr(e))
                    total[0] += 1

            rev_before = revision_of_sqlite(state_db)
            th = threading.Thread(target=client)
            th.start()
            try:
                out = core.ok("op", "migrate_store", url, "--yes", "--json").json()
            finally:
                stop.set()
                th.join()
            assert failures == [] and total[0] > 0, (failures[:5], total[0])
            assert out["to"] == url.replace(pg.password, "***")
            assert pg.password not in json.dumps(out)
            assert out["revision"] == rev_before

            # Switched: the primary runs on PostgreSQL, SQLite kept as a backup.
            info = core.json("info")
            assert info["store"]["kind"] == "postgresql"
            assert not os.path.exists(state_db)
            backups = glob.glob(state_db + ".before-postgresql-*")
            assert backups and out["backup"] in backups
            assert revision_of_sqlite(out["backup"]) == rev_before
            rev_after = int(pg.sql("kato", "SELECT value FROM meta WHERE key = 'revision'"))
            assert rev_after >= rev_before

            # Everything came along.
            wait_for("the core's controller to be up", lambda: core.kato("app", "info", "web").rc == 0,
                     timeout=60)
            assert node_list(core) == nodes
            assert app_summary(core) == app
            new_history = core.json("history")
            assert new_history[:len(history)] == history
            assert "migrate_store" in new_history[-1]["command"]
            assert pg.password not in json.dumps(new_history)
            assert core.json("config", "get", "controller", "quota")["value"] == {"mem": 4096}
            serves(core.ip, "web.mig.test")
            # The old join token still works.
            n3 = cluster.node(3)
            n3.ok("node", "attach", "--token", token, core.ip)
            assert len(core.json("node", "list")) == 3
            # And changes land in PostgreSQL.
            assert pg.sql("kato", "SELECT count(*) FROM nodes").strip() == "3"

            # Again onto the same database, or onto one already holding a state: refused.
            r = core.kato("op", "migrate_store", url, "--yes")
            assert r.rc != 0 and "already" in r.err, r
            assert pg.password not in r.err
            # Restarting the core keeps it on PostgreSQL.
            restart_core(core)
            assert len(core.json("node", "list")) == 3
            serves(core.ip, "web.mig.test")
        finally:
            cluster.close()


def test_bad_store_input_changes_nothing(cluster):
    n = cluster.node(1)
    ca = os.path.join(n.data_dir, "pki", "ca.pem")

    def unchanged():
        info = n.json("info")
        assert not info["attached"] and info["store"] is None
        assert not os.path.exists(ca)
        assert not os.path.exists(os.path.join(n.data_dir, "state-store"))
        assert not os.path.exists(os.path.join(n.data_dir, "state.db"))

    r = n.kato("node", "setup", "core", "api.bad.test", "--store",
               "postgresql://kato:Sekrit-77@127.0.0.1:1/x")
    assert r.rc != 0 and r.elapsed < 15, r
    assert "Connection refused" in r.err and "nothing changed" in r.err, r
    assert "Sekrit-77" not in r.err, r
    # Progress lines are indented; the error itself is one line.
    assert len([l for l in r.err.splitlines() if not l.startswith("  ")]) == 1, r
    unchanged()
    for bad in ("mysql://u:p@127.0.0.1/x", "/tmp/state.db", "not a url"):
        r = n.kato("node", "setup", "core", "api.bad.test", "--store", bad)
        assert r.rc != 0 and "is not a PostgreSQL URL" in r.err, (bad, r)
        unchanged()
    r = n.kato("op", "migrate_store", "postgresql://127.0.0.1:1/x", "--yes")
    assert r.rc != 0 and "runs on the core" in r.err, r

    with PgServer(ip=f"127.0.{cluster.subnet}.200") as pg:
        try:
            url = pg.url("kato")
            r = n.kato("node", "setup", "core", "api.bad.test", "--store",
                       pg.url_only("kato", password="Wrong-Pw-31"))
            assert r.rc != 0 and "password authentication failed" in r.err, r
            assert "Wrong-Pw-31" not in r.err
            unchanged()
            # A database holding another cluster's state is refused.
            other = cluster.node(2)
            other.ok("node", "setup", "core", "api.other.test", "--store", url)
            # History keeps the command with the URL's password masked.
            history = other.json("history")
            assert any("--store postgresql://kato:***@" in h["command"] for h in history), history
            assert pg.password not in json.dumps(history)
            r = n.kato("node", "setup", "core", "api.bad.test", "--store", url)
            assert r.rc != 0 and "already holds a cluster's state" in r.err, r
            unchanged()
            # A core cannot switch stores through setup.
            r = other.kato("node", "setup", "core", "api.other.test", "--store", pg.url("two"))
            assert r.rc != 0 and "migrate_store" in r.err, r
            # An unreachable migration target leaves the core on its store.
            r = other.kato("op", "migrate_store", "postgresql://kato:pw@127.0.0.1:1/x", "--yes")
            assert r.rc != 0 and "Connection refused" in r.err, r
            assert other.json("info")["store"]["location"] == url.replace(pg.password, "***")
        finally:
            cluster.close()


# kato's PostgreSQL schema (version 3), created by hand so that a trigger can
# make the copy fail halfway: at the history, after everything else went in.
SCHEMA_WITH_TRAP = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
INSERT INTO meta VALUES ('schema_version', 3), ('revision', 0);
CREATE TABLE settings (key TEXT PRIMARY KEY, value BYTEA NOT NULL);
CREATE TABLE nodes (id TEXT PRIMARY KEY, ip TEXT NOT NULL UNIQUE, hostname TEXT NOT NULL,
                    version TEXT NOT NULL, joined_ms BIGINT NOT NULL);
CREATE TABLE node_roles (node_id TEXT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
                         position BIGINT NOT NULL, role TEXT NOT NULL,
                         PRIMARY KEY (node_id, position));
CREATE TABLE removed_nodes (id TEXT PRIMARY KEY);
CREATE TABLE tokens (secret_hash TEXT PRIMARY KEY, created_ms BIGINT NOT NULL,
                     expires_ms BIGINT NOT NULL, revoked BOOLEAN NOT NULL);
CREATE TABLE config (component TEXT NOT NULL, key TEXT NOT NULL, value_json TEXT NOT NULL,
                     PRIMARY KEY (component, key));
CREATE TABLE history (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                      time_ms BIGINT NOT NULL, node TEXT NOT NULL, user_name TEXT NOT NULL,
                      command TEXT NOT NULL);
CREATE TABLE docs (kind TEXT NOT NULL, key TEXT NOT NULL, value_json TEXT NOT NULL,
                   PRIMARY KEY (kind, key));
CREATE TABLE leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_ms BIGINT NOT NULL);
CREATE FUNCTION trap() RETURNS trigger AS $$
  BEGIN RAISE EXCEPTION 'disk full (a test trap)'; END $$ LANGUAGE plpgsql;
CREATE TRIGGER trap BEFORE INSERT ON history FOR EACH ROW EXECUTE FUNCTION trap();
"""


def test_migration_failing_midway_leaves_the_cluster_on_sqlite(cluster):
    core = cluster.core(1, "api.half.test")
    dea = cluster.node(2)
    cluster.attach(dea, core, "dea")
    nodes = node_list(core)
    history = core.json("history")
    state_db = os.path.join(core.data_dir, "state.db")
    rev_before = revision_of_sqlite(state_db)
    with PgServer(ip=f"127.0.{cluster.subnet}.200") as pg:
        try:
            url = pg.url("kato")
            pg.sql("kato", SCHEMA_WITH_TRAP)
            r = core.kato("op", "migrate_store", url, "--yes")
            assert r.rc != 0, r
            assert "disk full (a test trap)" in r.err and "stays on" in r.err, r
            assert pg.password not in r.err
            # Nothing went in (the copy is one transaction), and the core is on SQLite as before.
            assert pg.sql("kato", "SELECT count(*) FROM nodes").strip() == "0"
            assert pg.sql("kato", "SELECT value FROM meta WHERE key = 'revision'").strip() == "0"
            assert core.json("info")["store"]["kind"] == "sqlite"
            assert not os.path.exists(os.path.join(core.data_dir, "state-store"))
            assert glob.glob(state_db + ".before-postgresql-*") == []
            assert revision_of_sqlite(state_db) == rev_before
            core.wait_running(["primary"])
            assert node_list(core) == nodes
            assert core.json("history")[:len(history)] == history
            # The cluster still works: a change goes into SQLite.
            core.ok("config", "set", "controller", "after", "1")
            assert revision_of_sqlite(state_db) > rev_before
        finally:
            cluster.close()
