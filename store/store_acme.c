/*
 * store_acme.c - SQL for the ACME server's objects (see store_acme.h). Two connections of
 * its own to the store's SQLite file, each used under a mutex: one writes (SQLite takes one
 * writer at a time anyway), one reads, so that reads never queue behind a write that waits
 * for the issuance committer's fsync.
 */
#include "store/store_acme.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include <sqlite3.h>

#include "store/store_impl.h"

enum acme_stmt {
	A_BEGIN,
	A_COMMIT,
	A_ROLLBACK,
	A_INSERT,
	A_UPSERT,
	A_GET,
	A_FIND,
	A_LIST,
	A_SYNC_FULL,
	A_SYNC_NORMAL,
	A_N
};

static const char *const acme_sql[A_N] = {
    [A_BEGIN] = "BEGIN IMMEDIATE",
    [A_COMMIT] = "COMMIT",
    [A_ROLLBACK] = "ROLLBACK",
    [A_INSERT] = ("INSERT INTO acme_objects (kind, id, account, lookup, expires, doc)"
                  " VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
    [A_UPSERT] = ("INSERT OR REPLACE INTO acme_objects (kind, id, account, lookup, expires, doc)"
                  " VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
    [A_GET] = ("SELECT id, account, lookup, expires, doc FROM acme_objects"
               " WHERE kind = ?1 AND id = ?2"),
    [A_FIND] = ("SELECT id, account, lookup, expires, doc FROM acme_objects"
                " WHERE kind = ?1 AND lookup = ?2"),
    [A_LIST] = ("SELECT id FROM acme_objects WHERE kind = ?1 AND account = ?2"
                " AND (?3 IS NULL OR id > ?3) ORDER BY id LIMIT ?4"),
    [A_SYNC_FULL] = "PRAGMA synchronous = FULL",
    [A_SYNC_NORMAL] = "PRAGMA synchronous = NORMAL",
};

/* Accounts and EAB keys are written rarely and a client relies on them for as long as it
 * lives: their commits reach the disk before the answer. Orders and authorizations change
 * several times per certificate and a client simply retries a lost one: their commits are
 * in the WAL at once and on the disk at the next checkpoint or durable commit (a power
 * loss may take the last of them; never a certificate, which is the issuance log's). */
static int
kind_is_durable(const char *kind)
{
	return strcmp(kind, "account") == 0 || strcmp(kind, "eab") == 0;
}

/* One connection and its statements, used by one caller at a time. */
struct acme_conn {
	pthread_mutex_t lock;
	sqlite3 *db;
	sqlite3_stmt *stmt[A_N];
};

/* Writes on w; reads on r, which in WAL mode never waits for a writer (a write may wait
 * for the issuance committer's fsync, and reads must not queue behind it). */
struct store_acme {
	char *path;
	struct acme_conn w, r;
};

/* The write lock is shared with the issuance log's committer, which holds it across its
 * fsync: retry every 100 us for up to 5 s rather than SQLite's default back-off, whose
 * sleeps (up to 100 ms each) would outlast a commit many times over. */
static int
busy_retry(void *arg, int count)
{
	(void)arg;
	if (count >= 50000)
		return 0;
	usleep(100);
	return 1;
}

static int
db_fail(struct store_acme *a, sqlite3 *db, int rc, const char *what, struct ac_err *err)
{
	enum ac_errcode code = AC_ERR_STORE;
	const char *reason = "store_error";

	if ((rc & 0xff) == SQLITE_CONSTRAINT)
		return ac_err_set(err, AC_ERR_CONFLICT, "conflict", "%s: already exists", what);
	if ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_FULL ||
	    (rc & 0xff) == SQLITE_IOERR) {
		code = AC_ERR_UNAVAILABLE;
		reason = "store_unavailable";
	}
	return ac_err_set(err, code, reason, "%s: %s: %s", a->path, what, sqlite3_errmsg(db));
}

static void
conn_close(struct acme_conn *c)
{
	for (int i = 0; i < A_N; i++)
		sqlite3_finalize(c->stmt[i]);
	sqlite3_close(c->db);
	pthread_mutex_destroy(&c->lock);
}

void
store_acme_close(struct store_acme *a)
{
	if (a == NULL)
		return;
	conn_close(&a->w);
	conn_close(&a->r);
	free(a->path);
	free(a);
}

static int
conn_open(struct store_acme *a, struct acme_conn *c, int reader, struct ac_err *err)
{
	int rc;

	pthread_mutex_init(&c->lock, NULL);
	rc = sqlite3_open_v2(a->path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK)
		return db_fail(a, c->db, rc, "opening the database for ACME", err);
	sqlite3_extended_result_codes(c->db, 1);
	sqlite3_busy_handler(c->db, busy_retry, NULL);
	if ((rc = sqlite3_exec(c->db,
	                       reader ? "PRAGMA query_only = ON" : "PRAGMA synchronous = FULL",
	                       NULL, NULL, NULL)) != SQLITE_OK)
		return db_fail(a, c->db, rc, "setting up the ACME connection", err);
	for (int i = 0; i < A_N; i++) {
		rc = sqlite3_prepare_v3(c->db, acme_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
		                        &c->stmt[i], NULL);
		if (rc != SQLITE_OK)
			return db_fail(a, c->db, rc, "preparing the ACME statements", err);
	}
	return 0;
}

struct store_acme *
store_acme_open(struct store *st, struct ac_err *err)
{
	const char *path = store_sqlite_path(st);
	struct store_acme *a = NULL;

	if (path == NULL) {
		ac_err_set(err, AC_ERR_INVALID, "store_unsupported",
		           "the ACME server needs the SQLite store");
		return NULL;
	}
	if ((a = calloc(1, sizeof(*a))) == NULL || (a->path = strdup(path)) == NULL) {
		free(a);
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		return NULL;
	}
	if (conn_open(a, &a->w, 0, err) != 0 || conn_open(a, &a->r, 1, err) != 0) {
		store_acme_close(a);
		return NULL;
	}
	return a;
}

static int
bind_opt(sqlite3_stmt *stmt, int idx, const char *text)
{
	if (text == NULL)
		return sqlite3_bind_null(stmt, idx);
	return sqlite3_bind_text(stmt, idx, text, -1, SQLITE_STATIC);
}

/* Step a statement without rows; reset and unbind it. */
static int
step_done(sqlite3_stmt *stmt)
{
	int rc = sqlite3_step(stmt);

	sqlite3_reset(stmt);
	sqlite3_clear_bindings(stmt);
	return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

int
store_acme_put(struct store_acme *a, const struct acme_object *objs, size_t n, int create,
               struct ac_err *err)
{
	struct acme_conn *w = &a->w;
	sqlite3_stmt *ins = w->stmt[create ? A_INSERT : A_UPSERT];
	int rc, ret = -1, in_tx = 0;

	int durable = 0;

	for (size_t i = 0; i < n; i++)
		durable |= kind_is_durable(objs[i].kind);
	pthread_mutex_lock(&w->lock);
	if ((rc = step_done(w->stmt[durable ? A_SYNC_FULL : A_SYNC_NORMAL])) != SQLITE_OK &&
	    rc != SQLITE_ROW) {
		db_fail(a, w->db, rc, "setting the ACME write's durability", err);
		goto out;
	}
	if ((rc = step_done(w->stmt[A_BEGIN])) != SQLITE_OK) {
		db_fail(a, w->db, rc, "starting an ACME write", err);
		goto out;
	}
	in_tx = 1;
	for (size_t i = 0; i < n; i++) {
		const struct acme_object *o = &objs[i];

		if ((rc = bind_opt(ins, 1, o->kind)) != SQLITE_OK ||
		    (rc = bind_opt(ins, 2, o->id)) != SQLITE_OK ||
		    (rc = bind_opt(ins, 3, o->account)) != SQLITE_OK ||
		    (rc = bind_opt(ins, 4, o->lookup)) != SQLITE_OK ||
		    (rc = sqlite3_bind_int64(ins, 5, o->expires)) != SQLITE_OK ||
		    (rc = bind_opt(ins, 6, o->doc)) != SQLITE_OK ||
		    (rc = step_done(ins)) != SQLITE_OK) {
			sqlite3_reset(ins);
			sqlite3_clear_bindings(ins);
			db_fail(a, w->db, rc, o->kind, err);
			goto out;
		}
	}
	if ((rc = step_done(w->stmt[A_COMMIT])) != SQLITE_OK) {
		db_fail(a, w->db, rc, "committing an ACME write", err);
		goto out;
	}
	in_tx = 0;
	ret = 0;
out:
	if (in_tx)
		step_done(w->stmt[A_ROLLBACK]);
	pthread_mutex_unlock(&w->lock);
	return ret;
}

static int
column_dup(sqlite3_stmt *stmt, int col, char **out)
{
	const unsigned char *text = sqlite3_column_text(stmt, col);

	*out = NULL;
	if (sqlite3_column_type(stmt, col) == SQLITE_NULL)
		return 0;
	if (text == NULL || (*out = strdup((const char *)text)) == NULL)
		return -1;
	return 0;
}

static int
read_one(struct store_acme *a, enum acme_stmt which, const char *kind, const char *key,
         struct acme_object_row *out, struct ac_err *err)
{
	struct acme_conn *r = &a->r;
	sqlite3_stmt *stmt = r->stmt[which];
	int rc, ret = -1;

	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&r->lock);
	if ((rc = bind_opt(stmt, 1, kind)) != SQLITE_OK ||
	    (rc = bind_opt(stmt, 2, key)) != SQLITE_OK) {
		db_fail(a, r->db, rc, "reading an ACME object", err);
		goto out;
	}
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_DONE) {
		ac_err_set(err, AC_ERR_NOTFOUND, "not_found", "no such %s", kind);
		goto out;
	}
	if (rc != SQLITE_ROW) {
		db_fail(a, r->db, rc, "reading an ACME object", err);
		goto out;
	}
	if (column_dup(stmt, 0, &out->id) != 0 || column_dup(stmt, 1, &out->account) != 0 ||
	    column_dup(stmt, 2, &out->lookup) != 0 || column_dup(stmt, 4, &out->doc) != 0 ||
	    out->doc == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto out;
	}
	out->expires = sqlite3_column_int64(stmt, 3);
	ret = 0;
out:
	sqlite3_reset(stmt);
	sqlite3_clear_bindings(stmt);
	pthread_mutex_unlock(&r->lock);
	if (ret != 0)
		store_acme_row_free(out);
	return ret;
}

