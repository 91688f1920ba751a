/*
 * fuzz_proxy_handshake.c - the proxy's first bytes and server handshake on any bytes: what
 * a client sends before it is admitted goes through proxy_first_byte(), then an OpenSSL
 * server handshake with the proxy's TLS policy (client certificate required, verified
 * against a bundle) through memory BIOs, then proxy_handshake_failure() or proxy_admit().
 * It must refuse (with a reason from the table) or admit, never crash, hang or leak.
 * The CA, the server certificate and the context are made once.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include "enrollment/tls.h"
#include "gateway-hook/admit.h"
#include "gateway-hook/allow.h"

static SSL_CTX *server_ctx;
static struct allow_rules rules;

/* A certificate for cn with key, signed by issuer (NULL: self-signed CA). */
static X509 *
make_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key, int ca)
{
	X509 *cert = X509_new();
	X509_EXTENSION *ext;
	X509V3_CTX v3;

	X509_set_version(cert, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(cert), ca ? 1 : 2);
	X509_gmtime_adj(X509_getm_notBefore(cert), -60);
	X509_gmtime_adj(X509_getm_notAfter(cert), 86400);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(cert), "CN", MBSTRING_ASC,
	                           (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(cert, X509_get_subject_name(issuer != NULL ? issuer : cert));
	X509_set_pubkey(cert, key);
	X509V3_set_ctx(&v3, issuer != NULL ? issuer : cert, cert, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints,
	                          ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
	X509_add_ext(cert, ext, -1);
	X509_EXTENSION_free(ext);
	if (!ca) {
		ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, "DNS:proxy.test");
		X509_add_ext(cert, ext, -1);
		X509_EXTENSION_free(ext);
	}
	X509_sign(cert, issuer_key != NULL ? issuer_key : key, EVP_sha256());
	return cert;
}

static void
setup(void)
{
	static const char *const patterns[] = {"spiffe://corp.internal/**"};
	EVP_PKEY *ca_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	X509 *ca = make_cert("Fuzz CA", ca_key, NULL, NULL, 1);
	X509 *leaf = make_cert("proxy.test", key, ca, ca_key, 0);
	STACK_OF(X509) *roots = sk_X509_new_null();
	struct tls_server_config cfg;
	struct ac_err err;

	ac_err_clear(&err);
	sk_X509_push(roots, ca);
	memset(&cfg, 0, sizeof(cfg));
	cfg.cert = leaf;
	cfg.key = key;
	cfg.client_roots = roots;
	cfg.client_auth = TLS_CLIENT_AUTH_REQUIRED;
	server_ctx = tls_server_ctx_new(&cfg, &err);
	if (server_ctx == NULL || allow_rules_parse(patterns, 1, &rules, &err) != 0) {
		fprintf(stderr, "fuzz_proxy_handshake: setup: %s\n", err.msg);
		abort();
	}
	sk_X509_pop_free(roots, X509_free);
	X509_free(leaf);
	EVP_PKEY_free(key);
	EVP_PKEY_free(ca_key);
}

static int
never_revoked(void *arg, const char *serial)
{
	(void)arg;
	(void)serial;
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ready;
	enum proxy_reason verdict;
	struct tls_peer peer;
	BIO *in = NULL, *out = NULL;
	SSL *ssl = NULL;
	int rc;

	if (!ready) {
		setup();
		ready = 1;
	}
	if (size == 0 || size > 65536)
		return 0;
	if (proxy_first_byte(data[0]) != PR_ADMITTED)
		return 0;
	ssl = SSL_new(server_ctx);
	in = BIO_new(BIO_s_mem());
	out = BIO_new(BIO_s_mem());
	if (ssl == NULL || in == NULL || out == NULL)
		goto out;
	BIO_set_mem_eof_return(in, -1); /* end of input: "would block", like a socket */
	BIO_write(in, data, (int)size);
	SSL_set_bio(ssl, in, out);
	in = out = NULL;
	SSL_set_accept_state(ssl);
	ERR_clear_error();
	rc = SSL_do_handshake(ssl);
	if (rc == 1)
		verdict = proxy_admit(ssl, &rules, never_revoked, NULL, 0, &peer);
	else if (SSL_get_error(ssl, rc) == SSL_ERROR_WANT_READ)
		verdict = PR_ADMITTED; /* waiting for more: the engine's timeout decides */
	else
		verdict = proxy_handshake_failure(ssl, ERR_peek_error());
	if (verdict != PR_ADMITTED && proxy_reason_names[verdict] == NULL)
		abort(); /* every refusal must have a name for the log */
out:
	ERR_clear_error();
	SSL_free(ssl);
	BIO_free(in);
	BIO_free(out);
	return 0;
}
