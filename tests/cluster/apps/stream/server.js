// A Node.js app for the router's streaming tests (tests/cluster/test_router.py):
// large downloads with backpressure, server-sent events, a slow chunked
// response, a streamed upload, a WebSocket echo, and ways to die mid-request.
// Node's own modules only: instances have no npm registry to install from.
"use strict";
const http = require("http");
const crypto = require("crypto");

const vcap = JSON.parse(process.env.VCAP_APPLICATION || "{}");
const index = vcap.instance_index === undefined ? -1 : vcap.instance_index;
const CHUNK = Buffer.alloc(64 * 1024, "k");

function query(req) {
  return new URL(req.url, "http://x").searchParams;
}

function json(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text) });
  res.end(text);
}

// Writes `size` bytes, waiting for 'drain' whenever the socket's buffer is full.
// With `dieAt`, exits the whole process once that many bytes are out.
function stream(res, size, dieAt) {
  let sent = 0;
  function more() {
    while (sent < size) {
      if (dieAt !== undefined && sent >= dieAt) {
        console.log(`instance ${index} dies after ${sent} of ${size} bytes`);
        process.exit(3);
      }
      const n = Math.min(CHUNK.length, size - sent);
      sent += n;
      if (!res.write(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n))) return res.once("drain", more);
    }
    res.end();
  }
  more();
}

const server = http.createServer((req, res) => {
  const q = query(req);
  const path = req.url.split("?")[0];
  if (path === "/download") {
    const size = Number(q.get("size"));
    res.writeHead(200, { "Content-Type": "application/octet-stream", "Content-Length": size });
    return stream(res, size);
  }
  if (path === "/die-mid") {
    const size = Number(q.get("size"));
    res.writeHead(200, { "Content-Type": "application/octet-stream", "Content-Length": size });
    return stream(res, size, Math.floor(size / 2));
  }
  if (path === "/sse") {
    const n = Number(q.get("n") || 5), every = Number(q.get("interval_ms") || 200);
    res.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-cache" });
    let i = 0;
    const timer = setInterval(() => {
      res.write(`id: ${i}\ndata: ${JSON.stringify({ i, t: Date.now() })}\n\n`);
      if (++i === n) {
        clearInterval(timer);
        res.end();
      }
    }, every);
    return;
  }
  if (path === "/slow-chunked") {
    const n = Number(q.get("n") || 5), every = Number(q.get("interval_ms") || 200);
    res.writeHead(200, { "Content-Type": "text/plain" });  // no length: chunked
    let i = 0;
    const timer = setInterval(() => {
      res.write(`piece ${i} at ${Date.now()}\n`);
      if (++i === n) {
        clearInterval(timer);
        res.end();
      }
    }, every);
    return;
  }
  if (path === "/upload" && req.method === "POST") {
    let bytes = 0, first = 0;
    const hash = crypto.createHash("sha256");
    req.on("data", (d) => {
      if (!first) first = Date.now();
      bytes += d.length;
      hash.update(d);
    });
    req.on("end", () => json(res, 200, { bytes, first_byte_ms: first, last_byte_ms: Date.now(),
                                          sha256: hash.digest("hex"), index }));
    return;
  }
  if (path === "/die-before") {
    // The instance with this index dies without answering; the others answer.
    console.log(`instance ${index}: ${req.method} ${req.url}`);
    if (Number(q.get("index")) === index) process.exit(4);
    return json(res, 200, { index, id: q.get("id") });
  }
  return json(res, 200, { index, pid: process.pid, method: req.method, url: req.url });
});

// WebSocket echo: the RFC 6455 handshake, then every byte back (frames unparsed).
server.on("upgrade", (req, socket, head) => {
  const key = req.headers["sec-websocket-key"];
  if (!key || (req.headers.upgrade || "").toLowerCase() !== "websocket") return socket.destroy();
  const accept = crypto.createHash("sha1").update(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
    .digest("base64");
  socket.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
               `Sec-WebSocket-Accept: ${accept}\r\n\r\n`);
  if (head && head.length) socket.write(head);
  socket.pipe(socket);
});

server.keepAliveTimeout = 5000;
server.listen(Number(process.env.PORT), "0.0.0.0", () => {
  console.log(`stream app instance ${index} on port ${process.env.PORT}, node ${process.version}`);
});
