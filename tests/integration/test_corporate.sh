#!/usr/bin/env bash
# The corporate path: a root made with openssl here, `init --csr`, the CSR signed by that
# root with `openssl ca`, `ca import`; leaves verify against the corporate root alone. Each
# bad import is refused with its own message.
. "$(dirname "$0")/lib.sh"

CORP=$WORK/corp
mkdir -p "$CORP/newcerts"
: >"$CORP/index.txt"
echo 1000 >"$CORP/serial"
cat >"$CORP/openssl.cnf" <<CNF
[ ca ]
default_ca = corp
[ corp ]
dir = $CORP
database = \$dir/index.txt
new_certs_dir = \$dir/newcerts
serial = \$dir/serial
certificate = \$dir/root.pem
private_key = \$dir/root.key
default_md = sha256
default_days = 30
policy = anything
copy_extensions = copy
unique_subject = no
[ anything ]
commonName = optional
organizationName = optional
[ sub_ca ]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[ not_ca ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
[ root_ext ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
CNF

# corp_root NAME DIR: a self-signed corporate root.
corp_root() {
	openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$2/root.key" -out "$2/root.pem" -subj "/O=Corp/CN=$1" -days 3650 \
		-config "$CORP/openssl.cnf" -extensions root_ext 2>/dev/null
}
corp_root "Corp Root" "$CORP"

# sign CSR OUT EXTENSIONS [extra openssl ca args]
sign() {
	csr=$1 out=$2 ext=$3
	shift 3
	openssl ca -batch -config "$CORP/openssl.cnf" -extensions "$ext" -in "$csr" \
		-out "$out" -notext "$@" 2>"$WORK/openssl-ca.err" || {
		cat "$WORK/openssl-ca.err" >&2
		fail "openssl ca"
	}
}

CA=$WORK/ca
expect_exit 0 "init --csr" "$AGENTCA" init --dir "$CA" --name "Corp Issuing" \
	--trust-domain corp.internal --csr
[ -f "$CA/intermediate.csr" ] || fail "no intermediate.csr"
[ -f "$CA/intermediate.key" ] || fail "no intermediate.key"
[ ! -e "$CA/root.key" ] || fail "corporate mode must not make a root key"
openssl req -in "$CA/intermediate.csr" -noout -verify 2>/dev/null || fail "CSR does not verify"
pass "init --csr writes only an intermediate key and CSR"

# Issuing before the import is refused with a pointer to the next step.
make_ec_csr P-256 "$WORK/leaf.csr" "DNS:gw-1.corp.internal"
expect_exit 1 "issue before import" "$AGENTCA" issue --dir "$CA" --csr "$WORK/leaf.csr" \
	--subject spiffe://corp.internal/gw-1
stderr_has "ca import" "issue before import says what to do"

# Bad import 1: a certificate for another key.
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/other.key" \
	-subj "/CN=Other" -out "$WORK/other.csr" 2>/dev/null
sign "$WORK/other.csr" "$WORK/other.pem" sub_ca
expect_exit 1 "import wrong key" "$AGENTCA" ca import --dir "$CA" --cert "$WORK/other.pem" \
	--chain "$CORP/root.pem"
stderr_has "does not match" "wrong key refused"
msg_key=$(cat "$WORK/stderr")

# Bad import 2: signed, but not as a CA.
sign "$CA/intermediate.csr" "$WORK/notca.pem" not_ca
expect_exit 1 "import non-CA" "$AGENTCA" ca import --dir "$CA" --cert "$WORK/notca.pem" \
	--chain "$CORP/root.pem"
stderr_has "not a CA" "non-CA refused"
msg_notca=$(cat "$WORK/stderr")

# Bad import 3: the chain names another root.
mkdir -p "$WORK/evil"
corp_root "Evil Root" "$WORK/evil"
sign "$CA/intermediate.csr" "$WORK/good.pem" sub_ca
expect_exit 1 "import other root" "$AGENTCA" ca import --dir "$CA" --cert "$WORK/good.pem" \
	--chain "$WORK/evil/root.pem"
stderr_has "chain" "foreign chain refused"
msg_chain=$(cat "$WORK/stderr")

# Bad import 4: expired.
sign "$CA/intermediate.csr" "$WORK/expired.pem" sub_ca -startdate 20200101000000Z \
	-enddate 20210101000000Z
expect_exit 1 "import expired" "$AGENTCA" ca import --dir "$CA" --cert "$WORK/expired.pem" \
	--chain "$CORP/root.pem"
stderr_has "expired" "expired refused"
msg_expired=$(cat "$WORK/stderr")

# Bad import 5: not yet valid.
sign "$CA/intermediate.csr" "$WORK/future.pem" sub_ca -startdate 20990101000000Z \
	-enddate 20991231000000Z
expect_exit 1 "import future" "$AGENTCA" ca import --dir "$CA" --cert "$WORK/future.pem" \
	--chain "$CORP/root.pem"
stderr_has "not valid before" "not-yet-valid refused"

# Bad import 6: not a certificate at all.
echo "garbage" >"$WORK/garbage.pem"
expect_exit 1 "import garbage" "$AGENTCA" ca import --dir "$CA" --cert "$WORK/garbage.pem" \
	--chain "$CORP/root.pem"

[ "$msg_key" != "$msg_notca" ] && [ "$msg_notca" != "$msg_chain" ] &&
	[ "$msg_chain" != "$msg_expired" ] || fail "bad imports must have distinct messages"
[ ! -e "$CA/intermediate.pem" ] || fail "a refused import left intermediate.pem behind"
pass "each bad import refused with its own message, nothing installed"

# The good import, then leaves that verify against the corporate root alone.
expect_exit 0 "import" "$AGENTCA" ca import --dir "$CA" --cert "$WORK/good.pem" \
	--chain "$CORP/root.pem"
expect_exit 0 "issue corporate" "$AGENTCA" issue --dir "$CA" --csr "$WORK/leaf.csr" \
	--subject spiffe://corp.internal/gw-1
cp "$WORK/stdout" "$WORK/leaf-chain.pem"
first_cert "$WORK/leaf-chain.pem" "$WORK/leaf.pem"
openssl verify -CAfile "$CORP/root.pem" -untrusted "$WORK/leaf-chain.pem" "$WORK/leaf.pem" \
	>/dev/null || fail "leaf does not verify against the corporate root"
openssl verify -CAfile "$CORP/root.pem" -untrusted "$WORK/leaf-chain.pem" "$WORK/leaf.pem" | grep -q OK
expect_exit 0 "ca show corporate" "$AGENTCA" ca show --dir "$CA"
corp_fp=$(openssl x509 -in "$CORP/root.pem" -outform DER | sha256sum | cut -d' ' -f1)
has "$WORK/stdout" "$corp_fp" "ca show prints the corporate root fingerprint"
pass "imported intermediate issues leaves that verify against the corporate root"

# trust add: extra roots into the bundle; duplicates skipped; a leaf refused.
expect_exit 0 "trust add" "$AGENTCA" trust add --dir "$CA" "$WORK/evil/root.pem"
has "$WORK/stdout" "added 1 root" "trust add adds"
expect_exit 0 "trust add again" "$AGENTCA" trust add --dir "$CA" "$WORK/evil/root.pem"
has "$WORK/stdout" "added 0 roots" "trust add skips duplicates"
has "$CA/trust.pem" "BEGIN CERTIFICATE" "trust.pem written"
expect_exit 1 "trust add leaf" "$AGENTCA" trust add --dir "$CA" "$WORK/leaf.pem"
expect_exit 0 "export" "$AGENTCA" audit export --dir "$CA"
grep -q '"kind":"ca_prepared"' "$WORK/stdout" || fail "init --csr not in the log"
grep -q '"kind":"ca_activated"' "$WORK/stdout" || fail "ca import not in the log"
[ "$(grep -c '"kind":"trust_added"' "$WORK/stdout")" = 1 ] || fail "want one trust_added entry"
pass "trust add; admin actions are in the issuance log"
