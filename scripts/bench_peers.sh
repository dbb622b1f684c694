#!/usr/bin/env bash
# shardbridge beside the peers a user would pick instead (issue #14), in one run: the same
# DynamoDB stream (moto) into a fresh 4-shard Kinesis stream (kinesalite), `lambda` format,
# item key as partition key, by
#   shardbridge  `shardbridge run` with the kinesis sink, its defaults (leases and a
#                checkpoint per batch in a fresh lease table on moto); stopped (SIGTERM) when
#                its /metrics shardbridge_sink_records_written_total reaches N
#   boto3        scripts/peers/forwarder.py: DescribeStream, GetRecords loop per shard,
#                PutRecords of up to 500, failed entries retried; no leases, no checkpoints;
#                exits when it has put N records
#   bare         examples/kinesis_throughput.rs `bare-ddb`: the same loop in Rust with
#                shardbridge's DynamoDB Streams reader and `lambda` encoder; no leases, no
#                checkpoints; exits when it has put N records
#
# Usage: scripts/bench_peers.sh [N]     (N changes per run, default 10000)
#
# Each run (one process): a fresh table with a NEW_AND_OLD_IMAGES stream and a fresh target
# stream; start the process; after 2 s, measure its idle CPU over BENCH_IDLE_S (5) seconds of an
# empty stream; then write N changes (scripts/peers/tables.py load: BatchWriteItem calls of 25
# over BENCH_KEYS (500) items, as fast as moto takes them; each item carries `ts`, the epoch ms
# just before the call that writes it) while the process forwards them. Measured per run:
#   records/s      N / (time from the first write to when the target held all N: the latest
#                  ApproximateArrivalTimestamp among the target's records)
#   CPU            user + sys of the process from its start to its exit (/usr/bin/time, for
#                  the peers, which exit once they have put N records) or, for shardbridge, to
#                  when its /metrics (polled every BENCH_POLL_S, 0.5 s: a scrape costs it about
#                  0.5 ms of CPU, so it is not polled faster) shows N records written
#                  (/proc/PID/stat, read before it is stopped); start-up and the idle window
#                  included; also the part after the first write ("load CPU")
#   peak RSS       VmHWM (/proc/PID/status for shardbridge at that moment; /usr/bin/time %M)
#   latency        per target record: its ApproximateArrivalTimestamp in kinesalite minus the
#                  `ts` of the item change it carries; p50 / p99 (scripts/peers/tables.py check,
#                  which also checks that the target holds N records with N distinct eventIDs)
# BENCH_MODE=backlog instead writes the N changes before the process starts (a drained stream
# of N changes): records/s and CPU are then from the process's start to the same moment, the
# idle window is skipped, and latency is not measured (it would be the time since loading).
# BENCH_RUNS (3) rounds, each running the three in a rotating order; then medians and the
# ratio shardbridge / boto3 of CPU per record. Tables and streams of a run are deleted after its
# check; anything left (a failed run) and the lease tables at the end.
#
# Knobs (environment): BENCH_MODE (live), BENCH_RUNS (3), BENCH_SHARDS (4, target shards),
# BENCH_IDLE_S (5), BENCH_KEYS (500), BENCH_IDLE_MS (250: the peers' wait after an empty
# GetRecords page, as shardbridge's poll_idle_ms default), BENCH_TIMEOUT_S (300 per run),
# BENCH_POLL_S (0.5), BENCH_PIN (0; 1: pin kinesalite to a CPU of its own, as the http benchmark
# does; here the loader, moto and the measured process then share the other CPU), BENCH_PYTHON
# (python3 with boto3), BENCH_ONLY ("shardbridge boto3 bare", a subset to run), BENCH_KEEP (1:
# keep the work dir), BENCH_BUILD (0: use target/release as it is, without `cargo build`).
# Needs the local servers (scripts/dev-servers.sh start; started here if they are not up),
# boto3 in BENCH_PYTHON, /usr/bin/time.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

