/*
 * acme_validate.h - the ACME validation authority: the CA checks a challenge itself (RFC 8555
 * section 8: http-01 and dns-01; RFC 8737: tls-alpn-01), on a pool of worker threads of its
 * own, never on an HTTP request thread.
 *
 * The caller (the ACME front) builds one struct acme_validation per challenge the client
 * has answered and submits it; the pool fetches the proof from the client's side (an HTTP
 * GET, a TXT lookup through the configured resolver, a TLS handshake with ALPN
 * "acme-tls/1") and calls done() exactly once, on a worker thread, with the outcome. Every
 * byte the validator reads comes from outside and is treated as hostile: bounded sizes,
 * bounded time, no redirects off the standard ports (RFC 8555 section 8.3).
 *
 * For tests and labs the resolver and the two ports can be set (like Pebble's settings), so
 * that the whole flow runs on loopback with pebble-challtestsrv as the DNS server.
 */
#ifndef AGENTCA_ENROLLMENT_ACME_VALIDATE_H
#define AGENTCA_ENROLLMENT_ACME_VALIDATE_H

#include "common/error.h"

enum acme_challenge_type {
	ACME_CHALLENGE_HTTP_01 = 0,
	ACME_CHALLENGE_DNS_01,
	ACME_CHALLENGE_TLS_ALPN_01,
};

struct acme_validator_options {
	const char *resolver; /* "ADDR:PORT" of the DNS server for every lookup; NULL: the first
	                         nameserver in /etc/resolv.conf */
	int http_port;        /* http-01 target port; 0: 80 */
	int tls_alpn_port;    /* tls-alpn-01 target port; 0: 443 */
	int threads;          /* worker threads; 0: 4 */
	int timeout_ms;       /* per validation, all attempts included; 0: 10000 */
	int queue_max;        /* validations waiting for a worker; 0: 4096 */
};

/* One challenge to check. Strings are NUL-terminated copies: the validator keeps no pointer
 * into the caller's memory after submit returns. */
struct acme_validation {
	enum acme_challenge_type type;
	char identifier[256]; /* DNS name (for dns-01 the base name of a wildcard) or an
	                         IP literal (http-01 and tls-alpn-01 only, RFC 8738) */
	int identifier_is_ip;
	char token[128];             /* the challenge token, base64url */
	char key_authorization[256]; /* token "." base64url(SHA-256 JWK thumbprint), RFC 8555 8.1 */
};

/* The outcome. On failure error_type is an RFC 8555 error type without its
 * "urn:ietf:params:acme:error:" prefix ("connection", "dns", "incorrectResponse", "tls",
 * "unauthorized", "rejectedIdentifier") and detail is one sentence for the client. */
struct acme_validation_result {
	int ok;
	char error_type[32];
	char detail[256];
};

typedef void (*acme_validation_done)(void *arg, const struct acme_validation_result *result);

struct acme_validator;

/* Start the worker pool. NULL with err on failure. */
struct acme_validator *acme_validator_start(const struct acme_validator_options *opts,
                                            struct ac_err *err);

/* Queue one validation; done(arg, result) is called once, on a worker thread. -1 with err
 * (AC_ERR_UNAVAILABLE) when the queue is full or the pool is stopping; done is then never
 * called. */
int acme_validator_submit(struct acme_validator *v, const struct acme_validation *job,
                          acme_validation_done done, void *arg, struct ac_err *err);

/* Check one challenge on the calling thread (tests and tools). */
void acme_validate_now(const struct acme_validator *v, const struct acme_validation *job,
                       struct acme_validation_result *out);

/* Stop taking work, answer every queued job with a "connection" failure ("the CA is shutting
 * down"), wait for the running ones and free the pool. NULL is a no-op. */
void acme_validator_stop(struct acme_validator *v);

#endif
