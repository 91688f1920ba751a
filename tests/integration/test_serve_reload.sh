#!/usr/bin/env bash
# SIGHUP: a new policy takes effect and the server certificate is replaced without a
# restart; a bad configuration is refused and the running one kept. SIGTERM stops cleanly.
. "$(dirname "$0")/lib.sh"

CA=$WORK/ca
expect_exit 0 "init" "$AGENTCA" init --dir "$CA" --name Test --trust-domain corp.internal
FP=$(openssl x509 -in "$CA/root.pem" -outform DER | sha256sum | cut -d' ' -f1)
CONFIG=$WORK/config.json
printf '{"policy":{"default_ttl":"24h"}}\n' >"$CONFIG"

spawn "$AGENTCA" serve --dir "$CA" --listen 127.0.0.1:0 --config "$CONFIG" 2>"$WORK/serve.log"
DAEMON=$SPAWNED
for _ in $(seq 100); do grep -q '"event":"ca_ready"' "$WORK/serve.log" && break; sleep 0.1; done
grep -q '"event":"ca_ready"' "$WORK/serve.log" || { cat "$WORK/serve.log"; fail "not ready"; }
PORT=$(grep '"event":"listening"' "$WORK/serve.log" | sed -E 's/.*\(port ([0-9]+)\).*/\1/')
URL="https://127.0.0.1:$PORT"

server_serial() {
	openssl s_client -connect "127.0.0.1:$PORT" -CAfile "$CA/root.pem" -verify_return_error \
		</dev/null 2>/dev/null | openssl x509 -noout -serial
}

# enroll_lifetime NAME: enroll NAME and print its certificate's lifetime in seconds.
enroll_lifetime() {
	t=$("$AGENTCA" token create --dir "$CA" --subject "spiffe://corp.internal/$1")
	"$AGENTCA" enroll --ca "$URL" --token "$t" --fingerprint "$FP" --out "$WORK/$1" >/dev/null ||
		fail "enroll $1"
	nb=$(date -d "$(openssl x509 -in "$WORK/$1/cert.pem" -noout -startdate | cut -d= -f2)" +%s)
	na=$(date -d "$(openssl x509 -in "$WORK/$1/cert.pem" -noout -enddate | cut -d= -f2)" +%s)
	echo $((na - nb))
}

first_serial=$(server_serial)
[ -n "$first_serial" ] || fail "no server certificate"
life=$(enroll_lifetime a1)
[ "$life" -ge 86400 ] || fail "default_ttl 24h not applied ($life s)"

# A new policy through SIGHUP.
printf '{"policy":{"default_ttl":"1h"}}\n' >"$CONFIG"
kill -HUP "$DAEMON"
for _ in $(seq 50); do grep -q '"event":"server_cert_rotated"' "$WORK/serve.log" && break; sleep 0.1; done
grep -q '"event":"config_reloaded"' "$WORK/serve.log" || fail "no config_reloaded line"
life=$(enroll_lifetime a2)
[ "$life" -le 3700 ] || fail "reloaded default_ttl 1h not applied ($life s)"
second_serial=$(server_serial)
[ "$first_serial" != "$second_serial" ] || fail "server certificate not replaced on SIGHUP"
pass "SIGHUP applies the new policy and replaces the server certificate"

# A bad configuration: refused, the running one kept, the daemon still serves.
printf '{"policy":{"default_tll":"2h"}}\n' >"$CONFIG"
kill -HUP "$DAEMON"
for _ in $(seq 50); do grep -q '"event":"config_reload_failed"' "$WORK/serve.log" && break; sleep 0.1; done
grep '"event":"config_reload_failed"' "$WORK/serve.log" | grep -q 'policy.default_tll' ||
	fail "bad reload not reported with the key"
life=$(enroll_lifetime a3)
[ "$life" -le 3700 ] || fail "the running configuration was not kept ($life s)"
pass "a bad configuration on SIGHUP is refused, naming the key; the daemon keeps serving"

kill -TERM "$DAEMON"
wait "$DAEMON" || fail "serve did not exit 0"
grep -q '"event":"stopped"' "$WORK/serve.log" || fail "no stopped line"
pass "SIGTERM stops cleanly"
