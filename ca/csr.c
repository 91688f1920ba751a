/*
 * csr.c - parse and verify a certificate signing request that came from outside.
 *
 * The input is hostile until proven otherwise. We accept exactly one request, as one PEM
 * block ("CERTIFICATE REQUEST" or "NEW CERTIFICATE REQUEST", surrounding whitespace allowed)
 * or as DER that is consumed to the last byte; anything before, after or between is
 * refused, so that what we verified is all that was sent. The self-signature must verify
 * with the request's own key: it proves the requester holds the private key.
 *
 * The requested subjectAltNames are copied out with their encoded lengths. A DNS name with a
 * NUL inside ("gw\0.corp.internal") stays 18 bytes long here, and policy refuses it; C
 * string functions would have cut it to "gw" and let the check pass on a different name.
 *
 * We take nothing else from the request: the subject DN and any other requested extension
 * are ignored, because the CA alone decides what a certificate says.
 *
 * Speed: OpenSSL 3.0's X509_REQ decoder builds a fresh key decoder for the public key of
 * every request it reads (about 100 us, more than the signature check), and X509_set_pubkey
 * does an encoder and a decoder more. So the request is decoded here with its own ASN.1
 * template (RFC 2986) that keeps the SubjectPublicKeyInfo as plain fields, and the leaf gets
 * those same fields (csr_copy_pubkey). An EC key on a named curve we issue for (P-256,
 * P-384: nearly every request) does not go through a decoder at all: decoding one builds
 * the curve's EC_GROUP from scratch (about a third of the cost of checking the signature),
 * so the key is made by copying the parameters of a key made once per curve, which copies
 * the group's precomputed values, and then setting the point from the request, which
 * checks it is on the curve as the decoder would. Any other key is decoded by one decoder
 * per thread, made once and reused. The request's signed bytes are kept as they arrived
 * (ASN1_SEQUENCE_enc), so the signature is checked over exactly what was signed.
 *
 * Reusable EC verifiers: even the copied parameters cost a new EC_GROUP per request (copied,
 * then freed with the key), and OpenSSL 3.0 types every new key by walking its name table
 * under a global lock, then fetches the signature and digest again to check the request. So
 * each thread keeps, per fast curve, a spare "verifier": a key that holds the curve's
 * parameters and a verify context bound to that key, both made once. A request takes the
 * thread's spare (or makes one), sets its point into the key (checked on the curve, as
 * always), and when it is signed with ecdsa-with-SHA256/384/512 in the usual form, the
 * request info is hashed and checked with EVP_PKEY_verify on that context. csr_free gives
 * the verifier back to the thread that frees the request, or frees it when that thread
 * has a spare already. A verifier belongs to one request at a time, so nothing is shared
 * between threads and a request's key never changes under it. Any other signature form
 * (RSA, Ed25519, an unusual algorithm encoding) goes through ASN1_item_verify as before.
 */
#include "ca/csr.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/asn1t.h>
#include <openssl/core_names.h>
#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "ca/policy.h"
#include "common/hex.h"

#define PEM_BEGIN "-----BEGIN"
#define PEM_END "-----END"

/*
 * The request as DER (RFC 2986, section 4):
 *
 *   CertificationRequest ::= SEQUENCE { certificationRequestInfo, signatureAlgorithm,
 *                                       signature BIT STRING }
 *   CertificationRequestInfo ::= SEQUENCE { version INTEGER, subject Name,
 *                                           subjectPKInfo, attributes [0] IMPLICIT SET OF }
 */
typedef struct {
	X509_ALGOR *algor;
	ASN1_BIT_STRING *public_key;
} CSR_SPKI;

typedef struct {
	ASN1_ENCODING enc; /* the bytes as received: what the signature covers */
	ASN1_INTEGER *version;
	X509_NAME *subject;
	CSR_SPKI *spki;
	STACK_OF(X509_ATTRIBUTE) *attributes;
} CSR_INFO;

typedef struct {
	CSR_INFO *info;
	X509_ALGOR *sig_alg;
	ASN1_BIT_STRING *signature;
} CSR_DER;

/* clang-format off */
ASN1_SEQUENCE(CSR_SPKI) = {
	ASN1_SIMPLE(CSR_SPKI, algor, X509_ALGOR),
	ASN1_SIMPLE(CSR_SPKI, public_key, ASN1_BIT_STRING),
} static_ASN1_SEQUENCE_END(CSR_SPKI)

ASN1_SEQUENCE_enc(CSR_INFO, enc, NULL) = {
	ASN1_SIMPLE(CSR_INFO, version, ASN1_INTEGER),
	ASN1_SIMPLE(CSR_INFO, subject, X509_NAME),
	ASN1_SIMPLE(CSR_INFO, spki, CSR_SPKI),
	ASN1_IMP_SET_OF_OPT(CSR_INFO, attributes, X509_ATTRIBUTE, 0),
} static_ASN1_SEQUENCE_END_ref(CSR_INFO, CSR_INFO)

