/*
 * renewal_plan.h - the CA's renewal planner: when each leaf is told to renew (renew_after).
 *
 * A leaf issued at I and valid until A (lifetime L = A - I) may be told to renew anywhere in
 * its renewal window [I + L/2, I + 3L/4]; its preferred point is I + 2L/3. The last quarter
 * of the lifetime is never used, so an agent that finds the CA down at its renewal point still
 * has a quarter of the lifetime to retry (the agent backs off from 5 s up to 5 min).
 *
 * The planner keeps a calendar of the renewals already promised, one counter per minute
 * (RENEWAL_PLAN_MINUTES of them, a ring that moves with the clock: about 91 days, longer
 * than the longest window). A new leaf is placed at its preferred minute unless that minute
 * already holds its fair share: the average load of the minutes of its window, rounded up
 * and at least one. Then it goes to the nearest minute of the window under that share. A
 * flock enrolled in the same minute is thus spread evenly over its window instead of
 * renewing in one minute, and a lightly loaded CA gives every leaf its preferred point.
 *
 * While a successor intermediate is planned (supersede_at), the window shrinks to
 * [supersede_at, supersede_at + (preferred - supersede_at) / 2] so agents move to the new
 * intermediate early; the planner spreads them inside that window the same way.
 *
 * Memory is fixed (about 530 KiB), placement costs O(window / 64 + 128) counter reads, and a
 * mutex makes it safe from any thread. The calendar is rebuilt from the store's unexpired
 * certificates at start (renew_after is recorded with each certificate). A leaf replaced
 * or revoked before its renewal point keeps its place in the calendar until that minute
 * passes: the planner over-counts a little, never under-counts.
 */
#ifndef AGENTCA_CA_RENEWAL_PLAN_H
#define AGENTCA_CA_RENEWAL_PLAN_H

#include <stdint.h>

#include "common/error.h"
#include "store/store.h"

#define RENEWAL_PLAN_BUCKET 60         /* seconds per calendar slot */
#define RENEWAL_PLAN_MINUTES (1 << 17) /* slots in the ring: 91 days of minutes */
#define RENEWAL_PLAN_BLOCK 64          /* slots summarized together */

/* Where a leaf may be told to renew, unix seconds: start <= preferred <= end. */
struct renewal_window {
	int64_t start, preferred, end;
};

struct renewal_plan;

struct renewal_plan *renewal_plan_new(struct ac_err *err);
void renewal_plan_free(struct renewal_plan *plan);

/* The window of a leaf issued at issued_at and valid until not_after (see the top of this
 * file). supersede_at (0: none) shrinks it; spread_seed picks the preferred point inside a
 * shrunk window so leaves do not all prefer the switch itself. */
void renewal_window_for(int64_t issued_at, int64_t not_after, int64_t supersede_at,
                        uint64_t spread_seed, struct renewal_window *w);

/* Choose the renewal point of one leaf inside w at time now, record it in the calendar and
 * return it (never before now, never after w->end unless w->end < now). seed spreads the
 * second inside the chosen minute. plan may be NULL: then w->preferred is returned. */
int64_t renewal_plan_place(struct renewal_plan *plan, int64_t now, const struct renewal_window *w,
                           uint64_t seed);

/* Record a renewal point already chosen (a certificate read back at start). */
void renewal_plan_add(struct renewal_plan *plan, int64_t now, int64_t renew_after);

/* Take back a point placed for a leaf that was not issued after all (its commit failed). */
void renewal_plan_forget(struct renewal_plan *plan, int64_t renew_after);

/* The renewals promised in the minute holding t (0 outside the calendar). */
uint32_t renewal_plan_count(struct renewal_plan *plan, int64_t t);

/* Refill the calendar from the store's certificates valid at now: each counts at its
 * recorded renew_after, or at 2/3 of its lifetime when none was recorded. */
int renewal_plan_rebuild(struct renewal_plan *plan, struct store *st, int64_t now,
                         struct ac_err *err);

#endif
