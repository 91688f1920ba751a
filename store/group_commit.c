/*
 * group_commit.c - many callers, one transaction at a time, one fsync per batch.
 *
 * A durable commit costs an fsync, and an fsync costs the same for one unit as for a
 * hundred. So callers queue a request (their units) and the first caller that finds no
 * commit running becomes the leader: it takes every queued unit, up to `max`, commits them
 * in one transaction through the backend's commit_batch, and wakes the callers whose units
 * it committed. While it commits, new requests pile up in the queue; when it is done, it
 * hands the lead to the oldest request still queued, whose caller commits the next batch
 * with whatever has arrived meanwhile. Under load the batch grows by itself; alone, a
 * caller commits its own units on its own thread, as without batching.
 *
 * There is no committer thread: a dedicated one cost every batch a wake-up of that thread
 * and its leader's own wake-up afterwards (two context switches, 4-5 us each plus cache
 * misses, on a 2-core machine where every certificate competes for the same cores). The
 * backend's write connection is still used by one thread at a time: `committing` is set
 * under the lock before a batch and cleared after it, and the lock orders one leader's
 * work before the next's.
 *
 * A request larger than `max` is split across transactions; its caller wakes when the last
 * of its units has been through one (it may lead several of them). Requests live on their
 * callers' stacks: a leader touches a request only under the lock and only while the
 * request still has unfinished units, and its caller returns only after seeing all of them
 * finished under the same lock.
 *
 * Gathering: when the last transaction held more than one unit (callers are arriving
 * concurrently) and fewer units than that are queued, the leader first waits, at most
 * GATHER_WAIT_NS (0.5 ms), until as many are queued as went into the last transaction. On
 * a CPU-bound machine the other callers are still checking and signing their requests;
 * the wait lets them join this transaction instead of paying for one of their own (an
 * fsync, the WAL frames of the same pages, the wake-ups). A lone caller (last batch of one)
 * never waits, so one client's latency is unchanged. Measured: with 2 concurrent callers,
 * transactions went from 1.2 to 2.0 units and CPU per certificate from 382 to 344 us; the
 * daemon's CPU per enrollment at 16 connections fell by about 5%.
 *
 * Each request carries its own semaphore, posted when its last unit has finished or when it
 * is handed the lead: with 64 callers waiting and a batch of 11, a commit wakes the 11 it
 * served (and one next leader), not all 64. The leader posts after it has released the
 * lock, so a woken caller does not run straight into the lock its waker still holds (with
 * a condition variable signalled under the lock, about one wake-up in three blocked again
 * on the mutex: a second futex wait and context switch per certificate at 64 callers).
 * A request lives on its caller's stack, so every post is counted under the lock when it is
 * decided (`posts`), and the caller, before it returns, takes as many as were counted: no
 * post can reach a semaphore that is gone.
 *
 * Invariants, under `lock`: the queue holds the requests that still have units not yet
 * taken (head to tail, in arrival order); taken <= n and finished <= taken for every
 * request; whenever `committing` is 0 and the queue is not empty, the head's caller has been
 * signalled (or is the caller about to lead); after `stopping` is set no request is queued,
 * and group_commit_stop() returns once the queue is empty and no batch runs, so everything
 * accepted before store_close() is committed.
 */
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store/store_impl.h"

/* How long a leader waits at most for a batch as large as the last one (see the top). */
#define GATHER_WAIT_NS 500000L

struct gc_request {
	struct store_write **w;
	size_t n;
	size_t taken;       /* units handed to the committer */
	size_t finished;    /* units whose transaction has ended */
	sem_t wake;         /* posted when finished reaches n, or when handed the lead */
	size_t posts;       /* posts decided (under lock), each made after the lock is released */
	size_t taken_posts; /* posts the caller has waited for */
	struct gc_request *next;
};

struct group_commit {
	struct store *st;
	size_t max;
	pthread_mutex_t lock;
	pthread_cond_t idle; /* group_commit_stop waits here for the queue to drain */
	struct gc_request *head, *tail;
	int committing;       /* a leader is running a batch */
	size_t queued_units;  /* units queued and not yet taken */
	size_t last_batch;    /* units in the last transaction */
	size_t gather_target; /* while leader_waiting: the queue size that ends the wait */
	int leader_waiting;
	pthread_cond_t arrive; /* the waiting leader is signalled here when gather_target is met */
	int stopping;
	/* the batch being committed: units and the request each came from (the leader only) */
	struct store_write **batch;
	struct gc_request **owner;
	/* requests to post once the lock is released (the leader only): at most one per unit of
	 * the batch, plus the next leader */
	struct gc_request **to_wake;
	size_t to_wake_count;
	struct store_stats stats;
};

