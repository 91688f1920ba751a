#!/usr/bin/env bash
# OCSP at /v1/ocsp and the revocation feed at /v1/revocations, driven by stock tools:
# `openssl ocsp` gets "good" for a fresh certificate with a response that verifies against the
# root; after `agentca revoke` (another process) it gets "revoked" with the time and reason
# within the cache-invalidation bound; a serial we never issued is "unknown"; a GET request
# (RFC 6960 appendix A) works; garbage gets malformedRequest. The feed lists revocations by log
# sequence, keeps them across a restart, and a long-poll is answered when a revocation happens.
. "$(dirname "$0")/lib.sh"

CA=$WORK/ca
expect_exit 0 "init" "$AGENTCA" init --dir "$CA" --name Test --trust-domain corp.internal
FP=$(openssl x509 -in "$CA/root.pem" -outform DER | sha256sum | cut -d' ' -f1)

start_daemon() {
	: >"$WORK/serve.log"
	spawn "$AGENTCA" serve --dir "$CA" --listen 127.0.0.1:0 2>"$WORK/serve.log"
	DAEMON=$SPAWNED
	for _ in $(seq 100); do grep -q '"event":"ca_ready"' "$WORK/serve.log" && break; sleep 0.1; done
	grep -q '"event":"ca_ready"' "$WORK/serve.log" || { cat "$WORK/serve.log"; fail "not ready"; }
	PORT=$(grep '"event":"listening"' "$WORK/serve.log" | sed -E 's/.*\(port ([0-9]+)\).*/\1/')
	URL="https://127.0.0.1:$PORT"
}
start_daemon

for name in good bad other; do
	t=$("$AGENTCA" token create --dir "$CA" --subject "spiffe://corp.internal/$name")
	"$AGENTCA" enroll --ca "$URL" --token "$t" --fingerprint "$FP" --out "$WORK/$name" >/dev/null ||
		fail "enroll $name"
done

# ocsp NAME [extra openssl ocsp options]: ask about $WORK/NAME/cert.pem; output in $WORK/ocsp.out.
ocsp() {
	name=$1
	shift
	openssl ocsp "$@" -issuer "$CA/intermediate.pem" -cert "$WORK/$name/cert.pem" \
		-url "$URL/v1/ocsp" -CAfile "$CA/root.pem" >"$WORK/ocsp.out" 2>&1 ||
		{ cat "$WORK/ocsp.out"; fail "openssl ocsp $name failed"; }
}

ocsp good
has "$WORK/ocsp.out" "Response verify OK" "the response's signature verifies against the root"
has "$WORK/ocsp.out" "cert.pem: good" "a fresh certificate is good"
grep -q "WARNING" "$WORK/ocsp.out" && { cat "$WORK/ocsp.out"; fail "openssl warned (nonce?)"; }
has "$WORK/ocsp.out" "Next Update" "a response has a nextUpdate"
pass "openssl ocsp: good, signature verified, nonce echoed"

ocsp good -no_nonce -sha256
has "$WORK/ocsp.out" "Response verify OK" "SHA-256 CertID: verifies"
has "$WORK/ocsp.out" "cert.pem: good" "SHA-256 CertID: good"
pass "a SHA-256 CertID without a nonce is answered too"

# policy.ocsp_url set to the daemon's own /v1/ocsp (SIGHUP): leaves carry it in their AIA,
# and openssl ocsp pointed at the URL from the certificate gets an answer.
jq --arg u "$URL/v1/ocsp" '.policy.ocsp_url = $u' "$CA/config.json" >"$WORK/config.json"
cp "$WORK/config.json" "$CA/config.json"
kill -HUP "$DAEMON"
for _ in $(seq 50); do grep -q '"event":"config_reloaded"' "$WORK/serve.log" && break; sleep 0.1; done
t=$("$AGENTCA" token create --dir "$CA" --subject "spiffe://corp.internal/aia")
"$AGENTCA" enroll --ca "$URL" --token "$t" --fingerprint "$FP" --out "$WORK/aia" >/dev/null ||
	fail "enroll aia"
