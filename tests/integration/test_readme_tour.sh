#!/usr/bin/env bash
# The README's five-minute tour, run as written: the first sh block after "## A five-minute
# tour" is taken from README.md, and its steps 1-5 and 7 (init, ca show, issue, token,
# serve, enroll, audit) run in order with `set -e`, so a tour that no longer works fails
# here. Left out: step 6 (certbot and lego need ports 80/443 and public-looking names;
# test_acme_* run them) and the long-running `agent` line. The only edits: the binary's path,
# the daemon on a free port (the tour's 8443 may be taken) and a wait until it is ready.
. "$(dirname "$0")/lib.sh"

: "${SRCDIR:?SRCDIR must point at the source tree}"
README=$SRCDIR/README.md

# The tour's commands, one logical line each (continuations joined), without step 6 and
# without the agent's command.
awk '
	/^## A five-minute tour/ { intour = 1; next }
	intour && /^```sh$/ && !inblock { inblock = 1; next }
	inblock && /^```$/ { exit }
	!inblock { next }
	/^# [0-9]+[a-z]?\./ { step = $2; sub(/\..*/, "", step) }
	step == "6" { next }
	{
		line = pending $0
		if (line ~ /\\$/) { sub(/\\$/, "", line); pending = line; next }
		pending = ""
		if (line ~ /^\$B agent /) next
		print line
	}
' "$README" >"$WORK/tour.raw"

grep -q '^\$B init ' "$WORK/tour.raw" || fail "no init line found in the README's tour"
grep -q '^\$B serve --dir ca &' "$WORK/tour.raw" || fail "the tour's serve line changed; update this test"
grep -q '^\$B enroll ' "$WORK/tour.raw" || fail "no enroll line found in the README's tour"
grep -q '^\$B audit verify ' "$WORK/tour.raw" || fail "no audit verify line found in the README's tour"

# The tour runs as its own script (so that `set -e` stops it at the first failing command)
# with lib.sh's cleanup, which stops the daemon it starts; it leaves its files in
# $WORK/tour for the checks below.
cat >"$WORK/tour.sh" <<'HEADER'
. "$SRCDIR/tests/integration/lib.sh"
# tour_serve: the tour's `$B serve --dir ca &`, on a free port, waited for.
tour_serve() {
	spawn "$B" serve --dir ca --listen 127.0.0.1:0 2>"$WORK/serve.log"
	for _ in $(seq 100); do
		grep -q '"event":"ca_ready"' "$WORK/serve.log" && break
		sleep 0.1
	done
	grep -q '"event":"ca_ready"' "$WORK/serve.log" || { cat "$WORK/serve.log"; fail "serve never ready"; }
	TOUR_PORT=$(grep '"event":"listening"' "$WORK/serve.log" | tail -n1 | sed -E 's/.*\(port ([0-9]+)\).*/\1/')
}
cd "$TOUR_DIR"
HEADER
sed -e 's|^B=build/agentca$|B=$AGENTCA|' \
	-e 's|^\$B serve --dir ca &.*$|tour_serve|' \
	-e 's|127\.0\.0\.1:8443|127.0.0.1:$TOUR_PORT|g' "$WORK/tour.raw" >>"$WORK/tour.sh"
grep -q '^B=\$AGENTCA$' "$WORK/tour.sh" || fail "the tour no longer sets B=build/agentca; update this test"
grep -q '^tour_serve$' "$WORK/tour.sh" || fail "the tour's serve line was not replaced"

mkdir "$WORK/tour"
TOUR_DIR=$WORK/tour bash "$WORK/tour.sh" >"$WORK/tour.out" 2>"$WORK/tour.err" ||
	{ cat "$WORK/tour.out" "$WORK/tour.err"; fail "the tour stopped at a failing command"; }
cd "$WORK/tour"
pass "the README's tour ran: $(wc -l <"$WORK/tour.raw") commands"

openssl verify -CAfile ca/root.pem -untrusted ca/intermediate.pem gw2/cert.pem >/dev/null ||
	fail "the tour's enrolled certificate does not verify"
[ "$(stat -c %a gw2/key.pem)" = 600 ] || fail "the tour's key.pem is not 0600"
grep -q '"status":"ok"' "$WORK/tour.out" || fail "the tour's /healthz did not answer ok"
grep -q 'signature: verified with the audit key' "$WORK/tour.out" || fail "the tour's audit verify did not check the tree head"
pass "the tour left an enrolled agent (chain verifies, key 0600) and a verified audit export"
