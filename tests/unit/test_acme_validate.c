/*
 * test_acme_validate.c - the ACME validation authority (enrollment/acme_validate.h) against
 * real peers on loopback: Debian's pebble-challtestsrv serves http-01 answers, tls-alpn-01
 * certificates and the DNS (A and TXT records) the validator asks through its configured
 * resolver; a TLS server in this file serves hand-made tls-alpn-01 certificates that
 * challtestsrv cannot (no extension, not critical, an IP identifier). The pool is tested for
 * one done() per job, a full queue and a stop that answers queued jobs.
 *
 * Needs pebble-challtestsrv (Debian package pebble; `make test` installs it).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "enrollment/acme_validate.h"

#define THUMBPRINT "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"

/* The challtestsrv process and its ports, shared by every test of the group. */
static struct {
	pid_t pid;
	int http_port, tlsalpn_port, dns_port, mgmt_port;
	char resolver[32];
} cts;

/* A loopback TCP port that nothing listens on right now. */
static int
free_port(void)
{
	struct sockaddr_in sin = {.sin_family = AF_INET};
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	assert_true(fd >= 0);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	port = ntohs(sin.sin_port);
	close(fd);
	return port;
}

/* A listening loopback socket (port in *port) that never accepts: connections complete in
 * the kernel and then hear nothing. */
static int
silent_listener(int *port)
{
	struct sockaddr_in sin = {.sin_family = AF_INET};
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(fd, 16), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	*port = ntohs(sin.sin_port);
	return fd;
}

static int
port_open(int port)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	int fd = socket(AF_INET, SOCK_STREAM, 0), ok;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ok = connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0;
	close(fd);
	return ok;
}

