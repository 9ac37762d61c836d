# A WebSocket echo for tests: answers the upgrade (RFC 6455 handshake), then
# echoes every byte back (frames unparsed), and reports the forwarding headers.
import base64, hashlib, os, socketserver

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class H(socketserver.StreamRequestHandler):
    def handle(self):
        headers = {}
        self.rfile.readline()
        while True:
            line = self.rfile.readline().strip()
            if not line:
                break
            k, _, v = line.decode().partition(":")
            headers[k.strip().lower()] = v.strip()
        if headers.get("upgrade", "").lower() != "websocket" or "sec-websocket-key" not in headers:
            body = repr(sorted(headers.items())).encode()
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                             % len(body) + body)
            return
        accept = base64.b64encode(hashlib.sha1(headers["sec-websocket-key"].encode() + GUID).digest())
        self.wfile.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        self.wfile.flush()
        while True:
            data = self.request.recv(4096)
            if not data:
                return
            self.request.sendall(data)


class S(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


print("ws: serving on port", os.environ["PORT"], flush=True)
S(("0.0.0.0", int(os.environ["PORT"])), H).serve_forever()
