/*
 * test_tls.c - the TLS policy module: contexts, handshakes in memory (a BIO pair, no
 * network), client certificate verification with and without extra intermediates, peer
 * identity, host checks, session tickets and the swappable slot. A throwaway CA is made
 * here with OpenSSL and ca/x509_build.h.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include "ca/keys.h"
#include "ca/x509_build.h"
#include "common/log.h"
#include "enrollment/tls.h"

#define SPIFFE "spiffe://corp.internal/gw-1"
#define SPIFFE_CHILD "spiffe://corp.internal/gw-1/child-3"

/* A key and its certificate. */
struct kc {
	EVP_PKEY *key;
	X509 *cert;
};

/* The CAs and leaves every test uses. */
static struct {
	struct kc ca, inter, foreign, server, client, child, nospiffe, foreign_client;
} fx;

/* A P-256 certificate for cn signed by issuer (NULL: self-signed), valid from not_before to
 * not_after (unix seconds). san may be NULL. */
static struct kc
make_cert_valid(const char *cn, const struct kc *issuer, int is_ca, const char *san,
                int64_t not_before, int64_t not_after)
{
	struct kc out = {NULL, NULL};
	struct ac_err err;
	X509_NAME *name;
	X509 *signer_cert;
	EVP_PKEY *signer_key;
	char serial[41];

	ac_err_clear(&err);
	out.key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	assert_non_null(out.key);
	out.cert = X509_new();
	assert_non_null(out.cert);
	signer_cert = issuer != NULL ? issuer->cert : out.cert;
	signer_key = issuer != NULL ? issuer->key : out.key;
	assert_int_equal(X509_set_version(out.cert, 2), 1);
	assert_int_equal(x509_set_random_serial(out.cert, serial, &err), 0);
	assert_int_equal(x509_set_validity(out.cert, not_before, not_after, &err), 0);
	name = x509_name_make(cn, "agentca tests", &err);
	assert_non_null(name);
	assert_int_equal(X509_set_subject_name(out.cert, name), 1);
	assert_int_equal(X509_set_issuer_name(
	                     out.cert, issuer != NULL ? X509_get_subject_name(issuer->cert) : name),
	                 1);
	X509_NAME_free(name);
	assert_int_equal(X509_set_pubkey(out.cert, out.key), 1);
	assert_int_equal(
	    x509_add_ext_text(out.cert, signer_cert, NID_subject_key_identifier, "hash", &err), 0);
	assert_int_equal(x509_add_ext_text(out.cert, signer_cert, NID_authority_key_identifier,
	                                   "keyid:always", &err),
	                 0);
	if (is_ca) {
		assert_int_equal(x509_add_ext_text(out.cert, signer_cert, NID_basic_constraints,
		                                   "critical,CA:TRUE", &err),
		                 0);
		assert_int_equal(x509_add_ext_text(out.cert, signer_cert, NID_key_usage,
		                                   "critical,keyCertSign,cRLSign", &err),
		                 0);
	} else {
		assert_int_equal(x509_add_ext_text(out.cert, signer_cert, NID_basic_constraints,
		                                   "critical,CA:FALSE", &err),
		                 0);
		assert_int_equal(x509_add_ext_text(out.cert, signer_cert, NID_key_usage,
		                                   "critical,digitalSignature", &err),
		                 0);
		assert_int_equal(x509_add_ext_text(out.cert, signer_cert, NID_ext_key_usage,
		                                   "serverAuth,clientAuth", &err),
		                 0);
	}
	if (san != NULL)
		assert_int_equal(
		    x509_add_ext_text(out.cert, signer_cert, NID_subject_alt_name, san, &err), 0);
	assert_int_equal(x509_sign(out.cert, signer_key, EVP_sha256(), &err), 0);
	return out;
}

/* The same, valid from a minute ago for an hour. */
static struct kc
make_cert(const char *cn, const struct kc *issuer, int is_ca, const char *san)
{
	int64_t now = (int64_t)time(NULL);

	return make_cert_valid(cn, issuer, is_ca, san, now - 60, now + 3600);
}

static void
kc_free(struct kc *k)
{
	X509_free(k->cert);
	EVP_PKEY_free(k->key);
}

