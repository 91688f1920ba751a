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
# Every phase runs ROUNDS rounds. Handshakes: in each round every peer once, one after the
# other, the order rotated by one place from round to round (agentca first in round 1, last
# in round 2, ...), so that a slow minute of this shared machine falls on every peer alike.
# Bulk and ping-pong: within each round the peers are interleaved, because this machine's
# pace moves within seconds (one 2-second ping-pong saw its quarters' medians at 143, 168,
# 100 and 108 us), and a figure taken in one peer's window and compared with another's taken
# in the next measures those moments more than the proxies. The ping-pong's one client holds
# a connection to each peer and makes one round trip on each in turn (bench_proxy pingpong
# PORT,PORT,PORT); bulk's clients hold a connection (or 16) to each peer and stream to one
# peer at a time in slices of 0.25 s, in an order where each peer's slice follows each of
# the others' equally often, SECONDS of slices for each (bench_proxy bulk PORT,PORT,PORT).
# A peer's rate, bulk and ping-pong figures are the medians over its rounds.
#
# For each variant it prints, side by side with the ratios agentca/HAProxy and
# agentca/stunnel (ratios of the medians):
#
#   new mTLS handshakes per second (no resumption; each carries one byte through and back;
#   every client presents the same certificate, as an agent does for its certificate's
#   lifetime). agentca's handshakes are measured twice: with its verified-chain cache (the
#   default) and with a second agentca proxy started with "verify_cache": 0, which verifies
#   every chain in full as HAProxy and stunnel do (they have no such cache): both rows print
#   bulk MB/s over 1 connection and over 16
#   p50 and p99 round trip of a 1 KiB ping-pong
#   memory per idle connection (proxy RSS growth / N, N sessions open, default 10,000;
#   measured once per peer, after the rate phases)
#   CPU cost (the proxy processes' utime+stime from /proc/PID/stat around each phase, summed
#   over the rounds; around the whole interleaved run for bulk, in which each proxy works
#   only in its own slices; less noisy than rates on a shared machine): CPU us per handshake,
#   handshakes per proxy CPU-second, proxy CPU ms per MB of bulk
#   and, for tls, how the upstream's handshakes went (summed over the rounds): full, or
#   resumed from a ticket (each proxy resumes its upstream sessions or not, by its own default)
#   then, per aim of issue #6, in how many rounds it held, from the ratios of agentca and the
#   peer measured in the same round (and those ratios, round by round)
#   and at the end the server side of a handshake alone, in process, with the verify cache
#   off and on (bench/proxy/handshake_cpu: no sockets, no client, no kernel in the figure)
#
#   bench/proxy/run.sh BUILD_DIR [SECONDS] [IDLE_CONNECTIONS] [ROUNDS] [VARIANTS]
#
# SECONDS per handshake or bulk measurement (default 5), ROUNDS default 3, VARIANTS default
# "tcp tls" (a non-numeric fourth argument is taken as VARIANTS, the older form).
# `run.sh build 5 10000 3` took 12 to 13 minutes on this 2-core machine (9,500 idle connections).
# BENCH_KEEP=1 (or BENCH_PROXY_KEEP=1) keeps the work directory (configs, logs).
#
# Everything listens on 127.0.0.1; every process started here is stopped and every
# temporary file removed on exit (bench/lib.sh). Needs haproxy, stunnel4 and ss (`make
# bench` installs them). Timings on a shared machine vary from run to run: compare within
# one run, and read the rounds.
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
secs=${2:-5}
idle=${3:-10000}
rounds=${4:-3}
variants=${5:-tcp tls}
if ! [[ $rounds =~ ^[0-9]+$ ]]; then
	variants=$rounds
	rounds=3
fi
agentca=$build/agentca
load=$build/bench/proxy/bench_proxy

BENCH_NAME=proxy
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/../lib.sh"
bench_need_tools "haproxy stunnel4 iproute2 openssl" haproxy stunnel4 ss openssl
bench_need_built "$agentca" "$load"
[ "$rounds" -ge 1 ] || bench_fail "ROUNDS must be 1 or more"
# Each idle session costs the proxy two descriptors (client and upstream).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
maxfd=$(ulimit -n)
if [ "$maxfd" != unlimited ] && [ $((idle * 2 + 1000)) -gt "$maxfd" ]; then
	idle=$(((maxfd - 1000) / 2))
	echo "bench/proxy: open-file limit $maxfd: measuring $idle idle connections" >&2
