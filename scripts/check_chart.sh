#!/usr/bin/env bash
# Offline check of the Helm chart helm/shardbridge and the example helm/examples/app-with-sidecar.
#
# Usage: scripts/check_chart.sh
#
#   1. installs, when missing, into .venv/ (made with python3 -m venv if absent) the PyPI
#      packages helm-python-sdk (Helm v4's Go SDK as a shared library, libhelm_c, driven through
#      ctypes: no helm binary is needed or downloaded) and kubernetes-validate (the Kubernetes
#      JSON schemas, shipped in the package);
#   2. lints (strict) and renders the charts, as `helm lint` and `helm template` do: default
#      values, HPA on, ServiceMonitor and PodMonitor on, every option at once
#      (helm/shardbridge/ci/full-values.yaml) and the sidecar example (its file:// dependency
#      packaged by `helm dependency update` in a scratch copy: the work tree is not written),
#      also with values-http-handler.yaml (the app as the http sink's handler);
#   3. validates every rendered object against the Kubernetes schemas of KUBE_VERSION (strict:
#      unknown fields are errors). ServiceMonitor and PodMonitor are CRDs with no schema there:
#      they are skipped by name (and only checked for their selector and port);
#   4. extracts each connectors.toml the ConfigMaps carry and runs `shardbridge validate` on it,
#      with the environment its container gets (SHARDBRIDGE__WORKER__ID = a pod name, ...);
#      checks the Deployment's invariants (maxUnavailable 0, grace >= preStop + shutdown
#      timeout, worker id from the pod name, the hardened securityContext, probes, a config
#      checksum that changes with connectors.toml only);
#   5. checks that wrong values fail at render time because of values.schema.json.
#
# Environment: SHARDBRIDGE_BIN (default target/debug/shardbridge; not built here),
#              KUBE_VERSION (default 1.29.0: a version kubernetes-validate ships schemas for).
# Needs the network only for the first pip install (PyPI). Exit status 0 when every check
# passes; the last line is "check_chart: N passed, N failed".
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
# Pinned to the versions this script was proven with; the marker records what was installed so
# a warm run does not call pip at all (a changed pin installs again).
PY_REQS=("helm-python-sdk==0.2.2" "kubernetes-validate==1.37.0")
MARKER="$VENV/.shardbridge-chart-requirements"
BIN="${SHARDBRIDGE_BIN:-$ROOT/target/debug/shardbridge}"
export KUBE_VERSION="${KUBE_VERSION:-1.29.0}"

