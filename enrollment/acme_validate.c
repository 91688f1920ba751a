/*
 * acme_validate.c - the validation authority's worker pool (see acme_validate.h): a bounded
 * queue of copied jobs, N worker threads that each take one job, check it and call done()
 * once, and a stop that answers what is still queued with "the CA is shutting down".
 *
 * Also here: what every check shares. The objects made once for the pool's life (the
 * tls-alpn-01 SSL_CTX, the fetched SHA-256, the acmeIdentifier OID), the input checks that
 * run before any byte goes on the network (a job is the ACME front's copy of client input),
 * and name resolution through the configured DNS server. The checks themselves live in
 * acme_validate_http01.c, acme_validate_dns.c and acme_validate_tlsalpn.c.
 *
 * Invariant of the queue: a job is either in the ring, or held by exactly one worker, or
 * answered; the worker that removes it from the ring under the lock is the one that calls
 * done(), after the lock is released.
 */
#include "enrollment/acme_validate.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <openssl/objects.h>

#include "enrollment/acme_validate_internal.h"

#define DEFAULT_THREADS 4
#define DEFAULT_TIMEOUT_MS 10000
#define DEFAULT_QUEUE_MAX 4096
#define MAX_THREADS 256

struct queued_job {
	struct acme_validation job;
	acme_validation_done done;
	void *arg;
};

struct acme_validator {
	struct acme_checker checker;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	struct queued_job *ring;
	size_t ring_cap, ring_head, ring_count;
	int stopping;
	pthread_t *threads;
	int thread_count;
	int curl_ready;
};

void
acme_fail(struct acme_validation_result *out, const char *error_type, const char *fmt, ...)
{
	va_list ap;

	out->ok = 0;
	snprintf(out->error_type, sizeof(out->error_type), "%s", error_type);
	va_start(ap, fmt);
	vsnprintf(out->detail, sizeof(out->detail), fmt, ap);
	va_end(ap);
}

int
acme_key_authorization_digest(const struct acme_checker *c, const char *key_authorization,
                              unsigned char digest[32])
{
	unsigned int len = 0;

	if (EVP_Digest(key_authorization, strlen(key_authorization), digest, &len, c->sha256,
	               NULL) != 1 ||
	    len != 32)
		return -1;
	return 0;
}

int
acme_resolve(const struct acme_checker *c, const char *host, int is_ip, int64_t deadline_ms,
             struct acme_addresses *addrs, struct acme_validation_result *out)
{
	static const uint16_t types[] = {DNS_TYPE_AAAA, DNS_TYPE_A};
	struct dns_answer *answer = NULL;
	struct ac_err err;
	int rc = -1;

	memset(addrs, 0, sizeof(*addrs));
	if (is_ip) {
		if (inet_pton(AF_INET, host, addrs->list[0].addr) == 1)
			addrs->list[0].family = AF_INET;
		else if (inet_pton(AF_INET6, host, addrs->list[0].addr) == 1)
			addrs->list[0].family = AF_INET6;
		else {
			acme_fail(out, "rejectedIdentifier", "%.64s is not an IP address", host);
			goto out;
		}
		addrs->count = 1;
		rc = 0;
		goto out;
	}
	answer = malloc(2 * sizeof(*answer));
	if (answer == NULL) {
		acme_fail(out, "connection", "the CA is out of memory; try again later");
		goto out;
	}
	/* Both questions at once, on one socket: one round trip instead of two. */
	ac_err_clear(&err);
	if (dns_lookup_each(&c->resolver, host, types, 2, deadline_ms, answer, &err) != 0) {
		acme_fail(out, "dns", "looking up AAAA and A for %.64s: %s", host, err.msg);
		goto out;
	}
	for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
		if (answer[t].rcode != DNS_RCODE_NOERROR && answer[t].rcode != DNS_RCODE_NXDOMAIN) {
			acme_fail(out, "dns", "DNS server answered rcode %d for the %s of %.64s",
			          answer[t].rcode, types[t] == DNS_TYPE_A ? "A" : "AAAA", host);
			goto out;
		}
		for (size_t i = 0; i < answer[t].count && addrs->count < ACME_MAX_ADDRESSES; i++) {
			addrs->list[addrs->count].family =
			    answer[t].records[i].type == DNS_TYPE_A ? AF_INET : AF_INET6;
			memcpy(addrs->list[addrs->count].addr, answer[t].records[i].data,
			       answer[t].records[i].len);
			addrs->count++;
		}
	}
	if (addrs->count == 0) {
		acme_fail(out, "dns", "no A or AAAA record found for %.64s", host);
		goto out;
	}
	rc = 0;
