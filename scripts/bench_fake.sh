#!/usr/bin/env bash
# shardbridge without an emulator setting the pace (issue #14): a drained DynamoDB stream into
# Kinesis (`lambda` format, item key as partition key), every AWS call (the source, the lease
# table's conditional writes, PutRecords) answered by examples/fake_aws.rs, a fast in-memory fake
# on loopback. What is measured is the real binary with the real SDK and HTTP stack. Beside it,
# on the same fake and the same stream, the two peers of scripts/bench_peers.sh: the bare Rust
# loop (`kinesis_throughput bare-ddb`) and the boto3 forwarder (scripts/peers/forwarder.py).
#
# Usage: scripts/bench_fake.sh [N]     (N changes in the stream, default 200000)
#
# Each run: a fresh fake holding N changes (BENCH_SHARDS (4) open source shards, BENCH_KEYS
# (500) items, MODIFY with both images after each item's INSERT; 4 target shards); the process
# starts at TRIM_HORIZON and forwards all N; the fake counts PutRecords entries and distinct
# eventIDs (the run fails unless both are N). With BENCH_PIN=1 (default) the fake runs on the
# last CPU and the measured process on CPU 0, so the process has one core. Measured per run:
#   records/s        N / (the fake's first GetRecords → its last PutRecords entry)
#   CPU s            user + sys of the process from its start until the fake holds all N
#                    (/proc/PID/stat for shardbridge, which keeps running and is then stopped
#                    with SIGTERM; /usr/bin/time for the peers, which exit at N)
#   records/s/core   N / CPU s: records per second of the process's own CPU
#   µs/record        CPU s / N
#   peak RSS         VmHWM
# BENCH_RUNS (3) rounds, each running the processes in a rotating order; then medians and the
# ratios. Knobs: BENCH_ONLY ("shardbridge bare boto3"), BENCH_PYTHON (python3 with boto3),
# BENCH_TIMEOUT_S (300 per run), BENCH_BUILD (0: use target/release as it is), BENCH_KEEP (1:
# keep the work dir), BENCH_CONFIG_EXTRA (TOML appended to shardbridge's connector, e.g.
# '[connectors.leases]' lines), BENCH_PIN, BENCH_ALT (another shardbridge binary, run as a fourth
# process "alt" the same way: an A/B comparison of a change, side by side).
# Needs no local servers: nothing here talks to moto or kinesalite.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/bench_common.sh

N="${1:-200000}"
RUNS="${BENCH_RUNS:-3}"
SHARDS="${BENCH_SHARDS:-4}"
KEYS="${BENCH_KEYS:-500}"
PY="${BENCH_PYTHON:-python3}"
ONLY="${BENCH_ONLY:-shardbridge bare boto3}"
TIMEOUT_S="${BENCH_TIMEOUT_S:-300}"
PIN="${BENCH_PIN:-1}"

[[ "$N" =~ ^[0-9]+$ && "$N" -gt 0 ]] || { echo "usage: $0 [N]" >&2; exit 2; }
[[ -x /usr/bin/time ]] || { echo "$0: needs /usr/bin/time (apt-get install time)" >&2; exit 2; }
if [[ " $ONLY " == *" boto3 "* ]]; then
  "$PY" -c 'import boto3' 2>/dev/null || { echo "$0: $PY has no boto3 (set BENCH_PYTHON)" >&2; exit 2; }
fi
CPUS="$(nproc)"
if [[ "$PIN" == 1 && "$CPUS" -lt 2 ]]; then PIN=0; fi
FAKE_CPU=$((CPUS - 1))
pin() { # CPU COMMAND...: becomes the command (on that CPU when pinning); only with `&`, so $! is its PID
  local cpu="$1"
  shift
  if [[ "$PIN" == 1 ]]; then exec taskset -c "$cpu" "$@"; else exec "$@"; fi
}

