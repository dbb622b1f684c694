#!/usr/bin/env bash
# A fleet over many shards: WORKERS shardbridge processes (10 by default) share a Kinesis stream
# of SHARDS shards (100) on kinesalite, their lease table on moto, each with the stdout sink (to
# /dev/null); side by side with one process on the same stream, in each lease renewal mode.
#
# Usage: scripts/bench_fleet.sh [WORKERS [SHARDS [RECORDS]]]     (defaults 10, 100, 20000)
#
# Steps: start the servers, build release, create the stream and load RECORDS records into it
# (`http_throughput produce`). Then for each renewal mode (BENCH_RENEWALS, default
# "per_lease heartbeat") and for 1 and WORKERS processes, with a fresh lease table: start the
# processes together and measure
#   drained     seconds from the start until the fleet has read all RECORDS records
#               (sum of shardbridge_source_records_read_total), and records/s from that
#   balanced    seconds until every process holds between floor and ceil(SHARDS / n) leases,
#               and the fewest and most leases a process holds then
#   CPU         user + sys seconds of all the processes until drained
#   writes/min  lease-table writes (UpdateItem, PutItem, DeleteItem) per minute of the whole
#               fleet over BENCH_IDLE_S (30) seconds after the drain, the stream idle
# then stop them (each must exit 0). The machine has 2 CPUs: WORKERS processes and kinesalite
# share them, so the fleet's records/s measure the overhead of the fleet, not its scaling.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

WORKERS="${1:-10}"
SHARDS="${2:-100}"
RECORDS="${3:-20000}"
RENEWALS="${BENCH_RENEWALS:-per_lease heartbeat}"
IDLE_S="${BENCH_IDLE_S:-30}"
TIMEOUT_S="${BENCH_TIMEOUT_S:-300}"
for n in "$WORKERS" "$SHARDS" "$RECORDS"; do
  [[ "$n" =~ ^[0-9]+$ && "$n" -gt 0 ]] || { echo "usage: $0 [WORKERS [SHARDS [RECORDS]]]" >&2; exit 2; }
done

source scripts/bench_common.sh
start_servers
build_http_bench

WORK="$(mktemp -d "${TMPDIR:-/tmp}/bench_fleet.XXXXXX")"
STREAM="bench-fleet-$(date +%s)-$$"
PIDS=()
stop_all() {
  local rc=0
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" || rc=1; done
  PIDS=()
  return "$rc"
}
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  "$KT" rmstream --stream "$STREAM" >/dev/null 2>&1 || true
  [[ "${BENCH_KEEP:-0}" == 1 ]] && log "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

log "creating $STREAM with $SHARDS shards, loading $RECORDS records"
"$KT" mkstream --stream "$STREAM" --shards "$SHARDS" >/dev/null
rate=$((RECORDS / 10 > 0 ? RECORDS / 10 : 1))
produced="$("$HT" produce --stream "$STREAM" --rate "$rate" --seconds 10 | awk '{ print $2 }')"
log "loaded $produced records"

# sum_metric NAME [FILTER]: the sum over the fleet's /metrics
sum_metric() {
  local total=0 port v
  for port in "${PORTS[@]}"; do
    curl -sf "http://127.0.0.1:$port/metrics" >"$WORK/m.txt" || : >"$WORK/m.txt"
    v="$(metric "$WORK/m.txt" "$@")"
    total="$(awk -v a="$total" -v b="$v" 'BEGIN { print a + b }')"
  done
  printf '%.0f' "$total"
}
owned_each() {
  local port
  for port in "${PORTS[@]}"; do
    curl -sf "http://127.0.0.1:$port/metrics" >"$WORK/m.txt" || : >"$WORK/m.txt"
    imetric "$WORK/m.txt" shardbridge_shards_owned
    echo
  done
}
fleet_cpu() {
  local total=0 p
  for p in "${PIDS[@]}"; do total="$(awk -v a="$total" -v b="$(proc_cpu "$p")" 'BEGIN { print a + b }')"; done
  echo "$total"
}
writes() {
  local u p d
  u="$(sum_metric shardbridge_lease_table_calls_total UpdateItem)"
  p="$(sum_metric shardbridge_lease_table_calls_total PutItem)"
  d="$(sum_metric shardbridge_lease_table_calls_total DeleteItem)"
  echo $((u + p + d))
}

