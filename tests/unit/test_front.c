/*
 * test_front.c - the HTTPS front end to end: a throwaway CA, a real libmicrohttpd daemon
 * (no listen socket, fed by MHD_add_connection), front_start on 127.0.0.1:0 and [::1]:0,
 * and real clients: our own OpenSSL client (tls_client_ctx_new), plain TCP sockets, and
 * curl and openssl s_client when they are installed.
 *
 * The MHD handler answers:
 *   GET  /      the peer's SPIFFE ID from front_peer_of, "none" without a certificate,
 *               "unknown" if the front does not know the connection (a bug)
 *   GET  /big   1 MiB of a known pattern
 *   POST /count "len=<bytes> sum=<fnv1a>" of the body
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <microhttpd.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "ca/x509_build.h"
#include "common/log.h"
#include "enrollment/front.h"
#include "enrollment/tls.h"
#include "testutil.h"

#define SPIFFE "spiffe://corp.internal/gw-1"
#define BIG (1024 * 1024)
#define MHD_FLAGS                                                                                  \
	(MHD_USE_NO_LISTEN_SOCKET | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC)

/* A key and its certificate. */
struct kc {
	EVP_PKEY *key;
	X509 *cert;
};

static struct {
	char *dir;
	char logpath[4096];
	int logfd;
	struct kc ca, foreign, server, server2, client, foreign_client;
	struct tls_ctx_slot *slot;
	struct MHD_Daemon *mhd;
	struct front *front;
	int port, port6;
	SSL_CTX *anon, *with_cert, *with_foreign;
	unsigned char *big;
} fx;

/* A P-256 certificate for cn signed by issuer (NULL: self-signed CA). */
static struct kc
make_cert(const char *cn, const struct kc *issuer, const char *san)
{
	struct kc out = {NULL, NULL};
	struct ac_err err;
	X509_NAME *name;
	X509 *signer;
	char serial[41];
	int64_t now = (int64_t)time(NULL);

	ac_err_clear(&err);
	out.key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	out.cert = X509_new();
	assert_non_null(out.key);
	assert_non_null(out.cert);
	signer = issuer != NULL ? issuer->cert : out.cert;
	assert_int_equal(X509_set_version(out.cert, 2), 1);
	assert_int_equal(x509_set_random_serial(out.cert, serial, &err), 0);
	assert_int_equal(x509_set_validity(out.cert, now - 60, now + 3600, &err), 0);
	name = x509_name_make(cn, "agentca tests", &err);
	assert_non_null(name);
	assert_int_equal(X509_set_subject_name(out.cert, name), 1);
	assert_int_equal(X509_set_issuer_name(out.cert, X509_get_subject_name(signer)), 1);
	X509_NAME_free(name);
	assert_int_equal(X509_set_pubkey(out.cert, out.key), 1);
	assert_int_equal(
	    x509_add_ext_text(out.cert, signer, NID_subject_key_identifier, "hash", &err), 0);
	assert_int_equal(
	    x509_add_ext_text(out.cert, signer, NID_authority_key_identifier, "keyid:always", &err),
	    0);
	if (issuer == NULL) {
		assert_int_equal(x509_add_ext_text(out.cert, signer, NID_basic_constraints,
		                                   "critical,CA:TRUE", &err),
		                 0);
		assert_int_equal(x509_add_ext_text(out.cert, signer, NID_key_usage,
		                                   "critical,keyCertSign,cRLSign", &err),
		                 0);
	} else {
		assert_int_equal(x509_add_ext_text(out.cert, signer, NID_key_usage,
		                                   "critical,digitalSignature", &err),
		                 0);
		assert_int_equal(x509_add_ext_text(out.cert, signer, NID_ext_key_usage,
		                                   "serverAuth,clientAuth", &err),
		                 0);
		assert_int_equal(
		    x509_add_ext_text(out.cert, signer, NID_subject_alt_name, san, &err), 0);
	}
	assert_int_equal(
	    x509_sign(out.cert, issuer != NULL ? issuer->key : out.key, EVP_sha256(), &err), 0);
	return out;
}

static void
kc_free(struct kc *k)
{
	X509_free(k->cert);
	EVP_PKEY_free(k->key);
}

