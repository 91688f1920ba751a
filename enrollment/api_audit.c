/*
 * api_audit.c - the auditor's routes: the certificate list, the signed tree head, inclusion
 * and consistency proofs, and the streamed export. Auditors and admins may call them;
 * nobody else.
 *
 * The export streams: a thread runs audit_export() into a pipe whose read end libmicrohttpd
 * sends as the body, so memory stays constant whatever the size of the log, and a client
 * that goes away stops the export (the writer sees EPIPE). api_stop() waits for these
 * threads after libmicrohttpd has closed their pipes.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ca/audit.h"
#include "ca/audit_keys.h"
#include "common/hex.h"
#include "common/log.h"
#include "common/timefmt.h"
#include "enrollment/api_internal.h"
#include "store/merkle.h"

struct api_exports {
	pthread_mutex_t lock;
	pthread_cond_t done;
	int running;
};

struct export_job {
	struct api_exports *exports;
	struct store *store;
	struct audit_export_options opts;
	char kind[64];
	char subject[512];
	int fd;
};

struct api_exports *
api_exports_new(void)
{
	struct api_exports *x = calloc(1, sizeof(*x));

	if (x == NULL)
		return NULL;
	pthread_mutex_init(&x->lock, NULL);
	pthread_cond_init(&x->done, NULL);
	return x;
}

void
api_exports_wait_and_free(struct api_exports *x)
{
	if (x == NULL)
		return;
	pthread_mutex_lock(&x->lock);
	while (x->running > 0)
		pthread_cond_wait(&x->done, &x->lock);
	pthread_mutex_unlock(&x->lock);
	pthread_cond_destroy(&x->done);
	pthread_mutex_destroy(&x->lock);
	free(x);
}

/* Only auditors and admins; 1 when the request may go on, else resp is set. */
static int
auditor_only(struct api *api, struct MHD_Connection *conn, struct api_response *resp)
{
	struct caller caller;

	if (api_resolve_caller(api, conn, &caller, resp) != 0)
		return 0;
	if (caller.role == CALLER_AUDITOR || caller.role == CALLER_ADMIN)
		return 1;
	api_problem(resp, caller.role == CALLER_NONE ? 401 : 403, "not_allowed",
	            "the audit routes are for auditors and admins");
	return 0;
}

/* An unsigned integer query argument; -1 when absent, -2 when malformed. */
static int64_t
query_uint(struct MHD_Connection *conn, const char *name)
{
	const char *text = api_lookup(conn, MHD_GET_ARGUMENT_KIND, name);
	char *end;
	unsigned long long v;

	if (text == NULL)
		return -1;
	errno = 0;
	v = strtoull(text, &end, 10);
	if (*text == '\0' || *end != '\0' || errno != 0 || v > (unsigned long long)INT64_MAX)
		return -2;
	return (int64_t)v;
}

/* Hashes as a JSON array of hex strings. */
static json_t *
hashes_json(unsigned char hashes[][MERKLE_HASH_LEN], size_t n)
{
	json_t *arr = json_array();

	for (size_t i = 0; arr != NULL && i < n; i++) {
		char hex[2 * MERKLE_HASH_LEN + 1];

		hex_encode(hashes[i], MERKLE_HASH_LEN, hex);
		json_array_append_new(arr, json_string(hex));
	}
	return arr;
}

/* The current signed tree head, as JSON (new reference), or NULL with resp set. */
static json_t *
current_sth(struct api *api, struct sth *sth, struct api_response *resp)
{
	struct ac_err err;

	ac_err_clear(&err);
	if (audit_sth_make(api->issuer->store, api->audit_key, sth, &err) != 0) {
		api_problem(resp, ac_errcode_http_status(err.code), err.reason, err.msg);
		return NULL;
	}
	return sth_to_json(sth);
}

void
handle_audit_sth(struct api *api, struct MHD_Connection *conn, struct api_request *req,
                 struct api_response *resp)
{
	struct sth sth;
	json_t *doc;

	(void)req;
	if (!auditor_only(api, conn, resp))
		return;
	doc = current_sth(api, &sth, resp);
	if (doc != NULL)
		api_json_response(resp, 200, doc);
}