/* A stack holding one or two certificates (each with its own reference). */
static STACK_OF(X509) *
stack_of(X509 *a, X509 *b)
{
	STACK_OF(X509) *sk = sk_X509_new_null();

	assert_non_null(sk);
	assert_true(X509_up_ref(a) == 1 && sk_X509_push(sk, a) > 0);
	if (b != NULL)
		assert_true(X509_up_ref(b) == 1 && sk_X509_push(sk, b) > 0);
	return sk;
}

static int
group_setup(void **state)
{
	(void)state;
	ac_log_set_level(AC_LOG_ERROR);
	fx.ca = make_cert("Test Root", NULL, 1, NULL);
	fx.inter = make_cert("Test Intermediate", &fx.ca, 1, NULL);
	fx.foreign = make_cert("Foreign Root", NULL, 1, NULL);
	fx.server = make_cert("server", &fx.ca, 0, "IP:127.0.0.1,IP:::1,DNS:localhost");
	fx.client = make_cert("gw-1", &fx.ca, 0, "DNS:gw-1.corp.internal,URI:" SPIFFE);
	fx.child = make_cert("child-3", &fx.inter, 0, "URI:https://example.com/,URI:" SPIFFE_CHILD);
	fx.nospiffe = make_cert("plain", &fx.ca, 0, "DNS:plain.corp.internal");
	fx.foreign_client = make_cert("intruder", &fx.foreign, 0, "URI:" SPIFFE);
	return 0;
}

static int
group_teardown(void **state)
{
	(void)state;
	kc_free(&fx.ca);
	kc_free(&fx.inter);
	kc_free(&fx.foreign);
	kc_free(&fx.server);
	kc_free(&fx.client);
	kc_free(&fx.child);
	kc_free(&fx.nospiffe);
	kc_free(&fx.foreign_client);
	return 0;
}

/* A server context for fx.server asking for client certs against fx.ca, with a renewal
 * grace in seconds (0: off). */
static SSL_CTX *
server_ctx_grace(enum tls_client_auth auth, STACK_OF(X509) *untrusted, int64_t grace)
{
	struct tls_server_config cfg;
	struct ac_err err;
	SSL_CTX *ctx;

	memset(&cfg, 0, sizeof(cfg));
	cfg.cert = fx.server.cert;
	cfg.key = fx.server.key;
	cfg.client_roots = stack_of(fx.ca.cert, NULL);
	cfg.client_untrusted = untrusted;
	cfg.client_auth = auth;
	cfg.client_expired_grace = grace;
	ac_err_clear(&err);
	ctx = tls_server_ctx_new(&cfg, &err);
	if (ctx == NULL)
		fprintf(stderr, "tls_server_ctx_new: %s\n", err.msg);
	assert_non_null(ctx);
	sk_X509_pop_free(cfg.client_roots, X509_free);
	return ctx;
}

static SSL_CTX *
server_ctx(enum tls_client_auth auth, STACK_OF(X509) *untrusted)
{
	return server_ctx_grace(auth, untrusted, 0);
}

/* A client context trusting fx.ca, presenting id (may be NULL). */
static SSL_CTX *
client_ctx(const struct kc *id)
{
	struct tls_client_config cfg;
	struct ac_err err;
	SSL_CTX *ctx;

	memset(&cfg, 0, sizeof(cfg));
	cfg.roots = stack_of(fx.ca.cert, NULL);
	if (id != NULL) {
		cfg.cert = id->cert;
		cfg.key = id->key;
	}
	ac_err_clear(&err);
	ctx = tls_client_ctx_new(&cfg, &err);
	if (ctx == NULL)
		fprintf(stderr, "tls_client_ctx_new: %s\n", err.msg);
	assert_non_null(ctx);
	sk_X509_pop_free(cfg.roots, X509_free);
	return ctx;
}

/* Handshake cli against srv over a BIO pair; then let the client read what the server sent
 * after the handshake (TLS 1.3 tickets, or an alert). 0 when both sides finished. */
