#!/usr/bin/env bash
# Throughput of shardbridge with the http sink against a handler that answers at once, side by
# side with a bare loop that POSTs the same batches (examples/http_throughput.rs `bare`: every
# shard read from TRIM_HORIZON, each page's records encoded in the `lambda` format and POSTed
# as events of up to 100 records, one after the other per shard; no leases, no checkpoints).
#
# Usage: scripts/bench_http.sh [N]      (N records, default 20000)
#
# Steps: start the servers (kinesalite for the source stream, moto for the lease table), build
# release, load one 4-shard Kinesis stream with N records (examples/kinesis_throughput.rs
# `load`), then RUNS (default 3) pairs, alternating which goes first, each against a fresh
# handler (`http_throughput handler`, which counts the records it receives):
#   bare         time from launch to exit of `http_throughput bare`
#   shardbridge  time from launch of `shardbridge run` (a fresh lease table) until the handler
#                counted N records (it writes that time itself; then SIGTERM, which must exit
#                0), and its CPU seconds
# Both must deliver exactly N records. Prints records/s of both and the ratio
# shardbridge/bare per run, then medians: from launch (start-up included: shardbridge creates
# its lease table and takes its leases first), and from the first records the handler received
# to the last (the rate of delivery once both run; the handler writes both times itself).
#
# The source emulator gets a CPU of its own (bench_common.sh pin_source_emulator; BENCH_PIN=0
# turns that off): kinesalite is the bottleneck of both, and on a 2-CPU machine moto, the lease
# table's emulator, would otherwise take CPU from it during shardbridge's runs only.
#
# Knobs (environment): BENCH_PIN (1), BENCH_RUNS (3), BENCH_SHARDS (4), BENCH_MAX_RECORDS (100, records per
# invocation for both), BENCH_TIMEOUT_S (300), BENCH_KEEP (1: keep the work dir), BENCH_LOG
# (shardbridge's RUST_LOG, default warn; its log is shardbridge.log in the work dir, its last
# /metrics metrics.txt).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

N="${1:-20000}"
RUNS="${BENCH_RUNS:-3}"
SHARDS="${BENCH_SHARDS:-4}"
MAX_RECORDS="${BENCH_MAX_RECORDS:-100}"
TIMEOUT_S="${BENCH_TIMEOUT_S:-300}"
[[ "$N" =~ ^[0-9]+$ && "$N" -gt 0 ]] || { echo "usage: $0 [N]" >&2; exit 2; }

source scripts/bench_common.sh
start_servers

build_http_bench

