/*
 * test_proxy_verify_cache.c - the proxy's verified-chain cache (gateway-hook/
 * verify_cache.c), driven through in-memory handshakes (a BIO pair) against a server
 * context built as the proxy builds it: a root, an intermediate and client leaves, each
 * handshake ending in the verdict the engine would reach (proxy_handshake_failure or
 * proxy_admit). It checks that a hit accepts and gives everything downstream the same peer
 * and verified chain as a full verification; that a new context (a bundle swap) never
 * serves an old entry, and one without the client's CA refuses it; that an expired, not
 * yet valid or revoked certificate is refused on what would be a hit (a clock hook: the
 * verification time set on the connection, and a certificate that really expires); that
 * the intermediates the client sends are part of the key; and that the cache is bounded.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include "enrollment/tls.h"
#include "gateway-hook/admit.h"
#include "gateway-hook/allow.h"
#include "gateway-hook/verify_cache.h"
#include "testutil.h"

/* A certificate valid [now+from, now+until), signed by issuer (NULL: self-signed); a CA
 * when sans is NULL, else a client leaf with these SANs. *key_out gets its key. */
static X509 *
cert_signed(const char *cn, const char *sans, X509 *issuer, EVP_PKEY *issuer_key, long from,
            long until, EVP_PKEY **key_out)
{
	static long serial = 0x0a01; /* the first ones have a leading zero digit in hex */
	EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	X509 *cert = X509_new();

	assert_non_null(key);
	assert_non_null(cert);
	X509_set_version(cert, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(cert), serial++);
	X509_gmtime_adj(X509_getm_notBefore(cert), from);
	X509_gmtime_adj(X509_getm_notAfter(cert), until);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(cert), "CN", MBSTRING_ASC,
	                           (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(cert, X509_get_subject_name(issuer != NULL ? issuer : cert));
	X509_set_pubkey(cert, key);
	if (sans != NULL) {
		test_add_ext(cert, issuer, NID_subject_alt_name, sans);
		test_add_ext(cert, issuer, NID_basic_constraints, "critical,CA:FALSE");
	} else {
		test_add_ext(cert, issuer != NULL ? issuer : cert, NID_basic_constraints,
		             "critical,CA:TRUE");
		test_add_ext(cert, issuer != NULL ? issuer : cert, NID_key_usage,
		             "critical,keyCertSign,cRLSign");
	}
	assert_true(X509_sign(cert, issuer_key != NULL ? issuer_key : key, EVP_sha256()) > 0);
	*key_out = key;
	return cert;
}

/* The CA (root and intermediate), the proxy's certificate, a client, the rules. */
static struct {
	EVP_PKEY *root_key, *int_key, *srv_key, *cli_key;
	X509 *root, *inter, *srv, *cli;
	STACK_OF(X509) *bundle, *inter_chain;
	struct allow_rules rules;
	const char *revoked_serial; /* what the revoked callback reports */
	int revoked_asked;
} t;

static int
revoked_cb(void *arg, const char *serial)
{
	(void)arg;
	t.revoked_asked++;
	return t.revoked_serial != NULL && strcmp(serial, t.revoked_serial) == 0;
}

/* A server context as build_contexts() makes it: bundle as roots, the proxy's chain as
 * extra intermediates, client certificate required, the cache's callback installed. */
static SSL_CTX *
proxy_server_ctx(STACK_OF(X509) *bundle, int with_cache)
{
	struct tls_server_config cfg;
	struct ac_err err;
	SSL_CTX *ctx;

	ac_err_clear(&err);
	memset(&cfg, 0, sizeof(cfg));
	cfg.cert = t.srv;
	cfg.key = t.srv_key;
	cfg.chain = t.inter_chain;
	cfg.client_roots = bundle;
	cfg.client_untrusted = t.inter_chain;
	cfg.client_auth = TLS_CLIENT_AUTH_REQUIRED;
	ctx = tls_server_ctx_new(&cfg, &err);
	assert_non_null(ctx);
	if (with_cache)
		assert_int_equal(verify_cache_install(ctx, t.inter_chain, &err), 0);
	return ctx;
}

static int
setup(void **state)
{
	static const char *const patterns[] = {"spiffe://corp.internal/agent/*"};
	struct ac_err err;

	(void)state;
	memset(&t, 0, sizeof(t));
	ac_err_clear(&err);
	t.root = cert_signed("Root", NULL, NULL, NULL, -3600, 86400 * 30, &t.root_key);
	t.inter =
	    cert_signed("Intermediate", NULL, t.root, t.root_key, -3600, 86400 * 7, &t.int_key);
	t.srv = cert_signed("proxy", "DNS:proxy.test", t.inter, t.int_key, -60, 86400, &t.srv_key);
	t.cli = cert_signed("agent", "URI:spiffe://corp.internal/agent/a", t.inter, t.int_key, -60,
	                    3600, &t.cli_key);
	t.bundle = sk_X509_new_null();
	t.inter_chain = sk_X509_new_null();
	sk_X509_push(t.bundle, t.root);
	sk_X509_push(t.inter_chain, t.inter);
	assert_int_equal(allow_rules_parse(patterns, 1, &t.rules, &err), 0);
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	sk_X509_free(t.bundle);
	sk_X509_free(t.inter_chain);
	X509_free(t.root);
	X509_free(t.inter);
	X509_free(t.srv);
	X509_free(t.cli);
	EVP_PKEY_free(t.root_key);
	EVP_PKEY_free(t.int_key);
	EVP_PKEY_free(t.srv_key);
	EVP_PKEY_free(t.cli_key);
	allow_rules_free(&t.rules);
	return 0;
}

struct outcome {
	enum proxy_reason verdict;
	struct tls_peer peer;
	int chain_len; /* SSL_get0_verified_chain on the server side, after the handshake */
	char chain_top[64];
};

/*
 * One client (cert/key, sending send_chain after its leaf; NULL: the leaf alone) against
 * server with cache attached (NULL: none). check_time: the verification time set on the
 * server's connection (0: the real clock). Ends in the engine's verdict.
 */
static struct outcome
handshake(SSL_CTX *server, struct verify_cache *cache, X509 *cert, EVP_PKEY *key,
          STACK_OF(X509) *send_chain, time_t check_time)
{
	SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
	SSL *cli, *srv;
	BIO *b1 = NULL, *b2 = NULL;
	struct outcome o;
	int cdone = 0, sdone = 0;

	memset(&o, 0, sizeof(o));
	o.verdict = PR_HANDSHAKE_FAILED;
	assert_non_null(cctx);
	X509_STORE_add_cert(SSL_CTX_get_cert_store(cctx), t.root);
	SSL_CTX_set_verify(cctx, SSL_VERIFY_PEER, NULL);
	assert_int_equal(SSL_CTX_use_certificate(cctx, cert), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey(cctx, key), 1);
	if (send_chain != NULL)
		assert_int_equal(SSL_CTX_set1_chain(cctx, send_chain), 1);
	cli = SSL_new(cctx);
	srv = SSL_new(server);
	assert_non_null(cli);
	assert_non_null(srv);
	if (cache != NULL)
		assert_int_equal(verify_cache_attach(srv, cache), 0);
	if (check_time != 0)
		X509_VERIFY_PARAM_set_time(SSL_get0_param(srv), check_time);
	assert_int_equal(BIO_new_bio_pair(&b1, 0, &b2, 0), 1);
	SSL_set_bio(cli, b1, b1);
	SSL_set_bio(srv, b2, b2);
	SSL_set_connect_state(cli);
	SSL_set_accept_state(srv);
	for (int i = 0; i < 64 && !sdone; i++) {
		int c = cdone ? 1 : SSL_do_handshake(cli);
		int s;

		ERR_clear_error();
		s = SSL_do_handshake(srv);
		cdone = c == 1;
		if (s == 1) {
			sdone = 1;
		} else if (SSL_get_error(srv, s) != SSL_ERROR_WANT_READ) {
			o.verdict = proxy_handshake_failure(srv, ERR_peek_error());
			break;
		}
	}
	if (sdone) {
		STACK_OF(X509) *vc = SSL_get0_verified_chain(srv);

		o.verdict =
		    proxy_admit(srv, &t.rules, revoked_cb, NULL, (int64_t)time(NULL), &o.peer);
		o.chain_len = vc != NULL ? sk_X509_num(vc) : 0;
		if (o.chain_len > 0)
			X509_NAME_get_text_by_NID(
			    X509_get_subject_name(sk_X509_value(vc, o.chain_len - 1)),
			    NID_commonName, o.chain_top, sizeof(o.chain_top));
	}
	ERR_clear_error();
	SSL_free(cli);
	SSL_free(srv);
	SSL_CTX_free(cctx);
	return o;
}

static void
expect_stats(struct verify_cache *cache, uint64_t hits, uint64_t misses, uint64_t stale)
{
	struct verify_cache_stats st;

	verify_cache_stats(cache, &st);
	assert_int_equal(st.hits, hits);
	assert_int_equal(st.misses, misses);
	assert_int_equal(st.stale, stale);
}

/* A returning client is verified once; the hit gives downstream the same peer and chain. */
static void
test_hit_accepts(void **state)
{
	SSL_CTX *server = proxy_server_ctx(t.bundle, 1);
	struct verify_cache *cache = verify_cache_new(16, revoked_cb, NULL);
	struct outcome miss, hit, plain;

	(void)state;
	assert_non_null(cache);
	miss = handshake(server, cache, t.cli, t.cli_key, t.inter_chain, 0);
	expect_stats(cache, 0, 1, 0);
	hit = handshake(server, cache, t.cli, t.cli_key, t.inter_chain, 0);
	expect_stats(cache, 1, 1, 0);
	plain = handshake(server, NULL, t.cli, t.cli_key, t.inter_chain, 0); /* no cache */
	expect_stats(cache, 1, 1, 0);
	for (int i = 0; i < 3; i++) {
		const struct outcome *o = i == 0 ? &miss : i == 1 ? &hit : &plain;

		assert_int_equal(o->verdict, PR_ADMITTED);
		assert_int_equal(o->peer.present, 1);
		assert_string_equal(o->peer.spiffe_id, "spiffe://corp.internal/agent/a");
		assert_string_equal(o->peer.serial, miss.peer.serial);
		assert_string_equal(o->peer.spki_sha256, miss.peer.spki_sha256);
		assert_int_equal(o->chain_len, 3); /* leaf, intermediate, root */
		assert_string_equal(o->chain_top, "Root");
	}
	/* The client's intermediate left out: the proxy's own fills in; another key. */
	assert_int_equal(handshake(server, cache, t.cli, t.cli_key, NULL, 0).verdict, PR_ADMITTED);
	expect_stats(cache, 1, 2, 0);
	assert_int_equal(handshake(server, cache, t.cli, t.cli_key, NULL, 0).verdict, PR_ADMITTED);
	expect_stats(cache, 2, 2, 0);
	/* The allow rules still apply on a hit. */
	{
		EVP_PKEY *k;
		X509 *other = cert_signed("other", "URI:spiffe://corp.internal/db/x", t.inter,
		                          t.int_key, -60, 3600, &k);

		assert_int_equal(handshake(server, cache, other, k, t.inter_chain, 0).verdict,
		                 PR_NOT_ALLOWED);
		assert_int_equal(handshake(server, cache, other, k, t.inter_chain, 0).verdict,
		                 PR_NOT_ALLOWED);
		expect_stats(cache, 3, 3, 0);
		X509_free(other);
		EVP_PKEY_free(k);
	}
	verify_cache_free(cache);
	SSL_CTX_free(server);
}

/* A new context is a new generation: never an old entry; without the client's CA: refused. */
static void
test_bundle_swap(void **state)
{
	SSL_CTX *before = proxy_server_ctx(t.bundle, 1), *same, *foreign_only;
	struct verify_cache *cache = verify_cache_new(16, revoked_cb, NULL);
	STACK_OF(X509) *foreign_bundle = sk_X509_new_null();
	EVP_PKEY *fkey;
	X509 *foreign_root = cert_signed("Foreign", NULL, NULL, NULL, -60, 86400, &fkey);

	(void)state;
	sk_X509_push(foreign_bundle, foreign_root);
	assert_int_equal(handshake(before, cache, t.cli, t.cli_key, t.inter_chain, 0).verdict,
	                 PR_ADMITTED);
	assert_int_equal(handshake(before, cache, t.cli, t.cli_key, t.inter_chain, 0).verdict,
	                 PR_ADMITTED);
	expect_stats(cache, 1, 1, 0);
	/* The bundle that drops the client's CA: refused, though the cache held it. */
	foreign_only = proxy_server_ctx(foreign_bundle, 1);
	assert_int_equal(handshake(foreign_only, cache, t.cli, t.cli_key, t.inter_chain, 0).verdict,
	                 PR_UNTRUSTED);
	assert_int_equal(handshake(foreign_only, cache, t.cli, t.cli_key, t.inter_chain, 0).verdict,
	                 PR_UNTRUSTED);
	expect_stats(cache, 1, 3, 0);
	/* Even the same bundle in a new context is verified afresh, once. */
	same = proxy_server_ctx(t.bundle, 1);
	assert_int_equal(handshake(same, cache, t.cli, t.cli_key, t.inter_chain, 0).verdict,
	                 PR_ADMITTED);
	assert_int_equal(handshake(same, cache, t.cli, t.cli_key, t.inter_chain, 0).verdict,
	                 PR_ADMITTED);
	expect_stats(cache, 2, 4, 0);
	/* A connection still on the old context after the swap: full verification. */
	assert_int_equal(handshake(before, cache, t.cli, t.cli_key, t.inter_chain, 0).verdict,
	                 PR_ADMITTED);
	expect_stats(cache, 2, 4, 0);
	SSL_CTX_free(before);
	SSL_CTX_free(same);
	SSL_CTX_free(foreign_only);
	sk_X509_free(foreign_bundle);
	X509_free(foreign_root);
	EVP_PKEY_free(fkey);
	verify_cache_free(cache);
}

/* Time validity of every certificate of the chain is checked again on a hit. */
static void
test_time_on_hit(void **state)
{
	SSL_CTX *server = proxy_server_ctx(t.bundle, 1);
	struct verify_cache *cache = verify_cache_new(16, revoked_cb, NULL);
	time_t now = time(NULL);
	EVP_PKEY *k_short, *k_late;
	/* A leaf that outlives its intermediate (which expires in 7 days). */
	X509 *late = cert_signed("late", "URI:spiffe://corp.internal/agent/late", t.inter,
	                         t.int_key, -60, 86400 * 10, &k_late);
	/* And one that really expires in two seconds. */
	X509 *brief = cert_signed("brief", "URI:spiffe://corp.internal/agent/brief", t.inter,
	                          t.int_key, -60, 2, &k_short);

	(void)state;
	assert_int_equal(handshake(server, cache, t.cli, t.cli_key, t.inter_chain, 0).verdict,
	                 PR_ADMITTED);
	assert_int_equal(handshake(server, cache, t.cli, t.cli_key, t.inter_chain, 0).verdict,
	                 PR_ADMITTED);
	expect_stats(cache, 1, 1, 0);
	/* The clock two hours on: the leaf (one hour) has expired; the entry is dropped and the
	 * full verification refuses with the reason it always gives. */
	assert_int_equal(
	    handshake(server, cache, t.cli, t.cli_key, t.inter_chain, now + 7200).verdict,
	    PR_EXPIRED);
	expect_stats(cache, 1, 2, 1);
	/* Back to now: verified in full again, then hits. */
	assert_int_equal(handshake(server, cache, t.cli, t.cli_key, t.inter_chain, 0).verdict,
	                 PR_ADMITTED);
	assert_int_equal(handshake(server, cache, t.cli, t.cli_key, t.inter_chain, 0).verdict,
	                 PR_ADMITTED);
	expect_stats(cache, 2, 3, 1);
	/* The clock two minutes back: the leaf (from a minute ago) is not yet valid. */
	assert_int_equal(
	    handshake(server, cache, t.cli, t.cli_key, t.inter_chain, now - 120).verdict,
	    PR_UNTRUSTED);
	expect_stats(cache, 2, 4, 2);
	/* A valid leaf under an expired intermediate: refused on a hit. */
	assert_int_equal(handshake(server, cache, late, k_late, t.inter_chain, 0).verdict,
	                 PR_ADMITTED);
	assert_int_equal(handshake(server, cache, late, k_late, t.inter_chain, now + 86400).verdict,
	                 PR_ADMITTED); /* a hit a day on: both still valid */
	expect_stats(cache, 3, 5, 2);
	assert_int_equal(
	    handshake(server, cache, late, k_late, t.inter_chain, now + 86400 * 8).verdict,
	    PR_EXPIRED);
	expect_stats(cache, 3, 6, 3);
	/* No clock hook: a certificate that expires while its entry is cached. */
	assert_int_equal(handshake(server, cache, brief, k_short, t.inter_chain, 0).verdict,
	                 PR_ADMITTED);
	assert_int_equal(handshake(server, cache, brief, k_short, t.inter_chain, 0).verdict,
	                 PR_ADMITTED);
	expect_stats(cache, 4, 7, 3);
	sleep(3);
	assert_int_equal(handshake(server, cache, brief, k_short, t.inter_chain, 0).verdict,
	                 PR_EXPIRED);
	expect_stats(cache, 4, 8, 4);
	X509_free(late);
	X509_free(brief);
	EVP_PKEY_free(k_late);
	EVP_PKEY_free(k_short);
	verify_cache_free(cache);
	SSL_CTX_free(server);
}

/* The revocation state is checked again on a hit; a revoked certificate is refused. */
static void
test_revoked_on_hit(void **state)
{
	SSL_CTX *server = proxy_server_ctx(t.bundle, 1);
	struct verify_cache *cache = verify_cache_new(16, revoked_cb, NULL);
	struct outcome o;
	int asked;

	(void)state;
	t.revoked_serial = NULL;
	o = handshake(server, cache, t.cli, t.cli_key, t.inter_chain, 0);
	assert_int_equal(o.verdict, PR_ADMITTED);
	asked = t.revoked_asked;
	assert_int_equal(handshake(server, cache, t.cli, t.cli_key, t.inter_chain, 0).verdict,
	                 PR_ADMITTED);
	assert_true(t.revoked_asked > asked + 1); /* the cache asked, then proxy_admit */
	expect_stats(cache, 1, 1, 0);
	/* Revoked (the serial spelled as tls_peer spells it, leading zero digit and all). */
	assert_int_equal(o.peer.serial[0], '0');
	t.revoked_serial = o.peer.serial;
	assert_int_equal(handshake(server, cache, t.cli, t.cli_key, t.inter_chain, 0).verdict,
	                 PR_REVOKED);
	expect_stats(cache, 1, 2, 1);
	assert_int_equal(handshake(server, cache, t.cli, t.cli_key, t.inter_chain, 0).verdict,
	                 PR_REVOKED);
	expect_stats(cache, 1, 3, 2);
	t.revoked_serial = NULL;
	verify_cache_free(cache);
	SSL_CTX_free(server);
}

/* At most the configured number of entries: the least recently used one goes. */
static void
test_bounded(void **state)
{
	SSL_CTX *server = proxy_server_ctx(t.bundle, 1);
	struct verify_cache *cache = verify_cache_new(4, revoked_cb, NULL);
	EVP_PKEY *keys[5];
	X509 *certs[5];

	(void)state;
	for (int i = 0; i < 5; i++) {
		char uri[64];

		snprintf(uri, sizeof(uri), "URI:spiffe://corp.internal/agent/n%d", i);
		certs[i] = cert_signed("n", uri, t.inter, t.int_key, -60, 3600, &keys[i]);
	}
	for (int i = 0; i < 4; i++)
		assert_int_equal(
		    handshake(server, cache, certs[i], keys[i], t.inter_chain, 0).verdict,
		    PR_ADMITTED);
	assert_int_equal(handshake(server, cache, certs[0], keys[0], t.inter_chain, 0).verdict,
	                 PR_ADMITTED); /* hit: 0 is now the most recent */
	expect_stats(cache, 1, 4, 0);
	assert_int_equal(handshake(server, cache, certs[4], keys[4], t.inter_chain, 0).verdict,
	                 PR_ADMITTED); /* evicts 1 */
	assert_int_equal(handshake(server, cache, certs[0], keys[0], t.inter_chain, 0).verdict,
	                 PR_ADMITTED);
	expect_stats(cache, 2, 5, 0);
	assert_int_equal(handshake(server, cache, certs[1], keys[1], t.inter_chain, 0).verdict,
	                 PR_ADMITTED);
	expect_stats(cache, 2, 6, 0);
	for (int i = 0; i < 5; i++) {
		X509_free(certs[i]);
		EVP_PKEY_free(keys[i]);
	}
	verify_cache_free(cache);
	SSL_CTX_free(server);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hit_accepts), cmocka_unit_test(test_bundle_swap),
	    cmocka_unit_test(test_time_on_hit), cmocka_unit_test(test_revoked_on_hit),
	    cmocka_unit_test(test_bounded),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
