#!/usr/bin/env bash
# TLS configuration as an outside scanner sees it: testssl.sh (Debian) against the API port
# and an integrated proxy listener must find no protocol below TLS 1.2, no suite that is not AEAD, no group other than
# X25519 and P-256, and no plaintext acceptance. The same checks run first against a
# deliberately weak openssl s_server, to show that they catch what they look for.
. "$(dirname "$0")/lib.sh"

command -v testssl >/dev/null || fail "testssl (Debian package testssl.sh) is not installed"

# scan HOST:PORT NAME: testssl's protocol, cipher-per-protocol and forward-secrecy checks,
# as CSV in $WORK/NAME.csv.
scan() {
	testssl --quiet --color 0 --warnings off --openssl /usr/bin/openssl -p -E -f \
		--csvfile "$WORK/$2.csv" "$1" >"$WORK/$2.out" 2>&1 ||
		true # testssl exits non-zero for findings; the CSV is what we judge
	[ -s "$WORK/$2.csv" ] || { cat "$WORK/$2.out" >&2; fail "testssl wrote no results for $2"; }
}

# violations NAME: one line per finding that breaks the policy; nothing when it holds.
violations() {
	csv=$WORK/$1.csv
	for proto in SSLv2 SSLv3 TLS1 TLS1_1; do
		grep -E "^\"$proto\"," "$csv" | grep -vq 'not offered' && echo "$proto offered"
	done
	grep -qE '^"TLS1_2",.*"offered' "$csv" || echo "TLS 1.2 not offered"
	grep -E '^"cipher-tls' "$csv" | grep -vE 'AESGCM|ChaCha20|AESCCM' |
		sed -E 's/^"[^"]*","[^"]*","[^"]*","[^"]*","([^"]*)".*/non-AEAD suite: \1/' |
		tr -s ' '
	grep -E '^"PFS_ECDHE_curves",' "$csv" |
		sed -E 's/^"[^"]*","[^"]*","[^"]*","[^"]*","([^"]*)".*/\1/' | tr ' ' '\n' |
		grep -vE '^(prime256v1|X25519|)$' | sed 's/^/weak group: /'
	return 0
}

# The control: TLS 1.1 with a CBC suite must be reported.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=weak \
	-keyout "$WORK/weak.key" -out "$WORK/weak.pem" 2>/dev/null
# Port 0: the kernel picks a free one, which s_server reports as "ACCEPT 127.0.0.1:PORT" (a
# random port could be taken by another test running in parallel, and the scan would then
# judge that test's server).
spawn openssl s_server -accept 127.0.0.1:0 -cert "$WORK/weak.pem" -key "$WORK/weak.key" \
	-tls1_1 -cipher 'ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0' -www >"$WORK/weak.log" 2>&1
WEAK_PORT=
for _ in $(seq 50); do
	WEAK_PORT=$(sed -nE 's/^ACCEPT 127\.0\.0\.1:([0-9]+)$/\1/p' "$WORK/weak.log")
	[ -n "$WEAK_PORT" ] && break
	sleep 0.1
done
[ -n "$WEAK_PORT" ] || { cat "$WORK/weak.log"; fail "the weak s_server did not start"; }
scan "127.0.0.1:$WEAK_PORT" weak
violations weak >"$WORK/weak.violations"
grep -q 'TLS1_1 offered' "$WORK/weak.violations" || fail "the checks miss TLS 1.1 on the weak server"
grep -q 'non-AEAD suite' "$WORK/weak.violations" || fail "the checks miss a CBC suite on the weak server"
pass "the checks catch a weak server ($(wc -l <"$WORK/weak.violations") findings)"

# The daemon's API port and an integrated proxy listener (the scanner has no client
# certificate: the proxy refuses it after the ServerHello, which is all the scan needs).
CA=$WORK/ca
"$AGENTCA" init --dir "$CA" --name TLS --trust-domain corp.internal >/dev/null 2>&1 || fail "init"
cat >"$CA/config.json" <<JSON
{"proxy": {"listeners": [{"listen": "127.0.0.1:0", "upstream": "127.0.0.1:9",
                          "allow": ["spiffe://corp.internal/**"]}]}}
JSON
spawn "$AGENTCA" serve --dir "$CA" --listen 127.0.0.1:0 2>"$WORK/serve.log"
for _ in $(seq 100); do
	grep -q '"event":"ca_ready"' "$WORK/serve.log" && break
	sleep 0.1
done
PORT=$(grep '"event":"listening"' "$WORK/serve.log" | tail -n1 | sed -E 's/.*\(port ([0-9]+)\).*/\1/')
PROXY_PORT=$(grep '"event":"proxy_listening"' "$WORK/serve.log" | tail -n1 | sed -E 's/.*\(port ([0-9]+)\).*/\1/')
[ -n "$PORT" ] && [ -n "$PROXY_PORT" ] || { cat "$WORK/serve.log"; fail "serve never listened"; }
scan "127.0.0.1:$PORT" api &
SCAN_API=$!
scan "127.0.0.1:$PROXY_PORT" proxy
wait "$SCAN_API" || fail "the scan of the API port failed"
for port in api proxy; do
	violations "$port" >"$WORK/$port.violations"
	if [ -s "$WORK/$port.violations" ]; then
		cat "$WORK/$port.violations" >&2
		fail "the $port port breaks the TLS policy"
	fi
	grep -qE '^"TLS1_3",.*"offered' "$WORK/$port.csv" || fail "TLS 1.3 not offered on the $port port"
	[ "$(grep -c '^"cipher-tls' "$WORK/$port.csv")" -ge 3 ] || fail "testssl listed too few suites on $port"
	pass "$port port: TLS 1.2 and 1.3 only, AEAD suites only, X25519 and P-256 only"
done

# Plaintext is not accepted: an HTTP request gets no HTTP answer on either port.
for port in "$PORT" "$PROXY_PORT"; do
	if curl -sS --max-time 5 "http://127.0.0.1:$port/healthz" >"$WORK/plain" 2>&1; then
		fail "plaintext HTTP got an answer on port $port"
	fi
	grep -q '"status"' "$WORK/plain" && fail "plaintext HTTP got a body on port $port"
done
pass "API and proxy ports: plaintext refused"
