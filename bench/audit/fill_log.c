/*
 * fill_log.c - set-up for bench/audit: grow a CA's issuance log to N entries, quickly.
 *
 *   fill_log --db DIR/agentca.db --entries N [--batch B] [--seed S]
 *
 * Appends realistic entries (kinds issued, renewed, denied and revoked in a fixed mix;
 * SPIFFE subjects, token/admin/parent actors, random serials, SPKI hashes and request ids,
 * DNS and URI SANs, 24 h validity, times a second or so apart) until the log holds N
 * entries, counting those already there (`agentca init` writes the first). Everything goes
 * through store_submit_many, B units per call and per transaction, so each entry's hash
 * chain link and Merkle leaf and subtree hashes are exactly what the daemon would write.
 * Only log entries are written, not certificate rows: an export reads the log alone.
 * The entries are the same for the same seed. Prints one line ("fill: ...") on stdout.
 *
 * This is the benchmark's set-up, not a measurement; bench/audit/run.sh calls it on a CA
 * it made with `agentca init`. The CA must not be in use by another process.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "store/store.h"

#define BATCH_DEFAULT 20000
#define BATCH_MAX 65536

/* Room for one entry's strings; every field is written with snprintf into these. */
struct unit {
	struct store_write w;
	struct log_entry entry;
	const char *sans[2];
	char actor[64];
	char subject[96];
	char serial[33];
	char spki[65];
	char request_id[40];
	char san_dns[96];
	char detail[160];
};

static const char *const teams[] = {"payments", "search", "ingest", "billing",
                                    "identity", "edge",   "ml",     "storage"};
static const char *const services[] = {"api", "worker", "gateway", "cache", "batch", "proxy"};
static const char *const denial_reasons[] = {"csr_bad_signature", "key_too_weak", "token_used",
                                             "subject_not_allowed", "rate_limited"};

/* xorshift64*: fast, and the same sequence for the same seed. */
static uint64_t
next_random(uint64_t *state)
{
	uint64_t x = *state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 2685821657736338717ULL;
}

static void
random_hex(uint64_t *state, char *out, size_t digits)
{
	static const char hex[] = "0123456789abcdef";
	uint64_t r = 0;

	for (size_t i = 0; i < digits; i++) {
		if (i % 16 == 0)
			r = next_random(state);
		out[i] = hex[r & 15];
		r >>= 4;
	}
	out[digits] = '\0';
}

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double
now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Fill u with the entry at time t_ms. */
static void
make_entry(struct unit *u, uint64_t *state, int64_t t_ms)
{
	uint64_t r = next_random(state);
	unsigned pick = (unsigned)(r % 100);
	const char *team = teams[(r >> 8) % (sizeof(teams) / sizeof(teams[0]))];
	const char *svc = services[(r >> 16) % (sizeof(services) / sizeof(services[0]))];
	unsigned instance = (unsigned)((r >> 24) % 500);
	struct log_entry *e = &u->entry;

	memset(&u->w, 0, sizeof(u->w));
	memset(e, 0, sizeof(*e));
	snprintf(u->subject, sizeof(u->subject), "spiffe://bench.internal/%s/%s-%u", team, svc,
	         instance);
	random_hex(state, u->request_id, 32);
	e->time_ms = t_ms;
	e->subject = u->subject;
	e->request_id = u->request_id;
	u->w.entry = e;

	if (pick < 8) {
		/* A refusal: no certificate, a reason and a sentence. */
		const char *reason = denial_reasons[(r >> 40) % (sizeof(denial_reasons) /
		                                                 sizeof(denial_reasons[0]))];

		random_hex(state, u->actor + 6, 32);
		memcpy(u->actor, "token:", 6);
		snprintf(u->detail, sizeof(u->detail), "request for %s refused: %s", u->subject,
		         reason);
		e->kind = "denied";
		e->actor = u->actor;
		e->reason = reason;
		e->detail = u->detail;
		return;
	}
	random_hex(state, u->serial, 32);
	e->serial = u->serial;
	if (pick < 10) {
		/* A revocation by an admin. */
		e->kind = "revoked";
		e->actor = "admin:cli";
		e->reason = "keyCompromise";
		return;
	}
	/* An issuance (70%) or a renewal (20%), 24 h long, with two SANs. */
	if (pick < 80) {
		e->kind = "issued";
		if ((r >> 48) % 4 == 0) {
			snprintf(u->actor, sizeof(u->actor),
			         "parent:spiffe://bench.internal/%s/node-%u", team, instance % 20);
			e->parent = u->actor + 7;
		} else {
			random_hex(state, u->actor + 6, 32);
			memcpy(u->actor, "token:", 6);
		}
	} else {
		e->kind = "renewed";
		snprintf(u->actor, sizeof(u->actor), "%s", u->subject);
	}
	snprintf(u->san_dns, sizeof(u->san_dns), "%s-%u.%s.bench.internal", svc, instance, team);
	random_hex(state, u->spki, 64);
	u->sans[0] = u->subject;
	u->sans[1] = u->san_dns;
	e->actor = u->actor;
	e->sans = u->sans;
	e->sans_count = 2;
	e->not_before = t_ms / 1000 - 60;
	e->not_after = e->not_before + 24 * 3600;
	e->spki_sha256 = u->spki;
}