ASN1_SEQUENCE(CSR_DER) = {
	ASN1_SIMPLE(CSR_DER, info, CSR_INFO),
	ASN1_SIMPLE(CSR_DER, sig_alg, X509_ALGOR),
	ASN1_SIMPLE(CSR_DER, signature, ASN1_BIT_STRING),
} static_ASN1_SEQUENCE_END(CSR_DER)

/*
 * Shared, made once: the SHA-256 implementation, a parameters-only key for each named curve
 * with a fast path, the digests of the ECDSA signatures checked without ASN1_item_verify,
 * and, per thread, a key decoder for every other key and a spare verifier per curve.
 */

static pthread_once_t csr_once = PTHREAD_ONCE_INIT;
/* clang-format on */
static pthread_key_t decoder_key;
static pthread_key_t verifier_key;
static EVP_MD *spki_md;

/* ecdsa-with-SHA* signature algorithms and their digests (NULL: not fetched, use the slow
 * path). */
static struct ecdsa_alg {
	int nid;
	const char *md_name;
	EVP_MD *md;
} ecdsa_algs[] = {
    {NID_ecdsa_with_SHA256, "SHA2-256", NULL},
    {NID_ecdsa_with_SHA384, "SHA2-384", NULL},
    {NID_ecdsa_with_SHA512, "SHA2-512", NULL},
};

#define ECDSA_ALGS (sizeof(ecdsa_algs) / sizeof(ecdsa_algs[0]))

static struct ec_curve {
	int nid;          /* the namedCurve in the SubjectPublicKeyInfo */
	const char *name; /* OpenSSL's name for it */
	EVP_PKEY *params; /* the curve's parameters only; NULL: use the decoder */
} ec_curves[] = {
    {NID_X9_62_prime256v1, SN_X9_62_prime256v1, NULL},
    {NID_secp384r1, SN_secp384r1, NULL},
};

#define EC_CURVES (sizeof(ec_curves) / sizeof(ec_curves[0]))

/* A key on one curve whose point is set per request, and a verify context bound to it. */
struct ec_verifier {
	const struct ec_curve *curve;
	EVP_PKEY *key;
	EVP_PKEY_CTX *ctx; /* EVP_PKEY_verify with key; made on first use */
};

/* A thread's spare verifiers, one per curve at most (index as in ec_curves). */
struct verifier_spares {
	struct ec_verifier *spare[EC_CURVES];
};

struct spki_decoder {
	OSSL_DECODER_CTX *ctx;
	EVP_PKEY *out; /* where ctx puts each key it decodes */
};

static void
spki_decoder_free(void *arg)
{
	struct spki_decoder *d = arg;

	if (d == NULL)
		return;
	OSSL_DECODER_CTX_free(d->ctx);
	EVP_PKEY_free(d->out);
	free(d);
}

/* A key holding only the domain parameters of the named curve, or NULL (the curve then
 * goes through the decoder, slower but the same). */
static EVP_PKEY *
ec_params_make(const char *name)
{
	OSSL_PARAM params[] = {
	    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)name, 0),
	    OSSL_PARAM_END,
	};
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	EVP_PKEY *key = NULL;

	if (ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1 ||
	    EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_KEY_PARAMETERS, params) != 1) {
		EVP_PKEY_free(key);
		key = NULL;
		ERR_clear_error();
	}
	EVP_PKEY_CTX_free(ctx);
	return key;
}

static void
ec_verifier_free(struct ec_verifier *v)
{
	if (v == NULL)
		return;
	EVP_PKEY_CTX_free(v->ctx);
	EVP_PKEY_free(v->key);
	free(v);
}

static void
verifier_spares_free(void *arg)
{
	struct verifier_spares *spares = arg;

	if (spares == NULL)
		return;
	for (size_t i = 0; i < EC_CURVES; i++)
		ec_verifier_free(spares->spare[i]);
	free(spares);
}

/* Made once per process and kept for its life, like OpenSSL's own tables. */
static void
csr_init_once(void)
{
	spki_md = EVP_MD_fetch(NULL, "SHA2-256", NULL);
	for (size_t i = 0; i < EC_CURVES; i++)
		ec_curves[i].params = ec_params_make(ec_curves[i].name);
	for (size_t i = 0; i < ECDSA_ALGS; i++)
		ecdsa_algs[i].md = EVP_MD_fetch(NULL, ecdsa_algs[i].md_name, NULL);
	ERR_clear_error();
	if (pthread_key_create(&decoder_key, spki_decoder_free) != 0 ||
	    pthread_key_create(&verifier_key, verifier_spares_free) != 0)
		abort(); /* only when the process is out of keys: a bug */
}

/* The curve of an id-ecPublicKey algorithm with a namedCurve we have parameters for, or
 * NULL for anything else. */
