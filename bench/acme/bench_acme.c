/*
 * bench_acme.c - the ACME load generator: complete RFC 8555 orders per second against a
 * running ACME server (agentca's /acme/directory or Pebble), one account reused for every
 * order, http-01 answered by the generator itself.
 *
 *   bench_acme --directory URL --cacert ROOT.pem [--target NAME] [--http-port N]
 *              [--concurrency C] [--seconds S | --orders N] [--domain SUFFIX]
 *
 * Before the clock starts: one P-256 account key, newAccount (termsOfServiceAgreed), a P-256
 * key per worker for its CSRs, and the http-01 responder on 127.0.0.1:N (default 5002),
 * which answers GET /.well-known/acme-challenge/TOKEN with TOKEN "." thumbprint: the key
 * authorization of any token of this account, so no table is shared with the workers.
 *
 * Each of the C workers is a thread with one keep-alive libcurl handle (TLS verified against
 * ROOT.pem) and its own nonce, and completes orders one after another: newOrder for one DNS
 * name (o<N>-w<W>.SUFFIX), the authorization (POST-as-GET), POST {} to its http-01
 * challenge; when that answer says the challenge is valid, the authorization and so the
 * order are ready (RFC 8555 7.1.6) and finalize comes next, as lego does; otherwise the
 * order is polled until ready (and polled after finalize too if the server answers
 * orderNotReady). Finalize sends a fresh CSR for the name (the worker's P-256 key, CN and
 * one DNS SAN, signed anew for each order); unless its answer is valid the order is polled
 * until valid; then the certificate is downloaded. Every request is a flattened JWS signed
 * ES256 with OpenSSL (kid after newAccount), each nonce taken from the previous answer's
 * Replay-Nonce; a badNonce answer is retried with the new nonce (Pebble rejects some on
 * purpose unless PEBBLE_WFE_NONCEREJECT=0). Polls wait 2 ms, doubling to 100 ms. An order
 * counts when its certificate is a PEM certificate chain. Against agentca, which holds a
 * challenge POST until its validation is done, an order takes 5 requests.
 *
 * Kept cheap, so that the CPU it takes from a server on the same machine is small: OpenSSL
 * objects (signing context, SHA-256, each worker's CSR object with its key) made once.
 * Prints one line:
 *
 *   target=NAME concurrency=C seconds=S orders=N failed=N rate=R p50_ms=X p99_ms=Y
 *       requests_per_order=Q
 *
 * and the first failure on stderr. Exit 0 when every order completed, 1 otherwise, 2 on
 * usage errors. bench/acme/run.sh runs it against agentca and Pebble in one run.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include "common/base64url.h"

#define BODY_MAX (1 << 20)
#define URL_MAX 1024
#define NONCE_MAX 256
#define MAX_LATENCIES (1 << 20)
#define POLL_FIRST_MS 2
#define POLL_MAX_MS 100
#define POLL_LIMIT_MS 30000

struct options {
	const char *directory;
	const char *cacert;
	const char *target;
	const char *domain;
	int http_port;
	int concurrency;
	double seconds;
	long orders;
};

/* What every worker reads; set before the clock. */
static struct {
	struct options o;
	EVP_PKEY *account_key;
	EVP_MD *sha256;      /* fetched once, for every JWS */
	char jwk[256];       /* {"crv":"P-256","kty":"EC","x":"..","y":".."} */
	char thumbprint[64]; /* base64url(SHA-256(jwk)) */
	char kid[URL_MAX];   /* the account URL */
	char new_nonce[URL_MAX];
	char new_account[URL_MAX];
	char new_order[URL_MAX];
	atomic_long next_order, ok, failed, latency_count;
	atomic_long requests; /* HTTP requests sent by the workers (the account's not counted) */
	atomic_int stop;
	double *latencies_ms;
	double deadline;
	pthread_mutex_t error_lock;
	char first_error[512];
	int http_fd;
} g;

/* One worker's connection: a libcurl handle, the last answer and the next nonce. */
struct conn {
	CURL *curl;
	char *body;
	size_t body_len;
	int body_overflow;
	long status;
	char nonce[NONCE_MAX];
	char location[URL_MAX];
	char errbuf[CURL_ERROR_SIZE];
	int counted;            /* a worker's connection: its requests go into g.requests */
	EVP_PKEY_CTX *sign_ctx; /* the account key, initialized for signing once */
};

