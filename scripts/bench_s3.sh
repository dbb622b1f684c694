#!/usr/bin/env bash
# End-to-end throughput of shardbridge with the S3 sink against the local servers (kinesalite
# for Kinesis, moto for S3 and the lease table), side by side with a bare Rust loop
# (examples/s3_throughput.rs `bare`: GetRecords -> one gzip object per page -> PutObject, no
# leases, no intents, no checkpoints) on the same servers and the same data.
#
# Usage: scripts/bench_s3.sh [N]      (N records, default 50000)
#
# Steps: start the servers, build release, load one 4-shard stream with N records, then RUNS
# (default 3) pairs, alternating which goes first, each into fresh buckets (and a fresh lease
# table for shardbridge):
#   bare         time from launch to exit of `s3_throughput bare`
#   shardbridge  time from launch of `shardbridge run` until its /metrics
#                shardbridge_sink_records_written_total{connector="bench"} reaches N
#                (then SIGTERM; it must exit 0)
# and check with `s3_throughput count` that both buckets hold exactly N lines (N distinct
# records). Prints records/s of both and the ratio shardbridge/bare per run, then medians.
#
# Knobs (environment): BENCH_RUNS (3), BENCH_SHARDS (4), BENCH_TIMEOUT_S (300, per shardbridge
# run), BENCH_POLL_S (0.05, /metrics polling interval), BENCH_MAX_INTERVAL_MS (1000, the S3
# sink's max_interval_ms), BENCH_KEEP (1: keep the work dir), BENCH_PIN (0; 1: kinesalite on a CPU
# of its own, as the AWS services run on machines of their own: bench_common.sh
# pin_source_emulator. Unpinned on 2 CPUs, the lease table's and S3's emulator, moto, takes CPU
# from kinesalite during shardbridge's runs more than during the bare loop's).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

N="${1:-50000}"
RUNS="${BENCH_RUNS:-3}"
SHARDS="${BENCH_SHARDS:-4}"
TIMEOUT_S="${BENCH_TIMEOUT_S:-300}"
POLL_S="${BENCH_POLL_S:-0.05}"
# The sink's max_interval_ms: the last, partial object of each shard waits this long.
MAX_INTERVAL_MS="${BENCH_MAX_INTERVAL_MS:-1000}"
CONNECTOR=bench

[[ "$N" =~ ^[0-9]+$ && "$N" -gt 0 ]] || { echo "usage: $0 [N]" >&2; exit 2; }


source scripts/bench_common.sh
start_servers

