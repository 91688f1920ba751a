/*
 * api.c - the HTTP API's engine: the route table, request bodies, rate limits, callers and
 * problem documents. The handlers live in api_status.c, api_enroll.c and api_admin.c. See
 * api.h and api_internal.h.
 *
 * libmicrohttpd calls the access handler several times per request: first with the headers
 * (we pick the route and refuse an oversized Content-Length at once), then with each piece
 * of the body (we keep at most API_MAX_BODY bytes), then once more with no data (we run the
 * handler and queue the response). Handlers fill a struct api_response; they never touch
 * MHD directly, so each reads as the policy of its route.
 */
#include "enrollment/api_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "ca/ocsp.h"
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

static const struct route {
	const char *method;
	const char *path;
	const char *name;    /* metrics label */
	api_handler handler; /* a path ending in '/' is a prefix: the handler dispatches the rest */
} routes[] = {
    {"GET", "/healthz", "healthz", handle_healthz},
    {"GET", "/metrics", "metrics", handle_metrics},
    {"GET", "/v1/bundle", "bundle", handle_bundle},
    {"POST", "/v1/bundle/ack", "bundle_ack", handle_bundle_ack},
    {"GET", "/v1/crl", "crl", handle_crl},
    {"POST", "/v1/enroll", "enroll", handle_enroll},
    {"POST", "/v1/renew", "renew", handle_renew},
    {"POST", "/v1/tokens", "tokens", handle_tokens},
    {"POST", "/v1/revoke", "revoke", handle_revoke},
    {"GET", "/v1/certificates", "certificates", handle_certificates},
    {"GET", "/v1/audit/sth", "audit_sth", handle_audit_sth},
    {"GET", "/v1/audit/proof", "audit_proof", handle_audit_proof},
    {"GET", "/v1/audit/consistency", "audit_consistency", handle_audit_consistency},
    {"GET", "/v1/audit/export", "audit_export", handle_audit_export},
    {"POST", "/v1/ocsp", "ocsp", handle_ocsp_post},
    {"GET", "/v1/ocsp/", "ocsp_get", handle_ocsp_get}, /* prefix: /v1/ocsp/<base64> */
    {"GET", "/v1/revocations", "revocations", handle_revocations},
    {"GET", "/acme/", "acme", handle_acme},
    {"HEAD", "/acme/", "acme_head", handle_acme},
    {"POST", "/acme/", "acme_post", handle_acme},
};
/* A path that ends in '/' is a prefix: it matches every URL below it, and the handler gets
 * the rest of the URL in req->path_rest (GET /v1/ocsp/<base64 request>). */
static int
route_is_prefix(const struct route *r)
{
	size_t n = strlen(r->path);

	return n > 1 && r->path[n - 1] == '/';
}

/* The ACME routes: off without an ACME server, and they answer oversized bodies themselves
 * (with ACME's own error type). */
static int
route_is_acme(int i)
{
	return i >= 0 && strncmp(routes[i].path, "/acme/", 6) == 0;
}

#define ROUTE_COUNT ((int)(sizeof(routes) / sizeof(routes[0])))
/* Seconds a client is told to wait after a 503. */
#define API_RETRY_AFTER_UNAVAILABLE 5
/* libmicrohttpd's memory per connection: the request's headers, the read buffer and the
 * response headers; bodies reach the handler in pieces, so the 64 KiB body limit does not
 * depend on it. libmicrohttpd 0.9.75 zeroes all of it after every request, so it is half
 * its default (32 KiB): 8 KiB of request headers still fit (with 8 KiB of pool they got
 * 431), and so do bodies at the limit and an RSA-4096 finalize (test_enroll,
 * test_acme_bad_input, test_acme_lego). */
#define API_MHD_MEMORY (16 * 1024)

/* Requests that match no route are counted under this extra label. */
#define ROUTE_OTHER ROUTE_COUNT

