"""A test app for data services: writes and reads a value in each service it is
bound to, with the credentials it finds in VCAP_SERVICES, through the
client libraries an app would use (Debian's python3-psycopg2, -pymysql,
-redis, -pymemcache, -pika), and a file in the filesystem service.

GET /put?type=T&value=V   stores V under the key "k" in the first T service
GET /get?type=T           {"value": V or null}
GET /env                  the service variables of the environment
GET /probe?host=H&port=P  {"connect": "ok" | "refused: ..."}
Errors are {"error": "..."} with status 500."""
import http.server
import json
import os
import socket
import urllib.parse

SERVICES = json.loads(os.environ.get("VCAP_SERVICES") or "{}")


def creds(kind):
    return SERVICES[kind][0]["credentials"]


def pg_conn():
    import psycopg2
    c = creds("postgresql")
    conn = psycopg2.connect(host=c["host"], port=c["port"], user=c["username"],
                            password=c["password"], dbname=c["name"], connect_timeout=5)
    conn.autocommit = True
    return conn


def my_conn():
    import pymysql
    c = creds("mysql")
    return pymysql.connect(host=c["host"], port=c["port"], user=c["username"],
                           password=c["password"], database=c["name"], connect_timeout=5,
                           autocommit=True)


def mc_client():
    from pymemcache.client.base import Client
    c = creds("memcached")
    client = Client((c["host"], c["port"]), connect_timeout=5, timeout=5)
    # memcached's ASCII authentication: the first command is a set whose data
    # is "USER PASSWORD".
    client.set("auth", f'{c["username"]} {c["password"]}', noreply=False)
    return client


def rabbit():
    import pika
    conn = pika.BlockingConnection(pika.URLParameters(creds("rabbitmq")["uri"] +
                                                      "?connection_attempts=1&socket_timeout=5"))
    ch = conn.channel()
    ch.queue_declare(queue="kv", durable=True)
    return conn, ch


def put(kind, value):
    if kind == "postgresql":
        with pg_conn() as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS kv (k text PRIMARY KEY, v text)")
            cur.execute("INSERT INTO kv VALUES ('k', %s) ON CONFLICT (k) DO UPDATE SET v = %s",
                        (value, value))
    elif kind == "mysql":
        conn = my_conn()
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS kv (k VARCHAR(16) PRIMARY KEY, v TEXT)")
            cur.execute("REPLACE INTO kv VALUES ('k', %s)", (value,))
        conn.close()
    elif kind == "redis":
        import redis
        redis.Redis.from_url(os.environ["REDIS_URL"], socket_timeout=5).set("k", value)
    elif kind == "memcached":
        mc_client().set("k", value, noreply=False)
    elif kind == "filesystem":
        with open(os.path.join(os.environ["KATO_FILESYSTEM"], "k"), "w") as f:
            f.write(value)
    elif kind == "rabbitmq":
        import pika
        conn, ch = rabbit()
        ch.queue_purge("kv")
        ch.basic_publish("", "kv", value.encode(), pika.BasicProperties(delivery_mode=2))
        conn.close()
    else:
        raise ValueError(kind)


def get(kind):
    if kind == "postgresql":
        with pg_conn() as conn, conn.cursor() as cur:
            cur.execute("SELECT to_regclass('kv') IS NOT NULL")
            if not cur.fetchone()[0]:
                return None
            cur.execute("SELECT v FROM kv WHERE k = 'k'")
            row = cur.fetchone()
            return row[0] if row else None
    if kind == "mysql":
        conn = my_conn()
        with conn.cursor() as cur:
            cur.execute("SHOW TABLES LIKE 'kv'")
            if not cur.fetchone():
                return None
            cur.execute("SELECT v FROM kv WHERE k = 'k'")
            row = cur.fetchone()
        conn.close()
        return row[0] if row else None
    if kind == "redis":
        import redis
        v = redis.Redis.from_url(os.environ["REDIS_URL"], socket_timeout=5).get("k")
        return v.decode() if v is not None else None
    if kind == "memcached":
        v = mc_client().get("k")
        return v.decode() if v is not None else None
    if kind == "filesystem":
        try:
            with open(os.path.join(os.environ["KATO_FILESYSTEM"], "k")) as f:
                return f.read()
        except FileNotFoundError:
            return None
    if kind == "rabbitmq":
        conn, ch = rabbit()
        method, _, body = ch.basic_get("kv", auto_ack=False)
        if method:
            ch.basic_nack(method.delivery_tag, requeue=True)
        conn.close()
        return body.decode() if method else None
    raise ValueError(kind)


def probe(host, port):
    try:
        with socket.create_connection((host, port), timeout=3):
            return "ok"
    except OSError as e:
        return f"refused: {e}"


class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        try:
            if url.path == "/put":
                put(q["type"], q["value"])
                out = {"stored": q["value"]}
            elif url.path == "/get":
                out = {"value": get(q["type"])}
            elif url.path == "/env":
                out = {k: v for k, v in os.environ.items()
                       if k in ("VCAP_SERVICES", "DATABASE_URL", "REDIS_URL", "RABBITMQ_URL")
                       or k.startswith("MEMCACHE_")}
            elif url.path == "/probe":
                out = {"connect": probe(q["host"], int(q["port"]))}
            else:
                out = {"app": "services"}
            status = 200
        except Exception as e:  # the test reads what went wrong
            out, status = {"error": f"{type(e).__name__}: {e}"}, 500
        body = json.dumps(out).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


print("services app: serving on port", os.environ["PORT"], flush=True)
http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), H).serve_forever()
