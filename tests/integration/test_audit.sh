#!/usr/bin/env bash
# The exported log verifies; editing one byte of an entry, dropping one, swapping two or
# truncating the export makes `audit verify` fail and name the entry.
. "$(dirname "$0")/lib.sh"

CA=$WORK/ca
expect_exit 0 "init" "$AGENTCA" init --dir "$CA" --name Test --trust-domain corp.internal
for i in 1 2 3 4 5; do
	make_ec_csr P-256 "$WORK/$i.csr"
	expect_exit 0 "issue $i" "$AGENTCA" issue --dir "$CA" --csr "$WORK/$i.csr" \
		--subject "spiffe://corp.internal/agent-$i"
done
expect_exit 1 "a denial" "$AGENTCA" issue --dir "$CA" --csr "$WORK/1.csr" \
	--subject "spiffe://elsewhere/x"

expect_exit 0 "export" "$AGENTCA" audit export --dir "$CA" --format jsonl
cp "$WORK/stdout" "$WORK/log.jsonl"
# Entry 1 is init's ca_activated, 2-6 the issuances, 7 the denial; then the trailer.
[ "$(wc -l <"$WORK/log.jsonl")" = 8 ] || fail "want 7 entries and a trailer"
head -n 1 "$WORK/log.jsonl" | grep -q '"kind":"ca_activated"' || fail "init is not in the log"
expect_exit 0 "verify" "$AGENTCA" audit verify "$WORK/log.jsonl"
has "$WORK/stdout" "OK" "verify says OK"
has "$WORK/stdout" "entries:   7" "verify counts the entries"
has "$WORK/stdout" "issued" "verify summarises the kinds"
has "$WORK/stdout" "tree size: 7" "verify names the tree size"
tail -n 1 "$WORK/log.jsonl" | grep -q '"sth":{"tree_size":7,' || fail "trailer holds the tree head"
expect_exit 0 "verify with key" "$AGENTCA" audit verify "$WORK/log.jsonl" --key "$CA/audit.pub"
has "$WORK/stdout" "verified with the audit key" "verify checks the signature"
pass "a full export verifies"

# Edit one byte inside entry 3 (its subject).
sed '3s/agent-2/agent-X/' "$WORK/log.jsonl" >"$WORK/edited.jsonl"
expect_exit 1 "verify edited" "$AGENTCA" audit verify "$WORK/edited.jsonl"
stderr_has "entry seq 3" "edited entry named"
# Edit a byte of the time of entry 2.
perl -pe 's/"time":(\d+)(\d),/"\"time\":" . $1 . (($2 + 1) % 10) . ","/e if $. == 2' \
	"$WORK/log.jsonl" >"$WORK/edited2.jsonl"
cmp -s "$WORK/log.jsonl" "$WORK/edited2.jsonl" && fail "time edit did not change the file"
expect_exit 1 "verify edited time" "$AGENTCA" audit verify "$WORK/edited2.jsonl"
stderr_has "entry seq 2" "edited time named"
pass "an edited entry fails, named"

# Drop entry 4.
sed '4d' "$WORK/log.jsonl" >"$WORK/dropped.jsonl"
expect_exit 1 "verify dropped" "$AGENTCA" audit verify "$WORK/dropped.jsonl"
stderr_has "entry seq 5" "the entry after the gap named"
pass "a dropped entry fails, named"

# Swap entries 2 and 3.
awk 'NR==2{hold=$0; next} NR==3{print; print hold; next} {print}' "$WORK/log.jsonl" \
	>"$WORK/swapped.jsonl"
expect_exit 1 "verify swapped" "$AGENTCA" audit verify "$WORK/swapped.jsonl"
stderr_has "entry seq 3" "swapped entry named"
pass "swapped entries fail, named"

# Truncated: the trailer (or more) is missing.
head -n 5 "$WORK/log.jsonl" >"$WORK/truncated.jsonl"
expect_exit 1 "verify truncated" "$AGENTCA" audit verify "$WORK/truncated.jsonl"
stderr_has "truncated" "truncation named"
# Dropping the last entry but keeping the trailer is caught by the trailer.
sed '7d' "$WORK/log.jsonl" >"$WORK/lastdrop.jsonl"
expect_exit 1 "verify last dropped" "$AGENTCA" audit verify "$WORK/lastdrop.jsonl"
pass "a truncated export fails"

# CSV: a header row and one row per entry.
expect_exit 0 "export csv" "$AGENTCA" audit export --dir "$CA" --format csv
head -n 1 "$WORK/stdout" | grep -q '^seq,time,kind,actor,subject,serial' || fail "csv header"
[ "$(wc -l <"$WORK/stdout")" = 8 ] || fail "csv: want a header and 7 rows"
pass "csv export"

# --since in the future exports nothing but a trailer, which verifies.
expect_exit 0 "export since" "$AGENTCA" audit export --dir "$CA" --since 2099-01-01
[ "$(wc -l <"$WORK/stdout")" = 1 ] || fail "--since 2099 should export no entries"
cp "$WORK/stdout" "$WORK/since.jsonl"
expect_exit 0 "verify since" "$AGENTCA" audit verify "$WORK/since.jsonl" --key "$CA/audit.pub"
# --until in the past exports nothing either; --until in the future, everything.
expect_exit 0 "export until" "$AGENTCA" audit export --dir "$CA" --until 2001-01-01
[ "$(wc -l <"$WORK/stdout")" = 1 ] || fail "--until 2001 should export no entries"
expect_exit 0 "export until future" "$AGENTCA" audit export --dir "$CA" --until 2099-01-01
[ "$(wc -l <"$WORK/stdout")" = 8 ] || fail "--until 2099 should export every entry"
cp "$WORK/stdout" "$WORK/until.jsonl"
expect_exit 0 "verify until" "$AGENTCA" audit verify "$WORK/until.jsonl" --key "$CA/audit.pub"
pass "--since and --until filter"