/* Write the certificate (and the key, if any) as PEM to DIR/name.pem and DIR/name.key. */
static void
kc_write(const struct kc *k, const char *name, int with_key)
{
	char path[4096];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/%s.pem", fx.dir, name);
	fp = fopen(path, "w");
	assert_non_null(fp);
	assert_int_equal(PEM_write_X509(fp, k->cert), 1);
	fclose(fp);
	if (!with_key)
		return;
	snprintf(path, sizeof(path), "%s/%s.key", fx.dir, name);
	fp = fopen(path, "w");
	assert_non_null(fp);
	assert_int_equal(PEM_write_PrivateKey(fp, k->key, NULL, NULL, 0, NULL, NULL), 1);
	fclose(fp);
}

/* A stack with one certificate (its own reference). */
static STACK_OF(X509) *
stack1(X509 *x)
{
	STACK_OF(X509) *sk = sk_X509_new_null();

	assert_non_null(sk);
	assert_true(X509_up_ref(x) == 1 && sk_X509_push(sk, x) > 0);
	return sk;
}

/* Server context for cert, optional client certificates from fx.ca. */
static SSL_CTX *
server_ctx(const struct kc *cert)
{
	struct tls_server_config cfg;
	struct ac_err err;
	SSL_CTX *ctx;

	memset(&cfg, 0, sizeof(cfg));
	cfg.cert = cert->cert;
	cfg.key = cert->key;
	cfg.client_roots = stack1(fx.ca.cert);
	cfg.client_auth = TLS_CLIENT_AUTH_OPTIONAL;
	ac_err_clear(&err);
	ctx = tls_server_ctx_new(&cfg, &err);
	sk_X509_pop_free(cfg.client_roots, X509_free);
	assert_non_null(ctx);
	return ctx;
}

/* Client context trusting fx.ca, presenting id (may be NULL). */
static SSL_CTX *
client_ctx(const struct kc *id)
{
	struct tls_client_config cfg;
	struct ac_err err;
	SSL_CTX *ctx;

	memset(&cfg, 0, sizeof(cfg));
	cfg.roots = stack1(fx.ca.cert);
	if (id != NULL) {
		cfg.cert = id->cert;
		cfg.key = id->key;
	}
	ac_err_clear(&err);
	ctx = tls_client_ctx_new(&cfg, &err);
	sk_X509_pop_free(cfg.roots, X509_free);
	assert_non_null(ctx);
	return ctx;
}

/* Per-request state of a POST /count. */
struct upload {
	size_t len;
	uint32_t sum;
};

/* FNV-1a over a buffer, continuing from h. */
static uint32_t
fnv1a(uint32_t h, const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 16777619u;
	return h;
}

static enum MHD_Result
reply(struct MHD_Connection *conn, const char *text)
{
	struct MHD_Response *r;
	enum MHD_Result rc;

	r = MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
	if (r == NULL)
		return MHD_NO;
	rc = MHD_queue_response(conn, MHD_HTTP_OK, r);
	MHD_destroy_response(r);
	return rc;
}

/* The test application. The first call for every request only allocates its state:
 * libmicrohttpd 0.9.75 closes the connection after a response queued in the first call. */
