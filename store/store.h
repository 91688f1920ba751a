/*
 * store.h - the only door to durable state: certificates, used tokens, and the issuance log.
 *
 * Callers see `struct store` and the functions below; they never see SQL. A backend is a
 * table of function pointers (struct store_ops); SQLite is the one shipped (store_sqlite.c),
 * and a PostgreSQL backend for several CA replicas can be added without touching callers.
 *
 * Writes are units of work (struct store_write): an optional certificate row, an optional
 * "token used" mark, an optional revocation, and exactly one issuance-log entry, committed
 * all together or not at all. store_submit() hands a unit to the group committer
 * (group_commit.c), which gathers the units that arrive while a commit is in flight and
 * commits them in one durable transaction (WAL, synchronous=FULL), each in its own savepoint
 * so that one unit's failure (a token already used) fails that unit alone. store_submit()
 * returns only after the transaction holding the unit is durable on disk: a caller may then
 * hand the certificate out, knowing the log holds it.
 *
 * The log is hash-chained (log_chain.c): each entry's canonical encoding includes its
 * sequence number and the previous entry's hash, and its hash is SHA-256 of that encoding.
 * The chain head advances only when a commit succeeds.
 *
 * On top of the chain, the log is the list of leaves of an RFC 9162 Merkle tree (merkle.h):
 * leaf i (from 0) is entry seq i + 1, its leaf hash SHA-256(0x00 || canonical bytes). The
 * store keeps every leaf hash and every perfect subtree's hash, written by the committer in
 * the same transaction (the same savepoint) as the entry: an entry is never in the log
 * without its leaf. A tree head for any size up to the head, and inclusion and consistency
 * proofs, are then computed from O(log n) stored nodes each, never by reading the log.
 */
#ifndef AGENTCA_STORE_STORE_H
#define AGENTCA_STORE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "store/log_chain.h"
#include "store/merkle.h"

struct store;

/* A certificate as stored. All strings are borrowed from the caller for the call. */
struct cert_record {
	const char *serial;      /* lowercase hex, no leading zeros stripped: as in the cert */
	const char *subject;     /* the SPIFFE ID */
	const char *parent;      /* parent identity, or NULL */
	const char *spki_sha256; /* hex SHA-256 of the SubjectPublicKeyInfo DER */
	const char *issuer_fingerprint; /* hex SHA-256 of the issuing CA certificate's DER */
	int64_t not_before;             /* unix seconds */
	int64_t not_after;
	const unsigned char *der;
	size_t der_len;
	int depth;           /* nesting: 0 for an admin-enrolled agent, parent's + 1 below */
	int64_t renew_after; /* unix seconds the CA told the holder to renew at; 0: none */
};

/* A certificate read back. Owned by the caller: free with store_cert_row_free(). */
struct cert_row {
	char *serial, *subject, *parent, *spki_sha256, *issuer_fingerprint;
	int64_t not_before, not_after;
	int64_t revoked_at; /* 0 when not revoked */
	char *revoke_reason;
	uint64_t log_seq;    /* the log entry that recorded the issuance */
	int depth;           /* see cert_record */
	int64_t renew_after; /* see cert_record; 0 for rows written before it was recorded */
	unsigned char *der;
	size_t der_len;
};

/* An intermediate CA's place in the rotation (ca/rotate.h), written in the same unit as the
 * log entry that records the step. Strings are borrowed for the call. */
struct intermediate_record {
	const char *fingerprint; /* hex SHA-256 of the certificate's DER */
	const char *state;       /* "prepared", "published", "active", "retiring", "retired" */
	int64_t not_before, not_after;
	int64_t published_at;    /* unix seconds it was first served in the bundle; 0: not yet */
	int64_t bundle_sequence; /* the first bundle sequence that carried it; 0: not yet */
};

/* An intermediate as stored (see store_intermediate_list). */
struct intermediate_row {
	char fingerprint[65];
	char state[16];
	int64_t not_before, not_after;
	int64_t published_at, bundle_sequence;
	int64_t changed_at; /* unix seconds of the last state change */
	uint64_t log_seq;   /* the entry that recorded the last state change */
};

#define STORE_INTERMEDIATES_MAX 16

/* One unit of work. The caller fills the inputs; the store fills the outputs. */
struct store_write {
	/* inputs */
	const struct cert_record *cert; /* NULL: no certificate row */
	const char *token_jti;          /* NULL: no token; else fails AC_ERR_CONFLICT if used */
	int64_t token_expires;          /* unix seconds, kept to prune the used-token table */
	const struct log_entry *entry;  /* required */
	const char *revoke_serial;      /* NULL: none; else revoke it (fails if absent/revoked) */
	const char *revoke_reason;      /* RFC 5280 reason name ("keyCompromise"), or NULL */
	int64_t revoked_at;             /* unix seconds; 0: the commit time */
	const struct intermediate_record *intermediate; /* NULL: none; else insert or update */
	/* outputs */
	uint64_t seq; /* the entry's sequence number (1-based) */
	char hash[LOG_HASH_HEX_LEN + 1];
	struct ac_err result; /* AC_OK when committed */
};

