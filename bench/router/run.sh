#!/bin/bash
# Router vs nginx as a reverse proxy, side by side in one run (see bench/README.md, "Router").
#
#   bench/router/run.sh [BUILD_DIR] [ROUNDS] [DURATION]
#
# One shared backend (nginx, 1 worker, `return 200 "hello"`) on 127.0.0.1:18081;
# nginx as a reverse proxy (1 worker, HTTP/1.1 upstream keep-alive) on :18082;
# kato-router-bench (1 thread) on :18080. Backend and both proxies are pinned
# to CPU 0, wrk to CPU 1. wrk runs against each proxy in turn for ROUNDS
# interleaved rounds; medians of requests/s, p50 and p99 are printed, and the CPU
# time (user+system) per request of the proxy and of the backend, from /proc.
set -euo pipefail

BUILD=${1:-build}
ROUNDS=${2:-5}
DURATION=${3:-10s}
BIN=$BUILD/bin/kato-router-bench
[ -x "$BIN" ] || { echo "no $BIN: cmake --build $BUILD --target kato-router-bench" >&2; exit 1; }
command -v nginx >/dev/null && command -v wrk >/dev/null || { echo "needs nginx and wrk" >&2; exit 1; }

TMP_PREFIX=kato-router-bench
. "$(dirname "$0")/lib.sh"

mkdir -p "$TMP/backend" "$TMP/proxy"
cat >"$TMP/backend.conf" <<CONF
worker_processes 1;
pid $TMP/backend.pid;
error_log $TMP/backend.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:18081 reuseport backlog=4096;
    location / { return 200 "hello"; }
  }
}
CONF
cat >"$TMP/proxy.conf" <<CONF
worker_processes 1;
pid $TMP/proxy.pid;
error_log $TMP/proxy.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream backend {
    server 127.0.0.1:18081;
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:18082 backlog=4096;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
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
taskset -c 0 "$BIN" --listen 127.0.0.1:18080 --threads 1 --route app.bench=127.0.0.1:18081 &
PIDS+=($!)
KATO_PID=$!

for port in 18081 18082 18080; do
  for _ in $(seq 100); do
    curl -s -o /dev/null -H 'Host: app.bench' "http://127.0.0.1:$port/" && break
    sleep 0.05  # waiting for a process to bind its port, not a test condition
  done
done
for port in 18080 18082; do
  body=$(curl -s -H 'Host: app.bench' "http://127.0.0.1:$port/")
  [ "$body" = hello ] || { echo "proxy on :$port answered '$body'" >&2; exit 1; }
done

BACKEND_WORKER=$(pgrep -P "$BACKEND_MASTER" | head -1)
PROXY_WORKER=$(pgrep -P "$PROXY_MASTER" | head -1)

# CPU time (user+system clock ticks) a process has used so far.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
run_wrk() {  # port proxy_pid -> "rps p50_ms p99_ms proxy_us backend_us errors"
  local out p0 b0 p1 b1
  p0=$(ticks "$2"); b0=$(ticks "$BACKEND_WORKER")
  out=$(taskset -c 1 wrk -t1 -c50 -d"$DURATION" --latency -H 'Host: app.bench' \
        "http://127.0.0.1:$1/")
  p1=$(ticks "$2"); b1=$(ticks "$BACKEND_WORKER")
  local rps p50 p99 errs n pus bus
  rps=$(awk '/^Requests\/sec/ { print $2 }' <<<"$out")
  n=$(awk '/requests in/ { print $1 }' <<<"$out")
  p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
  p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
  # CPU microseconds per request, of the proxy and of the shared backend.
  pus=$(awk -v d=$((p1 - p0)) -v n="$n" -v hz="$HZ" 'BEGIN { printf "%.2f", d * 1e6 / hz / n }')
  bus=$(awk -v d=$((b1 - b0)) -v n="$n" -v hz="$HZ" 'BEGIN { printf "%.2f", d * 1e6 / hz / n }')
  errs=$(awk '/Non-2xx|Socket errors/ { print }' <<<"$out" | tr '\n' ' ')
  echo "$rps $p50 $p99 $pus $bus ${errs:-}"
}

# Warm-up for both (connection pools, page cache).
taskset -c 1 wrk -t1 -c50 -d2s -H 'Host: app.bench' http://127.0.0.1:18080/ >/dev/null
taskset -c 1 wrk -t1 -c50 -d2s -H 'Host: app.bench' http://127.0.0.1:18082/ >/dev/null

: >"$TMP/kato" ; : >"$TMP/nginx"
printf '%-6s %-6s %12s %9s %9s %9s %9s  %s\n' round proxy 'req/s' 'p50 ms' 'p99 ms' \
  'proxy us' 'backend' notes
for round in $(seq "$ROUNDS"); do
  # Alternate which goes first so that drift hits both alike.
  if (( round % 2 )); then order="kato nginx"; else order="nginx kato"; fi
  for who in $order; do
    port=18080; pid=$KATO_PID
    [ "$who" = nginx ] && port=18082 && pid=$PROXY_WORKER
    read -r rps p50 p99 pus bus notes <<<"$(run_wrk $port $pid)"
    echo "$rps $p50 $p99 $pus $bus" >>"$TMP/$who"
    printf '%-6s %-6s %12s %9s %9s %9s %9s  %s\n' "$round" "$who" "$rps" "$p50" "$p99" "$pus" \
      "$bus" "${notes:-}"
  done
done

echo
printf '%-6s %12s %9s %9s %9s %9s\n' median 'req/s' 'p50 ms' 'p99 ms' 'proxy us' 'backend'
for who in kato nginx; do
  printf '%-6s %12s %9s %9s %9s %9s\n' "$who" "$(median 1 "$TMP/$who")" "$(median 2 "$TMP/$who")" \
    "$(median 3 "$TMP/$who")" "$(median 4 "$TMP/$who")" "$(median 5 "$TMP/$who")"
done
awk -v k="$(median 1 "$TMP/kato")" -v n="$(median 1 "$TMP/nginx")" \
    -v kp="$(median 3 "$TMP/kato")" -v np="$(median 3 "$TMP/nginx")" \
    'BEGIN { printf "ratio  kato/nginx req/s = %.2fx (goal >= 1.2x); p99 kato %.3f ms vs nginx %.3f ms\n",
             k / n, kp, np }'
