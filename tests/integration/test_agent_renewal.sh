#!/usr/bin/env bash
# The agent over real time with lifetimes in seconds (policy.min_ttl may go down to 10s):
# it renews several times on its own at the point the CA chose (renew_after) and runs its
# hook each time; the CA stopped past a renewal point and started again is recovered from
# before the certificate expires; `--once` does nothing when nothing is due.
. "$(dirname "$0")/lib.sh"

CA=$WORK/ca
CONFIG=$WORK/config.json
expect_exit 0 "init" "$AGENTCA" init --dir "$CA" --name Test --trust-domain corp.internal
FP=$(openssl x509 -in "$CA/root.pem" -outform DER | sha256sum | cut -d' ' -f1)

# start_daemon [PORT]: serve on PORT (default: a free one); sets PORT, URL, DAEMON.
start_daemon() {
	: >"$WORK/serve.log"
	spawn "$AGENTCA" serve --dir "$CA" --listen "127.0.0.1:${1:-0}" --config "$CONFIG" \
		2>>"$WORK/serve.log"
	DAEMON=$SPAWNED
	for _ in $(seq 100); do grep -q '"event":"ca_ready"' "$WORK/serve.log" && break; sleep 0.1; done
	grep -q '"event":"ca_ready"' "$WORK/serve.log" || { cat "$WORK/serve.log"; fail "not ready"; }
	PORT=$(grep '"event":"listening"' "$WORK/serve.log" | tail -n1 | sed -E 's/.*\(port ([0-9]+)\).*/\1/')
	URL="https://127.0.0.1:$PORT"
}
stop_daemon() {
	kill -TERM "$DAEMON"
	wait "$DAEMON" || true
}
stop_agent() {
	kill -TERM "$1"
	wait "$1" || fail "the agent did not exit 0 on SIGTERM"
}
serial() { openssl x509 -in "$1/cert.pem" -noout -serial | cut -d= -f2; }
epoch() { date -d "$(openssl x509 -in "$1/cert.pem" -noout "-$2" | cut -d= -f2)" +%s; }
token() { "$AGENTCA" token create --dir "$CA" --subject "spiffe://corp.internal/$1" --dns "$1.corp.internal"; }
# renew_hint DIR: the unix time in DIR/renew_after, checked to be for DIR/cert.pem.
renew_hint() {
	read -r hint_serial hint_time <"$1/renew_after" || fail "$1/renew_after unreadable"
	[ "$(echo "$hint_serial" | tr a-f A-F | sed 's/^0*//')" = "$(serial "$1" | sed 's/^0*//')" ] ||
		fail "$1/renew_after names $hint_serial, not the certificate's serial"
	date -d "$hint_time" +%s
}

# 1. Lifetime 12 s: the CA's window is [6 s, 9 s] after issuance (notBefore is backdated by
# 60 s, so the agent's own fallback, 2/3 of notBefore..notAfter, would already be due).
printf '{"policy":{"min_ttl":"10s","default_ttl":"12s"}}\n' >"$CONFIG"
start_daemon
A=$WORK/a
AGENTCA_LOG_LEVEL=info spawn "$AGENTCA" agent --ca "$URL" --out "$A" --token "$(token a)" \
	--fingerprint "$FP" --exec "date +%s >>$WORK/a.hooks; openssl x509 -in $A/cert.pem -noout -serial >>$WORK/a.serials" \
	2>"$WORK/a.log"
AGENT=$SPAWNED
for _ in $(seq 600); do [ -f "$WORK/a.hooks" ] && [ "$(wc -l <"$WORK/a.hooks")" -ge 4 ] && break; sleep 0.1; done
[ -f "$WORK/a.hooks" ] && [ "$(wc -l <"$WORK/a.hooks")" -ge 4 ] || { cat "$WORK/a.log"; fail "fewer than 3 renewals in 60 s"; }
stop_agent "$AGENT" # first: the files do not change while they are read
nb=$(epoch "$A" startdate)
na=$(epoch "$A" enddate)
ra=$(renew_hint "$A")
[ $((na - nb)) = 72 ] || fail "lifetime $((na - nb)) s, want 12 s plus 60 s of backdating"
[ "$ra" -ge $((nb + 60 + 6)) ] && [ "$ra" -le $((nb + 60 + 9)) ] ||
	fail "renew_after $ra is outside [issued + 6 s, issued + 9 s] (issued $((nb + 60)))"
