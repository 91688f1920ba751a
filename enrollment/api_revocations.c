/*
 * api_revocations.c - GET /v1/revocations, the revocation feed the mTLS proxy reads, and the
 * watcher that makes revocations take effect in this daemon.
 *
 *   GET /v1/revocations?since=N[&wait=30s]
 *   -> {"sequence":M,"revoked":[{"serial","revoked_at","reason","not_after"}]}
 *
 * The sequence is the issuance log's: every revocation is a "revoked" log entry, and the feed
 * lists the revoked entries with seq in (N, M], M being the log's size when the answer was
 * made (or the last entry listed, when a page of REVOCATIONS_PAGE is full). It is stable
 * across restarts and never goes back; a client passes M as its next since. since=0 gives
 * every revocation ever made. A since beyond the log is refused (the client is talking to
 * another CA, or to one restored from an older backup: it must start again from 0).
 *
 * With wait and nothing new, the connection is suspended (no thread held, as /v1/bundle
 * does) until a revocation is seen or the wait (at most REVOCATIONS_WAIT_MAX) ends; the
 * handler then runs again and answers.
 *
 * The watcher thread looks at the log's head every REVOCATIONS_POLL_MS (and at once when
 * poked after an in-process revocation). When the log grew, it reads the new "revoked"
 * entries, drops those serials from the OCSP cache and resumes every waiter. Revocations made
 * by another process (`agentca revoke` on the same directory) are seen the same way, so the
 * OCSP cache is stale for at most one poll period.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ca/ocsp.h"
#include "common/config.h"
#include "common/log.h"
#include "common/timefmt.h"
#include "enrollment/api_internal.h"
#include "enrollment/waitlist.h"

#define REVOCATIONS_PAGE 1000
#define REVOCATIONS_WAIT_MAX 300 /* seconds */
#define REVOCATIONS_POLL_MS 1000

struct api_revocations {
	struct store *store;         /* borrowed */
	struct ocsp_responder *ocsp; /* borrowed */
	pthread_mutex_t lock;
	pthread_cond_t wake;     /* a poke, a new waiter, stopping */
	struct waitlist waiters; /* parked long-polls (waitlist.h) */
	uint64_t seen_head;      /* log size the watcher has examined */
	uint64_t newest_revoked; /* seq of the newest revoked entry the watcher has seen */
	int poked, stopping;
	pthread_t thread;
	int started;
};

/* One revoked entry found in the log. */
struct revoked_ref {
	uint64_t seq;
	char serial[41];
};

struct revoked_refs {
	struct revoked_ref *items;
	size_t count, cap, max;
	uint64_t upto; /* stop after this seq */
	int failed;
};

/* Collect "revoked" entries (serial and seq) from a log scan. */
static int
collect_revoked(void *arg, const struct log_row *row)
{
	struct revoked_refs *refs = arg;
	json_t *doc, *serial;

	if (row->seq > refs->upto || refs->count >= refs->max)
		return 1;
	doc = json_loadb(row->canonical, row->canonical_len, 0, NULL);
	serial = doc != NULL ? json_object_get(doc, "serial") : NULL;
	if (json_is_string(serial) && json_string_length(serial) < sizeof(refs->items[0].serial)) {
		if (refs->count == refs->cap) {
			size_t cap = refs->cap > 0 ? refs->cap * 2 : 16;
			struct revoked_ref *grown = realloc(refs->items, cap * sizeof(*grown));

			if (grown == NULL) {
				refs->failed = 1;
				json_decref(doc);
				return 1;
			}
			refs->items = grown;
			refs->cap = cap;
		}
		refs->items[refs->count].seq = row->seq;
		snprintf(refs->items[refs->count].serial, sizeof(refs->items[0].serial), "%s",
		         json_string_value(serial));
		refs->count++;
	}
	json_decref(doc);
	return 0;
}

/* The revoked entries with from < seq <= upto, at most max. */
static int
scan_revoked(struct store *st, uint64_t from, uint64_t upto, size_t max, struct revoked_refs *refs,
             struct ac_err *err)
{
	struct log_filter filter;

	memset(refs, 0, sizeof(*refs));
	refs->max = max;
	refs->upto = upto;
	if (from >= upto)
		return 0;
	memset(&filter, 0, sizeof(filter));
	filter.from_seq = from + 1;
	filter.kind = "revoked";
	if (store_log_scan(st, &filter, collect_revoked, refs, err) != 0)
		return -1;
	if (refs->failed)
		return ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
	return 0;
}

