/*
 * handshake_cpu.c - the server side of a new mTLS handshake, in process, with and without
 * the proxy's verified-chain cache: the proxy's own server context (enrollment/tls.c's
 * tls_server_ctx_new, then gateway-hook/verify_cache.c's callback as build_contexts installs
 * it), one TLS 1.3 client presenting the same certificate every time (as an agent does),
 * over a BIO pair, the server's steps in gateway-hook/worker_libctx.h's library context as
 * proxy.c runs them. Only the server's SSL_do_handshake calls are timed, in thread CPU time,
 * so neither the client's work nor the kernel's counts and a busy machine matters little.
 *
 *   handshake_cpu DIR COUNT
 *       DIR holds server.pem, chain.pem, server.key, root.pem, client-full.pem (leaf, then its
 *       intermediates, all sent) and client.key, as bench/proxy/run.sh makes them. Runs COUNT
 *       handshakes with the cache off, then on, three times in turn, and prints the CPU per
 *       handshake of each.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/pem.h>

#include "ca/x509_build.h"
#include "enrollment/tls.h"
#include "gateway-hook/verify_cache.h"
#include "gateway-hook/worker_libctx.h"

struct material {
	STACK_OF(X509) *server, *chain, *roots, *client;
	EVP_PKEY *server_key, *client_key;
};

static double
thread_cpu_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static EVP_PKEY *
read_key(const char *dir, const char *name)
{
	char path[4096];
	EVP_PKEY *key = NULL;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if ((f = fopen(path, "r")) != NULL) {
		key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
		fclose(f);
	}
	if (key == NULL)
		fprintf(stderr, "handshake_cpu: cannot read the key %s\n", path);
	return key;
}

static STACK_OF(X509) *
read_certs(const char *dir, const char *name)
{
	char path[4096];
	struct ac_err err;
	STACK_OF(X509) *certs;

	ac_err_clear(&err);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	certs = x509_read_pem_file(path, &err);
	if (certs == NULL)
		fprintf(stderr, "handshake_cpu: %s\n", err.msg);
	return certs;
}

/* COUNT handshakes against server (cache attached when not NULL): server CPU us each, or -1. */
static double
run(SSL_CTX *server, struct verify_cache *cache, SSL_CTX *client, int count)
{
	double spent = 0;

	for (int k = 0; k < count; k++) {
		SSL *cli = SSL_new(client), *srv = SSL_new(server);
		BIO *b1 = NULL, *b2 = NULL;
		int sdone = 0, cdone = 0, failed = 0;

		if (cli == NULL || srv == NULL || BIO_new_bio_pair(&b1, 0, &b2, 0) != 1 ||
		    (cache != NULL && verify_cache_attach(srv, cache) != 0)) {
			SSL_free(cli);
			SSL_free(srv);
			return -1;
		}
		SSL_set_bio(cli, b1, b1);
		SSL_set_bio(srv, b2, b2);
		SSL_set_connect_state(cli);
		SSL_set_accept_state(srv);
		for (int i = 0; i < 64 && !(sdone && cdone) && !failed; i++) {
			if (!cdone)
				cdone = SSL_do_handshake(cli) == 1;
			if (!sdone) {
				double t0 = thread_cpu_s();
				int rc = worker_libctx_handshake(srv); /* as proxy.c */

				spent += thread_cpu_s() - t0;
				sdone = rc == 1;
				failed = rc != 1 && SSL_get_error(srv, rc) != SSL_ERROR_WANT_READ;
			}
		}
		SSL_free(cli);
		SSL_free(srv);
		ERR_clear_error();
		if (!sdone) {
			fprintf(stderr, "handshake_cpu: a handshake failed\n");
			return -1;
		}
	}
	return spent * 1e6 / count;
}

int
main(int argc, char **argv)
{
	struct material m;
	struct tls_server_config cfg;
	struct ac_err err;
	SSL_CTX *plain = NULL, *cached = NULL, *client = NULL;
	STACK_OF(X509) *sent = NULL;
	struct verify_cache *cache = NULL;
	int count, rc = 1;

	if (argc != 3 || (count = atoi(argv[2])) <= 0) {
		fprintf(stderr, "usage: handshake_cpu DIR COUNT\n");
		return 2;
	}
	memset(&m, 0, sizeof(m));
	ac_err_clear(&err);
	if ((m.server = read_certs(argv[1], "server.pem")) == NULL ||
	    (m.chain = read_certs(argv[1], "chain.pem")) == NULL ||
	    (m.roots = read_certs(argv[1], "root.pem")) == NULL ||
	    (m.client = read_certs(argv[1], "client-full.pem")) == NULL ||
	    (m.server_key = read_key(argv[1], "server.key")) == NULL ||
	    (m.client_key = read_key(argv[1], "client.key")) == NULL)
		goto out;
	memset(&cfg, 0, sizeof(cfg));
	cfg.cert = sk_X509_value(m.server, 0);
	cfg.key = m.server_key;
	cfg.chain = m.chain;
	cfg.client_roots = m.roots;
	cfg.client_untrusted = m.chain;
	cfg.client_auth = TLS_CLIENT_AUTH_REQUIRED;
	/* Two contexts as build_contexts() makes them: one ticket; one with the cache's callback.
	 */
	if ((plain = tls_server_ctx_new(&cfg, &err)) == NULL ||
	    (cached = tls_server_ctx_new(&cfg, &err)) == NULL ||
	    verify_cache_install(cached, m.chain, &err) != 0) {
		fprintf(stderr, "handshake_cpu: %s\n", err.msg);
		goto out;
	}
	SSL_CTX_set_num_tickets(plain, 1);
	SSL_CTX_set_num_tickets(cached, 1);
	cache = verify_cache_new(VERIFY_CACHE_DEFAULT_ENTRIES, NULL, NULL);
	client = SSL_CTX_new(TLS_client_method());
	sent = sk_X509_new_null();
	if (cache == NULL || client == NULL || sent == NULL)
		goto out;
	for (int i = 1; i < sk_X509_num(m.client); i++)
		sk_X509_push(sent, sk_X509_value(m.client, i));
	X509_STORE_add_cert(SSL_CTX_get_cert_store(client), sk_X509_value(m.roots, 0));
	SSL_CTX_set_verify(client, SSL_VERIFY_PEER, NULL);
	if (SSL_CTX_use_certificate(client, sk_X509_value(m.client, 0)) != 1 ||
	    SSL_CTX_use_PrivateKey(client, m.client_key) != 1 ||
	    SSL_CTX_set1_chain(client, sent) != 1)
		goto out;
	for (int round = 1; round <= 3; round++) {
		double off = run(plain, NULL, client, count),
		       on = run(cached, cache, client, count);
		struct verify_cache_stats st;

		if (off < 0 || on < 0)
			goto out;
		verify_cache_stats(cache, &st);
		printf("round %d: %d handshakes each, server CPU us per handshake: cache off %.1f, "
		       "cache on %.1f (on/off %.2f; hits %llu, misses %llu)\n",
		       round, count, off, on, on / off, (unsigned long long)st.hits,
		       (unsigned long long)st.misses);
	}
	rc = 0;
out:
	verify_cache_free(cache);
	SSL_CTX_free(plain);
	SSL_CTX_free(cached);
	SSL_CTX_free(client);
	sk_X509_free(sent);
	sk_X509_pop_free(m.server, X509_free);
	sk_X509_pop_free(m.chain, X509_free);
	sk_X509_pop_free(m.roots, X509_free);
	sk_X509_pop_free(m.client, X509_free);
	EVP_PKEY_free(m.server_key);
	EVP_PKEY_free(m.client_key);
	return rc;
}