/* Run one transaction over batch[0..n) and make sure every unit holds an outcome. */
static void
commit_batch(struct group_commit *gc, size_t n, struct store_stats *delta)
{
	struct timespec t0, t1;
	struct ac_err err;
	size_t i;
	int rc;

	ac_err_clear(&err);
	for (i = 0; i < n; i++) {
		ac_err_clear(&gc->batch[i]->result);
		gc->batch[i]->seq = 0;
		gc->batch[i]->hash[0] = '\0';
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	rc = gc->st->ops->commit_batch(gc->st, gc->batch, n, &err);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (rc != 0 && err.code == AC_OK)
		ac_err_set(&err, AC_ERR_INTERNAL, "store_error",
		           "store %s: transaction failed without a reason", gc->st->ops->name);
	memset(delta, 0, sizeof(*delta));
	delta->transactions = 1;
	delta->transactions_failed = rc != 0;
	delta->commit_seconds =
	    (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	delta->units = n;
	for (i = 0; i < n; i++) {
		struct store_write *w = gc->batch[i];

		/* A failed transaction fails every unit, whatever the backend filled in. */
		if (rc != 0 && w->result.code == AC_OK) {
			ac_err_set(&w->result, err.code, err.reason, "%s", err.msg);
			w->seq = 0;
			w->hash[0] = '\0';
		}
		if (w->result.code != AC_OK)
			delta->units_failed++;
	}
}

/* Under the lock: r is to be posted once the lock is released (wake_posted). */
static void
wake_later(struct group_commit *gc, struct gc_request *r)
{
	r->posts++;
	gc->to_wake[gc->to_wake_count++] = r;
}

/* With the lock released: post every request wake_later named. Each request is still alive:
 * its caller waits for every post counted in r->posts before it returns. */
static void
wake_posted(struct gc_request **list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		sem_post(&list[i]->wake);
}

/* Called by a leader with the lock held and the queue not empty: take queued units, oldest
 * first, up to max, commit them with the lock released, then count them finished and name
 * the requests that are done for wake_posted. Returns with the lock held. */
static void
lead_one_batch(struct group_commit *gc, struct gc_request *self)
{
	struct store_stats delta;
	struct gc_request *r;
	size_t n = 0, i;

	gc->committing = 1;
	if (gc->last_batch > 1 && gc->queued_units < gc->last_batch) {
		struct timespec until;

		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_nsec += GATHER_WAIT_NS;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		gc->gather_target = gc->last_batch;
		gc->leader_waiting = 1;
		while (gc->queued_units < gc->gather_target &&
		       pthread_cond_timedwait(&gc->arrive, &gc->lock, &until) == 0)
			;
		gc->leader_waiting = 0;
	}
	while (gc->head != NULL && n < gc->max) {
		r = gc->head;
		while (r->taken < r->n && n < gc->max) {
			gc->batch[n] = r->w[r->taken++];
			gc->owner[n++] = r;
		}
		if (r->taken == r->n) {
			gc->head = r->next;
			if (gc->head == NULL)
				gc->tail = NULL;
		}
	}

	gc->queued_units -= n;
	gc->last_batch = n;
	pthread_mutex_unlock(&gc->lock);
	commit_batch(gc, n, &delta);
	pthread_mutex_lock(&gc->lock);

	/* A request's units sit next to each other in the batch: wake each request once, when
	 * its last unit is through (not the leader's own: it is not waiting). */
	for (i = 0; i < n; i++) {
		r = gc->owner[i];
		if (++r->finished == r->n && r != self)
			wake_later(gc, r);
	}
	gc->stats.transactions += delta.transactions;
	gc->stats.transactions_failed += delta.transactions_failed;
	gc->stats.units += delta.units;
	gc->stats.units_failed += delta.units_failed;
	gc->stats.commit_seconds += delta.commit_seconds;
	if (delta.commit_seconds > gc->stats.commit_seconds_max)
		gc->stats.commit_seconds_max = delta.commit_seconds;
	if (n > gc->stats.largest_batch)
		gc->stats.largest_batch = n;
	gc->committing = 0;
}

/* Called with the lock held after a batch: pass the lead to the oldest queued request (it
 * is posted with the others), or tell a stopping store that all is done. */
static void
hand_over(struct group_commit *gc, struct gc_request *self)
{
	if (gc->head != NULL && gc->head != self)
		wake_later(gc, gc->head);
	else if (gc->head == NULL && gc->stopping)
		pthread_cond_broadcast(&gc->idle);
}

/* Set up group commit over st; at most max units go into one transaction. */
struct group_commit *
group_commit_start(struct store *st, size_t max, struct ac_err *err)
{
	struct group_commit *gc = NULL, *started = NULL;

	if ((gc = calloc(1, sizeof(*gc))) == NULL ||
	    (gc->batch = calloc(max, sizeof(*gc->batch))) == NULL ||
	    (gc->owner = calloc(max, sizeof(*gc->owner))) == NULL ||
	    (gc->to_wake = calloc(max + 1, sizeof(*gc->to_wake))) == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory",
		           "group committer: out of memory for %zu units", max);
		goto out;
	}
	gc->st = st;
	gc->max = max;
	/* Default-attribute mutexes and condition variables cannot fail to initialise on Linux. */
	pthread_mutex_init(&gc->lock, NULL);
	pthread_cond_init(&gc->idle, NULL);
	{
		pthread_condattr_t attr;

		/* The gathering wait is timed on the monotonic clock: a step of the wall clock
		 * must not stretch it. */
		pthread_condattr_init(&attr);
		pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
		pthread_cond_init(&gc->arrive, &attr);
		pthread_condattr_destroy(&attr);
	}
	started = gc;
	gc = NULL;
out:
	if (gc != NULL) {
		free(gc->to_wake);
		free(gc->owner);
		free(gc->batch);
		free(gc);
	}
	return started;
}

/* Wait for one post of r's semaphore (a signal may interrupt the wait: wait again). */
static void
wait_posted(struct gc_request *r)
{
	while (sem_wait(&r->wake) != 0 && errno == EINTR)
		;
}

/* Queue the caller's units; then, until all of them are through, lead a batch whenever no
 * other caller is committing, and otherwise sleep on the request's own semaphore. The
 * request lives on this stack frame: it is destroyed only after its last unit has been
 * counted under the lock and every post counted for it has been taken. */
int
group_commit_submit(struct group_commit *gc, struct store_write **w, size_t n)
{
	struct gc_request r = {.w = w, .n = n};
	struct gc_request *wake[128], **wake_list;
	size_t i, wake_count, pending;
	int rc = 0;

	if (n == 0)
		return 0;
	/* An unshared semaphore cannot fail to initialise on Linux. */
	sem_init(&r.wake, 0, 0);
	pthread_mutex_lock(&gc->lock);
	if (gc->stopping) {
		pthread_mutex_unlock(&gc->lock);
		for (i = 0; i < n; i++) {
			ac_err_clear(&w[i]->result);
			ac_err_set(&w[i]->result, AC_ERR_UNAVAILABLE, "store_closing",
			           "the store is closing");
		}
		rc = -1;
		goto out;
	}
	if (gc->tail != NULL)
		gc->tail->next = &r;
	else
		gc->head = &r;
	gc->tail = &r;
	gc->queued_units += n;
	if (gc->leader_waiting && gc->queued_units >= gc->gather_target)
		pthread_cond_signal(&gc->arrive);
	while (r.finished < r.n) {
		if (!gc->committing && gc->head != NULL) {
			gc->to_wake_count = 0;
			lead_one_batch(gc, &r);
			hand_over(gc, &r);
			/* Copy the list out: once the lock is released another leader reuses it. */
			wake_count = gc->to_wake_count;
			wake_list = wake_count <= sizeof(wake) / sizeof(wake[0])
			                ? wake
			                : malloc(wake_count * sizeof(*wake_list));
			if (wake_list == NULL) {
				/* Out of memory: post under the lock, as slow as correct. */
				wake_posted(gc->to_wake, wake_count);
				continue;
			}
			memcpy(wake_list, gc->to_wake, wake_count * sizeof(*wake_list));
			pthread_mutex_unlock(&gc->lock);
			wake_posted(wake_list, wake_count);
			if (wake_list != wake)
				free(wake_list);
			pthread_mutex_lock(&gc->lock);
		} else {
			pthread_mutex_unlock(&gc->lock);
			wait_posted(&r);
			pthread_mutex_lock(&gc->lock);
			r.taken_posts++;
		}
	}
	pending = r.posts - r.taken_posts;
	pthread_mutex_unlock(&gc->lock);
	/* Posts decided for this request and not yet taken (a lead handed over while another
	 * leader committed its units): wait for them, so none reaches a destroyed semaphore. */
	while (pending-- > 0)
		wait_posted(&r);

	for (i = 0; i < n; i++)
		if (w[i]->result.code != AC_OK)
			rc = -1;
out:
	sem_destroy(&r.wake);
	return rc;
}

/* Refuse new requests, wait until everything queued has been committed, free everything. */
void
group_commit_stop(struct group_commit *gc)
{
	if (gc == NULL)
		return;
	pthread_mutex_lock(&gc->lock);
	gc->stopping = 1;
	while (gc->head != NULL || gc->committing)
		pthread_cond_wait(&gc->idle, &gc->lock);
	pthread_mutex_unlock(&gc->lock);

	pthread_cond_destroy(&gc->arrive);
	pthread_cond_destroy(&gc->idle);
	pthread_mutex_destroy(&gc->lock);
	free(gc->to_wake);
	free(gc->owner);
	free(gc->batch);
	free(gc);
}

/* A consistent copy of the counters. */
void
group_commit_stats(struct group_commit *gc, struct store_stats *out)
{
	pthread_mutex_lock(&gc->lock);
	*out = gc->stats;
	pthread_mutex_unlock(&gc->lock);
}
