#!/usr/bin/env bash
# One worker holding many leases: a Kinesis stream of SHARDS shards on kinesalite (1,000 by
# default), shardbridge with its defaults (per-lease renewals every failover_ms / 3, idle polling
# backing off from 250 ms to 1 s) and the stdout sink (to /dev/null), its lease table on moto.
#
# Usage: scripts/bench_scale.sh [SHARDS [IDLE_SECONDS [RATE LOAD_SECONDS]]]
#        (defaults 1000, 60, 2000 and 30)
#
# Prints, once the worker holds every lease: for IDLE_SECONDS of an idle stream, shardbridge's
# RSS, its CPU seconds per minute, lease-table calls per minute (by operation) and GetRecords
# calls per shard-minute; then for LOAD_SECONDS of RATE records/s spread over the shards
# (`http_throughput produce`), its CPU per record and peak RSS. On this machine the emulators
# are the bottleneck (moto answers ~200 lease writes a second, kinesalite serves every poll on
# one core), so calls per minute may be below what real AWS would answer; shardbridge's own RSS
# and CPU are what this measures. BENCH_RENEWAL=heartbeat measures the heartbeat renewal mode.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SHARDS="${1:-1000}"
IDLE_S="${2:-60}"
RATE="${3:-2000}"
LOAD_S="${4:-30}"
for n in "$SHARDS" "$IDLE_S" "$RATE" "$LOAD_S"; do
  [[ "$n" =~ ^[0-9]+$ && "$n" -gt 0 ]] || { echo "usage: $0 [SHARDS [IDLE_SECONDS [RATE LOAD_SECONDS]]]" >&2; exit 2; }
done

source scripts/bench_common.sh
start_servers

build_http_bench

WORK="$(mktemp -d "${TMPDIR:-/tmp}/bench_scale.XXXXXX")"
STREAM="bench-scale-$(date +%s)-$$"
SBPID=""
cleanup() {
  [[ -n "$SBPID" ]] && kill "$SBPID" 2>/dev/null || true
  "$KT" rmstream --stream "$STREAM" >/dev/null 2>&1 || true
  [[ "${BENCH_KEEP:-0}" == 1 ]] && log "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

log "creating $STREAM with $SHARDS shards"
"$KT" mkstream --stream "$STREAM" --shards "$SHARDS" >/dev/null
PORT="$(free_port)"
cat >"$WORK/c.toml" <<TOML
[worker]
listen = "127.0.0.1:$PORT"
[aws]
region = "us-east-1"
endpoint_url = "$SHARDBRIDGE_TEST_AWS_ENDPOINT"
[[connectors]]
name = "scale"
[connectors.source]
type = "kinesis"
stream = "$STREAM"
[connectors.source.aws]
endpoint_url = "$SHARDBRIDGE_TEST_KINESIS_ENDPOINT"
[connectors.leases]
table = "bench-scale-leases-$(date +%s%N)"
renewal = "${BENCH_RENEWAL:-per_lease}"
[connectors.format]
type = "lambda"
invoke_identity_arn = "arn:aws:iam::123456789012:role/bench"
[connectors.sink]
type = "stdout"
TOML
RUST_LOG=warn "$SB" run --config "$WORK/c.toml" >/dev/null 2>"$WORK/shardbridge.log" &
SBPID=$!

metrics() { curl -sf "http://127.0.0.1:$PORT/metrics" >"$1" || : >"$1"; }
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$SBPID/status"; }
hwm_kib() { awk '/^VmHWM/ { print $2 }' "/proc/$SBPID/status"; }

t0="$(now)"
while :; do
  metrics "$WORK/m.txt"
  owned="$(imetric "$WORK/m.txt" shardbridge_shards_owned)"
  ((owned >= SHARDS)) && break
  kill -0 "$SBPID" 2>/dev/null || { log "ERROR: shardbridge ended"; tail -5 "$WORK/shardbridge.log" >&2; exit 1; }
  (($(date +%s) - ${t0%.*} > 600)) && { log "ERROR: $owned of $SHARDS leases after 600 s"; exit 1; }
  sleep 1
done
log "holding $SHARDS leases after $(fsub "$(now)" "$t0") s; idle for ${IDLE_S} s"
sleep 10
metrics "$WORK/a.txt"; c0="$(proc_cpu "$SBPID")"; a="$(now)"
sleep "$IDLE_S"
metrics "$WORK/b.txt"; c1="$(proc_cpu "$SBPID")"; b="$(now)"
mins="$(awk -v a="$a" -v b="$b" 'BEGIN { print (b - a) / 60 }')"
per_min() { awk -v x="$(metric "$WORK/b.txt" "$@")" -v y="$(metric "$WORK/a.txt" "$@")" -v m="$mins" 'BEGIN { printf "%.0f", (x - y) / m }'; }
idle_rss="$(rss_kib)"
echo "one worker, $SHARDS leases, idle:"
echo "  RSS $((idle_rss / 1024)) MiB; CPU $(awk -v c="$(fsub "$c1" "$c0")" -v m="$mins" 'BEGIN { printf "%.2f", c / m }') s per minute"
echo "  lease-table calls per minute: $(per_min shardbridge_lease_table_calls_total) (UpdateItem $(per_min shardbridge_lease_table_calls_total UpdateItem), Scan $(per_min shardbridge_lease_table_calls_total Scan), failed $(per_min shardbridge_lease_table_calls_total 'result="error"'))"
echo "  GetRecords calls per shard-minute: $(awk -v x="$(per_min shardbridge_source_get_records_calls_total)" -v s="$SHARDS" 'BEGIN { printf "%.1f", x / s }')"
echo "  leases held at the end: $(imetric "$WORK/b.txt" shardbridge_shards_owned)"

log "load: $RATE records/s for $LOAD_S s"
metrics "$WORK/c.txt"; c2="$(proc_cpu "$SBPID")"
produced="$("$HT" produce --stream "$STREAM" --rate "$RATE" --seconds "$LOAD_S" | awk '{ print $2 }')"
deadline=$((SECONDS + 120))
while :; do
  metrics "$WORK/d.txt"
  read_now="$(imetric "$WORK/d.txt" shardbridge_source_records_read_total)"
  read_before="$(imetric "$WORK/c.txt" shardbridge_source_records_read_total)"
  (( read_now - read_before >= produced )) && break
  ((SECONDS > deadline)) && { log "ERROR: read $((read_now - read_before)) of $produced"; exit 1; }
  sleep 1
done
c3="$(proc_cpu "$SBPID")"
echo "under load ($produced records at $RATE records/s):"
echo "  CPU $(fsub "$c3" "$c2") s, $(awk -v c="$(fsub "$c3" "$c2")" -v n="$produced" 'BEGIN { printf "%.1f", c / n * 1e6 }') µs per record (idle polling of $SHARDS shards included); peak RSS $(($(hwm_kib) / 1024)) MiB"
