"""A test app for harbor: an echo server on HARBOR_PORT (TCP or UDP, as its
harbor service says), answering "INDEX DATA" so that a client can tell which
instance answered; "crash" makes the instance exit. HTTP on PORT answers too
(the DEA's health check and the router)."""
import http.server
import json
import os
import socket
import threading

INDEX = json.loads(os.environ.get("VCAP_APPLICATION", "{}")).get("instance_index", 0)
SERVICES = json.loads(os.environ.get("VCAP_SERVICES") or "{}")
HARBOR = SERVICES.get("harbor", [{}])[0].get("credentials", {})
PROTOCOL = HARBOR.get("protocol", "tcp")


def reply(data):
    if data.strip() == b"crash":
        os._exit(3)
    return f"{INDEX} ".encode() + data


def tcp(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(64)
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve_tcp, args=(c,), daemon=True).start()


def serve_tcp(c):
    with c:
        while True:
            data = c.recv(65536)
            if not data:
                return
            c.sendall(reply(data))


def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    while True:
        data, peer = s.recvfrom(65536)
        s.sendto(reply(data), peer)


class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"index": INDEX, "harbor_port": os.environ.get("HARBOR_PORT"),
                           "harbor": HARBOR}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


if os.environ.get("HARBOR_PORT"):
    target = udp if PROTOCOL == "udp" else tcp
    threading.Thread(target=target, args=(int(os.environ["HARBOR_PORT"]),), daemon=True).start()
print("harbor app: serving on port", os.environ["PORT"], "harbor", os.environ.get("HARBOR_PORT"),
      PROTOCOL, flush=True)
http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), H).serve_forever()
