#!/usr/bin/env bash
# Signed tree heads, inclusion and consistency proofs, end to end with the real binary:
# init makes the audit key; a full export verifies with --key; a byte changed in any entry,
# an entry deleted, two swapped or the file truncated fails naming the entry; the database
# rewritten with sqlite3 (an entry edited, its chain recomputed, the tree rebuilt and
# re-signed; rows deleted, swapped, truncated) and re-exported fails, named, or fails the
# consistency proof from a tree head saved earlier; --kind/--subject return exactly the
# matching entries and verify by proofs; CSV has its header.
. "$(dirname "$0")/lib.sh"

command -v sqlite3 >/dev/null || fail "the sqlite3 command is needed (make deps-test)"

CA=$WORK/ca
PUB=$CA/audit.pub
expect_exit 0 "init" "$AGENTCA" init --dir "$CA" --name Test --trust-domain corp.internal
[ "$(file_mode "$CA/audit.key")" = 600 ] || fail "audit.key must be 0600"
[ "$(file_mode "$PUB")" = 644 ] || fail "audit.pub must be 0644"
grep -q "ENCRYPTED PRIVATE KEY" "$CA/audit.key" || fail "audit.key must be encrypted"
expect_exit 0 "init --csr" "$AGENTCA" init --dir "$WORK/corp" --name Corp \
	--trust-domain corp.internal --csr
[ -f "$WORK/corp/audit.key" ] && [ -f "$WORK/corp/audit.pub" ] || fail "init --csr: audit key"
pass "init makes the audit key pair (root and --csr modes)"

issue() {
	make_ec_csr P-256 "$WORK/$1.csr"
	expect_exit 0 "issue $1" "$AGENTCA" issue --dir "$CA" --csr "$WORK/$1.csr" \
		--subject "spiffe://corp.internal/$1"
}
for i in 1 2 3 4; do
	issue "agent-$i"
done
expect_exit 1 "a denial" "$AGENTCA" issue --dir "$CA" --csr "$WORK/agent-1.csr" \
	--subject "spiffe://elsewhere/x"
# Entries: 1 ca_activated, 2-5 issued, 6 denied.

# The tree head now, saved for later.
expect_exit 0 "audit sth" "$AGENTCA" audit sth --dir "$CA"
cp "$WORK/stdout" "$WORK/sth6.json"
has "$WORK/sth6.json" '"tree_size":6' "sth size"
has "$WORK/sth6.json" '"signature":"' "sth signature"
# Its signature checks with stock tools over the documented bytes.
root=$(sed 's/.*"root_hash":"\([0-9a-f]*\)".*/\1/' "$WORK/sth6.json")
ts=$(sed 's/.*"timestamp":\([0-9]*\).*/\1/' "$WORK/sth6.json")
printf '{"root_hash":"%s","timestamp":%s,"tree_size":6}' "$root" "$ts" >"$WORK/signed"
sed 's/.*"signature":"\([^"]*\)".*/\1/' "$WORK/sth6.json" | base64 -d >"$WORK/sig"
openssl dgst -sha256 -verify "$PUB" -signature "$WORK/sig" "$WORK/signed" >/dev/null ||
	fail "the tree head's signature does not verify with openssl"
pass "audit sth prints a tree head that openssl verifies"

# A full export with proofs verifies with the key.
expect_exit 0 "export" "$AGENTCA" audit export --dir "$CA" --proofs
cp "$WORK/stdout" "$WORK/full.jsonl"
[ "$(wc -l <"$WORK/full.jsonl")" = 7 ] || fail "want 6 entries and a trailer"
expect_exit 0 "verify" "$AGENTCA" audit verify "$WORK/full.jsonl" --key "$PUB"
has "$WORK/stdout" "entries:   6" "verify counts"
has "$WORK/stdout" "tree size: 6" "verify names the tree size"
has "$WORK/stdout" "verified with the audit key" "signature checked"
has "$WORK/stdout" "time span:" "time span"
has "$WORK/stdout" "denied" "kinds"
# Through stdin too (spooled: it cannot seek).
expect_exit 0 "verify stdin" sh -c "cat '$WORK/full.jsonl' | '$AGENTCA' audit verify - --key '$PUB'"
# Another CA's key does not verify it.
expect_exit 0 "other init" "$AGENTCA" init --dir "$WORK/other" --name Other \
	--trust-domain corp.internal
