/*
 * api.c - the HTTP API: a route table, request bodies, problem documents, and the handlers
 * for health, metrics, the bundle, enrollment and renewal. See api.h.
 *
 * libmicrohttpd calls the access handler several times per request: first with the headers
 * (we pick the route and refuse an oversized Content-Length at once), then with each piece
 * of the body (we keep at most API_MAX_BODY bytes), then once more with no data (we run the
 * handler and queue the response). Handlers fill a struct api_response; they never touch
 * MHD directly, so each reads as the policy of its route.
 */
#include "enrollment/api.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "ca/policy.h"
#include "ca/x509_build.h"
#include "common/config.h"
#include "common/hex.h"
#include "common/log.h"
#include "common/timefmt.h"
#include "enrollment/metrics.h"
#include "enrollment/ratelimit.h"

#include <arpa/inet.h>
#include <netinet/in.h>

struct api {
	struct issuer *issuer;
	struct token_verifier *bootstrap;
	struct token_verifier *admin;
	struct token_signer *minter;
	const struct cfg_strlist *admin_ids, *auditor_ids;
	int max_depth;
	struct ratelimit *per_address, *per_identity;
	struct front *front;
	struct MHD_Daemon *mhd;
	struct metrics *metrics;
	char *bundle_pem; /* root + added roots, built once */
	size_t bundle_len;
	char bundle_etag[68];
};

/* What a handler answers. body is heap (free()) or NULL. */
struct api_response {
	int status;
	const char *content_type;
	char *body;
	size_t len;
	const char *etag; /* borrowed, or NULL */
	int retry_after;  /* seconds, for 429 and 503; 0: no header */
};

/* The state of one request across MHD's calls. */
struct api_request {
	int route;      /* index in routes[], or -1 */
	double started; /* monotonic seconds */
	char *body;
	size_t len;
	int too_large;
	int limited; /* Retry-After seconds when the client address is over its rate */
};

typedef void (*api_handler)(struct api *api, struct MHD_Connection *conn,
                            const struct api_request *req, struct api_response *resp);

static void handle_healthz(struct api *, struct MHD_Connection *, const struct api_request *,
                           struct api_response *);
static void handle_metrics(struct api *, struct MHD_Connection *, const struct api_request *,
                           struct api_response *);
static void handle_bundle(struct api *, struct MHD_Connection *, const struct api_request *,
                          struct api_response *);
static void handle_enroll(struct api *, struct MHD_Connection *, const struct api_request *,
                          struct api_response *);
static void handle_renew(struct api *, struct MHD_Connection *, const struct api_request *,
                         struct api_response *);
static void handle_tokens(struct api *, struct MHD_Connection *, const struct api_request *,
                          struct api_response *);
static void handle_revoke(struct api *, struct MHD_Connection *, const struct api_request *,
                          struct api_response *);

static const struct route {
	const char *method;
	const char *path;
	const char *name; /* metrics label */
	api_handler handler;
} routes[] = {
    {"GET", "/healthz", "healthz", handle_healthz},
    {"GET", "/metrics", "metrics", handle_metrics},
    {"GET", "/v1/bundle", "bundle", handle_bundle},
    {"POST", "/v1/enroll", "enroll", handle_enroll},
    {"POST", "/v1/renew", "renew", handle_renew},
    {"POST", "/v1/tokens", "tokens", handle_tokens},
    {"POST", "/v1/revoke", "revoke", handle_revoke},
};
#define ROUTE_COUNT ((int)(sizeof(routes) / sizeof(routes[0])))
/* libmicrohttpd's memory per connection (its default): headers and the read buffer. */
#define API_MHD_MEMORY (32 * 1024)

/* Requests that match no route are counted under this extra label. */
#define ROUTE_OTHER ROUTE_COUNT

static double
monotonic_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Set resp to an RFC 7807 problem document. */
static void
problem(struct api_response *resp, int status, const char *reason, const char *detail)
{
	json_t *doc;
	char type[128];

	snprintf(type, sizeof(type), "urn:agentca:problem:%s", reason != NULL ? reason : "error");
	doc = json_pack("{s:s, s:s, s:i, s:s}", "type", type, "title",
	                reason != NULL ? reason : "error", "status", status, "detail",
	                detail != NULL ? detail : "");
	free(resp->body);
	resp->status = status;
	resp->content_type = "application/problem+json";
	resp->body = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
	resp->len = resp->body != NULL ? strlen(resp->body) : 0;
	json_decref(doc);
}

/* Set resp to a JSON document (takes the reference). */
static void
json_response(struct api_response *resp, int status, json_t *doc)
{
	resp->status = status;
	resp->content_type = "application/json";
	resp->body = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
	resp->len = resp->body != NULL ? strlen(resp->body) : 0;
	if (resp->body == NULL)
		problem(resp, 500, "internal_error", "cannot encode the response");
	json_decref(doc);
}