static void mgmt(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* POST body to challtestsrv's management API; asserts HTTP 200. */
static void
mgmt(const char *path, const char *fmt, ...)
{
	char url[128], body[8192];
	long status = 0;
	va_list ap;
	CURL *curl = curl_easy_init();

	assert_non_null(curl);
	va_start(ap, fmt);
	vsnprintf(body, sizeof(body), fmt, ap);
	va_end(ap);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", cts.mgmt_port, path);
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
	assert_int_equal(curl_easy_perform(curl), CURLE_OK);
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
	assert_int_equal(status, 200);
	curl_easy_cleanup(curl);
}

static int
start_challtestsrv(void **state)
{
	char http[32], tls[32], dns[32], mgmt_addr[32];
	(void)state;

	curl_global_init(CURL_GLOBAL_DEFAULT);
	cts.http_port = free_port();
	cts.tlsalpn_port = free_port();
	cts.dns_port = free_port();
	cts.mgmt_port = free_port();
	snprintf(http, sizeof(http), "127.0.0.1:%d", cts.http_port);
	snprintf(tls, sizeof(tls), "127.0.0.1:%d", cts.tlsalpn_port);
	snprintf(dns, sizeof(dns), "127.0.0.1:%d", cts.dns_port);
	snprintf(mgmt_addr, sizeof(mgmt_addr), "127.0.0.1:%d", cts.mgmt_port);
	snprintf(cts.resolver, sizeof(cts.resolver), "127.0.0.1:%d", cts.dns_port);
	cts.pid = fork();
	if (cts.pid == 0) {
		int devnull = open("/dev/null", O_WRONLY);

		dup2(devnull, 1);
		dup2(devnull, 2);
		/* No AAAA answers: challtestsrv listens on 127.0.0.1 only. */
		execlp("pebble-challtestsrv", "pebble-challtestsrv", "-http01", http, "-https01",
		       "", "-tlsalpn01", tls, "-dns01", dns, "-management", mgmt_addr,
		       "-defaultIPv6", "", (char *)NULL);
		_exit(127);
	}
	if (cts.pid < 0)
		return -1;
	for (int i = 0; i < 200; i++) {
		int status;

		if (waitpid(cts.pid, &status, WNOHANG) == cts.pid) {
			fprintf(stderr,
			        "pebble-challtestsrv did not start (exit %d); install it with "
			        "apt-get install pebble\n",
			        WEXITSTATUS(status));
			cts.pid = 0;
			return -1;
		}
		if (port_open(cts.mgmt_port) && port_open(cts.http_port) &&
		    port_open(cts.tlsalpn_port) && port_open(cts.dns_port))
			return 0;
		usleep(50 * 1000);
	}
	fprintf(stderr, "pebble-challtestsrv did not listen within 10 s\n");
	return -1;
}

static int
stop_challtestsrv(void **state)
{
	(void)state;
	if (cts.pid > 0) {
		kill(cts.pid, SIGTERM);
		waitpid(cts.pid, NULL, 0);
		cts.pid = 0;
	}
	curl_global_cleanup();
	return 0;
}

static struct acme_validator *
start_validator(int threads, int queue_max, int timeout_ms, int http_port, int tlsalpn_port)
{
	struct acme_validator_options opts = {
	    .resolver = cts.resolver,
	    .http_port = http_port,
	    .tls_alpn_port = tlsalpn_port,
	    .threads = threads,
	    .timeout_ms = timeout_ms,
	    .queue_max = queue_max,
	};
	struct ac_err err;
	struct acme_validator *v;

	ac_err_clear(&err);
	v = acme_validator_start(&opts, &err);
	if (v == NULL)
		fail_msg("acme_validator_start: %s", err.msg);
	return v;
}

static struct acme_validation
make_job(enum acme_challenge_type type, const char *identifier, const char *token)
{
	struct acme_validation job;

	memset(&job, 0, sizeof(job));
	job.type = type;
	snprintf(job.identifier, sizeof(job.identifier), "%s", identifier);
	snprintf(job.token, sizeof(job.token), "%s", token);
	snprintf(job.key_authorization, sizeof(job.key_authorization), "%s.%s", token, THUMBPRINT);
	return job;
}

static void
check_now(struct acme_validator *v, const struct acme_validation *job, const char *want_type)
{
	struct acme_validation_result res;

	acme_validate_now(v, job, &res);
	if (want_type == NULL) {
		if (!res.ok)
			fail_msg("want ok, got %s: %s", res.error_type, res.detail);
		assert_string_equal(res.error_type, "");
	} else {
		if (res.ok)
			fail_msg("want %s, got ok", want_type);
		if (strcmp(res.error_type, want_type) != 0)
			fail_msg("want %s, got %s: %s", want_type, res.error_type, res.detail);
		assert_true(strlen(res.detail) > 10);
		print_message("  %s: %s\n", res.error_type, res.detail);
	}
}

/* ---- http-01 ---- */

static void
test_http01_ok(void **state)
{
	struct acme_validator *v = start_validator(1, 0, 5000, cts.http_port, 0);
	struct acme_validation job =
	    make_job(ACME_CHALLENGE_HTTP_01, "web.example.test", "http01-good-token");
	(void)state;

	mgmt("/add-http01", "{\"token\":\"%s\",\"content\":\"%s\"}", job.token,
	     job.key_authorization);
	check_now(v, &job, NULL);
	/* The address comes from the configured resolver: a name it puts on 127.0.0.2, where
	 * nothing listens, fails to connect although the same path is served on 127.0.0.1. */
	mgmt("/add-a", "{\"host\":\"elsewhere.example.test.\",\"addresses\":[\"127.0.0.2\"]}");
	snprintf(job.identifier, sizeof(job.identifier), "elsewhere.example.test");
	check_now(v, &job, "connection");
	/* An IP identifier (RFC 8738) reaches the address itself, no DNS. */
	job.identifier_is_ip = 1;
	snprintf(job.identifier, sizeof(job.identifier), "127.0.0.1");
	check_now(v, &job, NULL);
	acme_validator_stop(v);
}

static void
test_http01_wrong_answers(void **state)
{
	struct acme_validator *v = start_validator(1, 0, 5000, cts.http_port, 0);
	struct acme_validation job =
	    make_job(ACME_CHALLENGE_HTTP_01, "web.example.test", "http01-wrong-token");
	struct acme_validation missing =
	    make_job(ACME_CHALLENGE_HTTP_01, "web.example.test", "http01-nobody-served-this");
	(void)state;

	/* The file holds another thumbprint. */
	mgmt("/add-http01", "{\"token\":\"%s\",\"content\":\"%s.someone-elses-thumbprint\"}",
	     job.token, job.token);
	check_now(v, &job, "incorrectResponse");
	/* A body longer than any key authorization is cut off, not read to the end. */
	{
		struct acme_validation big =
		    make_job(ACME_CHALLENGE_HTTP_01, "web.example.test", "http01-big-body");
		char content[6001];

		memset(content, 'x', sizeof(content) - 1);
		content[sizeof(content) - 1] = '\0';
		mgmt("/add-http01", "{\"token\":\"%s\",\"content\":\"%s\"}", big.token, content);
		check_now(v, &big, "unauthorized");
	}
	/* challtestsrv answers 200 with an empty body for a token it does not know. */
	check_now(v, &missing, "incorrectResponse");
	acme_validator_stop(v);
	/* Its management port answers 404 for that path: not a 200, refused as such. */
	v = start_validator(1, 0, 5000, cts.mgmt_port, 0);
	check_now(v, &missing, "unauthorized");
	acme_validator_stop(v);
}

static void
test_http01_nothing_listening(void **state)
{
	struct acme_validator *v = start_validator(1, 0, 3000, free_port(), 0);
	struct acme_validation job =
	    make_job(ACME_CHALLENGE_HTTP_01, "web.example.test", "http01-refused");
	(void)state;

	check_now(v, &job, "connection");
	acme_validator_stop(v);
}

static void
test_http01_redirects(void **state)
{
	struct acme_validator *v = start_validator(1, 0, 5000, cts.http_port, 0);
	struct acme_validation job =
	    make_job(ACME_CHALLENGE_HTTP_01, "web.example.test", "http01-redirected");
	struct acme_validation bad =
	    make_job(ACME_CHALLENGE_HTTP_01, "web.example.test", "http01-bad-redirect");
	struct acme_validation loop =
	    make_job(ACME_CHALLENGE_HTTP_01, "web.example.test", "http01-redirect-loop");
	(void)state;

	/* To another name on the http-01 port: followed, the name resolved again. */
	mgmt("/add-http01", "{\"token\":\"%s-target\",\"content\":\"%s\"}", job.token,
	     job.key_authorization);
	mgmt("/add-redirect",
	     "{\"path\":\"/.well-known/acme-challenge/%s\",\"targetURL\":"
	     "\"http://other.example.test:%d/.well-known/acme-challenge/%s-target\"}",
	     job.token, cts.http_port, job.token);
	check_now(v, &job, NULL);
	/* To a port that is neither 80, 443 nor the http-01 port: refused. */
	mgmt("/add-redirect",
	     "{\"path\":\"/.well-known/acme-challenge/%s\",\"targetURL\":"
	     "\"http://other.example.test:%d/x\"}",
	     bad.token, cts.mgmt_port);
	check_now(v, &bad, "connection");
	/* To itself, forever: stopped after a bounded number of hops. */
	mgmt("/add-redirect",
	     "{\"path\":\"/.well-known/acme-challenge/%s\",\"targetURL\":"
	     "\"http://web.example.test:%d/.well-known/acme-challenge/%s\"}",
	     loop.token, cts.http_port, loop.token);
	check_now(v, &loop, "connection");
	acme_validator_stop(v);
}

/* ---- dns-01 ---- */

/* base64url(SHA-256(text)), unpadded. */
static void
digest_b64url(const char *text, char out[64])
{
	unsigned char md[32];
	unsigned int len = 0;
	char b64[64];
	size_t n;

	assert_int_equal(EVP_Digest(text, strlen(text), md, &len, EVP_sha256(), NULL), 1);
	EVP_EncodeBlock((unsigned char *)b64, md, 32);
	n = strlen(b64);
	while (n > 0 && b64[n - 1] == '=')
		n--;
	for (size_t i = 0; i < n; i++)
		out[i] = b64[i] == '+' ? '-' : (b64[i] == '/' ? '_' : b64[i]);
	out[n] = '\0';
}

static void
test_dns01(void **state)
{
	struct acme_validator *v = start_validator(1, 0, 5000, 0, 0);
	struct acme_validation good =
	    make_job(ACME_CHALLENGE_DNS_01, "dns-good.example.test", "dns01-good-token");
	struct acme_validation wrong =
	    make_job(ACME_CHALLENGE_DNS_01, "dns-wrong.example.test", "dns01-wrong-token");
	struct acme_validation none =
	    make_job(ACME_CHALLENGE_DNS_01, "dns-none.example.test", "dns01-no-record");
	struct acme_validation ip = make_job(ACME_CHALLENGE_DNS_01, "127.0.0.1", "dns01-ip");
	char value[64];
	(void)state;

	digest_b64url(good.key_authorization, value);
	mgmt("/set-txt", "{\"host\":\"_acme-challenge.%s.\",\"value\":\"%s\"}", good.identifier,
	     value);
	check_now(v, &good, NULL);

	/* The digest of another key authorization. */
	digest_b64url("dns01-wrong-token.another-thumbprint", value);
	mgmt("/set-txt", "{\"host\":\"_acme-challenge.%s.\",\"value\":\"%s\"}", wrong.identifier,
	     value);
	check_now(v, &wrong, "incorrectResponse");

	check_now(v, &none, "unauthorized");

	ip.identifier_is_ip = 1;
	check_now(v, &ip, "rejectedIdentifier");
	acme_validator_stop(v);
}

static void
test_dns01_resolver_silent(void **state)
{
	struct acme_validator_options opts = {.resolver = NULL, .timeout_ms = 1500, .threads = 1};
	struct acme_validation job =
	    make_job(ACME_CHALLENGE_DNS_01, "dns-good.example.test", "dns01-silent");
	struct acme_validator *v;
	struct ac_err err;
	char resolver[32];
	(void)state;

	/* A UDP port with nothing behind it: refused or silent, either way a "dns" failure. */
	snprintf(resolver, sizeof(resolver), "127.0.0.1:%d", free_port());
	opts.resolver = resolver;
	ac_err_clear(&err);
	v = acme_validator_start(&opts, &err);
	assert_non_null(v);
	check_now(v, &job, "dns");
	acme_validator_stop(v);

	/* A UDP socket that never answers: the lookup gives up at the deadline. */
	{
		struct sockaddr_in sin = {.sin_family = AF_INET};
		socklen_t len = sizeof(sin);
		struct acme_validation_result res;
		int fd = socket(AF_INET, SOCK_DGRAM, 0);

		sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
		assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
		snprintf(resolver, sizeof(resolver), "127.0.0.1:%d", ntohs(sin.sin_port));
		ac_err_clear(&err);
		v = acme_validator_start(&opts, &err);
		assert_non_null(v);
		acme_validate_now(v, &job, &res);
		assert_false(res.ok);
		assert_string_equal(res.error_type, "dns");
		assert_non_null(strstr(res.detail, "in time"));
		acme_validator_stop(v);
		close(fd);
	}

	/* A resolver that is not ADDR:PORT is refused at start. */
	opts.resolver = "localhost";
	ac_err_clear(&err);
	assert_null(acme_validator_start(&opts, &err));
	assert_int_equal(err.code, AC_ERR_INVALID);
}

/* ---- tls-alpn-01 ---- */

static void
test_tlsalpn01_challtestsrv(void **state)
{
	struct acme_validator *v = start_validator(1, 0, 5000, 0, cts.tlsalpn_port);
	struct acme_validation good =
	    make_job(ACME_CHALLENGE_TLS_ALPN_01, "alpn-good.example.test", "alpn-good-token");
	struct acme_validation wrong =
	    make_job(ACME_CHALLENGE_TLS_ALPN_01, "alpn-wrong.example.test", "alpn-wrong-token");
	(void)state;

	mgmt("/add-tlsalpn01", "{\"host\":\"%s\",\"content\":\"%s\"}", good.identifier,
	     good.key_authorization);
	check_now(v, &good, NULL);
	/* The certificate carries the digest of another key authorization. */
	mgmt("/add-tlsalpn01", "{\"host\":\"%s\",\"content\":\"%s.other-thumbprint\"}",
	     wrong.identifier, wrong.token);
	check_now(v, &wrong, "incorrectResponse");
	acme_validator_stop(v);

	/* Nothing listening. */
	v = start_validator(1, 0, 3000, 0, free_port());
	check_now(v, &good, "connection");
	acme_validator_stop(v);
}

/* What the hand-made tls-alpn-01 server puts in its certificate. */
enum alpn_cert_kind {
	CERT_GOOD,
	CERT_NO_EXTENSION,
	CERT_NOT_CRITICAL,
	CERT_TWO_NAMES,
	CERT_GOOD_NO_ALPN, /* the right certificate, but the server picks no ALPN protocol */
};

struct alpn_server {
	int listen_fd;
	int port;
	SSL_CTX *ctx;
	pthread_t thread;
};

static int
select_acme_tls(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                unsigned int inlen, void *arg)
{
	(void)ssl;
	(void)arg;
	if (inlen == 11 && memcmp(in,
	                          "\x0a"
	                          "acme-tls/1",
	                          11) == 0) {
		*out = in + 1;
		*outlen = 10;
		return SSL_TLSEXT_ERR_OK;
	}
	return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/* A self-signed P-256 certificate for 127.0.0.1 of the given kind for key_authorization. */
static void
make_alpn_cert(SSL_CTX *ctx, enum alpn_cert_kind kind, const char *key_authorization)
{
	EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	X509 *cert = X509_new();
	X509V3_CTX v3;
	X509_EXTENSION *ext;
	unsigned char der[34];
	unsigned int len = 0;
	ASN1_OCTET_STRING *value = ASN1_OCTET_STRING_new();
	ASN1_OBJECT *oid = OBJ_txt2obj("1.3.6.1.5.5.7.1.31", 1);

	assert_non_null(key);
	assert_non_null(cert);
	X509_set_version(cert, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
	X509_gmtime_adj(X509_getm_notBefore(cert), -60);
	X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(cert), "CN", MBSTRING_ASC,
	                           (const unsigned char *)"acme-tls test", -1, -1, 0);
	X509_set_issuer_name(cert, X509_get_subject_name(cert));
	X509_set_pubkey(cert, key);
	X509V3_set_ctx(&v3, cert, cert, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name,
	                          kind == CERT_TWO_NAMES ? "IP:127.0.0.1,DNS:extra.example.test"
	                                                 : "IP:127.0.0.1");
	assert_non_null(ext);
	X509_add_ext(cert, ext, -1);
	X509_EXTENSION_free(ext);
	if (kind != CERT_NO_EXTENSION) {
		der[0] = 0x04;
		der[1] = 32;
		assert_int_equal(EVP_Digest(key_authorization, strlen(key_authorization), der + 2,
		                            &len, EVP_sha256(), NULL),
		                 1);
		ASN1_OCTET_STRING_set(value, der, sizeof(der));
		ext = X509_EXTENSION_create_by_OBJ(NULL, oid, kind != CERT_NOT_CRITICAL, value);
		assert_non_null(ext);
		X509_add_ext(cert, ext, -1);
		X509_EXTENSION_free(ext);
	}
	assert_true(X509_sign(cert, key, EVP_sha256()) > 0);
	assert_int_equal(SSL_CTX_use_certificate(ctx, cert), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey(ctx, key), 1);
	ASN1_OBJECT_free(oid);
	ASN1_OCTET_STRING_free(value);
	X509_free(cert);
	EVP_PKEY_free(key);
}

/* Serve one TLS connection, then stop. */
static void *
alpn_server_main(void *arg)
{
	struct alpn_server *s = arg;
	int fd = accept(s->listen_fd, NULL, NULL);
	SSL *ssl;

	if (fd < 0)
		return NULL;
	ssl = SSL_new(s->ctx);
	SSL_set_fd(ssl, fd);
	if (SSL_accept(ssl) == 1)
		SSL_shutdown(ssl);
	SSL_free(ssl);
	close(fd);
	return NULL;
}

static void
alpn_server_start(struct alpn_server *s, enum alpn_cert_kind kind, const char *key_auth)
{
	s->listen_fd = silent_listener(&s->port);
	s->ctx = SSL_CTX_new(TLS_server_method());
	assert_non_null(s->ctx);
	if (kind != CERT_GOOD_NO_ALPN)
		SSL_CTX_set_alpn_select_cb(s->ctx, select_acme_tls, NULL);
	make_alpn_cert(s->ctx, kind, key_auth);
	assert_int_equal(pthread_create(&s->thread, NULL, alpn_server_main, s), 0);
}

static void
alpn_server_stop(struct alpn_server *s)
{
	pthread_join(s->thread, NULL);
	close(s->listen_fd);
	SSL_CTX_free(s->ctx);
}

static void
check_alpn_kind(enum alpn_cert_kind kind, const char *key_auth_served, const char *want)
{
	struct alpn_server s;
	struct acme_validation job = make_job(ACME_CHALLENGE_TLS_ALPN_01, "127.0.0.1", "alpn-ip");
	struct acme_validator *v;

	job.identifier_is_ip = 1;
	alpn_server_start(&s, kind,
	                  key_auth_served != NULL ? key_auth_served : job.key_authorization);
	v = start_validator(1, 0, 5000, 0, s.port);
	check_now(v, &job, want);
	acme_validator_stop(v);
	alpn_server_stop(&s);
}

static void
test_tlsalpn01_handmade(void **state)
{
	(void)state;
	check_alpn_kind(CERT_GOOD, NULL, NULL);
	check_alpn_kind(CERT_GOOD, "alpn-ip.another-thumbprint", "incorrectResponse");
	check_alpn_kind(CERT_NO_EXTENSION, NULL, "incorrectResponse");
	check_alpn_kind(CERT_NOT_CRITICAL, NULL, "incorrectResponse");
	check_alpn_kind(CERT_TWO_NAMES, NULL, "incorrectResponse");
	check_alpn_kind(CERT_GOOD_NO_ALPN, NULL, "tls");
}

/* ---- input checks ---- */

static void
test_hostile_jobs(void **state)
{
	struct acme_validator *v = start_validator(1, 0, 2000, cts.http_port, 0);
	struct acme_validation job;
	(void)state;

	job = make_job(ACME_CHALLENGE_HTTP_01, "web.example.test/../x", "tok");
	check_now(v, &job, "rejectedIdentifier");
	job = make_job(ACME_CHALLENGE_HTTP_01, "*.example.test", "tok");
	check_now(v, &job, "rejectedIdentifier");
	job = make_job(ACME_CHALLENGE_HTTP_01, "web.example.test", "tok/../../etc");
	check_now(v, &job, "unauthorized");
	job = make_job(ACME_CHALLENGE_HTTP_01, "web.example.test", "tok");
	snprintf(job.key_authorization, sizeof(job.key_authorization), "other.%s", THUMBPRINT);
	check_now(v, &job, "unauthorized");
	job = make_job(ACME_CHALLENGE_HTTP_01, "web.example.test", "tok");
	memset(job.identifier, 'a', sizeof(job.identifier)); /* no NUL */
	check_now(v, &job, "unauthorized");
	job = make_job(ACME_CHALLENGE_TLS_ALPN_01, "not-an-ip", "tok");
	job.identifier_is_ip = 1;
	check_now(v, &job, "rejectedIdentifier");
	acme_validator_stop(v);
}

/* ---- the pool ---- */

#define POOL_JOBS 60

struct record {
	pthread_mutex_t lock;
	int calls[POOL_JOBS];
	struct acme_validation_result results[POOL_JOBS];
};

struct slot {
	struct record *rec;
	int index;
};

static void
record_done(void *arg, const struct acme_validation_result *result)
{
	struct slot *s = arg;

	pthread_mutex_lock(&s->rec->lock);
	s->rec->calls[s->index]++;
	s->rec->results[s->index] = *result;
	pthread_mutex_unlock(&s->rec->lock);
}

static void
test_pool_done_once_per_job(void **state)
{
	static struct record rec;
	struct slot slots[POOL_JOBS];
	struct acme_validator *v = start_validator(4, 0, 5000, cts.http_port, 0);
	struct acme_validation ok_job =
	    make_job(ACME_CHALLENGE_HTTP_01, "pool.example.test", "pool-good-token");
	struct acme_validation bad_job =
	    make_job(ACME_CHALLENGE_HTTP_01, "pool.example.test", "pool-missing-token");
	struct ac_err err;
	(void)state;

	memset(&rec, 0, sizeof(rec));
	pthread_mutex_init(&rec.lock, NULL);
	mgmt("/add-http01", "{\"token\":\"%s\",\"content\":\"%s\"}", ok_job.token,
	     ok_job.key_authorization);
	for (int i = 0; i < POOL_JOBS; i++) {
		slots[i].rec = &rec;
		slots[i].index = i;
		ac_err_clear(&err);
		assert_int_equal(acme_validator_submit(v, i % 2 == 0 ? &ok_job : &bad_job,
		                                       record_done, &slots[i], &err),
		                 0);
	}
	/* Wait for every answer, then stop: nothing may come twice or late. */
	for (int waited = 0; waited < 3000; waited++) {
		int answered = 0;

		pthread_mutex_lock(&rec.lock);
		for (int i = 0; i < POOL_JOBS; i++)
			answered += rec.calls[i] > 0;
		pthread_mutex_unlock(&rec.lock);
		if (answered == POOL_JOBS)
			break;
		usleep(10 * 1000);
	}
	acme_validator_stop(v);
	for (int i = 0; i < POOL_JOBS; i++) {
		assert_int_equal(rec.calls[i], 1);
		if (i % 2 == 0) {
			assert_true(rec.results[i].ok);
		} else {
			assert_false(rec.results[i].ok);
			assert_string_equal(rec.results[i].error_type, "incorrectResponse");
		}
	}
	pthread_mutex_destroy(&rec.lock);
}

/* One worker held by a job whose server never answers; two more fill the queue of two; the
 * fourth is refused; stop answers the two queued ones with "shutting down" and waits for the
 * held one, which times out. */
static void
test_pool_queue_full_and_stop(void **state)
{
	static struct record rec;
	struct slot slots[4];
	struct acme_validation job = make_job(ACME_CHALLENGE_HTTP_01, "127.0.0.1", "pool-held");
	struct acme_validator *v;
	struct pollfd pfd;
	struct ac_err err;
	int port, fd = silent_listener(&port);
	(void)state;

	job.identifier_is_ip = 1;
	memset(&rec, 0, sizeof(rec));
	pthread_mutex_init(&rec.lock, NULL);
	v = start_validator(1, 2, 1500, port, 0);
	for (int i = 0; i < 4; i++) {
		slots[i].rec = &rec;
		slots[i].index = i;
	}
	ac_err_clear(&err);
	assert_int_equal(acme_validator_submit(v, &job, record_done, &slots[0], &err), 0);
	/* The worker has taken the first job once its connection reaches the listener. */
	pfd.fd = fd;
	pfd.events = POLLIN;
	assert_int_equal(poll(&pfd, 1, 5000), 1);
	assert_int_equal(acme_validator_submit(v, &job, record_done, &slots[1], &err), 0);
	assert_int_equal(acme_validator_submit(v, &job, record_done, &slots[2], &err), 0);
	assert_int_equal(acme_validator_submit(v, &job, record_done, &slots[3], &err), -1);
	assert_int_equal(err.code, AC_ERR_UNAVAILABLE);
	acme_validator_stop(v);
	close(fd);

	for (int i = 0; i < 3; i++) {
		assert_int_equal(rec.calls[i], 1);
		assert_false(rec.results[i].ok);
		assert_string_equal(rec.results[i].error_type, "connection");
	}
	assert_int_equal(rec.calls[3], 0);
	assert_non_null(strstr(rec.results[0].detail, "timed out"));
	assert_non_null(strstr(rec.results[1].detail, "shutting down"));
	assert_non_null(strstr(rec.results[2].detail, "shutting down"));
	pthread_mutex_destroy(&rec.lock);
}

/* A job without a callback is refused (nobody could be told); stopping NULL is a no-op. */
static void
test_submit_without_callback_and_stop_null(void **state)
{
	struct acme_validator *v = start_validator(1, 0, 1000, cts.http_port, 0);
	struct acme_validation job = make_job(ACME_CHALLENGE_HTTP_01, "web.example.test", "tok");
	struct ac_err err;
	(void)state;

	ac_err_clear(&err);
	assert_int_equal(acme_validator_submit(v, &job, NULL, NULL, &err), -1);
	assert_int_equal(err.code, AC_ERR_INTERNAL);
	acme_validator_stop(v);
	acme_validator_stop(NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_http01_ok),
	    cmocka_unit_test(test_http01_wrong_answers),
	    cmocka_unit_test(test_http01_nothing_listening),
	    cmocka_unit_test(test_http01_redirects),
	    cmocka_unit_test(test_dns01),
	    cmocka_unit_test(test_dns01_resolver_silent),
	    cmocka_unit_test(test_tlsalpn01_challtestsrv),
	    cmocka_unit_test(test_tlsalpn01_handmade),
	    cmocka_unit_test(test_hostile_jobs),
	    cmocka_unit_test(test_pool_done_once_per_job),
	    cmocka_unit_test(test_pool_queue_full_and_stop),
	    cmocka_unit_test(test_submit_without_callback_and_stop_null),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, start_challtestsrv, stop_challtestsrv);
}
