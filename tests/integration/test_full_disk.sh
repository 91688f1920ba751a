#!/usr/bin/env bash
# A full disk during issuance: the CA directory lives on a small tmpfs that is filled while
# enrollments are in flight. Each request either completes (the client has its files and the
# certificate is in the database and the log) or gets 503 with Retry-After and leaves nothing
# behind (no client files, no row, the token still good). The daemon keeps serving, and once
# space returns the same tokens enroll without a restart; the log then verifies and holds
# exactly the certificates the clients received.
. "$(dirname "$0")/lib.sh"

DISK=$WORK/disk
mkdir -p "$DISK"
mount -t tmpfs -o size=6m tmpfs "$DISK" ||
	fail "cannot mount a tmpfs for the full-disk test (needs root or CAP_SYS_ADMIN)"
unmount_disk() {
	for pid in $PIDS; do
		kill -TERM "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	umount "$DISK" 2>/dev/null || umount -l "$DISK" 2>/dev/null || true
	cleanup
}
trap unmount_disk EXIT

CA=$DISK/ca
"$AGENTCA" init --dir "$CA" --name Full --trust-domain corp.internal >/dev/null 2>&1 || fail "init"
FP=$(openssl x509 -in "$CA/root.pem" -outform DER | sha256sum | cut -d' ' -f1)
N=12
for i in $(seq 0 $N); do # tokens are minted (and logged) while there is room
	"$AGENTCA" token create --dir "$CA" --subject "spiffe://corp.internal/agent-$i" \
		>"$WORK/token.$i" 2>/dev/null || fail "token create $i"
done

spawn "$AGENTCA" serve --dir "$CA" --listen 127.0.0.1:0 2>"$WORK/serve.log"
DAEMON=$SPAWNED
for _ in $(seq 100); do
	grep -q '"event":"ca_ready"' "$WORK/serve.log" && break
	sleep 0.1
done
PORT=$(grep '"event":"listening"' "$WORK/serve.log" | tail -n1 | sed -E 's/.*\(port ([0-9]+)\).*/\1/')
[ -n "$PORT" ] || { cat "$WORK/serve.log"; fail "serve never listened"; }
URL="https://127.0.0.1:$PORT"

enroll() { # enroll I: agent I into $WORK/agent-I, stderr in $WORK/enroll.I.err
	"$AGENTCA" enroll --ca "$URL" --token "$(cat "$WORK/token.$1")" --fingerprint "$FP" \
		--out "$WORK/agent-$1" >/dev/null 2>"$WORK/enroll.$1.err"
}
enroll 0 || { cat "$WORK/enroll.0.err"; fail "enrollment before the disk filled"; }

# Fill the disk while enrollments run: two streams of agents, the disk filled as soon as
# the first two have their certificates.
stream() { # stream FIRST: agents FIRST, FIRST+2, ... up to N, one after the other
	i=$1
	while [ "$i" -le $N ]; do
		enroll "$i" || true
		i=$((i + 2))
	done
}
stream 1 &
S1=$!
stream 2 &
S2=$!
for _ in $(seq 300); do
	[ -s "$WORK/agent-1/cert.pem" ] && [ -s "$WORK/agent-2/cert.pem" ] && break
	sleep 0.01
done
dd if=/dev/zero of="$DISK/filler" bs=4k 2>/dev/null || true
wait "$S1" "$S2"
[ "$(df --output=avail "$DISK" | tail -n1 | tr -d ' ')" -lt 64 ] || fail "the disk did not fill"

# After the disk filled: every new request is refused with 503 and Retry-After.
make_ec_csr P-256 "$WORK/probe.csr"
PROBE=$N
[ -s "$WORK/agent-$PROBE/cert.pem" ] && PROBE=
if [ -n "$PROBE" ]; then
	curl -sS --cacert "$CA/root.pem" -D "$WORK/headers" -o "$WORK/body" \
		-H 'Content-Type: application/json' \
		-d "{\"token\":\"$(cat "$WORK/token.$PROBE")\",\"csr\":\"$(awk '{printf "%s\\n", $0}' "$WORK/probe.csr")\"}" \
		"$URL/v1/enroll" || fail "curl while the disk is full"
fi
FAILED=0
for i in $(seq 1 $N); do
	if [ -s "$WORK/agent-$i/cert.pem" ]; then
		continue
	fi
	FAILED=$((FAILED + 1))
	grep -q "503 store_unavailable" "$WORK/enroll.$i.err" ||
		{ cat "$WORK/enroll.$i.err"; fail "agent-$i failed without a 503"; }
	[ -z "$(ls -A "$WORK/agent-$i" 2>/dev/null)" ] || fail "agent-$i has files from a failed enrollment"
done
[ "$FAILED" -gt 0 ] || fail "no enrollment met the full disk (all $N completed)"
pass "disk full: $FAILED of $N enrollments refused with 503 store_unavailable, nothing written"
if [ -s "$WORK/headers" ]; then
	grep -q '^HTTP/1.1 503' "$WORK/headers" || { cat "$WORK/headers" "$WORK/body"; fail "want 503"; }
	grep -qi '^Retry-After: [0-9]' "$WORK/headers" || fail "a 503 without Retry-After"
	pass "503 carries Retry-After"
fi
curl -sS --cacert "$CA/root.pem" "$URL/healthz" | grep -q '"ok"' || fail "healthz while the disk is full"

# Space returns: the refused tokens were not consumed and now enroll, with no restart.
rm -f "$DISK/filler"
for i in $(seq 1 $N); do
	[ -s "$WORK/agent-$i/cert.pem" ] && continue
	rm -rf "$WORK/agent-$i"
	enroll "$i" || { cat "$WORK/enroll.$i.err"; fail "agent-$i after space returned"; }
done
kill -0 "$DAEMON" || fail "the daemon died"
pass "space returned: the refused tokens enrolled without a restart"

# Every certificate a client holds is in the database and in a log that verifies; nothing
# else was issued.
kill -TERM "$DAEMON"
wait "$DAEMON" || fail "serve did not exit 0 on SIGTERM"
"$AGENTCA" audit export --dir "$CA" >"$WORK/export.jsonl" 2>"$WORK/export.err" || fail "export"
"$AGENTCA" audit verify "$WORK/export.jsonl" --key "$CA/audit.pub" >"$WORK/verify.out" 2>&1 ||
	{ cat "$WORK/verify.out"; fail "the log does not verify after the full disk"; }
for i in $(seq 0 $N); do
	serial=$(openssl x509 -in "$WORK/agent-$i/cert.pem" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f')
	grep -q "\"serial\":\"$serial\"" "$WORK/export.jsonl" || fail "agent-$i's certificate is not in the log"
done
# The agents' issuances, besides the daemon's own server certificate (actor ca:self).
issued=$(grep '"kind":"issued"' "$WORK/export.jsonl" | grep -c '"actor":"token:')
[ "$issued" = $((N + 1)) ] || fail "the log holds $issued token issuances for $((N + 1)) agents"
[ "$(sqlite3 -cmd ".timeout 10000" "$CA/agentca.db" 'PRAGMA integrity_check')" = ok ] || fail "database integrity check"
[ "$(sqlite3 -cmd ".timeout 10000" "$CA/agentca.db" "SELECT count(*) FROM certificates WHERE subject LIKE '%/agent-%'")" = $((N + 1)) ] ||
	fail "the certificates table does not match what the clients hold"
pass "log verifies; $((N + 1)) certificates, each in the database and the log, no extra"