double
api_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Set resp to an RFC 7807 problem document. */
void
api_problem(struct api_response *resp, int status, const char *reason, const char *detail)
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
	/* A 503 means "try again": say when (a full disk or a busy store is not permanent). */
	if (status == 503 && resp->retry_after == 0)
		resp->retry_after = API_RETRY_AFTER_UNAVAILABLE;
	json_decref(doc);
}

void
api_add_header(struct api_response *resp, const char *name, const char *value)
{
	int n = resp->extra_count;

	if (n >= (int)(sizeof(resp->extra) / sizeof(resp->extra[0])) ||
	    strlen(value) >= sizeof(resp->extra[0].value))
		return;
	resp->extra[n].name = name;
	memcpy(resp->extra[n].value, value, strlen(value) + 1);
	resp->extra_count = n + 1;
}

/* Set resp to a JSON document (takes the reference). */
void
api_json_response(struct api_response *resp, int status, json_t *doc)
{
	resp->status = status;
	resp->content_type = "application/json";
	resp->body = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
	resp->len = resp->body != NULL ? strlen(resp->body) : 0;
	if (resp->body == NULL)
		api_problem(resp, 500, "internal_error", "cannot encode the response");
	json_decref(doc);
}

/* Parse the body as a JSON object; on failure set a 400 problem and return NULL. */
json_t *
api_parse_body(struct api_request *req, struct api_response *resp)
{
	json_error_t jerr;
	json_t *doc;
	char detail[256];

	if (req->len == 0) {
		api_problem(resp, 400, "malformed_request", "the request body is empty");
		return NULL;
	}
	doc = json_loadb(req->body, req->len, JSON_REJECT_DUPLICATES, &jerr);
	if (doc == NULL || !json_is_object(doc)) {
		snprintf(detail, sizeof(detail), "the request body is not a JSON object%s%s",
		         doc == NULL ? ": " : "", doc == NULL ? jerr.text : "");
		json_decref(doc);
		api_problem(resp, 400, "malformed_request", detail);
		return NULL;
	}
	return doc;
}

/* A string member, or NULL with a 400 problem naming it. */
const char *
api_body_string(json_t *doc, const char *key, int required, size_t *len, struct api_response *resp)
{
	json_t *v = json_object_get(doc, key);
	char detail[128];

	if (v == NULL && !required)
		return NULL;
	if (!json_is_string(v)) {
		snprintf(detail, sizeof(detail), "\"%s\" must be a string", key);
		api_problem(resp, 400, "malformed_request", detail);
		return NULL;
	}
	*len = json_string_length(v);
	return json_string_value(v);
}

/* Count one call against key (an identity); 1 with a 429 in resp when over the limit. */
int
api_identity_limited(struct api *api, const char *key, struct api_response *resp)
{
	int retry = 0;

	if (ratelimit_take(api->per_identity, key, api_now(), &retry))
		return 0;
	metrics_denied(api->metrics, "rate_limited");
	api_problem(resp, 429, "rate_limited", "too many requests for this identity; retry later");
	resp->retry_after = retry;
	return 1;
}

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
int
api_resolve_caller(struct api *api, struct MHD_Connection *conn, struct caller *c,
                   struct api_response *resp)
{
	const char *auth = api_lookup(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);

