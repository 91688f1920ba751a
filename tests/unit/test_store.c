/*
 * test_store.c - the store against a real SQLite file: what is committed can be read back,
 * the log chain verifies by recomputation, a failed unit or transaction leaves nothing
 * behind, the group committer shares transactions between concurrent callers, and the file
 * is private and versioned.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <cmocka.h>
#include <jansson.h>
#include <pthread.h>
#include <sqlite3.h>

#include "store/store.h"
#include "testutil.h"

static const unsigned char der_bytes[] = {0x30, 0x82, 0x00, 0x04, 0x00, 0x01, 0xff, 0x7f};

struct fixture {
	char *dir;
	char path[512];
	struct store *st;
};

/* Fault hook: fails the named point while armed, and counts what it failed. */
struct fault_plan {
	const char *point;
	int fired;
};

static int
fault_hook(void *arg, const char *point)
{
	struct fault_plan *plan = arg;

	if (plan->point != NULL && strcmp(plan->point, point) == 0) {
		plan->fired++;
		return 1;
	}
	return 0;
}

static struct store *
open_store(const char *path, struct fault_plan *plan)
{
	struct store_options opts;
	struct ac_err err;
	struct store *st;

	store_options_defaults(&opts);
	opts.path = path;
	if (plan != NULL) {
		opts.fault = fault_hook;
		opts.fault_arg = plan;
	}
	ac_err_clear(&err);
	st = store_open(&opts, &err);
	if (st == NULL)
		fail_msg("store_open %s: %s", path, err.msg);
	return st;
}

static int
setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));

	fx->dir = test_tmpdir("store");
	snprintf(fx->path, sizeof(fx->path), "%s/store.db", fx->dir);
	*state = fx;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *fx = *state;

	store_close(fx->st);
	test_rmdir(fx->dir);
	free(fx);
	return 0;
}

/* A unit with its own storage, so tests can build many. */
struct unit {
	char serial[32], subject[96], jti[32];
	struct cert_record cert;
	struct log_entry entry;
	struct store_write w;
};

static void
unit_init(struct unit *u, const char *kind, const char *subject, const char *serial,
          const char *jti)
{
	memset(u, 0, sizeof(*u));
	snprintf(u->subject, sizeof(u->subject), "%s", subject);
	u->entry.kind = kind;
	u->entry.subject = u->subject;
	u->entry.actor = "admin:test";
	u->w.entry = &u->entry;
	if (serial != NULL) {
		snprintf(u->serial, sizeof(u->serial), "%s", serial);
		u->cert.serial = u->serial;
		u->cert.subject = u->subject;
		u->cert.spki_sha256 = "5a5a";
		u->cert.issuer_fingerprint = "a5a5";
		u->cert.not_before = 1700000000;
		u->cert.not_after = 1700086400;
		u->cert.der = der_bytes;
		u->cert.der_len = sizeof(der_bytes);
		u->entry.serial = u->serial;
		u->entry.not_before = u->cert.not_before;
		u->entry.not_after = u->cert.not_after;
		u->w.cert = &u->cert;
	}
	if (jti != NULL) {
		snprintf(u->jti, sizeof(u->jti), "%s", jti);
		u->w.token_jti = u->jti;
		u->w.token_expires = 1700000600;
	}
}

static void
submit_ok(struct store *st, struct unit *u)
{
	struct ac_err err;

	ac_err_clear(&err);
	if (store_submit(st, &u->w, &err) != 0)
		fail_msg("store_submit: %s", err.msg);
	assert_int_equal(u->w.result.code, AC_OK);
}

/* Walk the whole log and check every link: seq 1..N without gaps, "seq" and "prev" inside
 * the canonical bytes, the stored hash equal to SHA-256 of those bytes, and the export
 * round trip. */
struct chain_walk {
	uint64_t count;
	char last[LOG_HASH_HEX_LEN + 1];
};

static int
check_row(void *arg, const struct log_row *row)
{
	struct chain_walk *cw = arg;
	char hash[LOG_HASH_HEX_LEN + 1], *line, *rebuilt;
	size_t line_len, rebuilt_len;
	struct ac_err err;
	json_t *obj, *parsed;

	assert_int_equal(row->seq, cw->count + 1);
	assert_int_equal(strlen(row->canonical), row->canonical_len);
	obj = json_loadb(row->canonical, row->canonical_len, 0, NULL);
	assert_non_null(obj);
	assert_int_equal(json_integer_value(json_object_get(obj, "seq")), row->seq);
	assert_int_equal(json_integer_value(json_object_get(obj, "time")), row->time_ms);
	assert_string_equal(json_string_value(json_object_get(obj, "prev")), cw->last);
	log_chain_hash(row->canonical, row->canonical_len, hash);
	assert_string_equal(hash, row->hash);

	ac_err_clear(&err);
	assert_int_equal(log_chain_export_line(row->canonical, row->canonical_len, row->hash, &line,
	                                       &line_len, &err),
	                 0);
	parsed = json_loadb(line, line_len, 0, NULL);
	assert_non_null(parsed);
	assert_int_equal(log_chain_canonical_from_export(parsed, &rebuilt, &rebuilt_len, &err), 0);
	assert_int_equal(rebuilt_len, row->canonical_len);
	assert_memory_equal(rebuilt, row->canonical, rebuilt_len);

	free(rebuilt);
	json_decref(parsed);
	free(line);
	json_decref(obj);
	memcpy(cw->last, row->hash, sizeof(cw->last));
	cw->count++;
	return 0;
}

