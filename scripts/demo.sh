#!/usr/bin/env bash
# make demo: a control plane on its embedded SQLite store, the guide's
# Universal mesh with metrics enabled, a demo application (a frontend calling
# two backends that fail a share of their requests) behind kuma-dp proxies on
# 127.0.0.2-127.0.0.4, live traffic, and Debian's Prometheus discovering every
# proxy through the control plane. Ctrl-C stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/bin
DEMO=$PWD/.demo
mkdir -p "$DEMO"
./scripts/test-deps.sh   # Debian's prometheus

export KUMA_GENERAL_WORK_DIR=$DEMO/kuma-data
export KUMA_API_SERVER_HTTP_INTERFACE=127.0.0.1
export KUMA_API_SERVER_HTTPS_INTERFACE=127.0.0.1
export KUMA_DP_SERVER_INTERFACE=127.0.0.1
export KUMA_MONITORING_ASSIGNMENT_SERVER_INTERFACE=127.0.0.1
export KUMA_DIAGNOSTICS_SERVER_INTERFACE=127.0.0.1
KUMACTL="$BIN/kumactl --config-file $DEMO/kumactl.yaml"

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "stopping the demo..."
  # Proxies first (they deregister), then everything else.
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  exit 0
}
trap cleanup INT TERM EXIT

start() { # start NAME CMD... : run in the background, log to .demo/NAME.log
  local name=$1; shift
  "$@" >"$DEMO/$name.log" 2>&1 &
  pids=("$!" "${pids[@]}")
}

wait_http() { # wait_http URL NAME
  for _ in $(seq 1 150); do
    if curl -fsS "$1" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "$2 did not come up; its log:"; cat "$DEMO/$2.log"; exit 1
}

start kuma-cp "$BIN/kuma-cp" run
wait_http http://127.0.0.1:5680/ready kuma-cp

$KUMACTL config control-planes add --name demo --address http://127.0.0.1:5681 --overwrite >/dev/null
# The guide's Universal mesh (metrics enabled, not behind mTLS).
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

# The workload: two backends failing 20% of their requests, and a frontend
# calling "backend" through its proxy's outbound on 127.0.0.1:10001.
start backend-1-app "$BIN/demo-app" backend --name backend-1 --listen 127.0.0.1:18081 --error-rate 0.2
start backend-2-app "$BIN/demo-app" backend --name backend-2 --listen 127.0.0.1:18083 --error-rate 0.2
start frontend-app "$BIN/demo-app" frontend --listen 127.0.0.1:18082 --backend http://127.0.0.1:10001/

cat >"$DEMO/frontend-1.yaml" <<'YAML'
type: Dataplane
mesh: default
name: frontend-1
networking:
  address: 127.0.0.2
  inbound:
  - port: 8080
    servicePort: 18082
    tags:
      kuma.io/service: frontend
      kuma.io/protocol: http
  outbound:
  - port: 10001
    tags:
      kuma.io/service: backend
metrics:
  type: prometheus
  conf:
    aggregate:             # the application's own metrics, merged into the proxy's
    - name: app
      port: 18082
YAML
cat >"$DEMO/backend-1.yaml" <<'YAML'
type: Dataplane
mesh: default
name: backend-1
networking:
  address: 127.0.0.3
  inbound:
  - port: 8080
    servicePort: 18081
    tags:
      kuma.io/service: backend
      kuma.io/protocol: http
      version: v1
metrics:
  type: prometheus
  conf:
    aggregate:
    - name: app
      port: 18081
YAML
# The traffic generator is in the mesh too: it calls the frontend through its
# proxy's outbound on 127.0.0.1:10002 (so traffic keeps flowing under mTLS).
cat >"$DEMO/traffic.yaml" <<'YAML'
type: Dataplane
mesh: default
name: traffic
networking:
  address: 127.0.0.5
  inbound:
  - port: 8080
    servicePort: 18089
    tags:
      kuma.io/service: traffic
  outbound:
  - port: 10002
    tags:
      kuma.io/service: frontend
