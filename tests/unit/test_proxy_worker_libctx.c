/*
 * test_proxy_worker_libctx.c - the library context the proxy's workers run in (gateway-hook/
 * worker_libctx.c): it holds only its own provider, whose decoders are the
 * SubjectPublicKeyInfo ones (a private key cannot be read there; the same key can in the
 * process's context); certificates of every key type the CA issues (EC P-256 and P-384,
 * RSA, Ed25519) parse there into the same public keys and verify; and a whole mTLS
 * handshake against a server context built as the proxy builds it (in the process's
 * context), then a resumption from the server's ticket (the session, with the client's
 * certificate, decoded again there), with it as the thread's default context around
 * each handshake step, as a worker runs them; and why only around the handshake (ex_data
 * free callbacks are looked up in the thread's default context).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/decoder.h>
#include <openssl/ec.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/provider.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "enrollment/tls.h"
#include "gateway-hook/worker_libctx.h"
#include "testutil.h"

static const char *const key_types[] = {"EC:P-256", "EC:P-384", "RSA", "ED25519"};
#define KEY_TYPES (sizeof(key_types) / sizeof(key_types[0]))

static EVP_PKEY *
keygen(const char *type)
{
	EVP_PKEY *key;

	if (strncmp(type, "EC:", 3) == 0)
		key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", type + 3);
	else if (strcmp(type, "RSA") == 0)
		key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	else
		key = EVP_PKEY_Q_keygen(NULL, NULL, type);
	assert_non_null(key);
	return key;
}

/* A certificate for key, signed by issuer (NULL: self-signed CA), made in the process's
 * context. usage: "serverAuth" or "clientAuth" for a leaf. */
static X509 *
cert_make(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key, const char *usage)
{
	static long serial = 0x1001;
	X509 *cert = X509_new();
	X509_NAME *name = X509_NAME_new();
	int ed = EVP_PKEY_is_a(issuer_key != NULL ? issuer_key : key, "ED25519");

	assert_non_null(cert);
	assert_non_null(name);
	X509_set_version(cert, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(cert), serial++);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_subject_name(cert, name);
	X509_set_issuer_name(cert, issuer != NULL ? X509_get_subject_name(issuer) : name);
	X509_NAME_free(name);
	X509_gmtime_adj(X509_getm_notBefore(cert), -60);
	X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
	X509_set_pubkey(cert, key);
	if (issuer == NULL) {
		test_add_ext(cert, cert, NID_basic_constraints, "critical,CA:TRUE");
		test_add_ext(cert, cert, NID_key_usage, "critical,keyCertSign,cRLSign");
	} else {
		test_add_ext(cert, issuer, NID_basic_constraints, "critical,CA:FALSE");
		test_add_ext(cert, issuer, NID_key_usage, "critical,digitalSignature");
		test_add_ext(cert, issuer, NID_ext_key_usage, usage);
		test_add_ext(cert, issuer, NID_subject_alt_name, "DNS:worker.test");
	}
	assert_true(
	    X509_sign(cert, issuer_key != NULL ? issuer_key : key, ed ? NULL : EVP_sha256()) > 0);
	return cert;
}

static int
der_of(X509 *cert, unsigned char **der)
{
	int len;

	*der = NULL;
	len = i2d_X509(cert, der);
	assert_true(len > 0);
	return len;
}

/* Decode the PEM private key in pem_text (of key's type) with the decoders of the thread's
 * default context, as OpenSSL 3 does (OSSL_DECODER); 1 and the key in *out, or 0. */
static int
pem_decode(BIO *pem_text, EVP_PKEY *key, EVP_PKEY **out)
{
	OSSL_DECODER_CTX *dctx;
	char *text;
	long len = BIO_get_mem_data(pem_text, &text);
	BIO *pem = BIO_new_mem_buf(text, (int)len);
	int ok;

	*out = NULL;
	assert_non_null(pem);
	dctx = OSSL_DECODER_CTX_new_for_pkey(out, "PEM", NULL, EVP_PKEY_get0_type_name(key),
	                                     EVP_PKEY_KEYPAIR, NULL, NULL);
	assert_non_null(dctx);
	ok = OSSL_DECODER_from_bio(dctx, pem);
	OSSL_DECODER_CTX_free(dctx);
	BIO_free(pem);
	return ok == 1 && *out != NULL;
}

/* The worker context exists, holds its own provider only, and has no decoder for a PEM
 * private key, which the process's context decodes; the algorithms TLS needs are fetched
 * there. */
