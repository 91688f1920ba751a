#!/usr/bin/env bash
# bench/proxy: agentca's mTLS proxy next to HAProxy and stunnel (Debian packages), in the
# same run, with the same certificates (P-256, issued by one agentca CA), the same upstream
# (an epoll echo/discard server on loopback), TLS 1.3 with client certificates required and
# a plain TCP upstream. Prints, side by side with the ratios agentca/HAProxy and
# agentca/stunnel:
#
#   new mTLS handshakes per second (no resumption; each carries one byte through and back)
#   bulk MB/s over 1 connection and over 16
#   p50 and p99 round trip of a 1 KiB ping-pong
#   memory per idle connection (proxy RSS growth / N, N sessions open, default 10,000)
#
#   bench/proxy/run.sh BUILD_DIR [SECONDS] [IDLE_CONNECTIONS]
#
# Everything listens on 127.0.0.1; every process started here is stopped and every
# temporary file removed on exit. Needs haproxy, stunnel4 and ss (`make bench` installs
# them). Timings on a shared machine vary from run to run: compare within one run.
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
secs=${2:-5}
idle=${3:-10000}
agentca=$build/agentca
load=$build/bench/proxy/bench_proxy

for tool in haproxy stunnel4 ss; do
	command -v "$tool" >/dev/null 2>&1 || {
		echo "bench/proxy: $tool is not installed (apt-get install -y haproxy stunnel4 iproute2)" >&2
		exit 1
	}
done
for f in "$agentca" "$load"; do
	[ -x "$f" ] || { echo "bench/proxy: $f not built (cmake --build $build)" >&2; exit 1; }
done
# Each idle session costs the proxy two descriptors (client and upstream).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
maxfd=$(ulimit -n)
if [ "$maxfd" != unlimited ] && [ $((idle * 2 + 1000)) -gt "$maxfd" ]; then
	idle=$(((maxfd - 1000) / 2))
	echo "bench/proxy: open-file limit $maxfd: measuring $idle idle connections" >&2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/agentca-bench-proxy.XXXXXX")
