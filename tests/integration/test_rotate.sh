#!/usr/bin/env bash
# Intermediate rotation with the real daemon: `agentca ca rotate` prepares a successor, the
# daemon publishes it in the bundle (new ETag, higher SPIFFE sequence, the intermediates in
# the PEM), a gateway acknowledges the bundle over mTLS (activation waits for it), the
# successor becomes active (new leaves chain to it and verify against the bundle alone, leaves
# of the old one still verify and still renew, and clients holding either complete mTLS
# handshakes with a server fed by any bundle of the sequence), renew_after is shortened while a switch is
# planned, the old one is retired once its leaves are gone and leaves the bundle, every step
# is in the log and `agentca audit verify` passes; pruning removes expired certificate rows
# and the log still verifies.
. "$(dirname "$0")/lib.sh"

CA=$WORK/ca
expect_exit 0 "init" "$AGENTCA" init --dir "$CA" --name Test --trust-domain corp.internal
FP=$(openssl x509 -in "$CA/root.pem" -outform DER | sha256sum | cut -d' ' -f1)
certfp() { openssl x509 -in "$1" -outform DER | sha256sum | cut -d' ' -f1; }
OLD=$(certfp "$CA/intermediate.pem")

# Activation waits for the gateway gw-1's acknowledgment and (unless forced) one hour.
cat >"$CA/config.json" <<'EOF'
{
  "policy": {"default_ttl": "24h", "min_ttl": "5m", "max_ttl": "90d", "dns_suffixes": ["corp.internal"]},
  "rotation": {"acknowledgments": true, "gateways": ["spiffe://corp.internal/gw-1"],
               "intermediate": {"publish_for": "1h"}}
}
EOF

# wait_log PATTERN WHAT: the daemon logs PATTERN within 15 s.
wait_log() {
	for _ in $(seq 150); do
		grep -q "$1" "$WORK/serve.log" && return 0
		sleep 0.1
	done
	cat "$WORK/serve.log"
	fail "$2"
}

enroll() { # enroll NAME: an agent for spiffe://corp.internal/NAME in $WORK/NAME
	local token
	token=$("$AGENTCA" token create --dir "$CA" --subject "spiffe://corp.internal/$1" --ttl 10m)
	"$AGENTCA" enroll --ca "$URL" --token "$token" --fingerprint "$FP" --out "$WORK/$1" \
		>"$WORK/$1.out" 2>&1 || { cat "$WORK/$1.out"; fail "enroll $1"; }
}

bundle() { # bundle FILE [HEADERS]
	curl -sS --cacert "$CA/root.pem" -D "${2:-/dev/null}" -o "$1" "$URL/v1/bundle" || fail "GET /v1/bundle"
}
etag() { tr -d '\r' <"$1" | awk -F': ' 'tolower($1) == "etag" {print $2}'; }
sequence() {
	curl -sS --cacert "$CA/root.pem" -H 'Accept: application/json' "$URL/v1/bundle" |
		sed -E 's/.*"spiffe_sequence": *([0-9]+).*/\1/'
}
ncerts() { grep -c 'BEGIN CERTIFICATE' "$1"; }

