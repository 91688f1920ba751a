/*
 * x509_build.c - small, checked helpers to assemble certificates: serials, validity,
 * extensions from OpenSSL's config syntax, names, signing, and PEM in and out.
 *
 * Shared by the authority (root, intermediate, CSR) and the issuance engine (leaves), so
 * every certificate agentca makes gets its serial and its extensions the same way.
 *
 * Signing keeps, per thread, a signing context set up once for the last key and digest it
 * signed with (the intermediate, for every leaf): OpenSSL 3.0 otherwise looks up the
 * signature and digest implementations and builds their contexts again for every
 * certificate. Each signature works on a copy of that context, so the set-up is paid once
 * per thread and key. The cache holds a reference to its key, so a key freed by its owner
 * cannot be mistaken for a new key at the same address; the thread's exit frees it.
 *
 * The issuance engine does not build an X509 object for a leaf at all: it encodes the
 * TBSCertificate itself (ca/der.c) and has it signed here (x509_signer_*), with the
 * AlgorithmIdentifier the provider states for the cached context.
 */
#include "ca/x509_build.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "common/fsutil.h"
#include "common/hex.h"

#define PEM_FILE_MAX (1024 * 1024)

/*
 * Serials come from a per-thread buffer of DRBG output, refilled SERIAL_POOL_BYTES at a time:
 * each RAND_bytes call costs several times the bytes it makes (the thread's DRBG looked up,
 * a fork check, the generate call), and a busy CA wants one serial per certificate. The
 * bytes are the same DRBG's; each is used once and wiped when taken. A child process made
 * by fork() after the parent drew serials would hold a copy of the parent's buffer, so a
 * fork handler bumps a generation number and a buffer from an older generation is dropped.
 */
#define SERIAL_POOL_BYTES (32 * X509_SERIAL_BYTES)

struct serial_pool {
	unsigned char bytes[SERIAL_POOL_BYTES];
	size_t left;         /* unused bytes at the end of bytes[] */
	unsigned generation; /* serial_generation when filled */
};

static _Thread_local struct serial_pool serial_pool;
static unsigned serial_generation;
static pthread_once_t serial_once = PTHREAD_ONCE_INIT;

static void
serial_after_fork(void)
{
	__atomic_add_fetch(&serial_generation, 1, __ATOMIC_RELAXED);
}

static void
serial_init_once(void)
{
	/* Without the handler a forked child could repeat serials: then do not pool at all. */
	if (pthread_atfork(NULL, NULL, serial_after_fork) != 0)
		serial_generation = ~0u;
}

/* n <= X509_SERIAL_BYTES fresh random bytes into out; -1 when the DRBG fails. */
static int
serial_random_bytes(unsigned char *out, size_t n)
{
	struct serial_pool *pool = &serial_pool;
	unsigned gen;

	pthread_once(&serial_once, serial_init_once);
	gen = __atomic_load_n(&serial_generation, __ATOMIC_RELAXED);
	if (gen == ~0u)
		return RAND_bytes(out, (int)n) == 1 ? 0 : -1;
	if (pool->generation != gen || pool->left < n) {
		if (RAND_bytes(pool->bytes, sizeof(pool->bytes)) != 1) {
			pool->left = 0;
			return -1;
		}
		pool->left = sizeof(pool->bytes);
		pool->generation = gen;
	}
	pool->left -= n;
	memcpy(out, pool->bytes + pool->left, n);
	memset(pool->bytes + pool->left, 0, n);
	return 0;
}

/*
 * A fresh 128-bit serial. The top bit is cleared so the DER INTEGER is positive without a
 * leading zero byte, and the top byte is drawn again until it is non-zero, so the serial is
 * always exactly 16 bytes (32 hex digits, lowercase) and never zero.
 */
int
x509_random_serial(unsigned char serial[X509_SERIAL_BYTES], char serial_hex[41], struct ac_err *err)
{
	serial_hex[0] = '\0';
	do {
		if (serial_random_bytes(serial, X509_SERIAL_BYTES) != 0)
			return ac_err_ssl(err, AC_ERR_CRYPTO, "rand_failed",
			                  "serial: RAND_bytes failed");
		serial[0] &= 0x7f;
	} while (serial[0] == 0);
	hex_encode(serial, X509_SERIAL_BYTES, serial_hex);
	return 0;
}

