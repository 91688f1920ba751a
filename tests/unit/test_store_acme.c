/*
 * test_store_acme.c - store/store_acme.c: ACME objects written in one transaction, read by
 * id and by lookup key, listed per account in id order; a second object with the same id or
 * lookup (an account key already in use) is a conflict that writes nothing of its batch;
 * objects survive closing and reopening the store. They live in agentca-acme.db (0600),
 * not agentca.db; rows an older agentca left in agentca.db's acme_objects are moved there
 * once, and a move interrupted between its copy and its delete completes at the next open
 * without overwriting what is newer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "store/store.h"
#include "store/store_acme.h"
#include "testutil.h"

struct fixture {
	char *dir;
	char path[4096];
	struct store *st;
	struct store_acme *acme;
};

static void
open_all(struct fixture *f)
{
	struct store_options opts;
	struct ac_err err;

	ac_err_clear(&err);
	store_options_defaults(&opts);
	opts.path = f->path;
	f->st = store_open(&opts, &err);
	if (f->st == NULL)
		fail_msg("store_open: %s", err.msg);
	f->acme = store_acme_open(f->st, &err);
	if (f->acme == NULL)
		fail_msg("store_acme_open: %s", err.msg);
}

static void
close_all(struct fixture *f)
{
	store_acme_close(f->acme);
	store_close(f->st);
	f->acme = NULL;
	f->st = NULL;
}

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	f->dir = test_tmpdir("store-acme");
	snprintf(f->path, sizeof(f->path), "%s/agentca.db", f->dir);
	open_all(f);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;

	close_all(f);
	test_rmdir(f->dir);
	free(f);
	return 0;
}

static int
collect(void *arg, const char *id)
{
	char *out = arg;

	strcat(out, id);
	strcat(out, ",");
	return 0;
}

static void
test_put_get_find_list(void **state)
{
	struct fixture *f = *state;
	const struct acme_object batch[] = {
	    {"order", "o2", "acct-1", NULL, 100, "{\"status\":\"pending\"}"},
	    {"authz", "a1", "acct-1", NULL, 100, "{\"status\":\"pending\"}"},
	    {"order", "o1", "acct-1", "serial-1", 100, "{\"status\":\"valid\"}"},
	    {"order", "o3", "acct-2", NULL, 100, "{}"},
	};
	struct acme_object_row row;
	struct ac_err err;
	char ids[256] = "";

	ac_err_clear(&err);
	assert_int_equal(store_acme_put(f->acme, batch, 4, 1, &err), 0);
	assert_int_equal(store_acme_get(f->acme, "order", "o1", &row, &err), 0);
	assert_string_equal(row.account, "acct-1");
	assert_string_equal(row.doc, "{\"status\":\"valid\"}");
	assert_int_equal(row.expires, 100);
	store_acme_row_free(&row);
	assert_int_equal(store_acme_find(f->acme, "order", "serial-1", &row, &err), 0);
	assert_string_equal(row.id, "o1");
	store_acme_row_free(&row);
	assert_int_equal(store_acme_get(f->acme, "authz", "o1", &row, &err), -1);
	assert_int_equal(err.code, AC_ERR_NOTFOUND);
	assert_int_equal(store_acme_list(f->acme, "order", "acct-1", NULL, 0, collect, ids, &err),
	                 0);
	assert_string_equal(ids, "o1,o2,");
	ids[0] = '\0';
	assert_int_equal(store_acme_list(f->acme, "order", "acct-1", "o1", 0, collect, ids, &err),
	                 0);
	assert_string_equal(ids, "o2,");
	/* Replace in place (create = 0). */
	{
		const struct acme_object upd = {"order", "o2", "acct-1",
		                                NULL,    100,  "{\"status\":\"ready\"}"};

		assert_int_equal(store_acme_put(f->acme, &upd, 1, 0, &err), 0);
		assert_int_equal(store_acme_get(f->acme, "order", "o2", &row, &err), 0);
		assert_string_equal(row.doc, "{\"status\":\"ready\"}");
		store_acme_row_free(&row);
	}
}

