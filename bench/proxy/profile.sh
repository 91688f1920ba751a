#!/usr/bin/env bash
# bench/proxy/profile.sh: where agentca's proxy spends its work, next to HAProxy, in figures
# that do not depend on how busy the machine is (bench/proxy/run.sh's rates do):
#
#   profile.sh BUILD instructions [SECONDS]
#       callgrind: instructions executed in the proxy process (user space, all threads) per
#       new mTLS handshake (tcp upstream; agentca with its verify cache, without it, and
#       HAProxy) and per MB relayed TLS to TLS (one bulk connection, re-encrypting upstream).
#       Each proxy runs one worker thread under valgrind for SECONDS (default 20) of load.
#   profile.sh BUILD syscalls [SECONDS]
#       strace -c: system calls per handshake and per MB, the same phases, no valgrind.
#   profile.sh BUILD cpu OLD_BUILD [SECONDS] [ROUNDS] [CONNECTIONS] [tls|tcp]
#       proxy CPU ms per MB (utime+stime, /proc/PID/stat) and MB/s of bulk through this
#       build, OLD_BUILD and HAProxy (2 threads each), re-encrypting (tls, the default) or to
#       a tcp upstream, ROUNDS rounds (default 4) of one interleaved bulk run (bench_proxy
#       bulk PORT,PORT,PORT, as in run.sh: SECONDS of 0.25 s slices each), so that the
#       machine's mood hits all three alike.
#   profile.sh BUILD budget [tls|tcp] [CONNECTIONS] [ROUNDS] [SECONDS]
#       where the machine's CPU goes in bulk (default tls, 16 connections, 3 rounds of 4 s):
#       CPU ms per MB of the proxy, of the upstream and of the client (bench_proxy, by GNU
#       time), their sum, and how many of the cores were busy over the run, for agentca and
#       HAProxy in turns. With the cores saturated the rate is cores / sum: a proxy's rate
#       follows its own cost only as far as the upstream's and the client's stay the same.
#   profile.sh BUILD pingpong [ROUNDS] [COUNT] [WORKERS] [OLD_BUILD] [tcp|tls]
#       1 KiB ping-pong round trips (p50, p99, p99.9, max) through agentca, HAProxy and, given
#       OLD_BUILD (may be ""), that build's agentca ("old"), tcp upstream (or tls:
#       re-encrypting, as in run.sh), WORKERS worker threads each (default 2), ROUNDS rounds
#       (default 5) of COUNT round trips on each proxy (default 20000), interleaved as in
#       run.sh (one client, one round trip on each proxy in turn); then each proxy's system
#       calls per round trip (strace -c, one more COUNT each).
#
# The same certificates, client (bench_proxy) and upstream as run.sh; everything on
# 127.0.0.1; every process started here is stopped and the work directory removed on exit
# (bench/lib.sh). Needs valgrind, strace, haproxy and ss.
set -euo pipefail
build=$(cd "${1:?usage: profile.sh BUILD instructions|syscalls|cpu|pingpong ...}" && pwd)
what=${2:-instructions}
agentca=$build/agentca
load=$build/bench/proxy/bench_proxy

BENCH_NAME=proxy-profile
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/../lib.sh"
bench_need_tools "haproxy iproute2 openssl" haproxy ss openssl
bench_need_built "$agentca" "$load"
bench_begin
export AGENTCA_PASSWORD=bench-proxy-passphrase

