#!/usr/bin/env bash
# bench/issue: issuances per second through the engine with durable logging, next to the
# single-core bound from `openssl speed` measured in the same run (one ECDSA P-256 verify
# for the CSR plus one sign for the certificate), and the ratio. Each run also prints the
# bound's CPU time per certificate over the CPU the engine used per certificate: the ratio
# the rate would reach if the run were CPU-bound on every core, and one that a busy disk
# does not move.
#
#   bench/issue/run.sh BUILD_DIR [SECONDS]
set -euo pipefail
build=${1:-build}
secs=${2:-5}
cores=$(nproc)

speed=$(openssl speed -seconds "$secs" ecdsap256 2>/dev/null | awk '/256 bits ecdsa \(nistp256\)/ {print $(NF-1), $NF}')
sign=$(echo "$speed" | cut -d' ' -f1)
verify=$(echo "$speed" | cut -d' ' -f2)
bound=$(awk -v s="$sign" -v v="$verify" 'BEGIN { printf "%.1f", 1 / (1/s + 1/v) }')
echo "openssl speed ecdsap256 (1 core): sign/s=$sign verify/s=$verify"
echo "bound per core (1 verify + 1 sign): $bound issuances/s"

for threads in 1 $cores 64; do
	line=$("$build/bench/issue/bench_issue" --threads "$threads" --seconds "$secs")
	rate=$(echo "$line" | head -n1 | sed -E 's/.*per_second=([0-9.]+).*/\1/')
	used=$threads
	[ "$used" -gt "$cores" ] && used=$cores
	ratio=$(awk -v r="$rate" -v b="$bound" -v c="$used" 'BEGIN { printf "%.2f", r / (b * c) }')
	echo "agentca engine, $threads concurrent requests: $(echo "$line" | head -n1)"
	echo "  $(echo "$line" | tail -n1)"
	echo "ratio to bound per core used ($used core(s)): $ratio"
	cpu=$(echo "$line" | head -n1 | sed -E 's/.*cpu_us_per_issue=([0-9.]+).*/\1/')
	echo "  crypto share of CPU (bound's $(awk -v b="$bound" 'BEGIN { printf "%.1f", 1e6 / b }') us / cpu_us_per_issue): $(awk -v b="$bound" -v c="$cpu" 'BEGIN { if (c > 0) printf "%.2f", 1e6 / b / c; else print "n/a" }')"
done
