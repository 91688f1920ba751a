/*
 * store_sqlite.c - the SQLite backend: the only file in agentca that speaks SQL.
 *
 * One database file, created 0600, in WAL mode with synchronous=FULL: a commit that has
 * returned is on disk, and a crash at any moment leaves the last committed state. The
 * schema is a list of migrations applied in order inside one transaction; the version
 * reached is kept in `PRAGMA user_version`, and a file newer than this code is refused.
 *
 * Two long-lived connections, each with its statements prepared once at open:
 *
 *   wdb  the committer's. Only the group commit leader of the moment uses it
 *        (commit_batch, one batch at a time under group_commit.c's lock), so it needs no
 *        lock of its own. Each batch is BEGIN IMMEDIATE, its units, COMMIT; when a unit
 *        fails on its own, the batch is rolled back and run again with one SAVEPOINT per
 *        unit (sqlite_commit_batch).
 *   rdb  point reads (cert_get, cert_count), one caller at a time under rlock. In WAL mode
 *        readers never wait for the writer.
 *
 * A log scan opens a connection of its own, so an export that streams a million rows
 * neither holds rlock nor stops its callback from calling into the store.
 *
 * The Merkle tree over the log (merkle.h) lives in merkle_nodes: every leaf hash (level 0,
 * index seq - 1) and every perfect subtree's hash, keyed by (level, index). The committer
 * appends an entry's leaf, and the subtrees that leaf completes, in the entry's savepoint;
 * a log that predates the table gets its leaves at open (merkle_catch_up), in one
 * transaction. Roots and proofs read O(log n) of these rows (tree_node).
 *
 * The chain head (last seq and hash) is kept in memory, loaded at open, and published only
 * after a COMMIT has succeeded; a batch works on a copy read inside its write transaction,
 * so a failed batch leaves the head as it was, and another process that appended to the
 * same file (the CLI on the CA host) is seen rather than forked from.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "store/store_impl.h"

/* Hex digits in a serial: 20 octets, and room for a leading zero octet or two. */
#define SERIAL_HEX_MAX 64
#define JTI_MAX 256

/* The schema, one migration per version: migrations[i] takes the file from version i to
 * i + 1. Append only; never edit a migration that has shipped. Each entry is parenthesized
 * so that a forgotten comma between two of them cannot silently glue them together. */
static const char *const migrations[] = {
    /* 1: the issuance log, certificates, used tokens. */
    ("CREATE TABLE issuance_log ("
     " seq INTEGER PRIMARY KEY,"
     " time_ms INTEGER NOT NULL,"
     " kind TEXT NOT NULL,"
     " subject TEXT,"
     " serial TEXT,"
     " canonical TEXT NOT NULL,"
     " hash TEXT NOT NULL);"
     "CREATE INDEX issuance_log_kind ON issuance_log(kind);"
     "CREATE INDEX issuance_log_subject ON issuance_log(subject);"
     "CREATE INDEX issuance_log_time ON issuance_log(time_ms);"
     "CREATE TRIGGER issuance_log_no_update BEFORE UPDATE ON issuance_log"
     " BEGIN SELECT RAISE(ABORT, 'the issuance log is append-only'); END;"
     "CREATE TRIGGER issuance_log_no_delete BEFORE DELETE ON issuance_log"
     " BEGIN SELECT RAISE(ABORT, 'the issuance log is append-only'); END;"
     "CREATE TABLE certificates ("
     " serial TEXT PRIMARY KEY,"
     " subject TEXT NOT NULL,"
     " parent TEXT,"
     " spki_sha256 TEXT,"
     " issuer_fingerprint TEXT,"
     " not_before INTEGER NOT NULL,"
     " not_after INTEGER NOT NULL,"
     " der BLOB NOT NULL,"
     " revoked_at INTEGER NOT NULL DEFAULT 0,"
     " revoke_reason TEXT,"
     " log_seq INTEGER NOT NULL"
     "  REFERENCES issuance_log(seq) DEFERRABLE INITIALLY DEFERRED);"
     "CREATE INDEX certificates_subject ON certificates(subject);"
     "CREATE INDEX certificates_not_after ON certificates(not_after);"
     /* Without this index every log insert scans certificates for orphaned children. */
     "CREATE INDEX certificates_log_seq ON certificates(log_seq);"
     "CREATE INDEX certificates_revoked ON certificates(serial) WHERE revoked_at != 0;"
     "CREATE TABLE used_tokens ("
     " jti TEXT PRIMARY KEY,"
     " expires INTEGER NOT NULL,"
     " used_at INTEGER NOT NULL);"),
    /* 2: nesting depth of an agent's certificate (0: enrolled by an admin's token). */
    ("ALTER TABLE certificates ADD COLUMN depth INTEGER NOT NULL DEFAULT 0;"),
    /* 3: the RFC 9162 Merkle tree over the log: leaf hashes (level 0, idx = seq - 1) and
     * the hashes of perfect subtrees (level L, idx i: leaves [i * 2^L, (i + 1) * 2^L)). */
    ("CREATE TABLE merkle_nodes ("
     " level INTEGER NOT NULL,"
     " idx INTEGER NOT NULL,"
     " hash BLOB NOT NULL,"
     " PRIMARY KEY (level, idx)) WITHOUT ROWID;"
     "CREATE TRIGGER merkle_nodes_no_update BEFORE UPDATE ON merkle_nodes"
     " BEGIN SELECT RAISE(ABORT, 'the merkle tree is append-only'); END;"
     "CREATE TRIGGER merkle_nodes_no_delete BEFORE DELETE ON merkle_nodes"
     " BEGIN SELECT RAISE(ABORT, 'the merkle tree is append-only'); END;"),
    /* 4: intermediate rotation (ca/rotate.h): each intermediate's state, and the bundle
     * sequence each gateway has acknowledged. */
    ("CREATE TABLE intermediates ("
     " fingerprint TEXT PRIMARY KEY,"
     " state TEXT NOT NULL,"
     " not_before INTEGER NOT NULL,"
     " not_after INTEGER NOT NULL,"
     " published_at INTEGER NOT NULL DEFAULT 0,"
     " bundle_sequence INTEGER NOT NULL DEFAULT 0,"
     " changed_at INTEGER NOT NULL,"
     " log_seq INTEGER NOT NULL);"
     "CREATE TABLE bundle_acks ("
     " identity TEXT PRIMARY KEY,"
     " sequence INTEGER NOT NULL,"
     " acked_at INTEGER NOT NULL);"
     "CREATE INDEX certificates_issuer ON certificates(issuer_fingerprint, not_after);"
     "CREATE INDEX used_tokens_expires ON used_tokens(expires);"),
    /* 5 (ACME): accounts, orders, authorizations (challenges inside) and EAB keys, each a
     * JSON document (store_acme.c); lookup is an account's key thumbprint or an order's
     * certificate serial. */
    ("CREATE TABLE acme_objects ("
     " kind TEXT NOT NULL,"
     " id TEXT NOT NULL,"
     " account TEXT,"
     " lookup TEXT,"
     " expires INTEGER NOT NULL DEFAULT 0,"
     " doc TEXT NOT NULL,"
     " PRIMARY KEY (kind, id)) WITHOUT ROWID;"
     "CREATE INDEX acme_objects_account ON acme_objects(kind, account);"
     "CREATE UNIQUE INDEX acme_objects_lookup ON acme_objects(kind, lookup)"
     " WHERE lookup IS NOT NULL;"),
    /* (renewal) the point the CA's renewal planner chose for each leaf (0: none recorded,
     * read as 2/3 of the lifetime), so that the planner's calendar is rebuilt at start and
     * ACME renewalInfo suggests the same point after a restart. */
    ("ALTER TABLE certificates ADD COLUMN renew_after INTEGER NOT NULL DEFAULT 0;"),
};

#define SCHEMA_VERSION ((int)(sizeof(migrations) / sizeof(migrations[0])))

/* The committer's statements. */
enum wstmt {
	W_BEGIN,
	W_COMMIT,
	W_ROLLBACK,
	W_SAVEPOINT,
	W_RELEASE,
	W_ROLLBACK_TO,
	W_HEAD,
	W_CERT,
	W_CERT_STATE,
	W_REVOKE,
	W_TOKEN,
	W_LOG,
	W_NODE_GET,
	W_NODE_PUT,
	W_INTERMEDIATE,
	W_COUNT
};

