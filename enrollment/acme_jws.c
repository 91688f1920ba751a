/*
 * acme_jws.c - flattened JWS parsing and verification, JWK keys and thumbprints (see
 * acme_jws.h).
 *
 * The order of the checks: the body's size, then JSON, then the three members and their
 * base64url, then the protected header's members, and only then the key and the signature.
 * The usual body (exactly the three members, plain base64url strings) is taken apart in
 * place without building a JSON tree; every other body goes through jansson (see
 * flat_members).
 * Nothing here trusts a length it has not bounded. ECDSA signatures arrive as r || s
 * (RFC 7518 section 3.4) and are rewritten as DER for OpenSSL.
 */
#include "enrollment/acme_jws.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>

#include "common/base64url.h"

#define JWK_MEMBER_MAX 1400 /* base64url of a 8192-bit modulus is 1366 */

static int
malformed(struct ac_err *err, const char *msg)
{
	return ac_err_set(err, AC_ERR_INVALID, "malformed", "%s", msg);
}

void
acme_jws_free(struct acme_jws *jws)
{
	if (jws == NULL)
		return;
	json_decref(jws->header);
	free(jws->payload);
	free(jws->signing_input);
	free(jws->signature);
	memset(jws, 0, sizeof(*jws));
}

/* A string member of header, or NULL. */
static const char *
header_string(const json_t *header, const char *key)
{
	const json_t *v = json_object_get(header, key);

	return json_is_string(v) ? json_string_value(v) : NULL;
}

/* The three members' texts (base64url, not yet decoded) into out: the shared second half
 * of acme_jws_parse_json and of the flat fast path in acme_jws_parse. */
static int
parse_parts(const char *prot_s, size_t prot_len, const char *payload_s, size_t payload_len,
            const char *sig_s, size_t sig_len, struct acme_jws *out, struct ac_err *err)
{
	unsigned char *decoded = NULL;
	size_t decoded_len = 0;
	json_error_t jerr;
	int rc = -1;

	memset(out, 0, sizeof(*out));
	if (prot_len == 0 || sig_len == 0 || prot_len + payload_len + sig_len > ACME_JWS_MAX) {
		malformed(err, "the JWS is empty or too large");
		goto out;
	}
	if (base64url_decode_alloc(prot_s, prot_len, &decoded, &decoded_len) != 0) {
		malformed(err, "\"protected\" is not base64url");
		goto out;
	}
	out->header = json_loadb((const char *)decoded, decoded_len, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_object(out->header)) {
		malformed(err, "the protected header is not a JSON object");
		goto out;
	}
	if (base64url_decode_alloc(payload_s, payload_len, &out->payload, &out->payload_len) != 0) {
		malformed(err, "\"payload\" is not base64url");
		goto out;
	}
	out->post_as_get = payload_len == 0;
	if (base64url_decode_alloc(sig_s, sig_len, &out->signature, &out->signature_len) != 0) {
		malformed(err, "\"signature\" is not base64url");
		goto out;
	}
	out->signing_input_len = prot_len + 1 + payload_len;
	if ((out->signing_input = malloc(out->signing_input_len + 1)) == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "serverInternal", "out of memory");
		goto out;
	}
	memcpy(out->signing_input, prot_s, prot_len);
	out->signing_input[prot_len] = '.';
	memcpy(out->signing_input + prot_len + 1, payload_s, payload_len);
	out->signing_input[out->signing_input_len] = '\0';

	out->alg = header_string(out->header, "alg");
	out->nonce = header_string(out->header, "nonce");
	out->url = header_string(out->header, "url");
	out->kid = header_string(out->header, "kid");
	out->jwk = json_object_get(out->header, "jwk");
	if (out->alg == NULL) {
		malformed(err, "the protected header has no \"alg\"");
		goto out;
	}
	if (out->url == NULL) {
		ac_err_set(err, AC_ERR_INVALID, "unauthorized",
		           "the protected header has no \"url\" (RFC 8555 section 6.4)");
		goto out;
	}
	if (json_object_get(out->header, "kid") != NULL && out->kid == NULL) {
		malformed(err, "\"kid\" must be a string");
		goto out;
	}
	if ((out->kid != NULL) == (out->jwk != NULL)) {
		malformed(err, "the protected header must hold exactly one of \"jwk\" and \"kid\"");
		goto out;
	}
	if (out->jwk != NULL && !json_is_object(out->jwk)) {
		malformed(err, "\"jwk\" must be a JSON object");
		goto out;
	}
	rc = 0;
