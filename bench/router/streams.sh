#!/bin/bash
# The router's streaming shapes against nginx, side by side in one run (see
# bench/README.md, "Router: streaming, connections, TLS").
#
#   bench/router/streams.sh [BUILD_DIR] [ROUNDS] [DURATION] [OUT.json]
#
# One shared backend (nginx, 1 worker, sendfile) serves a sparse 1 GiB file, a
# 1 MiB file, a 1 KiB file and `return 200 "hello"` on 127.0.0.1:18181. In
# front of it, pinned like the backend to CPU 0: kato-router-bench (1 thread)
# on :18180 (HTTPS :18443) and nginx as a reverse proxy (1 worker, up to 1,024
# idle upstream keep-alive connections like kato, proxy_max_temp_file_size 0
# so that large bodies stream through memory instead of a temp file, a shared
# TLS session cache) on :18182 (HTTPS :18444). The clients (wrk,
# curl, python3) run on CPU 1. Every shape runs ROUNDS times, alternating which
# proxy goes first; medians are printed and written to OUT.json (default
# bench/router_streams_results.json).
#
# Shapes: small responses (wrk -c50), 1 MiB responses (wrk -c10), one 1 GiB
# download (time to first byte next to a 1 KiB one, MB/s, proxy RSS peak), ten
# concurrent 1 GiB downloads (proxy RSS peak, aggregate MB/s), 1,000 and 10,000
# keep-alive connections (wrk req/s, p99, proxy RSS), 10,000 idle keep-alive
# connections (proxy RSS), HTTPS with keep-alive (req/s) and new TLS
# handshakes per second (wrk with Connection: close).
set -euo pipefail

BUILD=${1:-build}
ROUNDS=${2:-3}
DURATION=${3:-8s}
OUT=${4:-bench/router_streams_results.json}
BIN=$BUILD/bin/kato-router-bench
[ -x "$BIN" ] || { echo "no $BIN: cmake --build $BUILD --target kato-router-bench" >&2; exit 1; }
for c in nginx wrk curl python3 openssl; do
  command -v $c >/dev/null || { echo "needs $c" >&2; exit 1; }
done
ulimit -n "$(ulimit -Hn)"

TMP_PREFIX=kato-router-streams
. "$(dirname "$0")/lib.sh"

mkdir -p "$TMP/www" "$TMP/backend" "$TMP/proxy"
chmod 755 "$TMP" "$TMP/www"  # nginx's workers run as nobody
truncate -s 1G "$TMP/www/1g.bin"  # sparse: read from the page cache, never from disk
head -c 1048576 /dev/urandom >"$TMP/www/1m.bin"
head -c 1024 /dev/urandom >"$TMP/www/1k.bin"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=app.bench \
  -addext subjectAltName=DNS:app.bench -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null

cat >"$TMP/backend.conf" <<CONF
worker_processes 1;
worker_rlimit_nofile 65536;
pid $TMP/backend.pid;
error_log $TMP/backend.err warn;
events { worker_connections 65536; }
http {
  access_log off;
  sendfile on;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:18181 reuseport backlog=4096;
    root $TMP/www;
    location = /hello { return 200 "hello"; }
  }
}
CONF
cat >"$TMP/proxy.conf" <<CONF
worker_processes 1;
worker_rlimit_nofile 65536;
pid $TMP/proxy.pid;
error_log $TMP/proxy.err warn;
events { worker_connections 65536; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  ssl_session_cache shared:SSL:10m;
  upstream backend {
    server 127.0.0.1:18181;
    keepalive 1024;  # as many idle upstream connections as kato keeps
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:18182 backlog=4096;
    listen 127.0.0.1:18444 ssl backlog=4096;
    ssl_certificate $TMP/cert.pem;
    ssl_certificate_key $TMP/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_max_temp_file_size 0;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$http_host;
    }
  }
}
CONF

taskset -c 0 nginx -p "$TMP/backend" -c "$TMP/backend.conf" -g 'daemon off;' &
PIDS+=($!)
BACKEND_MASTER=$!
taskset -c 0 nginx -p "$TMP/proxy" -c "$TMP/proxy.conf" -g 'daemon off;' &
PIDS+=($!)
PROXY_MASTER=$!
taskset -c 0 "$BIN" --listen 127.0.0.1:18180 --threads 1 --route app.bench=127.0.0.1:18181 \
  --tls-port 18443 --tls-cert "$TMP/cert.pem" --tls-key "$TMP/key.pem" 2>"$TMP/kato.err" &
