#!/usr/bin/env bash
# make demo: a control plane on its embedded SQLite store with the user
# guide's Universal mesh (metrics enabled). Ctrl-C stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/bin
DEMO=$PWD/.demo
mkdir -p "$DEMO"

export KUMA_GENERAL_WORK_DIR=$DEMO/kuma-data
export KUMA_API_SERVER_HTTP_INTERFACE=127.0.0.1
export KUMA_DP_SERVER_INTERFACE=127.0.0.1
export KUMA_MONITORING_ASSIGNMENT_SERVER_INTERFACE=127.0.0.1
export KUMA_DIAGNOSTICS_SERVER_INTERFACE=127.0.0.1
KUMACTL="$BIN/kumactl --config-file $DEMO/kumactl.yaml"

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "stopping the demo..."
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  exit 0
}
trap cleanup INT TERM EXIT

"$BIN/kuma-cp" run >"$DEMO/kuma-cp.log" 2>&1 &
pids+=($!)

for _ in $(seq 1 100); do
  if curl -fsS http://127.0.0.1:5680/ready >/dev/null 2>&1; then break; fi
  if ! kill -0 "${pids[0]}" 2>/dev/null; then
    echo "kuma-cp exited; its log:"; cat "$DEMO/kuma-cp.log"; exit 1
  fi
  sleep 0.2
done
curl -fsS http://127.0.0.1:5680/ready >/dev/null

$KUMACTL config control-planes add --name demo --address http://127.0.0.1:5681 --overwrite >/dev/null
$KUMACTL apply -f - <<'YAML'
type: Mesh
name: default
metrics:
  enabledBackend: prometheus-1
  backends:
  - name: prometheus-1
    type: prometheus
    conf:
      skipMTLS: true
YAML

cat <<TXT

The control plane runs on its embedded store ($KUMA_GENERAL_WORK_DIR/kuma.db).

  REST API           http://127.0.0.1:5681/meshes
  its own metrics    http://127.0.0.1:5680/metrics
  log                $DEMO/kuma-cp.log

Try:
  $KUMACTL get meshes
  $KUMACTL get mesh default -o yaml
  $KUMACTL apply -f pkg/resource/testdata/guide/dataplane-override-universal.yaml
  $KUMACTL inspect dataplanes

Press Ctrl-C to stop.
TXT
wait "${pids[0]}"