out:
	free(decoded);
	if (rc != 0)
		acme_jws_free(out);
	return rc;
}

int
acme_jws_parse_json(const json_t *doc, struct acme_jws *out, struct ac_err *err)
{
	const json_t *prot, *payload, *sig;

	memset(out, 0, sizeof(*out));
	if (!json_is_object(doc))
		return malformed(err, "the body is not a JWS in the flattened JSON serialization");
	if (json_object_get(doc, "signatures") != NULL || json_object_get(doc, "header") != NULL)
		return malformed(err, "only the flattened JSON serialization with one protected "
		                      "header is accepted (no \"signatures\", no unprotected "
		                      "\"header\")");
	prot = json_object_get(doc, "protected");
	payload = json_object_get(doc, "payload");
	sig = json_object_get(doc, "signature");
	if (!json_is_string(prot) || !json_is_string(payload) || !json_is_string(sig))
		return malformed(err, "a JWS needs string members \"protected\", \"payload\" and "
		                      "\"signature\"");
	return parse_parts(json_string_value(prot), json_string_length(prot),
	                   json_string_value(payload), json_string_length(payload),
	                   json_string_value(sig), json_string_length(sig), out, err);
}

/*
 * The fast path for the usual body: a JSON object of exactly the members "protected",
 * "payload" and "signature", each once, each a string of base64url characters only, with
 * JSON whitespace between tokens and nothing after the object. Such a body means the same
 * to jansson, so it is taken apart in place instead of being built into a JSON tree first
 * (that tree cost more instructions than everything else in parsing). Anything else, an
 * escape, another member, a duplicate, a truncation, returns 0 and goes to the full parser,
 * which accepts or refuses it exactly as before.
 */
struct flat_member {
	const char *text;
	size_t len;
	int seen;
};

static const char *
skip_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

static int
is_b64url(unsigned char ch)
{
	return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
	       ch == '-' || ch == '_';
}

/* 1 with the three members set, 0: not the simple shape (use the full parser). */
static int
flat_members(const char *body, size_t len, struct flat_member m[3])
{
	static const char *const names[3] = {"protected", "payload", "signature"};
	const char *p = body, *end = body + len, *key, *val;
	size_t key_len;
	int which;

	memset(m, 0, 3 * sizeof(*m));
	p = skip_ws(p, end);
	if (p == end || *p++ != '{')
		return 0;
	for (int n = 0; n < 3; n++) {
		p = skip_ws(p, end);
		if (p == end || *p++ != '"')
			return 0;
		for (key = p; p < end && *p >= 'a' && *p <= 'z'; p++)
			;
		key_len = (size_t)(p - key);
		if (p == end || *p++ != '"')
			return 0;
		for (which = 0; which < 3; which++)
			if (strlen(names[which]) == key_len &&
			    memcmp(names[which], key, key_len) == 0)
				break;
		if (which == 3 || m[which].seen)
			return 0;
		p = skip_ws(p, end);
		if (p == end || *p++ != ':')
			return 0;
		p = skip_ws(p, end);
		if (p == end || *p++ != '"')
			return 0;
		for (val = p; p < end && is_b64url((unsigned char)*p); p++)
			;
		if (p == end || *p != '"')
			return 0;
		m[which].text = val;
		m[which].len = (size_t)(p - val);
		m[which].seen = 1;
		p = skip_ws(p + 1, end);
		if (p == end || *p++ != (n < 2 ? ',' : '}'))
			return 0;
	}
	return skip_ws(p, end) == end;
}

int
acme_jws_parse(const char *body, size_t len, struct acme_jws *out, struct ac_err *err)
{
	struct flat_member m[3];
	json_error_t jerr;
	json_t *doc;
	int rc;

	memset(out, 0, sizeof(*out));
	if (body == NULL || len == 0)
		return malformed(err, "the request has no body; ACME requests are JWS (RFC 8555 "
		                      "section 6.2)");
	if (len > ACME_JWS_MAX)
		return malformed(err, "the request body is too large");
	if (flat_members(body, len, m))
		return parse_parts(m[0].text, m[0].len, m[1].text, m[1].len, m[2].text, m[2].len,
		                   out, err);
	doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (doc == NULL)
		return malformed(err, "the request body is not JSON");
	rc = acme_jws_parse_json(doc, out, err);
	json_decref(doc);
	return rc;
}

