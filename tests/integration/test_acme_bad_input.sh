#!/usr/bin/env bash
# The ACME server against a client that speaks the JWS itself (tests/tools/acme_probe.c):
# EAB required and checked, every bad request with its RFC 8555 error type and no change
# (replayed nonce, foreign url, another key's signature, unsupported alg, truncated and
# 1 MiB bodies, names outside policy, finalize before ready, a CSR with other names,
# a deactivated account's kid), an IP identifier validated over http-01, contact update,
# authorization deactivation, renewalInfo, an order that `replaces` the first certificate
# (which Debian's lego 4.9.1 and certbot 2.1 cannot send), revocation and key rollover.
# Both certificates verify against the root with openssl.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/acme_lib.sh"

: "${ACME_PROBE:?ACME_PROBE must point at tests/tools/acme_probe}"
CA=$WORK/ca
expect_exit 0 "init" "$AGENTCA" init --dir "$CA" --name Test --trust-domain corp.internal
printf '{"acme": {"external_account_required": true}, "policy": {"ip_ranges": ["127.0.0.0/8"]}}\n' \
	>"$CA/config.json"
start_challtestsrv
start_acme_daemon "$CA"
expect_exit 0 "eab create" "$AGENTCA" acme eab create --dir "$CA"
KID=$(sed -n 's/^kid=//p' "$WORK/stdout")
HMAC=$(sed -n 's/^hmac=//p' "$WORK/stdout")

mkdir -p "$WORK/out"
# The probe is a test driver that exits when done: its own allocations are not checked.
ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0" "$ACME_PROBE" "$DIRECTORY" "$CA/root.pem" "$MGMT_PORT" "$KID" "$HMAC" "$WORK/out" "$HTTP_PORT" ||
	{ tail -n 20 "$WORK/serve.log"; fail "acme_probe"; }

for f in first replacement ip; do
	first_cert "$WORK/out/$f.pem" "$WORK/out/$f.leaf"
	openssl verify -CAfile "$CA/root.pem" -untrusted "$WORK/out/$f.pem" "$WORK/out/$f.leaf" \
		>/dev/null || fail "$f certificate does not verify"
done
openssl x509 -in "$WORK/out/ip.leaf" -noout -ext subjectAltName >"$WORK/ip.san"
has "$WORK/ip.san" "IP Address:127.0.0.1" "the ip certificate names 127.0.0.1"
pass "the first, the replacement and the IP certificate verify against the root"

# Refusals leave no trace but a log line: the daemon is still up and answers.
curl -sS --cacert "$CA/root.pem" "https://127.0.0.1:$PORT/healthz" | grep -q ok || fail "daemon down"
pass "the daemon survived every bad request"

stop_acme_daemon
pass "the daemon stopped cleanly"
