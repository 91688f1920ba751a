# bench/lib.sh - shared by the benchmark scripts: a scratch directory and every process
# started through bench_spawn stopped on exit, the tool and build checks, waiting for a
# log line, a free loopback port, a process's CPU time, and a fresh agentca daemon.
#
# A script sets BENCH_NAME (used in messages and the scratch directory's name), sources
# this file and calls bench_begin; $work is then its scratch directory. With BENCH_KEEP=1 in
# the environment the directory is kept (logs, configs, profiles) and its path printed.

# bench_fail MESSAGE: print "bench/NAME: MESSAGE" and exit 1.
bench_fail() {
	echo "bench/$BENCH_NAME: $*" >&2
	exit 1
}

# bench_need_tools PACKAGES TOOL...: every TOOL on PATH, or a message naming the Debian
# PACKAGES to install.
bench_need_tools() {
	local packages=$1 tool
	shift
	for tool in "$@"; do
		command -v "$tool" >/dev/null 2>&1 ||
			bench_fail "$tool is not installed; install with: apt-get install -y $packages"
	done
}

# bench_need_built FILE...: each FILE an executable of the build.
bench_need_built() {
	local f
	for f in "$@"; do
		[ -x "$f" ] || bench_fail "$f not built (cmake --build the build directory)"
	done
}

bench_cleanup() {
	local pid
	for pid in $bench_pids; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in $bench_pids; do
		wait "$pid" 2>/dev/null || true
	done
	if [ -n "${BENCH_KEEP:-}" ]; then
		echo "bench: kept $work" >&2
	else
		rm -rf "$work"
	fi
}

# bench_begin: make $work and arrange for the cleanup on exit.
bench_begin() {
	work=$(mktemp -d "${TMPDIR:-/tmp}/agentca-bench-$BENCH_NAME.XXXXXX")
	bench_pids=""
	trap bench_cleanup EXIT
}

# bench_spawn CMD...: start CMD in the background, stopped on exit; its pid in $spawned.
bench_spawn() {
	"$@" &
	spawned=$!
	bench_pids="$bench_pids $spawned"
}

# bench_track PID: stop PID on exit too (for a process started some other way).
bench_track() {
	bench_pids="$bench_pids $1"
}

# bench_stop PID: stop PID now and forget it (the cleanup must not signal a reused pid).
bench_stop() {
	kill -TERM "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
	bench_pids=${bench_pids/ $1/}
}

# bench_wait_for FILE PATTERN WHAT [TENTHS]: until FILE has a line matching PATTERN (TENTHS
# tenths of a second at most, 100 by default; a daemon under valgrind needs far more).
bench_wait_for() {
	for _ in $(seq "${4:-100}"); do
		grep -q "$2" "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	cat "$1" >&2
	bench_fail "$3 never became ready"
}

# bench_free_port: a loopback port no socket uses (TCP or UDP, listening or connected) right
# now, below the kernel's ephemeral range, so that no outgoing connection takes it meanwhile.
bench_free_port() {
	local port low
	low=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
	while :; do
		port=$((10000 + RANDOM % (low - 10000)))
		if ! ss -Htuan | awk '{print $5}' | grep ":$port\$" >/dev/null; then
			echo "$port"
			return
		fi
	done
}

# bench_cpu_ticks PID...: utime + stime of the processes together (every thread), in clock
# ticks (fields 14 and 15 of /proc/PID/stat, counted after the command name, which may
# hold spaces).
bench_cpu_ticks() {
	local pid total=0 t
	for pid in "$@"; do
		t=$(sed -E 's/^.*\) //' "/proc/$pid/stat" | awk '{ print $12 + $13 }')
		total=$((total + t))
	done
	echo "$total"
}

# bench_log_port LOG EVENT: the port of the last EVENT line ("... (port N) ...") in LOG.
bench_log_port() {
	grep "\"event\":\"$2\"" "$1" | tail -n1 | sed -E 's/.*\(port ([0-9]+)\).*/\1/'
}

# bench_agentca_serve AGENTCA CA_DIR LOG [serve options...]: serve CA_DIR on a free
# loopback port, wait until it is ready; sets $daemon (its pid) and $daemon_port.
bench_agentca_serve() {
	local agentca=$1 dir=$2 log=$3
	shift 3
	bench_spawn "$agentca" serve --dir "$dir" --listen 127.0.0.1:0 "$@" 2>"$log"
	daemon=$spawned
	bench_wait_for "$log" '"event":"ca_ready"' "agentca serve"
	daemon_port=$(bench_log_port "$log" listening)
	[ -n "$daemon_port" ] || { cat "$log" >&2; bench_fail "agentca serve names no port"; }
}

# bench_challtestsrv: pebble-challtestsrv as a DNS server only (every name is 127.0.0.1, no
# AAAA), on a free loopback port, for agentca's --acme-resolver; waits until it is ready and
# sets $dns_port and $cts_pid. Its log is $work/cts.log.
bench_challtestsrv() {
	local mport
	dns_port=$(bench_free_port)
	mport=$(bench_free_port)
	bench_spawn pebble-challtestsrv -http01 "" -https01 "" -tlsalpn01 "" -dns01 "127.0.0.1:$dns_port" \
		-management "127.0.0.1:$mport" -defaultIPv6 "" >"$work/cts.log" 2>&1
	cts_pid=$spawned
	bench_wait_for "$work/cts.log" "Starting management server" "pebble-challtestsrv"
}