pids=""
cleanup() {
	for pid in $pids; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in $pids; do wait "$pid" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT
export AGENTCA_PASSWORD=bench-proxy-passphrase

# free_port: a loopback port nobody listens on.
free_port() {
	while :; do
		p=$((20000 + RANDOM % 30000))
		ss -ltnH "sport = :$p" | grep -q . || { echo "$p"; return; }
	done
}
# wait_port PORT: until something listens there.
wait_port() {
	for _ in $(seq 100); do ss -ltnH "sport = :$1" | grep -q . && return; sleep 0.1; done
	echo "bench/proxy: nothing listens on $1" >&2
	exit 1
}
rss_kb() { awk '/^VmRSS/{print $2}' "/proc/$1/status"; }

# Certificates: one CA; the proxies share the server certificate (proxy.bench), the client
# has its own.
"$agentca" init --dir "$work/ca" --name Bench --trust-domain bench >/dev/null
cd "$work"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key \
	-subj /CN=proxy.bench -addext subjectAltName=DNS:proxy.bench -out server.csr 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout client.key \
	-subj /CN=client -out client.csr 2>/dev/null
"$agentca" issue --dir ca --csr server.csr --subject spiffe://bench/proxy >server-full.pem
"$agentca" issue --dir ca --csr client.csr --subject spiffe://bench/client >client-full.pem
awk '/BEGIN CERT/{n++} n==1' server-full.pem >server.pem
awk '/BEGIN CERT/{n++} n>=2' server-full.pem >chain.pem
cp ca/root.pem root.pem
chmod 600 server.key client.key
cd - >/dev/null

# The upstream.
"$load" upstream "$work/up.port" &
pids="$pids $!"
for _ in $(seq 50); do [ -s "$work/up.port" ] && break; sleep 0.1; done
up=$(cat "$work/up.port")

# agentca proxy (standalone; its directory already holds a valid certificate, so it does not
# need the CA while the benchmark runs).
mkdir -p "$work/px"
cp "$work/server.key" "$work/px/key.pem"
cp "$work/server.pem" "$work/px/cert.pem"
cp "$work/chain.pem" "$work/px/chain.pem"
cp "$work/root.pem" "$work/px/bundle.pem"
chmod 700 "$work/px"
chmod 600 "$work/px/key.pem"
pa=$(free_port)
cat >"$work/agentca.json" <<JSON
{"ca": "https://127.0.0.1:1", "out": "$work/px", "bundle_interval": "24h",
 "proxy": {"workers": 2, "max_connections": 100000, "idle_timeout": "1h",
           "listeners": [{"listen": "127.0.0.1:$pa", "upstream": "127.0.0.1:$up",
                          "allow": ["spiffe://bench/**"]}]}}
JSON
AGENTCA_LOG_LEVEL=warn "$agentca" proxy --config "$work/agentca.json" 2>"$work/agentca.log" &
pid_agentca=$!
pids="$pids $pid_agentca"

# HAProxy, two threads, the same policy: TLS 1.3, client certificate required.
ph=$(free_port)
cat "$work/server.pem" "$work/chain.pem" "$work/server.key" >"$work/haproxy.pem"
cat >"$work/haproxy.cfg" <<CFG
global
  nbthread 2
  maxconn $((idle + 10))
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
frontend mtls
  bind 127.0.0.1:$ph ssl crt $work/haproxy.pem ca-file $work/root.pem verify required ssl-min-ver TLSv1.3
  default_backend up
backend up
  server u 127.0.0.1:$up
CFG
haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
pid_haproxy=$!
pids="$pids $pid_haproxy"

# stunnel (threads), the same policy.
ps_=$(free_port)
cat "$work/server.pem" "$work/chain.pem" >"$work/stunnel-cert.pem"
cat >"$work/stunnel.conf" <<CFG
foreground = yes
pid =
syslog = no
output = $work/stunnel.log
[mtls]
accept = 127.0.0.1:$ps_
connect = 127.0.0.1:$up
cert = $work/stunnel-cert.pem
key = $work/server.key
CAfile = $work/root.pem
verifyChain = yes
requireCert = yes
sslVersionMin = TLSv1.3
CFG
stunnel4 "$work/stunnel.conf" >/dev/null 2>&1 &
pid_stunnel=$!
pids="$pids $pid_stunnel"

wait_port "$pa"
wait_port "$ph"
wait_port "$ps_"

declare -A R
client() { "$load" "$1" "$2" "$work/root.pem" "$work/client-full.pem" "$work/client.key" "${@:3}"; }
for peer in agentca haproxy stunnel; do
	case $peer in
	agentca) port=$pa pid=$pid_agentca ;;
	haproxy) port=$ph pid=$pid_haproxy ;;
	stunnel) port=$ps_ pid=$pid_stunnel ;;
	esac
	R[$peer.hs]=$(client handshakes "$port" "$secs" 4 | awk '{print $2}')
	R[$peer.bulk1]=$(client bulk "$port" "$secs" 1 | awk '{print $2}')
	R[$peer.bulk16]=$(client bulk "$port" "$secs" 16 | awk '{print $2}')
	read -r _ p50 _ p99 < <(client pingpong "$port" 20000)
	R[$peer.p50]=$p50
	R[$peer.p99]=$p99
	sleep 1
	before=$(rss_kb "$pid")
	coproc IDLE { client idle "$port" "$idle"; }
	read -r _ opened <&"${IDLE[0]}"
	sleep 1
	after=$(rss_kb "$pid")
	[ "$opened" = "$idle" ] || echo "bench/proxy: $peer held $opened of $idle idle connections" >&2
	R[$peer.mem]=$(((after - before) * 1024 / (opened > 0 ? opened : 1)))
	exec {IDLE[1]}>&-
	wait "$IDLE_PID" || true
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
printf '%-34s %10s %10s %10s %10s %10s\n' metric agentca haproxy stunnel "a/haproxy" "a/stunnel"
row() {
	printf '%-34s %10s %10s %10s %10s %10s\n' "$1" "${R[agentca.$2]}" "${R[haproxy.$2]}" \
		"${R[stunnel.$2]}" "$(ratio "${R[agentca.$2]}" "${R[haproxy.$2]}")" \
		"$(ratio "${R[agentca.$2]}" "${R[stunnel.$2]}")"
}
row "mTLS handshakes/s (4 clients)" hs
row "bulk MB/s, 1 connection" bulk1
row "bulk MB/s, 16 connections" bulk16
row "1 KiB ping-pong p50 (us)" p50
row "1 KiB ping-pong p99 (us)" p99
row "bytes per idle connection ($idle)" mem