/* Decode a base64url member of jwk into out (at most max bytes). */
static int
jwk_member(const json_t *jwk, const char *key, unsigned char *out, size_t max, size_t *len,
           struct ac_err *err)
{
	const json_t *v = json_object_get(jwk, key);

	if (!json_is_string(v) || json_string_length(v) == 0 ||
	    json_string_length(v) > JWK_MEMBER_MAX ||
	    base64url_decode(json_string_value(v), json_string_length(v), out, max, len) != 0)
		return ac_err_set(err, AC_ERR_INVALID, "badPublicKey",
		                  "the JWK member \"%s\" is missing or not base64url of the right "
		                  "size",
		                  key);
	return 0;
}

static EVP_PKEY *
key_from_params(const char *type, OSSL_PARAM_BLD *bld, struct ac_err *err)
{
	OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
	EVP_PKEY *key = NULL;

	if (params == NULL || ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1 ||
	    EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_PUBLIC_KEY, params) != 1) {
		EVP_PKEY_free(key);
		key = NULL;
		ac_err_ssl(err, AC_ERR_INVALID, "badPublicKey", "the JWK is not a valid %s key",
		           type);
	}
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	return key;
}

static EVP_PKEY *
ec_key(const json_t *jwk, const char *crv, struct ac_err *err)
{
	unsigned char point[1 + 2 * 48], x[48], y[48];
	size_t xlen = 0, ylen = 0, n;
	const char *group;
	OSSL_PARAM_BLD *bld = NULL;
	EVP_PKEY *key = NULL;
	EVP_PKEY_CTX *check = NULL;

	if (strcmp(crv, "P-256") == 0) {
		n = 32;
		group = "prime256v1";
	} else if (strcmp(crv, "P-384") == 0) {
		n = 48;
		group = "secp384r1";
	} else {
		ac_err_set(err, AC_ERR_INVALID, "badPublicKey",
		           "EC keys must be on P-256 or P-384");
		goto out;
	}
	if (jwk_member(jwk, "x", x, sizeof(x), &xlen, err) != 0 ||
	    jwk_member(jwk, "y", y, sizeof(y), &ylen, err) != 0)
		goto out;
	if (xlen != n || ylen != n) {
		ac_err_set(err, AC_ERR_INVALID, "badPublicKey",
		           "the JWK's coordinates are not %zu bytes for %s", n, crv);
		goto out;
	}
	point[0] = 0x04;
	memcpy(point + 1, x, n);
	memcpy(point + 1 + n, y, n);
	if ((bld = OSSL_PARAM_BLD_new()) == NULL ||
	    !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) ||
	    !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, 1 + 2 * n)) {
		ac_err_set(err, AC_ERR_INTERNAL, "serverInternal", "out of memory");
		goto out;
	}
	key = key_from_params("EC", bld, err);
	if (key == NULL)
		goto out;
	/* The point must be on the curve. */
	check = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);
	if (check == NULL || EVP_PKEY_public_check(check) != 1) {
		EVP_PKEY_free(key);
		key = NULL;
		ac_err_ssl(err, AC_ERR_INVALID, "badPublicKey", "the JWK's point is not on %s",
		           crv);
	}
out:
	EVP_PKEY_CTX_free(check);
	OSSL_PARAM_BLD_free(bld);
	return key;
}