/* Test hook for fault injection: called at each named point of a commit ("begin", "cert",
 * "token", "log", "commit"); returning non-zero makes that step fail as a disk error would. */
typedef int (*store_fault_fn)(void *arg, const char *point);

struct store_options {
	const char *path;         /* SQLite file; created with mode 0600 */
	int64_t busy_timeout_ms;  /* default 5000 */
	int64_t group_commit_max; /* units per transaction at most; default 256 */
	store_fault_fn fault;     /* NULL in production */
	void *fault_arg;
};

void store_options_defaults(struct store_options *opts);

/* Open (and create or migrate) the store; starts the group committer thread. */
struct store *store_open(const struct store_options *opts, struct ac_err *err);

/* Stop the committer (pending units are committed first) and close. NULL is fine. */
void store_close(struct store *st);

/* Commit one unit durably (see above). Returns 0, or -1 with err = w->result. */
int store_submit(struct store *st, struct store_write *w, struct ac_err *err);

/* Commit several units in one call (e.g. a batch from a benchmark). Each w[i]->result says
 * how that unit ended; returns -1 if any failed. */
int store_submit_many(struct store *st, struct store_write **w, size_t n, struct ac_err *err);

/* The newest entry: its sequence number (0 for an empty log) and hash (64 zeros). */
int store_log_head(struct store *st, uint64_t *seq, char hash[LOG_HASH_HEX_LEN + 1],
                   struct ac_err *err);

/* Which log rows a scan returns. Zero/NULL members do not filter. */
struct log_filter {
	uint64_t from_seq; /* first sequence number (inclusive) */
	int64_t since_ms;  /* entry time >= since */
	int64_t until_ms;  /* entry time < until */
	const char *kind;  /* exact */
	const char *subject_prefix;
};

/* One stored log row, valid only during the callback. */
struct log_row {
	uint64_t seq;
	int64_t time_ms;
	const char *canonical; /* the exact bytes that were hashed */
	size_t canonical_len;
	const char *hash; /* hex */
};

/* Return non-zero from the callback to stop the scan early (the scan then returns 0). */
typedef int (*log_row_fn)(void *arg, const struct log_row *row);

/* Visit matching rows in sequence order, in constant memory. */
int store_log_scan(struct store *st, const struct log_filter *filter, log_row_fn fn, void *arg,
                   struct ac_err *err);

/* The root (MTH) of the tree of the first `size` entries, size <= the head's seq (0: the
 * empty tree's root). AC_ERR_INVALID "tree_size_invalid" past the head. */
int store_tree_root(struct store *st, uint64_t size, unsigned char root[MERKLE_HASH_LEN],
                    struct ac_err *err);

/* The inclusion proof (RFC 9162 2.1.3) of leaf `index` (entry seq index + 1) in the tree of
 * `size` entries, index < size <= head. path must hold MERKLE_PROOF_MAX hashes. */
int store_inclusion_proof(struct store *st, uint64_t index, uint64_t size,
                          unsigned char path[][MERKLE_HASH_LEN], size_t *len, struct ac_err *err);

/* The consistency proof (RFC 9162 2.1.4) from the tree of old_size entries to the tree of
 * new_size, old_size <= new_size <= head (empty when old_size is 0 or equal to new_size).
 * proof must hold MERKLE_PROOF_MAX hashes. */
int store_consistency_proof(struct store *st, uint64_t old_size, uint64_t new_size,
                            unsigned char proof[][MERKLE_HASH_LEN], size_t *len,
                            struct ac_err *err);

/* Find a certificate by serial (hex, any case). AC_ERR_NOTFOUND when absent. */
int store_cert_get(struct store *st, const char *serial, struct cert_row *out, struct ac_err *err);
void store_cert_row_free(struct cert_row *row);

/* Number of certificate rows (tests, metrics). */
int store_cert_count(struct store *st, int64_t *count, struct ac_err *err);

/* A revoked certificate, for CRLs and OCSP; valid only during the callback. */
struct revoked_row {
	const char *serial;
	int64_t revoked_at; /* unix seconds */
	const char *reason; /* NULL when none was given */
	int64_t not_after;
};

typedef int (*revoked_row_fn)(void *arg, const struct revoked_row *row);

/* Visit revoked certificates with not_after >= not_after_min (0: all), by serial, in constant
 * memory. Return non-zero from the callback to stop early (the scan then returns 0). */
int store_revoked_scan(struct store *st, int64_t not_after_min, revoked_row_fn fn, void *arg,
                       struct ac_err *err);

