"""A test app for the filesystem service: files in the directory that
KATO_FILESYSTEM (and VCAP_SERVICES) name, shared by every instance.

GET /write?name=N&value=V   writes V to the file N there, fsynced
GET /read?name=N            {"value": V or null}
GET /fill?mb=M              writes M MB to the file "big": {"written_mb", "error"}
GET /env                    the filesystem variables
GET /bench/write?where=fs|local&mb=M   writes M MB (1 MB writes, fsynced): {"seconds"}
GET /bench/read?where=fs|local         reads that file back: {"seconds", "mb"}
GET /bench/files?where=fs|local&n=N    creates N files of 4 KB: {"seconds"} (then removes them)
  (fs: the filesystem service; local: the instance's own disk, /home/app)
Every answer carries the instance's index; errors are {"error": "..."} with status 500."""
import http.server
import json
import os
import shutil
import time
import urllib.parse

INDEX = json.loads(os.environ.get("VCAP_APPLICATION", "{}")).get("instance_index", 0)
ROOT = os.environ.get("KATO_FILESYSTEM", "")


def bench_dir(where):
    return ROOT if where == "fs" else os.environ["HOME"]


def bench(kind, q):
    d = bench_dir(q["where"])
    data = os.path.join(d, "bench.dat")
    t0 = time.monotonic()
    if kind == "write":
        chunk = os.urandom(1 << 20)
        with open(data, "wb") as f:
            for _ in range(int(q["mb"])):
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        return {"seconds": time.monotonic() - t0}
    if kind == "read":
        n = 0
        with open(data, "rb", buffering=0) as f:
            while block := f.read(1 << 20):
                n += len(block)
        out = {"seconds": time.monotonic() - t0, "mb": n / (1 << 20)}
        os.unlink(data)
        return out
    if kind == "files":
        many = os.path.join(d, "bench-files")
        os.makedirs(many, exist_ok=True)
        small = b"x" * 4096
        t0 = time.monotonic()
        for i in range(int(q["n"])):
            with open(os.path.join(many, f"f{i}"), "wb") as f:
                f.write(small)
        out = {"seconds": time.monotonic() - t0}
        shutil.rmtree(many)
        return out
    raise ValueError(kind)


def path_of(name):
    if not name or "/" in name or name.startswith("."):
        raise ValueError("bad name")
    return os.path.join(ROOT, name)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        try:
            if url.path == "/write":
                with open(path_of(q["name"]), "w") as f:
                    f.write(q["value"])
                    f.flush()
                    os.fsync(f.fileno())
                out = {"ok": True}
            elif url.path == "/read":
                try:
                    with open(path_of(q["name"])) as f:
                        out = {"value": f.read()}
                except FileNotFoundError:
                    out = {"value": None}
            elif url.path == "/fill":
                written, error = 0, None
                chunk = b"x" * (1 << 20)
                try:
                    with open(path_of("big"), "wb") as f:
                        for _ in range(int(q["mb"])):
                            f.write(chunk)
                            written += 1
                        f.flush()
                        os.fsync(f.fileno())
                except OSError as e:
                    error = e.strerror
                os.unlink(path_of("big"))
                out = {"written_mb": written, "error": error}
            elif url.path.startswith("/bench/"):
                out = bench(url.path[7:], q)
            elif url.path == "/env":
                out = {k: v for k, v in os.environ.items()
                       if k in ("KATO_FILESYSTEM", "STACKATO_FILESYSTEM", "VCAP_SERVICES")}
            else:
                out = {}
            out["index"] = INDEX
            self.reply(200, out)
        except Exception as e:  # the test reads the message
            self.reply(500, {"error": f"{type(e).__name__}: {e}", "index": INDEX})

    def reply(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