static void
test_context_holds_only_the_worker_provider(void **state)
{
	OSSL_LIB_CTX *ctx = worker_libctx(), *process;
	EVP_PKEY *key = keygen("EC:P-256"), *read;
	BIO *pem = BIO_new(BIO_s_mem());
	EVP_MD *sha256;
	EVP_CIPHER *gcm;

	(void)state;
	assert_non_null(ctx);
	assert_ptr_equal(worker_libctx(), ctx);
	assert_int_equal(OSSL_PROVIDER_available(ctx, "agentca-worker"), 1);
	assert_int_equal(OSSL_PROVIDER_available(ctx, "default"), 0);
	assert_int_equal(PEM_write_bio_PrivateKey(pem, key, NULL, NULL, 0, NULL, NULL), 1);

	process = OSSL_LIB_CTX_set0_default(ctx);
	assert_int_equal(pem_decode(pem, key, &read), 0); /* no PEM decoder here */
	assert_null(read);
	ERR_clear_error();
	sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
	assert_non_null(sha256);
	assert_non_null(gcm);
	assert_string_equal(OSSL_PROVIDER_get0_name(EVP_MD_get0_provider(sha256)),
	                    "agentca-worker");
	EVP_MD_free(sha256);
	EVP_CIPHER_free(gcm);
	OSSL_LIB_CTX_set0_default(process);

	assert_int_equal(pem_decode(pem, key, &read), 1);
	assert_non_null(read);
	assert_int_equal(EVP_PKEY_eq(read, key), 1);
	EVP_PKEY_free(read);
	BIO_free(pem);
	EVP_PKEY_free(key);
}

/* A certificate of each key type, and its issuer, parsed in the worker context: the same
 * public key as made, and the signature verifies with the issuer's key parsed there. */
static void
test_certificates_of_every_key_type_parse(void **state)
{
	EVP_PKEY *root_key = keygen("EC:P-256");
	X509 *root = cert_make("Worker Root", root_key, NULL, NULL, NULL);
	OSSL_LIB_CTX *process;

	(void)state;
	for (size_t i = 0; i < KEY_TYPES; i++) {
		EVP_PKEY *key = keygen(key_types[i]);
		X509 *leaf = cert_make("leaf", key, root, root_key, "clientAuth");
		unsigned char *leaf_der, *root_der;
		int leaf_len = der_of(leaf, &leaf_der), root_len = der_of(root, &root_der);
		const unsigned char *p;
		X509 *leaf_w, *root_w;

		process = OSSL_LIB_CTX_set0_default(worker_libctx());
		p = leaf_der;
		leaf_w = d2i_X509(NULL, &p, leaf_len);
		p = root_der;
		root_w = d2i_X509(NULL, &p, root_len);
		assert_non_null(leaf_w);
		assert_non_null(root_w);
		assert_non_null(X509_get0_pubkey(leaf_w));
		assert_int_equal(EVP_PKEY_eq(X509_get0_pubkey(leaf_w), key), 1);
		assert_int_equal(X509_verify(leaf_w, X509_get0_pubkey(root_w)), 1);
		assert_true(X509_verify(leaf_w, key) <= 0); /* and a wrong key does not */
		ERR_clear_error();
		X509_free(leaf_w);
		X509_free(root_w);
		OSSL_LIB_CTX_set0_default(process);

		OPENSSL_free(leaf_der);
		OPENSSL_free(root_der);
		X509_free(leaf);
		EVP_PKEY_free(key);
	}
	X509_free(root);
	EVP_PKEY_free(root_key);
}

/* Drive both ends over a BIO pair until the server's handshake ends, each step through
 * worker_libctx_handshake, as proxy.c's. 1: both done. */
static int
pair_handshake(SSL *cli, SSL *srv)
{
	int cdone = 0;

	for (int i = 0; i < 64; i++) {
		int c = cdone ? 1 : worker_libctx_handshake(cli);
		int s = worker_libctx_handshake(srv);

		cdone = c == 1;
		if (s == 1 && cdone)
			return 1;
		if (s != 1 && SSL_get_error(srv, s) != SSL_ERROR_WANT_READ) {
			ERR_print_errors_fp(stderr);
			return 0;
		}
	}
	return 0;
}

static int last_group; /* the key exchange group of connect_once's last connection (NID) */

/* One connection from cctx to sctx, resuming resume (NULL: a full handshake), expected to
 * speak version. Returns the client's session after it read the server's ticket;
 * *reused: the server resumed. */
