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
 * Each of the C workers is a thread with one keep-alive HTTPS connection (TLS 1.2+, the
 * server's certificate verified against ROOT.pem and for the URL's host) and its own nonce,
 * and completes orders one after another: newOrder for one DNS name (o<N>-w<W>.SUFFIX), the
 * authorization (POST-as-GET), POST {} to its http-01 challenge; when that answer says the
 * challenge is valid, the authorization and so the order are ready (RFC 8555 7.1.6) and finalize
 * comes next, as lego does; otherwise the order is polled until ready (and polled after finalize
 * too if the server answers orderNotReady). Finalize sends a fresh CSR for the name (the worker's
 * P-256 key, CN and one DNS SAN, signed anew for each order); unless its answer is valid the order
 * is polled until valid; then the certificate is downloaded. Every request is a flattened JWS
 * signed ES256 with OpenSSL (kid after newAccount), each nonce taken from the previous answer's
 * Replay-Nonce; a badNonce answer is retried with the new nonce (Pebble rejects some on
 * purpose unless PEBBLE_WFE_NONCEREJECT=0). Polls wait 2 ms, doubling to 100 ms. An order
 * counts when its certificate is a PEM certificate chain. Against agentca, which holds a
 * challenge POST until its validation is done, an order takes 5 requests.
 *
 * Kept cheap, like wrk against a web server, so that the CPU it takes from a server on the
 * same machine is small: HTTP/1.1 is spoken directly over OpenSSL with blocking sockets (one
 * write per request, a read or two per answer; Content-Length, chunked or close-delimited
 * bodies), where libcurl's easy interface polled three to four times per request; OpenSSL
 * objects (TLS context, signing context, SHA-256, each worker's CSR object with its key)
 * are made once; the responder blocks in accept instead of polling.
 *
 * Prints one line:
 *
 *   target=NAME concurrency=C seconds=S orders=N failed=N rate=R p50_ms=X p99_ms=Y
 *       requests_per_order=Q
 *
 * and the first failure on stderr. Exit 0 when every order completed, 1 otherwise, 2 on
 * usage errors. bench/acme/run.sh runs it against agentca and Pebble in one run.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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

#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "common/base64url.h"

#define BODY_MAX (1 << 20)
#define IN_MAX (BODY_MAX + 65536) /* an answer's bytes as they come: headers, chunks */
#define REQ_MAX 65536
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
	SSL_CTX *tls;        /* client TLS: TLS 1.2+, the server verified against --cacert */
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

/* One worker's connection: a keep-alive TLS session, the last answer and the next nonce. */
struct conn {
	int fd;
	SSL *ssl;
	char authority[256]; /* host:port of the open connection, "" when none */
	char *in;            /* what the server sent and was not yet taken apart */
	size_t in_len;
	int timed_out; /* the last read ran out of time (30 s) */
	char *req;     /* the request being sent */
	char *body;    /* the last answer's body, NUL-terminated */
	size_t body_len;
	long status;
	char nonce[NONCE_MAX];
	char location[URL_MAX];
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

/* ---- HTTPS: a small HTTP/1.1 client on OpenSSL ---- */

/* Where the value of header line "Name: value" (len bytes, no CRLF) starts and how long it
 * is, trimmed; 0 when the line is another header. */
static int
header_match(const char *line, size_t len, const char *name, const char **value, size_t *value_len)
{
	size_t nlen = strlen(name), vlen;
	const char *v;

	if (len < nlen + 1 || strncasecmp(line, name, nlen) != 0 || line[nlen] != ':')
		return 0;
	v = line + nlen + 1;
	vlen = len - nlen - 1;
	while (vlen > 0 && (*v == ' ' || *v == '\t')) {
		v++;
		vlen--;
	}
	while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
		vlen--;
	*value = v;
	*value_len = vlen;
	return 1;
}

/* Copy a header value into out when it fits (it is left as it was otherwise). */
static void
copy_value(const char *v, size_t vlen, char *out, size_t out_len)
{
	if (vlen >= out_len)
		return;
	memcpy(out, v, vlen);
	out[vlen] = '\0';
}

static void
conn_disconnect(struct conn *c)
{
	if (c->ssl != NULL)
		SSL_free(c->ssl);
	if (c->fd >= 0)
		close(c->fd);
	c->ssl = NULL;
	c->fd = -1;
	c->authority[0] = '\0';
	c->in_len = 0;
}

/* A TCP connection to authority (host[:port], host possibly [IPv6]) and a TLS session on
 * it, the server's certificate verified against ROOT.pem and for the host's name or IP. */
static int
conn_connect(struct conn *c, const char *authority)
{
	char host[256], port[8] = "443";
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL, *ai;
	struct timeval tv = {.tv_sec = 30};
	unsigned char ip[16];
	const char *colon;
	size_t hlen;
	int one = 1, rc = -1, gai;
	long verify;

	conn_disconnect(c);
	if (authority[0] == '[') {
		const char *close_bracket = strchr(authority, ']');

		if (close_bracket == NULL)
			goto bad_authority;
		hlen = (size_t)(close_bracket - authority - 1);
		memcpy(host, authority + 1, hlen < sizeof(host) ? hlen : 0);
		colon = close_bracket[1] == ':' ? close_bracket + 1 : NULL;
	} else {
		colon = strrchr(authority, ':');
		hlen = colon != NULL ? (size_t)(colon - authority) : strlen(authority);
		memcpy(host, authority, hlen < sizeof(host) ? hlen : 0);
	}
	if (hlen == 0 || hlen >= sizeof(host) ||
	    (colon != NULL && strlen(colon + 1) >= sizeof(port)))
		goto bad_authority;
	host[hlen] = '\0';
	if (colon != NULL)
		snprintf(port, sizeof(port), "%s", colon + 1);
	gai = getaddrinfo(host, port, &hints, &res);
	if (gai != 0) {
		record_error("%s: %s", authority, gai_strerror(gai));
		goto out;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		c->fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (c->fd < 0)
			continue;
		if (connect(c->fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		close(c->fd);
		c->fd = -1;
	}
	if (c->fd < 0) {
		record_error("connect to %s: %s", authority, strerror(errno));
		goto out;
	}
	/* Requests go out whole in one write; a stuck server fails the request after 30 s. */
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	c->ssl = SSL_new(g.tls);
	if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1)
		goto tls_failed;
	if (inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1) {
		if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), host) != 1)
			goto tls_failed;
	} else if (SSL_set_tlsext_host_name(c->ssl, host) != 1 ||
	           SSL_set1_host(c->ssl, host) != 1) {
		goto tls_failed;
	}
	if (SSL_connect(c->ssl) != 1) {
		verify = SSL_get_verify_result(c->ssl);
		if (verify != X509_V_OK) {
			record_error("TLS with %s: certificate not verified against the --cacert "
			             "root: %s",
			             authority, X509_verify_cert_error_string(verify));
			goto out;
		}
		goto tls_failed;
	}
	snprintf(c->authority, sizeof(c->authority), "%s", authority);
	rc = 0;
	goto out;
bad_authority:
	record_error("%s: not a host[:port] this client can connect to", authority);
	goto out;
tls_failed:
	record_error("TLS with %s: %s", authority,
	             ERR_peek_last_error() != 0 ? ERR_reason_error_string(ERR_peek_last_error())
	                                        : "handshake failed");
out:
	ERR_clear_error();
	if (res != NULL)
		freeaddrinfo(res);
	if (rc != 0)
		conn_disconnect(c);
	return rc;
}