/* Verify the chain and that the head is its last link; returns the number of entries. */
static uint64_t
verify_chain(struct store *st)
{
	char head[LOG_HASH_HEX_LEN + 1];
	struct chain_walk cw;
	struct ac_err err;
	uint64_t seq;

	memset(&cw, 0, sizeof(cw));
	memcpy(cw.last, log_chain_genesis, sizeof(cw.last));
	ac_err_clear(&err);
	assert_int_equal(store_log_scan(st, NULL, check_row, &cw, &err), 0);
	assert_int_equal(store_log_head(st, &seq, head, &err), 0);
	assert_int_equal(seq, cw.count);
	assert_string_equal(head, cw.last);
	return cw.count;
}

static int64_t
cert_count(struct store *st)
{
	struct ac_err err;
	int64_t n = -1;

	ac_err_clear(&err);
	assert_int_equal(store_cert_count(st, &n, &err), 0);
	return n;
}

static int
cert_exists(struct store *st, const char *serial)
{
	struct cert_row row;
	struct ac_err err;
	int rc;

	ac_err_clear(&err);
	rc = store_cert_get(st, serial, &row, &err);
	if (rc == 0) {
		store_cert_row_free(&row);
		return 1;
	}
	assert_int_equal(err.code, AC_ERR_NOTFOUND);
	assert_string_equal(err.reason, "cert_not_found");
	return 0;
}

static void
test_commit_and_read_back(void **state)
{
	struct fixture *fx = *state;
	const char *sans[] = {"spiffe://corp.internal/gw-1", "gw-1.corp.internal"};
	char canon_hash[LOG_HASH_HEX_LEN + 1], head[LOG_HASH_HEX_LEN + 1], *canon;
	struct cert_row row;
	struct ac_err err;
	struct unit u;
	size_t canon_len;
	uint64_t seq;

	fx->st = open_store(fx->path, NULL);
	ac_err_clear(&err);
	assert_int_equal(store_log_head(fx->st, &seq, head, &err), 0);
	assert_int_equal(seq, 0);
	assert_string_equal(head, log_chain_genesis);

	unit_init(&u, "issued", "spiffe://corp.internal/gw-1", "0A1B2c", "jti-1");
	u.cert.parent = "spiffe://corp.internal";
	u.entry.sans = sans;
	u.entry.sans_count = 2;
	u.entry.time_ms = 1700000000123;
	submit_ok(fx->st, &u);
	assert_int_equal(u.w.seq, 1);

	/* the hash handed back is the hash of the entry as documented */
	assert_int_equal(log_chain_encode(&u.entry, 1, u.entry.time_ms, log_chain_genesis, &canon,
	                                  &canon_len, &err),
	                 0);
	log_chain_hash(canon, canon_len, canon_hash);
	free(canon);
	assert_string_equal(u.w.hash, canon_hash);
	assert_int_equal(store_log_head(fx->st, &seq, head, &err), 0);
	assert_int_equal(seq, 1);
	assert_string_equal(head, canon_hash);

	/* the certificate, by serial in any case */
	assert_int_equal(store_cert_get(fx->st, "0a1B2C", &row, &err), 0);
	assert_string_equal(row.serial, "0a1b2c");
	assert_string_equal(row.subject, "spiffe://corp.internal/gw-1");
	assert_string_equal(row.parent, "spiffe://corp.internal");
	assert_string_equal(row.spki_sha256, "5a5a");
	assert_string_equal(row.issuer_fingerprint, "a5a5");
	assert_int_equal(row.not_before, 1700000000);
	assert_int_equal(row.not_after, 1700086400);
	assert_int_equal(row.revoked_at, 0);
	assert_null(row.revoke_reason);
	assert_int_equal(row.log_seq, 1);
	assert_int_equal(row.der_len, sizeof(der_bytes));
	assert_memory_equal(row.der, der_bytes, sizeof(der_bytes));
	store_cert_row_free(&row);
	assert_null(row.serial);

	assert_int_equal(cert_count(fx->st), 1);
	assert_false(cert_exists(fx->st, "0a1b2d"));
	assert_int_equal(store_cert_get(fx->st, "", &row, &err), -1);
	assert_int_equal(err.code, AC_ERR_INVALID);
	assert_int_equal(verify_chain(fx->st), 1);
}

