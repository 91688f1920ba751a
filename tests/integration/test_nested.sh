#!/usr/bin/env bash
# Nested agents and roles: a parent mints a token for a child under its own path over mTLS
# and the child enrolls (the log names the parent; the child never outlives the parent); a
# sibling path, a prefix trick and a depth beyond the limit are refused with 403; an auditor
# can neither revoke nor mint; an admin revokes, after which the revoked certificate can
# neither renew nor mint.
. "$(dirname "$0")/lib.sh"

CA=$WORK/ca
expect_exit 0 "init" "$AGENTCA" init --dir "$CA" --name Test --trust-domain corp.internal
FP=$(openssl x509 -in "$CA/root.pem" -outform DER | sha256sum | cut -d' ' -f1)
printf '{"admin_identities":["spiffe://corp.internal/ops"],"auditor_identities":["spiffe://corp.internal/audit"]}\n' \
	>"$WORK/config.json"
spawn "$AGENTCA" serve --dir "$CA" --listen 127.0.0.1:0 --config "$WORK/config.json" 2>"$WORK/serve.log"
DAEMON=$SPAWNED
for _ in $(seq 100); do grep -q '"event":"ca_ready"' "$WORK/serve.log" && break; sleep 0.1; done
grep -q '"event":"ca_ready"' "$WORK/serve.log" || { cat "$WORK/serve.log"; fail "not ready"; }
PORT=$(grep '"event":"listening"' "$WORK/serve.log" | sed -E 's/.*\(port ([0-9]+)\).*/\1/')
URL="https://127.0.0.1:$PORT"