log "building (release)"
cargo build --release --example s3_throughput --bin shardbridge
EX="$ROOT/target/release/examples/s3_throughput"
SB="$ROOT/target/release/shardbridge"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/bench_s3.XXXXXX")"
SB_PID=""
cleanup() {
  if [[ -n "$SB_PID" ]] && kill -0 "$SB_PID" 2>/dev/null; then
    kill -TERM "$SB_PID" 2>/dev/null || true
    wait "$SB_PID" 2>/dev/null || true
  fi
  unpin_source_emulator
  if [[ "${BENCH_KEEP:-0}" == 1 ]]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
[[ "${BENCH_PIN:-0}" == 1 ]] && pin_source_emulator

TAG="bench-$(date +%s)-$$"
STREAM="$TAG"


# verify LABEL BUCKET: exactly N lines, N distinct records; sets DIGEST (keys and ETags)
FAILED=0
verify() {
  local label="$1" bucket="$2" out lines distinct
  out="$("$EX" count --bucket "$bucket")"
  lines="$(sed -n 's/^RESULT .*lines=\([0-9]*\).*/\1/p' <<<"$out")"
  distinct="$(sed -n 's/^RESULT .*distinct=\([0-9]*\).*/\1/p' <<<"$out")"
  DIGEST="$(sed -n 's/^RESULT .*digest=\([0-9a-f]*\).*/\1/p' <<<"$out")"
  if [[ "$lines" == "$N" && "$distinct" == "$N" ]]; then
    log "  verified $label: $(head -n 1 <<<"$out")"
  else
    log "  VERIFICATION FAILED for $label: $(head -n 1 <<<"$out") (expected $N)"
    FAILED=1
  fi
}

# run_bare I: sets BARE_S (elapsed seconds)
run_bare() {
  local i="$1" bucket="${TAG}-bare-$1" out="$WORK/bare$1.out" t0 t1
  "$EX" mkbucket --bucket "$bucket"
  cpu_start
  t0="$(now)"
  "$EX" bare --stream "$STREAM" --bucket "$bucket" >"$out"
  t1="$(now)"
  BARE_S="$(fsub "$t1" "$t0")"
  sed 's/^/    /' "$out" | grep -v RESULT >&2
  log "    bare: $(cpu_report "$BARE_S")"
  verify "bare run $i" "$bucket"
  BARE_DIGEST="$DIGEST"
}

# written PORT: shardbridge_sink_records_written_total of the connector (0 if not there yet)
written() {
  { curl -s --noproxy '*' --max-time 1 "http://127.0.0.1:$1/metrics" 2>/dev/null || true; } |
    awk -v c="connector=\"$CONNECTOR\"" '
      /^shardbridge_sink_records_written_total\{/ && index($0, c) { v = $NF }
      END { print (v == "" ? 0 : v) }'
}


# run_sb I: sets SB_S (elapsed seconds)
run_sb() {
  local i="$1" bucket="${TAG}-sb-$1" leases="${TAG}-leases-$1" port cfg="$WORK/sb$1.toml"
  local slog="$WORK/sb$1.log" trace="$WORK/sb$1.trace" t0 t1 w last=-1 first="" deadline rc
  local cpu_line="" p90
  port="$(free_port)"
  "$EX" mkbucket --bucket "$bucket"
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
poll_idle_ms = 50
max_records = 1000
[connectors.source.aws]
endpoint_url = "$SHARDBRIDGE_TEST_KINESIS_ENDPOINT"
[connectors.leases]
table = "$leases"
[connectors.format]
type = "raw"
[connectors.sink]
type = "s3"
bucket = "$bucket"
compression = "gzip"
force_path_style = true
max_records = 1000
max_bytes = 8388608
max_interval_ms = $MAX_INTERVAL_MS
EOF
  "$SB" validate --config "$cfg" >/dev/null
  : >"$trace"
  cpu_start
  t0="$(now)"
  RUST_LOG="${RUST_LOG:-info}" "$SB" run --config "$cfg" 2>"$slog" &
  SB_PID=$!
  deadline=$((SECONDS + TIMEOUT_S))
  while :; do
    w="$(written "$port")"
    if [[ "$w" != "$last" ]]; then
      printf '%s %s\n' "$(fsub "$(now)" "$t0")" "$w" >>"$trace"
      last="$w"
    fi
    if awk -v w="$w" -v n="$N" 'BEGIN { exit !(w + 0 >= n + 0) }'; then
      t1="$(now)"
      SB_S="$(fsub "$t1" "$t0")"
      cpu_line="$(cpu_report "$SB_S")"
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
  local m="$WORK/sb$i.metrics" c="connector=\"$CONNECTOR\""
  first="$(awk '$2 > 0 { print $1; exit }' "$trace")"
  p90="$(awk -v n="$N" '$2 >= 0.9 * n { print $1; exit }' "$trace")"
  log "    shardbridge: first records durable at ${first:-?} s, 90% at ${p90:-?} s; $(metric "$m" shardbridge_source_get_records_calls_total "$c") GetRecords," \
    "$(metric "$m" shardbridge_sink_objects_written_total "$c") objects," \
    "PutObject $(metric "$m" shardbridge_sink_upload_duration_seconds_sum "$c") s total" \
    "($(fdiv "$(metric "$m" shardbridge_sink_upload_duration_seconds_sum "$c")" "$(metric "$m" shardbridge_sink_upload_duration_seconds_count "$c")") s/call)," \
    "sink write $(metric "$m" shardbridge_sink_write_duration_seconds_sum "$c") s total," \
    "$(metric "$m" shardbridge_checkpoint_writes_total "$c") checkpoints," \
    "$(metric "$m" shardbridge_lease_table_calls_total "$c") lease-table calls," \
    "retry waits $(metric "$m" shardbridge_retry_wait_milliseconds_total "$c") ms"
  log "    shardbridge: $cpu_line"
  verify "shardbridge run $i" "$bucket"
  SB_DIGEST="$DIGEST"
}

log "loading $N records into stream $STREAM ($SHARDS shards) on $SHARDBRIDGE_TEST_KINESIS_ENDPOINT"
"$EX" load --stream "$STREAM" --shards "$SHARDS" --records "$N" >&2

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
  if [[ "$BARE_DIGEST" == "$SB_DIGEST" ]]; then
    log "  both buckets hold the same objects (same keys, same ETags)"
  else
    log "  the buckets' objects differ (batches cut differently); counts were checked above"
  fi
  BARE_RATE[i]="$(rate "$N" "$bare_s")"
  SB_RATE[i]="$(rate "$N" "$sb_s")"
  RATIO[i]="$(fdiv "${SB_RATE[i]}" "${BARE_RATE[i]}")"
  printf 'run %d (%s first): bare %s s = %s records/s; shardbridge %s s = %s records/s; ratio shardbridge/bare %s\n' \
    "$i" "${order%% *}" "$bare_s" "${BARE_RATE[i]}" "$sb_s" "${SB_RATE[i]}" "${RATIO[i]}"
done

mb="$(median "${BARE_RATE[@]}")"
ms="$(median "${SB_RATE[@]}")"
printf 'source emulator pinned: %d\n' "$PINNED"
printf 'median over %d runs, N=%d: bare %s records/s; shardbridge %s records/s; ratio of medians %s; median ratio %s\n' \
  "$RUNS" "$N" "$mb" "$ms" "$(fdiv "$ms" "$mb")" "$(median "${RATIO[@]}")"
if ((FAILED)); then
  log "some verification failed (see above)"
  exit 1
fi