static void
test_entry_time_stamped_when_zero(void **state)
{
	struct fixture *fx = *state;
	struct timespec ts;
	struct chain_walk cw;
	struct ac_err err;
	int64_t before, after;
	struct unit u;

	fx->st = open_store(fx->path, NULL);
	clock_gettime(CLOCK_REALTIME, &ts);
	before = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	unit_init(&u, "token_created", "spiffe://corp.internal/a", NULL, NULL);
	submit_ok(fx->st, &u);
	clock_gettime(CLOCK_REALTIME, &ts);
	after = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;

	/* the row's time is inside the window, and is the "time" that was hashed */
	struct log_filter f = {.since_ms = before, .until_ms = after + 1};
	memset(&cw, 0, sizeof(cw));
	memcpy(cw.last, log_chain_genesis, sizeof(cw.last));
	ac_err_clear(&err);
	assert_int_equal(store_log_scan(fx->st, &f, check_row, &cw, &err), 0);
	assert_int_equal(cw.count, 1);
}

static void
test_chain_verifies(void **state)
{
	static const char *const kinds[] = {"issued", "renewed", "denied", "revoked"};
	struct fixture *fx = *state;
	char subject[64], serial[16];
	struct unit u;
	int i;

	fx->st = open_store(fx->path, NULL);
	for (i = 0; i < 50; i++) {
		snprintf(subject, sizeof(subject), "spiffe://corp.internal/n%d", i);
		snprintf(serial, sizeof(serial), "%04x", i + 1);
		unit_init(&u, kinds[i % 4], subject, i % 2 ? serial : NULL, NULL);
		submit_ok(fx->st, &u);
		assert_int_equal(u.w.seq, (uint64_t)i + 1);
	}
	assert_int_equal(verify_chain(fx->st), 50);
	assert_int_equal(cert_count(fx->st), 25);
}

static void
test_reopen_continues_chain(void **state)
{
	struct fixture *fx = *state;
	char head[LOG_HASH_HEX_LEN + 1], last[LOG_HASH_HEX_LEN + 1];
	struct ac_err err;
	struct unit u;
	uint64_t seq;
	int i;

	fx->st = open_store(fx->path, NULL);
	for (i = 0; i < 3; i++) {
		unit_init(&u, "issued", "spiffe://corp.internal/r", NULL, NULL);
		submit_ok(fx->st, &u);
	}
	memcpy(last, u.w.hash, sizeof(last));
	store_close(fx->st);

	fx->st = open_store(fx->path, NULL);
	ac_err_clear(&err);
	assert_int_equal(store_log_head(fx->st, &seq, head, &err), 0);
	assert_int_equal(seq, 3);
	assert_string_equal(head, last);
	unit_init(&u, "renewed", "spiffe://corp.internal/r", "abcd", "after-reopen");
	submit_ok(fx->st, &u);
	assert_int_equal(u.w.seq, 4);
	assert_int_equal(verify_chain(fx->st), 4);
	store_close(fx->st);

	/* and a used token stays used across a restart */
	fx->st = open_store(fx->path, NULL);
	unit_init(&u, "issued", "spiffe://corp.internal/r", NULL, "after-reopen");
	ac_err_clear(&err);
	assert_int_equal(store_submit(fx->st, &u.w, &err), -1);
	assert_int_equal(err.code, AC_ERR_CONFLICT);
	assert_string_equal(err.reason, "token_used");
	assert_int_equal(verify_chain(fx->st), 4);
}

/* One unit of a batch fails; the others commit, and the failed one leaves nothing. */
static void
test_failed_unit_fails_alone(void **state)
{
	struct fixture *fx = *state;
	struct unit first, u[6];
	struct store_write *w[6];
	struct store_stats before, after;
	struct ac_err err;
	int i;

	fx->st = open_store(fx->path, NULL);
	unit_init(&first, "issued", "spiffe://corp.internal/a", "01", "t1");
	submit_ok(fx->st, &first);

	unit_init(&u[0], "issued", "spiffe://corp.internal/b", "02", "t2");
	unit_init(&u[1], "issued", "spiffe://corp.internal/c", "03", "t1"); /* used before */
	unit_init(&u[2], "issued", "spiffe://corp.internal/d", "04", "t3");
	unit_init(&u[3], "issued", "spiffe://corp.internal/e", "05", "t3"); /* used in batch */
	unit_init(&u[4], "issued", "spiffe://corp.internal/f", "01", "t4"); /* serial exists */
	unit_init(&u[5], "issued", "spiffe://corp.internal/g", "06", "t5");
	for (i = 0; i < 6; i++)
		w[i] = &u[i].w;
	store_stats(fx->st, &before);
	ac_err_clear(&err);
	assert_int_equal(store_submit_many(fx->st, w, 6, &err), -1);
	assert_int_equal(err.code, AC_ERR_CONFLICT);
	store_stats(fx->st, &after);
	assert_int_equal(after.transactions - before.transactions, 1);
	assert_int_equal(after.units_failed - before.units_failed, 3);

	assert_int_equal(u[0].w.result.code, AC_OK);
	assert_int_equal(u[0].w.seq, 2);
	assert_int_equal(u[1].w.result.code, AC_ERR_CONFLICT);
	assert_string_equal(u[1].w.result.reason, "token_used");
	assert_int_equal(u[1].w.seq, 0);
	assert_string_equal(u[1].w.hash, "");
	assert_int_equal(u[2].w.result.code, AC_OK);
	assert_int_equal(u[2].w.seq, 3);
	assert_int_equal(u[3].w.result.code, AC_ERR_CONFLICT);
	assert_string_equal(u[3].w.result.reason, "token_used");
	assert_int_equal(u[4].w.result.code, AC_ERR_CONFLICT);
	assert_string_equal(u[4].w.result.reason, "serial_exists");
	assert_int_equal(u[5].w.result.code, AC_OK);
	assert_int_equal(u[5].w.seq, 4);

	/* the failed units' certificates were rolled back with their savepoints */
	assert_true(cert_exists(fx->st, "02"));
	assert_false(cert_exists(fx->st, "03"));
	assert_true(cert_exists(fx->st, "04"));
	assert_false(cert_exists(fx->st, "05"));
	assert_true(cert_exists(fx->st, "06"));
	assert_int_equal(cert_count(fx->st), 4);
	/* t4's unit failed on its serial, so t4 was not spent */
	unit_init(&u[0], "issued", "spiffe://corp.internal/f", "07", "t4");
	submit_ok(fx->st, &u[0]);
	assert_int_equal(u[0].w.seq, 5);
	assert_int_equal(verify_chain(fx->st), 5);
}

