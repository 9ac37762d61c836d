# A test app that reports what it can see and reach from inside its sandbox.
import http.client, http.server, json, os, socket, subprocess, urllib.parse


def connect(host, port, send=None, timeout=2.0):
    """Connects to host:port (and sends `send`): what came back, or why not."""
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as s:
            if send is None:
                return {"connected": True}
            s.sendall(send.encode())
            s.settimeout(timeout)
            try:
                reply = s.recv(200).decode(errors="replace")
            except OSError as e:
                reply = "no reply: " + str(e)
            return {"connected": True, "reply": reply}
    except OSError as e:
        return {"connected": False, "error": str(e)}


def fill(mb):
    """Writes up to `mb` MiB into $HOME: how far it got, and the error that stopped it."""
    path = os.path.join(os.environ["HOME"], "fill")
    written, error = 0, None
    chunk = b"x" * (1 << 20)
    try:
        with open(path, "wb") as f:
            for _ in range(mb):
                f.write(chunk)
                f.flush()
                written += len(chunk)
            os.fsync(f.fileno())
    except OSError as e:
        error = str(e)
    try:
        os.remove(path)
    except OSError:
        pass
    return {"written": written, "error": error}


def fork_bomb(limit):
    """Starts processes until the kernel refuses (or `limit`), then ends them."""
    procs, error = [], None
    try:
        for _ in range(limit):
            procs.append(subprocess.Popen(["sleep", "60"]))
    except OSError as e:
        error = str(e)
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()
    return {"started": len(procs), "error": error}


class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        q = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
        if url.path == "/see":
            path = q["path"]
            out = {"exists": os.path.exists(path), "readable": False, "connect": False}
            try:
                with open(path, "rb") as f:
                    f.read(1)
                out["readable"] = True
            except OSError:
                pass
            try:
                s = socket.socket(socket.AF_UNIX)
                s.connect(path)
                out["connect"] = True
            except OSError:
                pass
            body = out
        elif url.path == "/whoami":
            body = {"uid": os.getuid(), "pid": os.getpid(), "tmp": os.listdir("/tmp")}
        elif url.path == "/write":
            try:
                open(q["path"], "w").write("x")
                body = {"wrote": True}
            except OSError as e:
                body = {"wrote": False, "error": str(e)}
        elif url.path == "/alloc":
            hog = bytearray(int(q["mb"]) * 1024 * 1024)
            for i in range(0, len(hog), 4096):
                hog[i] = 1
            body = {"allocated": len(hog)}
        elif url.path == "/connect":
            body = connect(q["host"], q["port"], q.get("send"))
        elif url.path == "/http":
            # Another app, through a router, by its public name.
            try:
                c = http.client.HTTPConnection(q["host"], int(q.get("port", 80)), timeout=3)
                c.request("GET", "/", headers={"Host": q["name"]})
                body = {"status": c.getresponse().status}
            except OSError as e:
                body = {"status": None, "error": str(e)}
        elif url.path == "/fill":
            body = fill(int(q["mb"]))
        elif url.path == "/forkbomb":
            body = fork_bomb(int(q.get("limit", 5000)))
        else:
            body = {"ok": True}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), H).serve_forever()
