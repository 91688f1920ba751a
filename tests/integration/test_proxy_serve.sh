#!/usr/bin/env bash
# The proxy integrated in `agentca serve` (config.json "proxy.listeners"): a 100 MB stream
# keeps flowing while the daemon rotates its certificate and the trust bundle gains a root
# (SIGHUP), and new connections get the new certificate; the proxy's metrics come with the
# API's /metrics; revoking a client's certificate closes its live session and refuses it
# from then on.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/proxy_lib.sh"

ca_init
STREAM=100000000
start_upstream sink sink "$STREAM" 12
start_upstream hold sink 1000000000000
cat >"$CA/config.json" <<JSON
{
  "proxy": {
    "revocation_interval": "1s",
    "listeners": [
      {"listen": "127.0.0.1:0", "upstream": "127.0.0.1:$UPORT_sink",
       "allow": ["spiffe://corp.internal/client/**"]},
      {"listen": "127.0.0.1:0", "upstream": "127.0.0.1:$UPORT_hold",
       "allow": ["spiffe://corp.internal/client/**"]}
    ]
  }
}
JSON
start_daemon
SINK=$(grep '"event":"proxy_listening"' "$WORK/serve.log" | grep "$UPORT_sink" | sed -E 's/.*\(port ([0-9]+)\).*/\1/')
HOLD=$(grep '"event":"proxy_listening"' "$WORK/serve.log" | grep "$UPORT_hold" | sed -E 's/.*\(port ([0-9]+)\).*/\1/')
[ -n "$SINK" ] && [ -n "$HOLD" ] || { cat "$WORK/serve.log"; fail "the proxy listeners did not start"; }
pass "serve started two proxy listeners ($SINK, $HOLD)"
SLOG=$CA/proxy-sessions.jsonl

enroll_client "$WORK/a" spiffe://corp.internal/client/a
enroll_client "$WORK/c" spiffe://corp.internal/client/c

# s_client_to PORT DIR: openssl s_client through the proxy with DIR's certificate, the
# proxy verified by its address against the bundle.
s_client_to() {
	openssl s_client -connect "127.0.0.1:$1" -verify_ip 127.0.0.1 -verify_return_error \
		-CAfile "$2/bundle.pem" -cert "$2/cert.pem" -key "$2/key.pem" -quiet
}
# presented_serial PORT: the serial of the certificate the proxy presents now.
presented_serial() {
	openssl s_client -connect "127.0.0.1:$1" -verify_ip 127.0.0.1 -CAfile "$WORK/a/bundle.pem" \
		-cert "$WORK/a/cert.pem" -key "$WORK/a/key.pem" </dev/null 2>/dev/null |
		openssl x509 -noout -serial
}

before=$(presented_serial "$SINK")
[ -n "$before" ] || fail "no certificate presented by the proxy"

# A 100 MB stream (the upstream reads 12 MB/s, so it lasts ~8 s and the proxy's buffers are
# full in both TLS and TCP: backpressure) ...
head -c "$STREAM" /dev/zero | s_client_to "$SINK" "$WORK/a" >"$WORK/stream.out" 2>"$WORK/stream.err" &
STREAMER=$!
PIDS="$PIDS $STREAMER"
sleep 2
kill -0 "$STREAMER" 2>/dev/null || { cat "$WORK/stream.err"; fail "the stream ended too early"; }

# ... while the daemon rotates its certificate and the bundle gains a root.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
	-keyout "$WORK/extra.key" -subj "/CN=Extra Root" -addext "basicConstraints=critical,CA:TRUE" \
	-addext "keyUsage=critical,keyCertSign,cRLSign" -out "$WORK/extra.pem" 2>/dev/null
# A client of the extra root: refused before the bundle has it.
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/x.key" \
	-subj "/CN=x" -out "$WORK/x.csr" 2>/dev/null
printf 'subjectAltName=URI:spiffe://corp.internal/client/x\nextendedKeyUsage=clientAuth\n' >"$WORK/x.ext"
openssl x509 -req -in "$WORK/x.csr" -CA "$WORK/extra.pem" -CAkey "$WORK/extra.key" -CAcreateserial \
	-days 1 -extfile "$WORK/x.ext" -out "$WORK/x.pem" 2>/dev/null
x_client() {
	openssl s_client -connect "127.0.0.1:$HOLD" -CAfile "$CA/root.pem" -cert "$WORK/x.pem" \
		-key "$WORK/x.key" </dev/null >/dev/null 2>&1 || true
}
x_client
session_has "$SLOG" certificate_untrusted "extra root's client before the bundle has it"
expect_exit 0 "trust add" "$AGENTCA" trust add --dir "$CA" "$WORK/extra.pem"
kill -HUP "$DAEMON"
wait_for "$WORK/serve.log" '"event":"proxy_material_swapped"' "proxy material swapped"
grep '"event":"proxy_material_swapped"' "$WORK/serve.log" | grep -q 'bundle 2 in use' ||
	fail "the new bundle was not counted"
after=$(presented_serial "$SINK")
[ -n "$after" ] && [ "$after" != "$before" ] || fail "a new connection still gets the old certificate ($before)"
x_client
wait_for "$SLOG" '"identity":"spiffe://corp.internal/client/x"' "the extra root's client admitted after the bundle rotation" 50
kill -0 "$STREAMER" 2>/dev/null || { cat "$WORK/stream.err"; fail "the stream did not outlive the rotation"; }
pass "after the rotation new connections get the new certificate ($after) and bundle while the stream flows"

