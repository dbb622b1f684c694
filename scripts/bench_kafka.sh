#!/usr/bin/env bash
# End-to-end throughput of shardbridge with the Kafka sink (transactions) against the local
# servers (kinesalite for the Kinesis source, moto for the lease table, tansu for Kafka), side by
# side with a bare rdkafka loop (examples/kafka_throughput.rs `bare`: GetRecords -> one shared
# idempotent producer, the record's bytes under its partition key; no transactions, no leases,
# no intents, no checkpoints) on the same servers and the same data.
#
# Usage: scripts/bench_kafka.sh [N]      (N records, default 200000: fewer, and the start-up (lease table, first shard sync) weighs on the ratio)
#
# Steps: start the servers, build release, load one 4-shard source stream with N records
# (`kinesis_throughput load`: 1000 keys, each key's records carrying an increasing version),
# then RUNS (default 3) pairs, alternating which goes first, each into a fresh 4-partition
# topic (and a fresh lease table for shardbridge):
#   bare         time from launch to exit of `kafka_throughput bare` (every delivery acked)
#   shardbridge  time from launch of `shardbridge run` until its /metrics
#                shardbridge_sink_records_written_total{connector="bench"} reaches N
#                (then SIGTERM; it must exit 0)
# and check with `kafka_throughput count` (the tests' raw-batch verifier) that both topics hold
# exactly N committed records, N distinct, the source's records (digest), and, for shardbridge,
# none out of order per key and no transaction open or aborted. Prints records/s of both, the
# ratio shardbridge/bare and the CPU seconds per record of each process, per run, then medians.
#
# Knobs (environment): BENCH_RUNS (3), BENCH_SHARDS (4), BENCH_TIMEOUT_S (300),
# BENCH_POLL_S (0.05), the sink's BENCH_MAX_INTERVAL_MS (200), BENCH_MAX_RECORDS (10000),
# BENCH_MAX_BYTES (8388608), BENCH_EXACTLY_ONCE (true); BENCH_KEEP (1: keep the work dir).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

N="${1:-200000}"
RUNS="${BENCH_RUNS:-3}"
SHARDS="${BENCH_SHARDS:-4}"
TIMEOUT_S="${BENCH_TIMEOUT_S:-300}"
POLL_S="${BENCH_POLL_S:-0.05}"
MAX_INTERVAL_MS="${BENCH_MAX_INTERVAL_MS:-200}"
MAX_RECORDS="${BENCH_MAX_RECORDS:-10000}"
MAX_BYTES="${BENCH_MAX_BYTES:-8388608}"
EXACTLY_ONCE="${BENCH_EXACTLY_ONCE:-true}"
CONNECTOR=bench

[[ "$N" =~ ^[0-9]+$ && "$N" -gt 0 ]] || { echo "usage: $0 [N]" >&2; exit 2; }

source scripts/bench_common.sh
start_servers

log "building (release)"
cargo build --release --example kinesis_throughput --example kafka_throughput --bin shardbridge
KX="$ROOT/target/release/examples/kinesis_throughput"
EX="$ROOT/target/release/examples/kafka_throughput"
SB="${BENCH_SHARDBRIDGE_BIN:-$ROOT/target/release/shardbridge}"

