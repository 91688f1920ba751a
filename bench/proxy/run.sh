#!/usr/bin/env bash
# bench/proxy: agentca's mTLS proxy next to HAProxy and stunnel (Debian packages), in the
# same run, with the same certificates (P-256, issued by one agentca CA), the same upstream
# (an epoll echo/discard server on loopback) and TLS 1.3 with client certificates required.
# Two variants, each with freshly started proxies and upstream:
#
#   tcp  the upstream is plain TCP
#   tls  re-encrypting: the upstream is a TLS 1.3 server that requires a client certificate;
#        each proxy presents its certificate, verifies the upstream against the CA by the
#        name upstream.bench and sends it as SNI (agentca: upstream_mode "tls"; HAProxy:
#        "server ... ssl verify required"; stunnel: two chained services, the second with
#        client = yes, run as two processes so that each holds two descriptors per session)
#
# For each variant it prints, side by side with the ratios agentca/HAProxy and
# agentca/stunnel:
#
#   new mTLS handshakes per second (no resumption; each carries one byte through and back;
#   every client presents the same certificate, as an agent does for its certificate's
#   lifetime). agentca's handshakes are measured twice: with its verified-chain cache (the
#   default) and with a second agentca proxy started with "verify_cache": 0, which verifies
#   every chain in full as HAProxy and stunnel do (they have no such cache): both rows print
#   bulk MB/s over 1 connection and over 16
#   p50 and p99 round trip of a 1 KiB ping-pong
#   memory per idle connection (proxy RSS growth / N, N sessions open, default 10,000)
#   CPU cost (the proxy processes' utime+stime from /proc/PID/stat around each phase; less
#   noisy than rates on a shared machine): CPU us per handshake, handshakes per proxy
#   CPU-second, proxy CPU ms per MB of bulk
#   and, for tls, how the upstream's handshakes went: full, or resumed from a ticket (each
#   proxy resumes its upstream sessions or not, by its own default)
#   and at the end the server side of a handshake alone, in process, with the verify cache
#   off and on (bench/proxy/handshake_cpu: no sockets, no client, no kernel in the figure)
#
#   bench/proxy/run.sh BUILD_DIR [SECONDS] [IDLE_CONNECTIONS] [VARIANTS]
#
# VARIANTS defaults to "tcp tls". BENCH_PROXY_KEEP=1 keeps the work directory (configs, logs).
#
# Everything listens on 127.0.0.1; every process started here is stopped and every
# temporary file removed on exit. Needs haproxy, stunnel4 and ss (`make bench` installs
# them). Timings on a shared machine vary from run to run: compare within one run.
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
secs=${2:-5}
idle=${3:-10000}
variants=${4:-tcp tls}
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
	[ -z "${BENCH_PROXY_KEEP:-}" ] && rm -rf "$work" || echo "bench/proxy: kept $work" >&2
}
trap cleanup EXIT
export AGENTCA_PASSWORD=bench-proxy-passphrase

# free_port: a loopback port nobody uses, below the ephemeral range (the idle phase leaves
# thousands of ephemeral ports in use or in TIME_WAIT).
read -r ephemeral_low _ </proc/sys/net/ipv4/ip_local_port_range
free_port() {
	local p
	while :; do
		p=$((10000 + RANDOM % (ephemeral_low - 10000)))
		ss -tanH "sport = :$p" | grep -q . || { echo "$p"; return; }
	done
}
# wait_port PORT WHAT LOG: until something listens there (30 s: the machine may be busy).
wait_port() {
	for _ in $(seq 300); do ss -ltnH "sport = :$1" | grep -q . && return; sleep 0.1; done
	echo "bench/proxy: $2 does not listen on $1 after 30 s; its log:" >&2
	tail -5 "$3" >&2 || true
	exit 1
}
# rss_kb PID...: resident memory of the processes together, in KiB.
rss_kb() {
	local sum=0 pid
	for pid in "$@"; do sum=$((sum + $(awk '/^VmRSS/{print $2}' "/proc/$pid/status"))); done
	echo "$sum"
}
# cpu_ticks PID...: utime+stime of the processes together (all threads), in clock ticks.
cpu_ticks() {
	local sum=0 pid
	for pid in "$@"; do
		sum=$((sum + $(sed 's/^.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')))
	done
	echo "$sum"
}
hz=$(getconf CLK_TCK)

# Certificates: one CA; the proxies share the server certificate (proxy.bench), the client
# has its own.
"$agentca" init --dir "$work/ca" --name Bench --trust-domain bench >/dev/null
cd "$work"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key \
	-subj /CN=proxy.bench -addext subjectAltName=DNS:proxy.bench -out server.csr 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout client.key \
	-subj /CN=client -out client.csr 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout upstream.key \
	-subj /CN=upstream.bench -addext subjectAltName=DNS:upstream.bench -out upstream.csr 2>/dev/null
