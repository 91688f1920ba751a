/*
 * bench_enroll.c - the enrollment load generator: certificates per second through a running
 * agentca daemon (POST /v1/enroll over keep-alive HTTPS, one one-time token per request)
 * or through `cfssl serve` (POST /api/v1/cfssl/sign over keep-alive plain HTTP, no auth).
 *
 *   bench_enroll --target agentca --url https://127.0.0.1:PORT --ca-dir DIR
 *                [--subject SPIFFE-ID] [--dns NAME] [--tokens N]
 *                [--connections C] [--seconds S | --requests N] [--csrs K]
 *   bench_enroll --target cfssl --url http://127.0.0.1:PORT [--dns NAME] ...
 *
 * Everything that is not the request itself is made before the clock starts: K P-256 CSRs
 * (CN and one DNS SAN = --dns, or neither when --dns is ""), used in turn; for agentca, one
 * bootstrap token per request, minted in-process with DIR/token.key (passphrase from
 * $AGENTCA_PASSWORD or DIR/password, audience = the root's fingerprint), granting --subject
 * and --dns (--tokens of them: by default as many as --requests, or 6,000 per second of
 * --seconds, at most 200,000; when they run out the run ends early and says so; minting costs
 * about 1.5 ms of CPU per token with libjwt 1.10, spread over the cores). Each of the C
 * connections is a thread with one keep-alive connection (TLS 1.3, the server verified
 * against DIR/root.pem and the URL's IP address or host name), opened before the clock and
 * reopened when the server closes it. A success is a 201 from agentca,
 * a 200 with "success":true from cfssl; anything else is a failure. The latency of every
 * success goes into an array allocated before the clock. The HTTP/1.1 client is minimal:
 * one request at a time per connection, responses framed by Content-Length or chunked
 * encoding (anything else is a failure), "Connection: close" honoured. Prints one line:
 *
 *   target=agentca connections=C seconds=S ok=N failed=N rate=R p50_ms=X p99_ms=Y
 *
 * Exit 0 when every request succeeded, 1 otherwise (the line is printed either way), 2 on
 * usage errors. bench/enroll/run.sh runs it against both servers in one run.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "ca/authority.h"
#include "ca/keys.h"
#include "common/config.h"
#include "common/error.h"
#include "common/log.h"
#include "common/timefmt.h"
#include "enrollment/token.h"

#define MAX_CONNECTIONS 1024
#define RESPONSE_MAX (256 * 1024) /* a bigger response is a failure */
#define IO_TIMEOUT_S 30           /* a server silent this long fails the request */
#define TOKEN_TTL 3600
#define DEFAULT_TOKENS_PER_SECOND 6000 /* --seconds without --tokens: this many per second */
#define MAX_DEFAULT_TOKENS 200000

enum target { TARGET_AGENTCA, TARGET_CFSSL };

/* What the command line asked for. */
struct options {
	enum target target;
	const char *url;
	const char *ca_dir;
	const char *subject;
	const char *dns;
	int connections;
	double seconds;  /* 0 with --requests */
	size_t requests; /* 0 with --seconds */
	size_t tokens;   /* agentca: how many to mint; 0 = derived */
	size_t csrs;
};

/* The parsed URL. */
struct endpoint {
	int tls;
	char host[256];
	char port[8];
	struct sockaddr_storage addr;
	socklen_t addr_len;
};

/* State shared by every connection thread. Read-only once the clock starts, except the
 * atomics. */
struct bench {
	struct options o;
	struct endpoint ep;
	SSL_CTX *ssl_ctx; /* NULL for plain HTTP */
	const char *path; /* request path */
	char **csr_json;  /* CSR PEMs, already escaped for a JSON string */
	size_t csr_count;
	char **tokens; /* agentca only */
	size_t token_count;
	double *latency; /* seconds, one slot per success, preallocated */
	size_t latency_cap;
	atomic_size_t next; /* next request number: token index, CSR index, --requests */
	atomic_size_t latency_len;
	atomic_uint_fast64_t ok;
	atomic_uint_fast64_t failed;
	atomic_int out_of_tokens;
	atomic_flag reported; /* the first failure is described on stderr, once */
	pthread_barrier_t start;
	double t_start, t_end; /* the clock, set by the first thread past the barrier */
	pthread_mutex_t lock;  /* t_start, t_end */
	int started;
};

/* One keep-alive connection and its receive buffer. */
struct conn {
	int fd;
	SSL *ssl;
	char *buf;
	size_t len; /* bytes in buf */
	size_t cap;
};