if [[ "${BENCH_BUILD:-1}" == 1 ]]; then
  log "building release (shardbridge, examples fake_aws and kinesis_throughput)"
  cargo build --release -q --bin shardbridge --example fake_aws --example kinesis_throughput
fi
SB="$ROOT/target/release/shardbridge"
FAKE="$ROOT/target/release/examples/fake_aws"
KT="$ROOT/target/release/examples/kinesis_throughput"

export AWS_ACCESS_KEY_ID=fake AWS_SECRET_ACCESS_KEY=fake AWS_REGION=us-east-1 \
  AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
unset AWS_PROFILE AWS_SESSION_TOKEN
WORK="$(mktemp -d)"
FAKE_PID=""
PID=""
cleanup() {
  for p in "$PID" "$FAKE_PID"; do [[ -n "$p" ]] && kill "$p" 2>/dev/null || true; done
  if [[ "${BENCH_KEEP:-0}" == 1 ]]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# stat FIELD: a number from the fake's /stats
stats() { curl -s --noproxy '*' --max-time 2 "http://127.0.0.1:$FAKE_PORT/stats"; }
field() { python3 -c 'import json, sys; d = json.load(sys.stdin); print(eval(sys.argv[1], {}, d))' "$1"; }

sb_config() { # FAKE_PORT METRICS_PORT
  cat <<EOF
[worker]
id = "bench-fake"
listen = "127.0.0.1:$2"
[aws]
region = "us-east-1"
endpoint_url = "http://127.0.0.1:$1"
[[connectors]]
name = "fake"
[connectors.source]
type = "dynamodb-streams"
table = "bench"
starting_position = "trim_horizon"
[connectors.leases]
table = "bench-leases"
[connectors.format]
type = "lambda"
[connectors.sink]
type = "kinesis"
stream = "bench-target"
${BENCH_CONFIG_EXTRA:-}
EOF
}

FAILED=0
run_one() { # WHAT ROUND: appends "WHAT records/s cpu_s us/record records/s/core rss_mib" to results
  local what="$1" i="$2" out="$WORK/$1$2" cpu_ticks hwm deadline s
  FAKE_PORT="$(free_port)"
  pin "$FAKE_CPU" "$FAKE" --listen "127.0.0.1:$FAKE_PORT" --table bench --shards "$SHARDS" \
    --records "$N" --keys "$KEYS" --target-shards 4 2>"$out.fake" &
  FAKE_PID=$!
  until stats >/dev/null 2>&1; do sleep 0.05; done
  local endpoint="http://127.0.0.1:$FAKE_PORT"
  case "$what" in
    shardbridge | alt)
      local bin="$SB"
      [[ "$what" == alt ]] && bin="$BENCH_ALT"
      sb_config "$FAKE_PORT" "$(free_port)" >"$out.toml"
      "$bin" validate --config "$out.toml" >/dev/null
      pin 0 "$bin" run --config "$out.toml" 2>"$out.log" &
      PID=$!
      ;;
    bare)
      pin 0 /usr/bin/time -f '%U %S %M' -o "$out.time" "$KT" bare-ddb --limit 1000 \
        --aws-endpoint "$endpoint" --kinesis-endpoint "$endpoint" --table bench \
        --target bench-target --expect "$N" --idle-ms 250 >"$out.log" 2>&1 &
      PID=$!
      ;;
    boto3)
      SHARDBRIDGE_TEST_AWS_ENDPOINT="$endpoint" SHARDBRIDGE_TEST_KINESIS_ENDPOINT="$endpoint" \
        pin 0 /usr/bin/time -f '%U %S %M' -o "$out.time" "$PY" scripts/peers/forwarder.py \
        --table bench --target bench-target --expect "$N" --idle-ms 250 >"$out.log" 2>&1 &
      PID=$!
      ;;
  esac
  deadline=$((SECONDS + TIMEOUT_S))
  if [[ "$what" == shardbridge || "$what" == alt ]]; then
    while :; do
      s="$(stats)"
      if [[ "$(field put_entries <<<"$s")" -ge "$N" ]]; then
        cpu_ticks="$(proc_ticks "$PID")"
        hwm="$(proc_hwm_kib "$PID")"
        break
      fi
      if ! kill -0 "$PID" 2>/dev/null || ((SECONDS > deadline)); then
        log "$what stopped or timed out; log tail:"
        tail -n 20 "$out.log" >&2
        exit 1
      fi
      sleep 0.1
    done
    kill -TERM "$PID"
    wait "$PID" || { log "$what exited $? after SIGTERM (expected 0)"; FAILED=1; }
  else
    wait "$PID" || { log "$what failed; its output:"; tail -n 20 "$out.log" >&2; exit 1; }
    read -r u sy hwm <"$out.time"
    cpu_ticks="$(awk -v u="$u" -v s="$sy" -v hz="$HZ" 'BEGIN { printf "%.0f", (u + s) * hz }')"
  fi
  PID=""
  s="$(stats)"
  kill "$FAKE_PID" 2>/dev/null || true
  wait "$FAKE_PID" 2>/dev/null || true
  FAKE_PID=""
  local put distinct first last
  put="$(field put_entries <<<"$s")"
  distinct="$(field distinct_event_ids <<<"$s")"
  first="$(field first_get_records_ms <<<"$s")"
  last="$(field last_put_ms <<<"$s")"
  log "    $what: fake saw $(field 'calls' <<<"$s"); $put entries put, $distinct distinct eventIDs"
  if [[ "$put" != "$N" || "$distinct" != "$N" ]]; then
    log "    CHECK FAILED ($what run $i): expected $N entries with $N distinct eventIDs"
    FAILED=1
  fi
  awk -v what="$what" -v n="$N" -v c="$cpu_ticks" -v hz="$HZ" -v hwm="$hwm" -v ms="$((last - first))" 'BEGIN {
      printf "%s %.0f %.2f %.1f %.0f %.1f\n", what, n * 1000 / (ms > 0 ? ms : 1), c / hz,
        1e6 * c / hz / n, n * hz / (c > 0 ? c : 1), hwm / 1024 }' | tee -a "$WORK/results" |
    awk '{ printf "  %-11s %7s records/s  CPU %s s  %s us/record  %s records/s per core  peak RSS %s MiB\n", $1, $2, $3, $4, $5, $6 }' >&2
}