static EVP_PKEY *
rsa_key(const json_t *jwk, struct ac_err *err)
{
	unsigned char nbuf[1024], ebuf[8];
	size_t nlen = 0, elen = 0;
	BIGNUM *n = NULL, *e = NULL;
	OSSL_PARAM_BLD *bld = NULL;
	EVP_PKEY *key = NULL;

	if (jwk_member(jwk, "n", nbuf, sizeof(nbuf), &nlen, err) != 0 ||
	    jwk_member(jwk, "e", ebuf, sizeof(ebuf), &elen, err) != 0)
		goto out;
	n = BN_bin2bn(nbuf, (int)nlen, NULL);
	e = BN_bin2bn(ebuf, (int)elen, NULL);
	if (n == NULL || e == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "serverInternal", "out of memory");
		goto out;
	}
	if (BN_num_bits(n) < 2048 || BN_num_bits(n) > 8192 || !BN_is_odd(e) || BN_is_one(e)) {
		ac_err_set(err, AC_ERR_INVALID, "badPublicKey",
		           "RSA account keys must have 2048 to 8192 bits and an odd exponent > 1");
		goto out;
	}
	if ((bld = OSSL_PARAM_BLD_new()) == NULL ||
	    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
	    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e)) {
		ac_err_set(err, AC_ERR_INTERNAL, "serverInternal", "out of memory");
		goto out;
	}
	key = key_from_params("RSA", bld, err);
out:
	OSSL_PARAM_BLD_free(bld);
	BN_free(n);
	BN_free(e);
	return key;
}

static EVP_PKEY *
ed25519_key(const json_t *jwk, const char *crv, struct ac_err *err)
{
	unsigned char x[32];
	size_t xlen = 0;
	EVP_PKEY *key;

	if (strcmp(crv, "Ed25519") != 0) {
		ac_err_set(err, AC_ERR_INVALID, "badPublicKey", "OKP keys must be Ed25519");
		return NULL;
	}
	if (jwk_member(jwk, "x", x, sizeof(x), &xlen, err) != 0)
		return NULL;
	if (xlen != 32) {
		ac_err_set(err, AC_ERR_INVALID, "badPublicKey", "an Ed25519 key is 32 bytes");
		return NULL;
	}
	key = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, x, xlen);
	if (key == NULL)
		ac_err_ssl(err, AC_ERR_INVALID, "badPublicKey", "the Ed25519 JWK is not valid");
	return key;
}

/* Which key an alg needs: "EC/P-256", "EC/P-384", "RSA", "OKP/Ed25519"; NULL: unsupported. */
static int
alg_suits(const char *alg, const char *kty, const char *crv)
{
	if (strcmp(alg, "ES256") == 0)
		return strcmp(kty, "EC") == 0 && crv != NULL && strcmp(crv, "P-256") == 0;
	if (strcmp(alg, "ES384") == 0)
		return strcmp(kty, "EC") == 0 && crv != NULL && strcmp(crv, "P-384") == 0;
	if (strcmp(alg, "RS256") == 0)
		return strcmp(kty, "RSA") == 0;
	if (strcmp(alg, "EdDSA") == 0)
		return strcmp(kty, "OKP") == 0 && crv != NULL && strcmp(crv, "Ed25519") == 0;
	return 0;
}

static int
alg_supported(const char *alg)
{
	return strcmp(alg, "ES256") == 0 || strcmp(alg, "ES384") == 0 ||
	       strcmp(alg, "RS256") == 0 || strcmp(alg, "EdDSA") == 0;
}

EVP_PKEY *
acme_jwk_to_key(const json_t *jwk, const char *alg, struct ac_err *err)
{
	const char *kty = header_string(jwk, "kty"), *crv = header_string(jwk, "crv");

	if (!json_is_object(jwk) || kty == NULL) {
		ac_err_set(err, AC_ERR_INVALID, "badPublicKey", "the JWK has no \"kty\"");
		return NULL;
	}
	if (alg != NULL && !alg_supported(alg)) {
		ac_err_set(err, AC_ERR_INVALID, "badSignatureAlgorithm",
		           "the algorithm is not one of " ACME_ALGS);
		return NULL;
	}
	if (alg != NULL && !alg_suits(alg, kty, crv)) {
		ac_err_set(err, AC_ERR_INVALID, "badSignatureAlgorithm",
		           "the algorithm does not suit the key (ES256: P-256, ES384: P-384, "
		           "RS256: RSA, EdDSA: Ed25519)");
		return NULL;
	}
	if (strcmp(kty, "EC") == 0 && crv != NULL)
		return ec_key(jwk, crv, err);
	if (strcmp(kty, "RSA") == 0)
		return rsa_key(jwk, err);
	if (strcmp(kty, "OKP") == 0 && crv != NULL)
		return ed25519_key(jwk, crv, err);
	ac_err_set(err, AC_ERR_INVALID, "badPublicKey",
	           "the JWK is not an EC, RSA or OKP public key");
	return NULL;
}