static void
test_conflict_writes_nothing(void **state)
{
	struct fixture *f = *state;
	const struct acme_object first = {"account", "acct-1", NULL, "thumb-1", 0, "{}"};
	const struct acme_object batch[] = {
	    {"order", "o9", "acct-1", NULL, 0, "{}"},
	    {"account", "acct-2", NULL, "thumb-1", 0, "{}"}, /* the same key as acct-1 */
	};
	struct acme_object_row row;
	struct ac_err err;

	ac_err_clear(&err);
	assert_int_equal(store_acme_put(f->acme, &first, 1, 1, &err), 0);
	assert_int_equal(store_acme_put(f->acme, batch, 2, 1, &err), -1);
	assert_int_equal(err.code, AC_ERR_CONFLICT);
	ac_err_clear(&err);
	assert_int_equal(store_acme_get(f->acme, "order", "o9", &row, &err), -1);
	assert_int_equal(err.code, AC_ERR_NOTFOUND);
}

static void
test_survives_reopen(void **state)
{
	struct fixture *f = *state;
	const struct acme_object eab = {"eab", "kid-1", NULL, NULL, 0, "{\"hmac\":\"x\"}"};
	struct acme_object_row row;
	struct ac_err err;

	ac_err_clear(&err);
	assert_int_equal(store_acme_put(f->acme, &eab, 1, 1, &err), 0);
	close_all(f);
	open_all(f);
	assert_int_equal(store_acme_get(f->acme, "eab", "kid-1", &row, &err), 0);
	assert_string_equal(row.doc, "{\"hmac\":\"x\"}");
	store_acme_row_free(&row);
}

/* create = 0 (the upsert) for each kind of change an ACME object goes through: a new row, its
 * document only, a lookup set, another account. Each must land in the file with its indexes
 * right: read back after a reopen (no row cache). */
static void
test_update_paths_reach_the_file(void **state)
{
	struct fixture *f = *state;
	const struct acme_object steps[] = {
	    {"order", "o1", "acct-1", NULL, 100, "{\"status\":\"pending\"}"},     /* new row */
	    {"order", "o1", "acct-1", NULL, 100, "{\"status\":\"ready\"}"},       /* doc only */
	    {"order", "o1", "acct-1", "serial-7", 200, "{\"status\":\"valid\"}"}, /* lookup */
	    {"order", "o1", "acct-1", "serial-7", 300, "{\"status\":\"final\"}"}, /* doc only */
	    {"order", "o2", "acct-1", NULL, 100, "{}"},                           /* new row */
	    {"order", "o2", "acct-2", NULL, 100, "{\"moved\":1}"}, /* another account */
	};
	struct acme_object_row row;
	struct ac_err err;
	char ids[256] = "";

	ac_err_clear(&err);
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++)
		assert_int_equal(store_acme_put(f->acme, &steps[i], 1, 0, &err), 0);
	close_all(f);
	open_all(f);
	assert_int_equal(store_acme_get(f->acme, "order", "o1", &row, &err), 0);
	assert_string_equal(row.doc, "{\"status\":\"final\"}");
	assert_string_equal(row.lookup, "serial-7");
	assert_int_equal(row.expires, 300);
	store_acme_row_free(&row);
	assert_int_equal(store_acme_find(f->acme, "order", "serial-7", &row, &err), 0);
	assert_string_equal(row.id, "o1");
	assert_string_equal(row.doc, "{\"status\":\"final\"}");
	store_acme_row_free(&row);
	assert_int_equal(store_acme_list(f->acme, "order", "acct-1", NULL, 0, collect, ids, &err),
	                 0);
	assert_string_equal(ids, "o1,");
	ids[0] = '\0';
	assert_int_equal(store_acme_list(f->acme, "order", "acct-2", NULL, 0, collect, ids, &err),
	                 0);
	assert_string_equal(ids, "o2,");
	assert_int_equal(store_acme_get(f->acme, "order", "o2", &row, &err), 0);
	assert_string_equal(row.doc, "{\"moved\":1}");
	store_acme_row_free(&row);
}