N="${1:-10000}"
RUNS="${BENCH_RUNS:-3}"
SHARDS="${BENCH_SHARDS:-4}"
IDLE_S="${BENCH_IDLE_S:-5}"
KEYS="${BENCH_KEYS:-500}"
IDLE_MS="${BENCH_IDLE_MS:-250}"
TIMEOUT_S="${BENCH_TIMEOUT_S:-300}"
POLL_S="${BENCH_POLL_S:-0.5}"
PY="${BENCH_PYTHON:-python3}"
MODE="${BENCH_MODE:-live}"
ONLY="${BENCH_ONLY:-shardbridge boto3 bare}"
CONNECTOR=peers

[[ "$N" =~ ^[0-9]+$ && "$N" -gt 0 ]] || { echo "usage: $0 [N]" >&2; exit 2; }
[[ "$MODE" == live || "$MODE" == backlog ]] || { echo "BENCH_MODE: live or backlog" >&2; exit 2; }
[[ -x /usr/bin/time ]] || { echo "$0: needs /usr/bin/time (apt-get install time)" >&2; exit 2; }
"$PY" -c 'import boto3' 2>/dev/null || { echo "$0: $PY has no boto3 (set BENCH_PYTHON)" >&2; exit 2; }

source scripts/bench_common.sh
start_servers
export AWS_DEFAULT_REGION="$AWS_REGION"
if [[ "${BENCH_BUILD:-1}" == 1 ]]; then
  build_http_bench # SB and KT
else
  SB="$ROOT/target/release/shardbridge"
  KT="$ROOT/target/release/examples/kinesis_throughput"
  log "using the release binaries as built: $SB, $KT (BENCH_BUILD=0)"
fi
if [[ "${BENCH_PIN:-0}" == 1 ]]; then pin_source_emulator; fi