static double
now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void record_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
record_error(const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&g.error_lock);
	if (g.first_error[0] == '\0') {
		va_start(ap, fmt);
		vsnprintf(g.first_error, sizeof(g.first_error), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&g.error_lock);
}

/* ---- HTTP ---- */

static size_t
on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct conn *c = userdata;
	size_t n = size * nmemb;

	if (n > BODY_MAX - c->body_len) {
		c->body_overflow = 1;
		return 0;
	}
	memcpy(c->body + c->body_len, ptr, n);
	c->body_len += n;
	c->body[c->body_len] = '\0';
	return n;
}

/* Copy the value of header line "Name: value\r\n" into out if the name matches. */
static void
header_value(const char *line, size_t len, const char *name, char *out, size_t out_len)
{
	size_t nlen = strlen(name), vlen;
	const char *v;

	if (len <= nlen + 1 || strncasecmp(line, name, nlen) != 0 || line[nlen] != ':')
		return;
	v = line + nlen + 1;
	vlen = len - nlen - 1;
	while (vlen > 0 && (*v == ' ' || *v == '\t')) {
		v++;
		vlen--;
	}
	while (vlen > 0 && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' '))
		vlen--;
	if (vlen >= out_len)
		return;
	memcpy(out, v, vlen);
	out[vlen] = '\0';
}

static size_t
on_header(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct conn *c = userdata;
	size_t n = size * nmemb;

	header_value(ptr, n, "Replay-Nonce", c->nonce, sizeof(c->nonce));
	header_value(ptr, n, "Location", c->location, sizeof(c->location));
	return n;
}

/* One request: GET (body NULL, head 0), HEAD (head 1) or POST of a JOSE body. */
static int
http(struct conn *c, const char *url, const char *body, int head)
{
	struct curl_slist *headers = NULL;
	CURLcode code;

	c->body_len = 0;
	c->body[0] = '\0';
	c->body_overflow = 0;
	c->location[0] = '\0';
	c->status = 0;
	curl_easy_setopt(c->curl, CURLOPT_URL, url);
	curl_easy_setopt(c->curl, CURLOPT_NOBODY, head ? 1L : 0L);
	if (body != NULL) {
		headers = curl_slist_append(NULL, "Content-Type: application/jose+json");
		curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, headers);
		curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, body);
	} else {
		curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, NULL);
		curl_easy_setopt(c->curl, CURLOPT_HTTPGET, 1L);
		if (head)
			curl_easy_setopt(c->curl, CURLOPT_NOBODY, 1L);
	}
	if (c->counted)
		atomic_fetch_add(&g.requests, 1);
	code = curl_easy_perform(c->curl);
	curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, NULL);
	curl_slist_free_all(headers);
	if (code != CURLE_OK) {
		record_error("%s: %s", url,
		             c->errbuf[0] != '\0' ? c->errbuf : curl_easy_strerror(code));
		return -1;
	}
	curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &c->status);
	return 0;
}

static int
conn_open(struct conn *c)
{
	memset(c, 0, sizeof(*c));
	c->body = malloc(BODY_MAX + 1);
	c->curl = curl_easy_init();
	c->sign_ctx = EVP_PKEY_CTX_new_from_pkey(NULL, g.account_key, NULL);
	if (c->body == NULL || c->curl == NULL || c->sign_ctx == NULL ||
	    EVP_PKEY_sign_init(c->sign_ctx) != 1)
		return -1;
	curl_easy_setopt(c->curl, CURLOPT_CAINFO, g.o.cacert);
	curl_easy_setopt(c->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c->curl, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(c->curl, CURLOPT_TIMEOUT, 30L);
	curl_easy_setopt(c->curl, CURLOPT_ERRORBUFFER, c->errbuf);
	curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, c);
	curl_easy_setopt(c->curl, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c->curl, CURLOPT_HEADERDATA, c);
	curl_easy_setopt(c->curl, CURLOPT_USERAGENT, "agentca-bench-acme");
	return 0;
}