out:
	free(answer);
	return rc;
}

/* RFC 1035 host name: labels of letters, digits and hyphens, 1-63 bytes, 253 in all. */
static int
dns_name_valid(const char *name)
{
	size_t len = strlen(name), label = 0;

	if (len == 0 || len > 253 || name[len - 1] == '.')
		return 0;
	for (size_t i = 0; i <= len; i++) {
		char ch = name[i];

		if (ch == '.' || ch == '\0') {
			if (label == 0 || name[i - 1] == '-')
				return 0;
			label = 0;
			continue;
		}
		if (label == 0 && ch == '-')
			return 0;
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '-'))
			return 0;
		if (++label > 63)
			return 0;
	}
	return 1;
}

static int
base64url_valid(const char *s, size_t len)
{
	if (len == 0)
		return 0;
	for (size_t i = 0; i < len; i++) {
		char ch = s[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '-' || ch == '_'))
			return 0;
	}
	return 1;
}

/* The job's fields before anything goes on the network: 0 if usable, else out is filled. */
static int
job_valid(const struct acme_validation *job, struct acme_validation_result *out)
{
	unsigned char ip[16];
	size_t token_len, ka_len;

	if (memchr(job->identifier, '\0', sizeof(job->identifier)) == NULL ||
	    memchr(job->token, '\0', sizeof(job->token)) == NULL ||
	    memchr(job->key_authorization, '\0', sizeof(job->key_authorization)) == NULL) {
		acme_fail(out, "unauthorized", "the validation request is not NUL-terminated");
		return -1;
	}
	if (job->type != ACME_CHALLENGE_HTTP_01 && job->type != ACME_CHALLENGE_DNS_01 &&
	    job->type != ACME_CHALLENGE_TLS_ALPN_01) {
		acme_fail(out, "unauthorized", "unknown challenge type %d", (int)job->type);
		return -1;
	}
	if (job->identifier_is_ip) {
		if (job->type == ACME_CHALLENGE_DNS_01) {
			acme_fail(out, "rejectedIdentifier",
			          "dns-01 cannot validate an IP address (RFC 8738 section 7)");
			return -1;
		}
		if (inet_pton(AF_INET, job->identifier, ip) != 1 &&
		    inet_pton(AF_INET6, job->identifier, ip) != 1) {
			acme_fail(out, "rejectedIdentifier", "\"%.64s\" is not an IP address",
			          job->identifier);
			return -1;
		}
	} else if (!dns_name_valid(job->identifier)) {
		acme_fail(out, "rejectedIdentifier",
		          "\"%.64s\" is not a DNS name (letters, digits, hyphens and dots only; "
		          "a wildcard's base name for dns-01)",
		          job->identifier);
		return -1;
	}
	token_len = strlen(job->token);
	ka_len = strlen(job->key_authorization);
	if (!base64url_valid(job->token, token_len)) {
		acme_fail(out, "unauthorized", "the challenge token is not base64url");
		return -1;
	}
	if (ka_len < token_len + 2 || memcmp(job->key_authorization, job->token, token_len) != 0 ||
	    job->key_authorization[token_len] != '.' ||
	    !base64url_valid(job->key_authorization + token_len + 1, ka_len - token_len - 1)) {
		acme_fail(out, "unauthorized",
		          "the key authorization is not the token, a dot and a base64url "
		          "thumbprint");
		return -1;
	}
	return 0;
}

