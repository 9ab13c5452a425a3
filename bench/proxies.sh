#!/usr/bin/env bash
# bench/proxies.sh: one proxy hop, side by side in one run: direct (no proxy),
# haproxy, nginx and kuma-dp (plain, and with its metrics endpoint scraped
# every second), for HTTP/1.1 and for TCP echo, and on request for HTTP/2
# (h2c) and gRPC (--proto http2,grpc). On request also a mesh hop
# through two kuma-dp (client outbound -> server inbound), with mTLS off and on
# (mesh-plain, mesh-mtls). See bench/README.md.
#
#   bench/proxies.sh                        # the default paths, ~4 min without kuma-dp, ~7 with
#   bench/proxies.sh --quick                # ~1 min
#   bench/proxies.sh --only direct,haproxy,nginx --proto http
#   bench/proxies.sh --mtls                 # direct, mesh-plain, mesh-mtls: ~4 min
#   bench/proxies.sh --proto http2,grpc     # HTTP/2 (h2c) and gRPC: ~8 min
#
# Pinning: backend, load generators and kuma-cp on CPU 0, the proxy under test
# on CPU 1. Every process started here is stopped on exit, Ctrl-C or failure.
# Everything listens on loopback only (kuma-dp's inbound on its dataplane
# address 127.0.0.2, the mesh paths' on 127.0.0.3-6). Ports: BENCH_PORT_BASE
# (default 18000) + 1..90.
# BENCH_KUMA_DP / BENCH_KUMA_CP=/path/to/binary use that kuma-dp / kuma-cp
# instead of the ones built from cmd/ (or found in bin/).
set -euo pipefail

usage() {
	cat <<'EOF'
usage: bench/proxies.sh [--quick] [--only PATHS] [--mtls] [--proto LIST] [--rounds N] [--syscalls] [--keep]

  --quick         ~1 minute (default paths): 2 rounds, 1500 requests at 1k req/s, 3 s saturation
  --only PATHS    comma-separated subset of:
                    direct,haproxy,nginx,kuma-dp,kuma-dp-scrape,kuma-dp-b,mesh-plain,mesh-mtls
                  (kuma-dp-b: a second kuma-dp binary, BENCH_KUMA_DP_B=/path,
                  measured in the same rounds as kuma-dp: an A/B of two builds)
                  (direct is always measured: added latency is relative to it).
                  Default: direct,haproxy,nginx,kuma-dp,kuma-dp-scrape; the mesh
                  paths run only when named here or with --mtls
  --mtls          mTLS off against on: adds mesh-plain,mesh-mtls to --only
                  (alone: --only direct,mesh-plain,mesh-mtls, ~4 min, ~1 with --quick).
                  Both are a mesh hop through TWO kuma-dp (client outbound ->
                  server inbound), mesh-plain in a mesh without mTLS, mesh-mtls in
                  a mesh with builtin-CA mTLS; both kuma-dp run on CPU 1
  --proto LIST    comma-separated subset of http,tcp,http2,grpc (default http,tcp).
                  http2: HTTP/2 with prior knowledge (h2c) GET, 1 KiB body;
                  grpc: a unary gRPC call answered with 1 KiB. Each protocol
                  adds ~4 min to a default run (~1 min with --quick):
                  --proto http2,grpc ~8 min, all four ~16 min
  --rounds N      interleaved rounds (default 3)
  --syscalls      also count the system calls made on CPU 1 (the proxies') during
                  each saturation run (perf stat, tracepoint raw_syscalls:sys_enter;
                  Debian's linux-perf): per request, a figure the machine's noise
                  does not move. Off by default: counting costs the proxies a little
  --keep          keep the temporary directory (configs, logs) and print its path
EOF
}

ALL_PATHS=(direct haproxy nginx kuma-dp kuma-dp-scrape kuma-dp-b mesh-plain mesh-mtls)
DEFAULT_PATHS=(direct haproxy nginx kuma-dp kuma-dp-scrape)
ONLY=""
MTLS=0
PROTOS="http,tcp"
ROUNDS=3
REQUESTS=4000    # measured open-loop requests per run
RATE=1000        # open-loop rate, req/s
CONNS=16         # open-loop connections (http2, grpc: streams)
H2_STREAMS_OPEN=4 # http2, grpc: streams per connection, open loop (4 connections)
H2_STREAMS_SAT=8  # and at saturation (32 streams: 4 connections)
WARMUP=500ms     # open-loop warm-up, excluded
SAT_SECONDS=8    # saturation run length
KEEP=0
SYSCALLS=0
while (($#)); do
	case $1 in
	--quick) ROUNDS=2 REQUESTS=1500 WARMUP=300ms SAT_SECONDS=3 ;;
	--only) ONLY=${2:?--only needs a list}; shift ;;
	--mtls) MTLS=1 ;;
	--proto) PROTOS=${2:?--proto needs a list}; shift ;;
	--rounds) ROUNDS=${2:?--rounds needs a number}; shift ;;
	--keep) KEEP=1 ;;
	--syscalls) SYSCALLS=1 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
	esac
	shift
done
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "--rounds must be a positive number" >&2; exit 2; }

if ((MTLS)); then
	ONLY=${ONLY:+$ONLY,}mesh-plain,mesh-mtls
fi
PATHS=()
if [[ -z $ONLY ]]; then
	PATHS=("${DEFAULT_PATHS[@]}")
else
	IFS=, read -r -a wanted <<<"$ONLY"
	for p in "${ALL_PATHS[@]}"; do
		for w in "${wanted[@]}"; do [[ $w == "$p" ]] && { PATHS+=("$p"); break; }; done
	done
	for w in "${wanted[@]}"; do
		[[ " ${ALL_PATHS[*]} " == *" $w "* ]] || { echo "unknown path '$w' (known: ${ALL_PATHS[*]})" >&2; exit 2; }
	done
	[[ " ${PATHS[*]} " == *" direct "* ]] || PATHS=(direct "${PATHS[@]}")
