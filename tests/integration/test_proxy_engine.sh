#!/usr/bin/env bash
# The proxy engine's limits, with `agentca proxy --config`: half-close travels end to end
# (the upstream answers only after the client's EOF, and the answer still arrives); a TLS
# record that arrives in two pieces after another client's refused handshake on the same
# worker is relayed (the refusal's errors left in the worker's OpenSSL error queue must not
# be taken for the session's own); a client
# that says nothing, or stops mid-handshake, is closed at the handshake timeout; an idle
# session at the idle timeout; connections beyond max_connections are refused at accept;
# SIGTERM stops accepting, lets a session run for the drain period, then closes it.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/proxy_lib.sh"

ca_init
start_daemon
start_upstream eof eof
start_upstream hold sink 1000000000000
start_upstream echo echo
PX=$WORK/px
PTOKEN=$("$AGENTCA" token create --dir "$CA" --subject spiffe://corp.internal/proxy --dns proxy.corp.internal)
printf '%s\n' "$PTOKEN" >"$WORK/token"
cat >"$WORK/proxy.json" <<JSON
{
  "ca": "$URL", "out": "$PX", "token_file": "$WORK/token", "fingerprint": "$FP",
  "proxy": {
    "workers": 1, "handshake_timeout": "1s", "idle_timeout": "2s", "max_connections": 3, "drain": "2s",
    "listeners": [
      {"listen": "127.0.0.1:0", "upstream": "127.0.0.1:$UPORT_eof", "allow": ["spiffe://corp.internal/client/*"]},
      {"listen": "127.0.0.1:0", "upstream": "127.0.0.1:$UPORT_hold", "allow": ["spiffe://corp.internal/client/*"]},
      {"listen": "127.0.0.1:0", "upstream": "127.0.0.1:$UPORT_echo", "allow": ["spiffe://corp.internal/client/*"]}
    ]
  }
}
JSON
AGENTCA_LOG_LEVEL=info spawn "$AGENTCA" proxy --config "$WORK/proxy.json" 2>"$WORK/proxy.log"
PROXY=$SPAWNED
wait_for "$WORK/proxy.log" '"event":"proxy_ready"' "proxy ready"
EOFP=$(grep '"event":"proxy_listening"' "$WORK/proxy.log" | grep "$UPORT_eof" | sed -E 's/.*\(port ([0-9]+)\).*/\1/')
HOLD=$(grep '"event":"proxy_listening"' "$WORK/proxy.log" | grep "$UPORT_hold" | sed -E 's/.*\(port ([0-9]+)\).*/\1/')
ECHOP=$(grep '"event":"proxy_listening"' "$WORK/proxy.log" | grep "$UPORT_echo" | sed -E 's/.*\(port ([0-9]+)\).*/\1/')
SLOG=$PX/proxy-sessions.jsonl
enroll_client "$WORK/a" spiffe://corp.internal/client/a
TLSOPTS="cert=$WORK/a/cert.pem,key=$WORK/a/key.pem,cafile=$WORK/a/bundle.pem,verify=1,commonname=proxy.corp.internal"

# Half-close: socat sends 5 bytes and closes its writing side; the upstream sees EOF and
# only then answers; the answer must make it back through the half-closed session.
printf 'hello' | timeout 20 socat -t 10 - "OPENSSL:127.0.0.1:$EOFP,$TLSOPTS" >"$WORK/eof.out" 2>"$WORK/eof.err" ||
	{ cat "$WORK/eof.err"; fail "socat through the proxy"; }
has "$WORK/eof.out" "got 5 bytes" "the answer sent after the client's EOF"
wait_for "$SLOG" '"bytes_up":5,' "half-closed session logged" 50
pass "half-close: the client's EOF reaches the upstream, the upstream's answer still comes back"

# One worker: a session relays a TLS record that reaches the proxy in two pieces (the read of
# the first would block), right after a client without a certificate was refused on the same
# worker (its errors stay in that thread's OpenSSL error queue until the next TLS call).
timeout 30 python3 "$(dirname "$0")/../tools/tls_split_record.py" "$ECHOP" proxy.corp.internal \
	"$WORK/a/bundle.pem" "$WORK/a/cert.pem" "$WORK/a/key.pem" >"$WORK/split.out" 2>&1 ||
	{ cat "$WORK/split.out"; fail "a split record after a refused handshake"; }
has "$WORK/split.out" "split record echoed" "the split record echoed"
session_has "$SLOG" no_client_certificate "the refused client without a certificate"
pass "a record split in two reads is relayed after another client's refusal on the same worker"

# Handshake timeout: a client that connects and says nothing, and one that stops after the
# first byte of a handshake record.
exec 3<>"/dev/tcp/127.0.0.1/$EOFP"
exec 4<>"/dev/tcp/127.0.0.1/$EOFP"
printf '\026' >&4
wait_for "$SLOG" '"reason":"handshake_timeout"' "silent client closed" 50
sleep 0.5
[ "$(grep -c '"reason":"handshake_timeout"' "$SLOG")" = 2 ] || fail "want two handshake timeouts"
exec 3>&- 4>&-
pass "a silent client and a stalled handshake are closed at the handshake timeout"

# Idle timeout: a session with no byte either way for 2 s is closed.
# Its input held open by a sleeper on a FIFO, both stopped by the cleanup (a `sleep |
# socat` pipeline would leave the sleeper holding the test's output open for 30 s).
mkfifo "$WORK/idle.fifo"
socat -t 1 - "OPENSSL:127.0.0.1:$HOLD,$TLSOPTS" <"$WORK/idle.fifo" >/dev/null 2>&1 &
IDLER=$!
sleep 30 >"$WORK/idle.fifo" &
PIDS="$PIDS $IDLER $!"
wait_for "$SLOG" '"reason":"idle_timeout"' "idle session closed" 80
for _ in $(seq 40); do kill -0 "$IDLER" 2>/dev/null || break; sleep 0.1; done
kill -0 "$IDLER" 2>/dev/null && fail "the idle client was not disconnected"
pass "an idle session is closed at the idle timeout"

# Connection cap: three raw connections fill it; the fourth is refused at accept.
exec 3<>"/dev/tcp/127.0.0.1/$EOFP"
exec 4<>"/dev/tcp/127.0.0.1/$EOFP"
exec 5<>"/dev/tcp/127.0.0.1/$EOFP"
sleep 0.3
exec 6<>"/dev/tcp/127.0.0.1/$EOFP"
wait_for "$SLOG" '"reason":"connection_limit"' "connection over the cap refused" 30
exec 3>&- 4>&- 5>&- 6>&-
pass "connections over max_connections are refused (connection_limit)"

# Drain: SIGTERM with a session open (it sends a byte a second, so it is not idle): the
# proxy stops accepting, lets it run for the drain period, then closes it and exits 0.
sleep 1.5 # the refused and timed-out connections are gone
(for _ in $(seq 30); do printf 'x'; sleep 0.5; done) | socat -t 30 - "OPENSSL:127.0.0.1:$HOLD,$TLSOPTS" >/dev/null 2>&1 &
DRAINED=$!
PIDS="$PIDS $DRAINED"
sleep 1
kill -0 "$DRAINED" || fail "the session to drain did not start"
start=$(date +%s)
kill -TERM "$PROXY"
sleep 0.5
if (exec 7<>"/dev/tcp/127.0.0.1/$HOLD") 2>/dev/null; then fail "the proxy still accepts while draining"; fi
kill -0 "$DRAINED" 2>/dev/null || fail "the session was cut before the drain period"
wait "$PROXY" || fail "the proxy did not exit 0 after draining"
took=$(($(date +%s) - start))
[ "$took" -le 6 ] || fail "draining took ${took}s, want about 2s"
session_has "$SLOG" shutdown "drained session logged"
pass "SIGTERM: no new connections, the open session runs for the drain period, then exit 0"
