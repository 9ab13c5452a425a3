#!/usr/bin/env bash
# make demo: a control plane on its embedded SQLite store, the guide's
# Universal mesh with metrics enabled, a demo application (a frontend calling
# two backends that fail a share of their requests, and a traffic generator)
# behind four kuma-dp proxies on 127.0.0.2-127.0.0.5, live traffic, and
# Debian's Prometheus discovering every proxy through the control plane.
# Ctrl-C stops everything it started: the workload and the proxies first (they
# deregister while the control plane is still up), then the control plane.
#
# What the user applied (mTLS, say) survives a restart: the guide's mesh is
# applied only when the mesh has no metrics backend yet (the first start).
#
# The tests run it elsewhere than the defaults (DEMO_DIR, DEMO_BIN, DEMO_NET:
# the first three octets of the addresses, DEMO_ADMIN_HOST, DEMO_PROMETHEUS).
# DEMO_GRAFANA_PLUGIN (the zip or folder of `make plugin`) adds Grafana's files
# and the Kuma datasource plugin to .demo/metrics; without it they are left out.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${DEMO_BIN:-$PWD/bin}
DEMO=${DEMO_DIR:-$PWD/.demo}
NET=${DEMO_NET:-127.0.0}
ADMIN_HOST=${DEMO_ADMIN_HOST:-127.0.0.1}
CP=$NET.1
mkdir -p "$DEMO"
./scripts/test-deps.sh   # Debian's prometheus

export KUMA_GENERAL_WORK_DIR=$DEMO/kuma-data
export KUMA_API_SERVER_HTTP_INTERFACE=$CP
export KUMA_API_SERVER_HTTPS_INTERFACE=$CP
export KUMA_DP_SERVER_INTERFACE=$CP
export KUMA_MONITORING_ASSIGNMENT_SERVER_INTERFACE=$CP
export KUMA_DIAGNOSTICS_SERVER_INTERFACE=$CP
KUMACTL="$BIN/kumactl --config-file $DEMO/kumactl.yaml"

cp_pid=
proxies=()
others=()
stop_all() { # stop_all PID... : SIGTERM, then wait for each
  for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "$@"; do wait "$p" 2>/dev/null || true; done
}
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "stopping the demo..."
  # The workload and Prometheus, then the proxies (each deregisters from the
  # control plane and drains), then the control plane.
  stop_all "${others[@]}"
  stop_all "${proxies[@]}"
  [ -n "$cp_pid" ] && stop_all "$cp_pid"
  exit 0
}
trap cleanup INT TERM EXIT

start() { # start NAME CMD... : run in the background, log to $DEMO/NAME.log
  local name=$1; shift
  "$@" >"$DEMO/$name.log" 2>&1 &
  last_pid=$!
}

wait_http() { # wait_http URL NAME
  for _ in $(seq 1 150); do
    if curl -fsS "$1" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "$2 did not come up; its log:"; cat "$DEMO/$2.log"; exit 1
}

start kuma-cp "$BIN/kuma-cp" run
cp_pid=$last_pid
wait_http "http://$CP:5680/ready" kuma-cp

$KUMACTL config control-planes add --name demo --address "http://$CP:5681" --overwrite >/dev/null
# The guide's Universal mesh (metrics enabled, not behind mTLS), on the first
# start only: later starts keep what the user applied since.
if $KUMACTL get mesh default -o yaml | grep -q '^metrics:'; then
  echo "mesh default already has metrics: keeping it as it is"
else
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
fi

# The workload: two backends failing 20% of their requests, and a frontend
# calling "backend" through its proxy's outbound on $CP:10001.
start backend-1-app "$BIN/demo-app" backend --name backend-1 --listen "$CP:18081" --error-rate 0.2
others+=("$last_pid")
start backend-2-app "$BIN/demo-app" backend --name backend-2 --listen "$CP:18083" --error-rate 0.2
others+=("$last_pid")
start frontend-app "$BIN/demo-app" frontend --listen "$CP:18082" --backend "http://$CP:10001/"
others+=("$last_pid")

cat >"$DEMO/frontend-1.yaml" <<YAML
type: Dataplane
mesh: default
name: frontend-1
networking:
  address: $NET.2
  inbound:
  - port: 8080
    servicePort: 18082
    serviceAddress: $CP
    tags:
      kuma.io/service: frontend
      kuma.io/protocol: http
  outbound:
  - port: 10001
    address: $CP
    tags:
      kuma.io/service: backend
metrics:
  type: prometheus
  conf:
    aggregate:             # the application's own metrics, merged into the proxy's
    - name: app
      address: $CP
      port: 18082
YAML
cat >"$DEMO/backend-1.yaml" <<YAML
type: Dataplane
mesh: default
name: backend-1
networking:
  address: $NET.3
  inbound:
  - port: 8080
    servicePort: 18081
    serviceAddress: $CP
    tags:
      kuma.io/service: backend
      kuma.io/protocol: http
      version: v1
metrics:
  type: prometheus
  conf:
    aggregate:
    - name: app
      address: $CP
      port: 18081
