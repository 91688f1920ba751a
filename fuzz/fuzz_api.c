/*
 * fuzz_api.c - the HTTP API's request bodies, query strings and ACME routes on any bytes,
 * in process (api_call: the route table, body limit, handlers and problem documents of a
 * real request, no sockets).
 *
 * Once: a temporary CA under /dev/shm (api_fixture.c) with its API and ACME server, an ACME
 * account, a standing order with its authorization and challenge, a certificate issued over
 * ACME, and one issued through /v1/enroll. Then for each input:
 *
 *   byte 0   the route (see the table below)
 *   byte 1   flags: FLAG_AUTH sends an admin bearer token (FLAG_AUDITOR: an auditor's),
 *            FLAG_CTYPE a Content-Type; on ACME routes FLAG_RAW sends the bytes as the JWS
 *            itself, else they are the payload of a JWS the harness signs (FLAG_JWK: with
 *            the key rather than the account, FLAG_GET: POST-as-GET), FLAG_FRESH makes a
 *            fresh ready order for finalize, FLAG_VALID settles challenges as valid
 *   the rest the body, the JWS payload, or the query string
 *
 * Placeholders in the rest are replaced by values of this run, so that seed inputs stay
 * valid against a CA made anew each run: @TOKEN@ (a fresh bootstrap token for
 * spiffe://fuzz.internal/agent/fuzz with DNS a.fuzz.internal), @CSR@ (a matching CSR, PEM,
 * JSON-escaped), @CSRDER@ (an ACME CSR for a.fuzz.internal, base64url DER), @CERTDER@ (the
 * ACME certificate, base64url DER), @SERIAL@ (the enrolled certificate's serial), @KID@.
 *
 * FUZZ_API_TRACE=1 in the environment prints each input's status and answer (to check that
 * the seeds reach what they are meant for). Every answer must be a well-formed HTTP status with a
 * body; a crash, leak, hang or sanitizer report is a finding.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include "common/base64url.h"
#include "common/log.h"
#include "fuzz/api_fixture.h"

#define FLAG_AUTH 0x01
#define FLAG_AUDITOR 0x02
#define FLAG_CTYPE 0x04
#define FLAG_RAW 0x08
#define FLAG_JWK 0x10
#define FLAG_GET 0x20
#define FLAG_FRESH 0x40
#define FLAG_VALID 0x80

enum target_kind {
	V1_POST,    /* body to path */
	V1_GET,     /* "?" + rest to path */
	ACME_POST,  /* signed or raw POST to the ACME path */
	ACME_GET,   /* GET path + rest */
	ANY_REQUEST /* rest: "URL\nbody"; method from the flags */
};

/* Which of the run's ACME objects a path names. */
enum acme_object { NONE, ACCOUNT, ACCOUNT_ORDERS, ORDER, FINALIZE, AUTHZ, CHALLENGE, CERT };

static const struct target {
	enum target_kind kind;
	const char *path;
	enum acme_object object;
} targets[] = {
    {V1_POST, "/v1/enroll", NONE},
    {V1_POST, "/v1/renew", NONE},
    {V1_POST, "/v1/tokens", NONE},
    {V1_POST, "/v1/revoke", NONE},
    {V1_POST, "/v1/bundle/ack", NONE},
    {V1_POST, "/v1/ocsp", NONE},
    {V1_GET, "/v1/audit/proof", NONE},
    {V1_GET, "/v1/audit/consistency", NONE},
    {V1_GET, "/v1/audit/export", NONE},
    {V1_GET, "/v1/audit/sth", NONE},
    {V1_GET, "/v1/certificates", NONE},
    {V1_GET, "/v1/revocations", NONE},
    {V1_GET, "/v1/bundle", NONE},
    {ACME_POST, "/acme/new-account", NONE},
    {ACME_POST, "/acme/new-order", NONE},
    {ACME_POST, "/acme/revoke-cert", NONE},
    {ACME_POST, "/acme/key-change", NONE},
    {ACME_POST, NULL, ACCOUNT},
    {ACME_POST, NULL, ACCOUNT_ORDERS},
    {ACME_POST, NULL, ORDER},
    {ACME_POST, NULL, FINALIZE},
    {ACME_POST, NULL, AUTHZ},
    {ACME_POST, NULL, CHALLENGE},
    {ACME_POST, NULL, CERT},
    {ACME_GET, "/acme/renewal-info/", NONE},
    {ACME_GET, "/acme/", NONE},
    {ANY_REQUEST, NULL, NONE},
};
#define TARGET_COUNT (sizeof(targets) / sizeof(targets[0]))