static const char *const write_sql[W_COUNT] = {
    [W_BEGIN] = "BEGIN IMMEDIATE",
    [W_COMMIT] = "COMMIT",
    [W_ROLLBACK] = "ROLLBACK",
    [W_SAVEPOINT] = "SAVEPOINT unit",
    [W_RELEASE] = "RELEASE unit",
    [W_ROLLBACK_TO] = "ROLLBACK TO unit",
    [W_HEAD] = "SELECT seq, hash FROM issuance_log ORDER BY seq DESC LIMIT 1",
    [W_CERT] = ("INSERT INTO certificates (serial, subject, parent, spki_sha256,"
                " issuer_fingerprint, not_before, not_after, der, log_seq, depth, renew_after)"
                " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
    [W_CERT_STATE] = "SELECT revoked_at FROM certificates WHERE serial = ?1",
    [W_REVOKE] = "UPDATE certificates SET revoked_at = ?2, revoke_reason = ?3 WHERE serial = ?1",
    [W_TOKEN] = "INSERT INTO used_tokens (jti, expires, used_at) VALUES (?1, ?2, ?3)",
    [W_LOG] = ("INSERT INTO issuance_log (seq, time_ms, kind, subject, serial, canonical, hash)"
               " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
    [W_NODE_GET] = "SELECT hash FROM merkle_nodes WHERE level = ?1 AND idx = ?2",
    [W_NODE_PUT] = "INSERT INTO merkle_nodes (level, idx, hash) VALUES (?1, ?2, ?3)",
    [W_INTERMEDIATE] = ("INSERT INTO intermediates (fingerprint, state, not_before, not_after,"
                        " published_at, bundle_sequence, changed_at, log_seq)"
                        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
                        " ON CONFLICT (fingerprint) DO UPDATE SET state = ?2,"
                        " published_at = ?5, bundle_sequence = ?6, changed_at = ?7,"
                        " log_seq = ?8"),
};

/* The readers' statements. */
enum rstmt { R_CERT_GET, R_CERT_COUNT, R_NODE_GET, R_HEAD, R_COUNT };

static const char *const read_sql[R_COUNT] = {
    [R_CERT_GET] = ("SELECT serial, subject, parent, spki_sha256, issuer_fingerprint,"
                    " not_before, not_after, der, revoked_at, revoke_reason, log_seq, depth,"
                    " renew_after FROM certificates WHERE serial = ?1"),
    [R_CERT_COUNT] = "SELECT count(*) FROM certificates",
    [R_HEAD] = "SELECT seq, hash FROM issuance_log ORDER BY seq DESC LIMIT 1",
    [R_NODE_GET] = "SELECT hash FROM merkle_nodes WHERE level = ?1 AND idx = ?2",
};

struct sqlite_store {
	char *path;
	int busy_timeout_ms;
	store_fault_fn fault;
	void *fault_arg;

	sqlite3 *wdb; /* the committer's connection */
	sqlite3_stmt *w[W_COUNT];

	pthread_mutex_t rlock; /* serializes rdb and r[] */
	sqlite3 *rdb;
	sqlite3_stmt *r[R_COUNT];

	pthread_mutex_t head_lock; /* guards the committed head */
	uint64_t head_seq;
	char head_hash[LOG_HASH_HEX_LEN + 1];
};

static const struct store_ops sqlite_ops;

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Fill err for a failed SQLite call with result code rc, saying what was being done. A full
 * disk or an I/O error is "try again later" (503), not a bug. */
static int
db_error(struct sqlite_store *s, sqlite3 *db, int rc, const char *what, struct ac_err *err)
{
	const char *detail = sqlite3_errstr(rc);
	enum ac_errcode code = AC_ERR_STORE;
	const char *reason = "store_error";

	if (db != NULL && sqlite3_extended_errcode(db) == rc)
		detail = sqlite3_errmsg(db);
	switch (rc & 0xff) {
	case SQLITE_FULL:
	case SQLITE_IOERR:
		code = AC_ERR_UNAVAILABLE;
		reason = "store_unavailable";
		break;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		code = AC_ERR_UNAVAILABLE;
		reason = "store_busy";
		break;
	}
	return ac_err_set(err, code, reason, "%s: %s: %s", s->path, what, detail);
}

/* The fault hook: SQLITE_OK, or the error the step is to fail with. A full disk is the disk
 * error a CA host meets in practice, and it takes the same path as any other I/O error. */
static int
fault(struct sqlite_store *s, const char *point)
{
	if (s->fault != NULL && s->fault(s->fault_arg, point) != 0)
		return SQLITE_FULL;
	return SQLITE_OK;
}

static int
bind_text(sqlite3_stmt *stmt, int idx, const char *text)
{
	if (text == NULL)
		return sqlite3_bind_null(stmt, idx);
	return sqlite3_bind_text(stmt, idx, text, -1, SQLITE_STATIC);
}

/* Step a statement that returns no row, unless binding it already failed (rc), and leave it
 * reset and unbound for its next use. */
static int
finish(sqlite3_stmt *stmt, int rc)
{
	if (rc == SQLITE_OK) {
		rc = sqlite3_step(stmt);
		if (rc == SQLITE_DONE || rc == SQLITE_ROW)
			rc = SQLITE_OK;
	}
	sqlite3_reset(stmt);
	sqlite3_clear_bindings(stmt);
	return rc;
}

/* Run SQL text that needs no binding (schema, pragmas) on db. */
static int
exec_sql(struct sqlite_store *s, sqlite3 *db, const char *sql, const char *what, struct ac_err *err)
{
	int rc;

	if ((rc = sqlite3_exec(db, sql, NULL, NULL, NULL)) != SQLITE_OK)
		return db_error(s, db, rc, what, err);
	return 0;
}

/* Create the file 0600 before SQLite does, so it never exists with a wider mode; SQLite
 * gives the -wal and -shm files the mode of the database file. */
int
store_file_create_private(const char *path, struct ac_err *err)
{
	struct stat sb;
	int fd = -1, rc = -1;

	if ((fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600)) == -1) {
		ac_err_set(err, errno == ENOSPC ? AC_ERR_UNAVAILABLE : AC_ERR_IO,
		           errno == ENOSPC ? "store_unavailable" : "store_open_failed", "%s: %s",
		           path, strerror(errno));
		goto out;
	}
	if (fstat(fd, &sb) == -1) {
		ac_err_set(err, AC_ERR_IO, "store_open_failed", "%s: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(sb.st_mode)) {
		ac_err_set(err, AC_ERR_IO, "store_open_failed", "%s: not a regular file", path);
		goto out;
	}
	if ((sb.st_mode & 077) != 0 && fchmod(fd, 0600) == -1) {
		ac_err_set(err, AC_ERR_IO, "store_open_failed", "%s: chmod 600: %s", path,
		           strerror(errno));
		goto out;
	}
	rc = 0;
out:
	if (fd != -1)
		close(fd);
	return rc;
}

/* Open one connection with the settings every connection needs. */
static int
open_connection(struct sqlite_store *s, sqlite3 **out, struct ac_err *err)
{
	sqlite3 *db = NULL;
	int rc, ret = -1;

	*out = NULL;
	rc = sqlite3_open_v2(s->path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		db_error(s, db, rc, "opening the database", err);
		goto out;
	}
	sqlite3_extended_result_codes(db, 1);
	sqlite3_busy_timeout(db, s->busy_timeout_ms);
	/* temp_store = MEMORY keeps the savepoint (statement) journal in memory: on a file it
	 * spills past 64 KiB into a new temporary file, two writes per page, for nothing a crash
	 * needs (the WAL alone makes a commit durable). */
	if (exec_sql(s, db,
	             "PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL; "
	             "PRAGMA temp_store = MEMORY;",
	             "setting up the connection", err) != 0)
		goto out;
	*out = db;
	db = NULL;
	ret = 0;
out:
	sqlite3_close(db);
	return ret;
}

static int
prepare_all(struct sqlite_store *s, sqlite3 *db, const char *const *sql, sqlite3_stmt **stmts,
            int count, struct ac_err *err)
{
	int i, rc;

	for (i = 0; i < count; i++) {
		rc = sqlite3_prepare_v3(db, sql[i], -1, SQLITE_PREPARE_PERSISTENT, &stmts[i], NULL);
		if (rc != SQLITE_OK)
			return db_error(s, db, rc, "preparing statements", err);
	}
	return 0;
}

/* Read one integer from a statement that returns one row (a pragma, a count). */
static int
query_int(struct sqlite_store *s, sqlite3 *db, sqlite3_stmt *stmt, const char *sql,
          const char *what, int64_t *value, struct ac_err *err)
{
	sqlite3_stmt *own = NULL;
	int rc, ret = -1;

	if (stmt == NULL) {
		if ((rc = sqlite3_prepare_v2(db, sql, -1, &own, NULL)) != SQLITE_OK) {
			db_error(s, db, rc, what, err);
			goto out;
		}
		stmt = own;
	}
	if ((rc = sqlite3_step(stmt)) != SQLITE_ROW) {
		db_error(s, db, rc, what, err);
		goto out;
	}
	*value = sqlite3_column_int64(stmt, 0);
	ret = 0;
out:
	if (stmt != NULL)
		sqlite3_reset(stmt);
	sqlite3_finalize(own);
	return ret;
}

/* Switch the file to WAL; the mode is stored in the file, so this is a no-op after the
 * first time. */
static int
use_wal(struct sqlite_store *s, struct ac_err *err)
{
	sqlite3_stmt *stmt = NULL;
	const unsigned char *mode;
	int rc, ret = -1;

	if ((rc = sqlite3_prepare_v2(s->wdb, "PRAGMA journal_mode = WAL", -1, &stmt, NULL)) !=
	        SQLITE_OK ||
	    (rc = sqlite3_step(stmt)) != SQLITE_ROW) {
		db_error(s, s->wdb, rc, "switching to WAL mode", err);
		goto out;
	}
	mode = sqlite3_column_text(stmt, 0);
	if (mode == NULL || strcmp((const char *)mode, "wal") != 0) {
		ac_err_set(err, AC_ERR_STORE, "store_error",
		           "%s: cannot use WAL mode (journal mode stays \"%s\")", s->path,
		           mode != NULL ? (const char *)mode : "?");
		goto out;
	}
	ret = 0;
out:
	sqlite3_finalize(stmt);
	return ret;
}

static int
check_version(struct sqlite_store *s, int64_t version, struct ac_err *err)
{
	if (version < 0 || version > SCHEMA_VERSION)
		return ac_err_set(err, AC_ERR_STORE, "store_schema_newer",
		                  "%s: schema version %lld is newer than this agentca knows (%d);"
		                  " run a newer agentca",
		                  s->path, (long long)version, SCHEMA_VERSION);
	return 0;
}

/* Bring the schema to SCHEMA_VERSION: every missing migration and the new user_version in
 * one transaction, so a crash leaves the old version or the new one. */
static int
migrate(struct sqlite_store *s, struct ac_err *err)
{
	char sql[64];
	int64_t version;
	int in_tx = 0, ret = -1;

	if (query_int(s, s->wdb, NULL, "PRAGMA user_version", "reading the schema version",
	              &version, err) != 0 ||
	    check_version(s, version, err) != 0 || use_wal(s, err) != 0)
		goto out;
	if (version == SCHEMA_VERSION) {
		ret = 0;
		goto out;
	}
	if (exec_sql(s, s->wdb, "BEGIN IMMEDIATE", "starting the schema migration", err) != 0)
		goto out;
	in_tx = 1;
	/* Another process may have migrated while we waited for the lock. */
	if (query_int(s, s->wdb, NULL, "PRAGMA user_version", "reading the schema version",
	              &version, err) != 0 ||
	    check_version(s, version, err) != 0)
		goto out;
	for (; version < SCHEMA_VERSION; version++) {
		if (exec_sql(s, s->wdb, migrations[version], "migrating the schema", err) != 0) {
			ac_err_wrap(err, "to version %lld", (long long)version + 1);
			goto out;
		}
	}
	snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", SCHEMA_VERSION);
	if (exec_sql(s, s->wdb, sql, "setting the schema version", err) != 0 ||
	    exec_sql(s, s->wdb, "COMMIT", "committing the schema migration", err) != 0)
		goto out;
	in_tx = 0;
	ret = 0;
out:
	if (in_tx && !sqlite3_get_autocommit(s->wdb))
		sqlite3_exec(s->wdb, "ROLLBACK", NULL, NULL, NULL);
	return ret;
}

static int
is_lower_hex64(const unsigned char *h, int len)
{
	int i;

	if (h == NULL || len != LOG_HASH_HEX_LEN)
		return 0;
	for (i = 0; i < len; i++)
		if (!((h[i] >= '0' && h[i] <= '9') || (h[i] >= 'a' && h[i] <= 'f')))
			return 0;
	return 1;
}

/* The newest log row's seq and hash as stored (0 and genesis for an empty log). */
static int
read_head_with(struct sqlite_store *s, sqlite3 *db, sqlite3_stmt *stmt, uint64_t *seq,
               char hash[LOG_HASH_HEX_LEN + 1], struct ac_err *err)
{
	const unsigned char *h;
	int64_t last;
	int rc, ret = -1;

	rc = sqlite3_step(stmt);
	if (rc == SQLITE_DONE) {
		*seq = 0;
		memcpy(hash, log_chain_genesis, sizeof(log_chain_genesis));
		ret = 0;
		goto out;
	}
	if (rc != SQLITE_ROW) {
		db_error(s, db, rc, "reading the issuance log head", err);
		goto out;
	}
	last = sqlite3_column_int64(stmt, 0);
	h = sqlite3_column_text(stmt, 1);
	if (last <= 0 || !is_lower_hex64(h, sqlite3_column_bytes(stmt, 1))) {
		ac_err_set(err, AC_ERR_STORE, "log_corrupt",
		           "%s: issuance log row %lld has no valid sequence number or hash",
		           s->path, (long long)last);
		goto out;
	}
	*seq = (uint64_t)last;
	memcpy(hash, h, LOG_HASH_HEX_LEN);
	hash[LOG_HASH_HEX_LEN] = '\0';
	ret = 0;
out:
	sqlite3_reset(stmt);
	return ret;
}

/* The head as the committer's connection sees it (inside its transaction). */
static int
read_head(struct sqlite_store *s, uint64_t *seq, char hash[LOG_HASH_HEX_LEN + 1],
          struct ac_err *err)
{
	return read_head_with(s, s->wdb, s->w[W_HEAD], seq, hash, err);
}

/* Read the stored hash of node (level, index) with stmt into out: SQLITE_OK, SQLITE_NOTFOUND
 * when there is no such row, SQLITE_CORRUPT when it is not 32 bytes, else SQLite's code. */
static int
node_get(sqlite3_stmt *stmt, unsigned level, uint64_t index, unsigned char out[MERKLE_HASH_LEN])
{
	const void *blob;
	int rc;

	if (index > INT64_MAX)
		return SQLITE_NOTFOUND;
	rc = sqlite3_bind_int(stmt, 1, (int)level);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(stmt, 2, (sqlite3_int64)index);
	if (rc == SQLITE_OK) {
		rc = sqlite3_step(stmt);
		if (rc == SQLITE_DONE) {
			rc = SQLITE_NOTFOUND;
		} else if (rc == SQLITE_ROW) {
			blob = sqlite3_column_blob(stmt, 0);
			if (blob == NULL || sqlite3_column_bytes(stmt, 0) != MERKLE_HASH_LEN) {
				rc = SQLITE_CORRUPT;
			} else {
				memcpy(out, blob, MERKLE_HASH_LEN);
				rc = SQLITE_OK;
			}
		}
	}
	sqlite3_reset(stmt);
	sqlite3_clear_bindings(stmt);
	return rc;
}

/* Store the hash of node (level, index). */
static int
node_put(struct sqlite_store *s, unsigned level, uint64_t index,
         const unsigned char hash[MERKLE_HASH_LEN])
{
	sqlite3_stmt *stmt = s->w[W_NODE_PUT];
	int rc;

	rc = sqlite3_bind_int(stmt, 1, (int)level);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(stmt, 2, (sqlite3_int64)index);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_blob(stmt, 3, hash, MERKLE_HASH_LEN, SQLITE_STATIC);
	return finish(stmt, rc);
}

/*
 * Add entry seq's leaf to the tree inside the open transaction: its leaf hash, then each
 * perfect subtree it completes (while the node just stored is a right child, its parent is
 * complete: left sibling from the table, right the node in hand). Fills err naming the entry.
 */
static int
merkle_append(struct sqlite_store *s, uint64_t seq, const char *canonical, size_t len,
              struct ac_err *err)
{
	unsigned char hash[MERKLE_HASH_LEN], left[MERKLE_HASH_LEN];
	uint64_t index = seq - 1;
	unsigned level = 0;
	char what[128];
	int rc;

	merkle_leaf_hash(canonical, len, hash);
	if ((rc = fault(s, "merkle")) == SQLITE_OK)
		rc = node_put(s, 0, index, hash);
	while (rc == SQLITE_OK && (index & 1) != 0) {
		if ((rc = node_get(s->w[W_NODE_GET], level, index - 1, left)) != SQLITE_OK)
			break;
		merkle_node_hash(left, hash, hash);
		level++;
		index >>= 1;
		rc = node_put(s, level, index, hash);
	}
	if (rc == SQLITE_OK)
		return 0;
	if (rc == SQLITE_CONSTRAINT_PRIMARYKEY)
		return ac_err_set(err, AC_ERR_STORE, "log_corrupt",
		                  "%s: the merkle tree already holds a node for issuance log entry"
		                  " %llu: log entries were removed from the database",
		                  s->path, (unsigned long long)seq);
	if (rc == SQLITE_NOTFOUND || rc == SQLITE_CORRUPT)
		return ac_err_set(err, AC_ERR_STORE, "log_corrupt",
		                  "%s: merkle tree node (level %u, index %llu) is missing or"
		                  " malformed while adding issuance log entry %llu",
		                  s->path, level, (unsigned long long)index - 1,
		                  (unsigned long long)seq);
	snprintf(what, sizeof(what), "adding issuance log entry %llu to the merkle tree",
	         (unsigned long long)seq);
	return db_error(s, s->wdb, rc, what, err);
}

/* The number of leaves in the tree as stored (one past the highest leaf index). */
static int
merkle_leaf_count(struct sqlite_store *s, int64_t *count, struct ac_err *err)
{
	return query_int(s, s->wdb, NULL,
	                 "SELECT coalesce(max(idx) + 1, 0) FROM merkle_nodes WHERE level = 0",
	                 "counting merkle tree leaves", count, err);
}

/*
 * Give every log entry without a leaf its leaf: a log written before the tree existed (the
 * schema migration cannot hash). One transaction, streaming the missing entries in order;
 * a no-op when the tree is complete. More leaves than entries (entries removed behind the
 * store's back) is left for the committer to refuse and for verification to find.
 */
static int
merkle_catch_up(struct sqlite_store *s, struct ac_err *err)
{
	static const char sql[] = "SELECT seq, canonical FROM issuance_log WHERE seq > ?1"
	                          " ORDER BY seq";
	char hash[LOG_HASH_HEX_LEN + 1];
	sqlite3_stmt *stmt = NULL;
	uint64_t head, seq;
	int64_t leaves;
	int in_tx = 0, rc, ret = -1;

	if (merkle_leaf_count(s, &leaves, err) != 0)
		goto out;
	if ((uint64_t)leaves >= s->head_seq) {
		ret = 0;
		goto out;
	}
	if (exec_sql(s, s->wdb, "BEGIN IMMEDIATE", "starting the merkle tree catch-up", err) != 0)
		goto out;
	in_tx = 1;
	if (merkle_leaf_count(s, &leaves, err) != 0 || read_head(s, &head, hash, err) != 0)
		goto out;
	if ((rc = sqlite3_prepare_v2(s->wdb, sql, -1, &stmt, NULL)) != SQLITE_OK ||
	    (rc = sqlite3_bind_int64(stmt, 1, leaves)) != SQLITE_OK) {
		db_error(s, s->wdb, rc, "preparing the merkle tree catch-up", err);
		goto out;
	}
	seq = (uint64_t)leaves;
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		const char *canonical = (const char *)sqlite3_column_text(stmt, 1);

		seq++;
		if ((uint64_t)sqlite3_column_int64(stmt, 0) != seq || canonical == NULL) {
			ac_err_set(err, AC_ERR_STORE, "log_corrupt",
			           "%s: issuance log entry %llu is missing or empty", s->path,
			           (unsigned long long)seq);
			goto out;
		}
		if (merkle_append(s, seq, canonical, (size_t)sqlite3_column_bytes(stmt, 1), err) !=
		    0)
			goto out;
	}
	if (rc != SQLITE_DONE) {
		db_error(s, s->wdb, rc, "reading the issuance log for the merkle tree", err);
		goto out;
	}
	sqlite3_finalize(stmt);
	stmt = NULL;
	if (exec_sql(s, s->wdb, "COMMIT", "committing the merkle tree catch-up", err) != 0)
		goto out;
	in_tx = 0;
	ret = 0;
out:
	sqlite3_finalize(stmt);
	if (in_tx && !sqlite3_get_autocommit(s->wdb))
		sqlite3_exec(s->wdb, "ROLLBACK", NULL, NULL, NULL);
	return ret;
}

static void
sqlite_free(struct sqlite_store *s)
{
	int i;

	if (s == NULL)
		return;
	for (i = 0; i < W_COUNT; i++)
		sqlite3_finalize(s->w[i]);
	for (i = 0; i < R_COUNT; i++)
		sqlite3_finalize(s->r[i]);
	sqlite3_close(s->rdb);
	sqlite3_close(s->wdb);
	pthread_mutex_destroy(&s->head_lock);
	pthread_mutex_destroy(&s->rlock);
	free(s->path);
	free(s);
}

int
store_sqlite_open(struct store *st, const struct store_options *opts, struct ac_err *err)
{
	struct sqlite_store *s = NULL;
	int ret = -1;

	if ((s = calloc(1, sizeof(*s))) == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "%s: out of memory", opts->path);
		goto out;
	}
	/* Default-attribute mutexes cannot fail to initialise on Linux. */
	pthread_mutex_init(&s->rlock, NULL);
	pthread_mutex_init(&s->head_lock, NULL);
	if ((s->path = strdup(opts->path)) == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "%s: out of memory", opts->path);
		goto out;
	}
	s->busy_timeout_ms = opts->busy_timeout_ms > INT_MAX ? INT_MAX : (int)opts->busy_timeout_ms;
	s->fault = opts->fault;
	s->fault_arg = opts->fault_arg;

	if (store_file_create_private(s->path, err) != 0 || open_connection(s, &s->wdb, err) != 0 ||
	    migrate(s, err) != 0 || prepare_all(s, s->wdb, write_sql, s->w, W_COUNT, err) != 0 ||
	    read_head(s, &s->head_seq, s->head_hash, err) != 0 || merkle_catch_up(s, err) != 0)
		goto out;
	if (open_connection(s, &s->rdb, err) != 0 ||
	    exec_sql(s, s->rdb, "PRAGMA query_only = ON", "setting up the reader", err) != 0 ||
	    prepare_all(s, s->rdb, read_sql, s->r, R_COUNT, err) != 0)
		goto out;
	st->ops = &sqlite_ops;
	st->backend = s;
	s = NULL;
	ret = 0;
