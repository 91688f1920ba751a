/*
 * audit.c - issuance log export (JSON Lines, CSV) and offline verification. See audit.h.
 */
#include "ca/audit.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/timefmt.h"
#include "store/log_chain.h"

#define AUDIT_LINE_MAX (1024 * 1024)

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
	"seq",	 "time",   "kind",	"actor",      "subject", "serial", "sans",
	"not_before", "not_after", "spki_sha256", "parent", "request_id", "reason", "detail",
	"prev",	 "hash",
};
#define CSV_COLUMN_COUNT (sizeof(csv_columns) / sizeof(csv_columns[0]))

struct export_state {
	const struct audit_export_options *opts;
	audit_write_fn write;
	void *arg;
	uint64_t head_seq;
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

		json_array_foreach(value, i, item)
			total += (json_is_string(item) ? json_string_length(item) : 0) + 1;
		out = calloc(1, total);
		if (out == NULL)
			return NULL;
		json_array_foreach(value, i, item) {
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

			time_format_rfc3339(json_integer_value(t) / 1000, timebuf,
					    sizeof(timebuf));
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

static int
export_jsonl_row(struct export_state *es, const struct log_row *row)
{
	char *line = NULL;
	size_t len;
	int rc = -1;

	if (log_chain_export_line(row->canonical, row->canonical_len, row->hash, &line, &len,
				  es->err) != 0)
		return -1;
	line[len] = '\n'; /* export_line leaves room for the NUL: reuse it */
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

int
audit_export(struct store *st, const struct audit_export_options *opts, audit_write_fn write,
	     void *arg, struct ac_err *err)
{
	struct export_state es;
	struct log_filter filter;
	char head_hash[LOG_HASH_HEX_LEN + 1];
	char *trailer = NULL;
	int rc = -1;

	memset(&es, 0, sizeof(es));
	es.opts = opts;
	es.write = write;
	es.arg = arg;
	es.err = err;
	if (store_log_head(st, &es.head_seq, head_hash, err) != 0)
		return -1;

	if (opts->format == AUDIT_CSV) {
		char header[512] = "";

		for (size_t i = 0; i < CSV_COLUMN_COUNT; i++) {
			strcat(header, i == 0 ? "" : ",");
			strcat(header, csv_columns[i]);
		}
		strcat(header, "\r\n");
		if (write(arg, header, strlen(header)) != 0)
			return ac_err_set(err, AC_ERR_IO, "write_failed",
					  "writing the export failed");
	}

	memset(&filter, 0, sizeof(filter));
	filter.since_ms = opts->since * 1000;
	filter.until_ms = opts->until * 1000;
	if (store_log_scan(st, &filter, export_row, &es, err) != 0 || es.failed)
		goto out;

	if (opts->format == AUDIT_JSONL) {
		int n = asprintf(&trailer,
				 "{\"export\":{\"count\":%" PRIu64 ",\"first_seq\":%" PRIu64
				 ",\"last_seq\":%" PRIu64 ",\"last_hash\":\"%s\",\"log_size\":%" PRIu64
				 ",\"log_head\":\"%s\"}}\n",
				 es.count, es.first_seq, es.last_seq,
				 es.count > 0 ? es.last_hash : log_chain_genesis, es.head_seq,
				 head_hash);
		if (n < 0) {
			trailer = NULL;
			ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
			goto out;
		}
		if (write(arg, trailer, (size_t)n) != 0) {
			ac_err_set(err, AC_ERR_IO, "write_failed", "writing the export failed");
			goto out;
		}
	}
	rc = 0;
out:
	free(trailer);
	return rc;
}

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
		snprintf(sum->kinds[sum->kind_count].name, sizeof(sum->kinds[0].name), "%s",
			 kind);
		sum->kinds[sum->kind_count++].count = 1;
	}
}

/* Check the trailer against what was read. */
static int
verify_trailer(json_t *trailer, const char *name, uint64_t line_no,
	       const struct audit_summary *sum, struct ac_err *err)
{
	json_t *count = json_object_get(trailer, "count");
	json_t *last_seq = json_object_get(trailer, "last_seq");
	json_t *last_hash = json_object_get(trailer, "last_hash");

	if (!json_is_integer(count) || !json_is_integer(last_seq) || !json_is_string(last_hash))
		return ac_err_set(err, AC_ERR_INVALID, "export_malformed",
				  "%s:%" PRIu64 ": the export trailer is malformed", name, line_no);
	if ((uint64_t)json_integer_value(count) != sum->entries)
		return ac_err_set(err, AC_ERR_INVALID, "export_count_mismatch",
				  "%s: the trailer says %" JSON_INTEGER_FORMAT
				  " entries but %" PRIu64 " were read: entries were removed or added",
				  name, json_integer_value(count), sum->entries);
	if (sum->entries > 0 && ((uint64_t)json_integer_value(last_seq) != sum->last_seq ||
				 strcmp(json_string_value(last_hash), sum->last_hash) != 0))
		return ac_err_set(err, AC_ERR_INVALID, "export_head_mismatch",
				  "%s: the trailer names last entry seq %" JSON_INTEGER_FORMAT
				  " but the chain ends at entry seq %" PRIu64,
				  name, json_integer_value(last_seq), sum->last_seq);
	return 0;
}

/* Check one entry line against the chain so far. */
static int
verify_entry(json_t *obj, const char *name, uint64_t line_no, struct audit_summary *sum,
	     struct ac_err *err)
{
	char computed[LOG_HASH_HEX_LEN + 1];
	json_t *seq_v = json_object_get(obj, "seq"), *prev_v = json_object_get(obj, "prev");
	json_t *hash_v = json_object_get(obj, "hash"), *kind_v = json_object_get(obj, "kind");
	json_t *time_v = json_object_get(obj, "time");
	char *canonical = NULL;
	size_t canonical_len;
	uint64_t seq;
	int rc = -1;

