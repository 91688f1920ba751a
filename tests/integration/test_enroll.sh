#!/usr/bin/env bash
# The daemon on loopback with real clients: `agentca enroll` with a bootstrap token, the
# chain verified by openssl; the same token twice is refused, also after a restart; bad
# tokens, names beyond the token, garbage and oversized bodies, plaintext and a foreign
# client certificate each get their own error; renewal over mTLS; health and metrics.
. "$(dirname "$0")/lib.sh"

CA=$WORK/ca
expect_exit 0 "init" "$AGENTCA" init --dir "$CA" --name Test --trust-domain corp.internal
FP=$(openssl x509 -in "$CA/root.pem" -outform DER | sha256sum | cut -d' ' -f1)

# start_daemon: serve on a free loopback port; sets PORT and URL.
start_daemon() {
	: >"$WORK/serve.log"
	spawn "$AGENTCA" serve --dir "$CA" --listen 127.0.0.1:0 2>>"$WORK/serve.log"
	DAEMON=$SPAWNED
	for _ in $(seq 100); do
		grep -q '"event":"ca_ready"' "$WORK/serve.log" && break
		sleep 0.1
	done
	grep -q '"event":"ca_ready"' "$WORK/serve.log" || { cat "$WORK/serve.log"; fail "serve never ready"; }
	PORT=$(grep '"event":"listening"' "$WORK/serve.log" | tail -n1 | sed -E 's/.*\(port ([0-9]+)\).*/\1/')
	URL="https://127.0.0.1:$PORT"
}

stop_daemon() {
	kill -TERM "$DAEMON"
	wait "$DAEMON" || fail "serve did not exit 0 on SIGTERM"
}

start_daemon
pass "daemon listening on $URL"

# The server certificate names 127.0.0.1 and verifies against the root: no -k anywhere.
curl -sS --cacert "$CA/root.pem" "$URL/healthz" >"$WORK/health" || fail "healthz over TLS"
has "$WORK/health" '"status":"ok"' "healthz body"
pass "healthz over verified TLS"

# Request headers of 8 KiB (a long bearer token, many cookies from a proxy in front) fit in
# libmicrohttpd's per-connection memory (API_MHD_MEMORY in enrollment/api.c).
pad=$(head -c 8000 /dev/zero | tr '\0' 'h')
curl -sS --cacert "$CA/root.pem" -H "X-Padding: $pad" -o "$WORK/health" -w '%{http_code}' \
	"$URL/healthz" >"$WORK/status" || fail "healthz with 8 KiB of headers"
[ "$(cat "$WORK/status")" = 200 ] || fail "healthz with 8 KiB of headers: status $(cat "$WORK/status")"
has "$WORK/health" '"status":"ok"' "healthz body with 8 KiB of headers"
pass "8 KiB of request headers accepted"

# Plaintext to the TLS port: closed at once, nothing answered.
if curl -sS --max-time 5 "http://127.0.0.1:$PORT/healthz" >"$WORK/plain" 2>&1; then
	fail "plaintext request got an answer"
fi
if grep -q "status" "$WORK/plain"; then fail "plaintext got a body"; fi
pass "plaintext refused"

# Enroll with a token; the key stays here; the chain verifies with openssl.
TOKEN=$("$AGENTCA" token create --dir "$CA" --subject spiffe://corp.internal/gw-1 \
	--dns gw-1.corp.internal --ttl 10m)
expect_exit 0 "enroll" "$AGENTCA" enroll --ca "$URL" --token "$TOKEN" --fingerprint "$FP" \
	--out "$WORK/agent"
for f in key.pem cert.pem chain.pem bundle.pem; do [ -s "$WORK/agent/$f" ] || fail "no $f"; done
[ "$(file_mode "$WORK/agent/key.pem")" = 600 ] || fail "key.pem is not 0600"
openssl verify -CAfile "$CA/root.pem" -untrusted "$WORK/agent/chain.pem" "$WORK/agent/cert.pem" \
	>/dev/null || fail "enrolled certificate does not verify"
openssl x509 -in "$WORK/agent/cert.pem" -noout -text >"$WORK/agent.txt"
has "$WORK/agent.txt" "URI:spiffe://corp.internal/gw-1" "enrolled SPIFFE ID"
has "$WORK/agent.txt" "DNS:gw-1.corp.internal" "enrolled DNS name from the token"
cmp -s "$WORK/agent/bundle.pem" "$CA/root.pem" || fail "bundle.pem is not the root"
pass "enroll writes a verifiable identity"

# The same token again: refused, and no certificate issued.
expect_exit 1 "enroll replay" "$AGENTCA" enroll --ca "$URL" --token "$TOKEN" \
	--fingerprint "$FP" --out "$WORK/agent2"