/* Parse the body as a JSON object; on failure set a 400 problem and return NULL. */
static json_t *
parse_body(const struct api_request *req, struct api_response *resp)
{
	json_error_t jerr;
	json_t *doc;
	char detail[256];

	if (req->len == 0) {
		problem(resp, 400, "malformed_request", "the request body is empty");
		return NULL;
	}
	doc = json_loadb(req->body, req->len, JSON_REJECT_DUPLICATES, &jerr);
	if (doc == NULL || !json_is_object(doc)) {
		snprintf(detail, sizeof(detail), "the request body is not a JSON object%s%s",
		         doc == NULL ? ": " : "", doc == NULL ? jerr.text : "");
		json_decref(doc);
		problem(resp, 400, "malformed_request", detail);
		return NULL;
	}
	return doc;
}

/* A string member, or NULL with a 400 problem naming it. */
static const char *
body_string(json_t *doc, const char *key, int required, size_t *len, struct api_response *resp)
{
	json_t *v = json_object_get(doc, key);
	char detail[128];

	if (v == NULL && !required)
		return NULL;
	if (!json_is_string(v)) {
		snprintf(detail, sizeof(detail), "\"%s\" must be a string", key);
		problem(resp, 400, "malformed_request", detail);
		return NULL;
	}
	*len = json_string_length(v);
	return json_string_value(v);
}

/* The issued certificate as the API returns it. */
static json_t *
issue_result_json(const struct issue_result *res)
{
	char nb[32], na[32], ra[32];

	time_format_rfc3339(res->not_before, nb, sizeof(nb));
	time_format_rfc3339(res->not_after, na, sizeof(na));
	time_format_rfc3339(res->renew_after, ra, sizeof(ra));
	return json_pack("{s:s%, s:s%, s:s, s:s, s:s, s:s}", "certificate", res->cert_pem,
	                 res->cert_pem_len, "chain", (const char *)res->chain_pem,
	                 res->chain_pem_len, "serial", res->serial, "not_before", nb, "not_after",
	                 na, "renew_after", ra);
}

/* Status for a refused issuance: bad tokens are 401, a used token 409, policy 403. */
static int
refusal_status(const struct ac_err *err)
{
	if (err->reason != NULL && strncmp(err->reason, "token_", 6) == 0 &&
	    strcmp(err->reason, "token_used") != 0)
		return 401;
	return ac_errcode_http_status(err->code);
}

/* Count one call against key (an identity); 1 with a 429 in resp when over the limit. */
static int
identity_limited(struct api *api, const char *key, struct api_response *resp)
{
	int retry = 0;

	if (ratelimit_take(api->per_identity, key, monotonic_seconds(), &retry))
		return 0;
	metrics_denied(api->metrics, "rate_limited");
	problem(resp, 429, "rate_limited", "too many requests for this identity; retry later");
	resp->retry_after = retry;
	return 1;
}

static void
handle_healthz(struct api *api, struct MHD_Connection *conn, const struct api_request *req,
               struct api_response *resp)
{
	(void)api;
	(void)conn;
	(void)req;
	json_response(resp, 200, json_pack("{s:s}", "status", "ok"));
}

static void
handle_metrics(struct api *api, struct MHD_Connection *conn, const struct api_request *req,
               struct api_response *resp)
{
	const struct ca_authority *ca = api->issuer->authority;
	struct front_stats fs;
	struct store_stats ss;
	char extra[4096];
	size_t used;
	int64_t now = time_now();

	(void)conn;
	(void)req;
	memset(&fs, 0, sizeof(fs));
	if (api->front != NULL)
		front_stats(api->front, &fs);
	store_stats(api->issuer->store, &ss);
	snprintf(extra, sizeof(extra),
	         "# HELP agentca_log_commit_seconds Durable issuance-log transactions (group "
	         "commit).\n"
	         "# TYPE agentca_log_commit_seconds summary\n"
	         "agentca_log_commit_seconds_sum %.6f\n"
	         "agentca_log_commit_seconds_count %" PRIu64 "\n"
	         "# TYPE agentca_log_commit_seconds_max gauge\n"
	         "agentca_log_commit_seconds_max %.6f\n"
	         "# TYPE agentca_log_commit_units_total counter\n"
	         "agentca_log_commit_units_total %" PRIu64 "\n"
	         "# TYPE agentca_log_commit_failures_total counter\n"
	         "agentca_log_commit_failures_total %" PRIu64 "\n",
	         ss.commit_seconds, ss.transactions, ss.commit_seconds_max, ss.units,
	         ss.transactions_failed);
	used = strlen(extra);
	snprintf(extra + used, sizeof(extra) - used,
	         "# HELP agentca_ca_certificate_expiry_seconds Seconds until a CA certificate "
	         "expires.\n"
	         "# TYPE agentca_ca_certificate_expiry_seconds gauge\n"
	         "agentca_ca_certificate_expiry_seconds{cert=\"intermediate\"} %" PRId64 "\n"
	         "agentca_ca_certificate_expiry_seconds{cert=\"root\"} %" PRId64 "\n"
	         "# TYPE agentca_tls_connections_accepted_total counter\n"
	         "agentca_tls_connections_accepted_total %" PRIu64 "\n"
	         "# TYPE agentca_tls_handshakes_total counter\n"
	         "agentca_tls_handshakes_total{result=\"ok\"} %" PRIu64 "\n"
	         "agentca_tls_handshakes_total{result=\"failed\"} %" PRIu64 "\n"
	         "agentca_tls_handshakes_total{result=\"plaintext_refused\"} %" PRIu64 "\n"
	         "# TYPE agentca_tls_connections_active gauge\n"
	         "agentca_tls_connections_active %" PRIu64 "\n",
	         ca->intermediate_not_after - now,
	         asn1_time_to_unix(X509_get0_notAfter(ca->root)) - now, fs.accepted,
	         fs.handshakes_ok, fs.handshakes_failed, fs.plaintext_refused, fs.active);
	resp->status = 200;
	resp->content_type = "text/plain; version=0.0.4";
	if (metrics_render(api->metrics, extra, &resp->body, &resp->len) != 0)
		problem(resp, 500, "internal_error", "cannot render metrics");
}