static SSL_SESSION *
connect_once(SSL_CTX *sctx, SSL_CTX *cctx, SSL_SESSION *resume, X509 *client_cert, int version,
             int *reused)
{
	SSL *cli = SSL_new(cctx), *srv = SSL_new(sctx);
	BIO *b1 = NULL, *b2 = NULL;
	unsigned char byte;
	SSL_SESSION *sess;

	assert_non_null(cli);
	assert_non_null(srv);
	assert_int_equal(BIO_new_bio_pair(&b1, 0, &b2, 0), 1);
	SSL_set_bio(cli, b1, b1);
	SSL_set_bio(srv, b2, b2);
	SSL_set_connect_state(cli);
	SSL_set_accept_state(srv);
	if (resume != NULL)
		assert_int_equal(SSL_set_session(cli, resume), 1);
	assert_int_equal(pair_handshake(cli, srv), 1);
	assert_int_equal(SSL_version(srv), version);
	assert_int_equal(SSL_get_verify_result(srv), X509_V_OK);
	assert_non_null(SSL_get0_peer_certificate(srv));
	assert_int_equal(X509_cmp(SSL_get0_peer_certificate(srv), client_cert), 0);
	*reused = SSL_session_reused(srv);
	last_group = SSL_get_negotiated_group(srv);
	/* The ticket arrives after the handshake: the client reads it while waiting for data. */
	assert_true(SSL_read(cli, &byte, 1) <= 0);
	assert_int_equal(SSL_get_error(cli, -1), SSL_ERROR_WANT_READ);
	sess = SSL_get1_session(cli);
	assert_non_null(sess);
	ERR_clear_error();
	/* A client freed without close_notify marks its session not resumable. */
	SSL_shutdown(cli);
	SSL_free(cli);
	SSL_free(srv);
	return sess;
}

/* A server context as the proxy builds it (enrollment/tls.c's policy, one ticket), in the
 * process's context, for a certificate with server_key signed by the root. */
static SSL_CTX *
proxy_server_ctx(EVP_PKEY *server_key, X509 *root, EVP_PKEY *root_key, STACK_OF(X509) *roots)
{
	X509 *cert = cert_make("server", server_key, root, root_key, "serverAuth");
	struct tls_server_config sc;
	struct ac_err err;
	SSL_CTX *sctx;

	memset(&sc, 0, sizeof(sc));
	sc.cert = cert;
	sc.key = server_key;
	sc.client_roots = roots;
	sc.client_auth = TLS_CLIENT_AUTH_REQUIRED;
	sctx = tls_server_ctx_new(&sc, &err);
	assert_non_null(sctx);
	SSL_CTX_set_num_tickets(sctx, 1);
	X509_free(cert);
	return sctx;
}

/* The policy's groups with group first: a TLS 1.3 client's key share, and the group a
 * TLS 1.2 one prefers; the others stay listed since a TLS 1.2 client names in the same
 * list the curves it accepts for the server's ECDSA certificate. */
static const char *
groups_first(const char *group, char *out, size_t size)
{
	char all[] = TLS_GROUPS, *save = NULL;

	assert_true(snprintf(out, size, "%s", group) < (int)size);
	for (char *g = strtok_r(all, ":", &save); g != NULL; g = strtok_r(NULL, ":", &save))
		if (strcmp(g, group) != 0) {
			strncat(out, ":", size - strlen(out) - 1);
			strncat(out, g, size - strlen(out) - 1);
		}
	return out;
}

/*
 * An mTLS handshake and a resumption from the ticket, with the worker context as the
 * default around each step, against contexts made in the process's context: for each
 * server key type the proxy may hold (EC, RSA), TLS 1.3 and 1.2, each group of the policy
 * (TLS_GROUPS) and a client certificate of each key type (in TLS 1.2, each but P-384).
 */