static enum MHD_Result
handler(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
        const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	struct tls_peer peer;
	struct upload *up = *con_cls;
	char text[128];

	(void)cls;
	(void)version;
	if (up == NULL) {
		up = calloc(1, sizeof(*up));
		if (up == NULL)
			return MHD_NO;
		up->sum = 2166136261u;
		*con_cls = up;
		return MHD_YES;
	}
	if (*upload_data_size > 0) {
		up->sum = fnv1a(up->sum, (const unsigned char *)upload_data, *upload_data_size);
		up->len += *upload_data_size;
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (strcmp(method, "POST") == 0) {
		snprintf(text, sizeof(text), "len=%zu sum=%08x", up->len, up->sum);
		return reply(conn, text);
	}
	if (strcmp(url, "/big") == 0) {
		struct MHD_Response *r;
		enum MHD_Result rc;

		r = MHD_create_response_from_buffer(BIG, fx.big, MHD_RESPMEM_PERSISTENT);
		if (r == NULL)
			return MHD_NO;
		rc = MHD_queue_response(conn, MHD_HTTP_OK, r);
		MHD_destroy_response(r);
		return rc;
	}
	if (front_peer_of(fx.front, conn, &peer) != 0)
		return reply(conn, "unknown");
	return reply(conn, peer.present ? peer.spiffe_id : "none");
}

/* Free a POST's state when MHD is done with the request. */
static void
completed(void *cls, struct MHD_Connection *conn, void **con_cls,
          enum MHD_RequestTerminationCode toe)
{
	(void)cls;
	(void)conn;
	(void)toe;
	free(*con_cls);
	*con_cls = NULL;
}

/* Start a front on 127.0.0.1:0 (and [::1]:0 when v6) with these limits. */
static struct front *
start_front(int v6, int max_conn, int first_byte_ms, int drain_ms, struct ac_err *err)
{
	const char *listen[] = {"127.0.0.1:0", "[::1]:0"};
	struct front_options o;

	memset(&o, 0, sizeof(o));
	o.listen = listen;
	o.listen_count = v6 ? 2 : 1;
	o.tls = fx.slot;
	o.mhd = fx.mhd;
	o.workers = 2;
	o.handshake_timeout_ms = 3000;
	o.first_byte_timeout_ms = first_byte_ms;
	o.max_connections = max_conn;
	o.drain_ms = drain_ms;
	ac_err_clear(err);
	return front_start(&o, err);
}

/* Is IPv6 loopback usable here? */
static int
have_ipv6(void)
{
	struct sockaddr_in6 a;
	int fd = socket(AF_INET6, SOCK_STREAM, 0), ok;

	if (fd < 0)
		return 0;
	memset(&a, 0, sizeof(a));
	a.sin6_family = AF_INET6;
	a.sin6_addr = in6addr_loopback;
	ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	close(fd);
	return ok;
}

static int
group_setup(void **state)
{
	struct ac_err err;

	(void)state;
	memset(&fx, 0, sizeof(fx));
	fx.dir = test_tmpdir("front");
	snprintf(fx.logpath, sizeof(fx.logpath), "%s/log.jsonl", fx.dir);
	fx.logfd = open(fx.logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fx.logfd < 0)
		return -1;
	ac_log_set_fd(fx.logfd);
	ac_log_set_level(AC_LOG_INFO);

	fx.ca = make_cert("Test Root", NULL, NULL);
	fx.foreign = make_cert("Foreign Root", NULL, NULL);
	fx.server = make_cert("server", &fx.ca, "IP:127.0.0.1,IP:::1,DNS:localhost");
	fx.server2 = make_cert("server-2", &fx.ca, "IP:127.0.0.1,IP:::1,DNS:localhost");
	fx.client = make_cert("gw-1", &fx.ca, "URI:" SPIFFE);
	fx.foreign_client = make_cert("intruder", &fx.foreign, "URI:" SPIFFE);
	kc_write(&fx.ca, "ca", 0);
	kc_write(&fx.client, "client", 1);
	kc_write(&fx.foreign_client, "foreign", 1);

	fx.big = malloc(BIG);
	if (fx.big == NULL)
		return -1;
	for (size_t i = 0; i < BIG; i++)
		fx.big[i] = (unsigned char)(i * 7 + (i >> 10));

	fx.slot = tls_slot_new(server_ctx(&fx.server));
	if (fx.slot == NULL)
		return -1;
	fx.mhd = MHD_start_daemon(MHD_FLAGS, 0, NULL, NULL, handler, NULL,
	                          MHD_OPTION_NOTIFY_COMPLETED, completed, NULL,
	                          MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)10, MHD_OPTION_END);
	if (fx.mhd == NULL) {
		fprintf(stderr, "MHD_start_daemon failed\n");
		return -1;
	}
	fx.front = start_front(have_ipv6(), 100, 2000, 3000, &err);
	if (fx.front == NULL) {
		fprintf(stderr, "front_start: %s\n", err.msg);
		return -1;
	}
	fx.port = front_bound_port(fx.front, 0);
	fx.port6 = have_ipv6() ? front_bound_port(fx.front, 1) : -1;
	fx.anon = client_ctx(NULL);
	fx.with_cert = client_ctx(&fx.client);
	fx.with_foreign = client_ctx(&fx.foreign_client);
	return fx.port > 0 ? 0 : -1;
}

static int
group_teardown(void **state)
{
	(void)state;
	front_stop(fx.front);
	MHD_stop_daemon(fx.mhd);
	tls_slot_free(fx.slot);
	SSL_CTX_free(fx.anon);
	SSL_CTX_free(fx.with_cert);
	SSL_CTX_free(fx.with_foreign);
	kc_free(&fx.ca);
	kc_free(&fx.foreign);
	kc_free(&fx.server);
	kc_free(&fx.server2);
	kc_free(&fx.client);
	kc_free(&fx.foreign_client);
	free(fx.big);
	ac_log_set_fd(2);
	close(fx.logfd);
	test_rmdir(fx.dir);
	return 0;
}

