# shellcheck shell=bash
# Shared by the end-to-end benchmarks (bench_s3.sh, bench_kinesis.sh): arithmetic and timing
# helpers, the local servers, their CPU use, and reading shardbridge's /metrics. Sourced from the
# checkout's root.

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
now() { date +%s.%N; }
# fsub A B: A - B with 3 decimals
fsub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }
# rate N SECONDS
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }
fdiv() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "?"; else printf "%.3f", a / b }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# Starts the local servers (if needed) and exports their endpoints and test credentials.
start_servers() {
  scripts/dev-servers.sh start >/dev/null
  eval "$(scripts/dev-servers.sh env)"
  export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION AWS_EC2_METADATA_DISABLED
  unset AWS_PROFILE
}

# build_http_bench: the release binary and the examples the http, latency and scale benchmarks
# drive; sets SB (shardbridge), HT (http_throughput) and KT (kinesis_throughput).
build_http_bench() {
  log "building release (shardbridge, examples http_throughput and kinesis_throughput)"
  cargo build --release -q --bin shardbridge --example http_throughput --example kinesis_throughput
  SB="$ROOT/target/release/shardbridge"
  HT="$ROOT/target/release/examples/http_throughput"
  KT="$ROOT/target/release/examples/kinesis_throughput"
}

# pin_source_emulator: gives kinesalite (every thread) the last CPU and this shell (so everything
# the benchmark starts from here on: the measured processes, the handler) and moto the others,
# as the AWS services run on machines of their own in production. Without it, on a small
# machine the lease-table emulator (moto: a few ms of CPU per write) takes CPU from kinesalite
# during shardbridge's runs but not during a bare loop's, and the comparison measures moto.
# Needs taskset and 2 or more CPUs; undone by unpin_source_emulator (call it on exit).
PINNED=0
pin_source_emulator() {
  local n k m
  n="$(nproc)"
  k="$(cat .run/kinesalite.pid 2>/dev/null || true)"
  m="$(cat .run/moto.pid 2>/dev/null || true)"
  if ((n < 2)) || ! command -v taskset >/dev/null || [[ -z "$k" || -z "$m" ]]; then
    log "not pinning the source emulator (needs taskset, 2+ CPUs and the dev servers)"
    return 0
  fi
  # What to restore: the CPUs this shell may use (nproc counts only those).
  UNPINNED="$(taskset -pc $$ | sed 's/.*: //')"
  taskset -a -pc "$((n - 1))" "$k" >/dev/null
  taskset -a -pc "0-$((n - 2))" "$m" >/dev/null
  taskset -pc "0-$((n - 2))" $$ >/dev/null
  PINNED=1
  log "pinned: kinesalite on CPU $((n - 1)); moto and the measured processes on CPUs 0-$((n - 2))"
}
unpin_source_emulator() {
  ((PINNED)) || return 0
  taskset -a -pc "$UNPINNED" "$(cat .run/kinesalite.pid)" >/dev/null 2>&1 || true
  taskset -a -pc "$UNPINNED" "$(cat .run/moto.pid)" >/dev/null 2>&1 || true
  PINNED=0
}

# run_rounds RUNS PROCESS...: RUNS rounds, each calling `run_one PROCESS ROUND` (the script's) for
# every process, in an order rotated by one each round so that none always goes first; run_one
# appends its results to $WORK/results, emptied here first.
run_rounds() {
  local runs="$1" round j what
  shift
  local procs=("$@") order
  : >"$WORK/results"
  for ((round = 1; round <= runs; round++)); do
    order=()
    for ((j = 0; j < ${#procs[@]}; j++)); do order+=("${procs[(round - 1 + j) % ${#procs[@]}]}"); done
    log "round $round of $runs (${order[*]}); load average $(cut -d' ' -f1-3 /proc/loadavg)"
    for what in "${order[@]}"; do run_one "$what" "$round"; done
  done
}
# col PROCESS K: field K of PROCESS's lines in $WORK/results
col() { awk -v w="$1" -v k="$2" '$1 == w { print $k }' "$WORK/results"; }

# CPU ticks (user + system) of a local server started by dev-servers.sh, or 0.
HZ="$(getconf CLK_TCK)"
server_ticks() {
  local pid
  pid="$(cat ".run/$1.pid" 2>/dev/null || true)"
  if [[ "$pid" =~ ^[0-9]+$ && -r "/proc/$pid/stat" ]]; then
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat"
  else
    echo 0
  fi
}
cpu_start() { K0="$(server_ticks kinesalite)"; M0="$(server_ticks moto)"; }
# cpu_report SECONDS: CPU the servers used since cpu_start (kinesalite is single-threaded node)
cpu_report() {
  awk -v k="$(($(server_ticks kinesalite) - K0))" -v m="$(($(server_ticks moto) - M0))" \
    -v hz="$HZ" -v w="$1" 'BEGIN {
      printf "server CPU during the run: kinesalite %.2f s (%.0f%% of one core), moto %.2f s (%.0f%%)",
        k / hz, 100 * k / hz / w, m / hz, 100 * m / hz / w }'
}
# CPU seconds (user + system) of a process of ours, from /proc (0 if gone).
proc_cpu() {
  if [[ -r "/proc/$1/stat" ]]; then
    awk -v hz="$HZ" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "/proc/$1/stat"
  else
    echo 0
  fi
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# metric FILE NAME [FILTER]: sum of the samples of NAME (optionally only lines containing FILTER)
metric() {
  awk -v m="$2" -v f="${3:-}" '
    { name = $1; sub(/\{.*/, "", name) }
    name == m && (f == "" || index($0, f)) { s += $NF }
    END { printf "%.3f", s }' "$1"
}
# imetric: the same, as an integer
imetric() { printf '%.0f' "$(metric "$@")"; }

# CPU ticks (user + system, in 1/HZ s) of a process of ours, from /proc (0 if gone).
proc_ticks() {
  if [[ -r "/proc/$1/stat" ]]; then
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
  else
    echo 0
  fi
}
# Peak RSS (VmHWM) of a process of ours in KiB, from /proc (0 if gone).
proc_hwm_kib() {
  if [[ -r "/proc/$1/status" ]]; then
    awk '$1 == "VmHWM:" { print $2; f = 1 } END { if (!f) print 0 }' "/proc/$1/status"
  else
    echo 0
  fi
}