static int
handshake(SSL *cli, SSL *srv)
{
	BIO *b1 = NULL, *b2 = NULL;
	int cdone = 0, sdone = 0, rc = -1;
	char byte;

	assert_int_equal(BIO_new_bio_pair(&b1, 0, &b2, 0), 1);
	SSL_set_bio(cli, b1, b1);
	SSL_set_bio(srv, b2, b2);
	SSL_set_connect_state(cli);
	SSL_set_accept_state(srv);
	for (int i = 0; i < 64 && !(cdone && sdone); i++) {
		int c = cdone ? 1 : SSL_do_handshake(cli);
		int s = sdone ? 1 : SSL_do_handshake(srv);

		if (c <= 0 && SSL_get_error(cli, c) != SSL_ERROR_WANT_READ)
			goto out;
		if (s <= 0 && SSL_get_error(srv, s) != SSL_ERROR_WANT_READ)
			goto out;
		cdone = c == 1;
		sdone = s == 1;
	}
	if (!(cdone && sdone))
		goto out;
	/* Nothing to read yet: must be WANT_READ, not an alert. */
	if (SSL_read(cli, &byte, 1) > 0 || SSL_get_error(cli, -1) != SSL_ERROR_WANT_READ)
		goto out;
	rc = 0;
out:
	ERR_clear_error();
	return rc;
}

/* One client/server handshake; returns 0 on success and fills peer from the server side. */
static int
connect_pair(SSL_CTX *sctx, SSL_CTX *cctx, const char *host, struct tls_peer *peer, int *version)
{
	SSL *srv = SSL_new(sctx), *cli = SSL_new(cctx);
	struct ac_err err;
	int rc;

	assert_non_null(srv);
	assert_non_null(cli);
	ac_err_clear(&err);
	if (host != NULL)
		assert_int_equal(tls_client_set_host(cli, host, &err), 0);
	rc = handshake(cli, srv);
	if (rc == 0 && peer != NULL)
		assert_int_equal(tls_peer_from_ssl(srv, peer, &err), 0);
	if (rc == 0 && version != NULL)
		*version = SSL_version(srv);
	SSL_free(cli);
	SSL_free(srv);
	return rc;
}

/* The policy: TLS 1.3 by default, TLS 1.2 works with an AEAD suite. */
static void
test_versions(void **state)
{
	SSL_CTX *sctx = server_ctx(TLS_CLIENT_AUTH_NONE, NULL), *cctx = client_ctx(NULL);
	int version = 0;

	(void)state;
	assert_int_equal(connect_pair(sctx, cctx, "127.0.0.1", NULL, &version), 0);
	assert_int_equal(version, TLS1_3_VERSION);
	assert_int_equal(SSL_CTX_set_max_proto_version(cctx, TLS1_2_VERSION), 1);
	assert_int_equal(connect_pair(sctx, cctx, "127.0.0.1", NULL, &version), 0);
	assert_int_equal(version, TLS1_2_VERSION);
	SSL_CTX_free(cctx);
	SSL_CTX_free(sctx);
}

/* TLS 1.1 and a CBC suite are refused by the server even when the client offers them. */
static void
test_refusals(void **state)
{
	SSL_CTX *sctx = server_ctx(TLS_CLIENT_AUTH_NONE, NULL), *old;

	(void)state;
	old = SSL_CTX_new(TLS_client_method());
	assert_non_null(old);
	SSL_CTX_set_verify(old, SSL_VERIFY_NONE, NULL);
	assert_int_equal(SSL_CTX_set_min_proto_version(old, TLS1_1_VERSION), 1);
	assert_int_equal(SSL_CTX_set_max_proto_version(old, TLS1_1_VERSION), 1);
	assert_int_equal(SSL_CTX_set_cipher_list(old, "DEFAULT:@SECLEVEL=0"), 1);
	assert_int_not_equal(connect_pair(sctx, old, NULL, NULL, NULL), 0);

	assert_int_equal(SSL_CTX_set_min_proto_version(old, TLS1_2_VERSION), 1);
	assert_int_equal(SSL_CTX_set_max_proto_version(old, TLS1_2_VERSION), 1);
	assert_int_equal(SSL_CTX_set_cipher_list(old, "ECDHE-ECDSA-AES128-SHA256"), 1);
	assert_int_not_equal(connect_pair(sctx, old, NULL, NULL, NULL), 0);
	assert_int_equal(SSL_CTX_set_cipher_list(old, "ECDHE-ECDSA-AES128-SHA"), 1);
	assert_int_not_equal(connect_pair(sctx, old, NULL, NULL, NULL), 0);
	SSL_CTX_free(old);
	SSL_CTX_free(sctx);
}

