# acme_lib.sh - shared by the ACME integration tests (sourced after lib.sh): free loopback
# ports, pebble-challtestsrv as the DNS server (and TXT store) of the validator, and the
# daemon started with the ACME validator pointed at them. The clients trust the daemon
# through the CA's root (LEGO_CA_CERTIFICATES, REQUESTS_CA_BUNDLE), never an insecure flag.

# free_port: a port nothing listens on now (TCP and UDP), on 127.0.0.1.
free_port() {
	python3 -c 'import socket
t = socket.socket(); t.bind(("127.0.0.1", 0)); p = t.getsockname()[1]
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", p))
print(p)'
}

# start_challtestsrv: DNS on $DNS_PORT (every name resolves to 127.0.0.1), its management
# API on $MGMT_PORT; nothing else.
start_challtestsrv() {
	DNS_PORT=$(free_port)
	MGMT_PORT=$(free_port)
	spawn pebble-challtestsrv -defaultIPv4 127.0.0.1 -defaultIPv6 "" -dns01 "127.0.0.1:$DNS_PORT" \
		-http01 "" -https01 "" -tlsalpn01 "" -management "127.0.0.1:$MGMT_PORT" \
		>"$WORK/challtestsrv.log" 2>&1
	for _ in $(seq 50); do
		curl -s -o /dev/null "http://127.0.0.1:$MGMT_PORT/" 2>/dev/null && return 0
		sleep 0.1
	done
	cat "$WORK/challtestsrv.log"
	fail "pebble-challtestsrv did not start"
}

# start_acme_daemon CA [SERVE ARGS...]: serve CA on a free port with the validator's DNS,
# http-01 and tls-alpn-01 ports set (HTTP_PORT, TLS_PORT); sets DAEMON, PORT, DIRECTORY.
start_acme_daemon() {
	ca=$1
	shift
	HTTP_PORT=$(free_port)
	TLS_PORT=$(free_port)
	: >"$WORK/serve.log"
	spawn "$AGENTCA" serve --dir "$ca" --listen 127.0.0.1:0 --acme-resolver "127.0.0.1:$DNS_PORT" \
		--acme-http-port "$HTTP_PORT" --acme-tls-alpn-port "$TLS_PORT" "$@" 2>>"$WORK/serve.log"
	DAEMON=$SPAWNED
	for _ in $(seq 100); do
		grep -q '"event":"ca_ready"' "$WORK/serve.log" && break
		sleep 0.1
	done
	grep -q '"event":"ca_ready"' "$WORK/serve.log" || { cat "$WORK/serve.log"; fail "serve never ready"; }
	PORT=$(grep '"event":"listening"' "$WORK/serve.log" | tail -n1 | sed -E 's/.*\(port ([0-9]+)\).*/\1/')
	DIRECTORY="https://127.0.0.1:$PORT/acme/directory"
}

# verify_chain CERT CHAIN ROOT WHAT: openssl verifies the leaf against the root.
verify_chain() {
	openssl verify -CAfile "$3" -untrusted "$2" "$1" >/dev/null || fail "$4: does not verify"
}


# stop_acme_daemon: SIGTERM; the daemon must drain (validator included) and exit 0, which
# under ASan also means no leak.
stop_acme_daemon() {
	kill -TERM "$DAEMON"
	wait "$DAEMON" || { tail -n 30 "$WORK/serve.log"; fail "serve did not exit 0 on SIGTERM"; }
}