YAML
# backend-2 overrides the mesh's metrics port and path, as the guide's example.
cat >"$DEMO/backend-2.yaml" <<'YAML'
type: Dataplane
mesh: default
name: backend-2
networking:
  address: 127.0.0.4
  inbound:
  - port: 8080
    servicePort: 18083
    tags:
      kuma.io/service: backend
      kuma.io/protocol: http
      version: v2
metrics:
  type: prometheus
  conf:
    skipMTLS: true
    port: 1234
    path: /non-standard-path
YAML

CA=$KUMA_GENERAL_WORK_DIR/dp-server-ca.pem
admin=9901
for dp in frontend-1 backend-1 backend-2 traffic; do
  $KUMACTL generate dataplane-token --mesh default --name "$dp" >"$DEMO/$dp.token"
  start "$dp" "$BIN/kuma-dp" run --cp-address https://127.0.0.1:5678 --ca-cert-file "$CA" \
    --dataplane-token-file "$DEMO/$dp.token" --dataplane-file "$DEMO/$dp.yaml" --admin-port $admin --drain-time 5s
  wait_http "http://127.0.0.1:$admin/ready" "$dp"
  admin=$((admin + 1))
done

start traffic-app "$BIN/demo-app" traffic --target http://127.0.0.1:10002/ --rate 20 --duration 24h

# Prometheus set up by the product itself: `kumactl install metrics
# --universal` writes a prometheus.yml that discovers the proxies with
# http_sd_configs from the control plane (Debian's Prometheus has no
# kuma_sd_configs) and the guide's relabel rules, and scrapes kuma-cp too.
PROM_PORT=9090
if curl -s -o /dev/null "http://127.0.0.1:$PROM_PORT/" 2>/dev/null; then PROM_PORT=19090; fi
$KUMACTL install metrics --universal --output-dir "$DEMO/metrics" --overwrite >"$DEMO/install-metrics.log"
start prometheus prometheus --config.file="$DEMO/metrics/prometheus.yml" \
  --web.listen-address=127.0.0.1:$PROM_PORT --storage.tsdb.path="$DEMO/prometheus-data" \
  --storage.tsdb.retention.time=1d --log.level=warn
wait_http "http://127.0.0.1:$PROM_PORT/-/ready" prometheus

cat <<TXT

The demo runs. Everything listens on 127.0.0.x only; logs are in $DEMO/.

  control plane API      http://127.0.0.1:5681/meshes/default/dataplanes+insights
                         https://127.0.0.1:5682/  (its CA: $KUMA_GENERAL_WORK_DIR/api-server-ca.pem)
  control plane metrics  http://127.0.0.1:5680/metrics
  discovery (http_sd)    http://127.0.0.1:5676/v3/discovery:monitoringassignments/http_sd
  proxy metrics          http://127.0.0.2:5670/metrics            (frontend-1, with its app's metrics)
                         http://127.0.0.3:5670/metrics            (backend-1)
                         http://127.0.0.4:1234/non-standard-path  (backend-2, the guide's override)
  proxy admin            http://127.0.0.1:9901/stats  (frontend-1; 9902, 9903 the backends; 9904 traffic)
  Prometheus             http://127.0.0.1:$PROM_PORT/targets

Try:
  $KUMACTL inspect dataplanes
  curl -s 'http://127.0.0.2:5670/metrics?filter=cluster\.backend\.upstream_rq' | grep -v '^#'
  curl -s 'http://127.0.0.1:$PROM_PORT/api/v1/query' --data-urlencode \\
    'query=sum by (envoy_response_code_class) (rate(envoy_cluster_upstream_rq_xx{envoy_cluster_name="backend"}[1m]))'

Turn on mTLS between the proxies (traffic keeps flowing; metrics stay plain: skipMTLS):
  $KUMACTL apply -f - <<'EOF'
  type: Mesh
  name: default
  mtls:
    enabledBackend: ca-1
    backends:
    - name: ca-1
      type: builtin
  metrics:
    enabledBackend: prometheus-1
    backends:
    - name: prometheus-1
      type: prometheus
      conf:
        skipMTLS: true
  EOF
  curl -s http://127.0.0.1:9901/stats | grep -E 'ssl.handshake|rbac'

Press Ctrl-C to stop.
TXT
wait "${pids[-1]}"