/* A blocking TCP connection to host:port with 10 s send/receive timeouts. */
static int
tcp_connect(const char *host, int port)
{
	struct sockaddr_storage ss;
	struct timeval tv = {10, 0};
	socklen_t len;
	int fd;

	memset(&ss, 0, sizeof(ss));
	if (strchr(host, ':') != NULL) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;

		a->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16_t)port);
		assert_int_equal(inet_pton(AF_INET6, host, &a->sin6_addr), 1);
		len = sizeof(*a);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;

		a->sin_family = AF_INET;
		a->sin_port = htons((uint16_t)port);
		assert_int_equal(inet_pton(AF_INET, host, &a->sin_addr), 1);
		len = sizeof(*a);
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
	assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)), 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&ss, len), 0);
	return fd;
}

/* A TLS connection; NULL when the handshake fails. */
static SSL *
tls_connect(SSL_CTX *ctx, const char *host, int port)
{
	struct ac_err err;
	SSL *ssl = SSL_new(ctx);
	int fd = tcp_connect(host, port);

	assert_non_null(ssl);
	assert_int_equal(SSL_set_fd(ssl, fd), 1);
	ac_err_clear(&err);
	assert_int_equal(tls_client_set_host(ssl, host, &err), 0);
	if (SSL_connect(ssl) != 1) {
		ERR_clear_error();
		SSL_free(ssl);
		close(fd);
		return NULL;
	}
	return ssl;
}

static void
tls_close(SSL *ssl)
{
	int fd = SSL_get_fd(ssl);

	SSL_shutdown(ssl);
	SSL_free(ssl);
	close(fd);
	ERR_clear_error();
}

/* One HTTP/1.1 request on ssl; returns the status (-1 on a broken connection) and puts
 * the body (NUL-terminated, heap) in *body. */
static int
http(SSL *ssl, const char *method, const char *path, const unsigned char *data, size_t len,
     char **body, size_t *body_len)
{
	size_t cap = BIG + 65536, have = 0, need = 0, hdr = 0, clen = 0;
	char head[512], *buf = malloc(cap), *end, *cl;
	int n, status = -1;

	assert_non_null(buf);
	*body = NULL;
	if (body_len != NULL)
		*body_len = 0;
	n = snprintf(head, sizeof(head),
	             "%s %s HTTP/1.1\r\nHost: test\r\nContent-Length: %zu\r\n\r\n", method, path,
	             len);
	if (SSL_write(ssl, head, n) != n)
		goto out;
	for (size_t off = 0; off < len;) {
		n = SSL_write(ssl, data + off, (int)(len - off > 65536 ? 65536 : len - off));
		if (n <= 0)
			goto out;
		off += (size_t)n;
	}
	for (;;) {
		if (hdr == 0 && (end = memmem(buf, have, "\r\n\r\n", 4)) != NULL) {
			hdr = (size_t)(end - buf) + 4;
			buf[hdr - 1] = '\0';
			cl = strcasestr(buf, "Content-Length:");
			assert_non_null(cl);
			clen = strtoul(cl + 15, NULL, 10);
			need = hdr + clen;
			assert_true(need < cap);
			if (sscanf(buf, "HTTP/1.1 %d", &status) != 1)
				status = -1;
		}
		if (hdr != 0 && have >= need)
			break;
		n = SSL_read(ssl, buf + have, (int)(cap - have - 1));
		if (n <= 0) {
			status = -1;
			goto out;
		}
		have += (size_t)n;
	}
	memmove(buf, buf + hdr, clen);
	buf[clen] = '\0';
	*body = buf;
	buf = NULL;
	if (body_len != NULL)
		*body_len = clen;
out:
	ERR_clear_error();
	free(buf);
	return status;
}

/* GET / on a fresh connection: the body, or NULL when the connection failed. */
static char *
get_root(SSL_CTX *ctx, const char *host, int port, int *version)
{
	char *body = NULL;
	SSL *ssl = tls_connect(ctx, host, port);

	if (ssl == NULL)
		return NULL;
	if (version != NULL)
		*version = SSL_version(ssl);
	if (http(ssl, "GET", "/", NULL, 0, &body, NULL) != 200) {
		free(body);
		body = NULL;
	}
	tls_close(ssl);
	return body;
}

