#!/usr/bin/env bash
# End-to-end latency of shardbridge with the http sink, at a low and at a high steady load:
# from each record's arrival in the Kinesis stream (its ApproximateArrivalTimestamp, set by
# kinesalite) to a handler receiving it (examples/http_throughput.rs `handler`, which answers at
# once). shardbridge runs with its defaults (poll_idle_ms 250, batches of 100 records per
# invocation, a checkpoint per batch, a fresh lease table on moto).
#
# Usage: scripts/bench_latency.sh [LOW_RATE [HIGH_RATE [SECONDS]]]
#        (records/s; defaults 100, 5000 and 20)
#
# Per load: the handler's counters are reset, `http_throughput produce` puts RATE records a
# second for SECONDS seconds into a 4-shard stream, then 3 s more are given to drain; prints
# records received (must equal records produced), p50, p99 and max latency in ms, and
# shardbridge's CPU seconds in that phase. The source emulator gets a CPU of its own as in
# bench_http.sh (BENCH_PIN=0 turns that off). BENCH_POLL_IDLE_MS sets the source's
# `poll_idle_ms` (how long a shard waits after a page that was not full; default 250).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

LOW="${1:-100}"
HIGH="${2:-5000}"
SECONDS_PER_LOAD="${3:-20}"
for n in "$LOW" "$HIGH" "$SECONDS_PER_LOAD"; do
  [[ "$n" =~ ^[0-9]+$ && "$n" -gt 0 ]] || { echo "usage: $0 [LOW_RATE [HIGH_RATE [SECONDS]]]" >&2; exit 2; }
done

source scripts/bench_common.sh
start_servers

build_http_bench

WORK="$(mktemp -d "${TMPDIR:-/tmp}/bench_latency.XXXXXX")"
PIDS=()
STREAM="bench-latency-$(date +%s)-$$"
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  "$KT" rmstream --stream "$STREAM" >/dev/null 2>&1 || true
  unpin_source_emulator
  [[ "${BENCH_KEEP:-0}" == 1 ]] && log "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT
[[ "${BENCH_PIN:-1}" == 1 ]] && pin_source_emulator

"$KT" mkstream --stream "$STREAM" --shards 4 >/dev/null
HPORT="$(free_port)"
"$HT" handler --port "$HPORT" &
PIDS+=($!)
PORT="$(free_port)"
cat >"$WORK/c.toml" <<TOML
[worker]
listen = "127.0.0.1:$PORT"
[aws]
region = "us-east-1"
endpoint_url = "$SHARDBRIDGE_TEST_AWS_ENDPOINT"
[[connectors]]
name = "latency"
[connectors.source]
type = "kinesis"
stream = "$STREAM"
${BENCH_POLL_IDLE_MS:+poll_idle_ms = $BENCH_POLL_IDLE_MS}
[connectors.source.aws]
endpoint_url = "$SHARDBRIDGE_TEST_KINESIS_ENDPOINT"
[connectors.leases]
table = "bench-latency-leases-$(date +%s%N)"
[connectors.format]
type = "lambda"
invoke_identity_arn = "arn:aws:iam::123456789012:role/bench"
[connectors.sink]
type = "http"
url = "http://127.0.0.1:$HPORT/invoke"
TOML
RUST_LOG=warn "$SB" run --config "$WORK/c.toml" 2>"$WORK/shardbridge.log" &
SBPID=$!
PIDS+=("$SBPID")
for _ in $(seq 1 200); do
  curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null || { log "ERROR: shardbridge not ready"; tail -5 "$WORK/shardbridge.log" >&2; exit 1; }
sleep 2

results=()
for rate in "$LOW" "$HIGH"; do
  curl -sf "http://127.0.0.1:$HPORT/reset" >/dev/null
  c0="$(proc_cpu "$SBPID")"
  produced="$("$HT" produce --stream "$STREAM" --rate "$rate" --seconds "$SECONDS_PER_LOAD" | awk '{ print $2 }')"
  sleep 3
  c1="$(proc_cpu "$SBPID")"
  stats="$(curl -sf "http://127.0.0.1:$HPORT/latency")"
  read -r count p50 p99 max <<<"$stats"
  [[ "$count" == "$produced" ]] || { log "ERROR: $rate records/s: produced $produced, the handler received $count"; exit 1; }
  cpu="$(fsub "$c1" "$c0")"
  line="$rate records/s for $SECONDS_PER_LOAD s: $count records, latency p50 $p50 ms, p99 $p99 ms, max $max ms; shardbridge CPU $cpu s"
  log "$line"
  results+=("$line")
done
echo "end-to-end latency, http sink, 4 shards, poll_idle_ms ${BENCH_POLL_IDLE_MS:-250 (default)}, source emulator pinned: $((PINNED))"
printf '%s\n' "${results[@]}"
