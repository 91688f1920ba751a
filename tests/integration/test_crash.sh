#!/usr/bin/env bash
# Crash safety: the daemon is killed with SIGKILL at random moments while two streams of
# agents enroll, ten times. After each kill the log verifies and every certificate a client
# received is in it and in the database; at the end no serial repeats and no used token
# works again. CRASH_KILLS (default 10) sets the number of kills: `make crash` runs more.
. "$(dirname "$0")/lib.sh"

CA=$WORK/ca
expect_exit 0 "init" "$AGENTCA" init --dir "$CA" --name Test --trust-domain corp.internal
FP=$(openssl x509 -in "$CA/root.pem" -outform DER | sha256sum | cut -d' ' -f1)
: >"$WORK/received"
: >"$WORK/used"

start_daemon() {
	spawn "$AGENTCA" serve --dir "$CA" --listen "127.0.0.1:${1:-0}" 2>>"$WORK/serve.log"
	DAEMON=$SPAWNED
	for _ in $(seq 100); do
		[ "$(grep -c '"event":"ca_ready"' "$WORK/serve.log")" -ge "$2" ] && break
		sleep 0.1
	done
	PORT=$(grep '"event":"listening"' "$WORK/serve.log" | tail -n1 | sed -E 's/.*\(port ([0-9]+)\).*/\1/')
}

# enroll_loop: enroll agents one after another; record each serial received and token used.
enroll_loop() {
	i=0
	while :; do
		i=$((i + 1))
		t=$("$AGENTCA" token create --dir "$CA" --subject "spiffe://corp.internal/c$1-$i") || continue
		if "$AGENTCA" enroll --ca "https://127.0.0.1:$PORT" --token "$t" --fingerprint "$FP" \
			--out "$WORK/c$1-$i" >/dev/null 2>&1; then
			openssl x509 -in "$WORK/c$1-$i/cert.pem" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f' >>"$WORK/received"
			echo "$t" >>"$WORK/used"
		fi
	done
}

: >"$WORK/serve.log"
start_daemon 0 1
KILLS=${CRASH_KILLS:-10}
for cycle in $(seq $KILLS); do
	enroll_loop "$cycle-a" &
	LOOP_A=$!
	enroll_loop "$cycle-b" &
	LOOP_B=$!
	PIDS="$PIDS $LOOP_A $LOOP_B"
	sleep "0.$((3 + RANDOM % 7))"
	kill -KILL "$DAEMON"
	wait "$DAEMON" 2>/dev/null || true
	kill "$LOOP_A" "$LOOP_B" 2>/dev/null || true
	wait "$LOOP_A" "$LOOP_B" 2>/dev/null || true
	expect_exit 0 "export after kill $cycle" "$AGENTCA" audit export --dir "$CA"
	cp "$WORK/stdout" "$WORK/log.jsonl"
	expect_exit 0 "verify after kill $cycle" "$AGENTCA" audit verify "$WORK/log.jsonl" --key "$CA/audit.pub"
	sqlite3 -cmd ".timeout 10000" "$CA/agentca.db" 'SELECT serial FROM certificates' >"$WORK/db-serials" ||
		fail "cycle $cycle: cannot read the certificates table"
	# Every serial handed out, in the log and in the database (sorted sets: one pass each).
	sort -u "$WORK/received" >"$WORK/received.sorted"
	grep -o '"serial":"[0-9a-f]*"' "$WORK/log.jsonl" | sed -E 's/.*:"([0-9a-f]+)"/\1/' | sort -u >"$WORK/log-serials"
	sort -u -o "$WORK/db-serials" "$WORK/db-serials"
	missing=$(comm -23 "$WORK/received.sorted" "$WORK/log-serials" | head -n 3)
	[ -z "$missing" ] || fail "cycle $cycle: serials handed out but not in the log: $missing"
	missing=$(comm -23 "$WORK/received.sorted" "$WORK/db-serials" | head -n 3)
	[ -z "$missing" ] || fail "cycle $cycle: serials handed out but not in the database: $missing"
	start_daemon "$PORT" $((cycle + 1))
done
[ -s "$WORK/received" ] || fail "no enrollment succeeded at all"
pass "$(wc -l <"$WORK/received") certificates received across $KILLS kills: all in the database and a log that verifies"

dups=$(grep -o '"kind":"issued"[^}]*"serial":"[0-9a-f]*"' "$WORK/log.jsonl" | sed -E 's/.*"serial":"([0-9a-f]+)"/\1/' | sort | uniq -d)
[ -z "$dups" ] || fail "serials repeat: $dups"
pass "no serial repeats"

# Used tokens stay used after the restarts.
while read -r t; do
	if "$AGENTCA" enroll --ca "https://127.0.0.1:$PORT" --token "$t" --fingerprint "$FP" \
		--out "$WORK/replay" >/dev/null 2>&1; then
		fail "a used token worked again after a crash"
	fi
done <"$WORK/used"
pass "used tokens stay used across crashes"
kill -TERM "$DAEMON"
wait "$DAEMON" || true