/* More of the answer from the TLS session into c->in; -1 on close, error, timeout or a
 * full buffer. */
static int
conn_fill(struct conn *c)
{
	int n;

	if (c->in_len >= IN_MAX)
		return -1;
	n = SSL_read(c->ssl, c->in + c->in_len, (int)(IN_MAX - c->in_len));
	if (n <= 0) {
		int err = SSL_get_error(c->ssl, n);

		/* SO_RCVTIMEO ran out: the read fails with EAGAIN. */
		c->timed_out =
		    err == SSL_ERROR_WANT_READ ||
		    (err == SSL_ERROR_SYSCALL && (errno == EAGAIN || errno == EWOULDBLOCK));
		ERR_clear_error();
		return -1;
	}
	c->in_len += (size_t)n;
	return 0;
}

/* Until c->in holds at least want bytes. */
static int
conn_want(struct conn *c, size_t want)
{
	while (c->in_len < want)
		if (want > IN_MAX || conn_fill(c) != 0)
			return -1;
	return 0;
}

/* The offset just past the next CRLF at or after from, reading more as needed. */
static int
conn_line(struct conn *c, size_t from, size_t *next)
{
	for (;;) {
		const char *crlf =
		    c->in_len > from ? memmem(c->in + from, c->in_len - from, "\r\n", 2) : NULL;

		if (crlf != NULL) {
			*next = (size_t)(crlf - c->in) + 2;
			return 0;
		}
		if (conn_fill(c) != 0)
			return -1;
	}
}

static int
body_append(struct conn *c, const char *data, size_t n)
{
	if (n > BODY_MAX - c->body_len)
		return -1;
	memcpy(c->body + c->body_len, data, n);
	c->body_len += n;
	c->body[c->body_len] = '\0';
	return 0;
}

/* One answer: the status line, the headers (Replay-Nonce and Location kept), and the body
 * by Content-Length, chunked, or up to the close. Bytes past it stay in c->in. */