out:
	sqlite_free(s);
	return ret;
}

static void
sqlite_close(struct store *st)
{
	sqlite_free(st->backend);
	st->backend = NULL;
}

/* Lowercase a hex serial into out; -1 unless it is 1 to SERIAL_HEX_MAX hex digits. */
static int
serial_normalize(const char *in, char out[SERIAL_HEX_MAX + 1])
{
	size_t i, n = in != NULL ? strlen(in) : 0;

	if (n == 0 || n > SERIAL_HEX_MAX)
		return -1;
	for (i = 0; i < n; i++) {
		char ch = in[i];

		if (ch >= 'A' && ch <= 'F')
			ch = (char)(ch - 'A' + 'a');
		if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f')))
			return -1;
		out[i] = ch;
	}
	out[n] = '\0';
	return 0;
}

/* Check a unit's inputs and lowercase its certificate serial into serial. A unit that fails
 * here fails alone, before touching the database. */
static int
validate_unit(const struct store_write *w, char serial[SERIAL_HEX_MAX + 1],
              char revoke[SERIAL_HEX_MAX + 1], struct ac_err *err)
{
	const struct cert_record *c = w->cert;

	if (w->entry == NULL || w->entry->kind == NULL || w->entry->kind[0] == '\0')
		return ac_err_set(err, AC_ERR_INVALID, "log_entry_invalid",
		                  "store unit has no log entry kind");
	if (w->token_jti != NULL && (w->token_jti[0] == '\0' || strlen(w->token_jti) > JTI_MAX))
		return ac_err_set(err, AC_ERR_INVALID, "token_invalid",
		                  "%s entry: token id is empty or longer than %d bytes",
		                  w->entry->kind, JTI_MAX);
	if (w->revoke_serial != NULL && serial_normalize(w->revoke_serial, revoke) != 0)
		return ac_err_set(err, AC_ERR_INVALID, "serial_invalid",
		                  "%s entry: serial to revoke is not 1 to %d hex digits",
		                  w->entry->kind, SERIAL_HEX_MAX);
	if (w->intermediate != NULL &&
	    (w->intermediate->fingerprint == NULL || strlen(w->intermediate->fingerprint) != 64 ||
	     w->intermediate->state == NULL || strlen(w->intermediate->state) >= 16))
		return ac_err_set(err, AC_ERR_INVALID, "intermediate_invalid",
		                  "%s entry: intermediate fingerprint or state malformed",
		                  w->entry->kind);
	if (c == NULL)
		return 0;
	if (serial_normalize(c->serial, serial) != 0)
		return ac_err_set(err, AC_ERR_INVALID, "cert_invalid",
		                  "%s entry: certificate serial is not 1 to %d hex digits",
		                  w->entry->kind, SERIAL_HEX_MAX);
	if (c->subject == NULL || c->der == NULL || c->der_len == 0)
		return ac_err_set(err, AC_ERR_INVALID, "cert_invalid",
		                  "certificate %s: subject or DER missing", serial);
	return 0;
}