stderr_has "token_used" "replay refused"
[ ! -e "$WORK/agent2/cert.pem" ] || fail "replay left a certificate"
pass "a token works once"

# A wrong fingerprint: refused before anything is sent.
expect_exit 1 "wrong fingerprint" "$AGENTCA" enroll --ca "$URL" --token "$TOKEN" \
	--fingerprint "$(printf '%064d' 0)" --out "$WORK/agent3"
stderr_has "fingerprint" "fingerprint mismatch named"

# Raw API calls with curl: each refusal has its own problem type.
# post BODYFILE -> status in $WORK/status, body in $WORK/body
post() {
	curl -sS --cacert "$CA/root.pem" -o "$WORK/body" -w '%{http_code}' \
		-H 'Content-Type: application/json' --data-binary "@$1" "$URL${2:-/v1/enroll}" \
		>"$WORK/status" || true
}
problem_is() {
	[ "$(cat "$WORK/status")" = "$1" ] || { cat "$WORK/body"; fail "$3: status $(cat "$WORK/status"), want $1"; }
	grep -q "urn:agentca:problem:$2" "$WORK/body" || { cat "$WORK/body"; fail "$3: want problem $2"; }
}

echo 'this is not json' >"$WORK/garbage.json"
post "$WORK/garbage.json"
problem_is 400 malformed_request "garbage body"

head -c $((1024 * 1024)) /dev/zero | tr '\0' 'a' >"$WORK/big.json"
post "$WORK/big.json"
problem_is 413 body_too_large "1 MiB body"
# At the limit (API_MAX_BODY, 64 KiB) the body reaches the handler; one byte more does not.
head -c $((64 * 1024)) /dev/zero | tr '\0' 'a' >"$WORK/limit.json"
post "$WORK/limit.json"
problem_is 400 malformed_request "a body of exactly 64 KiB"
printf 'a' >>"$WORK/limit.json"
post "$WORK/limit.json"
problem_is 413 body_too_large "a body of 64 KiB + 1"