/* A member as it may appear in the canonical text: a base64url or curve name string. */
static const char *
canonical_member(const json_t *jwk, const char *key)
{
	const char *v = header_string(jwk, key);

	if (v == NULL || *v == '\0' || strlen(v) > JWK_MEMBER_MAX)
		return NULL;
	for (const char *p = v; *p != '\0'; p++)
		if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
		      (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
			return NULL;
	return v;
}

char *
acme_jwk_canonical(const json_t *jwk, struct ac_err *err)
{
	const char *kty = header_string(jwk, "kty");
	const char *a = NULL, *b = NULL, *c = NULL;
	char *out = NULL;
	int n = -1;

	if (kty == NULL)
		goto bad;
	if (strcmp(kty, "EC") == 0) {
		a = canonical_member(jwk, "crv");
		b = canonical_member(jwk, "x");
		c = canonical_member(jwk, "y");
		if (a == NULL || b == NULL || c == NULL)
			goto bad;
		n = asprintf(&out, "{\"crv\":\"%s\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", a,
		             b, c);
	} else if (strcmp(kty, "RSA") == 0) {
		a = canonical_member(jwk, "e");
		b = canonical_member(jwk, "n");
		if (a == NULL || b == NULL)
			goto bad;
		n = asprintf(&out, "{\"e\":\"%s\",\"kty\":\"RSA\",\"n\":\"%s\"}", a, b);
	} else if (strcmp(kty, "OKP") == 0) {
		a = canonical_member(jwk, "crv");
		b = canonical_member(jwk, "x");
		if (a == NULL || b == NULL)
			goto bad;
		n = asprintf(&out, "{\"crv\":\"%s\",\"kty\":\"OKP\",\"x\":\"%s\"}", a, b);
	} else {
		goto bad;
	}
	if (n < 0) {
		ac_err_set(err, AC_ERR_INTERNAL, "serverInternal", "out of memory");
		return NULL;
	}
	return out;
bad:
	ac_err_set(err, AC_ERR_INVALID, "badPublicKey",
	           "the JWK lacks the members of its key type (RFC 7638)");
	return NULL;
}

int
acme_jwk_thumbprint(const json_t *jwk, char out[ACME_THUMBPRINT_LEN + 1], struct ac_err *err)
{
	unsigned char digest[32];
	char *text = acme_jwk_canonical(jwk, err);

	if (text == NULL)
		return -1;
	if (EVP_Digest(text, strlen(text), digest, NULL, EVP_sha256(), NULL) != 1) {
		free(text);
		return ac_err_ssl(err, AC_ERR_CRYPTO, "serverInternal", "SHA-256 failed");
	}
	free(text);
	return base64url_encode(digest, sizeof(digest), out, ACME_THUMBPRINT_LEN + 1);
}

/* r || s (2 * n bytes) as a DER ECDSA-Sig-Value; heap. */
static unsigned char *
ecdsa_raw_to_der(const unsigned char *raw, size_t n, int *der_len)
{
	ECDSA_SIG *sig = ECDSA_SIG_new();
	BIGNUM *r = BN_bin2bn(raw, (int)n, NULL), *s = BN_bin2bn(raw + n, (int)n, NULL);
	unsigned char *der = NULL;

	*der_len = 0;
	if (sig == NULL || r == NULL || s == NULL || ECDSA_SIG_set0(sig, r, s) != 1) {
		BN_free(r);
		BN_free(s);
		ECDSA_SIG_free(sig);
		return NULL;
	}
	*der_len = i2d_ECDSA_SIG(sig, &der);
	ECDSA_SIG_free(sig);
	if (*der_len <= 0) {
		OPENSSL_free(der);
		return NULL;
	}
	return der;
}

/* SHA-256 and SHA-384 fetched once: EVP_sha256() and a digest-verify context fetch the
 * algorithm again on every use. */
static EVP_MD *fetched_sha256, *fetched_sha384;
static pthread_once_t fetched_once = PTHREAD_ONCE_INIT;

static void
fetch_digests(void)
{
	fetched_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	fetched_sha384 = EVP_MD_fetch(NULL, "SHA384", NULL);
}

/* ES256/ES384: hash the signing input with the digest fetched once, then verify the DER
 * signature over the hash (ECDSA signs the hash; no padding or digest parameter to set).
 * This is what EVP_DigestVerify does, without setting up a digest context inside the
 * signature provider for every request. */
static int
ecdsa_verify_prehashed(const struct acme_jws *jws, EVP_PKEY *key, size_t half,
                       const unsigned char *der, size_t der_len, struct ac_err *err)
{
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int digest_len = 0;
	EVP_PKEY_CTX *pctx = NULL;
	const EVP_MD *md;
	int rc = -1;

	pthread_once(&fetched_once, fetch_digests);
	md = half == 48 ? fetched_sha384 : fetched_sha256;
	if (md == NULL || EVP_Digest(jws->signing_input, jws->signing_input_len, digest,
	                             &digest_len, md, NULL) != 1) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "serverInternal", "cannot hash the JWS");
		goto out;
	}
	if ((pctx = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL)) == NULL ||
	    EVP_PKEY_verify_init(pctx) != 1) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "serverInternal", "cannot set up verification");
		goto out;
	}
	if (EVP_PKEY_verify(pctx, der, der_len, digest, digest_len) != 1) {
		ERR_clear_error();
		ac_err_set(err, AC_ERR_INVALID, "malformed",
		           "the JWS signature does not verify with the account key");
		goto out;
	}
	rc = 0;
