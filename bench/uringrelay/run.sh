#!/usr/bin/env bash
# bench/uringrelay/run.sh: TCP echo at saturation through haproxy and through
# relay.c (io_uring, three ring set-ups), rounds interleaved; the proxy's CPU
# per request from /proc/PID/stat. See README.md. Needs haproxy, gcc and
# liburing-dev; bench/bin/backend and bench/bin/loadgen (bench/proxies.sh
# builds them). Proxies on CPU 1, backend and load on CPU 0, loopback only,
# ports BENCH_PORT_BASE (default 19000) + 1, 2, 10-13.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-3} SECONDS_PER_RUN=${SECONDS_PER_RUN:-6} BASE=${BENCH_PORT_BASE:-19000}
[[ -e /usr/include/liburing.h ]] || { echo "needs liburing: apt-get install -y liburing-dev" >&2; exit 1; }
[[ -x bench/bin/backend && -x bench/bin/loadgen ]] || CGO_ENABLED=0 go build -o bench/bin/ ./bench/backend ./bench/loadgen
TMP=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"' EXIT
gcc -O2 -Wall -o "$TMP/relay" bench/uringrelay/relay.c -luring
cat >"$TMP/haproxy.cfg" <<CFG
global
    nbthread 1
    maxconn 4096
defaults
    mode tcp
    timeout connect 5s
    timeout client 300s
    timeout server 300s
frontend bench
    bind 127.0.0.1:$((BASE + 11))
    default_backend upstream
backend upstream
    server backend 127.0.0.1:$((BASE + 2))
CFG
taskset -c 0 bench/bin/backend -http "127.0.0.1:$((BASE + 1))" -tcp "127.0.0.1:$((BASE + 2))" >"$TMP/backend.log" 2>&1 & PIDS+=($!)
taskset -c 1 haproxy -db -f "$TMP/haproxy.cfg" >"$TMP/haproxy.log" 2>&1 & HAP=$!; PIDS+=($HAP)
taskset -c 1 "$TMP/relay" $((BASE + 10)) $((BASE + 2)) 2>"$TMP/relay.log" & UR=$!; PIDS+=($UR)
RELAY_COOP=1 taskset -c 1 "$TMP/relay" $((BASE + 12)) $((BASE + 2)) 2>"$TMP/relay-coop.log" & UC=$!; PIDS+=($UC)
RELAY_IPI=1 taskset -c 1 "$TMP/relay" $((BASE + 13)) $((BASE + 2)) 2>"$TMP/relay-ipi.log" & UI=$!; PIDS+=($UI)
for port in $((BASE + 11)) $((BASE + 10)) $((BASE + 12)) $((BASE + 13)); do
	for ((i = 0; i < 50; i++)); do
		bench/bin/loadgen -mode tcp -addr "127.0.0.1:$port" -probe >/dev/null 2>&1 && break
		sleep 0.1
	done
	bench/bin/loadgen -mode tcp -addr "127.0.0.1:$port" -probe >/dev/null || { echo "nothing answers on port $port" >&2; cat "$TMP"/*.log >&2; exit 1; }
done
ticks() { local s; s=$(cat "/proc/$1/stat"); read -r -a f <<<"${s##*) }"; echo $((f[11] + f[12])); }
printf '%-13s %5s %10s %14s\n' path round 'req/s' 'CPU µs/req'
for ((r = 1; r <= ROUNDS; r++)); do
	for w in "haproxy $((BASE + 11)) $HAP" "io_uring $((BASE + 10)) $UR" "io_uring-coop $((BASE + 12)) $UC" "io_uring-ipi $((BASE + 13)) $UI"; do
		read -r name port pid <<<"$w"
		t0=$(ticks "$pid")
		out=$(taskset -c 0 bench/bin/loadgen -mode tcp -addr "127.0.0.1:$port" -rate 0 -conns 32 -warmup 0s -duration "${SECONDS_PER_RUN}s" -json)
		t1=$(ticks "$pid")
		n=$(grep -o '"requests_total":[0-9]*' <<<"$out" | cut -d: -f2)
		awk -v n="$n" -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v s="$SECONDS_PER_RUN" -v name="$name" -v r="$r" \
			'BEGIN { printf "%-13s %5d %10.0f %14.1f\n", name, r, n / s, t / hz * 1e6 / n }'
	done
done