static int
usage(void)
{
	fprintf(stderr, "usage: fill_log --db DIR/agentca.db --entries N [--batch B] [--seed S]\n");
	return 2;
}

int
main(int argc, char **argv)
{
	struct store_options sopts;
	struct store *st = NULL;
	struct unit *units = NULL;
	struct store_write **ws = NULL;
	const char *db = NULL;
	uint64_t target = 0, head = 0, added = 0, state = 0x9e3779b97f4a7c15ULL;
	char head_hash[LOG_HASH_HEX_LEN + 1];
	size_t batch = BATCH_DEFAULT;
	struct ac_err err;
	int64_t t_ms;
	double t0;
	int rc = 1;

	for (int i = 1; i < argc; i++) {
		if (i + 1 >= argc)
			return usage();
		if (strcmp(argv[i], "--db") == 0)
			db = argv[++i];
		else if (strcmp(argv[i], "--entries") == 0)
			target = strtoull(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--batch") == 0)
			batch = (size_t)strtoull(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--seed") == 0)
			state ^= strtoull(argv[++i], NULL, 10) * 0x2545f4914f6cdd1dULL;
		else
			return usage();
	}
	if (db == NULL || target == 0 || batch < 1 || batch > BATCH_MAX)
		return usage();
	if (state == 0)
		state = 1;

	ac_log_set_level(AC_LOG_ERROR);
	ac_err_clear(&err);
	store_options_defaults(&sopts);
	sopts.path = db;
	/* One transaction per store_submit_many call: the set-up is not about fsyncs. */
	sopts.group_commit_max = (int64_t)batch;
	if ((st = store_open(&sopts, &err)) == NULL) {
		fprintf(stderr, "fill_log: %s\n", err.msg);
		goto out;
	}
	if (store_log_head(st, &head, head_hash, &err) != 0) {
		fprintf(stderr, "fill_log: %s\n", err.msg);
		goto out;
	}
	if ((units = calloc(batch, sizeof(*units))) == NULL ||
	    (ws = calloc(batch, sizeof(*ws))) == NULL) {
		fprintf(stderr, "fill_log: out of memory for %zu units\n", batch);
		goto out;
	}

	t0 = now_seconds();
	t_ms = now_ms();
	while (head + added < target) {
		uint64_t left = target - head - added;
		size_t n = left < batch ? (size_t)left : batch;

		for (size_t i = 0; i < n; i++) {
			/* 1 ms to 2 s apart: a busy CA, about a million entries in 12 days. */
			t_ms += 1 + (int64_t)(next_random(&state) % 2000);
			make_entry(&units[i], &state, t_ms);
			ws[i] = &units[i].w;
		}
		if (store_submit_many(st, ws, n, &err) != 0) {
			fprintf(stderr, "fill_log: committing entries %" PRIu64 "..: %s\n",
			        head + added + 1, err.msg);
			goto out;
		}
		added += n;
	}
	if (store_log_head(st, &head, head_hash, &err) != 0) {
		fprintf(stderr, "fill_log: %s\n", err.msg);
		goto out;
	}
	if (head != target) {
		fprintf(stderr, "fill_log: the log holds %" PRIu64 " entries, not %" PRIu64 "\n",
		        head, target);
		goto out;
	}
	printf("fill: added=%" PRIu64 " log_size=%" PRIu64 " seconds=%.2f\n", added, head,
	       now_seconds() - t0);
	rc = 0;
out:
	store_close(st);
	free(ws);
	free(units);
	return rc;
}
