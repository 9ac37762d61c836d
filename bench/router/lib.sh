# Shared by bench/router/run.sh and dnat.sh (sourced): a scratch dir whose
# processes (PIDS) are ended on exit, and the figures' helpers.
# Usage: TMP_PREFIX=name; . "$(dirname "$0")/lib.sh"
TMP=$(mktemp -d "/tmp/${TMP_PREFIX:-kato-bench}.XXXXXX")
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

# wrk's --latency table prints p50/p99 with units (us, ms, s): normalize to ms.
to_ms() {
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0;
                         else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'
}

median() {  # column file
  sort -g -k"$1" "$2" | awk -v c="$1" '{ v[NR] = $c } END {
    if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