# handshake BUNDLE CLIENT [leaf]: an mTLS handshake between CLIENT (an enrolled agent,
# sending its chain, or with "leaf" its leaf alone) and an openssl s_server whose client
# trust is BUNDLE (a gateway fed by the bundle); the client trusts BUNDLE too. The server's
# own certificate is agent srv's.
HANDSHAKES=0
handshake() {
	local port
	: >"$WORK/ss.out"
	spawn openssl s_server -accept 127.0.0.1:0 -www -naccept 1 -cert "$WORK/srv/cert.pem" \
		-key "$WORK/srv/key.pem" -cert_chain "$WORK/srv/chain.pem" -CAfile "$1" -Verify 3 \
		-verify_return_error >"$WORK/ss.out" 2>&1
	for _ in $(seq 50); do grep -q '^ACCEPT' "$WORK/ss.out" && break; sleep 0.1; done
	port=$(sed -nE 's/^ACCEPT 127.0.0.1:([0-9]+)$/\1/p' "$WORK/ss.out")
	[ -n "$port" ] || { cat "$WORK/ss.out"; fail "s_server did not start"; }
	printf 'GET / HTTP/1.0\r\n\r\n' | timeout 10 openssl s_client -connect "127.0.0.1:$port" \
		-cert "$WORK/$2/cert.pem" -key "$WORK/$2/key.pem" \
		$([ "${3:-}" = leaf ] || echo -cert_chain "$WORK/$2/chain.pem") \
		-CAfile "$1" -verify_return_error -quiet >"$WORK/sc.out" 2>&1 || true
	wait "$SPAWNED" 2>/dev/null || true
	grep -q "200 ok" "$WORK/sc.out" || { cat "$WORK/sc.out" "$WORK/ss.out"; fail "handshake of $2 ${3:-} with a server trusting $(basename "$1") failed"; }
	HANDSHAKES=$((HANDSHAKES + 1))
}

start_daemon
enroll srv
enroll gw-1
bundle "$WORK/b0.pem" "$WORK/b0.h"
SEQ0=$(sequence)
cmp -s "$WORK/b0.pem" "$CA/root.pem" || fail "outside a rotation the bundle is the root alone"
openssl verify -CAfile "$WORK/b0.pem" -untrusted "$WORK/gw-1/chain.pem" "$WORK/gw-1/cert.pem" >/dev/null ||
	fail "gw-1 does not verify before the rotation"
handshake "$WORK/b0.pem" gw-1
pass "agent enrolled under intermediate ${OLD:0:16}; bundle = root, sequence $SEQ0"

# Prepare: the daemon publishes the successor within a tick or two.
expect_exit 0 "ca rotate (prepare)" "$AGENTCA" ca rotate --dir "$CA"
[ -s "$CA/next-intermediate.pem" ] || fail "no next-intermediate.pem"
[ "$(file_mode "$CA/next-intermediate.key")" = 600 ] || fail "next-intermediate.key is not 0600"
grep -q ENCRYPTED "$CA/next-intermediate.key" || fail "next-intermediate.key is not encrypted"
NEXT=$(certfp "$CA/next-intermediate.pem")
wait_log "published in the bundle" "the daemon never published the next intermediate"
bundle "$WORK/b1.pem" "$WORK/b1.h"
SEQ1=$(sequence)
[ "$(etag "$WORK/b1.h")" != "$(etag "$WORK/b0.h")" ] || fail "the bundle's ETag did not change"
[ "$SEQ1" -gt "$SEQ0" ] || fail "the SPIFFE sequence did not grow ($SEQ0 -> $SEQ1)"
[ "$(ncerts "$WORK/b1.pem")" = 3 ] || fail "the bundle does not carry root, next and active"
grep -qF "$(sed -n 2p "$CA/next-intermediate.pem")" "$WORK/b1.pem" || fail "next intermediate not in the bundle"
pass "prepared ${NEXT:0:16}; published: new ETag, sequence $SEQ0 -> $SEQ1, 3 certificates"

# A restart in the published state: same bundle, same ETag, same sequence (a gateway's
# acknowledgment keeps its meaning), and the state is still "published".
stop_daemon
start_daemon
bundle "$WORK/b1r.pem" "$WORK/b1r.h"
[ "$(etag "$WORK/b1r.h")" = "$(etag "$WORK/b1.h")" ] || fail "the ETag changed across a restart"
[ "$(sequence)" = "$SEQ1" ] || fail "the SPIFFE sequence changed across a restart"
"$AGENTCA" ca show --dir "$CA" >"$WORK/show0.txt"
grep -qE "published +$NEXT" "$WORK/show0.txt" || { cat "$WORK/show0.txt"; fail "ca show: not published after a restart"; }
pass "restart while published: same ETag and sequence, state kept"

