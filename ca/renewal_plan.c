/*
 * renewal_plan.c - the CA's renewal planner: a calendar of promised renewals, one counter
 * per minute, and the rule that places each new leaf in it. See renewal_plan.h.
 *
 * Invariants: slot(m) holds the renewals promised for minute m, for every m in
 * [base, base + RENEWAL_PLAN_MINUTES); minutes before base were cleared as the clock moved.
 * Each aligned group of RENEWAL_PLAN_BLOCK minutes has its sum and its minimum kept next to
 * it, so a window's load and its nearest under-loaded minute are found without reading
 * every counter.
 */
#include "ca/renewal_plan.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define BLOCKS (RENEWAL_PLAN_MINUTES / RENEWAL_PLAN_BLOCK)
#define SLOT(m) ((size_t)((uint64_t)(m) & (RENEWAL_PLAN_MINUTES - 1)))
#define BLOCK_OF(m) (SLOT(m) / RENEWAL_PLAN_BLOCK)

struct renewal_plan {
	pthread_mutex_t lock;
	int64_t base; /* first minute the ring holds; -1 before the first use */
	uint32_t count[RENEWAL_PLAN_MINUTES];
	uint32_t block_sum[BLOCKS];
	uint32_t block_min[BLOCKS];
};

struct renewal_plan *
renewal_plan_new(struct ac_err *err)
{
	struct renewal_plan *plan = calloc(1, sizeof(*plan));

	if (plan == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory",
		           "out of memory for the renewal calendar");
		return NULL;
	}
	if (pthread_mutex_init(&plan->lock, NULL) != 0) {
		free(plan);
		ac_err_set(err, AC_ERR_INTERNAL, "mutex",
		           "cannot create the renewal calendar's lock");
		return NULL;
	}
	plan->base = -1;
	return plan;
}

void
renewal_plan_free(struct renewal_plan *plan)
{
	if (plan == NULL)
		return;
	pthread_mutex_destroy(&plan->lock);
	free(plan);
}

void
renewal_window_for(int64_t issued_at, int64_t not_after, int64_t supersede_at, uint64_t spread_seed,
                   struct renewal_window *w)
{
	int64_t life = not_after - issued_at;

	if (life <= 0) {
		w->start = w->preferred = w->end = issued_at;
		return;
	}
	w->start = issued_at + life / 2;
	w->preferred = issued_at + life * 2 / 3;
	w->end = issued_at + life * 3 / 4;
	if (supersede_at > issued_at && supersede_at < w->preferred) {
		/* The signer is about to be replaced: renew soon after the switch. */
		int64_t width = (w->preferred - supersede_at) / 2;

		w->start = supersede_at;
		w->end = supersede_at + width;
		w->preferred = supersede_at + (int64_t)(spread_seed % (uint64_t)(width + 1));
	}
}

/* Minute of a unix time (times before 1970 do not occur here). */
static int64_t
minute_of(int64_t t)
{
	return t >= 0 ? t / RENEWAL_PLAN_BUCKET : 0;
}

static void
block_min_recompute(struct renewal_plan *p, size_t block)
{
	const uint32_t *c = &p->count[block * RENEWAL_PLAN_BLOCK];
	uint32_t min = c[0];

	for (size_t i = 1; i < RENEWAL_PLAN_BLOCK; i++)
		if (c[i] < min)
			min = c[i];
	p->block_min[block] = min;
}

/* Move the ring's start to now_min, clearing the minutes that have passed. */
static void
advance(struct renewal_plan *p, int64_t now_min)
{
	if (p->base < 0) {
		p->base = now_min;
		return;
	}
	if (now_min <= p->base)
		return;
	if (now_min - p->base >= RENEWAL_PLAN_MINUTES) {
		memset(p->count, 0, sizeof(p->count));
		memset(p->block_sum, 0, sizeof(p->block_sum));
		memset(p->block_min, 0, sizeof(p->block_min));
	} else {
		for (int64_t m = p->base; m < now_min; m++) {
			size_t s = SLOT(m), b = BLOCK_OF(m);

			p->block_sum[b] -= p->count[s];
			p->count[s] = 0;
			p->block_min[b] = 0;
		}
	}
	p->base = now_min;
}

static int
in_ring(const struct renewal_plan *p, int64_t m)
{
	return p->base >= 0 && m >= p->base && m < p->base + RENEWAL_PLAN_MINUTES;
}

static void
increment(struct renewal_plan *p, int64_t m)
{
	size_t s = SLOT(m), b = BLOCK_OF(m);

	if (p->count[s] == UINT32_MAX)
		return;
	p->count[s]++;
	p->block_sum[b]++;
	if (p->count[s] - 1 == p->block_min[b])
		block_min_recompute(p, b);
}

/* Renewals promised in minutes [from, to], whole blocks at a time where possible. */
static uint64_t
load_between(const struct renewal_plan *p, int64_t from, int64_t to)
{
	uint64_t sum = 0;

	for (int64_t m = from; m <= to;) {
		if (m % RENEWAL_PLAN_BLOCK == 0 && m + RENEWAL_PLAN_BLOCK - 1 <= to) {
			sum += p->block_sum[BLOCK_OF(m)];
			m += RENEWAL_PLAN_BLOCK;
		} else {
			sum += p->count[SLOT(m)];
			m++;
		}
	}
	return sum;
}

