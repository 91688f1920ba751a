/*
 * test_acme_jws.c - enrollment/acme_jws.c, acme_nonce.c and common/base64url.c: JWS round
 * trips for every algorithm ACME accepts, the RFC 7638 thumbprint vector, refusals (a
 * tampered payload, another key, alg confusion, an unsupported alg, jwk and kid together,
 * no url, truncated bodies), EAB HMACs, and nonces that work exactly once.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/evp.h>

#include "common/base64url.h"
#include "enrollment/acme_jws.h"
#include "enrollment/acme_nonce.h"

static EVP_PKEY *
make_key(const char *which)
{
	if (strcmp(which, "P-256") == 0)
		return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	if (strcmp(which, "P-384") == 0)
		return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
	if (strcmp(which, "RSA") == 0)
		return EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	return EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
}

/* Sign {"nonce","url","jwk"} + payload with key; the JWS as text. */
static char *
signed_body(EVP_PKEY *key, const char *alg_override, const char *payload)
{
	struct ac_err err;
	const char *alg = NULL;
	json_t *jwk, *hdr, *jws;
	char *text;

	ac_err_clear(&err);
	jwk = acme_jwk_from_key(key, &alg, &err);
	assert_non_null(jwk);
	hdr = json_pack("{s:s, s:s, s:o}", "nonce", "n", "url", "https://ca/acme/new-account",
	                "jwk", jwk);
	jws = acme_jws_sign(key, NULL, 0, alg_override ? alg_override : alg, hdr, payload, &err);
	assert_non_null(jws);
	text = json_dumps(jws, JSON_COMPACT);
	json_decref(jws);
	json_decref(hdr);
	return text;
}

static void
round_trip(const char *which)
{
	EVP_PKEY *key = make_key(which), *pub = NULL;
	struct acme_jws jws;
	struct ac_err err;
	char *body = signed_body(key, NULL, "{\"termsOfServiceAgreed\":true}");
	char tp[ACME_THUMBPRINT_LEN + 1];

	ac_err_clear(&err);
	assert_int_equal(acme_jws_parse(body, strlen(body), &jws, &err), 0);
	assert_string_equal(jws.url, "https://ca/acme/new-account");
	assert_false(jws.post_as_get);
	pub = acme_jwk_to_key(jws.jwk, jws.alg, &err);
	assert_non_null(pub);
	assert_int_equal(acme_jws_verify(&jws, pub, &err), 0);
	assert_int_equal(acme_jwk_thumbprint(jws.jwk, tp, &err), 0);
	assert_int_equal(strlen(tp), ACME_THUMBPRINT_LEN);
	/* The payload changed after signing: the signature no longer verifies. */
	jws.signing_input[jws.signing_input_len - 1] ^= 1;
	assert_int_equal(acme_jws_verify(&jws, pub, &err), -1);
	assert_string_equal(err.reason, "malformed");
	acme_jws_free(&jws);
	EVP_PKEY_free(pub);
	free(body);
	EVP_PKEY_free(key);
}

static void
test_round_trips(void **state)
{
	(void)state;
	round_trip("P-256");
	round_trip("P-384");
	round_trip("RSA");
	round_trip("Ed25519");
}