#define AGENT_ID "spiffe://" API_FIXTURE_TRUST_DOMAIN "/agent/fuzz"
#define AGENT_DNS "a." API_FIXTURE_TRUST_DOMAIN

static struct api_fixture fixture;
static struct api_fixture_order standing;
static char *csr_json;   /* @CSR@ */
static char *acme_csr;   /* @CSRDER@ */
static char *cert_der;   /* @CERTDER@ */
static char serial[128]; /* @SERIAL@ */
static char cert_path[256];
static int log_sink = -1; /* /dev/null */

static void
die(const char *what)
{
	fprintf(stderr, "fuzz_api: cannot set up: %s\n", what);
	abort();
}

/* The first certificate of a PEM chain as base64url DER. */
static char *
pem_to_der_b64url(const char *pem, size_t len)
{
	BIO *bio = BIO_new_mem_buf(pem, (int)len);
	X509 *cert = bio != NULL ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
	unsigned char *der = NULL;
	int der_len = cert != NULL ? i2d_X509(cert, &der) : 0;
	char *out = der_len > 0 ? base64url_encode_alloc(der, (size_t)der_len) : NULL;

	OPENSSL_free(der);
	X509_free(cert);
	BIO_free(bio);
	return out;
}

/* An ACME certificate for AGENT_DNS: a ready order finalized, its certificate fetched. */
static void
setup_acme_certificate(void)
{
	struct api_fixture_order order;
	struct api_call_response r;
	char payload[2048];
	json_t *doc;
	const char *url, *p;

	if (api_fixture_acme_ready_order(&fixture, AGENT_DNS, &order) != 0)
		die("an ACME order");
	snprintf(payload, sizeof(payload), "{\"csr\":\"%s\"}", acme_csr);
	if (api_fixture_acme_post(&fixture, order.finalize, payload, strlen(payload), 1, &r) != 0 ||
	    r.status != 200)
		die("finalize");
	api_call_response_free(&r);
	if (api_fixture_acme_post(&fixture, order.order, NULL, 0, 1, &r) != 0 || r.status != 200)
		die("the order");
	doc = json_loadb(r.body, r.len, 0, NULL);
	url = json_string_value(json_object_get(doc, "certificate"));
	if (url == NULL || (p = strstr(url, "/acme/")) == NULL)
		die("the certificate URL");
	snprintf(cert_path, sizeof(cert_path), "%s", p);
	json_decref(doc);
	api_call_response_free(&r);
	if (api_fixture_acme_post(&fixture, cert_path, NULL, 0, 1, &r) != 0 || r.status != 200 ||
	    (cert_der = pem_to_der_b64url(r.body, r.len)) == NULL)
		die("the certificate");
	api_call_response_free(&r);
}

/* A certificate through /v1/enroll: its serial. */
static void
setup_enrolled_certificate(void)
{
	static const char *const json[] = {"Content-Type", "application/json", NULL};
	const char *dns[] = {AGENT_DNS};
	char *token = api_fixture_bootstrap_token(&fixture, AGENT_ID, dns, 1), *body = NULL;
	struct api_call_response r;
	json_t *doc;

	if (token == NULL || asprintf(&body, "{\"token\":\"%s\",\"csr\":%s}", token, csr_json) < 0)
		die("an enrollment body");
	if (api_fixture_call(&fixture, "POST", "/v1/enroll", json, body, strlen(body), &r) != 0 ||
	    r.status != 201)
		die("enroll");
	doc = json_loadb(r.body, r.len, 0, NULL);
	snprintf(serial, sizeof(serial), "%s",
	         json_string_value(json_object_get(doc, "serial")) != NULL
	             ? json_string_value(json_object_get(doc, "serial"))
	             : "");
	json_decref(doc);
	api_call_response_free(&r);
	free(body);
	free(token);
}