static int
insert_cert(struct sqlite_store *s, const struct cert_record *c, const char *serial, uint64_t seq)
{
	sqlite3_stmt *stmt = s->w[W_CERT];
	int rc;

	rc = bind_text(stmt, 1, serial);
	if (rc == SQLITE_OK)
		rc = bind_text(stmt, 2, c->subject);
	if (rc == SQLITE_OK)
		rc = bind_text(stmt, 3, c->parent);
	if (rc == SQLITE_OK)
		rc = bind_text(stmt, 4, c->spki_sha256);
	if (rc == SQLITE_OK)
		rc = bind_text(stmt, 5, c->issuer_fingerprint);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(stmt, 6, c->not_before);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(stmt, 7, c->not_after);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_blob64(stmt, 8, c->der, c->der_len, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(stmt, 9, (sqlite3_int64)seq);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int(stmt, 10, c->depth);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(stmt, 11, c->renew_after);
	return finish(stmt, rc);
}

static int
insert_token(struct sqlite_store *s, const char *jti, int64_t expires)
{
	sqlite3_stmt *stmt = s->w[W_TOKEN];
	int rc;

	rc = bind_text(stmt, 1, jti);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(stmt, 2, expires);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(stmt, 3, now_ms() / 1000);
	return finish(stmt, rc);
}

/* Mark a certificate revoked. SQLITE_NOTFOUND when there is no such certificate and
 * SQLITE_CONSTRAINT when it is revoked already (unit failures); else an SQLite result. */
static int
revoke_cert(struct sqlite_store *s, const char *serial, int64_t revoked_at, const char *reason)
{
	sqlite3_stmt *stmt = s->w[W_CERT_STATE];
	int rc;

	if ((rc = bind_text(stmt, 1, serial)) == SQLITE_OK) {
		rc = sqlite3_step(stmt);
		if (rc == SQLITE_DONE)
			rc = SQLITE_NOTFOUND;
		else if (rc == SQLITE_ROW)
			rc = sqlite3_column_int64(stmt, 0) != 0 ? SQLITE_CONSTRAINT : SQLITE_OK;
	}
	sqlite3_reset(stmt);
	sqlite3_clear_bindings(stmt);
	if (rc != SQLITE_OK)
		return rc;

	stmt = s->w[W_REVOKE];
	rc = bind_text(stmt, 1, serial);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(stmt, 2, revoked_at);
	if (rc == SQLITE_OK)
		rc = bind_text(stmt, 3, reason);
	return finish(stmt, rc);
}

static int
insert_log(struct sqlite_store *s, const struct log_entry *e, uint64_t seq, int64_t time_ms,
           const char *canonical, size_t canonical_len, const char *hash)
{
	sqlite3_stmt *stmt = s->w[W_LOG];
	int rc;

	rc = sqlite3_bind_int64(stmt, 1, (sqlite3_int64)seq);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(stmt, 2, time_ms);
	if (rc == SQLITE_OK)
		rc = bind_text(stmt, 3, e->kind);
	if (rc == SQLITE_OK)
		rc = bind_text(stmt, 4, e->subject);
	if (rc == SQLITE_OK)
		rc = bind_text(stmt, 5, e->serial);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text64(stmt, 6, canonical, canonical_len, SQLITE_STATIC,
		                         SQLITE_UTF8);
	if (rc == SQLITE_OK)
		rc = bind_text(stmt, 7, hash);
	return finish(stmt, rc);
}

/* Record an intermediate's rotation state, by the entry seq that records the change. */
static int
upsert_intermediate(struct sqlite_store *s, const struct intermediate_record *r, uint64_t seq,
                    int64_t time_ms)
{
	sqlite3_stmt *stmt = s->w[W_INTERMEDIATE];
	int rc;

	rc = bind_text(stmt, 1, r->fingerprint);
	if (rc == SQLITE_OK)
		rc = bind_text(stmt, 2, r->state);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(stmt, 3, r->not_before);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(stmt, 4, r->not_after);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(stmt, 5, r->published_at);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(stmt, 6, r->bundle_sequence);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(stmt, 7, time_ms / 1000);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(stmt, 8, (sqlite3_int64)seq);
	return finish(stmt, rc);
}

/*
 * One unit inside the open transaction: certificate, used token, log entry chained onto
 * (*seq, head). Returns 0 when the unit is in (and advances *seq and head), 1 when the unit
 * alone failed (w->result says why), or -1 when the transaction as a whole cannot go on (err
 * says why). With isolated set the unit runs in its own savepoint, undone when the unit
 * fails; without, a failed unit may leave part of its writes in the transaction, which the
 * caller must then roll back as a whole (see sqlite_commit_batch).
 */
static int
commit_unit(struct sqlite_store *s, struct store_write *w, uint64_t *seq,
            char head[LOG_HASH_HEX_LEN + 1], int isolated, struct ac_err *err)
{
	char serial[SERIAL_HEX_MAX + 1], revoke[SERIAL_HEX_MAX + 1];
	char hash[LOG_HASH_HEX_LEN + 1], what[128];
	uint64_t next = *seq + 1;
	char *canonical = NULL;
	size_t canonical_len = 0;
	int64_t time_ms;
	int in_savepoint = 0, rc, ret = -1;

	if (validate_unit(w, serial, revoke, &w->result) != 0) {
		ret = 1;
		goto out;
	}
	if (isolated) {
		if ((rc = finish(s->w[W_SAVEPOINT], SQLITE_OK)) != SQLITE_OK) {
			db_error(s, s->wdb, rc, "opening a savepoint", err);
			goto out;
		}
		in_savepoint = 1;
	}

	if (w->cert != NULL) {
		if ((rc = fault(s, "cert")) == SQLITE_OK)
			rc = insert_cert(s, w->cert, serial, next);
		if (rc == SQLITE_CONSTRAINT_PRIMARYKEY) {
			ac_err_set(&w->result, AC_ERR_CONFLICT, "serial_exists",
			           "certificate %s is already stored", serial);
			ret = 1;
			goto out;
		}
		if (rc != SQLITE_OK) {
			snprintf(what, sizeof(what), "storing certificate %s", serial);
			db_error(s, s->wdb, rc, what, err);
			goto out;
		}
	}

	if (w->revoke_serial != NULL) {
		if ((rc = fault(s, "cert")) == SQLITE_OK)
			rc = revoke_cert(s, revoke,
			                 w->revoked_at != 0 ? w->revoked_at : now_ms() / 1000,
			                 w->revoke_reason);
		if (rc == SQLITE_NOTFOUND) {
			ac_err_set(&w->result, AC_ERR_NOTFOUND, "cert_not_found",
			           "certificate %s not found", revoke);
			ret = 1;
			goto out;
		}
		if (rc == SQLITE_CONSTRAINT) {
			ac_err_set(&w->result, AC_ERR_CONFLICT, "already_revoked",
			           "certificate %s is already revoked", revoke);
			ret = 1;
			goto out;
		}
		if (rc != SQLITE_OK) {
			snprintf(what, sizeof(what), "revoking certificate %s", revoke);
			db_error(s, s->wdb, rc, what, err);
			goto out;
		}
	}

	if (w->token_jti != NULL) {
		if ((rc = fault(s, "token")) == SQLITE_OK)
			rc = insert_token(s, w->token_jti, w->token_expires);
		if (rc == SQLITE_CONSTRAINT_PRIMARYKEY) {
			ac_err_set(&w->result, AC_ERR_CONFLICT, "token_used",
			           "token %s has already been used", w->token_jti);
			ret = 1;
			goto out;
		}
		if (rc != SQLITE_OK) {
			db_error(s, s->wdb, rc, "marking the token used", err);
			goto out;
		}
	}

	time_ms = w->entry->time_ms != 0 ? w->entry->time_ms : now_ms();
	if (log_chain_encode(w->entry, next, time_ms, head, &canonical, &canonical_len,
	                     &w->result) != 0) {
		ret = 1;
		goto out;
	}
	log_chain_hash(canonical, canonical_len, hash);
	if ((rc = fault(s, "log")) == SQLITE_OK)
		rc = insert_log(s, w->entry, next, time_ms, canonical, canonical_len, hash);
	if (rc != SQLITE_OK) {
		snprintf(what, sizeof(what), "appending issuance log entry %llu",
		         (unsigned long long)next);
		db_error(s, s->wdb, rc, what, err);
		goto out;
	}
	/* The leaf in the entry's savepoint: never one without the other. */
	if (merkle_append(s, next, canonical, canonical_len, err) != 0)
		goto out;
	if (w->intermediate != NULL) {
		if ((rc = fault(s, "intermediate")) == SQLITE_OK)
			rc = upsert_intermediate(s, w->intermediate, next, time_ms);
		if (rc != SQLITE_OK) {
			db_error(s, s->wdb, rc, "recording the intermediate's rotation state", err);
			goto out;
		}
	}

	if (in_savepoint && (rc = finish(s->w[W_RELEASE], SQLITE_OK)) != SQLITE_OK) {
		db_error(s, s->wdb, rc, "releasing a savepoint", err);
		goto out;
	}
	in_savepoint = 0;
	*seq = next;
	memcpy(head, hash, sizeof(hash));
	w->seq = next;
	memcpy(w->hash, hash, sizeof(hash));
	ret = 0;
out:
	if (ret == 1 && in_savepoint) {
		if ((rc = finish(s->w[W_ROLLBACK_TO], SQLITE_OK)) != SQLITE_OK ||
		    (rc = finish(s->w[W_RELEASE], SQLITE_OK)) != SQLITE_OK) {
			db_error(s, s->wdb, rc, "undoing a failed unit", err);
			ret = -1;
		}
	}
	free(canonical);
	return ret;
}

/*
 * One transaction over w[0..n); see struct store_ops.
 *
 * Units almost never fail on their own (a serial or token already stored, a revocation of
 * an unknown serial), so the batch first runs without a savepoint per unit: a savepoint
 * costs two more statements per unit and a copy of every page the unit touches into the
 * statement journal (about 50k instructions a unit). When a unit does fail, that attempt is
 * rolled back whole and the batch runs again with each unit in its own savepoint, which
 * records the failure on that unit alone, as before: the outcome is the same either way.
 */
static int
sqlite_commit_batch(struct store *st, struct store_write **w, size_t n, struct ac_err *err)
{
	struct sqlite_store *s = st->backend;
	char head[LOG_HASH_HEX_LEN + 1];
	struct ac_err txerr;
	uint64_t seq;
	size_t i;
	int in_tx = 0, isolated = 0, unit_failed, rc, ret = -1;

	ac_err_clear(&txerr);
again:
	for (i = 0; i < n; i++) {
		ac_err_clear(&w[i]->result);
		w[i]->seq = 0;
		w[i]->hash[0] = '\0';
	}
	if ((rc = fault(s, "begin")) == SQLITE_OK)
		rc = finish(s->w[W_BEGIN], SQLITE_OK);
	if (rc != SQLITE_OK) {
		db_error(s, s->wdb, rc, "beginning a transaction", &txerr);
		goto out;
	}
	in_tx = 1;
	/* Chain onto what the file holds now, under the write lock. */
	if (read_head(s, &seq, head, &txerr) != 0)
		goto out;
	unit_failed = 0;
	for (i = 0; i < n && !unit_failed; i++) {
		rc = commit_unit(s, w[i], &seq, head, isolated, &txerr);
		if (rc < 0)
			goto out;
		unit_failed = rc > 0 && !isolated;
	}
	if (unit_failed) {
		if ((rc = finish(s->w[W_ROLLBACK], SQLITE_OK)) != SQLITE_OK) {
			db_error(s, s->wdb, rc, "rolling back to retry a batch unit by unit",
			         &txerr);
			goto out;
		}
		in_tx = 0;
		isolated = 1;
		goto again;
	}
	if ((rc = fault(s, "commit")) == SQLITE_OK)
		rc = finish(s->w[W_COMMIT], SQLITE_OK);
	if (rc != SQLITE_OK) {
		db_error(s, s->wdb, rc, "committing", &txerr);
		goto out;
	}
	in_tx = 0;
	pthread_mutex_lock(&s->head_lock);
	s->head_seq = seq;
	memcpy(s->head_hash, head, sizeof(head));
	pthread_mutex_unlock(&s->head_lock);
	ret = 0;
out:
	if (ret != 0) {
		/* After an I/O error SQLite may have rolled back already. */
		if (in_tx && !sqlite3_get_autocommit(s->wdb))
			finish(s->w[W_ROLLBACK], SQLITE_OK);
		for (i = 0; i < n; i++) {
			ac_err_set(&w[i]->result, txerr.code, txerr.reason, "%s", txerr.msg);
			w[i]->seq = 0;
			w[i]->hash[0] = '\0';
		}
		ac_err_set(err, txerr.code, txerr.reason, "%s", txerr.msg);
	}
	return ret;
}

static int
sqlite_log_head(struct store *st, uint64_t *seq, char *hash, struct ac_err *err)
{
	struct sqlite_store *s = st->backend;
	int rc;

	/* From the file, not from memory: another process (the CLI next to a running daemon)
	 * may have appended since this one last committed. */
	pthread_mutex_lock(&s->rlock);
	rc = read_head_with(s, s->rdb, s->r[R_HEAD], seq, hash, err);
	pthread_mutex_unlock(&s->rlock);
	return rc;
}

/* Visit the rows a filter selects, streaming from a connection of the scan's own. */
static int
sqlite_log_scan(struct store *st, const struct log_filter *f, log_row_fn fn, void *arg,
                struct ac_err *err)
{
	struct sqlite_store *s = st->backend;
	const char *subject_prefix = f->subject_prefix;
	char sql[512] = "SELECT seq, time_ms, canonical, hash FROM issuance_log WHERE 1";
	sqlite3_stmt *stmt = NULL;
	sqlite3 *db = NULL;
	struct log_row row;
	int idx = 0, rc = SQLITE_OK, ret = -1;

	if (subject_prefix != NULL && subject_prefix[0] == '\0')
		subject_prefix = NULL;
	if (f->from_seq != 0)
		strcat(sql, " AND seq >= ?");
	if (f->since_ms != 0)
		strcat(sql, " AND time_ms >= ?");
	if (f->until_ms != 0)
		strcat(sql, " AND time_ms < ?");
	if (f->kind != NULL)
		strcat(sql, " AND kind = ?");
	if (subject_prefix != NULL)
		strcat(sql, " AND substr(CAST(subject AS BLOB), 1, ?) = CAST(? AS BLOB)");
	strcat(sql, " ORDER BY seq");

	if (open_connection(s, &db, err) != 0)
		goto out;
	if ((rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL)) != SQLITE_OK) {
		db_error(s, db, rc, "preparing the log scan", err);
		goto out;
	}
	if (f->from_seq != 0)
		rc = sqlite3_bind_int64(stmt, ++idx,
		                        f->from_seq > INT64_MAX ? INT64_MAX : (int64_t)f->from_seq);
	if (rc == SQLITE_OK && f->since_ms != 0)
		rc = sqlite3_bind_int64(stmt, ++idx, f->since_ms);
	if (rc == SQLITE_OK && f->until_ms != 0)
		rc = sqlite3_bind_int64(stmt, ++idx, f->until_ms);
	if (rc == SQLITE_OK && f->kind != NULL)
		rc = bind_text(stmt, ++idx, f->kind);
	if (rc == SQLITE_OK && subject_prefix != NULL) {
		rc = sqlite3_bind_int64(stmt, ++idx, (int64_t)strlen(subject_prefix));
		if (rc == SQLITE_OK)
			rc = bind_text(stmt, ++idx, subject_prefix);
	}
	if (rc != SQLITE_OK) {
		db_error(s, db, rc, "binding the log scan", err);
		goto out;
	}
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		row.seq = (uint64_t)sqlite3_column_int64(stmt, 0);
		row.time_ms = sqlite3_column_int64(stmt, 1);
		row.canonical = (const char *)sqlite3_column_text(stmt, 2);
		row.canonical_len = (size_t)sqlite3_column_bytes(stmt, 2);
		row.hash = (const char *)sqlite3_column_text(stmt, 3);
		if (row.canonical == NULL || row.hash == NULL) {
			ac_err_set(err, AC_ERR_STORE, "log_corrupt",
			           "%s: issuance log row %llu has no canonical text or hash",
			           s->path, (unsigned long long)row.seq);
			goto out;
		}
		if (fn(arg, &row) != 0) {
			rc = SQLITE_DONE;
			break;
		}
	}
	if (rc != SQLITE_DONE) {
		db_error(s, db, rc, "reading the issuance log", err);
		goto out;
	}
	ret = 0;