# A token from another CA: signed with its key, not ours.
expect_exit 0 "init other" "$AGENTCA" init --dir "$WORK/other" --name Other --trust-domain corp.internal
OTHER=$("$AGENTCA" token create --dir "$WORK/other" --subject spiffe://corp.internal/gw-9)
make_ec_csr P-256 "$WORK/gw9.csr"
jq_body() { # token csrfile -> JSON body on stdout
	printf '{"token":"%s","csr":"%s"}' "$1" "$(awk '{printf "%s\\n", $0}' "$2")"
}
jq_body "$OTHER" "$WORK/gw9.csr" >"$WORK/other.json"
post "$WORK/other.json"
problem_is 401 token_bad_signature "token of another CA (signed by its key)"

# A tampered token (one payload byte changed).
T2=$("$AGENTCA" token create --dir "$CA" --subject spiffe://corp.internal/gw-2 --dns gw-2.corp.internal)
TAMPERED=$(echo "$T2" | awk -F. '{ p=$2; c=substr(p,5,1); r=(c=="A")?"B":"A"; print $1 "." substr(p,1,4) r substr(p,6) "." $3 }')
jq_body "$TAMPERED" "$WORK/gw9.csr" >"$WORK/tampered.json"
post "$WORK/tampered.json"
[ "$(cat "$WORK/status")" = 401 ] || { cat "$WORK/body"; fail "tampered token: want 401"; }

# An expired token, signed with the CA's own token key by openssl (the CLI refuses to mint
# one): refused as expired, nothing issued.
b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
openssl pkey -in "$CA/token.key" -passin env:AGENTCA_PASSWORD -out "$WORK/token-plain.key"
# sign_jwt CLAIMS-JSON: an ES256 JWT signed with the CA's bootstrap token key.
sign_jwt() {
	header=$(printf '{"alg":"ES256","typ":"JWT"}' | b64url)
	payload=$(printf '%s' "$1" | b64url)
	printf '%s.%s' "$header" "$payload" |
		openssl dgst -sha256 -sign "$WORK/token-plain.key" -out "$WORK/sig.der"
	# ECDSA-Sig-Value (DER) to JWS's fixed-width r||s.
	rs=$(openssl asn1parse -inform DER -in "$WORK/sig.der" | awk -F: '/INTEGER/ {print $NF}' |
		while read -r n; do printf '%064s' "${n#00}" | tr ' ' 0; done | tr -d '\n')
	printf '%s.%s.%s' "$header" "$payload" "$(printf '%b' "$(echo "$rs" | sed 's/../\\x&/g')" | b64url)"
}
now=$(date +%s)
EXPIRED=$(sign_jwt "$(printf '{"iss":"agentca","aud":"%s","sub":"spiffe://corp.internal/late","typ":"bootstrap","jti":"%s","iat":%d,"nbf":%d,"exp":%d,"dns":[],"depth":0}' \
	"$FP" "$(openssl rand -hex 16)" $((now - 7200)) $((now - 7200)) $((now - 3600)))")
jq_body "$EXPIRED" "$WORK/gw9.csr" >"$WORK/expired.json"
post "$WORK/expired.json"
problem_is 401 token_expired "expired token"
# The same key, but for another CA (audience).
ELSEWHERE=$(sign_jwt "$(printf '{"iss":"agentca","aud":"%064d","sub":"spiffe://corp.internal/late","typ":"bootstrap","jti":"%s","iat":%d,"nbf":%d,"exp":%d,"dns":[],"depth":0}' \
	0 "$(openssl rand -hex 16)" "$now" "$now" $((now + 600)))")
jq_body "$ELSEWHERE" "$WORK/gw9.csr" >"$WORK/aud.json"
post "$WORK/aud.json"
problem_is 401 token_wrong_audience "token for another audience"

# Names beyond the token: the CSR asks for a DNS name the token does not grant.
make_ec_csr P-256 "$WORK/beyond.csr" "DNS:gw-2.corp.internal,DNS:db.corp.internal"
jq_body "$T2" "$WORK/beyond.csr" >"$WORK/beyond.json"
post "$WORK/beyond.json"
problem_is 403 name_outside_policy "names beyond the token"
# ... and the token was not consumed by the refusal: a proper CSR still works.
make_ec_csr P-256 "$WORK/gw2.csr" "DNS:gw-2.corp.internal"
jq_body "$T2" "$WORK/gw2.csr" >"$WORK/gw2.json"
post "$WORK/gw2.json"
[ "$(cat "$WORK/status")" = 201 ] || { cat "$WORK/body"; fail "enroll after a refusal: want 201"; }
pass "garbage, oversized, foreign, tampered and over-reaching requests refused with their own errors"

# Renewal over mTLS with the enrolled certificate and a new key.
make_ec_csr P-256 "$WORK/renew.csr" "DNS:gw-1.corp.internal"
printf '{"csr":"%s"}' "$(awk '{printf "%s\\n", $0}' "$WORK/renew.csr")" >"$WORK/renew.json"
curl -sS --cacert "$CA/root.pem" --cert "$WORK/agent/cert.pem" --key "$WORK/agent/key.pem" \
	-o "$WORK/body" -D "$WORK/renew.headers" -w '%{http_code}' -H 'Content-Type: application/json' \
	--data-binary "@$WORK/renew.json" "$URL/v1/renew" >"$WORK/status" || true
RENEW_ID=$(tr -d '\r' <"$WORK/renew.headers" | awk -F': ' 'tolower($1) == "x-request-id" {print $2}')
[ -n "$RENEW_ID" ] || fail "no X-Request-Id on the answer"
[ "$(cat "$WORK/status")" = 200 ] || { cat "$WORK/body"; fail "renew: want 200"; }
has "$WORK/body" '"certificate"' "renew returns a certificate"
# Without a CSR: the same key, a new certificate for the same identity and names.
curl -sS --cacert "$CA/root.pem" --cert "$WORK/agent/cert.pem" --key "$WORK/agent/key.pem" \
	-o "$WORK/body" -w '%{http_code}' -X POST "$URL/v1/renew" >"$WORK/status" || true
[ "$(cat "$WORK/status")" = 200 ] || { cat "$WORK/body"; fail "renew without a CSR: want 200"; }
sed -E 's/.*"certificate":"([^"]*)".*/\1/; s/\\n/\n/g' "$WORK/body" >"$WORK/samekey.pem"
pub() { openssl x509 -in "$1" -noout -pubkey | sha256sum; }
[ "$(pub "$WORK/samekey.pem")" = "$(pub "$WORK/agent/cert.pem")" ] || fail "renewal without a CSR changed the key"
[ "$(openssl x509 -in "$WORK/samekey.pem" -noout -serial)" != "$(openssl x509 -in "$WORK/agent/cert.pem" -noout -serial)" ] ||
	fail "renewal without a CSR kept the serial"
openssl x509 -in "$WORK/samekey.pem" -noout -text | grep -q "DNS:gw-1.corp.internal" || fail "renewal lost the DNS name"
# Without a client certificate: refused.
post "$WORK/renew.json" /v1/renew
problem_is 401 client_certificate_required "renew without a certificate"
# With a certificate from a foreign CA: the handshake fails.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/evil.key" \
	-subj /CN=evil -addext "subjectAltName=URI:spiffe://corp.internal/gw-1" -days 1 \
	-out "$WORK/evil.pem" 2>/dev/null
if curl -sS --cacert "$CA/root.pem" --cert "$WORK/evil.pem" --key "$WORK/evil.key" \
	-H 'Content-Type: application/json' --data-binary "@$WORK/renew.json" \
	"$URL/v1/renew" >"$WORK/evil.out" 2>&1; then
	fail "a foreign client certificate was accepted"
fi
pass "renewal over mTLS, with a new key or the same one; refused without or with a foreign certificate"

# Metrics in Prometheus text format.
curl -sS --cacert "$CA/root.pem" "$URL/metrics" >"$WORK/metrics"
has "$WORK/metrics" 'agentca_http_requests_total{route="enroll",code="201"}' "request counter"
has "$WORK/metrics" 'agentca_requests_denied_total{reason="token_used"}' "denial counter"
has "$WORK/metrics" 'agentca_ca_certificate_expiry_seconds{cert="intermediate"}' "expiry gauge"
has "$WORK/metrics" 'agentca_tls_handshakes_total{result="plaintext_refused"}' "front counters"
has "$WORK/metrics" "agentca_log_commit_seconds_count" "log commit latency"
# The process metrics agree with what the kernel says about the daemon.
rss=$(sed -n 's/^process_resident_memory_bytes \([0-9]*\)$/\1/p' "$WORK/metrics")
kernel_rss=$(($(awk '/^VmRSS:/ {print $2}' "/proc/$DAEMON/status") * 1024))
[ -n "$rss" ] && [ "$rss" -gt $((kernel_rss / 2)) ] && [ "$rss" -lt $((kernel_rss * 2)) ] ||
	fail "process_resident_memory_bytes $rss is not the daemon's RSS ($kernel_rss)"
fds=$(sed -n 's/^process_open_fds \([0-9]*\)$/\1/p' "$WORK/metrics")
[ -n "$fds" ] && [ "$fds" -ge 5 ] && [ "$fds" -le $(($(ls "/proc/$DAEMON/fd" | wc -l) + 5)) ] ||
	fail "process_open_fds $fds is not the daemon's count"
grep -Eq '^process_start_time_seconds [0-9]{10}' "$WORK/metrics" || fail "no process start time"
grep -Eq '^process_cpu_seconds_total [0-9]' "$WORK/metrics" || fail "no process CPU time"
grep -Eq '^agentca_store_memory_bytes [1-9][0-9]{4,}$' "$WORK/metrics" || fail "no store memory gauge"
# The allocator's view (glibc malloc's; a sanitizer build has its own allocator, and the
# daemon then leaves these out): a heap below the RSS, and the free bytes malloc keeps.
if grep -qa '__asan_init' "$AGENTCA"; then
	grep -q '^agentca_heap_in_use_bytes' "$WORK/metrics" &&
		fail "agentca_heap_in_use_bytes reported under AddressSanitizer's allocator"
else
	heap=$(sed -n 's/^agentca_heap_in_use_bytes \([0-9]*\)$/\1/p' "$WORK/metrics")
	[ -n "$heap" ] && [ "$heap" -gt 100000 ] && [ "$heap" -lt "$kernel_rss" ] ||
		fail "agentca_heap_in_use_bytes '$heap' is not a heap below the RSS ($kernel_rss)"
	grep -Eq '^agentca_heap_free_bytes [0-9]+$' "$WORK/metrics" || fail "no heap free gauge"
fi
pass "metrics"

# A restart does not make a used token good again.
stop_daemon
start_daemon
expect_exit 1 "enroll replay after restart" "$AGENTCA" enroll --ca "$URL" --token "$TOKEN" \
	--fingerprint "$FP" --out "$WORK/agent4"
stderr_has "token_used" "replay after restart refused"
pass "a used token stays used across a restart"

# The log: every refusal recorded, no token in it, and it verifies.
stop_daemon
expect_exit 0 "export" "$AGENTCA" audit export --dir "$CA"
cp "$WORK/stdout" "$WORK/log.jsonl"
if grep -qF "$TOKEN" "$WORK/log.jsonl" "$WORK/serve.log"; then fail "a token leaked into a log"; fi
grep -q '"reason":"token_used"' "$WORK/log.jsonl" || fail "replay not in the log"
grep -q '"reason":"token_bad_signature"' "$WORK/log.jsonl" || fail "foreign token not in the log"
grep -q '"kind":"renewed"' "$WORK/log.jsonl" || fail "renewal not in the log"
grep '"kind":"renewed"' "$WORK/log.jsonl" | grep -q "\"request_id\":\"$RENEW_ID\"" ||
	fail "the renewal's log entry does not carry its request id"
expect_exit 0 "verify" "$AGENTCA" audit verify "$WORK/log.jsonl"
pass "refusals and renewals in the log; no token in any log"
