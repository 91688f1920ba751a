#!/usr/bin/env bash
# lego (Debian's) against the daemon on loopback: an account, then certificates through
# http-01, tls-alpn-01 and dns-01 (TXT records in pebble-challtestsrv, which is also the
# validator's resolver), each verified by openssl against the root; revocation with lego,
# seen in the CRL; the issuance log holds every ACME certificate and verifies.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/acme_lib.sh"

command -v lego >/dev/null || fail "lego is not installed (make deps-test)"
CA=$WORK/ca
expect_exit 0 "init" "$AGENTCA" init --dir "$CA" --name Test --trust-domain corp.internal
# ACME may order under these names only (the CA's policy would allow all of corp.internal).
printf '{"acme": {"dns_suffixes": ["web.corp.internal", "alpn.corp.internal", "dns.corp.internal"]}}\n' \
	>"$CA/config.json"
start_challtestsrv
start_acme_daemon "$CA"
export LEGO_CA_CERTIFICATES=$CA/root.pem
LEGO="lego --server $DIRECTORY --email ops@corp.internal --accept-tos --path $WORK/lego"

# http-01: lego serves the key authorization on the port the validator is told to use.
$LEGO --domains web.corp.internal --http --http.port "127.0.0.1:$HTTP_PORT" run \
	>"$WORK/lego-http.log" 2>&1 || { cat "$WORK/lego-http.log"; fail "lego http-01"; }
C=$WORK/lego/certificates
verify_chain "$C/web.corp.internal.crt" "$C/web.corp.internal.issuer.crt" "$CA/root.pem" "http-01 certificate"
openssl x509 -in "$C/web.corp.internal.crt" -noout -ext subjectAltName >"$WORK/san"
has "$WORK/san" "DNS:web.corp.internal" "http-01 certificate names"
pass "lego http-01: certificate verifies against the root"

# tls-alpn-01: lego answers the acme-tls/1 handshake.
$LEGO --domains alpn.corp.internal --tls --tls.port "127.0.0.1:$TLS_PORT" run \
	>"$WORK/lego-alpn.log" 2>&1 || { cat "$WORK/lego-alpn.log"; fail "lego tls-alpn-01"; }
verify_chain "$C/alpn.corp.internal.crt" "$C/alpn.corp.internal.issuer.crt" "$CA/root.pem" "tls-alpn-01 certificate"
pass "lego tls-alpn-01: certificate verifies against the root"

# dns-01: lego's exec provider puts the TXT record into pebble-challtestsrv.
cat >"$WORK/dns-hook.sh" <<HOOK
#!/bin/sh
case "\$1" in
present) curl -sf -X POST -d "{\"host\":\"\$2\",\"value\":\"\$3\"}" http://127.0.0.1:$MGMT_PORT/set-txt ;;
cleanup) curl -sf -X POST -d "{\"host\":\"\$2\"}" http://127.0.0.1:$MGMT_PORT/clear-txt ;;
esac
HOOK
chmod +x "$WORK/dns-hook.sh"
EXEC_PATH=$WORK/dns-hook.sh EXEC_PROPAGATION_TIMEOUT=30 EXEC_POLLING_INTERVAL=1 \
	$LEGO --domains dns.corp.internal --dns exec --dns.resolvers "127.0.0.1:$DNS_PORT" \
	--dns.disable-cp run >"$WORK/lego-dns.log" 2>&1 || { cat "$WORK/lego-dns.log"; fail "lego dns-01"; }
verify_chain "$C/dns.corp.internal.crt" "$C/dns.corp.internal.issuer.crt" "$CA/root.pem" "dns-01 certificate"
pass "lego dns-01: certificate verifies against the root"

# A name the CA's policy allows but acme.dns_suffixes does not: refused at newOrder.
if $LEGO --domains other.corp.internal --http --http.port "127.0.0.1:$HTTP_PORT" run \
	>"$WORK/lego-other.log" 2>&1; then
	fail "a name outside acme.dns_suffixes was issued"
fi
has "$WORK/lego-other.log" "rejectedIdentifier" "acme.dns_suffixes refusal"
pass "a name outside acme.dns_suffixes: rejectedIdentifier"

# The serials, before lego archives the revoked certificate's files.
for name in web alpn dns; do
	openssl x509 -in "$C/$name.corp.internal.crt" -noout -serial | cut -d= -f2 | tr A-F a-f \
		>"$WORK/$name.serial"
	[ -s "$WORK/$name.serial" ] || fail "no serial for $name"
done

# Revocation with lego (by the account): the serial is in the CRL afterwards.
$LEGO --domains web.corp.internal revoke >"$WORK/lego-revoke.log" 2>&1 ||
	{ cat "$WORK/lego-revoke.log"; fail "lego revoke"; }
curl -sS --cacert "$CA/root.pem" "https://127.0.0.1:$PORT/v1/crl" -o "$WORK/crl.der"
openssl crl -inform DER -in "$WORK/crl.der" -noout -text | tr A-F a-f >"$WORK/crl.txt"
has "$WORK/crl.txt" "$(cat "$WORK/web.serial")" "revoked serial in the CRL"
if grep -qF "$(cat "$WORK/alpn.serial")" "$WORK/crl.txt"; then fail "an unrevoked certificate is in the CRL"; fi
pass "lego revoke: the certificate is in the CRL, the others are not"

# Every ACME certificate is in the issuance log, with the account that asked, and the log
# verifies.
"$AGENTCA" audit export --dir "$CA" >"$WORK/log.jsonl"
for name in web alpn dns; do
	has "$WORK/log.jsonl" "$(cat "$WORK/$name.serial")" "$name certificate in the issuance log"
done
has "$WORK/log.jsonl" '"actor":"acme:' "ACME actor in the log"
expect_exit 0 "audit verify" "$AGENTCA" audit verify "$WORK/log.jsonl"
pass "the issuance log holds the ACME certificates and verifies"

# The largest CSR a client sends: an RSA-4096 key, whose finalize is the biggest ACME
# request lego makes (the body and headers pass through libmicrohttpd's per-connection
# memory, API_MHD_MEMORY in enrollment/api.c).
$LEGO --key-type rsa4096 --domains web.corp.internal --http --http.port "127.0.0.1:$HTTP_PORT" \
	run >"$WORK/lego-rsa.log" 2>&1 || { cat "$WORK/lego-rsa.log"; fail "lego rsa4096"; }
verify_chain "$C/web.corp.internal.crt" "$C/web.corp.internal.issuer.crt" "$CA/root.pem" "rsa4096 certificate"
openssl x509 -in "$C/web.corp.internal.crt" -noout -text >"$WORK/rsa.txt"
has "$WORK/rsa.txt" "Public-Key: (4096 bit)" "rsa4096 certificate key"
pass "lego with an RSA-4096 key: finalize accepted, certificate verifies"

stop_acme_daemon
pass "the daemon stopped cleanly"