static void
conn_close(struct conn *c)
{
	EVP_PKEY_CTX_free(c->sign_ctx);
	curl_easy_cleanup(c->curl);
	free(c->body);
}

/* ---- JWS ---- */

/* ES256 over input with the connection's signing context: SHA-256 (fetched once) of the
 * input, ECDSA over the digest, r || s, 32 bytes each, as base64url. */
static int
sign_es256(struct conn *c, const char *input, char out[100])
{
	unsigned char digest[32], der[80], raw[64];
	const unsigned char *p = der;
	size_t der_len = sizeof(der);
	unsigned int digest_len = 0;
	ECDSA_SIG *sig = NULL;
	const BIGNUM *r, *s;
	int rc = -1;

	if (EVP_Digest(input, strlen(input), digest, &digest_len, g.sha256, NULL) != 1 ||
	    EVP_PKEY_sign(c->sign_ctx, der, &der_len, digest, digest_len) != 1)
		goto out;
	sig = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
	if (sig == NULL)
		goto out;
	ECDSA_SIG_get0(sig, &r, &s);
	if (BN_bn2binpad(r, raw, 32) != 32 || BN_bn2binpad(s, raw + 32, 32) != 32)
		goto out;
	base64url_encode(raw, 64, out, 100);
	rc = 0;
out:
	ECDSA_SIG_free(sig);
	return rc;
}

static int
fetch_nonce(struct conn *c)
{
	if (http(c, g.new_nonce, NULL, 1) != 0)
		return -1;
	if (c->nonce[0] == '\0') {
		record_error("%s gave no Replay-Nonce", g.new_nonce);
		return -1;
	}
	return 0;
}

/* POST a JWS of payload (NULL: POST-as-GET) to url, signed with the account key (jwk
 * instead of kid for newAccount). A badNonce answer is retried with the fresh nonce. */
static int
jws_post(struct conn *c, const char *url, const char *payload, int use_jwk)
{
	for (int attempt = 0; attempt < 5; attempt++) {
		char prot[2048], sig[100], *prot_b64 = NULL, *payload_b64 = NULL, *input = NULL;
		char *body = NULL;
		int rc = -1, bad_nonce = 0;

		if (c->nonce[0] == '\0' && fetch_nonce(c) != 0)
			return -1;
		if (use_jwk)
			snprintf(prot, sizeof(prot),
			         "{\"alg\":\"ES256\",\"jwk\":%s,\"nonce\":\"%s\",\"url\":\"%s\"}",
			         g.jwk, c->nonce, url);
		else
			snprintf(
			    prot, sizeof(prot),
			    "{\"alg\":\"ES256\",\"kid\":\"%s\",\"nonce\":\"%s\",\"url\":\"%s\"}",
			    g.kid, c->nonce, url);
		c->nonce[0] = '\0';
		prot_b64 = base64url_encode_alloc((const unsigned char *)prot, strlen(prot));
		payload_b64 =
		    payload != NULL
		        ? base64url_encode_alloc((const unsigned char *)payload, strlen(payload))
		        : strdup("");
		if (prot_b64 == NULL || payload_b64 == NULL)
			goto next;
		input = malloc(strlen(prot_b64) + strlen(payload_b64) + 2);
		if (input == NULL)
			goto next;
		sprintf(input, "%s.%s", prot_b64, payload_b64);
		if (sign_es256(c, input, sig) != 0) {
			record_error("ES256 signing failed");
			goto next;
		}
		body = malloc(strlen(input) + 200);
		if (body == NULL)
			goto next;
		sprintf(body, "{\"protected\":\"%s\",\"payload\":\"%s\",\"signature\":\"%s\"}",
		        prot_b64, payload_b64, sig);
		if (http(c, url, body, 0) != 0)
			goto next;
		bad_nonce = c->status == 400 && strstr(c->body, "badNonce") != NULL;
		rc = 0;
	next:
		free(body);
		free(input);
		free(payload_b64);
		free(prot_b64);
		if (rc != 0)
			return -1;
		if (!bad_nonce)
			return 0;
	}
	record_error("%s: badNonce five times in a row", url);
	return -1;
}

