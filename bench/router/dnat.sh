#!/bin/bash
# The router reaching an instance through its network namespace (nftables DNAT
# of NODE_IP:PORT, a veth pair) vs reaching the same backend directly on the
# host, side by side in one run (see bench/README.md, "DNAT").
#
#   bench/router/dnat.sh [BUILD_DIR] [ROUNDS] [DURATION]      (as root)
#
# Two identical backends (nginx, 1 worker, `return 200 "hello"`): one inside a
# namespace made by the DEA's own InstanceNetwork (kato-instance-net), reached
# at 127.0.250.3:18091; one on the host at 127.0.250.3:18092. One
# kato-router-bench (1 thread) routes dnat.bench to the first and
# direct.bench to the second. Backends and router are pinned to CPU 0, wrk to
# CPU 1; wrk alternates between the hosts for ROUNDS rounds; medians are printed.
set -euo pipefail

BUILD=${1:-build}
ROUNDS=${2:-5}
DURATION=${3:-10s}
ROUTER=$BUILD/bin/kato-router-bench
NETBIN=$BUILD/bin/kato-instance-net
for b in "$ROUTER" "$NETBIN"; do
  [ -x "$b" ] || { echo "no $b: cmake --build $BUILD" >&2; exit 1; }
done
command -v nginx >/dev/null && command -v wrk >/dev/null || { echo "needs nginx and wrk" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }

NODE=127.0.250.3
TMP_PREFIX=kato-dnat-bench
. "$(dirname "$0")/lib.sh"
chmod 755 "$TMP"

backend_conf() {  # name listen
  mkdir -p "$TMP/$1"
  cat >"$TMP/$1.conf" <<CONF
worker_processes 1;
pid $TMP/$1.pid;
error_log $TMP/$1.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen $2 reuseport backlog=4096;
    location / { return 200 "hello"; }
  }
}
CONF
}
backend_conf ns 0.0.0.0:18091
backend_conf host $NODE:18092

coproc NET { exec "$NETBIN" --node-ip $NODE --port 18091; }
PIDS+=($NET_PID)
read -r NETNS INSTANCE_IP <&"${NET[0]}"
echo "instance namespace $NETNS at $INSTANCE_IP; $NODE:18091 is DNATed to it"

taskset -c 0 nsenter --net="$NETNS" nginx -p "$TMP/ns" -c "$TMP/ns.conf" -g 'daemon off;' &
PIDS+=($!)
NS_MASTER=$!
taskset -c 0 nginx -p "$TMP/host" -c "$TMP/host.conf" -g 'daemon off;' &
PIDS+=($!)
HOST_MASTER=$!
taskset -c 0 "$ROUTER" --listen 127.0.0.1:18090 --threads 1 \
  --route dnat.bench=$NODE:18091 --route direct.bench=$NODE:18092 &
PIDS+=($!)

for host in dnat.bench direct.bench; do
  for _ in $(seq 100); do
    [ "$(curl -s -H "Host: $host" http://127.0.0.1:18090/)" = hello ] && break
    sleep 0.05  # waiting for a process to bind its port, not a test condition
  done
  [ "$(curl -s -H "Host: $host" http://127.0.0.1:18090/)" = hello ] || { echo "$host unreachable" >&2; exit 1; }
done

run_wrk() {  # host -> "rps p50_ms p99_ms errors"
  local out
  out=$(taskset -c 1 wrk -t1 -c50 -d"$DURATION" --latency -H "Host: $1" http://127.0.0.1:18090/)
  echo "$(awk '/^Requests\/sec/ { print $2 }' <<<"$out")" \
       "$(to_ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")")" \
       "$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")" \
       "$(awk '/Non-2xx|Socket errors/ { print }' <<<"$out" | tr '\n' ' ')"
}

for host in dnat.bench direct.bench; do
  taskset -c 1 wrk -t1 -c50 -d2s -H "Host: $host" http://127.0.0.1:18090/ >/dev/null
done
: >"$TMP/dnat" ; : >"$TMP/direct"
printf '%-6s %-7s %12s %9s %9s  %s\n' round path 'req/s' 'p50 ms' 'p99 ms' notes
for round in $(seq "$ROUNDS"); do
  if (( round % 2 )); then order="dnat direct"; else order="direct dnat"; fi
  for who in $order; do
    read -r rps p50 p99 notes <<<"$(run_wrk $who.bench)"
    echo "$rps $p50 $p99" >>"$TMP/$who"
    printf '%-6s %-7s %12s %9s %9s  %s\n' "$round" "$who" "$rps" "$p50" "$p99" "${notes:-}"
  done
done
echo
printf '%-7s %12s %9s %9s\n' median 'req/s' 'p50 ms' 'p99 ms'
for who in dnat direct; do
  printf '%-7s %12s %9s %9s\n' "$who" "$(median 1 "$TMP/$who")" "$(median 2 "$TMP/$who")" \
    "$(median 3 "$TMP/$who")"
done
awk -v d="$(median 1 "$TMP/dnat")" -v h="$(median 1 "$TMP/direct")" \
  'BEGIN { printf "ratio  dnat/direct req/s = %.3f (goal >= 0.95)\n", d / h }'
