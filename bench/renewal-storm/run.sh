#!/usr/bin/env bash
# bench/renewal-storm: 100,000 agents enrolled within one minute, simulated over one
# lifetime (no sleeping) with the product's planner and agent jitter; prints the peak and
# mean renewals per minute for naive fixed 2/3, agent jitter alone, and the CA's windows.
# See bench_renewal_storm.c for the definition of the mean.
#
#   bench/renewal-storm/run.sh BUILD_DIR
set -euo pipefail
build=${1:-build}
for lifetime in 3600 86400 604800; do
	"$build/bench/renewal-storm/bench_renewal_storm" --agents 100000 --lifetime "$lifetime"
	echo
done