/* Wait (up to 5 s) until the counter read by fn reaches want. */
static uint64_t
wait_stat(size_t offset, uint64_t want)
{
	struct front_stats st;
	uint64_t v = 0;

	for (int i = 0; i < 500; i++) {
		front_stats(fx.front, &st);
		memcpy(&v, (const char *)&st + offset, sizeof(v));
		if (v >= want)
			break;
		usleep(10000);
	}
	return v;
}

/* Does the log file get both strings on one line within 5 s? (The front counts first and
 * logs after, so a line may trail its counter.) */
static int
log_has(const char *a, const char *b)
{
	char line[4096];
	int found = 0;

	for (int i = 0; i < 500 && !found; i++) {
		FILE *fp = fopen(fx.logpath, "r");

		assert_non_null(fp);
		while (!found && fgets(line, sizeof(line), fp) != NULL)
			found = strstr(line, a) != NULL && strstr(line, b) != NULL;
		fclose(fp);
		if (!found)
			usleep(10000);
	}
	return found;
}

/* TLS 1.3 by default, TLS 1.2 when the client caps it; both reach MHD. */
static void
test_versions(void **state)
{
	SSL_CTX *tls12 = client_ctx(NULL);
	char *body;
	int v = 0;

	(void)state;
	body = get_root(fx.anon, "127.0.0.1", fx.port, &v);
	assert_non_null(body);
	assert_string_equal(body, "none");
	assert_int_equal(v, TLS1_3_VERSION);
	free(body);
	assert_int_equal(SSL_CTX_set_max_proto_version(tls12, TLS1_2_VERSION), 1);
	body = get_root(tls12, "127.0.0.1", fx.port, &v);
	assert_non_null(body);
	assert_string_equal(body, "none");
	assert_int_equal(v, TLS1_2_VERSION);
	free(body);
	SSL_CTX_free(tls12);
}

/* IPv6 loopback listener. */
static void
test_ipv6(void **state)
{
	char *body;

	(void)state;
	if (fx.port6 <= 0)
		skip();
	body = get_root(fx.with_cert, "::1", fx.port6, NULL);
	assert_non_null(body);
	assert_string_equal(body, SPIFFE);
	free(body);
}

/* The handler sees the client certificate's SPIFFE ID; a foreign CA's certificate fails. */
static void
test_client_cert(void **state)
{
	struct front_stats st;
	char *body;

	(void)state;
	body = get_root(fx.with_cert, "127.0.0.1", fx.port, NULL);
	assert_non_null(body);
	assert_string_equal(body, SPIFFE);
	free(body);

	front_stats(fx.front, &st);
	/* TLS 1.3: the client finishes first, the server's alert arrives on the first read. */
	body = get_root(fx.with_foreign, "127.0.0.1", fx.port, NULL);
	assert_null(body);
	assert_true(wait_stat(offsetof(struct front_stats, handshakes_failed),
	                      st.handshakes_failed + 1) >= st.handshakes_failed + 1);
	assert_true(log_has("tls_handshake_failed", "certificate"));
}

/* A client offering only TLS 1.1, or only a CBC suite, is refused by the server. */
static void
test_weak_clients(void **state)
{
	struct front_stats st;
	SSL_CTX *old = SSL_CTX_new(TLS_client_method());
	SSL *ssl;

	(void)state;
	assert_non_null(old);
	SSL_CTX_set_verify(old, SSL_VERIFY_NONE, NULL);
	assert_int_equal(SSL_CTX_set_min_proto_version(old, TLS1_1_VERSION), 1);
	assert_int_equal(SSL_CTX_set_max_proto_version(old, TLS1_1_VERSION), 1);
	assert_int_equal(SSL_CTX_set_cipher_list(old, "DEFAULT:@SECLEVEL=0"), 1);
	front_stats(fx.front, &st);
	ssl = tls_connect(old, "127.0.0.1", fx.port);
	assert_null(ssl);
	assert_true(wait_stat(offsetof(struct front_stats, handshakes_failed),
	                      st.handshakes_failed + 1) >= st.handshakes_failed + 1);

	assert_int_equal(SSL_CTX_set_max_proto_version(old, TLS1_2_VERSION), 1);
	assert_int_equal(SSL_CTX_set_min_proto_version(old, TLS1_2_VERSION), 1);
	assert_int_equal(SSL_CTX_set_cipher_list(old, "ECDHE-ECDSA-AES128-SHA256"), 1);
	ssl = tls_connect(old, "127.0.0.1", fx.port);
	assert_null(ssl);
	assert_true(wait_stat(offsetof(struct front_stats, handshakes_failed),
	                      st.handshakes_failed + 2) >= st.handshakes_failed + 2);
	assert_true(log_has("tls_handshake_failed", "127.0.0.1"));
	SSL_CTX_free(old);
}

