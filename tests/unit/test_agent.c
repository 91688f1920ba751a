/*
 * test_agent.c - the agent's schedule: the renewal point lies in the window, jitter spreads
 * agents, and the backoff grows to its cap.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "rotation/agent.h"

static void
test_renew_point_in_window(void **state)
{
	int64_t nb = 1000000, na = nb + 86400, lo = na, hi = nb;

	(void)state;
	for (uint32_t seed = 0; seed < 100000; seed += 7) {
		int64_t at = agent_renew_at(nb, na, seed);

		assert_true(at <= nb + 86400 * 2 / 3);
		assert_true(at > nb + 86400 * 2 / 3 - 86400 / 10);
		if (at < lo)
			lo = at;
		if (at > hi)
			hi = at;
	}
	/* The jitter really spreads: over an hour between the earliest and the latest. */
	assert_true(hi - lo > 3600);
	/* Degenerate lifetimes do not crash or go past the end. */
	assert_int_equal(agent_renew_at(nb, nb, 5), nb);
	assert_true(agent_renew_at(nb, nb + 5, 123) <= nb + 5);
}

static void
test_backoff_grows_to_cap(void **state)
{
	int64_t prev = 0;

	(void)state;
	for (int attempt = 0; attempt < 20; attempt++) {
		int64_t max_wait = 0;

		for (uint32_t seed = 0; seed < 1000; seed++) {
			int64_t w = agent_backoff(attempt, seed);

			assert_true(w >= 4);
			assert_true(w <= 300);
			if (w > max_wait)
				max_wait = w;
		}
		assert_true(max_wait >= prev);
		prev = max_wait;
	}
	assert_int_equal(agent_backoff(0, 0), 5);
	assert_int_equal(agent_backoff(1, 0), 10);
	assert_int_equal(agent_backoff(30, 0), 300);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_renew_point_in_window),
	    cmocka_unit_test(test_backoff_grows_to_cap),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
