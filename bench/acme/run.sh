#!/usr/bin/env bash
# bench/acme: ACME end to end, agentca next to Pebble (Debian pebble) in the same run.
#   1. lego (Debian lego), the real client: wall time per certificate, one `lego run` per
#      certificate (new key, newOrder, http-01 answered by lego, finalize, download), the
#      account made by a warm-up run and reused; against agentca and against Pebble with
#      PEBBLE_VA_NOSLEEP=1 and PEBBLE_VA_ALWAYS_VALID=1 (no validation wait, no validation).
#      The two servers take turns certificate by certificate (who goes first alternates), so
#      a burst of load on this shared machine hits both alike; the median and the mean of
#      each side, and the ratio of the medians.
#   2. bench_acme, the project's generator: complete orders per second with C concurrent
#      workers, one account, http-01 served by the generator (bench/acme/bench_acme.c);
#      with each server's CPU time per order over the run (utime + stime of its process,
#      /proc/PID/stat, divided by the orders completed).
# Prints one line per measurement and the ratios, nothing else.
#
#   bench/acme/run.sh BUILD_DIR [SECONDS] [CONCURRENCY] [LEGO_CERTS_PER_SIDE]
#
# agentca really validates http-01: its resolver is pebble-challtestsrv's DNS (every name
# is 127.0.0.1) and its http-01 port is where lego or the generator listens. Pebble's
# nonce rejection is off (PEBBLE_WFE_NONCEREJECT=0) so neither side pays for retries.
# Everything listens on 127.0.0.1 only; every process started here is stopped and every
# temporary file removed on exit. Needs pebble, lego, ss (iproute2) and curl.
set -euo pipefail
build=${1:-build}
secs=${2:-10}
conc=${3:-8}
certs=${4:-20}
agentca=$build/agentca
gen=$build/bench/acme/bench_acme

BENCH_NAME=acme
. "$(dirname "$0")/../lib.sh"
bench_need_tools "pebble lego iproute2 curl openssl" pebble pebble-challtestsrv lego ss curl openssl
bench_need_built "$agentca" "$gen"
bench_begin

now_ms() {
	echo $(($(date +%s%N) / 1000000))
}

# run_lego NAME DIRECTORY CAFILE HTTP_PORT DOMAIN: one `lego run` for DOMAIN, with the
# account of $work/lego-NAME (made by the first run, reused after); prints its wall time in
# ms, or fails with lego's last lines on stderr.
run_lego() {
	local name=$1 dir=$2 cafile=$3 hport=$4 domain=$5 start end
	start=$(now_ms)
	if ! LEGO_CA_CERTIFICATES=$cafile lego --server "$dir" --email bench@example.test \
		--accept-tos --domains "$domain" --http --http.port "127.0.0.1:$hport" \
		--path "$work/lego-$name" run >>"$work/lego-$name.log" 2>&1; then
		tail -n 5 "$work/lego-$name.log" >&2
		echo "bench/acme: lego against $name failed" >&2
		return 1
	fi
	end=$(now_ms)
	echo $((end - start))
}

# stats FILE: "median M ms, mean A ms" of the numbers in FILE, one a line.
stats() {
	sort -n "$1" | awk '{ v[NR] = $1; sum += $1 }
		END { if (NR == 0) { print "n/a"; exit }
		      m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
		      printf "median %.1f ms, mean %.1f ms", m, sum / NR }'
}

median() {
	sort -n "$1" | awk '{ v[NR] = $1 } END { if (NR == 0) print 0;
		else printf "%.1f\n", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# gen_run NAME DIRECTORY CAFILE PID: the generator against one server; prints its line and
# then the server's CPU time per order over the run.
gen_run() {
	local name=$1 dir=$2 cafile=$3 pid=$4 line t0 t1 orders rc=0
	t0=$(bench_cpu_ticks "$pid")
	line=$("$gen" --target "$name" --directory "$dir" --cacert "$cafile" --http-port "$hport" \
		--concurrency "$conc" --seconds "$secs" --domain bench.internal) || rc=1
	t1=$(bench_cpu_ticks "$pid")
	echo "$line"
	[ -n "$line" ] || return 1
	orders=$(echo "$line" | sed -E 's/.* orders=([0-9]+).*/\1/')
	awk -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v n="$orders" -v who="$name" 'BEGIN {
		if (n > 0) printf "%s CPU per order: %.2f ms (%.2f s of CPU for %d orders, /proc/PID/stat utime+stime)\n",
			who, t * 1000 / hz / n, t / hz, n
		else printf "%s CPU per order: n/a\n", who }'
	return $rc
}

# Pebble: a TLS certificate of its own for 127.0.0.1, no validation wait, always valid.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 -days 30 \
	-subj "/CN=pebble bench" -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
	-keyout "$work/pebble.key" -out "$work/pebble.pem" 2>/dev/null