	memset(c, 0, sizeof(*c));
	if (api->front != NULL)
		front_peer_of(api->front, conn, &c->peer);
	/* Only a certificate valid now authenticates: not one let through by the renewal grace
	 * (only /v1/renew reads those), nor one that expired during a kept-alive connection. */
	if (!c->peer.present || c->peer.not_after < time_now())
		memset(&c->peer, 0, sizeof(c->peer));
	if (auth != NULL) {
		struct token_grant grant;
		struct ac_err err;

		memset(&grant, 0, sizeof(grant));
		ac_err_clear(&err);
		if (strncmp(auth, "Bearer ", 7) != 0) {
			api_problem(resp, 401, "bad_authorization",
			            "the Authorization header must be \"Bearer <admin token>\"");
			return -1;
		}
		if (api->admin == NULL || token_verify(api->admin, auth + 7, strlen(auth + 7),
		                                       time_now(), &grant, &err) != 0) {
			metrics_denied(api->metrics, err.reason);
			api_problem(resp, 401,
			            err.reason != NULL ? err.reason : "bad_authorization", err.msg);
			token_grant_free(&grant);
			return -1;
		}
		c->role = strcmp(grant.role, "admin") == 0 ? CALLER_ADMIN : CALLER_AUDITOR;
		snprintf(c->actor, sizeof(c->actor), "%s:%s", grant.role, grant.subject);
		token_grant_free(&grant);
		return 0;
	}
	if (c->peer.present) {
		if (listed(atomic_load(&api->admin_ids), c->peer.spiffe_id)) {
			c->role = CALLER_ADMIN;
			snprintf(c->actor, sizeof(c->actor), "admin:%s", c->peer.spiffe_id);
		} else if (listed(atomic_load(&api->auditor_ids), c->peer.spiffe_id)) {
			c->role = CALLER_AUDITOR;
			snprintf(c->actor, sizeof(c->actor), "auditor:%s", c->peer.spiffe_id);
		} else {
			c->role = CALLER_AGENT;
			snprintf(c->actor, sizeof(c->actor), "cert:%s", c->peer.serial);
		}
	}
	return 0;
}

/* Queue resp on conn and count it. */
static enum MHD_Result
send_response(struct api *api, struct MHD_Connection *conn, struct api_request *req,
              struct api_response *resp)
{
	struct MHD_Response *r;
	enum MHD_Result ret;

	if (resp->has_stream)
		r = MHD_create_response_from_pipe(resp->stream_fd); /* MHD closes it */
	else
		r = MHD_create_response_from_buffer(
		    resp->len, resp->body != NULL ? resp->body : (void *)"",
		    resp->body != NULL ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
	if (r == NULL) {
		free(resp->body);
		return MHD_NO;
	}
	resp->body = NULL; /* MHD owns it now */
	if (resp->content_type != NULL)
		MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, resp->content_type);
	if (resp->etag[0] != '\0')
		MHD_add_response_header(r, MHD_HTTP_HEADER_ETAG, resp->etag);
	MHD_add_response_header(r, "Cache-Control", "no-store");
	if (req != NULL && req->id[0] != '\0')
		MHD_add_response_header(r, "X-Request-Id", req->id);
	for (int i = 0; i < resp->extra_count; i++)
		MHD_add_response_header(r, resp->extra[i].name, resp->extra[i].value);
	if (resp->retry_after > 0) {
		char seconds[16];

		snprintf(seconds, sizeof(seconds), "%d", resp->retry_after);
		MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, seconds);
	}
	ret = MHD_queue_response(conn, (unsigned int)resp->status, r);
	MHD_destroy_response(r);
	metrics_request(api->metrics,
	                req != NULL && req->route >= 0 ? (size_t)req->route : ROUTE_OTHER,
	                resp->status, api_now() - (req != NULL ? req->started : 0));
	return ret;
}