/* One parsed response. body points into conn.buf. */
struct response {
	int status;
	int close;
	const char *body;
	size_t body_len;
	size_t consumed; /* bytes of conn.buf this response used */
};

/* Monotonic seconds. */
static double
now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Print usage and return 2. */
static int
usage(const char *why)
{
	if (why != NULL)
		fprintf(stderr, "bench_enroll: %s\n", why);
	fprintf(stderr, "usage: bench_enroll --target agentca|cfssl --url URL [--ca-dir DIR] "
	                "[--subject ID] [--dns NAME] [--tokens N] [--connections C] "
	                "[--seconds S | --requests N] [--csrs K]\n");
	return 2;
}

/* Parse argv into o; 0 or 2 (usage). */
static int
parse_args(int argc, char **argv, struct options *o)
{
	memset(o, 0, sizeof(*o));
	o->target = -1;
	o->subject = "spiffe://bench.internal/agent";
	o->dns = "agent.bench.internal";
	o->connections = 1;
	o->csrs = 256;
	for (int i = 1; i < argc; i += 2) {
		const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (v == NULL)
			return usage("an option lacks its value");
		if (strcmp(k, "--target") == 0) {
			if (strcmp(v, "agentca") == 0)
				o->target = TARGET_AGENTCA;
			else if (strcmp(v, "cfssl") == 0)
				o->target = TARGET_CFSSL;
			else
				return usage("--target is agentca or cfssl");
		} else if (strcmp(k, "--url") == 0) {
			o->url = v;
		} else if (strcmp(k, "--ca-dir") == 0) {
			o->ca_dir = v;
		} else if (strcmp(k, "--subject") == 0) {
			o->subject = v;
		} else if (strcmp(k, "--dns") == 0) {
			o->dns = v;
		} else if (strcmp(k, "--connections") == 0) {
			o->connections = atoi(v);
		} else if (strcmp(k, "--seconds") == 0) {
			o->seconds = atof(v);
		} else if (strcmp(k, "--requests") == 0) {
			o->requests = strtoull(v, NULL, 10);
		} else if (strcmp(k, "--tokens") == 0) {
			o->tokens = strtoull(v, NULL, 10);
		} else if (strcmp(k, "--csrs") == 0) {
			o->csrs = strtoull(v, NULL, 10);
		} else {
			return usage("unknown option");
		}
	}
	if ((int)o->target < 0 || o->url == NULL)
		return usage("--target and --url are required");
	if (o->target == TARGET_AGENTCA && o->ca_dir == NULL)
		return usage("--target agentca needs --ca-dir");
	if (o->connections < 1 || o->connections > MAX_CONNECTIONS)
		return usage("--connections is 1 to 1024");
	if ((o->seconds > 0) == (o->requests > 0))
		return usage("give exactly one of --seconds and --requests");
	if (o->csrs < 1 || o->csrs > 100000)
		return usage("--csrs is 1 to 100000");
	return 0;
}

/* Split "http[s]://HOST:PORT[/]" into ep and resolve it (numeric or a name). */
static int
parse_url(const char *url, struct endpoint *ep)
{
	const char *rest, *colon;
	struct addrinfo hints, *res = NULL;
	size_t hlen;

	memset(ep, 0, sizeof(*ep));
	if (strncmp(url, "https://", 8) == 0) {
		ep->tls = 1;
		rest = url + 8;
	} else if (strncmp(url, "http://", 7) == 0) {
		rest = url + 7;
	} else {
		fprintf(stderr, "bench_enroll: %s: not an http:// or https:// URL\n", url);
		return -1;
	}
	colon = strrchr(rest, ':');
	if (colon == NULL || colon == rest) {
		fprintf(stderr, "bench_enroll: %s: want scheme://HOST:PORT\n", url);
		return -1;
	}
	hlen = (size_t)(colon - rest);
	if (hlen >= sizeof(ep->host) || strcspn(colon + 1, "/") >= sizeof(ep->port)) {
		fprintf(stderr, "bench_enroll: %s: host or port too long\n", url);
		return -1;
	}
	memcpy(ep->host, rest, hlen);
	memcpy(ep->port, colon + 1, strcspn(colon + 1, "/"));
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	if (getaddrinfo(ep->host, ep->port, &hints, &res) != 0 || res == NULL) {
		fprintf(stderr, "bench_enroll: %s: cannot resolve\n", url);
		return -1;
	}
	memcpy(&ep->addr, res->ai_addr, res->ai_addrlen);
	ep->addr_len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

/* Copy s into a new string escaped for the inside of a JSON string (PEM: newlines only,
 * but quotes, backslashes and control characters are handled too). */
static char *
json_escape(const char *s, size_t len)
{
	char *out = malloc(len * 6 + 1), *p = out;

	if (out == NULL)
		return NULL;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '\n') {
			*p++ = '\\';
			*p++ = 'n';
		} else if (c == '"' || c == '\\') {
			*p++ = '\\';
			*p++ = (char)c;
		} else if (c < 0x20) {
			p += sprintf(p, "\\u%04x", c);
		} else {
			*p++ = (char)c;
		}
	}
	*p = '\0';
	return out;
}