fi
IFS=, read -r -a PROTO_LIST <<<"$PROTOS"
for p in "${PROTO_LIST[@]}"; do
	[[ $p == http || $p == tcp || $p == http2 || $p == grpc ]] || { echo "unknown protocol '$p' (http, tcp, http2, grpc)" >&2; exit 2; }
done
has_path() { [[ " ${PATHS[*]} " == *" $1 "* ]]; }
NEED_KUMA=0
if has_path kuma-dp || has_path kuma-dp-scrape || has_path kuma-dp-b || has_path mesh-plain || has_path mesh-mtls; then NEED_KUMA=1; fi
if has_path kuma-dp-b && [[ ! -x ${BENCH_KUMA_DP_B:-} ]]; then
	echo "path kuma-dp-b needs BENCH_KUMA_DP_B=/path/to/another/kuma-dp (not executable: '${BENCH_KUMA_DP_B:-}')" >&2
	exit 2
fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BIN=$ROOT/bench/bin
RESULTS=$ROOT/bench/results

# Tools.
missing=()
for tool in haproxy nginx wrk taskset curl; do
	command -v "$tool" >/dev/null 2>&1 || [[ -x /usr/sbin/$tool ]] || missing+=("$tool")
done
if ((SYSCALLS)) && ! perf stat -a -C 1 -e raw_syscalls:sys_enter -x, -o /dev/null true 2>/dev/null; then
	missing+=(perf)
fi
if ((${#missing[@]})); then
	pkgs=()
	for t in "${missing[@]}"; do
		case $t in taskset) pkgs+=(util-linux) ;; nginx) pkgs+=(nginx-light) ;; perf) pkgs+=(linux-perf) ;; *) pkgs+=("$t") ;; esac
	done
	echo "missing: ${missing[*]}; install with:" >&2
	echo "  apt-get install -y ${pkgs[*]}" >&2
	exit 1
fi
PATH=$PATH:/usr/sbin
if (($(nproc) < 2)); then
	echo "need at least 2 CPUs (proxy on CPU 1, everything else on CPU 0); have $(nproc)" >&2
	exit 1
fi
NGINX_STREAM=/usr/lib/nginx/modules/ngx_stream_module.so
if has_path nginx && [[ " ${PROTO_LIST[*]} " == *" tcp "* && ! -e $NGINX_STREAM ]]; then
	# Debian builds nginx's stream (TCP proxy) module as a separate package.
	echo "nginx has no stream module ($NGINX_STREAM), needed for the TCP rows:"
	echo "  running: apt-get install -y libnginx-mod-stream"
	if ((EUID != 0)); then
		echo "not root: run that command yourself, or use --proto http" >&2
		exit 1
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q libnginx-mod-stream >/dev/null ||
		{ apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q libnginx-mod-stream >/dev/null; }
	[[ -e $NGINX_STREAM ]] || { echo "libnginx-mod-stream did not install $NGINX_STREAM" >&2; exit 1; }
fi

# Ports (loopback only).
BASE=${BENCH_PORT_BASE:-18000}
BACK_HTTP=$((BASE + 1)) BACK_TCP=$((BASE + 2)) BACK_H2C=$((BASE + 3)) BACK_GRPC=$((BASE + 4))
HAP_HTTP=$((BASE + 11)) HAP_TCP=$((BASE + 12)) HAP_H2C=$((BASE + 13)) HAP_GRPC=$((BASE + 14))
NGX_HTTP=$((BASE + 21)) NGX_TCP=$((BASE + 22)) NGX_H2C=$((BASE + 23)) NGX_GRPC=$((BASE + 24))
# PORT_OF PREFIX PROTO: the port of a server for a protocol (BACK, HAP, NGX).
port_of() {
	case $2 in
	http) eval echo "\$${1}_HTTP" ;;
	tcp) eval echo "\$${1}_TCP" ;;
	http2) eval echo "\$${1}_H2C" ;;
	grpc) eval echo "\$${1}_GRPC" ;;
	esac
}
# lg_mode PROTO: loadgen's -mode for a protocol.
lg_mode() { case $1 in http2) echo h2c ;; *) echo "$1" ;; esac; }
CP_API=$((BASE + 31)) CP_DP=$((BASE + 32)) CP_MADS=$((BASE + 33)) CP_DIAG=$((BASE + 34))
DP_ADDR=127.0.0.2 DP_INBOUND=$((BASE + 80)) DP_ADMIN=$((BASE + 81)) DP_METRICS=$((BASE + 90))
# kuma-dp-b: the same dataplane, another address and admin port.
DP_B_ADDR=127.0.0.7 DP_B_ADMIN=$((BASE + 82))
# Mesh paths: in mesh MESH_OF[path], a server dataplane bench-srv (inbound on
# SRV_ADDR:+1 -> the backend, admin +4) and a client bench-cli (inbound on
# CLI_ADDR:+2 to an unused port +9, outbound on 127.0.0.1:+3, admin +5), the
# ports counted from BASE + MESH_OFF[path].
declare -A MESH_OF=([mesh-plain]=plain [mesh-mtls]=secure)
declare -A MESH_OFF=([mesh-plain]=40 [mesh-mtls]=50)
declare -A SRV_ADDR=([mesh-plain]=127.0.0.3 [mesh-mtls]=127.0.0.5)
declare -A CLI_ADDR=([mesh-plain]=127.0.0.4 [mesh-mtls]=127.0.0.6)
mesh_port() { echo $((BASE + MESH_OFF[$1] + $2)); } # PATH N
in_use=()
for port in $BACK_HTTP $BACK_TCP $BACK_H2C $BACK_GRPC $HAP_HTTP $HAP_TCP $HAP_H2C $HAP_GRPC $NGX_HTTP $NGX_TCP $NGX_H2C $NGX_GRPC $CP_API $CP_DP $CP_MADS $CP_DIAG $DP_ADMIN $DP_B_ADMIN $DP_METRICS; do
	in_use+=("127.0.0.1:$port")
done
in_use+=("$DP_ADDR:$DP_INBOUND" "$DP_B_ADDR:$DP_INBOUND")
for p in mesh-plain mesh-mtls; do
	in_use+=("${SRV_ADDR[$p]}:$(mesh_port $p 1)" "${CLI_ADDR[$p]}:$(mesh_port $p 2)")
	for n in 3 4 5 9; do in_use+=("127.0.0.1:$(mesh_port $p $n)"); done
