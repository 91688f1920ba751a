/*
 * audit.c - issuance log export (JSON Lines, CSV) and offline verification. See audit.h.
 *
 * Export: the tree head is computed and signed before the first byte goes out (a missing
 * key or a bad --consistency-from fails cleanly), then rows stream from the store, each
 * with its inclusion proof when asked, and the trailer closes the file.
 *
 * Verification reads the trailer first, so that every entry can be checked against the
 * signed root as it is read, and the first bad entry named, in constant memory: a
 * merkle_stream recomputes the root of a complete export on the way.
 */
#include "ca/audit.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

#include <jansson.h>

#include "common/hex.h"
#include "common/timefmt.h"
#include "store/log_chain.h"
#include "store/merkle.h"

#define AUDIT_LINE_MAX (1024 * 1024)
/* The trailer is a few hundred bytes plus a consistency proof of at most 66 hashes. */
#define AUDIT_TRAILER_MAX (64 * 1024)

static const struct {
	const char *name;
	enum audit_format format;
} audit_formats[] = {
    {"jsonl", AUDIT_JSONL},
    {"csv", AUDIT_CSV},
};

int
audit_format_parse(const char *name, enum audit_format *out)
{
	for (size_t i = 0; i < sizeof(audit_formats) / sizeof(audit_formats[0]); i++) {
		if (strcmp(name, audit_formats[i].name) == 0) {
			*out = audit_formats[i].format;
			return 0;
		}
	}
	return -1;
}

/* The CSV columns, in order: the entry fields, then the chain fields. */
static const char *const csv_columns[] = {
    "seq",       "time",        "kind",   "actor",      "subject", "serial", "sans", "not_before",
    "not_after", "spki_sha256", "parent", "request_id", "reason",  "detail", "prev", "hash",
};
#define CSV_COLUMN_COUNT (sizeof(csv_columns) / sizeof(csv_columns[0]))

struct export_state {
	const struct audit_export_options *opts;
	struct store *st;
	audit_write_fn write;
	void *arg;
	uint64_t head_seq;
	int proofs;
	uint64_t count, first_seq, last_seq;
	char last_hash[LOG_HASH_HEX_LEN + 1];
	struct ac_err *err;
	int failed;
};

/* Append s to a CSV line buffer, quoted per RFC 4180 when it needs to be. A field that a
 * spreadsheet would run as a formula (=, +, -, @) is prefixed with a quote mark. */
static int
csv_append_field(char **buf, size_t *len, size_t *cap, const char *s, int first)
{
	size_t need = strlen(s) * 2 + 8;
	int quote = strpbrk(s, ",\"\r\n") != NULL;
	int formula = s[0] == '=' || s[0] == '+' || s[0] == '@' ||
	              (s[0] == '-' && !(s[1] >= '0' && s[1] <= '9'));
	char *p;

	if (*len + need > *cap) {
		size_t grown = (*cap + need) * 2;
		char *bigger = realloc(*buf, grown);

		if (bigger == NULL)
			return -1;
		*buf = bigger;
		*cap = grown;
	}
	p = *buf + *len;
	if (!first)
		*p++ = ',';
	if (quote || formula)
		*p++ = '"';
	if (formula)
		*p++ = '\'';
	for (; *s != '\0'; s++) {
		if (*s == '"')
			*p++ = '"';
		*p++ = *s;
	}
	if (quote || formula)
		*p++ = '"';
	*len = (size_t)(p - *buf);
	return 0;
}

/* Render one JSON value as CSV cell text into a heap string. */
static char *
csv_cell_text(json_t *value)
{
	char tmp[64];

	if (value == NULL)
		return strdup("");
	if (json_is_string(value))
		return strdup(json_string_value(value));
	if (json_is_integer(value)) {
		snprintf(tmp, sizeof(tmp), "%" JSON_INTEGER_FORMAT, json_integer_value(value));
		return strdup(tmp);
	}
	if (json_is_array(value)) {
		/* SANs: space-separated, so the cell stays one field. */
		size_t i, total = 1;
		json_t *item;
		char *out;

		json_array_foreach(value, i, item) total +=
		    (json_is_string(item) ? json_string_length(item) : 0) + 1;
		out = calloc(1, total);
		if (out == NULL)
			return NULL;
		json_array_foreach(value, i, item)
		{
			if (!json_is_string(item))
				continue;
			if (out[0] != '\0')
				strcat(out, " ");
			strcat(out, json_string_value(item));
		}
		return out;
	}
	return json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
}