# While the switch is planned (publish_for 1h), a new leaf is told to renew soon after it.
enroll gw-2
RA=$(sed -E 's/.*renew after ([^;]*);.*/\1/' "$WORK/gw-2.out")
NB=$(openssl x509 -in "$WORK/gw-2/cert.pem" -noout -startdate | cut -d= -f2)
NA=$(openssl x509 -in "$WORK/gw-2/cert.pem" -noout -enddate | cut -d= -f2)
RA_S=$(date -d "$RA" +%s)
NB_S=$(date -d "$NB" +%s)
NA_S=$(date -d "$NA" +%s)
USUAL=$((NB_S + (NA_S - NB_S) * 2 / 3))
[ "$RA_S" -lt "$USUAL" ] || fail "renew_after $RA is not before the usual 2/3 point"
[ "$RA_S" -ge $((NB_S + 3500)) ] || fail "renew_after $RA is before the planned switch"
pass "renew_after shortened to $RA (usual $(date -u -d "@$USUAL" +%FT%TZ))"
handshake "$WORK/b1.pem" gw-1
handshake "$WORK/b1.pem" gw-1 leaf
handshake "$WORK/b1.pem" gw-2 leaf
handshake "$WORK/b0.pem" gw-2
pass "prepared/published: old leaves complete mTLS handshakes with the old and the new bundle"

# Activation waits for the gateway's acknowledgment, even when forced.
expect_exit 1 "ca rotate before the ack" "$AGENTCA" ca rotate --dir "$CA"
stderr_has "acknowledge" "the refusal names the acknowledgments"
stderr_has "gw-1" "the refusal names the gateway"
ack() { # ack CERTDIR SEQUENCE -> status in $WORK/status
	curl -sS --cacert "$CA/root.pem" ${1:+--cert "$WORK/$1/cert.pem" --key "$WORK/$1/key.pem"} \
		-o "$WORK/ackbody" -w '%{http_code}' -H 'Content-Type: application/json' \
		--data-binary "{\"sequence\":$2}" "$URL/v1/bundle/ack" >"$WORK/status" || true
}
ack "" "$SEQ1"
[ "$(cat "$WORK/status")" = 401 ] || { cat "$WORK/ackbody"; fail "an ack without a client certificate: want 401"; }
ack gw-1 $((SEQ1 + 1000))
[ "$(cat "$WORK/status")" = 409 ] || { cat "$WORK/ackbody"; fail "an ack of a future sequence: want 409"; }
ack gw-1 "$SEQ0"
[ "$(cat "$WORK/status")" = 200 ] || { cat "$WORK/ackbody"; fail "ack: want 200"; }
expect_exit 1 "ca rotate after an old ack" "$AGENTCA" ca rotate --dir "$CA"
curl -sS --cacert "$CA/root.pem" --cert "$WORK/gw-1/cert.pem" --key "$WORK/gw-1/key.pem" \
	-o "$WORK/ackbody" -w '%{http_code}' -H 'Content-Type: application/json' \
	--data-binary '{"etag":"\"0123\""}' "$URL/v1/bundle/ack" >"$WORK/status" || true
[ "$(cat "$WORK/status")" = 409 ] || { cat "$WORK/ackbody"; fail "an ack of a stale ETag: want 409"; }
# The gateway's bundle feed acknowledges what it has written and reloaded, with the
# gateway's own certificate.
expect_exit 0 "bundle watch --once with an ack" "$AGENTCA" bundle watch --ca "$URL" \
	--ca-file "$CA/root.pem" --out "$WORK/gw-bundle.pem" --exec "touch $WORK/reloaded" --once \
	--cert "$WORK/gw-1/cert.pem" --key "$WORK/gw-1/key.pem"
[ -e "$WORK/reloaded" ] || fail "bundle watch did not run the reload command"
cmp -s "$WORK/gw-bundle.pem" "$WORK/b1.pem" || fail "bundle watch did not write the bundle"
stderr_has '"event":"bundle_acked"' "bundle watch acknowledged the bundle"
wait_log "spiffe://corp.internal/gw-1 holds bundle sequence $SEQ1" "the CA never recorded gw-1's ack"
expect_exit 0 "ca rotate (activate)" "$AGENTCA" ca rotate --dir "$CA"
[ "$(certfp "$CA/intermediate.pem")" = "$NEXT" ] || fail "intermediate.pem is not the successor"
[ "$(certfp "$CA/previous-intermediate.pem")" = "$OLD" ] || fail "previous-intermediate.pem is not the old one"
wait_log "intermediate $NEXT now signs" "the daemon never switched to the new intermediate"
pass "activation waited for gw-1's ack of sequence $SEQ1, then switched"