# Certificates as in run.sh: one CA, the proxies' certificate, a client, the upstream's.
"$agentca" init --dir "$work/ca" --name Bench --trust-domain bench >/dev/null
(
	cd "$work"
	for who in server:proxy.bench client:client upstream:upstream.bench; do
		name=${who%%:*} cn=${who#*:}
		san=()
		[ "$name" = client ] || san=(-addext "subjectAltName=DNS:$cn")
		openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
			-keyout "$name.key" -subj "/CN=$cn" "${san[@]}" -out "$name.csr" 2>/dev/null
		"$agentca" issue --dir ca --csr "$name.csr" --subject "spiffe://bench/$name" \
			>"$name-full.pem"
	done
	awk '/BEGIN CERT/{n++} n==1' server-full.pem >server.pem
	awk '/BEGIN CERT/{n++} n>=2' server-full.pem >chain.pem
	cp ca/root.pem root.pem
	chmod 600 ./*.key
	mkdir -p px
	cp server.key px/key.pem
	cp server.pem px/cert.pem
	cp chain.pem px/chain.pem
	cp root.pem px/bundle.pem
	chmod 700 px
	cat server.pem chain.pem server.key >haproxy.pem
)

port_seq=0
# wait_port PORT: until something listens there (60 s: a proxy under valgrind starts slowly).
# bench/lib.sh waits for log lines; HAProxy prints none when ready.
wait_port() {
	for _ in $(seq 600); do
		ss -ltnH "sport = :$1" | grep -q . && return
		sleep 0.1
	done
	bench_fail "nothing listens on $1 after 60 s"
}

# start_upstream tcp|tls: the bench upstream, stopped by stop_all; sets $up_port.
start_upstream() {
	local f="$work/up.$((port_seq += 1))"
	if [ "$1" = tls ]; then
		bench_spawn "$load" upstream "$f" "$work/upstream-full.pem" "$work/upstream.key" \
			"$work/root.pem"
	else
		bench_spawn "$load" upstream "$f"
	fi
	bench_wait_for "$f" '^[0-9]' "the $1 upstream"
	up_port=$(cat "$f")
}

# config_agentca PORT MODE CACHE WORKERS FILE: a standalone proxy's config (CACHE "": default).
config_agentca() {
	local extra="" cache=""
	[ "$2" = tls ] && extra=', "upstream_mode": "tls", "upstream_name": "upstream.bench", "upstream_ca_file": "'$work/root.pem'"'
	[ -z "$3" ] || cache="\"verify_cache\": $3, "
	cat >"$5" <<JSON
{"ca": "https://127.0.0.1:1", "out": "$work/px", "bundle_interval": "24h",
 "proxy": {"workers": $4, ${cache}"session_log": "$5.sessions", "max_connections": 100000, "idle_timeout": "1h",
   "listeners": [{"listen": "127.0.0.1:$1", "upstream": "127.0.0.1:$up_port", "allow": ["spiffe://bench/**"]$extra}]}}
JSON
}

# config_haproxy PORT MODE THREADS FILE
config_haproxy() {
	local uptls=""
	[ "$2" = tls ] && uptls=" ssl verify required ca-file $work/root.pem crt $work/haproxy.pem sni str(upstream.bench) verifyhost upstream.bench ssl-min-ver TLSv1.3"
	cat >"$4" <<CFG
global
  nbthread $3
  maxconn 5000
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
frontend mtls
  bind 127.0.0.1:$1 ssl crt $work/haproxy.pem ca-file $work/root.pem verify required ssl-min-ver TLSv1.3
  default_backend up
backend up
  server u 127.0.0.1:$up_port$uptls
CFG
}

# start_proxy PEER MODE WRAPPER...: agentca (cache on), agentca-nocache or haproxy, one
# worker thread, under WRAPPER (may be empty); sets $px_port and $px_pid.
start_proxy() {
	local peer=$1 mode=$2
	shift 2
	px_port=$(bench_free_port)
	case $peer in
	agentca | agentca-nocache)
		local cache=""
		[ "$peer" = agentca ] || cache=0
		config_agentca "$px_port" "$mode" "$cache" 1 "$work/$peer.json"
		AGENTCA_LOG_LEVEL=warn bench_spawn "$@" "$agentca" proxy --config "$work/$peer.json" \
			2>"$work/$peer.log"
		;;
	haproxy)
		config_haproxy "$px_port" "$mode" 1 "$work/haproxy.cfg"
		bench_spawn "$@" haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1
		;;
	esac
	px_pid=$spawned
	wait_port "$px_port"
	sleep 1
}

# stop_all: stop every process started so far.
stop_all() {
	local pid
	for pid in $bench_pids; do bench_stop "$pid"; done
}

# start_peers MODE WORKERS PEER...: each PEER, "haproxy" or NAME=AGENTCA_BINARY, in front of
# the upstream ($up_port) in MODE with WORKERS threads, on a free port; fills the caller's
# associative arrays PORT and PID by NAME (haproxy: "haproxy") and waits until all listen.
start_peers() {
	local mode=$1 workers=$2 peer name bin
	shift 2
	for peer in "$@"; do
		name=${peer%%=*}
		PORT[$name]=$(bench_free_port)
		if [ "$peer" = haproxy ]; then
			config_haproxy "${PORT[$name]}" "$mode" "$workers" "$work/haproxy.cfg"
			bench_spawn haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1
		else
			bin=${peer#*=}
			bench_need_built "$bin"
			config_agentca "${PORT[$name]}" "$mode" "" "$workers" "$work/$name.json"
			AGENTCA_LOG_LEVEL=warn bench_spawn "$bin" proxy --config "$work/$name.json" \
				2>"$work/$name.log"
		fi
		PID[$name]=$spawned
	done
	for peer in "$@"; do wait_port "${PORT[${peer%%=*}]}"; done
}

# drive PHASE PORT SECONDS: handshakes (2 client threads) or bulk (1 connection); prints
# the count (handshakes, or bytes). PHASE pingpong: SECONDS is the number of round trips.
drive() {
	local out
	if [ "$1" = pingpong ]; then
		"$load" pingpong "$2" "$work/root.pem" "$work/client-full.pem" "$work/client.key" \
			"$3" >/dev/null
		echo "$3"
		return
	elif [ "$1" = handshakes ]; then
		out=$("$load" handshakes "$2" "$work/root.pem" "$work/client-full.pem" "$work/client.key" "$3" 2)
	else
		out=$("$load" bulk "$2" "$work/root.pem" "$work/client-full.pem" "$work/client.key" "$3" 1)
	fi
	awk '{print $4}' <<<"$out"
}

secs=${3:-20}
case $what in
instructions)
	bench_need_tools valgrind valgrind callgrind_control callgrind_annotate
	printf '%-34s %-16s %14s %10s %16s\n' phase proxy instructions count "per unit"
	for run in "handshakes tcp agentca" "handshakes tcp agentca-nocache" \
		"handshakes tcp haproxy" "bulk tls agentca" "bulk tls haproxy"; do
		read -r phase mode peer <<<"$run"
		start_upstream "$mode"
		start_proxy "$peer" "$mode" valgrind --tool=callgrind \
			--callgrind-out-file="$work/cg.$peer.$phase"
		callgrind_control -z "$px_pid" >/dev/null 2>&1
		n=$(drive "$phase" "$px_port" "$secs")
		callgrind_control -d "$px_pid" >/dev/null 2>&1
		sleep 1
		f=$(find "$work" -name "cg.$peer.$phase*" | sort | tail -1)
		ir=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}')
		stop_all
		if [ "$phase" = handshakes ]; then
			unit=$(awk -v a="$ir" -v n="$n" 'BEGIN { if (n > 0) printf "%.2fM/handshake", a / n / 1e6 }')
			label="new mTLS handshake, tcp upstream"
		else
			unit=$(awk -v a="$ir" -v n="$n" 'BEGIN { if (n > 0) printf "%.2fM/MB", a / (n / 1e6) / 1e6 }')
			label="bulk, TLS to TLS, 1 connection"
		fi
		printf '%-34s %-16s %14s %10s %16s\n' "$label" "$peer" "$ir" "$n" "$unit"
	done
	echo "(one proxy worker thread under callgrind, ${secs}s of load each; bulk counts in bytes and"
	echo " includes that connection's handshake)"
	;;
syscalls)
	bench_need_tools strace strace
	for run in "handshakes tcp agentca" "handshakes tcp haproxy" "bulk tls agentca" \
		"bulk tls haproxy"; do
		read -r phase mode peer <<<"$run"
		start_upstream "$mode"
		start_proxy "$peer" "$mode"
		bench_spawn strace -c -f -p "$px_pid" -o "$work/strace.txt" 2>/dev/null
		st=$spawned
		sleep 0.5
		n=$(drive "$phase" "$px_port" "$secs")
		# SIGINT: strace detaches and writes its summary (bench_stop then waits for it).
		kill -INT "$st"
		bench_stop "$st"
		stop_all
		if [ "$phase" = handshakes ]; then per=$n unit=handshake; else per=$(awk -v b="$n" 'BEGIN{print b/16384}') unit="16 KiB record"; fi
		echo "== $peer, $phase ($mode upstream): $n $([ "$phase" = handshakes ] && echo handshakes || echo bytes); calls per $unit"
		awk -v per="$per" '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" {
			errs = NF == 6 ? $5 : 0
			if ($4 / per >= 0.01) printf "  %-14s %8.2f  (failed %.2f)\n", $NF, $4 / per, errs / per }' "$work/strace.txt" |
			sort -k2 -rn | head -12
	done
	;;
cpu)
	old=$(cd "${3:?profile.sh BUILD cpu OLD_BUILD [SECONDS] [ROUNDS] [CONNECTIONS] [tls|tcp]}" && pwd)
	secs=${4:-5} rounds=${5:-4} conns=${6:-1} mode=${7:-tls}
	hz=$(getconf CLK_TCK)
	start_upstream "$mode"
	declare -A PORT PID
	start_peers "$mode" 2 "new=$agentca" "old=$old/agentca" haproxy
	echo "proxy CPU ms per MB and MB/s, $mode bulk, $conns connection(s), ${secs}s each, interleaved: new=$build old=$old"
	peers="new old haproxy"
	ports="${PORT[new]},${PORT[old]},${PORT[haproxy]}"
	declare -A T0
	for r in $(seq "$rounds"); do
		for v in $peers; do T0[$v]=$(bench_cpu_ticks "${PID[$v]}"); done
		out=$("$load" bulk "$ports" "$work/root.pem" "$work/client-full.pem" "$work/client.key" \
			"$secs" "$conns")
		line="round $r:"
		while read -r v _ rate _ bytes; do
			t=$(($(bench_cpu_ticks "${PID[$v]}") - ${T0[$v]}))
			line="$line  $v $(awk -v t="$t" -v hz="$hz" -v b="$bytes" \
				'BEGIN { printf "%.3f", t * 1e3 / hz / (b / 1e6) }') ms/MB $rate MB/s"
		done < <(paste -d ' ' <(tr ' ' '\n' <<<"$peers") <(printf '%s\n' "$out"))
		echo "$line"
	done
	;;
budget)
	bench_need_tools time /usr/bin/time
	mode=${3:-tls} conns=${4:-16} rounds=${5:-3} secs=${6:-4}
	hz=$(getconf CLK_TCK)
	start_upstream "$mode"
	upstream_pid=$spawned
	declare -A PORT PID
	start_peers "$mode" 2 "agentca=$agentca" haproxy
	echo "$mode bulk, $conns connection(s), ${secs}s each, in turns: CPU ms per MB of each process"
	for r in $(seq "$rounds"); do
		for v in agentca haproxy; do
			p0=$(bench_cpu_ticks "${PID[$v]}")
			u0=$(bench_cpu_ticks "$upstream_pid")
			w0=$(date +%s.%N)
			out=$({ /usr/bin/time -f "client_cpu %U %S" "$load" bulk "${PORT[$v]}" \
				"$work/root.pem" "$work/client-full.pem" "$work/client.key" "$secs" \
				"$conns"; } 2>&1)
			w1=$(date +%s.%N)
			p1=$(bench_cpu_ticks "${PID[$v]}")
			u1=$(bench_cpu_ticks "$upstream_pid")
			awk -v v="$v" -v r="$r" -v hz="$hz" -v p=$((p1 - p0)) -v u=$((u1 - u0)) \
				-v w="$(awk -v a="$w0" -v b="$w1" 'BEGIN { print b - a }')" '
				/^bulk_mb_s/ { rate = $2; mb = $4 / 1e6 }
				/^client_cpu/ { c = $2 + $3 }
				END {
					ps = p / hz; us = u / hz
					printf "round %d %-8s %6.1f MB/s  proxy %.3f  upstream %.3f  client %.3f  sum %.3f ms/MB  cores busy %.2f\n",
						r, v, rate, ps * 1e3 / mb, us * 1e3 / mb, c * 1e3 / mb,
						(ps + us + c) * 1e3 / mb, (ps + us + c) / w }' <<<"$out"
		done
	done
	;;
pingpong)
	rounds=${3:-5} count=${4:-20000} workers=${5:-2} old=${6:-} mode=${7:-tcp}
	start_upstream "$mode"
	declare -A PORT PID
	peers="agentca haproxy"
	if [ -z "$old" ]; then
		start_peers "$mode" "$workers" "agentca=$agentca" haproxy
	else
		peers="agentca haproxy old"
		start_peers "$mode" "$workers" "agentca=$agentca" haproxy "old=$old/agentca"
	fi
	echo "1 KiB ping-pong, $mode upstream, $workers worker(s) each, $count round trips per figure (us),"
	echo "the proxies' round trips interleaved"
	ports=""
	for v in $peers; do ports="$ports${ports:+,}${PORT[$v]}"; done
	for r in $(seq "$rounds"); do
		line="round $r:"
		while read -r v figures; do
			line="$line  $v $figures"
		done < <(paste -d ' ' <(tr ' ' '\n' <<<"$peers") <("$load" pingpong "$ports" \
			"$work/root.pem" "$work/client-full.pem" "$work/client.key" "$count"))
		echo "$line"
	done
	for v in $peers; do
		bench_spawn strace -c -f -p "${PID[$v]}" -o "$work/strace-$v.txt" 2>/dev/null
		st=$spawned
		sleep 0.5
		drive pingpong "${PORT[$v]}" "$count" >/dev/null
		kill -INT "$st"
		bench_stop "$st"
		echo "== $v: system calls per round trip (strace -c, $count round trips)"
		awk -v per="$count" '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" {
			errs = NF == 6 ? $5 : 0
			if ($4 / per >= 0.01) printf "  %-14s %8.2f  (failed %.2f)\n", $NF, $4 / per, errs / per }' \
			"$work/strace-$v.txt" | sort -k2 -rn | head -12
	done
	;;
*)
	echo "bench/proxy-profile: unknown mode $what (instructions, syscalls, cpu, budget, pingpong)" >&2
	exit 2
	;;
esac