/*
 * GET /v1/audit/proof?serial=HEX or ?index=N [&size=M]: the inclusion proof of one entry (the
 * one that recorded the certificate, for a serial) in the tree of M entries (default: the
 * current signed tree head, which is returned with it).
 */
void
handle_audit_proof(struct api *api, struct MHD_Connection *conn, struct api_request *req,
                   struct api_response *resp)
{
	const char *serial = api_lookup(conn, MHD_GET_ARGUMENT_KIND, "serial");
	unsigned char path[MERKLE_PROOF_MAX][MERKLE_HASH_LEN];
	int64_t index = query_uint(conn, "index"), size = query_uint(conn, "size");
	json_t *sth_doc = NULL;
	struct ac_err err;
	struct sth sth;
	size_t len = 0;

	(void)req;
	ac_err_clear(&err);
	if (!auditor_only(api, conn, resp))
		return;
	if (index == -2 || size == -2 || (serial == NULL) == (index == -1)) {
		api_problem(resp, 400, "malformed_request",
		            "give exactly one of ?serial=HEX or ?index=N (and optionally &size=M)");
		return;
	}
	if (serial != NULL) {
		struct cert_row row;

		if (store_cert_get(api->issuer->store, serial, &row, &err) != 0) {
			api_problem(resp, ac_errcode_http_status(err.code), err.reason, err.msg);
			return;
		}
		index = (int64_t)row.log_seq - 1;
		store_cert_row_free(&row);
	}
	if (size == -1) {
		sth_doc = current_sth(api, &sth, resp);
		if (sth_doc == NULL)
			return;
		size = (int64_t)sth.tree_size;
	}
	if (index >= size) {
		json_decref(sth_doc);
		api_problem(resp, 400, "index_out_of_range",
		            "the entry is not in a tree of that size");
		return;
	}
	if (store_inclusion_proof(api->issuer->store, (uint64_t)index, (uint64_t)size, path, &len,
	                          &err) != 0) {
		json_decref(sth_doc);
		api_problem(resp, ac_errcode_http_status(err.code), err.reason, err.msg);
		return;
	}
	api_json_response(resp, 200,
	                  json_pack("{s:I, s:I, s:I, s:o, s:o*}", "leaf_index", (json_int_t)index,
	                            "seq", (json_int_t)(index + 1), "tree_size", (json_int_t)size,
	                            "proof", hashes_json(path, len), "sth", sth_doc));
}

/* GET /v1/audit/consistency?from=M[&to=N]: the proof that the tree of N entries (default:
 * the current signed tree head, returned with it) extends the tree of M. */
void
handle_audit_consistency(struct api *api, struct MHD_Connection *conn, struct api_request *req,
                         struct api_response *resp)
{
	unsigned char proof[MERKLE_PROOF_MAX][MERKLE_HASH_LEN];
	int64_t from = query_uint(conn, "from"), to = query_uint(conn, "to");
	json_t *sth_doc = NULL;
	struct ac_err err;
	struct sth sth;
	size_t len = 0;

	(void)req;
	ac_err_clear(&err);
	if (!auditor_only(api, conn, resp))
		return;
	if (from < 0 || to == -2) {
		api_problem(resp, 400, "malformed_request", "give ?from=M (and optionally &to=N)");
		return;
	}
	if (to == -1) {
		sth_doc = current_sth(api, &sth, resp);
		if (sth_doc == NULL)
			return;
		to = (int64_t)sth.tree_size;
	}
	if (from > to || store_consistency_proof(api->issuer->store, (uint64_t)from, (uint64_t)to,
	                                         proof, &len, &err) != 0) {
		json_decref(sth_doc);
		if (err.code == AC_OK)
			ac_err_set(&err, AC_ERR_INVALID, "tree_size_invalid",
			           "from must not be larger than to");
		api_problem(resp, ac_errcode_http_status(err.code), err.reason, err.msg);
		return;
	}
	api_json_response(resp, 200,
	                  json_pack("{s:I, s:I, s:o, s:o*}", "from", (json_int_t)from, "to",
	                            (json_int_t)to, "proof", hashes_json(proof, len), "sth",
	                            sth_doc));
}

