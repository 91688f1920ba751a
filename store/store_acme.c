/*
 * store_acme.c - SQL for the ACME server's objects (see store_acme.h), in a SQLite file of
 * their own: agentca-acme.db next to agentca.db (DIR/agentca.db -> DIR/agentca-acme.db).
 *
 * Why a file of its own: in one file, every ACME write took SQLite's one write lock, which
 * the issuance log's committer holds across its fsync, and each write by one connection made
 * the other connections read their pages again. ACME protocol state needs less durability
 * than a certificate (an order lost in a power cut is retried by its client), so its file
 * commits to the WAL without an fsync, except for accounts and EAB keys; certificates and
 * the issuance log stay in agentca.db, committed durably as before.
 *
 * One connection, used under a mutex, for reads and writes, and in front of it a cache of
 * the orders and authorizations this process wrote or read (see struct row_cache). A write here is
 * an append to the WAL without an fsync (tens of microseconds), so reads lose little by taking
 * turns with writes, and one connection keeps its page cache across its own writes: with a second
 * connection for reads, every write made the reader fetch its pages again (about 50 preads
 * per order). Only account and EAB writes wait for an fsync, and they are rare. Other
 * processes (`agentca acme eab create`) open the file as usual.
 *
 * Checkpoints (copying the WAL back into the file, with two fsyncs) run on a thread of this
 * module's with a connection of its own, never inside a write: SQLite's automatic
 * checkpoint runs in the commit that crosses 1000 WAL pages, under the connection's mutex,
 * and every ACME request queued behind its fsyncs (gdb samples under load: 12 request
 * threads waiting on the mutex while one sat in sqlite3WalCheckpoint). A PASSIVE checkpoint
 * takes no lock that writers or readers need and copies the bulk; a RESTART checkpoint then
 * copies the few frames committed meanwhile, holding writers back for that long, so that
 * the WAL starts again from its beginning (checkpoint_main). At open the file is created
 * 0600 with its schema, and rows an earlier agentca kept in agentca.db's acme_objects are
 * moved here (migrate_from_main).
 */
#include "store/store_acme.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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
	int sync_full; /* synchronous is FULL now (else NORMAL): the pragma runs only to change
	                  it, as running it makes SQLite prepare it again every time */
};

/* The one connection (see the top of the file). */
#define CHECKPOINT_PAGES 1000 /* WAL pages that call for a checkpoint (SQLite's default) */

/* The checkpoint thread and its connection. due is set by the commit hook. */
struct checkpointer {
	pthread_mutex_t lock;
	pthread_cond_t wake;
	pthread_t thread;
	sqlite3 *db;
	int ready, running, stop, due;
	int copied; /* WAL frames the last checkpoint copied (0 after the WAL restarted) */
};

/*
 * The row cache: the last version of each order and authorization this process wrote or
 * read, so that the reads of a certificate's objects (about eight per order, each written
 * moments before) take neither the connection's mutex nor a SQLite read transaction. Under
 * load the request threads queued on that mutex: strace -f -k showed two thirds of the
 * daemon's futex calls there, each a sleep and a wake-up.
 *
 * Consistency: a slot is filled only while the connection's mutex is held, right after the
 * commit that wrote the row or the read that found it, so the cache changes in the same
 * order as the file. Readers take only the cache's own mutex (held for a lookup and a few
 * copies). Only orders and authorizations are kept: this daemon is the only writer of
 * those (other processes, `agentca acme eab create`, write EAB keys), and their lookup keys
 * (certificate serials) are unique, so no REPLACE removes another cached row. Direct-mapped
 * by (kind, id): a collision evicts, a miss reads the file as before.
 */
#define ROW_CACHE_SLOTS 2048

struct row_slot {
	char kind[8];
	struct acme_object_row row; /* row.doc == NULL: empty */
};

struct row_cache {
	pthread_mutex_t lock;
	struct row_slot slots[ROW_CACHE_SLOTS];
};

