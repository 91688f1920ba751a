#!/usr/bin/env bash
# bench/enroll: enrollments per second through the running daemon (POST /v1/enroll over
# keep-alive HTTPS, a one-time token checked and the log committed durably for each) next
# to `cfssl serve` (POST /api/v1/cfssl/sign over keep-alive plain HTTP, no auth, no
# database), in the same run, with the same CSR shape (P-256, one DNS SAN) and the same
# number of connections; then cfssl again behind TLS (its own server certificate: the same
# transport on both sides), and once more behind TLS with its SQLite certificate database
# (the same durability). Prints the four lines (each with the server's CPU time per
# request; the last with the rows cfssl wrote), the three ratios, and nothing else.
#
#   bench/enroll/run.sh BUILD_DIR [SECONDS] [CONNECTIONS]
#
# Everything listens on 127.0.0.1 only; every process started here is stopped and every
# temporary file removed on exit. Needs cfssl (Debian: golang-cfssl), ss (iproute2) and
# sqlite3 (for cfssl's database); `make bench` installs them.
set -euo pipefail
build=${1:-build}
secs=${2:-10}
conns=${3:-16}
agentca=$build/agentca
gen=$build/bench/enroll/bench_enroll

BENCH_NAME=enroll
. "$(dirname "$0")/../lib.sh"
bench_need_tools "golang-cfssl sqlite3 iproute2" cfssl sqlite3 ss
bench_need_built "$agentca" "$gen"
bench_begin

# agentca: a fresh CA (P-256 root and intermediate) served on a free loopback port.
export AGENTCA_PASSWORD=bench-enroll-passphrase
"$agentca" init --dir "$work/ca" --name Bench --trust-domain bench.internal >/dev/null
# Rate limits are off: every request comes from one address for one identity, and cfssl has
# none. The token check and the durable log stay on.
echo '{"rate_limits": {"address_per_second": 0, "identity_per_second": 0}}' >"$work/serve.json"
bench_agentca_serve "$agentca" "$work/ca" "$work/serve.log" --config "$work/serve.json"
apid=$daemon
aport=$daemon_port

# cfssl: a P-256 CA of its own (cfssl wants an unencrypted key) and a 24 h signing profile.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 -days 30 \
	-subj "/CN=cfssl bench CA" -addext "basicConstraints=critical,CA:TRUE" \
	-addext "keyUsage=critical,keyCertSign,cRLSign" \
	-keyout "$work/cfssl-ca.key" -out "$work/cfssl-ca.pem" 2>/dev/null
cat >"$work/cfssl.json" <<'EOF'
{"signing": {"default": {"expiry": "24h",
  "usages": ["signing", "key encipherment", "server auth", "client auth"]}}}
EOF
# start_cfssl NAME ARGS...: run `cfssl serve ARGS` on a free loopback port; sets cfssl_pid
# and cfssl_port. Port 0: the kernel picks one; cfssl does not print it, so ask ss for the
# socket the process listens on.
start_cfssl() {
	local name=$1 port="" pid
	shift
	cfssl serve -address 127.0.0.1 -port 0 -ca "$work/cfssl-ca.pem" -ca-key "$work/cfssl-ca.key" \
		-config "$work/cfssl.json" "$@" 2>"$work/$name.log" &
	pid=$!
	bench_track "$pid"
	for _ in $(seq 100); do
		port=$(ss -Hltnp 2>/dev/null | awk -v p="pid=$pid," 'index($0, p) { sub(/.*:/, "", $4); print $4; exit }' || true)
		[ -n "$port" ] && break
		sleep 0.1
	done
	[ -n "$port" ] || { cat "$work/$name.log" >&2; bench_fail "$name never listened"; }
	cfssl_pid=$pid
	cfssl_port=$port
}

# cfssl as the issue sets it: plain HTTP, no authentication, no database.
start_cfssl cfssl
cpid=$cfssl_pid
cport=$cfssl_port

# The same cfssl behind TLS like agentca (its own server certificate for 127.0.0.1 from its
# CA, which the generator trusts as root.pem): the same transport on both sides.
mkdir "$work/cfssl-tls"
cp "$work/cfssl-ca.pem" "$work/cfssl-tls/root.pem"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
	-keyout "$work/cfssl-tls/server.key" -out "$work/cfssl-tls/server.csr" 2>/dev/null