static void
handle_bundle(struct api *api, struct MHD_Connection *conn, const struct api_request *req,
              struct api_response *resp)
{
	const char *inm = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "If-None-Match");

	(void)req;
	resp->etag = api->bundle_etag;
	if (inm != NULL && strcmp(inm, api->bundle_etag) == 0) {
		resp->status = 304;
		return;
	}
	resp->status = 200;
	resp->content_type = "application/pem-certificate-chain";
	resp->body = malloc(api->bundle_len);
	if (resp->body == NULL) {
		problem(resp, 500, "internal_error", "out of memory");
		return;
	}
	memcpy(resp->body, api->bundle_pem, api->bundle_len);
	resp->len = api->bundle_len;
}

/*
 * POST /v1/enroll {token, csr}: the token is checked (signature, audience, time, type),
 * then the engine issues for the token's subject with the token's DNS names as the most the
 * CSR may ask for, marking the token's jti used in the same durable commit.
 */
static void
handle_enroll(struct api *api, struct MHD_Connection *conn, const struct api_request *req,
              struct api_response *resp)
{
	struct token_grant grant;
	struct issue_request ir;
	struct issue_result res;
	struct ac_err err;
	const char *token, *csr;
	size_t token_len = 0, csr_len = 0;
	char actor[64];
	json_t *doc;

	(void)conn;
	memset(&grant, 0, sizeof(grant));
	memset(&res, 0, sizeof(res));
	ac_err_clear(&err);
	doc = parse_body(req, resp);
	if (doc == NULL)
		return;
	token = body_string(doc, "token", 1, &token_len, resp);
	csr = token != NULL ? body_string(doc, "csr", 1, &csr_len, resp) : NULL;
	if (token == NULL || csr == NULL)
		goto out;

	if (token_verify(api->bootstrap, token, token_len, time_now(), &grant, &err) != 0) {
		struct issue_request denied;

		memset(&denied, 0, sizeof(denied));
		denied.actor = "token:unverified";
		issue_record_denial(api->issuer, &denied, &err);
		metrics_denied(api->metrics, err.reason);
		problem(resp, refusal_status(&err), err.reason, err.msg);
		goto out;
	}
	if (identity_limited(api, grant.subject, resp))
		goto out;
	snprintf(actor, sizeof(actor), "token:%s", grant.jti);
	memset(&ir, 0, sizeof(ir));
	ir.csr = (const unsigned char *)csr;
	ir.csr_len = csr_len;
	ir.subject = grant.subject;
	ir.allowed_dns = &grant.dns;
	ir.kind = "issued";
	ir.actor = actor;
	ir.parent = grant.parent[0] != '\0' ? grant.parent : NULL;
	ir.token_jti = grant.jti;
	ir.token_expires = grant.expires;
	ir.depth = grant.depth;
	ir.not_after_max = grant.cert_not_after_max;
	if (ca_issue(api->issuer, &ir, &res, &err) != 0) {
		/* Policy refusals are already in the log; a replayed token is recorded here. */
		if (err.code == AC_ERR_CONFLICT)
			issue_record_denial(api->issuer, &ir, &err);
		metrics_denied(api->metrics, err.reason);
		problem(resp, refusal_status(&err), err.reason, err.msg);
		goto out;
	}
	metrics_issued(api->metrics, "issued");
	log_info("enrolled", "%s enrolled with token %s: serial %s", grant.subject, grant.jti,
	         res.serial);
	json_response(resp, 201, issue_result_json(&res));
out:
	issue_result_free(&res);
	token_grant_free(&grant);
	json_decref(doc);
}

/* The DNS SANs of a DER certificate, into list. */
static int
cert_dns_names(const struct cert_row *row, struct cfg_strlist *list, struct ac_err *err)
{
	const unsigned char *p = row->der;
	GENERAL_NAMES *names = NULL;
	X509 *cert;
	int rc = -1;

	cert = d2i_X509(NULL, &p, (long)row->der_len);
	if (cert == NULL)
		return ac_err_ssl(err, AC_ERR_STORE, "store_corrupt",
		                  "stored certificate %s does not decode", row->serial);
	names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	for (int i = 0; names != NULL && i < sk_GENERAL_NAME_num(names); i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);

		if (gn->type == GEN_DNS &&
		    cfg_strlist_add(list, (const char *)ASN1_STRING_get0_data(gn->d.dNSName),
		                    err) != 0)
			goto out;
	}
	rc = 0;
out:
	GENERAL_NAMES_free(names);
	X509_free(cert);
	return rc;
}

