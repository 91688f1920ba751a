#!/usr/bin/env bash
# `agentca bundle watch`: writes the CA's bundle for an external gateway, trusting the CA by
# fingerprint the first time and by the file afterwards; runs the reload command only when
# the bundle changed; a wrong fingerprint is refused and nothing is written.
. "$(dirname "$0")/lib.sh"

CA=$WORK/ca
expect_exit 0 "init" "$AGENTCA" init --dir "$CA" --name Test --trust-domain corp.internal
FP=$(openssl x509 -in "$CA/root.pem" -outform DER | sha256sum | cut -d' ' -f1)
spawn "$AGENTCA" serve --dir "$CA" --listen 127.0.0.1:0 2>"$WORK/serve.log"
DAEMON=$SPAWNED
for _ in $(seq 100); do grep -q '"event":"ca_ready"' "$WORK/serve.log" && break; sleep 0.1; done
grep -q '"event":"ca_ready"' "$WORK/serve.log" || { cat "$WORK/serve.log"; fail "not ready"; }
PORT=$(grep '"event":"listening"' "$WORK/serve.log" | sed -E 's/.*\(port ([0-9]+)\).*/\1/')
URL="https://127.0.0.1:$PORT"
RELOAD="echo reload >>$WORK/reloads"
reloads() { [ -f "$WORK/reloads" ] && wc -l <"$WORK/reloads" || echo 0; }

expect_exit 1 "wrong fingerprint" "$AGENTCA" bundle watch --ca "$URL" --out "$WORK/bundle.pem" \
	--fingerprint "$(printf '%064d' 0)" --once
[ ! -e "$WORK/bundle.pem" ] || fail "a bundle was written from an untrusted CA"

expect_exit 0 "first fetch" "$AGENTCA" bundle watch --ca "$URL" --out "$WORK/bundle.pem" \
	--fingerprint "$FP" --exec "$RELOAD" --once
cmp -s "$WORK/bundle.pem" "$CA/root.pem" || fail "bundle.pem is not the CA's bundle"
[ "$(reloads)" = 1 ] || fail "reload did not run after the first write"

expect_exit 0 "unchanged" "$AGENTCA" bundle watch --ca "$URL" --out "$WORK/bundle.pem" \
	--exec "$RELOAD" --once
[ "$(reloads)" = 1 ] || fail "reload ran although nothing changed"
pass "bundle written once, trusted by fingerprint then by the file; reload only on change"

# Running: it keeps watching and stops cleanly.
spawn "$AGENTCA" bundle watch --ca "$URL" --out "$WORK/bundle.pem" --exec "$RELOAD" --wait 1s \
	2>"$WORK/watch.log"
WATCH=$SPAWNED
sleep 2
kill -TERM "$WATCH"
wait "$WATCH" || { cat "$WATCH.log"; fail "bundle watch did not exit 0 on SIGTERM"; }
[ "$(reloads)" = 1 ] || fail "reload ran although nothing changed"
pass "bundle watch runs and stops on SIGTERM"