static const struct ec_curve *
ec_fast_curve(const CSR_SPKI *spki)
{
	const ASN1_OBJECT *alg;
	const void *pval;
	int ptype, nid;

	X509_ALGOR_get0(&alg, &ptype, &pval, spki->algor);
	if (OBJ_obj2nid(alg) != NID_X9_62_id_ecPublicKey || ptype != V_ASN1_OBJECT)
		return NULL;
	nid = OBJ_obj2nid(pval);
	for (size_t i = 0; i < EC_CURVES; i++)
		if (ec_curves[i].nid == nid && ec_curves[i].params != NULL)
			return &ec_curves[i];
	return NULL;
}

/* This thread's spare verifier for curve, or a new one (its key holding only the curve's
 * parameters); NULL when out of memory. The caller owns it. */
static struct ec_verifier *
ec_verifier_take(const struct ec_curve *curve)
{
	struct verifier_spares *spares = pthread_getspecific(verifier_key);
	size_t i = (size_t)(curve - ec_curves);
	struct ec_verifier *v;

	if (spares != NULL && spares->spare[i] != NULL) {
		v = spares->spare[i];
		spares->spare[i] = NULL;
		return v;
	}
	if ((v = calloc(1, sizeof(*v))) == NULL)
		return NULL;
	v->curve = curve;
	if ((v->key = EVP_PKEY_new()) == NULL ||
	    EVP_PKEY_copy_parameters(v->key, curve->params) != 1) {
		ec_verifier_free(v);
		return NULL;
	}
	return v;
}

/* Give v back as this thread's spare for its curve, or free it when there is one. */
static void
ec_verifier_give_back(struct ec_verifier *v)
{
	struct verifier_spares *spares = pthread_getspecific(verifier_key);
	size_t i = (size_t)(v->curve - ec_curves);

	if (spares == NULL) {
		spares = calloc(1, sizeof(*spares));
		if (spares == NULL || pthread_setspecific(verifier_key, spares) != 0) {
			free(spares);
			ec_verifier_free(v);
			return;
		}
	}
	if (spares->spare[i] != NULL) {
		ec_verifier_free(v);
		return;
	}
	spares->spare[i] = v;
}

/* The public key of an EC SubjectPublicKeyInfo on curve, in a verifier's key: the curve's
 * parameters and the point, which must be on the curve. Fills csr->key and csr->verifier;
 * -1 when the point is not valid (or out of memory). */
static int
ec_key_make(struct csr *csr, const struct ec_curve *curve, const ASN1_BIT_STRING *point)
{
	struct ec_verifier *v = ec_verifier_take(curve);

	/* A failed set may leave the key's point half written: that verifier is not reused. */
	if (v == NULL || EVP_PKEY_set1_encoded_public_key(v->key, ASN1_STRING_get0_data(point),
	                                                  (size_t)ASN1_STRING_length(point)) != 1) {
		ec_verifier_free(v);
		return -1;
	}
	csr->key = v->key;
	csr->verifier = v;
	return 0;
}

/* Decode a SubjectPublicKeyInfo with this thread's decoder (made on first use). */
static EVP_PKEY *
spki_decode(const unsigned char *der, size_t len)
{
	struct spki_decoder *d = pthread_getspecific(decoder_key);
	const unsigned char *p = der;
	EVP_PKEY *key = NULL;
	size_t left = len;

	if (d == NULL) {
		d = calloc(1, sizeof(*d));
		if (d == NULL)
			goto out;
		d->ctx = OSSL_DECODER_CTX_new_for_pkey(&d->out, "DER", "SubjectPublicKeyInfo", NULL,
		                                       EVP_PKEY_PUBLIC_KEY, NULL, NULL);
		if (d->ctx == NULL || pthread_setspecific(decoder_key, d) != 0) {
			spki_decoder_free(d);
			goto out;
		}
	}
	if (OSSL_DECODER_from_data(d->ctx, &p, &left) == 1 && left == 0)
		key = d->out;
	else
		EVP_PKEY_free(d->out);
	d->out = NULL;
out:
	return key;
}

static int
is_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* 1 when the bytes are all whitespace (or there are none). */
static int
all_space(const unsigned char *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (!is_space(p[i]))
			return 0;
	return 1;
}

/*
 * Framing: DER or one PEM block.
 */

/* Decode DER that must hold one request and nothing more. */
static CSR_DER *
csr_from_der(const unsigned char *der, size_t len, const char *what, struct ac_err *err)
{
	const unsigned char *p = der;
	CSR_DER *req = NULL;

	if (len > CSR_MAX_BYTES) {
		ac_err_set(err, AC_ERR_INVALID, "csr_malformed", "%s is too large", what);
		goto out;
	}
	req = (CSR_DER *)ASN1_item_d2i(NULL, &p, (long)len, ASN1_ITEM_rptr(CSR_DER));
	if (req == NULL) {
		ac_err_ssl(err, AC_ERR_INVALID, "csr_malformed", "%s is not a valid request", what);
		goto out;
	}
	if (p != der + len) {
		ac_err_set(err, AC_ERR_INVALID, "csr_malformed",
		           "%s has %zu bytes of trailing data after the request", what,
		           (size_t)(der + len - p));
		ASN1_item_free((ASN1_VALUE *)req, ASN1_ITEM_rptr(CSR_DER));
		req = NULL;
		goto out;
	}
out:
	return req;
}