/* One look at the log: forget the newly revoked serials in the OCSP cache, wake waiters. */
static void
watch_once(struct api_revocations *rv)
{
	struct revoked_refs refs;
	char hash[LOG_HASH_HEX_LEN + 1];
	struct ac_err err;
	uint64_t head = 0, seen;

	ac_err_clear(&err);
	pthread_mutex_lock(&rv->lock);
	seen = rv->seen_head;
	pthread_mutex_unlock(&rv->lock);
	if (store_log_head(rv->store, &head, hash, &err) != 0) {
		log_warn("revocation_watch_failed", "%s", err.msg);
		return;
	}
	if (head <= seen)
		return;
	if (scan_revoked(rv->store, seen, head, SIZE_MAX, &refs, &err) != 0) {
		log_warn("revocation_watch_failed", "%s", err.msg);
		free(refs.items);
		return;
	}
	for (size_t i = 0; i < refs.count; i++)
		ocsp_responder_forget(rv->ocsp, refs.items[i].serial);
	pthread_mutex_lock(&rv->lock);
	rv->seen_head = head;
	if (refs.count > 0) {
		rv->newest_revoked = refs.items[refs.count - 1].seq;
		waitlist_resume(&rv->waiters, 1, api_now());
	}
	pthread_mutex_unlock(&rv->lock);
	free(refs.items);
}

static void *
watcher_main(void *arg)
{
	struct api_revocations *rv = arg;

	pthread_mutex_lock(&rv->lock);
	while (!rv->stopping) {
		struct timespec until;

		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_nsec += (long)REVOCATIONS_POLL_MS * 1000000L;
		until.tv_sec += until.tv_nsec / 1000000000L;
		until.tv_nsec %= 1000000000L;
		if (!rv->poked)
			pthread_cond_timedwait(&rv->wake, &rv->lock, &until);
		rv->poked = 0;
		if (rv->stopping)
			break;
		pthread_mutex_unlock(&rv->lock);
		watch_once(rv);
		pthread_mutex_lock(&rv->lock);
		waitlist_resume(&rv->waiters, 0, api_now());
	}
	pthread_mutex_unlock(&rv->lock);
	return NULL;
}

struct api_revocations *
api_revocations_new(struct store *st, struct ocsp_responder *ocsp, struct ac_err *err)
{
	struct api_revocations *rv = calloc(1, sizeof(*rv));
	char hash[LOG_HASH_HEX_LEN + 1];
	pthread_condattr_t attr;

	if (rv == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		return NULL;
	}
	rv->store = st;
	rv->ocsp = ocsp;
	pthread_mutex_init(&rv->lock, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&rv->wake, &attr);
	pthread_condattr_destroy(&attr);
	/* The OCSP cache starts empty: only revocations from now on need forgetting. */
	if (store_log_head(st, &rv->seen_head, hash, err) != 0)
		goto fail;
	if (pthread_create(&rv->thread, NULL, watcher_main, rv) != 0) {
		ac_err_set(err, AC_ERR_INTERNAL, "thread_failed",
		           "cannot start the revocation watcher");
		goto fail;
	}
	rv->started = 1;
	return rv;
fail:
	api_revocations_free(rv);
	return NULL;
}

void
api_revocations_poke(struct api_revocations *rv)
{
	if (rv == NULL)
		return;
	pthread_mutex_lock(&rv->lock);
	rv->poked = 1;
	pthread_cond_signal(&rv->wake);
	pthread_mutex_unlock(&rv->lock);
}

void
api_revocations_release(struct api_revocations *rv)
{
	if (rv == NULL)
		return;
	pthread_mutex_lock(&rv->lock);
	rv->stopping = 1;
	waitlist_resume(&rv->waiters, 1, api_now());
	pthread_cond_signal(&rv->wake);
	pthread_mutex_unlock(&rv->lock);
	if (rv->started) {
		pthread_join(rv->thread, NULL);
		rv->started = 0;
	}
}

void
api_revocations_free(struct api_revocations *rv)
{
	if (rv == NULL)
		return;
	api_revocations_release(rv);
	pthread_cond_destroy(&rv->wake);
	pthread_mutex_destroy(&rv->lock);
	free(rv);
}

/* since: a decimal sequence number, 0 when absent. -1 when malformed. */
static int
since_param(struct MHD_Connection *conn, uint64_t *since)
{
	const char *text = api_lookup(conn, MHD_GET_ARGUMENT_KIND, "since");
	char *end = NULL;

	*since = 0;
	if (text == NULL)
		return 0;
	if (text[0] < '0' || text[0] > '9' || strlen(text) > 20)
		return -1;
	*since = strtoull(text, &end, 10);
	return *end == '\0' ? 0 : -1;
}