/*
 * POST /v1/renew {csr} over mTLS: the client certificate must have verified against our
 * chain, be one we issued, and not be revoked. The new certificate is for the same identity,
 * with at most the same DNS names, and keeps the parent.
 */
static void
handle_renew(struct api *api, struct MHD_Connection *conn, const struct api_request *req,
             struct api_response *resp)
{
	struct cfg_strlist dns = {NULL, 0};
	struct issue_request ir;
	struct issue_result res;
	struct cert_row row;
	struct tls_peer peer;
	struct ac_err err;
	const char *csr;
	size_t csr_len = 0;
	char actor[64];
	json_t *doc = NULL;
	int have_row = 0;

	memset(&res, 0, sizeof(res));
	memset(&row, 0, sizeof(row));
	memset(&ir, 0, sizeof(ir));
	ac_err_clear(&err);
	if (api->front == NULL || front_peer_of(api->front, conn, &peer) != 0 || !peer.present) {
		problem(resp, 401, "client_certificate_required",
		        "renewal needs the current certificate as the TLS client certificate");
		return;
	}
	if (identity_limited(api, peer.spiffe_id, resp))
		return;
	snprintf(actor, sizeof(actor), "cert:%s", peer.serial);
	ir.actor = actor;
	ir.subject = peer.spiffe_id;
	ir.kind = "renewed";
	if (store_cert_get(api->issuer->store, peer.serial, &row, &err) != 0) {
		if (err.code == AC_ERR_NOTFOUND) {
			ac_err_clear(&err);
			ac_err_set(&err, AC_ERR_POLICY, "unknown_certificate",
			           "certificate %s was not issued by this CA", peer.serial);
		}
		goto refuse;
	}
	have_row = 1;
	if (row.revoked_at != 0) {
		ac_err_set(&err, AC_ERR_POLICY, "certificate_revoked",
		           "certificate %s is revoked and cannot renew", peer.serial);
		goto refuse;
	}
	doc = parse_body(req, resp);
	if (doc == NULL)
		goto out;
	csr = body_string(doc, "csr", 1, &csr_len, resp);
	if (csr == NULL)
		goto out;
	if (cert_dns_names(&row, &dns, &err) != 0)
		goto refuse;
	ir.csr = (const unsigned char *)csr;
	ir.csr_len = csr_len;
	ir.allowed_dns = &dns;
	ir.parent = row.parent;
	ir.depth = row.depth;
	if (ca_issue(api->issuer, &ir, &res, &err) != 0) {
		metrics_denied(api->metrics, err.reason);
		problem(resp, refusal_status(&err), err.reason, err.msg);
		goto out;
	}
	metrics_issued(api->metrics, "renewed");
	log_info("renewed", "%s renewed: serial %s replaces %s", peer.spiffe_id, res.serial,
	         peer.serial);
	json_response(resp, 200, issue_result_json(&res));
	goto out;
refuse:
	issue_record_denial(api->issuer, &ir, &err);
	metrics_denied(api->metrics, err.reason);
	problem(resp, refusal_status(&err), err.reason, err.msg);
out:
	cfg_strlist_free(&dns);
	if (have_row)
		store_cert_row_free(&row);
	issue_result_free(&res);
	json_decref(doc);
}

/* Who is calling, as far as this request shows. */
enum caller_role { CALLER_NONE = 0, CALLER_AGENT, CALLER_AUDITOR, CALLER_ADMIN };

struct caller {
	enum caller_role role;
	char actor[2100];     /* for the log: "admin:<who>", "auditor:<who>", "cert:<serial>" */
	struct tls_peer peer; /* peer.present when a client certificate verified */
};

static int
listed(const struct cfg_strlist *list, const char *id)
{
	for (size_t i = 0; list != NULL && i < list->count; i++)
		if (strcmp(list->items[i], id) == 0)
			return 1;
	return 0;
}

/*
 * Work out the caller: a bearer admin token wins (and must verify: a bad one is a 401, not
 * an anonymous request); else a verified client certificate, whose SPIFFE ID may be listed
 * as an admin or auditor; else nobody. Returns -1 with resp set when the request must stop.
 */
static int
resolve_caller(struct api *api, struct MHD_Connection *conn, struct caller *c,
               struct api_response *resp)
{
	const char *auth =
	    MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);

	memset(c, 0, sizeof(*c));
	if (api->front != NULL)
		front_peer_of(api->front, conn, &c->peer);
	if (auth != NULL) {
		struct token_grant grant;
		struct ac_err err;

		memset(&grant, 0, sizeof(grant));
		ac_err_clear(&err);
		if (strncmp(auth, "Bearer ", 7) != 0) {
			problem(resp, 401, "bad_authorization",
			        "the Authorization header must be \"Bearer <admin token>\"");
			return -1;
		}
		if (api->admin == NULL || token_verify(api->admin, auth + 7, strlen(auth + 7),
		                                       time_now(), &grant, &err) != 0) {
			metrics_denied(api->metrics, err.reason);
			problem(resp, 401, err.reason != NULL ? err.reason : "bad_authorization",
			        err.msg);
			token_grant_free(&grant);
			return -1;
		}
		c->role = strcmp(grant.role, "admin") == 0 ? CALLER_ADMIN : CALLER_AUDITOR;
		snprintf(c->actor, sizeof(c->actor), "%s:%s", grant.role, grant.subject);
		token_grant_free(&grant);
		return 0;
	}
	if (c->peer.present) {
		if (listed(api->admin_ids, c->peer.spiffe_id)) {
			c->role = CALLER_ADMIN;
			snprintf(c->actor, sizeof(c->actor), "admin:%s", c->peer.spiffe_id);
		} else if (listed(api->auditor_ids, c->peer.spiffe_id)) {
			c->role = CALLER_AUDITOR;
			snprintf(c->actor, sizeof(c->actor), "auditor:%s", c->peer.spiffe_id);
		} else {
			c->role = CALLER_AGENT;
			snprintf(c->actor, sizeof(c->actor), "cert:%s", c->peer.serial);
		}
	}
	return 0;
}

