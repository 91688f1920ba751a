#!/usr/bin/env bash
# Secret hygiene: drive every path that handles a secret (init, token minting, an ACME
# external account binding, enrollment, a replayed and a tampered token, one asking beyond
# its grant, renewal, admin and auditor calls, revocation, exports) with the daemon logging
# at debug level, then search every log line, every command's output and every export for
# the secrets themselves: the bootstrap and admin tokens (whole, and their signatures
# alone), the EAB HMAC key, the CA passphrase, and each private key, as its PEM lines and as
# the hex of its private scalar. None may appear anywhere.
. "$(dirname "$0")/lib.sh"

export AGENTCA_LOG_LEVEL=debug
CA=$WORK/ca
OUT=$WORK/out # everything a person or a log collector could read ends up here
mkdir -p "$OUT"

"$AGENTCA" init --dir "$CA" --name Hygiene --trust-domain corp.internal \
	>"$OUT/init.out" 2>"$OUT/init.err" || fail "init"
FP=$(openssl x509 -in "$CA/root.pem" -outform DER | sha256sum | cut -d' ' -f1)

spawn "$AGENTCA" serve --dir "$CA" --listen 127.0.0.1:0 2>"$OUT/serve.log"
DAEMON=$SPAWNED
for _ in $(seq 100); do
	grep -q '"event":"ca_ready"' "$OUT/serve.log" && break
	sleep 0.1
done
grep -q '"event":"ca_ready"' "$OUT/serve.log" || { cat "$OUT/serve.log"; fail "serve never ready"; }
PORT=$(grep '"event":"listening"' "$OUT/serve.log" | tail -n1 | sed -E 's/.*\(port ([0-9]+)\).*/\1/')
URL="https://127.0.0.1:$PORT"

# Tokens: printed on stdout by design (kept apart), never in a log.
TOKENS=$WORK/tokens
mkdir -p "$TOKENS"
mint() { # mint NAME ARGS...: a bootstrap token, stdout to $TOKENS/NAME
	name=$1
	shift
	"$AGENTCA" token create --dir "$CA" "$@" >"$TOKENS/$name" 2>>"$OUT/token.err" ||
		fail "token create $name"
}
mint good --subject spiffe://corp.internal/gw-1 --dns gw-1.corp.internal
mint other --subject spiffe://corp.internal/gw-2
"$AGENTCA" admin token --dir "$CA" --role admin --name root-op >"$TOKENS/admin" \
	2>>"$OUT/token.err" || fail "admin token"
"$AGENTCA" admin token --dir "$CA" --role auditor --name eve >"$TOKENS/auditor" \
	2>>"$OUT/token.err" || fail "auditor token"
# An ACME external account binding: its HMAC key is printed once, for the ACME client.
"$AGENTCA" acme eab create --dir "$CA" >"$WORK/eab" 2>"$OUT/eab.err" || fail "acme eab create"
sed -n 's/^hmac=//p' "$WORK/eab" >"$TOKENS/eab-hmac"
[ -s "$TOKENS/eab-hmac" ] || fail "acme eab create printed no hmac"

# Enroll, then replay the same token, a tampered one and one asking for more than it grants.
"$AGENTCA" enroll --ca "$URL" --token "$(cat "$TOKENS/good")" --fingerprint "$FP" \
	--out "$WORK/agent" >"$OUT/enroll.out" 2>"$OUT/enroll.err" || fail "enroll"
if "$AGENTCA" enroll --ca "$URL" --token "$(cat "$TOKENS/good")" --fingerprint "$FP" \
	--out "$WORK/agent2" >"$OUT/replay.out" 2>"$OUT/replay.err"; then
	fail "a replayed token enrolled"
fi
TAMPERED=$(sed -E 's/.$/A/' "$TOKENS/good")
[ "$TAMPERED" != "$(cat "$TOKENS/good")" ] || TAMPERED=$(sed -E 's/.$/B/' "$TOKENS/good")
echo "$TAMPERED" >"$TOKENS/tampered"
if "$AGENTCA" enroll --ca "$URL" --token "$TAMPERED" --fingerprint "$FP" \
	--out "$WORK/agent3" >"$OUT/tampered.out" 2>"$OUT/tampered.err"; then
	fail "a tampered token enrolled"
fi
# A token for a name it does not grant: refused after its signature was checked.
make_ec_csr P-256 "$WORK/other.csr" "DNS:not-granted.corp.internal"
CSR_JSON=$(awk '{printf "%s\\n", $0}' "$WORK/other.csr")
curl -sS --cacert "$CA/root.pem" -H 'Content-Type: application/json' \
	-d "{\"token\":\"$(cat "$TOKENS/other")\",\"csr\":\"$CSR_JSON\"}" "$URL/v1/enroll" \
	>"$OUT/other.json" 2>&1 || true
