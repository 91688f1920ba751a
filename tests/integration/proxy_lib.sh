# proxy_lib.sh - helpers for the proxy's integration tests (sourced after lib.sh): a CA
# daemon, the recording upstream, clients enrolled with tokens, certificates the CA would
# never issue (foreign, expired), and waiting on the proxy's session log.

UPSTREAM_TOOL="$(dirname "${MKCSR:?MKCSR must point at the mkcsr tool}")/proxy_upstream"
[ -x "$UPSTREAM_TOOL" ] || fail "no proxy_upstream tool next to $MKCSR"

# ca_init: a CA in $CA with its root fingerprint in $FP.
ca_init() {
	CA=$WORK/ca
	expect_exit 0 "init" "$AGENTCA" init --dir "$CA" --name Test --trust-domain corp.internal
	FP=$(openssl x509 -in "$CA/root.pem" -outform DER | sha256sum | cut -d' ' -f1)
}

# wait_for FILE TEXT WHAT [TENTHS]: until FILE holds TEXT, else fail.
wait_for() {
	for _ in $(seq "${4:-100}"); do
		grep -qF -- "$2" "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	cat "$1" >&2 2>/dev/null || true
	fail "$3: '$2' never appeared in $1"
}

# start_daemon [EXTRA ARGS]: serve $CA on a free port; sets DAEMON, PORT, URL.
start_daemon() {
	: >"$WORK/serve.log"
	spawn "$AGENTCA" serve --dir "$CA" --listen 127.0.0.1:0 "$@" 2>>"$WORK/serve.log"
	DAEMON=$SPAWNED
	wait_for "$WORK/serve.log" '"event":"ca_ready"' "serve ready"
	PORT=$(grep '"event":"listening"' "$WORK/serve.log" | tail -n1 | sed -E 's/.*\(port ([0-9]+)\).*/\1/')
	URL="https://127.0.0.1:$PORT"
}

# start_upstream NAME MODE... [--tls CERT KEY before MODE]: sets UPORT_<NAME>; records in
# $WORK/NAME.rec, dumps first bytes in $WORK/NAME.dump/.
start_upstream() {
	name=$1
	shift
	mkdir -p "$WORK/$name.dump"
	rm -f "$WORK/$name.port"
	spawn "$UPSTREAM_TOOL" --port-file "$WORK/$name.port" --record "$WORK/$name.rec" \
		--dump "$WORK/$name.dump" "$@"
	for _ in $(seq 50); do [ -s "$WORK/$name.port" ] && break; sleep 0.1; done
	[ -s "$WORK/$name.port" ] || fail "upstream $name did not start"
	eval "UPORT_$name=$(cat "$WORK/$name.port")"
}

# upstream_conns NAME: how many connections reached the upstream.
upstream_conns() {
	wc -l <"$WORK/$1.rec"
}

# enroll_client DIR SPIFFE-ID [DNS]: a certificate from the CA into DIR.
enroll_client() {
	if [ -n "${3:-}" ]; then
		tok=$("$AGENTCA" token create --dir "$CA" --subject "$2" --dns "$3")
	else
		tok=$("$AGENTCA" token create --dir "$CA" --subject "$2")
	fi
	expect_exit 0 "enroll $2" "$AGENTCA" enroll --ca "$URL" --token "$tok" --fingerprint "$FP" --out "$1"
}

# foreign_client DIR: a CA of our own making and a client certificate from it, with a SPIFFE
# ID the proxy would otherwise allow.
foreign_client() {
	mkdir -p "$1"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
		-keyout "$1/ca.key" -subj "/CN=Foreign CA" -out "$1/ca.pem" 2>/dev/null
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1/key.pem" \
		-subj "/CN=intruder" -out "$1/req.pem" 2>/dev/null
	printf 'subjectAltName=URI:spiffe://corp.internal/client/a\nextendedKeyUsage=clientAuth\n' >"$1/ext"
	openssl x509 -req -in "$1/req.pem" -CA "$1/ca.pem" -CAkey "$1/ca.key" -CAcreateserial \
		-days 1 -extfile "$1/ext" -out "$1/cert.pem" 2>/dev/null
}

# expired_client DIR SPIFFE-ID: a certificate signed by our intermediate that expired in
# 2020 (openssl ca can backdate; agentca never would).
expired_client() {
	d=$1
	mkdir -p "$d"
	: >"$d/index.txt"
	echo 1000 >"$d/serial"
	cat >"$d/ca.cnf" <<CNF
[ca]
default_ca = d
[d]
database = $d/index.txt
serial = $d/serial
new_certs_dir = $d
default_md = sha256
policy = p
x509_extensions = ext
[p]
commonName = supplied
[ext]
subjectAltName = URI:$2
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
basicConstraints = critical, CA:FALSE
CNF
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$d/key.pem" \
		-subj "/CN=old" -out "$d/req.pem" 2>/dev/null
	openssl ca -batch -config "$d/ca.cnf" -cert "$CA/intermediate.pem" \
		-keyfile "$CA/intermediate.key" -passin env:AGENTCA_PASSWORD \
		-startdate 20200101000000Z -enddate 20200102000000Z -notext \
		-in "$d/req.pem" -out "$d/cert.pem" 2>"$d/ca.err" || { cat "$d/ca.err"; fail "openssl ca"; }
}

# session_has LOG REASON WHAT: the proxy's session log records REASON (the writer batches:
# wait up to 5 s).
session_has() {
	wait_for "$1" "\"reason\":\"$2\"" "$3" 50
}
