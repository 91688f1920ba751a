#!/usr/bin/env bash
# certbot (Debian's) against the daemon with external account binding required: without a
# binding the account is refused (externalAccountRequired); with a key from `agentca acme
# eab create` certbot gets a certificate through standalone http-01 that openssl verifies
# against the root; the key's own policy refuses a name outside its suffix; certbot revokes
# one certificate by its account and another by the certificate's key, both then in the CRL.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/acme_lib.sh"

command -v certbot >/dev/null || fail "certbot is not installed (make deps-test)"
CA=$WORK/ca
expect_exit 0 "init" "$AGENTCA" init --dir "$CA" --name Test --trust-domain corp.internal
printf '{"acme": {"external_account_required": true, "website": "https://pki.corp.internal"}}\n' \
	>"$CA/config.json"
start_challtestsrv
start_acme_daemon "$CA"
export REQUESTS_CA_BUNDLE=$CA/root.pem

curl -sS --cacert "$CA/root.pem" "$DIRECTORY" >"$WORK/directory.json"
has "$WORK/directory.json" '"externalAccountRequired":true' "directory meta"
has "$WORK/directory.json" '"website":"https://pki.corp.internal"' "directory website"

# certbot DIR ARGS...: certbot with its own state under DIR, against our directory.
run_certbot() {
	d=$1
	shift
	certbot --non-interactive --config-dir "$d/config" --work-dir "$d/work" --logs-dir "$d/logs" \
		--server "$DIRECTORY" "$@"
}

# No binding: refused.
if run_certbot "$WORK/noeab" register --agree-tos -m ops@corp.internal >"$WORK/noeab.log" 2>&1; then
	fail "an account without EAB was created"
fi
# certbot reads meta.externalAccountRequired and stops before asking (the server's own
# refusal, externalAccountRequired, is in test_acme_bad_input.sh).
has "$WORK/noeab.log" "requires external account binding" "refusal without EAB"
pass "no binding: certbot sees that the CA requires one"

# A key limited to certbot.corp.internal, and a certificate with it.
expect_exit 0 "eab create" "$AGENTCA" acme eab create --dir "$CA" --policy dns-suffix=certbot.corp.internal
KID=$(sed -n 's/^kid=//p' "$WORK/stdout")
HMAC=$(sed -n 's/^hmac=//p' "$WORK/stdout")
[ -n "$KID" ] && [ -n "$HMAC" ] || fail "eab create printed no key"
CB=$WORK/cb
run_certbot "$CB" register --agree-tos -m ops@corp.internal --eab-kid="$KID" --eab-hmac-key="$HMAC" \
	>"$WORK/register.log" 2>&1 || { cat "$WORK/register.log"; fail "certbot register with EAB"; }
pass "certbot registered with the EAB key"

get_cert() {
	name=$1
	run_certbot "$CB" certonly --standalone --http-01-address 127.0.0.1 --http-01-port "$HTTP_PORT" \
		--cert-name "$name" -d "$name" >"$WORK/certonly-$name.log" 2>&1
}
get_cert www.certbot.corp.internal || { cat "$WORK/certonly-www.certbot.corp.internal.log"; fail "certbot certonly"; }
L=$CB/config/live/www.certbot.corp.internal
verify_chain "$L/cert.pem" "$L/chain.pem" "$CA/root.pem" "certbot certificate"
openssl verify -CAfile "$CA/root.pem" -untrusted "$L/fullchain.pem" "$L/cert.pem" >/dev/null ||
	fail "fullchain does not verify"
pass "certbot standalone http-01 with EAB: certificate verifies against the root"

# The EAB key's policy: a name outside its suffix is refused at newOrder.
if get_cert web.corp.internal; then fail "a name outside the EAB key's policy was issued"; fi
# (certbot 2.1 on Python 3.11 then trips over the problem's subproblems in its own error
# display, so the refusal is read from its debug log.)
has "$CB/logs/letsencrypt.log" "urn:ietf:params:acme:error:rejectedIdentifier" "EAB policy refusal"
[ ! -e "$CB/config/live/web.corp.internal" ] || fail "a certificate outside the EAB policy exists"
pass "a name outside the EAB key's suffix: rejectedIdentifier"

get_cert api.certbot.corp.internal || { cat "$WORK/certonly-api.certbot.corp.internal.log"; fail "second certonly"; }
L2=$CB/config/live/api.certbot.corp.internal
S1=$(openssl x509 -in "$L/cert.pem" -noout -serial | cut -d= -f2 | tr A-F a-f)
S2=$(openssl x509 -in "$L2/cert.pem" -noout -serial | cut -d= -f2 | tr A-F a-f)

# Revocation by the account, then by the certificate's own key (no account involved).
run_certbot "$CB" revoke --cert-path "$L/cert.pem" --reason keycompromise --no-delete-after-revoke \
	>"$WORK/revoke1.log" 2>&1 || { cat "$WORK/revoke1.log"; fail "certbot revoke by account"; }
run_certbot "$WORK/bykey" revoke --cert-path "$L2/cert.pem" --key-path "$L2/privkey.pem" \
	--no-delete-after-revoke >"$WORK/revoke2.log" 2>&1 ||
	{ cat "$WORK/revoke2.log"; fail "certbot revoke by the certificate key"; }
curl -sS --cacert "$CA/root.pem" "https://127.0.0.1:$PORT/v1/crl" -o "$WORK/crl.der"
openssl crl -inform DER -in "$WORK/crl.der" -noout -text | tr A-F a-f >"$WORK/crl.txt"
has "$WORK/crl.txt" "$S1" "revoked by account, in the CRL"
has "$WORK/crl.txt" "$S2" "revoked by key, in the CRL"
grep -qi "key compromise" "$WORK/crl.txt" || fail "reason keyCompromise not in the CRL"
pass "certbot revoke by the account and by the certificate's key: both in the CRL"

# Revoking again: alreadyRevoked.
if run_certbot "$CB" revoke --cert-path "$L/cert.pem" --no-delete-after-revoke >"$WORK/revoke3.log" 2>&1; then
	fail "a second revocation succeeded"
fi
has "$CB/logs/letsencrypt.log" "urn:ietf:params:acme:error:alreadyRevoked" "second revocation refused"
pass "a second revocation: alreadyRevoked"

stop_acme_daemon
pass "the daemon stopped cleanly"
