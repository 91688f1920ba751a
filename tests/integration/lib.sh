# lib.sh - shared by the integration tests: a scratch directory removed on exit, every
# process started through `spawn` killed on exit, and small assertion helpers.
#
# Tests get the binary under test in $AGENTCA (ctest sets it) and run with `set -eu`.
set -eu

: "${AGENTCA:?AGENTCA must point at the agentca binary}"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/agentca-it.XXXXXX")
PIDS=""
export AGENTCA_PASSWORD="integration-test-passphrase"

cleanup() {
	for pid in $PIDS; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in $PIDS; do
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$WORK"
}
trap cleanup EXIT

# fail MESSAGE: print and exit non-zero.
fail() {
	echo "FAIL: $*" >&2
	exit 1
}

pass() {
	echo "ok - $*"
}

# spawn CMD...: start in the background, remembered for cleanup; the pid is in $SPAWNED.
spawn() {
	"$@" &
	SPAWNED=$!
	PIDS="$PIDS $SPAWNED"
}

# expect_exit CODE DESCRIPTION CMD...: run CMD, capturing stderr in $WORK/stderr; the exit
# status must be CODE and stderr must be exactly one line when CODE is not 0.
expect_exit() {
	want=$1
	what=$2
	shift 2
	set +e
	"$@" >"$WORK/stdout" 2>"$WORK/stderr"
	got=$?
	set -e
	if [ "$got" != "$want" ]; then
		cat "$WORK/stderr" >&2
		fail "$what: exit $got, want $want"
	fi
	if [ "$want" != 0 ] && [ "$want" != 2 ] && [ "$(wc -l <"$WORK/stderr")" != 1 ]; then
		cat "$WORK/stderr" >&2
		fail "$what: want exactly one line on stderr"
	fi
}

# stderr_has TEXT DESCRIPTION: the last command's stderr contains TEXT.
stderr_has() {
	grep -qF -- "$1" "$WORK/stderr" || { cat "$WORK/stderr" >&2; fail "$2: stderr lacks '$1'"; }
}

# has FILE TEXT DESCRIPTION
has() {
	grep -qF -- "$2" "$1" || fail "$3: '$2' not found in $1"
}

# file_mode FILE: the octal permission bits.
file_mode() {
	stat -c %a "$1"
}

# make_csr KEYFILE CSRFILE SPEC [SAN]: a CSR made by openssl. SPEC is an openssl
# -newkey argument (ec:P-256 is spelled "ec -pkeyopt ec_paramgen_curve:P-256").
make_ec_csr() {
	curve=$1
	out=$2
	san=${3:-}
	if [ -n "$san" ]; then
		openssl req -new -newkey ec -pkeyopt "ec_paramgen_curve:$curve" -nodes \
			-keyout "$out.key" -subj "/CN=test" -addext "subjectAltName=$san" \
			-out "$out" 2>/dev/null
	else
		openssl req -new -newkey ec -pkeyopt "ec_paramgen_curve:$curve" -nodes \
			-keyout "$out.key" -subj "/CN=test" -out "$out" 2>/dev/null
	fi
}

# first_cert IN OUT: the first PEM certificate of a bundle.
first_cert() {
	awk '/BEGIN CERT/{n++} n==1{print} /END CERT/{if(n==1) exit}' "$1" >"$2"
}

# start_daemon: `agentca serve --dir $CA` on a free loopback port, logging to
# $WORK/serve.log; waits until it is ready and sets DAEMON (its pid), PORT and URL.
# stop_daemon: SIGTERM, and it must exit 0. (Tests that need more define their own.)
start_daemon() {
	: >"$WORK/serve.log"
	spawn "$AGENTCA" serve --dir "$CA" --listen 127.0.0.1:0 2>>"$WORK/serve.log"
	DAEMON=$SPAWNED
	for _ in $(seq 100); do
		grep -q '"event":"ca_ready"' "$WORK/serve.log" && break
		sleep 0.1
	done
	grep -q '"event":"ca_ready"' "$WORK/serve.log" || { cat "$WORK/serve.log"; fail "serve never ready"; }
	PORT=$(grep '"event":"listening"' "$WORK/serve.log" | tail -n1 | sed -E 's/.*\(port ([0-9]+)\).*/\1/')
	URL="https://127.0.0.1:$PORT"
}

stop_daemon() {
	kill -TERM "$DAEMON"
	wait "$DAEMON" || fail "serve did not exit 0 on SIGTERM"
}
