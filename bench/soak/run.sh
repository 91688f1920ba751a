#!/usr/bin/env bash
# bench/soak: the daemon under mixed traffic for a set time, watched from outside. Streams
# of enrollments (a fresh token each), renewals over mTLS, a long-polling bundle watcher and
# HTTPS requests through an integrated proxy listener (mTLS, to a loopback upstream) run
# together while the daemon's resident memory and open file descriptors are sampled. Prints
# one line per sample and a summary comparing the first and the last fifth of the run: a daemon that
# leaks shows a growing RSS or fd count, a healthy one stays flat after warm-up. The daemon's
# own /metrics adds the allocator's view (heap in use, free memory malloc keeps): a leak grows
# the heap in use without bound; a creeping RSS over a levelling heap is the allocator's
# retention.
#
#   bench/soak/run.sh BUILD_DIR [SECONDS (600)] [SAMPLE_EVERY (10)]
#
# Everything listens on 127.0.0.1; every process started here is stopped and every file
# removed on exit. No figure from here is a pass/fail test; BENCHMARKS.md and
# docs/SECURITY.md record the runs.
set -euo pipefail
build=${1:-build}
secs=${2:-600}
every=${3:-10}
agentca=$(cd "$(dirname "$build/agentca")" && pwd)/agentca
upstream_tool=$(dirname "$agentca")/tests/proxy_upstream
BENCH_NAME=soak
. "$(dirname "$0")/../lib.sh"
bench_need_built "$agentca" "$upstream_tool"
bench_begin

export AGENTCA_PASSWORD=soak-passphrase
"$agentca" init --dir "$work/ca" --name Soak --trust-domain soak.internal >/dev/null
# One client address makes all the traffic: lift the per-address and per-identity limits.
# The upstream behind the proxy: answers each HTTP request on its own connection.
bench_spawn "$upstream_tool" --port-file "$work/upstream.port" --record "$work/upstream.rec" http
for _ in $(seq 50); do [ -s "$work/upstream.port" ] && break; sleep 0.1; done
[ -s "$work/upstream.port" ] || bench_fail "the upstream did not start"
cat >"$work/config.json" <<JSON
{"rate_limits": {"address_per_second": 0, "identity_per_second": 0},
 "proxy": {"listeners": [{"listen": "127.0.0.1:0", "upstream": "127.0.0.1:$(cat "$work/upstream.port")",
                          "allow": ["spiffe://soak.internal/**"]}]}}
JSON
bench_agentca_serve "$agentca" "$work/ca" "$work/serve.log" --config "$work/config.json"
port=$daemon_port
url="https://127.0.0.1:$port"
proxy_port=$(bench_log_port "$work/serve.log" proxy_listening)
[ -n "$proxy_port" ] || { cat "$work/serve.log" >&2; bench_fail "no proxy listener"; }
fp=$(openssl x509 -in "$work/ca/root.pem" -outform DER | sha256sum | cut -d' ' -f1)
deadline=$(($(date +%s) + secs))

# enroll_stream N: enroll agent N.i again and again (20 directories reused in turn).
enroll_stream() {
	i=0
	while [ "$(date +%s)" -lt "$deadline" ]; do
		i=$((i + 1))
		t=$("$agentca" token create --dir "$work/ca" --subject "spiffe://soak.internal/s$1/a$((i % 20))" 2>/dev/null) || continue
		if "$agentca" enroll --ca "$url" --token "$t" --fingerprint "$fp" \
			--out "$work/agents/s$1-$((i % 20))" >/dev/null 2>&1; then
			echo x >>"$work/enrolled.$1"
		fi
	done
}

# renew_stream N: renew one agent's certificate over mTLS again and again.
renew_stream() {
	dir=$work/agents/renewer-$1
	t=$("$agentca" token create --dir "$work/ca" --subject "spiffe://soak.internal/renewer-$1")
	"$agentca" enroll --ca "$url" --token "$t" --fingerprint "$fp" --out "$dir" >/dev/null 2>&1
	while [ "$(date +%s)" -lt "$deadline" ]; do
		if curl -sS --fail --cacert "$dir/bundle.pem" --cert "$dir/cert.pem" --key "$dir/key.pem" \
			-H 'Content-Type: application/json' -d '{}' "$url/v1/renew" >/dev/null 2>&1; then
			echo x >>"$work/renewed.$1"
		fi
	done
}