/* The answer as JSON with the wanted status code; NULL (and the error recorded) otherwise. */
static json_t *
answer_json(struct conn *c, const char *what, long want_status)
{
	json_t *j;

	if (c->status != want_status) {
		record_error("%s: HTTP %ld: %.300s", what, c->status, c->body);
		return NULL;
	}
	j = json_loads(c->body, 0, NULL);
	if (j == NULL || !json_is_object(j)) {
		record_error("%s: the answer is not a JSON object", what);
		json_decref(j);
		return NULL;
	}
	return j;
}

static const char *
jstr(json_t *obj, const char *key)
{
	return json_string_value(json_object_get(obj, key));
}

/* POST-as-GET url until its status is want (or the limit); returns the object. */
static json_t *
poll_until(struct conn *c, const char *url, const char *what, const char *want)
{
	int wait_ms = POLL_FIRST_MS, waited = 0;

	for (;;) {
		json_t *j;
		const char *status;

		if (jws_post(c, url, NULL, 0) != 0)
			return NULL;
		j = answer_json(c, what, 200);
		if (j == NULL)
			return NULL;
		status = jstr(j, "status");
		if (status != NULL && strcmp(status, want) == 0)
			return j;
		if (status == NULL || strcmp(status, "invalid") == 0 || waited > POLL_LIMIT_MS) {
			char *dump = json_dumps(j, JSON_COMPACT);

			record_error("%s: status %s: %.300s", what,
			             status != NULL ? status : "none", dump != NULL ? dump : "");
			free(dump);
			json_decref(j);
			return NULL;
		}
		json_decref(j);
		usleep((useconds_t)wait_ms * 1000);
		waited += wait_ms;
		wait_ms = wait_ms * 2 > POLL_MAX_MS ? POLL_MAX_MS : wait_ms * 2;
	}
}

/* A worker's CSRs: one request object whose public key (the worker's P-256 key) is set
 * once; each order replaces its subject and extensions and signs it again. Setting the
 * key is the costly part of a CSR in OpenSSL 3 (an encoder and a decoder per call). */
struct csr_maker {
	EVP_PKEY *key;
	X509_REQ *req;
};

static int
csr_maker_open(struct csr_maker *m)
{
	m->key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	m->req = X509_REQ_new();
	if (m->key == NULL || m->req == NULL || X509_REQ_set_version(m->req, 0) != 1 ||
	    X509_REQ_set_pubkey(m->req, m->key) != 1)
		return -1;
	return 0;
}

static void
csr_maker_close(struct csr_maker *m)
{
	X509_REQ_free(m->req);
	EVP_PKEY_free(m->key);
}

/* A fresh DER CSR for name (CN and one DNS SAN) signed by the worker's key, as base64url. */
static char *
make_csr(struct csr_maker *m, const char *name)
{
	X509_NAME *subject = X509_NAME_new();
	STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
	GENERAL_NAMES *sans = GENERAL_NAMES_new();
	GENERAL_NAME *san = GENERAL_NAME_new();
	ASN1_IA5STRING *dns = ASN1_IA5STRING_new();
	X509_EXTENSION *ext = NULL;
	X509_ATTRIBUTE *old;
	unsigned char *der = NULL;
	char *out = NULL;
	int der_len, at;

	if (subject == NULL || exts == NULL || sans == NULL || san == NULL || dns == NULL ||
	    X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC, (const unsigned char *)name, -1,
	                               -1, 0) != 1 ||
	    X509_REQ_set_subject_name(m->req, subject) != 1 || ASN1_STRING_set(dns, name, -1) != 1)
		goto out;
	GENERAL_NAME_set0_value(san, GEN_DNS, dns);
	dns = NULL;
	if (sk_GENERAL_NAME_push(sans, san) == 0)
		goto out;
	san = NULL;
	ext = X509V3_EXT_i2d(NID_subject_alt_name, 0, sans);
	if (ext == NULL || sk_X509_EXTENSION_push(exts, ext) == 0)
		goto out;
	ext = NULL;
	/* The previous order's extensions out, this one's in. */
	while ((at = X509_REQ_get_attr_by_NID(m->req, NID_ext_req, -1)) >= 0) {
		old = X509_REQ_delete_attr(m->req, at);
		X509_ATTRIBUTE_free(old);
	}
	if (X509_REQ_add_extensions(m->req, exts) != 1 ||
	    X509_REQ_sign(m->req, m->key, EVP_sha256()) <= 0)
		goto out;
	der_len = i2d_X509_REQ(m->req, &der);
	if (der_len <= 0)
		goto out;
	out = base64url_encode_alloc(der, (size_t)der_len);