/* Write to the pipe; -1 when the reader went away (EPIPE) or on another error. */
static int
write_pipe(void *arg, const char *data, size_t len)
{
	struct export_job *job = arg;

	while (len > 0) {
		ssize_t n = write(job->fd, data, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

static void *
export_main(void *arg)
{
	struct export_job *job = arg;
	struct api_exports *x = job->exports;
	struct ac_err err;

	ac_err_clear(&err);
	if (audit_export(job->store, &job->opts, write_pipe, job, &err) != 0)
		log_info("audit_export_ended", "export stopped: %s", err.msg);
	close(job->fd);
	free(job);
	pthread_mutex_lock(&x->lock);
	x->running--;
	pthread_cond_broadcast(&x->done);
	pthread_mutex_unlock(&x->lock);
	return NULL;
}

/* A query argument copied into buf; 0 when absent, -1 when too long. */
static int
query_copy(struct MHD_Connection *conn, const char *name, char *buf, size_t len)
{
	const char *v = api_lookup(conn, MHD_GET_ARGUMENT_KIND, name);

	buf[0] = '\0';
	if (v == NULL)
		return 0;
	if (strlen(v) >= len)
		return -1;
	strcpy(buf, v);
	return 1;
}

/*
 * GET /v1/audit/export?format=jsonl|csv&since=T&until=T&kind=K&subject=PREFIX&proofs=1
 * &consistency_from=SIZE: the same export as `agentca audit export`, streamed.
 */
void
handle_audit_export(struct api *api, struct MHD_Connection *conn, struct api_request *req,
                    struct api_response *resp)
{
	const char *format = api_lookup(conn, MHD_GET_ARGUMENT_KIND, "format");
	const char *since = api_lookup(conn, MHD_GET_ARGUMENT_KIND, "since");
	const char *until = api_lookup(conn, MHD_GET_ARGUMENT_KIND, "until");
	const char *proofs = api_lookup(conn, MHD_GET_ARGUMENT_KIND, "proofs");
	struct export_job *job;
	pthread_attr_t attr;
	pthread_t thread;
	int fds[2], rc;

	(void)req;
	if (!auditor_only(api, conn, resp))
		return;
	job = calloc(1, sizeof(*job));
	if (job == NULL) {
		api_problem(resp, 500, "internal_error", "out of memory");
		return;
	}
	job->exports = api->exports;
	job->store = api->issuer->store;
	job->opts.sth_key = api->audit_key;
	if ((format != NULL && audit_format_parse(format, &job->opts.format) != 0) ||
	    (since != NULL && time_parse(since, time_now(), &job->opts.since) != 0) ||
	    (until != NULL && time_parse(until, time_now(), &job->opts.until) != 0) ||
	    query_copy(conn, "kind", job->kind, sizeof(job->kind)) < 0 ||
	    query_copy(conn, "subject", job->subject, sizeof(job->subject)) < 0) {
		free(job);
		api_problem(resp, 400, "malformed_request",
		            "format must be jsonl or csv; since and until times (RFC 3339, a date, "
		            "unix seconds or a duration ago)");
		return;
	}
	job->opts.kind = job->kind[0] != '\0' ? job->kind : NULL;
	job->opts.subject_prefix = job->subject[0] != '\0' ? job->subject : NULL;
	job->opts.proofs = proofs != NULL && strcmp(proofs, "0") != 0;
	{
		int64_t from = query_uint(conn, "consistency_from");

		if (from == -2) {
			free(job);
			api_problem(resp, 400, "malformed_request",
			            "consistency_from must be a tree size");
			return;
		}
		job->opts.consistency = from >= 0;
		job->opts.consistency_from = from >= 0 ? (uint64_t)from : 0;
	}
	if (pipe2(fds, O_CLOEXEC) != 0) {
		free(job);
		api_problem(resp, 503, "store_unavailable", "cannot start the export");
		return;
	}
	job->fd = fds[1];
	/* The thread owns job from here on: take what the answer needs first. */
	resp->content_type =
	    job->opts.format == AUDIT_CSV ? "text/csv; charset=utf-8" : "application/jsonl";
	pthread_mutex_lock(&api->exports->lock);
	api->exports->running++;
	pthread_mutex_unlock(&api->exports->lock);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	rc = pthread_create(&thread, &attr, export_main, job);
	pthread_attr_destroy(&attr);
	if (rc != 0) {
		pthread_mutex_lock(&api->exports->lock);
		api->exports->running--;
		pthread_mutex_unlock(&api->exports->lock);
		close(fds[0]);
		close(fds[1]);
		free(job);
		resp->content_type = NULL;
		api_problem(resp, 503, "store_unavailable", "cannot start the export");
		return;
	}
	resp->status = 200;
	resp->has_stream = 1;
	resp->stream_fd = fds[0];
}

#define CERT_LIST_DEFAULT 1000
#define CERT_LIST_MAX 10000

struct cert_list {
	json_t *items;
	char last[65];
	int64_t count;
};

/* Add one certificate to the listing. */
static int
list_one(void *arg, const struct cert_summary *c)
{
	struct cert_list *l = arg;
	char nb[32], na[32], ra[32];
	json_t *item;

	time_format_rfc3339(c->not_before, nb, sizeof(nb));
	time_format_rfc3339(c->not_after, na, sizeof(na));
	item = json_pack("{s:s, s:s, s:s, s:s, s:i}", "serial", c->serial, "subject", c->subject,
	                 "not_before", nb, "not_after", na, "depth", c->depth);
	if (item == NULL)
		return 1;
	if (c->parent != NULL)
		json_object_set_new(item, "parent", json_string(c->parent));
	if (c->revoked_at != 0) {
		time_format_rfc3339(c->revoked_at, ra, sizeof(ra));
		json_object_set_new(item, "revoked_at", json_string(ra));
		if (c->revoke_reason != NULL)
			json_object_set_new(item, "revoke_reason", json_string(c->revoke_reason));
	}
	json_array_append_new(l->items, item);
	snprintf(l->last, sizeof(l->last), "%s", c->serial);
	l->count++;
	return 0;
}

/*
 * GET /v1/certificates?subject=PREFIX&valid=1&after=SERIAL&limit=N: the certificates this CA
 * issued, in serial order, a page at a time ("next_after" continues the listing).
 */
void
handle_certificates(struct api *api, struct MHD_Connection *conn, struct api_request *req,
                    struct api_response *resp)
{
	const char *valid = api_lookup(conn, MHD_GET_ARGUMENT_KIND, "valid");
	int64_t limit = query_uint(conn, "limit");
	struct cert_filter f;
	struct cert_list l;
	struct ac_err err;
	json_t *doc;

	(void)req;
	if (!auditor_only(api, conn, resp))
		return;
	if (limit == -2 || limit == 0) {
		api_problem(resp, 400, "malformed_request", "limit must be a positive integer");
		return;
	}
	memset(&f, 0, sizeof(f));
	memset(&l, 0, sizeof(l));
	ac_err_clear(&err);
	f.subject_prefix = api_lookup(conn, MHD_GET_ARGUMENT_KIND, "subject");
	f.after_serial = api_lookup(conn, MHD_GET_ARGUMENT_KIND, "after");
	f.valid_at = valid != NULL && strcmp(valid, "0") != 0 ? time_now() : 0;
	f.limit = limit < 0 ? CERT_LIST_DEFAULT : (limit > CERT_LIST_MAX ? CERT_LIST_MAX : limit);
	l.items = json_array();
	if (l.items == NULL || store_cert_list(api->issuer->store, &f, list_one, &l, &err) != 0) {
		json_decref(l.items);
		if (err.code == AC_OK)
			ac_err_set(&err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		api_problem(resp, ac_errcode_http_status(err.code), err.reason, err.msg);
		return;
	}
	doc = json_pack("{s:o, s:I}", "certificates", l.items, "count", (json_int_t)l.count);
	if (doc != NULL && l.count == f.limit)
		json_object_set_new(doc, "next_after", json_string(l.last));
	api_json_response(resp, 200, doc);
}