/* A fresh P-256 key and a CSR for it (CN and DNS SAN = dns unless dns is ""), PEM escaped
 * for JSON. */
static char *
make_csr(const char *dns)
{
	EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	X509_REQ *req = X509_REQ_new();
	X509_NAME *name = NULL;
	STACK_OF(X509_EXTENSION) *exts = NULL;
	X509_EXTENSION *ext = NULL;
	BIO *bio = BIO_new(BIO_s_mem());
	char san[300];
	BUF_MEM *mem;
	char *out = NULL;

	if (key == NULL || req == NULL || bio == NULL)
		goto out;
	if (!X509_REQ_set_version(req, 0) || !X509_REQ_set_pubkey(req, key))
		goto out;
	if (dns[0] != '\0') {
		name = X509_NAME_new();
		exts = sk_X509_EXTENSION_new_null();
		if (name == NULL || exts == NULL)
			goto out;
		if (!X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
		                                (const unsigned char *)dns, -1, -1, 0) ||
		    !X509_REQ_set_subject_name(req, name))
			goto out;
		snprintf(san, sizeof(san), "DNS:%s", dns);
		ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, san);
		if (ext == NULL || !sk_X509_EXTENSION_push(exts, ext))
			goto out;
		ext = NULL; /* owned by exts */
		if (!X509_REQ_add_extensions(req, exts))
			goto out;
	}
	if (!X509_REQ_sign(req, key, EVP_sha256()) || !PEM_write_bio_X509_REQ(bio, req))
		goto out;
	BIO_get_mem_ptr(bio, &mem);
	out = json_escape(mem->data, mem->length);
out:
	X509_EXTENSION_free(ext);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_NAME_free(name);
	BIO_free(bio);
	X509_REQ_free(req);
	EVP_PKEY_free(key);
	return out;
}

/* Hex SHA-256 of the first certificate in DIR/root.pem: the tokens' audience. */
static int
root_fingerprint(const char *dir, char out[65])
{
	char path[4096];
	struct ac_err err;
	FILE *f = NULL;
	X509 *root = NULL;
	int rc = -1;

	ac_err_clear(&err);
	snprintf(path, sizeof(path), "%s/root.pem", dir);
	f = fopen(path, "r");
	if (f == NULL) {
		fprintf(stderr, "bench_enroll: %s: %s\n", path, strerror(errno));
		goto out;
	}
	root = PEM_read_X509(f, NULL, NULL, NULL);
	if (root == NULL) {
		fprintf(stderr, "bench_enroll: %s: no certificate\n", path);
		goto out;
	}
	if (cert_fingerprint(root, out, &err) != 0) {
		fprintf(stderr, "bench_enroll: %s\n", err.msg);
		goto out;
	}
	rc = 0;
out:
	X509_free(root);
	if (f != NULL)
		fclose(f);
	return rc;
}

/* What one minting thread does: tokens[first, first + count). */
struct mint_job {
	struct bench *b;
	const char *audience;
	const char *passphrase;
	size_t first, count;
	int rc;
	struct ac_err err;
};

/* Mint job->count tokens with a signer of its own (libjwt re-reads the key PEM for every
 * token: about half a millisecond each, so minting is spread over the cores). */
