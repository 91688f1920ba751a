/*
 * bench_renewal_storm.c - does a flock of agents enrolled together renew as a flow?
 *
 * A simulation in compressed time, with no sleeping: AGENTS agents enroll within the first
 * minute (evenly spread), each with a certificate of LIFETIME seconds, and the clock runs
 * over one lifetime (plus that first minute). Three policies are compared:
 *
 *   naive     the CA says 2/3 of the lifetime and every agent renews exactly then;
 *   jitter    no CA advice: each agent renews at its own fallback point, the product's
 *             agent_renew_at() (2/3 minus up to a tenth of the lifetime);
 *   windows   the product's renewal planner (ca/renewal_plan.h: renewal_window_for and
 *             renewal_plan_place, as ca_issue calls them) chooses renew_after at every
 *             issuance, and each agent renews at agent_renew_at_hint() of it (the agent's
 *             real jitter). A renewal is an issuance: it is placed in the calendar again.
 *
 * Renewals are counted per minute of simulated time. The mean is taken over the flock's
 * renewal span: from the earliest moment any certificate of the flock may renew under the
 * CA's windows (half the lifetime after the first enrollment) to the latest (three quarters
 * of the lifetime after the last one), the same span for all three policies. The mean over
 * the whole simulated lifetime is printed too. Agents' random seeds come from a fixed
 * xorshift generator, so a run is reproducible.
 *
 *   bench_renewal_storm [--agents N] [--lifetime SECONDS]
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ca/renewal_plan.h"
#include "rotation/agent.h"

#define ENROLL_SPAN 60 /* seconds over which the flock enrolls */
#define BACKDATE 60    /* notBefore backdating of ca_issue (CLOCK_SKEW) */
#define T0 ((int64_t)1800000000 / 60 * 60)

enum policy { NAIVE, JITTER, WINDOWS };
static const char *const policy_names[] = {
    [NAIVE] = "naive fixed 2/3", [JITTER] = "agent jitter only", [WINDOWS] = "CA windows"};

struct event {
	int64_t at;
	uint32_t agent;
};

/* A binary min-heap of renewal events by time. */
struct heap {
	struct event *ev;
	size_t n;
};

static void
heap_push(struct heap *h, struct event e)
{
	size_t i = h->n++;

	while (i > 0 && h->ev[(i - 1) / 2].at > e.at) {
		h->ev[i] = h->ev[(i - 1) / 2];
		i = (i - 1) / 2;
	}
	h->ev[i] = e;
}

static struct event
heap_pop(struct heap *h)
{
	struct event top = h->ev[0], last = h->ev[--h->n];
	size_t i = 0;

	for (;;) {
		size_t c = 2 * i + 1;

		if (c >= h->n)
			break;
		if (c + 1 < h->n && h->ev[c + 1].at < h->ev[c].at)
			c++;
		if (h->ev[c].at >= last.at)
			break;
		h->ev[i] = h->ev[c];
		i = c;
	}
	if (h->n > 0)
		h->ev[i] = last;
	return top;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint32_t
rng_next(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)(rng_state >> 32);
}

/* Issue a certificate at now and return when its holder renews under policy. */
static int64_t
issue(enum policy policy, struct renewal_plan *plan, int64_t now, int64_t lifetime)
{
	int64_t not_before = now - BACKDATE, not_after = now + lifetime;
	struct renewal_window w;
	int64_t ca_renew_after;
	uint32_t seed = rng_next();

	switch (policy) {
	case NAIVE:
		return not_before + (not_after - not_before) * 2 / 3;
	case JITTER:
		return agent_renew_at(not_before, not_after, seed);
	case WINDOWS:
	default:
		renewal_window_for(now, not_after, 0, rng_next(), &w);
		ca_renew_after = renewal_plan_place(plan, now, &w, rng_next());
		return agent_renew_at_hint(not_before, not_after, ca_renew_after, seed);
	}
}

struct result {
	uint64_t renewals, in_span, peak;
	int64_t peak_minute;
	double mean_span, mean_all;
};

