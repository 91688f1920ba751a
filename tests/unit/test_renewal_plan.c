/*
 * test_renewal_plan.c - the CA's renewal planner (ca/renewal_plan.h): the window's bounds,
 * the preferred point under a light load, a flat load for a flock enrolled in one minute,
 * the shrink before an intermediate switch, and the calendar rebuilt from a real store.
 *
 * Times are injected: T0 is a fixed instant on a minute boundary, and each test places
 * leaves as if issued at T0 plus a few seconds.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "ca/renewal_plan.h"
#include "store/store.h"
#include "testutil.h"

#define T0 ((int64_t)1800000000 / 60 * 60)
#define DAY 86400

static struct renewal_plan *
new_plan(void)
{
	struct ac_err err;
	struct renewal_plan *p;

	ac_err_clear(&err);
	p = renewal_plan_new(&err);
	assert_non_null(p);
	return p;
}

/* The window: [1/2, 3/4] of the lifetime from issuance, preferred 2/3; a quarter is left. */
static void
test_window_bounds(void **state)
{
	struct renewal_window w;

	(void)state;
	renewal_window_for(T0, T0 + 3 * DAY, 0, 12345, &w);
	assert_int_equal(w.start, T0 + 3 * DAY / 2);
	assert_int_equal(w.preferred, T0 + 2 * DAY);
	assert_int_equal(w.end, T0 + 3 * DAY * 3 / 4);
	/* A switch planned after the preferred point changes nothing. */
	renewal_window_for(T0, T0 + 3 * DAY, T0 + 2 * DAY + 1, 12345, &w);
	assert_int_equal(w.preferred, T0 + 2 * DAY);
	/* Degenerate lifetimes do not produce a window in the future. */
	renewal_window_for(T0, T0, 0, 1, &w);
	assert_int_equal(w.start, T0);
	assert_int_equal(w.end, T0);
}

/* Leaves issued a minute apart, each alone in its minute: each gets its preferred point. */
static void
test_preferred_when_load_is_low(void **state)
{
	struct renewal_plan *p = new_plan();

	(void)state;
	for (int i = 0; i < 50; i++) {
		struct renewal_window w;
		int64_t issued = T0 + i * 60 + 7;

		renewal_window_for(issued, issued + DAY, 0, 0, &w);
		assert_int_equal(renewal_plan_place(p, issued, &w, (uint64_t)i), w.preferred);
		assert_int_equal(renewal_plan_count(p, w.preferred), 1);
	}
	renewal_plan_free(p);
}

/* 20,000 leaves of one lifetime issued within the same minute: every point inside its
 * window, never before now, and the load flat: no minute above the window's average
 * (rounded up), where a fixed 2/3 would put all of them in one or two minutes. */
static void
test_flock_is_spread_flat(void **state)
{
	enum { FLOCK = 20000 };
	struct renewal_plan *p = new_plan();
	struct renewal_window w;
	int64_t lifetime = DAY, lo = INT64_MAX, hi = 0;
	uint32_t peak = 0, window_minutes, share;

	(void)state;
	for (int i = 0; i < FLOCK; i++) {
		int64_t issued = T0 + i % 60, at;

		renewal_window_for(issued, issued + lifetime, 0, 0, &w);
		at = renewal_plan_place(p, issued, &w, (uint64_t)i * 2654435761u);
		assert_true(at >= w.start && at <= w.end);
		assert_true(at >= issued);
		lo = at < lo ? at : lo;
		hi = at > hi ? at : hi;
	}
	window_minutes = (uint32_t)((T0 + lifetime * 3 / 4) / 60 - (T0 + lifetime / 2) / 60 + 1);
	share = (FLOCK + window_minutes - 1) / window_minutes;
	for (int64_t t = T0 + lifetime / 2; t <= T0 + 60 + lifetime * 3 / 4; t += 60) {
		uint32_t n = renewal_plan_count(p, t);

		peak = n > peak ? n : peak;
	}
	assert_true(peak <= share + 1);
	/* The whole window was used, not just the preferred end of it. */
	assert_true(lo < T0 + lifetime / 2 + 120);
	assert_true(hi > T0 + lifetime * 3 / 4 - 120);
	renewal_plan_free(p);
}