"$agentca" issue --dir ca --csr server.csr --subject spiffe://bench/proxy >server-full.pem
"$agentca" issue --dir ca --csr client.csr --subject spiffe://bench/client >client-full.pem
"$agentca" issue --dir ca --csr upstream.csr --subject spiffe://bench/upstream >upstream-full.pem
awk '/BEGIN CERT/{n++} n==1' server-full.pem >server.pem
awk '/BEGIN CERT/{n++} n>=2' server-full.pem >chain.pem
cp ca/root.pem root.pem
chmod 600 server.key client.key upstream.key
cd - >/dev/null

# The agentca proxy's directory already holds a valid certificate, so it does not need the
# CA while the benchmark runs.
mkdir -p "$work/px"
cp "$work/server.key" "$work/px/key.pem"
cp "$work/server.pem" "$work/px/cert.pem"
cp "$work/chain.pem" "$work/px/chain.pem"
cp "$work/root.pem" "$work/px/bundle.pem"
chmod 700 "$work/px"
chmod 600 "$work/px/key.pem"
cat "$work/server.pem" "$work/chain.pem" "$work/server.key" >"$work/haproxy.pem"
cat "$work/server.pem" "$work/chain.pem" >"$work/stunnel-cert.pem"

client() { "$load" "$1" "$2" "$work/root.pem" "$work/client-full.pem" "$work/client.key" "${@:3}"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "" && b > 0) printf "%.2f", a / b; else print "-" }'; }
# upstream_stats: "full N resumed M group G" from the TLS upstream, now.
upstream_stats() {
	rm -f "$work/up.port.stats"
	kill -USR1 "$pid_up"
	for _ in $(seq 50); do [ -s "$work/up.port.stats" ] && break; sleep 0.1; done
	cat "$work/up.port.stats"
}