static void
close_fixture(void)
{
	api_fixture_close(&fixture);
	free(csr_json);
	free(acme_csr);
	free(cert_der);
	if (log_sink >= 0) {
		ac_log_set_fd(2);
		close(log_sink);
	}
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *dns[] = {AGENT_DNS};
	struct ac_err err;
	char *pem;
	json_t *s;

	(void)argc;
	(void)argv;
	ac_err_clear(&err);
	/* Every log line is still formatted (hostile bodies end up in them), then dropped,
	 * unless FUZZ_API_TRACE asks to see them. */
	ac_log_set_level(AC_LOG_DEBUG);
	if (getenv("FUZZ_API_TRACE") == NULL &&
	    (log_sink = open("/dev/null", O_WRONLY | O_CLOEXEC)) >= 0)
		ac_log_set_fd(log_sink);
	if (api_fixture_open(&fixture, NULL, &err) != 0) {
		fprintf(stderr, "fuzz_api: %s\n", err.msg);
		die("the CA");
	}
	atexit(close_fixture);
	pem = api_fixture_csr(AGENT_ID, dns, 1, NULL);
	s = pem != NULL ? json_string(pem) : NULL;
	csr_json = s != NULL ? json_dumps(s, JSON_ENCODE_ANY) : NULL;
	json_decref(s);
	free(pem);
	pem = api_fixture_csr(NULL, dns, 1, &acme_csr);
	free(pem);
	if (csr_json == NULL || acme_csr == NULL)
		die("CSRs");
	setup_enrolled_certificate();
	if (api_fixture_acme_account(&fixture) != 0)
		die("an ACME account");
	setup_acme_certificate();
	if (api_fixture_acme_ready_order(&fixture, AGENT_DNS, &standing) != 0)
		die("the standing order");
	return 0;
}

/* data with each placeholder replaced (heap, NUL-terminated; *len its length). */
static char *
expand(const uint8_t *data, size_t size, size_t *len)
{
	struct {
		const char *name;
		const char *value;
		int fresh; /* minted for this input (freed here) */
	} subs[] = {
	    {"@TOKEN@", NULL, 1},       {"@CSR@", csr_json, 0},  {"@CSRDER@", acme_csr, 0},
	    {"@CERTDER@", cert_der, 0}, {"@SERIAL@", serial, 0}, {"@KID@", fixture.kid, 0},
	};
	size_t n = sizeof(subs) / sizeof(subs[0]), cap = size + 1, used = 0;
	int mints = 0;
	char *out = malloc(cap);

	if (out == NULL)
		return NULL;
	for (size_t i = 0; i < size;) {
		size_t k;

		for (k = 0; k < n; k++) {
			size_t nl = strlen(subs[k].name);

			if (size - i >= nl && memcmp(data + i, subs[k].name, nl) == 0)
				break;
		}
		if (k < n) {
			const char *dns[] = {AGENT_DNS};
			/* A few fresh tokens per input: each costs a signature. */
			char *minted = subs[k].fresh && mints++ < 4
			                   ? api_fixture_bootstrap_token(&fixture, AGENT_ID, dns, 1)
			                   : NULL;
			const char *v = subs[k].fresh ? minted : subs[k].value;
			size_t vl = v != NULL ? strlen(v) : 0;
			char *grown = realloc(out, cap + vl);

			if (grown == NULL) {
				free(minted);
				free(out);
				return NULL;
			}
			out = grown;
			cap += vl;
			memcpy(out + used, v != NULL ? v : "", vl);
			used += vl;
			i += strlen(subs[k].name);
			free(minted);
		} else {
			out[used++] = (char)data[i++];
		}
	}
	out[used] = '\0';
	*len = used;
	return out;
}

/* A problem document: a JSON object whose "status" is the answer's (abort otherwise). */
static void
problem_check(const struct api_call_response *r)
{
	json_t *doc = json_loadb(r->body, r->len, 0, NULL);

	if (!json_is_object(doc) || !json_is_string(json_object_get(doc, "type")) ||
	    json_integer_value(json_object_get(doc, "status")) != r->status) {
		fprintf(stderr,
		        "fuzz_api: answer %d with a problem document that says otherwise: %s\n",
		        r->status, r->body);
		abort();
	}
	json_decref(doc);
}