wait "$STREAMER" || { cat "$WORK/stream.err"; fail "the stream failed"; }
has "$WORK/stream.out" "received $STREAM" "all 100 MB arrived"
grep -q " bytes=$STREAM\$" "$WORK/sink.rec" || { cat "$WORK/sink.rec"; fail "the upstream count is off"; }
session_has "$SLOG" upstream_closed "stream session logged"
grep -q "\"bytes_up\":$STREAM" "$SLOG" || fail "the session log does not count 100 MB up"
pass "100 MB crossed the rotation intact; the session entry counts it"

curl -sS --cacert "$CA/root.pem" "$URL/metrics" >"$WORK/metrics" || fail "metrics"
has "$WORK/metrics" "agentca_proxy_bundle_sequence 2" "bundle sequence in /metrics"
grep -Eq "^agentca_proxy_bytes_total\{direction=\"up\"\} [0-9]{9}" "$WORK/metrics" || fail "bytes not in /metrics"
grep -Eq '^agentca_proxy_certificate_expiry_seconds [1-9]' "$WORK/metrics" || fail "no expiry gauge"
pass "the proxy's metrics come with the API's /metrics"

# Revocation closes a live session.
# The client's input is held open by a sleeper on a FIFO; the cleanup stops both (a
# `sleep | s_client` pipeline would leave the sleeper holding the test's output open).
mkfifo "$WORK/hold.fifo"
s_client_to "$HOLD" "$WORK/c" <"$WORK/hold.fifo" >/dev/null 2>"$WORK/hold.err" &
HOLDER=$!
sleep 60 >"$WORK/hold.fifo" &
PIDS="$PIDS $HOLDER $!"
sleep 1
kill -0 "$HOLDER" 2>/dev/null || { cat "$WORK/hold.err"; fail "the held session did not start"; }
SERIAL=$(openssl x509 -in "$WORK/c/cert.pem" -noout -serial | cut -d= -f2)
expect_exit 0 "revoke" "$AGENTCA" revoke --dir "$CA" --serial "$SERIAL"
# (revocation_interval 1 s plus a 250 ms sweep; the bound is loose for a loaded machine)
for _ in $(seq 100); do kill -0 "$HOLDER" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$HOLDER" 2>/dev/null; then fail "the revoked client's session is still open after 10 s"; fi
session_has "$SLOG" certificate_revoked "revoked session logged"
grep '"reason":"certificate_revoked"' "$SLOG" | grep -q '"outcome":"closed"' ||
	fail "the revoked session is not logged as closed"
printf 'x' | s_client_to "$HOLD" "$WORK/c" >/dev/null 2>&1 || true
wait_for "$WORK/serve.log" 'refused: certificate_revoked' "a new connection with the revoked certificate refused"
pass "revoking the client's certificate closed its live session and refuses it afterwards"

# A serial whose hex spelling starts with a zero digit (its first byte below 0x10: one
# certificate in sixteen) is revoked all the same: the proxy compares serials without
# leading zeros on both sides.
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/z.key" \
	-subj "/CN=z" -out "$WORK/z.csr" 2>/dev/null
ZSERIAL=""
for _ in $(seq 300); do
	"$AGENTCA" issue --dir "$CA" --csr "$WORK/z.csr" --subject spiffe://corp.internal/client/z \
		>"$WORK/z-full.pem" 2>/dev/null || fail "issue for client/z"
	serial=$(openssl x509 -in "$WORK/z-full.pem" -noout -serial | cut -d= -f2)
	case $serial in 0*) ZSERIAL=$serial && break ;; esac
done
[ -n "$ZSERIAL" ] || fail "no serial starting with 0 in 300 certificates"
z_client() {
	printf 'x' | timeout 10 openssl s_client -connect "127.0.0.1:$HOLD" -CAfile "$CA/root.pem" \
		-cert "$WORK/z-full.pem" -key "$WORK/z.key" -quiet -no_ign_eof >/dev/null 2>&1 || true
}
z_client
wait_for "$SLOG" "\"serial\":\"$(echo "$ZSERIAL" | tr 'A-F' 'a-f')\"" "client/z (serial $ZSERIAL) admitted before its revocation" 50
expect_exit 0 "revoke client/z" "$AGENTCA" revoke --dir "$CA" --serial "$ZSERIAL"
for _ in $(seq 100); do
	grep -q "certificate $(echo "$ZSERIAL" | sed 's/^0*//' | tr 'A-F' 'a-f') is revoked" "$WORK/serve.log" && break
	sleep 0.1
done
z_client
for _ in $(seq 50); do
	grep '"reason":"certificate_revoked"' "$SLOG" | grep -q '"identity":"spiffe://corp.internal/client/z"' && break
	sleep 0.1
done
grep '"reason":"certificate_revoked"' "$SLOG" | grep -q '"identity":"spiffe://corp.internal/client/z"' ||
	fail "client/z (serial $ZSERIAL, leading zero digit) was not refused after its revocation"
pass "a revoked serial with a leading zero digit ($ZSERIAL) is refused"

kill -TERM "$DAEMON"
wait "$DAEMON" || { tail -200 "$WORK/serve.log"; fail "serve did not exit 0 on SIGTERM"; }
pass "serve with proxy listeners stops cleanly"
