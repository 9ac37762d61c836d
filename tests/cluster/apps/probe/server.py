# A test app that reports what it can see from inside its sandbox.
import http.server, json, os, socket, urllib.parse

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        q = urllib.parse.parse_qs(url.query)
        if url.path == "/see":
            path = q["path"][0]
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
                open(q["path"][0], "w").write("x")
                body = {"wrote": True}
            except OSError as e:
                body = {"wrote": False, "error": str(e)}
        elif url.path == "/alloc":
            hog = bytearray(int(q["mb"][0]) * 1024 * 1024)
            for i in range(0, len(hog), 4096):
                hog[i] = 1
            body = {"allocated": len(hog)}
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