renewals=$(grep -c '"event":"renewed"' "$WORK/a.log")
rotations=$(($(grep -c '"event":"enrolled"' "$WORK/a.log") + renewals))
[ "$renewals" -ge 3 ] || fail "only $renewals renewals logged"
[ "$(wc -l <"$WORK/a.hooks")" = "$rotations" ] || fail "hook ran $(wc -l <"$WORK/a.hooks") times for $rotations rotations"
[ "$(sort -u "$WORK/a.serials" | wc -l)" = "$rotations" ] || fail "a rotation kept its serial"
# Each rotation at the CA's point: not before half the lifetime, and before expiry.
prev=""
while read -r t; do
	if [ -n "$prev" ]; then
		[ $((t - prev)) -ge 5 ] || fail "renewed $((t - prev)) s after the previous rotation (window starts at 6 s)"
		[ $((t - prev)) -le 11 ] || fail "renewed $((t - prev)) s after the previous rotation (expiry at 12 s)"
	fi
	prev=$t
done <"$WORK/a.hooks"
pass "the agent renewed $renewals times on its own inside the CA's window; hook ran each time"

# 2. Lifetime 40 s: the CA is stopped before the renewal point and started again after it;
# the agent retries and renews before its certificate expires.
stop_daemon
printf '{"policy":{"min_ttl":"10s","default_ttl":"40s"}}\n' >"$CONFIG"
start_daemon "$PORT"
B=$WORK/b
AGENTCA_LOG_LEVEL=info spawn "$AGENTCA" agent --ca "$URL" --out "$B" --token "$(token b)" \
	--fingerprint "$FP" --exec "echo rotated >>$WORK/b.hooks" 2>"$WORK/b.log"
AGENT=$SPAWNED
for _ in $(seq 100); do [ -f "$WORK/b.hooks" ] && break; sleep 0.1; done
[ -f "$WORK/b.hooks" ] || { cat "$WORK/b.log"; fail "agent b did not enroll"; }
first=$(serial "$B")
old_na=$(epoch "$B" enddate)
ra=$(renew_hint "$B")
stop_daemon
[ "$(date +%s)" -lt "$ra" ] || fail "the CA was not stopped before the renewal point"
for _ in $(seq 400); do grep -q '"event":"rotation_failed"' "$WORK/b.log" && break; sleep 0.1; done
grep -q '"event":"rotation_failed"' "$WORK/b.log" || { cat "$WORK/b.log"; fail "no failed renewal while the CA was down"; }
[ "$(date +%s)" -ge "$ra" ] || fail "the agent tried before its renewal point"
[ "$(serial "$B")" = "$first" ] || fail "files changed while the CA was down"
start_daemon "$PORT"
for _ in $(seq 300); do [ "$(serial "$B")" != "$first" ] && break; sleep 0.1; done
[ "$(serial "$B")" != "$first" ] || { cat "$WORK/b.log"; fail "the agent did not recover"; }
issued=$(($(epoch "$B" startdate) + 60))
[ "$issued" -lt "$old_na" ] || fail "renewed at $issued, after the old certificate expired at $old_na"
[ "$(wc -l <"$WORK/b.hooks")" = 2 ] || fail "hook did not run after the recovery"
stop_agent "$AGENT"
pass "CA down past the renewal point: recovered $((old_na - issued)) s before expiry"

# 3. --once right after a renewal: not due, nothing changes, no hook.
second=$(serial "$B")
AGENTCA_LOG_LEVEL=info expect_exit 0 "agent --once not due" "$AGENTCA" agent --ca "$URL" --out "$B" \
	--exec "echo rotated >>$WORK/b.hooks" --once
stderr_has '"event":"not_due"' "agent --once"
[ "$(serial "$B")" = "$second" ] || fail "--once replaced a certificate that was not due"
[ "$(wc -l <"$WORK/b.hooks")" = 2 ] || fail "--once ran the hook without a rotation"
pass "--once is a no-op when not due"
stop_daemon