has "$OUT/other.json" "problem" "a token asking beyond its grant is refused"
# The same tokens sent raw to the API: the daemon sees them, logs the refusal, never them.
for t in good tampered other; do
	curl -sS --cacert "$CA/root.pem" -H 'Content-Type: application/json' \
		-d "{\"token\":\"$(cat "$TOKENS/$t")\",\"csr\":\"x\"}" "$URL/v1/enroll" \
		>>"$OUT/curl.out" 2>&1 || true
done
pass "enrollment with good, replayed, tampered and over-reaching tokens"

# Renewal over mTLS, admin and auditor calls, a revocation, exports (CLI and API).
curl -sS --cacert "$CA/root.pem" --cert "$WORK/agent/cert.pem" --key "$WORK/agent/key.pem" \
	-H 'Content-Type: application/json' -d '{}' "$URL/v1/renew" >"$OUT/renew.json" ||
	fail "renew"
has "$OUT/renew.json" "BEGIN CERTIFICATE" "renewal answered"
SERIAL=$(openssl x509 -in "$WORK/agent/cert.pem" -noout -serial | cut -d= -f2)
curl -sS --cacert "$CA/root.pem" -H "Authorization: Bearer $(cat "$TOKENS/admin")" \
	-H 'Content-Type: application/json' -d "{\"serial\":\"$SERIAL\",\"reason\":\"keyCompromise\"}" \
	"$URL/v1/revoke" >"$OUT/revoke.json" || fail "revoke"
has "$OUT/revoke.json" "children_revoked" "revocation answered"
curl -sS --cacert "$CA/root.pem" -H "Authorization: Bearer $(cat "$TOKENS/admin")x" \
	"$URL/v1/certificates" >"$OUT/badadmin.json" || true
curl -sS --cacert "$CA/root.pem" -H "Authorization: Bearer $(cat "$TOKENS/auditor")" \
	"$URL/v1/audit/export?format=jsonl&proofs=1" >"$OUT/api-export.jsonl" || fail "API export"
curl -sS --cacert "$CA/root.pem" -H "Authorization: Bearer $(cat "$TOKENS/auditor")" \
	"$URL/v1/audit/export?format=csv" >"$OUT/api-export.csv" || fail "API csv export"
kill -TERM "$DAEMON"
wait "$DAEMON" || fail "serve did not exit 0 on SIGTERM"
"$AGENTCA" audit export --dir "$CA" >"$OUT/export.jsonl" 2>"$OUT/export.err" || fail "export"
"$AGENTCA" audit export --dir "$CA" --format csv >"$OUT/export.csv" 2>>"$OUT/export.err" ||
	fail "csv export"
"$AGENTCA" ca show --dir "$CA" >"$OUT/show.out" 2>"$OUT/show.err" || fail "ca show"
[ "$(grep -c '"kind":"denied"' "$OUT/export.jsonl")" -ge 3 ] ||
	fail "the refusals are not in the log"
[ "$(wc -l <"$OUT/serve.log")" -ge 20 ] || fail "the daemon logged too little to judge"
pass "renewal, revocation, admin and auditor calls, exports"

# The secrets to look for, one per line in $WORK/secrets.
SECRETS=$WORK/secrets
: >"$SECRETS"
for t in "$TOKENS"/*; do
	cat "$t" >>"$SECRETS"
	awk -F. 'NF == 3 { print $3 }' "$t" >>"$SECRETS" # the signature alone
done
echo "$AGENTCA_PASSWORD" >>"$SECRETS"
for key in "$CA"/*.key "$WORK/agent/key.pem"; do
	grep -v -- '-----' "$key" | awk 'length($0) >= 32' >>"$SECRETS"
	# The private scalar in hex, as a careless debug line would print it.
	openssl pkey -in "$key" -passin env:AGENTCA_PASSWORD -noout -text 2>/dev/null |
		awk '/^priv:/{p=1; next} /^pub:/{p=0} p' | tr -d ' :\n' >"$WORK/scalar"
	[ -s "$WORK/scalar" ] || fail "could not read the private scalar of $(basename "$key")"
	cat "$WORK/scalar" >>"$SECRETS"
	echo >>"$SECRETS"
	tr 'a-f' 'A-F' <"$WORK/scalar" >>"$SECRETS"
	echo >>"$SECRETS"
done
[ "$(grep -c . "$SECRETS")" -ge 20 ] || fail "too few secrets collected: the test is broken"

# The scan: a fixed-string search of every secret in every file a reader could see.
if grep -rF -f "$SECRETS" "$OUT" >"$WORK/leaks"; then
	cut -c1-200 "$WORK/leaks" >&2
	fail "a secret appears in a log, an output or an export"
fi
# The search works: a file holding one of the secrets is found.
head -n1 "$SECRETS" >"$WORK/canary"
grep -qF -f "$SECRETS" "$WORK/canary" || fail "the scan cannot find a planted secret"
pass "no token, HMAC key, passphrase or private key in $(find "$OUT" -type f | wc -l) files ($(wc -l <"$SECRETS") secrets searched)"