out:
	sqlite3_finalize(stmt);
	sqlite3_close(db);
	return ret;
}

/* The stored hash of perfect subtree (level, index), read on the shared reader. */
static int
sqlite_tree_node(struct store *st, unsigned level, uint64_t index,
                 unsigned char out[MERKLE_HASH_LEN], struct ac_err *err)
{
	struct sqlite_store *s = st->backend;
	int rc, ret = -1;

	pthread_mutex_lock(&s->rlock);
	rc = node_get(s->r[R_NODE_GET], level, index, out);
	if (rc == SQLITE_NOTFOUND || rc == SQLITE_CORRUPT) {
		ac_err_set(err, AC_ERR_STORE, "log_corrupt",
		           "%s: merkle tree node (level %u, index %llu) is %s", s->path, level,
		           (unsigned long long)index,
		           rc == SQLITE_CORRUPT ? "malformed" : "missing");
		goto out;
	}
	if (rc != SQLITE_OK) {
		db_error(s, s->rdb, rc, "reading a merkle tree node", err);
		goto out;
	}
	ret = 0;
out:
	pthread_mutex_unlock(&s->rlock);
	return ret;
}

/* A heap copy of a text column; NULL for SQL NULL. -1 when out of memory. */
static int
column_strdup(sqlite3_stmt *stmt, int col, char **out)
{
	const unsigned char *text;
	int len;

	*out = NULL;
	if (sqlite3_column_type(stmt, col) == SQLITE_NULL)
		return 0;
	if ((text = sqlite3_column_text(stmt, col)) == NULL)
		return -1;
	len = sqlite3_column_bytes(stmt, col);
	if ((*out = malloc((size_t)len + 1)) == NULL)
		return -1;
	memcpy(*out, text, (size_t)len);
	(*out)[len] = '\0';
	return 0;
}