expect_exit 1 "verify other key" "$AGENTCA" audit verify "$WORK/full.jsonl" \
	--key "$WORK/other/audit.pub"
stderr_has "does not verify with the audit key" "wrong key named"
pass "a full export verifies with --key"

# One byte changed in each entry of the file, at the time: named.
for n in 1 2 3 4 5 6; do
	perl -pe 's/"time":(\d+)(\d),/"\"time\":" . $1 . (($2 + 1) % 10) . ","/e if $. == '"$n" \
		"$WORK/full.jsonl" >"$WORK/edited.jsonl"
	expect_exit 1 "verify edited $n" "$AGENTCA" audit verify "$WORK/edited.jsonl" --key "$PUB"
	stderr_has "entry seq $n " "edited entry $n named"
done
# A byte of a proof hash.
perl -pe 's/"proof":\["(.)/"\"proof\":[\"" . ($1 eq "a" ? "b" : "a")/e if $. == 4' \
	"$WORK/full.jsonl" >"$WORK/proof.jsonl"
expect_exit 1 "verify proof edit" "$AGENTCA" audit verify "$WORK/proof.jsonl" --key "$PUB"
stderr_has "entry seq 4 is not in the signed tree head" "altered proof named"
# Deleted, swapped, truncated.
sed '3d' "$WORK/full.jsonl" >"$WORK/deleted.jsonl"
expect_exit 1 "verify deleted" "$AGENTCA" audit verify "$WORK/deleted.jsonl" --key "$PUB"
stderr_has "entry seq 4 follows entry seq 2" "deleted entry named"
awk 'NR==2{hold=$0; next} NR==3{print; print hold; next} {print}' "$WORK/full.jsonl" \
	>"$WORK/swapped.jsonl"
expect_exit 1 "verify swapped" "$AGENTCA" audit verify "$WORK/swapped.jsonl" --key "$PUB"
stderr_has "entry seq 3" "swapped entry named"
head -n 4 "$WORK/full.jsonl" >"$WORK/truncated.jsonl"
expect_exit 1 "verify truncated" "$AGENTCA" audit verify "$WORK/truncated.jsonl" --key "$PUB"
stderr_has "truncated" "truncation named"
head -c 1000 "$WORK/full.jsonl" >"$WORK/cut.jsonl"
expect_exit 1 "verify cut" "$AGENTCA" audit verify "$WORK/cut.jsonl" --key "$PUB"
stderr_has "truncated" "a cut line named"
pass "edited, deleted, swapped and truncated exports fail, named"

# More entries; then the saved tree head is proven a prefix of today's.
issue agent-5
issue agent-6
expect_exit 0 "export consistency" "$AGENTCA" audit export --dir "$CA" --consistency-from 6
cp "$WORK/stdout" "$WORK/today.jsonl"
expect_exit 0 "verify consistency" "$AGENTCA" audit verify "$WORK/today.jsonl" --key "$PUB" \
	--previous-sth "$WORK/sth6.json"
has "$WORK/stdout" "consistent with the previous tree head of size 6" "consistency"
has "$WORK/stdout" "tree size: 8" "new size"
# Without the proof in the export, an older head cannot be checked.
expect_exit 0 "export plain" "$AGENTCA" audit export --dir "$CA"
cp "$WORK/stdout" "$WORK/plain.jsonl"
expect_exit 1 "verify no proof" "$AGENTCA" audit verify "$WORK/plain.jsonl" --key "$PUB" \
	--previous-sth "$WORK/sth6.json"
stderr_has "--consistency-from 6" "missing consistency proof explained"
expect_exit 0 "audit sth 8" "$AGENTCA" audit sth --dir "$CA"
cp "$WORK/stdout" "$WORK/sth8.json"
expect_exit 2 "previous without key" "$AGENTCA" audit verify "$WORK/today.jsonl" \
	--previous-sth "$WORK/sth6.json"
expect_exit 2 "bad size" "$AGENTCA" audit export --dir "$CA" --consistency-from x
expect_exit 1 "size past the log" "$AGENTCA" audit export --dir "$CA" --consistency-from 9
stderr_has "from tree size 9" "size past the log named"
pass "a consistency proof from an earlier tree head verifies"