int
store_acme_get(struct store_acme *a, const char *kind, const char *id, struct acme_object_row *out,
               struct ac_err *err)
{
	return read_one(a, A_GET, kind, id, out, err);
}

int
store_acme_find(struct store_acme *a, const char *kind, const char *lookup,
                struct acme_object_row *out, struct ac_err *err)
{
	return read_one(a, A_FIND, kind, lookup, out, err);
}

int
store_acme_list(struct store_acme *a, const char *kind, const char *account, const char *after,
                int64_t limit, acme_id_fn fn, void *arg, struct ac_err *err)
{
	struct acme_conn *r = &a->r;
	sqlite3_stmt *stmt = r->stmt[A_LIST];
	int rc, ret = -1;

	pthread_mutex_lock(&r->lock);
	if ((rc = bind_opt(stmt, 1, kind)) != SQLITE_OK ||
	    (rc = bind_opt(stmt, 2, account)) != SQLITE_OK ||
	    (rc = bind_opt(stmt, 3, after)) != SQLITE_OK ||
	    (rc = sqlite3_bind_int64(stmt, 4, limit > 0 ? limit : -1)) != SQLITE_OK) {
		db_fail(a, r->db, rc, "listing ACME objects", err);
		goto out;
	}
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		const unsigned char *id = sqlite3_column_text(stmt, 0);

		if (id != NULL && fn(arg, (const char *)id) != 0)
			break;
	}
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		db_fail(a, r->db, rc, "listing ACME objects", err);
		goto out;
	}
	ret = 0;
out:
	sqlite3_reset(stmt);
	sqlite3_clear_bindings(stmt);
	pthread_mutex_unlock(&r->lock);
	return ret;
}

void
store_acme_row_free(struct acme_object_row *row)
{
	if (row == NULL)
		return;
	free(row->id);
	free(row->account);
	free(row->lookup);
	free(row->doc);
	memset(row, 0, sizeof(*row));
}
