/*
 * test_audit.c - export and offline verification of the issuance log: a clean export
 * verifies; an altered, dropped, swapped or reordered entry, a broken trailer or a
 * truncated file fails naming the entry; CSV has a header and one row per entry.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ca/audit.h"
#include "store/store.h"
#include "testutil.h"

struct buffer {
	char *data;
	size_t len;
};

static int
buffer_write(void *arg, const char *data, size_t len)
{
	struct buffer *b = arg;
	char *grown = realloc(b->data, b->len + len + 1);

	if (grown == NULL)
		return -1;
	memcpy(grown + b->len, data, len);
	b->len += len;
	grown[b->len] = '\0';
	b->data = grown;
	return 0;
}

struct fixture {
	char *dir;
	struct store *store;
	struct buffer export;
};

/* A store with five entries of assorted kinds, and its JSONL export. */
static int
setup(void **state)
{
	static const char *const kinds[] = {"issued", "denied", "issued", "revoked", "issued"};
	struct fixture *f = calloc(1, sizeof(*f));
	struct audit_export_options opts = {AUDIT_JSONL, 0, 0};
	struct store_options so;
	char path[512];
	struct ac_err err;

	f->dir = test_tmpdir("audit");
	snprintf(path, sizeof(path), "%s/agentca.db", f->dir);
	store_options_defaults(&so);
	so.path = path;
	ac_err_clear(&err);
	f->store = store_open(&so, &err);
	assert_non_null(f->store);
	for (int i = 0; i < 5; i++) {
		const char *sans[] = {"spiffe://corp.internal/a", "a.corp.internal"};
		struct log_entry e;
		struct store_write w;
		char subject[64];

		memset(&e, 0, sizeof(e));
		memset(&w, 0, sizeof(w));
		snprintf(subject, sizeof(subject), "spiffe://corp.internal/agent-%d", i + 1);
		e.kind = kinds[i];
		e.actor = "admin:cli";
		e.subject = subject;
		e.sans = sans;
		e.sans_count = 2;
		e.detail = i == 1 ? "name, with \"quotes\"" : NULL;
		e.reason = i == 1 ? "name_outside_policy" : NULL;
		w.entry = &e;
		assert_int_equal(store_submit(f->store, &w, &err), 0);
	}
	assert_int_equal(audit_export(f->store, &opts, buffer_write, &f->export, &err), 0);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;

	store_close(f->store);
	free(f->export.data);
	test_rmdir(f->dir);
	free(f);
	return 0;
}

/* Verify text; returns 0 or -1 with the error in err. */
static int
verify_text(const char *text, struct audit_summary *sum, struct ac_err *err)
{
	FILE *in = fmemopen((void *)text, strlen(text), "r");
	int rc;

	assert_non_null(in);
	ac_err_clear(err);
	rc = audit_verify(in, "log.jsonl", sum, err);
	fclose(in);
	return rc;
}

/* The export split into lines (heap array of heap strings, with their newlines). */
static char **
split_lines(const char *text, size_t *count)
{
	char **lines = NULL;
	const char *p = text;

	*count = 0;
	while (*p != '\0') {
		const char *nl = strchr(p, '\n');
		size_t len = nl != NULL ? (size_t)(nl - p) + 1 : strlen(p);

		lines = realloc(lines, (*count + 1) * sizeof(*lines));
		lines[*count] = strndup(p, len);
		(*count)++;
		p += len;
	}
	return lines;
}

static char *
join_lines(char **lines, size_t count)
{
	size_t total = 1;
	char *out;

	for (size_t i = 0; i < count; i++)
		total += strlen(lines[i]);
	out = calloc(1, total);
	for (size_t i = 0; i < count; i++)
		strcat(out, lines[i]);
	return out;
}

static void
free_lines(char **lines, size_t count)
{
	for (size_t i = 0; i < count; i++)
		free(lines[i]);
	free(lines);
}

static void
test_clean_export_verifies(void **state)
{
	struct fixture *f = *state;
	struct audit_summary sum;
	struct ac_err err;

	assert_int_equal(verify_text(f->export.data, &sum, &err), 0);
	assert_int_equal(sum.entries, 5);
	assert_int_equal(sum.first_seq, 1);
	assert_int_equal(sum.last_seq, 5);
	assert_int_equal(sum.kind_count, 3);
	assert_string_equal(sum.kinds[0].name, "issued");
	assert_int_equal(sum.kinds[0].count, 3);
}

/* Change one byte of each entry line in turn, at several positions: always caught, and the
 * error names that entry. */