out:
	OPENSSL_free(der);
	X509_EXTENSION_free(ext);
	ASN1_IA5STRING_free(dns);
	GENERAL_NAME_free(san);
	GENERAL_NAMES_free(sans);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_NAME_free(subject);
	return out;
}

/* One order from newOrder to the downloaded certificate. */
static int
complete_order(struct conn *c, struct csr_maker *csrs, long serial, int worker)
{
	char name[256], payload[2048], order_url[URL_MAX], authz_url[URL_MAX];
	char challenge_url[URL_MAX], finalize_url[URL_MAX], cert_url[URL_MAX];
	json_t *order = NULL, *authz = NULL, *done = NULL, *j = NULL;
	char *csr = NULL;
	size_t i;
	json_t *ch;
	int rc = -1, polled = 0;

	snprintf(name, sizeof(name), "o%ld-w%d.%s", serial, worker, g.o.domain);
	snprintf(payload, sizeof(payload),
	         "{\"identifiers\":[{\"type\":\"dns\",\"value\":\"%s\"}]}", name);
	if (jws_post(c, g.new_order, payload, 0) != 0)
		goto out;
	order = answer_json(c, "newOrder", 201);
	if (order == NULL)
		goto out;
	if (c->location[0] == '\0' || jstr(order, "finalize") == NULL ||
	    json_string_value(json_array_get(json_object_get(order, "authorizations"), 0)) ==
	        NULL) {
		record_error("newOrder: no Location, finalize or authorization");
		goto out;
	}
	snprintf(order_url, sizeof(order_url), "%s", c->location);
	snprintf(finalize_url, sizeof(finalize_url), "%s", jstr(order, "finalize"));
	snprintf(authz_url, sizeof(authz_url), "%s",
	         json_string_value(json_array_get(json_object_get(order, "authorizations"), 0)));

	if (jws_post(c, authz_url, NULL, 0) != 0)
		goto out;
	authz = answer_json(c, "authorization", 200);
	if (authz == NULL)
		goto out;
	challenge_url[0] = '\0';
	json_array_foreach(json_object_get(authz, "challenges"), i, ch)
	{
		const char *type = jstr(ch, "type");

		if (type != NULL && strcmp(type, "http-01") == 0 && jstr(ch, "url") != NULL)
			snprintf(challenge_url, sizeof(challenge_url), "%s", jstr(ch, "url"));
	}
	if (strcmp(jstr(authz, "status") != NULL ? jstr(authz, "status") : "", "valid") != 0) {
		if (challenge_url[0] == '\0') {
			record_error("authorization for %s offers no http-01 challenge", name);
			goto out;
		}
		if (jws_post(c, challenge_url, "{}", 0) != 0)
			goto out;
		j = answer_json(c, "challenge", 200);
		if (j == NULL)
			goto out;
		/* A challenge answered "valid" has made its authorization valid, and the order's
		 * only authorization valid makes the order ready (RFC 8555 7.1.3, 7.1.6): then
		 * finalize comes next, as lego does. Otherwise the order, not the authorization,
		 * is polled until ready: Pebble 2.4 can deadlock when an authorization is read
		 * while its validation completes. */
		if (strcmp(jstr(j, "status") != NULL ? jstr(j, "status") : "", "valid") != 0) {
			done = poll_until(c, order_url, "order", "ready");
			if (done == NULL)
				goto out;
			json_decref(done);
			done = NULL;
			polled = 1;
		}
	}

	csr = make_csr(csrs, name);
	if (csr == NULL) {
		record_error("cannot make a CSR for %s", name);
		goto out;
	}
	snprintf(payload, sizeof(payload), "{\"csr\":\"%s\"}", csr);
	if (jws_post(c, finalize_url, payload, 0) != 0)
		goto out;
	if (c->status == 403 && !polled && strstr(c->body, "orderNotReady") != NULL) {
		/* The server has not made the order ready yet: poll it, then finalize. */
		done = poll_until(c, order_url, "order", "ready");
		if (done == NULL)
			goto out;
		json_decref(done);
		done = NULL;
		if (jws_post(c, finalize_url, payload, 0) != 0)
			goto out;
	}
	json_decref(j);
	j = answer_json(c, "finalize", 200);
	if (j == NULL)
		goto out;
	if (strcmp(jstr(j, "status") != NULL ? jstr(j, "status") : "", "valid") == 0) {
		done = j;
		j = NULL;
	} else {
		done = poll_until(c, order_url, "order", "valid");
		if (done == NULL)
			goto out;
	}
	if (jstr(done, "certificate") == NULL) {
		record_error("order for %s is valid without a certificate URL", name);
		goto out;
	}
	snprintf(cert_url, sizeof(cert_url), "%s", jstr(done, "certificate"));
	if (jws_post(c, cert_url, NULL, 0) != 0)
		goto out;
	if (c->status != 200 || strncmp(c->body, "-----BEGIN CERTIFICATE-----", 27) != 0) {
		record_error("certificate download for %s: HTTP %ld: %.200s", name, c->status,
		             c->body);
		goto out;
	}
	rc = 0;
out:
	free(csr);
	json_decref(done);
	json_decref(j);
	json_decref(authz);
	json_decref(order);
	return rc;
}