/* The first minute in [from, to] (step +1) or [to, from] (step -1) holding fewer than
 * target, skipping blocks whose minimum reaches it; -1 when there is none. */
static int64_t
nearest_under(const struct renewal_plan *p, int64_t from, int64_t to, int step, uint32_t target)
{
	for (int64_t m = from; step > 0 ? m <= to : m >= to;) {
		int64_t edge = step > 0 ? m % RENEWAL_PLAN_BLOCK
		                        : RENEWAL_PLAN_BLOCK - 1 - m % RENEWAL_PLAN_BLOCK;
		int64_t far = m + step * (RENEWAL_PLAN_BLOCK - 1);

		if (edge == 0 && (step > 0 ? far <= to : far >= to) &&
		    p->block_min[BLOCK_OF(m)] >= target) {
			m += step * RENEWAL_PLAN_BLOCK;
			continue;
		}
		if (p->count[SLOT(m)] < target)
			return m;
		m += step;
	}
	return -1;
}

int64_t
renewal_plan_place(struct renewal_plan *p, int64_t now, const struct renewal_window *w,
                   uint64_t seed)
{
	int64_t start = w->start > now ? w->start : now, end = w->end, preferred = w->preferred;
	int64_t first, last, want, chosen, left, right, at;
	uint64_t total, minutes;
	uint32_t target;

	if (p == NULL)
		return preferred > now ? preferred : now;
	if (end < start) /* the window has passed: renew now */
		start = end = preferred = now;
	if (preferred < start)
		preferred = start;
	if (preferred > end)
		preferred = end;
	pthread_mutex_lock(&p->lock);
	advance(p, minute_of(now));
	first = minute_of(start);
	last = minute_of(end);
	want = minute_of(preferred);
	if (last >= p->base + RENEWAL_PLAN_MINUTES)
		last = p->base + RENEWAL_PLAN_MINUTES - 1;
	if (first > last) { /* beyond the calendar (not for lifetimes up to 90 days) */
		pthread_mutex_unlock(&p->lock);
		return preferred;
	}
	if (want > last)
		want = last;
	/* A minute's fair share: the window's average load counting this leaf, rounded up. */
	minutes = (uint64_t)(last - first + 1);
	total = load_between(p, first, last);
	target = (uint32_t)((total + minutes) / minutes);
	chosen = want;
	if (p->count[SLOT(want)] >= target) {
		left = nearest_under(p, want - 1, first, -1, target);
		right = nearest_under(p, want + 1, last, +1, target);
		if (left >= 0 && (right < 0 || want - left <= right - want))
			chosen = left;
		else if (right >= 0)
			chosen = right;
	}
	if (chosen == want) {
		at = preferred;
	} else {
		at = chosen * RENEWAL_PLAN_BUCKET + (int64_t)(seed % RENEWAL_PLAN_BUCKET);
		if (at < start)
			at = start;
		if (at > end)
			at = end;
	}
	if (in_ring(p, minute_of(at)))
		increment(p, minute_of(at));
	pthread_mutex_unlock(&p->lock);
	return at;
}

void
renewal_plan_add(struct renewal_plan *p, int64_t now, int64_t renew_after)
{
	if (p == NULL)
		return;
	pthread_mutex_lock(&p->lock);
	advance(p, minute_of(now));
	if (renew_after >= now && in_ring(p, minute_of(renew_after)))
		increment(p, minute_of(renew_after));
	pthread_mutex_unlock(&p->lock);
}

void
renewal_plan_forget(struct renewal_plan *p, int64_t renew_after)
{
	int64_t m = minute_of(renew_after);

	if (p == NULL)
		return;
	pthread_mutex_lock(&p->lock);
	if (in_ring(p, m) && p->count[SLOT(m)] > 0) {
		size_t s = SLOT(m), b = BLOCK_OF(m);

		p->count[s]--;
		p->block_sum[b]--;
		if (p->count[s] < p->block_min[b])
			p->block_min[b] = p->count[s];
	}
	pthread_mutex_unlock(&p->lock);
}

uint32_t
renewal_plan_count(struct renewal_plan *p, int64_t t)
{
	uint32_t n = 0;

	pthread_mutex_lock(&p->lock);
	if (in_ring(p, minute_of(t)))
		n = p->count[SLOT(minute_of(t))];
	pthread_mutex_unlock(&p->lock);
	return n;
}

struct rebuild_ctx {
	struct renewal_plan *plan;
	int64_t now;
};

static int
rebuild_one(void *arg, const struct cert_summary *row)
{
	struct rebuild_ctx *ctx = arg;
	int64_t at = row->renew_after;

	if (at == 0)
		at = row->not_before + (row->not_after - row->not_before) * 2 / 3;
	renewal_plan_add(ctx->plan, ctx->now, at);
	return 0;
}

int
renewal_plan_rebuild(struct renewal_plan *plan, struct store *st, int64_t now, struct ac_err *err)
{
	struct cert_filter filter;
	struct rebuild_ctx ctx = {plan, now};

	memset(&filter, 0, sizeof(filter));
	filter.valid_at = now;
	return store_cert_list(st, &filter, rebuild_one, &ctx, err);
}
