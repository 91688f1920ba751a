#!/usr/bin/env bash
# bench/issue: issuances per second through the engine with durable logging, next to the
# single-core bound from `openssl speed` measured in the same run (one ECDSA P-256 verify
# for the CSR plus one sign for the certificate), and the ratio.
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
done