/*
 * The common case without OpenSSL's PEM reader (a BIO, a line-by-line copy and a decode
 * context, about 30k instructions for a small request): one block labelled (NEW)
 * CERTIFICATE REQUEST, base64 lines of at most 76 characters ending in LF or CRLF, the
 * matching END line, then only whitespace. Anything else (headers, other labels, long or
 * odd lines, trailing data, a truncated block) returns 0 and goes through csr_from_pem,
 * which reads it the same way or refuses it with its specific message. 1: *der (the
 * caller frees it) and *der_len hold the block's bytes.
 */
#define PEM_LINE_MAX 76

static const struct {
	const char *begin, *end;
} pem_labels[] = {
    {"-----BEGIN CERTIFICATE REQUEST-----", "-----END CERTIFICATE REQUEST-----"},
    {"-----BEGIN NEW CERTIFICATE REQUEST-----", "-----END NEW CERTIFICATE REQUEST-----"},
};

static int
is_b64(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '+' || c == '/';
}

/* Skip one line end (LF or CRLF) at *p; 0 when there is none. */
static int
skip_eol(const unsigned char *data, size_t len, size_t *p)
{
	if (*p < len && data[*p] == '\n') {
		(*p)++;
		return 1;
	}
	if (*p + 1 < len && data[*p] == '\r' && data[*p + 1] == '\n') {
		*p += 2;
		return 1;
	}
	return 0;
}

static int
csr_pem_fast(const unsigned char *data, size_t len, unsigned char **der, size_t *der_len)
{
	unsigned char *b64 = NULL, *out = NULL;
	size_t p = 0, n = 0, pad = 0, i;
	const char *end = NULL;
	int decoded, rc = 0;

	*der = NULL;
	*der_len = 0;
	for (i = 0; i < sizeof(pem_labels) / sizeof(pem_labels[0]) && end == NULL; i++) {
		p = strlen(pem_labels[i].begin);
		if (len >= p && memcmp(data, pem_labels[i].begin, p) == 0)
			end = pem_labels[i].end;
	}
	if (end == NULL || !skip_eol(data, len, &p))
		goto out;
	b64 = malloc(len);
	if (b64 == NULL)
		goto out;
	/* Body lines until the END line. */
	while (p < len && data[p] != '-') {
		size_t start = p;

		while (p < len && (is_b64(data[p]) || data[p] == '='))
			b64[n++] = data[p++];
		if (p == start || p - start > PEM_LINE_MAX || !skip_eol(data, len, &p))
			goto out;
	}
	if (len - p < strlen(end) || memcmp(data + p, end, strlen(end)) != 0)
		goto out;
	p += strlen(end);
	if (!all_space(data + p, len - p))
		goto out;
	/* '=' only as the last one or two characters of the whole body. */
	while (pad < n && pad < 3 && b64[n - 1 - pad] == '=')
		pad++;
	if (n == 0 || n % 4 != 0 || pad > 2 || memchr(b64, '=', n - pad) != NULL)
		goto out;
	out = malloc(n / 4 * 3);
	if (out == NULL)
		goto out;
	decoded = EVP_DecodeBlock(out, b64, (int)n);
	if (decoded < 0 || (size_t)decoded != n / 4 * 3 || (size_t)decoded < pad)
		goto out;
	*der = out;
	*der_len = (size_t)decoded - pad;
	out = NULL;
	rc = 1;
out:
	free(out);
	free(b64);
	return rc;
}

