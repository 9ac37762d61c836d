"""Users and organizations on a real cluster: developers sign in with `kato
login`, act only in their own organization, are held to its quota, lose a
revoked token at once, and a password-guessing loop is rate-limited while good
logins still succeed."""
import http.client
import json
import os

from conftest import wait_for

APPS = os.path.join(os.path.dirname(__file__), "apps")


def api_call(ip, port, method, path, token=None, body=None, host=None):
    c = http.client.HTTPConnection(ip, port, timeout=10)
    headers = {"Content-Type": "application/json"}
    if host:
        headers["Host"] = host
    if token:
        headers["Authorization"] = "Bearer " + token
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    r = c.getresponse()
    text = r.read()
    try:
        data = json.loads(text)
    except ValueError:
        data = text
    return r.status, data, dict(r.getheaders())


def test_developers_act_only_in_their_organization(cluster, tmp_path):
    core = cluster.core(1, "api.accounts.test")
    api = f"http://{core.ip}:9022"
    # Root on the core acts as the cluster admin (through the agent), as before.
    for email, org in (("ann@blue.test", "blue"), ("rob@red.test", "red")):
        core.ok("user", "add", email, "--password-stdin", input=f"{org}-password\n")
        core.ok("org", "create", org)
        core.ok("org", "add-user", org, email)
    core.ok("org", "quota", "blue", "--memory", "1G", "--instances", "4", "--services", "2")
    users = {u["email"]: u for u in core.json("user", "list")}
    assert users["ann@blue.test"]["orgs"] == ["blue"] and not users["ann@blue.test"]["admin"]
    assert core.json("org", "list")[0]["quota"] == {"memory_mb": 1024, "instances": 4, "services": 2}
    bad = core.kato("org", "quota", "blue", "--memory", "lots")
    assert bad.rc != 0 and "not a size" in bad.err

    env = {}
    for who, org in (("ann", "blue"), ("rob", "red")):
        env[who] = {"KATO_LOGIN_FILE": str(tmp_path / f"{who}.json")}
        email = "ann@blue.test" if who == "ann" else "rob@red.test"
        r = core.ok("login", api, "--email", email, "--password-stdin", input=f"{org}-password\n",
                    env=env[who])
        assert f"as {email}" in r.out
        assert os.stat(tmp_path / f"{who}.json").st_mode & 0o777 == 0o600
    wrong = core.kato("login", api, "--email", "ann@blue.test", "--password-stdin",
                      input="not-it\n", env={"KATO_LOGIN_FILE": str(tmp_path / "x.json")})
    assert wrong.rc != 0 and "wrong email or password" in wrong.err
    assert not (tmp_path / "x.json").exists()

    me = json.loads(core.ok("whoami", "--json", env=env["ann"]).out)
    assert me == {"kind": "user", "admin": False, "email": "ann@blue.test", "orgs": ["blue"]}

    ann = json.load(open(tmp_path / "ann.json"))["token"]
    rob = json.load(open(tmp_path / "rob.json"))["token"]
    assert api_call(core.ip, 9022, "POST", "/v2/apps", rob, {"name": "redsite"})[0] == 201
    status, app, _ = api_call(core.ip, 9022, "POST", "/v2/apps", ann, {"name": "bluesite"})
    assert status == 201 and app["org"] == "blue"

    # Ann sees her organization's app, and nothing of the other one's.
    listed = json.loads(core.ok("app", "list", "--json", env=env["ann"]).out)
    assert [a["name"] for a in listed] == ["bluesite"]
    for args in (("app", "info", "redsite"), ("app", "delete", "redsite"),
                 ("app", "scale", "redsite", "0"), ("app", "stop", "redsite")):
        r = core.kato(*args, env=env["ann"])
        assert r.rc != 0 and "no app named 'redsite'" in r.err, (args, r)
    assert api_call(core.ip, 9022, "POST", "/v2/apps", ann, {"name": "sneaky", "org": "red"})[0] == 403
    assert core.json("app", "info", "redsite")["instance_count"] == 1  # unchanged, as the admin sees
    assert sorted(a["name"] for a in core.json("app", "list")) == ["bluesite", "redsite"]
    # No node, user or buildpack operations for a developer.
    status, info, _ = api_call(core.ip, 9022, "GET", "/v2/info", ann)
    assert status == 200 and "nodes" not in info and "core_ip" not in info
    r = core.kato("user", "list", env=env["ann"])
    assert r.rc != 0 and "needs an admin" in r.err
    assert api_call(core.ip, 9022, "POST", "/v2/buildpacks", ann, {"name": "x"})[0] == 403
    assert api_call(core.ip, 9022, "POST", "/v2/orgs/blue/members", ann,
                    {"email": "rob@red.test"})[0] == 403

    # The quota refuses a push that exceeds it, before anything is written.
    r = core.kato("app", "push", "big", "--path", os.path.join(APPS, "web"), "--instances", "3",
                  "--memory", "512", env=env["ann"])
    assert r.rc != 0 and "may use 1G of memory" in r.err, r
    assert "big" not in [a["name"] for a in core.json("app", "list")]

    # A revoked token stops at once: the very next call.
    assert api_call(core.ip, 9022, "GET", "/v2/apps", ann)[0] == 200
    core.ok("logout", env=env["ann"])
    assert not (tmp_path / "ann.json").exists()
    status, body, _ = api_call(core.ip, 9022, "GET", "/v2/apps", ann)
    assert status == 401 and "revoked" in body["error"]
    # Removing a user ends their token too.
    assert api_call(core.ip, 9022, "GET", "/v2/apps", rob)[0] == 200
    core.ok("user", "remove", "rob@red.test")
    assert api_call(core.ip, 9022, "GET", "/v2/apps", rob)[0] == 401