# /metrics: the scheduler's duties and the intermediates by state.
for _ in $(seq 100); do
	curl -sS --cacert "$CA/root.pem" "$URL/metrics" >"$WORK/metrics"
	grep -q 'agentca_intermediates{state="retiring"} 1' "$WORK/metrics" && break
	sleep 0.1
done
has "$WORK/metrics" 'agentca_intermediates{state="retiring"} 1' "metrics: one retiring intermediate"
has "$WORK/metrics" 'agentca_intermediates{state="active"} 1' "metrics: one active intermediate"
grep -qE '^agentca_duty_runs_total\{duty="rotation"\} [1-9]' "$WORK/metrics" || fail "metrics: rotation duty runs"
has "$WORK/metrics" 'agentca_duty_next_due_seconds{duty="prune"}' "metrics: prune next due"
pass "/metrics shows the duties and the intermediates' states"

# New leaves chain to the new intermediate and verify against the bundle alone; the old
# leaves still verify, and still renew over mTLS (presenting only the leaf).
enroll gw-3
[ "$(certfp "$WORK/gw-3/chain.pem")" = "$NEXT" ] || fail "the new leaf's chain is not the new intermediate"
bundle "$WORK/b2.pem"
[ "$(ncerts "$WORK/b2.pem")" = 3 ] || fail "the bundle does not carry root, active and retiring"
openssl verify -CAfile "$WORK/b2.pem" "$WORK/gw-3/cert.pem" >/dev/null || fail "a new leaf does not verify against the bundle"
openssl verify -CAfile "$WORK/b2.pem" "$WORK/gw-1/cert.pem" >/dev/null || fail "an old leaf does not verify against the bundle"
openssl verify -CAfile "$CA/root.pem" -untrusted "$WORK/gw-3/chain.pem" "$WORK/gw-3/cert.pem" >/dev/null ||
	fail "a new leaf does not verify with its chain against the root"
curl -sS --cacert "$CA/root.pem" --cert "$WORK/gw-1/cert.pem" --key "$WORK/gw-1/key.pem" \
	-o "$WORK/body" -w '%{http_code}' -X POST "$URL/v1/renew" >"$WORK/status" || true
[ "$(cat "$WORK/status")" = 200 ] || { cat "$WORK/body"; fail "an old leaf cannot renew after the switch"; }
sed -E 's/.*"certificate":"([^"]*)".*/\1/; s/\\n/\n/g' "$WORK/body" >"$WORK/gw-1-renewed.pem"
openssl verify -CAfile "$CA/root.pem" -untrusted "$CA/intermediate.pem" "$WORK/gw-1-renewed.pem" >/dev/null ||
	fail "the renewed leaf is not signed by the new intermediate"
pass "new leaves chain to ${NEXT:0:16}; old leaves verify and renew onto it"
for bundle in b2 b1 b0; do
	handshake "$WORK/$bundle.pem" gw-2
	handshake "$WORK/$bundle.pem" gw-3
done
handshake "$WORK/b2.pem" gw-2 leaf
handshake "$WORK/b2.pem" gw-3 leaf
pass "active/retiring: old and new leaves complete mTLS handshakes with servers on every bundle so far"

# The old intermediate still has leaves: retiring it now is refused.
expect_exit 1 "ca rotate (retire too early)" "$AGENTCA" ca rotate --dir "$CA"
stderr_has "unexpired leaf" "the refusal says leaves remain"
"$AGENTCA" ca show --dir "$CA" >"$WORK/show.txt"
grep -qE "active +$NEXT" "$WORK/show.txt" || { cat "$WORK/show.txt"; fail "ca show: successor not active"; }
grep -qE "retiring +$OLD" "$WORK/show.txt" || { cat "$WORK/show.txt"; fail "ca show: old not retiring"; }
pass "retirement waits for the old intermediate's leaves; ca show lists the states"