static void
test_handshake_and_resumption(void **state)
{
	static const char *const server_types[] = {"EC:P-256", "RSA"};
	static const int versions[] = {TLS1_3_VERSION, TLS1_2_VERSION};
	EVP_PKEY *root_key = keygen("EC:P-256");
	X509 *root = cert_make("Worker Root", root_key, NULL, NULL, NULL);
	STACK_OF(X509) *roots = sk_X509_new_null();
	EVP_PKEY *client_keys[KEY_TYPES];
	X509 *client_certs[KEY_TYPES];
	char groups[] = TLS_GROUPS, list[sizeof(TLS_GROUPS) + 1];
	int runs = 0, group_count = 1;

	(void)state;
	for (const char *c = TLS_GROUPS; *c != '\0'; c++)
		group_count += *c == ':';
	assert_int_equal(sk_X509_push(roots, root), 1);
	for (size_t i = 0; i < KEY_TYPES; i++) {
		client_keys[i] = keygen(key_types[i]);
		client_certs[i] = cert_make("client", client_keys[i], root, root_key, "clientAuth");
	}
	for (size_t s = 0; s < sizeof(server_types) / sizeof(server_types[0]); s++) {
		EVP_PKEY *server_key = keygen(server_types[s]);
		SSL_CTX *sctx = proxy_server_ctx(server_key, root, root_key, roots);

		for (size_t v = 0; v < sizeof(versions) / sizeof(versions[0]); v++) {
			char *save = NULL;

			memcpy(groups, TLS_GROUPS, sizeof(groups));
			for (char *group = strtok_r(groups, ":", &save); group != NULL;
			     group = strtok_r(NULL, ":", &save)) {
				for (size_t i = 0; i < KEY_TYPES; i++) {
					struct tls_client_config cc = {.roots = roots,
					                               .cert = client_certs[i],
					                               .key = client_keys[i]};
					struct ac_err err;
					SSL_CTX *cctx;
					SSL_SESSION *first, *second;
					int reused = -1;

					/* TLS 1.2 (RFC 8422, 5.1.1): a client's ECDSA certificate
					 * must be on a curve of the server's groups, and P-384 is
					 * not one. */
					if (versions[v] == TLS1_2_VERSION &&
					    strcmp(key_types[i], "EC:P-384") == 0)
						continue;
					cctx = tls_client_ctx_new(&cc, &err);
					assert_non_null(cctx);
					assert_int_equal(
					    SSL_CTX_set1_groups_list(
					        cctx, groups_first(group, list, sizeof(list))),
					    1);
					assert_int_equal(
					    SSL_CTX_set_max_proto_version(cctx, versions[v]), 1);
					first = connect_once(sctx, cctx, NULL, client_certs[i],
					                     versions[v], &reused);
					assert_int_equal(reused, 0);
					if (versions[v] == TLS1_3_VERSION)
						assert_int_equal(last_group,
						                 OBJ_txt2nid(group) != NID_undef
						                     ? OBJ_txt2nid(group)
						                     : EC_curve_nist2nid(group));
					second = connect_once(sctx, cctx, first, client_certs[i],
					                      versions[v], &reused);
					assert_int_equal(reused, 1);
					runs++;
					SSL_SESSION_free(first);
					SSL_SESSION_free(second);
					SSL_CTX_free(cctx);
				}
			}
		}
		SSL_CTX_free(sctx);
		EVP_PKEY_free(server_key);
	}
	assert_int_equal(runs, 2 * group_count * (2 * (int)KEY_TYPES - 1));
	for (size_t i = 0; i < KEY_TYPES; i++) {
		X509_free(client_certs[i]);
		EVP_PKEY_free(client_keys[i]);
	}
	sk_X509_free(roots);
	X509_free(root);
	EVP_PKEY_free(root_key);
}

/* An EC public key on group from its encoded point, made with the thread's default
 * context (NULL if the key management refuses the point). */
static EVP_PKEY *
ec_public_key(const char *group, const unsigned char *point, size_t len)
{
	OSSL_PARAM params[] = {
	    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)group, 0),
	    OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, (void *)point, len),
	    OSSL_PARAM_END,
	};
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	EVP_PKEY *key = NULL;

	assert_non_null(ctx);
	assert_int_equal(EVP_PKEY_fromdata_init(ctx), 1);
	if (EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_PUBLIC_KEY, params) != 1)
		key = NULL;
	EVP_PKEY_CTX_free(ctx);
	ERR_clear_error();
	return key;
}

/* EVP_PKEY_public_check (full) and _quick of key, with the thread's default context. */
static void
public_checks(EVP_PKEY *key, int *full, int *quick)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);

	assert_non_null(ctx);
	*full = EVP_PKEY_public_check(ctx);
	*quick = EVP_PKEY_public_check_quick(ctx);
	EVP_PKEY_CTX_free(ctx);
	ERR_clear_error();
}

/*
 * The worker context asks OpenSSL's EC public-key check for the quick form on P-256 (a
 * peer's key share passes both, and a point off the curve is refused when the key is
 * made); on a curve whose cofactor is not 1 it keeps the full check: the point of order 2
 * on sect163k1 (x = 0, y = sqrt(b)) passes the quick check and fails the full one, in the
 * worker context as in the process's.
 */
