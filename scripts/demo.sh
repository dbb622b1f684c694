#!/usr/bin/env bash
# The local demo: starts the local servers, creates the table "orders" with a stream, writes
# a few hundred inserts, updates and deletes, runs shardbridge with ./connectors.toml until
# every change is forwarded, and shows what it wrote to out/orders.jsonl.
#
# Port: shardbridge's /metrics, /healthz and /readyz listen on 9464 (connectors.toml); when that
# port is taken the demo picks a free one (SHARDBRIDGE__WORKER__LISTEN) and says so.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '%s\n' "$*"; }

say "== starting the local servers (scripts/dev-servers.sh; the first start installs them)"
scripts/dev-servers.sh start >/dev/null
eval "$(scripts/dev-servers.sh env)"
say "== building shardbridge (cargo build; the first build takes several minutes)"
cargo build
out=out/orders.jsonl
log=out/shardbridge.log
mkdir -p out
before=$( [[ -f $out ]] && wc -l <"$out" || echo 0 )

port=9464
if python3 -c 'import socket, sys; s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1])))' "$port" 2>/dev/null; then
  :
else
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  say "   port 9464 is taken (another shardbridge?): using $port for /metrics and /readyz"
fi
export SHARDBRIDGE__WORKER__LISTEN="127.0.0.1:$port"

say "== writing changes to the table 'orders' on $SHARDBRIDGE_TEST_AWS_ENDPOINT"
changes=$(.venv/bin/python scripts/demo_workload.py orders)
say "   $changes changes (inserts, updates, deletes)"

say "== running shardbridge (connectors.toml) until they are all forwarded; its log: $log"
target/debug/shardbridge run --config connectors.toml 2>"$log" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
want=$((before + changes))
for _ in $(seq 1 600); do
  if ! kill -0 "$pid" 2>/dev/null; then
    say "   shardbridge exited early; the end of $log:"
    tail -n 5 "$log"
    exit 1
  fi
  have=$( [[ -f $out ]] && wc -l <"$out" || echo 0 )
  ((have >= want)) && break
  sleep 0.1
done
if ((have < want)); then
  say "   only $((have - before)) of $changes changes forwarded after 60 s; see $log"
  exit 1
fi
say "   /readyz: $(curl -s --noproxy '*' "http://127.0.0.1:$port/readyz")"
curl -s --noproxy '*' "http://127.0.0.1:$port/metrics" |
  grep -E '^shardbridge_(source_records_read|sink_records_written|checkpoint_writes)_total' || true
kill -TERM "$pid"
wait "$pid" && say "   shardbridge stopped cleanly (exit 0)"
trap - EXIT

say "== $out: $(wc -l <"$out") records; the first one of this run:"
sed -n "$((before + 1))p" "$out" | .venv/bin/python -m json.tool
say "== changes of this run by eventName:"
tail -n +"$((before + 1))" "$out" | .venv/bin/python -c '
import collections, json, sys
print(dict(collections.Counter(json.loads(l)["eventName"] for l in sys.stdin)))'
say "== the local servers keep running: scripts/dev-servers.sh stop stops them"
say "   to run shardbridge by hand against them: eval \"\$(scripts/dev-servers.sh env)\"; target/debug/shardbridge run"