/* Check job with a worker's state (its libcurl handle); see acme_validate_now. */
static void
validate_with(const struct acme_validator *v, struct acme_check_state *st,
              const struct acme_validation *job, struct acme_validation_result *out)
{
	int64_t deadline_ms = dns_monotonic_ms() + v->checker.timeout_ms;

	memset(out, 0, sizeof(*out));
	if (job_valid(job, out) != 0)
		return;
	switch (job->type) {
	case ACME_CHALLENGE_HTTP_01:
		acme_check_http01(&v->checker, st, job, deadline_ms, out);
		break;
	case ACME_CHALLENGE_DNS_01:
		acme_check_dns01(&v->checker, job, deadline_ms, out);
		break;
	case ACME_CHALLENGE_TLS_ALPN_01:
		acme_check_tlsalpn01(&v->checker, job, deadline_ms, out);
		break;
	}
	if (out->ok) {
		out->error_type[0] = '\0';
		out->detail[0] = '\0';
	}
}

void
acme_validate_now(const struct acme_validator *v, const struct acme_validation *job,
                  struct acme_validation_result *out)
{
	struct acme_check_state st = {0};

	validate_with(v, &st, job, out);
	acme_check_state_clear(&st);
}

/* A worker: take a job, check it (or refuse it when stopping), answer, repeat. Exits when
 * the pool stops and the queue is empty. */
static void *
worker_main(void *arg)
{
	struct acme_validator *v = arg;
	struct acme_check_state st = {0}; /* this thread's libcurl handle, made at first use */

	for (;;) {
		struct queued_job item;
		struct acme_validation_result result;
		int refuse;

		pthread_mutex_lock(&v->lock);
		while (v->ring_count == 0 && !v->stopping)
			pthread_cond_wait(&v->wake, &v->lock);
		if (v->ring_count == 0) {
			pthread_mutex_unlock(&v->lock);
			break;
		}
		item = v->ring[v->ring_head];
		v->ring_head = (v->ring_head + 1) % v->ring_cap;
		v->ring_count--;
		refuse = v->stopping;
		pthread_mutex_unlock(&v->lock);

		if (refuse) {
			memset(&result, 0, sizeof(result));
			acme_fail(&result, "connection",
			          "the CA is shutting down; try again later");
		} else {
			validate_with(v, &st, &item.job, &result);
		}
		item.done(item.arg, &result);
	}
	acme_check_state_clear(&st);
	return NULL;
}

/* Free what start made; threads must be joined already. */
static void
validator_free(struct acme_validator *v)
{
	if (v == NULL)
		return;
	SSL_CTX_free(v->checker.alpn_ctx);
	EVP_MD_free(v->checker.sha256);
	ASN1_OBJECT_free(v->checker.acme_identifier_oid);
	if (v->curl_ready)
		curl_global_cleanup();
	pthread_cond_destroy(&v->wake);
	pthread_mutex_destroy(&v->lock);
	free(v->ring);
	free(v->threads);
	free(v);
}

/* The tls-alpn-01 client context: TLS 1.2+, ALPN "acme-tls/1" only, the peer's self-signed
 * certificate is examined by hand, not verified against a store. */
static SSL_CTX *
make_alpn_ctx(struct ac_err *err)
{
	static const unsigned char alpn[] = "\x0a"
	                                    "acme-tls/1";
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (ctx == NULL) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "tls_ctx_failed", "tls-alpn-01 client context");
		return NULL;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
	    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1) != 0) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "tls_ctx_failed", "tls-alpn-01 client context");
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	return ctx;
}