log "N=$N changes over $KEYS items on $SHARDS shards, $RUNS rounds, pinned: $PIN (fake on CPU $FAKE_CPU)"
procs=()
for what in shardbridge bare boto3; do
  [[ " $ONLY " == *" $what "* ]] && procs+=("$what")
done
if [[ -n "${BENCH_ALT:-}" ]]; then procs+=(alt); fi
run_rounds "$RUNS" "${procs[@]}"
printf '\nmedians over %d rounds, N=%d (load average %s):\n' "$RUNS" "$N" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '| | records/s | CPU s | CPU µs/record | records/s per core | peak RSS MiB |\n|---|---|---|---|---|---|\n'
for what in "${procs[@]}"; do
  # shellcheck disable=SC2046
  printf '| %s | %s | %s | %s | %s | %s |\n' "$what" "$(median $(col "$what" 2))" \
    "$(median $(col "$what" 3))" "$(median $(col "$what" 4))" "$(median $(col "$what" 5))" \
    "$(median $(col "$what" 6))"
done
for peer in alt bare boto3; do
  if [[ " ${procs[*]} " == *" shardbridge "* && " ${procs[*]} " == *" $peer "* ]]; then
    # shellcheck disable=SC2046
    printf 'CPU per record, shardbridge / %s: %s\n' "$peer" \
      "$(fdiv "$(median $(col shardbridge 4))" "$(median $(col "$peer" 4))")"
  fi
done
printf '\nper run (what records/s cpu_s us/record records/s/core rss_mib):\n'
cat "$WORK/results"
if ((FAILED)); then
  log "some check failed (see above)"
  exit 1
fi
