/*
 * error.h - the one way errors travel in agentca.
 *
 * A function that can fail takes a `struct ac_err *err` as its last argument and returns
 * 0 on success or -1 on failure, after filling `err` with:
 *
 *   code    what kind of failure it is (decides the HTTP status, the exit code, retries);
 *   reason  a short stable token for machines: logs, metrics labels, denial entries in the
 *           issuance log ("csr_bad_signature", "key_too_weak", ...). Always a string literal;
 *   msg     one sentence a person can act on ("intermediate.pem: certificate has expired").
 *
 * Library code never prints and never exits: it fills the error and returns. Only the CLI
 * decides what to print. The first error set wins: ac_err_set() on an error that already
 * holds one keeps the original, so a cleanup path cannot hide the real cause; use
 * ac_err_wrap() to add context in front of it.
 *
 * Messages must never contain secrets (passphrases, keys, tokens).
 */
#ifndef AGENTCA_COMMON_ERROR_H
#define AGENTCA_COMMON_ERROR_H

#include <stddef.h>

enum ac_errcode {
	AC_OK = 0,
	AC_ERR_INVALID,     /* malformed input: 400 */
	AC_ERR_POLICY,      /* well-formed but refused by policy: 403 */
	AC_ERR_NOTFOUND,    /* 404 */
	AC_ERR_CONFLICT,    /* already exists, already used: 409 */
	AC_ERR_IO,          /* file system */
	AC_ERR_CRYPTO,      /* OpenSSL failure that is not the caller's fault */
	AC_ERR_STORE,       /* database */
	AC_ERR_UNAVAILABLE, /* try again later (disk full, shutting down): 503 */
	AC_ERR_INTERNAL,    /* a bug */
	AC_ERR_USAGE,       /* bad command line: exit 2 */
};

#define AC_ERR_MSG_MAX 512

struct ac_err {
	enum ac_errcode code;
	const char *reason; /* static string, never freed */
	char msg[AC_ERR_MSG_MAX];
};

/* Reset to "no error". */
void ac_err_clear(struct ac_err *err);

/* Fill err unless it already holds an error; always returns -1 so that callers may write
 * `return ac_err_set(err, ...)`. err may be NULL. */
int ac_err_set(struct ac_err *err, enum ac_errcode code, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Prefix the existing message with context ("loading intermediate: <old msg>"). */
int ac_err_wrap(struct ac_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Like ac_err_set, and appends the first OpenSSL error queue entry (then clears the queue). */
int ac_err_ssl(struct ac_err *err, enum ac_errcode code, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* A human name for a code ("invalid input", "refused by policy", ...). */
const char *ac_errcode_name(enum ac_errcode code);

/* HTTP status that goes with a code (400, 403, 404, 409, 503 or 500). */
int ac_errcode_http_status(enum ac_errcode code);

#endif
