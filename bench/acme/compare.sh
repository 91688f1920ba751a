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

BENCH_NAME=acme-compare
. "$(dirname "$0")/../lib.sh"
bench_need_tools "pebble iproute2 curl" pebble-challtestsrv ss curl
bench_need_built "$build_a/agentca" "$build_b/agentca" "$gen"
bench_begin

hport=$(bench_free_port)
bench_challtestsrv
dport=$dns_port
export AGENTCA_PASSWORD=bench-acme-passphrase
echo '{"rate_limits": {"address_per_second": 0, "identity_per_second": 0}}' >"$work/serve.json"

# one_run LABEL BUILD: a fresh CA and daemon of BUILD, the generator against it, stopped.
one_run() {
	local label=$1 build=$2 dir line t0 t1 orders status=0
	dir=$(mktemp -d "$work/ca.XXXXXX")
	"$build/agentca" init --dir "$dir/ca" --name Bench --trust-domain bench.internal >/dev/null
	bench_agentca_serve "$build/agentca" "$dir/ca" "$dir/serve.log" --config "$work/serve.json" \
		--acme-resolver "127.0.0.1:$dport" --acme-http-port "$hport"
	t0=$(bench_cpu_ticks "$daemon")
	line=$("$gen" --target "$label" --directory "https://127.0.0.1:$daemon_port/acme/directory" \
		--cacert "$dir/ca/root.pem" --http-port "$hport" --concurrency "$conc" \
		--seconds "$secs" --domain bench.internal) || status=1
	t1=$(bench_cpu_ticks "$daemon")
	bench_stop "$daemon"
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
