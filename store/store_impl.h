/*
 * store_impl.h - what store.c, group_commit.c and the backends share. Not for callers.
 *
 * struct store is the front's handle: the backend's operations and private state, and the
 * group committer that feeds the backend's commit_batch one batch at a time. A backend's
 * open function fills ops and backend; store_close() stops the committer before it calls
 * ops->close, so commit_batch never runs concurrently with close, and never concurrently
 * with itself.
 */
#ifndef AGENTCA_STORE_STORE_IMPL_H
#define AGENTCA_STORE_STORE_IMPL_H

#include <stddef.h>

#include "common/error.h"
#include "store/store.h"

struct group_commit;

struct store {
	const struct store_ops *ops;
	void *backend;           /* the backend's own state */
	struct group_commit *gc; /* NULL until the committer runs */
};

/* The SQLite backend (store_sqlite.c): open or create opts->path, migrate, load the head. */
int store_sqlite_open(struct store *st, const struct store_options *opts, struct ac_err *err);

/* The SQLite file behind st, or NULL for another backend (store_acme.c opens its own
 * connection to it). */
const char *store_sqlite_path(const struct store *st);

/* Create path 0600 (or narrow it to 0600) before SQLite opens it, so the file and its -wal
 * and -shm never exist with a wider mode. A path that is not a regular file is refused. */
int store_file_create_private(const char *path, struct ac_err *err);

/* Set up group commit; at most max units go into one transaction. */
struct group_commit *group_commit_start(struct store *st, size_t max, struct ac_err *err);

/* Queue n units and wait until the transaction (or transactions) holding them has ended.
 * Each unit's result says how it ended. Returns -1 if any unit failed. */
int group_commit_submit(struct group_commit *gc, struct store_write **w, size_t n);

/* Commit what is queued, refuse more, and free. NULL is fine. */
void group_commit_stop(struct group_commit *gc);

void group_commit_stats(struct group_commit *gc, struct store_stats *out);

#endif
