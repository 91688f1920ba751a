#!/usr/bin/env bash
# Intermediate rotation with an offline root: `agentca ca rotate` writes the successor's key
# and CSR (asking for the CA extensions and name constraints) and waits; the admin signs the
# CSR with the offline root key (here with openssl, as they would); `agentca ca import`
# installs it as the next intermediate (refusing one signed by another root); the running
# daemon publishes it in the bundle, and `ca rotate` activates it.
. "$(dirname "$0")/lib.sh"

CA=$WORK/ca
ROOTKEY=$WORK/offline-root.key
expect_exit 0 "init" "$AGENTCA" init --dir "$CA" --name Test --trust-domain corp.internal \
	--offline-root "$ROOTKEY"
[ ! -e "$CA/root.key" ] || fail "the root key is in DIR"
certfp() { openssl x509 -in "$1" -outform DER | sha256sum | cut -d' ' -f1; }
OLD=$(certfp "$CA/intermediate.pem")

start_daemon

expect_exit 0 "ca rotate (CSR)" "$AGENTCA" ca rotate --dir "$CA"
has "$WORK/stdout" "next-intermediate.csr" "ca rotate names the CSR"
[ -s "$CA/next-intermediate.csr" ] || fail "no next-intermediate.csr"
[ "$(file_mode "$CA/next-intermediate.key")" = 600 ] || fail "next-intermediate.key is not 0600"
[ ! -e "$CA/next-intermediate.pem" ] || fail "a certificate appeared without the root"
openssl req -in "$CA/next-intermediate.csr" -noout -verify 2>/dev/null || fail "the CSR does not verify"
openssl req -in "$CA/next-intermediate.csr" -noout -text >"$WORK/csr.txt"
has "$WORK/csr.txt" "CA:TRUE, pathlen:0" "the CSR asks for a CA with pathlen 0"
has "$WORK/csr.txt" "X509v3 Name Constraints" "the CSR asks for the name constraints"
expect_exit 1 "ca rotate (waiting)" "$AGENTCA" ca rotate --dir "$CA"
stderr_has "ca import" "the wait names ca import"
"$AGENTCA" ca show --dir "$CA" >"$WORK/show.txt"
has "$WORK/show.txt" "csr_written" "ca show: the CSR waits for import"
pass "offline root: key and CSR written, the rotation waits for the import"

# A certificate for the CSR from another root is refused, and nothing changes.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/other.key" \
	-subj "/CN=Other Root" -days 30 -out "$WORK/other.pem" 2>/dev/null
sign() { # sign CA-CERT CA-KEY PASSIN OUT
	openssl x509 -req -in "$CA/next-intermediate.csr" -CA "$1" -CAkey "$2" ${3:+-passin "$3"} \
		-copy_extensions copyall -set_serial 0x4242 -days 300 -out "$4" 2>"$WORK/openssl.err" ||
		{ cat "$WORK/openssl.err"; fail "openssl could not sign"; }
}
sign "$WORK/other.pem" "$WORK/other.key" "" "$WORK/foreign.pem"
expect_exit 1 "import a successor from another root" "$AGENTCA" ca import --dir "$CA" \
	--cert "$WORK/foreign.pem" --chain "$WORK/other.pem"
stderr_has "current root" "the refusal says why"
[ ! -e "$CA/next-intermediate.pem" ] || fail "a refused import wrote the next intermediate"

sign "$CA/root.pem" "$ROOTKEY" env:AGENTCA_PASSWORD "$WORK/signed.pem"
expect_exit 0 "ca import (successor)" "$AGENTCA" ca import --dir "$CA" --cert "$WORK/signed.pem" \
	--chain "$CA/root.pem"
has "$WORK/stdout" "as the next intermediate" "import says where it went"
[ "$(certfp "$CA/next-intermediate.pem")" = "$(certfp "$WORK/signed.pem")" ] || fail "next-intermediate.pem is not the signed one"
[ "$(certfp "$CA/intermediate.pem")" = "$OLD" ] || fail "the import touched the active intermediate"
[ ! -e "$CA/next-intermediate.csr" ] || fail "the CSR is still there"
NEXT=$(certfp "$CA/next-intermediate.pem")
for _ in $(seq 150); do grep -q "published in the bundle" "$WORK/serve.log" && break; sleep 0.1; done
grep -q "published in the bundle" "$WORK/serve.log" || { cat "$WORK/serve.log"; fail "never published"; }
expect_exit 0 "ca rotate (activate)" "$AGENTCA" ca rotate --dir "$CA"
[ "$(certfp "$CA/intermediate.pem")" = "$NEXT" ] || fail "the imported successor is not active"
for _ in $(seq 150); do grep -q "intermediate $NEXT now signs" "$WORK/serve.log" && break; sleep 0.1; done
grep -q "intermediate $NEXT now signs" "$WORK/serve.log" || { cat "$WORK/serve.log"; fail "the daemon never switched"; }
curl -sS --cacert "$CA/root.pem" "$URL/healthz" >/dev/null || fail "the daemon's new server certificate does not verify"
"$AGENTCA" audit export --dir "$CA" >"$WORK/log.jsonl"
for kind in csr_written prepared published activated retiring; do
	grep -q "\"kind\":\"intermediate_$kind\"" "$WORK/log.jsonl" || fail "no intermediate_$kind entry"
done
expect_exit 0 "audit verify" "$AGENTCA" audit verify "$WORK/log.jsonl" --key "$CA/audit.pub"
pass "imported successor published and activated; every step in a log that verifies"
stop_daemon