/* Decode one PEM block of type (NEW) CERTIFICATE REQUEST, with only whitespace after it. */
static CSR_DER *
csr_from_pem(const unsigned char *data, size_t len, struct ac_err *err)
{
	char *name = NULL, *header = NULL, shown[80];
	unsigned char *der = NULL, rest[256];
	CSR_DER *req = NULL;
	long der_len = 0;
	int n;
	BIO *bio;

	bio = BIO_new_mem_buf(data, (int)len);
	if (bio == NULL) {
		ac_err_ssl(err, AC_ERR_INTERNAL, "out_of_memory", "reading the CSR PEM");
		goto out;
	}
	if (PEM_read_bio_ex(bio, &name, &header, &der, &der_len, PEM_FLAG_ONLY_B64) != 1) {
		if (memmem(data, len, PEM_END, strlen(PEM_END)) == NULL)
			ac_err_set(err, AC_ERR_INVALID, "csr_malformed", "CSR PEM is truncated");
		else
			ac_err_ssl(err, AC_ERR_INVALID, "csr_malformed", "CSR PEM is malformed");
		goto out;
	}
	if (strcmp(name, "CERTIFICATE REQUEST") != 0 &&
	    strcmp(name, "NEW CERTIFICATE REQUEST") != 0) {
		policy_escape(name, strlen(name), shown, sizeof(shown));
		ac_err_set(err, AC_ERR_INVALID, "csr_malformed",
		           "CSR PEM holds a \"%s\" block, not a CERTIFICATE REQUEST", shown);
		goto out;
	}
	if (header[0] != '\0') {
		ac_err_set(err, AC_ERR_INVALID, "csr_malformed", "CSR PEM has unexpected headers");
		goto out;
	}
	while ((n = BIO_read(bio, rest, sizeof(rest))) > 0) {
		if (!all_space(rest, (size_t)n)) {
			if (memmem(rest, (size_t)n, PEM_BEGIN, strlen(PEM_BEGIN)) != NULL)
				ac_err_set(err, AC_ERR_INVALID, "csr_malformed",
				           "CSR PEM holds more than one block");
			else
				ac_err_set(err, AC_ERR_INVALID, "csr_malformed",
				           "CSR PEM has trailing data after the request");
			goto out;
		}
	}
	req = csr_from_der(der, (size_t)der_len, "CSR PEM content", err);
out:
	OPENSSL_free(name);
	OPENSSL_free(header);
	OPENSSL_free(der);
	BIO_free(bio);
	return req;
}

/*
 * The key: decoded, hashed, and its signature on the request checked.
 */

/* Decode the request's key and take the SHA-256 of its SubjectPublicKeyInfo; keep that DER
 * (csr->spki_der), which the leaf carries as it is. */
static int
csr_read_key(struct csr *csr, const CSR_DER *req, struct ac_err *err)
{
	const struct ec_curve *curve;
	unsigned char *spki = NULL, md[32];
	unsigned int md_len = 0;
	int spki_len, rc = -1;

	spki_len =
	    ASN1_item_i2d((const ASN1_VALUE *)req->info->spki, &spki, ASN1_ITEM_rptr(CSR_SPKI));
	if (spki_len <= 0) {
		ac_err_ssl(err, AC_ERR_INVALID, "csr_malformed",
		           "CSR public key cannot be encoded");
		goto out;
	}
	if ((curve = ec_fast_curve(req->info->spki)) != NULL)
		(void)ec_key_make(csr, curve, req->info->spki->public_key);
	else
		csr->key = spki_decode(spki, (size_t)spki_len);
	if (csr->key == NULL) {
		ERR_clear_error();
		ac_err_set(err, AC_ERR_INVALID, "csr_malformed",
		           "CSR public key is of an unknown type or cannot be decoded");
		goto out;
	}
	if (spki_md == NULL ||
	    EVP_Digest(spki, (size_t)spki_len, md, &md_len, spki_md, NULL) != 1 ||
	    md_len != sizeof(md)) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "digest_failed", "SHA-256 of the CSR key failed");
		goto out;
	}
	hex_encode(md, sizeof(md), csr->spki_sha256);
	csr->spki_der = spki;
	csr->spki_der_len = (size_t)spki_len;
	spki = NULL;
	rc = 0;
out:
	OPENSSL_free(spki);
	return rc;
}

/* The digest of an ECDSA signature in its usual form (ecdsa-with-SHA256/384/512, no
 * parameters, a whole number of bytes) over request info kept as received; NULL for
 * anything else, which ASN1_item_verify then checks. */
static const EVP_MD *
ecdsa_fast_md(const CSR_DER *req)
{
	const ASN1_OBJECT *alg;
	int ptype, nid;

	if (req->info->enc.enc == NULL || req->info->enc.modified ||
	    (req->signature->flags & 0x07) != 0)
		return NULL;
	X509_ALGOR_get0(&alg, &ptype, NULL, req->sig_alg);
	if (ptype != V_ASN1_UNDEF)
		return NULL;
	nid = OBJ_obj2nid(alg);
	for (size_t i = 0; i < ECDSA_ALGS; i++)
		if (ecdsa_algs[i].nid == nid)
			return ecdsa_algs[i].md;
	return NULL;
}

/* The ECDSA check with the verifier's context: 1 good, 0 bad, -1 when it cannot be done
 * this way. The context is bound to the verifier's key, whose point is this request's. */
static int
ecdsa_fast_verify(struct ec_verifier *v, const EVP_MD *md, const CSR_DER *req)
{
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int digest_len = 0;

	if (v->ctx == NULL) {
		v->ctx = EVP_PKEY_CTX_new_from_pkey(NULL, v->key, NULL);
		if (v->ctx == NULL || EVP_PKEY_verify_init(v->ctx) != 1) {
			EVP_PKEY_CTX_free(v->ctx);
			v->ctx = NULL;
			return -1;
		}
	}
	if (EVP_Digest(req->info->enc.enc, (size_t)req->info->enc.len, digest, &digest_len, md,
	               NULL) != 1)
		return -1;
	return EVP_PKEY_verify(v->ctx, ASN1_STRING_get0_data(req->signature),
	                       (size_t)ASN1_STRING_length(req->signature), digest, digest_len) == 1
	           ? 1
	           : 0;
}

