#!/usr/bin/env bash
# End-to-end throughput of shardbridge with the Kinesis sink against the local servers
# (kinesalite for both Kinesis streams, moto for the lease table), side by side with a bare
# Rust loop (examples/kinesis_throughput.rs `bare`: GetRecords -> PutRecords of the page's
# records as they are, calls of up to 500, no ordering, no leases, no intents, no checkpoints)
# on the same servers and the same data.
#
# Usage: scripts/bench_kinesis.sh [N]      (N records, default 50000)
#
# Steps: start the servers, build release, load one 4-shard source stream with N records
# (1000 partition keys, each key's records carrying an increasing version), then RUNS
# (default 3) pairs, alternating which goes first, each into a fresh 4-shard target stream
# (and a fresh lease table for shardbridge):
#   bare         time from launch to exit of `kinesis_throughput bare`
#   shardbridge  time from launch of `shardbridge run` until its /metrics
#                shardbridge_sink_records_written_total{connector="bench"} reaches N
#                (then SIGTERM; it must exit 0)
# and check with `kinesis_throughput count` that both targets hold exactly N records, N
# distinct, the same records as the source (digest), and, for shardbridge, none out of order
# per key. Prints records/s of both and the ratio shardbridge/bare per run, then medians.
# Target streams are deleted after they are checked (kinesalite keeps everything in memory),
# the source stream at the end.
#
# Knobs (environment): BENCH_RUNS (3), BENCH_SHARDS (4), BENCH_TIMEOUT_S (300, per shardbridge
# run), BENCH_POLL_S (0.05, /metrics polling interval), and the Kinesis sink's settings:
# BENCH_MAX_INTERVAL_MS (200), BENCH_MAX_RECORDS (10000), BENCH_MAX_BYTES (8388608),
# BENCH_MAX_IN_FLIGHT (4), BENCH_PARTITION_KEY (item-key); the source's BENCH_SOURCE_MAX_RECORDS
# (1000, also bare's GetRecords limit) and BENCH_POLL_IDLE_MS (50); bare's
# BENCH_BARE_PUT_CONCURRENCY (2: a page's two calls of 500 in flight together) and
# BENCH_BARE_PUT_RECORDS (500: records per PutRecords call, at most); BENCH_KEEP
# (1: keep the work dir: configs, logs, /metrics, progress traces); BENCH_KEEP_STREAMS (1: do
# not delete the streams); BENCH_PROBE (1: run `kinesis_throughput probe` after loading);
# BENCH_SHARDBRIDGE_BIN (the shardbridge binary to measure; default this tree's release build).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

N="${1:-50000}"
RUNS="${BENCH_RUNS:-3}"
SHARDS="${BENCH_SHARDS:-4}"
TIMEOUT_S="${BENCH_TIMEOUT_S:-300}"
POLL_S="${BENCH_POLL_S:-0.05}"
# The Kinesis sink's batch limits (its defaults): a batch is written at the first reached.
MAX_INTERVAL_MS="${BENCH_MAX_INTERVAL_MS:-200}"
MAX_RECORDS="${BENCH_MAX_RECORDS:-10000}"
MAX_BYTES="${BENCH_MAX_BYTES:-8388608}"
MAX_IN_FLIGHT="${BENCH_MAX_IN_FLIGHT:-4}"
PARTITION_KEY="${BENCH_PARTITION_KEY:-item-key}"
SOURCE_MAX_RECORDS="${BENCH_SOURCE_MAX_RECORDS:-1000}"
POLL_IDLE_MS="${BENCH_POLL_IDLE_MS:-50}"
BARE_PUT_CONCURRENCY="${BENCH_BARE_PUT_CONCURRENCY:-2}"
BARE_PUT_RECORDS="${BENCH_BARE_PUT_RECORDS:-500}"
CONNECTOR=bench

[[ "$N" =~ ^[0-9]+$ && "$N" -gt 0 ]] || { echo "usage: $0 [N]" >&2; exit 2; }


source scripts/bench_common.sh
start_servers

log "building (release)"
cargo build --release --example kinesis_throughput --bin shardbridge
EX="$ROOT/target/release/examples/kinesis_throughput"
# BENCH_SHARDBRIDGE_BIN: measure another shardbridge binary (say, an older build kept aside)
# against the same bare loop, to compare builds run by run.
SB="${BENCH_SHARDBRIDGE_BIN:-$ROOT/target/release/shardbridge}"

