/*
 * test_ratelimit.c - enrollment/ratelimit.c: a burst then refusal with the right
 * Retry-After, refill over time, keys independent of each other, rate 0 unlimited, invalid
 * arguments, time going backwards, long keys (stored inline up to RATELIMIT_KEY_MAX bytes,
 * hashed beyond), a flood of 100k distinct keys into a 1000-key table (bounded, and a hot
 * key still limited), and 8 threads on one key whose total allowed count stays within
 * burst + rate * elapsed.
 *
 * Time is passed in, so every count below is exact except where floating-point rounding
 * of many small refills may cost one token.
 */
#include <setjmp.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

#include <cmocka.h>

#include "enrollment/ratelimit.h"
#include "testutil.h"

/* Take n times at now; return how many were allowed. */
static int
take_n(struct ratelimit *rl, const char *key, double now, int n)
{
	int allowed = 0, retry;

	for (int i = 0; i < n; i++)
		allowed += ratelimit_take(rl, key, now, &retry);
	return allowed;
}

/* burst tokens in a row, then 429 with Retry-After rounded up to whole seconds. */
static void
test_burst_then_refused(void **state)
{
	struct ratelimit *rl = ratelimit_new(0.5, 3, 100);
	int retry = -1;

	(void)state;
	assert_non_null(rl);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(ratelimit_take(rl, "10.0.0.1", 100.0, &retry), 1);
		assert_int_equal(retry, 0);
	}
	assert_int_equal(ratelimit_take(rl, "10.0.0.1", 100.0, &retry), 0);
	assert_int_equal(retry, 2); /* one token per 2 s */

	/* 1.5 s later: 0.75 token, 0.5 s short, said as 1 s. */
	assert_int_equal(ratelimit_take(rl, "10.0.0.1", 101.5, &retry), 0);
	assert_int_equal(retry, 1);
	assert_int_equal(ratelimit_take(rl, "10.0.0.1", 102.0, &retry), 1);
	assert_int_equal(ratelimit_take(rl, "10.0.0.1", 102.0, &retry), 0);
	assert_int_equal(retry, 2);
	/* retry_after may be NULL */
	assert_int_equal(ratelimit_take(rl, "10.0.0.1", 102.0, NULL), 0);
	ratelimit_free(rl);
}

/* For several rates: refused now, still refused a second before Retry-After, allowed at it. */
static void
test_retry_after_is_exact(void **state)
{
	static const struct {
		double rate;
		int retry;
	} cases[] = {
	    {0.01, 100}, {0.1, 10}, {0.3, 4}, {0.5, 2}, {1, 1}, {7, 1}, {1000, 1},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct ratelimit *rl = ratelimit_new(cases[i].rate, 1, 10);
		int retry = -1;

		assert_non_null(rl);
		assert_int_equal(ratelimit_take(rl, "k", 50, &retry), 1);
		assert_int_equal(ratelimit_take(rl, "k", 50, &retry), 0);
		assert_int_equal(retry, cases[i].retry);
		if (retry > 1)
			assert_int_equal(ratelimit_take(rl, "k", 50 + retry - 1, NULL), 0);
		assert_int_equal(ratelimit_take(rl, "k", 50 + retry, NULL), 1);
		ratelimit_free(rl);
	}
}

/* Tokens come back at rate per second, never more than burst. */
static void
test_refill(void **state)
{
	struct ratelimit *rl = ratelimit_new(2, 4, 100);

	(void)state;
	assert_non_null(rl);
	assert_int_equal(take_n(rl, "spiffe://corp/a", 0, 10), 4);
	assert_int_equal(take_n(rl, "spiffe://corp/a", 1, 10), 2);    /* 1 s: 2 tokens */
	assert_int_equal(take_n(rl, "spiffe://corp/a", 2.5, 10), 3);  /* 1.5 s: 3 */
	assert_int_equal(take_n(rl, "spiffe://corp/a", 1000, 10), 4); /* capped at burst */
	/* half tokens add up */
	assert_int_equal(take_n(rl, "spiffe://corp/a", 1000.25, 10), 0);
	assert_int_equal(take_n(rl, "spiffe://corp/a", 1000.5, 10), 1);
	ratelimit_free(rl);
}