/* The self-signature, over the request info exactly as received. */
static int
csr_verify(const struct csr *csr, const CSR_DER *req, struct ac_err *err)
{
	const EVP_MD *md = csr->verifier != NULL ? ecdsa_fast_md(req) : NULL;
	int ok = -1;

	if (md != NULL)
		ok = ecdsa_fast_verify(csr->verifier, md, req);
	/* 1: good; 0 or -1: a wrong or unusable signature. OpenSSL's queue adds nothing a
	 * requester can act on ("EVP lib"), so it is dropped. */
	if (ok < 0)
		ok = ASN1_item_verify(ASN1_ITEM_rptr(CSR_INFO), req->sig_alg, req->signature,
		                      req->info, csr->key) == 1;
	if (ok != 1) {
		ERR_clear_error();
		return ac_err_set(err, AC_ERR_INVALID, "csr_bad_signature",
		                  "CSR signature does not verify with its own key");
	}
	return 0;
}

/*
 * The requested names.
 */

/* Append one SAN (a heap copy of len bytes, NUL-terminated) to csr->sans. */
static int
csr_add_san(struct csr *csr, enum csr_san_type type, const void *value, size_t len,
            struct ac_err *err)
{
	struct csr_san *san = &csr->sans[csr->san_count];
	int rc = -1;

	san->value = malloc(len + 1);
	if (san->value == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto out;
	}
	if (len > 0)
		memcpy(san->value, value, len);
	san->value[len] = '\0';
	san->len = len;
	san->type = type;
	csr->san_count++;
	rc = 0;
out:
	return rc;
}

/* What a SAN of a type we do not issue is called in messages (kept as its value). */
static const struct {
	int gen_type;
	const char *name;
} other_san_names[] = {
    {GEN_OTHERNAME, "otherName"}, {GEN_EMAIL, "email"},           {GEN_X400, "x400Address"},
    {GEN_DIRNAME, "dirName"},     {GEN_EDIPARTY, "ediPartyName"}, {GEN_RID, "registeredID"},
};

static const char *
other_san_name(int gen_type)
{
	for (size_t i = 0; i < sizeof(other_san_names) / sizeof(other_san_names[0]); i++)
		if (other_san_names[i].gen_type == gen_type)
			return other_san_names[i].name;
	return "unknown";
}

/* Copy the names of one subjectAltName extension into csr->sans. */
static int
csr_take_sans(struct csr *csr, X509_EXTENSION *ext, struct ac_err *err)
{
	GENERAL_NAMES *names = NULL;
	int count, rc = -1;

	if (csr->sans != NULL) {
		ac_err_set(err, AC_ERR_INVALID, "csr_malformed",
		           "CSR requests subjectAltName twice");
		goto out;
	}
	names = X509V3_EXT_d2i(ext);
	if (names == NULL) {
		ac_err_ssl(err, AC_ERR_INVALID, "csr_malformed",
		           "CSR subjectAltName extension cannot be decoded");
		goto out;
	}
	count = sk_GENERAL_NAME_num(names);
	if (count > CSR_MAX_SANS_PARSED) {
		ac_err_set(err, AC_ERR_POLICY, "too_many_sans",
		           "CSR requests %d names; at most %d are read", count,
		           CSR_MAX_SANS_PARSED);
		goto out;
	}
	csr->sans = calloc((size_t)count + 1, sizeof(*csr->sans));
	if (csr->sans == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto out;
	}
	for (int i = 0; i < count; i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
		const ASN1_STRING *s = NULL;
		enum csr_san_type type = CSR_SAN_OTHER;
		const char *other;

		switch (gn->type) {
		case GEN_DNS:
			type = CSR_SAN_DNS;
			s = gn->d.dNSName;
			break;
		case GEN_URI:
			type = CSR_SAN_URI;
			s = gn->d.uniformResourceIdentifier;
			break;
		case GEN_IPADD:
			type = CSR_SAN_IP;
			s = gn->d.iPAddress;
			break;
		default:
			break;
		}
		if (s != NULL) {
			if (csr_add_san(csr, type, ASN1_STRING_get0_data(s),
			                (size_t)ASN1_STRING_length(s), err) != 0)
				goto out;
		} else {
			other = other_san_name(gn->type);
			if (csr_add_san(csr, CSR_SAN_OTHER, other, strlen(other), err) != 0)
				goto out;
		}
	}
	rc = 0;
out:
	GENERAL_NAMES_free(names);
	return rc;
}

/* The extensions of the one extensionRequest attribute (PKCS#9, or Microsoft's), or an
 * empty list when there is none. NULL with err on anything malformed. */