# Filters: exactly the matching entries, proven by their inclusion proofs.
expect_exit 0 "export kind" "$AGENTCA" audit export --dir "$CA" --kind issued
cp "$WORK/stdout" "$WORK/issued.jsonl"
[ "$(grep -v '^{"export"' "$WORK/issued.jsonl" | grep -c '"kind":"issued"')" = 6 ] ||
	fail "want 6 issued entries"
[ "$(wc -l <"$WORK/issued.jsonl")" = 7 ] || fail "--kind: only issued entries"
[ "$(grep -c '"proof":\[' "$WORK/issued.jsonl")" = 6 ] || fail "--kind: proofs on each"
expect_exit 0 "verify kind" "$AGENTCA" audit verify "$WORK/issued.jsonl" --key "$PUB"
has "$WORK/stdout" "filtered export" "filtered named"
sed '2d' "$WORK/issued.jsonl" >"$WORK/issued-dropped.jsonl"
expect_exit 1 "verify kind dropped" "$AGENTCA" audit verify "$WORK/issued-dropped.jsonl" \
	--key "$PUB"
expect_exit 0 "export subject" "$AGENTCA" audit export --dir "$CA" \
	--subject spiffe://corp.internal/agent-2
cp "$WORK/stdout" "$WORK/subject.jsonl"
[ "$(wc -l <"$WORK/subject.jsonl")" = 2 ] || fail "--subject: one entry"
has "$WORK/subject.jsonl" '"subject":"spiffe://corp.internal/agent-2"' "--subject entry"
expect_exit 0 "verify subject" "$AGENTCA" audit verify "$WORK/subject.jsonl" --key "$PUB"
expect_exit 0 "export denied" "$AGENTCA" audit export --dir "$CA" --kind denied \
	--subject spiffe://elsewhere/
[ "$(wc -l <"$WORK/stdout")" = 2 ] || fail "--kind denied --subject: one entry"
expect_exit 0 "export csv" "$AGENTCA" audit export --dir "$CA" --format csv --kind issued
head -n 1 "$WORK/stdout" | grep -q '^seq,time,kind,actor,subject,serial' || fail "csv header"
[ "$(wc -l <"$WORK/stdout")" = 7 ] || fail "csv: a header and 6 rows"
pass "--kind and --subject return exactly the matching entries and verify by proofs"

# ---- the database rewritten behind the CA's back, then re-exported ----

# fresh_copy NAME: a copy of the CA to tamper with; sets DB.
fresh_copy() {
	rm -rf "$WORK/$1"
	cp -a "$CA" "$WORK/$1"
	DB=$WORK/$1/agentca.db
	sqlite3 "$DB" "PRAGMA wal_checkpoint(TRUNCATE);" >/dev/null
	sqlite3 "$DB" "DROP TRIGGER issuance_log_no_update; DROP TRIGGER issuance_log_no_delete;"
}

# One byte of entry 3 changed in the database: its stored hash no longer matches.
fresh_copy edit
sqlite3 "$DB" "UPDATE issuance_log SET canonical = replace(canonical, 'agent-2', 'agent-X')
	WHERE seq = 3"
expect_exit 0 "export edited db" "$AGENTCA" audit export --dir "$WORK/edit" --proofs
cp "$WORK/stdout" "$WORK/db-edit.jsonl"
expect_exit 1 "verify edited db" "$AGENTCA" audit verify "$WORK/db-edit.jsonl" --key "$PUB"
stderr_has "entry seq 3 has been altered" "db edit named"

# The same edit with the chain recomputed from entry 3 on: the chain holds, the proof of
# entry 3 does not; without proofs, the root does not.
rechain() { # rechain FROM: recompute canonical prev and hash from seq FROM to the end
	prev=$(sqlite3 "$DB" "SELECT hash FROM issuance_log WHERE seq = $(($1 - 1))")
	last=$(sqlite3 "$DB" "SELECT max(seq) FROM issuance_log")
	for seq in $(seq "$1" "$last"); do
		canon=$(sqlite3 "$DB" "SELECT canonical FROM issuance_log WHERE seq = $seq")
		canon=$(printf %s "$canon" | sed "s/\"prev\":\"[0-9a-f]*\"/\"prev\":\"$prev\"/")
		hash=$(printf %s "$canon" | sha256sum | cut -d' ' -f1)
		canon=$(printf %s "$canon" | sed "s/'/''/g")
		sqlite3 "$DB" "UPDATE issuance_log SET canonical = '$canon', hash = '$hash'
			WHERE seq = $seq"
		prev=$hash
	done
}
fresh_copy rechain
sqlite3 "$DB" "UPDATE issuance_log SET canonical = replace(canonical, 'agent-2', 'agent-X')
	WHERE seq = 3"