static void
test_invalid_units_refused(void **state)
{
	struct fixture *fx = *state;
	struct store_write nolog;
	struct ac_err err;
	struct unit u;

	fx->st = open_store(fx->path, NULL);
	memset(&nolog, 0, sizeof(nolog));
	ac_err_clear(&err);
	assert_int_equal(store_submit(fx->st, &nolog, &err), -1);
	assert_int_equal(err.code, AC_ERR_INVALID);

	unit_init(&u, "issued", "spiffe://corp.internal/x", "not-hex", NULL);
	ac_err_clear(&err);
	assert_int_equal(store_submit(fx->st, &u.w, &err), -1);
	assert_int_equal(err.code, AC_ERR_INVALID);
	assert_string_equal(err.reason, "cert_invalid");

	unit_init(&u, "issued", "spiffe://corp.internal/x", "0a", "");
	ac_err_clear(&err);
	assert_int_equal(store_submit(fx->st, &u.w, &err), -1);
	assert_int_equal(err.code, AC_ERR_INVALID);

	assert_int_equal(cert_count(fx->st), 0);
	assert_int_equal(verify_chain(fx->st), 0);
}

/* A hostile name in a denied request is logged, and the chain still verifies. */
static void
test_hostile_entry_logged(void **state)
{
	struct fixture *fx = *state;
	const char *sans[] = {"\xff\xfe", "a\"b\\c\x01"};
	struct unit u;

	fx->st = open_store(fx->path, NULL);
	unit_init(&u, "denied", "spiffe://corp.internal/\xc0\xaf\"},\"kind\":\"issued", NULL, NULL);
	u.entry.sans = sans;
	u.entry.sans_count = 2;
	u.entry.reason = "name_invalid";
	u.entry.detail = "bad \xed\xa0\x80 surrogate\n";
	submit_ok(fx->st, &u);
	assert_int_equal(verify_chain(fx->st), 1);
}

/* A fault at each point of a commit: every unit of the batch fails as "unavailable", nothing
 * of it remains, the head does not move, and the next commit continues the chain. */
