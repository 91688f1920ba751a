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

# The SPIFFE bundle: the same root as a JWK with its certificate, a sequence and a hint.
curl -sS --cacert "$CA/root.pem" -H 'Accept: application/json' "$URL/v1/bundle" >"$WORK/spiffe.json"
grep -q '"use":"x509-svid"' "$WORK/spiffe.json" || { cat "$WORK/spiffe.json"; fail "no x509-svid key"; }
grep -q '"kty":"EC"' "$WORK/spiffe.json" && grep -q '"crv":"P-256"' "$WORK/spiffe.json" || fail "JWK type"
grep -q '"spiffe_sequence":[0-9]' "$WORK/spiffe.json" && grep -q '"spiffe_refresh_hint":300' "$WORK/spiffe.json" ||
	fail "SPIFFE bundle fields"
grep -qF "\"x5c\":[\"$(openssl x509 -in "$CA/root.pem" -outform DER | base64 -w0)\"]" "$WORK/spiffe.json" ||
	fail "x5c is not the root certificate"
pass "Accept: application/json gives the SPIFFE bundle (JWKS)"

# The long-poll itself: with the current ETag, the CA holds the request and answers 304
# when the wait ends; with another ETag it answers the bundle at once.
ETAG=$(curl -sS --cacert "$CA/root.pem" -D - -o /dev/null "$URL/v1/bundle" | tr -d '\r' |
	awk -F': ' 'tolower($1) == "etag" {print $2}')
[ -n "$ETAG" ] || fail "no ETag on the bundle"
code=$(curl -sS --cacert "$CA/root.pem" -o /dev/null -w '%{http_code}' -H "If-None-Match: $ETAG" \
	"$URL/v1/bundle?wait=1s")
[ "$code" = 304 ] || fail "long-poll with the current ETag: $code, want 304"
code=$(curl -sS --cacert "$CA/root.pem" -o /dev/null -w '%{http_code}' -H 'If-None-Match: "old"' \
	"$URL/v1/bundle?wait=30s")
[ "$code" = 200 ] || fail "long-poll with an old ETag: $code, want 200"
pass "long-poll answers 304 after the wait, 200 at once for an old ETag"

# Running: a root added to the CA (trust add, then SIGHUP) reaches the file while the watch
# waits, and the gateway is reloaded once.
spawn "$AGENTCA" bundle watch --ca "$URL" --out "$WORK/bundle.pem" --exec "$RELOAD" --wait 30s \
	2>"$WORK/watch.log"
WATCH=$SPAWNED
sleep 1
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/partner.key" \
	-subj "/CN=Partner Root" -addext "basicConstraints=critical,CA:TRUE" \
	-addext "keyUsage=critical,keyCertSign,cRLSign" -days 30 -out "$WORK/partner.pem" 2>/dev/null
expect_exit 0 "trust add" "$AGENTCA" trust add --dir "$CA" "$WORK/partner.pem"
kill -HUP "$DAEMON"
for _ in $(seq 100); do [ "$(grep -c 'BEGIN CERTIFICATE' "$WORK/bundle.pem")" = 2 ] && break; sleep 0.1; done
[ "$(grep -c 'BEGIN CERTIFICATE' "$WORK/bundle.pem")" = 2 ] || { cat "$WORK/watch.log"; fail "the new root never reached the file"; }
for _ in $(seq 50); do [ "$(reloads)" = 2 ] && break; sleep 0.1; done
[ "$(reloads)" = 2 ] || fail "reload did not run once after the change"
kill -TERM "$WATCH"
wait "$WATCH" || { cat "$WORK/watch.log"; fail "bundle watch did not exit 0 on SIGTERM"; }
pass "a root added on the CA reaches the watched file during a long-poll; one reload"

# The daemon stops cleanly with a long-poll parked on it.
curl -sS --cacert "$CA/root.pem" -o /dev/null -H "If-None-Match: $(curl -sS --cacert "$CA/root.pem" -D - -o /dev/null "$URL/v1/bundle" | tr -d '\r' | awk -F': ' 'tolower($1) == "etag" {print $2}')" \
	"$URL/v1/bundle?wait=60s" &
sleep 0.5
kill -TERM "$DAEMON"
wait "$DAEMON" || fail "the daemon did not stop cleanly with a parked long-poll"
wait || true
pass "SIGTERM with a parked long-poll stops cleanly"
