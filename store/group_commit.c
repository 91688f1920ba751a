/*
 * group_commit.c - many callers, one committer thread, one fsync per batch.
 *
 * A durable commit costs an fsync, and an fsync costs the same for one unit as for a
 * hundred. So callers do not commit: they queue a request (their units) and sleep. The
 * committer thread takes every queued unit, up to `max`, commits them in one transaction
 * through the backend's commit_batch, and wakes the callers. While it commits, new requests
 * pile up in the queue and go into the next transaction together. Under load the batch
 * grows by itself; alone, a caller pays for exactly one transaction, as without batching.
 *
 * A request larger than `max` is split across transactions; its caller wakes when the last
 * of its units has been through one. Requests live on their callers' stacks: the committer
 * touches a request only under the lock and only while the request still has unfinished
 * units, and its caller returns only after seeing all of them finished under the same lock.
 *
 * Each request carries its own condition variable, and the committer signals only the
 * requests whose last unit has just finished: with 64 callers waiting and a batch of 11, a
 * commit wakes the 11 it served, not all 64 to find 53 of them with nothing to do.
 *
 * Invariants, under `lock`: the queue holds the requests that still have units not yet
 * taken (head to tail, in arrival order); taken <= n and finished <= taken for every
 * request; after `stopping` is set no request is queued, and the thread exits once the queue
 * is empty, so everything accepted before store_close() is committed.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store/store_impl.h"

struct gc_request {
	struct store_write **w;
	size_t n;
	size_t taken;        /* units handed to the committer */
	size_t finished;     /* units whose transaction has ended */
	pthread_cond_t done; /* signalled (under lock) when finished reaches n */
	struct gc_request *next;
};

struct group_commit {
	struct store *st;
	size_t max;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t work; /* the committer waits here for requests or stopping */
	struct gc_request *head, *tail;
	int stopping;
	/* the batch being committed: units and the request each came from (committer only) */
	struct store_write **batch;
	struct gc_request **owner;
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

/* The committer thread: take what is queued, commit it in one transaction, wake the
 * requests it finished; until stopping is set and the queue is empty. */
static void *
committer_main(void *arg)
{
	struct group_commit *gc = arg;
	struct store_stats delta;
	struct gc_request *r;
	size_t n, i;

	pthread_mutex_lock(&gc->lock);
	for (;;) {
		while (gc->head == NULL && !gc->stopping)
			pthread_cond_wait(&gc->work, &gc->lock);
		if (gc->head == NULL)
			break; /* stopping, and nothing left */

		/* Take queued units, oldest first, up to max. */
		n = 0;
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

		pthread_mutex_unlock(&gc->lock);
		commit_batch(gc, n, &delta);
		pthread_mutex_lock(&gc->lock);

		/* A request's units sit next to each other in the batch: wake each request
		 * once, when its last unit is through. */
		for (i = 0; i < n; i++) {
			r = gc->owner[i];
			if (++r->finished == r->n)
				pthread_cond_signal(&r->done);
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
	}
	pthread_mutex_unlock(&gc->lock);
	return NULL;
}

/* Start the committer thread over st; at most max units go into one transaction. */
struct group_commit *
group_commit_start(struct store *st, size_t max, struct ac_err *err)
{
	struct group_commit *gc = NULL, *started = NULL;
	int locks = 0, rc;

	if ((gc = calloc(1, sizeof(*gc))) == NULL ||
	    (gc->batch = calloc(max, sizeof(*gc->batch))) == NULL ||
	    (gc->owner = calloc(max, sizeof(*gc->owner))) == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory",
		           "group committer: out of memory for %zu units", max);
		goto out;
	}
	gc->st = st;
	gc->max = max;
	/* Default-attribute mutexes and condition variables cannot fail to initialise on Linux. */
	pthread_mutex_init(&gc->lock, NULL);
	pthread_cond_init(&gc->work, NULL);
	locks = 1;
	if ((rc = pthread_create(&gc->thread, NULL, committer_main, gc)) != 0) {
		ac_err_set(err, AC_ERR_INTERNAL, "store_error",
		           "group committer: cannot start thread: %s", strerror(rc));
		goto out;
	}
	started = gc;
	gc = NULL;
out:
	if (gc != NULL) {
		if (locks) {
			pthread_cond_destroy(&gc->work);
			pthread_mutex_destroy(&gc->lock);
		}
		free(gc->owner);
		free(gc->batch);
		free(gc);
	}
	return started;
}

/* Queue the caller's units and sleep on the request's own condition variable until the
 * committer has been through all of them. The request lives on this stack frame: it is
 * destroyed only after the committer, under the lock, has counted its last unit. */
int
group_commit_submit(struct group_commit *gc, struct store_write **w, size_t n)
{
	struct gc_request r = {.w = w, .n = n};
	size_t i;
	int rc = 0;

	if (n == 0)
		return 0;
	/* A default-attribute condition variable cannot fail to initialise on Linux. */
	pthread_cond_init(&r.done, NULL);
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
	pthread_cond_signal(&gc->work);
	while (r.finished < r.n)
		pthread_cond_wait(&r.done, &gc->lock);
	pthread_mutex_unlock(&gc->lock);

	for (i = 0; i < n; i++)
		if (w[i]->result.code != AC_OK)
			rc = -1;
out:
	pthread_cond_destroy(&r.done);
	return rc;
}

/* Let the committer finish what is queued, join it and free everything. */
void
group_commit_stop(struct group_commit *gc)
{
	if (gc == NULL)
		return;
	pthread_mutex_lock(&gc->lock);
	gc->stopping = 1;
	pthread_cond_signal(&gc->work);
	pthread_mutex_unlock(&gc->lock);
	pthread_join(gc->thread, NULL);

	pthread_cond_destroy(&gc->work);
	pthread_mutex_destroy(&gc->lock);
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