/* Record an admin-side event (token_created, revoked) in the issuance log. */
static int
record_event(struct api *api, struct store_write *w, struct ac_err *err)
{
	return store_submit(api->issuer->store, w, err);
}

/* Parse an optional "ttl" member ("10m" or seconds); 0 when absent. */
static int
body_ttl(json_t *doc, int64_t *ttl, struct api_response *resp)
{
	json_t *v = json_object_get(doc, "ttl");

	*ttl = 0;
	if (v == NULL)
		return 0;
	if (json_is_integer(v) && json_integer_value(v) > 0) {
		*ttl = (int64_t)json_integer_value(v);
		return 0;
	}
	if (json_is_string(v) && duration_parse(json_string_value(v), ttl) == 0 && *ttl > 0)
		return 0;
	problem(resp, 400, "malformed_request", "\"ttl\" must be a duration such as \"10m\"");
	return -1;
}

/*
 * POST /v1/tokens {subject, ttl?, dns?}: mint a bootstrap token.
 *
 * An admin may mint for any subject (the engine applies the policy at enrollment). A parent
 * agent, authenticated by a certificate we issued that is not revoked, may mint only for a
 * child under its own path ("<parent>/..."), one level deeper than itself and at most
 * max_depth deep, with a token and a certificate that never outlive its own certificate.
 * Auditors and anonymous callers may not mint.
 */
static void
handle_tokens(struct api *api, struct MHD_Connection *conn, const struct api_request *req,
              struct api_response *resp)
{
	struct token_grant grant;
	struct log_entry entry;
	struct store_write w;
	struct cert_row row;
	struct caller caller;
	struct ac_err err;
	const char *subject;
	size_t subject_len = 0;
	char *jwt = NULL, detail[128];
	int64_t ttl, now = time_now();
	json_t *doc = NULL, *dns;
	int have_row = 0;

	memset(&grant, 0, sizeof(grant));
	memset(&row, 0, sizeof(row));
	ac_err_clear(&err);
	if (resolve_caller(api, conn, &caller, resp) != 0)
		return;
	if (caller.role != CALLER_ADMIN && caller.role != CALLER_AGENT) {
		problem(resp, caller.role == CALLER_NONE ? 401 : 403, "not_allowed",
		        caller.role == CALLER_NONE
		            ? "minting tokens needs an admin token or a client certificate"
		            : "auditors cannot mint tokens");
		return;
	}
	if (identity_limited(api, caller.actor, resp))
		return;
	doc = parse_body(req, resp);
	if (doc == NULL)
		return;
	subject = body_string(doc, "subject", 1, &subject_len, resp);
	if (subject == NULL || body_ttl(doc, &ttl, resp) != 0)
		goto out;
	if (ttl == 0)
		ttl = 600;
	if (subject_len >= sizeof(grant.subject) || memchr(subject, '\0', subject_len) != NULL) {
		problem(resp, 400, "malformed_request", "\"subject\" is not a SPIFFE ID");
		goto out;
	}
	memcpy(grant.subject, subject, subject_len + 1);
	grant.type = TOKEN_BOOTSTRAP;
	dns = json_object_get(doc, "dns");
	if (dns != NULL) {
		size_t i;
		json_t *item;

		if (!json_is_array(dns)) {
			problem(resp, 400, "malformed_request", "\"dns\" must be a list of names");
			goto out;
		}
		json_array_foreach(dns, i, item)
		{
			if (!json_is_string(item) ||
			    cfg_strlist_add(&grant.dns, json_string_value(item), &err) != 0) {
				problem(resp, 400, "malformed_request",
				        "\"dns\" must be a list of names");
				goto out;
			}
		}
	}