static void *
worker_main(void *arg)
{
	int worker = (int)(intptr_t)arg;
	struct conn c;
	struct csr_maker csrs = {0};

	if (conn_open(&c) != 0 || csr_maker_open(&csrs) != 0) {
		record_error("worker %d: out of memory", worker);
		atomic_fetch_add(&g.failed, 1);
		goto out;
	}
	c.counted = 1;
	while (!atomic_load(&g.stop)) {
		long serial = atomic_fetch_add(&g.next_order, 1);
		double start;

		if (g.o.orders > 0 && serial >= g.o.orders)
			break;
		if (g.o.orders == 0 && now_seconds() >= g.deadline)
			break;
		start = now_seconds();
		if (complete_order(&c, &csrs, serial, worker) == 0) {
			long slot = atomic_fetch_add(&g.latency_count, 1);

			if (slot < MAX_LATENCIES)
				g.latencies_ms[slot] = (now_seconds() - start) * 1000.0;
			atomic_fetch_add(&g.ok, 1);
		} else {
			atomic_fetch_add(&g.failed, 1);
		}
	}
out:
	csr_maker_close(&csrs);
	conn_close(&c);
	return NULL;
}

/* ---- the http-01 responder ---- */

static void
serve_one(int fd)
{
	char req[4096], resp[512], path[256];
	size_t len = 0;
	const char *prefix = "GET /.well-known/acme-challenge/";
	struct timeval tv = {.tv_sec = 2};
	int n;

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	while (len < sizeof(req) - 1) {
		ssize_t r = recv(fd, req + len, sizeof(req) - 1 - len, 0);

		if (r <= 0)
			return;
		len += (size_t)r;
		req[len] = '\0';
		if (strstr(req, "\r\n\r\n") != NULL)
			break;
	}
	path[0] = '\0';
	if (strncmp(req, prefix, strlen(prefix)) == 0) {
		const char *t = req + strlen(prefix);
		size_t tl =
		    strspn(t, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_");

		if (tl > 0 && tl < 128 && t[tl] == ' ')
			snprintf(path, sizeof(path), "%.*s.%s", (int)tl, t, g.thumbprint);
	}
	if (path[0] != '\0')
		n = snprintf(resp, sizeof(resp),
		             "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
		             "%zu\r\nConnection: close\r\n\r\n%s",
		             strlen(path), path);
	else
		n = snprintf(resp, sizeof(resp),
		             "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: "
		             "close\r\n\r\n");
	send(fd, resp, (size_t)n, MSG_NOSIGNAL);
}

static void *
responder_main(void *arg)
{
	(void)arg;
	while (!atomic_load(&g.stop)) {
		struct pollfd pfd = {.fd = g.http_fd, .events = POLLIN};
		int fd;

		if (poll(&pfd, 1, 100) <= 0)
			continue;
		fd = accept(g.http_fd, NULL, NULL);
		if (fd < 0)
			continue;
		serve_one(fd);
		close(fd);
	}
	return NULL;
}

static int
responder_listen(int port)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	int one = 1;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	g.http_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (g.http_fd < 0)
		return -1;
	setsockopt(g.http_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(g.http_fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
	    listen(g.http_fd, 512) != 0)
		return -1;
	return 0;
}

/* ---- setup ---- */

static int
make_account_key(void)
{
	BIGNUM *x = NULL, *y = NULL;
	unsigned char xb[32], yb[32], digest[32];
	char xs[48], ys[48];
	unsigned int dlen = 0;
	int rc = -1;

	g.account_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	g.sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	if (g.account_key == NULL || g.sha256 == NULL ||
	    EVP_PKEY_get_bn_param(g.account_key, OSSL_PKEY_PARAM_EC_PUB_X, &x) != 1 ||
	    EVP_PKEY_get_bn_param(g.account_key, OSSL_PKEY_PARAM_EC_PUB_Y, &y) != 1 ||
	    BN_bn2binpad(x, xb, 32) != 32 || BN_bn2binpad(y, yb, 32) != 32)
		goto out;
	base64url_encode(xb, 32, xs, sizeof(xs));
	base64url_encode(yb, 32, ys, sizeof(ys));
	/* RFC 7638: the required members in lexical order, no white space. */
	snprintf(g.jwk, sizeof(g.jwk),
	         "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", xs, ys);
	if (EVP_Digest(g.jwk, strlen(g.jwk), digest, &dlen, g.sha256, NULL) != 1)
		goto out;
	base64url_encode(digest, 32, g.thumbprint, sizeof(g.thumbprint));
	rc = 0;
out:
	BN_free(x);
	BN_free(y);
	return rc;
}

/* Read the directory and register the account. */
static int
setup_account(void)
{
	struct conn c;
	json_t *dir = NULL, *acct = NULL;
	int rc = -1;

	if (conn_open(&c) != 0)
		goto out;
	if (http(&c, g.o.directory, NULL, 0) != 0)
		goto out;
	dir = answer_json(&c, "directory", 200);
	if (dir == NULL)
		goto out;
	if (jstr(dir, "newNonce") == NULL || jstr(dir, "newAccount") == NULL ||
	    jstr(dir, "newOrder") == NULL) {
		record_error("directory lacks newNonce, newAccount or newOrder");
		goto out;
	}
	snprintf(g.new_nonce, sizeof(g.new_nonce), "%s", jstr(dir, "newNonce"));
	snprintf(g.new_account, sizeof(g.new_account), "%s", jstr(dir, "newAccount"));
	snprintf(g.new_order, sizeof(g.new_order), "%s", jstr(dir, "newOrder"));
	if (jws_post(&c, g.new_account, "{\"termsOfServiceAgreed\":true}", 1) != 0)
		goto out;
	acct = answer_json(&c, "newAccount", 201);
	if (acct == NULL)
		goto out;
	if (c.location[0] == '\0') {
		record_error("newAccount: no Location");
		goto out;
	}
	snprintf(g.kid, sizeof(g.kid), "%s", c.location);
	rc = 0;
out:
	json_decref(acct);
	json_decref(dir);
	conn_close(&c);
	return rc;
}

static int
compare_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static int
usage(void)
{
	fprintf(stderr, "usage: bench_acme --directory URL --cacert ROOT.pem [--target NAME] "
	                "[--http-port N] [--concurrency C] [--seconds S | --orders N] "
	                "[--domain SUFFIX]\n");
	return 2;
}

int
main(int argc, char **argv)
{
	pthread_t *threads = NULL, responder;
	double start, elapsed, p50 = 0, p99 = 0;
	long n;
	int started = 0, responder_started = 0, status = 1;

	g.o.target = "acme";
	g.o.domain = "bench.example.test";
	g.o.http_port = 5002;
	g.o.concurrency = 8;
	g.o.seconds = 10;
	for (int i = 1; i < argc; i += 2) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (v == NULL)
			return usage();
		if (strcmp(a, "--directory") == 0)
			g.o.directory = v;
		else if (strcmp(a, "--cacert") == 0)
			g.o.cacert = v;
		else if (strcmp(a, "--target") == 0)
			g.o.target = v;
		else if (strcmp(a, "--domain") == 0)
			g.o.domain = v;
		else if (strcmp(a, "--http-port") == 0)
			g.o.http_port = atoi(v);
		else if (strcmp(a, "--concurrency") == 0)
			g.o.concurrency = atoi(v);
		else if (strcmp(a, "--seconds") == 0)
			g.o.seconds = atof(v);
		else if (strcmp(a, "--orders") == 0)
			g.o.orders = atol(v);
		else
			return usage();
	}
	if (g.o.directory == NULL || g.o.cacert == NULL || g.o.concurrency < 1 ||
	    g.o.concurrency > 1024 || g.o.http_port < 1 || g.o.http_port > 65535 ||
	    (g.o.orders <= 0 && g.o.seconds <= 0))
		return usage();
	signal(SIGPIPE, SIG_IGN);
	pthread_mutex_init(&g.error_lock, NULL);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	g.latencies_ms = calloc(MAX_LATENCIES, sizeof(double));
	threads = calloc((size_t)g.o.concurrency, sizeof(*threads));
	if (g.latencies_ms == NULL || threads == NULL) {
		fprintf(stderr, "bench_acme: out of memory\n");
		goto out;
	}
	if (make_account_key() != 0) {
		fprintf(stderr, "bench_acme: cannot make the account key\n");
		goto out;
	}
	if (responder_listen(g.o.http_port) != 0) {
		fprintf(stderr, "bench_acme: http-01 responder on 127.0.0.1:%d: %s\n",
		        g.o.http_port, strerror(errno));
		goto out;
	}
	if (pthread_create(&responder, NULL, responder_main, NULL) != 0)
		goto out;
	responder_started = 1;
	if (setup_account() != 0) {
		fprintf(stderr, "bench_acme: account at %s: %s\n", g.o.directory, g.first_error);
		goto out;
	}

	start = now_seconds();
	g.deadline = start + g.o.seconds;
	for (; started < g.o.concurrency; started++)
		if (pthread_create(&threads[started], NULL, worker_main,
		                   (void *)(intptr_t)started) != 0)
			break;
	for (int i = 0; i < started; i++)
		pthread_join(threads[i], NULL);
	elapsed = now_seconds() - start;

	n = atomic_load(&g.latency_count);
	if (n > MAX_LATENCIES)
		n = MAX_LATENCIES;
	if (n > 0) {
		qsort(g.latencies_ms, (size_t)n, sizeof(double), compare_double);
		p50 = g.latencies_ms[n / 2];
		p99 = g.latencies_ms[(size_t)((double)n * 0.99)];
	}
	printf("target=%s concurrency=%d seconds=%.2f orders=%ld failed=%ld rate=%.1f p50_ms=%.1f "
	       "p99_ms=%.1f requests_per_order=%.2f\n",
	       g.o.target, g.o.concurrency, elapsed, atomic_load(&g.ok), atomic_load(&g.failed),
	       elapsed > 0 ? (double)atomic_load(&g.ok) / elapsed : 0.0, p50, p99,
	       atomic_load(&g.ok) > 0
	           ? (double)atomic_load(&g.requests) / (double)atomic_load(&g.ok)
	           : 0.0);
	fflush(stdout);
	if (g.first_error[0] != '\0')
		fprintf(stderr, "bench_acme: first failure: %s\n", g.first_error);
	status = atomic_load(&g.failed) == 0 && atomic_load(&g.ok) > 0 && started == g.o.concurrency
	             ? 0
	             : 1;
out:
	atomic_store(&g.stop, 1);
	if (responder_started)
		pthread_join(responder, NULL);
	if (g.http_fd > 0)
		close(g.http_fd);
	EVP_PKEY_free(g.account_key);
	EVP_MD_free(g.sha256);
	free(threads);
	free(g.latencies_ms);
	curl_global_cleanup();
	pthread_mutex_destroy(&g.error_lock);
	return status;
}