# proxy_stream N: HTTPS requests through the proxy with an enrolled client's certificate.
proxy_stream() {
	dir=$work/agents/proxied-$1
	t=$("$agentca" token create --dir "$work/ca" --subject "spiffe://soak.internal/proxied-$1")
	"$agentca" enroll --ca "$url" --token "$t" --fingerprint "$fp" --out "$dir" >/dev/null 2>&1
	while [ "$(date +%s)" -lt "$deadline" ]; do
		if curl -sS --fail --cacert "$dir/bundle.pem" --cert "$dir/cert.pem" --key "$dir/key.pem" \
			"https://127.0.0.1:$proxy_port/" 2>/dev/null | grep -q "hello from upstream"; then
			echo x >>"$work/proxied.$1"
		fi
	done
}

mkdir -p "$work/agents"
bench_spawn proxy_stream 1
for n in 1 2; do
	bench_spawn enroll_stream "$n"
	bench_spawn renew_stream "$n"
done
bench_spawn "$agentca" bundle watch --ca "$url" --fingerprint "$fp" --out "$work/bundle.pem" \
	>/dev/null 2>&1

count() { cat "$work"/"$1".* 2>/dev/null | wc -l; }
# memory_kb: from /metrics, "store_kb heap_kb heap_free_kb": SQLite's memory (its page
# caches, agentca_store_memory_bytes), which grows with the database up to each connection's
# cache_size; the bytes malloc counts as in use (agentca_heap_in_use_bytes: live allocations
# and the chunks its per-thread caches hold), which a leak grows without bound; and what
# malloc keeps free in its arenas (agentca_heap_free_bytes), which is in the RSS but only
# fragmentation and per-thread arenas grow. rss_kb less store_kb is the rest. For the exact
# live bytes over time, run the daemon under heaptrack (docs/SECURITY.md says how).
memory_kb() {
	curl -sS --max-time 5 --cacert "$work/ca/root.pem" "$url/metrics" 2>/dev/null |
		awk '/^agentca_store_memory_bytes / {s = $2} /^agentca_heap_in_use_bytes / {h = $2}
		     /^agentca_heap_free_bytes / {f = $2}
		     END {printf "%d %d %d", s / 1024, h / 1024, f / 1024}'
}
echo "seconds rss_kb fds threads enrolled renewed proxied store_kb heap_kb heap_free_kb"
start=$(date +%s)
samples=$work/samples
: >"$samples"
while [ "$(date +%s)" -lt "$deadline" ]; do
	sleep "$every"
	kill -0 "$daemon" 2>/dev/null || bench_fail "the daemon died"
	rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$daemon/status")
	threads=$(awk '/^Threads:/ {print $2}' "/proc/$daemon/status")
	fds=$(ls "/proc/$daemon/fd" | wc -l)
	memory=$(memory_kb)
	line="$(($(date +%s) - start)) $rss $fds $threads $(count enrolled) $(count renewed) $(count proxied) ${memory:-0 0 0}"
	echo "$line"
	echo "$line" >>"$samples"
done

# Summary: the median of the first and of the last fifth of the samples.
n=$(wc -l <"$samples")
fifth=$(((n + 4) / 5))
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }
rss_first=$(head -n "$fifth" "$samples" | awk '{print $2}' | median)
rss_last=$(tail -n "$fifth" "$samples" | awk '{print $2}' | median)
fds_first=$(head -n "$fifth" "$samples" | awk '{print $3}' | median)
rest_first=$(head -n "$fifth" "$samples" | awk '{print $2 - $8}' | median)
rest_last=$(tail -n "$fifth" "$samples" | awk '{print $2 - $8}' | median)
fds_last=$(tail -n "$fifth" "$samples" | awk '{print $3}' | median)
heap_first=$(head -n "$fifth" "$samples" | awk '{print $9}' | median)
heap_last=$(tail -n "$fifth" "$samples" | awk '{print $9}' | median)
total=$(tail -n1 "$samples")
echo "summary: seconds=$secs samples=$n enrolled=$(echo "$total" | cut -d' ' -f5)" \
	"renewed=$(echo "$total" | cut -d' ' -f6)" "proxied=$(echo "$total" | cut -d' ' -f7)" \
	"rss_kb first=$rss_first last=$rss_last" \
	"growth=$(awk -v a="$rss_first" -v b="$rss_last" 'BEGIN {printf "%.1f%%", (b - a) * 100 / a}')" \
	"fds first=$fds_first last=$fds_last" \
	"rss_less_store_kb first=$rest_first last=$rest_last" \
	"growth=$(awk -v a="$rest_first" -v b="$rest_last" 'BEGIN {printf "%.1f%%", (b - a) * 100 / a}')" \
	"heap_in_use_kb first=$heap_first last=$heap_last" \
	"growth=$(awk -v a="$heap_first" -v b="$heap_last" 'BEGIN {if (a > 0) printf "%.1f%%", (b - a) * 100 / a; else print "n/a"}')"