/* Counters since store_open, for metrics and for tests that check units share commits. */
struct store_stats {
	uint64_t transactions;        /* commit_batch calls: one transaction (one fsync) each */
	uint64_t transactions_failed; /* of those, the ones that failed as a whole */
	uint64_t units;               /* units handed to those transactions */
	uint64_t units_failed;        /* units whose result was not AC_OK */
	uint64_t largest_batch;       /* most units in one transaction */
	double commit_seconds;        /* time spent in transactions, summed (for a mean) */
	double commit_seconds_max;    /* the slowest transaction */
	uint64_t memory_bytes;        /* what the backend holds in memory now (its caches) */
};

void store_stats(struct store *st, struct store_stats *out);

/* Which certificates a listing returns, in serial order. Zero/NULL members do not filter. */
struct cert_filter {
	const char *subject_prefix;
	const char *after_serial; /* resume after this serial (pagination) */
	int64_t valid_at;         /* unix seconds: not expired and not revoked at that time */
	int64_t limit;            /* at most this many rows; 0: no limit */
};

/* A certificate in a listing, valid only during the callback (no DER). */
struct cert_summary {
	const char *serial, *subject, *parent, *revoke_reason;
	int64_t not_before, not_after, revoked_at;
	int depth;
	int64_t renew_after; /* see cert_record */
};

typedef int (*cert_summary_fn)(void *arg, const struct cert_summary *row);

/* Visit the matching certificates in serial order, in constant memory. */
int store_cert_list(struct store *st, const struct cert_filter *filter, cert_summary_fn fn,
                    void *arg, struct ac_err *err);

/* Every intermediate the rotation knows (at most STORE_INTERMEDIATES_MAX, newest first;
 * retired ones beyond that are left out). */
int store_intermediate_list(struct store *st, struct intermediate_row *rows, size_t max, size_t *n,
                            struct ac_err *err);

/* Certificates the CA with this fingerprint issued that are unrevoked and unexpired at `at`,
 * and the latest not_after among them (0 when none). */
int store_cert_count_by_issuer(struct store *st, const char *issuer_fingerprint, int64_t at,
                               int64_t *count, int64_t *last_not_after, struct ac_err *err);

/* Remove from the hot tables what expired before `expired_before`: certificate rows and used
 * token marks (the log keeps every entry). *certs and *tokens get how many went. */
int store_prune(struct store *st, int64_t expired_before, int64_t *certs, int64_t *tokens,
                struct ac_err *err);

/* A gateway reported the bundle sequence it now holds (POST /v1/bundle/ack). Keeps the
 * highest sequence each identity has reported. */
int store_bundle_ack(struct store *st, const char *identity, int64_t sequence, struct ac_err *err);

/* The highest sequence `identity` has reported; 0 when it never has. */
int store_bundle_ack_get(struct store *st, const char *identity, int64_t *sequence,
                         struct ac_err *err);

/* The backend's interface. store.c owns the committer and dispatches to these. */
struct store_ops {
	const char *name;
	void (*close)(struct store *st);
	/* One transaction: each unit in a savepoint; fills each unit's seq, hash and result.
	 * Returns -1 only when the whole transaction failed (then every unit has failed and
	 * the chain head is unchanged). */
	int (*commit_batch)(struct store *st, struct store_write **w, size_t n, struct ac_err *err);
	int (*log_head)(struct store *st, uint64_t *seq, char *hash, struct ac_err *err);
	int (*log_scan)(struct store *st, const struct log_filter *f, log_row_fn fn, void *arg,
	                struct ac_err *err);
	/* The stored hash of perfect subtree (level, index) (merkle.h); AC_ERR_STORE
	 * "log_corrupt" when it is missing. Callable from any thread, also from inside a
	 * log_scan callback. */
	int (*tree_node)(struct store *st, unsigned level, uint64_t index,
	                 unsigned char out[MERKLE_HASH_LEN], struct ac_err *err);
	int (*cert_get)(struct store *st, const char *serial, struct cert_row *out,
	                struct ac_err *err);
	int (*cert_count)(struct store *st, int64_t *count, struct ac_err *err);
	int (*cert_list)(struct store *st, const struct cert_filter *filter, cert_summary_fn fn,
	                 void *arg, struct ac_err *err);
	int (*revoked_scan)(struct store *st, int64_t not_after_min, revoked_row_fn fn, void *arg,
	                    struct ac_err *err);
	int (*intermediate_list)(struct store *st, struct intermediate_row *rows, size_t max,
	                         size_t *n, struct ac_err *err);
	int (*cert_count_by_issuer)(struct store *st, const char *issuer_fingerprint, int64_t at,
	                            int64_t *count, int64_t *last_not_after, struct ac_err *err);
	int (*prune)(struct store *st, int64_t expired_before, int64_t *certs, int64_t *tokens,
	             struct ac_err *err);
	int (*bundle_ack)(struct store *st, const char *identity, int64_t sequence,
	                  struct ac_err *err);
	int (*bundle_ack_get)(struct store *st, const char *identity, int64_t *sequence,
	                      struct ac_err *err);
	/* Bytes the backend holds in memory now (page caches, statements); NULL: unknown. */
	uint64_t (*memory_used)(struct store *st);
};

#endif
