#!/usr/bin/env bash
# bench/acme/compare.sh: the project's ACME generator against two builds of agentca, in
# turn, so that a change is measured against its base on the same shared machine at the
# same time. Each round starts a fresh CA and daemon for each build (A first, then B),
# runs bench_acme (the one of BUILD_B) for SECONDS, and prints the generator's line and the
# daemon's CPU time per order (utime + stime from /proc/PID/stat over the run).
#
#   bench/acme/compare.sh BUILD_A BUILD_B [ROUNDS] [SECONDS] [CONCURRENCY]
#
# Validation is real, as in bench/acme/run.sh: the daemon's resolver is
# pebble-challtestsrv's DNS (every name is 127.0.0.1) and its http-01 port is the
# generator's responder. Everything listens on 127.0.0.1 only; every process started here
# is stopped and every temporary file removed on exit. Needs pebble (for
# pebble-challtestsrv), ss (iproute2) and curl.
set -euo pipefail
build_a=${1:?usage: bench/acme/compare.sh BUILD_A BUILD_B [ROUNDS] [SECONDS] [CONCURRENCY]}
build_b=${2:?usage: bench/acme/compare.sh BUILD_A BUILD_B [ROUNDS] [SECONDS] [CONCURRENCY]}
rounds=${3:-3}
secs=${4:-10}
conc=${5:-8}
gen=$build_b/bench/acme/bench_acme

for tool in pebble-challtestsrv ss curl; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "bench/acme/compare: $tool is not installed; install with: apt-get install -y pebble iproute2 curl" >&2
		exit 1
	fi
done
for f in "$build_a/agentca" "$build_b/agentca" "$gen"; do
	[ -x "$f" ] || { echo "bench/acme/compare: $f not built" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/agentca-bench-acme-compare.XXXXXX")
pids=""
cleanup() {
	for pid in $pids; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in $pids; do
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$work"
}
trap cleanup EXIT

# As in run.sh: a port no socket uses, below the kernel's ephemeral range.
ephemeral_low=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
free_port() {
	local port
	while :; do
		port=$((10000 + RANDOM % (ephemeral_low - 10000)))
		if ! ss -Htuan | awk '{print $5}' | grep ":$port\$" >/dev/null; then
			echo "$port"
			return
		fi
	done
}

wait_for() {
	for _ in $(seq 100); do
		grep -q "$2" "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	cat "$1" >&2
	echo "bench/acme/compare: $3 never became ready" >&2
	exit 1
}

cpu_ticks() {
	sed -E 's/^.*\) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

dport=$(free_port)
cmport=$(free_port)
hport=$(free_port)
pebble-challtestsrv -http01 "" -https01 "" -tlsalpn01 "" -dns01 "127.0.0.1:$dport" \
	-management "127.0.0.1:$cmport" -defaultIPv6 "" >"$work/cts.log" 2>&1 &
pids="$pids $!"
wait_for "$work/cts.log" "Starting management server" "pebble-challtestsrv"
export AGENTCA_PASSWORD=bench-acme-passphrase
echo '{"rate_limits": {"address_per_second": 0, "identity_per_second": 0}}' >"$work/serve.json"

# one_run LABEL BUILD: a fresh CA and daemon of BUILD, the generator against it, stopped.
one_run() {
	local label=$1 build=$2 dir pid port line t0 t1 orders status=0
	dir=$(mktemp -d "$work/ca.XXXXXX")
	"$build/agentca" init --dir "$dir/ca" --name Bench --trust-domain bench.internal >/dev/null
	"$build/agentca" serve --dir "$dir/ca" --listen 127.0.0.1:0 --config "$work/serve.json" \
		--acme-resolver "127.0.0.1:$dport" --acme-http-port "$hport" 2>"$dir/serve.log" &
	pid=$!
	pids="$pids $pid"
	wait_for "$dir/serve.log" '"event":"ca_ready"' "agentca serve ($label)"
	port=$(grep '"event":"listening"' "$dir/serve.log" | tail -n1 | sed -E 's/.*\(port ([0-9]+)\).*/\1/')
	t0=$(cpu_ticks "$pid")
	line=$("$gen" --target "$label" --directory "https://127.0.0.1:$port/acme/directory" \
		--cacert "$dir/ca/root.pem" --http-port "$hport" --concurrency "$conc" \
		--seconds "$secs" --domain bench.internal) || status=1
	t1=$(cpu_ticks "$pid")
	kill -TERM "$pid"
	wait "$pid" 2>/dev/null || true
	pids=${pids/ $pid/} # stopped: cleanup must not signal a reused pid
	orders=$(echo "$line" | sed -nE 's/.* orders=([0-9]+).*/\1/p')
	awk -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v n="${orders:-0}" -v line="$line" 'BEGIN {
		if (n > 0) printf "%s cpu_per_order_ms=%.2f\n", line, t * 1000 / hz / n
		else printf "%s cpu_per_order_ms=n/a\n", line }'
	return $status
}

status=0
for round in $(seq "$rounds"); do
	one_run A "$build_a" || status=1
	one_run B "$build_b" || status=1
done
exit $status
