#!/usr/bin/env bash
# `agentca proxy` (standalone) with real clients: it enrolls itself with a token, then
# forwards an allowed client (curl and openssl s_client) to a loopback upstream, bytes both
# ways, and resumes from the proxy's ticket (TLS 1.3 and 1.2); a client without a
# certificate, from a foreign CA, with an identity no rule allows, with an expired
# certificate, and one speaking plaintext are each refused with their reason in the session
# log and the diagnostic log, and not one connection reaches the upstream.
# A TLS upstream is verified: with a certificate the bundle does not trust the proxy fails
# closed; with ours it forwards, with a PROXY v2 header carrying the client's identity.
# A renewed certificate is swapped in on SIGHUP for new connections.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/proxy_lib.sh"

ca_init
start_daemon
start_upstream http http
PX=$WORK/px
PTOKEN=$("$AGENTCA" token create --dir "$CA" --subject spiffe://corp.internal/proxy --dns proxy.corp.internal)

# Usage errors: exit 2.
expect_exit 2 "proxy without --upstream" "$AGENTCA" proxy --listen 127.0.0.1:0 --ca "$URL" --out "$PX"
expect_exit 2 "proxy --config mixed with flags" "$AGENTCA" proxy --config /dev/null --listen 127.0.0.1:0
expect_exit 1 "proxy with a malformed allow rule" "$AGENTCA" proxy --listen 127.0.0.1:0 \
	--upstream "127.0.0.1:$UPORT_http" --ca "$URL" --out "$PX" --token "$PTOKEN" --fingerprint "$FP" \
	--allow 'spiffe://corp.internal/cl*'
stderr_has 'allow rule "spiffe://corp.internal/cl*"' "malformed rule named"
pass "usage errors and malformed rules are refused with one line"

AGENTCA_LOG_LEVEL=info spawn "$AGENTCA" proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$UPORT_http" \
	--ca "$URL" --out "$PX" --token "$PTOKEN" --fingerprint "$FP" --allow 'spiffe://corp.internal/client/*' \
	--allow dns:legacy.corp.internal 2>"$WORK/proxy.log"
PROXY=$SPAWNED
wait_for "$WORK/proxy.log" '"event":"proxy_ready"' "proxy ready"
PPORT=$(grep '"event":"proxy_listening"' "$WORK/proxy.log" | sed -E 's/.*\(port ([0-9]+)\).*/\1/')
[ "$(file_mode "$PX/key.pem")" = 600 ] || fail "the proxy's key is not 0600"
openssl x509 -in "$PX/cert.pem" -noout -text | grep -q 'URI:spiffe://corp.internal/proxy' ||
	fail "the proxy did not enroll as spiffe://corp.internal/proxy"
if grep -qF "$PTOKEN" "$WORK/proxy.log"; then fail "the token is in the proxy's log"; fi
# The CA serves the revocation feed: the proxy's first poll (at start) neither misses it nor
# fails.
sleep 2
if grep -qE '"event":"proxy_(no_revocation_feed|revocations_failed)"' "$WORK/proxy.log"; then
	cat "$WORK/proxy.log" >&2
	fail "the proxy could not read the CA's revocation feed"
fi
pass "the proxy enrolled itself and listens on $PPORT"
SLOG=$PX/proxy-sessions.jsonl

enroll_client "$WORK/a" spiffe://corp.internal/client/a
enroll_client "$WORK/b" spiffe://corp.internal/other/b
enroll_client "$WORK/legacy" spiffe://corp.internal/legacy legacy.corp.internal
PURL="https://proxy.corp.internal:$PPORT/"
RESOLVE="proxy.corp.internal:$PPORT:127.0.0.1"

# Allowed: curl, with the proxy verified by name against the bundle (no -k).
curl -sS --max-time 10 --resolve "$RESOLVE" --cacert "$WORK/a/bundle.pem" \
	--cert "$WORK/a/cert.pem" --key "$WORK/a/key.pem" "$PURL" >"$WORK/a.out" ||
	fail "curl through the proxy"
has "$WORK/a.out" "hello from upstream" "the upstream's answer came back"
[ "$(upstream_conns http)" = 1 ] || fail "want one upstream connection, got $(upstream_conns http)"
grep -q 'conn=1 bytes=[1-9]' "$WORK/http.rec" || fail "the request did not reach the upstream"
grep -aq "GET / HTTP/1.1" "$WORK/http.dump/conn-1.bin" || fail "the upstream did not get curl's request"
wait_for "$SLOG" '"identity":"spiffe://corp.internal/client/a"' "allowed session logged" 50
grep -F '"identity":"spiffe://corp.internal/client/a"' "$SLOG" | grep -F '"outcome":"closed"' |
	grep -q '"tls_version":"TLSv1.3"' || { cat "$SLOG"; fail "session entry lacks identity or TLS version"; }
grep -F '"identity":"spiffe://corp.internal/client/a"' "$SLOG" | grep -q '"bytes_down":[1-9]' ||
	fail "session entry lacks the bytes sent down"
pass "an allowed SPIFFE ID passes data both ways (curl); the session is logged"

# Allowed by DNS SAN, with openssl s_client.
printf 'GET /s_client HTTP/1.0\r\n\r\n' | openssl s_client -connect "127.0.0.1:$PPORT" \
	-servername proxy.corp.internal -verify_hostname proxy.corp.internal -verify_return_error \
	-CAfile "$WORK/legacy/bundle.pem" -cert "$WORK/legacy/cert.pem" -key "$WORK/legacy/key.pem" \
	-quiet >"$WORK/legacy.out" 2>"$WORK/legacy.err" || { cat "$WORK/legacy.err"; fail "s_client"; }
has "$WORK/legacy.out" "hello from upstream" "s_client got the answer"
[ "$(upstream_conns http)" = 2 ] || fail "s_client's session did not reach the upstream"
grep -aq "GET /s_client" "$WORK/http.dump/conn-2.bin" || fail "the upstream did not get s_client's bytes"
pass "an allowed DNS SAN passes data both ways (openssl s_client)"

# Resumption from the proxy's session ticket, TLS 1.3 and 1.2: the second connection is
# resumed, not a full handshake, and admitted with the identity its ticket carries.
for v in tls1_3 tls1_2; do
	for sess in out in; do
		(printf 'GET /%s-%s HTTP/1.0\r\n\r\n' "$v" "$sess"; sleep 1) |
			openssl s_client -connect "127.0.0.1:$PPORT" -"$v" -servername proxy.corp.internal \
				-verify_hostname proxy.corp.internal -verify_return_error \
				-CAfile "$WORK/legacy/bundle.pem" -cert "$WORK/legacy/cert.pem" \
				-key "$WORK/legacy/key.pem" -sess_"$sess" "$WORK/$v.sess" \
				>"$WORK/$v-$sess.out" 2>&1 || { cat "$WORK/$v-$sess.out"; fail "s_client -$v -sess_$sess"; }
		has "$WORK/$v-$sess.out" "hello from upstream" "the $v $sess answer came back"
	done
	grep -q '^New, ' "$WORK/$v-out.out" || fail "$v: the first connection was not a full handshake"
	grep -q '^Reused, ' "$WORK/$v-in.out" || { cat "$WORK/$v-in.out"; fail "$v: the proxy did not resume the session from its ticket"; }
done
wait_for "$SLOG" '"tls_version":"TLSv1.2"' "the TLS 1.2 sessions logged" 50
[ "$(grep -F '"identity":"spiffe://corp.internal/legacy"' "$SLOG" | grep -c '"outcome":"closed"')" -ge 5 ] ||
	{ cat "$SLOG"; fail "the resumed sessions are not logged with the ticket's identity"; }
pass "clients resume from the proxy's ticket (TLS 1.3 and 1.2), with the identity it carries"

# Refusals: each with its reason, none reaching the upstream.
before=$(upstream_conns http)

if curl -sS --max-time 10 --resolve "$RESOLVE" --cacert "$WORK/a/bundle.pem" "$PURL" >/dev/null 2>&1; then
	fail "a client without a certificate got through"
fi
session_has "$SLOG" no_client_certificate "no certificate"
pass "no client certificate: refused (no_client_certificate)"

foreign_client "$WORK/foreign"
if curl -sS --max-time 10 --resolve "$RESOLVE" --cacert "$WORK/a/bundle.pem" \
	--cert "$WORK/foreign/cert.pem" --key "$WORK/foreign/key.pem" "$PURL" >/dev/null 2>&1; then
	fail "a foreign CA's client got through"
fi
session_has "$SLOG" certificate_untrusted "foreign CA"
pass "a certificate from a foreign CA: refused (certificate_untrusted)"

if curl -sS --max-time 10 --resolve "$RESOLVE" --cacert "$WORK/b/bundle.pem" \
	--cert "$WORK/b/cert.pem" --key "$WORK/b/key.pem" "$PURL" >"$WORK/b.out" 2>&1; then
	fail "a disallowed identity got through"
fi
session_has "$SLOG" identity_not_allowed "disallowed identity"
grep -F '"reason":"identity_not_allowed"' "$SLOG" | grep -q 'spiffe://corp.internal/other/b' ||
	fail "the refusal does not name the identity"
pass "an identity no rule allows: refused (identity_not_allowed)"

expired_client "$WORK/old" spiffe://corp.internal/client/old
if curl -sS --max-time 10 --resolve "$RESOLVE" --cacert "$WORK/a/bundle.pem" \
	--cert "$WORK/old/cert.pem" --key "$WORK/old/key.pem" "$PURL" >/dev/null 2>&1; then
	fail "an expired certificate got through"
fi
session_has "$SLOG" certificate_expired "expired certificate"
pass "an expired certificate: refused (certificate_expired)"

if curl -sS --max-time 10 "http://127.0.0.1:$PPORT/" >"$WORK/plain.out" 2>&1; then
	fail "plaintext HTTP got an answer"
fi
session_has "$SLOG" plaintext "plaintext"
pass "plaintext: refused (plaintext)"

sleep 0.5
[ "$(upstream_conns http)" = "$before" ] || { cat "$WORK/http.rec"; fail "a refused client reached the upstream"; }
for r in no_client_certificate certificate_untrusted identity_not_allowed certificate_expired plaintext; do
	grep '"event":"proxy_refused"' "$WORK/proxy.log" | grep -qF "refused: $r" ||
		fail "no proxy_refused line for $r in the diagnostic log"
done
pass "no refused client opened a connection to the upstream; each refusal is in the log"

# Metrics: the status file counts refusals by reason and the certificate's remaining life.
# (the file is rewritten every 5 s; plaintext was the last refusal)
wait_for "$PX/proxy-metrics.prom" 'agentca_proxy_refused_total{reason="plaintext"} 1' "metrics" 80
has "$PX/proxy-metrics.prom" 'agentca_proxy_refused_total{reason="identity_not_allowed"} 1' "refusal counted"
grep -Eq '^agentca_proxy_certificate_expiry_seconds [1-9][0-9]+' "$PX/proxy-metrics.prom" ||
	fail "no certificate expiry gauge"
grep -Eq '^agentca_proxy_bytes_total\{direction="down"\} [1-9]' "$PX/proxy-metrics.prom" ||
	fail "no bytes counted"
pass "metrics: refusals by reason, bytes, certificate expiry"

# The verified-chain cache, end to end: client a comes back once per worker (with its first
# connection above, one more connection than there are workers, so some worker sees the
# certificate twice and takes its chain from its cache); each passes, and hits are counted.
for i in $(seq "$(nproc)"); do
	curl -sS --max-time 10 --resolve "$RESOLVE" --cacert "$WORK/a/bundle.pem" \
		--cert "$WORK/a/cert.pem" --key "$WORK/a/key.pem" "$PURL" >"$WORK/again.out" 2>&1 ||
		{ cat "$WORK/again.out"; fail "client a, back for the ${i}th time, was refused"; }
	has "$WORK/again.out" "hello from upstream" "client a, back again"
done
for _ in $(seq 80); do
	grep -Eq '^agentca_proxy_verify_cache_total\{result="hit"\} [1-9]' "$PX/proxy-metrics.prom" && break
	sleep 0.1
done
grep -Eq '^agentca_proxy_verify_cache_total\{result="hit"\} [1-9]' "$PX/proxy-metrics.prom" ||
	{ grep verify_cache "$PX/proxy-metrics.prom"; fail "no verify cache hit counted"; }
pass "a returning client certificate is taken from the verify cache and passes (curl)"

# A renewal of the proxy's certificate (here forced from outside, then SIGHUP; the proxy's
# own loop does the same when it is due) is swapped in for new connections.
presented() {
	openssl s_client -connect "127.0.0.1:$PPORT" -servername proxy.corp.internal \
		-CAfile "$WORK/a/bundle.pem" -cert "$WORK/a/cert.pem" -key "$WORK/a/key.pem" </dev/null 2>/dev/null |
		openssl x509 -noout -serial
}
old_serial=$(presented)
[ "$old_serial" = "$(openssl x509 -in "$PX/cert.pem" -noout -serial)" ] || fail "the proxy presents another certificate than $PX/cert.pem"
expect_exit 0 "renew the proxy's certificate" "$AGENTCA" agent --ca "$URL" --out "$PX" --once --force
kill -HUP "$PROXY"
wait_for "$WORK/proxy.log" '"event":"proxy_material_swapped"' "renewed certificate swapped in"
new_serial=$(presented)
[ "$new_serial" != "$old_serial" ] && [ "$new_serial" = "$(openssl x509 -in "$PX/cert.pem" -noout -serial)" ] ||
	fail "new connections still get $old_serial"
pass "a renewed certificate is swapped in on SIGHUP: new connections get it"

kill -TERM "$PROXY"
wait "$PROXY" || fail "proxy did not exit 0 on SIGTERM"
pass "SIGTERM: the proxy drains and exits 0"

# TLS upstreams, from a config file with two listeners: one upstream with a certificate from
# a foreign CA (must fail closed), one with a certificate from our CA (forwards, with PROXY v2).
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/up.key" \
	-subj "/CN=upstream" -addext "subjectAltName=DNS:upstream.corp.internal" -out "$WORK/up.csr" 2>/dev/null
expect_exit 0 "issue upstream cert" "$AGENTCA" issue --dir "$CA" --csr "$WORK/up.csr" \
	--subject spiffe://corp.internal/upstream
cp "$WORK/stdout" "$WORK/up.pem"
start_upstream good --tls "$WORK/up.pem" "$WORK/up.key" http
start_upstream evil --tls "$WORK/foreign/cert.pem" "$WORK/foreign/key.pem" http
cat >"$WORK/proxy.json" <<JSON
{
  "ca": "$URL", "out": "$PX", "bundle_interval": "1h",
  "proxy": {
    "listeners": [
      {"listen": "127.0.0.1:0", "upstream": "127.0.0.1:$UPORT_good", "upstream_mode": "tls",
       "upstream_name": "upstream.corp.internal", "proxy_protocol": true,
       "allow": ["spiffe://corp.internal/client/**"]},
      {"listen": "127.0.0.1:0", "upstream": "127.0.0.1:$UPORT_evil", "upstream_mode": "tls",
       "upstream_name": "upstream.corp.internal", "allow": ["spiffe://corp.internal/client/**"]}
    ]
  }
}
JSON
expect_exit 1 "unknown key in a listener" "$AGENTCA" proxy --config <(sed 's/"proxy_protocol"/"proxy_protocl"/' "$WORK/proxy.json")
stderr_has 'proxy.listeners[0].proxy_protocl' "unknown key named with its path"
AGENTCA_LOG_LEVEL=info spawn "$AGENTCA" proxy --config "$WORK/proxy.json" 2>"$WORK/proxy2.log"
PROXY=$SPAWNED
wait_for "$WORK/proxy2.log" '"event":"proxy_ready"' "proxy from config ready"
GOOD=$(grep '"event":"proxy_listening"' "$WORK/proxy2.log" | grep "$UPORT_good" | sed -E 's/.*\(port ([0-9]+)\).*/\1/')
EVIL=$(grep '"event":"proxy_listening"' "$WORK/proxy2.log" | grep "$UPORT_evil" | sed -E 's/.*\(port ([0-9]+)\).*/\1/')

curl -sS --max-time 10 --resolve "proxy.corp.internal:$GOOD:127.0.0.1" --cacert "$WORK/a/bundle.pem" \
	--cert "$WORK/a/cert.pem" --key "$WORK/a/key.pem" "https://proxy.corp.internal:$GOOD/" >"$WORK/good.out" ||
	fail "curl through the TLS upstream"
has "$WORK/good.out" "hello from upstream" "answer through the TLS upstream"
grep -aq 'spiffe://corp.internal/client/a' "$WORK/good.dump/conn-1.bin" ||
	fail "the PROXY v2 header does not carry the client's SPIFFE ID"
head -c 12 "$WORK/good.dump/conn-1.bin" | od -An -tx1 | tr -d ' \n' | grep -q '^0d0a0d0a000d0a515549540a$' ||
	fail "the upstream's first bytes are not the PROXY v2 signature"
pass "TLS upstream verified by name against the bundle; PROXY v2 header with the client's identity"

# Upstream resumption: the next connection offers the ticket the upstream gave the first one;
# after the proxy's certificate is renewed (a new client context), a full handshake again.
good_curl() {
	curl -sS --max-time 10 --resolve "proxy.corp.internal:$GOOD:127.0.0.1" --cacert "$WORK/a/bundle.pem" \
		--cert "$WORK/a/cert.pem" --key "$WORK/a/key.pem" "https://proxy.corp.internal:$GOOD/" >"$WORK/good.out" ||
		fail "curl through the TLS upstream"
	has "$WORK/good.out" "hello from upstream" "answer through the TLS upstream"
}
grep -q '^conn=1 .*tls=full$' "$WORK/good.rec" || { cat "$WORK/good.rec"; fail "the first upstream handshake was not a full one"; }
good_curl
wait_for "$WORK/good.rec" "conn=2 " "second connection through the TLS upstream"
grep -q '^conn=2 .*tls=resumed$' "$WORK/good.rec" || { cat "$WORK/good.rec"; fail "the proxy did not resume its upstream session"; }
expect_exit 0 "renew the proxy's certificate" "$AGENTCA" agent --ca "$URL" --out "$PX" --once --force
kill -HUP "$PROXY"
wait_for "$WORK/proxy2.log" '"event":"proxy_material_swapped"' "renewed certificate swapped in"
good_curl
wait_for "$WORK/good.rec" "conn=3 " "third connection through the TLS upstream"
grep -q '^conn=3 .*tls=full$' "$WORK/good.rec" || { cat "$WORK/good.rec"; fail "a session from the old certificate was resumed after the swap"; }
pass "TLS upstream sessions are resumed from the upstream's tickets, and not across a certificate swap"

if curl -sS --max-time 10 --resolve "proxy.corp.internal:$EVIL:127.0.0.1" --cacert "$WORK/a/bundle.pem" \
	--cert "$WORK/a/cert.pem" --key "$WORK/a/key.pem" "https://proxy.corp.internal:$EVIL/" >"$WORK/evil.out" 2>&1; then
	fail "the proxy forwarded to an upstream the bundle does not trust"
fi
session_has "$PX/proxy-sessions.jsonl" upstream_tls_failed "wrong upstream CA"
wait_for "$WORK/evil.rec" "tls_failed" "the untrusted upstream saw only a failed handshake"
grep -q 'bytes=[1-9]' "$WORK/evil.rec" && fail "application bytes reached the untrusted upstream"
pass "TLS upstream with a wrong CA: fails closed (upstream_tls_failed), no byte sent"

# SIGHUP reads --config again: the first listener now allows only client/b, so client/a is
# refused; a changed timeout is named as needing a restart.
sed -i -e '0,/"allow": \["spiffe:\/\/corp.internal\/client\/\*\*"\]/s//"allow": ["spiffe:\/\/corp.internal\/client\/b"]/' \
	-e 's/"bundle_interval": "1h"/"bundle_interval": "2h"/' "$WORK/proxy.json"
kill -HUP "$PROXY"
wait_for "$WORK/proxy2.log" '"event":"proxy_rules_reloaded"' "standalone proxy rules reloaded"
grep '"event":"config_restart_needed"' "$WORK/proxy2.log" | grep -q 'bundle_interval' ||
	fail "the standalone proxy did not name the restart-only change"
if curl -sS --max-time 10 --resolve "proxy.corp.internal:$GOOD:127.0.0.1" --cacert "$WORK/a/bundle.pem" \
	--cert "$WORK/a/cert.pem" --key "$WORK/a/key.pem" "https://proxy.corp.internal:$GOOD/" >/dev/null 2>&1; then
	fail "client/a still passes after its rule was taken out"
fi
wait_for "$WORK/proxy2.log" 'refused: identity_not_allowed' "client/a refused after the reload"
pass "the standalone proxy applies new allow rules on SIGHUP and names restart-only changes"

kill -TERM "$PROXY"
wait "$PROXY" || fail "proxy did not exit 0 on SIGTERM"