/* wait: a duration ("30s", "2m"), capped; 0 when absent. -1 when malformed. */
static int
wait_param(struct MHD_Connection *conn, int *seconds)
{
	const char *text = api_lookup(conn, MHD_GET_ARGUMENT_KIND, "wait");
	int64_t n = 0;

	*seconds = 0;
	if (text == NULL)
		return 0;
	if (duration_parse(text, &n) != 0 || n < 0)
		return -1;
	*seconds = n > REVOCATIONS_WAIT_MAX ? REVOCATIONS_WAIT_MAX : (int)n;
	return 0;
}

/* The answer document for refs, whose scan ended at upto. */
static json_t *
feed_document(struct store *st, const struct revoked_refs *refs, uint64_t upto, struct ac_err *err)
{
	json_t *list = json_array(), *doc = NULL;
	uint64_t sequence = upto;

	if (list == NULL)
		goto oom;
	for (size_t i = 0; i < refs->count; i++) {
		struct cert_row row;
		char revoked_at[32], not_after[32];
		json_t *item;

		if (store_cert_get(st, refs->items[i].serial, &row, err) != 0) {
			if (err->code != AC_ERR_NOTFOUND)
				goto fail;
			ac_err_clear(err); /* pruned since: nothing left to refuse */
			continue;
		}
		time_format_rfc3339(row.revoked_at, revoked_at, sizeof(revoked_at));
		time_format_rfc3339(row.not_after, not_after, sizeof(not_after));
		item = json_pack("{s:s, s:s, s:s, s:s}", "serial", row.serial, "revoked_at",
		                 revoked_at, "reason",
		                 row.revoke_reason != NULL ? row.revoke_reason : "unspecified",
		                 "not_after", not_after);
		store_cert_row_free(&row);
		if (item == NULL || json_array_append_new(list, item) != 0)
			goto oom;
	}
	/* A full page: the client continues after the last entry listed. */
	if (refs->count == REVOCATIONS_PAGE)
		sequence = refs->items[refs->count - 1].seq;
	doc = json_pack("{s:I, s:o}", "sequence", (json_int_t)sequence, "revoked", list);
	if (doc == NULL)
		goto oom;
	return doc;
oom:
	ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
fail:
	json_decref(list);
	return NULL;
}

void
handle_revocations(struct api *api, struct MHD_Connection *conn, struct api_request *req,
                   struct api_response *resp)
{
	struct api_revocations *rv = api->revocations;
	struct store *st = api->issuer->store;
	struct revoked_refs refs;
	char hash[LOG_HASH_HEX_LEN + 1], detail[160];
	struct ac_err err;
	uint64_t since = 0, head = 0;
	int wait = 0;
	json_t *doc;

	memset(&refs, 0, sizeof(refs));
	ac_err_clear(&err);
	if (since_param(conn, &since) != 0 || wait_param(conn, &wait) != 0) {
		api_problem(resp, 400, "malformed_request",
		            "since must be a sequence number and wait a duration such as 30s");
		return;
	}
	if (store_log_head(st, &head, hash, &err) != 0)
		goto fail;
	if (since > head) {
		snprintf(detail, sizeof(detail),
		         "since %" PRIu64 " is beyond this CA's log (%" PRIu64
		         " entries): start again from since=0",
		         since, head);
		api_problem(resp, 400, "since_invalid", detail);
		goto out;
	}
	if (scan_revoked(st, since, head, REVOCATIONS_PAGE, &refs, &err) != 0)
		goto fail;
	if (refs.count == 0 && wait > 0 && !req->waited) {
		pthread_mutex_lock(&rv->lock);
		/* Park unless the watcher has seen a revocation after our scan (its wake-up
		 * would then have come before we were parked). */
		if (!rv->stopping && rv->newest_revoked <= head &&
		    waitlist_park(&rv->waiters, conn, api_now() + wait) == 0) {
			req->waited = 1;
			req->suspended = 1;
			pthread_mutex_unlock(&rv->lock);
			goto out;
		}
		pthread_mutex_unlock(&rv->lock);
		if (!rv->stopping) {
			/* Seen meanwhile: scan again, once. */
			req->waited = 1;
			free(refs.items);
			handle_revocations(api, conn, req, resp);
			return;
		}
	}
	doc = feed_document(st, &refs, head, &err);
	if (doc == NULL)
		goto fail;
	api_json_response(resp, 200, doc);
	goto out;
fail:
	api_problem(resp, ac_errcode_http_status(err.code), err.reason, err.msg);
out:
	free(refs.items);
}