/* Optional client auth: a good certificate is read, none is fine, a foreign one fails. */
static void
test_client_auth_optional(void **state)
{
	SSL_CTX *sctx = server_ctx(TLS_CLIENT_AUTH_OPTIONAL, NULL);
	SSL_CTX *anon = client_ctx(NULL), *good = client_ctx(&fx.client);
	SSL_CTX *bad = client_ctx(&fx.foreign_client);
	struct tls_peer peer, expect;
	struct ac_err err;

	(void)state;
	ac_err_clear(&err);
	assert_int_equal(connect_pair(sctx, good, "127.0.0.1", &peer, NULL), 0);
	assert_int_equal(peer.present, 1);
	assert_string_equal(peer.spiffe_id, SPIFFE);
	assert_int_equal(tls_peer_from_cert(fx.client.cert, &expect, &err), 0);
	assert_memory_equal(&peer, &expect, sizeof(peer));

	assert_int_equal(connect_pair(sctx, anon, "127.0.0.1", &peer, NULL), 0);
	assert_int_equal(peer.present, 0);
	assert_string_equal(peer.spiffe_id, "");

	assert_int_not_equal(connect_pair(sctx, bad, "127.0.0.1", NULL, NULL), 0);
	SSL_CTX_free(bad);
	SSL_CTX_free(good);
	SSL_CTX_free(anon);
	SSL_CTX_free(sctx);
}

/* Required client auth: no certificate, no handshake. */
static void
test_client_auth_required(void **state)
{
	SSL_CTX *sctx = server_ctx(TLS_CLIENT_AUTH_REQUIRED, NULL);
	SSL_CTX *anon = client_ctx(NULL), *good = client_ctx(&fx.client);
	struct tls_peer peer;

	(void)state;
	assert_int_not_equal(connect_pair(sctx, anon, "127.0.0.1", NULL, NULL), 0);
	assert_int_equal(connect_pair(sctx, good, "127.0.0.1", &peer, NULL), 0);
	assert_string_equal(peer.spiffe_id, SPIFFE);
	SSL_CTX_free(good);
	SSL_CTX_free(anon);
	SSL_CTX_free(sctx);
}

/* A client that omits its intermediate verifies only when the server holds it as an
 * untrusted extra; the intermediate alone is never a trust anchor. */
static void
test_client_untrusted(void **state)
{
	STACK_OF(X509) *extra = stack_of(fx.inter.cert, NULL);
	SSL_CTX *without = server_ctx(TLS_CLIENT_AUTH_REQUIRED, NULL);
	SSL_CTX *with = server_ctx(TLS_CLIENT_AUTH_REQUIRED, extra);
	SSL_CTX *child = client_ctx(&fx.child);
	struct tls_server_config cfg;
	struct tls_peer peer;
	struct ac_err err;
	SSL_CTX *inter_only;

	(void)state;
	assert_int_not_equal(connect_pair(without, child, "127.0.0.1", NULL, NULL), 0);
	assert_int_equal(connect_pair(with, child, "127.0.0.1", &peer, NULL), 0);
	assert_int_equal(peer.present, 1);
	assert_string_equal(peer.spiffe_id, SPIFFE_CHILD); /* the https URI is skipped */

	/* Intermediate given as untrusted, foreign root as the only anchor: refused. */
	memset(&cfg, 0, sizeof(cfg));
	cfg.cert = fx.server.cert;
	cfg.key = fx.server.key;
	cfg.client_roots = stack_of(fx.foreign.cert, NULL);
	cfg.client_untrusted = extra;
	cfg.client_auth = TLS_CLIENT_AUTH_REQUIRED;
	ac_err_clear(&err);
	inter_only = tls_server_ctx_new(&cfg, &err);
	assert_non_null(inter_only);
	assert_int_not_equal(connect_pair(inter_only, child, "127.0.0.1", NULL, NULL), 0);
	sk_X509_pop_free(cfg.client_roots, X509_free);
	SSL_CTX_free(inter_only);
	SSL_CTX_free(child);
	SSL_CTX_free(with);
	SSL_CTX_free(without);
	sk_X509_pop_free(extra, X509_free); /* the contexts took their own references */
}

