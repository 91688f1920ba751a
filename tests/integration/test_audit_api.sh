#!/usr/bin/env bash
# The auditor's HTTP routes: the signed tree head, the streamed export (which verifies
# offline with the audit public key), inclusion proofs by serial and consistency proofs;
# anonymous callers and agents are refused.
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

for i in 1 2 3; do
	t=$("$AGENTCA" token create --dir "$CA" --subject "spiffe://corp.internal/agent-$i")
	"$AGENTCA" enroll --ca "$URL" --token "$t" --fingerprint "$FP" --out "$WORK/a$i" >/dev/null ||
		fail "enroll a$i"
done
AUDITOR=$("$AGENTCA" admin token --dir "$CA" --role auditor --name eve)

# get PATH [AUTH-TOKEN] [CERT-DIR]: status in $WORK/status, body in $WORK/body.
get() {
	args=()
	[ -n "${2:-}" ] && args+=(-H "Authorization: Bearer $2")
	[ -n "${3:-}" ] && args+=(--cert "$3/cert.pem" --key "$3/key.pem")
	curl -sS --cacert "$CA/root.pem" "${args[@]}" -o "$WORK/body" -w '%{http_code}' "$URL$1" \
		>"$WORK/status" || true
}
status_is() {
	[ "$(cat "$WORK/status")" = "$1" ] || { cat "$WORK/body"; echo; fail "$2: status $(cat "$WORK/status"), want $1"; }
}

get /v1/audit/sth
status_is 401 "anonymous sth"
get /v1/audit/export "" "$WORK/a1"
status_is 403 "agent export"
pass "anonymous callers and agents are refused"

get /v1/audit/sth "$AUDITOR"
status_is 200 "auditor sth"
grep -q '"tree_size"' "$WORK/body" && grep -q '"signature"' "$WORK/body" || fail "sth shape"
cp "$WORK/body" "$WORK/sth.json"
size=$(sed -E 's/.*"tree_size":([0-9]+).*/\1/' "$WORK/sth.json")
[ "$size" -ge 7 ] || fail "tree size $size is too small"
pass "the auditor gets a signed tree head"

get "/v1/audit/export?proofs=1" "$AUDITOR"
status_is 200 "auditor export"
cp "$WORK/body" "$WORK/export.jsonl"
expect_exit 0 "verify the API export" "$AGENTCA" audit verify "$WORK/export.jsonl" --key "$CA/audit.pub"
has "$WORK/stdout" "OK" "verify says OK"
get "/v1/audit/export?format=csv&kind=issued" "$AUDITOR"
status_is 200 "csv export"
head -n 1 "$WORK/body" | grep -q '^seq,time,kind' || fail "csv header"
if tail -n +2 "$WORK/body" | grep -v ',issued,' | grep -q .; then fail "kind filter let others through"; fi
pass "the streamed export verifies offline with the audit key; CSV and filters work"

serial=$(openssl x509 -in "$WORK/a2/cert.pem" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f')
get "/v1/audit/proof?serial=$serial" "$AUDITOR"
status_is 200 "proof by serial"
grep -q '"proof":\[' "$WORK/body" && grep -q '"sth"' "$WORK/body" || fail "proof shape"
grep "\"serial\":\"$serial\"" "$WORK/export.jsonl" | grep -q "\"seq\":$(sed -E 's/.*"seq":([0-9]+).*/\1/' "$WORK/body")," ||
	fail "the proof names another entry than the one that recorded the certificate"
get "/v1/audit/proof?serial=00ff" "$AUDITOR"
status_is 404 "proof of an unknown serial"
get "/v1/audit/consistency?from=2" "$AUDITOR"
status_is 200 "consistency"
grep -q '"from":2' "$WORK/body" || fail "consistency shape"
get "/v1/audit/consistency?from=x" "$AUDITOR"
status_is 400 "bad consistency"
pass "inclusion and consistency proofs"

# The daemon publishes the signed tree head in DIR/sth.json within a second of each batch of
# commits; it verifies with the audit key and can serve as --previous-sth.
for _ in $(seq 100); do
	new_size=$(sed -E 's/.*"tree_size":([0-9]+).*/\1/' "$CA/sth.json")
	[ "$new_size" -ge "$size" ] && break
	sleep 0.1
done
[ "$new_size" -ge "$size" ] || fail "the published head ($new_size) lags the log ($size)"
[ -s "$CA/sth.json" ] || fail "no published tree head"
old_size=$(sed -E 's/.*"tree_size":([0-9]+).*/\1/' "$CA/sth.json")
get "/v1/audit/export?proofs=1&consistency_from=$old_size" "$AUDITOR"
status_is 200 "export with a consistency proof"
cp "$WORK/body" "$WORK/export2.jsonl"
expect_exit 0 "verify against the published head" "$AGENTCA" audit verify "$WORK/export2.jsonl" \
	--key "$CA/audit.pub" --previous-sth "$CA/sth.json"
pass "the published tree head is one the export is consistent with"

# The certificate list: every certificate, a page at a time; filters; auditors only.
get "/v1/certificates" "" "$WORK/a1"
status_is 403 "agent certificate list"
get "/v1/certificates?subject=spiffe://corp.internal/agent-" "$AUDITOR"
status_is 200 "certificate list"
grep -q '"count":3' "$WORK/body" || { cat "$WORK/body"; fail "want the 3 agents"; }
get "/v1/certificates?limit=1" "$AUDITOR"
status_is 200 "first page"
grep -q '"count":1' "$WORK/body" && grep -q '"next_after"' "$WORK/body" || fail "paging"
after=$(sed -E 's/.*"next_after":"([^"]+)".*/\1/' "$WORK/body")
get "/v1/certificates?limit=100&after=$after" "$AUDITOR"
status_is 200 "next page"
if grep -q "\"serial\":\"$after\"" "$WORK/body"; then fail "the next page repeats the cursor"; fi
"$AGENTCA" revoke --dir "$CA" --serial "$serial" >/dev/null
get "/v1/certificates?subject=spiffe://corp.internal/agent-&valid=1" "$AUDITOR"
grep -q '"count":2' "$WORK/body" || { cat "$WORK/body"; fail "valid=1 should leave out the revoked one"; }
pass "auditors list certificates, filtered and paged"

kill -TERM "$DAEMON"
wait "$DAEMON" || fail "serve exit"