static void
test_fault_at_each_point(void **state)
{
	static const char *const points[] = {"begin", "cert", "token", "log", "commit"};
	struct fixture *fx = *state;
	char head[LOG_HASH_HEX_LEN + 1], head_after[LOG_HASH_HEX_LEN + 1];
	struct fault_plan plan = {0};
	struct store_write *w[2];
	struct unit u[2];
	struct ac_err err;
	uint64_t seq, seq_after, expect_seq = 2;
	char serial[16], jti[16];
	size_t p;
	int i;

	fx->st = open_store(fx->path, &plan);
	for (i = 0; i < 2; i++) {
		unit_init(&u[0], "issued", "spiffe://corp.internal/pre", i ? "f1" : "f0",
		          i ? "pre1" : "pre0");
		submit_ok(fx->st, &u[0]);
	}

	for (p = 0; p < sizeof(points) / sizeof(points[0]); p++) {
		ac_err_clear(&err);
		assert_int_equal(store_log_head(fx->st, &seq, head, &err), 0);
		assert_int_equal(seq, expect_seq);
		for (i = 0; i < 2; i++) {
			snprintf(serial, sizeof(serial), "%02zx%02x", p + 1, i);
			snprintf(jti, sizeof(jti), "jti-%zu-%d", p, i);
			unit_init(&u[i], "issued", "spiffe://corp.internal/f", serial, jti);
			w[i] = &u[i].w;
		}

		plan.point = points[p];
		plan.fired = 0;
		assert_int_equal(store_submit_many(fx->st, w, 2, &err), -1);
		assert_int_equal(plan.fired, 1);
		assert_int_equal(err.code, AC_ERR_UNAVAILABLE);
		assert_string_equal(err.reason, "store_unavailable");
		assert_non_null(strstr(err.msg, "database or disk is full"));
		assert_non_null(strstr(err.msg, fx->path));
		for (i = 0; i < 2; i++) {
			assert_int_equal(u[i].w.result.code, AC_ERR_UNAVAILABLE);
			assert_int_equal(u[i].w.seq, 0);
			assert_false(cert_exists(fx->st, u[i].serial));
		}
		assert_int_equal(store_log_head(fx->st, &seq_after, head_after, &err), 0);
		assert_int_equal(seq_after, seq);
		assert_string_equal(head_after, head);
		assert_int_equal(verify_chain(fx->st), expect_seq);
		assert_int_equal(cert_count(fx->st), (int64_t)expect_seq);

		/* Disarmed, the same units (same serials, same tokens) go through. */
		plan.point = NULL;
		ac_err_clear(&err);
		assert_int_equal(store_submit_many(fx->st, w, 2, &err), 0);
		assert_int_equal(u[0].w.seq, expect_seq + 1);
		assert_int_equal(u[1].w.seq, expect_seq + 2);
		expect_seq += 2;
		assert_int_equal(verify_chain(fx->st), expect_seq);
	}
	store_close(fx->st);
	fx->st = open_store(fx->path, NULL);
	assert_int_equal(verify_chain(fx->st), expect_seq);
	assert_int_equal(cert_count(fx->st), (int64_t)expect_seq);
}

#define THREADS 8
#define PER_THREAD 200

struct worker {
	struct store *st;
	int id;
	uint64_t seqs[PER_THREAD];
	int failures;
};