fi

# BENCH_PROXY_KEEP=1, the older name of bench/lib.sh's BENCH_KEEP=1: keep the work directory.
[ -z "${BENCH_PROXY_KEEP:-}" ] || BENCH_KEEP=1
bench_begin
export AGENTCA_PASSWORD=bench-proxy-passphrase

# wait_port PORT WHAT LOG: until something listens there (30 s: the machine may be busy).
# bench/lib.sh waits for log lines; HAProxy and stunnel print none when ready.
wait_port() {
	for _ in $(seq 300); do
		ss -ltnH "sport = :$1" | grep -q . && return
		sleep 0.1
	done
	tail -5 "$3" >&2 || true
	bench_fail "$2 does not listen on $1 after 30 s (its log above)"
}
# rss_kb PID...: resident memory of the processes together, in KiB.
rss_kb() {
	local sum=0 pid
	for pid in "$@"; do sum=$((sum + $(awk '/^VmRSS/{print $2}' "/proc/$pid/status"))); done
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
# median FORMAT: the median of the numbers on stdin, one a line (empty lines left out),
# printed with FORMAT; nothing if there is none.
median() {
	awk 'NF' | sort -g | awk -v f="$1" '{ v[NR] = $1 }
		END { if (NR == 0) exit
		      printf f "\n", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# rotated K WORD...: the WORDs rotated left by K places.
rotated() {
	local k=$1 i
	shift
	local words=("$@")
	for ((i = 0; i < ${#words[@]}; i++)); do
		printf '%s ' "${words[$(((i + k) % ${#words[@]}))]}"
	done
}
# upstream_stats: "full N resumed M group G" from the TLS upstream, now.
upstream_stats() {
	rm -f "$work/up.port.stats"
	kill -USR1 "$pid_up"
	for _ in $(seq 50); do [ -s "$work/up.port.stats" ] && break; sleep 0.1; done
	cat "$work/up.port.stats"
}

# handshakes_once PEER ROUND: PEER's handshake rate in ROUND goes to V[PEER.hs.ROUND], the
# handshakes to N[PEER.hs], its processes' CPU ticks to T[PEER.hs] and, for tls, how its
# upstream handshakes went to UP. Uses run_variant's variables (PORT, PIDS, V, T, N, UP).
handshakes_once() {
	local peer=$1 r=$2 pids_peer t0 t1 out f0 r0 f1 r1 g
	pids_peer=${PIDS[$peer]}
	[ "$variant" != tls ] || read -r _ f0 _ r0 _ < <(upstream_stats)
	# shellcheck disable=SC2086 # pids_peer is a list
	t0=$(bench_cpu_ticks $pids_peer)
	out=$(client handshakes "${PORT[$peer]}" "$secs" 4)
	# shellcheck disable=SC2086 # pids_peer is a list
	t1=$(bench_cpu_ticks $pids_peer)
	V[$peer.hs.$r]=$(awk '{print $2}' <<<"$out")
	N[$peer.hs]=$((${N[$peer.hs]:-0} + $(awk '{print $4}' <<<"$out")))
	T[$peer.hs]=$((${T[$peer.hs]:-0} + t1 - t0))
	if [ "$variant" = tls ]; then
		read -r _ f1 _ r1 _ g < <(upstream_stats)
		UP[$peer.up_full]=$((${UP[$peer.up_full]:-0} + f1 - f0))
		UP[$peer.up_resumed]=$((${UP[$peer.up_resumed]:-0} + r1 - r0))
		UP[$peer.up_group]=$g
	fi
}

# bulk_round PHASE ROUND PEER...: one interleaved bulk run through every PEER (bulk1: one
# connection to each, bulk16: 16), SECONDS of slices each; each PEER's MB/s goes to
# V[PEER.PHASE.ROUND], its bytes are added to N[PEER.PHASE] and its processes' CPU ticks over
# the run to T[PEER.PHASE].
bulk_round() {
	local phase=$1 r=$2 ports="" peer out rate bytes t1
	shift 2
	local -A t0
	for peer in "$@"; do
		ports="$ports${ports:+,}${PORT[$peer]}"
		# shellcheck disable=SC2086 # PIDS[peer] is a list
		t0[$peer]=$(bench_cpu_ticks ${PIDS[$peer]})
	done
	out=$(client bulk "$ports" "$secs" "${phase#bulk}")
	for peer in "$@"; do
		# shellcheck disable=SC2086 # PIDS[peer] is a list
		t1=$(bench_cpu_ticks ${PIDS[$peer]})
		T[$peer.$phase]=$((${T[$peer.$phase]:-0} + t1 - ${t0[$peer]}))
	done
	while read -r peer _ rate _ bytes; do
		V[$peer.$phase.$r]=$rate
		N[$peer.$phase]=$((${N[$peer.$phase]:-0} + bytes))
	done < <(paste -d ' ' <(printf '%s\n' "$@") <(printf '%s\n' "$out"))
}

# pingpong_round ROUND PEER...: one interleaved 1 KiB ping-pong through every PEER (20,000
# round trips on each); the figures go to V[PEER.p50.ROUND] and V[PEER.p99.ROUND].
pingpong_round() {
	local r=$1 ports="" peer p50 p99
	shift
	for peer in "$@"; do ports="$ports${ports:+,}${PORT[$peer]}"; done
	{
		for peer in "$@"; do
			read -r _ p50 _ p99 _
			V[$peer.p50.$r]=$p50
			V[$peer.p99.$r]=$p99
		done
	} < <(client pingpong "$ports" 20000)
}

# round_values PEER METRIC: PEER's METRIC in every round, one a line.
round_values() {
	local r
	for r in $(seq "$rounds"); do echo "${V[$1.$2.$r]:-}"; done
}

# held LABEL METRIC PEER OP FACTOR [WHO]: in how many rounds WHO's (default agentca) METRIC
# over PEER's, both measured in the same round, was OP (>= or <=) FACTOR; and those ratios.
held() {
	local label=$1 metric=$2 peer=$3 op=$4 factor=$5 who=${6:-agentca} r n=0 list="" q ok
	for r in $(seq "$rounds"); do
		read -r q ok < <(awk -v a="${V[$who.$metric.$r]:-}" -v b="${V[$peer.$metric.$r]:-}" \
			-v op="$op" -v f="$factor" 'BEGIN {
				if (a == "" || b <= 0) { print "- 0"; exit }
				q = a / b
				printf "%.2f %d\n", q, (op == ">=" ? (q >= f) : (q <= f)) }')
		list="$list $q"
		n=$((n + ok))
	done
	printf '  %-40s %d of %d rounds  (%s)\n' "$label:" "$n" "$rounds" "${list# }"
}

# run_variant tcp|tls: start the upstream and the proxies, measure them in turns, print the
# table, stop them all.
run_variant() {
	local variant=$1 up pa pn ph ps_ pm peer phase r t n label k before after opened
	local -A R V T N UP PORT PIDS
	local vpids="" peers

	rm -f "$work/up.port"
	if [ "$variant" = tls ]; then
		bench_spawn "$load" upstream "$work/up.port" "$work/upstream-full.pem" \
			"$work/upstream.key" "$work/root.pem"
	else
		bench_spawn "$load" upstream "$work/up.port"
	fi
	pid_up=$spawned
	vpids="$vpids $pid_up"
	bench_wait_for "$work/up.port" '^[0-9]' "the $variant upstream"
	up=$(cat "$work/up.port")

	# agentca proxy (standalone).
	pa=$(bench_free_port)
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
	AGENTCA_LOG_LEVEL=warn bench_spawn "$agentca" proxy --config "$work/agentca.json" \
		2>"$work/agentca-$variant.log"
	PORT[agentca]=$pa PIDS[agentca]=$spawned
	vpids="$vpids $spawned"
	# The same, with the verified-chain cache off (handshakes only).
	pn=$(bench_free_port)
	sed -e "s/127.0.0.1:$pa\"/127.0.0.1:$pn\"/" -e "s|\"workers\": 2,|\"workers\": 2, \"verify_cache\": 0, \"session_log\": \"$work/px/nocache-sessions.jsonl\",|" \
		"$work/agentca.json" >"$work/agentca-nocache.json"
	AGENTCA_LOG_LEVEL=warn bench_spawn "$agentca" proxy --config "$work/agentca-nocache.json" \
		2>"$work/agentca-nocache-$variant.log"
	PORT[agentca_nc]=$pn PIDS[agentca_nc]=$spawned
	vpids="$vpids $spawned"

	# HAProxy, two threads, the same policy: TLS 1.3, client certificate required.
	ph=$(bench_free_port)
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
	bench_spawn haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy-$variant.log" 2>&1
	PORT[haproxy]=$ph PIDS[haproxy]=$spawned
	vpids="$vpids $spawned"

	# stunnel (threads), the same policy; for tls a second stunnel, client = yes, behind it.
	ps_=$(bench_free_port)
	local stunnel_next="127.0.0.1:$up" pid_stunnel2=""
	if [ "$variant" = tls ]; then
		pm=$(bench_free_port)
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
		bench_spawn stunnel4 "$work/stunnel-up.conf" >/dev/null 2>&1
		pid_stunnel2=$spawned
		vpids="$vpids $spawned"
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
	bench_spawn stunnel4 "$work/stunnel.conf" >/dev/null 2>&1
	PORT[stunnel]=$ps_ PIDS[stunnel]="$spawned $pid_stunnel2"
	vpids="$vpids $spawned"

	wait_port "$pa" "agentca ($variant)" "$work/agentca-$variant.log"
	wait_port "$pn" "agentca without cache ($variant)" "$work/agentca-nocache-$variant.log"
	wait_port "$ph" "haproxy ($variant)" "$work/haproxy-$variant.log"
	wait_port "$ps_" "stunnel ($variant)" "$work/stunnel-$variant.log"
	[ -z "$pid_stunnel2" ] || wait_port "$pm" "the second stunnel ($variant)" "$work/stunnel-up-$variant.log"

	# Handshakes, in turns: ROUNDS rounds, every peer once per round, the order rotated by one
	# place per round. The cache-off agentca takes part in handshakes only.
	for r in $(seq "$rounds"); do
		for peer in $(rotated $((r - 1)) agentca agentca_nc haproxy stunnel); do
			handshakes_once "$peer" "$r"
		done
	done
	# Bulk and the ping-pong: the three peers interleaved within each round (see the top).
	for phase in bulk1 bulk16; do
		for r in $(seq "$rounds"); do
			# shellcheck disable=SC2046 # the rotated list
			bulk_round "$phase" "$r" $(rotated $((r - 1)) agentca haproxy stunnel)
		done
	done
	for r in $(seq "$rounds"); do
		# shellcheck disable=SC2046 # the rotated list
		pingpong_round "$r" $(rotated $((r - 1)) agentca haproxy stunnel)
	done

	# Memory per idle connection: once per peer, after the rate phases.
	for peer in agentca haproxy stunnel; do
		# shellcheck disable=SC2086 # PIDS[peer] is a list
		{
			sleep 1
			before=$(rss_kb ${PIDS[$peer]})
			# The coproc lets go of its sessions and ends when its stdin closes (below, or
			# when this shell exits).
			coproc IDLE { client idle "${PORT[$peer]}" "$idle"; }
			read -r _ opened <&"${IDLE[0]}"
			sleep 1
			after=$(rss_kb ${PIDS[$peer]})
		}
		[ "$opened" = "$idle" ] || echo "bench/proxy: $peer held $opened of $idle idle connections" >&2
		R[$peer.mem]=$(((after - before) * 1024 / (opened > 0 ? opened : 1)))
		# shellcheck disable=SC1083,SC2093 # closes the coproc's stdin: it lets go of the sessions
		exec {IDLE[1]}>&-
		wait "$IDLE_PID" || true
	done

	# Each peer's figures: rates and round trips the median of its rounds, CPU costs over
	# all its rounds together.
	for peer in agentca agentca_nc haproxy stunnel; do
		t=${T[$peer.hs]} n=${N[$peer.hs]}
		R[$peer.hs]=$(round_values "$peer" hs | median %.0f)
		R[$peer.hs_cpu]=$(awk -v t="$t" -v hz="$hz" -v n="$n" \
			'BEGIN { if (n > 0) printf "%.0f", t * 1e6 / hz / n; else print "" }')
		R[$peer.hs_per_cpu]=$(awk -v t="$t" -v hz="$hz" -v n="$n" \
			'BEGIN { if (t > 0) printf "%.0f", n / (t / hz); else print "" }')
		for k in up_full up_resumed up_group; do R[$peer.$k]=${UP[$peer.$k]:-}; done
		[ "$peer" != agentca_nc ] || continue # handshakes only
		for phase in bulk1 bulk16; do
			R[$peer.$phase]=$(round_values "$peer" "$phase" | median %.1f)
			R[$peer.${phase}_cpu]=$(awk -v t="${T[$peer.$phase]}" -v hz="$hz" \
				-v b="${N[$peer.$phase]}" \
				'BEGIN { if (b > 0) printf "%.2f", t * 1e3 / hz / (b / 1e6); else print "" }')
		done
		R[$peer.p50]=$(round_values "$peer" p50 | median %.0f)
		R[$peer.p99]=$(round_values "$peer" p99 | median %.0f)
	done

	echo
	if [ "$variant" = tls ]; then
		echo "variant tls: re-encrypting, TLS 1.3 upstream with a client certificate"
	else
		echo "variant tcp: plain TCP upstream"
	fi
	printf '%-38s %10s %10s %10s %10s %10s\n' metric agentca haproxy stunnel "a/haproxy" "a/stunnel"
	# row LABEL KEY [AGENTCA_PEER]: one metric of agentca (or of AGENTCA_PEER, e.g. agentca_nc)
	# next to HAProxy and stunnel, with the two ratios.
	row() {
		local a=${3:-agentca}
		printf '%-38s %10s %10s %10s %10s %10s\n' "$1" "${R[$a.$2]}" "${R[haproxy.$2]}" \
			"${R[stunnel.$2]}" "$(ratio "${R[$a.$2]}" "${R[haproxy.$2]}")" \
			"$(ratio "${R[$a.$2]}" "${R[stunnel.$2]}")"
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
	row "  cache off: mTLS handshakes/s" hs agentca_nc
	row "  cache off: CPU us per handshake" hs_cpu agentca_nc
	row "  cache off: handshakes per CPU-second" hs_per_cpu agentca_nc
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
	echo "(rates and round trips: the median of $rounds rounds; CPU per unit: over all rounds;"
	echo " rates: higher is better; us, bytes and CPU per unit: lower is better)"
	echo "issue #6's aims, round by round (agentca/peer, both measured in the same round):"
	held "handshakes >= HAProxy" hs haproxy ">=" 1
	held "handshakes >= 1.5x stunnel" hs stunnel ">=" 1.5
	held "cache off: handshakes >= HAProxy" hs haproxy ">=" 1 agentca_nc
	held "cache off: handshakes >= 1.5x stunnel" hs stunnel ">=" 1.5 agentca_nc
	held "bulk >= HAProxy, 1 connection" bulk1 haproxy ">=" 1
	held "bulk >= HAProxy, 16 connections" bulk16 haproxy ">=" 1
	held "1 KiB ping-pong p99 <= HAProxy" p99 haproxy "<=" 1
	printf '  %-40s %s\n' "bytes per idle connection <= HAProxy:" \
		"$(awk -v a="${R[agentca.mem]}" -v b="${R[haproxy.mem]}" \
			'BEGIN { print (a <= b ? "held" : "not held") " (measured once)" }')"

	for pid in $vpids; do bench_stop "$pid"; done
}

echo "bench/proxy: $(date -u +%FT%TZ), ${secs}s per rate phase, $rounds rounds in turns," \
	"$idle idle connections, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for variant in $variants; do
	case $variant in
	tcp | tls) run_variant "$variant" ;;
	*) bench_fail "unknown variant $variant (tcp, tls)" ;;
	esac
done
# The verify cache without sockets, the client or the kernel in the figure: the server side
# of the handshake alone, in process (bench/proxy/handshake_cpu.c).
if [ -x "$build/bench/proxy/handshake_cpu" ]; then
	echo
	echo "server side of a new mTLS handshake, in process (handshake_cpu, thread CPU time):"
	"$build/bench/proxy/handshake_cpu" "$work" 500
fi