done
for a in "${in_use[@]}"; do
	if (: <"/dev/tcp/${a%:*}/${a##*:}") 2>/dev/null; then
		echo "port ${a##*:} on ${a%:*} is in use; set BENCH_PORT_BASE to another base" >&2
		exit 1
	fi
done

# Plan and time budget, printed up front.
per_run=$(awk -v w="$WARMUP" -v n="$REQUESTS" -v r="$RATE" -v s="$SAT_SECONDS" \
	'BEGIN { sub(/ms$/, "", w); printf "%.0f", w / 1000 + n / r + s + 1.5 }')
est=$((per_run * ROUNDS * ${#PATHS[@]} * ${#PROTO_LIST[@]}))
echo "paths: ${PATHS[*]}; protocols: ${PROTO_LIST[*]}; $ROUNDS interleaved rounds"
echo "each run: open loop $REQUESTS requests at $RATE req/s over $CONNS connections (+$WARMUP warm-up), then ${SAT_SECONDS}s at saturation"
if [[ " ${PROTO_LIST[*]} " == *" http2 "* || " ${PROTO_LIST[*]} " == *" grpc "* ]]; then
	echo "http2, grpc: h2c, open loop $CONNS streams over $((CONNS / H2_STREAMS_OPEN)) connections, saturation 32 streams over $((32 / H2_STREAMS_SAT)) (loadgen on CPU 0)"
fi
echo "estimated time: ~$((est / 60)) min $((est % 60)) s of measurement, plus build and start-up"
if has_path mesh-plain || has_path mesh-mtls; then
	echo "mesh-plain / mesh-mtls: a mesh hop through two kuma-dp (client outbound -> server inbound), mTLS off / on; added latency against direct"
fi

# Build.
targets=(./bench/...)
((NEED_KUMA)) && targets+=(./cmd/...)
echo "building: CGO_ENABLED=0 go build -o bench/bin/ ${targets[*]}"
CGO_ENABLED=0 go build -o "$BIN/" "${targets[@]}"
KUMA_DP="" KUMA_CP=""
if ((NEED_KUMA)); then
	for c in ${BENCH_KUMA_DP:-} "$BIN/kuma-dp" "$ROOT/bin/kuma-dp"; do [[ -x $c ]] && { KUMA_DP=$c; break; }; done
	for c in ${BENCH_KUMA_CP:-} "$BIN/kuma-cp" "$ROOT/bin/kuma-cp"; do [[ -x $c ]] && { KUMA_CP=$c; break; }; done
	if [[ -z $KUMA_DP || -z $KUMA_CP ]]; then
		echo "kuma-dp or kuma-cp is not built (no cmd/kuma-dp yet?); measure the peers only with:" >&2
		echo "  bench/proxies.sh --only direct,haproxy,nginx" >&2
		exit 1
	fi
fi

# Processes: everything started goes through start_bg and is stopped on exit.
TMP=$(mktemp -d /tmp/bench-proxies.XXXXXX)
chmod 711 "$TMP" # nginx workers run as nobody and need their temp paths
PIDS=()
BG_PID=""
STOP_RC=0

alive() {
	local s
	s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	s=${s##*) }
	[[ ${s:0:1} != Z ]]
}

# start_bg NAME CPU COMMAND...: start COMMAND pinned on CPU, output in $TMP/NAME.log.
start_bg() {
	local name=$1 cpu=$2
	shift 2
	taskset -c "$cpu" "$@" >"$TMP/$name.log" 2>&1 &
	BG_PID=$!
	PIDS+=("$BG_PID")
}

# stop_pid PID: SIGTERM, then SIGKILL after 5 s; sets STOP_RC to its exit status.
stop_pid() {
	local pid=$1 i keep=()
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do alive "$pid" || break; sleep 0.1; done
	kill -KILL "$pid" 2>/dev/null || true
	STOP_RC=0
	wait "$pid" 2>/dev/null || STOP_RC=$?
	for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
	PIDS=("${keep[@]+"${keep[@]}"}")
}

cleanup() {
	local rc=$? i pid
	trap - EXIT INT TERM
	for pid in "${PIDS[@]+"${PIDS[@]}"}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for ((i = 0; i < 50; i++)); do
		local left=0
		for pid in "${PIDS[@]+"${PIDS[@]}"}"; do alive "$pid" && left=1; done
		((left)) || break
		sleep 0.1
	done
	for pid in "${PIDS[@]+"${PIDS[@]}"}"; do kill -KILL "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
	if ((KEEP)); then echo "kept $TMP"; else rm -rf "$TMP"; fi
	exit "$rc"
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT
trap 'exit 143' TERM

log_tail() { echo "--- last lines of $1.log:" >&2; tail -n 15 "$TMP/$1.log" >&2 || true; }

# wait_ready PROTO ADDR PID SECONDS: one request through ADDR succeeds.
wait_ready() {
	local proto=$1 addr=$2 pid=$3 i
	for ((i = 0; i < $4 * 10; i++)); do
		alive "$pid" || return 1
		"$BIN/loadgen" -probe -mode "$(lg_mode "$proto")" -addr "$addr" 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

# Results.
mkdir -p "$RESULTS"
STAMP=$(date +%Y-%m-%dT%H-%M-%S)
OUT=$RESULTS/$STAMP.jsonl
CLK_TCK=$(getconf CLK_TCK)
FAILURES=0
emit() { printf '%s\n' "$1" >>"$OUT"; }
jfield() { [[ $1 =~ \"$2\":([-0-9.e+]+) ]] && printf '%s' "${BASH_REMATCH[1]}" || printf '?'; }
or_null() { [[ -n $1 ]] && printf '%s' "$1" || printf 'null'; }

hap_version=$(haproxy -v 2>/dev/null | awk 'NR==1 { print $3 }')
ngx_version=$(nginx -v 2>&1 | awk -F/ '{ print $2 }')
emit "$(printf '{"kind":"meta","settings":{"date":"%s","git":"%s","rounds":%d,"requests":%d,"rate":%d,"conns":%d,"warmup":"%s","saturation_s":%d,"paths":"%s","haproxy":"%s","nginx":"%s"}}' \
	"$STAMP" "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" "$ROUNDS" "$REQUESTS" "$RATE" "$CONNS" "$WARMUP" "$SAT_SECONDS" \
	"${PATHS[*]}" "$hap_version" "$ngx_version")"

# /proc accounting.
proc_ticks() { # PID...: utime+stime in clock ticks, summed
	local sum=0 pid s f
	for pid in "$@"; do
		s=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
		read -r -a f <<<"${s##*) }"
		sum=$((sum + f[11] + f[12]))
	done
	echo "$sum"
}
rss_kb() { # PID...: "VmRSS RssAnon" summed (RssAnon: the private part, heap and stacks; the rest is file pages)
	local rss=0 anon=0 pid r a
	for pid in "$@"; do
		read -r r a < <(awk '/^VmRSS:/ { r = $2 } /^RssAnon:/ { a = $2 } END { print r + 0, a + 0 }' "/proc/$pid/status" 2>/dev/null) || continue
		rss=$((rss + ${r:-0})) anon=$((anon + ${a:-0}))
	done
	echo "$rss $anon"
}
children() { pgrep -P "$1" 2>/dev/null || true; }
cpu1_ticks() { # "busy all" ticks of CPU 1 from /proc/stat (busy = all but idle and iowait)
	awk '$1 == "cpu1" { all = 0; for (i = 2; i <= 9; i++) all += $i; print all - $5 - $6, all }' /proc/stat
}

# Backend: one process for every protocol, on CPU 0.
start_bg backend 0 "$BIN/backend" -http "127.0.0.1:$BACK_HTTP" -tcp "127.0.0.1:$BACK_TCP" \
	-h2c "127.0.0.1:$BACK_H2C" -grpc "127.0.0.1:$BACK_GRPC"
BACKEND_PID=$BG_PID
for p in http tcp http2 grpc; do
	if ! wait_ready "$p" "127.0.0.1:$(port_of BACK "$p")" "$BACKEND_PID" 10; then
		log_tail backend
		echo "backend did not start ($p)" >&2
		exit 1
	fi
done

# Control plane for kuma-dp, on CPU 0.
CP_WORK=$TMP/kuma-cp
CP_OK=0
if ((NEED_KUMA)); then
	mkdir -p "$CP_WORK"
	start_bg kuma-cp 0 env KUMA_GENERAL_WORK_DIR="$CP_WORK" KUMA_STORE_TYPE=memory KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE=none \
		KUMA_API_SERVER_HTTP_INTERFACE=127.0.0.1 KUMA_API_SERVER_HTTP_PORT="$CP_API" KUMA_API_SERVER_HTTPS_ENABLED=false \
		KUMA_DP_SERVER_INTERFACE=127.0.0.1 KUMA_DP_SERVER_PORT="$CP_DP" \
		KUMA_MONITORING_ASSIGNMENT_SERVER_INTERFACE=127.0.0.1 KUMA_MONITORING_ASSIGNMENT_SERVER_PORT="$CP_MADS" \
		KUMA_DIAGNOSTICS_SERVER_INTERFACE=127.0.0.1 KUMA_DIAGNOSTICS_SERVER_PORT="$CP_DIAG" \
		"$KUMA_CP" run --log-level=warn
	CP_PID=$BG_PID
	for ((i = 0; i < 300; i++)); do
		alive "$CP_PID" || break
		curl -sf -o /dev/null "http://127.0.0.1:$CP_DIAG/ready" && { CP_OK=1; break; }
		sleep 0.1
	done
	# The metrics endpoint must be enabled for the scrape mode; kuma-dp records always.
	mesh='{"type":"Mesh","name":"default","metrics":{"enabledBackend":"prometheus-1","backends":[{"name":"prometheus-1","type":"prometheus","conf":{"port":'$DP_METRICS',"path":"/metrics","skipMTLS":true}}]}}'
	if ((CP_OK)) && ! curl -sf -o "$TMP/mesh-put.log" -X PUT -H 'Content-Type: application/json' \
		--data "$mesh" "http://127.0.0.1:$CP_API/meshes/default"; then
		echo "could not enable metrics on mesh default" >&2
		CP_OK=0
	fi
	if ((!CP_OK)); then
		log_tail kuma-cp
		echo "kuma-cp did not become ready; the kuma-dp rows are skipped" >&2
	fi
fi
# The meshes of the mesh paths, created before their dataplanes exist: `secure`
# is born with mTLS, so no switch (and no permissive window) applies to it.
# Both get their allow-all-<mesh> TrafficPermission from kuma-cp. No metrics
# backend: the two meshes differ in mTLS only.
declare -A MESH_FAILED=()
for p in mesh-plain mesh-mtls; do
	has_path "$p" && ((CP_OK)) || continue
	m=${MESH_OF[$p]}
	body='{"type":"Mesh","name":"'$m'"}'
	[[ $p == mesh-mtls ]] && body='{"type":"Mesh","name":"'$m'","mtls":{"enabledBackend":"ca-1","backends":[{"name":"ca-1","type":"builtin"}]}}'
	if ! curl -sS -f -o "$TMP/mesh-put-$m.log" -X PUT -H 'Content-Type: application/json' \
		--data "$body" "http://127.0.0.1:$CP_API/meshes/$m" 2>>"$TMP/mesh-put-$m.log"; then
		cat "$TMP/mesh-put-$m.log" >&2
		MESH_FAILED[$p]="could not create mesh $m"
		echo "${MESH_FAILED[$p]}; the $p rows are skipped" >&2
	fi
done

declare -A PROXY_PID=() PATH_FAILED=()

fail_path() { # PROTO PATH REASON
	echo "$2 ($1): $3" >&2
	PATH_FAILED[$2]=$3
	FAILURES=$((FAILURES + 1))
	emit "$(printf '{"kind":"failed","proto":"%s","path":"%s","reason":"%s"}' "$1" "$2" "${3//\"/\'}")"
}

start_haproxy() { # PROTO
	local proto=$1 port back mode=http h2=""
	port=$(port_of HAP "$proto") back=$(port_of BACK "$proto")
	[[ $proto == tcp ]] && mode=tcp
	[[ $proto == http2 || $proto == grpc ]] && h2=" proto h2" # h2c on both sides
	{
		echo "global"
		echo "    nbthread 1"
		echo "    maxconn 4096"
		echo "defaults"
		echo "    mode $mode"
		echo "    timeout connect 5s"
		echo "    timeout client 300s"
		echo "    timeout server 300s"
		[[ $mode == http ]] && echo "    timeout http-keep-alive 300s"
		echo "frontend bench"
		echo "    bind 127.0.0.1:$port$h2"
		echo "    default_backend upstream"
		echo "backend upstream"
		[[ $mode == http ]] && echo "    http-reuse always"
		echo "    server backend 127.0.0.1:$back$h2"
	} >"$TMP/haproxy-$proto.cfg"
	start_bg "haproxy-$proto" 1 haproxy -db -f "$TMP/haproxy-$proto.cfg"
	PROXY_PID[haproxy]=$BG_PID
	wait_ready "$proto" "127.0.0.1:$port" "$BG_PID" 10 || { log_tail "haproxy-$proto"; return 1; }
}

start_nginx() { # PROTO
	local proto=$1 dir=$TMP/nginx-$1
	mkdir -p "$dir"
	chmod 755 "$dir"
	{
		[[ $proto == tcp ]] && echo "load_module $NGINX_STREAM;"
		echo "worker_processes 1;"
		echo "daemon off;"
		echo "pid $dir/nginx.pid;"
		echo "error_log $dir/error.log warn;"
		echo "events { worker_connections 4096; }"
		if [[ $proto != tcp ]]; then
			# http2: h2c downstream (prior knowledge: "listen … http2" without
			# ssl); nginx 1.22 cannot speak HTTP/2 to an upstream, so it
			# proxies to the backend's HTTP/1.1 port (said under the table).
			# grpc: h2c on both sides (grpc_pass). keepalive_requests also
			# bounds the streams of one HTTP/2 connection.
			local listen="127.0.0.1:$NGX_HTTP" back=$BACK_HTTP
			local pass="proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";"
			[[ $proto == http2 ]] && listen="127.0.0.1:$NGX_H2C http2"
			[[ $proto == grpc ]] && listen="127.0.0.1:$NGX_GRPC http2" back=$BACK_GRPC pass="grpc_pass grpc://backend;"
			cat <<EOF
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    upstream backend {
        server 127.0.0.1:$back;
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }
    server {
        listen $listen;
        location / {
            $pass
        }
    }
}
EOF
		else
			cat <<EOF
stream {
    upstream backend { server 127.0.0.1:$BACK_TCP; }
    server {
        listen 127.0.0.1:$NGX_TCP;
        proxy_pass backend;
    }
}
EOF
		fi
	} >"$dir/nginx.conf"
	local port
	port=$(port_of NGX "$proto")
	start_bg "nginx-$proto" 1 nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log"
	PROXY_PID[nginx]=$BG_PID
	wait_ready "$proto" "127.0.0.1:$port" "$BG_PID" 10 || { log_tail "nginx-$proto"; cat "$dir/error.log" >&2 || true; return 1; }
}

wait_dp_server_ca() { # the dataplane server's CA, which kuma-cp writes on start, within 20 s
	local i
	for ((i = 0; i < 200; i++)); do
		[[ -s $CP_WORK/dp-server-ca.pem ]] && return 0
		sleep 0.1
	done
	echo "kuma-cp wrote no $CP_WORK/dp-server-ca.pem" >&2
	return 1
}

start_kuma_dp() { # PROTO [b]: kuma-dp, or with b kuma-dp-b (BENCH_KUMA_DP_B)
	local proto=$1 b=${2:-} back i name=bench addr=$DP_ADDR admin=$DP_ADMIN bin=$KUMA_DP
	[[ -n $b ]] && name=bench-b addr=$DP_B_ADDR admin=$DP_B_ADMIN bin=$BENCH_KUMA_DP_B
	back=$(port_of BACK "$proto")
	cat >"$TMP/dataplane-$name-$proto.yaml" <<EOF
type: Dataplane
mesh: default
name: $name
networking:
  address: $addr
  inbound:
  - port: $DP_INBOUND
    servicePort: $back
    serviceAddress: 127.0.0.1
    tags:
      kuma.io/service: bench
      kuma.io/protocol: $proto
EOF
	wait_dp_server_ca || return 1
	start_bg "kuma-dp$b-$proto" 1 "$bin" run --cp-address "https://127.0.0.1:$CP_DP" \
		--ca-cert-file "$CP_WORK/dp-server-ca.pem" --dataplane-file "$TMP/dataplane-$name-$proto.yaml" --admin-port "$admin"
	if [[ -n $b ]]; then
		PROXY_PID[kuma-dp-b]=$BG_PID
	else
		PROXY_PID[kuma-dp]=$BG_PID
		PROXY_PID[kuma-dp-scrape]=$BG_PID
	fi
	wait_ready "$proto" "$addr:$DP_INBOUND" "$BG_PID" 30 || { log_tail "kuma-dp$b-$proto"; return 1; }
}

# dp_stat ADMIN_PORT NAME: the value of one kuma-dp statistic (Envoy's /stats text
# form, "name: value"), or -1 when the admin API does not answer or has no such stat.
dp_stat() {
	local v
	v=$(curl -sf --max-time 2 "http://127.0.0.1:$1/stats" 2>/dev/null | awk -v n="$2" -F': ' '$1 == n { print $2; exit }') || true
	[[ $v =~ ^[0-9]+$ ]] && echo "$v" || echo -1
}

# tls_counts PROTO PATH: the TLS handshakes the client counted towards the
# server (cluster.<service>.ssl.handshake) and the server's inbound counted
# (cluster.localhost_<backend port>.ssl.handshake): "CLIENT SERVER".
tls_counts() {
	local back
	back=$(port_of BACK "$1")
	echo "$(dp_stat "$(mesh_port "$2" 5)" "cluster.bench-srv-${MESH_OF[$2]}.ssl.handshake")" \
		"$(dp_stat "$(mesh_port "$2" 4)" "cluster.localhost_$back.ssl.handshake")"
}

# emit_tls PROTO PATH WHEN [PLAIN_REFUSED]: the handshake counters as a record.
emit_tls() {
	local c
	read -r -a c <<<"$(tls_counts "$1" "$2")"
	emit "$(printf '{"kind":"tls","proto":"%s","path":"%s","when":"%s","client_handshakes":%d,"server_handshakes":%d,"plain_refused":%s}' \
		"$1" "$2" "$3" "${c[0]}" "${c[1]}" "${4:-null}")"
}

# start_mesh PROTO PATH: the server and the client dataplane of the path's
# mesh, both kuma-dp on CPU 1; ready when a request through the client's
# outbound reaches the backend. mesh-mtls is ready only once the hop is mTLS:
# the client and the server count TLS handshakes and the server's inbound
# refuses plain text; mesh-plain must count none. On failure MESH_ERR says why.
MESH_ERR=""
start_mesh() {
	local proto=$1 path=$2 back i side admin refused=false c=()
	MESH_ERR=""
	back=$(port_of BACK "$proto")
	local mesh=${MESH_OF[$path]} srv=${SRV_ADDR[$path]} cli=${CLI_ADDR[$path]}
	local out inbound
	out=127.0.0.1:$(mesh_port "$path" 3)
	inbound=$srv:$(mesh_port "$path" 1)
	cat >"$TMP/$path-srv-$proto.yaml" <<EOF
type: Dataplane
mesh: $mesh
name: bench-srv
networking:
  address: $srv
  inbound:
  - port: ${inbound##*:}
    servicePort: $back
    serviceAddress: 127.0.0.1
    tags:
      kuma.io/service: bench-srv-$mesh
      kuma.io/protocol: $proto
EOF
	# Validation wants an inbound on the client too: nothing calls it, and
	# nothing listens on its service port.
	cat >"$TMP/$path-cli-$proto.yaml" <<EOF
type: Dataplane
mesh: $mesh
name: bench-cli
networking:
  address: $cli
  inbound:
  - port: $(mesh_port "$path" 2)
    servicePort: $(mesh_port "$path" 9)
    serviceAddress: 127.0.0.1
    tags:
      kuma.io/service: bench-cli-$mesh
      kuma.io/protocol: $proto
  outbound:
  - port: ${out##*:}
    tags:
      kuma.io/service: bench-srv-$mesh
EOF
	wait_dp_server_ca || { MESH_ERR="kuma-cp wrote no $CP_WORK/dp-server-ca.pem"; return 1; }
	local pids=()
	for side in srv cli; do
		admin=4
		[[ $side == cli ]] && admin=5
		start_bg "$path-$side-$proto" 1 "$KUMA_DP" run --cp-address "https://127.0.0.1:$CP_DP" \
			--ca-cert-file "$CP_WORK/dp-server-ca.pem" --dataplane-file "$TMP/$path-$side-$proto.yaml" \
			--admin-port "$(mesh_port "$path" "$admin")"
		pids+=("$BG_PID")
		PROXY_PID[$path]="${pids[*]}"
	done
	if ! wait_ready "$proto" "$out" "${pids[1]}" 60 || ! alive "${pids[0]}"; then
		log_tail "$path-srv-$proto"
		log_tail "$path-cli-$proto"
		MESH_ERR="no request through $out (the client's outbound) reached the backend within 60 s"
		echo "$MESH_ERR" >&2
		return 1
	fi
	if [[ $path == mesh-plain ]]; then
		read -r -a c <<<"$(tls_counts "$proto" "$path")"
		emit_tls "$proto" "$path" before
		if ((c[0] > 0 || c[1] > 0)); then
			MESH_ERR="mesh-plain counted TLS handshakes (client ${c[0]}, server ${c[1]}): it is not plain text"
			echo "$MESH_ERR" >&2
			return 1
		fi
		return 0
	fi
	# mesh-mtls: a probe through the outbound (a new connection: a handshake
	# when mTLS is on), the counters, then plain text straight to the server's
	# inbound, which must be refused. A mesh born with mTLS has no switch
	# window, so this normally holds at the first try.
	for ((i = 0; i < 120; i++)); do
		"$BIN/loadgen" -probe -mode "$(lg_mode "$proto")" -addr "$out" 2>/dev/null || true
		read -r -a c <<<"$(tls_counts "$proto" "$path")"
		refused=false
		"$BIN/loadgen" -probe -mode "$(lg_mode "$proto")" -addr "$inbound" 2>/dev/null || refused=true
		if ((c[0] > 0 && c[1] > 0)) && [[ $refused == true ]]; then
			echo "  $path ($proto): mTLS verified after $((i / 2)) s: client ssl.handshake ${c[0]}, server ${c[1]}, plain text refused by the server's inbound"
			emit_tls "$proto" "$path" before true
			return 0
		fi
		sleep 0.5
	done
	emit_tls "$proto" "$path" before "$refused"
	MESH_ERR="the hop did not become mTLS within 60 s: client cluster.bench-srv-$mesh.ssl.handshake ${c[0]:-?}, server cluster.localhost_$back.ssl.handshake ${c[1]:-?} (-1: no such stat), plain text to $inbound refused: $refused"
	echo "$MESH_ERR" >&2
	log_tail "$path-cli-$proto"
	return 1
}

path_addr() { # PROTO PATH
	case $2 in
	direct) echo "127.0.0.1:$(port_of BACK "$1")" ;;
	haproxy) echo "127.0.0.1:$(port_of HAP "$1")" ;;
	nginx) echo "127.0.0.1:$(port_of NGX "$1")" ;;
	kuma-dp-b) echo "$DP_B_ADDR:$DP_INBOUND" ;;
	kuma-dp*) echo "$DP_ADDR:$DP_INBOUND" ;;
	mesh-*) echo "127.0.0.1:$(mesh_port "$2" 3)" ;; # the client's outbound
	esac
}

# PROXY_PID[PATH] is one process id, or several separated by spaces (the mesh
# paths: server and client kuma-dp); all of them are charged to the path.
proxy_pids() { # PATH: the processes whose CPU is charged to the proxy
	local pid
	for pid in ${PROXY_PID[$1]:-}; do
		printf '%s ' "$pid" $(children "$pid")
	done
}
proxy_rss_pids() { # PATH: nginx counts its worker (as the anchors do), others everything
	local pid
	if [[ $1 != nginx ]]; then
		proxy_pids "$1"
		return 0
	fi
	for pid in ${PROXY_PID[$1]:-}; do
		printf '%s ' $(children "$pid")
	done
}

wrk_json() { # FILE: wrk's text output as a loadgen-like JSON object
	awk '
	/ requests in / { req = $1; d = $4; sub(/,$/, "", d)
		if (d ~ /ms$/) { sub(/ms$/, "", d); d /= 1000 } else if (d ~ /m$/) { sub(/m$/, "", d); d *= 60 } else { sub(/s$/, "", d) } }
	/Socket errors:/ { gsub(/,/, ""); err += $4 + $6 + $8 + $10 }
	/Non-2xx or 3xx responses:/ { err += $NF }
	/^Requests\/sec:/ { rps = $2 }
	END {
		if (req == "" || rps == "") { print "null"; exit }
		printf "{\"requests\":%d,\"requests_total\":%d,\"duration_s\":%s,\"rate_achieved\":%s,\"errors\":%d", req, req, d, rps, err
		if (err > 0) printf ",\"error\":\"wrk: socket errors or non-2xx responses\""
		print "}"
	}' "$1"
}

# measure PROTO ROUND PATH: (a) open loop, (b) saturation with proxy CPU, (c) RSS.
measure() {
	local proto=$1 round=$2 path=$3 addr out rc scraper="" pids t0 t1 b0 b1 rss anon sat
	addr=$(path_addr "$proto" "$path")
	local tag
	tag=$(printf '{"proto":"%s","round":%d,"path":"%s"' "$proto" "$round" "$path")
	if [[ $path == kuma-dp-scrape ]]; then
		start_bg scraper 0 "$BIN/loadgen" -scrape "http://$DP_ADDR:$DP_METRICS/metrics" -every 1s -json \
			-duration "$((SAT_SECONDS + 180))s" # stopped by SIGTERM after the runs; bounded anyway
		scraper=$BG_PID
	fi

	rc=0
	out=$(timeout --foreground -k 5 120 taskset -c 0 "$BIN/loadgen" -mode "$(lg_mode "$proto")" -addr "$addr" -conns "$CONNS" \
		-streams "$H2_STREAMS_OPEN" -rate "$RATE" -n "$REQUESTS" -warmup "$WARMUP" -json 2>>"$TMP/loadgen.err") || rc=$?
	emit "$tag,\"kind\":\"openloop\",\"rc\":$rc,\"result\":$(or_null "$out")}"
	((rc == 0)) || { FAILURES=$((FAILURES + 1)); echo "  open loop failed: ${out:-exit $rc}" >&2; }
	local p50 p99
	p50=$(jfield "$out" p50_us) p99=$(jfield "$out" p99_us)

	sleep 0.2
	read -r -a pids <<<"$(proxy_pids "$path")"
	t0=$(proc_ticks "${pids[@]+"${pids[@]}"}") b0=$(proc_ticks "$BACKEND_PID")
	local c0 c1
	read -r -a c0 <<<"$(cpu1_ticks)"
	local perf_pid="" syscalls=null
	if ((SYSCALLS)); then
		perf stat -a -C 1 -e raw_syscalls:sys_enter -x, -o "$TMP/perf.out" &
		perf_pid=$!
	fi
	rc=0
	if [[ $proto == http ]]; then
		timeout --foreground -k 5 $((SAT_SECONDS + 30)) taskset -c 0 \
			wrk -t1 -c32 -d"${SAT_SECONDS}s" --timeout 2s "http://$addr/" >"$TMP/wrk.out" 2>&1 || rc=$?
		sat=$(wrk_json "$TMP/wrk.out")
		[[ $sat != null && $sat != *'"error"'* ]] || ((rc)) || rc=1
		((rc == 0)) || cat "$TMP/wrk.out" >&2
		local tool=wrk
	else
		# tcp: 32 connections; http2, grpc: 32 streams, 8 per connection.
		sat=$(timeout --foreground -k 5 $((SAT_SECONDS + 30)) taskset -c 0 "$BIN/loadgen" -mode "$(lg_mode "$proto")" -addr "$addr" \
			-rate 0 -conns 32 -streams "$H2_STREAMS_SAT" -warmup 500ms -duration "${SAT_SECONDS}s" -json 2>>"$TMP/loadgen.err") || rc=$?
		local tool=loadgen
	fi
	t1=$(proc_ticks "${pids[@]+"${pids[@]}"}") b1=$(proc_ticks "$BACKEND_PID")
	read -r -a c1 <<<"$(cpu1_ticks)"
	if [[ -n $perf_pid ]]; then
		kill -INT "$perf_pid" 2>/dev/null || true
		wait "$perf_pid" 2>/dev/null || true
		syscalls=$(awk -F, '$3 == "raw_syscalls:sys_enter" && $1 ~ /^[0-9]+$/ { print $1 }' "$TMP/perf.out")
		syscalls=${syscalls:-null}
	fi
	read -r -a pids <<<"$(proxy_rss_pids "$path")"
	read -r rss anon <<<"$(rss_kb "${pids[@]+"${pids[@]}"}")"
	emit "$tag,\"kind\":\"saturation\",\"rc\":$rc,\"tool\":\"$tool\",\"result\":$(or_null "$sat"),\"cpu_ticks\":$((t1 - t0)),\"backend_cpu_ticks\":$((b1 - b0)),\"clk_tck\":$CLK_TCK,\"cpu1_busy_ticks\":$((c1[0] - c0[0])),\"cpu1_all_ticks\":$((c1[1] - c0[1])),\"rss_kb\":$rss,\"anon_kb\":$anon,\"syscalls\":$syscalls}"
	((rc == 0)) || { FAILURES=$((FAILURES + 1)); echo "  saturation failed: ${sat:-exit $rc}" >&2; }

	local line
	line=$(printf '%-5s %d/%d %-15s p50 %7s µs  p99 %7s µs | %8s req/s' "$proto" "$round" "$ROUNDS" "$path" "$p50" "$p99" "$(jfield "$sat" rate_achieved | cut -d. -f1)")
	if [[ $path != direct ]]; then
		line+=$(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$(jfield "$sat" requests_total)" -v r="$rss" \
			'BEGIN { if (n + 0 > 0) printf "  %5.1f µs CPU/req", t / hz * 1e6 / n; printf "  RSS %.1f MB", r / 1024 }')
	fi
	if [[ $syscalls != null ]]; then
		line+=$(awk -v c="$syscalls" -v n="$(jfield "$sat" requests_total)" 'BEGIN { if (n + 0 > 0) printf "  %.2f syscalls/req", c / n }')
	fi
	echo "$line"

	if [[ -n $scraper ]]; then
		stop_pid "$scraper"
		out=$(cat "$TMP/scraper.log")
		emit "$tag,\"kind\":\"scrape\",\"rc\":$STOP_RC,\"result\":$(or_null "$out")}"
		((STOP_RC == 0)) || { FAILURES=$((FAILURES + 1)); echo "  scrapes failed: $out" >&2; }
	fi
	sleep 0.2
}

metrics_ready() { # kuma-dp's metrics endpoint answers 200 within 10 s
	local i
	for ((i = 0; i < 20; i++)); do
		"$BIN/loadgen" -scrape "http://$DP_ADDR:$DP_METRICS/metrics" -duration 1ms >"$TMP/scrape-probe.log" 2>&1 && return 0
		sleep 0.5
	done
	return 1
}

run_phase() { # PROTO
	local proto=$1 path r k
	PROXY_PID=() PATH_FAILED=()
	echo
	echo "== $proto: starting the proxies on CPU 1"
	for path in "${PATHS[@]}"; do
		case $path in
		haproxy) start_haproxy "$proto" || fail_path "$proto" haproxy "haproxy did not start or did not forward" ;;
		nginx) start_nginx "$proto" || fail_path "$proto" nginx "nginx did not start or did not forward" ;;
		kuma-dp | kuma-dp-scrape)
			if ((!CP_OK)); then
				fail_path "$proto" "$path" "kuma-cp did not start"
			elif [[ -z ${PROXY_PID[kuma-dp]:-} ]]; then
				start_kuma_dp "$proto" || fail_path "$proto" "$path" "kuma-dp did not start or did not forward to the backend"
			elif [[ -n ${PATH_FAILED[kuma-dp]:-} ]]; then
				fail_path "$proto" "$path" "${PATH_FAILED[kuma-dp]}"
			fi
			if [[ $path == kuma-dp-scrape && -z ${PATH_FAILED[$path]:-} ]] && ! metrics_ready; then
				cat "$TMP/scrape-probe.log" >&2
				fail_path "$proto" "$path" "the metrics endpoint http://$DP_ADDR:$DP_METRICS/metrics does not answer 200"
			fi
			;;
		kuma-dp-b)
			if ((!CP_OK)); then
				fail_path "$proto" "$path" "kuma-cp did not start"
			else
				start_kuma_dp "$proto" -b || fail_path "$proto" "$path" "kuma-dp-b did not start or did not forward to the backend"
			fi
			;;
		mesh-plain | mesh-mtls)
			if ((!CP_OK)); then
				fail_path "$proto" "$path" "kuma-cp did not start"
			elif [[ -n ${MESH_FAILED[$path]:-} ]]; then
				fail_path "$proto" "$path" "${MESH_FAILED[$path]}"
			elif ! start_mesh "$proto" "$path"; then
				fail_path "$proto" "$path" "${MESH_ERR:-the kuma-dp pair did not start}"
			fi
			;;
		esac
	done
	echo "== $proto: $ROUNDS rounds"
	for ((r = 1; r <= ROUNDS; r++)); do
		# Rotate the order every round so no path always runs first or last.
		for ((k = 0; k < ${#PATHS[@]}; k++)); do
			path=${PATHS[$(((k + r - 1) % ${#PATHS[@]}))]}
			[[ -z ${PATH_FAILED[$path]:-} ]] || continue
			measure "$proto" "$r" "$path"
		done
	done
	# The handshakes counted by the end of the rounds (mesh-mtls: one per new connection).
	for path in mesh-plain mesh-mtls; do
		[[ -n ${PROXY_PID[$path]:-} && -z ${PATH_FAILED[$path]:-} ]] && emit_tls "$proto" "$path" after
	done
	local pid dp stopping=()
	for path in haproxy nginx kuma-dp kuma-dp-b mesh-plain mesh-mtls; do
		for pid in ${PROXY_PID[$path]:-}; do
			kill -TERM "$pid" 2>/dev/null || true # all first, so that their shutdowns overlap
			stopping+=("$pid")
		done
	done
	for pid in "${stopping[@]+"${stopping[@]}"}"; do stop_pid "$pid"; done
	if [[ -n ${PROXY_PID[kuma-dp]:-} ]]; then
		curl -s -o /dev/null -X DELETE "http://127.0.0.1:$CP_API/meshes/default/dataplanes/bench" || true
	fi
	for path in mesh-plain mesh-mtls; do
		[[ -n ${PROXY_PID[$path]:-} ]] || continue
		for dp in bench-srv bench-cli; do
			curl -s -o /dev/null -X DELETE "http://127.0.0.1:$CP_API/meshes/${MESH_OF[$path]}/dataplanes/$dp" || true
		done
	done
	PROXY_PID=()
}

for proto in "${PROTO_LIST[@]}"; do
	run_phase "$proto"
done

echo
"$BIN/report" "$OUT" | tee "$RESULTS/$STAMP.md"
echo "raw results: $OUT; table: $RESULTS/$STAMP.md"
if ((FAILURES)); then
	echo "$FAILURES failure(s): see above" >&2
	exit 1
fi
