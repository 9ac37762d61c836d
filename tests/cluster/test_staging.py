"""Staging on a real cluster (issue "Staging"): source pushed without its
dependencies or a start command is built on a DEA by the built-in
buildpacks (Debian's Node.js and npm with the npm registry, Python with
gunicorn, Go, nginx), in the app's sandbox, and served through the router;
a failed build fails the push with the buildpack's message and leaves the
running version serving; custom buildpacks; staging's time and memory
limits."""
import json
import os
import shutil
import subprocess
import time

from conftest import Traffic, get, limit, wait_for

APPS = os.path.join(os.path.dirname(__file__), "apps", "staging")


def serve_json(core, host):
    status, body = get(core.ip, host, timeout=5)
    assert status == 200, (status, body[:300])
    return json.loads(body)


def push(core, name, path, *extra):
    t0 = time.monotonic()
    r = core.kato("app", "push", name, "--path", path, *extra, timeout=600)
    return r, time.monotonic() - t0


def test_builtin_buildpacks_build_and_serve_each_kind_of_app(cluster, tmp_path):
    core = cluster.core(1, "api.stage.test")
    dea = cluster.node(2)
    cluster.attach(dea, core, "dea")
    timings = {}
    expect = {"express": "nodejs", "flask": "python", "static": "static", "go": "go",
              "procfile": "procfile"}
    for name, pack in expect.items():
        r, seconds = push(core, name, os.path.join(APPS, name))
        assert r.rc == 0, r
        timings[name] = seconds
        # The build's output streamed to the push.
        assert f"(buildpack {pack})" in r.err, r.err
        assert "-----> Start command:" in r.err, r.err
        info = core.json("app", "info", name)
        assert info["detected_buildpack"] == pack, info
    assert serve_json(core, "express.stage.test")["express"].startswith("4.")  # npm ci installed it
    assert serve_json(core, "flask.stage.test")["venv"] == "/app/.venv"  # gunicorn on app:app
    assert serve_json(core, "go.stage.test")["go"].startswith("go1.")
    assert serve_json(core, "procfile.stage.test")["app"] == "procfile"
    status, body = get(core.ip, "static.stage.test")
    assert status == 200 and b"Served by the static buildpack" in body
    status, body = get(core.ip, "static.stage.test", "/style.css")
    assert status == 200 and b"font-family" in body

    # Dependencies that come with the app: a Go module's vendor/, a Python wheelhouse.
    r, timings["go-vendored"] = push(core, "gov", os.path.join(APPS, "go-vendored"))
    assert r.rc == 0, r
    assert get(core.ip, "gov.stage.test") == (200, b"hello from a vendored module\n")
    py = tmp_path / "pyproject"
    (tmp_path / "katohello" / "katohello").mkdir(parents=True)
    (tmp_path / "katohello" / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "katohello"\nversion = "1.0"\n')
    (tmp_path / "katohello" / "katohello" / "__init__.py").write_text('GREETING = "hello from a wheel"\n')
    py.mkdir()
    subprocess.run(["/usr/bin/python3", "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-w", str(py / "vendor"), str(tmp_path / "katohello")],
                   check=True, capture_output=True)
    (py / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "katoweb"\nversion = "1.0"\ndependencies = ["katohello", "flask"]\n'
        '[tool.setuptools]\npy-modules = ["app"]\n')
    (py / "app.py").write_text(
        "import flask\nimport katohello\napp = flask.Flask(__name__)\n"
        "@app.route('/')\ndef index():\n    return katohello.GREETING\n")
    r, timings["pyproject"] = push(core, "pyproj", str(py))
    assert r.rc == 0, r
    assert "Installing from the vendor/ wheelhouse" in r.err, r.err
    assert get(core.ip, "pyproj.stage.test") == (200, b"hello from a wheel")

    # `kato app logs --staging` shows the last build.
    r = core.ok("app", "logs", "express", "--staging")
    assert "STAGED" in r.out and "npm ci --omit=dev" in r.out, r.out

    # A second push of changed source: the build cache makes it fast.
    src = tmp_path / "express"
    shutil.copytree(os.path.join(APPS, "express"), src)
    (src / "server.js").write_text((src / "server.js").read_text().replace(
        'app: "express"', 'app: "express", release: 2'))
    r, timings["express again"] = push(core, "express", str(src))
    assert r.rc == 0, r
    assert "Restoring the build cache" in r.err, r.err
    wait_for("release 2 serving", lambda: serve_json(core, "express.stage.test").get("release") == 2,
             timeout=20)
    # The same source once more is not staged again: its droplet is reused.
    r, timings["express same"] = push(core, "express", str(src))
    assert r.rc == 0 and "staging on" not in r.err, r
    print("push to serving:", ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    assert timings["express again"] < limit(15), timings


def test_a_failed_build_fails_the_push_and_the_running_version_keeps_serving(cluster, tmp_path):
    core = cluster.core(1, "api.fail.test")
    dea = cluster.node(2)
    cluster.attach(dea, core, "dea")
    node = tmp_path / "node"
    node.mkdir()
    (node / "package.json").write_text(json.dumps(
        {"name": "plain", "version": "1.0.0", "scripts": {"start": "node server.js"}}))
    (node / "server.js").write_text(
        'require("http").createServer((q, s) => s.end("v1")).listen(process.env.PORT);\n')
    r, _ = push(core, "web", str(node))
    assert r.rc == 0, r
    # The router learns the new instance through its watch, moments after the push returns.
    wait_for("v1 through the router", lambda: get(core.ip, "web.fail.test") == (200, b"v1"),
             timeout=10)
    version = core.json("app", "info", "web")["version"]

    with Traffic(lambda: get(core.ip, "web.fail.test", timeout=5)[0]) as traffic:
        traffic.wait_more(10)
        (node / "package.json").write_text('{"name": "plain", "version": ')  # a syntax error
        r, _ = push(core, "web", str(node))
        assert r.rc != 0, r
        assert "package.json is not valid JSON" in r.err, r.err
        assert "staging web failed" in r.err, r.err
        traffic.wait_more(20)
    assert traffic.failures == [], traffic.failures[:5]
    assert core.json("app", "info", "web")["version"] == version
    assert get(core.ip, "web.fail.test") == (200, b"v1")
    staging = core.json("app", "logs", "web", "--staging")
    assert staging["state"] == "FAILED" and "not valid JSON" in staging["log"]["text"]

    # A requirement that nothing satisfies: pip's own message.
    py = tmp_path / "py"
    py.mkdir()
    (py / "requirements.txt").write_text("kato-no-such-package==1.0\n")
    (py / "app.py").write_text("app = None\n")
    r, _ = push(core, "py", str(py))
    assert r.rc != 0, r
    assert "kato-no-such-package" in r.err and "compile failed" in r.err, r.err

    # Nothing to detect: each buildpack says what it looked for.
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "README").write_text("nothing to run\n")
    r, _ = push(core, "bare", str(bare))
    assert r.rc != 0, r
    assert "no buildpack detected this app" in r.err, r.err
    assert "nodejs: a package.json" in r.err and "procfile: a Procfile" in r.err, r.err
    # With a --command, an app without a buildpack runs as pushed.
    (bare / "serve.py").write_text(open(os.path.join(APPS, "procfile", "server.py")).read())
    r, _ = push(core, "bare", str(bare), "--command", "python3 serve.py")
    assert r.rc == 0, r
    assert serve_json(core, "bare.fail.test")["app"] == "procfile"
    assert get(core.ip, "web.fail.test") == (200, b"v1")


def make_buildpack(root, name, detect_file, compile_body, web):
    d = root / name
    (d / "bin").mkdir(parents=True)
    (d / "bin" / "detect").write_text(
        f'#!/bin/sh\n[ -f "$1/{detect_file}" ] && echo {name} && exit 0\n'
        f'echo "a {detect_file}" >&2\nexit 1\n')
    (d / "bin" / "compile").write_text("#!/bin/sh\nset -e\n" + compile_body + "\n")
    (d / "bin" / "release").write_text(
        f"#!/bin/sh\nprintf -- '---\\ndefault_process_types:\\n  web: %s\\n' '{web}'\n")
    for f in ("detect", "compile", "release"):
        os.chmod(d / "bin" / f, 0o755)
    return str(d)


def test_custom_buildpacks(cluster, tmp_path):
    core = cluster.core(1, "api.custom.test")
    dea = cluster.node(2)
    cluster.attach(dea, core, "dea")
    hello = make_buildpack(
        tmp_path, "hello", "hello.txt",
        'echo "-----> hello buildpack compiling"\ncp "$1/hello.txt" "$1/index.txt"',
        "python3 -m http.server --bind 0.0.0.0 $PORT")
    core.ok("buildpack", "add", "hello", hello)
    packs = core.json("buildpack", "list")
    assert [p["name"] for p in packs][:2] == ["hello", "nodejs"], packs
    assert packs[0]["builtin"] is False and packs[1]["builtin"] is True

    app = tmp_path / "app"
    app.mkdir()
    (app / "hello.txt").write_text("hi from a custom buildpack\n")
    (app / "index.html").write_text("<p>static would detect this too</p>\n")
    r, _ = push(core, "hi", str(app))
    assert r.rc == 0, r
    assert "hello buildpack compiling" in r.err, r.err
    assert get(core.ip, "hi.custom.test", "/index.txt") == (200, b"hi from a custom buildpack\n")
    # --buildpack chooses another.
    r, _ = push(core, "hi", str(app), "--buildpack", "static")
    assert r.rc == 0, r
    assert core.json("app", "info", "hi")["detected_buildpack"] == "static"
    assert get(core.ip, "hi.custom.test")[1] == b"<p>static would detect this too</p>\n"

    # Bad input: each a clear error that changes nothing.
    r = core.kato("buildpack", "add", "nodejs", hello)
    assert r.rc != 0 and "built-in" in r.err, r
    broken = tmp_path / "broken"
    broken.mkdir()
    r = core.kato("buildpack", "add", "broken", str(broken))
    assert r.rc != 0 and "no executable bin/detect" in r.err, r
    r = core.kato("buildpack", "add", "Bad/Name", hello)
    assert r.rc != 0, r
    r, _ = push(core, "hi", str(app), "--buildpack", "cobol")
    assert r.rc != 0 and "no buildpack is named 'cobol'" in r.err, r
    assert [p["name"] for p in core.json("buildpack", "list")][0] == "hello"

    core.ok("buildpack", "remove", "hello")
    assert "hello" not in [p["name"] for p in core.json("buildpack", "list")]
    r = core.kato("buildpack", "remove", "hello")
    assert r.rc != 0 and "no buildpack named 'hello'" in r.err, r


def test_staging_limits_stop_a_build_with_a_clear_message(cluster, tmp_path):
    core = cluster.core(1, "api.limits.test")
    core.ok("config", "set", "dea", "staging_timeout_s", "4")
    core.ok("config", "set", "dea", "staging_memory_mb", "96")
    r = core.kato("config", "set", "dea", "staging_timeout_s", "0")
    assert r.rc != 0 and "1 to 86400" in r.err, r
    dea = cluster.node(2)
    cluster.attach(dea, core, "dea")  # it reads the limits as it starts
    core.ok("buildpack", "add", "slow", make_buildpack(
        tmp_path, "slow", "slow.txt", 'echo "-----> sleeping"\nsleep 120', "true"))
    core.ok("buildpack", "add", "hog", make_buildpack(
        tmp_path, "hog", "hog.txt",
        "python3 -c 'b = [bytes([i % 256]) * (1 << 20) for i in range(2048)]'",
        "true"))
    app = tmp_path / "app"
    app.mkdir()
    (app / "slow.txt").write_text("x")
    t0 = time.monotonic()
    r, _ = push(core, "slow", str(app))
    assert r.rc != 0, r
    assert "ran past staging_timeout_s (4 s" in r.err, r.err
    assert time.monotonic() - t0 < limit(30)
    os.remove(app / "slow.txt")
    (app / "hog.txt").write_text("x")
    r, _ = push(core, "hog", str(app))
    assert r.rc != 0, r
    assert "ran out of memory (staging_memory_mb 96" in r.err, r.err
    # The stopped builds left nothing behind: their disks are gone.
    staging = os.path.join(dea.data_dir, "dea", "staging")
    assert not [t for t in os.listdir(staging) if os.path.exists(os.path.join(staging, t, "disk.img"))]