out:
	EVP_PKEY_CTX_free(pctx);
	return rc;
}

int
acme_jws_verify(const struct acme_jws *jws, EVP_PKEY *key, struct ac_err *err)
{
	const EVP_MD *md = NULL;
	EVP_MD_CTX *ctx = NULL;
	unsigned char *der = NULL;
	const unsigned char *sig = jws->signature;
	size_t sig_len = jws->signature_len, half = 0;
	int der_len = 0, rc = -1;

	if (!alg_supported(jws->alg)) {
		ac_err_set(err, AC_ERR_INVALID, "badSignatureAlgorithm",
		           "the algorithm is not one of " ACME_ALGS);
		goto out;
	}
	if (strcmp(jws->alg, "ES256") == 0)
		half = 32;
	else if (strcmp(jws->alg, "ES384") == 0)
		half = 48;
	else if (strcmp(jws->alg, "RS256") == 0)
		md = EVP_sha256();
	if ((strcmp(jws->alg, "ES256") == 0 && !EVP_PKEY_is_a(key, "EC")) ||
	    (strcmp(jws->alg, "ES384") == 0 && !EVP_PKEY_is_a(key, "EC")) ||
	    (strcmp(jws->alg, "RS256") == 0 && !EVP_PKEY_is_a(key, "RSA")) ||
	    (strcmp(jws->alg, "EdDSA") == 0 && !EVP_PKEY_is_a(key, "ED25519"))) {
		ac_err_set(err, AC_ERR_INVALID, "badSignatureAlgorithm",
		           "the algorithm does not suit the account key");
		goto out;
	}
	if (half != 0 && (size_t)EVP_PKEY_get_bits(key) != half * 8) {
		ac_err_set(err, AC_ERR_INVALID, "badSignatureAlgorithm",
		           "the algorithm does not suit the account key's curve");
		goto out;
	}
	if (half != 0) {
		if (sig_len != 2 * half) {
			ac_err_set(err, AC_ERR_INVALID, "malformed",
			           "the signature is not r || s of the key's size");
			goto out;
		}
		if ((der = ecdsa_raw_to_der(sig, half, &der_len)) == NULL) {
			ac_err_ssl(err, AC_ERR_INTERNAL, "serverInternal", "out of memory");
			goto out;
		}
		rc = ecdsa_verify_prehashed(jws, key, half, der, (size_t)der_len, err);
		goto out;
	}
	if ((ctx = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestVerifyInit(ctx, NULL, md, NULL, key) != 1) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "serverInternal", "cannot set up verification");
		goto out;
	}
	if (EVP_DigestVerify(ctx, sig, sig_len, (const unsigned char *)jws->signing_input,
	                     jws->signing_input_len) != 1) {
		ERR_clear_error();
		ac_err_set(err, AC_ERR_INVALID, "malformed",
		           "the JWS signature does not verify with the account key");
		goto out;
	}
	rc = 0;
