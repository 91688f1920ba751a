#!/usr/bin/env bash
# bench/audit: exporting and verifying the issuance log at scale. Makes a CA with
# `agentca init`, fills its log to a small size (ENTRIES/10, at most 100,000) with
# bench/audit/fill_log (set-up, not measured), measures the export there, fills on to
# ENTRIES and measures, one line each, entries per second, wall seconds, CPU seconds and
# peak RSS (/usr/bin/time -v) of:
#
#   agentca audit export --dir D                 (JSON Lines, at both sizes: RSS must not grow)
#   agentca audit export --dir D --proofs        (each entry with its inclusion proof, both sizes)
#   agentca audit export --dir D --format csv
#   agentca audit verify out.jsonl --key D/audit.pub
#
#   bench/audit/run.sh BUILD_DIR [ENTRIES]       (ENTRIES defaults to 1000000)
#
# The CA, the database (about 1 GB at 1,000,000 entries) and every export (up to about 2 GB
# with proofs) live in one temporary directory, removed on exit; each export is deleted as
# soon as it has been measured. Needs GNU time (Debian: time); `make bench` installs it.
set -euo pipefail
build=${1:-build}
entries=${2:-1000000}
agentca=$build/agentca
fill=$build/bench/audit/fill_log

if [ ! -x /usr/bin/time ]; then
	echo "bench/audit: /usr/bin/time is not installed; install it with: apt-get install -y time" >&2
	exit 1
fi
for f in "$agentca" "$fill"; do
	[ -x "$f" ] || { echo "bench/audit: $f not built (cmake --build $build)" >&2; exit 1; }
done
case $entries in
'' | *[!0-9]*)
	echo "bench/audit: ENTRIES must be a number, not '$entries'" >&2
	exit 2
	;;
esac
if [ "$entries" -lt 100 ]; then
	echo "bench/audit: ENTRIES must be at least 100" >&2
	exit 2
fi
small=$((entries / 10))
[ "$small" -gt 100000 ] && small=100000

BENCH_NAME=audit
. "$(dirname "$0")/../lib.sh"
bench_begin

export AGENTCA_PASSWORD=bench-audit-passphrase
ca=$work/ca

# measure LABEL COUNT OUT CMD...: run CMD with stdout to OUT under /usr/bin/time -v and
# print one line: COUNT entries over the wall time, CPU time, peak RSS, output size.
# Sets $rss_kb for the caller.
measure() {
	local label=$1 count=$2 out=$3 t0 t1
	shift 3
	t0=$(date +%s.%N)
	if ! /usr/bin/time -v -o "$work/time.txt" "$@" >"$out" 2>"$work/stderr.txt"; then
		cat "$work/stderr.txt" "$work/time.txt" >&2
		echo "bench/audit: $label failed" >&2
		exit 1
	fi
	t1=$(date +%s.%N)
	rss_kb=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$work/time.txt")
	awk -v label="$label" -v n="$count" -v t0="$t0" -v t1="$t1" -v rss="$rss_kb" \
		-v bytes="$(stat -c %s "$out")" \
		-v user="$(awk -F': ' '/User time/ { print $2 }' "$work/time.txt")" \
		-v sys="$(awk -F': ' '/System time/ { print $2 }' "$work/time.txt")" 'BEGIN {
		s = t1 - t0
		printf "%s: entries=%d seconds=%.2f per_second=%.0f user_s=%.2f sys_s=%.2f peak_rss_kb=%d output_mb=%.1f\n",
			label, n, s, n / s, user, sys, rss, bytes / 1048576 }'
}

"$agentca" init --dir "$ca" --name Bench --trust-domain bench.internal >/dev/null

# The small log: export with and without proofs.
"$fill" --db "$ca/agentca.db" --entries "$small"
measure "export jsonl" "$small" "$work/out.jsonl" "$agentca" audit export --dir "$ca"
rss_jsonl_small=$rss_kb
rm -f "$work/out.jsonl"
measure "export jsonl --proofs" "$small" "$work/proofs.jsonl" \
	"$agentca" audit export --dir "$ca" --proofs
rss_proofs_small=$rss_kb
rm -f "$work/proofs.jsonl"

# The full log.
"$fill" --db "$ca/agentca.db" --entries "$entries"
measure "export jsonl" "$entries" "$work/out.jsonl" "$agentca" audit export --dir "$ca"
rss_jsonl=$rss_kb
measure "verify jsonl --key" "$entries" "$work/verify.txt" \
	"$agentca" audit verify "$work/out.jsonl" --key "$ca/audit.pub"
grep -q ": OK$" "$work/verify.txt" || { cat "$work/verify.txt" >&2; exit 1; }
rm -f "$work/out.jsonl"
measure "export jsonl --proofs" "$entries" "$work/proofs.jsonl" \
	"$agentca" audit export --dir "$ca" --proofs
rss_proofs=$rss_kb
rm -f "$work/proofs.jsonl"
measure "export csv" "$entries" "$work/out.csv" "$agentca" audit export --dir "$ca" --format csv
rm -f "$work/out.csv"

awk -v a="$rss_jsonl_small" -v b="$rss_jsonl" -v c="$rss_proofs_small" -v d="$rss_proofs" \
	-v s="$small" -v n="$entries" 'BEGIN {
	printf "peak RSS export jsonl: %d kB at %d entries, %d kB at %d entries, ratio %.2f\n", a, s, b, n, b / a
	printf "peak RSS export --proofs: %d kB at %d entries, %d kB at %d entries, ratio %.2f\n", c, s, d, n, d / c }'