	if (caller.role == CALLER_AGENT) {
		size_t plen = strlen(caller.peer.spiffe_id);

		if (store_cert_get(api->issuer->store, caller.peer.serial, &row, &err) != 0) {
			ac_err_clear(&err);
			ac_err_set(&err, AC_ERR_POLICY, "unknown_certificate",
			           "certificate %s was not issued by this CA", caller.peer.serial);
			goto refuse;
		}
		have_row = 1;
		if (row.revoked_at != 0) {
			ac_err_set(&err, AC_ERR_POLICY, "certificate_revoked",
			           "certificate %s is revoked", caller.peer.serial);
			goto refuse;
		}
		if (plen == 0 || strncmp(grant.subject, caller.peer.spiffe_id, plen) != 0 ||
		    grant.subject[plen] != '/' || grant.subject[plen + 1] == '\0') {
			ac_err_set(&err, AC_ERR_POLICY, "outside_parent_path",
			           "%s may mint tokens only for identities under %s/",
			           caller.peer.spiffe_id, caller.peer.spiffe_id);
			goto refuse;
		}
		if (row.depth + 1 > api->max_depth) {
			ac_err_set(&err, AC_ERR_POLICY, "depth_exceeded",
			           "%s is at depth %d: children may go at most %d deep",
			           caller.peer.spiffe_id, row.depth, api->max_depth);
			goto refuse;
		}
		if (ttl > row.not_after - now)
			ttl = row.not_after - now;
		if (ttl <= 0) {
			ac_err_set(&err, AC_ERR_POLICY, "parent_expired",
			           "the parent's certificate has expired");
			goto refuse;
		}
		snprintf(grant.parent, sizeof(grant.parent), "%s", caller.peer.spiffe_id);
		grant.depth = row.depth + 1;
		grant.cert_not_after_max = row.not_after;
	}
	if (token_mint(api->minter, &grant, now, ttl, &jwt, &err) != 0)
		goto refuse;

	/* The token exists only once the log says so. */
	snprintf(detail, sizeof(detail), "bootstrap token %s", grant.jti);
	memset(&entry, 0, sizeof(entry));
	entry.kind = "token_created";
	entry.actor = caller.actor;
	entry.subject = grant.subject;
	entry.parent = grant.parent[0] != '\0' ? grant.parent : NULL;
	entry.not_before = grant.not_before;
	entry.not_after = grant.expires;
	entry.sans = (const char *const *)grant.dns.items;
	entry.sans_count = grant.dns.count;
	entry.detail = detail;
	memset(&w, 0, sizeof(w));
	w.entry = &entry;
	if (record_event(api, &w, &err) != 0) {
		problem(resp, ac_errcode_http_status(err.code), err.reason, err.msg);
		goto out;
	}
	log_info("token_minted", "%s minted token %s for %s", caller.actor, grant.jti,
	         grant.subject);
	{
		char expires[32];

		time_format_rfc3339(grant.expires, expires, sizeof(expires));
		json_response(resp, 201,
		              json_pack("{s:s, s:s, s:s}", "token", jwt, "jti", grant.jti,
		                        "expires", expires));
	}
	goto out;
refuse : {
	struct issue_request denied;

	memset(&denied, 0, sizeof(denied));
	denied.actor = caller.actor;
	denied.subject = grant.subject;
	denied.parent = caller.role == CALLER_AGENT ? caller.peer.spiffe_id : NULL;
	issue_record_denial(api->issuer, &denied, &err);
}
	metrics_denied(api->metrics, err.reason);
	problem(resp, ac_errcode_http_status(err.code), err.reason, err.msg);
out:
	if (jwt != NULL) {
		OPENSSL_cleanse(jwt, strlen(jwt));
		free(jwt);
	}
	if (have_row)
		store_cert_row_free(&row);
	token_grant_free(&grant);
	json_decref(doc);
}

/*
 * POST /v1/revoke {serial, reason?}: admins only. The certificate row and the "revoked" log
 * entry change in one commit; renewal is refused from then on.
 */
static void
handle_revoke(struct api *api, struct MHD_Connection *conn, const struct api_request *req,
              struct api_response *resp)
{
	struct log_entry entry;
	struct store_write w;
	struct caller caller;
	struct ac_err err;
	const char *serial, *reason;
	size_t len = 0;
	json_t *doc;

	ac_err_clear(&err);
	if (resolve_caller(api, conn, &caller, resp) != 0)
		return;
	if (caller.role != CALLER_ADMIN) {
		problem(resp, caller.role == CALLER_NONE ? 401 : 403, "not_allowed",
		        "only admins may revoke certificates");
		return;
	}
	doc = parse_body(req, resp);
	if (doc == NULL)
		return;
	serial = body_string(doc, "serial", 1, &len, resp);
	reason = serial != NULL ? body_string(doc, "reason", 0, &len, resp) : NULL;
	if (serial == NULL || (json_object_get(doc, "reason") != NULL && reason == NULL))
		goto out;
	memset(&entry, 0, sizeof(entry));
	entry.kind = "revoked";
	entry.actor = caller.actor;
	entry.serial = serial;
	entry.reason = reason != NULL ? reason : "unspecified";
	memset(&w, 0, sizeof(w));
	w.entry = &entry;
	w.revoke_serial = serial;
	w.revoke_reason = reason;
	if (record_event(api, &w, &err) != 0) {
		problem(resp, ac_errcode_http_status(err.code), err.reason, err.msg);
		goto out;
	}
	log_info("revoked", "%s revoked %s (%s)", caller.actor, serial, entry.reason);
	json_response(resp, 200,
	              json_pack("{s:s, s:I}", "serial", serial, "log_seq", (json_int_t)w.seq));
out:
	json_decref(doc);
}

/* Queue resp on conn and count it. */
static enum MHD_Result
send_response(struct api *api, struct MHD_Connection *conn, struct api_request *req,
              struct api_response *resp)
{
	struct MHD_Response *r;
	enum MHD_Result ret;