static void
test_any_byte_edit_fails_naming_entry(void **state)
{
	struct fixture *f = *state;
	struct audit_summary sum;
	struct ac_err err;
	size_t count;
	char **lines = split_lines(f->export.data, &count);

	assert_int_equal(count, 6);
	for (size_t i = 0; i < 5; i++) {
		size_t len = strlen(lines[i]) - 1; /* keep the newline */

		for (size_t pos = 0; pos < len; pos += 7) {
			char saved = lines[i][pos], want[32], *text;

			/* Flip to a different printable character that keeps JSON likely valid. */
			lines[i][pos] = saved == 'a' ? 'b' : (saved == '0' ? '1' : 'a');
			text = join_lines(lines, count);
			assert_int_equal(verify_text(text, &sum, &err), -1);
			snprintf(want, sizeof(want), "log.jsonl:%zu:", i + 1);
			if (strstr(err.msg, want) == NULL)
				fail_msg("edit at line %zu byte %zu: error does not name the line: %s",
					 i + 1, pos, err.msg);
			free(text);
			lines[i][pos] = saved;
		}
	}
	free_lines(lines, count);
}

static void
test_dropped_swapped_truncated(void **state)
{
	struct fixture *f = *state;
	struct audit_summary sum;
	struct ac_err err;
	size_t count;
	char **lines = split_lines(f->export.data, &count), *text, *tmp;

	/* Drop entry 3: entry 4 is named. */
	tmp = lines[2];
	memmove(&lines[2], &lines[3], (count - 3) * sizeof(*lines));
	text = join_lines(lines, count - 1);
	assert_int_equal(verify_text(text, &sum, &err), -1);
	assert_string_equal(err.reason, "chain_broken");
	assert_non_null(strstr(err.msg, "entry seq 4"));
	free(text);
	memmove(&lines[3], &lines[2], (count - 3) * sizeof(*lines));
	lines[2] = tmp;

	/* Swap entries 2 and 3. */
	tmp = lines[1];
	lines[1] = lines[2];
	lines[2] = tmp;
	text = join_lines(lines, count);
	assert_int_equal(verify_text(text, &sum, &err), -1);
	assert_non_null(strstr(err.msg, "entry seq 3"));
	free(text);
	lines[2] = lines[1];
	lines[1] = tmp;

	/* No trailer: truncated. */
	text = join_lines(lines, count - 1);
	assert_int_equal(verify_text(text, &sum, &err), -1);
	assert_string_equal(err.reason, "export_truncated");
	free(text);

	/* Last entry dropped, trailer kept: the trailer's count disagrees. */
	tmp = lines[4];
	lines[4] = lines[5];
	text = join_lines(lines, count - 1);
	assert_int_equal(verify_text(text, &sum, &err), -1);
	assert_string_equal(err.reason, "export_count_mismatch");
	free(text);
	lines[4] = tmp;

	/* Garbage after the trailer. */
	text = join_lines(lines, count);
	tmp = realloc(text, strlen(text) + 8);
	strcat(tmp, "{}\n");
	assert_int_equal(verify_text(tmp, &sum, &err), -1);
	free(tmp);
	free_lines(lines, count);
}

static void
test_csv_export(void **state)
{
	struct fixture *f = *state;
	struct audit_export_options opts = {AUDIT_CSV, 0, 0};
	struct buffer csv = {NULL, 0};
	struct ac_err err;
	size_t count;
	char **lines;

	ac_err_clear(&err);
	assert_int_equal(audit_export(f->store, &opts, buffer_write, &csv, &err), 0);
	lines = split_lines(csv.data, &count);
	assert_int_equal(count, 6);
	assert_string_equal(lines[0], "seq,time,kind,actor,subject,serial,sans,not_before,"
				      "not_after,spki_sha256,parent,request_id,reason,detail,prev,"
				      "hash\r\n");
	/* The denial's detail holds a comma and quotes: quoted, quotes doubled. */
	assert_non_null(strstr(lines[2], "\"name, with \"\"quotes\"\"\""));
	assert_non_null(strstr(lines[1], "spiffe://corp.internal/a a.corp.internal"));
	free_lines(lines, count);
	free(csv.data);
}

static void
test_since_filter(void **state)
{
	struct fixture *f = *state;
	struct audit_export_options opts = {AUDIT_JSONL, 4102444800 /* 2100 */, 0};
	struct buffer out = {NULL, 0};
	struct audit_summary sum;
	struct ac_err err;

	ac_err_clear(&err);
	assert_int_equal(audit_export(f->store, &opts, buffer_write, &out, &err), 0);
	assert_int_equal(verify_text(out.data, &sum, &err), 0);
	assert_int_equal(sum.entries, 0);
	free(out.data);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_clean_export_verifies, setup, teardown),
		cmocka_unit_test_setup_teardown(test_any_byte_edit_fails_naming_entry, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_dropped_swapped_truncated, setup, teardown),
		cmocka_unit_test_setup_teardown(test_csv_export, setup, teardown),
		cmocka_unit_test_setup_teardown(test_since_filter, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