/* Plaintext HTTP gets the connection closed with zero bytes back, and is counted. */
static void
test_plaintext(void **state)
{
	const char req[] = "GET / HTTP/1.1\r\nHost: test\r\n\r\n";
	struct front_stats st;
	char buf[256];
	ssize_t n, total = 0;
	int fd;

	(void)state;
	front_stats(fx.front, &st);
	fd = tcp_connect("127.0.0.1", fx.port);
	assert_int_equal(send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL), (ssize_t)sizeof(req) - 1);
	while ((n = recv(fd, buf, sizeof(buf), 0)) > 0)
		total += n;
	assert_true(n == 0 || errno == ECONNRESET);
	assert_int_equal(total, 0);
	close(fd);
	assert_true(wait_stat(offsetof(struct front_stats, plaintext_refused),
	                      st.plaintext_refused + 1) >= st.plaintext_refused + 1);
	assert_true(log_has("plaintext_refused", "127.0.0.1:"));
}

/* Several requests on one keep-alive connection, each seeing the client identity. */
static void
test_keepalive(void **state)
{
	struct front_stats st;
	SSL *ssl;
	char *body;

	(void)state;
	front_stats(fx.front, &st);
	ssl = tls_connect(fx.with_cert, "127.0.0.1", fx.port);
	assert_non_null(ssl);
	for (int i = 0; i < 5; i++) {
		assert_int_equal(http(ssl, "GET", "/", NULL, 0, &body, NULL), 200);
		assert_string_equal(body, SPIFFE);
		free(body);
	}
	tls_close(ssl);
	front_stats(fx.front, &st);
	assert_true(st.handshakes_ok >= 1);
}

/* 1 MiB each way: an upload counted by the handler, a download checked byte for byte. */
static void
test_bulk(void **state)
{
	unsigned char *data = malloc(BIG);
	char expect[64], *body;
	size_t len;
	SSL *ssl;

	(void)state;
	assert_non_null(data);
	for (size_t i = 0; i < BIG; i++)
		data[i] = (unsigned char)(i ^ (i >> 8) ^ (i >> 16));
	snprintf(expect, sizeof(expect), "len=%d sum=%08x", BIG, fnv1a(2166136261u, data, BIG));
	ssl = tls_connect(fx.anon, "127.0.0.1", fx.port);
	assert_non_null(ssl);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(http(ssl, "POST", "/count", data, BIG, &body, NULL), 200);
		assert_string_equal(body, expect);
		free(body);
		assert_int_equal(http(ssl, "GET", "/big", NULL, 0, &body, &len), 200);
		assert_int_equal(len, BIG);
		assert_memory_equal(body, fx.big, BIG);
		free(body);
	}
	tls_close(ssl);
	free(data);
}

/* Several clients at once, spread over the workers. */
static void
test_concurrent(void **state)
{
	SSL *ssl[16];
	char *body;

	(void)state;
	for (int i = 0; i < 16; i++) {
		ssl[i] = tls_connect(i % 2 ? fx.with_cert : fx.anon, "127.0.0.1", fx.port);
		assert_non_null(ssl[i]);
	}
	for (int round = 0; round < 3; round++)
		for (int i = 15; i >= 0; i--) {
			assert_int_equal(http(ssl[i], "GET", "/", NULL, 0, &body, NULL), 200);
			assert_string_equal(body, i % 2 ? SPIFFE : "none");
			free(body);
		}
	for (int i = 0; i < 16; i++)
		tls_close(ssl[i]);
}

/* The serial of the certificate the server presented. */
static int
same_cert(SSL *ssl, X509 *want)
{
	X509 *got = SSL_get0_peer_certificate(ssl);

	return got != NULL && X509_cmp(got, want) == 0;
}

