#!/usr/bin/env bash
# Run every fuzz target for SECONDS each, starting from the seed corpus in fuzz/corpus/NAME.
# New inputs go to a scratch corpus; crashes to fuzz/findings/ (turn each into a test).
#   fuzz/run.sh BUILD_DIR SECONDS
set -euo pipefail
build=$1
secs=${2:-60}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$here/findings"
status=0
for bin in "$build"/fuzz/fuzz_*; do
	name=$(basename "$bin")
	scratch=$(mktemp -d)
	seeds="$here/corpus/$name"
	mkdir -p "$seeds"
	echo "== $name for ${secs}s"
	if ! "$bin" -max_total_time="$secs" -max_len=65536 -artifact_prefix="$here/findings/$name-" \
		"$scratch" "$seeds" 2>"$scratch.log"; then
		tail -n 40 "$scratch.log"
		status=1
	else
		grep -E '^#[0-9]+.*DONE' "$scratch.log" || tail -n 2 "$scratch.log"
	fi
	rm -rf "$scratch" "$scratch.log"
done
exit $status