static void
test_ec_public_check(void **state)
{
	EVP_PKEY *share = keygen("EC:P-256"), *key;
	unsigned char point[256], off_curve[65];
	size_t len;
	EC_GROUP *k163 = EC_GROUP_new_by_curve_name(NID_sect163k1);
	EC_POINT *order2;
	BIGNUM *p, *a, *b, *y, *zero;
	BN_CTX *bn = BN_CTX_new();
	OSSL_LIB_CTX *process;
	int full, quick;

	(void)state;
	assert_int_equal(EVP_PKEY_get_octet_string_param(share, OSSL_PKEY_PARAM_PUB_KEY, point,
	                                                 sizeof(point), &len),
	                 1);
	assert_int_equal(len, 65);
	memcpy(off_curve, point, len);
	off_curve[64] ^= 1;

	process = OSSL_LIB_CTX_set0_default(worker_libctx());
	key = ec_public_key("P-256", point, len);
	assert_non_null(key);
	public_checks(key, &full, &quick);
	assert_int_equal(full, 1);
	assert_int_equal(quick, 1);
	EVP_PKEY_free(key);
	assert_null(ec_public_key("P-256", off_curve, len));
	OSSL_LIB_CTX_set0_default(process);

	/* The point (0, sqrt(b)) on sect163k1: y^2 + xy = x^3 + ax^2 + b at x = 0. */
	assert_non_null(k163);
	assert_non_null(bn);
	p = BN_new(), a = BN_new(), b = BN_new(), y = BN_new(), zero = BN_new();
	assert_non_null(zero);
	BN_zero(zero);
	assert_int_equal(EC_GROUP_get_curve(k163, p, a, b, bn), 1);
	assert_int_equal(BN_GF2m_mod_sqrt(y, b, p, bn), 1);
	order2 = EC_POINT_new(k163);
	assert_non_null(order2);
	assert_int_equal(EC_POINT_set_affine_coordinates(k163, order2, zero, y, bn), 1);
	assert_int_equal(EC_POINT_is_on_curve(k163, order2, bn), 1);
	len = EC_POINT_point2oct(k163, order2, POINT_CONVERSION_UNCOMPRESSED, point, sizeof(point),
	                         bn);
	assert_true(len > 0);
	for (int worker = 0; worker < 2; worker++) {
		process = OSSL_LIB_CTX_set0_default(worker ? worker_libctx() : NULL);
		key = ec_public_key("sect163k1", point, len);
		assert_non_null(key);
		public_checks(key, &full, &quick);
		assert_int_equal(quick, 1);
		assert_int_not_equal(full, 1);
		EVP_PKEY_free(key);
		OSSL_LIB_CTX_set0_default(process);
	}
	EC_POINT_free(order2);
	BN_free(p);
	BN_free(a);
	BN_free(b);
	BN_free(y);
	BN_free(zero);
	BN_CTX_free(bn);
	EC_GROUP_free(k163);
	EVP_PKEY_free(share);
}

static int ex_data_freed;

static void
count_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	(void)parent;
	(void)ad;
	(void)idx;
	(void)argl;
	(void)argp;
	if (ptr != NULL)
		ex_data_freed++;
}

/* Why proxy.c makes the worker context the default around the handshake only: an SSL_CTX
 * freed with it as the thread's default does not run the free callbacks registered in
 * the process's context (its ex_data would leak); freed in the process's, it does. */
static void
test_ex_data_callbacks_belong_to_the_process_context(void **state)
{
	int index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, count_free);
	static int marker;
	OSSL_LIB_CTX *process;
	SSL_CTX *ctx;

	(void)state;
	assert_true(index >= 0);
	ctx = SSL_CTX_new(TLS_server_method());
	assert_non_null(ctx);
	assert_int_equal(SSL_CTX_set_ex_data(ctx, index, &marker), 1);
	SSL_CTX_free(ctx);
	assert_int_equal(ex_data_freed, 1);

	ctx = SSL_CTX_new(TLS_server_method());
	assert_non_null(ctx);
	assert_int_equal(SSL_CTX_set_ex_data(ctx, index, &marker), 1);
	process = OSSL_LIB_CTX_set0_default(worker_libctx());
	SSL_CTX_free(ctx);
	OSSL_LIB_CTX_set0_default(process);
	assert_int_equal(ex_data_freed, 1); /* not called */
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_context_holds_only_the_worker_provider),
	    cmocka_unit_test(test_certificates_of_every_key_type_parse),
	    cmocka_unit_test(test_handshake_and_resumption),
	    cmocka_unit_test(test_ec_public_check),
	    cmocka_unit_test(test_ex_data_callbacks_belong_to_the_process_context),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
