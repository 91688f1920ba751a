/*
 * test_audit.c - export and offline verification of the issuance log: a clean export
 * verifies; an altered, dropped, swapped or reordered entry, a broken trailer or a
 * truncated file fails naming the entry; CSV has a header and one row per entry.
 *
 * The signed tree head: it verifies with the audit key and not with another, nor when its
 * root or size is changed; inclusion proofs verify and a changed one names its entry;
 * filtered exports hold exactly the matching entries and verify by their proofs; a
 * consistency proof from an earlier tree head verifies, and an altered earlier head, a
 * shrunken log or a missing proof fails.
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
#include "ca/audit_keys.h"
#include "ca/keys.h"
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
	EVP_PKEY *key; /* the audit key: signs, and verifies as the public key */
	struct buffer export;
};

/* Export options: format, no filter, signed with key. */
static struct audit_export_options
export_opts(enum audit_format format, EVP_PKEY *key)
{
	struct audit_export_options opts;

	memset(&opts, 0, sizeof(opts));
	opts.format = format;
	opts.sth_key = key;
	return opts;
}

/* Append one entry of kind for subject. */
static void
add_entry(struct store *st, const char *kind, const char *subject)
{
	struct log_entry e;
	struct store_write w;
	struct ac_err err;

	memset(&e, 0, sizeof(e));
	memset(&w, 0, sizeof(w));
	e.kind = kind;
	e.actor = "admin:cli";
	e.subject = subject;
	w.entry = &e;
	ac_err_clear(&err);
	assert_int_equal(store_submit(st, &w, &err), 0);
}

/* A store with five entries of assorted kinds, and its JSONL export. */
static int
setup(void **state)
{
	static const char *const kinds[] = {"issued", "denied", "issued", "revoked", "issued"};
	struct fixture *f = calloc(1, sizeof(*f));
	struct audit_export_options opts;
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
	f->key = key_generate(KEY_EC_P256, &err);
	assert_non_null(f->key);
	opts = export_opts(AUDIT_JSONL, f->key);
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
	EVP_PKEY_free(f->key);
	free(f->export.data);
	test_rmdir(f->dir);
	free(f);
	return 0;
}

/* Verify text with options (NULL: none); returns 0 or -1 with the error in err. */
static int
verify_with(const char *text, const struct audit_verify_options *opts, struct audit_summary *sum,
            struct ac_err *err)
{
	FILE *in = fmemopen((void *)text, strlen(text), "r");
	int rc;

	assert_non_null(in);
	ac_err_clear(err);
	rc = audit_verify(in, "log.jsonl", opts, sum, err);
	fclose(in);
	return rc;
}

