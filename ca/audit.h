/*
 * audit.h - exporting the issuance log for auditors, and verifying an export offline.
 *
 * JSON Lines export: one line per entry, each the entry's canonical encoding with its
 * "hash" (see store/log_chain.h) and, with proofs, its RFC 9162 inclusion proof in the tree
 * of the signed tree head ("proof": hex hashes, leaf index seq - 1), then one trailer line:
 *
 *   {"export":{"count":N,"first_seq":A,"last_seq":B,"last_hash":"...","log_size":S,
 *              "log_head":"...","proofs":true|false,
 *              "filter":{"kind":K,"subject_prefix":P,"since":T,"until":T},   (if filtered)
 *              "sth":{"tree_size":S,"root_hash":"...","timestamp":ms,"signature":"..."},
 *              "consistency":{"from_size":M,"proof":["...",...]}}}       (if asked for)
 *
 * The tree head is that of the whole log when the export began (S entries: later entries
 * are not exported), signed with the audit key (ca/audit_keys.h). A filtered export (kind,
 * subject prefix, since, until) always carries proofs. The export streams rows as the store
 * yields them, each proof computed from O(log n) stored nodes: memory does not grow with
 * the log.
 *
 * Verification (audit_verify) reads the trailer first (the file is spooled to a temporary
 * file when it cannot seek), checks the tree head's signature (with a key) and, given an
 * earlier tree head, the consistency proof from it; then, entry by entry: the recomputed
 * hash equals the stated one; consecutive entries link ("prev"); an unfiltered export starts
 * at seq 1 with no gaps; each proof verifies against the signed root. An unfiltered export
 * must end at the tree head's size, and the root recomputed from its entries must be the
 * signed one. The first failure is reported naming the entry (its seq and line number).
 *
 * CSV export carries the same fields as a table with a header row, for spreadsheets; it
 * is not a verifiable format.
 */
#ifndef AGENTCA_CA_AUDIT_H
#define AGENTCA_CA_AUDIT_H

#include <stdint.h>
#include <stdio.h>

#include <openssl/evp.h>

#include "ca/audit_keys.h"
#include "common/error.h"
#include "store/store.h"

enum audit_format { AUDIT_JSONL = 0, AUDIT_CSV };

int audit_format_parse(const char *name, enum audit_format *out);

/* Where exported bytes go: return 0, or -1 to stop (e.g. the client went away). */
typedef int (*audit_write_fn)(void *arg, const char *data, size_t len);

struct audit_export_options {
	enum audit_format format;
	int64_t since;              /* unix seconds; 0: from the start */
	int64_t until;              /* unix seconds; 0: to the end */
	const char *kind;           /* NULL: every kind */
	const char *subject_prefix; /* NULL: every subject */
	int proofs;                 /* JSONL: each entry's inclusion proof (always if filtered) */
	int consistency;            /* JSONL: add the consistency proof from consistency_from */
	uint64_t consistency_from;  /* an earlier tree size, <= the log's size */
	EVP_PKEY *sth_key;          /* the audit private key; required for JSONL */
};

/* Make the signed tree head of the log as it is now (size = the head's seq). */
int audit_sth_make(struct store *st, EVP_PKEY *key, struct sth *out, struct ac_err *err);

int audit_export(struct store *st, const struct audit_export_options *opts, audit_write_fn write,
                 void *arg, struct ac_err *err);

struct audit_verify_options {
	EVP_PKEY *key;              /* the audit public key; NULL: signatures are not checked */
	const struct sth *previous; /* an earlier tree head the export must be consistent with */
};

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
	struct sth sth;        /* the export's tree head */
	int filtered;          /* entries proven by inclusion proofs, completeness not */
	int proofs;            /* every entry's inclusion proof was checked */
	int signature_checked; /* the tree head verified with the audit key */
	int previous_checked;  /* consistent with opts->previous */
	uint64_t previous_size;
};

/* Verify a JSON Lines export read from in. `name` labels messages (the file name). opts may
 * be NULL (no key, no earlier tree head). */
int audit_verify(FILE *in, const char *name, const struct audit_verify_options *opts,
                 struct audit_summary *summary, struct ac_err *err);

/* Print the summary in a few lines for people. */
void audit_summary_print(const struct audit_summary *summary, FILE *out);

#endif