TAG="bench-$(date +%s)-$$"
STREAM="$TAG-source"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/bench_kinesis.XXXXXX")"
SB_PID=""
STREAMS_TO_DELETE=()
cleanup() {
  if [[ -n "$SB_PID" ]] && kill -0 "$SB_PID" 2>/dev/null; then
    kill -TERM "$SB_PID" 2>/dev/null || true
    wait "$SB_PID" 2>/dev/null || true
  fi
  if [[ "${BENCH_KEEP:-0}" == 1 ]]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
  if [[ "${BENCH_KEEP_STREAMS:-0}" == 1 ]]; then
    log "streams kept: $STREAM ${STREAMS_TO_DELETE[*]}"
  else
    # Those verify has not deleted yet (a run that failed), and the source.
    for s in "${STREAMS_TO_DELETE[@]}" "$STREAM"; do
      "$EX" rmstream --stream "$s" 2>/dev/null || true
    done
  fi
}
trap cleanup EXIT


# field OUT NAME: the value of NAME=… on the RESULT line of OUT
field() {
  awk -v k="$2" '$1 == "RESULT" { for (i = 2; i <= NF; i++) if (index($i, k "=") == 1) print substr($i, length(k) + 2) }' <<<"$1"
}

# verify LABEL STREAM ORDERED: exactly N records, N distinct, the source's records (digest);
# ORDERED=1: no record out of order per key. Deletes the stream afterwards (unless
# BENCH_KEEP_STREAMS), to keep kinesalite's memory (and its garbage collector's work) the same
# from run to run.
FAILED=0
verify() {
  local label="$1" stream="$2" ordered="$3" out records distinct ooo digest ok=1
  out="$("$EX" count --stream "$stream")"
  records="$(field "$out" records)"
  distinct="$(field "$out" distinct)"
  ooo="$(field "$out" out_of_order)"
  digest="$(field "$out" digest)"
  [[ "$records" == "$N" && "$distinct" == "$N" && "$digest" == "$SRC_DIGEST" ]] || ok=0
  if [[ "$ordered" == 1 && "$ooo" != 0 ]]; then ok=0; fi
  if ((ok)); then
    log "  verified $label: $(head -n 1 <<<"$out")"
  else
    log "  VERIFICATION FAILED for $label: $(head -n 1 <<<"$out")" \
      "(expected $N records, $N distinct, digest $SRC_DIGEST$([[ "$ordered" == 1 ]] && echo ", 0 out of order"))"
    FAILED=1
  fi
  if [[ "${BENCH_KEEP_STREAMS:-0}" != 1 ]]; then "$EX" rmstream --stream "$stream" || true; fi
}

# run_bare I: sets BARE_S (elapsed seconds)
run_bare() {
  local i="$1" target="${TAG}-bare-$1" out="$WORK/bare$1.out" t0 t1
  STREAMS_TO_DELETE+=("$target")
  "$EX" mkstream --stream "$target" --shards "$SHARDS"
  cpu_start
  t0="$(now)"
  "$EX" bare --source "$STREAM" --target "$target" --limit "$SOURCE_MAX_RECORDS" \
    --put-concurrency "$BARE_PUT_CONCURRENCY" --put-records "$BARE_PUT_RECORDS" >"$out"
  t1="$(now)"
  BARE_S="$(fsub "$t1" "$t0")"
  sed 's/^/    /' "$out" | grep -v RESULT >&2
  log "    bare: $(cpu_report "$BARE_S")"
  verify "bare run $i" "$target" 0
}