/* x509_random_serial, set as cert's serialNumber. */
int
x509_set_random_serial(X509 *cert, char serial_hex[41], struct ac_err *err)
{
	unsigned char buf[X509_SERIAL_BYTES];
	BIGNUM *bn = NULL;
	int rc = -1;

	if (x509_random_serial(buf, serial_hex, err) != 0)
		goto out;
	bn = BN_bin2bn(buf, sizeof(buf), NULL);
	if (bn == NULL) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "out_of_memory", "serial: BN_bin2bn failed");
		goto out;
	}
	if (BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert)) == NULL) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "cert_build_failed", "serial: cannot set it");
		goto out;
	}
	rc = 0;
out:
	BN_free(bn);
	return rc;
}

/* Set notBefore and notAfter (UTCTime before 2050, GeneralizedTime after, per RFC 5280). */
int
x509_set_validity(X509 *cert, int64_t not_before, int64_t not_after, struct ac_err *err)
{
	if (not_after <= not_before)
		return ac_err_set(err, AC_ERR_INVALID, "validity_invalid",
		                  "notAfter must be later than notBefore");
	if (ASN1_TIME_set(X509_getm_notBefore(cert), (time_t)not_before) == NULL)
		return ac_err_ssl(err, AC_ERR_CRYPTO, "cert_build_failed", "cannot set notBefore");
	if (ASN1_TIME_set(X509_getm_notAfter(cert), (time_t)not_after) == NULL)
		return ac_err_ssl(err, AC_ERR_CRYPTO, "cert_build_failed", "cannot set notAfter");
	return 0;
}

/*
 * Add one extension written in OpenSSL's config syntax. The context names the issuer so
 * that authorityKeyIdentifier can find the issuer's subjectKeyIdentifier: add the
 * subjectKeyIdentifier first, and set names and the public key before either.
 */
int
x509_add_ext_text(X509 *cert, X509 *issuer, int nid, const char *value, struct ac_err *err)
{
	X509_EXTENSION *ext = NULL;
	X509V3_CTX ctx;
	int rc = -1;

	X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (ext == NULL) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "cert_build_failed", "extension %s = \"%s\" refused",
		           OBJ_nid2sn(nid), value);
		goto out;
	}
	if (!X509_add_ext(cert, ext, -1)) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "cert_build_failed", "cannot add extension %s",
		           OBJ_nid2sn(nid));
		goto out;
	}
	rc = 0;
out:
	X509_EXTENSION_free(ext);
	return rc;
}

/* A distinguished name "O=<org>, CN=<cn>" (most significant first, as RFC 5280 orders). */
X509_NAME *
x509_name_make(const char *cn, const char *org, struct ac_err *err)
{
	X509_NAME *name;

	name = X509_NAME_new();
	if (name == NULL) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "out_of_memory", "X509_NAME_new failed");
		goto fail;
	}
	if (org != NULL && !X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
	                                               (const unsigned char *)org, -1, -1, 0)) {
		ac_err_ssl(err, AC_ERR_INVALID, "name_invalid", "organization \"%s\" refused", org);
		goto fail;
	}
	if (!X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1,
	                                -1, 0)) {
		ac_err_ssl(err, AC_ERR_INVALID, "name_invalid", "common name \"%s\" refused", cn);
		goto fail;
	}
	return name;
fail:
	X509_NAME_free(name);
	return NULL;
}

/*
 * Signing, with a per-thread context ready for the last key and digest.
 */

struct sign_cache {
	EVP_PKEY *key;     /* a reference, so that its address stays its own */
	int md_type;       /* NID of the digest the context was set up for */
	EVP_MD_CTX *ready; /* initialised for signing, no data yet: copied, never used */
	EVP_MD_CTX *work;  /* the copy one signature uses */
	unsigned char algid[X509_ALGID_MAX]; /* the signature's AlgorithmIdentifier, DER */
	size_t algid_len;                    /* 0: not known (x509_signer_begin asks again) */
};

static pthread_once_t sign_once = PTHREAD_ONCE_INIT;

/* The AlgorithmIdentifier (DER) the signature set up in ctx will carry, as the provider
 * states it: the same bytes X509_sign would put into a certificate. */
static int
signature_algid(EVP_MD_CTX *ctx, unsigned char out[X509_ALGID_MAX], size_t *out_len)
{
	OSSL_PARAM params[] = {
	    OSSL_PARAM_octet_string(OSSL_SIGNATURE_PARAM_ALGORITHM_ID, out, X509_ALGID_MAX),
	    OSSL_PARAM_END,
	};
	EVP_PKEY_CTX *pctx = EVP_MD_CTX_get_pkey_ctx(ctx);

	*out_len = 0;
	if (pctx == NULL || EVP_PKEY_CTX_get_params(pctx, params) != 1 ||
	    !OSSL_PARAM_modified(&params[0]) || params[0].return_size == 0 ||
	    params[0].return_size > X509_ALGID_MAX)
		return -1;
	*out_len = params[0].return_size;
	return 0;
}
static pthread_key_t sign_key;
static int sign_key_ok;

