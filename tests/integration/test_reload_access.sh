#!/usr/bin/env bash
# SIGHUP applies access changes at once: an identity taken out of admin_identities loses its
# admin role, and a proxy listener's new allow rules refuse the identities they no longer
# name, closing their live sessions too, while the newly named get in. A changed key that
# only a restart applies is named in the log, not silently ignored.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/proxy_lib.sh"

ca_init
start_upstream hold sink 1000000000000
# write_config ADMINS ALLOW RATE: the daemon's configuration with these admin identities,
# these allow rules on the one proxy listener, and this per-address rate.
write_config() {
	cat >"$CA/config.json" <<JSON
{
  "admin_identities": [$1],
  "rate_limits": {"address_per_second": $3},
  "proxy": {
    "listeners": [
      {"listen": "127.0.0.1:0", "upstream": "127.0.0.1:$UPORT_hold", "allow": [$2]}
    ]
  }
}
JSON
}
write_config '"spiffe://corp.internal/ops"' '"spiffe://corp.internal/client/a"' 0
start_daemon
HOLD=$(grep '"event":"proxy_listening"' "$WORK/serve.log" | sed -E 's/.*\(port ([0-9]+)\).*/\1/')
[ -n "$HOLD" ] || { cat "$WORK/serve.log"; fail "the proxy listener did not start"; }
SLOG=$CA/proxy-sessions.jsonl

enroll_client "$WORK/ops" spiffe://corp.internal/ops
enroll_client "$WORK/a" spiffe://corp.internal/client/a
enroll_client "$WORK/b" spiffe://corp.internal/client/b

# mint DIR: POST /v1/tokens with DIR's certificate; prints the HTTP status.
mint() {
	curl -sS --cacert "$CA/root.pem" --cert "$1/cert.pem" --key "$1/key.pem" -o "$WORK/body" \
		-w '%{http_code}' -H 'Content-Type: application/json' \
		--data-binary '{"subject":"spiffe://corp.internal/anywhere"}' "$URL/v1/tokens" || true
}
# hold_session DIR: a session through the proxy with DIR's certificate, its input held open
# by a sleeper (both stopped by the cleanup); sets HELD to the client.
hold_session() {
	rm -f "$WORK/hold.fifo"
	mkfifo "$WORK/hold.fifo"
	openssl s_client -connect "127.0.0.1:$HOLD" -verify_ip 127.0.0.1 -verify_return_error \
		-CAfile "$1/bundle.pem" -cert "$1/cert.pem" -key "$1/key.pem" -quiet \
		<"$WORK/hold.fifo" >/dev/null 2>"$WORK/held.err" &
	HELD=$!
	sleep 60 >"$WORK/hold.fifo" &
	PIDS="$PIDS $HELD $!"
}
# upstream_live: connections open at the upstream now (the proxy's, relaying sessions).
upstream_live() {
	ss -Htn state established "( sport = :$UPORT_hold )" | wc -l
}

[ "$(mint "$WORK/ops")" = 201 ] || { cat "$WORK/body"; fail "the configured admin cannot mint"; }
hold_session "$WORK/a"
for _ in $(seq 50); do [ "$(upstream_live)" -ge 1 ] && break; sleep 0.1; done
[ "$(upstream_live)" -ge 1 ] || { cat "$WORK/held.err"; fail "a's session did not reach the upstream"; }
kill -0 "$HELD" 2>/dev/null || fail "a's session ended early"
pass "before the reload: ops is an admin, client/a has a live session through the proxy"

# The new configuration: no admin identity; the listener allows client/b instead of client/a;
# a rate limit that only a restart applies.
write_config '' '"spiffe://corp.internal/client/b"' 100
kill -HUP "$DAEMON"
wait_for "$WORK/serve.log" '"event":"config_reloaded"' "config reloaded"
wait_for "$WORK/serve.log" '"event":"proxy_rules_reloaded"' "proxy rules reloaded"

[ "$(mint "$WORK/ops")" = 403 ] || { cat "$WORK/body"; fail "ops still acts as an admin after the reload"; }
pass "an identity removed from admin_identities is refused (403) after SIGHUP"

for _ in $(seq 100); do kill -0 "$HELD" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$HELD" 2>/dev/null; then fail "client/a's session is still open 10 s after its rule went"; fi
session_has "$SLOG" identity_not_allowed "the closed session's reason"
grep '"reason":"identity_not_allowed"' "$SLOG" | grep '"identity":"spiffe://corp.internal/client/a"' |
	grep -q '"outcome":"closed"' || { cat "$SLOG"; fail "a's session is not logged as closed for its identity"; }
before=$(upstream_conns hold)
printf 'x' | openssl s_client -connect "127.0.0.1:$HOLD" -CAfile "$WORK/a/bundle.pem" \
	-cert "$WORK/a/cert.pem" -key "$WORK/a/key.pem" -quiet >/dev/null 2>&1 || true
wait_for "$WORK/serve.log" 'refused: identity_not_allowed' "a's new connection refused"
[ "$(upstream_conns hold)" = "$before" ] || fail "a refused client reached the upstream"
pass "the listener's new rules closed client/a's live session and refuse it from then on"

[ "$(upstream_live)" = 0 ] || fail "a connection is still open at the upstream"
hold_session "$WORK/b"
for _ in $(seq 50); do [ "$(upstream_live)" -ge 1 ] && break; sleep 0.1; done
[ "$(upstream_live)" -ge 1 ] || { cat "$WORK/held.err"; fail "client/b did not reach the upstream"; }
kill "$HELD" 2>/dev/null || true
pass "client/b, newly allowed, gets through"

grep '"event":"config_restart_needed"' "$WORK/serve.log" | grep -q 'rate_limits.address_per_second' ||
	{ grep config_ "$WORK/serve.log"; fail "the restart-only change was not named"; }
if grep '"event":"config_restart_needed"' "$WORK/serve.log" | grep -Eq 'admin_identities|allow'; then
	fail "a key applied at once is reported as needing a restart"
fi
pass "a change only a restart applies is named in the log (config_restart_needed)"

kill -TERM "$DAEMON"
wait "$DAEMON" || fail "serve did not exit 0 on SIGTERM"
pass "serve stops cleanly"
