#!/usr/bin/env bash
# The daemon's renewal planner: two agents enrolled in the same minute with the same
# lifetime are told different renewal minutes inside [1/2, 3/4] of it (a fixed 2/3 would
# give both the same minute), and after a restart the calendar is rebuilt from the store, so
# a third agent of that minute is placed apart from both.
. "$(dirname "$0")/lib.sh"

CA=$WORK/ca
expect_exit 0 "init" "$AGENTCA" init --dir "$CA" --name Test --trust-domain corp.internal
FP=$(openssl x509 -in "$CA/root.pem" -outform DER | sha256sum | cut -d' ' -f1)

start_daemon() {
	: >"$WORK/serve.log"
	spawn "$AGENTCA" serve --dir "$CA" --listen 127.0.0.1:0 2>>"$WORK/serve.log"
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
# enroll NAME: enroll with the default lifetime (24h); prints "ISSUED_MINUTE RENEW_AFTER".
enroll() {
	t=$("$AGENTCA" token create --dir "$CA" --subject "spiffe://corp.internal/$1")
	"$AGENTCA" enroll --ca "$URL" --token "$t" --fingerprint "$FP" --out "$WORK/$1" >/dev/null ||
		fail "enroll $1"
	nb=$(date -d "$(openssl x509 -in "$WORK/$1/cert.pem" -noout -startdate | cut -d= -f2)" +%s)
	ra=$(date -d "$(cut -d' ' -f2 "$WORK/$1/renew_after")" +%s)
	issued=$((nb + 60))
	[ "$ra" -ge $((issued + 43200)) ] && [ "$ra" -le $((issued + 64800)) ] ||
		fail "$1: renew_after $ra outside [issued + 12h, issued + 18h] (issued $issued)"
	echo "$((issued / 60)) $ra"
}

# Everything below must happen within one minute: start early in a minute.
while [ "$(date +%S | sed 's/^0//')" -gt 35 ]; do sleep 1; done
start_daemon
read -r ma ra_a <<<"$(enroll a)"
read -r mb ra_b <<<"$(enroll b)"
[ "$ma" = "$mb" ] || fail "a and b were not issued in the same minute; the test started too late"
[ $((ra_a / 60)) != $((ra_b / 60)) ] || fail "a and b were told the same renewal minute ($ra_a, $ra_b)"
pass "two agents of one minute: renewal minutes $((ra_a / 60 - ma)) and $((ra_b / 60 - ma)) minutes after issuance"

stop_daemon
start_daemon
read -r mc ra_c <<<"$(enroll c)"
[ "$mc" = "$ma" ] || fail "c was not issued in the same minute as a; the test ran too slowly"
[ $((ra_c / 60)) != $((ra_a / 60)) ] && [ $((ra_c / 60)) != $((ra_b / 60)) ] ||
	fail "after a restart c was told a minute already promised ($ra_c; a $ra_a, b $ra_b): calendar not rebuilt"
pass "after a restart the calendar is rebuilt: a third agent is placed at its own minute"
stop_daemon