/* Empty the cache (it stays allocated). */
static void
sign_cache_clear(struct sign_cache *c)
{
	EVP_MD_CTX_free(c->work);
	EVP_MD_CTX_free(c->ready);
	EVP_PKEY_free(c->key);
	memset(c, 0, sizeof(*c));
}

/* The thread-exit destructor. */
static void
sign_cache_free(void *arg)
{
	struct sign_cache *c = arg;

	if (c == NULL)
		return;
	sign_cache_clear(c);
	free(c);
}

static void
sign_init_once(void)
{
	sign_key_ok = pthread_key_create(&sign_key, sign_cache_free) == 0;
}

/* This thread's cache, set up for key and md; NULL when it cannot be (then the caller signs
 * the slow way, which reports any real error). */
static struct sign_cache *
sign_cache_get(EVP_PKEY *key, const EVP_MD *md)
{
	struct sign_cache *c;

	pthread_once(&sign_once, sign_init_once);
	if (!sign_key_ok)
		return NULL;
	c = pthread_getspecific(sign_key);
	if (c == NULL) {
		if ((c = calloc(1, sizeof(*c))) == NULL)
			return NULL;
		if (pthread_setspecific(sign_key, c) != 0) {
			free(c);
			return NULL;
		}
	}
	if (c->key == key && c->md_type == EVP_MD_get_type(md))
		return c;
	sign_cache_clear(c);
	if (EVP_PKEY_up_ref(key) != 1)
		return NULL;
	c->key = key;
	c->md_type = EVP_MD_get_type(md);
	c->ready = EVP_MD_CTX_new();
	c->work = EVP_MD_CTX_new();
	if (c->ready == NULL || c->work == NULL ||
	    EVP_DigestSignInit_ex(c->ready, NULL, EVP_MD_get0_name(md), NULL, NULL, key, NULL) !=
	        1) {
		sign_cache_clear(c);
		ERR_clear_error();
		return NULL;
	}
	/* Each copy signs once and is thrown away: let the final step use it up rather than
	 * duplicate it first. */
	EVP_MD_CTX_set_flags(c->ready, EVP_MD_CTX_FLAG_FINALISE);
	if (signature_algid(c->ready, c->algid, &c->algid_len) != 0) {
		c->algid_len = 0;
		ERR_clear_error();
	}
	return c;
}

/* Sign the certificate; md is NULL for Ed25519, which hashes internally (and is signed
 * without the cache: it has no digest to set up). */
int
x509_sign(X509 *cert, EVP_PKEY *key, const EVP_MD *md, struct ac_err *err)
{
	struct sign_cache *c = md != NULL ? sign_cache_get(key, md) : NULL;
	int ok;

	if (c != NULL)
		ok = EVP_MD_CTX_copy_ex(c->work, c->ready) == 1 && X509_sign_ctx(cert, c->work) > 0;
	else
		ok = X509_sign(cert, key, md) > 0;
	if (!ok)
		return ac_err_ssl(err, AC_ERR_CRYPTO, "sign_failed",
		                  "signing the certificate failed");
	return 0;
}

/*
 * Signing a certificate encoded by the caller (the issuance engine's DER template): the
 * AlgorithmIdentifier first, because the TBSCertificate carries it too, then the signature
 * over the TBSCertificate and the Certificate around both.
 */
int
x509_signer_begin(struct x509_signer *s, EVP_PKEY *key, const EVP_MD *md, struct ac_err *err)
{
	struct sign_cache *c = md != NULL ? sign_cache_get(key, md) : NULL;

	memset(s, 0, sizeof(*s));
	if (c != NULL && c->algid_len > 0) {
		if (EVP_MD_CTX_copy_ex(c->work, c->ready) != 1)
			goto fail;
		s->ctx = c->work;
		memcpy(s->algid, c->algid, c->algid_len);
		s->algid_len = c->algid_len;
		return 0;
	}
	/* Ed25519 (no digest), or a key the cache could not take: a context of our own. */
	s->owned = EVP_MD_CTX_new();
	if (s->owned == NULL ||
	    EVP_DigestSignInit_ex(s->owned, NULL, md != NULL ? EVP_MD_get0_name(md) : NULL, NULL,
	                          NULL, key, NULL) != 1 ||
	    signature_algid(s->owned, s->algid, &s->algid_len) != 0)
		goto fail;
	s->ctx = s->owned;
	return 0;
fail:
	x509_signer_end(s);
	return ac_err_ssl(err, AC_ERR_CRYPTO, "sign_failed", "cannot set up the signature");
}