aia=$(openssl x509 -in "$WORK/aia/cert.pem" -noout -ocsp_uri)
[ "$aia" = "$URL/v1/ocsp" ] || fail "the leaf's OCSP URL is '$aia', want $URL/v1/ocsp"
openssl ocsp -issuer "$CA/intermediate.pem" -cert "$WORK/aia/cert.pem" -url "$aia" \
	-CAfile "$CA/root.pem" >"$WORK/ocsp.out" 2>&1 || { cat "$WORK/ocsp.out"; fail "ocsp via AIA"; }
has "$WORK/ocsp.out" "cert.pem: good" "the AIA URL answers"
pass "with policy.ocsp_url set to /v1/ocsp, the leaf's AIA URL answers OCSP"

# Cached before the revocation: the next answers must not stay "good".
ocsp bad -no_nonce
has "$WORK/ocsp.out" "cert.pem: good" "good before the revocation"
bad=$(openssl x509 -in "$WORK/bad/cert.pem" -noout -serial | cut -d= -f2)
expect_exit 0 "revoke" "$AGENTCA" revoke --dir "$CA" --serial "$bad" --reason keyCompromise
# The daemon sees another process's revocation within a second (its watcher's period).
for _ in $(seq 30); do
	ocsp bad -no_nonce
	grep -q "cert.pem: revoked" "$WORK/ocsp.out" && break
	sleep 0.2
done
has "$WORK/ocsp.out" "cert.pem: revoked" "revoked after agentca revoke"
has "$WORK/ocsp.out" "Reason: keyCompromise" "the reason"
has "$WORK/ocsp.out" "Revocation Time" "the revocation time"
has "$WORK/ocsp.out" "Response verify OK" "a revoked answer verifies"
ocsp bad
has "$WORK/ocsp.out" "cert.pem: revoked" "revoked with a nonce too"
pass "openssl ocsp: revoked (with reason and time) once agentca revoke ran in another process"

# A serial of our intermediate that we never issued.
openssl ocsp -issuer "$CA/intermediate.pem" -serial 0x1234abcd -no_nonce -reqout "$WORK/unknown.req" \
	>/dev/null 2>&1 || fail "cannot make a request"
curl -sS --cacert "$CA/root.pem" -H 'Content-Type: application/ocsp-request' \
	--data-binary @"$WORK/unknown.req" -o "$WORK/unknown.resp" -w '%{http_code} %{content_type}' \
	"$URL/v1/ocsp" >"$WORK/status"
has "$WORK/status" "200 application/ocsp-response" "POST answer"
openssl ocsp -respin "$WORK/unknown.resp" -issuer "$CA/intermediate.pem" -serial 0x1234abcd \
	-CAfile "$CA/root.pem" >"$WORK/ocsp.out" 2>&1 || { cat "$WORK/ocsp.out"; fail "unknown"; }
has "$WORK/ocsp.out" "0x1234abcd: unknown" "a serial we never issued is unknown"
has "$WORK/ocsp.out" "Response verify OK" "an unknown answer verifies"
pass "a serial we never issued is unknown"

# GET /v1/ocsp/<url-encoded base64 of the request> (RFC 6960 appendix A.1).
openssl ocsp -issuer "$CA/intermediate.pem" -cert "$WORK/good/cert.pem" -no_nonce \
	-reqout "$WORK/good.req" >/dev/null 2>&1 || fail "cannot make a request"
b64=$(base64 -w0 "$WORK/good.req" | sed -e 's/+/%2B/g' -e 's|/|%2F|g' -e 's/=/%3D/g')
curl -sS --cacert "$CA/root.pem" -o "$WORK/get.resp" -w '%{http_code}' "$URL/v1/ocsp/$b64" \
	>"$WORK/status"
has "$WORK/status" "200" "GET answer"
openssl ocsp -respin "$WORK/get.resp" -issuer "$CA/intermediate.pem" -cert "$WORK/good/cert.pem" \
	-CAfile "$CA/root.pem" >"$WORK/ocsp.out" 2>&1 || { cat "$WORK/ocsp.out"; fail "GET"; }
