#!/usr/bin/env bash
# The renewal grace (renew_grace): with curl against the real daemon, a certificate of ours
# that expired ten minutes ago renews over mTLS when the grace is an hour, and the new
# certificate is valid, for the same identity; the same certificate is anonymous on every
# other route (it cannot mint tokens or list certificates); a certificate expired beyond the
# grace, one from another CA, and one without a grace configured all fail the TLS handshake; a
# revoked certificate within the grace is refused with a problem document.
# Expired certificates come from tests/tools/mkexpired (the product never issues one).
. "$(dirname "$0")/lib.sh"
: "${MKEXPIRED:?MKEXPIRED must point at the mkexpired test tool}"

CA=$WORK/ca
expect_exit 0 "init" "$AGENTCA" init --dir "$CA" --name Test --trust-domain corp.internal
echo '{"renew_grace":"1h","admin_identities":["spiffe://corp.internal/late-admin"]}' \
	>"$WORK/grace.json"

start_daemon() {
	: >"$WORK/serve.log"
	spawn "$AGENTCA" serve --dir "$CA" --listen 127.0.0.1:0 "$@" 2>"$WORK/serve.log"
	DAEMON=$SPAWNED
	for _ in $(seq 100); do grep -q '"event":"ca_ready"' "$WORK/serve.log" && break; sleep 0.1; done
	grep -q '"event":"ca_ready"' "$WORK/serve.log" || { cat "$WORK/serve.log"; fail "not ready"; }
	PORT=$(grep '"event":"listening"' "$WORK/serve.log" | sed -E 's/.*\(port ([0-9]+)\).*/\1/')
	URL="https://127.0.0.1:$PORT"
}

# expired NAME SECONDS-AGO [--foreign]: $WORK/NAME/{cert,key}.pem, expired that long ago.
expired() {
	mkdir -p "$WORK/$1"
	"$MKEXPIRED" "$CA" "spiffe://corp.internal/$1" "$2" "$WORK/$1" ${3:-} >"$WORK/$1/serial" ||
		fail "mkexpired $1"
}
expired late 600
expired late-admin 600
expired gone 7200
expired revoked-late 600
expired impostor 600 --foreign
expect_exit 0 "revoke" "$AGENTCA" revoke --dir "$CA" --serial "$(cat "$WORK/revoked-late/serial")"

# call NAME METHOD PATH [BODY]: curl with NAME's certificate; the status in $WORK/status
# ("000" when the handshake failed), the body in $WORK/body.
call() {
	set +e
	curl -sS --cacert "$CA/root.pem" --cert "$WORK/$1/cert.pem" --key "$WORK/$1/key.pem" \
		-X "$2" ${4:+-H 'Content-Type: application/json' --data "$4"} -o "$WORK/body" \
		-w '%{http_code}' "$URL$3" >"$WORK/status" 2>"$WORK/curl.err"
	set -e
}

start_daemon --config "$WORK/grace.json"

call late POST /v1/renew
has "$WORK/status" "200" "renewal within the grace: $(cat "$WORK/body")"
jq -r .certificate "$WORK/body" >"$WORK/renewed.pem"
jq -r .chain "$WORK/body" >"$WORK/chain.pem"
openssl verify -CAfile "$CA/root.pem" -untrusted "$WORK/chain.pem" "$WORK/renewed.pem" >/dev/null ||
	fail "the renewed certificate does not verify now"
openssl x509 -in "$WORK/renewed.pem" -noout -ext subjectAltName | grep -q "URI:spiffe://corp.internal/late" ||
	fail "the renewed certificate is for another identity"
grep -q '"event":"renew_in_grace"' "$WORK/serve.log" || fail "no renew_in_grace log line"
pass "a certificate expired 10 min ago renews with renew_grace 1h; the new one verifies"

# The same expired certificate is nobody on the other routes.
call late POST /v1/tokens '{"subject":"spiffe://corp.internal/late/child"}'
has "$WORK/status" "401" "an expired certificate minting a child token: $(cat "$WORK/body")"
call late-admin GET /v1/certificates
has "$WORK/status" "401" "an expired admin certificate listing certificates: $(cat "$WORK/body")"
call late-admin POST /v1/revoke "{\"serial\":\"$(cat "$WORK/late/serial")\"}"
has "$WORK/status" "401" "an expired admin certificate revoking: $(cat "$WORK/body")"
pass "within the grace, the expired certificate authenticates nowhere but /v1/renew"

call revoked-late POST /v1/renew
has "$WORK/status" "403" "a revoked certificate within the grace"
has "$WORK/body" "certificate_revoked" "the problem names the revocation"
pass "a revoked certificate within the grace is refused with certificate_revoked"

call gone POST /v1/renew
has "$WORK/status" "000" "expired beyond the grace: the handshake must fail"
call impostor POST /v1/renew
has "$WORK/status" "000" "another CA's expired certificate: the handshake must fail"
pass "expired beyond the grace, or from another CA: no handshake"

kill -TERM "$DAEMON"
wait "$DAEMON" || fail "serve exit"

# Without renew_grace (the default) an expired certificate gets no handshake.
start_daemon
call late-admin POST /v1/renew
has "$WORK/status" "000" "without a grace an expired certificate must fail the handshake"
pass "renew_grace defaults to off"
kill -TERM "$DAEMON"
wait "$DAEMON" || fail "serve exit"