int
x509_signer_certificate(struct x509_signer *s, const unsigned char *tbs, size_t tbs_len,
                        struct der_buf *cert, struct ac_err *err)
{
	unsigned char sig[X509_SIG_MAX];
	size_t sig_len = sizeof(sig), outer, bits;

	if (s->ctx == NULL || EVP_DigestSign(s->ctx, sig, &sig_len, tbs, tbs_len) != 1)
		return ac_err_ssl(err, AC_ERR_CRYPTO, "sign_failed",
		                  "signing the certificate failed");
	outer = der_begin(cert, DER_SEQUENCE);
	der_raw(cert, tbs, tbs_len);
	der_raw(cert, s->algid, s->algid_len);
	bits = der_begin(cert, DER_BIT_STRING);
	der_raw(cert, "", 1); /* no unused bits */
	der_raw(cert, sig, sig_len);
	der_end(cert, bits);
	der_end(cert, outer);
	if (cert->failed)
		return ac_err_set(err, AC_ERR_INTERNAL, "cert_encode_failed",
		                  "the certificate is too large to encode");
	return 0;
}

void
x509_signer_end(struct x509_signer *s)
{
	EVP_MD_CTX_free(s->owned);
	memset(s, 0, sizeof(*s));
}

/* Unix seconds of an ASN1_TIME; 0 when it cannot be read (never a valid CA time). */
int64_t
asn1_time_to_unix(const ASN1_TIME *t)
{
	struct tm tm;

	memset(&tm, 0, sizeof(tm));
	if (t == NULL || !ASN1_TIME_to_tm(t, &tm)) {
		ERR_clear_error();
		return 0;
	}
	return (int64_t)timegm(&tm);
}

/* One certificate as PEM, in a NUL-terminated heap buffer the caller frees. */
char *
x509_to_pem(X509 *cert, size_t *len, struct ac_err *err)
{
	char *pem = NULL, *data;
	BIO *mem = NULL;
	long n;

	if (len != NULL)
		*len = 0;
	mem = BIO_new(BIO_s_mem());
	if (mem == NULL || !PEM_write_bio_X509(mem, cert)) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "cert_encode_failed",
		           "cannot encode the certificate as PEM");
		goto out;
	}
	n = BIO_get_mem_data(mem, &data);
	pem = malloc((size_t)n + 1);
	if (pem == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto out;
	}
	memcpy(pem, data, (size_t)n);
	pem[n] = '\0';
	if (len != NULL)
		*len = (size_t)n;
out:
	BIO_free(mem);
	return pem;
}

/*
 * Every certificate in a PEM file, in order. A file with no certificate, or with something
 * that is not a certificate after the last one, is AC_ERR_INVALID naming the file.
 */
STACK_OF(X509) *
x509_read_pem_file(const char *path, struct ac_err *err)
{
	STACK_OF(X509) *certs = NULL, *result = NULL;
	char *data = NULL;
	size_t len = 0;
	BIO *mem = NULL;
	X509 *cert;
	unsigned long e;

	if (read_file(path, PEM_FILE_MAX, &data, &len, err) != 0)
		goto out;
	mem = BIO_new_mem_buf(data, (int)len);
	certs = sk_X509_new_null();
	if (mem == NULL || certs == NULL) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "out_of_memory", "%s: out of memory", path);
		goto out;
	}
	ERR_clear_error();
	while ((cert = PEM_read_bio_X509(mem, NULL, NULL, NULL)) != NULL) {
		if (!sk_X509_push(certs, cert)) {
			X509_free(cert);
			ac_err_ssl(err, AC_ERR_CRYPTO, "out_of_memory", "%s: out of memory", path);
			goto out;
		}
	}
	/* The loop ends at end of input (no start line) or at a broken certificate. */
	e = ERR_peek_last_error();
	if (e != 0 &&
	    !(ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)) {
		ac_err_ssl(err, AC_ERR_INVALID, "pem_invalid",
		           "%s: certificate %d is not a valid PEM certificate", path,
		           sk_X509_num(certs) + 1);
		goto out;
	}
	ERR_clear_error();
	if (sk_X509_num(certs) == 0) {
		ac_err_set(err, AC_ERR_INVALID, "pem_invalid", "%s: holds no PEM certificate",
		           path);
		goto out;
	}
	result = certs;
	certs = NULL;
out:
	sk_X509_pop_free(certs, X509_free);
	BIO_free(mem);
	free(data);
	return result;
}