struct acme_validator *
acme_validator_start(const struct acme_validator_options *opts, struct ac_err *err)
{
	static const struct acme_validator_options defaults;
	struct acme_validator *v = NULL;
	int started = 0, ok = 0;

	if (opts == NULL)
		opts = &defaults;

	v = calloc(1, sizeof(*v));
	if (v == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		return NULL;
	}
	pthread_mutex_init(&v->lock, NULL);
	pthread_cond_init(&v->wake, NULL);
	if (opts->http_port < 0 || opts->http_port > 65535 || opts->tls_alpn_port < 0 ||
	    opts->tls_alpn_port > 65535 || opts->threads < 0 || opts->threads > MAX_THREADS ||
	    opts->timeout_ms < 0 || opts->queue_max < 0) {
		ac_err_set(err, AC_ERR_INVALID, "acme_validator_options",
		           "ACME validator: ports must be 1-65535, threads 1-%d, timeout and queue "
		           "size positive",
		           MAX_THREADS);
		goto out;
	}
	if (dns_server_parse(opts->resolver, &v->checker.resolver, err) != 0)
		goto out;
	v->checker.http_port = opts->http_port != 0 ? opts->http_port : 80;
	v->checker.tls_alpn_port = opts->tls_alpn_port != 0 ? opts->tls_alpn_port : 443;
	v->checker.timeout_ms = opts->timeout_ms != 0 ? opts->timeout_ms : DEFAULT_TIMEOUT_MS;
	v->thread_count = opts->threads != 0 ? opts->threads : DEFAULT_THREADS;
	v->ring_cap = opts->queue_max != 0 ? (size_t)opts->queue_max : DEFAULT_QUEUE_MAX;

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		ac_err_set(err, AC_ERR_INTERNAL, "curl_init_failed", "libcurl failed to start");
		goto out;
	}
	v->curl_ready = 1;
	v->checker.sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	v->checker.acme_identifier_oid = OBJ_txt2obj("1.3.6.1.5.5.7.1.31", 1);
	if (v->checker.sha256 == NULL || v->checker.acme_identifier_oid == NULL) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "crypto_init_failed", "ACME validator: SHA-256");
		goto out;
	}
	v->checker.alpn_ctx = make_alpn_ctx(err);
	if (v->checker.alpn_ctx == NULL)
		goto out;
	v->ring = calloc(v->ring_cap, sizeof(*v->ring));
	v->threads = calloc((size_t)v->thread_count, sizeof(*v->threads));
	if (v->ring == NULL || v->threads == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory",
		           "out of memory for a queue of %zu validations", v->ring_cap);
		goto out;
	}
	for (; started < v->thread_count; started++) {
		if (pthread_create(&v->threads[started], NULL, worker_main, v) != 0) {
			ac_err_set(err, AC_ERR_INTERNAL, "thread_failed",
			           "ACME validator: cannot start worker thread %d", started + 1);
			goto out;
		}
	}
	ok = 1;
out:
	if (!ok) {
		pthread_mutex_lock(&v->lock);
		v->stopping = 1;
		pthread_cond_broadcast(&v->wake);
		pthread_mutex_unlock(&v->lock);
		for (int i = 0; i < started; i++)
			pthread_join(v->threads[i], NULL);
		validator_free(v);
		v = NULL;
	}
	return v;
}

int
acme_validator_submit(struct acme_validator *v, const struct acme_validation *job,
                      acme_validation_done done, void *arg, struct ac_err *err)
{
	int rc = -1;

	if (done == NULL)
		return ac_err_set(err, AC_ERR_INTERNAL, "acme_validator_no_callback",
		                  "a validation was submitted without a done callback");
	pthread_mutex_lock(&v->lock);
	if (v->stopping) {
		ac_err_set(err, AC_ERR_UNAVAILABLE, "acme_validator_stopping",
		           "the validation authority is shutting down; try again later");
		goto out;
	}
	if (v->ring_count == v->ring_cap) {
		ac_err_set(err, AC_ERR_UNAVAILABLE, "acme_validator_busy",
		           "%zu validations are already waiting; try again later", v->ring_cap);
		goto out;
	}
	{
		struct queued_job *slot = &v->ring[(v->ring_head + v->ring_count) % v->ring_cap];

		slot->job = *job; /* strings without their NUL are refused by job_valid */
		slot->done = done;
		slot->arg = arg;
	}
	v->ring_count++;
	pthread_cond_signal(&v->wake);
	rc = 0;
out:
	pthread_mutex_unlock(&v->lock);
	return rc;
}

void
acme_validator_stop(struct acme_validator *v)
{
	if (v == NULL)
		return;
	pthread_mutex_lock(&v->lock);
	v->stopping = 1;
	pthread_cond_broadcast(&v->wake);
	pthread_mutex_unlock(&v->lock);
	for (int i = 0; i < v->thread_count; i++)
		pthread_join(v->threads[i], NULL);
	validator_free(v);
}
