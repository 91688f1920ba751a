/*
 * api_internal.h - what the HTTP API's files share: the daemon-side state, a request and
 * its answer, the caller, and the helpers every handler uses. Only enrollment/api*.c
 * include it; the public contract is api.h.
 *
 *   api.c         the engine: route table, MHD callbacks, bodies, limits, problem documents
 *   api_status.c  /healthz, /metrics, /v1/crl
 *   api_bundle.c  /v1/bundle: the trust bundle, its reload and long-poll
 *   api_enroll.c  /v1/enroll, /v1/renew
 *   api_admin.c   /v1/tokens, /v1/revoke
 *   api_acme.c    /acme/...: the ACME server's HTTP and JWS side (api_acme_order.c: orders)
 *   api_audit.c   /v1/certificates, /v1/audit/sth, /v1/audit/proof, /v1/audit/consistency,
 * /v1/audit/export
 *   api_ocsp.c    /v1/ocsp (POST, and GET /v1/ocsp/<base64>)
 *   api_revocations.c  /v1/revocations, and the watcher that applies revocations (OCSP cache)
 */
#ifndef AGENTCA_ENROLLMENT_API_INTERNAL_H
#define AGENTCA_ENROLLMENT_API_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <microhttpd.h>
#include <openssl/evp.h>

#include "enrollment/api.h"
#include "enrollment/metrics.h"
#include "enrollment/ratelimit.h"

struct api_bundle;
struct api_exports;
struct api_revocations;
struct ocsp_responder;
struct acme_server;

struct api {
	struct issuer *issuer;
	struct token_verifier *bootstrap;
	struct token_verifier *admin;
	struct token_signer *minter;
	/* replaced by api_set_role_ids on a reload; read with an atomic load */
	const struct cfg_strlist *_Atomic admin_ids, *_Atomic auditor_ids;
	int max_depth;
	int64_t
	    renew_grace; /* seconds; a peer expired_in_grace may renew within it, nothing else */
	struct ratelimit *per_address, *per_identity;
	struct front *front;
	struct MHD_Daemon *mhd;
	struct metrics *metrics;
	struct api_bundle *bundle;   /* api_bundle.c */
	EVP_PKEY *audit_key;         /* signs tree heads */
	struct api_exports *exports; /* api_audit.c: streaming exports in flight */
	/* The CRL, rebuilt when the log has grown or it is half way to its nextUpdate. */
	pthread_mutex_t crl_lock;
	unsigned char *crl_der;
	size_t crl_len;
	uint64_t crl_log_size;
	int64_t crl_built;
	struct ocsp_responder *ocsp;         /* ca/ocsp.c: signs and caches OCSP answers */
	struct api_revocations *revocations; /* api_revocations.c: the feed and its watcher */
	/* Gauges the daemon publishes (the scheduler's duties), appended to /metrics. */
	pthread_mutex_t daemon_metrics_lock;
	char *daemon_metrics;
	struct acme_server *acme; /* api_acme.c; NULL when ACME is off */
	/* more Prometheus text for /metrics (the integrated proxy); see api_set_metrics_source */
	_Atomic(api_metrics_fn) metrics_source;
	void *_Atomic metrics_source_arg;
};

/* What a handler answers. body is heap (free()) or NULL. */
struct api_response {
	int status;
	const char *content_type;
	char *body;
	size_t len;
	char etag[68];  /* ETag header, or "" */
	int has_stream; /* the body is read from stream_fd (a pipe) until EOF instead */
	int stream_fd;
	int retry_after; /* seconds, for 429 and 503; 0: no header */
	/* More headers (ACME: Replay-Nonce, Location, Link); names are string literals. */
	struct {
		const char *name;
		char value[640];
	} extra[4];
	int extra_count;
};

/* The state of one request across MHD's calls. */
struct api_request {
	int route;      /* index in routes[], or -1 */
	double started; /* monotonic seconds */
	char *body;
	size_t len;
	int too_large;
	int limited;     /* Retry-After seconds when the client address is over its rate */
	int waited;      /* a long-poll that has already waited once */
	char id[17];     /* request id: in the log entries it causes and the X-Request-Id header */
	int suspended;   /* set by a handler that suspended the connection: no answer yet */
	char *path_rest; /* a prefix route: the URL after the prefix (heap), else NULL */
	char *url;       /* the request's path (prefix routes need it) */
	char method[8];  /* GET, HEAD, POST */
};

/* A request header (MHD_HEADER_KIND) or query argument (MHD_GET_ARGUMENT_KIND): from
 * libmicrohttpd, or, when conn is NULL, from the in-process request (api_call) this thread
 * is running. Handlers read every header and argument through this. */
const char *api_lookup(struct MHD_Connection *conn, enum MHD_ValueKind kind, const char *name);

/* Add a header to resp (ignored when there is no room). */
void api_add_header(struct api_response *resp, const char *name, const char *value);

typedef void (*api_handler)(struct api *api, struct MHD_Connection *conn, struct api_request *req,
                            struct api_response *resp);

/* Who is calling, as far as this request shows. */
enum caller_role { CALLER_NONE = 0, CALLER_AGENT, CALLER_AUDITOR, CALLER_ADMIN };

struct caller {
	enum caller_role role;
	char actor[2100];     /* for the log: "admin:<who>", "auditor:<who>", "cert:<serial>" */
	struct tls_peer peer; /* peer.present when a client certificate verified */
};

/* Monotonic seconds, for latencies and rate limits. */
double api_now(void);