static void *
mint_thread(void *arg)
{
	struct mint_job *job = arg;
	struct bench *b = job->b;
	struct token_signer *signer = NULL;
	struct token_grant grant;

	job->rc = -1;
	ac_err_clear(&job->err);
	memset(&grant, 0, sizeof(grant));
	grant.type = TOKEN_BOOTSTRAP;
	snprintf(grant.subject, sizeof(grant.subject), "%s", b->o.subject);
	if (b->o.dns[0] != '\0' && cfg_strlist_add(&grant.dns, b->o.dns, &job->err) != 0)
		goto out;
	signer = token_signer_load(b->o.ca_dir, TOKEN_BOOTSTRAP, job->passphrase, job->audience,
	                           &job->err);
	if (signer == NULL)
		goto out;
	for (size_t i = job->first; i < job->first + job->count; i++)
		if (token_mint(signer, &grant, time_now(), TOKEN_TTL, &b->tokens[i], &job->err) !=
		    0)
			goto out;
	job->rc = 0;
out:
	token_signer_free(signer);
	token_grant_free(&grant);
	return NULL;
}

/* Mint b->token_count bootstrap tokens for the CA in o.ca_dir, one thread per core. */
static int
mint_tokens(struct bench *b)
{
	struct mint_job jobs[64];
	pthread_t threads[64];
	char passphrase[PASSPHRASE_MAX + 1], audience[65];
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	size_t nthreads, per;
	struct ac_err err;
	int started = 0, rc = -1;

	ac_err_clear(&err);
	passphrase[0] = '\0';
	if (strlen(b->o.subject) >= sizeof(((struct token_grant *)0)->subject)) {
		fprintf(stderr, "bench_enroll: --subject too long\n");
		goto out;
	}
	if (root_fingerprint(b->o.ca_dir, audience) != 0)
		goto out;
	if (passphrase_resolve(b->o.ca_dir, NULL, passphrase, sizeof(passphrase), &err) != 0) {
		fprintf(stderr, "bench_enroll: tokens: %s\n", err.msg);
		goto out;
	}
	b->tokens = calloc(b->token_count, sizeof(*b->tokens));
	if (b->tokens == NULL) {
		fprintf(stderr, "bench_enroll: out of memory for %zu tokens\n", b->token_count);
		goto out;
	}
	nthreads = cores < 1 ? 1 : cores > 64 ? 64 : (size_t)cores;
	per = (b->token_count + nthreads - 1) / nthreads;
	for (size_t t = 0; t < nthreads; t++) {
		struct mint_job *job = &jobs[t];

		memset(job, 0, sizeof(*job));
		job->b = b;
		job->audience = audience;
		job->passphrase = passphrase;
		job->first = t * per < b->token_count ? t * per : b->token_count;
		job->count = b->token_count - job->first < per ? b->token_count - job->first : per;
		if (pthread_create(&threads[t], NULL, mint_thread, job) != 0) {
			fprintf(stderr, "bench_enroll: cannot start a minting thread\n");
			break;
		}
		started++;
	}
	rc = started == (int)nthreads ? 0 : -1;
	for (int t = 0; t < started; t++) {
		pthread_join(threads[t], NULL);
		if (jobs[t].rc != 0) {
			if (rc == 0)
				fprintf(stderr, "bench_enroll: tokens: %s\n", jobs[t].err.msg);
			rc = -1;
		}
	}
out:
	passphrase_wipe(passphrase, sizeof(passphrase));
	return rc;
}

/* The client TLS context: TLS 1.3 only, the server verified against DIR/root.pem. */
static SSL_CTX *
make_ssl_ctx(const char *ca_dir)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	char path[4096];

	if (ctx == NULL)
		goto fail;
	snprintf(path, sizeof(path), "%s/root.pem", ca_dir);
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_load_verify_locations(ctx, path, NULL))
		goto fail;
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	return ctx;
fail:
	fprintf(stderr, "bench_enroll: TLS context: ");
	ERR_print_errors_fp(stderr);
	SSL_CTX_free(ctx);
	return NULL;
}

/* Close c's socket and TLS state; keep its buffer. */
static void
conn_close(struct conn *c)
{
	if (c->ssl != NULL) {
		SSL_shutdown(c->ssl);
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->fd >= 0) {
		close(c->fd);
		c->fd = -1;
	}
	c->len = 0;
}