static int
read_answer(struct conn *c, int head, const char **why)
{
	size_t header_end = 0, pos, line_end, used, content_length = 0;
	int chunked = 0, has_length = 0, close_after = 0;
	const char *v;
	size_t vlen;

	*why = "the connection closed or timed out before a whole answer";
	for (;;) {
		const char *end = c->in_len >= 4 ? memmem(c->in, c->in_len, "\r\n\r\n", 4) : NULL;

		if (end != NULL) {
			header_end = (size_t)(end - c->in) + 4;
			break;
		}
		if (conn_fill(c) != 0)
			return -1;
	}
	/* "HTTP/1.x NNN": c->in is not NUL-terminated, so no string functions past here. */
	if (c->in_len < 12 || memcmp(c->in, "HTTP/1.", 7) != 0 || c->in[8] != ' ' ||
	    !isdigit((unsigned char)c->in[9]) || !isdigit((unsigned char)c->in[10]) ||
	    !isdigit((unsigned char)c->in[11])) {
		*why = "the answer is not HTTP/1.x";
		return -1;
	}
	c->status = (c->in[9] - '0') * 100 + (c->in[10] - '0') * 10 + (c->in[11] - '0');
	for (pos = (size_t)((char *)memmem(c->in, header_end, "\r\n", 2) - c->in) + 2;
	     pos + 2 < header_end; pos = line_end + 2) {
		const char *line = c->in + pos;
		size_t len;

		line_end = (size_t)((char *)memmem(line, header_end - pos, "\r\n", 2) - c->in);
		len = line_end - pos;
		if (header_match(line, len, "Replay-Nonce", &v, &vlen))
			copy_value(v, vlen, c->nonce, sizeof(c->nonce));
		else if (header_match(line, len, "Location", &v, &vlen))
			copy_value(v, vlen, c->location, sizeof(c->location));
		else if (header_match(line, len, "Content-Length", &v, &vlen)) {
			char digits[24] = "";

			copy_value(v, vlen, digits, sizeof(digits));
			content_length = strtoul(digits, NULL, 10);
			has_length = 1;
		} else if (header_match(line, len, "Transfer-Encoding", &v, &vlen))
			chunked = memmem(v, vlen, "chunked", 7) != NULL;
		else if (header_match(line, len, "Connection", &v, &vlen))
			close_after = vlen == 5 && strncasecmp(v, "close", 5) == 0;
	}
	used = header_end;
	if (head || c->status / 100 == 1 || c->status == 204 || c->status == 304) {
		/* no body */
	} else if (chunked) {
		for (;;) {
			size_t size;

			if (conn_line(c, used, &line_end) != 0)
				return -1;
			size = strtoul(c->in + used, NULL, 16);
			used = line_end;
			if (size == 0)
				break;
			if (size > BODY_MAX || conn_want(c, used + size + 2) != 0) {
				*why = "a chunk too large or cut short";
				return -1;
			}
			if (body_append(c, c->in + used, size) != 0) {
				*why = "an answer over 1 MiB";
				return -1;
			}
			used += size + 2;
		}
		/* Trailers, up to the empty line. */
		for (;;) {
			if (conn_line(c, used, &line_end) != 0)
				return -1;
			if (line_end == used + 2) {
				used = line_end;
				break;
			}
			used = line_end;
		}
	} else if (has_length) {
		if (content_length > BODY_MAX || conn_want(c, used + content_length) != 0 ||
		    body_append(c, c->in + used, content_length) != 0) {
			*why = "a body cut short or over 1 MiB";
			return -1;
		}
		used += content_length;
	} else {
		while (conn_fill(c) == 0)
			;
		if (body_append(c, c->in + used, c->in_len - used) != 0) {
			*why = "an answer over 1 MiB";
			return -1;
		}
		used = c->in_len;
		close_after = 1;
	}
	memmove(c->in, c->in + used, c->in_len - used);
	c->in_len -= used;
	if (close_after)
		conn_disconnect(c);
	return 0;
}

/* One request: GET (body NULL, head 0), HEAD (head 1) or POST of a JOSE body, on the
 * connection's keep-alive TLS session (made, or made again, when needed). A request on a
 * reused connection that the server had closed meanwhile is sent once more on a new one. */