/* A new server certificate: open connections keep theirs, new ones get the new one. */
static void
test_swap(void **state)
{
	SSL *old, *fresh;
	char *body;

	(void)state;
	old = tls_connect(fx.with_cert, "127.0.0.1", fx.port);
	assert_non_null(old);
	assert_int_equal(http(old, "GET", "/", NULL, 0, &body, NULL), 200);
	free(body);
	assert_true(same_cert(old, fx.server.cert));

	tls_slot_swap(fx.slot, server_ctx(&fx.server2));

	assert_int_equal(http(old, "GET", "/", NULL, 0, &body, NULL), 200);
	assert_string_equal(body, SPIFFE);
	free(body);
	fresh = tls_connect(fx.with_cert, "127.0.0.1", fx.port);
	assert_non_null(fresh);
	assert_true(same_cert(fresh, fx.server2.cert));
	assert_int_equal(http(fresh, "GET", "/", NULL, 0, &body, NULL), 200);
	assert_string_equal(body, SPIFFE);
	free(body);
	assert_int_equal(http(old, "GET", "/", NULL, 0, &body, NULL), 200);
	free(body);
	tls_close(fresh);
	tls_close(old);
	tls_slot_swap(fx.slot, server_ctx(&fx.server));
}

/* Run a shell command, return its stdout (heap) and exit status. */
static char *
run(const char *cmd, int *status)
{
	size_t cap = 65536, have = 0, n;
	char *out = malloc(cap);
	FILE *p;

	assert_non_null(out);
	p = popen(cmd, "r");
	assert_non_null(p);
	while ((n = fread(out + have, 1, cap - have - 1, p)) > 0)
		have += n;
	out[have] = '\0';
	*status = pclose(p);
	return out;
}

static int
have_tool(const char *name)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", name);
	return system(cmd) == 0;
}

/* curl built on OpenSSL: verifies 127.0.0.1 by IP SAN against our CA, never -k. */
static void
test_curl(void **state)
{
	char cmd[8192], *out;
	int st;

	(void)state;
	if (!have_tool("curl") || !have_tool("timeout"))
		skip();
	snprintf(cmd, sizeof(cmd),
	         "timeout 20 curl -sS --cacert %s/ca.pem https://127.0.0.1:%d/ 2>/dev/null", fx.dir,
	         fx.port);
	out = run(cmd, &st);
	assert_int_equal(st, 0);
	assert_string_equal(out, "none");
	free(out);
	snprintf(cmd, sizeof(cmd),
	         "timeout 20 curl -sS --cacert %s/ca.pem --cert %s/client.pem --key %s/client.key "
	         "--tlsv1.2 --tls-max 1.2 https://127.0.0.1:%d/ 2>/dev/null",
	         fx.dir, fx.dir, fx.dir, fx.port);
	out = run(cmd, &st);
	assert_int_equal(st, 0);
	assert_string_equal(out, SPIFFE);
	free(out);
	/* An upload with Expect: 100-continue, through the relay. */
	snprintf(cmd, sizeof(cmd),
	         "head -c 300000 /dev/zero | timeout 20 curl -sS --cacert %s/ca.pem "
	         "--data-binary @- https://127.0.0.1:%d/count 2>/dev/null",
	         fx.dir, fx.port);
	out = run(cmd, &st);
	assert_int_equal(st, 0);
	assert_true(strncmp(out, "len=300000 ", 11) == 0);
	free(out);
	snprintf(cmd, sizeof(cmd),
	         "timeout 20 curl -sS --cacert %s/ca.pem --cert %s/foreign.pem --key "
	         "%s/foreign.key https://127.0.0.1:%d/ 2>/dev/null",
	         fx.dir, fx.dir, fx.dir, fx.port);
	out = run(cmd, &st);
	assert_int_not_equal(st, 0);
	free(out);
	snprintf(cmd, sizeof(cmd),
	         "timeout 20 curl -sS --cacert %s/ca.pem --tlsv1.1 --tls-max 1.1 --ciphers "
	         "DEFAULT@SECLEVEL=0 https://127.0.0.1:%d/ 2>/dev/null",
	         fx.dir, fx.port);
	out = run(cmd, &st);
	assert_int_not_equal(st, 0);
	free(out);
	snprintf(cmd, sizeof(cmd), "timeout 20 curl -sS http://127.0.0.1:%d/ 2>/dev/null", fx.port);
	out = run(cmd, &st);
	assert_int_not_equal(st, 0);
	assert_string_equal(out, "");
	free(out);
}

/* openssl s_client: TLS 1.3, TLS 1.2 and a client certificate work; TLS 1.1 and a
 * non-AEAD suite do not. */