/*
 * The renewal grace: a leaf of ours expired within the grace completes the handshake but is
 * never a present (authenticated) peer, only expired_in_grace. Everything else that is wrong
 * still fails the handshake: a leaf expired beyond the grace, any expired leaf without a
 * grace, an expired leaf from another CA, a leaf under an expired intermediate, an expired
 * leaf with a forged signature, a leaf not yet valid.
 */
static void
test_client_expired_grace(void **state)
{
	int64_t now = (int64_t)time(NULL);
	struct kc recent =
	    make_cert_valid("recent", &fx.ca, 0, "URI:" SPIFFE, now - 7200, now - 600);
	struct kc old = make_cert_valid("old", &fx.ca, 0, "URI:" SPIFFE, now - 86400, now - 7200);
	struct kc foreign =
	    make_cert_valid("foreign", &fx.foreign, 0, "URI:" SPIFFE, now - 7200, now - 600);
	struct kc dead_inter =
	    make_cert_valid("Dead Intermediate", &fx.ca, 1, NULL, now - 86400, now - 600);
	struct kc under_dead =
	    make_cert_valid("under-dead", &dead_inter, 0, "URI:" SPIFFE, now - 7200, now + 3600);
	struct kc early = make_cert_valid("early", &fx.ca, 0, "URI:" SPIFFE, now + 600, now + 7200);
	/* Signed by a stranger's key under our root's name: the signature cannot verify. */
	struct kc impostor_ca = make_cert("Test Root", NULL, 1, NULL);
	struct kc forged =
	    make_cert_valid("forged", &impostor_ca, 0, "URI:" SPIFFE, now - 7200, now - 600);
	STACK_OF(X509) *dead_chain = stack_of(dead_inter.cert, NULL);
	SSL_CTX *graced = server_ctx_grace(TLS_CLIENT_AUTH_OPTIONAL, dead_chain, 3600);
	SSL_CTX *strict = server_ctx(TLS_CLIENT_AUTH_OPTIONAL, NULL);
	SSL_CTX *c_recent = client_ctx(&recent), *c_old = client_ctx(&old);
	SSL_CTX *c_foreign = client_ctx(&foreign), *c_under = client_ctx(&under_dead);
	SSL_CTX *c_early = client_ctx(&early), *c_forged = client_ctx(&forged);
	SSL_CTX *c_good = client_ctx(&fx.client);
	struct tls_peer peer;

	(void)state;
	/* Within the grace: through, identity known, not authenticated. */
	assert_int_equal(connect_pair(graced, c_recent, "127.0.0.1", &peer, NULL), 0);
	assert_int_equal(peer.present, 0);
	assert_int_equal(peer.expired_in_grace, 1);
	assert_string_equal(peer.spiffe_id, SPIFFE);
	assert_int_equal(peer.not_after, now - 600);
	/* A valid certificate on the same context is an ordinary present peer. */
	assert_int_equal(connect_pair(graced, c_good, "127.0.0.1", &peer, NULL), 0);
	assert_int_equal(peer.present, 1);
	assert_int_equal(peer.expired_in_grace, 0);

	assert_int_not_equal(connect_pair(graced, c_old, "127.0.0.1", NULL, NULL), 0);
	assert_int_not_equal(connect_pair(strict, c_recent, "127.0.0.1", NULL, NULL), 0);
	assert_int_not_equal(connect_pair(graced, c_foreign, "127.0.0.1", NULL, NULL), 0);
	assert_int_not_equal(connect_pair(graced, c_under, "127.0.0.1", NULL, NULL), 0);
	assert_int_not_equal(connect_pair(graced, c_early, "127.0.0.1", NULL, NULL), 0);
	assert_int_not_equal(connect_pair(graced, c_forged, "127.0.0.1", NULL, NULL), 0);

	SSL_CTX_free(c_good);
	SSL_CTX_free(c_forged);
	SSL_CTX_free(c_early);
	SSL_CTX_free(c_under);
	SSL_CTX_free(c_foreign);
	SSL_CTX_free(c_old);
	SSL_CTX_free(c_recent);
	SSL_CTX_free(strict);
	SSL_CTX_free(graced);
	sk_X509_pop_free(dead_chain, X509_free);
	kc_free(&forged);
	kc_free(&impostor_ca);
	kc_free(&early);
	kc_free(&under_dead);
	kc_free(&dead_inter);
	kc_free(&foreign);
	kc_free(&old);
	kc_free(&recent);
}

