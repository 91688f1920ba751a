#!/usr/bin/env bash
# token create and admin token: init makes the token keys (private 0600 and encrypted);
# token create prints exactly one JWT whose payload has the promised claims; lifetimes over
# 24h and unknown roles are refused; the issuance log records each token by its jti, and
# the token itself appears nowhere but on stdout.
. "$(dirname "$0")/lib.sh"

# b64url_decode: standard input is one base64url part; standard output its bytes.
b64url_decode() {
	s=$(tr '_-' '/+')
	while [ $((${#s} % 4)) -ne 0 ]; do s="$s="; done
	printf '%s' "$s" | base64 -d
}

CA=$WORK/ca
expect_exit 0 "init" "$AGENTCA" init --dir "$CA" --name Test --trust-domain corp.internal
for k in token admin; do
	[ "$(file_mode "$CA/$k.key")" = 600 ] || fail "$k.key mode is $(file_mode "$CA/$k.key")"
	has "$CA/$k.key" "BEGIN ENCRYPTED PRIVATE KEY" "$k.key encrypted at rest"
	[ "$(file_mode "$CA/$k.pub")" = 644 ] || fail "$k.pub mode is $(file_mode "$CA/$k.pub")"
	has "$CA/$k.pub" "BEGIN PUBLIC KEY" "$k.pub is a public key"
done
pass "init makes the token key pairs"

fp=$(openssl x509 -in "$CA/root.pem" -outform DER | sha256sum | cut -d' ' -f1)

# token create: one line, a JWT, the claims.
expect_exit 0 "token create" "$AGENTCA" token create --dir "$CA" \
	--subject spiffe://corp.internal/gw-1/child-3 --dns c3.corp.internal \
	--dns child-3.corp.internal --parent spiffe://corp.internal/gw-1
[ "$(wc -l <"$WORK/stdout")" = 1 ] || fail "token create printed more than one line"
[ ! -s "$WORK/stderr" ] || fail "token create wrote to stderr"
token=$(cat "$WORK/stdout")
printf '%s\n' "$token" | grep -Eq '^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$' ||
	fail "token create did not print a JWT"
printf '%s' "$token" | cut -d. -f1 | b64url_decode >"$WORK/header.json"
has "$WORK/header.json" '"alg":"ES256"' "the token is ES256"
printf '%s' "$token" | cut -d. -f2 | b64url_decode >"$WORK/payload.json"
for claim in '"iss":"agentca"' "\"aud\":\"$fp\"" '"sub":"spiffe://corp.internal/gw-1/child-3"' \
	'"typ":"bootstrap"' '"dns":["c3.corp.internal","child-3.corp.internal"]' \
	'"parent":"spiffe://corp.internal/gw-1"' '"depth":0' '"jti":"' '"iat":' '"nbf":' '"exp":'; do
	has "$WORK/payload.json" "$claim" "token payload"
done
jti=$(grep -o '"jti":"[0-9a-f]*"' "$WORK/payload.json" | cut -d'"' -f4)
[ ${#jti} -eq 32 ] || fail "jti '$jti' is not 128 bits of hex"
iat=$(grep -o '"iat":[0-9]*' "$WORK/payload.json" | cut -d: -f2)
exp=$(grep -o '"exp":[0-9]*' "$WORK/payload.json" | cut -d: -f2)
[ $((exp - iat)) -eq 600 ] || fail "default ttl is $((exp - iat)) s, want 600"
pass "token create prints one ES256 JWT with the claims"

expect_exit 0 "token create 1h" "$AGENTCA" token create --dir "$CA" \
	--subject spiffe://corp.internal/gw-2 --ttl 1h
printf '%s' "$(cat "$WORK/stdout")" | cut -d. -f2 | b64url_decode >"$WORK/payload2.json"
iat=$(grep -o '"iat":[0-9]*' "$WORK/payload2.json" | cut -d: -f2)
exp=$(grep -o '"exp":[0-9]*' "$WORK/payload2.json" | cut -d: -f2)
[ $((exp - iat)) -eq 3600 ] || fail "--ttl 1h gave $((exp - iat)) s"
token2=$(cat "$WORK/stdout")
pass "--ttl sets the lifetime"

# Refusals: one line on stderr each.
set +e
"$AGENTCA" token create --dir "$CA" --subject spiffe://corp.internal/gw-1 --ttl 25h \
	>"$WORK/stdout" 2>"$WORK/stderr"
got=$?
set -e
[ "$got" = 1 ] || [ "$got" = 2 ] || fail "--ttl 25h: exit $got, want 1 or 2"
[ "$(wc -l <"$WORK/stderr")" = 1 ] || fail "--ttl 25h: want one line on stderr"
[ ! -s "$WORK/stdout" ] || fail "--ttl 25h printed something on stdout"
pass "--ttl 25h refused"

expect_exit 1 "subject not a SPIFFE ID" "$AGENTCA" token create --dir "$CA" --subject gw-1
expect_exit 2 "no subject" "$AGENTCA" token create --dir "$CA"
AGENTCA_PASSWORD=Zq9-not-it expect_exit 1 "wrong passphrase" "$AGENTCA" token create \
	--dir "$CA" --subject spiffe://corp.internal/gw-1
if grep -q Zq9-not-it "$WORK/stderr"; then fail "passphrase echoed"; fi
pass "bad subjects, missing options and wrong passphrases refused"

# admin token.
expect_exit 0 "admin token auditor" "$AGENTCA" admin token --dir "$CA" --role auditor \
	--name alice
[ "$(wc -l <"$WORK/stdout")" = 1 ] || fail "admin token printed more than one line"
admin_token=$(cat "$WORK/stdout")
printf '%s' "$admin_token" | cut -d. -f2 | b64url_decode >"$WORK/admin.json"
for claim in '"typ":"admin"' '"role":"auditor"' '"sub":"alice"' "\"aud\":\"$fp\""; do
	has "$WORK/admin.json" "$claim" "admin token payload"
done
iat=$(grep -o '"iat":[0-9]*' "$WORK/admin.json" | cut -d: -f2)
exp=$(grep -o '"exp":[0-9]*' "$WORK/admin.json" | cut -d: -f2)
[ $((exp - iat)) -eq 900 ] || fail "admin token default ttl is $((exp - iat)) s, want 900"
expect_exit 2 "admin token --role root" "$AGENTCA" admin token --dir "$CA" --role root
[ "$(wc -l <"$WORK/stderr")" = 1 ] || fail "--role root: want one line on stderr"
expect_exit 2 "admin token without role" "$AGENTCA" admin token --dir "$CA"
pass "admin token --role auditor works; --role root is a usage error"

for cmd in "token create" "admin token"; do
	# shellcheck disable=SC2086
	expect_exit 0 "$cmd --help" "$AGENTCA" $cmd --help
	has "$WORK/stdout" "usage: agentca $cmd" "$cmd --help"
done
pass "--help"

# The issuance log records each token by jti, and never the token.
expect_exit 0 "audit export" "$AGENTCA" audit export --dir "$CA"
cp "$WORK/stdout" "$WORK/log.jsonl"
[ ! -s "$WORK/stderr" ] || fail "audit export wrote to stderr"
grep '"kind":"token_created"' "$WORK/log.jsonl" | grep -q "$jti" ||
	fail "no token_created entry naming jti $jti"
grep '"kind":"token_created"' "$WORK/log.jsonl" | grep "$jti" |
	grep -q '"subject":"spiffe://corp.internal/gw-1/child-3"' || fail "entry lacks the subject"
grep '"kind":"token_created"' "$WORK/log.jsonl" | grep -q '"actor":"admin:cli"' ||
	fail "entry lacks the actor"
[ "$(grep -c '"kind":"token_created"' "$WORK/log.jsonl")" = 3 ] ||
	fail "want 3 token_created entries (two bootstrap, one admin)"
expect_exit 0 "audit verify" "$AGENTCA" audit verify "$WORK/log.jsonl"
expect_exit 0 "audit export csv" "$AGENTCA" audit export --dir "$CA" --format csv
cp "$WORK/stdout" "$WORK/log.csv"
for t in "$token" "$token2" "$admin_token"; do
	sig=${t##*.}
	for f in "$WORK/log.jsonl" "$WORK/log.csv" "$WORK/stderr"; do
		if grep -qF -- "$sig" "$f"; then fail "a token signature appears in $f"; fi
	done
done
pass "audit export shows token_created by jti, never the token"

# A CA made before token keys existed gets them from token create.
rm "$CA/token.key" "$CA/token.pub" "$CA/admin.key" "$CA/admin.pub"
expect_exit 0 "token create makes missing keys" "$AGENTCA" token create --dir "$CA" \
	--subject spiffe://corp.internal/gw-3
[ -f "$CA/token.key" ] && [ -f "$CA/admin.pub" ] || fail "token keys not made"
pass "token create makes missing token keys"

# Corporate mode: init --csr makes the token keys too; token create wants the root first.
expect_exit 0 "init --csr" "$AGENTCA" init --dir "$WORK/corp" --name Corp \
	--trust-domain corp.internal --csr
[ -f "$WORK/corp/token.key" ] && [ -f "$WORK/corp/admin.pub" ] || fail "init --csr made no token keys"
expect_exit 1 "token create before import" "$AGENTCA" token create --dir "$WORK/corp" \
	--subject spiffe://corp.internal/gw-1
stderr_has "root.pem" "the missing root is named"
pass "init --csr makes token keys; token create needs the root"