run() { # run RENEWAL N: prints one result line
  local renewal="$1" n="$2" leases i
  leases="bench-fleet-leases-$(date +%s%N)"
  PORTS=()
  for ((i = 1; i <= n; i++)); do
    local port
    port="$(free_port)"
    PORTS+=("$port")
    cat >"$WORK/w$i.toml" <<TOML
[worker]
id = "w$i"
listen = "127.0.0.1:$port"
[aws]
region = "us-east-1"
endpoint_url = "$SHARDBRIDGE_TEST_AWS_ENDPOINT"
[[connectors]]
name = "fleet"
[connectors.source]
type = "kinesis"
stream = "$STREAM"
[connectors.source.aws]
endpoint_url = "$SHARDBRIDGE_TEST_KINESIS_ENDPOINT"
[connectors.leases]
table = "$leases"
renewal = "$renewal"
[connectors.format]
type = "raw"
[connectors.sink]
type = "stdout"
TOML
  done
  local t0 balanced="" lo="" hi="" drained="" cpu_drained=""
  t0="$(now)"
  for ((i = 1; i <= n; i++)); do
    RUST_LOG=warn "$SB" run --config "$WORK/w$i.toml" >/dev/null 2>"$WORK/w$i-$renewal-$n.log" &
    PIDS+=($!)
  done
  local floor=$((SHARDS / n)) ceil=$(((SHARDS + n - 1) / n))
  while [[ -z "$drained" || -z "$balanced" ]]; do
    local el counts min max
    el="$(fsub "$(now)" "$t0")"
    if [[ -z "$balanced" ]]; then
      counts="$(owned_each)"
      min="$(sort -n <<<"$counts" | head -1)"
      max="$(sort -n <<<"$counts" | tail -1)"
      if ((min >= floor && max <= ceil)); then balanced="$el"; lo="$min"; hi="$max"; fi
    fi
    if [[ -z "$drained" ]] && (($(sum_metric shardbridge_source_records_read_total) >= produced)); then
      drained="$el"
      cpu_drained="$(fleet_cpu)"
    fi
    if (($(date +%s) - ${t0%.*} > TIMEOUT_S)); then
      log "ERROR: $renewal, $n processes: drained=${drained:-no} balanced=${balanced:-no} after ${TIMEOUT_S} s (leases: $(owned_each | tr '\n' ' '))"
      exit 1
    fi
    sleep 0.5
  done
  local w0 w1 a b
  w0="$(writes)"; a="$(now)"
  sleep "$IDLE_S"
  w1="$(writes)"; b="$(now)"
  stop_all || { log "ERROR: a process did not exit 0 ($renewal, $n)"; exit 1; }
  printf '%-10s %3d  drained %6.1f s  %6s records/s  CPU %6.1f s (%5.1f µs/record)  balanced %5.1f s (%s-%s leases each)  lease writes/min %s\n' \
    "$renewal" "$n" "$drained" "$(rate "$produced" "$drained")" "$cpu_drained" \
    "$(awk -v c="$cpu_drained" -v r="$produced" 'BEGIN { printf "%.1f", c / r * 1e6 }')" \
    "$balanced" "$lo" "$hi" "$(awk -v d="$((w1 - w0))" -v s="$(fsub "$b" "$a")" 'BEGIN { printf "%.0f", d / s * 60 }')"
}

echo "$SHARDS shards, $produced records; renewal, processes, results:"
for renewal in $RENEWALS; do
  run "$renewal" 1
  run "$renewal" "$WORKERS"
done
