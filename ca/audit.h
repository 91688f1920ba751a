/*
 * audit.h - exporting the issuance log for auditors, and verifying an export offline.
 *
 * JSON Lines export: one line per entry, each the entry's canonical encoding with its
 * "hash" (see store/log_chain.h), then one trailer line that states what was exported:
 *
 *   {"export":{"count":N,"first_seq":A,"last_seq":B,"last_hash":"...",
 *              "log_size":S,"log_head":"..."}}
 *
 * The export streams rows as the store yields them: memory does not grow with the log.
 *
 * Verification (audit_verify) reads such a file and checks, entry by entry, that the
 * recomputed hash equals the stated one, that "seq" counts up by one and that "prev" is
 * the previous entry's hash (64 zeros before seq 1); then that the trailer agrees with
 * what was read. The first failure is reported naming the entry (its seq and line number).
 *
 * CSV export carries the same fields as a table with a header row, for spreadsheets; it
 * is not a verifiable format.
 */
#ifndef AGENTCA_CA_AUDIT_H
#define AGENTCA_CA_AUDIT_H

#include <stdint.h>
#include <stdio.h>

#include "common/error.h"
#include "store/store.h"

enum audit_format { AUDIT_JSONL = 0, AUDIT_CSV };

int audit_format_parse(const char *name, enum audit_format *out);

/* Where exported bytes go: return 0, or -1 to stop (e.g. the client went away). */
typedef int (*audit_write_fn)(void *arg, const char *data, size_t len);

struct audit_export_options {
	enum audit_format format;
	int64_t since;   /* unix seconds; 0: from the start */
	int64_t until;   /* unix seconds; 0: to the end */
};

int audit_export(struct store *st, const struct audit_export_options *opts, audit_write_fn write,
		 void *arg, struct ac_err *err);

/* What a successful verification saw. */
#define AUDIT_KINDS_MAX 32
struct audit_summary {
	uint64_t entries;
	uint64_t first_seq, last_seq;
	int64_t first_time_ms, last_time_ms;
	char last_hash[65];
	size_t kind_count;
	struct {
		char name[32];
		uint64_t count;
	} kinds[AUDIT_KINDS_MAX];
};

/* Verify a JSON Lines export read from in. `name` labels messages (the file name). */
int audit_verify(FILE *in, const char *name, struct audit_summary *summary, struct ac_err *err);

/* Print the summary in a few lines for people. */
void audit_summary_print(const struct audit_summary *summary, FILE *out);

#endif