/* Connect c to the endpoint (and complete the TLS handshake, verifying the server). */
static int
conn_open(struct bench *b, struct conn *c)
{
	struct timeval tv = {IO_TIMEOUT_S, 0};
	X509_VERIFY_PARAM *param;
	int one = 1;

	c->len = 0;
	c->fd = socket(b->ep.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		return -1;
	if (setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0 ||
	    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
	    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0 ||
	    connect(c->fd, (struct sockaddr *)&b->ep.addr, b->ep.addr_len) != 0)
		goto fail;
	if (b->ssl_ctx == NULL)
		return 0;
	c->ssl = SSL_new(b->ssl_ctx);
	if (c->ssl == NULL || !SSL_set_fd(c->ssl, c->fd))
		goto fail;
	param = SSL_get0_param(c->ssl);
	/* An IP literal is checked against the IP SANs, anything else against DNS SANs. */
	if (!X509_VERIFY_PARAM_set1_ip_asc(param, b->ep.host) &&
	    (!SSL_set1_host(c->ssl, b->ep.host) || !SSL_set_tlsext_host_name(c->ssl, b->ep.host)))
		goto fail;
	if (SSL_connect(c->ssl) != 1)
		goto fail;
	return 0;
fail:
	conn_close(c);
	return -1;
}

/* Write all of data; 0 or -1. */
static int
conn_write(struct conn *c, const char *data, size_t len)
{
	while (len > 0) {
		ssize_t n;

		if (c->ssl != NULL) {
			size_t w = 0;

			if (SSL_write_ex(c->ssl, data, len, &w) != 1)
				return -1;
			n = (ssize_t)w;
		} else {
			n = send(c->fd, data, len, MSG_NOSIGNAL);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				return -1;
		}
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Read more bytes into c->buf (growing it up to RESPONSE_MAX); 0, or -1 on EOF/error. */
static int
conn_fill(struct conn *c)
{
	if (c->len == c->cap) {
		size_t cap = c->cap * 2;
		char *nb;

		if (cap > RESPONSE_MAX)
			return -1;
		nb = realloc(c->buf, cap);
		if (nb == NULL)
			return -1;
		c->buf = nb;
		c->cap = cap;
	}
	for (;;) {
		ssize_t n;

		if (c->ssl != NULL) {
			size_t r = 0;

			if (SSL_read_ex(c->ssl, c->buf + c->len, c->cap - c->len, &r) != 1)
				return -1;
			n = (ssize_t)r;
		} else {
			n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				return -1;
		}
		c->len += (size_t)n;
		return 0;
	}
}

/* Find "\r\n\r\n" in c->buf; the offset just past it, or 0 when not there yet. */
static size_t
header_end(const struct conn *c)
{
	for (size_t i = 3; i < c->len; i++)
		if (c->buf[i - 3] == '\r' && c->buf[i - 2] == '\n' && c->buf[i - 1] == '\r' &&
		    c->buf[i] == '\n')
			return i + 1;
	return 0;
}

/* The value of header `name` in the header block [start, end), trimmed, as a pointer and a
 * length; NULL when absent. */
static const char *
header_value(const char *start, const char *end, const char *name, size_t *len)
{
	size_t nlen = strlen(name);
	const char *line = start;

	while (line < end) {
		const char *eol = memchr(line, '\n', (size_t)(end - line));
		const char *v, *ve;

		if (eol == NULL)
			eol = end;
		if ((size_t)(eol - line) > nlen && strncasecmp(line, name, nlen) == 0 &&
		    line[nlen] == ':') {
			v = line + nlen + 1;
			ve = eol;
			while (v < ve && (*v == ' ' || *v == '\t'))
				v++;
			while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
				ve--;
			*len = (size_t)(ve - v);
			return v;
		}
		line = eol + 1;
	}
	return NULL;
}

/* Check whether the chunked body starting at c->buf + off is all here. Returns 1 when it is
 * (*consumed = bytes of c->buf up to its end), 0 when more bytes are needed, -1 when
 * malformed. */
static int
chunked_complete(const struct conn *c, size_t off, size_t *consumed)
{
	size_t in = off;

	for (;;) {
		const char *eol = memchr(c->buf + in, '\n', c->len - in);
		char *endp;
		unsigned long size;

		if (eol == NULL)
			return 0;
		errno = 0;
		size = strtoul(c->buf + in, &endp, 16);
		if (errno != 0 || endp == c->buf + in || size > RESPONSE_MAX)
			return -1;
		in = (size_t)(eol - c->buf) + 1;
		if (size > 0) {
			if (c->len - in < size + 2)
				return 0;
			in += size + 2;
			continue;
		}
		/* The last chunk: trailers (none expected) end with an empty line. */
		for (;;) {
			eol = memchr(c->buf + in, '\n', c->len - in);
			if (eol == NULL)
				return 0;
			if (eol == c->buf + in || (eol == c->buf + in + 1 && c->buf[in] == '\r')) {
				*consumed = (size_t)(eol - c->buf) + 1;
				return 1;
			}
			in = (size_t)(eol - c->buf) + 1;
		}
	}
}

/* Once chunked_complete() said yes: move the chunks' data together at off, in place.
 * Returns the body's length. */
static size_t
chunked_pack(struct conn *c, size_t off)
{
	size_t in = off, out = off;

	for (;;) {
		const char *eol = memchr(c->buf + in, '\n', c->len - in);
		unsigned long size = strtoul(c->buf + in, NULL, 16);

		in = (size_t)(eol - c->buf) + 1;
		if (size == 0)
			return out - off;
		memmove(c->buf + out, c->buf + in, size);
		out += size;
		in += size + 2;
	}
}

/* Read one whole response from c into r. 0, or -1 (connection broken or response
 * malformed: the caller closes the connection). */
static int
read_response(struct conn *c, struct response *r)
{
	size_t hend, vlen;
	const char *v;
	int http10, chunked = 0;
	size_t clen = 0;

	memset(r, 0, sizeof(*r));
	while ((hend = header_end(c)) == 0)
		if (conn_fill(c) != 0)
			return -1;
	if (c->len < 12 || strncmp(c->buf, "HTTP/1.", 7) != 0 || c->buf[8] != ' ')
		return -1;
	http10 = c->buf[7] == '0';
	r->status = atoi(c->buf + 9);
	r->close = http10;
	v = header_value(c->buf, c->buf + hend, "Connection", &vlen);
	if (v != NULL && vlen == 5 && strncasecmp(v, "close", 5) == 0)
		r->close = 1;
	if (v != NULL && vlen == 10 && strncasecmp(v, "keep-alive", 10) == 0)
		r->close = 0;
	v = header_value(c->buf, c->buf + hend, "Transfer-Encoding", &vlen);
	if (v != NULL && vlen == 7 && strncasecmp(v, "chunked", 7) == 0)
		chunked = 1;
	if (!chunked) {
		v = header_value(c->buf, c->buf + hend, "Content-Length", &vlen);
		if (v == NULL)
			return -1; /* reading to EOF is not worth supporting here */
		clen = strtoul(v, NULL, 10);
		if (clen > RESPONSE_MAX)
			return -1;
		while (c->len - hend < clen)
			if (conn_fill(c) != 0)
				return -1;
		r->consumed = hend + clen;
	} else {
		int done;

		while ((done = chunked_complete(c, hend, &r->consumed)) == 0)
			if (conn_fill(c) != 0)
				return -1;
		if (done < 0)
			return -1;
		clen = chunked_pack(c, hend);
	}
	r->body = c->buf + hend;
	r->body_len = clen;
	return 0;
}

/* Drop the response's bytes from the front of c->buf (a pipelined extra would stay). */
static void
consume(struct conn *c, const struct response *r)
{
	memmove(c->buf, c->buf + r->consumed, c->len - r->consumed);
	c->len -= r->consumed;
}

/* Build the request for request number i into buf; its length, or 0 when it does not fit
 * or there is no token left. */
static size_t
build_request(struct bench *b, size_t i, char *buf, size_t cap)
{
	const char *csr = b->csr_json[i % b->csr_count];
	char *body = buf + cap / 2;
	size_t half = cap / 2;
	int blen, hlen;

	if (b->o.target == TARGET_AGENTCA) {
		if (i >= b->token_count)
			return 0;
		blen = snprintf(body, half, "{\"token\":\"%s\",\"csr\":\"%s\"}", b->tokens[i], csr);
	} else {
		blen = snprintf(body, half, "{\"certificate_request\":\"%s\"}", csr);
	}
	if (blen < 0 || (size_t)blen >= half)
		return 0;
	hlen = snprintf(buf, half,
	                "POST %s HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/json\r\n"
	                "Content-Length: %d\r\n\r\n",
	                b->path, b->ep.host, b->ep.port, blen);
	if (hlen < 0 || (size_t)hlen >= half)
		return 0;
	memmove(buf + hlen, body, (size_t)blen);
	return (size_t)hlen + (size_t)blen;
}

/* 1 when r is what this target calls a success. */
static int
success(const struct bench *b, const struct response *r)
{
	if (b->o.target == TARGET_AGENTCA)
		return r->status == 201;
	return r->status == 200 && memmem(r->body, r->body_len, "\"success\":true", 14) != NULL;
}

/* Say what the first failure was, once per run. */
static void
report_failure(struct bench *b, const char *what, const struct response *r)
{
	if (atomic_flag_test_and_set(&b->reported))
		return;
	if (r != NULL)
		fprintf(stderr, "bench_enroll: first failure: status %d: %.*s\n", r->status,
		        (int)(r->body_len > 300 ? 300 : r->body_len), r->body);
	else
		fprintf(stderr, "bench_enroll: first failure: %s\n", what);
}

/* One connection: open before the clock, then requests until the time, the requests or
 * the tokens are used up. */
static void *
connection_thread(void *arg)
{
	struct bench *b = arg;
	struct conn c = {.fd = -1};
	size_t reqcap = 64 * 1024;
	char *req = malloc(reqcap);
	double end;

	c.cap = 16 * 1024;
	c.buf = malloc(c.cap);
	/* A failure here is not counted: each request retries the connection and counts. */
	if (req == NULL || c.buf == NULL || conn_open(b, &c) != 0)
		report_failure(b, "cannot connect before the clock starts", NULL);
	pthread_barrier_wait(&b->start);
	pthread_mutex_lock(&b->lock);
	if (!b->started) {
		b->t_start = now_seconds();
		b->started = 1;
	}
	end = b->t_start + b->o.seconds;
	pthread_mutex_unlock(&b->lock);
	if (req == NULL || c.buf == NULL) {
		atomic_fetch_add(&b->failed, 1);
		goto out;
	}

	for (;;) {
		struct response r;
		size_t i, len, slot;
		double t0, dt;

		if (b->o.seconds > 0 && now_seconds() >= end)
			break;
		i = atomic_fetch_add(&b->next, 1);
		if (b->o.requests > 0 && i >= b->o.requests)
			break;
		if (b->o.target == TARGET_AGENTCA && i >= b->token_count) {
			atomic_store(&b->out_of_tokens, 1);
			break;
		}
		len = build_request(b, i, req, reqcap);
		if (len == 0) {
			report_failure(b, "request does not fit its buffer", NULL);
			atomic_fetch_add(&b->failed, 1);
			continue;
		}
		t0 = now_seconds();
		if (c.fd < 0 && conn_open(b, &c) != 0) {
			report_failure(b, "cannot reconnect", NULL);
			atomic_fetch_add(&b->failed, 1);
			continue;
		}
		if (conn_write(&c, req, len) != 0 || read_response(&c, &r) != 0) {
			report_failure(b, "connection broken or response malformed", NULL);
			atomic_fetch_add(&b->failed, 1);
			conn_close(&c);
			continue;
		}
		dt = now_seconds() - t0;
		if (success(b, &r)) {
			atomic_fetch_add(&b->ok, 1);
			slot = atomic_fetch_add(&b->latency_len, 1);
			if (slot < b->latency_cap)
				b->latency[slot] = dt;
		} else {
			report_failure(b, NULL, &r);
			atomic_fetch_add(&b->failed, 1);
		}
		consume(&c, &r);
		if (r.close)
			conn_close(&c);
	}
out:
	pthread_mutex_lock(&b->lock);
	if (now_seconds() > b->t_end)
		b->t_end = now_seconds();
	pthread_mutex_unlock(&b->lock);
	conn_close(&c);
	free(c.buf);
	free(req);
	return NULL;
}

/* qsort order for doubles. */
static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Nearest-rank percentile p (0..1] of the sorted v[0..n); 0 when n is 0. */
static double
percentile(const double *v, size_t n, double p)
{
	size_t rank;

	if (n == 0)
		return 0;
	rank = (size_t)ceil(p * (double)n);
	if (rank < 1)
		rank = 1;
	return v[rank - 1];
}

int
main(int argc, char **argv)
{
	struct bench b;
	pthread_t threads[MAX_CONNECTIONS];
	int started = 0, rc = 1, barrier = 0, lock = 0;
	size_t n;
	double elapsed;
	uint64_t ok, failed;

	memset(&b, 0, sizeof(b));
	atomic_flag_clear(&b.reported);
	if (parse_args(argc, argv, &b.o) != 0)
		return 2;
	signal(SIGPIPE, SIG_IGN);
	ac_log_set_level(AC_LOG_ERROR);
	if (parse_url(b.o.url, &b.ep) != 0)
		goto out;
	if (b.o.target == TARGET_AGENTCA) {
		if (!b.ep.tls) {
			fprintf(stderr, "bench_enroll: agentca answers https:// only\n");
			goto out;
		}
		b.path = "/v1/enroll";
	} else {
		b.path = "/api/v1/cfssl/sign";
	}
	if (b.ep.tls) {
		if (b.o.ca_dir == NULL) {
			fprintf(stderr, "bench_enroll: https:// needs --ca-dir for root.pem\n");
			goto out;
		}
		b.ssl_ctx = make_ssl_ctx(b.o.ca_dir);
		if (b.ssl_ctx == NULL)
			goto out;
	}

	/* Everything below until the barrier happens before the clock. */
	b.csr_count = b.o.csrs;
	b.csr_json = calloc(b.csr_count, sizeof(*b.csr_json));
	if (b.csr_json == NULL)
		goto out;
	for (size_t i = 0; i < b.csr_count; i++) {
		b.csr_json[i] = make_csr(b.o.dns);
		if (b.csr_json[i] == NULL) {
			fprintf(stderr, "bench_enroll: cannot make a CSR: ");
			ERR_print_errors_fp(stderr);
			goto out;
		}
	}
	if (b.o.requests > 0)
		b.latency_cap = b.o.requests;
	else
		b.latency_cap = (size_t)(b.o.seconds * 50000) + 1000;
	if (b.o.target == TARGET_AGENTCA) {
		b.token_count = b.o.tokens;
		if (b.token_count == 0 && b.o.requests > 0)
			b.token_count = b.o.requests;
		if (b.token_count == 0) {
			b.token_count = (size_t)(b.o.seconds * DEFAULT_TOKENS_PER_SECOND);
			if (b.token_count > MAX_DEFAULT_TOKENS)
				b.token_count = MAX_DEFAULT_TOKENS;
		}
		if (mint_tokens(&b) != 0)
			goto out;
		b.latency_cap = b.token_count;
	}
	b.latency = malloc(b.latency_cap * sizeof(*b.latency));
	if (b.latency == NULL) {
		fprintf(stderr, "bench_enroll: out of memory for latencies\n");
		goto out;
	}
	/* Touch the array so that page faults are not timed. */
	memset(b.latency, 0, b.latency_cap * sizeof(*b.latency));
	if (pthread_barrier_init(&b.start, NULL, (unsigned)b.o.connections) != 0)
		goto out;
	barrier = 1;
	if (pthread_mutex_init(&b.lock, NULL) != 0)
		goto out;
	lock = 1;

	for (; started < b.o.connections; started++)
		if (pthread_create(&threads[started], NULL, connection_thread, &b) != 0)
			break;
	if (started < b.o.connections) {
		/* The barrier waits for every thread: without them the others never start. */
		fprintf(stderr, "bench_enroll: cannot start %d threads\n", b.o.connections);
		exit(1);
	}
	for (int i = 0; i < started; i++)
		pthread_join(threads[i], NULL);

	elapsed = b.t_end - b.t_start;
	ok = atomic_load(&b.ok);
	failed = atomic_load(&b.failed);
	n = atomic_load(&b.latency_len);
	if (n > b.latency_cap)
		n = b.latency_cap;
	qsort(b.latency, n, sizeof(*b.latency), cmp_double);
	printf("target=%s connections=%d seconds=%.2f ok=%" PRIu64 " failed=%" PRIu64
	       " rate=%.1f/s p50_ms=%.2f p99_ms=%.2f\n",
	       b.o.target == TARGET_AGENTCA ? "agentca" : "cfssl", b.o.connections, elapsed, ok,
	       failed, elapsed > 0 ? (double)ok / elapsed : 0.0,
	       percentile(b.latency, n, 0.50) * 1e3, percentile(b.latency, n, 0.99) * 1e3);
	if (atomic_load(&b.out_of_tokens))
		fprintf(stderr,
		        "bench_enroll: the %zu tokens ran out before --seconds; the rate is over "
		        "the time they lasted (give --tokens for a longer run)\n",
		        b.token_count);
	if (fflush(stdout) != 0)
		goto out;
	rc = failed == 0 && ok > 0 ? 0 : 1;
out:
	if (lock)
		pthread_mutex_destroy(&b.lock);
	if (barrier)
		pthread_barrier_destroy(&b.start);
	free(b.latency);
	for (size_t i = 0; b.tokens != NULL && i < b.token_count; i++) {
		if (b.tokens[i] != NULL)
			OPENSSL_cleanse(b.tokens[i], strlen(b.tokens[i]));
		free(b.tokens[i]);
	}
	free(b.tokens);
	for (size_t i = 0; b.csr_json != NULL && i < b.csr_count; i++)
		free(b.csr_json[i]);
	free(b.csr_json);
	SSL_CTX_free(b.ssl_ctx);
	return rc;
}
