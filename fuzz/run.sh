#!/usr/bin/env bash
# Run every fuzz target for SECONDS each, starting from the seed corpus in fuzz/corpus/NAME,
# JOBS targets at a time. New inputs go to a scratch corpus; crashes to fuzz/findings/
# (turn each into a regression test), with fuzz/NAME.dict as the dictionary when there is one.
# Prints one line per target: executions and coverage.
#   fuzz/run.sh BUILD_DIR SECONDS [JOBS [TARGET...]]   (no TARGET: every fuzz_* in BUILD_DIR/fuzz)
set -euo pipefail
build=$1
secs=${2:-60}
jobs=${3:-$(nproc 2>/dev/null || echo 2)}
shift $(($# < 3 ? $# : 3))
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$here/findings"
results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT

# fuzz_one BIN: run one target; its log and exit status land in $results.
fuzz_one() {
	bin=$1
	name=$(basename "$bin")
	scratch=$(mktemp -d)
	seeds="$here/corpus/$name"
	mkdir -p "$seeds"
	dict=()
	[ -f "$here/$name.dict" ] && dict=(-dict="$here/$name.dict")
	if "$bin" -max_total_time="$secs" -max_len=65536 -print_final_stats=1 "${dict[@]}" \
		-artifact_prefix="$here/findings/$name-" "$scratch" "$seeds" >"$results/$name.log" 2>&1; then
		echo 0 >"$results/$name.status"
	else
		echo 1 >"$results/$name.status"
	fi
	rm -rf "$scratch"
}

running=0
if [ $# -gt 0 ]; then
	targets=()
	for t in "$@"; do targets+=("$build/fuzz/$t"); done
else
	targets=("$build"/fuzz/fuzz_*)
fi
for bin in "${targets[@]}"; do
	[ -x "$bin" ] || continue
	echo "== $(basename "$bin") for ${secs}s"
	fuzz_one "$bin" &
	running=$((running + 1))
	if [ "$running" -ge "$jobs" ]; then
		wait -n || true
		running=$((running - 1))
	fi
done
wait || true

status=0
for log in "$results"/*.log; do
	name=$(basename "$log" .log)
	if [ "$(cat "$results/$name.status")" != 0 ]; then
		echo "!! $name failed:"
		tail -n 40 "$log"
		status=1
	else
		runs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+)/\1/p' "$log")
		cov=$(grep -E '^#[0-9]+.*DONE' "$log" | sed -E 's/.*cov: ([0-9]+).*/\1/')
		echo "ok $name: ${runs:-?} executions in ${secs}s, coverage ${cov:-?} edges"
	fi
done
exit $status