static int
sqlite_cert_get(struct store *st, const char *serial, struct cert_row *out, struct ac_err *err)
{
	struct sqlite_store *s = st->backend;
	sqlite3_stmt *stmt = s->r[R_CERT_GET];
	char lower[SERIAL_HEX_MAX + 1];
	const void *der;
	int rc, ret = -1;

	memset(out, 0, sizeof(*out));
	if (serial_normalize(serial, lower) != 0)
		return ac_err_set(err, AC_ERR_INVALID, "serial_invalid",
		                  "certificate serial is not 1 to %d hex digits", SERIAL_HEX_MAX);

	pthread_mutex_lock(&s->rlock);
	if ((rc = bind_text(stmt, 1, lower)) != SQLITE_OK) {
		db_error(s, s->rdb, rc, "looking up a certificate", err);
		goto out;
	}
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_DONE) {
		ac_err_set(err, AC_ERR_NOTFOUND, "cert_not_found", "certificate %s not found",
		           lower);
		goto out;
	}
	if (rc != SQLITE_ROW) {
		db_error(s, s->rdb, rc, "looking up a certificate", err);
		goto out;
	}
	if (column_strdup(stmt, 0, &out->serial) != 0 ||
	    column_strdup(stmt, 1, &out->subject) != 0 ||
	    column_strdup(stmt, 2, &out->parent) != 0 ||
	    column_strdup(stmt, 3, &out->spki_sha256) != 0 ||
	    column_strdup(stmt, 4, &out->issuer_fingerprint) != 0 ||
	    column_strdup(stmt, 9, &out->revoke_reason) != 0)
		goto nomem;
	out->not_before = sqlite3_column_int64(stmt, 5);
	out->not_after = sqlite3_column_int64(stmt, 6);
	out->revoked_at = sqlite3_column_int64(stmt, 8);
	out->log_seq = (uint64_t)sqlite3_column_int64(stmt, 10);
	out->depth = sqlite3_column_int(stmt, 11);
	out->renew_after = sqlite3_column_int64(stmt, 12);
	der = sqlite3_column_blob(stmt, 7);
	out->der_len = (size_t)sqlite3_column_bytes(stmt, 7);
	if (der == NULL || out->der_len == 0 || (out->der = malloc(out->der_len)) == NULL)
		goto nomem;
	memcpy(out->der, der, out->der_len);
	ret = 0;
	goto out;
