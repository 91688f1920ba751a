#!/usr/bin/env bash
# bench/acme/split.sh: where the machine's CPU goes per ACME order. The project's generator
# runs against a fresh agentca for SECONDS (after 200 warm-up orders) and the line printed
# gives, per completed order, the CPU time of the daemon, of the generator and of
# pebble-challtestsrv (the validator's DNS server), and the whole machine's busy time from
# /proc/stat (every process and the kernel), with the share of the run the two cores were
# idle. With the three processes' figures close to the machine's, nothing else took the
# cores; idle_share near 0 means the cores were the limit.
#
#   bench/acme/split.sh BUILD_DIR [SECONDS] [CONCURRENCY]
#
# Validation is real, as in bench/acme/run.sh. Everything listens on 127.0.0.1 only; every
# process started here is stopped and every temporary file removed on exit. Needs pebble
# (for pebble-challtestsrv), ss (iproute2) and curl.
set -euo pipefail
build=${1:?usage: bench/acme/split.sh BUILD_DIR [SECONDS] [CONCURRENCY]}
secs=${2:-10}
conc=${3:-8}
gen=$build/bench/acme/bench_acme

BENCH_NAME=acme-split
. "$(dirname "$0")/../lib.sh"
bench_need_tools "pebble iproute2 curl time" pebble-challtestsrv ss curl /usr/bin/time
bench_need_built "$build/agentca" "$gen"
bench_begin

hport=$(bench_free_port)
bench_challtestsrv
dport=$dns_port
cts=$cts_pid
export AGENTCA_PASSWORD=bench-acme-passphrase
"$build/agentca" init --dir "$work/ca" --name Bench --trust-domain bench.internal >/dev/null
echo '{"rate_limits": {"address_per_second": 0, "identity_per_second": 0}}' >"$work/serve.json"
bench_agentca_serve "$build/agentca" "$work/ca" "$work/serve.log" --config "$work/serve.json" \
	--acme-resolver "127.0.0.1:$dport" --acme-http-port "$hport"
dir="https://127.0.0.1:$daemon_port/acme/directory"
"$gen" --target warmup --directory "$dir" --cacert "$work/ca/root.pem" --http-port "$hport" \
	--concurrency "$conc" --orders 200 --domain bench.internal >/dev/null

# busy_ticks: every CPU's non-idle time so far (user nice system irq softirq steal), in ticks.
busy_ticks() {
	awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
}
idle_ticks() {
	awk '$1 == "cpu" { print $5 + $6 }' /proc/stat
}
d0=$(bench_cpu_ticks "$daemon")
c0=$(bench_cpu_ticks "$cts")
b0=$(busy_ticks)
i0=$(idle_ticks)
# The generator's own CPU time from time(1) (the kernel's account of the reaped process).
/usr/bin/time -f "%U %S" -o "$work/gen.time" "$gen" --target agentca --directory "$dir" \
	--cacert "$work/ca/root.pem" --http-port "$hport" --concurrency "$conc" --seconds "$secs" \
	--domain bench.internal >"$work/gen.out" || bench_fail "the generator failed: $(cat "$work/gen.out")"
g=$(awk -v hz="$(getconf CLK_TCK)" '{ printf "%.0f", ($1 + $2) * hz }' "$work/gen.time")
d1=$(bench_cpu_ticks "$daemon")
c1=$(bench_cpu_ticks "$cts")
b1=$(busy_ticks)
i1=$(idle_ticks)
line=$(cat "$work/gen.out")
echo "$line"
orders=$(echo "$line" | sed -E 's/.* orders=([0-9]+).*/\1/')
awk -v d=$((d1 - d0)) -v g="$g" -v c=$((c1 - c0)) -v b=$((b1 - b0)) -v i=$((i1 - i0)) \
	-v n="$orders" -v hz="$(getconf CLK_TCK)" 'BEGIN {
	if (n == 0) { print "no orders completed"; exit 1 }
	ms = 1000 / hz / n
	printf "per order: daemon %.2f ms, generator %.2f ms, challtestsrv %.3f ms, machine busy %.2f ms; idle share %.2f\n",
		d * ms, g * ms, c * ms, b * ms, i / (i + b) }'