rechain 3
expect_exit 0 "export rechained" "$AGENTCA" audit export --dir "$WORK/rechain" --proofs
cp "$WORK/stdout" "$WORK/db-rechain.jsonl"
expect_exit 1 "verify rechained" "$AGENTCA" audit verify "$WORK/db-rechain.jsonl" --key "$PUB"
stderr_has "entry seq 3 is not in the signed tree head" "rechained edit named by its proof"
expect_exit 0 "export rechained plain" "$AGENTCA" audit export --dir "$WORK/rechain"
cp "$WORK/stdout" "$WORK/db-rechain-plain.jsonl"
expect_exit 1 "verify rechained plain" "$AGENTCA" audit verify "$WORK/db-rechain-plain.jsonl" \
	--key "$PUB"
stderr_has "do not hash to the signed tree head" "rechained edit fails the root"

# ...and with the tree rebuilt too (the store rebuilds missing leaves when it opens) and a
# fresh head signed over it: the export verifies on its own, but not against the tree head
# saved before: the old entry was altered.
sqlite3 "$DB" "DROP TRIGGER merkle_nodes_no_delete; DELETE FROM merkle_nodes;"
expect_exit 0 "export resigned" "$AGENTCA" audit export --dir "$WORK/rechain" \
	--consistency-from 6
cp "$WORK/stdout" "$WORK/db-resigned.jsonl"
expect_exit 0 "verify resigned alone" "$AGENTCA" audit verify "$WORK/db-resigned.jsonl" \
	--key "$PUB"
expect_exit 1 "verify resigned" "$AGENTCA" audit verify "$WORK/db-resigned.jsonl" \
	--key "$PUB" --previous-sth "$WORK/sth6.json"
stderr_has "not consistent with the previous tree head of size 6" "re-signed log caught"
stderr_has "entries seq 1 to 6" "the altered range named"
pass "an edited database fails verification, named, or against an earlier tree head"

# An entry deleted from the database.
fresh_copy delete
sqlite3 "$DB" "DELETE FROM issuance_log WHERE seq = 4"
expect_exit 0 "export deleted db" "$AGENTCA" audit export --dir "$WORK/delete"
cp "$WORK/stdout" "$WORK/db-delete.jsonl"
expect_exit 1 "verify deleted db" "$AGENTCA" audit verify "$WORK/db-delete.jsonl" --key "$PUB"
stderr_has "entry seq 5 follows entry seq 3" "deleted row named"

# Two entries swapped in the database.
fresh_copy swap
sqlite3 "$DB" "UPDATE issuance_log SET seq = -3 WHERE seq = 3;
	UPDATE issuance_log SET seq = 3 WHERE seq = 4; UPDATE issuance_log SET seq = 4 WHERE seq = -3"
expect_exit 0 "export swapped db" "$AGENTCA" audit export --dir "$WORK/swap"
cp "$WORK/stdout" "$WORK/db-swap.jsonl"
expect_exit 1 "verify swapped db" "$AGENTCA" audit verify "$WORK/db-swap.jsonl" --key "$PUB"
stderr_has "entry seq 4 follows entry seq 2" "swapped rows named"

# The log truncated in the database: a consistent prefix, until compared with the tree head
# saved when it was longer.
fresh_copy truncate
sqlite3 "$DB" "DELETE FROM issuance_log WHERE seq > 6"
expect_exit 0 "export truncated db" "$AGENTCA" audit export --dir "$WORK/truncate"
cp "$WORK/stdout" "$WORK/db-truncate.jsonl"
expect_exit 1 "verify truncated db" "$AGENTCA" audit verify "$WORK/db-truncate.jsonl" \
	--key "$PUB" --previous-sth "$WORK/sth8.json"
stderr_has "entries seq 7 to 8 were removed" "truncated rows named"
pass "deleted, swapped and truncated rows in the database fail, named"

# A CA made before the audit key existed gets one when it first needs it.
rm "$CA/audit.key" "$CA/audit.pub"
expect_exit 0 "audit sth remakes the key" "$AGENTCA" audit sth --dir "$CA"
[ -f "$CA/audit.key" ] && [ -f "$CA/audit.pub" ] || fail "audit key not remade"
pass "the audit key is made lazily"