static int
simulate(enum policy policy, uint32_t agents, int64_t lifetime, struct result *r)
{
	int64_t horizon = ENROLL_SPAN + lifetime, minutes = horizon / 60 + 1;
	int64_t span_from = lifetime / 2, span_to = ENROLL_SPAN + lifetime * 3 / 4;
	int64_t span_minutes = span_to / 60 - span_from / 60 + 1;
	uint64_t *per_minute = calloc((size_t)minutes, sizeof(*per_minute));
	struct heap h = {calloc(agents, sizeof(struct event)), 0};
	struct renewal_plan *plan = NULL;
	struct ac_err err;
	int rc = -1;

	memset(r, 0, sizeof(*r));
	ac_err_clear(&err);
	rng_state = 0x9e3779b97f4a7c15u;
	if (per_minute == NULL || h.ev == NULL) {
		fprintf(stderr, "bench_renewal_storm: out of memory\n");
		goto out;
	}
	if (policy == WINDOWS && (plan = renewal_plan_new(&err)) == NULL) {
		fprintf(stderr, "bench_renewal_storm: %s\n", err.msg);
		goto out;
	}
	for (uint32_t i = 0; i < agents; i++) {
		int64_t enrolled = T0 + (int64_t)i * ENROLL_SPAN / agents;

		heap_push(&h, (struct event){issue(policy, plan, enrolled, lifetime), i});
	}
	while (h.n > 0) {
		struct event e = heap_pop(&h);
		int64_t offset = e.at - T0;

		if (offset >= horizon)
			break;
		if (offset < 0)
			offset = 0;
		per_minute[offset / 60]++;
		r->renewals++;
		if (offset >= span_from / 60 * 60 && offset < (span_to / 60 + 1) * 60)
			r->in_span++;
		heap_push(&h, (struct event){issue(policy, plan, e.at, lifetime), e.agent});
	}
	for (int64_t m = 0; m < minutes; m++) {
		if (per_minute[m] > r->peak) {
			r->peak = per_minute[m];
			r->peak_minute = m;
		}
	}
	r->mean_span = (double)r->in_span / (double)span_minutes;
	r->mean_all = (double)r->renewals / (double)minutes;
	rc = 0;
out:
	renewal_plan_free(plan);
	free(h.ev);
	free(per_minute);
	return rc;
}

int
main(int argc, char **argv)
{
	uint32_t agents = 100000;
	int64_t lifetime = 86400, span_from, span_to;
	struct result r;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--agents") == 0 && i + 1 < argc)
			agents = (uint32_t)strtoul(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--lifetime") == 0 && i + 1 < argc)
			lifetime = strtoll(argv[++i], NULL, 10);
		else {
			fprintf(stderr,
			        "usage: bench_renewal_storm [--agents N] [--lifetime SECONDS]\n");
			return 2;
		}
	}
	if (agents == 0 || agents > 10000000 || lifetime < 600 || lifetime > 90 * 86400) {
		fprintf(stderr,
		        "bench_renewal_storm: agents in 1..10000000, lifetime in 600..7776000\n");
		return 2;
	}
	span_from = lifetime / 2;
	span_to = ENROLL_SPAN + lifetime * 3 / 4;
	printf("renewal-storm: %" PRIu32 " agents enrolled within %d s, lifetime %" PRId64
	       " s, simulated %" PRId64 " min (one lifetime + the enrollment minute)\n",
	       agents, ENROLL_SPAN, lifetime, (ENROLL_SPAN + lifetime) / 60 + 1);
	printf("mean = renewals per minute over the flock's renewal span, minutes %" PRId64
	       "..%" PRId64 " after the first enrollment (%" PRId64 " min: the CA's windows, "
	       "[L/2, 3L/4] of every certificate); mean_all = over the whole simulation\n",
	       span_from / 60, span_to / 60, span_to / 60 - span_from / 60 + 1);
	for (int p = NAIVE; p <= WINDOWS; p++) {
		if (simulate((enum policy)p, agents, lifetime, &r) != 0)
			return 1;
		printf("%-18s renewals=%" PRIu64 " peak=%" PRIu64 "/min (minute %" PRId64
		       ") mean=%.1f/min peak/mean=%.2f mean_all=%.1f/min peak/mean_all=%.2f\n",
		       policy_names[p], r.renewals, r.peak, r.peak_minute, r.mean_span,
		       r.peak / r.mean_span, r.mean_all, r.peak / r.mean_all);
	}
	return 0;
}