/* RFC 7638 section 3.1's example key and thumbprint. */
static void
test_thumbprint_vector(void **state)
{
	const char *jwk_text =
	    "{\"kty\":\"RSA\",\"n\":\"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAt"
	    "VT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl9"
	    "3lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5"
	    "hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1"
	    "jF44-csFCur-kEgU8awapJzKnqDKgw\",\"e\":\"AQAB\",\"alg\":\"RS256\",\"kid\":\"2011-04-29"
	    "\"}";
	json_t *jwk = json_loads(jwk_text, 0, NULL);
	char tp[ACME_THUMBPRINT_LEN + 1];
	struct ac_err err;

	(void)state;
	ac_err_clear(&err);
	assert_non_null(jwk);
	assert_int_equal(acme_jwk_thumbprint(jwk, tp, &err), 0);
	assert_string_equal(tp, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
	json_decref(jwk);
}

static void
test_other_key_refused(void **state)
{
	EVP_PKEY *key = make_key("P-256"), *other = make_key("P-256");
	struct acme_jws jws;
	struct ac_err err;
	char *body = signed_body(key, NULL, "{}");

	(void)state;
	ac_err_clear(&err);
	assert_int_equal(acme_jws_parse(body, strlen(body), &jws, &err), 0);
	assert_int_equal(acme_jws_verify(&jws, other, &err), -1);
	assert_string_equal(err.reason, "malformed");
	acme_jws_free(&jws);
	free(body);
	EVP_PKEY_free(key);
	EVP_PKEY_free(other);
}

static void
test_alg_refusals(void **state)
{
	EVP_PKEY *key = make_key("P-256"), *pub;
	struct acme_jws jws;
	struct ac_err err;
	char *body;

	(void)state;
	/* An EC key claimed as ES384: the JWK does not suit the alg. */
	body = signed_body(key, "ES256", "{}");
	ac_err_clear(&err);
	assert_int_equal(acme_jws_parse(body, strlen(body), &jws, &err), 0);
	pub = acme_jwk_to_key(jws.jwk, "ES384", &err);
	assert_null(pub);
	assert_string_equal(err.reason, "badSignatureAlgorithm");
	ac_err_clear(&err);
	assert_null(acme_jwk_to_key(jws.jwk, "none", &err));
	assert_string_equal(err.reason, "badSignatureAlgorithm");
	ac_err_clear(&err);
	assert_null(acme_jwk_to_key(jws.jwk, "HS256", &err));
	assert_string_equal(err.reason, "badSignatureAlgorithm");
	acme_jws_free(&jws);
	free(body);
	EVP_PKEY_free(key);
}

static void
expect_parse_refusal(const char *body, const char *reason)
{
	struct acme_jws jws;
	struct ac_err err;

	ac_err_clear(&err);
	assert_int_equal(acme_jws_parse(body, body ? strlen(body) : 0, &jws, &err), -1);
	assert_string_equal(err.reason, reason);
}

static void
test_shape_refusals(void **state)
{
	EVP_PKEY *key = make_key("P-256");
	char *body = signed_body(key, NULL, "{}");
	char *big = malloc(ACME_JWS_MAX + 2);

	(void)state;
	expect_parse_refusal(NULL, "malformed");
	expect_parse_refusal("[]", "malformed");
	expect_parse_refusal("{\"protected\":\"e30\",\"payload\":\"\"}", "malformed");
	/* truncated halfway */
	body[strlen(body) / 2] = '\0';
	expect_parse_refusal(body, "malformed");
	/* {} as header: no alg */
	expect_parse_refusal("{\"protected\":\"e30\",\"payload\":\"\",\"signature\":\"AA\"}",
	                     "malformed");
	/* {"alg":"ES256"}: no url */
	expect_parse_refusal("{\"protected\":\"eyJhbGciOiJFUzI1NiJ9\",\"payload\":\"\","
	                     "\"signature\":\"AA\"}",
	                     "unauthorized");
	/* {"alg":"ES256","url":"u","kid":"k","jwk":{}}: both kid and jwk */
	expect_parse_refusal(
	    "{\"protected\":\"eyJhbGciOiJFUzI1NiIsInVybCI6InUiLCJraWQiOiJrIiwiandrIjp7fX0\","
	    "\"payload\":\"\",\"signature\":\"AA\"}",
	    "malformed");
	/* Too large before anything is parsed. */
	memset(big, ' ', ACME_JWS_MAX + 1);
	big[ACME_JWS_MAX + 1] = '\0';
	expect_parse_refusal(big, "malformed");
	free(big);
	free(body);
	EVP_PKEY_free(key);
}

/* body with its first occurrence of from replaced by to; heap. */
static char *
replaced(const char *body, const char *from, const char *to)
{
	const char *at = strstr(body, from);
	size_t head, len;
	char *out;

	assert_non_null(at);
	head = (size_t)(at - body);
	len = strlen(body) - strlen(from) + strlen(to);
	out = malloc(len + 1);
	assert_non_null(out);
	memcpy(out, body, head);
	memcpy(out + head, to, strlen(to));
	strcpy(out + head + strlen(to), at + strlen(from));
	return out;
}

/* A body parses, and means the same as the compact original. */
static void
expect_same_parse(const char *body, const struct acme_jws *want)
{
	struct acme_jws jws;
	struct ac_err err;

	ac_err_clear(&err);
	assert_int_equal(acme_jws_parse(body, strlen(body), &jws, &err), 0);
	assert_string_equal(jws.signing_input, want->signing_input);
	assert_int_equal(jws.signature_len, want->signature_len);
	assert_memory_equal(jws.signature, want->signature, want->signature_len);
	assert_int_equal(jws.payload_len, want->payload_len);
	assert_string_equal(jws.url, want->url);
	acme_jws_free(&jws);
}

/* acme_jws_parse takes the usual body apart in place and hands every other shape to
 * jansson: both must accept and refuse the same bodies. */
static void
test_flat_and_full_parsers_agree(void **state)
{
	EVP_PKEY *key = make_key("P-256");
	char *body = signed_body(key, NULL, "{}"), *other;
	struct acme_jws want;
	struct ac_err err;

	(void)state;
	ac_err_clear(&err);
	assert_int_equal(acme_jws_parse(body, strlen(body), &want, &err), 0);
	/* Whitespace between tokens and around the object (fast path). */
	other = replaced(body, "\",\"", "\" ,\n\t\"");
	expect_same_parse(other, &want);
	free(other);
	/* An escaped character inside a member (full parser): the same JWS. */
	other = replaced(body, "\"protected\":\"e", "\"protected\":\"\\u0065");
	expect_same_parse(other, &want);
	free(other);
	/* An extra member is ignored, as jansson's path always did. */
	other = replaced(body, "{", "{\"extra\":1,");
	expect_same_parse(other, &want);
	free(other);
	/* A duplicate member, an unprotected header, text after the object: refused. */
	other = replaced(body, "{", "{\"payload\":\"\",");
	expect_parse_refusal(other, "malformed");
	free(other);
	other = replaced(body, "{", "{\"header\":{},");
	expect_parse_refusal(other, "malformed");
	free(other);
	other = replaced(body, "}", "}x");
	expect_parse_refusal(other, "malformed");
	free(other);
	/* A member that is not base64url; a missing member. */
	other = replaced(body, "\"signature\":\"", "\"signature\":\"*");
	expect_parse_refusal(other, "malformed");
	free(other);
	expect_parse_refusal("{\"protected\":\"e30\",\"payload\":\"\",\"payload\":\"\"}",
	                     "malformed");
	acme_jws_free(&want);
	free(body);
	EVP_PKEY_free(key);
}

static void
test_eab_hmac(void **state)
{
	const unsigned char mac_key[32] = {1, 2, 3};
	const unsigned char wrong[32] = {9};
	json_t *hdr = json_pack("{s:s, s:s}", "kid", "kid-1", "url", "https://ca/acme/new-account");
	struct ac_err err;
	struct acme_jws jws;
	json_t *signed_doc;

	(void)state;
	ac_err_clear(&err);
	signed_doc =
	    acme_jws_sign(NULL, mac_key, sizeof(mac_key), "HS256", hdr, "{\"kty\":\"EC\"}", &err);
	assert_non_null(signed_doc);
	assert_int_equal(acme_jws_parse_json(signed_doc, &jws, &err), 0);
	assert_int_equal(acme_jws_verify_hmac(&jws, mac_key, sizeof(mac_key), &err), 0);
	assert_int_equal(acme_jws_verify_hmac(&jws, wrong, sizeof(wrong), &err), -1);
	assert_string_equal(err.reason, "unauthorized");
	acme_jws_free(&jws);
	json_decref(signed_doc);
	json_decref(hdr);
}

static void
test_nonces_once(void **state)
{
	struct ac_err err;
	struct acme_nonces *n = acme_nonces_new(&err);
	char a[ACME_NONCE_LEN + 1], b[ACME_NONCE_LEN + 1], forged[ACME_NONCE_LEN + 1];

	(void)state;
	ac_err_clear(&err);
	assert_non_null(n);
	assert_int_equal(acme_nonce_make(n, a), 0);
	assert_int_equal(acme_nonce_make(n, b), 0);
	assert_string_not_equal(a, b);
	assert_int_equal(acme_nonce_redeem(n, b, &err), 0);
	assert_int_equal(acme_nonce_redeem(n, a, &err), 0);
	ac_err_clear(&err);
	assert_int_equal(acme_nonce_redeem(n, a, &err), -1);
	assert_string_equal(err.reason, "badNonce");
	memcpy(forged, b, sizeof(forged));
	forged[ACME_NONCE_LEN - 3] = forged[ACME_NONCE_LEN - 3] == 'A' ? 'B' : 'A';
	ac_err_clear(&err);
	assert_int_equal(acme_nonce_redeem(n, forged, &err), -1);
	ac_err_clear(&err);
	assert_int_equal(acme_nonce_redeem(n, "short", &err), -1);
	ac_err_clear(&err);
	assert_int_equal(acme_nonce_redeem(n, NULL, &err), -1);
	assert_string_equal(err.reason, "badNonce");
	acme_nonces_free(n);
}

static void
test_base64url(void **state)
{
	unsigned char out[8];
	size_t len = 0;
	char enc[16];

	(void)state;
	assert_int_equal(base64url_encode((const unsigned char *)"\xfb\xff", 2, enc, sizeof(enc)),
	                 0);
	assert_string_equal(enc, "-_8");
	assert_int_equal(base64url_decode("-_8", 3, out, sizeof(out), &len), 0);
	assert_int_equal(len, 2);
	assert_int_equal(base64url_decode("-_9", 3, out, sizeof(out), &len), -1); /* bits */
	assert_int_equal(base64url_decode("-_8=", 4, out, sizeof(out), &len), -1);
	assert_int_equal(base64url_decode("A", 1, out, sizeof(out), &len), -1);
	assert_int_equal(base64url_decode("AAAAAAAAAAAAAAAA", 16, out, sizeof(out), &len), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_round_trips),
	    cmocka_unit_test(test_thumbprint_vector),
	    cmocka_unit_test(test_other_key_refused),
	    cmocka_unit_test(test_alg_refusals),
	    cmocka_unit_test(test_shape_refusals),
	    cmocka_unit_test(test_flat_and_full_parsers_agree),
	    cmocka_unit_test(test_eab_hmac),
	    cmocka_unit_test(test_nonces_once),
	    cmocka_unit_test(test_base64url),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