static void *
worker_main(void *arg)
{
	struct worker *wk = arg;
	struct ac_err err;
	char subject[64], serial[16], jti[32];
	struct unit u;
	int i;

	for (i = 0; i < PER_THREAD; i++) {
		snprintf(subject, sizeof(subject), "spiffe://corp.internal/t%d/%d", wk->id, i);
		snprintf(serial, sizeof(serial), "%02x%04x", wk->id, i);
		snprintf(jti, sizeof(jti), "w%d-%d", wk->id, i);
		unit_init(&u, "issued", subject, i % 2 ? serial : NULL, jti);
		ac_err_clear(&err);
		if (store_submit(wk->st, &u.w, &err) != 0)
			wk->failures++;
		wk->seqs[i] = u.w.seq;
	}
	return NULL;
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void
test_concurrent_group_commit(void **state)
{
	struct fixture *fx = *state;
	static struct worker workers[THREADS];
	static uint64_t all[THREADS * PER_THREAD];
	pthread_t threads[THREADS];
	struct store_stats stats;
	size_t i, j;

	fx->st = open_store(fx->path, NULL);
	for (i = 0; i < THREADS; i++) {
		memset(&workers[i], 0, sizeof(workers[i]));
		workers[i].st = fx->st;
		workers[i].id = (int)i;
		assert_int_equal(pthread_create(&threads[i], NULL, worker_main, &workers[i]), 0);
	}
	for (i = 0; i < THREADS; i++)
		pthread_join(threads[i], NULL);

	for (i = 0; i < THREADS; i++) {
		assert_int_equal(workers[i].failures, 0);
		for (j = 0; j < PER_THREAD; j++) {
			/* each caller sees its own commits in order */
			if (j > 0)
				assert_true(workers[i].seqs[j] > workers[i].seqs[j - 1]);
			all[i * PER_THREAD + j] = workers[i].seqs[j];
		}
	}
	qsort(all, THREADS * PER_THREAD, sizeof(all[0]), cmp_u64);
	for (i = 0; i < THREADS * PER_THREAD; i++)
		assert_int_equal(all[i], i + 1);

	store_stats(fx->st, &stats);
	assert_int_equal(stats.units, THREADS * PER_THREAD);
	assert_int_equal(stats.units_failed, 0);
	assert_int_equal(stats.transactions_failed, 0);
	assert_true(stats.transactions < stats.units);
	assert_true(stats.largest_batch > 1);
	print_message("%llu units in %llu transactions (largest %llu)\n",
	              (unsigned long long)stats.units, (unsigned long long)stats.transactions,
	              (unsigned long long)stats.largest_batch);

	assert_int_equal(verify_chain(fx->st), THREADS * PER_THREAD);
	assert_int_equal(cert_count(fx->st), THREADS * PER_THREAD / 2);
}

/* A batch larger than group_commit_max is split, and still all commits in order. */
static void
test_large_batch_split(void **state)
{
	struct fixture *fx = *state;
	struct store_options opts;
	struct store_stats stats;
	struct store_write *w[10];
	struct unit u[10];
	struct ac_err err;
	int i;

	store_options_defaults(&opts);
	opts.path = fx->path;
	opts.group_commit_max = 4;
	ac_err_clear(&err);
	fx->st = store_open(&opts, &err);
	assert_non_null(fx->st);
	for (i = 0; i < 10; i++) {
		unit_init(&u[i], "issued", "spiffe://corp.internal/s", NULL, NULL);
		w[i] = &u[i].w;
	}
	assert_int_equal(store_submit_many(fx->st, w, 10, &err), 0);
	for (i = 0; i < 10; i++)
		assert_int_equal(u[i].w.seq, (uint64_t)i + 1);
	store_stats(fx->st, &stats);
	assert_int_equal(stats.transactions, 3);
	assert_int_equal(stats.largest_batch, 4);
	assert_int_equal(store_submit_many(fx->st, w, 0, &err), 0);
	assert_int_equal(verify_chain(fx->st), 10);
}

static int64_t
sqlite_int(const char *path, const char *sql)
{
	sqlite3_stmt *stmt;
	sqlite3 *db;
	int64_t v;

	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
	v = sqlite3_column_int64(stmt, 0);
	sqlite3_finalize(stmt);
	sqlite3_close(db);
	return v;
}

static void
test_file_private_wal_and_versioned(void **state)
{
	struct fixture *fx = *state;
	char wal[600];
	struct stat sb;
	struct unit u;
	mode_t old;

	old = umask(0); /* the 0600 must not depend on the caller's umask */
	fx->st = open_store(fx->path, NULL);
	umask(old);
	unit_init(&u, "issued", "spiffe://corp.internal/m", "aa", NULL);
	submit_ok(fx->st, &u);

	assert_int_equal(stat(fx->path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	snprintf(wal, sizeof(wal), "%s-wal", fx->path);
	assert_int_equal(stat(wal, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);

	assert_true(sqlite_int(fx->path, "PRAGMA user_version") >= 1);
	store_close(fx->st);
	fx->st = NULL;
	/* WAL is a property of the file: a fresh connection reports it */
	{
		sqlite3_stmt *stmt;
		sqlite3 *db;

		assert_int_equal(sqlite3_open(fx->path, &db), SQLITE_OK);
		assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &stmt, NULL),
		                 SQLITE_OK);
		assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
		assert_string_equal((const char *)sqlite3_column_text(stmt, 0), "wal");
		sqlite3_finalize(stmt);
		sqlite3_close(db);
	}

	/* a pre-existing file readable by others is tightened on open */
	assert_int_equal(chmod(fx->path, 0644), 0);
	fx->st = open_store(fx->path, NULL);
	assert_int_equal(stat(fx->path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
}

static void
test_log_is_append_only(void **state)
{
	struct fixture *fx = *state;
	sqlite3 *db;
	struct unit u;

	fx->st = open_store(fx->path, NULL);
	unit_init(&u, "issued", "spiffe://corp.internal/m", NULL, NULL);
	submit_ok(fx->st, &u);
	assert_int_equal(sqlite3_open(fx->path, &db), SQLITE_OK);
	assert_int_not_equal(
	    sqlite3_exec(db, "UPDATE issuance_log SET kind = 'x'", NULL, NULL, NULL), SQLITE_OK);
	assert_int_not_equal(sqlite3_exec(db, "DELETE FROM issuance_log", NULL, NULL, NULL),
	                     SQLITE_OK);
	sqlite3_close(db);
	assert_int_equal(verify_chain(fx->st), 1);
}

static void
test_newer_schema_refused(void **state)
{
	struct fixture *fx = *state;
	struct store_options opts;
	struct ac_err err;
	sqlite3 *db;

	fx->st = open_store(fx->path, NULL);
	store_close(fx->st);
	fx->st = NULL;
	assert_int_equal(sqlite3_open(fx->path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);

	store_options_defaults(&opts);
	opts.path = fx->path;
	ac_err_clear(&err);
	assert_null(store_open(&opts, &err));
	assert_int_equal(err.code, AC_ERR_STORE);
	assert_string_equal(err.reason, "store_schema_newer");
	assert_non_null(strstr(err.msg, "99"));
	assert_non_null(strstr(err.msg, fx->path));
	/* and it was left alone */
	assert_int_equal(sqlite_int(fx->path, "PRAGMA user_version"), 99);
}

static void
test_open_errors(void **state)
{
	struct fixture *fx = *state;
	struct store_options opts;
	struct ac_err err;
	char path[600];
	FILE *f;

	store_options_defaults(&opts);
	ac_err_clear(&err);
	assert_null(store_open(&opts, &err));
	assert_int_equal(err.code, AC_ERR_INVALID);

	opts.path = "postgres://db.corp.internal/agentca";
	ac_err_clear(&err);
	assert_null(store_open(&opts, &err));
	assert_string_equal(err.reason, "store_backend_unsupported");

	snprintf(path, sizeof(path), "%s/missing/store.db", fx->dir);
	opts.path = path;
	ac_err_clear(&err);
	assert_null(store_open(&opts, &err));
	assert_int_equal(err.code, AC_ERR_IO);
	assert_non_null(strstr(err.msg, path));

	snprintf(path, sizeof(path), "%s/garbage.db", fx->dir);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("this is not a database, not even close; it is a text file of some length\n", f);
	fclose(f);
	ac_err_clear(&err);
	assert_null(store_open(&opts, &err));
	assert_int_equal(err.code, AC_ERR_STORE);
	assert_non_null(strstr(err.msg, "not a database"));

	store_options_defaults(&opts);
	opts.path = fx->path;
	opts.group_commit_max = 0;
	ac_err_clear(&err);
	assert_null(store_open(&opts, &err));
	assert_int_equal(err.code, AC_ERR_INVALID);
}

/* The scan visitor for the filter test: collects seqs. */
struct seq_list {
	uint64_t seq[64];
	size_t n;
	size_t stop_after; /* 0: never */
};

static int
collect(void *arg, const struct log_row *row)
{
	struct seq_list *l = arg;

	assert_true(l->n < 64);
	l->seq[l->n++] = row->seq;
	return l->stop_after != 0 && l->n >= l->stop_after;
}

static void
test_scan_filters(void **state)
{
	/* the rows: kind, subject, time */
	static const struct {
		const char *kind, *subject;
		int64_t time_ms;
	} rows[] = {
	    {"issued", "spiffe://corp.internal/gw-1", 1000},
	    {"issued", "spiffe://corp.internal/gw-10", 2000},
	    {"denied", "spiffe://corp.internal/gw-1/child", 3000},
	    {"renewed", "spiffe://corp.internal/gw-1", 4000},
	    {"revoked", "spiffe://corp.internal/gw-2", 5000},
	    {"issued", "spiffe://other/gw-1", 6000},
	    {"token_created", NULL, 7000},
	    {"issued", "spiffe://corp.internal/gw-1\xff", 8000},
	};
	static const struct log_filter filters[] = {
	    {0},
	    {.from_seq = 4},
	    {.since_ms = 3000},
	    {.until_ms = 3000},
	    {.since_ms = 2000, .until_ms = 5000},
	    {.kind = "issued"},
	    {.kind = "nothing"},
	    {.subject_prefix = "spiffe://corp.internal/gw-1"},
	    {.subject_prefix = "spiffe://corp.internal/gw-1/"},
	    {.subject_prefix = "spiffe://corp.internal/gw-1\xff"},
	    {.subject_prefix = ""},
	    {.kind = "issued", .subject_prefix = "spiffe://corp.internal/", .from_seq = 2},
	    {.from_seq = 100},
	};
	struct fixture *fx = *state;
	struct seq_list got;
	struct ac_err err;
	struct unit u;
	size_t i, f, n;

	fx->st = open_store(fx->path, NULL);
	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		unit_init(&u, rows[i].kind, "", NULL, NULL);
		u.entry.subject = rows[i].subject;
		u.entry.time_ms = rows[i].time_ms;
		submit_ok(fx->st, &u);
	}

	for (f = 0; f < sizeof(filters) / sizeof(filters[0]); f++) {
		const struct log_filter *flt = &filters[f];
		uint64_t want[64];

		/* the expected rows, by brute force */
		n = 0;
		for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
			const char *p = flt->subject_prefix;

			if (flt->from_seq != 0 && i + 1 < flt->from_seq)
				continue;
			if (flt->since_ms != 0 && rows[i].time_ms < flt->since_ms)
				continue;
			if (flt->until_ms != 0 && rows[i].time_ms >= flt->until_ms)
				continue;
			if (flt->kind != NULL && strcmp(flt->kind, rows[i].kind) != 0)
				continue;
			if (p != NULL && *p != '\0' &&
			    (rows[i].subject == NULL ||
			     strncmp(rows[i].subject, p, strlen(p)) != 0))
				continue;
			want[n++] = i + 1;
		}
		memset(&got, 0, sizeof(got));
		ac_err_clear(&err);
		assert_int_equal(store_log_scan(fx->st, flt, collect, &got, &err), 0);
		if (got.n != n)
			fail_msg("filter %zu: %zu rows, want %zu", f, got.n, n);
		for (i = 0; i < n; i++)
			assert_int_equal(got.seq[i], want[i]);
	}

	/* a few filters whose answers are known by hand, so the brute force is checked too */
	memset(&got, 0, sizeof(got));
	assert_int_equal(store_log_scan(fx->st, &filters[7], collect, &got, &err), 0);
	assert_int_equal(got.n, 5); /* gw-1, gw-10, gw-1/child, gw-1 renewed, gw-1\xff */
	memset(&got, 0, sizeof(got));
	assert_int_equal(store_log_scan(fx->st, &filters[11], collect, &got, &err), 0);
	assert_int_equal(got.n, 2);
	assert_int_equal(got.seq[0], 2);
	assert_int_equal(got.seq[1], 8);

	/* a callback that stops early ends the scan without an error */
	memset(&got, 0, sizeof(got));
	got.stop_after = 3;
	assert_int_equal(store_log_scan(fx->st, NULL, collect, &got, &err), 0);
	assert_int_equal(got.n, 3);
}

struct revoked_list {
	char serial[8][16];
	char reason[8][32];
	int64_t revoked_at[8];
	size_t n;
};

static int
collect_revoked(void *arg, const struct revoked_row *row)
{
	struct revoked_list *l = arg;

	assert_true(l->n < 8);
	snprintf(l->serial[l->n], sizeof(l->serial[0]), "%s", row->serial);
	snprintf(l->reason[l->n], sizeof(l->reason[0]), "%s", row->reason ? row->reason : "-");
	l->revoked_at[l->n++] = row->revoked_at;
	return 0;
}

/* Revocation is a unit like any other: the row and its log entry together, or neither. */
static void
test_revocation(void **state)
{
	struct fixture *fx = *state;
	struct fault_plan plan = {0};
	struct revoked_list got;
	struct cert_row row;
	struct ac_err err;
	struct unit u;

	fx->st = open_store(fx->path, &plan);
	unit_init(&u, "issued", "spiffe://corp.internal/a", "0a", NULL);
	submit_ok(fx->st, &u);
	unit_init(&u, "issued", "spiffe://corp.internal/b", "0b", NULL);
	u.cert.not_after = 100; /* long expired */
	submit_ok(fx->st, &u);
	unit_init(&u, "issued", "spiffe://corp.internal/c", "0c", NULL);
	submit_ok(fx->st, &u);

	/* a failed write leaves the certificate unrevoked */
	unit_init(&u, "revoked", "spiffe://corp.internal/a", NULL, NULL);
	u.w.revoke_serial = "0A";
	u.w.revoke_reason = "keyCompromise";
	u.w.revoked_at = 1700000100;
	plan.point = "cert";
	ac_err_clear(&err);
	assert_int_equal(store_submit(fx->st, &u.w, &err), -1);
	assert_int_equal(err.code, AC_ERR_UNAVAILABLE);
	plan.point = NULL;
	assert_int_equal(store_cert_get(fx->st, "0a", &row, &err), 0);
	assert_int_equal(row.revoked_at, 0);
	store_cert_row_free(&row);

	submit_ok(fx->st, &u);
	assert_int_equal(u.w.seq, 4);
	assert_int_equal(store_cert_get(fx->st, "0a", &row, &err), 0);
	assert_int_equal(row.revoked_at, 1700000100);
	assert_string_equal(row.revoke_reason, "keyCompromise");
	assert_int_equal(row.log_seq, 1); /* still the issuance entry */
	store_cert_row_free(&row);

	/* twice: conflict; unknown: not found; neither writes a log row */
	ac_err_clear(&err);
	assert_int_equal(store_submit(fx->st, &u.w, &err), -1);
	assert_int_equal(err.code, AC_ERR_CONFLICT);
	assert_string_equal(err.reason, "already_revoked");
	unit_init(&u, "revoked", "spiffe://corp.internal/z", NULL, NULL);
	u.w.revoke_serial = "ff";
	ac_err_clear(&err);
	assert_int_equal(store_submit(fx->st, &u.w, &err), -1);
	assert_int_equal(err.code, AC_ERR_NOTFOUND);
	u.w.revoke_serial = "zz";
	ac_err_clear(&err);
	assert_int_equal(store_submit(fx->st, &u.w, &err), -1);
	assert_int_equal(err.code, AC_ERR_INVALID);

	/* revoke the expired one too, stamped with the commit time */
	unit_init(&u, "revoked", "spiffe://corp.internal/b", NULL, NULL);
	u.w.revoke_serial = "0b";
	submit_ok(fx->st, &u);

	memset(&got, 0, sizeof(got));
	ac_err_clear(&err);
	assert_int_equal(store_revoked_scan(fx->st, 0, collect_revoked, &got, &err), 0);
	assert_int_equal(got.n, 2);
	assert_string_equal(got.serial[0], "0a");
	assert_string_equal(got.reason[0], "keyCompromise");
	assert_string_equal(got.serial[1], "0b");
	assert_string_equal(got.reason[1], "-");
	assert_true(got.revoked_at[1] > 1700000000);
	/* only those not yet expired, as a CRL lists them */
	memset(&got, 0, sizeof(got));
	assert_int_equal(store_revoked_scan(fx->st, 1000, collect_revoked, &got, &err), 0);
	assert_int_equal(got.n, 1);
	assert_string_equal(got.serial[0], "0a");

	assert_int_equal(verify_chain(fx->st), 5);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_commit_and_read_back, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_entry_time_stamped_when_zero, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_chain_verifies, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reopen_continues_chain, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_failed_unit_fails_alone, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_invalid_units_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_hostile_entry_logged, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fault_at_each_point, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_concurrent_group_commit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_large_batch_split, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_file_private_wal_and_versioned, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_log_is_append_only, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_newer_schema_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_open_errors, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_scan_filters, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_revocation, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
