#!/usr/bin/env bash
# GET /v1/crl: a signed v2 CRL of the intermediate that lists a revoked certificate within one
# request of its revocation; openssl verify -crl_check then refuses it and still accepts the
# others.
. "$(dirname "$0")/lib.sh"

CA=$WORK/ca
expect_exit 0 "init" "$AGENTCA" init --dir "$CA" --name Test --trust-domain corp.internal
FP=$(openssl x509 -in "$CA/root.pem" -outform DER | sha256sum | cut -d' ' -f1)
spawn "$AGENTCA" serve --dir "$CA" --listen 127.0.0.1:0 2>"$WORK/serve.log"
DAEMON=$SPAWNED
for _ in $(seq 100); do grep -q '"event":"ca_ready"' "$WORK/serve.log" && break; sleep 0.1; done
grep -q '"event":"ca_ready"' "$WORK/serve.log" || { cat "$WORK/serve.log"; fail "not ready"; }
PORT=$(grep '"event":"listening"' "$WORK/serve.log" | sed -E 's/.*\(port ([0-9]+)\).*/\1/')
URL="https://127.0.0.1:$PORT"

for name in good bad; do
	t=$("$AGENTCA" token create --dir "$CA" --subject "spiffe://corp.internal/$name")
	"$AGENTCA" enroll --ca "$URL" --token "$t" --fingerprint "$FP" --out "$WORK/$name" >/dev/null ||
		fail "enroll $name"
done
crl() {
	curl -sS --cacert "$CA/root.pem" -o "$WORK/crl.der" -w '%{content_type}' "$URL/v1/crl" >"$WORK/ctype"
	openssl crl -inform DER -in "$WORK/crl.der" -out "$WORK/crl.pem" || fail "the CRL does not parse"
}
crl
grep -q 'application/pkix-crl' "$WORK/ctype" || fail "CRL content type"
openssl crl -in "$WORK/crl.pem" -noout -CAfile "$CA/intermediate.pem" 2>&1 | grep -q "verify OK" ||
	fail "the CRL's signature does not verify with the intermediate"
openssl crl -in "$WORK/crl.pem" -noout -text >"$WORK/crl.txt"
has "$WORK/crl.txt" "Next Update" "nextUpdate"
has "$WORK/crl.txt" "X509v3 CRL Number" "CRL number"
has "$WORK/crl.txt" "No Revoked Certificates" "empty before any revocation"

bad=$(openssl x509 -in "$WORK/bad/cert.pem" -noout -serial | cut -d= -f2)
expect_exit 0 "revoke" "$AGENTCA" revoke --dir "$CA" --serial "$bad" --reason keyCompromise
crl
openssl crl -in "$WORK/crl.pem" -noout -text >"$WORK/crl.txt"
grep -qi "Serial Number: $bad" "$WORK/crl.txt" || { cat "$WORK/crl.txt"; fail "revoked serial not listed"; }
has "$WORK/crl.txt" "Key Compromise" "reason code"
pass "the CRL lists the revoked certificate with its reason, signed by the intermediate"

cat "$CA/root.pem" "$CA/intermediate.pem" >"$WORK/cas.pem"
if openssl verify -crl_check -CAfile "$WORK/cas.pem" -CRLfile "$WORK/crl.pem" "$WORK/bad/cert.pem" \
	>"$WORK/verify.out" 2>&1; then
	fail "a revoked certificate verified with -crl_check"
fi
grep -q "revoked" "$WORK/verify.out" || { cat "$WORK/verify.out"; fail "not refused as revoked"; }
openssl verify -crl_check -CAfile "$WORK/cas.pem" -CRLfile "$WORK/crl.pem" "$WORK/good/cert.pem" \
	>/dev/null || fail "a good certificate was refused with the CRL"
pass "openssl verify -crl_check refuses the revoked certificate and accepts the good one"

kill -TERM "$DAEMON"
wait "$DAEMON" || fail "serve exit"
