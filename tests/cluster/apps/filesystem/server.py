"""A test app for the filesystem service: files in the directory that
KATO_FILESYSTEM (and VCAP_SERVICES) name, shared by every instance.

GET /write?name=N&value=V   writes V to the file N there, fsynced
GET /read?name=N            {"value": V or null}
GET /fill?mb=M              writes M MB to the file "big": {"written_mb", "error"}
GET /env                    the filesystem variables and whether /app/fs is the mount
Every answer carries the instance's index; errors are {"error": "..."} with status 500."""
import http.server
import json
import os
import urllib.parse

INDEX = json.loads(os.environ.get("VCAP_APPLICATION", "{}")).get("instance_index", 0)
ROOT = os.environ.get("KATO_FILESYSTEM", "")


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