log() { printf 'check_chart: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---- tools ------------------------------------------------------------------------------------
if [[ ! -x "$PY" ]]; then
  log "creating $VENV"
  python3 -m venv "$VENV"
fi
want="$(printf '%s\n' "${PY_REQS[@]}")"
if [[ "$(cat "$MARKER" 2>/dev/null || true)" != "$want" ]] \
  || ! "$PY" -c 'import helm_python, kubernetes_validate' 2>/dev/null; then
  log "installing ${PY_REQS[*]} into $VENV"
  "$VENV/bin/pip" install --disable-pip-version-check -q "${PY_REQS[@]}"
  printf '%s\n' "$want" >"$MARKER"
fi
[[ -x "$BIN" ]] || die "no shardbridge binary at $BIN: run 'cargo build --bin shardbridge' or set SHARDBRIDGE_BIN"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/check_chart.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
# Helm's own state (repository config, cache) lives in the scratch directory: nothing of the
# user's is read or written.
export HELM_CONFIG_HOME="$WORK/helm-home/config" HELM_CACHE_HOME="$WORK/helm-home/cache" \
  HELM_DATA_HOME="$WORK/helm-home/data"
cp -R "$ROOT/helm" "$WORK/helm"
rm -rf "$WORK/helm/examples/app-with-sidecar/charts" "$WORK/helm/examples/app-with-sidecar/Chart.lock"
CHART="$WORK/helm/shardbridge"
EXAMPLE="$WORK/helm/examples/app-with-sidecar"

# ---- the driver: helm (through helm-python-sdk) and kubernetes-validate ---------------------------
cat >"$WORK/chartcheck.py" <<'PY'
"""helm lint / template / dependency update through helm-python-sdk, and checks of the output."""
import hashlib
import math
import os
import sys
import tomllib

import yaml
import helm_python as helm
import kubernetes_validate as kv

KUBE = os.environ["KUBE_VERSION"]
RELEASE, NAMESPACE = "check", "shardbridge"
# CRDs: kubernetes-validate has no schema for them; skipped by name, checked structurally.
SKIP_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PodMonitor")}


def fail(msg):
    print(msg)
    sys.exit(1)


def merge(dst, src):
    """Helm's merge of -f files and --set values: maps deeply, everything else replaced."""
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            merge(dst[k], v)
        else:
            dst[k] = v
    return dst


def values_and_rest(argv):
    vals, rest, i = {}, [], 0
    while i < len(argv):
        a = argv[i]
        if a in ("-f", "--values"):
            with open(argv[i + 1]) as f:
                merge(vals, helm.values_from_yaml(f.read()))
        elif a == "--set":
            merge(vals, helm.parse_set_string(argv[i + 1]))
        elif a == "--set-string":
            merge(vals, helm.parse_set_string_values(argv[i + 1]))
        else:
            rest.append(a)
            i += 1
            continue
        i += 2
    return vals or None, rest


def render(chart, vals):
    with helm.Chart.load(chart) as c:
        out = c.render(vals, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs = []
    for path in sorted(out):
        if path.endswith("NOTES.txt") or not out[path].strip():
            continue
        docs.append((path, out[path]))
    return docs


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def cmd_dep_update(chart):
    helm.dependency_update(chart)
    deps = helm.dependency_list(chart)
    bad = [d for d in deps if d["status"] != "ok"]
    if bad:
        fail(f"dependencies not ok: {bad}")
    print("dependencies: " + ", ".join(f"{d['name']} {d['version']} ({d['repository']}): {d['status']}" for d in deps))


def cmd_lint(chart, *argv):
    vals, _ = values_and_rest(list(argv))
    report = helm.lint(chart, vals, strict=True, with_subcharts=True, kube_version="v" + KUBE)
    names = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}
    bad = [m for m in report["messages"] if m["severity"] >= 2] + [{"severity": 3, "path": "-", "error": e} for e in report["errors"] if not any(e == m["error"] for m in report["messages"])]
    for m in report["messages"]:
        print(f"[{names.get(m['severity'], m['severity'])}] {m['path']}: {m['error'].strip()}")
    if bad:
        fail(f"lint: {len(bad)} error(s)/warning(s) (strict)")
    info = sum(1 for m in report["messages"] if m["severity"] < 2)
    print(f"{report['total_charts_linted']} chart(s) linted (strict, kube v{KUBE}): 0 errors, 0 warnings, {info} info")


def cmd_template(chart, out, *argv):
    vals, _ = values_and_rest(list(argv))
    try:
        docs = render(chart, vals)
    except helm.HelmError as e:
        fail(f"render failed: {e}")
    with open(out, "w") as f:
        for path, text in docs:
            f.write(f"---\n# Source: {path}\n{text.strip()}\n")
    objs = load(out)
    print(f"{len(objs)} object(s): " + ", ".join(sorted(f"{o['kind']}" for o in objs)))


def cmd_kube_validate(out):
    ok, skipped, errors = 0, [], []
    objs = load(out)
    for o in objs:
        what = f"{o.get('kind')}/{o.get('metadata', {}).get('name')}"
        if (o.get("apiVersion"), o.get("kind")) in SKIP_KINDS:
            skipped.append(what)
            check_monitor(o, objs, errors)
            continue
        try:
            kv.validate(o, KUBE, strict=True)
            ok += 1
        except kv.ValidationError as e:
            errors.append(f"{what}: {'/'.join(str(p) for p in e.path)}: {e.message}")
        except (kv.SchemaNotFoundError, kv.InvalidSchemaError) as e:
            errors.append(f"{what}: {e.message}")
    if errors:
        fail("\n".join(errors))
    print(f"{ok} object(s) valid against the Kubernetes {KUBE} schemas (strict)"
          + (f"; skipped, CRDs without a schema: {', '.join(skipped)}" if skipped else ""))


def check_monitor(o, objs, errors):
    """What the schema would have said about a ServiceMonitor/PodMonitor, in short."""
    spec, what = o.get("spec") or {}, f"{o['kind']}/{o['metadata']['name']}"
    labels = ((spec.get("selector") or {}).get("matchLabels")) or {}
    if not labels:
        errors.append(f"{what}: no spec.selector.matchLabels")
    key = "endpoints" if o["kind"] == "ServiceMonitor" else "podMetricsEndpoints"
    ports = [e.get("port") for e in spec.get(key) or []]
    if not ports:
        errors.append(f"{what}: no spec.{key}")
    if o["kind"] == "ServiceMonitor":
        names = [p.get("name") for s in objs if s["kind"] == "Service" and labels.items() <= s["metadata"].get("labels", {}).items() for p in s["spec"]["ports"]]
    else:
        names = [p.get("name") for d in objs if d["kind"] == "Deployment" and labels.items() <= d["spec"]["template"]["metadata"].get("labels", {}).items() for c in d["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])]
    for p in ports:
        if p not in names:
            errors.append(f"{what}: port {p!r} is not a port of what it selects ({names})")


def pod_name(owner):
    return f"{owner}-5d8c7b9f6-x2k4q"


def cmd_extract(out, outdir):
    """Each connectors.toml of a ConfigMap, with the env of each container mounting it; and the
    invariants of the workloads that run shardbridge."""
    os.makedirs(outdir, exist_ok=True)
    objs = load(out)
    cms = {o["metadata"]["name"]: o for o in objs if o["kind"] == "ConfigMap" and "connectors.toml" in (o.get("data") or {})}
    if not cms:
        fail("no ConfigMap with connectors.toml")
    problems, lines, used = [], [], set()
    for d in (o for o in objs if o["kind"] == "Deployment"):
        dname, spec = d["metadata"]["name"], d["spec"]
        pod = spec["template"]["spec"]
        vols = {v["name"]: v["configMap"]["name"] for v in pod.get("volumes", []) if "configMap" in v and v["configMap"]["name"] in cms}
        for c in pod["containers"]:
            mounts = [m for m in c.get("volumeMounts", []) if m["name"] in vols]
            if not mounts:
                continue
            cm = vols[mounts[0]["name"]]
            text = cms[cm]["data"]["connectors.toml"]
            used.add(cm)
            where = f"deployment/{dname} container {c['name']}"
            try:
                cfg = tomllib.loads(text)
            except tomllib.TOMLDecodeError as e:
                problems.append(f"{cm}: connectors.toml is not TOML: {e}")
                continue
            base = f"{outdir}/{dname}.{c['name']}"
            with open(base + ".toml", "w") as f:
                f.write(text)
            env = []
            for e in c.get("env", []):
                if "value" in e:
                    env.append(f"{e['name']}={e['value']}")
                elif e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
                    env.append(f"{e['name']}={pod_name(dname)}")
            with open(base + ".env", "wb") as f:
                f.write(b"".join(x.encode() + b"\0" for x in env))
            problems += invariants(d, c, cfg, where)
            lines.append(f"{os.path.basename(base)}.toml ({len(cfg.get('connectors', []))} connector(s)) of {where}: invariants ok")
    for cm in cms:
        if cm not in used:
            problems.append(f"ConfigMap {cm} is mounted by no shardbridge container")
    if problems:
        fail("\n".join(problems))
    print("\n".join(lines))


def invariants(d, c, cfg, where):
    p = []
    spec, pod = d["spec"], d["spec"]["template"]["spec"]
    ru = (spec.get("strategy") or {}).get("rollingUpdate") or {}
    if spec.get("strategy", {}).get("type") != "RollingUpdate" or ru.get("maxUnavailable") != 0:
        p.append(f"{where}: strategy is not a rolling update with maxUnavailable 0: {spec.get('strategy')}")
    ids = [e for e in c.get("env", []) if e["name"] == "SHARDBRIDGE__WORKER__ID"]
    if not ids or ids[0].get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "metadata.name":
        p.append(f"{where}: SHARDBRIDGE__WORKER__ID is not the pod's name (downward API)")
    shutdown_s = math.ceil(cfg.get("worker", {}).get("shutdown_timeout_ms", 30000) / 1000)
    cmd = (((c.get("lifecycle") or {}).get("preStop") or {}).get("exec") or {}).get("command") or []
    pre_s = int(cmd[1]) if cmd[:1] == ["sleep"] else 0
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace < pre_s + shutdown_s + 1:
        p.append(f"{where}: terminationGracePeriodSeconds {grace} < preStop {pre_s} s + shutdown {shutdown_s} s + 1")
    sc, psc = c.get("securityContext") or {}, pod.get("securityContext") or {}
    want = {"runAsNonRoot": True, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False}
    for k, v in want.items():
        if sc.get(k, psc.get(k)) != v:
            p.append(f"{where}: securityContext.{k} is not {v}")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        p.append(f"{where}: capabilities do not drop ALL")
    if (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        p.append(f"{where}: seccompProfile is not RuntimeDefault")
    if not any(k.startswith("checksum/") for k in (d["spec"]["template"]["metadata"].get("annotations") or {})):
        p.append(f"{where}: no checksum/ annotation on the pod template")
    port = int(cfg.get("worker", {}).get("listen", "0.0.0.0:9464").rsplit(":", 1)[1])
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        g = (c.get(probe) or {}).get("httpGet")
        if g and (g.get("path") != path or g.get("port") != port):
            p.append(f"{where}: {probe} is not GET {path} on {port}: {g}")
    if not (c.get("livenessProbe") or {}).get("httpGet"):
        p.append(f"{where}: no livenessProbe on /healthz")
    return p


def cmd_check_hpa(out):
    objs = load(out)
    hpas = [o for o in objs if o["kind"] == "HorizontalPodAutoscaler"]
    deps = [o for o in objs if o["kind"] == "Deployment"]
    if len(hpas) != 1 or len(deps) != 1:
        fail(f"want one HPA and one Deployment, got {len(hpas)} and {len(deps)}")
    if "replicas" in deps[0]["spec"]:
        fail("the Deployment sets replicas although an HPA scales it")
    ref = hpas[0]["spec"]["scaleTargetRef"]
    if (ref["kind"], ref["name"]) != ("Deployment", deps[0]["metadata"]["name"]):
        fail(f"the HPA scales {ref}, not the Deployment")
    print(f"HPA {hpas[0]['metadata']['name']} scales deployment/{ref['name']} "
          f"{hpas[0]['spec']['minReplicas']}..{hpas[0]['spec']['maxReplicas']}; the Deployment has no replicas")


def cmd_check_kinds(out, *kinds):
    have = sorted(o["kind"] for o in load(out))
    missing = [k for k in kinds if k not in have]
    if missing:
        fail(f"missing {missing}; rendered {have}")
    print("rendered " + ", ".join(kinds))


def cmd_check_checksum(chart):
    """The pod template's checksum changes with connectors.toml, and only with it."""
    def checksum(vals):
        dep = next(yaml.safe_load(t) for p, t in render(chart, vals) if p.endswith("deployment.yaml"))
        return dep["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    base = checksum(None)
    other_log = checksum({"logLevel": "debug"})
    other_cfg = checksum({"connectors": [{"name": "orders", "source": {"type": "dynamodb-streams", "table": "orders2"}, "sink": {"type": "stdout"}}]})
    if base != other_log:
        fail("the checksum changed although connectors.toml did not")
    if base == other_cfg:
        fail("the checksum did not change with connectors.toml")
    print(f"checksum/config {base[:12]}…: same for a logLevel change, new for a connectors change")


def cmd_expect_schema_fail(chart, expect, *argv):
    """Rendering with these values must fail because of values.schema.json, naming `expect`."""
    cmd_expect_fail(chart, expect, *argv, schema=True)


def cmd_expect_fail(chart, expect, *argv, schema=False):
    """Rendering with these values must fail, naming `expect`."""
    vals, _ = values_and_rest(list(argv))
    try:
        render(chart, vals)
    except helm.HelmError as e:
        msg = str(e)
        at = [l.strip() for l in msg.splitlines() if l.strip().startswith("- at")]
        first = ("values.schema.json: " + "; ".join(at) if at else msg.strip().splitlines()[0])[:200]
        if expect not in msg:
            fail(f"failed, but without {expect!r}: {msg}")
        if schema and "specifications of the schema" not in msg:
            fail(f"failed, but not because of values.schema.json: {msg}")
        print(f"refused: {first}")
        return
    fail(f"rendered although {' '.join(argv)} is wrong")


def main():
    cmd, *args = sys.argv[1:]
    globals()["cmd_" + cmd.replace("-", "_")](*args)


if __name__ == "__main__":
    main()
PY

drv() { "$PY" "$WORK/chartcheck.py" "$@"; }

PASSED=0
FAILED=0
FAILURES=()
# step NAME COMMAND...: runs one check, prints "ok" with the last line of its output, or FAIL
# with all of it; the run goes on, and the exit status at the end counts every failure.
step() {
  local name="$1"
  shift
  local out="$WORK/step.log"
  if "$@" >"$out" 2>&1; then
    PASSED=$((PASSED + 1))
    printf 'ok    %-44s %s\n' "$name" "$(tail -n 1 "$out" | sed "s|$WORK/||g" | cut -c1-130)"
  else
    FAILED=$((FAILED + 1))
    FAILURES+=("$name")
    printf 'FAIL  %s\n' "$name"
    sed -e "s|$WORK/||g" -e 's/^/      /' "$out"
  fi
}

# sb_validate TOML: shardbridge validate, with the env its container has (and no other SHARDBRIDGE_*).
sb_validate() {
  local toml="$1" env_file="${1%.toml}.env" vars=()
  [[ -f "$env_file" ]] && mapfile -d '' vars <"$env_file"
  env -i PATH="$PATH" "${vars[@]}" "$BIN" validate --config "$toml"
}

# render_case NAME CHART ARGS...: lint, template, Kubernetes schemas, connectors.toml + invariants.
render_case() {
  local name="$1" chart="$2"
  shift 2
  step "$name: helm lint --strict" drv lint "$chart" "$@"
  step "$name: helm template" drv template "$chart" "$WORK/$name.yaml" "$@"
  step "$name: kubernetes-validate $KUBE_VERSION" drv kube-validate "$WORK/$name.yaml"
  step "$name: connectors.toml + invariants" drv extract "$WORK/$name.yaml" "$WORK/cfg/$name"
  local toml found=0
  for toml in "$WORK/cfg/$name"/*.toml; do
    [[ -f "$toml" ]] || continue
    found=1
    step "$name: shardbridge validate" sb_validate "$toml"
  done
  [[ $found == 1 ]] || step "$name: shardbridge validate" false
}

log "helm-python-sdk $("$PY" -c 'import helm_python as h; print(h.__version__, "(Helm SDK", h.helm_sdk_version() + ")")'), kubernetes-validate $("$PY" -c 'import kubernetes_validate as k; print(k.__version__)'), Kubernetes $KUBE_VERSION, $BIN"
start=$SECONDS

# Positive cases.
render_case default "$CHART"
render_case hpa "$CHART" --set autoscaling.enabled=true
step "hpa: HPA scales the Deployment" drv check-hpa "$WORK/hpa.yaml"
render_case monitors "$CHART" --set metrics.serviceMonitor.enabled=true --set metrics.podMonitor.enabled=true
step "monitors: ServiceMonitor and PodMonitor" drv check-kinds "$WORK/monitors.yaml" ServiceMonitor PodMonitor
render_case full "$CHART" -f "$CHART/ci/full-values.yaml"
step "full: every optional object" drv check-kinds "$WORK/full.yaml" \
  Deployment ConfigMap Service ServiceAccount PodDisruptionBudget ServiceMonitor PodMonitor
step "default: checksum follows connectors.toml" drv check-checksum "$CHART"
step "sidecar: helm dependency update (file://)" drv dep-update "$EXAMPLE"
render_case sidecar "$EXAMPLE"
render_case sidecar-http-handler "$EXAMPLE" -f "$EXAMPLE/values-http-handler.yaml"
step "sidecar-http-handler: the sink calls the app on localhost" \
  grep -q '^url = "http://127.0.0.1:8080/invoke"$' "$WORK/cfg/sidecar-http-handler/"*.toml

# Wrong values: refused by values.schema.json when rendering (what `helm install` does first).
step "schema: replicaCount=-1" drv expect-schema-fail "$CHART" /replicaCount --set replicaCount=-1
step "schema: shutdownTimeoutMs a string" drv expect-schema-fail "$CHART" /worker/shutdownTimeoutMs \
  --set worker.shutdownTimeoutMs=thirty
step "schema: worker.port a quoted number" drv expect-schema-fail "$CHART" /worker/port \
  --set-string worker.port=9464
step "schema: unknown key replicas" drv expect-schema-fail "$CHART" "'replicas' not allowed" --set replicas=3
step "schema: sink type sqs" drv expect-schema-fail "$CHART" /connectors/0/sink/type \
  --set 'connectors[0].name=orders,connectors[0].source.type=kinesis,connectors[0].source.stream=s,connectors[0].sink.type=sqs'
step "schema: parallelization_factor 11" drv expect-schema-fail "$CHART" /connectors/0/parallelization_factor \
  --set 'connectors[0].name=orders,connectors[0].source.type=kinesis,connectors[0].source.stream=s,connectors[0].sink.type=stdout,connectors[0].parallelization_factor=11'
step "schema: connector name with a space" drv expect-schema-fail "$CHART" /connectors/0/name \
  --set 'connectors[0].name=my orders,connectors[0].source.type=kinesis,connectors[0].source.stream=s,connectors[0].sink.type=stdout'
step "schema: image.pullPolicy Sometimes" drv expect-schema-fail "$CHART" /image/pullPolicy \
  --set image.pullPolicy=Sometimes
step "schema: sidecar's shardbridge.worker.port" drv expect-schema-fail "$EXAMPLE" /worker/port \
  --set shardbridge.worker.port=http
step "template: HPA min > max" drv expect-fail "$CHART" minReplicas \
  --set autoscaling.enabled=true --set autoscaling.minReplicas=5 --set autoscaling.maxReplicas=2

echo
if ((FAILED > 0)); then
  log "failed: $(printf '%s; ' "${FAILURES[@]}")"
fi
log "$((SECONDS - start)) s"
echo "check_chart: $PASSED passed, $FAILED failed"
((FAILED == 0))