TAG="bench-$(date +%s)-$$"
STREAM="$TAG-source"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/bench_kafka.XXXXXX")"
SB_PID=""
cleanup() {
  if [[ -n "$SB_PID" ]] && kill -0 "$SB_PID" 2>/dev/null; then
    kill -TERM "$SB_PID" 2>/dev/null || true
    wait "$SB_PID" 2>/dev/null || true
  fi
  "$KX" rmstream --stream "$STREAM" 2>/dev/null || true
  if [[ "${BENCH_KEEP:-0}" == 1 ]]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

field() {
  awk -v k="$2" '$1 == "RESULT" { for (i = 2; i <= NF; i++) if (index($i, k "=") == 1) print substr($i, length(k) + 2) }' <<<"$1"
}

FAILED=0
# verify LABEL TOPIC ORDERED
verify() {
  local out ok=1
  out="$("$EX" count --topic "$2")"
  [[ "$(field "$out" records)" == "$N" && "$(field "$out" distinct)" == "$N" &&
    "$(field "$out" digest)" == "$SRC_DIGEST" && "$(field "$out" open)" == 0 ]] || ok=0
  if [[ "$3" == 1 && "$(field "$out" out_of_order)" != 0 ]]; then ok=0; fi
  if ((ok)); then
    log "  verified $1: $(head -n 1 <<<"$out")"
  else
    log "  VERIFICATION FAILED for $1: $(head -n 1 <<<"$out") (expected $N, digest $SRC_DIGEST)"
    FAILED=1
  fi
}

# cpu_of PID: user + system seconds of a process that is still running
cpu_of() { proc_cpu "$1"; }

run_bare() {
  local i="$1" topic="${TAG}-bare-$1" t0 t1 out="$WORK/bare$1.out"
  "$EX" mktopic --topic "$topic" --partitions 4
  t0="$(now)"
  # GNU time's %U and %S: the bare loop's own CPU.
  /usr/bin/env time -f "CPU %U %S" -o "$WORK/bare$1.time" \
    "$EX" bare --source "$STREAM" --topic "$topic" >"$out"
  t1="$(now)"
  BARE_S="$(fsub "$t1" "$t0")"
  BARE_CPU="$(awk '{ printf "%.2f", $2 + $3 }' "$WORK/bare$1.time")"
  sed 's/^/    /' "$out" >&2
  verify "bare run $i" "$topic" 0
}

progress() {
  { curl -s --noproxy '*' --max-time 1 "http://127.0.0.1:$1/metrics" 2>/dev/null || true; } |
    awk -v c="connector=\"$CONNECTOR\"" '
      /^shardbridge_sink_records_written_total\{/ && index($0, c) { w = $NF }
      END { print (w == "" ? 0 : w) }'
}

run_sb() {
  local i="$1" topic="${TAG}-sb-$1" leases="${TAG}-leases-$1" port cfg="$WORK/sb$1.toml"
  local slog="$WORK/sb$1.log" t0 t1 w deadline rc m c
  port="$(free_port)"
  "$EX" mktopic --topic "$topic" --partitions 4
  cat >"$cfg" <<EOF2
[worker]
id = "bench-$i"
listen = "127.0.0.1:$port"
[aws]
region = "us-east-1"
endpoint_url = "$SHARDBRIDGE_TEST_AWS_ENDPOINT"
[[connectors]]
name = "$CONNECTOR"
[connectors.source]
type = "kinesis"
stream = "$STREAM"
poll_idle_ms = 50
[connectors.source.aws]
endpoint_url = "$SHARDBRIDGE_TEST_KINESIS_ENDPOINT"
[connectors.leases]
table = "$leases"
[connectors.format]
type = "raw"
[connectors.sink]
type = "kafka"
brokers = "$SHARDBRIDGE_TEST_KAFKA_BOOTSTRAP"
topic = "$topic"
exactly_once = $EXACTLY_ONCE
max_records = $MAX_RECORDS
max_bytes = $MAX_BYTES
max_interval_ms = $MAX_INTERVAL_MS
EOF2
  "$SB" validate --config "$cfg" >/dev/null
  t0="$(now)"
  RUST_LOG="${RUST_LOG:-info}" "$SB" run --config "$cfg" 2>"$slog" &
  SB_PID=$!
  deadline=$((SECONDS + TIMEOUT_S))
  while :; do
    w="$(progress "$port")"
    if awk -v w="$w" -v n="$N" 'BEGIN { exit !(w + 0 >= n + 0) }'; then
      t1="$(now)"
      SB_S="$(fsub "$t1" "$t0")"
      SB_CPU="$(cpu_of "$SB_PID")"
      break
    fi
    if ! kill -0 "$SB_PID" 2>/dev/null; then
      log "shardbridge exited early; log tail:"; tail -n 30 "$slog" >&2; exit 1
    fi
    if ((SECONDS > deadline)); then
      log "shardbridge did not write $N records within ${TIMEOUT_S}s (at $w); log tail:"
      tail -n 30 "$slog" >&2; exit 1
    fi
    sleep "$POLL_S"
  done
  m="$WORK/sb$i.metrics"
  curl -s --noproxy '*' --max-time 2 "http://127.0.0.1:$port/metrics" >"$m" || true
  kill -TERM "$SB_PID"
  rc=0
  wait "$SB_PID" || rc=$?
  SB_PID=""
  if [[ "$rc" != 0 ]]; then
    log "  shardbridge exited $rc after SIGTERM (expected 0)"; tail -n 20 "$slog" >&2; FAILED=1
  fi
  c="connector=\"$CONNECTOR\""
  log "    shardbridge: $(imetric "$m" shardbridge_kafka_transactions_total "outcome=\"committed\"") transactions" \
    "(commit $(fdiv "$(metric "$m" shardbridge_kafka_commit_duration_seconds_sum "$c")" \
      "$(imetric "$m" shardbridge_kafka_commit_duration_seconds_count "$c")") s each)," \
    "$(imetric "$m" shardbridge_sink_batches_written_total "$c") batches," \
    "$(imetric "$m" shardbridge_checkpoint_writes_total "$c") checkpoints, ${SB_CPU} s CPU"
  verify "shardbridge run $i" "$topic" 1
}

log "loading $N records into stream $STREAM ($SHARDS shards)"
"$KX" load --stream "$STREAM" --shards "$SHARDS" --records "$N" >&2
src_out="$("$KX" count --stream "$STREAM")"
SRC_DIGEST="$(field "$src_out" digest)"
log "source: $(head -n 1 <<<"$src_out")"

declare -a BARE_RATE SB_RATE RATIO BARE_US SB_US
for ((i = 1; i <= RUNS; i++)); do
  if ((i % 2)); then order="bare shardbridge"; else order="shardbridge bare"; fi
  log "run $i of $RUNS ($order); load average $(cut -d' ' -f1-3 /proc/loadavg)"
  for what in $order; do
    if [[ "$what" == bare ]]; then run_bare "$i"; else run_sb "$i"; fi
  done
  BARE_RATE[i]="$(rate "$N" "$BARE_S")"
  SB_RATE[i]="$(rate "$N" "$SB_S")"
  RATIO[i]="$(fdiv "${SB_RATE[i]}" "${BARE_RATE[i]}")"
  BARE_US[i]="$(awk -v c="$BARE_CPU" -v n="$N" 'BEGIN { printf "%.2f", c * 1e6 / n }')"
  SB_US[i]="$(awk -v c="$SB_CPU" -v n="$N" 'BEGIN { printf "%.2f", c * 1e6 / n }')"
  printf 'run %d (%s first): bare %s s = %s records/s (%s us CPU/record); shardbridge %s s = %s records/s (%s us CPU/record); ratio %s\n' \
    "$i" "${order%% *}" "$BARE_S" "${BARE_RATE[i]}" "${BARE_US[i]}" "$SB_S" "${SB_RATE[i]}" "${SB_US[i]}" "${RATIO[i]}"
done
printf 'median over %d runs, N=%d: bare %s records/s; shardbridge %s records/s; median ratio %s; CPU per record: bare %s us, shardbridge %s us (load average %s)\n' \
  "$RUNS" "$N" "$(median "${BARE_RATE[@]}")" "$(median "${SB_RATE[@]}")" "$(median "${RATIO[@]}")" \
  "$(median "${BARE_US[@]}")" "$(median "${SB_US[@]}")" "$(cut -d' ' -f1-3 /proc/loadavg)"
if ((FAILED)); then log "some verification failed (see above)"; exit 1; fi
