#!/usr/bin/env bash
# The local demo: starts the local servers, creates the table "orders" with a stream, writes
# a few hundred inserts, updates and deletes, runs shardbridge with ./connectors.toml until
# every change is forwarded, and shows what it wrote to out/orders.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/dev-servers.sh start >/dev/null
eval "$(scripts/dev-servers.sh env)"
cargo build --quiet
out=out/orders.jsonl
mkdir -p out
before=$( [[ -f $out ]] && wc -l <"$out" || echo 0 )

echo "== writing changes to the table 'orders' on $SHARDBRIDGE_TEST_AWS_ENDPOINT"
changes=$(.venv/bin/python scripts/demo_workload.py orders)
echo "   $changes changes (inserts, updates, deletes)"

echo "== running shardbridge (connectors.toml) until they are all forwarded"
target/debug/shardbridge run --config connectors.toml 2>out/shardbridge.log &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
want=$((before + changes))
for _ in $(seq 1 600); do
  have=$( [[ -f $out ]] && wc -l <"$out" || echo 0 )
  ((have >= want)) && break
  sleep 0.1
done
echo "   /readyz: $(curl -s http://127.0.0.1:9464/readyz)"
curl -s http://127.0.0.1:9464/metrics | grep -E '^shardbridge_(source_records_read|sink_records_written|checkpoint_writes)_total' || true
kill -TERM $pid
wait $pid && echo "   shardbridge stopped cleanly (exit 0)"
trap - EXIT

echo "== $out: $(wc -l <"$out") records; the first one of this run:"
sed -n "$((before + 1))p" "$out" | .venv/bin/python -m json.tool
echo "== changes of this run by eventName:"
tail -n +"$((before + 1))" "$out" | .venv/bin/python -c '
import collections, json, sys
print(dict(collections.Counter(json.loads(l)["eventName"] for l in sys.stdin)))'