static int
http(struct conn *c, const char *url, const char *body, int head)
{
	char authority[256];
	const char *path, *why = "";
	size_t body_len = body != NULL ? strlen(body) : 0, n;
	int len;

	c->body_len = 0;
	c->body[0] = '\0';
	c->location[0] = '\0';
	c->status = 0;
	if (strncmp(url, "https://", 8) != 0 || (n = strcspn(url + 8, "/")) == 0 ||
	    n >= sizeof(authority)) {
		record_error("%s: not an https:// URL", url);
		return -1;
	}
	memcpy(authority, url + 8, n);
	authority[n] = '\0';
	path = url[8 + n] != '\0' ? url + 8 + n : "/";
	len = snprintf(c->req, REQ_MAX,
	               "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: agentca-bench-acme\r\n"
	               "Accept: */*\r\n",
	               body != NULL ? "POST"
	               : head       ? "HEAD"
	                            : "GET",
	               path, authority);
	if (len > 0 && body != NULL)
		len += snprintf(c->req + len, REQ_MAX - (size_t)len,
		                "Content-Type: application/jose+json\r\nContent-Length: %zu\r\n",
		                body_len);
	if (len <= 0 || (size_t)len + 2 + body_len > REQ_MAX) {
		record_error("%s: the request is over %d bytes", url, REQ_MAX);
		return -1;
	}
	memcpy(c->req + len, "\r\n", 2);
	len += 2;
	if (body_len > 0)
		memcpy(c->req + len, body, body_len);
	len += (int)body_len;
	for (int attempt = 0; attempt < 2; attempt++) {
		int reused = c->ssl != NULL && strcmp(c->authority, authority) == 0, got_bytes;

		if (!reused && conn_connect(c, authority) != 0)
			return -1;
		if (c->counted)
			atomic_fetch_add(&g.requests, 1);
		c->in_len = 0;
		c->timed_out = 0;
		if (SSL_write(c->ssl, c->req, len) == len) {
			if (read_answer(c, head, &why) == 0)
				return 0;
		} else {
			ERR_clear_error();
			why = "the request could not be sent";
		}
		if (c->timed_out)
			why = "no answer within 30 s";
		got_bytes = c->in_len > 0 || c->status != 0 || c->body_len > 0;
		conn_disconnect(c);
		/* Only a reused connection that the server closed before answering at all is
		 * tried again (as libcurl does); never after a timeout, which already waited. */
		if (!reused || got_bytes || c->timed_out)
			break;
	}
	record_error("%s: %s", url, why);
	return -1;
}

static int
conn_open(struct conn *c)
{
	memset(c, 0, sizeof(*c));
	c->fd = -1;
	c->body = malloc(BODY_MAX + 1);
	c->in = malloc(IN_MAX);
	c->req = malloc(REQ_MAX);
	c->sign_ctx = EVP_PKEY_CTX_new_from_pkey(NULL, g.account_key, NULL);
	if (c->body == NULL || c->in == NULL || c->req == NULL || c->sign_ctx == NULL ||
	    EVP_PKEY_sign_init(c->sign_ctx) != 1)
		return -1;
	return 0;
}

static void
conn_close(struct conn *c)
{
	conn_disconnect(c);
	EVP_PKEY_CTX_free(c->sign_ctx);
	free(c->req);
	free(c->in);
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
	int n;

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

/* Accepts until the listening socket is shut down at exit (which wakes accept). */
static void *
responder_main(void *arg)
{
	(void)arg;
	while (!atomic_load(&g.stop)) {
		int fd = accept4(g.http_fd, NULL, NULL, SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE ||
			    errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
				continue;
			break;
		}
		serve_one(fd);
		close(fd);
	}
	return NULL;
}

static int
responder_listen(int port)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	struct timeval tv = {.tv_sec = 2};
	int one = 1;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	g.http_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (g.http_fd < 0)
		return -1;
	setsockopt(g.http_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* Accepted sockets inherit it: a validator that sends nothing is dropped after 2 s. */
	setsockopt(g.http_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
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
	g.latencies_ms = calloc(MAX_LATENCIES, sizeof(double));
	threads = calloc((size_t)g.o.concurrency, sizeof(*threads));
	if (g.latencies_ms == NULL || threads == NULL) {
		fprintf(stderr, "bench_acme: out of memory\n");
		goto out;
	}
	g.tls = SSL_CTX_new(TLS_client_method());
	if (g.tls == NULL || SSL_CTX_set_min_proto_version(g.tls, TLS1_2_VERSION) != 1 ||
	    SSL_CTX_load_verify_locations(g.tls, g.o.cacert, NULL) != 1) {
		fprintf(stderr,
		        "bench_acme: %s: cannot load it as the root to verify the server by\n",
		        g.o.cacert);
		goto out;
	}
	SSL_CTX_set_verify(g.tls, SSL_VERIFY_PEER, NULL);
	/* Whole records and whatever follows in one read(), not a header and then a body. */
	SSL_CTX_set_read_ahead(g.tls, 1);
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
	if (responder_started) {
		shutdown(g.http_fd, SHUT_RDWR);
		pthread_join(responder, NULL);
	}
	if (g.http_fd > 0)
		close(g.http_fd);
	EVP_PKEY_free(g.account_key);
	EVP_MD_free(g.sha256);
	free(threads);
	free(g.latencies_ms);
	SSL_CTX_free(g.tls);
	pthread_mutex_destroy(&g.error_lock);
	return status;
}