def test_login_rate_limit_through_the_router(cluster):
    core = cluster.core(1, "api.guess.test")
    core.ok("user", "add", "eve@x.test", "--password-stdin", input="eve-password\n")
    core.ok("user", "add", "bob@x.test", "--password-stdin", input="bob-password\n")

    def login(email, password):
        return api_call(core.ip, 80, "POST", "/v2/login", body={"email": email, "password": password},
                        host="api.guess.test")
    wait_for("the API through the router", lambda: login("bob@x.test", "bob-password")[0] == 200,
             timeout=10)
    statuses = [login("eve@x.test", f"guess-{i}")[0] for i in range(8)]
    assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {429}, statuses
    status, body, headers = login("eve@x.test", "eve-password")  # the right one, too late
    assert status == 429 and int(headers["Retry-After"]) > 0 and "too many" in body["error"]
    # Another account from the same client still signs in.
    assert login("bob@x.test", "bob-password")[0] == 200


def test_login_over_https_through_the_router(cluster, tmp_path):
    """`kato login https://api.DOMAIN` before there is DNS (--address), trusting the
    cluster's CA by the fingerprint in its join token, then `kato app` over that login."""
    core = cluster.core(1, "api.tls.test")
    core.ok("user", "add", "ann@tls.test", "--password-stdin", input="ann-password\n")
    core.ok("org", "create", "blue")
    core.ok("org", "add-user", "blue", "ann@tls.test")
    fingerprint = core.ok("node", "token").out.strip().split(".")[1]
    env = {"KATO_LOGIN_FILE": str(tmp_path / "ann.json")}
    url = "https://api.tls.test"

    # Not trusted by this machine, and not interactive: it says which CA it saw, sends nothing.
    r = wait_for("the API through the router's TLS port", lambda: (lambda r: r if "does not trust" in r.err
                 else None)(core.kato("login", url, "--address", core.ip, "--email", "ann@tls.test",
                                      "--password-stdin", input="ann-password\n", env=env)), timeout=20)
    assert r.rc != 0 and f"--ca-sha256 {fingerprint}" in r.err and "nothing was sent" in r.err, r
    # Another fingerprint (a server that is not this cluster) is refused.
    r = core.kato("login", url, "--address", core.ip, "--ca-sha256", "ab" * 32, "--email",
                  "ann@tls.test", "--password-stdin", input="ann-password\n", env=env)
    assert r.rc != 0 and "fingerprint mismatch" in r.err, r
    assert not (tmp_path / "ann.json").exists()

    r = core.ok("login", url, "--address", core.ip, "--ca-sha256", fingerprint, "--email",
                "ann@tls.test", "--password-stdin", input="ann-password\n", env=env)
    assert "as ann@tls.test" in r.out
    login = json.load(open(tmp_path / "ann.json"))
    assert login["address"] == core.ip and "BEGIN CERTIFICATE" in login["ca_pem"]
    # Later calls go the same way (https, the pinned CA, the host's name checked).
    created = core.ok("app", "list", "--json", env=env)
    assert json.loads(created.out) == []
    assert json.loads(core.ok("whoami", "--json", env=env).out)["email"] == "ann@tls.test"
    core.ok("logout", env=env)
    assert not (tmp_path / "ann.json").exists()