nomem:
	ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "certificate %s: out of memory", lower);
out:
	sqlite3_reset(stmt);
	sqlite3_clear_bindings(stmt);
	pthread_mutex_unlock(&s->rlock);
	if (ret != 0)
		store_cert_row_free(out);
	return ret;
}

static int
sqlite_cert_count(struct store *st, int64_t *count, struct ac_err *err)
{
	struct sqlite_store *s = st->backend;
	int ret;

	pthread_mutex_lock(&s->rlock);
	ret = query_int(s, s->rdb, s->r[R_CERT_COUNT], NULL, "counting certificates", count, err);
	pthread_mutex_unlock(&s->rlock);
	return ret;
}

/* Visit revoked certificates, streaming from a connection of the scan's own. */
/*
 * List certificates for auditors. The statement is built from a fixed text with every value
 * bound: "?1 IS NULL OR ..." keeps one shape for every filter.
 */
static int
sqlite_cert_list(struct store *st, const struct cert_filter *f, cert_summary_fn fn, void *arg,
                 struct ac_err *err)
{
	static const char sql[] =
	    "SELECT serial, subject, parent, not_before, not_after, revoked_at, revoke_reason,"
	    " depth, renew_after FROM certificates"
	    " WHERE (?1 IS NULL OR substr(subject, 1, length(?1)) = ?1)"
	    " AND (?2 IS NULL OR serial > ?2)"
	    " AND (?3 = 0 OR (not_after > ?3 AND not_before <= ?3 AND revoked_at = 0))"
	    " ORDER BY serial LIMIT ?4";
	struct sqlite_store *s = st->backend;
	sqlite3_stmt *stmt = NULL;
	struct cert_summary row;
	sqlite3 *db = NULL;
	int rc, ret = -1;

	if (open_connection(s, &db, err) != 0)
		goto out;
	if ((rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL)) != SQLITE_OK ||
	    (rc = bind_text(stmt, 1, f->subject_prefix)) != SQLITE_OK ||
	    (rc = bind_text(stmt, 2, f->after_serial)) != SQLITE_OK ||
	    (rc = sqlite3_bind_int64(stmt, 3, f->valid_at)) != SQLITE_OK ||
	    (rc = sqlite3_bind_int64(stmt, 4, f->limit > 0 ? f->limit : -1)) != SQLITE_OK) {
		db_error(s, db, rc, "preparing the certificate listing", err);
		goto out;
	}
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		row.serial = (const char *)sqlite3_column_text(stmt, 0);
		row.subject = (const char *)sqlite3_column_text(stmt, 1);
		row.parent = (const char *)sqlite3_column_text(stmt, 2);
		row.not_before = sqlite3_column_int64(stmt, 3);
		row.not_after = sqlite3_column_int64(stmt, 4);
		row.revoked_at = sqlite3_column_int64(stmt, 5);
		row.revoke_reason = (const char *)sqlite3_column_text(stmt, 6);
		row.depth = sqlite3_column_int(stmt, 7);
		row.renew_after = sqlite3_column_int64(stmt, 8);
		if (row.serial == NULL || row.subject == NULL) {
			ac_err_set(err, AC_ERR_STORE, "store_error",
			           "%s: certificate row without a serial or subject", s->path);
			goto out;
		}
		if (fn(arg, &row) != 0) {
			rc = SQLITE_DONE;
			break;
		}
	}
	if (rc != SQLITE_DONE) {
		db_error(s, db, rc, "listing certificates", err);
		goto out;
	}
	ret = 0;
out:
	sqlite3_finalize(stmt);
	sqlite3_close(db);
	return ret;
}

static int
sqlite_revoked_scan(struct store *st, int64_t not_after_min, revoked_row_fn fn, void *arg,
                    struct ac_err *err)
{
	static const char sql[] = "SELECT serial, revoked_at, revoke_reason, not_after"
	                          " FROM certificates WHERE revoked_at != 0 AND not_after >= ?1"
	                          " ORDER BY serial";
	struct sqlite_store *s = st->backend;
	sqlite3_stmt *stmt = NULL;
	struct revoked_row row;
	sqlite3 *db = NULL;
	int rc, ret = -1;

	if (open_connection(s, &db, err) != 0)
		goto out;
	if ((rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL)) != SQLITE_OK ||
	    (rc = sqlite3_bind_int64(stmt, 1, not_after_min)) != SQLITE_OK) {
		db_error(s, db, rc, "preparing the revocation scan", err);
		goto out;
	}
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		row.serial = (const char *)sqlite3_column_text(stmt, 0);
		row.revoked_at = sqlite3_column_int64(stmt, 1);
		row.reason = (const char *)sqlite3_column_text(stmt, 2);
		row.not_after = sqlite3_column_int64(stmt, 3);
		if (row.serial == NULL) {
			ac_err_set(err, AC_ERR_STORE, "store_error",
			           "%s: revoked certificate row without a serial", s->path);
			goto out;
		}
		if (fn(arg, &row) != 0) {
			rc = SQLITE_DONE;
			break;
		}
	}
	if (rc != SQLITE_DONE) {
		db_error(s, db, rc, "reading revoked certificates", err);
		goto out;
	}
	ret = 0;