static int
export_csv_row(struct export_state *es, const struct log_row *row)
{
	char *line = NULL;
	size_t len = 0, cap = 0;
	json_error_t jerr;
	json_t *obj;
	int rc = -1;

	obj = json_loadb(row->canonical, row->canonical_len, 0, &jerr);
	if (obj == NULL) {
		ac_err_set(es->err, AC_ERR_STORE, "log_corrupt",
		           "log entry %" PRIu64 " in the store is not JSON: %s", row->seq,
		           jerr.text);
		return -1;
	}
	for (size_t i = 0; i < CSV_COLUMN_COUNT; i++) {
		const char *col = csv_columns[i];
		char *cell, timebuf[32];

		if (strcmp(col, "hash") == 0) {
			cell = strdup(row->hash);
		} else if (strcmp(col, "time") == 0) {
			json_t *t = json_object_get(obj, "time");

			time_format_rfc3339(json_integer_value(t) / 1000, timebuf, sizeof(timebuf));
			cell = strdup(timebuf);
		} else {
			cell = csv_cell_text(json_object_get(obj, col));
		}
		if (cell == NULL || csv_append_field(&line, &len, &cap, cell, i == 0) != 0) {
			free(cell);
			ac_err_set(es->err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
			goto out;
		}
		free(cell);
	}
	if (csv_append_field(&line, &len, &cap, "", 1) != 0) {
		ac_err_set(es->err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto out;
	}
	line[len++] = '\r';
	line[len++] = '\n';
	if (es->write(es->arg, line, len) != 0) {
		ac_err_set(es->err, AC_ERR_IO, "write_failed", "writing the export failed");
		goto out;
	}
	rc = 0;
out:
	free(line);
	json_decref(obj);
	return rc;
}

/* Append `,"proof":["<hex>",...]}` to an exported line whose closing brace was dropped. */
static int
append_proof(char **line, size_t *len, const unsigned char path[][MERKLE_HASH_LEN], size_t path_len)
{
	size_t need = *len + 16 + path_len * (2 * MERKLE_HASH_LEN + 3) + 2;
	char *grown, *p;
	size_t i;

	if ((grown = realloc(*line, need)) == NULL)
		return -1;
	p = grown + *len - 1; /* over the closing brace */
	memcpy(p, ",\"proof\":[", 10);
	p += 10;
	for (i = 0; i < path_len; i++) {
		if (i > 0)
			*p++ = ',';
		*p++ = '"';
		hex_encode(path[i], MERKLE_HASH_LEN, p);
		p += 2 * MERKLE_HASH_LEN;
		*p++ = '"';
	}
	*p++ = ']';
	*p++ = '}';
	*p = '\0';
	*line = grown;
	*len = (size_t)(p - grown);
	return 0;
}

static int
export_jsonl_row(struct export_state *es, const struct log_row *row)
{
	unsigned char path[MERKLE_PROOF_MAX][MERKLE_HASH_LEN];
	size_t path_len = 0, len;
	char *line = NULL;
	int rc = -1;

	if (log_chain_export_line(row->canonical, row->canonical_len, row->hash, &line, &len,
	                          es->err) != 0)
		goto out;
	if (es->proofs) {
		if (store_inclusion_proof(es->st, row->seq - 1, es->head_seq, path, &path_len,
		                          es->err) != 0) {
			ac_err_wrap(es->err, "exporting entry seq %" PRIu64, row->seq);
			goto out;
		}
		if (append_proof(&line, &len, path, path_len) != 0) {
			ac_err_set(es->err, AC_ERR_INTERNAL, "out_of_memory",
			           "exporting entry seq %" PRIu64 ": out of memory", row->seq);
			goto out;
		}
	}
	line[len] = '\n'; /* the line has room for its NUL: reuse it */
	if (es->write(es->arg, line, len + 1) != 0) {
		ac_err_set(es->err, AC_ERR_IO, "write_failed", "writing the export failed");
		goto out;
	}
	rc = 0;
out:
	free(line);
	return rc;
}

static int
export_row(void *arg, const struct log_row *row)
{
	struct export_state *es = arg;
	int rc;

	if (row->seq > es->head_seq)
		return 1; /* appended after the export began: not part of this export */
	rc = es->opts->format == AUDIT_CSV ? export_csv_row(es, row) : export_jsonl_row(es, row);
	if (rc != 0) {
		es->failed = 1;
		return 1;
	}
	if (es->count == 0)
		es->first_seq = row->seq;
	es->count++;
	es->last_seq = row->seq;
	memcpy(es->last_hash, row->hash, LOG_HASH_HEX_LEN + 1);
	return 0;
}

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The tree head of the tree of `size` entries, signed now. */
static int
sth_make_size(struct store *st, EVP_PKEY *key, uint64_t size, struct sth *out, struct ac_err *err)
{
	memset(out, 0, sizeof(*out));
	out->tree_size = size;
	out->timestamp_ms = now_ms();
	if (store_tree_root(st, size, out->root, err) != 0 || sth_sign(key, out, err) != 0)
		return -1;
	return 0;
}

int
audit_sth_make(struct store *st, EVP_PKEY *key, struct sth *out, struct ac_err *err)
{
	char hash[LOG_HASH_HEX_LEN + 1];
	uint64_t head;

	if (store_log_head(st, &head, hash, err) != 0)
		return -1;
	return sth_make_size(st, key, head, out, err);
}

/* A JSON array of hex hashes (new reference), or NULL when out of memory. */
static json_t *
hash_array(const unsigned char hashes[][MERKLE_HASH_LEN], size_t n)
{
	char hex[2 * MERKLE_HASH_LEN + 1];
	json_t *arr = json_array();
	size_t i;

	for (i = 0; arr != NULL && i < n; i++) {
		hex_encode(hashes[i], MERKLE_HASH_LEN, hex);
		if (json_array_append_new(arr, json_string(hex)) != 0) {
			json_decref(arr);
			arr = NULL;
		}
	}
	return arr;
}

/* 1 when the options select a subset of the log. */
static int
export_filtered(const struct audit_export_options *opts)
{
	return opts->since != 0 || opts->until != 0 || opts->kind != NULL ||
	       (opts->subject_prefix != NULL && opts->subject_prefix[0] != '\0');
}

/* The trailer line (with its newline), heap. */
static char *
export_trailer(const struct export_state *es, const char *head_hash, const struct sth *sth,
               const unsigned char cons[][MERKLE_HASH_LEN], size_t cons_len)
{
	const struct audit_export_options *o = es->opts;
	json_t *top = NULL, *ex = NULL, *filter = NULL, *cons_obj = NULL;
	char *text = NULL, *line = NULL;
	int bad;

	if ((top = json_object()) == NULL || (ex = json_object()) == NULL ||
	    json_object_set(top, "export", ex) != 0)
		goto out;
	bad = json_object_set_new(ex, "count", json_integer((json_int_t)es->count)) != 0 ||
	      json_object_set_new(ex, "first_seq", json_integer((json_int_t)es->first_seq)) != 0 ||
	      json_object_set_new(ex, "last_seq", json_integer((json_int_t)es->last_seq)) != 0 ||
	      json_object_set_new(ex, "last_hash",
	                          json_string(es->count > 0 ? es->last_hash : log_chain_genesis)) !=
	          0 ||
	      json_object_set_new(ex, "log_size", json_integer((json_int_t)es->head_seq)) != 0 ||
	      json_object_set_new(ex, "log_head", json_string(head_hash)) != 0 ||
	      json_object_set_new(ex, "proofs", json_boolean(es->proofs)) != 0;
	if (bad)
		goto out;
	if (export_filtered(o)) {
		if ((filter = json_object()) == NULL ||
		    json_object_set(ex, "filter", filter) != 0 ||
		    (o->kind != NULL &&
		     json_object_set_new(filter, "kind", json_string(o->kind)) != 0) ||
		    (o->subject_prefix != NULL && o->subject_prefix[0] != '\0' &&
		     json_object_set_new(filter, "subject_prefix",
		                         json_string(o->subject_prefix)) != 0) ||
		    (o->since != 0 &&
		     json_object_set_new(filter, "since", json_integer(o->since)) != 0) ||
		    (o->until != 0 &&
		     json_object_set_new(filter, "until", json_integer(o->until)) != 0))
			goto out;
	}
	if (json_object_set_new(ex, "sth", sth_to_json(sth)) != 0)
		goto out;
	if (o->consistency) {
		if ((cons_obj = json_object()) == NULL ||
		    json_object_set(ex, "consistency", cons_obj) != 0 ||
		    json_object_set_new(cons_obj, "from_size",
		                        json_integer((json_int_t)o->consistency_from)) != 0 ||
		    json_object_set_new(cons_obj, "proof", hash_array(cons, cons_len)) != 0)
			goto out;
	}
	if ((text = json_dumps(top, JSON_COMPACT)) == NULL || asprintf(&line, "%s\n", text) < 0)
		line = NULL;
out:
	free(text);
	json_decref(cons_obj);
	json_decref(filter);
	json_decref(ex);
	json_decref(top);
	return line;
}

int
audit_export(struct store *st, const struct audit_export_options *opts, audit_write_fn write,
             void *arg, struct ac_err *err)
{
	unsigned char cons[MERKLE_PROOF_MAX][MERKLE_HASH_LEN];
	char head_hash[LOG_HASH_HEX_LEN + 1];
	struct export_state es;
	struct log_filter filter;
	size_t cons_len = 0;
	struct sth sth;
	char *trailer = NULL;
	int rc = -1;

	memset(&es, 0, sizeof(es));
	es.opts = opts;
	es.st = st;
	es.write = write;
	es.arg = arg;
	es.err = err;
	es.proofs = opts->format == AUDIT_JSONL && (opts->proofs || export_filtered(opts));
	if (store_log_head(st, &es.head_seq, head_hash, err) != 0)
		goto out;

	if (opts->format == AUDIT_JSONL) {
		/* Everything that can fail for want of a key or a bad size fails before output. */
		if (opts->sth_key == NULL) {
			ac_err_set(
			    err, AC_ERR_INVALID, "audit_key_missing",
			    "a JSON Lines export ends with a signed tree head: no audit key");
			goto out;
		}
		if (sth_make_size(st, opts->sth_key, es.head_seq, &sth, err) != 0)
			goto out;
		if (opts->consistency &&
		    store_consistency_proof(st, opts->consistency_from, es.head_seq, cons,
		                            &cons_len, err) != 0)
			goto out;
	} else {
		char header[512] = "";

		for (size_t i = 0; i < CSV_COLUMN_COUNT; i++) {
			strcat(header, i == 0 ? "" : ",");
			strcat(header, csv_columns[i]);
		}
		strcat(header, "\r\n");
		if (write(arg, header, strlen(header)) != 0) {
			ac_err_set(err, AC_ERR_IO, "write_failed", "writing the export failed");
			goto out;
		}
	}

	memset(&filter, 0, sizeof(filter));
	filter.since_ms = opts->since * 1000;
	filter.until_ms = opts->until * 1000;
	filter.kind = opts->kind;
	filter.subject_prefix = opts->subject_prefix;
	if (store_log_scan(st, &filter, export_row, &es, err) != 0 || es.failed)
		goto out;

	if (opts->format == AUDIT_JSONL) {
		if ((trailer = export_trailer(&es, head_hash, &sth, cons, cons_len)) == NULL) {
			ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory",
			           "export trailer: out of memory");
			goto out;
		}
		if (write(arg, trailer, strlen(trailer)) != 0) {
			ac_err_set(err, AC_ERR_IO, "write_failed", "writing the export failed");
			goto out;
		}
	}
	rc = 0;
out:
	free(trailer);
	return rc;
}

/* The trailer, read before the entries. */
struct trailer {
	json_t *line; /* the parsed last line; `ex` is its "export" member */
	json_t *ex;
	off_t offset; /* where the trailer line starts */
	struct sth sth;
	int filtered, proofs;
	int has_consistency;
	uint64_t from_size;
	unsigned char cons[MERKLE_PROOF_MAX][MERKLE_HASH_LEN];
	size_t cons_len;
};

/* Verification in progress. */
struct vstate {
	const char *name;
	struct trailer t;
	struct audit_summary sum;
	struct merkle_stream ms;
	struct ac_err *err;
};

/* Count one entry of this kind in the summary (the first AUDIT_KINDS_MAX kinds). */
static void
summary_count_kind(struct audit_summary *sum, const char *kind)
{
	for (size_t i = 0; i < sum->kind_count; i++) {
		if (strcmp(sum->kinds[i].name, kind) == 0) {
			sum->kinds[i].count++;
			return;
		}
	}
	if (sum->kind_count < AUDIT_KINDS_MAX) {
		snprintf(sum->kinds[sum->kind_count].name, sizeof(sum->kinds[0].name), "%s", kind);
		sum->kinds[sum->kind_count++].count = 1;
	}
}

/* A seekable stream with in's contents: in itself, or a temporary copy (stdin, a pipe).
 * *spool is the copy to close, or NULL. */
static FILE *
make_seekable(FILE *in, const char *name, FILE **spool, struct ac_err *err)
{
	char buf[65536];
	FILE *tmp = NULL;
	size_t n;

	*spool = NULL;
	if (fseeko(in, 0, SEEK_END) == 0 && fseeko(in, 0, SEEK_SET) == 0)
		return in;
	clearerr(in);
	if ((tmp = tmpfile()) == NULL) {
		ac_err_set(err, AC_ERR_IO, "read_failed", "%s: cannot make a temporary copy: %s",
		           name, strerror(errno));
		return NULL;
	}
	while ((n = fread(buf, 1, sizeof(buf), in)) > 0) {
		if (fwrite(buf, 1, n, tmp) != n) {
			ac_err_set(err, AC_ERR_IO, "read_failed",
			           "%s: writing a temporary copy: %s", name, strerror(errno));
			goto fail;
		}
	}
	if (ferror(in)) {
		ac_err_set(err, AC_ERR_IO, "read_failed", "%s: read error", name);
		goto fail;
	}
	if (fflush(tmp) != 0 || fseeko(tmp, 0, SEEK_SET) != 0) {
		ac_err_set(err, AC_ERR_IO, "read_failed", "%s: temporary copy: %s", name,
		           strerror(errno));
		goto fail;
	}
	*spool = tmp;
	return tmp;
fail:
	fclose(tmp);
	return NULL;
}

/* Decode n hex hashes from a JSON array into out; -1 unless it is exactly that. */
static int
hash_array_parse(const json_t *arr, unsigned char out[][MERKLE_HASH_LEN], size_t *n)
{
	char again[2 * MERKLE_HASH_LEN + 1];
	json_t *item;
	size_t i;

	*n = 0;
	if (!json_is_array(arr) || json_array_size(arr) > MERKLE_PROOF_MAX)
		return -1;
	json_array_foreach(arr, i, item)
	{
		if (!json_is_string(item) || json_string_length(item) != 2 * MERKLE_HASH_LEN ||
		    hex_decode(json_string_value(item), out[i], MERKLE_HASH_LEN) != 0)
			return -1;
		hex_encode(out[i], MERKLE_HASH_LEN, again);
		if (strcmp(again, json_string_value(item)) != 0)
			return -1;
	}
	*n = json_array_size(arr);
	return 0;
}

/* A non-negative integer member of obj, or -1. */
static int
get_count(const json_t *obj, const char *key, uint64_t *out)
{
	json_t *v = json_object_get(obj, key);

	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return -1;
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

/* Find, parse and check the shape of the last line, which must be the trailer. */
static int
read_trailer(FILE *in, const char *name, struct trailer *t, struct ac_err *err)
{
	char *buf = NULL, *nl, what[300];
	json_t *sth, *cons, *filter;
	json_error_t jerr;
	off_t size, tail, start;
	uint64_t log_size;
	int rc = -1;

	if (fseeko(in, 0, SEEK_END) != 0 || (size = ftello(in)) < 0) {
		ac_err_set(err, AC_ERR_IO, "read_failed", "%s: cannot seek: %s", name,
		           strerror(errno));
		goto out;
	}
	tail = size < AUDIT_TRAILER_MAX + 1 ? size : AUDIT_TRAILER_MAX + 1;
	if ((buf = malloc((size_t)tail + 1)) == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "%s: out of memory", name);
		goto out;
	}
	if (fseeko(in, size - tail, SEEK_SET) != 0 ||
	    fread(buf, 1, (size_t)tail, in) != (size_t)tail) {
		ac_err_set(err, AC_ERR_IO, "read_failed", "%s: read error", name);
		goto out;
	}
	buf[tail] = '\0';
	if (tail == 0 || buf[tail - 1] != '\n') {
		ac_err_set(err, AC_ERR_INVALID, "export_truncated",
		           "%s: the export is truncated: it does not end with a complete line",
		           name);
		goto out;
	}
	nl = tail > 1 ? memrchr(buf, '\n', (size_t)tail - 1) : NULL;
	if (nl == NULL && tail < size) {
		ac_err_set(err, AC_ERR_INVALID, "export_malformed",
		           "%s: the last line is longer than a trailer can be (%d bytes)", name,
		           AUDIT_TRAILER_MAX);
		goto out;
	}
	start = nl != NULL ? (off_t)(nl + 1 - buf) : 0;
	t->offset = size - tail + start;
	t->line = json_loadb(buf + start, (size_t)(tail - start), JSON_REJECT_DUPLICATES, &jerr);
	t->ex = json_object_get(t->line, "export");
	if (!json_is_object(t->ex)) {
		ac_err_set(err, AC_ERR_INVALID, "export_truncated",
		           "%s: the export is truncated: its last line is not the trailer", name);
		goto out;
	}
	if (!json_is_integer(json_object_get(t->ex, "count")) ||
	    !json_is_integer(json_object_get(t->ex, "last_seq")) ||
	    !json_is_string(json_object_get(t->ex, "last_hash")) ||
	    get_count(t->ex, "log_size", &log_size) != 0) {
		ac_err_set(err, AC_ERR_INVALID, "export_malformed",
		           "%s: the export trailer is malformed", name);
		goto out;
	}
	t->proofs = json_is_true(json_object_get(t->ex, "proofs"));
	filter = json_object_get(t->ex, "filter");
	t->filtered = filter != NULL;
	if (t->filtered && !json_is_object(filter)) {
		ac_err_set(err, AC_ERR_INVALID, "export_malformed",
		           "%s: the export trailer's filter is not an object", name);
		goto out;
	}
	if ((sth = json_object_get(t->ex, "sth")) == NULL) {
		ac_err_set(err, AC_ERR_INVALID, "export_malformed",
		           "%s: the export has no signed tree head", name);
		goto out;
	}
	snprintf(what, sizeof(what), "%s: the export's tree head", name);
	if (sth_from_json(sth, what, &t->sth, err) != 0)
		goto out;
	if (t->sth.tree_size != log_size) {
		ac_err_set(err, AC_ERR_INVALID, "export_malformed",
		           "%s: the tree head's size %" PRIu64 " is not the log size %" PRIu64,
		           name, t->sth.tree_size, log_size);
		goto out;
	}
	if ((cons = json_object_get(t->ex, "consistency")) != NULL) {
		if (get_count(cons, "from_size", &t->from_size) != 0 ||
		    hash_array_parse(json_object_get(cons, "proof"), t->cons, &t->cons_len) != 0) {
			ac_err_set(err, AC_ERR_INVALID, "export_malformed",
			           "%s: the trailer's consistency proof is malformed", name);
			goto out;
		}
		t->has_consistency = 1;
	}
	rc = 0;
out:
	free(buf);
	return rc;
}

/* Check the tree head's signature and its consistency with an earlier tree head. */
static int
verify_heads(struct vstate *vs, const struct audit_verify_options *opts)
{
	const struct sth *old = opts->previous, *cur = &vs->t.sth;
	const unsigned char(*proof)[MERKLE_HASH_LEN] = NULL;
	size_t proof_len = 0;

	if (opts->key != NULL) {
		if (sth_verify(opts->key, cur, "the export's tree head", vs->err) != 0)
			return ac_err_wrap(vs->err, "%s", vs->name);
		vs->sum.signature_checked = 1;
	}
	if (old == NULL)
		return 0;
	if (opts->key != NULL && sth_verify(opts->key, old, "the previous tree head", vs->err) != 0)
		return -1;
	if (old->tree_size > cur->tree_size)
		return ac_err_set(vs->err, AC_ERR_POLICY, "log_shrank",
		                  "%s: the log shrank: the previous tree head has %" PRIu64
		                  " entries, this export's %" PRIu64 ": entries seq %" PRIu64
		                  " to %" PRIu64 " were removed",
		                  vs->name, old->tree_size, cur->tree_size, cur->tree_size + 1,
		                  old->tree_size);
	if (old->tree_size > 0 && old->tree_size < cur->tree_size &&
	    (!vs->t.has_consistency || vs->t.from_size != old->tree_size))
		return ac_err_set(vs->err, AC_ERR_INVALID, "consistency_missing",
		                  "%s: the export has no consistency proof from tree size %" PRIu64
		                  " (export it with --consistency-from %" PRIu64 ")",
		                  vs->name, old->tree_size, old->tree_size);
	/* The export's proof counts only from a non-empty older tree to a larger one. */
	if (old->tree_size > 0 && old->tree_size < cur->tree_size) {
		proof = vs->t.cons;
		proof_len = vs->t.cons_len;
	}
	if (merkle_verify_consistency(old->tree_size, cur->tree_size, old->root, cur->root, proof,
	                              proof_len) != 0)
		return ac_err_set(
		    vs->err, AC_ERR_POLICY, "log_inconsistent",
		    "%s: the log is not consistent with the previous tree head of size"
		    " %" PRIu64 ": entries seq 1 to %" PRIu64
		    " were altered, removed or reordered since",
		    vs->name, old->tree_size, old->tree_size);
	vs->sum.previous_checked = 1;
	vs->sum.previous_size = old->tree_size;
	return 0;
}

/* Check one entry line: shape, chain, hash, inclusion proof; then count it. */
static int
verify_entry(struct vstate *vs, json_t *obj, uint64_t line_no)
{
	unsigned char leaf[MERKLE_HASH_LEN], path[MERKLE_PROOF_MAX][MERKLE_HASH_LEN];
	char computed[LOG_HASH_HEX_LEN + 1];
	struct audit_summary *sum = &vs->sum;
	json_t *seq_v = json_object_get(obj, "seq"), *prev_v = json_object_get(obj, "prev");
	json_t *hash_v = json_object_get(obj, "hash"), *kind_v = json_object_get(obj, "kind");
	json_t *time_v = json_object_get(obj, "time"), *proof_v = NULL;
	const char *name = vs->name;
	struct ac_err *err = vs->err;
	char *canonical = NULL;
	size_t canonical_len, path_len = 0;
	uint64_t seq;
	int rc = -1;

	if (!json_is_integer(seq_v) || json_integer_value(seq_v) < 1 || !json_is_string(prev_v) ||
	    !json_is_string(hash_v) || !json_is_string(kind_v) || !json_is_integer(time_v))
		return ac_err_set(err, AC_ERR_INVALID, "entry_malformed",
		                  "%s:%" PRIu64 ": entry is missing seq, prev, hash, kind or time",
		                  name, line_no);
	seq = (uint64_t)json_integer_value(seq_v);
	/* The proof is not part of the entry: take it out before rebuilding the hashed bytes. */
	if ((proof_v = json_object_get(obj, "proof")) != NULL) {
		if (hash_array_parse(proof_v, path, &path_len) != 0)
			return ac_err_set(err, AC_ERR_INVALID, "entry_malformed",
			                  "%s:%" PRIu64 ": entry seq %" PRIu64
			                  " has a malformed inclusion proof",
			                  name, line_no, seq);
		if (json_object_del(obj, "proof") != 0)
			return ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
	} else if (vs->t.proofs || vs->t.filtered) {
		return ac_err_set(err, AC_ERR_INVALID, "proof_missing",
		                  "%s:%" PRIu64 ": entry seq %" PRIu64
		                  " has no inclusion proof, which this export must carry",
		                  name, line_no, seq);
	}
	if (!vs->t.filtered && seq != sum->last_seq + 1) {
		ac_err_set(err, AC_ERR_INVALID, "chain_broken",
		           "%s:%" PRIu64 ": entry seq %" PRIu64 " follows entry seq %" PRIu64
		           ": an entry is missing or out of order",
		           name, line_no, seq, sum->last_seq);
		goto out;
	}
	if (vs->t.filtered && sum->entries > 0 && seq <= sum->last_seq) {
		ac_err_set(err, AC_ERR_INVALID, "chain_broken",
		           "%s:%" PRIu64 ": entry seq %" PRIu64 " follows entry seq %" PRIu64
		           ": entries are out of order",
		           name, line_no, seq, sum->last_seq);
		goto out;
	}
	if (seq == 1 && strcmp(json_string_value(prev_v), log_chain_genesis) != 0) {
		ac_err_set(err, AC_ERR_INVALID, "chain_broken",
		           "%s:%" PRIu64 ": entry seq 1 does not start from the genesis hash", name,
		           line_no);
		goto out;
	}
	if (sum->entries > 0 && seq == sum->last_seq + 1 &&
	    strcmp(json_string_value(prev_v), sum->last_hash) != 0) {
		ac_err_set(err, AC_ERR_INVALID, "chain_broken",
		           "%s:%" PRIu64 ": entry seq %" PRIu64
		           " does not link to the entry before it (prev hash differs)",
		           name, line_no, seq);
		goto out;
	}
	if (log_chain_canonical_from_export(obj, &canonical, &canonical_len, err) != 0) {
		ac_err_wrap(err, "%s:%" PRIu64 ": entry seq %" PRIu64, name, line_no, seq);
		goto out;
	}
	log_chain_hash(canonical, canonical_len, computed);
	if (strcmp(computed, json_string_value(hash_v)) != 0) {
		ac_err_set(err, AC_ERR_INVALID, "hash_mismatch",
		           "%s:%" PRIu64 ": entry seq %" PRIu64
		           " has been altered: its contents do not match its hash",
		           name, line_no, seq);
		goto out;
	}
	merkle_leaf_hash(canonical, canonical_len, leaf);
	if (proof_v != NULL && merkle_verify_inclusion(leaf, seq - 1, vs->t.sth.tree_size, path,
	                                               path_len, vs->t.sth.root) != 0) {
		ac_err_set(err, AC_ERR_POLICY, "proof_invalid",
		           "%s:%" PRIu64 ": entry seq %" PRIu64
		           " is not in the signed tree head (size %" PRIu64
		           "): its inclusion proof does not verify; the entry was altered",
		           name, line_no, seq, vs->t.sth.tree_size);
		goto out;
	}
	if (!vs->t.filtered && merkle_stream_push(&vs->ms, leaf) != 0) {
		ac_err_set(err, AC_ERR_INVALID, "export_malformed", "%s: too many entries", name);
		goto out;
	}
	if (sum->entries == 0) {
		sum->first_seq = seq;
		sum->first_time_ms = json_integer_value(time_v);
	}
	sum->entries++;
	sum->last_seq = seq;
	sum->last_time_ms = json_integer_value(time_v);
	memcpy(sum->last_hash, computed, sizeof(sum->last_hash));
	summary_count_kind(sum, json_string_value(kind_v));
	rc = 0;
out:
	free(canonical);
	return rc;
}

/* After the entries: the trailer agrees with them, and a complete export hashes to the
 * signed root. */
static int
verify_end(struct vstate *vs, uint64_t line_no)
{
	const struct audit_summary *sum = &vs->sum;
	json_t *count = json_object_get(vs->t.ex, "count");
	json_t *last_seq = json_object_get(vs->t.ex, "last_seq");
	json_t *last_hash = json_object_get(vs->t.ex, "last_hash");
	unsigned char root[MERKLE_HASH_LEN];
	uint64_t size = vs->t.sth.tree_size;
	const char *name = vs->name;

	(void)line_no;
	if ((uint64_t)json_integer_value(count) != sum->entries)
		return ac_err_set(vs->err, AC_ERR_INVALID, "export_count_mismatch",
		                  "%s: the trailer says %" JSON_INTEGER_FORMAT
		                  " entries but %" PRIu64
		                  " were read: entries were removed or added",
		                  name, json_integer_value(count), sum->entries);
	if (sum->entries > 0 && ((uint64_t)json_integer_value(last_seq) != sum->last_seq ||
	                         strcmp(json_string_value(last_hash), sum->last_hash) != 0))
		return ac_err_set(vs->err, AC_ERR_INVALID, "export_head_mismatch",
		                  "%s: the trailer names last entry seq %" JSON_INTEGER_FORMAT
		                  " but the chain ends at entry seq %" PRIu64,
		                  name, json_integer_value(last_seq), sum->last_seq);
	if (vs->t.filtered)
		return 0;
	if (sum->last_seq != size)
		return ac_err_set(vs->err, AC_ERR_INVALID, "entries_missing",
		                  "%s: the export ends at entry seq %" PRIu64
		                  " but the tree head has %" PRIu64 " entries: entries seq %" PRIu64
		                  " and later are missing",
		                  name, sum->last_seq, size, sum->last_seq + 1);
	merkle_stream_root(&vs->ms, root);
	if (memcmp(root, vs->t.sth.root, MERKLE_HASH_LEN) != 0)
		return ac_err_set(vs->err, AC_ERR_POLICY, "root_mismatch",
		                  "%s: the entries do not hash to the signed tree head's root: an"
		                  " entry was altered in the log (export with --proofs to name it)",
		                  name);
	return 0;
}

int
audit_verify(FILE *in, const char *name, const struct audit_verify_options *opts,
             struct audit_summary *summary, struct ac_err *err)
{
	static const struct audit_verify_options none;
	struct vstate *vs = NULL;
	FILE *spool = NULL, *f;
	char *line = NULL;
	size_t cap = 0;
	uint64_t line_no = 0;
	off_t pos = 0;
	int rc = -1;
	ssize_t n;

	if (opts == NULL)
		opts = &none;
	if ((vs = calloc(1, sizeof(*vs))) == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "%s: out of memory", name);
		goto out;
	}
	vs->name = name;
	vs->err = err;
	merkle_stream_init(&vs->ms);
	if ((f = make_seekable(in, name, &spool, err)) == NULL ||
	    read_trailer(f, name, &vs->t, err) != 0 || verify_heads(vs, opts) != 0)
		goto out;
	vs->sum.sth = vs->t.sth;
	vs->sum.filtered = vs->t.filtered;
	vs->sum.proofs = vs->t.proofs || vs->t.filtered;
	if (fseeko(f, 0, SEEK_SET) != 0) {
		ac_err_set(err, AC_ERR_IO, "read_failed", "%s: cannot seek: %s", name,
		           strerror(errno));
		goto out;
	}
	while (pos < vs->t.offset && (n = getline(&line, &cap, f)) > 0) {
		json_error_t jerr;
		json_t *obj;

		line_no++;
		pos += n;
		if (n > AUDIT_LINE_MAX) {
			ac_err_set(err, AC_ERR_INVALID, "entry_malformed",
			           "%s:%" PRIu64 ": line longer than %d bytes", name, line_no,
			           AUDIT_LINE_MAX);
			goto out;
		}
		obj = json_loadb(line, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
		if (obj == NULL || !json_is_object(obj)) {
			json_decref(obj);
			ac_err_set(err, AC_ERR_INVALID, "entry_malformed",
			           "%s:%" PRIu64 ": not a JSON object (after entry seq %" PRIu64
			           "): %s",
			           name, line_no, vs->sum.last_seq, obj == NULL ? jerr.text : "");
			goto out;
		}
		if (json_object_get(obj, "export") != NULL) {
			json_decref(obj);
			ac_err_set(err, AC_ERR_INVALID, "export_malformed",
			           "%s:%" PRIu64 ": an export trailer before the last line", name,
			           line_no);
			goto out;
		}
		if (verify_entry(vs, obj, line_no) != 0) {
			json_decref(obj);
			goto out;
		}
		json_decref(obj);
	}
	if (ferror(f)) {
		ac_err_set(err, AC_ERR_IO, "read_failed", "%s: read error", name);
		goto out;
	}
	if (pos != vs->t.offset) {
		ac_err_set(err, AC_ERR_INVALID, "export_malformed",
		           "%s:%" PRIu64 ": the lines do not end where the trailer begins", name,
		           line_no);
		goto out;
	}
	if (verify_end(vs, line_no + 1) != 0)
		goto out;
	if (summary != NULL)
		*summary = vs->sum;
	rc = 0;
out:
	if (vs != NULL)
		json_decref(vs->t.line);
	free(vs);
	free(line);
	if (spool != NULL)
		fclose(spool);
	return rc;
}

void
audit_summary_print(const struct audit_summary *sum, FILE *out)
{
	char first[32], last[32], when[32], root[2 * MERKLE_HASH_LEN + 1];

	fprintf(out, "entries:   %" PRIu64 " (seq %" PRIu64 " to %" PRIu64 ")\n", sum->entries,
	        sum->first_seq, sum->last_seq);
	if (sum->entries > 0) {
		time_format_rfc3339(sum->first_time_ms / 1000, first, sizeof(first));
		time_format_rfc3339(sum->last_time_ms / 1000, last, sizeof(last));
		fprintf(out, "time span: %s to %s\n", first, last);
	}
	fprintf(out, "last hash: %s\n", sum->entries > 0 ? sum->last_hash : log_chain_genesis);
	hex_encode(sum->sth.root, MERKLE_HASH_LEN, root);
	time_format_rfc3339(sum->sth.timestamp_ms / 1000, when, sizeof(when));
	fprintf(out, "tree size: %" PRIu64 "\n", sum->sth.tree_size);
	fprintf(out, "root hash: %s (tree head of %s)\n", root, when);
	fprintf(out, "signature: %s\n",
	        sum->signature_checked ? "verified with the audit key"
	                               : "not checked (give --key AUDIT-PUB.pem)");
	if (sum->filtered)
		fprintf(out, "coverage:  filtered export: each entry proven in the tree by its"
		             " inclusion proof; completeness is not claimed\n");
	else
		fprintf(out, "coverage:  complete: chain from seq 1 and root recomputed%s\n",
		        sum->proofs ? ", every inclusion proof checked" : "");
	if (sum->previous_checked)
		fprintf(out, "consistent with the previous tree head of size %" PRIu64 "\n",
		        sum->previous_size);
	for (size_t i = 0; i < sum->kind_count; i++)
		fprintf(out, "  %-16s %" PRIu64 "\n", sum->kinds[i].name, sum->kinds[i].count);
}