openssl x509 -req -in "$work/cfssl-tls/server.csr" -CA "$work/cfssl-ca.pem" \
	-CAkey "$work/cfssl-ca.key" -CAcreateserial -days 2 -sha256 \
	-extfile <(printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n') \
	-out "$work/cfssl-tls/server.pem" 2>/dev/null
start_cfssl cfssl-tls -tls-cert "$work/cfssl-tls/server.pem" -tls-key "$work/cfssl-tls/server.key"
tpid=$cfssl_pid
tport=$cfssl_port

# And behind TLS with its certificate database: SQLite in WAL mode with synchronous=FULL,
# agentca's own settings, so each certificate is on disk before the answer as agentca's
# are (cfssl inserts it before it replies): the same transport and the same durability.
# cfssl commits each certificate on its own (no group commit). cfssl 1.2.0 in Debian ships
# no schema; this is its certdb schema (certdb/sqlite/migrations). It still checks no token
# and keeps no hash-chained log.
sqlite3 "$work/cfssl-certs.db" <<'EOF'
CREATE TABLE certificates (
  serial_number            blob NOT NULL,
  authority_key_identifier blob NOT NULL,
  ca_label                 blob,
  status                   blob NOT NULL,
  reason                   int,
  expiry                   timestamp,
  revoked_at               timestamp,
  pem                      blob NOT NULL,
  PRIMARY KEY(serial_number, authority_key_identifier)
);
CREATE TABLE ocsp_responses (
  serial_number            blob NOT NULL,
  authority_key_identifier blob NOT NULL,
  body                     blob NOT NULL,
  expiry                   timestamp,
  PRIMARY KEY(serial_number, authority_key_identifier),
  FOREIGN KEY(serial_number, authority_key_identifier)
    REFERENCES certificates(serial_number, authority_key_identifier)
);
EOF
printf '{"driver": "sqlite3", "data_source": "file:%s?_journal_mode=WAL&_synchronous=FULL"}\n' \
	"$work/cfssl-certs.db" >"$work/cfssl-db.json"
start_cfssl cfssl-tls-db -tls-cert "$work/cfssl-tls/server.pem" \
	-tls-key "$work/cfssl-tls/server.key" -db-config "$work/cfssl-db.json"
dpid=$cfssl_pid
dport=$cfssl_port

# server_cpu LINE PID TICKS_BEFORE: the server's CPU microseconds per successful request
# over the run (the generator runs in its own process and is not counted).
server_cpu() {
	local ok after hz
	ok=$(echo "$1" | sed -E 's/.* ok=([0-9]+).*/\1/')
	after=$(bench_cpu_ticks "$2")
	hz=$(getconf CLK_TCK)
	awk -v t="$((after - $3))" -v hz="$hz" -v ok="$ok" 'BEGIN {
		if (ok > 0) printf "server_cpu_us_per_request=%.0f", t * 1e6 / hz / ok; else printf "server_cpu_us_per_request=n/a" }'
}

# The same generator, CSR shape and connections against each; failures are printed, and
# make the script fail at the end. Each line ends with the server's CPU per request: on a
# shared machine that is steadier than the rate.
status=0
before=$(bench_cpu_ticks "$apid")
aline=$("$gen" --target agentca --url "https://127.0.0.1:$aport" --ca-dir "$work/ca" \
	--subject spiffe://bench.internal/agent --dns agent.bench.internal \
	--connections "$conns" --seconds "$secs") || status=1
echo "$aline $(server_cpu "$aline" "$apid" "$before")"
before=$(bench_cpu_ticks "$cpid")
cline=$("$gen" --target cfssl --url "http://127.0.0.1:$cport" --dns agent.bench.internal \
	--connections "$conns" --seconds "$secs") || status=1
echo "$cline $(server_cpu "$cline" "$cpid" "$before")"
before=$(bench_cpu_ticks "$tpid")
tline=$("$gen" --target cfssl --url "https://127.0.0.1:$tport" --ca-dir "$work/cfssl-tls" \
	--dns agent.bench.internal --connections "$conns" --seconds "$secs") || status=1
tline=${tline/target=cfssl /target=cfssl-tls }
echo "$tline $(server_cpu "$tline" "$tpid" "$before")"
before=$(bench_cpu_ticks "$dpid")
dline=$("$gen" --target cfssl --url "https://127.0.0.1:$dport" --ca-dir "$work/cfssl-tls" \
	--dns agent.bench.internal --connections "$conns" --seconds "$secs") || status=1
dline=${dline/target=cfssl /target=cfssl-tls-db }
rows=$(sqlite3 "$work/cfssl-certs.db" 'SELECT count(*) FROM certificates')
mode=$(sqlite3 "$work/cfssl-certs.db" 'PRAGMA journal_mode')
echo "$dline $(server_cpu "$dline" "$dpid" "$before") rows=$rows journal_mode=$mode"
arate=$(echo "$aline" | sed -E 's/.* rate=([0-9.]+).*/\1/')
crate=$(echo "$cline" | sed -E 's/.* rate=([0-9.]+).*/\1/')
trate=$(echo "$tline" | sed -E 's/.* rate=([0-9.]+).*/\1/')
awk -v a="$arate" -v c="$crate" 'BEGIN {
	if (c > 0) printf "ratio agentca/cfssl: %.2f\n", a / c; else print "ratio agentca/cfssl: n/a" }'
awk -v a="$arate" -v c="$trate" 'BEGIN {
	if (c > 0) printf "ratio agentca/cfssl-tls: %.2f\n", a / c; else print "ratio agentca/cfssl-tls: n/a" }'
drate=$(echo "$dline" | sed -E 's/.* rate=([0-9.]+).*/\1/')
awk -v a="$arate" -v c="$drate" 'BEGIN {
	if (c > 0) printf "ratio agentca/cfssl-tls-db: %.2f\n", a / c; else print "ratio agentca/cfssl-tls-db: n/a" }'
exit $status
