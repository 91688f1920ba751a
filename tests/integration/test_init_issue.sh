#!/usr/bin/env bash
# init, then issue, then verify the leaf with openssl; the extensions users rely on; key
# files encrypted and private; the daemon refuses an exposed key; config keys checked.
. "$(dirname "$0")/lib.sh"

CA=$WORK/ca
expect_exit 0 "init" "$AGENTCA" init --dir "$CA" --name "Test" --trust-domain corp.internal \
	--dns-suffix corp.internal --ip-range 10.0.0.0/8
has "$WORK/stdout" "root fingerprint (SHA-256):" "init output"
for f in root.key intermediate.key; do
	[ "$(file_mode "$CA/$f")" = 600 ] || fail "$f mode is $(file_mode "$CA/$f"), want 600"
	has "$CA/$f" "BEGIN ENCRYPTED PRIVATE KEY" "$f encrypted at rest"
done
pass "init writes encrypted 0600 keys"

# The fingerprint printed is the SHA-256 of the root's DER.
want_fp=$(openssl x509 -in "$CA/root.pem" -outform DER | sha256sum | cut -d' ' -f1)
has "$WORK/stdout" "$want_fp" "init prints the root fingerprint"

# Root and intermediate extensions.
openssl x509 -in "$CA/root.pem" -noout -text >"$WORK/root.txt"
has "$WORK/root.txt" "CA:TRUE" "root basicConstraints"
openssl x509 -in "$CA/intermediate.pem" -noout -text >"$WORK/int.txt"
has "$WORK/int.txt" "CA:TRUE, pathlen:0" "intermediate pathlen 0"
grep -A1 "Basic Constraints" "$WORK/int.txt" | grep -q critical || fail "basicConstraints not critical"
has "$WORK/int.txt" "X509v3 Name Constraints: critical" "intermediate name constraints critical"
has "$WORK/int.txt" "URI:corp.internal" "URI name constraint for the trust domain"
has "$WORK/int.txt" "DNS:corp.internal" "DNS name constraint"
has "$WORK/int.txt" "IP:10.0.0.0/255.0.0.0" "IP name constraint"
has "$WORK/int.txt" "Subject Key Identifier" "intermediate SKI"
has "$WORK/int.txt" "Authority Key Identifier" "intermediate AKI"
openssl verify -CAfile "$CA/root.pem" "$CA/intermediate.pem" >/dev/null || fail "intermediate does not verify"
pass "root and intermediate have the required extensions"

# Issue a leaf and verify it with openssl.
make_ec_csr P-256 "$WORK/gw1.csr" "DNS:gw-1.corp.internal,IP:10.1.2.3"
expect_exit 0 "issue" "$AGENTCA" issue --dir "$CA" --csr "$WORK/gw1.csr" \
	--subject spiffe://corp.internal/gw-1 --ttl 1h
cp "$WORK/stdout" "$WORK/gw1.pem"
[ "$(grep -c 'BEGIN CERTIFICATE' "$WORK/gw1.pem")" = 2 ] || fail "issue prints leaf + intermediate"
first_cert "$WORK/gw1.pem" "$WORK/leaf.pem"
openssl verify -CAfile "$CA/root.pem" -untrusted "$CA/intermediate.pem" "$WORK/leaf.pem" \
	>/dev/null || fail "leaf does not verify"
openssl verify -CAfile "$CA/root.pem" -untrusted "$CA/intermediate.pem" -purpose sslclient \
	"$WORK/leaf.pem" >/dev/null || fail "leaf is not good for client auth"
openssl verify -CAfile "$CA/root.pem" -untrusted "$CA/intermediate.pem" -purpose sslserver \
	"$WORK/leaf.pem" >/dev/null || fail "leaf is not good for server auth"
