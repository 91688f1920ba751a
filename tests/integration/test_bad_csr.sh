#!/usr/bin/env bash
# Bad CSRs are refused with distinct errors; each refusal is in the log exactly once as a
# denial with its reason; no certificate is issued for any of them.
. "$(dirname "$0")/lib.sh"
: "${MKCSR:?MKCSR must point at the mkcsr test tool}"

CA=$WORK/ca
expect_exit 0 "init" "$AGENTCA" init --dir "$CA" --name Test --trust-domain corp.internal

# Bad signature: flip one byte of the signature at the end of the DER.
make_ec_csr P-256 "$WORK/good.csr" "DNS:a.corp.internal"
openssl req -in "$WORK/good.csr" -outform DER -out "$WORK/good.der"
size=$(stat -c %s "$WORK/good.der")
cp "$WORK/good.der" "$WORK/badsig.der"
orig=$(od -An -tu1 -j $((size - 5)) -N1 "$WORK/badsig.der" | tr -d ' ')
printf "$(printf '\\%03o' $(((orig + 1) % 256)))" |
	dd of="$WORK/badsig.der" bs=1 seek=$((size - 5)) conv=notrunc 2>/dev/null
openssl req -in "$WORK/badsig.der" -inform DER -out "$WORK/badsig.csr" 2>/dev/null

# RSA-1024, a curve not allowed (P-521, secp256k1).
openssl req -new -newkey rsa:1024 -nodes -keyout "$WORK/rsa1024.key" -subj /CN=t \
	-out "$WORK/rsa1024.csr" 2>/dev/null
make_ec_csr P-521 "$WORK/p521.csr"
make_ec_csr secp256k1 "$WORK/k1.csr"
# A name outside policy, a NUL in a DNS name, 1,000 SANs, garbage.
make_ec_csr P-256 "$WORK/outside.csr" "DNS:www.example.com"
"$MKCSR" "$WORK/nul.csr" "$WORK/nul.key" --dns 'gw\0.corp.internal'
"$MKCSR" "$WORK/many.csr" "$WORK/many.key" --many-dns 1000 corp.internal
head -c 600 /dev/urandom | base64 | sed '1i -----BEGIN CERTIFICATE REQUEST-----' |
	sed '$a -----END CERTIFICATE REQUEST-----' >"$WORK/garbage.csr"

# case-name  csr-file  expected reason in the log
cases="badsig:badsig.csr:csr_bad_signature
rsa1024:rsa1024.csr:key_too_weak
p521:p521.csr:key_type_not_allowed
secp256k1:k1.csr:key_type_not_allowed
outside:outside.csr:name_outside_policy
nul:nul.csr:name_invalid
many:many.csr:too_many_sans
garbage:garbage.csr:csr_malformed"

messages=""
while IFS=: read -r name file reason; do
	expect_exit 1 "issue $name" "$AGENTCA" issue --dir "$CA" --csr "$WORK/$file" \
		--subject "spiffe://corp.internal/$name"
	[ ! -s "$WORK/stdout" ] || fail "$name: a certificate was printed"
	msg=$(cat "$WORK/stderr")
	case "$messages" in *"|$msg|"*) fail "$name: message not distinct: $msg" ;; esac
	[ "$name" = secp256k1 ] || messages="$messages|$msg|"
	pass "$name refused: $msg"
done <<EOF_CASES
$cases
EOF_CASES

# A bad subject is refused too.
expect_exit 1 "issue foreign subject" "$AGENTCA" issue --dir "$CA" --csr "$WORK/good.csr" \
	--subject spiffe://other.domain/x
expect_exit 1 "issue bad subject" "$AGENTCA" issue --dir "$CA" --csr "$WORK/good.csr" \
	--subject 'spiffe://corp.internal/a/../b'

# The log: one denial per refusal, with its reason, and nothing issued.
expect_exit 0 "audit export" "$AGENTCA" audit export --dir "$CA"
cp "$WORK/stdout" "$WORK/log.jsonl"
while IFS=: read -r name file reason; do
	n=$(grep -c "\"subject\":\"spiffe://corp.internal/$name\"" "$WORK/log.jsonl" || true)
	[ "$n" = 1 ] || fail "$name: $n log entries, want 1"
	grep "\"subject\":\"spiffe://corp.internal/$name\"" "$WORK/log.jsonl" |
		grep -q "\"kind\":\"denied\"" || fail "$name: entry is not a denial"
	grep "\"subject\":\"spiffe://corp.internal/$name\"" "$WORK/log.jsonl" |
		grep -q "\"reason\":\"$reason\"" || fail "$name: reason is not $reason"
done <<EOF_CASES
$cases
EOF_CASES
if grep -q '"kind":"issued"' "$WORK/log.jsonl"; then fail "an issued entry exists"; fi
[ "$(grep -c '"kind":"denied"' "$WORK/log.jsonl")" = 10 ] || fail "want 10 denials"
expect_exit 0 "verify" "$AGENTCA" audit verify "$WORK/log.jsonl"
pass "each refusal logged once as a denial with its reason; nothing issued"

# The good CSR still issues after all that.
expect_exit 0 "issue good" "$AGENTCA" issue --dir "$CA" --csr "$WORK/good.csr" \
	--subject spiffe://corp.internal/good
pass "a good CSR issues"
