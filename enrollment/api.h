/*
 * api.h - the HTTP API behind the HTTPS front, on libmicrohttpd.
 *
 * Routes are a table (api.c): method, path, who may call it, handler. Every error is an
 * RFC 7807 problem document (application/problem+json) whose "type" ends with the error's
 * stable reason ("urn:agentca:problem:token_expired"). Bodies over API_MAX_BODY get 413
 * before they are read. Every request is counted by route and status for /metrics.
 *
 *   GET  /healthz        liveness: {"status":"ok"}
 *   GET  /metrics        Prometheus text format
 *   GET  /v1/bundle      the trust bundle as PEM (root and added roots); ETag; with
 *                        If-None-Match and ?wait=30s it answers when the bundle changes
 *   POST /v1/bundle/ack  mTLS: {sequence}, the bundle's spiffe_sequence a gateway holds
 *   POST /v1/enroll      {token, csr} -> {certificate, chain, not_after, renew_after, serial}
 *   POST /v1/renew       mTLS with a current certificate (or one expired within renew_grace);
 *                        {csr}
 *   POST /v1/tokens      an admin (bearer token or admin certificate), or a parent agent over
 *                        mTLS for a child under its own path: {subject, ttl?, dns?}
 *                        -> {token, jti, expires}
 *   POST /v1/revoke      admin: {serial, reason?} -> {serial, children_revoked}
 *   GET  /v1/crl         the intermediate's CRL (DER)
 *   POST /v1/ocsp        OCSP (RFC 6960); also GET /v1/ocsp/<base64 request>
 *   GET  /v1/revocations ?since=N&wait=30s: the revocation feed (log sequence numbers)
 *   GET  /v1/certificates  auditor or admin: the certificates issued, a page at a time
 *   GET  /v1/audit/sth   auditor or admin: the signed tree head of the issuance log
 *   GET  /v1/audit/proof ?serial=HEX or ?index=N [&size=M]: an inclusion proof
 *   GET  /v1/audit/consistency ?from=M [&to=N]: a consistency proof between tree sizes
 *   GET  /v1/audit/export ?format=jsonl|csv&since&until&kind&subject&proofs=1: streamed
 *   GET|HEAD|POST /acme/...  the ACME server (acme.h), when api_options.acme is set
 *
 * Rate limits: every request but /healthz counts against its client address, and every
 * enrollment, renewal and token minting against the identity it is for (token subject,
 * certificate serial, admin); over the limit the answer is 429 with Retry-After. A rate of
 * 0 turns a limit off.
 *
 * Who calls: an "Authorization: Bearer" admin token (role admin or auditor), or a client
 * certificate we issued; its SPIFFE ID is an admin or auditor when the configuration lists
 * it, an agent otherwise. Auditors read; they never change anything.
 */
#ifndef AGENTCA_ENROLLMENT_API_H
#define AGENTCA_ENROLLMENT_API_H

#include <stdint.h>

#include <microhttpd.h>

#include "ca/issue.h"
#include "common/error.h"
#include "enrollment/acme.h"
#include "enrollment/front.h"
#include "enrollment/token.h"

#define API_MAX_BODY (64 * 1024)
#define API_THREADS_PER_CORE 8 /* default HTTP worker threads per core; see api_start */

struct api;

struct api_options {
	struct issuer *issuer;                        /* borrowed */
	struct token_verifier *bootstrap;             /* borrowed */
	struct token_verifier *admin;                 /* borrowed: admin and auditor tokens */
	struct token_signer *minter;                  /* borrowed: signs bootstrap tokens */
	EVP_PKEY *audit_key;                          /* borrowed: signs tree heads */
	const struct cfg_strlist *admin_ids;          /* SPIFFE IDs whose certificates are admins */
	const struct cfg_strlist *auditor_ids;        /* ... auditors */
	int max_depth;                                /* nesting limit for parent-minted tokens */
	double rate_per_address, burst_per_address;   /* requests/s from one client address */
	double rate_per_identity, burst_per_identity; /* issuance-side calls per identity */
	int threads;                                  /* MHD worker threads; 0: 8 per core */
	int64_t renew_grace; /* seconds after expiry that /v1/renew still accepts; 0: off */
	const struct acme_options *acme; /* the ACME server under /acme/; NULL: off */
};

/* Start the MHD daemon (no listening socket: the front adds connections). */
struct api *api_start(const struct api_options *opts, struct ac_err *err);

/* The MHD daemon, for front_start(). */
struct MHD_Daemon *api_mhd(struct api *api);

/* Tell the API which front serves it (to find a connection's verified peer). */
void api_set_front(struct api *api, struct front *front);

/* Rebuild the trust bundle from DIR/root.pem and DIR/trust.pem (SIGHUP); long-polling
 * clients are answered at once when it changed. */
int api_reload_bundle(struct api *api, struct ac_err *err);

/* New lists of the SPIFFE IDs whose certificates act as admins and auditors (a reloaded
 * configuration); requests that start after this see them. The caller keeps both lists
 * alive until api_free. */
void api_set_role_ids(struct api *api, const struct cfg_strlist *admin_ids,
                      const struct cfg_strlist *auditor_ids);

/* 1 when the bundle now served carries the certificate with this SHA-256 fingerprint (hex),
 * else 0; *sequence gets the bundle's SPIFFE sequence number either way. */
int api_bundle_carries(struct api *api, const char *fingerprint, int64_t *sequence);

/* Replace the Prometheus text the daemon adds to /metrics (the scheduler's duties, the
 * intermediates' states); copied. */
int api_set_daemon_metrics(struct api *api, const char *text, struct ac_err *err);
/* Another module's Prometheus text appended to /metrics (the integrated proxy): fn fills a
 * heap buffer (free()) and returns 0. fn NULL removes it. fn and arg must stay valid until
 * api_stop(). */
typedef int (*api_metrics_fn)(void *arg, char **text, size_t *len);
void api_set_metrics_source(struct api *api, api_metrics_fn fn, void *arg);

/* First step of a shutdown: answer the long-polls now, so that draining does not wait for
 * them. */
void api_begin_shutdown(struct api *api);

void api_stop(struct api *api);

/*
 * In-process requests (unit tests and the fuzz_api harness): one request through the same
 * route table, body limit, rate limits, handlers and problem documents as a request that
 * came over TLS, without sockets. There is no client address (the address limit counts
 * them all under "in-process") and no client certificate; a long-poll is answered at once
 * instead of waiting; a streamed body (audit export) is read to its end.
 */
#define API_CALL_MAX_HEADERS 8

struct api_call_header {
	const char *name, *value;
};

struct api_call_request {
	const char *method;                                   /* GET, HEAD, POST */
	const char *url;                                      /* path, with an optional "?query" */
	struct api_call_header headers[API_CALL_MAX_HEADERS]; /* Host, Content-Type, ... */
	int header_count;
	const char *body; /* may hold NUL bytes; NULL with len 0: no body */
	size_t len;
};

struct api_call_response {
	int status;
	char content_type[64];
	char *body; /* heap, NUL-terminated (len excludes it); api_call_response_free() */
	size_t len;
	struct {
		char name[32];
		char value[640];
	} headers[8]; /* ETag, Retry-After, Replay-Nonce, Location, Link, X-Request-Id */
	int header_count;
};

/* Send one request; -1 with err only when it could not be run (out of memory). */
int api_call(struct api *api, const struct api_call_request *in, struct api_call_response *out,
             struct ac_err *err);

/* A header of the answer (case-insensitive name), or NULL. */
const char *api_call_response_header(const struct api_call_response *r, const char *name);

void api_call_response_free(struct api_call_response *r);

#endif