out:
	EVP_MD_CTX_free(ctx);
	OPENSSL_free(der);
	return rc;
}

int
acme_jws_verify_hmac(const struct acme_jws *jws, const unsigned char *mac_key, size_t mac_key_len,
                     struct ac_err *err)
{
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int mac_len = 0;
	const EVP_MD *md;

	if (strcmp(jws->alg, "HS256") == 0)
		md = EVP_sha256();
	else if (strcmp(jws->alg, "HS384") == 0)
		md = EVP_sha384();
	else if (strcmp(jws->alg, "HS512") == 0)
		md = EVP_sha512();
	else
		return ac_err_set(err, AC_ERR_INVALID, "badSignatureAlgorithm",
		                  "an external account binding is signed with HS256, HS384 or "
		                  "HS512");
	if (HMAC(md, mac_key, (int)mac_key_len, (const unsigned char *)jws->signing_input,
	         jws->signing_input_len, mac, &mac_len) == NULL)
		return ac_err_ssl(err, AC_ERR_CRYPTO, "serverInternal", "HMAC failed");
	if (mac_len != jws->signature_len || CRYPTO_memcmp(mac, jws->signature, mac_len) != 0)
		return ac_err_set(err, AC_ERR_INVALID, "unauthorized",
		                  "the external account binding's MAC does not verify");
	return 0;
}

/* A BIGNUM or octet parameter of key as base64url of exactly width bytes (0: as is). */
static json_t *
b64_param(EVP_PKEY *key, const char *name, size_t width)
{
	unsigned char buf[1024];
	BIGNUM *bn = NULL;
	char *text = NULL;
	json_t *out = NULL;
	int n;

	if (EVP_PKEY_get_bn_param(key, name, &bn) != 1)
		return NULL;
	n = width != 0 ? BN_bn2binpad(bn, buf, (int)width) : BN_bn2bin(bn, buf);
	if (n > 0 && (size_t)n <= sizeof(buf) && (text = base64url_encode_alloc(buf, (size_t)n)))
		out = json_string(text);
	free(text);
	BN_free(bn);
	return out;
}

json_t *
acme_jwk_from_key(EVP_PKEY *key, const char **alg, struct ac_err *err)
{
	json_t *jwk = NULL;

	if (EVP_PKEY_is_a(key, "EC")) {
		int bits = EVP_PKEY_get_bits(key);
		size_t n = bits == 384 ? 48 : 32;

		*alg = bits == 384 ? "ES384" : "ES256";
		jwk = json_pack("{s:s, s:s, s:o?, s:o?}", "kty", "EC", "crv",
		                bits == 384 ? "P-384" : "P-256", "x",
		                b64_param(key, OSSL_PKEY_PARAM_EC_PUB_X, n), "y",
		                b64_param(key, OSSL_PKEY_PARAM_EC_PUB_Y, n));
	} else if (EVP_PKEY_is_a(key, "RSA")) {
		*alg = "RS256";
		jwk = json_pack("{s:s, s:o?, s:o?}", "kty", "RSA", "n",
		                b64_param(key, OSSL_PKEY_PARAM_RSA_N, 0), "e",
		                b64_param(key, OSSL_PKEY_PARAM_RSA_E, 0));
	} else if (EVP_PKEY_is_a(key, "ED25519")) {
		unsigned char raw[32];
		size_t len = sizeof(raw);
		char x[BASE64URL_LEN(32) + 1];

		*alg = "EdDSA";
		if (EVP_PKEY_get_raw_public_key(key, raw, &len) == 1 &&
		    base64url_encode(raw, len, x, sizeof(x)) == 0)
			jwk = json_pack("{s:s, s:s, s:s}", "kty", "OKP", "crv", "Ed25519", "x", x);
	}
	if (jwk == NULL || json_object_size(jwk) < 3 ||
	    (json_object_get(jwk, "kty") != NULL && json_object_get(jwk, "x") == NULL &&
	     json_object_get(jwk, "n") == NULL)) {
		json_decref(jwk);
		ac_err_ssl(err, AC_ERR_INVALID, "badPublicKey", "cannot express the key as a JWK");
		return NULL;
	}
	return jwk;
}