/* Run SQL on agentca.db directly, as an older agentca would have written it. */
static void
main_db_exec(struct fixture *f, const char *sql)
{
	sqlite3 *db = NULL;
	char *msg = NULL;

	assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
		fail_msg("%s: %s", sql, msg != NULL ? msg : "?");
	sqlite3_close(db);
}

static int64_t
main_db_count(struct fixture *f)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *stmt = NULL;
	int64_t n;

	assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
	assert_int_equal(
	    sqlite3_prepare_v2(db, "SELECT count(*) FROM acme_objects", -1, &stmt, NULL),
	    SQLITE_OK);
	assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
	n = sqlite3_column_int64(stmt, 0);
	sqlite3_finalize(stmt);
	sqlite3_close(db);
	return n;
}

static void
test_own_file(void **state)
{
	struct fixture *f = *state;
	const struct acme_object acct = {"account", "acct-1", NULL, "thumb-1", 0, "{}"};
	char acme_path[4200];
	struct stat sb;
	struct ac_err err;

	ac_err_clear(&err);
	assert_int_equal(store_acme_put(f->acme, &acct, 1, 1, &err), 0);
	snprintf(acme_path, sizeof(acme_path), "%s/agentca-acme.db", f->dir);
	assert_int_equal(stat(acme_path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	assert_int_equal(main_db_count(f), 0);
}

static void
test_moves_rows_from_main(void **state)
{
	struct fixture *f = *state;
	struct acme_object_row row;
	struct ac_err err;
	char acme_path[4200];

	ac_err_clear(&err);
	/* An agentca.db of the old layout: ACME rows in it, no agentca-acme.db yet. */
	close_all(f);
	snprintf(acme_path, sizeof(acme_path), "%s/agentca-acme.db", f->dir);
	assert_int_equal(unlink(acme_path), 0);
	main_db_exec(f, "INSERT INTO acme_objects (kind, id, account, lookup, expires, doc) VALUES"
	                " ('account', 'acct-1', NULL, 'thumb-1', 0, '{\"old\":1}'),"
	                " ('order', 'o1', 'acct-1', 'serial-1', 100, '{\"status\":\"valid\"}')");
	open_all(f);
	assert_int_equal(store_acme_get(f->acme, "account", "acct-1", &row, &err), 0);
	assert_string_equal(row.doc, "{\"old\":1}");
	store_acme_row_free(&row);
	assert_int_equal(store_acme_find(f->acme, "order", "serial-1", &row, &err), 0);
	assert_string_equal(row.id, "o1");
	assert_string_equal(row.account, "acct-1");
	assert_int_equal(row.expires, 100);
	store_acme_row_free(&row);
	assert_int_equal(main_db_count(f), 0);

	/* A move cut short after its copy: the rows are in both files, this file's newer. The
	 * next open keeps the newer row and empties agentca.db's table. */
	{
		const struct acme_object upd = {"account", "acct-1", NULL,
		                                "thumb-1", 0,        "{\"new\":1}"};

		assert_int_equal(store_acme_put(f->acme, &upd, 1, 0, &err), 0);
	}
	close_all(f);
	main_db_exec(f, "INSERT INTO acme_objects (kind, id, account, lookup, expires, doc) VALUES"
	                " ('account', 'acct-1', NULL, 'thumb-1', 0, '{\"old\":1}')");
	open_all(f);
	assert_int_equal(store_acme_get(f->acme, "account", "acct-1", &row, &err), 0);
	assert_string_equal(row.doc, "{\"new\":1}");
	store_acme_row_free(&row);
	assert_int_equal(main_db_count(f), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_put_get_find_list, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_conflict_writes_nothing, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_survives_reopen, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_update_paths_reach_the_file, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_own_file, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_moves_rows_from_main, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