has "$WORK/ocsp.out" "cert.pem: good" "GET: good"
has "$WORK/ocsp.out" "Response verify OK" "GET: verifies"
pass "GET /v1/ocsp/<base64> is answered like POST"

# Garbage, by POST and by GET: malformedRequest, and the daemon carries on.
head -c 300 /dev/urandom >"$WORK/garbage"
for how in post get; do
	if [ $how = post ]; then
		curl -sS --cacert "$CA/root.pem" --data-binary @"$WORK/garbage" -o "$WORK/bad.resp" \
			"$URL/v1/ocsp" || fail "POST garbage"
	else
		curl -sS --cacert "$CA/root.pem" -o "$WORK/bad.resp" "$URL/v1/ocsp/not*base64" ||
			fail "GET garbage"
	fi
	openssl ocsp -respin "$WORK/bad.resp" -resp_text -noverify >"$WORK/ocsp.out" 2>&1 || true
	grep -qi "malformedrequest" "$WORK/ocsp.out" || { cat "$WORK/ocsp.out"; fail "$how garbage"; }
done
ocsp good -no_nonce
has "$WORK/ocsp.out" "cert.pem: good" "still answering after garbage"
pass "garbage gets malformedRequest, by POST and GET"

# The feed: the revocation is listed with the log sequence.
feed() {
	curl -sS --cacert "$CA/root.pem" -w '\n%{http_code}' --max-time "${2:-10}" \
		"$URL/v1/revocations?$1" >"$WORK/feed.raw" || fail "feed $1"
	head -n -1 "$WORK/feed.raw" >"$WORK/feed.json"
	tail -n 1 "$WORK/feed.raw" >"$WORK/feed.status"
}
feed "since=0"
has "$WORK/feed.status" "200" "feed status"
jq -e --arg s "$(echo "$bad" | tr 'A-F' 'a-f')" \
	'.revoked | length == 1 and .[0].serial == $s and .[0].reason == "keyCompromise"
	 and (.[0].revoked_at | test("Z$")) and (.[0].not_after | test("Z$"))' \
	"$WORK/feed.json" >/dev/null || { cat "$WORK/feed.json"; fail "feed since=0"; }
SEQ=$(jq -r .sequence "$WORK/feed.json")
feed "since=$SEQ"
jq -e ".revoked == [] and .sequence >= $SEQ" "$WORK/feed.json" >/dev/null ||
	{ cat "$WORK/feed.json"; fail "nothing new after the sequence"; }
feed "since=abc"
has "$WORK/feed.status" "400" "a bad since"
feed "since=99999999"
has "$WORK/feed.status" "400" "a since beyond the log"
pass "the feed lists the revocation with its reason and times"

# Long-poll: answered when a revocation happens, well before the wait ends.
SEQ=$(jq -r .sequence "$WORK/feed.json" 2>/dev/null || echo "$SEQ")
feed "since=0"
SEQ=$(jq -r .sequence "$WORK/feed.json")
curl -sS --cacert "$CA/root.pem" --max-time 60 "$URL/v1/revocations?since=$SEQ&wait=120s" \
	>"$WORK/poll.json" &