TAG="peers-$(date +%s)-$$"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/bench_peers.XXXXXX")"
PID=""
TPID=""
LPID=""
TABLES=()
STREAMS=()
cleanup() {
  local p
  for p in "$PID" "$TPID" "$LPID"; do
    if [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null; then kill -TERM "$p" 2>/dev/null || true; fi
  done
  wait 2>/dev/null || true
  unpin_source_emulator
  if ((${#TABLES[@]})); then "$PY" scripts/peers/tables.py rmtable "${TABLES[@]}" || true; fi
  for p in "${STREAMS[@]}"; do "$KT" rmstream --stream "$p" 2>/dev/null || true; done
  if [[ "${BENCH_KEEP:-0}" == 1 ]]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# progress PORT: shardbridge_sink_records_written_total of the connector (0 if not there yet)
progress() {
  { curl -s --noproxy '*' --max-time 1 "http://127.0.0.1:$1/metrics" 2>/dev/null || true; } |
    awk -v c="connector=\"$CONNECTOR\"" '
      /^shardbridge_sink_records_written_total\{/ && index($0, c) { w = $NF }
      END { print (w == "" ? 0 : w) }'
}

sb_config() { # TABLE TARGET LEASES PORT
  cat <<EOF
[worker]
id = "bench-peers"
listen = "127.0.0.1:$4"
[aws]
region = "$AWS_REGION"
endpoint_url = "$SHARDBRIDGE_TEST_AWS_ENDPOINT"
[[connectors]]
name = "$CONNECTOR"
[connectors.source]
type = "dynamodb-streams"
table = "$1"
starting_position = "trim_horizon"
[connectors.leases]
table = "$3"
[connectors.format]
type = "lambda"
[connectors.sink]
type = "kinesis"
stream = "$2"
[connectors.sink.aws]
endpoint_url = "$SHARDBRIDGE_TEST_KINESIS_ENDPOINT"
EOF
}

# run_one WHAT I: appends "WHAT records/s cpu_s load_cpu_s us/record hwm_mib p50 p99 idle lag"
# to $WORK/results
FAILED=0
run_one() {
  local what="$1" i="$2" table="$TAG-$1-$2" target="$TAG-$1-$2-out" leases="$TAG-leases-$2"
  local out="$WORK/$what$i" port c0 c1 cpu_ticks="" hwm="" rc w deadline
  TABLES+=("$table")
  STREAMS+=("$target")
  "$PY" scripts/peers/tables.py mktable "$table"
  "$KT" mkstream --stream "$target" --shards "$SHARDS"
  if [[ "$MODE" == backlog ]]; then
    "$PY" scripts/peers/tables.py load "$table" "$N" "$KEYS" >"$out.load"
  fi
  local t_start
  t_start="$(now)"
  case "$what" in
    shardbridge)
      port="$(free_port)"
      TABLES+=("$leases")
      sb_config "$table" "$target" "$leases" "$port" >"$out.toml"
      "$SB" validate --config "$out.toml" >/dev/null
      RUST_LOG="${RUST_LOG:-info}" "$SB" run --config "$out.toml" 2>"$out.log" &
      PID=$!
      ;;
    boto3 | bare)
      if [[ "$what" == boto3 ]]; then
        set -- "$PY" scripts/peers/forwarder.py
      else
        set -- "$KT" bare-ddb --limit 1000
      fi
      /usr/bin/time -f '%U %S %M' -o "$out.time" "$@" --table "$table" --target "$target" \
        --expect "$N" --idle-ms "$IDLE_MS" >"$out.log" 2>&1 &
      TPID=$!
      PID=""
      while [[ -z "$PID" ]]; do PID="$(pgrep -P "$TPID" || true)"; sleep 0.02; done
      ;;
  esac
  if [[ "$MODE" == live ]]; then
    sleep 2
    c0="$(proc_ticks "$PID")"
    sleep "$IDLE_S"
    c1="$(proc_ticks "$PID")"
    "$PY" scripts/peers/tables.py load "$table" "$N" "$KEYS" >"$out.load" &
    LPID=$!
  else
    c0=0
    c1=0
  fi
  deadline=$((SECONDS + TIMEOUT_S))
  if [[ "$what" == shardbridge ]]; then
    while :; do
      w="$(progress "$port")"
      if awk -v w="$w" -v n="$N" 'BEGIN { exit !(w + 0 >= n + 0) }'; then
        cpu_ticks="$(proc_ticks "$PID")"
        hwm="$(proc_hwm_kib "$PID")"
        break
      fi
      if ! kill -0 "$PID" 2>/dev/null || ((SECONDS > deadline)); then
        log "shardbridge stopped or timed out at $w of $N records; log tail:"
        tail -n 20 "$out.log" >&2
        exit 1
      fi
      sleep "$POLL_S"
    done
    curl -s --noproxy '*' --max-time 2 "http://127.0.0.1:$port/metrics" >"$out.metrics" || true
    kill -TERM "$PID"
    rc=0
    wait "$PID" || rc=$?
    PID=""
    if [[ "$rc" != 0 ]]; then
      log "  shardbridge exited $rc after SIGTERM (expected 0)"
      FAILED=1
    fi
    local m="$out.metrics" c="connector=\"$CONNECTOR\""
    log "    shardbridge: $(imetric "$m" shardbridge_source_get_records_calls_total "$c") GetRecords," \
      "$(imetric "$m" shardbridge_sink_batches_written_total "$c") batches," \
      "$(imetric "$m" shardbridge_kinesis_put_records_calls_total "$c") PutRecords calls," \
      "$(imetric "$m" shardbridge_checkpoint_writes_total "$c") checkpoints," \
      "$(imetric "$m" shardbridge_lease_table_calls_total "$c") lease-table calls"
  else
    rc=0
    wait "$TPID" || rc=$?
    TPID=""
    PID=""
    if [[ "$rc" != 0 ]]; then
      log "  $what exited $rc; its output:"
      tail -n 20 "$out.log" >&2
      exit 1
    fi
    read -r u s hwm <"$out.time"
    cpu_ticks="$(awk -v u="$u" -v s="$s" -v hz="$HZ" 'BEGIN { printf "%.0f", (u + s) * hz }')"
    sed 's/^/    /' "$out.log" | grep -v '^    RESULT' >&2 || true
  fi
  local t0 t1 chk
  if [[ "$MODE" == live ]]; then
    wait "$LPID"
    LPID=""
    read -r _ t0 t1 <"$out.load"
  else
    t0="$t_start"
    t1="$t_start"
  fi
  if chk="$("$PY" scripts/peers/tables.py check "$target" "$N")"; then
    log "    $chk"
  else
    log "    CHECK FAILED ($what run $i): $chk (expected $N records, $N distinct)"
    FAILED=1
  fi
  "$PY" scripts/peers/tables.py rmtable "$table"
  "$KT" rmstream --stream "$target" || true
  awk -v what="$what" -v n="$N" -v t0="$t0" -v t1="$t1" -v c="$cpu_ticks" \
    -v c0="$c0" -v c1="$c1" -v hz="$HZ" -v hwm="$hwm" -v idle="$IDLE_S" -v chk="$chk" -v mode="$MODE" 'BEGIN {
      split(chk, f, /[ =]/)
      for (k = 2; k in f; k += 2) v[f[k]] = f[k + 1]
      td = v["last"]
      if (mode == "backlog") { v["p50_ms"] = "-"; v["p99_ms"] = "-"; il = "-" }
      else il = sprintf("%.3f", (c1 - c0) / hz / idle)
      printf "%s %.0f %.2f %.2f %.1f %.1f %s %s %s %.2f %.2f\n", what, n / (td - t0), c / hz,
        (c - c1) / hz, 1e6 * c / hz / n, hwm / 1024, v["p50_ms"], v["p99_ms"],
        il, td - t1, t1 - t0 }' | tee -a "$WORK/results" |
    awk '{ printf "  %-11s %6s records/s  CPU %s s (load %s s)  %s us/record  peak RSS %s MiB  latency p50 %s ms p99 %s ms  idle CPU %s s/s  last record in the target %s s after the last write (backlog: after the start; loading took %s s)\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11 }' >&2
}

log "mode $MODE: N=$N changes per run over $KEYS items, $RUNS rounds, target $SHARDS shards, idle window ${IDLE_S}s, peers' idle wait ${IDLE_MS} ms"
procs=()
for what in shardbridge boto3 bare; do
  [[ " $ONLY " == *" $what "* ]] && procs+=("$what")
done
run_rounds "$RUNS" "${procs[@]}"

# Medians per process, then the ratio.
printf '\nmedians over %d rounds, N=%d (load average %s):\n' "$RUNS" "$N" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '| | records/s | CPU s (from start) | of which after the first write | CPU µs/record | peak RSS MiB | latency p50 ms | p99 ms | idle CPU s/s |\n|---|---|---|---|---|---|---|---|---|\n'
for what in "${procs[@]}"; do
  # shellcheck disable=SC2046
  printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$what" \
    "$(median $(col "$what" 2))" "$(median $(col "$what" 3))" "$(median $(col "$what" 4))" \
    "$(median $(col "$what" 5))" "$(median $(col "$what" 6))" "$(median $(col "$what" 7))" \
    "$(median $(col "$what" 8))" "$(median $(col "$what" 9))"
done
if [[ " ${procs[*]} " == *" shardbridge "* && " ${procs[*]} " == *" boto3 "* ]]; then
  # shellcheck disable=SC2046
  sbu="$(median $(col shardbridge 5))" bou="$(median $(col boto3 5))"
  # shellcheck disable=SC2046
  sbl="$(median $(col shardbridge 4))" bol="$(median $(col boto3 4))"
  printf '\nCPU per record, shardbridge / boto3: %s (from start); %s (after the first write only)\n' \
    "$(fdiv "$sbu" "$bou")" "$(fdiv "$sbl" "$bol")"
fi
printf '\nper run (what records/s cpu_s load_cpu_s us/record rss_mib p50_ms p99_ms idle_cpu_s/s lag_s load_s):\n'
cat "$WORK/results"
if ((FAILED)); then
  log "some check failed (see above)"
  exit 1
fi
