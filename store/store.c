/*
 * store.c - the store's front door: picks a backend, owns the group committer, dispatches.
 *
 * Callers hold a struct store and call the functions of store.h; which database sits behind
 * it is decided once, here, from the path (a table of backends). Writes go through the
 * group committer (group_commit.c); reads go straight to the backend, which must allow them
 * from any thread while the committer writes.
 */
#include <stdlib.h>
#include <string.h>

#include "store/store_impl.h"

#define GROUP_COMMIT_MAX_LIMIT 65536

/* The backends, first match wins. A NULL open names a backend this build does not have. */
static const struct backend {
	const char *prefix; /* a path starting with this picks the backend */
	const char *name;
	int (*open)(struct store *st, const struct store_options *opts, struct ac_err *err);
} backends[] = {
    {"postgres://", "postgres", NULL},
    {"postgresql://", "postgres", NULL},
    {"", "sqlite", store_sqlite_open}, /* a file name */
};

void
store_options_defaults(struct store_options *opts)
{
	memset(opts, 0, sizeof(*opts));
	opts->busy_timeout_ms = 5000;
	opts->group_commit_max = 256;
}

struct store *
store_open(const struct store_options *opts, struct ac_err *err)
{
	const struct backend *be = NULL;
	struct store *st = NULL, *opened = NULL;
	size_t i;

	if (opts == NULL || opts->path == NULL || opts->path[0] == '\0') {
		ac_err_set(err, AC_ERR_INVALID, "store_path_missing",
		           "store: no database path given");
		goto out;
	}
	if (opts->group_commit_max < 1 || opts->group_commit_max > GROUP_COMMIT_MAX_LIMIT) {
		ac_err_set(err, AC_ERR_INVALID, "store_options_invalid",
		           "%s: group_commit_max must be between 1 and %d, not %lld", opts->path,
		           GROUP_COMMIT_MAX_LIMIT, (long long)opts->group_commit_max);
		goto out;
	}
	if (opts->busy_timeout_ms < 0) {
		ac_err_set(err, AC_ERR_INVALID, "store_options_invalid",
		           "%s: busy_timeout_ms must not be negative", opts->path);
		goto out;
	}
	for (i = 0; i < sizeof(backends) / sizeof(backends[0]); i++) {
		if (strncmp(opts->path, backends[i].prefix, strlen(backends[i].prefix)) == 0) {
			be = &backends[i];
			break;
		}
	}
	if (be == NULL || be->open == NULL) {
		ac_err_set(err, AC_ERR_INVALID, "store_backend_unsupported",
		           "%s: the %s store is not built into this agentca", opts->path,
		           be != NULL ? be->name : "requested");
		goto out;
	}
	if ((st = calloc(1, sizeof(*st))) == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "%s: out of memory", opts->path);
		goto out;
	}
	if (be->open(st, opts, err) != 0)
		goto out;
	if ((st->gc = group_commit_start(st, (size_t)opts->group_commit_max, err)) == NULL) {
		ac_err_wrap(err, "%s", opts->path);
		goto out;
	}
	opened = st;
	st = NULL;
out:
	store_close(st);
	return opened;
}

void
store_close(struct store *st)
{
	if (st == NULL)
		return;
	group_commit_stop(st->gc);
	if (st->ops != NULL)
		st->ops->close(st);
	free(st);
}

int
store_submit(struct store *st, struct store_write *w, struct ac_err *err)
{
	return store_submit_many(st, &w, 1, err);
}

int
store_submit_many(struct store *st, struct store_write **w, size_t n, struct ac_err *err)
{
	size_t i;

	if (group_commit_submit(st->gc, w, n) == 0)
		return 0;
	for (i = 0; i < n; i++) {
		if (w[i]->result.code != AC_OK) {
			ac_err_set(err, w[i]->result.code, w[i]->result.reason, "%s",
			           w[i]->result.msg);
			break;
		}
	}
	return -1;
}

int
store_log_head(struct store *st, uint64_t *seq, char hash[LOG_HASH_HEX_LEN + 1], struct ac_err *err)
{
	return st->ops->log_head(st, seq, hash, err);
}

int
store_log_scan(struct store *st, const struct log_filter *filter, log_row_fn fn, void *arg,
               struct ac_err *err)
{
	static const struct log_filter all;

	return st->ops->log_scan(st, filter != NULL ? filter : &all, fn, arg, err);
}

/* What the merkle.c callbacks need: the store and where an error goes. */
struct node_source {
	struct store *st;
	struct ac_err *err;
};

/* merkle_node_fn over the backend's stored perfect subtrees. */
static int
node_from_store(void *arg, unsigned level, uint64_t index, unsigned char out[MERKLE_HASH_LEN])
{
	struct node_source *src = arg;

	return src->st->ops->tree_node(src->st, level, index, out, src->err);
}