	r = MHD_create_response_from_buffer(resp->len, resp->body != NULL ? resp->body : (void *)"",
	                                    resp->body != NULL ? MHD_RESPMEM_MUST_FREE
	                                                       : MHD_RESPMEM_PERSISTENT);
	if (r == NULL) {
		free(resp->body);
		return MHD_NO;
	}
	resp->body = NULL; /* MHD owns it now */
	if (resp->content_type != NULL)
		MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, resp->content_type);
	if (resp->etag != NULL)
		MHD_add_response_header(r, MHD_HTTP_HEADER_ETAG, resp->etag);
	MHD_add_response_header(r, "Cache-Control", "no-store");
	if (resp->retry_after > 0) {
		char seconds[16];

		snprintf(seconds, sizeof(seconds), "%d", resp->retry_after);
		MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, seconds);
	}
	ret = MHD_queue_response(conn, (unsigned int)resp->status, r);
	MHD_destroy_response(r);
	metrics_request(api->metrics,
	                req != NULL && req->route >= 0 ? (size_t)req->route : ROUTE_OTHER,
	                resp->status, monotonic_seconds() - (req != NULL ? req->started : 0));
	return ret;
}

/* An answer before any request state exists (404, 405, 413 on the headers). */
static enum MHD_Result
send_problem_now(struct api *api, struct MHD_Connection *conn, int status, const char *reason,
                 const char *detail)
{
	struct api_request req = {ROUTE_OTHER, monotonic_seconds(), NULL, 0, 0, 0};
	struct api_response resp;

	memset(&resp, 0, sizeof(resp));
	problem(&resp, status, reason, detail);
	return send_response(api, conn, &req, &resp);
}

/* Count one request against the client's address: IPv4 as is, IPv6 by its /64 (one host
 * usually holds a whole /64). Returns 0, or the Retry-After seconds when over the limit. */
static int
address_limited(struct api *api, struct MHD_Connection *conn, double now)
{
	const union MHD_ConnectionInfo *info =
	    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	char key[INET6_ADDRSTRLEN + 8] = "unknown";
	int retry = 0;

	if (info != NULL && info->client_addr != NULL) {
		const struct sockaddr *sa = info->client_addr;

		if (sa->sa_family == AF_INET) {
			inet_ntop(AF_INET,
			          &((const struct sockaddr_in *)(const void *)sa)->sin_addr, key,
			          sizeof(key));
		} else if (sa->sa_family == AF_INET6) {
			struct in6_addr prefix =
			    ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;

			memset(prefix.s6_addr + 8, 0, 8);
			inet_ntop(AF_INET6, &prefix, key, sizeof(key));
			strcat(key, "/64");
		}
	}
	return ratelimit_take(api->per_address, key, now, &retry) ? 0 : retry;
}

static enum MHD_Result
access_handler(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
               const char *version, const char *upload_data, size_t *upload_data_size,
               void **con_cls)
{
	struct api *api = cls;
	struct api_request *req = *con_cls;
	struct api_response resp;

	(void)version;
	if (req == NULL) {
		const char *length;
		int route = -1, path_known = 0;

		for (int i = 0; i < ROUTE_COUNT; i++) {
			if (strcmp(url, routes[i].path) != 0)
				continue;
			path_known = 1;
			if (strcmp(method, routes[i].method) == 0)
				route = i;
		}
		if (route < 0)
			return send_problem_now(api, conn, path_known ? 405 : 404,
			                        path_known ? "method_not_allowed" : "not_found",
			                        path_known ? "this method is not allowed here"
			                                   : "no such resource");
		length = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
		                                     MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (length != NULL && strtoull(length, NULL, 10) > API_MAX_BODY)
			return send_problem_now(api, conn, 413, "body_too_large",
			                        "request bodies are limited to 64 KiB");
		req = calloc(1, sizeof(*req));
		if (req == NULL)
			return MHD_NO;
		req->route = route;
		req->started = monotonic_seconds();
		if (strcmp(routes[route].path, "/healthz") != 0)
			req->limited = address_limited(api, conn, req->started);
		*con_cls = req;
		return MHD_YES;
	}
	if (*upload_data_size > 0) {
		if (!req->too_large && req->len + *upload_data_size <= API_MAX_BODY) {
			char *grown = realloc(req->body, req->len + *upload_data_size + 1);

			if (grown == NULL)
				return MHD_NO;
			memcpy(grown + req->len, upload_data, *upload_data_size);
			req->len += *upload_data_size;
			grown[req->len] = '\0';
			req->body = grown;
		} else {
			req->too_large = 1; /* chunked: keep reading, keep nothing */
		}
		*upload_data_size = 0;
		return MHD_YES;
	}
	memset(&resp, 0, sizeof(resp));
	if (req->limited > 0) {
		metrics_denied(api->metrics, "rate_limited");
		problem(&resp, 429, "rate_limited",
		        "too many requests from this address; retry later");
		resp.retry_after = req->limited;
	} else if (req->too_large) {
		problem(&resp, 413, "body_too_large", "request bodies are limited to 64 KiB");
	} else {
		routes[req->route].handler(api, conn, req, &resp);
	}
	if (resp.status >= 400)
		log_info("request_refused", "%s %s: %d %s", method, url, resp.status,
		         resp.body != NULL ? resp.body : "");
	return send_response(api, conn, req, &resp);
}