struct store_acme {
	char *path;
	struct acme_conn conn;
	struct checkpointer ckpt;
	struct row_cache cache;
};

/* The write lock is shared with other processes (`agentca acme eab create` on the CA host)
 * and, when accounts commit durably, held across an fsync: retry every 100 us for up to 5 s
 * rather than SQLite's default back-off, whose sleeps (up to 100 ms each) would outlast a
 * commit many times over. */
static int
busy_retry(void *arg, int count)
{
	(void)arg;
	if (count >= 50000)
		return 0;
	usleep(100);
	return 1;
}

/* The checkpoint connection's RESTART holds writers back while it waits for the WAL's
 * readers: it gives up after 20 ms (the WAL then restarts after a later checkpoint), so a
 * slow reader in another process never stalls the ACME writes for long. */
#define CHECKPOINT_WAIT_TRIES 200 /* of 100 us */

static int
checkpoint_busy_retry(void *arg, int count)
{
	(void)arg;
	if (count >= CHECKPOINT_WAIT_TRIES)
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

/* After each commit on the request connection (under its mutex): CHECKPOINT_PAGES frames
 * in the WAL beyond what the last checkpoint copied wake the checkpoint thread. Setting
 * this hook turns off SQLite's own automatic checkpoint on that connection.
 *
 * Counting only the frames not yet copied matters under steady load: a PASSIVE checkpoint
 * rarely copies the last frame (commits land while it runs), so "the WAL holds more than
 * CHECKPOINT_PAGES" stayed true after it, and every following commit asked for another
 * checkpoint of a few frames with two fsyncs (strace: 0.86 fdatasync of the ACME WAL per
 * order, the WAL growing past 9 MB before it restarted). */
static int
on_commit(void *arg, sqlite3 *db, const char *name, int pages)
{
	struct checkpointer *k = arg;

	(void)db;
	(void)name;
	pthread_mutex_lock(&k->lock);
	if (pages < k->copied)
		k->copied = 0; /* the WAL restarted from its beginning */
	if (pages - k->copied >= CHECKPOINT_PAGES) {
		k->due = 1;
		pthread_cond_signal(&k->wake);
	}
	pthread_mutex_unlock(&k->lock);
	return SQLITE_OK;
}

/* The checkpoint thread, each time one is due: a PASSIVE checkpoint copies the bulk without
 * taking any lock that writers or readers need; then a RESTART checkpoint copies what
 * commits added meanwhile (a few frames) while holding writers back (they retry every
 * 100 us, see busy_retry; readers go on; at most CHECKPOINT_WAIT_TRIES waits) and waits for
 * readers to leave the WAL, so that the next write starts the WAL again from its beginning. A
 * PASSIVE checkpoint alone never caught up under steady load (commits land while it runs), and the
 * WAL grew past 16 MB in 300 orders without restarting. One that fails (a full disk, a reader that
 * stays) leaves the WAL to grow until the next one; the writes report the store's state. */
static void *
checkpoint_main(void *arg)
{
	struct checkpointer *k = arg;
	int log = 0, copied = 0;

	pthread_mutex_lock(&k->lock);
	while (!k->stop) {
		if (!k->due) {
			pthread_cond_wait(&k->wake, &k->lock);
			continue;
		}
		k->due = 0;
		pthread_mutex_unlock(&k->lock);
		log = copied = 0;
		if (sqlite3_wal_checkpoint_v2(k->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log,
		                              &copied) == SQLITE_OK)
			sqlite3_wal_checkpoint_v2(k->db, NULL, SQLITE_CHECKPOINT_RESTART, &log,
			                          &copied);
		pthread_mutex_lock(&k->lock);
		if (copied > k->copied)
			k->copied = copied;
		/* Commits during this run asked again against the old count; the next commit
		 * asks against the new one. */
		k->due = 0;
	}
	pthread_mutex_unlock(&k->lock);
	return NULL;
}

static int
checkpointer_start(struct store_acme *a, struct ac_err *err)
{
	struct checkpointer *k = &a->ckpt;
	int rc;

	pthread_mutex_init(&k->lock, NULL);
	pthread_cond_init(&k->wake, NULL);
	k->ready = 1;
	rc = sqlite3_open_v2(a->path, &k->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK)
		return db_fail(a, k->db, rc, "opening the ACME database for checkpoints", err);
	sqlite3_extended_result_codes(k->db, 1);
	sqlite3_busy_handler(k->db, busy_retry, NULL);
	/* A connection finds the file in WAL mode at its first read; until then a checkpoint
	 * on it does nothing. */
	if ((rc = sqlite3_exec(k->db, "SELECT count(*) FROM sqlite_master", NULL, NULL, NULL)) !=
	    SQLITE_OK)
		return db_fail(a, k->db, rc, "reading the ACME database for checkpoints", err);
	sqlite3_busy_handler(k->db, checkpoint_busy_retry, NULL);
	if (pthread_create(&k->thread, NULL, checkpoint_main, k) != 0)
		return ac_err_set(err, AC_ERR_INTERNAL, "thread_failed",
		                  "%s: cannot start the checkpoint thread", a->path);
	k->running = 1;
	sqlite3_wal_hook(a->conn.db, on_commit, k);
	return 0;
}

static void
checkpointer_stop(struct checkpointer *k)
{
	if (!k->ready)
		return;
	if (k->running) {
		pthread_mutex_lock(&k->lock);
		k->stop = 1;
		pthread_cond_signal(&k->wake);
		pthread_mutex_unlock(&k->lock);
		pthread_join(k->thread, NULL);
	}
	sqlite3_close(k->db);
	pthread_cond_destroy(&k->wake);
	pthread_mutex_destroy(&k->lock);
}

static int
kind_is_cached(const char *kind)
{
	return strcmp(kind, "order") == 0 || strcmp(kind, "authz") == 0;
}

static struct row_slot *
cache_slot(struct row_cache *cache, const char *kind, const char *id)
{
	uint32_t h = 2166136261u; /* FNV-1a: the slot only, not a security boundary */

	for (const char *p = kind; *p != '\0'; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	for (const char *p = id; *p != '\0'; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	return &cache->slots[h % ROW_CACHE_SLOTS];
}

/* A heap copy of text (NULL stays NULL); -1 when out of memory. */
static int
dup_opt(const char *text, char **out)
{
	*out = NULL;
	if (text != NULL && (*out = strdup(text)) == NULL)
		return -1;
	return 0;
}

static int
row_copy(const struct acme_object_row *from, struct acme_object_row *to)
{
	memset(to, 0, sizeof(*to));
	if (dup_opt(from->id, &to->id) != 0 || dup_opt(from->account, &to->account) != 0 ||
	    dup_opt(from->lookup, &to->lookup) != 0 || dup_opt(from->doc, &to->doc) != 0) {
		store_acme_row_free(to);
		return -1;
	}
	to->expires = from->expires;
	return 0;
}

/* 1 with *out a copy of the cached row, 0 on a miss (or no memory: read the file). */
static int
cache_get(struct row_cache *cache, const char *kind, const char *id, struct acme_object_row *out)
{
	struct row_slot *slot;
	int hit = 0;

	if (!kind_is_cached(kind))
		return 0;
	slot = cache_slot(cache, kind, id);
	pthread_mutex_lock(&cache->lock);
	if (slot->row.doc != NULL && strcmp(slot->kind, kind) == 0 &&
	    strcmp(slot->row.id, id) == 0 && row_copy(&slot->row, out) == 0)
		hit = 1;
	pthread_mutex_unlock(&cache->lock);
	return hit;
}

/* Keep row as the current version of (kind, id). Called with the connection's mutex held,
 * after the commit or read that produced row. Out of memory: the slot is emptied instead,
 * so that it never holds an older version. */
static void
cache_set(struct row_cache *cache, const char *kind, const struct acme_object_row *row)
{
	struct acme_object_row fresh, old;
	struct row_slot *slot;
	int ok;

	if (!kind_is_cached(kind) || strlen(kind) >= sizeof(slot->kind) || row->id == NULL)
		return;
	ok = row->doc != NULL && row_copy(row, &fresh) == 0;
	slot = cache_slot(cache, kind, row->id);
	pthread_mutex_lock(&cache->lock);
	old = slot->row;
	if (ok) {
		snprintf(slot->kind, sizeof(slot->kind), "%s", kind);
		slot->row = fresh;
	} else {
		memset(&slot->row, 0, sizeof(slot->row));
	}
	pthread_mutex_unlock(&cache->lock);
	store_acme_row_free(&old);
}

void
store_acme_close(struct store_acme *a)
{
	if (a == NULL)
		return;
	checkpointer_stop(&a->ckpt);
	/* The last connection to close checkpoints what is left and removes the WAL. */
	conn_close(&a->conn);
	for (size_t i = 0; i < ROW_CACHE_SLOTS; i++)
		store_acme_row_free(&a->cache.slots[i].row);
	pthread_mutex_destroy(&a->cache.lock);
	free(a->path);
	free(a);
}

static int
conn_open(struct store_acme *a, struct acme_conn *c, struct ac_err *err)
{
	int rc;

	pthread_mutex_init(&c->lock, NULL);
	rc = sqlite3_open_v2(a->path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK)
		return db_fail(a, c->db, rc, "opening the ACME database", err);
	sqlite3_extended_result_codes(c->db, 1);
	sqlite3_busy_handler(c->db, busy_retry, NULL);
	if ((rc = sqlite3_exec(c->db, "PRAGMA synchronous = FULL; PRAGMA temp_store = MEMORY", NULL,
	                       NULL, NULL)) != SQLITE_OK)
		return db_fail(a, c->db, rc, "setting up the ACME connection", err);
	c->sync_full = 1;
	for (int i = 0; i < A_N; i++) {
		rc = sqlite3_prepare_v3(c->db, acme_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
		                        &c->stmt[i], NULL);
		if (rc != SQLITE_OK)
			return db_fail(a, c->db, rc, "preparing the ACME statements", err);
	}
	return 0;
}

/* DIR/agentca.db -> DIR/agentca-acme.db (any other name: NAME-acme.db). Heap. */
static char *
acme_path_for(const char *main_path)
{
	size_t len = strlen(main_path);
	char *out;

	if (len >= 3 && strcmp(main_path + len - 3, ".db") == 0)
		len -= 3;
	if ((out = malloc(len + sizeof("-acme.db"))) == NULL)
		return NULL;
	memcpy(out, main_path, len);
	memcpy(out + len, "-acme.db", sizeof("-acme.db"));
	return out;
}

/* One integer from a one-row query on db. */
static int
query_int(struct store_acme *a, sqlite3 *db, const char *sql, int64_t *value, struct ac_err *err)
{
	sqlite3_stmt *stmt = NULL;
	int rc, ret = -1;

	if ((rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL)) != SQLITE_OK ||
	    (rc = sqlite3_step(stmt)) != SQLITE_ROW) {
		db_fail(a, db, rc, sql, err);
		goto out;
	}
	*value = sqlite3_column_int64(stmt, 0);
	ret = 0;
out:
	sqlite3_finalize(stmt);
	return ret;
}

static int
exec_sql(struct store_acme *a, sqlite3 *db, const char *sql, const char *what, struct ac_err *err)
{
	int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);

	return rc == SQLITE_OK ? 0 : db_fail(a, db, rc, what, err);
}

#define ACME_SCHEMA_VERSION 1

/* The schema of version 1: the columns of agentca.db's acme_objects (its migration 5). */
static const char acme_schema[] =
    "CREATE TABLE acme_objects ("
    " kind TEXT NOT NULL,"
    " id TEXT NOT NULL,"
    " account TEXT,"
    " lookup TEXT,"
    " expires INTEGER NOT NULL DEFAULT 0,"
    " doc TEXT NOT NULL,"
    " PRIMARY KEY (kind, id)) WITHOUT ROWID;"
    "CREATE INDEX acme_objects_account ON acme_objects(kind, account);"
    "CREATE UNIQUE INDEX acme_objects_lookup ON acme_objects(kind, lookup)"
    " WHERE lookup IS NOT NULL;"
    "PRAGMA user_version = 1;";

/* WAL mode and the schema, in one transaction (a crash leaves no file half made; another
 * process opening at the same time waits for the lock and finds the schema made). */
static int
setup_schema(struct store_acme *a, sqlite3 *db, struct ac_err *err)
{
	int64_t version = 0;
	int in_tx = 0, ret = -1;

	if (exec_sql(a, db, "PRAGMA journal_mode = WAL", "switching to WAL mode", err) != 0 ||
	    exec_sql(a, db, "BEGIN IMMEDIATE", "starting the ACME schema", err) != 0)
		goto out;
	in_tx = 1;
	if (query_int(a, db, "PRAGMA user_version", &version, err) != 0)
		goto out;
	if (version > ACME_SCHEMA_VERSION) {
		ac_err_set(err, AC_ERR_STORE, "store_schema_newer",
		           "%s: schema version %lld is newer than this agentca knows (%d);"
		           " run a newer agentca",
		           a->path, (long long)version, ACME_SCHEMA_VERSION);
		goto out;
	}
	if (version == 0 && exec_sql(a, db, acme_schema, "creating the ACME schema", err) != 0)
		goto out;
	if (exec_sql(a, db, "COMMIT", "committing the ACME schema", err) != 0)
		goto out;
	in_tx = 0;
	ret = 0;
out:
	if (in_tx && !sqlite3_get_autocommit(db))
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	return ret;
}

/*
 * Before this file existed, ACME objects lived in agentca.db's acme_objects (its migration
 * 5). Move any found there: copy them here (a row already here is newer and wins) in one
 * durable commit, then delete them there in a second. A crash between the two leaves rows
 * in both files; the next open copies nothing new (INSERT OR IGNORE) and deletes them, so
 * the move is done exactly once in effect and never loses a row.
 */
static int
migrate_from_main(struct store_acme *a, sqlite3 *db, const char *main_path, struct ac_err *err)
{
	sqlite3_stmt *attach = NULL;
	int64_t has_table = 0, has_rows = 0;
	int rc, attached = 0, in_tx = 0, ret = -1;

	if ((rc = sqlite3_prepare_v2(db, "ATTACH DATABASE ?1 AS old", -1, &attach, NULL)) !=
	        SQLITE_OK ||
	    (rc = sqlite3_bind_text(attach, 1, main_path, -1, SQLITE_STATIC)) != SQLITE_OK ||
	    (rc = sqlite3_step(attach)) != SQLITE_DONE) {
		db_fail(a, db, rc, "opening agentca.db to move its ACME objects", err);
		goto out;
	}
	attached = 1;
	if (query_int(a, db,
	              "SELECT count(*) FROM old.sqlite_master"
	              " WHERE type = 'table' AND name = 'acme_objects'",
	              &has_table, err) != 0)
		goto out;
	if (has_table == 0) {
		ret = 0;
		goto out;
	}
	if (query_int(a, db, "SELECT EXISTS (SELECT 1 FROM old.acme_objects)", &has_rows, err) != 0)
		goto out;
	if (has_rows == 0) {
		ret = 0;
		goto out;
	}
	if (exec_sql(a, db, "PRAGMA main.synchronous = FULL; BEGIN IMMEDIATE",
	             "starting to move the ACME objects", err) != 0)
		goto out;
	in_tx = 1;
	if (exec_sql(a, db,
	             "INSERT OR IGNORE INTO main.acme_objects"
	             " (kind, id, account, lookup, expires, doc)"
	             " SELECT kind, id, account, lookup, expires, doc FROM old.acme_objects;"
	             "COMMIT",
	             "copying the ACME objects out of agentca.db", err) != 0)
		goto out;
	if (exec_sql(a, db, "BEGIN IMMEDIATE; DELETE FROM old.acme_objects; COMMIT",
	             "deleting the moved ACME objects from agentca.db", err) != 0)
		goto out;
	in_tx = 0;
	ret = 0;
out:
	if (in_tx && !sqlite3_get_autocommit(db))
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	sqlite3_finalize(attach);
	if (attached)
		sqlite3_exec(db, "DETACH DATABASE old", NULL, NULL, NULL);
	return ret;
}

/* Create the file 0600 if need be, its schema, and move the objects of an older layout. */
static int
prepare_file(struct store_acme *a, const char *main_path, struct ac_err *err)
{
	sqlite3 *db = NULL;
	int rc, ret = -1;

	if (store_file_create_private(a->path, err) != 0)
		goto out;
	rc = sqlite3_open_v2(a->path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		db_fail(a, db, rc, "opening the ACME database", err);
		goto out;
	}
	sqlite3_extended_result_codes(db, 1);
	sqlite3_busy_handler(db, busy_retry, NULL);
	if (setup_schema(a, db, err) != 0 || migrate_from_main(a, db, main_path, err) != 0)
		goto out;
	ret = 0;
out:
	sqlite3_close(db);
	return ret;
}

struct store_acme *
store_acme_open(struct store *st, struct ac_err *err)
{
	const char *main_path = store_sqlite_path(st);
	struct store_acme *a = NULL;

	if (main_path == NULL) {
		ac_err_set(err, AC_ERR_INVALID, "store_unsupported",
		           "the ACME server needs the SQLite store");
		return NULL;
	}
	if ((a = calloc(1, sizeof(*a))) == NULL || (a->path = acme_path_for(main_path)) == NULL) {
		free(a);
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		return NULL;
	}
	pthread_mutex_init(&a->cache.lock, NULL);
	if (prepare_file(a, main_path, err) != 0 || conn_open(a, &a->conn, err) != 0 ||
	    checkpointer_start(a, err) != 0) {
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
	struct acme_conn *w = &a->conn;
	sqlite3_stmt *ins = w->stmt[create ? A_INSERT : A_UPSERT];
	int rc, ret = -1, in_tx = 0, durable = 0;

	for (size_t i = 0; i < n; i++)
		durable |= kind_is_durable(objs[i].kind);
	pthread_mutex_lock(&w->lock);
	if (durable != w->sync_full) {
		if ((rc = step_done(w->stmt[durable ? A_SYNC_FULL : A_SYNC_NORMAL])) != SQLITE_OK &&
		    rc != SQLITE_ROW) {
			db_fail(a, w->db, rc, "setting the ACME write's durability", err);
			goto out;
		}
		w->sync_full = durable;
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
	for (size_t i = 0; i < n; i++) {
		struct acme_object_row row = {(char *)objs[i].id, (char *)objs[i].account,
		                              (char *)objs[i].lookup, (char *)objs[i].doc,
		                              objs[i].expires};

		cache_set(&a->cache, objs[i].kind, &row);
	}
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
	struct acme_conn *r = &a->conn;
	sqlite3_stmt *stmt = r->stmt[which];
	int rc, ret = -1;

	memset(out, 0, sizeof(*out));
	if (which == A_GET && cache_get(&a->cache, kind, key, out))
		return 0;
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
	if (which == A_GET)
		cache_set(&a->cache, kind, out);
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
	struct acme_conn *r = &a->conn;
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