static const char *
object_path(enum acme_object object, struct api_fixture_order *fresh, char *buf, size_t len)
{
	const char *kid_path = strstr(fixture.kid, "/acme/");

	switch (object) {
	case ACCOUNT:
		return kid_path != NULL ? kid_path : "/acme/acct/none";
	case ACCOUNT_ORDERS:
		snprintf(buf, len, "%s/orders", kid_path != NULL ? kid_path : "/acme/acct/none");
		return buf;
	case ORDER:
		return standing.order;
	case FINALIZE:
		return fresh != NULL ? fresh->finalize : standing.finalize;
	case AUTHZ:
		return standing.authz;
	case CHALLENGE:
		return standing.challenge;
	case CERT:
		return cert_path;
	default:
		return "/acme/none";
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const struct target *t;
	struct api_call_response r;
	struct api_fixture_order fresh;
	const char *headers[7] = {NULL};
	char *rest = NULL, *admin = NULL, *url = NULL, *bearer = NULL, buf[320];
	size_t rest_len = 0, h = 0;
	uint8_t flags;

	if (size < 2)
		return 0;
	t = &targets[data[0] % TARGET_COUNT];
	flags = data[1];
	if ((rest = expand(data + 2, size - 2, &rest_len)) == NULL)
		return 0;
	memset(&r, 0, sizeof(r));
	if (t->kind != ACME_POST && (flags & FLAG_AUTH) &&
	    (admin = api_fixture_admin_token(&fixture, (flags & FLAG_AUDITOR) ? "auditor" : "admin",
	                                     "fuzz")) != NULL &&
	    asprintf(&bearer, "Bearer %s", admin) > 0) {
		headers[h++] = "Authorization";
		headers[h++] = bearer;
	}
	switch (t->kind) {
	case V1_POST:
		if (flags & FLAG_CTYPE) {
			headers[h++] = "Content-Type";
			headers[h++] = "application/json";
		}
		api_fixture_call(&fixture, "POST", t->path, headers, rest, rest_len, &r);
		break;
	case V1_GET:
		/* A query ends at a NUL, as it would on the wire. */
		if (asprintf(&url, "%s?%s", t->path, rest) > 0)
			api_fixture_call(&fixture, "GET", url, headers, NULL, 0, &r);
		break;
	case ACME_POST: {
		const char *path = t->path;
		int have_fresh = 0;

		if (t->object == FINALIZE && (flags & FLAG_FRESH))
			have_fresh = api_fixture_acme_ready_order(&fixture, AGENT_DNS, &fresh) == 0;
		if (path == NULL)
			path = object_path(t->object, have_fresh ? &fresh : NULL, buf, sizeof(buf));
		if (flags & FLAG_RAW) {
			headers[h++] = "Content-Type";
			headers[h++] =
			    (flags & FLAG_CTYPE) ? "application/json" : "application/jose+json";
			api_fixture_call(&fixture, "POST", path, headers, rest, rest_len, &r);
		} else {
			api_fixture_acme_post(&fixture, path, (flags & FLAG_GET) ? NULL : rest,
			                      (flags & FLAG_GET) ? 0 : rest_len,
			                      !(flags & FLAG_JWK), &r);
		}
		break;
	}
	case ACME_GET:
		if (asprintf(&url, "%s%s", t->path, rest) > 0)
			api_fixture_call(&fixture, (flags & FLAG_GET) ? "HEAD" : "GET", url,
			                 headers, NULL, 0, &r);
		break;
	case ANY_REQUEST: {
		static const char *const methods[] = {"GET", "POST", "HEAD", "PUT"};
		char *nl = memchr(rest, '\n', rest_len);
		size_t url_len = nl != NULL ? (size_t)(nl - rest) : rest_len;

		if (flags & FLAG_CTYPE) {
			headers[h++] = "Content-Type";
			headers[h++] =
			    (flags & FLAG_RAW) ? "application/jose+json" : "application/json";
		}
		if ((url = malloc(url_len + 2)) != NULL) {
			url[0] = '/';
			memcpy(url + 1, rest, url_len);
			url[url_len + 1] = '\0';
			api_fixture_call(&fixture, methods[(flags >> 4) & 3], url, headers,
			                 nl != NULL ? nl + 1 : NULL,
			                 nl != NULL ? rest_len - url_len - 1 : 0, &r);
		}
		break;
	}
	}
	/* FUZZ_API_TRACE=1: what each input got (to check that seeds reach their handler). */
	if (getenv("FUZZ_API_TRACE") != NULL)
		fprintf(stderr, "fuzz_api: target %d flags 0x%02x: %d %.200s\n",
		        data[0] % (int)TARGET_COUNT, flags, r.status, r.body != NULL ? r.body : "");
	/* Every answer is a status a client can act on, with a body (maybe empty); a problem
	 * document says the status it came with (RFC 7807 section 3.1). */
	if (r.body != NULL && (r.status < 100 || r.status > 599))
		abort();
	if (r.body != NULL && strcmp(r.content_type, "application/problem+json") == 0)
		problem_check(&r);
	api_call_response_free(&r);
	api_fixture_settle(&fixture, (flags & FLAG_VALID) != 0);
	free(url);
	free(bearer);
	free(admin);
	free(rest);
	return 0;
}