/* An answer before any request state exists (404, 405, 413 on the headers). */
static enum MHD_Result
send_problem_now(struct api *api, struct MHD_Connection *conn, struct api_response *resp)
{
	struct api_request req;

	memset(&req, 0, sizeof(req));
	req.route = ROUTE_OTHER;
	req.started = api_now();
	return send_response(api, conn, &req, resp);
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

/* 64 random bits as hex: enough to find one request among a day's. */
static void
request_id_make(char id[17])
{
	unsigned char raw[8];

	if (RAND_bytes(raw, sizeof(raw)) != 1)
		memset(raw, 0, sizeof(raw));
	hex_encode(raw, sizeof(raw), id);
}

/* The route for method and url (the path, no query): its index, or -1 with *status 404 or
 * 405. The ACME routes are absent without an ACME server. */
static int
route_find(struct api *api, const char *method, const char *url, int *status)
{
	int route = -1, path_known = 0;

	for (int i = 0; i < ROUTE_COUNT; i++) {
		if (route_is_prefix(&routes[i])
		        ? strncmp(url, routes[i].path, strlen(routes[i].path)) != 0
		        : strcmp(url, routes[i].path) != 0)
			continue;
		if (route_is_acme(i) && api->acme == NULL)
			continue;
		path_known = 1;
		if (strcmp(method, routes[i].method) == 0)
			route = i;
	}
	if (route < 0)
		*status = path_known ? 405 : 404;
	return route;
}

/* Refuse a request before any state exists: 404, 405 (route < 0, status from route_find),
 * or 413 when the declared body is over the limit (ACME answers that itself). Returns 1
 * with resp set when refused. */
static int
request_refused_early(int route, int status, unsigned long long declared_len,
                      struct api_response *resp)
{
	if (route < 0) {
		api_problem(resp, status, status == 405 ? "method_not_allowed" : "not_found",
		            status == 405 ? "this method is not allowed here" : "no such resource");
		return 1;
	}
	if (declared_len > API_MAX_BODY && !route_is_acme(route)) {
		api_problem(resp, 413, "body_too_large", "request bodies are limited to 64 KiB");
		return 1;
	}
	return 0;
}

/* The state of a request whose route is known; NULL when out of memory. */
static struct api_request *
request_new(int route, const char *method, const char *url)
{
	struct api_request *req = calloc(1, sizeof(*req));

	if (req == NULL)
		return NULL;
	req->route = route;
	req->started = api_now();
	snprintf(req->method, sizeof(req->method), "%s", method);
	if (route_is_prefix(&routes[route]) &&
	    ((req->path_rest = strdup(url + strlen(routes[route].path))) == NULL ||
	     (req->url = strdup(url)) == NULL)) {
		free(req->path_rest);
		free(req);
		return NULL;
	}
	request_id_make(req->id);
	return req;
}

/* Keep one piece of the body, at most API_MAX_BODY bytes in all (beyond: too_large, and
 * nothing more is kept). -1 when out of memory. */
static int
request_append(struct api_request *req, const char *data, size_t len)
{
	if (!req->too_large && req->len + len <= API_MAX_BODY) {
		char *grown = realloc(req->body, req->len + len + 1);

		if (grown == NULL)
			return -1;
		memcpy(grown + req->len, data, len);
		req->len += len;
		grown[req->len] = '\0';
		req->body = grown;
	} else {
		req->too_large = 1; /* chunked: keep reading, keep nothing */
	}
	return 0;
}

/* The whole request is in: answer it (429, 413, or the route's handler), and log a refusal.
 * conn is NULL for an in-process request (api_call). */
static void
request_run(struct api *api, struct MHD_Connection *conn, struct api_request *req, const char *url,
            struct api_response *resp)
{
	if (req->limited > 0) {
		metrics_denied(api->metrics, "rate_limited");
		api_problem(resp, 429, "rate_limited",
		            "too many requests from this address; retry later");
		resp->retry_after = req->limited;
	} else if (req->too_large && !route_is_acme(req->route)) {
		api_problem(resp, 413, "body_too_large", "request bodies are limited to 64 KiB");
	} else {
		routes[req->route].handler(api, conn, req, resp);
	}
	if (!req->suspended && resp->status >= 400)
		log_info("request_refused", "%s %s (request %s): %d %s", req->method, url, req->id,
		         resp->status, resp->body != NULL ? resp->body : "");
}

static void
request_free(struct api_request *req)
{
	if (req == NULL)
		return;
	free(req->body);
	free(req->path_rest);
	free(req->url);
	free(req);
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
	memset(&resp, 0, sizeof(resp));
	if (req == NULL) {
		const char *length = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
		                                                 MHD_HTTP_HEADER_CONTENT_LENGTH);
		int status = 0, route = route_find(api, method, url, &status);

		if (request_refused_early(route, status,
		                          length != NULL ? strtoull(length, NULL, 10) : 0, &resp))
			return send_problem_now(api, conn, &resp);
		req = request_new(route, method, url);
		if (req == NULL)
			return MHD_NO;
		if (strcmp(routes[route].path, "/healthz") != 0)
			req->limited = address_limited(api, conn, req->started);
		*con_cls = req;
		return MHD_YES;
	}
	if (*upload_data_size > 0) {
		if (request_append(req, upload_data, *upload_data_size) != 0)
			return MHD_NO;
		*upload_data_size = 0;
		return MHD_YES;
	}
	request_run(api, conn, req, url, &resp);
	if (req->suspended) {
		/* A long-poll: the handler parked the connection; it answers when resumed. */
		req->suspended = 0;
		free(resp.body);
		return MHD_YES;
	}
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
	request_free(req);
	*con_cls = NULL;
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
	api->renew_grace = opts->renew_grace > 0 ? opts->renew_grace : 0;
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
	api->bundle = api_bundle_new(opts->issuer->authority->dir, err);
	if (api->bundle == NULL)
		goto fail;
	api->audit_key = opts->audit_key;
	if (opts->acme != NULL && (api->acme = acme_server_new(opts->acme, err)) == NULL)
		goto fail;
	pthread_mutex_init(&api->crl_lock, NULL);
	pthread_mutex_init(&api->daemon_metrics_lock, NULL);
	api->exports = api_exports_new();
	if (api->exports == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto fail;
	}
	api->ocsp = ocsp_responder_new(opts->issuer->authority, opts->issuer->store, err);
	if (api->ocsp == NULL)
		goto fail;
	api->revocations = api_revocations_new(opts->issuer->store, api->ocsp, err);
	if (api->revocations == NULL)
		goto fail;
	/* No listening socket: the front hands us each connection once TLS is done. The
	 * per-connection memory (API_MHD_MEMORY) holds the request's headers and read buffer,
	 * not the whole body (bodies reach the handler in pieces); libmicrohttpd 0.9.75 zeroes
	 * all of it after every request on a keep-alive connection, so it is kept small. */
	api->mhd = MHD_start_daemon(
	    MHD_USE_NO_LISTEN_SOCKET | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
	        MHD_USE_ITC | MHD_ALLOW_SUSPEND_RESUME,
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
api_set_role_ids(struct api *api, const struct cfg_strlist *admin_ids,
                 const struct cfg_strlist *auditor_ids)
{
	atomic_store(&api->admin_ids, admin_ids);
	atomic_store(&api->auditor_ids, auditor_ids);
}

void
api_begin_shutdown(struct api *api)
{
	if (api != NULL && api->bundle != NULL)
		api_bundle_release(api->bundle);
	if (api != NULL)
		api_revocations_release(api->revocations);
}

void
api_stop(struct api *api)
{
	if (api == NULL)
		return;
	/* Suspended long-polls must be resumed before libmicrohttpd can stop. */
	if (api->bundle != NULL)
		api_bundle_release(api->bundle);
	api_revocations_release(api->revocations);
	if (api->mhd != NULL)
		MHD_stop_daemon(api->mhd);
	/* No request runs now: the ACME server stops its validator and goes. */
	acme_server_free(api->acme);
	/* Stopping closed every export's pipe: their threads end now; the store outlives us. */
	api_exports_wait_and_free(api->exports);
	metrics_free(api->metrics);
	OPENSSL_free(api->crl_der);
	pthread_mutex_destroy(&api->crl_lock);
	pthread_mutex_destroy(&api->daemon_metrics_lock);
	free(api->daemon_metrics);
	ratelimit_free(api->per_address);
	ratelimit_free(api->per_identity);
	api_bundle_free(api->bundle);
	api_revocations_free(api->revocations);
	ocsp_responder_free(api->ocsp);
	free(api);
}

/*
 * In-process requests (api.h): api_call runs the request through route_find,
 * request_refused_early, request_new, request_append and request_run like access_handler;
 * the handlers read its headers and query through api_lookup.
 */

#define INPROC_MAX_ARGS 32

/* The in-process request this thread is running, with its query split into arguments. */
struct inproc_request {
	const struct api_call_request *in;
	char *query; /* heap copy, decoded in place */
	const char *arg_names[INPROC_MAX_ARGS], *arg_values[INPROC_MAX_ARGS];
	int arg_count;
};

static _Thread_local struct inproc_request *inproc_current;

static int
hex_digit_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decode %XX and '+' in place, as libmicrohttpd does for query arguments. */
static void
query_unescape(char *s)
{
	char *out = s;

	for (; *s != '\0'; s++) {
		if (*s == '+') {
			*out++ = ' ';
		} else if (*s == '%' && hex_digit_value(s[1]) >= 0 && hex_digit_value(s[2]) >= 0) {
			*out++ = (char)(hex_digit_value(s[1]) * 16 + hex_digit_value(s[2]));
			s += 2;
		} else {
			*out++ = *s;
		}
	}
	*out = '\0';
}

/* Split query ("a=1&b=2", owned by r) into r's arguments; arguments beyond
 * INPROC_MAX_ARGS are dropped. */
static void
query_split(struct inproc_request *r)
{
	char *save = NULL;

	for (char *pair = strtok_r(r->query, "&", &save);
	     pair != NULL && r->arg_count < INPROC_MAX_ARGS; pair = strtok_r(NULL, "&", &save)) {
		char *eq = strchr(pair, '=');

		if (eq != NULL)
			*eq++ = '\0';
		query_unescape(pair);
		if (eq != NULL)
			query_unescape(eq);
		r->arg_names[r->arg_count] = pair;
		r->arg_values[r->arg_count] = eq != NULL ? eq : "";
		r->arg_count++;
	}
}

const char *
api_lookup(struct MHD_Connection *conn, enum MHD_ValueKind kind, const char *name)
{
	const struct inproc_request *r = inproc_current;

	if (conn != NULL)
		return MHD_lookup_connection_value(conn, kind, name);
	if (r == NULL)
		return NULL;
	if (kind == MHD_HEADER_KIND) {
		for (int i = 0; i < r->in->header_count && i < API_CALL_MAX_HEADERS; i++)
			if (r->in->headers[i].name != NULL &&
			    strcasecmp(r->in->headers[i].name, name) == 0)
				return r->in->headers[i].value;
	} else if (kind == MHD_GET_ARGUMENT_KIND) {
		for (int i = 0; i < r->arg_count; i++)
			if (strcmp(r->arg_names[i], name) == 0)
				return r->arg_values[i];
	}
	return NULL;
}

/* Copy one header into out (dropped when there is no room). */
static void
call_response_add(struct api_call_response *out, const char *name, const char *value)
{
	int n = out->header_count;

	if (n >= (int)(sizeof(out->headers) / sizeof(out->headers[0])))
		return;
	snprintf(out->headers[n].name, sizeof(out->headers[n].name), "%s", name);
	snprintf(out->headers[n].value, sizeof(out->headers[n].value), "%s", value);
	out->header_count = n + 1;
}

/* Read a streamed body (a pipe the handler's thread writes) to its end, and close it. */
static int
stream_read_all(int fd, char **body, size_t *len)
{
	size_t cap = 0;
	char *buf = NULL;
	int rc = -1;

	*len = 0;
	for (;;) {
		ssize_t n;

		if (cap - *len < 4096) {
			char *grown = realloc(buf, cap + 65536);

			if (grown == NULL)
				goto out;
			buf = grown;
			cap += 65536;
		}
		n = read(fd, buf + *len, cap - *len - 1);
		if (n < 0)
			goto out;
		if (n == 0)
			break;
		*len += (size_t)n;
	}
	buf[*len] = '\0';
	*body = buf;
	buf = NULL;
	rc = 0;
out:
	free(buf);
	close(fd);
	return rc;
}

/* Move resp (the handler's answer) into out, the way send_response puts it on the wire. */
static int
call_response_fill(const struct api_request *req, struct api_response *resp,
                   struct api_call_response *out)
{
	char seconds[16];

	out->status = resp->status;
	snprintf(out->content_type, sizeof(out->content_type), "%s",
	         resp->content_type != NULL ? resp->content_type : "");
	if (resp->has_stream) {
		if (stream_read_all(resp->stream_fd, &out->body, &out->len) != 0)
			return -1;
	} else {
		out->body = resp->body != NULL ? resp->body : strdup("");
		out->len = resp->body != NULL ? resp->len : 0;
		resp->body = NULL;
		if (out->body == NULL)
			return -1;
	}
	if (resp->etag[0] != '\0')
		call_response_add(out, MHD_HTTP_HEADER_ETAG, resp->etag);
	if (req != NULL && req->id[0] != '\0')
		call_response_add(out, "X-Request-Id", req->id);
	for (int i = 0; i < resp->extra_count; i++)
		call_response_add(out, resp->extra[i].name, resp->extra[i].value);
	if (resp->retry_after > 0) {
		snprintf(seconds, sizeof(seconds), "%d", resp->retry_after);
		call_response_add(out, MHD_HTTP_HEADER_RETRY_AFTER, seconds);
	}
	return 0;
}

int
api_call(struct api *api, const struct api_call_request *in, struct api_call_response *out,
         struct ac_err *err)
{
	struct inproc_request current;
	struct api_request *req = NULL;
	struct api_response resp;
	const char *query;
	char *path = NULL;
	int route, status = 0, retry = 0, rc = -1;

	memset(out, 0, sizeof(*out));
	memset(&resp, 0, sizeof(resp));
	memset(&current, 0, sizeof(current));
	current.in = in;
	query = strchr(in->url, '?');
	path = query != NULL ? strndup(in->url, (size_t)(query - in->url)) : strdup(in->url);
	if (path == NULL || (query != NULL && (current.query = strdup(query + 1)) == NULL))
		goto oom;
	if (current.query != NULL)
		query_split(&current);
	route = route_find(api, in->method, path, &status);
	if (request_refused_early(route, status, in->len, &resp)) {
		metrics_request(api->metrics, ROUTE_OTHER, resp.status, 0);
	} else {
		if ((req = request_new(route, in->method, path)) == NULL ||
		    (in->len > 0 && request_append(req, in->body, in->len) != 0))
			goto oom;
		if (strcmp(routes[route].path, "/healthz") != 0 &&
		    !ratelimit_take(api->per_address, "in-process", req->started, &retry))
			req->limited = retry;
		inproc_current = &current;
		request_run(api, NULL, req, path, &resp);
		inproc_current = NULL;
		metrics_request(api->metrics, (size_t)route, resp.status, api_now() - req->started);
	}
	if (call_response_fill(req, &resp, out) != 0)
		goto oom;
	rc = 0;
	goto out;
oom:
	ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
	api_call_response_free(out);
out:
	free(resp.body);
	request_free(req);
	free(current.query);
	free(path);
	return rc;
}

const char *
api_call_response_header(const struct api_call_response *r, const char *name)
{
	for (int i = 0; i < r->header_count; i++)
		if (strcasecmp(r->headers[i].name, name) == 0)
			return r->headers[i].value;
	return NULL;
}

void
api_call_response_free(struct api_call_response *r)
{
	if (r == NULL)
		return;
	free(r->body);
	r->body = NULL;
	r->len = 0;
}