# Let the old intermediate's leaves expire: the daemon is stopped, and their rows are moved
# into the past as the clock would (the log is not touched). Pruning (retention 1s) then
# removes them from the hot table, and the rotation retires the old intermediate.
stop_daemon
command -v sqlite3 >/dev/null || fail "sqlite3 is needed (Makefile TEST_PKGS)"
BEFORE=$(sqlite3 "$CA/agentca.db" "SELECT count(*) FROM certificates")
EXPIRED=$(sqlite3 "$CA/agentca.db" "SELECT count(*) FROM certificates WHERE issuer_fingerprint = '$OLD'")
[ "$EXPIRED" -ge 3 ] || fail "expected the old intermediate's leaves in the store ($EXPIRED)"
sqlite3 "$CA/agentca.db" "UPDATE certificates SET not_after = 1000 WHERE issuer_fingerprint = '$OLD'"
sed -i 's/"acknowledgments": true/"retention": "1s", "acknowledgments": true/' "$CA/config.json"
start_daemon
wait_log "intermediate $OLD retired" "the old intermediate was never retired"
wait_log '"msg":"prune: removed' "pruning never ran"
for _ in $(seq 50); do [ ! -e "$CA/previous-intermediate.pem" ] && break; sleep 0.1; done
[ ! -e "$CA/previous-intermediate.pem" ] || fail "previous-intermediate.pem is still there"
LEFT=$(sqlite3 "$CA/agentca.db" "SELECT count(*) FROM certificates WHERE issuer_fingerprint = '$OLD'")
[ "$LEFT" = 0 ] || fail "pruning left $LEFT of the $EXPIRED expired rows"
GW3=$(openssl x509 -in "$WORK/gw-3/cert.pem" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f')
[ "$(sqlite3 "$CA/agentca.db" "SELECT count(*) FROM certificates WHERE serial = '$GW3'")" = 1 ] ||
	fail "pruning removed a valid certificate"
[ "$(sqlite3 "$CA/agentca.db" "SELECT count(*) FROM certificates")" -lt "$BEFORE" ] || fail "no row was pruned"
bundle "$WORK/b3.pem"
cmp -s "$WORK/b3.pem" "$CA/root.pem" || fail "after the retirement the bundle is not the root alone"
if openssl verify -CAfile "$WORK/b3.pem" "$WORK/gw-2/cert.pem" >/dev/null 2>&1; then
	fail "a leaf of the retired intermediate still finds a path in the bundle"
fi
openssl verify -CAfile "$WORK/b3.pem" -untrusted "$CA/intermediate.pem" "$WORK/gw-3/cert.pem" >/dev/null ||
	fail "a leaf of the active intermediate no longer verifies"
handshake "$WORK/b3.pem" gw-3
# The check can fail: outside a rotation the bundle carries no intermediate, so a client
# that sends its leaf alone finds no path (the bundle changed as documented).
if (handshake "$WORK/b3.pem" gw-3 leaf) >/dev/null 2>&1; then
	fail "a leaf without its chain verified against a bundle without intermediates"
fi
pass "old intermediate retired and out of the bundle; $EXPIRED expired rows pruned"

# The log holds every step, and verifies.
"$AGENTCA" audit export --dir "$CA" >"$WORK/log.jsonl" || fail "audit export"
for kind in prepared published activated retiring retired; do
	grep -q "\"kind\":\"intermediate_$kind\"" "$WORK/log.jsonl" || fail "no intermediate_$kind entry in the log"
done
grep '"kind":"intermediate_activated"' "$WORK/log.jsonl" | grep -q "$NEXT" || fail "the activation entry does not name $NEXT"
expect_exit 0 "audit verify" "$AGENTCA" audit verify "$WORK/log.jsonl" --key "$CA/audit.pub"
pass "log: prepared, published, activated, retiring, retired; audit verify passes after pruning"
pass "$HANDSHAKES mTLS handshakes across the rotation, none failed"
stop_daemon