out:
	sqlite3_finalize(stmt);
	sqlite3_close(db);
	return ret;
}

/* Run one statement on a short-lived connection of its own: the rare writes that are not
 * log units (pruning, acknowledgments) and the reads the rotation makes now and then. The
 * statement is prepared from sql, bound by bind(), and each row handed to row(). */
typedef int (*bind_fn)(sqlite3_stmt *stmt, const void *arg);
typedef int (*row_fn)(sqlite3_stmt *stmt, void *arg);

static int
run_own(struct sqlite_store *s, const char *sql, bind_fn bind, const void *bind_arg, row_fn row,
        void *row_arg, int64_t *changes, const char *what, struct ac_err *err)
{
	sqlite3_stmt *stmt = NULL;
	sqlite3 *db = NULL;
	int rc, ret = -1;

	if (open_connection(s, &db, err) != 0)
		goto out;
	if ((rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL)) != SQLITE_OK ||
	    (bind != NULL && (rc = bind(stmt, bind_arg)) != SQLITE_OK)) {
		db_error(s, db, rc, what, err);
		goto out;
	}
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW)
		if (row != NULL && row(stmt, row_arg) != 0) {
			ac_err_set(err, AC_ERR_STORE, "store_error", "%s: %s: malformed row",
			           s->path, what);
			goto out;
		}
	if (rc != SQLITE_DONE) {
		db_error(s, db, rc, what, err);
		goto out;
	}
	if (changes != NULL)
		*changes = sqlite3_changes64(db);
	ret = 0;
out:
	sqlite3_finalize(stmt);
	sqlite3_close(db);
	return ret;
}

struct intermediate_rows {
	struct intermediate_row *rows;
	size_t max, n;
};

static int
intermediate_row_read(sqlite3_stmt *stmt, void *arg)
{
	struct intermediate_rows *out = arg;
	struct intermediate_row *r;
	const unsigned char *fp = sqlite3_column_text(stmt, 0);
	const unsigned char *state = sqlite3_column_text(stmt, 1);

	if (fp == NULL || state == NULL || sqlite3_column_bytes(stmt, 0) != 64 ||
	    sqlite3_column_bytes(stmt, 1) >= (int)sizeof(r->state))
		return -1;
	if (out->n >= out->max)
		return 0;
	r = &out->rows[out->n++];
	memset(r, 0, sizeof(*r));
	memcpy(r->fingerprint, fp, 64);
	memcpy(r->state, state, (size_t)sqlite3_column_bytes(stmt, 1));
	r->not_before = sqlite3_column_int64(stmt, 2);
	r->not_after = sqlite3_column_int64(stmt, 3);
	r->published_at = sqlite3_column_int64(stmt, 4);
	r->bundle_sequence = sqlite3_column_int64(stmt, 5);
	r->changed_at = sqlite3_column_int64(stmt, 6);
	r->log_seq = (uint64_t)sqlite3_column_int64(stmt, 7);
	return 0;
}

static int
sqlite_intermediate_list(struct store *st, struct intermediate_row *rows, size_t max, size_t *n,
                         struct ac_err *err)
{
	static const char sql[] =
	    "SELECT fingerprint, state, not_before, not_after, published_at, bundle_sequence,"
	    " changed_at, log_seq FROM intermediates"
	    " ORDER BY state = 'retired', log_seq DESC";
	struct intermediate_rows out = {rows, max, 0};
	int rc;

	rc = run_own(st->backend, sql, NULL, NULL, intermediate_row_read, &out, NULL,
	             "listing intermediates", err);
	*n = out.n;
	return rc;
}

struct issuer_query {
	const char *fingerprint;
	int64_t at;
};

static int
issuer_query_bind(sqlite3_stmt *stmt, const void *arg)
{
	const struct issuer_query *q = arg;
	int rc = bind_text(stmt, 1, q->fingerprint);

	return rc == SQLITE_OK ? sqlite3_bind_int64(stmt, 2, q->at) : rc;
}

static int
two_ints_read(sqlite3_stmt *stmt, void *arg)
{
	int64_t *out = arg;

	out[0] = sqlite3_column_int64(stmt, 0);
	out[1] = sqlite3_column_int64(stmt, 1);
	return 0;
}

static int
sqlite_cert_count_by_issuer(struct store *st, const char *issuer_fingerprint, int64_t at,
                            int64_t *count, int64_t *last_not_after, struct ac_err *err)
{
	static const char sql[] = "SELECT count(*), coalesce(max(not_after), 0) FROM certificates"
	                          " WHERE issuer_fingerprint = ?1 AND not_after > ?2"
	                          " AND revoked_at = 0";
	struct issuer_query q = {issuer_fingerprint, at};
	int64_t out[2] = {0, 0};

	if (run_own(st->backend, sql, issuer_query_bind, &q, two_ints_read, out, NULL,
	            "counting an intermediate's unexpired certificates", err) != 0)
		return -1;
	*count = out[0];
	*last_not_after = out[1];
	return 0;
}

static int
int64_bind(sqlite3_stmt *stmt, const void *arg)
{
	return sqlite3_bind_int64(stmt, 1, *(const int64_t *)arg);
}

static int
sqlite_prune(struct store *st, int64_t expired_before, int64_t *certs, int64_t *tokens,
             struct ac_err *err)
{
	*certs = 0;
	*tokens = 0;
	if (run_own(st->backend, "DELETE FROM certificates WHERE not_after < ?1", int64_bind,
	            &expired_before, NULL, NULL, certs, "pruning expired certificates", err) != 0)
		return -1;
	return run_own(st->backend, "DELETE FROM used_tokens WHERE expires < ?1", int64_bind,
	               &expired_before, NULL, NULL, tokens, "pruning expired token marks", err);
}

struct ack_args {
	const char *identity;
	int64_t sequence, now;
};

static int
ack_bind(sqlite3_stmt *stmt, const void *arg)
{
	const struct ack_args *a = arg;
	int rc = bind_text(stmt, 1, a->identity);

	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(stmt, 2, a->sequence);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(stmt, 3, a->now);
	return rc;
}

static int
sqlite_bundle_ack(struct store *st, const char *identity, int64_t sequence, struct ac_err *err)
{
	static const char sql[] =
	    "INSERT INTO bundle_acks (identity, sequence, acked_at) VALUES (?1, ?2, ?3)"
	    " ON CONFLICT (identity) DO UPDATE SET sequence = max(sequence, ?2), acked_at = ?3";
	struct ack_args a = {identity, sequence, now_ms() / 1000};

	return run_own(st->backend, sql, ack_bind, &a, NULL, NULL, NULL,
	               "recording a bundle acknowledgment", err);
}

static int
one_int_read(sqlite3_stmt *stmt, void *arg)
{
	*(int64_t *)arg = sqlite3_column_int64(stmt, 0);
	return 0;
}

static int
text_bind(sqlite3_stmt *stmt, const void *arg)
{
	return bind_text(stmt, 1, arg);
}

static int
sqlite_bundle_ack_get(struct store *st, const char *identity, int64_t *sequence, struct ac_err *err)
{
	*sequence = 0;
	return run_own(st->backend, "SELECT sequence FROM bundle_acks WHERE identity = ?1",
	               text_bind, identity, one_int_read, sequence, NULL,
	               "reading a bundle acknowledgment", err);
}

/* The database file, for store_acme.c's connection. */
const char *
store_sqlite_path(const struct store *st)
{
	const struct sqlite_store *s = st->backend;

	return st->ops == &sqlite_ops && s != NULL ? s->path : NULL;
}

/* SQLite's own count, for the whole process: every connection's page cache and statements
 * (the ACME state's connection too). Bounded by each connection's cache_size. */
static uint64_t
sqlite_memory_used(struct store *st)
{
	(void)st;
	return (uint64_t)sqlite3_memory_used();
}

static const struct store_ops sqlite_ops = {
    .name = "sqlite",
    .close = sqlite_close,
    .commit_batch = sqlite_commit_batch,
    .log_head = sqlite_log_head,
    .log_scan = sqlite_log_scan,
    .tree_node = sqlite_tree_node,
    .cert_get = sqlite_cert_get,
    .cert_count = sqlite_cert_count,
    .cert_list = sqlite_cert_list,
    .revoked_scan = sqlite_revoked_scan,
    .intermediate_list = sqlite_intermediate_list,
    .cert_count_by_issuer = sqlite_cert_count_by_issuer,
    .prune = sqlite_prune,
    .bundle_ack = sqlite_bundle_ack,
    .bundle_ack_get = sqlite_bundle_ack_get,
    .memory_used = sqlite_memory_used,
};