pport=$(bench_free_port)
pmport=$(bench_free_port)
cat >"$work/pebble.json" <<JSON
{"pebble": {"listenAddress": "127.0.0.1:$pport", "managementListenAddress": "127.0.0.1:$pmport",
  "certificate": "$work/pebble.pem", "privateKey": "$work/pebble.key",
  "httpPort": 5002, "tlsPort": 5001, "ocspResponderURL": "",
  "externalAccountBindingRequired": false}}
JSON
PEBBLE_VA_NOSLEEP=1 PEBBLE_VA_ALWAYS_VALID=1 PEBBLE_WFE_NONCEREJECT=0 \
	bench_spawn pebble -config "$work/pebble.json" >"$work/pebble.log" 2>&1
pebble_pid=$spawned
bench_wait_for "$work/pebble.log" "Listening on" "pebble"
pebble_dir="https://127.0.0.1:$pport/dir"

# agentca: a fresh CA, ACME validation through challtestsrv's DNS to the http-01 port.
status=0
agentca_dir=""
hport=$(bench_free_port)
if "$agentca" serve --help 2>&1 | grep -- "--acme-http-port" >/dev/null; then
	bench_challtestsrv
	dport=$dns_port
	export AGENTCA_PASSWORD=bench-acme-passphrase
	"$agentca" init --dir "$work/ca" --name Bench --trust-domain bench.internal >/dev/null
	echo '{"rate_limits": {"address_per_second": 0, "identity_per_second": 0}}' >"$work/serve.json"
	bench_agentca_serve "$agentca" "$work/ca" "$work/serve.log" --config "$work/serve.json" \
		--acme-resolver "127.0.0.1:$dport" --acme-http-port "$hport"
	agentca_pid=$daemon
	aport=$daemon_port
	agentca_dir="https://127.0.0.1:$aport/acme/directory"
	if ! curl -fsS --cacert "$work/ca/root.pem" "$agentca_dir" >/dev/null 2>&1; then
		echo "bench/acme: agentca answers no ACME directory at $agentca_dir" >&2
		agentca_dir=""
	fi
else
	echo "bench/acme: this agentca has no ACME server (serve lacks --acme-http-port); Pebble only" >&2
fi
[ -n "$agentca_dir" ] || status=1

# 1. lego, per certificate: a warm-up run each (registers the account), then the two
#    servers in turn, certificate by certificate.
: >"$work/times-pebble"
: >"$work/times-agentca"
sides="pebble"
[ -n "$agentca_dir" ] && sides="pebble agentca"
lego_side() {
	case $1 in
	pebble) run_lego pebble "$pebble_dir" "$work/pebble.pem" "$hport" "$2" ;;
	agentca) run_lego agentca "$agentca_dir" "$work/ca/root.pem" "$hport" "$2" ;;
	esac
}
lego_ok=1
for side in $sides; do
	lego_side "$side" "warmup.lego.bench.internal" >/dev/null || lego_ok=0
done
if [ $lego_ok = 1 ]; then
	for i in $(seq "$certs"); do
		order=$sides
		[ $((i % 2)) = 0 ] && order=$(echo "$sides" | awk '{ for (k = NF; k > 0; k--) printf "%s ", $k }')
		for side in $order; do
			ms=$(lego_side "$side" "c$i.lego.bench.internal") || { lego_ok=0; break 2; }
			echo "$ms" >>"$work/times-$side"
		done
	done
fi
[ $lego_ok = 1 ] || status=1
echo "lego per certificate: pebble $(stats "$work/times-pebble") ($(wc -l <"$work/times-pebble") certificates, http-01 not validated, account reused)"
if [ -n "$agentca_dir" ]; then
	echo "lego per certificate: agentca $(stats "$work/times-agentca") ($(wc -l <"$work/times-agentca") certificates, http-01 validated, account reused; taking turns with pebble)"
	awk -v a="$(median "$work/times-agentca")" -v p="$(median "$work/times-pebble")" 'BEGIN {
		if (a > 0 && p > 0) printf "ratio pebble/agentca (lego median per certificate): %.2f\n", p / a
		else print "ratio pebble/agentca (lego median per certificate): n/a" }'
fi
for side in $sides; do
	echo "lego samples (ms, in order): $side $(tr '\n' ' ' <"$work/times-$side")"
done

# 2. The generator, orders per second, and each server's CPU per order.
pout=$(gen_run pebble "$pebble_dir" "$work/pebble.pem" "$pebble_pid") || status=1
echo "$pout"
if [ -n "$agentca_dir" ]; then
	aout=$(gen_run agentca "$agentca_dir" "$work/ca/root.pem" "$agentca_pid") || status=1
	echo "$aout"
	arate=$(echo "$aout" | sed -nE 's/.* rate=([0-9.]+).*/\1/p')
	prate=$(echo "$pout" | sed -nE 's/.* rate=([0-9.]+).*/\1/p')
	awk -v a="${arate:-0}" -v p="${prate:-0}" 'BEGIN {
		if (p > 0) printf "ratio agentca/pebble (orders per second): %.2f\n", a / p
		else print "ratio agentca/pebble (orders per second): n/a" }'
fi
exit $status