WORK="$(mktemp -d "${TMPDIR:-/tmp}/bench_http.XXXXXX")"
HANDLER_PID=""
cleanup() {
  [[ -n "$HANDLER_PID" ]] && kill "$HANDLER_PID" 2>/dev/null || true
  unpin_source_emulator
  [[ "${BENCH_KEEP:-0}" == 1 ]] && log "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

[[ "${BENCH_PIN:-1}" == 1 ]] && pin_source_emulator
STREAM="bench-http-$(date +%s)-$$"
log "loading $N records into $STREAM ($SHARDS shards)"
"$KT" load --stream "$STREAM" --shards "$SHARDS" --records "$N" >/dev/null

# start_handler: a fresh counting handler; sets HANDLER_PORT and HANDLER_PID.
start_handler() {
  [[ -n "$HANDLER_PID" ]] && { kill "$HANDLER_PID" 2>/dev/null || true; wait "$HANDLER_PID" 2>/dev/null || true; }
  HANDLER_PORT="$(free_port)"
  REACHED="$WORK/reached-$HANDLER_PORT.last"; FIRST="$WORK/reached-$HANDLER_PORT.first"
  "$HT" handler --port "$HANDLER_PORT" --expect "$N" --reached "$REACHED" &
  HANDLER_PID=$!
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$HANDLER_PORT/count" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  log "ERROR: the handler did not start"; exit 1
}
count() { curl -sf "http://127.0.0.1:$HANDLER_PORT/count" || echo 0; }

run_bare() {
  start_handler
  local t0 t1
  cpu_start
  t0="$(now)"
  "$HT" bare --source "$STREAM" --url "http://127.0.0.1:$HANDLER_PORT/invoke" \
    --max-records "$MAX_RECORDS" >"$WORK/bare.out"
  t1="$(now)"
  BARE_SERVERS="$(cpu_report "$(fsub "$t1" "$t0")")"
  local got; got="$(count)"
  [[ "$got" == "$N" ]] || { log "ERROR: bare delivered $got of $N"; exit 1; }
  BARE_S="$(fsub "$t1" "$t0")"
  BARE_STEADY_S="$(fsub "$(cat "$REACHED")" "$(cat "$FIRST")")"
}

run_shardbridge() {
  start_handler
  local port leases; port="$(free_port)"; leases="bench-http-leases-$(date +%s%N)"
  cat >"$WORK/c.toml" <<EOF
[worker]
listen = "127.0.0.1:$port"
[aws]
region = "us-east-1"
endpoint_url = "$SHARDBRIDGE_TEST_AWS_ENDPOINT"
[[connectors]]
name = "bench"
[connectors.source]
type = "kinesis"
stream = "$STREAM"
poll_idle_ms = 50
[connectors.source.aws]
endpoint_url = "$SHARDBRIDGE_TEST_KINESIS_ENDPOINT"
[connectors.leases]
table = "$leases"
[connectors.format]
type = "lambda"
invoke_identity_arn = "arn:aws:iam::123456789012:role/bench"
[connectors.sink]
type = "http"
url = "http://127.0.0.1:$HANDLER_PORT/invoke"
max_records = $MAX_RECORDS
EOF
  local t0 t1 pid got deadline
  cpu_start
  t0="$(now)"
  RUST_LOG="${BENCH_LOG:-warn}" "$SB" run --config "$WORK/c.toml" 2>"$WORK/shardbridge.log" &
  pid=$!
  deadline=$((SECONDS + TIMEOUT_S))
  # The handler writes the time it counted N records (polling would cost CPU the servers need).
  while [[ ! -s "$REACHED" ]]; do
    if ((SECONDS > deadline)) || ! kill -0 "$pid" 2>/dev/null; then
      log "ERROR: shardbridge delivered $(count) of $N"; tail -5 "$WORK/shardbridge.log" >&2; exit 1
    fi
    sleep 0.05
  done
  t1="$(cat "$REACHED")"
  SB_CPU="$(proc_cpu "$pid")"
  curl -sf "http://127.0.0.1:$port/metrics" >"$WORK/metrics.txt" || true
  SB_SERVERS="$(cpu_report "$(fsub "$t1" "$t0")")"
  kill -TERM "$pid"
  wait "$pid" || { log "ERROR: shardbridge did not exit 0"; exit 1; }
  got="$(count)"
  [[ "$got" == "$N" ]] || { log "ERROR: shardbridge delivered $got of $N (duplicates?)"; exit 1; }
  SB_S="$(fsub "$t1" "$t0")"
  SB_STEADY_S="$(fsub "$t1" "$(cat "$FIRST")")"
}

bare_rates=(); sb_rates=(); ratios=(); cpus=(); steady_ratios=()
for run in $(seq 1 "$RUNS"); do
  if ((run % 2)); then run_bare; run_shardbridge; else run_shardbridge; run_bare; fi
  b="$(rate "$N" "$BARE_S")"; s="$(rate "$N" "$SB_S")"; r="$(fdiv "$s" "$b")"
  cpu_us="$(awk -v c="$SB_CPU" -v n="$N" 'BEGIN { printf "%.1f", c / n * 1e6 }')"
  bs="$(rate "$N" "$BARE_STEADY_S")"; ss="$(rate "$N" "$SB_STEADY_S")"; rs="$(fdiv "$ss" "$bs")"
  log "run $run: bare $b records/s ($BARE_S s), shardbridge $s records/s ($SB_S s, $SB_CPU CPU s = $cpu_us µs/record), ratio $r"
  log "  first record to last: bare $bs records/s ($BARE_STEADY_S s), shardbridge $ss records/s ($SB_STEADY_S s), ratio $rs"
  log "  bare: $BARE_SERVERS"
  log "  shardbridge: $SB_SERVERS"
  bare_rates+=("$b"); sb_rates+=("$s"); ratios+=("$r"); cpus+=("$cpu_us"); steady_ratios+=("$rs")
done
echo "http sink, $N records, $SHARDS shards, $MAX_RECORDS records per invocation, $RUNS runs, source emulator pinned: $((PINNED))"
echo "median bare: $(median "${bare_rates[@]}") records/s"
echo "median shardbridge: $(median "${sb_rates[@]}") records/s, $(median "${cpus[@]}") µs CPU per record"
echo "median ratio shardbridge/bare: $(median "${ratios[@]}") (from launch)"
echo "median ratio shardbridge/bare: $(median "${steady_ratios[@]}") (first record received to last)"
"$KT" rmstream --stream "$STREAM" >/dev/null 2>&1 || true
