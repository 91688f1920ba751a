/*
 * acme_jws.h - JSON Web Signatures as ACME uses them (RFC 8555 section 6.2, RFC 7515 and
 * RFC 7517): the flattened JSON serialization only, one signature, a protected header with
 * "alg", "nonce", "url" and exactly one of "jwk" or "kid"; JWK public keys (EC P-256/P-384,
 * RSA >= 2048, Ed25519), their RFC 7638 thumbprints, and the HMAC of an external account
 * binding (RFC 8555 section 7.3.4).
 *
 * Everything here reads bytes from outside: sizes are bounded before anything is decoded,
 * and every failure is an ac_err whose reason is an RFC 8555 error type without its
 * "urn:ietf:params:acme:error:" prefix ("malformed", "badSignatureAlgorithm",
 * "badPublicKey", "unauthorized"), ready for a problem document.
 */
#ifndef AGENTCA_ENROLLMENT_ACME_JWS_H
#define AGENTCA_ENROLLMENT_ACME_JWS_H

#include <stddef.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "common/error.h"

#define ACME_JWS_MAX 65536     /* a whole JWS body, bytes */
#define ACME_THUMBPRINT_LEN 43 /* base64url of a SHA-256 */
#define ACME_ALGS "ES256 ES384 RS256 EdDSA"

/* A parsed, not yet verified, JWS. Every pointer is owned by it: acme_jws_free(). */
struct acme_jws {
	json_t *header;    /* the decoded protected header (an object) */
	const char *alg;   /* members of header, borrowed from it */
	const char *nonce; /* NULL when absent (allowed only inside an EAB or keyChange) */
	const char *url;
	const char *kid; /* exactly one of kid and jwk */
	json_t *jwk;
	unsigned char *payload; /* decoded payload, NUL-terminated; "" for POST-as-GET */
	size_t payload_len;
	int post_as_get;     /* the payload was the empty string */
	char *signing_input; /* protected "." payload, as sent */
	size_t signing_input_len;
	unsigned char *signature;
	size_t signature_len;
};

/* Parse the flattened JSON serialization in body[0..len) (a JSON text) or, with doc set, an
 * already parsed object (the inner JWS of keyChange or an EAB). Checks the shape and the
 * header rules; verifies nothing. */
int acme_jws_parse(const char *body, size_t len, struct acme_jws *out, struct ac_err *err);
int acme_jws_parse_json(const json_t *doc, struct acme_jws *out, struct ac_err *err);
void acme_jws_free(struct acme_jws *jws);

/* A JWK (an object) as a public key; alg, when not NULL, must suit it. */
EVP_PKEY *acme_jwk_to_key(const json_t *jwk, const char *alg, struct ac_err *err);

/* The RFC 7638 thumbprint of a JWK: base64url(SHA-256(canonical members)). */
int acme_jwk_thumbprint(const json_t *jwk, char out[ACME_THUMBPRINT_LEN + 1], struct ac_err *err);

/* The canonical JSON text of a JWK (only its required members, in order); heap. */
char *acme_jwk_canonical(const json_t *jwk, struct ac_err *err);

/* Verify jws's signature with key (whose type must suit jws->alg). */
int acme_jws_verify(const struct acme_jws *jws, EVP_PKEY *key, struct ac_err *err);

/* Verify an HS256 signature (an external account binding) with the MAC key. */
int acme_jws_verify_hmac(const struct acme_jws *jws, const unsigned char *mac_key,
                         size_t mac_key_len, struct ac_err *err);

/* The client side, for tests, tools and load generators: the public JWK of a key (EC
 * P-256/P-384, RSA, Ed25519) and its usual alg ("ES256", ...). */
json_t *acme_jwk_from_key(EVP_PKEY *key, const char **alg, struct ac_err *err);

/* Sign header (an object, copied in as the protected header) and payload (NULL: POST-as-GET)
 * with key under alg ("HS256" signs with mac_key instead); the flattened JWS object. */
json_t *acme_jws_sign(EVP_PKEY *key, const unsigned char *mac_key, size_t mac_key_len,
                      const char *alg, const json_t *header, const char *payload,
                      struct ac_err *err);

#endif