static void
test_s_client(void **state)
{
	static const struct {
		const char *args;
		int cert;         /* present the client certificate */
		const char *want; /* NULL: must fail */
	} cases[] = {
	    {"-tls1_3", 0, "\r\n\r\nnone"},
	    {"-tls1_2", 0, "\r\n\r\nnone"},
	    {"-tls1_3", 1, "\r\n\r\n" SPIFFE},
	    {"-tls1_2", 1, "\r\n\r\n" SPIFFE},
	    {"-tls1_1 -cipher DEFAULT@SECLEVEL=0", 0, NULL},
	    {"-tls1_2 -cipher ECDHE-ECDSA-AES128-SHA256", 0, NULL},
	};
	char cmd[8192], args[1024], *out;
	int st;

	(void)state;
	if (!have_tool("openssl") || !have_tool("timeout"))
		skip();
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (cases[i].cert)
			snprintf(args, sizeof(args), "%s -cert %s/client.pem -key %s/client.key",
			         cases[i].args, fx.dir, fx.dir);
		else
			snprintf(args, sizeof(args), "%s", cases[i].args);
		snprintf(
		    cmd, sizeof(cmd),
		    "printf 'GET / HTTP/1.1\\r\\nHost: t\\r\\nConnection: close\\r\\n\\r\\n' | "
		    "timeout 20 openssl s_client -connect 127.0.0.1:%d -CAfile %s/ca.pem "
		    "-verify_return_error -verify_ip 127.0.0.1 -quiet -ign_eof %s 2>/dev/null",
		    fx.port, fx.dir, args);
		out = run(cmd, &st);
		if (cases[i].want != NULL) {
			assert_non_null(strstr(out, "HTTP/1.1 200"));
			assert_non_null(strstr(out, cases[i].want));
		} else {
			assert_null(strstr(out, "HTTP/1.1"));
		}
		free(out);
	}
}

/* A second front: max_connections, the first-byte timeout, a bad address, and a stop that
 * drains an open connection. */
static void
test_limits_and_stop(void **state)
{
	const char *bad[] = {"localhost:1"};
	struct front_options o;
	struct front_stats st;
	struct front *f;
	struct ac_err err;
	char buf[16];
	int port, a, b, c;
	SSL *ssl;

	(void)state;
	f = start_front(0, 2, 300, 1000, &err);
	assert_non_null(f);
	port = front_bound_port(f, 0);
	assert_true(port > 0);
	assert_int_equal(front_bound_port(f, 1), -1);
	a = tcp_connect("127.0.0.1", port);
	b = tcp_connect("127.0.0.1", port);
	usleep(100000); /* both accepted before the third arrives */
	c = tcp_connect("127.0.0.1", port);
	assert_true(recv(c, buf, sizeof(buf), 0) <= 0); /* refused: closed at once */
	close(c);
	/* a and b said nothing: closed after the first-byte timeout. */
	assert_true(recv(a, buf, sizeof(buf), 0) <= 0);
	assert_true(recv(b, buf, sizeof(buf), 0) <= 0);
	close(a);
	close(b);
	front_stats(f, &st);
	assert_int_equal(st.limit_refused, 1);
	assert_int_equal(st.accepted, 2);

	/* A keep-alive connection open during the stop: drained, then closed. */
	ssl = tls_connect(fx.anon, "127.0.0.1", port);
	assert_non_null(ssl);
	front_stop(f);
	assert_true(SSL_read(ssl, buf, sizeof(buf)) <= 0);
	tls_close(ssl);

	memset(&o, 0, sizeof(o));
	o.listen = bad;
	o.listen_count = 1;
	o.tls = fx.slot;
	o.mhd = fx.mhd;
	ac_err_clear(&err);
	assert_null(front_start(&o, &err));
	assert_non_null(strstr(err.msg, "localhost:1"));
}

/* Everything opened by the tests above has been closed again. */
static void
test_all_closed(void **state)
{
	struct front_stats st;

	(void)state;
	for (int i = 0; i < 500; i++) {
		front_stats(fx.front, &st);
		if (st.active == 0)
			break;
		usleep(10000);
	}
	assert_int_equal(st.active, 0);
	assert_int_equal(
	    st.handshakes_ok + st.handshakes_failed + st.plaintext_refused <= st.accepted, 1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_versions),    cmocka_unit_test(test_ipv6),
	    cmocka_unit_test(test_client_cert), cmocka_unit_test(test_weak_clients),
	    cmocka_unit_test(test_plaintext),   cmocka_unit_test(test_keepalive),
	    cmocka_unit_test(test_bulk),        cmocka_unit_test(test_concurrent),
	    cmocka_unit_test(test_swap),        cmocka_unit_test(test_curl),
	    cmocka_unit_test(test_s_client),    cmocka_unit_test(test_limits_and_stop),
	    cmocka_unit_test(test_all_closed),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
