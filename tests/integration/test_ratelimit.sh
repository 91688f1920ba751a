#!/usr/bin/env bash
# Rate limits: a client address over its rate and an identity over its rate get 429 with a
# Retry-After header; /healthz is never limited; the limits come from config.json.
. "$(dirname "$0")/lib.sh"

CA=$WORK/ca
expect_exit 0 "init" "$AGENTCA" init --dir "$CA" --name Test --trust-domain corp.internal
cat >"$WORK/config.json" <<'JSON'
{"rate_limits":{"address_per_second":1,"address_burst":4,"identity_per_second":1,"identity_burst":2}}
JSON
spawn "$AGENTCA" serve --dir "$CA" --listen 127.0.0.1:0 --config "$WORK/config.json" 2>"$WORK/serve.log"
DAEMON=$SPAWNED
for _ in $(seq 100); do grep -q '"event":"ca_ready"' "$WORK/serve.log" && break; sleep 0.1; done
grep -q '"event":"ca_ready"' "$WORK/serve.log" || { cat "$WORK/serve.log"; fail "not ready"; }
PORT=$(grep '"event":"listening"' "$WORK/serve.log" | sed -E 's/.*\(port ([0-9]+)\).*/\1/')
URL="https://127.0.0.1:$PORT"

# The identity limit first (burst 2): the third mint by the same admin is refused. Each
# mint also spends one of the address's 4.
ADMIN=$("$AGENTCA" admin token --dir "$CA" --role admin --name carol)
codes=""
for i in 1 2 3; do
	code=$(curl -sS --cacert "$CA/root.pem" -o "$WORK/body" -D "$WORK/headers" -w '%{http_code}' \
		-H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
		--data-binary "{\"subject\":\"spiffe://corp.internal/r$i\"}" "$URL/v1/tokens")
	codes="$codes $code"
done
[ "$codes" = " 201 201 429" ] || fail "identity limit: got$codes, want 201 201 429"
grep -qi '^retry-after: [1-9]' "$WORK/headers" || fail "429 without Retry-After"
grep -q 'urn:agentca:problem:rate_limited' "$WORK/body" || fail "429 is not a problem document"
pass "an identity over its rate gets 429 with Retry-After"

# The address limit: one request left in the burst, then 429.
codes=""
for i in 1 2; do
	codes="$codes $(curl -sS --cacert "$CA/root.pem" -o /dev/null -D "$WORK/headers" \
		-w '%{http_code}' "$URL/v1/bundle")"
done
[ "$codes" = " 200 429" ] || fail "address limit: got$codes, want 200 429"
grep -qi '^retry-after: [1-9]' "$WORK/headers" || fail "429 without Retry-After"
code=$(curl -sS --cacert "$CA/root.pem" -o /dev/null -w '%{http_code}' "$URL/healthz")
[ "$code" = 200 ] || fail "healthz was limited"
sleep 2
code=$(curl -sS --cacert "$CA/root.pem" -o /dev/null -w '%{http_code}' "$URL/v1/bundle")
[ "$code" = 200 ] || fail "the address did not recover after waiting"
pass "an address over its rate gets 429; healthz is exempt; the rate refills"

curl -sS --cacert "$CA/root.pem" "$URL/metrics" | grep -q 'agentca_requests_denied_total{reason="rate_limited"}' ||
	fail "rate limiting not counted in metrics"
pass "rate limiting is counted"