/* A DER ECDSA signature as r || s of n bytes each into out. */
static int
ecdsa_der_to_raw(const unsigned char *der, size_t len, size_t n, unsigned char *out)
{
	ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &der, (long)len);
	int rc = -1;

	if (sig != NULL && BN_bn2binpad(ECDSA_SIG_get0_r(sig), out, (int)n) == (int)n &&
	    BN_bn2binpad(ECDSA_SIG_get0_s(sig), out + n, (int)n) == (int)n)
		rc = 0;
	ECDSA_SIG_free(sig);
	return rc;
}

json_t *
acme_jws_sign(EVP_PKEY *key, const unsigned char *mac_key, size_t mac_key_len, const char *alg,
              const json_t *header, const char *payload, struct ac_err *err)
{
	json_t *prot = json_deep_copy(header), *out = NULL;
	char *prot_text = NULL, *prot_b64 = NULL, *payload_b64 = NULL, *input = NULL;
	char *sig_b64 = NULL;
	unsigned char sig[1024], raw[96];
	size_t sig_len = sizeof(sig);
	unsigned int mac_len = 0;
	EVP_MD_CTX *ctx = NULL;
	const EVP_MD *md = NULL;

	if (prot == NULL || json_object_set_new(prot, "alg", json_string(alg)) != 0 ||
	    (prot_text = json_dumps(prot, JSON_COMPACT)) == NULL ||
	    (prot_b64 = base64url_encode_alloc((const unsigned char *)prot_text,
	                                       strlen(prot_text))) == NULL ||
	    (payload_b64 = base64url_encode_alloc((const unsigned char *)(payload ? payload : ""),
	                                          payload ? strlen(payload) : 0)) == NULL ||
	    asprintf(&input, "%s.%s", prot_b64, payload_b64) < 0) {
		input = NULL;
		ac_err_set(err, AC_ERR_INTERNAL, "serverInternal", "out of memory");
		goto out;
	}
	if (strncmp(alg, "HS", 2) == 0) {
		md = strcmp(alg, "HS384") == 0   ? EVP_sha384()
		     : strcmp(alg, "HS512") == 0 ? EVP_sha512()
		                                 : EVP_sha256();
		if (HMAC(md, mac_key, (int)mac_key_len, (const unsigned char *)input, strlen(input),
		         sig, &mac_len) == NULL) {
			ac_err_ssl(err, AC_ERR_CRYPTO, "serverInternal", "HMAC failed");
			goto out;
		}
		sig_len = mac_len;
	} else {
		if (strcmp(alg, "ES384") == 0)
			md = EVP_sha384();
		else if (strcmp(alg, "EdDSA") != 0)
			md = EVP_sha256();
		if ((ctx = EVP_MD_CTX_new()) == NULL ||
		    EVP_DigestSignInit(ctx, NULL, md, NULL, key) != 1 ||
		    EVP_DigestSign(ctx, sig, &sig_len, (const unsigned char *)input,
		                   strlen(input)) != 1) {
			ac_err_ssl(err, AC_ERR_CRYPTO, "serverInternal", "signing failed");
			goto out;
		}
		if (strncmp(alg, "ES", 2) == 0) {
			size_t n = strcmp(alg, "ES384") == 0 ? 48 : 32;

			if (ecdsa_der_to_raw(sig, sig_len, n, raw) != 0) {
				ac_err_set(err, AC_ERR_CRYPTO, "serverInternal",
				           "bad ECDSA signature");
				goto out;
			}
			memcpy(sig, raw, 2 * n);
			sig_len = 2 * n;
		}
	}
	if ((sig_b64 = base64url_encode_alloc(sig, sig_len)) == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "serverInternal", "out of memory");
		goto out;
	}
	out = json_pack("{s:s, s:s, s:s}", "protected", prot_b64, "payload", payload_b64,
	                "signature", sig_b64);
out:
	EVP_MD_CTX_free(ctx);
	free(sig_b64);
	free(input);
	free(payload_b64);
	free(prot_b64);
	free(prot_text);
	json_decref(prot);
	return out;
}