PIDS+=($!)
KATO_PID=$!

for port in 18181 18182 18180; do
  for _ in $(seq 100); do
    curl -s -o /dev/null -H 'Host: app.bench' "http://127.0.0.1:$port/hello" && break
    sleep 0.05  # waiting for a process to bind its port, not a test condition
  done
done
for port in 18180 18182; do
  body=$(curl -s -H 'Host: app.bench' "http://127.0.0.1:$port/hello")
  [ "$body" = hello ] || { echo "proxy on :$port answered '$body'" >&2; exit 1; }
done
PROXY_WORKER=$(pgrep -P "$PROXY_MASTER" | head -1)
cat "$TMP/www/1g.bin" >/dev/null

port_of() { [ "$1" = kato ] && echo 18180 || echo 18182; }
tls_port_of() { [ "$1" = kato ] && echo 18443 || echo 18444; }
pid_of() { [ "$1" = kato ] && echo "$KATO_PID" || echo "$PROXY_WORKER"; }
rss_mib() { awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

# Peak RSS (MiB) of pid $1 while the command after it runs.
with_rss() {
  local pid=$1 peak=0 r
  shift
  "$@" &
  local job=$!
  while kill -0 "$job" 2>/dev/null; do
    r=$(rss_mib "$pid")
    peak=$(awk -v a="$peak" -v b="$r" 'BEGIN { print (b > a) ? b : a }')
    sleep 0.05  # the sampling interval
  done
  wait "$job"
  echo "$peak"
}

wrk_run() {  # url connections extra... -> "rps p99_ms errors"
  local url=$1 c=$2 out
  shift 2
  out=$(taskset -c 1 wrk -t1 -c"$c" -d"$DURATION" --latency "$@" -H 'Host: app.bench' "$url")
  local rps p99 errs
  rps=$(awk '/^Requests\/sec/ { print $2 }' <<<"$out")
  p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
  errs=$(awk '/Non-2xx|Socket errors/ { printf "%s ", $0 }' <<<"$out")
  echo "$rps $p99 ${errs:-}"
}

# One download: "ttfb_ms mib_per_s"; a failed one stops the run.
download() {
  taskset -c 1 curl -s -f -o /dev/null -H 'Host: app.bench' \
    -w '%{time_starttransfer} %{speed_download}\n' "$1" |
    awk '{ printf "%.3f %.1f\n", $1 * 1000, $2 / 1048576 }'
  [ "${PIPESTATUS[0]}" = 0 ] || { echo "download of $1 failed" >&2; exit 1; }
}

ten_downloads() {  # url -> aggregate MiB/s
  local t0 t1
  t0=$(date +%s.%N)
  local jobs=()
  for _ in $(seq 10); do
    taskset -c 1 curl -s -f -o /dev/null -H 'Host: app.bench' "$1" &
    jobs+=($!)
  done
  for j in "${jobs[@]}"; do wait "$j" || { echo "a download of $1 failed" >&2; exit 1; }; done
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", 10 * 1024 / (b - a) }'
}

dl_to() { download "$1" >"$2"; }
ten_to() { ten_downloads "$1" >"$2"; }

# Holds N idle keep-alive connections (each after one request) for a moment:
# prints the proxy's RSS while they are all open.
idle_rss() {  # port pid n
  taskset -c 1 python3 - "$1" "$2" "$3" <<'PY'
import resource, socket, sys
port, pid, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
socks = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /hello HTTP/1.1\r\nHost: app.bench\r\n\r\n")
    socks.append(s)
for s in socks:
    s.settimeout(10)
    got = b""
    while not got.endswith(b"hello"):
        got += s.recv(4096)
rss = next(l for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")).split()[1]
print(f"{int(rss) / 1024:.1f}")
PY
}

: >"$TMP/rows"
row() { echo "$*" >>"$TMP/rows"; }  # shape who round values...

# SHAPES="conns_1000 tls_handshakes" runs only those (while working on one).
want() { [ -z "${SHAPES:-}" ] || [[ " $SHAPES " == *" $1 "* ]]; }

for round in $(seq "$ROUNDS"); do
  if (( round % 2 )); then order="kato nginx"; else order="nginx kato"; fi
  for who in $order; do
    port=$(port_of $who); tport=$(tls_port_of $who); pid=$(pid_of $who)
    base="http://127.0.0.1:$port"
    if want small; then
      read -r rps p99 errs <<<"$(wrk_run "$base/hello" 50)"
      row small "$who" "$round" "$rps" "$p99" "${errs:-}"
      [ -z "${errs:-}" ] || echo "$who small: $errs" >&2
    fi
    if want 1mib; then
      read -r rps p99 errs <<<"$(wrk_run "$base/1m.bin" 10)"
      row 1mib "$who" "$round" "$rps" "$p99" "${errs:-}"
    fi
    rssfile="$TMP/dl.$who.$round"
    if want 1gib; then
      read -r small_ttfb _ <<<"$(download "$base/1k.bin")"
      peak=$(with_rss "$pid" dl_to "$base/1g.bin" "$rssfile")
      read -r ttfb mibs <"$rssfile"
      row 1gib "$who" "$round" "$ttfb" "$small_ttfb" "$mibs" "$peak"
    fi
    if want ten_1gib; then
      peak=$(with_rss "$pid" ten_to "$base/1g.bin" "$rssfile")
      row ten_1gib "$who" "$round" "$(cat "$rssfile")" "$peak"
    fi
    for c in 1000 10000; do
      want "conns_$c" || continue
      read -r rps p99 errs <<<"$(wrk_run "$base/hello" $c --timeout 10s)"
      row "conns_$c" "$who" "$round" "$rps" "$p99" "$(rss_mib "$pid")" "${errs:-}"
    done
    if want idle_10000; then
      row idle_10000 "$who" "$round" "$(idle_rss "$port" "$pid" 10000)"
    fi
    if want tls_keepalive; then
      read -r rps p99 errs <<<"$(wrk_run "https://127.0.0.1:$tport/hello" 50)"
      row tls_keepalive "$who" "$round" "$rps" "$p99" "${errs:-}"
    fi
    if want tls_handshakes; then
      read -r rps p99 errs <<<"$(wrk_run "https://127.0.0.1:$tport/hello" 50 -H 'Connection: close')"
      row tls_handshakes "$who" "$round" "$rps" "$p99" "${errs:-}"
    fi
    echo "round $round $who done" >&2
  done
done

python3 - "$TMP/rows" "$OUT" "$ROUNDS" "$DURATION" <<'PY'
import json, statistics, sys, time
rows, out, rounds, duration = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
data = {}
for line in open(rows):
    f = line.split()
    shape, who = f[0], f[1]
    nums = []
    for x in f[3:]:
        try:
            nums.append(float(x))
        except ValueError:
            break
    data.setdefault(shape, {}).setdefault(who, []).append(nums)
cols = {
    "small": ["req_s", "p99_ms"], "1mib": ["req_s", "p99_ms"],
    "1gib": ["ttfb_ms", "ttfb_1kib_ms", "mib_s", "rss_peak_mib"],
    "ten_1gib": ["mib_s", "rss_peak_mib"],
    "conns_1000": ["req_s", "p99_ms", "rss_mib"], "conns_10000": ["req_s", "p99_ms", "rss_mib"],
    "idle_10000": ["rss_mib"], "tls_keepalive": ["req_s", "p99_ms"],
    "tls_handshakes": ["req_s", "p99_ms"],
}
result = {"date": time.strftime("%Y-%m-%d"), "rounds": rounds, "duration": duration,
          "command": f"bench/router/streams.sh BUILD {rounds} {duration}", "shapes": {}}
print(f"{'shape':15} {'who':6} " + "  ".join(f"{c:>14}" for c in ["median values"]))
for shape, names in cols.items():
    result["shapes"][shape] = {}
    for who in ("kato", "nginx"):
        runs = data.get(shape, {}).get(who, [])
        med = {n: round(statistics.median(r[i] for r in runs if len(r) > i), 3)
               for i, n in enumerate(names) if any(len(r) > i for r in runs)}
        result["shapes"][shape][who] = {"median": med, "runs": runs}
        print(f"{shape:15} {who:6} " + "  ".join(f"{k}={v}" for k, v in med.items()))
json.dump(result, open(out, "w"), indent=1)
print(f"wrote {out}")
PY