static STACK_OF(X509_EXTENSION) *
csr_requested_extensions(const CSR_DER *req, struct ac_err *err)
{
	STACK_OF(X509_EXTENSION) *exts = NULL;
	const ASN1_STRING *seq = NULL;
	const unsigned char *p;
	int found = 0;

	for (int i = 0; i < sk_X509_ATTRIBUTE_num(req->info->attributes); i++) {
		X509_ATTRIBUTE *attr = sk_X509_ATTRIBUTE_value(req->info->attributes, i);
		int nid = OBJ_obj2nid(X509_ATTRIBUTE_get0_object(attr));
		const ASN1_TYPE *value;

		if (nid != NID_ext_req && nid != NID_ms_ext_req)
			continue;
		value = X509_ATTRIBUTE_get0_type(attr, 0);
		if (found++ > 0 || X509_ATTRIBUTE_count(attr) != 1 || value == NULL ||
		    value->type != V_ASN1_SEQUENCE) {
			ac_err_set(err, AC_ERR_INVALID, "csr_malformed",
			           "CSR extension request is malformed");
			goto out;
		}
		seq = value->value.sequence;
	}
	if (seq == NULL) {
		exts = sk_X509_EXTENSION_new_null();
		if (exts == NULL)
			ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto out;
	}
	p = seq->data;
	exts = d2i_X509_EXTENSIONS(NULL, &p, seq->length);
	if (exts == NULL || p != seq->data + seq->length) {
		sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
		exts = NULL;
		ac_err_ssl(err, AC_ERR_INVALID, "csr_malformed",
		           "CSR extension request cannot be decoded");
		goto out;
	}
out:
	return exts;
}

/* Copy out the requested subjectAltNames. */
static int
csr_read_sans(struct csr *csr, const CSR_DER *req, struct ac_err *err)
{
	STACK_OF(X509_EXTENSION) *exts;
	int rc = -1;

	exts = csr_requested_extensions(req, err);
	if (exts == NULL)
		goto out;
	for (int i = 0; i < sk_X509_EXTENSION_num(exts); i++) {
		X509_EXTENSION *ext = sk_X509_EXTENSION_value(exts, i);

		if (OBJ_obj2nid(X509_EXTENSION_get_object(ext)) != NID_subject_alt_name)
			continue;
		if (csr_take_sans(csr, ext, err) != 0)
			goto out;
	}
	rc = 0;
out:
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	return rc;
}

/*
 * The interface.
 */

/* Parse (PEM or DER), verify the self-signature, extract the SANs. */
int
csr_parse(const unsigned char *data, size_t len, struct csr **out, struct ac_err *err)
{
	struct csr *csr = NULL;
	CSR_DER *req = NULL;
	unsigned char *der = NULL;
	size_t skip = 0, der_len = 0;
	int rc = -1;

	*out = NULL;
	pthread_once(&csr_once, csr_init_once);
	if (data == NULL || len == 0) {
		ac_err_set(err, AC_ERR_INVALID, "csr_malformed", "CSR is empty");
		goto out;
	}
	if (len > CSR_MAX_BYTES) {
		ac_err_set(err, AC_ERR_INVALID, "csr_malformed",
		           "CSR is %zu bytes; at most %d are accepted", len, CSR_MAX_BYTES);
		goto out;
	}
	csr = calloc(1, sizeof(*csr));
	if (csr == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto out;
	}
	while (skip < len && is_space(data[skip]))
		skip++;
	if (len - skip >= strlen(PEM_BEGIN) &&
	    memcmp(data + skip, PEM_BEGIN, strlen(PEM_BEGIN)) == 0) {
		if (csr_pem_fast(data + skip, len - skip, &der, &der_len))
			req = csr_from_der(der, der_len, "CSR PEM content", err);
		else
			req = csr_from_pem(data + skip, len - skip, err);
	} else if (data[0] == 0x30) /* a DER SEQUENCE */
		req = csr_from_der(data, len, "CSR DER", err);
	else
		ac_err_set(err, AC_ERR_INVALID, "csr_malformed", "CSR is not PEM or DER");
	if (req == NULL)
		goto out;
	csr->parsed = req;
	if (ASN1_INTEGER_get(req->info->version) != X509_REQ_VERSION_1) {
		ac_err_set(err, AC_ERR_INVALID, "csr_malformed", "CSR version is not 1");
		goto out;
	}
	if (csr_read_key(csr, req, err) != 0 || csr_verify(csr, req, err) != 0 ||
	    csr_read_sans(csr, req, err) != 0)
		goto out;
	*out = csr;
	csr = NULL;
	rc = 0;
out:
	free(der);
	csr_free(csr);
	return rc;
}

/* Free the request, its key and the copied names. NULL is fine. */
void
csr_free(struct csr *csr)
{
	if (csr == NULL)
		return;
	for (size_t i = 0; i < csr->san_count; i++)
		free(csr->sans[i].value);
	free(csr->sans);
	if (csr->verifier != NULL)
		ec_verifier_give_back(csr->verifier);
	else
		EVP_PKEY_free(csr->key);
	OPENSSL_free(csr->spki_der);
	ASN1_item_free(csr->parsed, ASN1_ITEM_rptr(CSR_DER));
	free(csr);
}