YAML
# The traffic generator is in the mesh too: it calls the frontend through its
# proxy's outbound on $CP:10002 (so traffic keeps flowing under mTLS).
cat >"$DEMO/traffic.yaml" <<YAML
type: Dataplane
mesh: default
name: traffic
networking:
  address: $NET.5
  inbound:
  - port: 8080
    servicePort: 18089
    serviceAddress: $CP
    tags:
      kuma.io/service: traffic
  outbound:
  - port: 10002
    address: $CP
    tags:
      kuma.io/service: frontend
YAML
# backend-2 overrides the mesh's metrics port and path, as the guide's example.
cat >"$DEMO/backend-2.yaml" <<YAML
type: Dataplane
mesh: default
name: backend-2
networking:
  address: $NET.4
  inbound:
  - port: 8080
    servicePort: 18083
    serviceAddress: $CP
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
# Each token binds its proxy to the services it serves (a proxy presenting
# another kuma.io/service is refused): dataplane:service.
for entry in frontend-1:frontend backend-1:backend backend-2:backend traffic:traffic; do
  dp=${entry%%:*}
  $KUMACTL generate dataplane-token --mesh default --name "$dp" --tag "kuma.io/service=${entry#*:}" >"$DEMO/$dp.token"
  start "$dp" "$BIN/kuma-dp" run --cp-address "https://$CP:5678" --ca-cert-file "$CA" \
    --dataplane-token-file "$DEMO/$dp.token" --dataplane-file "$DEMO/$dp.yaml" \
    --admin-address "$ADMIN_HOST" --admin-port $admin --drain-time 5s
  proxies+=("$last_pid")
  wait_http "http://$ADMIN_HOST:$admin/ready" "$dp"
  admin=$((admin + 1))
done

start traffic-app "$BIN/demo-app" traffic --target "http://$CP:10002/" --rate 20 --duration 24h
others+=("$last_pid")

# Prometheus set up by the product itself: `kumactl install metrics
# --universal` writes a prometheus.yml that discovers the proxies with
# http_sd_configs from the control plane (Debian's Prometheus has no
# kuma_sd_configs) and the guide's relabel rules, and scrapes kuma-cp too.
PROM=${DEMO_PROMETHEUS:-127.0.0.1:9090}
if [ -z "${DEMO_PROMETHEUS:-}" ] && curl -s -o /dev/null "http://$PROM/" 2>/dev/null; then PROM=127.0.0.1:19090; fi
grafana=(--without-grafana)
if [ -n "${DEMO_GRAFANA_PLUGIN:-}" ]; then grafana=(--grafana-plugin "$DEMO_GRAFANA_PLUGIN"); fi
$KUMACTL install metrics --universal --output-dir "$DEMO/metrics" --overwrite "${grafana[@]}" \
  --kuma-cp-address "http://$CP:5676" --kuma-cp-api-address "http://$CP:5681" --prometheus-address "$PROM" >"$DEMO/install-metrics.log"
start prometheus prometheus --config.file="$DEMO/metrics/prometheus.yml" \
  --web.listen-address="$PROM" --storage.tsdb.path="$DEMO/prometheus-data" \
  --storage.tsdb.retention.time=1d --log.level=warn
others+=("$last_pid")
wait_http "http://$PROM/-/ready" prometheus
# Debian's Prometheus serves its web UI under /classic (upstream's at /).
PROM_UI=http://$PROM
if curl -fs -o /dev/null "$PROM_UI/classic/targets"; then PROM_UI=$PROM_UI/classic; fi

cat <<TXT

The demo runs. Everything listens on $NET.x only; logs are in $DEMO/.

  control plane API      http://$CP:5681/meshes/default/dataplanes+insights
                         https://$CP:5682/  (its CA: $KUMA_GENERAL_WORK_DIR/api-server-ca.pem)
  control plane metrics  http://$CP:5680/metrics
  discovery (http_sd)    http://$CP:5676/v3/discovery:monitoringassignments/http_sd
  proxy metrics          http://$NET.2:5670/metrics            (frontend-1, with its app's metrics)
                         http://$NET.3:5670/metrics            (backend-1)
                         http://$NET.4:1234/non-standard-path  (backend-2, the guide's override)
                         http://$NET.5:5670/metrics            (traffic, the load generator's proxy)
  proxy admin            http://$ADMIN_HOST:9901/stats  (frontend-1; 9902, 9903 the backends; 9904 traffic)
  Prometheus targets     $PROM_UI/targets

Try:
  $KUMACTL inspect dataplanes
  curl -s 'http://$NET.2:5670/metrics?filter=cluster\.backend\.upstream_rq' | grep -v '^#'
  curl -s 'http://$PROM/api/v1/query' --data-urlencode \\
    'query=sum by (envoy_response_code_class) (rate(envoy_cluster_upstream_rq_xx{envoy_cluster_name="backend"}[1m]))'

Turn on mTLS between the proxies (traffic keeps flowing; metrics stay plain: skipMTLS;
a later make demo keeps it); paste these lines into a shell:

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

  curl -s http://$ADMIN_HOST:9901/stats | grep -E 'ssl.handshake|rbac'

Press Ctrl-C to stop.
TXT
wait "$cp_pid"
