/*
 * log_chain.h - the issuance log's entries, their canonical encoding and the hash chain.
 *
 * An entry is encoded as compact JSON with keys sorted and absent fields left out:
 *
 *   {"actor":"admin:cli","kind":"issued","not_after":1763780000,"not_before":1763693600,
 *    "prev":"<64 hex>","sans":["spiffe://corp.internal/gw-1"],"seq":42,"serial":"...",
 *    "spki_sha256":"...","subject":"spiffe://corp.internal/gw-1","time":1763693600123}
 *
 * and its hash is SHA-256 over exactly those bytes, in lowercase hex. Because "prev" (the
 * previous entry's hash; 64 zeros for the first) and "seq" are inside the hashed bytes, an
 * entry edited, dropped, swapped or inserted breaks the chain at that point. The encoding
 * is jansson's compact, key-sorted output, so a verifier can rebuild it from an exported
 * line by parsing it, removing "hash", and dumping it again the same way.
 *
 * An exported line is the canonical encoding with "hash" added (log_chain_export_line).
 */
#ifndef AGENTCA_STORE_LOG_CHAIN_H
#define AGENTCA_STORE_LOG_CHAIN_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common/error.h"

#define LOG_HASH_HEX_LEN 64

/* What one log entry says. Strings are borrowed; NULL (or 0 for times) means absent. */
struct log_entry {
	const char *kind;    /* issued, renewed, denied, revoked, token_created, ... */
	int64_t time_ms;     /* unix milliseconds; 0: the store stamps the commit time */
	const char *actor;   /* "admin:cli", "token:<jti>", "parent:<id>", "acme:<account>" */
	const char *subject; /* the identity concerned */
	const char *serial;  /* hex */
	const char *const *sans;
	size_t sans_count;
	int64_t not_before; /* unix seconds */
	int64_t not_after;
	const char *spki_sha256;
	const char *parent;
	const char *request_id;
	const char *reason; /* a stable token: "csr_bad_signature", "key_too_weak", ... */
	const char *detail; /* a sentence for people; never a secret */
};

/* The hash that comes before the first entry: 64 zeros. */
extern const char log_chain_genesis[LOG_HASH_HEX_LEN + 1];

/* Encode entry with its seq, time (ms) and the previous hash. *out is heap (free()). */
int log_chain_encode(const struct log_entry *entry, uint64_t seq, int64_t time_ms,
                     const char *prev_hash, char **out, size_t *out_len, struct ac_err *err);

/* SHA-256 of bytes, as 64 lowercase hex digits plus NUL. */
void log_chain_hash(const char *bytes, size_t len, char out[LOG_HASH_HEX_LEN + 1]);

/* The exported line (no newline): the canonical JSON with "hash" spliced in. Heap. */
int log_chain_export_line(const char *canonical, size_t len, const char *hash, char **out,
                          size_t *out_len, struct ac_err *err);

/* Rebuild the canonical bytes from a parsed exported line: a copy without "hash", dumped
 * compact and key-sorted. *out is heap. Fails on anything that is not such an object. */
int log_chain_canonical_from_export(const json_t *line, char **out, size_t *out_len,
                                    struct ac_err *err);

#endif
