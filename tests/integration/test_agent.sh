#!/usr/bin/env bash
# `agentca agent`: enrolls when the directory is empty, does nothing when nothing is due,
# renews with a new key when forced, runs its hook after each rotation, keeps its files
# when the CA is down and recovers by itself when the CA returns.
. "$(dirname "$0")/lib.sh"

CA=$WORK/ca
expect_exit 0 "init" "$AGENTCA" init --dir "$CA" --name Test --trust-domain corp.internal
FP=$(openssl x509 -in "$CA/root.pem" -outform DER | sha256sum | cut -d' ' -f1)

# start_daemon [PORT]: serve on PORT (default: a free one); sets PORT, URL, DAEMON.
start_daemon() {
	: >"$WORK/serve.log"
	spawn "$AGENTCA" serve --dir "$CA" --listen "127.0.0.1:${1:-0}" 2>>"$WORK/serve.log"
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
serial() { openssl x509 -in "$WORK/agent/cert.pem" -noout -serial; }
hook_runs() { [ -f "$WORK/hook.count" ] && wc -l <"$WORK/hook.count" || echo 0; }

start_daemon
HOOK="echo rotated >>$WORK/hook.count"
TOKEN=$("$AGENTCA" token create --dir "$CA" --subject spiffe://corp.internal/gw-1 --dns gw-1.corp.internal)

# First run: enrolls.
expect_exit 0 "agent enroll" "$AGENTCA" agent --ca "$URL" --out "$WORK/agent" --token "$TOKEN" \
	--fingerprint "$FP" --exec "$HOOK" --once
[ "$(file_mode "$WORK/agent/key.pem")" = 600 ] || fail "key.pem not 0600"
openssl verify -CAfile "$CA/root.pem" -untrusted "$WORK/agent/chain.pem" "$WORK/agent/cert.pem" \
	>/dev/null || fail "enrolled certificate does not verify"
[ "$(hook_runs)" = 1 ] || fail "hook did not run after enrollment"
first=$(serial)
pass "agent --once enrolls an empty directory and runs the hook"

# Second run: not due, nothing changes (and no token needed).
expect_exit 0 "agent not due" "$AGENTCA" agent --ca "$URL" --out "$WORK/agent" --exec "$HOOK" --once
[ "$(serial)" = "$first" ] || fail "a certificate that was not due was replaced"
[ "$(hook_runs)" = 1 ] || fail "hook ran without a rotation"
pass "nothing due, nothing done"

# Forced: renews over mTLS with a new key; same identity and names.
oldkey=$(sha256sum <"$WORK/agent/key.pem")
expect_exit 0 "agent force" "$AGENTCA" agent --ca "$URL" --out "$WORK/agent" --exec "$HOOK" --once --force
[ "$(serial)" != "$first" ] || fail "forced renewal kept the serial"
[ "$(sha256sum <"$WORK/agent/key.pem")" != "$oldkey" ] || fail "renewal kept the old key"
openssl x509 -in "$WORK/agent/cert.pem" -noout -text | grep -q "URI:spiffe://corp.internal/gw-1" ||
	fail "renewed certificate lost its identity"
openssl x509 -in "$WORK/agent/cert.pem" -noout -text | grep -q "DNS:gw-1.corp.internal" ||
	fail "renewed certificate lost its DNS name"
[ "$(hook_runs)" = 2 ] || fail "hook did not run after renewal"
pass "forced renewal: new key, same identity, hook run"

# The CA is down: the agent fails with one line and keeps its files.
second=$(serial)
stop_daemon
expect_exit 1 "agent CA down" "$AGENTCA" agent --ca "$URL" --out "$WORK/agent" --once --force
[ "$(serial)" = "$second" ] || fail "files changed while the CA was down"
pass "CA down: one clear error, files kept"

# Running, while the CA is down: it backs off and recovers when the CA returns.
AGENTCA_LOG_LEVEL=info spawn "$AGENTCA" agent --ca "$URL" --out "$WORK/agent" --exec "$HOOK" \
	--force 2>"$WORK/agent.log"
AGENT=$SPAWNED
for _ in $(seq 50); do grep -q '"event":"rotation_failed"' "$WORK/agent.log" && break; sleep 0.1; done
grep -q '"event":"rotation_failed"' "$WORK/agent.log" || { cat "$WORK/agent.log"; fail "no retry logged"; }
start_daemon "$PORT"
for _ in $(seq 200); do [ "$(serial)" != "$second" ] && break; sleep 0.1; done
[ "$(serial)" != "$second" ] || { cat "$WORK/agent.log"; fail "the agent did not recover"; }
kill -TERM "$AGENT"
wait "$AGENT" || fail "agent did not exit 0 on SIGTERM"
pass "the agent retries with backoff and recovers when the CA returns"

if grep -qF "$TOKEN" "$WORK/agent.log"; then fail "the token is in the agent's log"; fi
stop_daemon