	if (!json_is_integer(seq_v) || json_integer_value(seq_v) < 1 || !json_is_string(prev_v) ||
	    !json_is_string(hash_v) || !json_is_string(kind_v) || !json_is_integer(time_v))
		return ac_err_set(err, AC_ERR_INVALID, "entry_malformed",
				  "%s:%" PRIu64 ": entry is missing seq, prev, hash, kind or time",
				  name, line_no);
	seq = (uint64_t)json_integer_value(seq_v);
	if (sum->entries > 0 && seq != sum->last_seq + 1) {
		ac_err_set(err, AC_ERR_INVALID, "chain_broken",
			   "%s:%" PRIu64 ": entry seq %" PRIu64 " follows entry seq %" PRIu64
			   ": an entry is missing or out of order",
			   name, line_no, seq, sum->last_seq);
		goto out;
	}
	if (sum->entries == 0 && seq == 1 &&
	    strcmp(json_string_value(prev_v), log_chain_genesis) != 0) {
		ac_err_set(err, AC_ERR_INVALID, "chain_broken",
			   "%s:%" PRIu64 ": entry seq 1 does not start from the genesis hash",
			   name, line_no);
		goto out;
	}
	if (sum->entries > 0 && strcmp(json_string_value(prev_v), sum->last_hash) != 0) {
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

int
audit_verify(FILE *in, const char *name, struct audit_summary *summary, struct ac_err *err)
{
	struct audit_summary sum;
	char *line = NULL;
	size_t cap = 0;
	uint64_t line_no = 0;
	int seen_trailer = 0, rc = -1;
	ssize_t n;

	memset(&sum, 0, sizeof(sum));
	while ((n = getline(&line, &cap, in)) > 0) {
		json_error_t jerr;
		json_t *obj, *trailer;

		line_no++;
		if (seen_trailer) {
			ac_err_set(err, AC_ERR_INVALID, "export_malformed",
				   "%s:%" PRIu64 ": data after the export trailer", name, line_no);
			goto out;
		}
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
				   name, line_no, sum.last_seq, obj == NULL ? jerr.text : "");
			goto out;
		}
		trailer = json_object_get(obj, "export");
		if (trailer != NULL) {
			int bad = verify_trailer(trailer, name, line_no, &sum, err);

			json_decref(obj);
			if (bad)
				goto out;
			seen_trailer = 1;
			continue;
		}
		if (verify_entry(obj, name, line_no, &sum, err) != 0) {
			json_decref(obj);
			goto out;
		}
		json_decref(obj);
	}
	if (ferror(in)) {
		ac_err_set(err, AC_ERR_IO, "read_failed", "%s: read error", name);
		goto out;
	}
	if (!seen_trailer) {
		ac_err_set(err, AC_ERR_INVALID, "export_truncated",
			   "%s: the export is truncated: no trailer after entry seq %" PRIu64, name,
			   sum.last_seq);
		goto out;
	}
	if (summary != NULL)
		*summary = sum;
	rc = 0;
out:
	free(line);
	return rc;
}

void
audit_summary_print(const struct audit_summary *sum, FILE *out)
{
	char first[32], last[32];

	fprintf(out, "entries:   %" PRIu64 " (seq %" PRIu64 " to %" PRIu64 ")\n", sum->entries,
		sum->first_seq, sum->last_seq);
	if (sum->entries > 0) {
		time_format_rfc3339(sum->first_time_ms / 1000, first, sizeof(first));
		time_format_rfc3339(sum->last_time_ms / 1000, last, sizeof(last));
		fprintf(out, "time span: %s to %s\n", first, last);
	}
	fprintf(out, "last hash: %s\n", sum->entries > 0 ? sum->last_hash : log_chain_genesis);
	for (size_t i = 0; i < sum->kind_count; i++)
		fprintf(out, "  %-16s %" PRIu64 "\n", sum->kinds[i].name, sum->kinds[i].count);
}