/* Draining one key leaves the others whole, including keys that are prefixes of it. */
static void
test_keys_independent(void **state)
{
	struct ratelimit *rl = ratelimit_new(1, 5, 100);

	(void)state;
	assert_non_null(rl);
	assert_int_equal(take_n(rl, "10.0.0.1", 0, 10), 5);
	assert_int_equal(take_n(rl, "10.0.0.10", 0, 10), 5);
	assert_int_equal(take_n(rl, "10.0.0.", 0, 10), 5);
	assert_int_equal(take_n(rl, "", 0, 10), 5);
	assert_int_equal(take_n(rl, NULL, 0, 10), 0); /* NULL is "" */
	assert_int_equal(take_n(rl, "2001:db8::1", 0, 10), 5);
	assert_int_equal(take_n(rl, "10.0.0.1", 0, 10), 0);
	assert_int_equal(ratelimit_keys(rl), 5);
	ratelimit_free(rl);
}

/* Rate 0 allows everything and keeps nothing; so does a NULL limiter. */
static void
test_unlimited(void **state)
{
	struct ratelimit *rl = ratelimit_new(0, 0, 0);
	char key[32];
	int retry = -1;

	(void)state;
	assert_non_null(rl);
	for (int i = 0; i < 100000; i++) {
		snprintf(key, sizeof(key), "k%d", i % 7);
		assert_int_equal(ratelimit_take(rl, key, 0, &retry), 1);
		assert_int_equal(retry, 0);
	}
	assert_int_equal(ratelimit_keys(rl), 0);
	ratelimit_free(rl);
	assert_int_equal(ratelimit_take(NULL, "k", 0, &retry), 1);
	assert_int_equal(retry, 0);
	ratelimit_free(NULL);
}

/* Invalid rules are refused at creation, not discovered per request. */
static void
test_invalid_arguments(void **state)
{
	(void)state;
	assert_null(ratelimit_new(-1, 5, 10));
	assert_null(ratelimit_new(INFINITY, 5, 10));
	assert_null(ratelimit_new(NAN, 5, 10));
	assert_null(ratelimit_new(1, 0.5, 10));
	assert_null(ratelimit_new(1, NAN, 10));
	assert_null(ratelimit_new(1, 5, 0));
	assert_null(ratelimit_new(1, 5, SIZE_MAX));
}

/* A time older than the bucket's refills nothing; the clock moving on again does. */
static void
test_time_backwards(void **state)
{
	struct ratelimit *rl = ratelimit_new(1, 2, 10);
	int retry;

	(void)state;
	assert_non_null(rl);
	assert_int_equal(take_n(rl, "k", 10, 5), 2);
	assert_int_equal(ratelimit_take(rl, "k", 5, &retry), 0);
	assert_int_equal(retry, 1);
	assert_int_equal(take_n(rl, "k", 0, 5), 0);
	assert_int_equal(take_n(rl, "k", 11, 5), 1); /* 1 s after 10, not 11 s after 0 */
	assert_int_equal(take_n(rl, "k", INFINITY, 5), 0);
	assert_int_equal(take_n(rl, "k", 12, 5), 1);
	ratelimit_free(rl);
}

/* Keys at, just over and far over RATELIMIT_KEY_MAX: equal keys share a bucket, keys that
 * differ only past the inline limit (or only in length) do not. */
static void
test_long_keys(void **state)
{
	static const size_t lens[] = {
	    RATELIMIT_KEY_MAX - 1, RATELIMIT_KEY_MAX, RATELIMIT_KEY_MAX + 1, 200, 4096, 100000};
	struct ratelimit *rl = ratelimit_new(1, 2, 100);
	char *a, *b;

	(void)state;
	assert_non_null(rl);
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		size_t n = lens[i];

		a = malloc(n + 1);
		b = malloc(n + 1);
		assert_non_null(a);
		assert_non_null(b);
		memset(a, 'x', n);
		a[n] = '\0';
		memcpy(b, a, n + 1);
		b[n - 1] = 'y'; /* differs in the last byte only */

		assert_int_equal(take_n(rl, a, 0, 5), 2);
		assert_int_equal(take_n(rl, b, 0, 5), 2);
		memcpy(b, a, n + 1); /* another copy of a: same bucket */
		assert_int_equal(take_n(rl, b, 0, 5), 0);
		free(a);
		free(b);
	}
	/* Every length above was a distinct key ('x' * n and 'x' * (n-1) + 'y'). */
	assert_int_equal(ratelimit_keys(rl), 2 * sizeof(lens) / sizeof(lens[0]));
	ratelimit_free(rl);
}