# api AGENTDIR|- PATH BODY [AUTH]: POST as that agent's certificate (or none); status in
# $WORK/status, body in $WORK/body.
api() {
	set -- "$@" ""
	certargs=()
	[ "$1" != - ] && certargs=(--cert "$1/cert.pem" --key "$1/key.pem")
	authargs=()
	[ -n "$4" ] && authargs=(-H "Authorization: Bearer $4")
	curl -sS --cacert "$CA/root.pem" "${certargs[@]}" "${authargs[@]}" -o "$WORK/body" \
		-w '%{http_code}' -H 'Content-Type: application/json' --data-binary "$3" \
		"$URL$2" >"$WORK/status" || true
}
status_is() {
	[ "$(cat "$WORK/status")" = "$1" ] || { cat "$WORK/body"; echo; fail "$2: status $(cat "$WORK/status"), want $1"; }
}
reason_is() {
	grep -q "urn:agentca:problem:$1" "$WORK/body" || { cat "$WORK/body"; fail "$2: want $1"; }
}
# mint AGENTDIR SUBJECT: a child token minted by that agent, on stdout.
mint() {
	api "$1" /v1/tokens "{\"subject\":\"$2\"}"
	status_is 201 "mint $2 by $1"
	sed -E 's/.*"token":"([^"]+)".*/\1/' "$WORK/body"
}
enroll() { # TOKEN DIR
	"$AGENTCA" enroll --ca "$URL" --token "$1" --fingerprint "$FP" --out "$2" >/dev/null 2>"$WORK/enroll.err" ||
		{ cat "$WORK/enroll.err"; fail "enroll into $2"; }
}
serial_of() { openssl x509 -in "$1/cert.pem" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f'; }

# The parent, enrolled with an admin-made token.
enroll "$("$AGENTCA" token create --dir "$CA" --subject spiffe://corp.internal/gw-1)" "$WORK/gw1"

# The parent mints for a child under its path; the child enrolls.
CHILD_TOKEN=$(mint "$WORK/gw1" spiffe://corp.internal/gw-1/child-1)
enroll "$CHILD_TOKEN" "$WORK/child1"
openssl x509 -in "$WORK/child1/cert.pem" -noout -text | grep -q "URI:spiffe://corp.internal/gw-1/child-1" ||
	fail "child certificate has the wrong identity"
openssl verify -CAfile "$CA/root.pem" -untrusted "$WORK/child1/chain.pem" "$WORK/child1/cert.pem" \
	>/dev/null || fail "child certificate does not verify"
parent_end=$(date -d "$(openssl x509 -in "$WORK/gw1/cert.pem" -noout -enddate | cut -d= -f2)" +%s)
child_end=$(date -d "$(openssl x509 -in "$WORK/child1/cert.pem" -noout -enddate | cut -d= -f2)" +%s)
[ "$child_end" -le "$parent_end" ] || fail "the child outlives its parent"
pass "a parent mints a token for its child; the child enrolls and does not outlive it"

# Outside the parent's path: a sibling, the parent itself, and a prefix that is not a path.
for bad in spiffe://corp.internal/gw-2/x spiffe://corp.internal/gw-1 spiffe://corp.internal/gw-10/x; do
	api "$WORK/gw1" /v1/tokens "{\"subject\":\"$bad\"}"
	status_is 403 "mint $bad"
	reason_is outside_parent_path "mint $bad"
done
pass "sibling paths and prefix tricks refused with 403"

# Depth: child (1) -> grandchild (2) -> great-grandchild (3) -> refused (4 > 3).
enroll "$(mint "$WORK/child1" spiffe://corp.internal/gw-1/child-1/g2)" "$WORK/g2"
enroll "$(mint "$WORK/g2" spiffe://corp.internal/gw-1/child-1/g2/g3)" "$WORK/g3"
api "$WORK/g3" /v1/tokens '{"subject":"spiffe://corp.internal/gw-1/child-1/g2/g3/g4"}'
status_is 403 "depth 4"
reason_is depth_exceeded "depth 4"
pass "nesting deeper than the limit refused"

# Nobody and auditors: no minting, no revoking.
api - /v1/tokens '{"subject":"spiffe://corp.internal/x"}'
status_is 401 "anonymous mint"
AUDITOR=$("$AGENTCA" admin token --dir "$CA" --role auditor --name alice)
api - /v1/revoke "{\"serial\":\"$(serial_of "$WORK/child1")\"}" "$AUDITOR"
status_is 403 "auditor revoke"
api - /v1/tokens '{"subject":"spiffe://corp.internal/x"}' "$AUDITOR"
status_is 403 "auditor mint"
api "$WORK/gw1" /v1/revoke "{\"serial\":\"$(serial_of "$WORK/child1")\"}"
status_is 403 "agent revoke"
pass "auditors and agents cannot revoke; auditors cannot mint"

# An admin mints for any subject, and revokes.
ADMIN=$("$AGENTCA" admin token --dir "$CA" --role admin --name bob)
api - /v1/tokens '{"subject":"spiffe://corp.internal/gw-7","ttl":"5m"}' "$ADMIN"
status_is 201 "admin mint"
api - /v1/revoke "{\"serial\":\"$(serial_of "$WORK/gw1")\",\"reason\":\"keyCompromise\"}" "$ADMIN"
status_is 200 "admin revoke"
grep -q '"children_revoked":3' "$WORK/body" || { cat "$WORK/body"; fail "revoking the parent must revoke its 3 nested agents"; }
api - /v1/revoke "{\"serial\":\"$(serial_of "$WORK/gw1")\"}" "$ADMIN"
status_is 409 "revoke twice"
api - /v1/revoke '{"serial":"00ff"}' "$ADMIN"
status_is 404 "revoke unknown"

# The revoked parent can neither renew nor mint.
make_ec_csr P-256 "$WORK/renew.csr"
api "$WORK/gw1" /v1/renew "{\"csr\":\"$(awk '{printf "%s\\n", $0}' "$WORK/renew.csr")\"}"
status_is 403 "renew revoked"
reason_is certificate_revoked "renew revoked"
api "$WORK/gw1" /v1/tokens '{"subject":"spiffe://corp.internal/gw-1/child-2"}'
status_is 403 "mint revoked"
# The nested agents went with their parent.
for child in child1 g2 g3; do
	api "$WORK/$child" /v1/renew "{\"csr\":\"$(awk '{printf "%s\\n", $0}' "$WORK/renew.csr")\"}"
	status_is 403 "renew $child after its parent was revoked"
done
expect_exit 1 "cli revoke of a revoked child" "$AGENTCA" revoke --dir "$CA" --serial "$(serial_of "$WORK/child1")"
stderr_has "already revoked" "child already revoked"
# The CLI revokes too, while the daemon runs; the daemon sees it.
enroll "$("$AGENTCA" token create --dir "$CA" --subject spiffe://corp.internal/solo)" "$WORK/solo"
expect_exit 0 "cli revoke" "$AGENTCA" revoke --dir "$CA" --serial "$(serial_of "$WORK/solo")"
api "$WORK/solo" /v1/renew "{\"csr\":\"$(awk '{printf "%s\\n", $0}' "$WORK/renew.csr")\"}"
status_is 403 "renew revoked by the CLI"
pass "admins revoke (API and CLI); a revoked parent takes its nested agents with it; a revoked certificate can neither renew nor mint"

# Certificates whose identity the configuration names: an admin and an auditor.
enroll "$("$AGENTCA" token create --dir "$CA" --subject spiffe://corp.internal/ops)" "$WORK/ops"
enroll "$("$AGENTCA" token create --dir "$CA" --subject spiffe://corp.internal/audit)" "$WORK/audit"
enroll "$("$AGENTCA" token create --dir "$CA" --subject spiffe://corp.internal/victim)" "$WORK/victim"
api "$WORK/audit" /v1/revoke "{\"serial\":\"$(serial_of "$WORK/victim")\"}"
status_is 403 "auditor certificate revoke"
api "$WORK/ops" /v1/revoke "{\"serial\":\"$(serial_of "$WORK/victim")\"}"
status_is 200 "admin certificate revoke"
api "$WORK/ops" /v1/tokens '{"subject":"spiffe://corp.internal/anywhere"}'
status_is 201 "admin certificate mints for any subject"
pass "certificate identities named in the configuration act as admin or auditor"

# The log names parents and actors, and verifies.
kill -TERM "$DAEMON"
wait "$DAEMON" || fail "serve exit"
expect_exit 0 "export" "$AGENTCA" audit export --dir "$CA"
cp "$WORK/stdout" "$WORK/log.jsonl"
grep '"kind":"issued"' "$WORK/log.jsonl" | grep '"subject":"spiffe://corp.internal/gw-1/child-1"' |
	grep -q '"parent":"spiffe://corp.internal/gw-1"' || fail "the child's issuance does not name its parent"
grep '"kind":"token_created"' "$WORK/log.jsonl" | grep -q '"actor":"admin:bob"' ||
	fail "the admin's token is not in the log with its actor"
grep '"kind":"revoked"' "$WORK/log.jsonl" | grep -q '"actor":"admin:bob"' ||
	fail "the admin's revocation is not in the log"
grep '"kind":"denied"' "$WORK/log.jsonl" | grep -q '"reason":"outside_parent_path"' ||
	fail "refused minting not in the log"
expect_exit 0 "verify" "$AGENTCA" audit verify "$WORK/log.jsonl"
pass "the log records parents, actors and refusals, and verifies"