/* Under load the point stays inside the window, whatever the window: short lifetimes (one
 * minute), windows that began before now, and lifetimes near the 90-day ceiling. */
static void
test_window_respected_under_load(void **state)
{
	static const int64_t lifetimes[] = {30, 90, 300, 3600, 7 * DAY, 90 * DAY};
	struct renewal_plan *p = new_plan();

	(void)state;
	for (size_t k = 0; k < sizeof(lifetimes) / sizeof(lifetimes[0]); k++) {
		for (int i = 0; i < 3000; i++) {
			struct renewal_window w;
			int64_t issued = T0 + (int64_t)k, at;

			renewal_window_for(issued, issued + lifetimes[k], 0, 0, &w);
			at = renewal_plan_place(p, issued, &w, (uint64_t)i);
			assert_true(at >= w.start);
			assert_true(at <= w.end);
			assert_true(at < issued + lifetimes[k]);
		}
	}
	/* A window that has already passed: renew now. */
	{
		struct renewal_window w = {T0 - 100, T0 - 50, T0 - 10};

		assert_int_equal(renewal_plan_place(p, T0 + 10, &w, 0), T0 + 10);
	}
	renewal_plan_free(p);
}

/* Before a planned switch the window shrinks to [switch, switch + (preferred - switch)/2],
 * and a flock issued then is spread inside it, never after it. */
static void
test_supersede_shrink_still_applied(void **state)
{
	enum { FLOCK = 5000 };
	struct renewal_plan *p = new_plan();
	int64_t supersede = T0 + 3600, lo = INT64_MAX, hi = 0;
	int64_t preferred = T0 + 2 * DAY / 3, end = supersede + (preferred - supersede) / 2;

	(void)state;
	for (int i = 0; i < FLOCK; i++) {
		struct renewal_window w;
		int64_t at;

		renewal_window_for(T0, T0 + DAY, supersede, (uint64_t)i * 7919, &w);
		assert_int_equal(w.start, supersede);
		assert_int_equal(w.end, end);
		at = renewal_plan_place(p, T0, &w, (uint64_t)i);
		assert_true(at >= supersede && at <= end);
		lo = at < lo ? at : lo;
		hi = at > hi ? at : hi;
	}
	/* Spread over the shrunk window, not heaped on the switch. */
	assert_true(renewal_plan_count(p, supersede) < FLOCK / 10);
	assert_true(hi - lo > (end - supersede) / 2);
	renewal_plan_free(p);
}

/* A point taken back (a failed commit) frees its place; the clock moving on clears the
 * minutes that have passed. */
static void
test_forget_and_clock(void **state)
{
	struct renewal_plan *p = new_plan();
	struct renewal_window w;
	int64_t at;

	(void)state;
	renewal_window_for(T0, T0 + 3600, 0, 0, &w);
	at = renewal_plan_place(p, T0, &w, 0);
	assert_int_equal(renewal_plan_count(p, at), 1);
	renewal_plan_forget(p, at);
	assert_int_equal(renewal_plan_count(p, at), 0);
	at = renewal_plan_place(p, T0, &w, 0);
	assert_int_equal(at, w.preferred);
	renewal_plan_add(p, at + 3600, at + 3600 + 60); /* time passes */
	assert_int_equal(renewal_plan_count(p, at), 0);
	assert_int_equal(renewal_plan_count(p, at + 3600 + 60), 1);
	renewal_plan_free(p);
}