POLL=$!
sleep 1
kill -0 "$POLL" 2>/dev/null || { cat "$WORK/poll.json"; fail "the long-poll answered at once"; }
other=$(openssl x509 -in "$WORK/other/cert.pem" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f')
expect_exit 0 "revoke other" "$AGENTCA" revoke --dir "$CA" --serial "$other"
wait "$POLL" || fail "the long-poll was not answered within 60 s of the revocation"
jq -e --arg s "$other" '.revoked | length == 1 and .[0].serial == $s and .[0].reason == "unspecified"' \
	"$WORK/poll.json" >/dev/null || { cat "$WORK/poll.json"; fail "long-poll content"; }
pass "a long-polling client is answered when a revocation happens"
LAST_BEFORE_NESTED=$(jq -r .sequence "$WORK/poll.json")

# An admin revokes a parent over the API: the parent's cached "good" goes at once (no retry),
# and its nested child, revoked with it, follows within a second; the feed lists both.
t=$("$AGENTCA" token create --dir "$CA" --subject "spiffe://corp.internal/gw-1")
"$AGENTCA" enroll --ca "$URL" --token "$t" --fingerprint "$FP" --out "$WORK/gw1" >/dev/null ||
	fail "enroll gw-1"
curl -sS --cacert "$CA/root.pem" --cert "$WORK/gw1/cert.pem" --key "$WORK/gw1/key.pem" \
	-H 'Content-Type: application/json' --data '{"subject":"spiffe://corp.internal/gw-1/child"}' \
	"$URL/v1/tokens" >"$WORK/child.token.json" || fail "mint child"
"$AGENTCA" enroll --ca "$URL" --token "$(jq -r .token "$WORK/child.token.json")" \
	--fingerprint "$FP" --out "$WORK/child" >/dev/null || fail "enroll child"
ocsp gw1 -no_nonce
has "$WORK/ocsp.out" "cert.pem: good" "parent good before"
ocsp child -no_nonce
has "$WORK/ocsp.out" "cert.pem: good" "child good before"
ADMIN=$("$AGENTCA" admin token --dir "$CA" --role admin --name ops)
gw1=$(openssl x509 -in "$WORK/gw1/cert.pem" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f')
child=$(openssl x509 -in "$WORK/child/cert.pem" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f')
curl -sS --cacert "$CA/root.pem" -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
	--data "{\"serial\":\"$gw1\",\"reason\":\"superseded\"}" "$URL/v1/revoke" >"$WORK/revoke.json"
jq -e '.children_revoked == 1' "$WORK/revoke.json" >/dev/null || { cat "$WORK/revoke.json"; fail "API revoke"; }
ocsp gw1 -no_nonce
has "$WORK/ocsp.out" "cert.pem: revoked" "the parent is revoked in the very next OCSP answer"
has "$WORK/ocsp.out" "Reason: superseded" "the parent's reason"
for _ in $(seq 30); do
	ocsp child -no_nonce
	grep -q "cert.pem: revoked" "$WORK/ocsp.out" && break
	sleep 0.2
done
has "$WORK/ocsp.out" "cert.pem: revoked" "the nested child is revoked too"
has "$WORK/ocsp.out" "Reason: cessationOfOperation" "the child's reason"
feed "since=$LAST_BEFORE_NESTED"
jq -e --arg p "$gw1" --arg c "$child" '[.revoked[].serial] | sort == ([$p, $c] | sort)' \
	"$WORK/feed.json" >/dev/null || { cat "$WORK/feed.json"; fail "the feed lacks parent and child"; }
pass "POST /v1/revoke: the parent is revoked in OCSP at once, its nested child within a second; both in the feed"

# /metrics counts the answers by status, and the cache at work.
curl -sS --cacert "$CA/root.pem" "$URL/metrics" >"$WORK/metrics" || fail "metrics"
for status in good revoked unknown malformedRequest; do
	grep -Eq "^agentca_ocsp_responses_total\{status=\"$status\"\} [1-9]" "$WORK/metrics" ||
		{ grep ocsp "$WORK/metrics"; fail "no $status answer counted"; }
done
grep -Eq '^agentca_ocsp_cache_hits_total [1-9]' "$WORK/metrics" || fail "no cache hit counted"
pass "/metrics counts OCSP answers by status and cache hits"

# The sequence is the log's: stable across a restart.
feed "since=0"
LAST=$(jq -r .sequence "$WORK/feed.json")
kill -TERM "$DAEMON"
wait "$DAEMON" || fail "serve exit"
start_daemon
feed "since=0"
jq -e '.revoked | length == 4' "$WORK/feed.json" >/dev/null || { cat "$WORK/feed.json"; fail "after restart"; }
feed "since=$LAST"
jq -e '.revoked == []' "$WORK/feed.json" >/dev/null || { cat "$WORK/feed.json"; fail "sequence moved"; }
ocsp bad -no_nonce
has "$WORK/ocsp.out" "cert.pem: revoked" "revoked after a restart"
pass "after a restart the feed's sequences still hold and OCSP still says revoked"

kill -TERM "$DAEMON"
wait "$DAEMON" || fail "serve exit"