static int
verify_text(const char *text, struct audit_summary *sum, struct ac_err *err)
{
	return verify_with(text, NULL, sum, err);
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
				fail_msg(
				    "edit at line %zu byte %zu: error does not name the line: %s",
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
	struct audit_export_options opts = export_opts(AUDIT_CSV, NULL);
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
	struct audit_export_options opts = export_opts(AUDIT_JSONL, f->key);
	struct buffer out = {NULL, 0};
	struct audit_summary sum;
	struct ac_err err;

	opts.since = 4102444800; /* 2100 */
	ac_err_clear(&err);
	assert_int_equal(audit_export(f->store, &opts, buffer_write, &out, &err), 0);
	assert_int_equal(verify_text(out.data, &sum, &err), 0);
	assert_int_equal(sum.entries, 0);
	free(out.data);
}

/* text with the first occurrence of from replaced by to (heap), or NULL when absent. */
static char *
replace_once(const char *text, const char *from, const char *to)
{
	const char *at = strstr(text, from);
	char *out;

	if (at == NULL)
		return NULL;
	out = malloc(strlen(text) - strlen(from) + strlen(to) + 1);
	memcpy(out, text, (size_t)(at - text));
	strcpy(out + (at - text), to);
	strcat(out, at + strlen(from));
	return out;
}

/* The tree head: signed bytes as documented, a JSON round trip, the signature checked with
 * the audit key, refused with another key or when the head was edited. */
static void
test_signed_tree_head(void **state)
{
	struct fixture *f = *state;
	struct audit_verify_options vo = {f->key, NULL};
	struct audit_summary sum;
	struct ac_err err;
	struct sth sth, back;
	EVP_PKEY *other;
	char *bytes, *text, root_hex[65];
	size_t len;
	json_t *obj;

	ac_err_clear(&err);
	assert_int_equal(audit_sth_make(f->store, f->key, &sth, &err), 0);
	assert_int_equal(sth.tree_size, 5);
	assert_int_equal(sth_verify(f->key, &sth, "test head", &err), 0);
	assert_int_equal(sth_signed_bytes(&sth, &bytes, &len, &err), 0);
	assert_non_null(strstr(bytes, "{\"root_hash\":\""));
	assert_non_null(strstr(bytes, "\",\"timestamp\":"));
	assert_non_null(strstr(bytes, ",\"tree_size\":5}"));
	free(bytes);
	obj = sth_to_json(&sth);
	assert_non_null(obj);
	assert_int_equal(sth_from_json(obj, "test head", &back, &err), 0);
	assert_int_equal(back.tree_size, sth.tree_size);
	assert_memory_equal(back.root, sth.root, MERKLE_HASH_LEN);
	assert_int_equal(back.sig_len, sth.sig_len);
	assert_int_equal(sth_verify(f->key, &back, "test head", &err), 0);
	json_decref(obj);
	back.timestamp_ms++;
	assert_int_equal(sth_verify(f->key, &back, "test head", &err), -1);
	assert_string_equal(err.reason, "sth_bad_signature");

	/* The export's head verifies with the key, and not with another one. */
	assert_int_equal(verify_with(f->export.data, &vo, &sum, &err), 0);
	assert_true(sum.signature_checked);
	assert_int_equal(sum.sth.tree_size, 5);
	assert_false(sum.filtered);
	other = key_generate(KEY_EC_P256, &err);
	assert_non_null(other);
	vo.key = other;
	assert_int_equal(verify_with(f->export.data, &vo, &sum, &err), -1);
	assert_string_equal(err.reason, "sth_bad_signature");
	EVP_PKEY_free(other);

	/* A changed root: the signature fails; without a key, the recomputed root does. */
	vo.key = f->key;
	{
		const char *at = strstr(f->export.data, "\"root_hash\":\"") + 13;

		memcpy(root_hex, at, 64);
		root_hex[64] = '\0';
	}
	{
		char altered[65];

		memcpy(altered, root_hex, sizeof(altered));
		altered[10] = altered[10] == 'a' ? 'b' : 'a';
		text = replace_once(f->export.data, root_hex, altered);
	}
	assert_non_null(text);
	assert_int_equal(verify_with(text, &vo, &sum, &err), -1);
	assert_string_equal(err.reason, "sth_bad_signature");
	assert_int_equal(verify_text(text, &sum, &err), -1);
	assert_string_equal(err.reason, "root_mismatch");
	free(text);

	/* A JSON Lines export cannot be made without the key. */
	{
		struct audit_export_options opts = export_opts(AUDIT_JSONL, NULL);
		struct buffer out = {NULL, 0};

		ac_err_clear(&err);
		assert_int_equal(audit_export(f->store, &opts, buffer_write, &out, &err), -1);
		assert_null(out.data);
	}
}

/* Every entry carries its inclusion proof; a changed proof hash names its entry. */
static void
test_inclusion_proofs(void **state)
{
	struct fixture *f = *state;
	struct audit_export_options opts = export_opts(AUDIT_JSONL, f->key);
	struct audit_verify_options vo = {f->key, NULL};
	struct buffer out = {NULL, 0};
	struct audit_summary sum;
	struct ac_err err;
	char **lines;
	size_t count;

	opts.proofs = 1;
	ac_err_clear(&err);
	assert_int_equal(audit_export(f->store, &opts, buffer_write, &out, &err), 0);
	assert_int_equal(verify_with(out.data, &vo, &sum, &err), 0);
	assert_true(sum.proofs);
	assert_int_equal(sum.entries, 5);
	lines = split_lines(out.data, &count);
	assert_int_equal(count, 6);
	for (size_t i = 0; i < 5; i++) {
		char *p = strstr(lines[i], "\"proof\":[\""), want[32], *text, saved;

		assert_non_null(p);
		p += 10 + 5;
		saved = *p;
		*p = saved == 'a' ? 'b' : 'a';
		text = join_lines(lines, count);
		assert_int_equal(verify_with(text, &vo, &sum, &err), -1);
		assert_string_equal(err.reason, "proof_invalid");
		snprintf(want, sizeof(want), "log.jsonl:%zu: entry seq %zu", i + 1, i + 1);
		if (strstr(err.msg, want) == NULL)
			fail_msg("proof of line %zu: %s", i + 1, err.msg);
		free(text);
		*p = saved;
	}
	/* A proof taken away from an export that has them. */
	{
		char *p = strstr(lines[2], ",\"proof\":"), *text;

		strcpy(p, "}\n");
		text = join_lines(lines, count);
		assert_int_equal(verify_with(text, &vo, &sum, &err), -1);
		assert_string_equal(err.reason, "proof_missing");
		assert_non_null(strstr(err.msg, "entry seq 3"));
		free(text);
	}
	free_lines(lines, count);
	free(out.data);
}

/* Export with kind and subject filters: exactly the matching entries, proven by proofs. */
static void
test_filters(void **state)
{
	struct fixture *f = *state;
	struct audit_verify_options vo = {f->key, NULL};
	struct audit_export_options opts;
	struct audit_summary sum;
	struct ac_err err;
	struct buffer out = {NULL, 0};
	char **lines;
	size_t count;

	opts = export_opts(AUDIT_JSONL, f->key);
	opts.kind = "issued";
	ac_err_clear(&err);
	assert_int_equal(audit_export(f->store, &opts, buffer_write, &out, &err), 0);
	assert_int_equal(verify_with(out.data, &vo, &sum, &err), 0);
	assert_true(sum.filtered);
	assert_true(sum.proofs);
	assert_int_equal(sum.entries, 3);
	assert_int_equal(sum.kind_count, 1);
	assert_string_equal(sum.kinds[0].name, "issued");
	lines = split_lines(out.data, &count);
	assert_int_equal(count, 4);
	assert_non_null(strstr(lines[0], "\"seq\":1,"));
	assert_non_null(strstr(lines[1], "\"seq\":3,"));
	assert_non_null(strstr(lines[2], "\"seq\":5,"));
	assert_non_null(strstr(lines[3], "\"filter\":{\"kind\":\"issued\"}"));
	/* Dropping one: the trailer's count disagrees. Swapping two: out of order. */
	{
		char *l1 = lines[1], *l2 = lines[2], *tr = lines[3], *text;

		lines[1] = l2;
		lines[2] = tr;
		text = join_lines(lines, count - 1);
		assert_int_equal(verify_with(text, &vo, &sum, &err), -1);
		assert_string_equal(err.reason, "export_count_mismatch");
		free(text);
		lines[1] = l2;
		lines[2] = l1;
		lines[3] = tr;
		text = join_lines(lines, count);
		assert_int_equal(verify_with(text, &vo, &sum, &err), -1);
		assert_non_null(strstr(err.msg, "log.jsonl:3: entry seq 3"));
		free(text);
		lines[1] = l1;
		lines[2] = l2;
	}
	/* An edited entry fails on its hash, or (hash recomputed) on its proof. */
	{
		char *text = join_lines(lines, count), *edited;

		edited = replace_once(text, "agent-3", "agent-9");
		assert_int_equal(verify_with(edited, &vo, &sum, &err), -1);
		assert_non_null(strstr(err.msg, "entry seq 3"));
		free(edited);
		free(text);
	}
	free_lines(lines, count);
	free(out.data);
	out.data = NULL;
	out.len = 0;

	opts = export_opts(AUDIT_JSONL, f->key);
	opts.subject_prefix = "spiffe://corp.internal/agent-2";
	assert_int_equal(audit_export(f->store, &opts, buffer_write, &out, &err), 0);
	assert_int_equal(verify_with(out.data, &vo, &sum, &err), 0);
	assert_int_equal(sum.entries, 1);
	assert_int_equal(sum.first_seq, 2);
	free(out.data);
	out.data = NULL;
	out.len = 0;

	opts.subject_prefix = "spiffe://corp.internal/agent-";
	opts.kind = "denied";
	assert_int_equal(audit_export(f->store, &opts, buffer_write, &out, &err), 0);
	assert_int_equal(verify_with(out.data, &vo, &sum, &err), 0);
	assert_int_equal(sum.entries, 1);
	assert_string_equal(sum.kinds[0].name, "denied");
	free(out.data);
	out.data = NULL;
	out.len = 0;

	/* CSV takes the same filters. */
	opts = export_opts(AUDIT_CSV, NULL);
	opts.kind = "issued";
	assert_int_equal(audit_export(f->store, &opts, buffer_write, &out, &err), 0);
	lines = split_lines(out.data, &count);
	assert_int_equal(count, 4);
	free_lines(lines, count);
	free(out.data);
}

/* A consistency proof from an earlier tree head. */
static void
test_consistency(void **state)
{
	struct fixture *f = *state;
	struct audit_export_options opts = export_opts(AUDIT_JSONL, f->key);
	struct audit_verify_options vo = {f->key, NULL};
	struct buffer out = {NULL, 0}, plain = {NULL, 0};
	struct audit_summary sum;
	struct sth old, bad, now;
	struct ac_err err;

	ac_err_clear(&err);
	assert_int_equal(audit_sth_make(f->store, f->key, &old, &err), 0);
	add_entry(f->store, "issued", "spiffe://corp.internal/agent-6");
	add_entry(f->store, "revoked", "spiffe://corp.internal/agent-6");
	add_entry(f->store, "issued", "spiffe://corp.internal/agent-7");
	opts.consistency = 1;
	opts.consistency_from = 5;
	assert_int_equal(audit_export(f->store, &opts, buffer_write, &out, &err), 0);
	vo.previous = &old;
	assert_int_equal(verify_with(out.data, &vo, &sum, &err), 0);
	assert_true(sum.previous_checked);
	assert_int_equal(sum.previous_size, 5);
	assert_int_equal(sum.entries, 8);

	/* An earlier head with another root (an old entry was different), signed. */
	bad = old;
	bad.root[3] ^= 0x10;
	assert_int_equal(sth_sign(f->key, &bad, &err), 0);
	vo.previous = &bad;
	assert_int_equal(verify_with(out.data, &vo, &sum, &err), -1);
	assert_string_equal(err.reason, "log_inconsistent");
	assert_non_null(strstr(err.msg, "entries seq 1 to 5"));
	/* Not signed by the audit key. */
	bad = old;
	bad.sig[10] ^= 1;
	assert_int_equal(verify_with(out.data, &vo, &sum, &err), -1);
	assert_string_equal(err.reason, "sth_bad_signature");
	/* A head larger than the export's: the log shrank. */
	bad = old;
	bad.tree_size = 9;
	assert_int_equal(sth_sign(f->key, &bad, &err), 0);
	assert_int_equal(verify_with(out.data, &vo, &sum, &err), -1);
	assert_string_equal(err.reason, "log_shrank");
	assert_non_null(strstr(err.msg, "entries seq 9 to 9"));

	/* An export without the proof cannot show consistency with an older head... */
	assert_int_equal(audit_export(f->store, &(struct audit_export_options){.sth_key = f->key},
	                              buffer_write, &plain, &err),
	                 0);
	vo.previous = &old;
	assert_int_equal(verify_with(plain.data, &vo, &sum, &err), -1);
	assert_string_equal(err.reason, "consistency_missing");
	/* ...but needs none with a head of its own size. */
	assert_int_equal(audit_sth_make(f->store, f->key, &now, &err), 0);
	vo.previous = &now;
	assert_int_equal(verify_with(plain.data, &vo, &sum, &err), 0);
	assert_true(sum.previous_checked);
	/* A size past the log is refused before anything is written. */
	{
		struct buffer none = {NULL, 0};

		opts.consistency_from = 9;
		ac_err_clear(&err);
		assert_int_equal(audit_export(f->store, &opts, buffer_write, &none, &err), -1);
		assert_string_equal(err.reason, "tree_size_invalid");
		assert_null(none.data);
	}
	free(plain.data);
	free(out.data);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_clean_export_verifies, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_any_byte_edit_fails_naming_entry, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_dropped_swapped_truncated, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_csv_export, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_since_filter, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_signed_tree_head, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_inclusion_proofs, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_filters, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_consistency, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