/* Write one certificate row with the given times and renew_after. */
static void
add_cert(struct store *st, const char *serial, int64_t not_before, int64_t not_after,
         int64_t renew_after)
{
	static const unsigned char der[] = {0x30, 0x00};
	struct cert_record rec;
	struct log_entry entry;
	struct store_write w;

	memset(&rec, 0, sizeof(rec));
	rec.serial = serial;
	rec.subject = "spiffe://corp.internal/leaf";
	rec.issuer_fingerprint = "00";
	rec.not_before = not_before;
	rec.not_after = not_after;
	rec.renew_after = renew_after;
	rec.der = der;
	rec.der_len = sizeof(der);
	memset(&entry, 0, sizeof(entry));
	entry.kind = "issued";
	entry.subject = rec.subject;
	entry.serial = serial;
	memset(&w, 0, sizeof(w));
	w.cert = &rec;
	w.entry = &entry;
	assert_int_equal(store_submit(st, &w, NULL), 0);
}

/* A restarted daemon rebuilds the calendar from the store: each valid certificate counts at
 * its recorded renew_after (2/3 when none was recorded), expired ones not at all, and new
 * leaves are then placed around the promised load as before the restart. */
static void
test_restart_rebuild(void **state)
{
	char *dir = test_tmpdir("renewal-plan");
	char path[4096], serial[40];
	struct store_options so;
	struct store *st;
	struct renewal_plan *before = new_plan(), *after = new_plan();
	struct ac_err err;
	int64_t now = (int64_t)time(NULL) / 60 * 60, at_before = 0, at_after = 0;
	struct cert_row row;

	(void)state;
	ac_err_clear(&err);
	snprintf(path, sizeof(path), "%s/store.db", dir);
	store_options_defaults(&so);
	so.path = path;
	st = store_open(&so, &err);
	assert_non_null(st);
	/* 30 leaves issued now by a planner, recorded with what it chose. */
	for (int i = 0; i < 30; i++) {
		struct renewal_window w;
		int64_t at;

		renewal_window_for(now, now + 3600, 0, 0, &w);
		at = renewal_plan_place(before, now, &w, (uint64_t)i);
		snprintf(serial, sizeof(serial), "%032x", i + 1);
		add_cert(st, serial, now - 60, now + 3600, at);
	}
	add_cert(st, "ee", now - 7200, now - 60, now - 1000); /* expired */
	add_cert(st, "ff", now - 60, now + 3 * 3600 - 60, 0); /* no renew_after */
	assert_int_equal(store_cert_get(st, "ff", &row, &err), 0);
	assert_int_equal(row.renew_after, 0);
	store_cert_row_free(&row);
	assert_int_equal(store_cert_get(st, "0000000000000000000000000000001e", &row, &err), 0);
	assert_true(row.renew_after >= now + 1800 && row.renew_after <= now + 2700);
	store_cert_row_free(&row);

	assert_int_equal(renewal_plan_rebuild(after, st, now, &err), 0);
	for (int64_t t = now; t < now + 4 * 3600; t += 60)
		assert_int_equal(renewal_plan_count(after, t),
		                 renewal_plan_count(before, t) +
		                     (t / 60 == (now + 7200 - 60) / 60));
	/* The next leaf lands where it would have without the restart. */
	{
		struct renewal_window w;

		renewal_window_for(now, now + 3600, 0, 0, &w);
		at_before = renewal_plan_place(before, now, &w, 99);
		at_after = renewal_plan_place(after, now, &w, 99);
		assert_int_equal(at_after, at_before);
		assert_true(at_after != w.preferred); /* the preferred minute is already full */
	}
	store_close(st);
	renewal_plan_free(before);
	renewal_plan_free(after);
	test_rmdir(dir);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_window_bounds),
	    cmocka_unit_test(test_preferred_when_load_is_low),
	    cmocka_unit_test(test_flock_is_spread_flat),
	    cmocka_unit_test(test_window_respected_under_load),
	    cmocka_unit_test(test_supersede_shrink_still_applied),
	    cmocka_unit_test(test_forget_and_clock),
	    cmocka_unit_test(test_restart_rebuild),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