openssl x509 -in "$WORK/leaf.pem" -noout -text >"$WORK/leaf.txt"
has "$WORK/leaf.txt" "URI:spiffe://corp.internal/gw-1" "leaf SPIFFE URI SAN"
has "$WORK/leaf.txt" "DNS:gw-1.corp.internal" "leaf DNS SAN"
has "$WORK/leaf.txt" "IP Address:10.1.2.3" "leaf IP SAN"
has "$WORK/leaf.txt" "TLS Web Server Authentication, TLS Web Client Authentication" "leaf EKU"
has "$WORK/leaf.txt" "CA:FALSE" "leaf basicConstraints"
has "$WORK/leaf.txt" "Subject Key Identifier" "leaf SKI"
has "$WORK/leaf.txt" "Authority Key Identifier" "leaf AKI"
serial=$(openssl x509 -in "$WORK/leaf.pem" -noout -serial | cut -d= -f2)
[ ${#serial} -eq 32 ] || fail "serial $serial is not 128 bits"
nb=$(date -d "$(openssl x509 -in "$WORK/leaf.pem" -noout -startdate | cut -d= -f2)" +%s)
na=$(date -d "$(openssl x509 -in "$WORK/leaf.pem" -noout -enddate | cut -d= -f2)" +%s)
life=$((na - nb))
[ "$life" -ge 3600 ] && [ "$life" -le 3660 ] || fail "lifetime $life s, want 1h (plus skew)"
pass "issued leaf verifies with openssl and has the expected extensions"

# Lifetime is clamped to policy: 1000 days asks too much, 90 days at most is given.
make_ec_csr P-256 "$WORK/long.csr"
expect_exit 0 "issue long" "$AGENTCA" issue --dir "$CA" --csr "$WORK/long.csr" \
	--subject spiffe://corp.internal/long --ttl 1000d
first_cert "$WORK/stdout" "$WORK/long.pem"
na=$(date -d "$(openssl x509 -in "$WORK/long.pem" -noout -enddate | cut -d= -f2)" +%s)
[ $((na - $(date +%s))) -le $((90 * 86400 + 60)) ] || fail "ttl not clamped to 90d"
pass "lifetime clamped to the policy"

# ca show: chain, fingerprints, key states.
expect_exit 0 "ca show" "$AGENTCA" ca show --dir "$CA"
has "$WORK/stdout" "$want_fp" "ca show prints the root fingerprint"
has "$WORK/stdout" "Intermediate CA" "ca show prints the intermediate"
pass "ca show"

# The daemon starts, says it is ready, and stops on SIGTERM.
spawn "$AGENTCA" serve --dir "$CA" 2>"$WORK/serve.log"
serve_pid=$SPAWNED
for _ in $(seq 100); do
	grep -q '"event":"ca_ready"' "$WORK/serve.log" && break
	sleep 0.1
done
grep -q '"event":"ca_ready"' "$WORK/serve.log" || { cat "$WORK/serve.log"; fail "serve never ready"; }
kill -TERM "$serve_pid"
wait "$serve_pid" || fail "serve did not exit 0 on SIGTERM"
grep -q '"event":"shutdown"' "$WORK/serve.log" || fail "no shutdown line"
if grep -qi "$AGENTCA_PASSWORD" "$WORK/serve.log"; then fail "passphrase in the log"; fi
pass "serve starts, logs ready, stops on SIGTERM"

# Unknown configuration keys are refused, naming the key.
printf '{"policy":{"max_tll":"1h"}}\n' >"$WORK/bad.json"
expect_exit 1 "serve bad config" "$AGENTCA" serve --dir "$CA" --config "$WORK/bad.json"
stderr_has 'policy.max_tll' "unknown config key named"
printf '{"policy":{"default_ttl":"1h","max_ttl":"2h"},"store":{"busy_timeout_ms":100}}\n' \
	>"$WORK/good.json"
make_ec_csr P-256 "$WORK/cfg.csr"
expect_exit 0 "issue with config" "$AGENTCA" issue --dir "$CA" --csr "$WORK/cfg.csr" \
	--subject spiffe://corp.internal/cfg --config "$WORK/good.json" --ttl 5h
first_cert "$WORK/stdout" "$WORK/cfg.pem"
na=$(date -d "$(openssl x509 -in "$WORK/cfg.pem" -noout -enddate | cut -d= -f2)" +%s)
[ $((na - $(date +%s))) -le 7260 ] || fail "config max_ttl 2h not applied"
pass "config file applied; unknown key refused by name"

# A key readable by others: the daemon and offline issuance refuse to use it.
chmod 644 "$CA/intermediate.key"
expect_exit 1 "serve exposed key" "$AGENTCA" serve --dir "$CA"
stderr_has "intermediate.key is accessible by group or others" "exposed key refused"
expect_exit 1 "issue exposed key" "$AGENTCA" issue --dir "$CA" --csr "$WORK/gw1.csr" \
	--subject spiffe://corp.internal/gw-1
chmod 600 "$CA/intermediate.key"
pass "exposed key file refused"

# A wrong passphrase is refused, and not echoed.
AGENTCA_PASSWORD=Zq9-not-it expect_exit 1 "wrong passphrase" "$AGENTCA" serve --dir "$CA"
stderr_has "passphrase is wrong" "wrong passphrase message"
if grep -q Zq9-not-it "$WORK/stderr"; then fail "passphrase echoed"; fi
pass "wrong passphrase refused"

# Usage errors exit 2; init refuses to overwrite a CA.
expect_exit 2 "no args" "$AGENTCA" issue --dir "$CA"
expect_exit 2 "bad option" "$AGENTCA" init --bogus
expect_exit 2 "unknown command" "$AGENTCA" frobnicate
expect_exit 1 "init twice" "$AGENTCA" init --dir "$CA" --name T --trust-domain corp.internal
for cmd in "init" "ca import" "ca show" "trust add" "issue" "serve" "audit export" "audit verify"; do
	# shellcheck disable=SC2086
	expect_exit 0 "$cmd --help" "$AGENTCA" $cmd --help
	has "$WORK/stdout" "usage: agentca $cmd" "$cmd --help"
done
pass "usage errors exit 2; every command has --help"

# Generated passphrase, offline root, and the other key types.
(
	unset AGENTCA_PASSWORD
	expect_exit 0 "init generated passphrase" "$AGENTCA" init --dir "$WORK/gen" --name G \
		--trust-domain corp.internal --offline-root "$WORK/offline-root.key"
	has "$WORK/stdout" "$WORK/gen/password" "init says where the passphrase is"
	[ "$(file_mode "$WORK/gen/password")" = 600 ] || fail "password file not 0600"
	[ ! -e "$WORK/gen/root.key" ] || fail "root key left in DIR with --offline-root"
	has "$WORK/offline-root.key" "BEGIN ENCRYPTED PRIVATE KEY" "offline root key encrypted"
	expect_exit 0 "issue generated passphrase" "$AGENTCA" issue --dir "$WORK/gen" \
		--csr "$WORK/cfg.csr" --subject spiffe://corp.internal/gw-1
)
pass "generated passphrase and --offline-root"

for kt in p384 rsa3072 ed25519; do
	expect_exit 0 "init $kt" "$AGENTCA" init --dir "$WORK/$kt" --name "K $kt" \
		--trust-domain corp.internal --key-type "$kt"
	expect_exit 0 "issue $kt" "$AGENTCA" issue --dir "$WORK/$kt" --csr "$WORK/cfg.csr" \
		--subject spiffe://corp.internal/gw-1
	first_cert "$WORK/stdout" "$WORK/$kt-leaf.pem"
	openssl verify -CAfile "$WORK/$kt/root.pem" -untrusted "$WORK/$kt/intermediate.pem" \
		"$WORK/$kt-leaf.pem" >/dev/null || fail "$kt leaf does not verify"
done
pass "P-384, RSA-3072 and Ed25519 CAs issue verifiable leaves"