# run_variant tcp|tls: start the upstream and the three proxies, measure each proxy in turn,
# print the table, stop them all.
run_variant() {
	local variant=$1 up pa ph ps_ pm peer port pids_peer t0 t1 out n label k
	local -A R
	local vpids=""

	rm -f "$work/up.port"
	if [ "$variant" = tls ]; then
		"$load" upstream "$work/up.port" "$work/upstream-full.pem" "$work/upstream.key" \
			"$work/root.pem" &
	else
		"$load" upstream "$work/up.port" &
	fi
	pid_up=$!
	vpids="$vpids $pid_up"
	pids="$pids $pid_up"
	for _ in $(seq 50); do [ -s "$work/up.port" ] && break; sleep 0.1; done
	up=$(cat "$work/up.port")

	# agentca proxy (standalone).
	pa=$(free_port)
	local up_tls_json="" haproxy_up_tls=""
	if [ "$variant" = tls ]; then
		up_tls_json=', "upstream_mode": "tls", "upstream_name": "upstream.bench", "upstream_ca_file": "'$work/root.pem'"'
		haproxy_up_tls=" ssl verify required ca-file $work/root.pem crt $work/haproxy.pem sni str(upstream.bench) verifyhost upstream.bench ssl-min-ver TLSv1.3"
	fi
	cat >"$work/agentca.json" <<JSON
{"ca": "https://127.0.0.1:1", "out": "$work/px", "bundle_interval": "24h",
 "proxy": {"workers": 2, "max_connections": 100000, "idle_timeout": "1h",
           "listeners": [{"listen": "127.0.0.1:$pa", "upstream": "127.0.0.1:$up",
                          "allow": ["spiffe://bench/**"]$up_tls_json}]}}
JSON
	AGENTCA_LOG_LEVEL=warn "$agentca" proxy --config "$work/agentca.json" \
		2>"$work/agentca-$variant.log" &
	local pid_agentca=$!
	vpids="$vpids $pid_agentca"
	pids="$pids $pid_agentca"
	# The same, with the verified-chain cache off (handshakes only).
	local pn
	pn=$(free_port)
	sed -e "s/127.0.0.1:$pa\"/127.0.0.1:$pn\"/" -e "s|\"workers\": 2,|\"workers\": 2, \"verify_cache\": 0, \"session_log\": \"$work/px/nocache-sessions.jsonl\",|" \
		"$work/agentca.json" >"$work/agentca-nocache.json"
	AGENTCA_LOG_LEVEL=warn "$agentca" proxy --config "$work/agentca-nocache.json" \
		2>"$work/agentca-nocache-$variant.log" &
	local pid_agentca_nc=$!
	vpids="$vpids $pid_agentca_nc"
	pids="$pids $pid_agentca_nc"

	# HAProxy, two threads, the same policy: TLS 1.3, client certificate required.
	ph=$(free_port)
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
  server u 127.0.0.1:$up$haproxy_up_tls
CFG
	haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy-$variant.log" 2>&1 &
	local pid_haproxy=$!
	vpids="$vpids $pid_haproxy"
	pids="$pids $pid_haproxy"

	# stunnel (threads), the same policy; for tls a second stunnel, client = yes, behind it.
	ps_=$(free_port)
	local stunnel_next="127.0.0.1:$up" pid_stunnel2=""
	if [ "$variant" = tls ]; then
		pm=$(free_port)
		stunnel_next="127.0.0.1:$pm"
		cat >"$work/stunnel-up.conf" <<CFG
foreground = yes
pid =
syslog = no
output = $work/stunnel-up-$variant.log
[up]
client = yes
accept = 127.0.0.1:$pm
connect = 127.0.0.1:$up
cert = $work/stunnel-cert.pem
key = $work/server.key
CAfile = $work/root.pem
verifyChain = yes
checkHost = upstream.bench
sni = upstream.bench
sslVersionMin = TLSv1.3
CFG
		stunnel4 "$work/stunnel-up.conf" >/dev/null 2>&1 &
		pid_stunnel2=$!
		vpids="$vpids $pid_stunnel2"
		pids="$pids $pid_stunnel2"
	fi
	cat >"$work/stunnel.conf" <<CFG
foreground = yes
pid =
syslog = no
output = $work/stunnel-$variant.log
[mtls]
accept = 127.0.0.1:$ps_
connect = $stunnel_next
cert = $work/stunnel-cert.pem
key = $work/server.key
CAfile = $work/root.pem
verifyChain = yes
requireCert = yes
sslVersionMin = TLSv1.3
CFG
	stunnel4 "$work/stunnel.conf" >/dev/null 2>&1 &
	local pid_stunnel=$!
	vpids="$vpids $pid_stunnel"
	pids="$pids $pid_stunnel"

	wait_port "$pa" "agentca ($variant)" "$work/agentca-$variant.log"
	wait_port "$pn" "agentca without cache ($variant)" "$work/agentca-nocache-$variant.log"
	wait_port "$ph" "haproxy ($variant)" "$work/haproxy-$variant.log"
	wait_port "$ps_" "stunnel ($variant)" "$work/stunnel-$variant.log"
	[ -z "$pid_stunnel2" ] || wait_port "$pm" "the second stunnel ($variant)" "$work/stunnel-up-$variant.log"

	for peer in agentca agentca_nc haproxy stunnel; do
		case $peer in
		agentca) port=$pa pids_peer=$pid_agentca ;;
		agentca_nc) port=$pn pids_peer=$pid_agentca_nc ;;
		haproxy) port=$ph pids_peer=$pid_haproxy ;;
		stunnel) port=$ps_ pids_peer="$pid_stunnel $pid_stunnel2" ;;
		esac
		# shellcheck disable=SC2086 # pids_peer is a list
		{
			[ "$variant" != tls ] || { read -r _ f0 _ r0 _ < <(upstream_stats); }
			t0=$(cpu_ticks $pids_peer)
			out=$(client handshakes "$port" "$secs" 4)
			t1=$(cpu_ticks $pids_peer)
			R[$peer.hs]=$(awk '{print $2}' <<<"$out")
			n=$(awk '{print $4}' <<<"$out")
			R[$peer.hs_cpu]=$(awk -v t=$((t1 - t0)) -v hz="$hz" -v n="$n" \
				'BEGIN { if (n > 0) printf "%.0f", t * 1e6 / hz / n; else print "" }')
			R[$peer.hs_per_cpu]=$(awk -v t=$((t1 - t0)) -v hz="$hz" -v n="$n" \
				'BEGIN { if (t > 0) printf "%.0f", n / (t / hz); else print "" }')
			if [ "$variant" = tls ]; then
				read -r _ f1 _ r1 _ g < <(upstream_stats)
				R[$peer.up_full]=$((f1 - f0))
				R[$peer.up_resumed]=$((r1 - r0))
				R[$peer.up_group]=$g
			fi
			[ "$peer" != agentca_nc ] || continue # handshakes only
			for conns in 1 16; do
				t0=$(cpu_ticks $pids_peer)
				out=$(client bulk "$port" "$secs" "$conns")
				t1=$(cpu_ticks $pids_peer)
				R[$peer.bulk$conns]=$(awk '{print $2}' <<<"$out")
				R[$peer.bulk${conns}_cpu]=$(awk -v t=$((t1 - t0)) -v hz="$hz" \
					-v b="$(awk '{print $4}' <<<"$out")" \
					'BEGIN { if (b > 0) printf "%.2f", t * 1e3 / hz / (b / 1e6); else print "" }')
			done
			read -r _ p50 _ p99 < <(client pingpong "$port" 20000)
			R[$peer.p50]=$p50
			R[$peer.p99]=$p99
			sleep 1
			before=$(rss_kb $pids_peer)
			coproc IDLE { client idle "$port" "$idle"; }
			read -r _ opened <&"${IDLE[0]}"
			sleep 1
			after=$(rss_kb $pids_peer)
		}
		[ "$opened" = "$idle" ] || echo "bench/proxy: $peer held $opened of $idle idle connections" >&2
		R[$peer.mem]=$(((after - before) * 1024 / (opened > 0 ? opened : 1)))
		# shellcheck disable=SC1083,SC2093 # closes the coproc's stdin: it lets go of the sessions
		exec {IDLE[1]}>&-
		wait "$IDLE_PID" || true
	done

	echo
	if [ "$variant" = tls ]; then
		echo "variant tls: re-encrypting, TLS 1.3 upstream with a client certificate"
	else
		echo "variant tcp: plain TCP upstream"
	fi
	printf '%-38s %10s %10s %10s %10s %10s\n' metric agentca haproxy stunnel "a/haproxy" "a/stunnel"
	row() {
		printf '%-38s %10s %10s %10s %10s %10s\n' "$1" "${R[agentca.$2]}" "${R[haproxy.$2]}" \
			"${R[stunnel.$2]}" "$(ratio "${R[agentca.$2]}" "${R[haproxy.$2]}")" \
			"$(ratio "${R[agentca.$2]}" "${R[stunnel.$2]}")"
	}
	row "mTLS handshakes/s (4 clients)" hs
	row "bulk MB/s, 1 connection" bulk1
	row "bulk MB/s, 16 connections" bulk16
	row "1 KiB ping-pong p50 (us)" p50
	row "1 KiB ping-pong p99 (us)" p99
	row "bytes per idle connection ($idle)" mem
	row "proxy CPU us per handshake" hs_cpu
	row "handshakes per proxy CPU-second" hs_per_cpu
	# agentca with its verify cache off: the figure a peer without such a cache compares to.
	row_nc() {
		printf '%-38s %10s %10s %10s %10s %10s\n' "$1" "${R[agentca_nc.$2]}" "${R[haproxy.$2]}" \
			"${R[stunnel.$2]}" "$(ratio "${R[agentca_nc.$2]}" "${R[haproxy.$2]}")" \
			"$(ratio "${R[agentca_nc.$2]}" "${R[stunnel.$2]}")"
	}
	row_nc "  cache off: mTLS handshakes/s" hs
	row_nc "  cache off: CPU us per handshake" hs_cpu
	row_nc "  cache off: handshakes per CPU-second" hs_per_cpu
	row "proxy CPU ms per MB, bulk 1 conn" bulk1_cpu
	row "proxy CPU ms per MB, bulk 16 conns" bulk16_cpu
	if [ "$variant" = tls ]; then
		# What the upstream saw during the handshake phase (no ratios: facts, not scores).
		for k in up_full up_resumed up_group; do
			case $k in
			up_full) label="upstream handshakes: full" ;;
			up_resumed) label="upstream handshakes: resumed" ;;
			up_group) label="upstream key exchange group" ;;
			esac
			printf '%-38s %10s %10s %10s  (cache off: %s)\n' "$label" "${R[agentca.$k]}" \
				"${R[haproxy.$k]}" "${R[stunnel.$k]}" "${R[agentca_nc.$k]}"
		done
	fi
	echo "(rates: higher is better; us, bytes and CPU per unit: lower is better)"

	for pid in $vpids; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in $vpids; do wait "$pid" 2>/dev/null || true; done
	local rest=""
	for pid in $pids; do [[ " $vpids " == *" $pid "* ]] || rest="$rest $pid"; done
	pids=$rest
}

echo "bench/proxy: $(date -u +%FT%TZ), ${secs}s per rate phase, $idle idle connections," \
	"$(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for variant in $variants; do
	case $variant in
	tcp | tls) run_variant "$variant" ;;
	*) echo "bench/proxy: unknown variant $variant (tcp, tls)" >&2; exit 2 ;;
	esac
done
# The verify cache without sockets, the client or the kernel in the figure: the server side
# of the handshake alone, in process (bench/proxy/handshake_cpu.c).
if [ -x "$build/bench/proxy/handshake_cpu" ]; then
	echo
	echo "server side of a new mTLS handshake, in process (handshake_cpu, thread CPU time):"
	"$build/bench/proxy/handshake_cpu" "$work" 500
fi