/* A deep copy of an AlgorithmIdentifier's parameter, for X509_PUBKEY_set0_param: absent
 * (Ed25519), NULL (RSA), a curve OID (EC) or a SEQUENCE; nothing else is a key we issue
 * for, and policy has refused it before we get here. */
static int
copy_param(int ptype, const void *pval, void **out)
{
	*out = NULL;
	switch (ptype) {
	case V_ASN1_UNDEF:
	case V_ASN1_NULL:
		return 0;
	case V_ASN1_OBJECT:
		*out = OBJ_dup(pval);
		break;
	case V_ASN1_SEQUENCE:
		*out = ASN1_STRING_dup(pval);
		break;
	default:
		return -1;
	}
	return *out != NULL ? 0 : -1;
}

static void
free_param(int ptype, void *param)
{
	if (ptype == V_ASN1_OBJECT)
		ASN1_OBJECT_free(param);
	else
		ASN1_STRING_free(param);
}

/* Set cert's SubjectPublicKeyInfo to the request's algorithm and key bits. */
int
csr_copy_pubkey(const struct csr *csr, X509 *cert, struct ac_err *err)
{
	const CSR_SPKI *spki = ((const CSR_DER *)csr->parsed)->info->spki;
	const ASN1_OBJECT *alg;
	const void *pval;
	ASN1_OBJECT *alg_copy = NULL;
	void *param = NULL;
	unsigned char *bits = NULL;
	int ptype, len, rc = -1;

	X509_ALGOR_get0(&alg, &ptype, &pval, spki->algor);
	len = ASN1_STRING_length(spki->public_key);
	alg_copy = OBJ_dup(alg);
	bits = OPENSSL_memdup(ASN1_STRING_get0_data(spki->public_key), (size_t)len);
	if (alg_copy == NULL || bits == NULL || copy_param(ptype, pval, &param) != 0) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "cert_build_failed",
		           "cannot copy the CSR public key");
		goto out;
	}
	if (!X509_PUBKEY_set0_param(X509_get_X509_PUBKEY(cert), alg_copy, ptype, param, bits,
	                            len)) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "cert_build_failed",
		           "cannot set the certificate's public key");
		goto out;
	}
	alg_copy = NULL; /* owned by the certificate now */
	param = NULL;
	bits = NULL;
	rc = 0;
out:
	OPENSSL_free(bits);
	if (param != NULL)
		free_param(ptype, param);
	ASN1_OBJECT_free(alg_copy);
	return rc;
}

/*
 * The same view of an existing certificate, for a renewal that keeps its key: the public key
 * and the subjectAltNames come from the certificate (issued by us, presented over mTLS, so
 * possession of the key is already proven and there is no signature to check).
 */
int
csr_from_certificate(const unsigned char *der, size_t len, struct csr **out, struct ac_err *err)
{
	const unsigned char *p = der;
	unsigned char *spki_der = NULL;
	const unsigned char *q;
	struct csr *csr = NULL;
	CSR_DER *req = NULL;
	X509 *cert = NULL;
	int spki_len, idx, rc = -1;

	*out = NULL;
	pthread_once(&csr_once, csr_init_once);
	cert = d2i_X509(NULL, &p, (long)len);
	csr = calloc(1, sizeof(*csr));
	req = (CSR_DER *)ASN1_item_new(ASN1_ITEM_rptr(CSR_DER));
	if (cert == NULL || csr == NULL || req == NULL) {
		ac_err_ssl(err, AC_ERR_INVALID, "csr_malformed",
		           "the certificate to renew cannot be decoded");
		goto out;
	}
	spki_len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &spki_der);
	q = spki_der;
	ASN1_item_free((ASN1_VALUE *)req->info->spki, ASN1_ITEM_rptr(CSR_SPKI));
	req->info->spki =
	    spki_len > 0 ? (CSR_SPKI *)ASN1_item_d2i(NULL, &q, spki_len, ASN1_ITEM_rptr(CSR_SPKI))
	                 : NULL;
	if (req->info->spki == NULL) {
		ac_err_ssl(err, AC_ERR_INVALID, "csr_malformed",
		           "the certificate's public key cannot be read");
		goto out;
	}
	csr->parsed = req;
	req = NULL;
	if (csr_read_key(csr, csr->parsed, err) != 0)
		goto out;
	idx = X509_get_ext_by_NID(cert, NID_subject_alt_name, -1);
	if (idx >= 0 && csr_take_sans(csr, X509_get_ext(cert, idx), err) != 0)
		goto out;
	*out = csr;
	csr = NULL;
	rc = 0;
out:
	OPENSSL_free(spki_der);
	ASN1_item_free((ASN1_VALUE *)req, ASN1_ITEM_rptr(CSR_DER));
	csr_free(csr);
	X509_free(cert);
	return rc;
}
