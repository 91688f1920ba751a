#!/usr/bin/env bash
# bench/enroll: enrollments per second through the running daemon (POST /v1/enroll over
# keep-alive HTTPS, a one-time token checked and the log committed durably for each) next
# to `cfssl serve` (POST /api/v1/cfssl/sign over keep-alive plain HTTP, no auth, no
# database), in the same run, with the same CSR shape (P-256, one DNS SAN) and the same
# number of connections. Prints both lines, the ratio agentca/cfssl and nothing else.
#
#   bench/enroll/run.sh BUILD_DIR [SECONDS] [CONNECTIONS]
#
# Everything listens on 127.0.0.1 only; every process started here is stopped and every
# temporary file removed on exit. Needs cfssl (Debian: golang-cfssl) and ss (iproute2);
# `make bench` installs both.
set -euo pipefail
build=${1:-build}
secs=${2:-10}
conns=${3:-16}
agentca=$build/agentca
gen=$build/bench/enroll/bench_enroll

if ! command -v cfssl >/dev/null 2>&1; then
	echo "bench/enroll: cfssl is not installed; install it with: apt-get install -y golang-cfssl" >&2
	exit 1
fi
if ! command -v ss >/dev/null 2>&1; then
	echo "bench/enroll: ss is not installed; install it with: apt-get install -y iproute2" >&2
	exit 1
fi
for f in "$agentca" "$gen"; do
	[ -x "$f" ] || { echo "bench/enroll: $f not built (cmake --build $build)" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/agentca-bench-enroll.XXXXXX")
pids=""
cleanup() {
	for pid in $pids; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in $pids; do
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$work"
}
trap cleanup EXIT

# wait_for FILE PATTERN WHAT: until FILE has a line matching PATTERN (10 s at most).
wait_for() {
	for _ in $(seq 100); do
		grep -q "$2" "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	cat "$1" >&2
	echo "bench/enroll: $3 never became ready" >&2
	exit 1
}

# agentca: a fresh CA (P-256 root and intermediate) served on a free loopback port.
export AGENTCA_PASSWORD=bench-enroll-passphrase
"$agentca" init --dir "$work/ca" --name Bench --trust-domain bench.internal >/dev/null
# Rate limits are off: every request comes from one address for one identity, and cfssl has
# none. The token check and the durable log stay on.
echo '{"rate_limits": {"address_per_second": 0, "identity_per_second": 0}}' >"$work/serve.json"
"$agentca" serve --dir "$work/ca" --listen 127.0.0.1:0 --config "$work/serve.json" \
	2>"$work/serve.log" &
pids="$pids $!"
wait_for "$work/serve.log" '"event":"ca_ready"' "agentca serve"
aport=$(grep '"event":"listening"' "$work/serve.log" | tail -n1 | sed -E 's/.*\(port ([0-9]+)\).*/\1/')

# cfssl: a P-256 CA of its own (cfssl wants an unencrypted key) and a 24 h signing profile.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 -days 30 \
	-subj "/CN=cfssl bench CA" -addext "basicConstraints=critical,CA:TRUE" \
	-addext "keyUsage=critical,keyCertSign,cRLSign" \
	-keyout "$work/cfssl-ca.key" -out "$work/cfssl-ca.pem" 2>/dev/null
cat >"$work/cfssl.json" <<'EOF'
{"signing": {"default": {"expiry": "24h",
  "usages": ["signing", "key encipherment", "server auth", "client auth"]}}}
EOF
# Port 0: the kernel picks a free one; cfssl does not print it, so ask ss for the socket
# the process listens on.
cfssl serve -address 127.0.0.1 -port 0 -ca "$work/cfssl-ca.pem" -ca-key "$work/cfssl-ca.key" \
	-config "$work/cfssl.json" 2>"$work/cfssl.log" &
cpid=$!
pids="$pids $cpid"
cport=""
for _ in $(seq 100); do
	cport=$(ss -Hltnp 2>/dev/null | awk -v p="pid=$cpid," 'index($0, p) { sub(/.*:/, "", $4); print $4; exit }' || true)
	[ -n "$cport" ] && break
	sleep 0.1
done
[ -n "$cport" ] || { cat "$work/cfssl.log" >&2; echo "bench/enroll: cfssl serve never listened" >&2; exit 1; }

# The same generator, CSR shape and connections against each; failures are printed, and
# make the script fail at the end.
status=0
aline=$("$gen" --target agentca --url "https://127.0.0.1:$aport" --ca-dir "$work/ca" \
	--subject spiffe://bench.internal/agent --dns agent.bench.internal \
	--connections "$conns" --seconds "$secs") || status=1
echo "$aline"
cline=$("$gen" --target cfssl --url "http://127.0.0.1:$cport" --dns agent.bench.internal \
	--connections "$conns" --seconds "$secs") || status=1
echo "$cline"
arate=$(echo "$aline" | sed -E 's/.* rate=([0-9.]+).*/\1/')
crate=$(echo "$cline" | sed -E 's/.* rate=([0-9.]+).*/\1/')
awk -v a="$arate" -v c="$crate" 'BEGIN {
	if (c > 0) printf "ratio agentca/cfssl: %.2f\n", a / c; else print "ratio agentca/cfssl: n/a" }'
exit $status