static void
request_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                  enum MHD_RequestTerminationCode toe)
{
	struct api_request *req = *con_cls;

	(void)cls;
	(void)conn;
	(void)toe;
	if (req == NULL)
		return;
	free(req->body);
	free(req);
	*con_cls = NULL;
}

/* The bundle: our root and the added roots, as PEM, with an ETag over the bytes. */
static int
build_bundle(struct api *api, struct ac_err *err)
{
	const struct ca_authority *ca = api->issuer->authority;
	unsigned char digest[32];
	BIO *bio = BIO_new(BIO_s_mem());
	char hex[65], *data;
	long len;
	int rc = -1;

	if (bio == NULL || !PEM_write_bio_X509(bio, ca->root))
		goto fail;
	for (int i = 0; ca->trust_extra != NULL && i < sk_X509_num(ca->trust_extra); i++)
		if (!PEM_write_bio_X509(bio, sk_X509_value(ca->trust_extra, i)))
			goto fail;
	len = BIO_get_mem_data(bio, &data);
	api->bundle_pem = malloc((size_t)len);
	if (api->bundle_pem == NULL)
		goto fail;
	memcpy(api->bundle_pem, data, (size_t)len);
	api->bundle_len = (size_t)len;
	if (!EVP_Digest(data, (size_t)len, digest, NULL, EVP_sha256(), NULL))
		goto fail;
	hex_encode(digest, 16, hex);
	snprintf(api->bundle_etag, sizeof(api->bundle_etag), "\"%s\"", hex);
	rc = 0;
	goto out;
fail:
	ac_err_ssl(err, AC_ERR_CRYPTO, "bundle_failed", "cannot build the trust bundle");
out:
	BIO_free(bio);
	return rc;
}

struct api *
api_start(const struct api_options *opts, struct ac_err *err)
{
	const char *names[ROUTE_COUNT + 1];
	struct api *api;
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	/* A handler holds its thread until its certificate is durable in the log, so the number
	 * of threads bounds the requests in flight, and with it how many commits can share one
	 * fsync. API_THREADS_PER_CORE keeps the cores busy while requests wait on the disk. */
	unsigned int threads = opts->threads > 0
	                           ? (unsigned int)opts->threads
	                           : (unsigned int)(cores > 0 ? cores : 1) * API_THREADS_PER_CORE;

	api = calloc(1, sizeof(*api));
	if (api == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		return NULL;
	}
	api->issuer = opts->issuer;
	api->bootstrap = opts->bootstrap;
	api->admin = opts->admin;
	api->minter = opts->minter;
	api->admin_ids = opts->admin_ids;
	api->auditor_ids = opts->auditor_ids;
	api->max_depth = opts->max_depth > 0 ? opts->max_depth : 3;
	/* Tables sized for 10k clients and identities at once (a few MB each): bounded. */
	api->per_address = ratelimit_new(opts->rate_per_address, opts->burst_per_address, 10000);
	api->per_identity = ratelimit_new(opts->rate_per_identity, opts->burst_per_identity, 10000);
	if (api->per_address == NULL || api->per_identity == NULL) {
		ac_err_set(err, AC_ERR_INVALID, "config_invalid",
		           "rate limits must be >= 0 with a burst of at least 1");
		goto fail;
	}
	for (int i = 0; i < ROUTE_COUNT; i++)
		names[i] = routes[i].name;
	names[ROUTE_OTHER] = "other";
	api->metrics = metrics_new(names, ROUTE_COUNT + 1);
	if (api->metrics == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto fail;
	}
	if (build_bundle(api, err) != 0)
		goto fail;
	/* No listening socket: the front hands us each connection once TLS is done. The
	 * per-connection memory (API_MHD_MEMORY) holds the request's headers and read buffer,
	 * not the whole body (bodies reach the handler in pieces); libmicrohttpd 0.9.75 zeroes
	 * all of it after every request on a keep-alive connection, so it is kept small. */
	api->mhd = MHD_start_daemon(
	    MHD_USE_NO_LISTEN_SOCKET | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
	        MHD_USE_ITC,
	    0, NULL, NULL, access_handler, api, MHD_OPTION_NOTIFY_COMPLETED, request_completed, api,
	    MHD_OPTION_THREAD_POOL_SIZE, threads, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)60,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)API_MHD_MEMORY, MHD_OPTION_END);
	if (api->mhd == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "mhd_failed",
		           "cannot start the HTTP engine (libmicrohttpd)");
		goto fail;
	}
	return api;
fail:
	api_stop(api);
	return NULL;
}

struct MHD_Daemon *
api_mhd(struct api *api)
{
	return api->mhd;
}

void
api_set_front(struct api *api, struct front *front)
{
	api->front = front;
}

void
api_stop(struct api *api)
{
	if (api == NULL)
		return;
	if (api->mhd != NULL)
		MHD_stop_daemon(api->mhd);
	metrics_free(api->metrics);
	ratelimit_free(api->per_address);
	ratelimit_free(api->per_identity);
	free(api->bundle_pem);
	free(api);
}