# progress PORT: "WRITTEN READ", shardbridge_sink_records_written_total and
# shardbridge_source_records_read_total of the connector (0 if not there yet)
progress() {
  { curl -s --noproxy '*' --max-time 1 "http://127.0.0.1:$1/metrics" 2>/dev/null || true; } |
    awk -v c="connector=\"$CONNECTOR\"" '
      /^shardbridge_sink_records_written_total\{/ && index($0, c) { w = $NF }
      /^shardbridge_source_records_read_total\{/ && index($0, c) { r = $NF }
      END { print (w == "" ? 0 : w), (r == "" ? 0 : r) }'
}


# run_sb I: sets SB_S (elapsed seconds)
run_sb() {
  local i="$1" target="${TAG}-sb-$1" leases="${TAG}-leases-$1" port cfg="$WORK/sb$1.toml"
  local slog="$WORK/sb$1.log" trace="$WORK/sb$1.trace" t0 t1 w r p last="" first="" deadline rc
  local cpu_line="" p90 all_read began sb_cpu=0
  port="$(free_port)"
  STREAMS_TO_DELETE+=("$target")
  "$EX" mkstream --stream "$target" --shards "$SHARDS"
  cat >"$cfg" <<EOF
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
poll_idle_ms = $POLL_IDLE_MS
max_records = $SOURCE_MAX_RECORDS
[connectors.source.aws]
endpoint_url = "$SHARDBRIDGE_TEST_KINESIS_ENDPOINT"
[connectors.leases]
table = "$leases"
[connectors.format]
type = "raw"
[connectors.sink]
type = "kinesis"
stream = "$target"
partition_key = "$PARTITION_KEY"
max_in_flight = $MAX_IN_FLIGHT
max_records = $MAX_RECORDS
max_bytes = $MAX_BYTES
max_interval_ms = $MAX_INTERVAL_MS
[connectors.sink.aws]
endpoint_url = "$SHARDBRIDGE_TEST_KINESIS_ENDPOINT"
EOF
  "$SB" validate --config "$cfg" >/dev/null
  : >"$trace"
  cpu_start
  t0="$(now)"
  RUST_LOG="${RUST_LOG:-info}" "$SB" run --config "$cfg" 2>"$slog" &
  SB_PID=$!
  deadline=$((SECONDS + TIMEOUT_S))
  while :; do
    p="$(progress "$port")"
    read -r w r <<<"$p"
    if [[ "$p" != "$last" ]]; then
      printf '%s %s %s\n' "$(fsub "$(now)" "$t0")" "$w" "$r" >>"$trace"
      last="$p"
    fi
    if awk -v w="$w" -v n="$N" 'BEGIN { exit !(w + 0 >= n + 0) }'; then
      t1="$(now)"
      SB_S="$(fsub "$t1" "$t0")"
      cpu_line="$(cpu_report "$SB_S")"
      sb_cpu="$(proc_cpu "$SB_PID")"
      break
    fi
    if ! kill -0 "$SB_PID" 2>/dev/null; then
      log "shardbridge exited early; last lines of its log:"; tail -n 30 "$slog" >&2
      exit 1
    fi
    if ((SECONDS > deadline)); then
      log "shardbridge did not write $N records within ${TIMEOUT_S}s (at $w); log tail:"
      tail -n 30 "$slog" >&2
      exit 1
    fi
    sleep "$POLL_S"
  done
  curl -s --noproxy '*' --max-time 2 "http://127.0.0.1:$port/metrics" >"$WORK/sb$i.metrics" || true
  kill -TERM "$SB_PID"
  rc=0
  wait "$SB_PID" || rc=$?
  SB_PID=""
  if [[ "$rc" != 0 ]]; then
    log "  shardbridge exited $rc after SIGTERM (expected 0); log tail:"; tail -n 20 "$slog" >&2
    FAILED=1
  fi
  # Where the time went, from its own metrics.
  local m="$WORK/sb$i.metrics" c="connector=\"$CONNECTOR\"" calls put_s batches
  first="$(awk '$2 > 0 { print $1; exit }' "$trace")"
  p90="$(awk -v n="$N" '$2 >= 0.9 * n { print $1; exit }' "$trace")"
  all_read="$(awk -v n="$N" '$3 >= n { print $1; exit }' "$trace")"
  # When the first shard worker started reading, by its log's clock (UTC timestamps).
  began="$(sed -n 's/^\([0-9T:.-]*Z\) .*reading shard.*/\1/p' "$slog" | head -n 1)"
  if [[ -n "$began" ]]; then began="$(fsub "$(date -d "$began" +%s.%N)" "$t0")"; fi
  calls="$(imetric "$m" shardbridge_kinesis_put_records_calls_total "$c")"
  put_s="$(metric "$m" shardbridge_kinesis_put_duration_seconds_sum "$c")"
  batches="$(imetric "$m" shardbridge_sink_batches_written_total "$c")"
  log "    shardbridge: reading began at ${began:-?} s, first records durable at ${first:-?} s," \
    "90% at ${p90:-?} s, all read at ${all_read:-?} s (the last batches took $(fsub "$SB_S" "${all_read:-$SB_S}") s more);" \
    "$(imetric "$m" shardbridge_source_get_records_calls_total "$c") GetRecords," \
    "$batches batches ($(fdiv "$N" "$batches") records/batch)," \
    "$calls PutRecords calls ($(fdiv "$(imetric "$m" shardbridge_kinesis_records_put_total "$c")" "$calls") records/call)," \
    "PutRecords $put_s s total ($(fdiv "$put_s" "$calls") s/call)," \
    "$(imetric "$m" shardbridge_kinesis_records_retried_total "$c") records retried," \
    "sink write $(metric "$m" shardbridge_sink_write_duration_seconds_sum "$c") s total," \
    "$(imetric "$m" shardbridge_checkpoint_writes_total "$c") checkpoints," \
    "$(imetric "$m" shardbridge_lease_table_calls_total "$c") lease-table calls," \
    "retry waits $(metric "$m" shardbridge_retry_wait_milliseconds_total "$c") ms"
  log "    shardbridge: $cpu_line; shardbridge itself ${sb_cpu} s CPU"
  verify "shardbridge run $i" "$target" 1
}

log "loading $N records into stream $STREAM ($SHARDS shards) on $SHARDBRIDGE_TEST_KINESIS_ENDPOINT"
"$EX" load --stream "$STREAM" --shards "$SHARDS" --records "$N" >&2
src_out="$("$EX" count --stream "$STREAM")"
SRC_DIGEST="$(field "$src_out" digest)"
log "source: $(head -n 1 <<<"$src_out")"
if [[ "$(field "$src_out" records)" != "$N" || "$(field "$src_out" distinct)" != "$N" ||
  "$(field "$src_out" out_of_order)" != 0 ]]; then
  log "the source stream is not as loaded (expected $N records, $N distinct, 0 out of order)"
  exit 1
fi
if [[ "${BENCH_PROBE:-0}" == 1 ]]; then
  log "probe (single-call latencies)"
  "$EX" probe --stream "$STREAM" >&2
fi
log "shardbridge sink: max_interval_ms=$MAX_INTERVAL_MS max_records=$MAX_RECORDS" \
  "max_bytes=$MAX_BYTES max_in_flight=$MAX_IN_FLIGHT partition_key=$PARTITION_KEY;" \
  "source max_records=$SOURCE_MAX_RECORDS poll_idle_ms=$POLL_IDLE_MS;" \
  "bare: calls of up to $BARE_PUT_RECORDS records, $BARE_PUT_CONCURRENCY in flight per shard"

declare -a BARE_RATE SB_RATE RATIO
for ((i = 1; i <= RUNS; i++)); do
  if ((i % 2)); then order="bare shardbridge"; else order="shardbridge bare"; fi
  log "run $i of $RUNS ($order); load average $(cut -d' ' -f1-3 /proc/loadavg)"
  for what in $order; do
    if [[ "$what" == bare ]]; then
      run_bare "$i"
      bare_s="$BARE_S"
      log "  bare:        ${bare_s} s"
    else
      run_sb "$i"
      sb_s="$SB_S"
      log "  shardbridge: ${sb_s} s"
    fi
  done
  BARE_RATE[i]="$(rate "$N" "$bare_s")"
  SB_RATE[i]="$(rate "$N" "$sb_s")"
  RATIO[i]="$(fdiv "${SB_RATE[i]}" "${BARE_RATE[i]}")"
  printf 'run %d (%s first): bare %s s = %s records/s; shardbridge %s s = %s records/s; ratio shardbridge/bare %s\n' \
    "$i" "${order%% *}" "$bare_s" "${BARE_RATE[i]}" "$sb_s" "${SB_RATE[i]}" "${RATIO[i]}"
done

mb="$(median "${BARE_RATE[@]}")"
ms="$(median "${SB_RATE[@]}")"
printf 'median over %d runs, N=%d: bare %s records/s; shardbridge %s records/s; ratio of medians %s; median ratio %s (load average %s)\n' \
  "$RUNS" "$N" "$mb" "$ms" "$(fdiv "$ms" "$mb")" "$(median "${RATIO[@]}")" "$(cut -d' ' -f1-3 /proc/loadavg)"
if ((FAILED)); then
  log "some verification failed (see above)"
  exit 1
fi
