#!/usr/bin/env bash
# bench/acme/callgrind.sh: the daemon's instructions per complete ACME order, counted by
# callgrind (deterministic, so it holds on a busy machine where rates and CPU times do not).
#
#   bench/acme/callgrind.sh BUILD [ORDERS] [CONCURRENCY] [OUTDIR]
#
# Starts a fresh CA and `agentca serve` of BUILD under valgrind --tool=callgrind, waits for
# it, lets the generator (BUILD/bench/acme/bench_acme) make its account and one warm-up
# order, zeroes the counters (callgrind_control -z), runs ORDERS orders (default 200,
# CONCURRENCY 4 workers), dumps the counters (callgrind_control -d) and prints the total
# instructions (Ir) of every thread divided by ORDERS. The dump stays in OUTDIR (default: a
# temporary directory, removed on exit) for callgrind_annotate. Validation is real, as in
# run.sh (pebble-challtestsrv's DNS, the generator's http-01 responder). Everything listens
# on 127.0.0.1 only; every process started here is stopped on exit.
set -euo pipefail
build=${1:?usage: bench/acme/callgrind.sh BUILD [ORDERS] [CONCURRENCY] [OUTDIR]}
orders=${2:-200}
conc=${3:-4}
outdir=${4:-}
gen=$build/bench/acme/bench_acme

BENCH_NAME=acme-callgrind
. "$(dirname "$0")/../lib.sh"
bench_need_tools "valgrind pebble iproute2" valgrind callgrind_control pebble-challtestsrv ss
bench_need_built "$build/agentca" "$gen"
bench_begin
[ -n "$outdir" ] || outdir=$work/out
mkdir -p "$outdir"

hport=$(bench_free_port)
bench_challtestsrv
dport=$dns_port
export AGENTCA_PASSWORD=bench-acme-passphrase
echo '{"rate_limits": {"address_per_second": 0, "identity_per_second": 0}}' >"$work/serve.json"
"$build/agentca" init --dir "$work/ca" --name Bench --trust-domain bench.internal >/dev/null
bench_spawn valgrind --tool=callgrind --callgrind-out-file="$outdir/callgrind.out.%p" \
	"$build/agentca" serve --dir "$work/ca" --listen 127.0.0.1:0 --config "$work/serve.json" \
	--acme-resolver "127.0.0.1:$dport" --acme-http-port "$hport" 2>"$work/serve.log"
pid=$spawned
bench_wait_for "$work/serve.log" '"event":"ca_ready"' "agentca serve under callgrind" 1200
port=$(bench_log_port "$work/serve.log" listening)
run_gen() {
	"$gen" --target agentca --directory "https://127.0.0.1:$port/acme/directory" \
		--cacert "$work/ca/root.pem" --http-port "$hport" --concurrency "$1" \
		--orders "$2" --seconds 0 --domain bench.internal
}
run_gen 1 1 >/dev/null
callgrind_control -z "$pid" >/dev/null 2>&1
line=$(run_gen "$conc" "$orders")
echo "$line"
callgrind_control -d "$pid" >/dev/null 2>&1
done_orders=$(echo "$line" | sed -nE 's/.* orders=([0-9]+).*/\1/p')
# The first dump (callgrind_control -z zeroes without dumping): its "summary:" or
# "totals:" line, all threads together.
total=$(sed -nE 's/^(summary|totals): ([0-9]+).*/\2/p' "$outdir/callgrind.out.$pid.1" | head -n1)
# The main thread's once-a-second duties (scheduler_tick: bundle, CRL, rotation checks)
# cost by the second, not by the order; under callgrind a run takes 15-30 s, so they are
# shown apart and left out of the second figure.
duties=$(callgrind_annotate --inclusive=yes "$outdir/callgrind.out.$pid.1" 2>/dev/null |
	awk '/:run_duties /{ gsub(",", "", $1); print $1 }' || true)
awk -v t="$total" -v d="${duties:-0}" -v n="${done_orders:-0}" 'BEGIN {
	if (n > 0) {
		printf "daemon instructions per order: %.0f (%.0f Ir for %d orders, callgrind)\n", t / n, t, n
		printf "daemon instructions per order without the once-a-second duties: %.0f (%.0f Ir in run_duties left out)\n", (t - d) / n, d
	} else print "daemon instructions per order: n/a" }'