/* Set resp to an RFC 7807 problem document ("urn:agentca:problem:<reason>"). */
void api_problem(struct api_response *resp, int status, const char *reason, const char *detail);

/* Set resp to a JSON document (takes the reference). */
void api_json_response(struct api_response *resp, int status, json_t *doc);

/* Set resp to the issued certificate (api_enroll.c): {certificate, chain, serial,
 * not_before, not_after, renew_after}, encoded by hand as jansson's JSON_COMPACT would. */
void api_issue_result_response(struct api_response *resp, int status,
                               const struct issue_result *res);

/*
 * The enrollment body's fast path (api_enroll.c): when body is exactly {"token":"T","csr":"C"}
 * (either order, JSON whitespace between tokens, printable ASCII strings, no escapes in T and
 * only \n \r \t \/ in C), 1 with out set to what jansson would have parsed (both strings
 * NUL-terminated in out->block, which the caller frees); else 0 with out->block NULL, and the
 * caller parses the body with jansson. fuzz_enroll_body checks the two agree.
 */
struct enroll_body {
	char *block;
	const char *token;
	size_t token_len;
	char *csr;
	size_t csr_len;
};
int enroll_body_fast(const char *body, size_t len, struct enroll_body *out);

/* The body as a JSON object, or NULL with a 400 problem in resp. */
json_t *api_parse_body(struct api_request *req, struct api_response *resp);

/* A string member, or NULL with a 400 problem naming it (unless absent and not required). */
const char *api_body_string(json_t *doc, const char *key, int required, size_t *len,
                            struct api_response *resp);

/* Count a call against an identity; 1 with a 429 in resp when over its rate. */
int api_identity_limited(struct api *api, const char *key, struct api_response *resp);

/* Who is calling; -1 with resp set when the request must stop (a bad bearer token). */
int api_resolve_caller(struct api *api, struct MHD_Connection *conn, struct caller *c,
                       struct api_response *resp);

/* The bundle (api_bundle.c): built from DIR/root.pem and DIR/trust.pem at start and on
 * api_reload_bundle(); a long-polling GET waits on a suspended connection (no thread held)
 * until the bundle changes or its wait ends. */
struct api_bundle *api_bundle_new(const char *dir, struct ac_err *err);
void api_bundle_free(struct api_bundle *b);
/* Stop waiting: every suspended request is resumed (before MHD_stop_daemon). */
void api_bundle_release(struct api_bundle *b);

/* The revocation watcher (api_revocations.c): polls the log's head, forgets newly revoked
 * serials in the OCSP cache and answers the feed's long-polls. poke: look now (after an
 * in-process revocation). release: resume every waiter and stop the thread. */
struct api_revocations *api_revocations_new(struct store *st, struct ocsp_responder *ocsp,
                                            struct ac_err *err);
void api_revocations_poke(struct api_revocations *rv);
void api_revocations_release(struct api_revocations *rv);
void api_revocations_free(struct api_revocations *rv);

/* Streaming exports (api_audit.c): api_exports_wait() returns once every export thread has
 * ended (after libmicrohttpd has closed their pipes). */
struct api_exports *api_exports_new(void);
void api_exports_wait_and_free(struct api_exports *x);

/* The handlers, one per route (see the route table in api.c). */
void handle_healthz(struct api *api, struct MHD_Connection *conn, struct api_request *req,
                    struct api_response *resp);
void handle_metrics(struct api *api, struct MHD_Connection *conn, struct api_request *req,
                    struct api_response *resp);
void handle_crl(struct api *api, struct MHD_Connection *conn, struct api_request *req,
                struct api_response *resp);
void handle_bundle(struct api *api, struct MHD_Connection *conn, struct api_request *req,
                   struct api_response *resp);
void handle_bundle_ack(struct api *api, struct MHD_Connection *conn, struct api_request *req,
                       struct api_response *resp);
void handle_enroll(struct api *api, struct MHD_Connection *conn, struct api_request *req,
                   struct api_response *resp);
void handle_renew(struct api *api, struct MHD_Connection *conn, struct api_request *req,
                  struct api_response *resp);
void handle_tokens(struct api *api, struct MHD_Connection *conn, struct api_request *req,
                   struct api_response *resp);
void handle_revoke(struct api *api, struct MHD_Connection *conn, struct api_request *req,
                   struct api_response *resp);
void handle_certificates(struct api *api, struct MHD_Connection *conn, struct api_request *req,
                         struct api_response *resp);
void handle_audit_sth(struct api *api, struct MHD_Connection *conn, struct api_request *req,
                      struct api_response *resp);
void handle_audit_proof(struct api *api, struct MHD_Connection *conn, struct api_request *req,
                        struct api_response *resp);
void handle_audit_consistency(struct api *api, struct MHD_Connection *conn, struct api_request *req,
                              struct api_response *resp);
void handle_ocsp_post(struct api *api, struct MHD_Connection *conn, struct api_request *req,
                      struct api_response *resp);
void handle_ocsp_get(struct api *api, struct MHD_Connection *conn, struct api_request *req,
                     struct api_response *resp);
void handle_revocations(struct api *api, struct MHD_Connection *conn, struct api_request *req,
                        struct api_response *resp);
void handle_acme(struct api *api, struct MHD_Connection *conn, struct api_request *req,
                 struct api_response *resp);
void handle_audit_export(struct api *api, struct MHD_Connection *conn, struct api_request *req,
                         struct api_response *resp);

#endif
