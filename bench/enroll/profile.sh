#!/usr/bin/env bash
# bench/enroll/profile.sh: where the daemon's CPU goes per enrollment. Serves a fresh CA
# (rate limits off, as in run.sh) and drives REQUESTS enrollments through it with
# bench_enroll, profiled one of two ways:
#
#   bench/enroll/profile.sh BUILD_DIR callgrind [REQUESTS] [CONNECTIONS] [OUT_DIR]
#       the daemon under valgrind --tool=callgrind, collecting only while the load runs
#       (not start-up): prints the instructions per enrollment and the top functions
#       (inclusive and self) per enrollment; keeps callgrind.out in OUT_DIR if given.
#   bench/enroll/profile.sh BUILD_DIR perf [REQUESTS] [CONNECTIONS] [OUT_DIR]
#       the daemon at full speed with `perf record -g` attached while the load runs: prints the samples by object (the kernel's share) and the top
#       symbols; keeps perf.data in OUT_DIR if given. (The daemon's CPU per enrollment is
#       run.sh's server_cpu_us_per_request.)
#
# Everything listens on 127.0.0.1 only; every process started here is stopped and the
# scratch directory removed on exit. Needs valgrind (callgrind) or perf.
set -euo pipefail
build=${1:?usage: profile.sh BUILD_DIR callgrind|perf [REQUESTS] [CONNECTIONS] [OUT_DIR]}
mode=${2:?usage: profile.sh BUILD_DIR callgrind|perf [REQUESTS] [CONNECTIONS] [OUT_DIR]}
requests=${3:-2000}
conns=${4:-8}
out=${5:-}
agentca=$(realpath "$build/agentca")
gen=$build/bench/enroll/bench_enroll

BENCH_NAME=enroll-profile
. "$(dirname "$0")/../lib.sh"
bench_need_built "$agentca" "$gen"
case $mode in
callgrind) bench_need_tools valgrind valgrind callgrind_control callgrind_annotate ;;
perf) bench_need_tools linux-perf perf ;;
*) bench_fail "mode is callgrind or perf, not $mode" ;;
esac
bench_begin

export AGENTCA_PASSWORD=bench-enroll-passphrase
"$agentca" init --dir "$work/ca" --name Bench --trust-domain bench.internal >/dev/null
echo '{"rate_limits": {"address_per_second": 0, "identity_per_second": 0}}' >"$work/serve.json"
log=$work/serve.log
if [ "$mode" = callgrind ]; then
	bench_spawn valgrind --tool=callgrind --instr-atstart=no \
		--callgrind-out-file="$work/callgrind.out" \
		"$agentca" serve --dir "$work/ca" --listen 127.0.0.1:0 --config "$work/serve.json" 2>"$log"
else
	bench_spawn "$agentca" serve --dir "$work/ca" --listen 127.0.0.1:0 \
		--config "$work/serve.json" 2>"$log"
fi
daemon=$spawned
# Under valgrind start-up takes far longer than the default 10 s.
bench_wait_for "$log" '"event":"ca_ready"' "agentca serve" 600
port=$(bench_log_port "$log" listening)
[ -n "$port" ] || { cat "$log" >&2; bench_fail "agentca serve names no port"; }

# The generator mints every token and opens its connections before it starts the clock;
# warm up with a few requests so first-use set-up (per-thread contexts) is not counted.
"$gen" --target agentca --url "https://127.0.0.1:$port" --ca-dir "$work/ca" \
	--connections "$conns" --requests $((conns * 4)) >/dev/null
if [ "$mode" = callgrind ]; then
	callgrind_control -i on "$daemon" >/dev/null
	line=$("$gen" --target agentca --url "https://127.0.0.1:$port" --ca-dir "$work/ca" \
		--connections "$conns" --requests "$requests")
	callgrind_control -i off "$daemon" >/dev/null
	callgrind_control -d "$daemon" >/dev/null
	echo "$line"
	ok=$(echo "$line" | sed -E 's/.* ok=([0-9]+).*/\1/')
	dump=$(ls -t "$work"/callgrind.out.* | head -n1)
	[ -n "$out" ] && cp "$dump" "$out/callgrind.out"
	set +o pipefail # head and awk's exit close the pipe early
	total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')
	awk -v t="$total" -v n="$ok" 'BEGIN { printf "instructions_per_enrollment=%.0f (total %s over %d)\n", t / n, t, n }'
	echo "--- inclusive, per enrollment"
	callgrind_annotate --inclusive=yes "$dump" 2>/dev/null |
		awk -v n="$ok" '/^[ 0-9,]+ \(/ { v = $1; gsub(",", "", v); $1 = ""; printf "%10.0f %s\n", v / n, $0 }' | head -n 60
	echo "--- self, per enrollment"
	callgrind_annotate "$dump" 2>/dev/null |
		awk -v n="$ok" '/^[ 0-9,]+ \(/ { v = $1; gsub(",", "", v); $1 = ""; printf "%10.0f %s\n", v / n, $0 }' | head -n 60
else
	# Recorded from before the generator starts: it mints its tokens in its own process while
	# the daemon idles, so the daemon's samples are the load's.
	perf record -q -g -o "$work/perf.data" -p "$daemon" 2>"$work/perf.log" &
	perfpid=$!
	bench_track "$perfpid"
	sleep 1
	"$gen" --target agentca --url "https://127.0.0.1:$port" --ca-dir "$work/ca" \
		--connections "$conns" --requests "$requests" >"$work/line" || true
	kill -INT "$perfpid"
	wait "$perfpid" || true
	cat "$work/line"
	[ -n "$out" ] && cp "$work/perf.data" "$out/perf.data"
	set +o pipefail # head closes the pipe early
	perf report -i "$work/perf.data" --no-children -g none --sort dso 2>/dev/null | grep -v '^#' | grep -v '^$' | head -n 15
	perf report -i "$work/perf.data" --no-children -g none --sort sym 2>/dev/null | grep -v '^#' | grep -v '^$' | head -n 40
fi