/* 100k distinct keys into a table sized for 1000: the table stays within its slots, every
 * new key gets its burst, and hot keys are still held to their rate: one taking often, and
 * one taking in bursts so rarely that its set sees ~16 new keys in between (a plain LRU
 * would forget it and hand it a fresh burst each time). */
static void
test_flood_of_keys(void **state)
{
	struct ratelimit *rl = ratelimit_new(1, 5, 1000);
	int hot_allowed = 0, hot_tries = 0, rare_allowed = 0;
	char key[64];
	double now = 0;

	(void)state;
	assert_non_null(rl);
	for (int i = 0; i < 100000; i++) {
		now = i * 0.001; /* 100 s in all */
		snprintf(key, sizeof(key), "10.%d.%d.%d", (i >> 16) & 255, (i >> 8) & 255, i & 255);
		assert_int_equal(ratelimit_take(rl, key, now, NULL), 1);
		if (i % 10 == 0) {
			hot_allowed += ratelimit_take(rl, "203.0.113.7", now, NULL);
			hot_tries++;
		}
		if (i % 4000 == 0)
			rare_allowed += take_n(rl, "198.51.100.9", now, 50);
	}
	assert_int_equal(hot_tries, 10000);
	/* burst + rate * elapsed = 5 + 99.99; one token of slack for rounding */
	assert_true(hot_allowed <= 104);
	assert_true(hot_allowed >= 103);
	/* rate 1, burst 5: 5 at first, then 4 per 4 s, 24 times; forgotten it would get 5 */
	assert_int_equal(rare_allowed, 5 + 24 * 4);
	/* 2048 slots for 1000 keys; the flood has filled them, and no more */
	assert_true(ratelimit_keys(rl) >= 1000);
	assert_true(ratelimit_keys(rl) <= 2048);
	ratelimit_free(rl);
}

#define THREADS 8
#define STEPS 20000
#define STEP 0.001

struct worker {
	struct ratelimit *rl;
	int id;
	int allowed; /* on the shared key */
	int own_ok;  /* every first take of a fresh per-thread key was allowed */
};

/* One thread: at each time step take the shared key twice and one fresh key of its own. */
static void *
worker_main(void *arg)
{
	struct worker *w = arg;
	char key[64];

	w->own_ok = 1;
	for (int i = 0; i < STEPS; i++) {
		double now = i * STEP;

		w->allowed += ratelimit_take(w->rl, "spiffe://corp/hot", now, NULL);
		w->allowed += ratelimit_take(w->rl, "spiffe://corp/hot", now, NULL);
		snprintf(key, sizeof(key), "spiffe://corp/t%d/%d", w->id, i);
		if (!ratelimit_take(w->rl, key, now, NULL))
			w->own_ok = 0;
	}
	return NULL;
}

/* 8 threads on one key: the total allowed is burst + rate * elapsed, whatever the order
 * the threads ran in, since demand (16 per step) always exceeds supply (0.1 per step). */
static void
test_threads(void **state)
{
	struct ratelimit *rl = ratelimit_new(100, 50, 1024);
	struct worker w[THREADS];
	pthread_t t[THREADS];
	int total = 0;

	(void)state;
	assert_non_null(rl);
	for (int i = 0; i < THREADS; i++) {
		w[i] = (struct worker){.rl = rl, .id = i};
		assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
	}
	for (int i = 0; i < THREADS; i++) {
		assert_int_equal(pthread_join(t[i], NULL), 0);
		assert_true(w[i].own_ok);
		total += w[i].allowed;
	}
	/* 50 + 100 * 19.999 = 2049.9 */
	assert_true(total <= 2049);
	assert_true(total >= 2048);
	assert_true(ratelimit_keys(rl) <= 2048);
	ratelimit_free(rl);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_burst_then_refused),
	    cmocka_unit_test(test_retry_after_is_exact),
	    cmocka_unit_test(test_refill),
	    cmocka_unit_test(test_keys_independent),
	    cmocka_unit_test(test_unlimited),
	    cmocka_unit_test(test_invalid_arguments),
	    cmocka_unit_test(test_time_backwards),
	    cmocka_unit_test(test_long_keys),
	    cmocka_unit_test(test_flood_of_keys),
	    cmocka_unit_test(test_threads),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