/* Refuse a tree size past the log's head: those leaves do not exist (yet). */
static int
check_tree_size(struct store *st, uint64_t size, struct ac_err *err)
{
	char hash[LOG_HASH_HEX_LEN + 1];
	uint64_t head;

	if (store_log_head(st, &head, hash, err) != 0)
		return -1;
	if (size > head)
		return ac_err_set(err, AC_ERR_INVALID, "tree_size_invalid",
		                  "tree size %llu is past the issuance log's %llu entries",
		                  (unsigned long long)size, (unsigned long long)head);
	return 0;
}

int
store_tree_root(struct store *st, uint64_t size, unsigned char root[MERKLE_HASH_LEN],
                struct ac_err *err)
{
	struct node_source src = {st, err};

	if (check_tree_size(st, size, err) != 0)
		return -1;
	if (merkle_range_hash(node_from_store, &src, 0, size, root) != 0)
		return ac_err_set(err, AC_ERR_STORE, "log_corrupt",
		                  "cannot compute the tree head of size %llu",
		                  (unsigned long long)size);
	return 0;
}

int
store_inclusion_proof(struct store *st, uint64_t index, uint64_t size,
                      unsigned char path[][MERKLE_HASH_LEN], size_t *len, struct ac_err *err)
{
	struct node_source src = {st, err};

	*len = 0;
	if (check_tree_size(st, size, err) != 0)
		return -1;
	if (index >= size)
		return ac_err_set(err, AC_ERR_INVALID, "tree_index_invalid",
		                  "entry %llu is not in the tree of size %llu",
		                  (unsigned long long)index + 1, (unsigned long long)size);
	if (merkle_inclusion_proof(node_from_store, &src, index, size, path, len) != 0)
		return ac_err_set(err, AC_ERR_STORE, "log_corrupt",
		                  "cannot compute the inclusion proof of entry %llu in size %llu",
		                  (unsigned long long)index + 1, (unsigned long long)size);
	return 0;
}

int
store_consistency_proof(struct store *st, uint64_t old_size, uint64_t new_size,
                        unsigned char proof[][MERKLE_HASH_LEN], size_t *len, struct ac_err *err)
{
	struct node_source src = {st, err};

	*len = 0;
	if (check_tree_size(st, new_size, err) != 0)
		return -1;
	if (old_size > new_size)
		return ac_err_set(err, AC_ERR_INVALID, "tree_size_invalid",
		                  "no consistency proof from tree size %llu to the smaller %llu",
		                  (unsigned long long)old_size, (unsigned long long)new_size);
	if (old_size == 0)
		return 0;
	if (merkle_consistency_proof(node_from_store, &src, old_size, new_size, proof, len) != 0)
		return ac_err_set(err, AC_ERR_STORE, "log_corrupt",
		                  "cannot compute the consistency proof from size %llu to %llu",
		                  (unsigned long long)old_size, (unsigned long long)new_size);
	return 0;
}

int
store_cert_get(struct store *st, const char *serial, struct cert_row *out, struct ac_err *err)
{
	return st->ops->cert_get(st, serial, out, err);
}

void
store_cert_row_free(struct cert_row *row)
{
	if (row == NULL)
		return;
	free(row->serial);
	free(row->subject);
	free(row->parent);
	free(row->spki_sha256);
	free(row->issuer_fingerprint);
	free(row->revoke_reason);
	free(row->der);
	memset(row, 0, sizeof(*row));
}

int
store_cert_count(struct store *st, int64_t *count, struct ac_err *err)
{
	return st->ops->cert_count(st, count, err);
}

int
store_cert_list(struct store *st, const struct cert_filter *filter, cert_summary_fn fn, void *arg,
                struct ac_err *err)
{
	return st->ops->cert_list(st, filter, fn, arg, err);
}

int
store_revoked_scan(struct store *st, int64_t not_after_min, revoked_row_fn fn, void *arg,
                   struct ac_err *err)
{
	return st->ops->revoked_scan(st, not_after_min, fn, arg, err);
}

void
store_stats(struct store *st, struct store_stats *out)
{
	group_commit_stats(st->gc, out);
	out->memory_bytes = st->ops->memory_used != NULL ? st->ops->memory_used(st) : 0;
}

int
store_intermediate_list(struct store *st, struct intermediate_row *rows, size_t max, size_t *n,
                        struct ac_err *err)
{
	return st->ops->intermediate_list(st, rows, max, n, err);
}

int
store_cert_count_by_issuer(struct store *st, const char *issuer_fingerprint, int64_t at,
                           int64_t *count, int64_t *last_not_after, struct ac_err *err)
{
	return st->ops->cert_count_by_issuer(st, issuer_fingerprint, at, count, last_not_after,
	                                     err);
}

int
store_prune(struct store *st, int64_t expired_before, int64_t *certs, int64_t *tokens,
            struct ac_err *err)
{
	return st->ops->prune(st, expired_before, certs, tokens, err);
}

int
store_bundle_ack(struct store *st, const char *identity, int64_t sequence, struct ac_err *err)
{
	return st->ops->bundle_ack(st, identity, sequence, err);
}

int
store_bundle_ack_get(struct store *st, const char *identity, int64_t *sequence, struct ac_err *err)
{
	return st->ops->bundle_ack_get(st, identity, sequence, err);
}