/* Host checks: IP literals against IP SANs, names against DNS SANs, mismatches fail. */
static void
test_client_host(void **state)
{
	SSL_CTX *sctx = server_ctx(TLS_CLIENT_AUTH_NONE, NULL), *cctx = client_ctx(NULL);
	struct ac_err err;
	SSL *ssl;

	(void)state;
	assert_int_equal(connect_pair(sctx, cctx, "127.0.0.1", NULL, NULL), 0);
	assert_int_equal(connect_pair(sctx, cctx, "::1", NULL, NULL), 0);
	assert_int_equal(connect_pair(sctx, cctx, "[::1]", NULL, NULL), 0);
	assert_int_equal(connect_pair(sctx, cctx, "localhost", NULL, NULL), 0);
	assert_int_not_equal(connect_pair(sctx, cctx, "127.0.0.2", NULL, NULL), 0);
	assert_int_not_equal(connect_pair(sctx, cctx, "other.example", NULL, NULL), 0);

	/* SNI is sent for names only. */
	ssl = SSL_new(cctx);
	assert_non_null(ssl);
	ac_err_clear(&err);
	assert_int_equal(tls_client_set_host(ssl, "127.0.0.1", &err), 0);
	assert_null(SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name));
	SSL_free(ssl);
	ssl = SSL_new(cctx);
	assert_non_null(ssl);
	assert_int_equal(tls_client_set_host(ssl, "localhost", &err), 0);
	assert_string_equal(SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name), "localhost");
	assert_int_equal(tls_client_set_host(ssl, "", &err), -1);
	SSL_free(ssl);
	SSL_CTX_free(cctx);
	SSL_CTX_free(sctx);
}

/* A server without a valid configuration is refused with a clear error. */
static void
test_bad_config(void **state)
{
	struct tls_server_config cfg;
	struct tls_client_config ccfg;
	struct ac_err err;

	(void)state;
	memset(&cfg, 0, sizeof(cfg));
	ac_err_clear(&err);
	assert_null(tls_server_ctx_new(&cfg, &err));
	assert_int_equal(err.code, AC_ERR_INVALID);

	cfg.cert = fx.server.cert;
	cfg.key = fx.client.key; /* not its key */
	ac_err_clear(&err);
	assert_null(tls_server_ctx_new(&cfg, &err));
	assert_string_equal(err.reason, "tls_cert_rejected");

	cfg.key = fx.server.key;
	cfg.client_auth = TLS_CLIENT_AUTH_REQUIRED; /* but no roots */
	ac_err_clear(&err);
	assert_null(tls_server_ctx_new(&cfg, &err));
	assert_int_equal(err.code, AC_ERR_INVALID);

	memset(&ccfg, 0, sizeof(ccfg));
	ac_err_clear(&err);
	assert_null(tls_client_ctx_new(&ccfg, &err));
	assert_int_equal(err.code, AC_ERR_INVALID);
}

/* Peer identity from a certificate: SPIFFE ID, lowercase serial, not_after, SPKI. */
static void
test_peer_from_cert(void **state)
{
	struct tls_peer peer;
	struct ac_err err;
	char spki[65];
	BIGNUM *bn;
	char *hex;

	(void)state;
	ac_err_clear(&err);
	assert_int_equal(tls_peer_from_cert(fx.client.cert, &peer, &err), 0);
	assert_int_equal(peer.present, 1);
	assert_string_equal(peer.spiffe_id, SPIFFE);
	bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(fx.client.cert), NULL);
	hex = BN_bn2hex(bn);
	assert_int_equal(strcasecmp(hex, peer.serial), 0);
	for (const char *p = peer.serial; *p != '\0'; p++)
		assert_true((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'));
	OPENSSL_free(hex);
	BN_free(bn);
	assert_int_equal(peer.not_after, asn1_time_to_unix(X509_get0_notAfter(fx.client.cert)));
	assert_true(peer.not_after > (int64_t)time(NULL));
	assert_int_equal(key_spki_sha256(fx.client.key, spki, &err), 0);
	assert_string_equal(peer.spki_sha256, spki);

	assert_int_equal(tls_peer_from_cert(fx.nospiffe.cert, &peer, &err), 0);
	assert_int_equal(peer.present, 1);
	assert_string_equal(peer.spiffe_id, "");
	assert_int_equal(tls_peer_from_cert(NULL, &peer, &err), -1);
}

/* Session tickets resume (TLS 1.3 and 1.2) on the same context, and not on a new one. */
static void
test_tickets(void **state)
{
	SSL_CTX *sctx = server_ctx(TLS_CLIENT_AUTH_OPTIONAL, NULL);
	SSL_CTX *other = server_ctx(TLS_CLIENT_AUTH_OPTIONAL, NULL);
	SSL_CTX *cctx = client_ctx(&fx.client);
	struct tls_peer peer;
	struct ac_err err;

	(void)state;
	ac_err_clear(&err);
	for (int v = 0; v < 2; v++) {
		SSL_SESSION *sess;
		SSL *cli, *srv;

		if (v == 1)
			assert_int_equal(SSL_CTX_set_max_proto_version(cctx, TLS1_2_VERSION), 1);
		cli = SSL_new(cctx);
		srv = SSL_new(sctx);
		assert_int_equal(handshake(cli, srv), 0);
		sess = SSL_get1_session(cli);
		assert_non_null(sess);
		assert_int_equal(SSL_SESSION_is_resumable(sess), 1);
		SSL_shutdown(cli); /* without close_notify OpenSSL marks the session unusable */
		SSL_free(cli);
		SSL_free(srv);

		cli = SSL_new(cctx);
		srv = SSL_new(sctx);
		assert_int_equal(SSL_set_session(cli, sess), 1);
		assert_int_equal(handshake(cli, srv), 0);
		assert_int_equal(SSL_session_reused(srv), 1);
		/* The resumed session still carries the verified client identity. */
		assert_int_equal(tls_peer_from_ssl(srv, &peer, &err), 0);
		assert_string_equal(peer.spiffe_id, SPIFFE);
		SSL_free(cli);
		SSL_free(srv);

		cli = SSL_new(cctx);
		srv = SSL_new(other);
		assert_int_equal(SSL_set_session(cli, sess), 1);
		assert_int_equal(handshake(cli, srv), 0);
		assert_int_equal(SSL_session_reused(srv), 0);
		SSL_free(cli);
		SSL_free(srv);
		SSL_SESSION_free(sess);
	}
	SSL_CTX_free(cctx);
	SSL_CTX_free(other);
	SSL_CTX_free(sctx);
}

/* The slot hands out references; a swap leaves acquired contexts alive. */
static void
test_slot(void **state)
{
	SSL_CTX *a = server_ctx(TLS_CLIENT_AUTH_NONE, NULL),
	        *b = server_ctx(TLS_CLIENT_AUTH_NONE, NULL);
	struct tls_ctx_slot *slot = tls_slot_new(a);
	SSL_CTX *got, *got2;
	SSL *ssl;

	(void)state;
	assert_non_null(slot);
	got = tls_slot_acquire(slot);
	assert_ptr_equal(got, a);
	tls_slot_swap(slot, b);
	got2 = tls_slot_acquire(slot);
	assert_ptr_equal(got2, b);
	ssl = SSL_new(got); /* the old context is still usable */
	assert_non_null(ssl);
	SSL_free(ssl);
	SSL_CTX_free(got);
	SSL_CTX_free(got2);
	tls_slot_free(slot);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_versions),
	    cmocka_unit_test(test_refusals),
	    cmocka_unit_test(test_client_auth_optional),
	    cmocka_unit_test(test_client_auth_required),
	    cmocka_unit_test(test_client_untrusted),
	    cmocka_unit_test(test_client_expired_grace),
	    cmocka_unit_test(test_client_host),
	    cmocka_unit_test(test_bad_config),
	    cmocka_unit_test(test_peer_from_cert),
	    cmocka_unit_test(test_tickets),
	    cmocka_unit_test(test_slot),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
