/*
 * test_csr.c - reading hostile CSRs: framing, size, signature, and SANs kept byte for byte.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "ca/csr.h"
#include "ca/keys.h"
#include "testutil.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* A requested SAN: a GEN_* type and raw bytes (len 0: strlen). */
struct san_spec {
	int type;
	const char *value;
	size_t len;
};

/* Add one subjectAltName extension request holding sans[0..n). */
static void
add_sans(X509_REQ *req, const struct san_spec *sans, size_t n)
{
	STACK_OF(X509_EXTENSION) *exts = NULL;
	GENERAL_NAMES *gns = sk_GENERAL_NAME_new_null();

	assert_non_null(gns);
	for (size_t i = 0; i < n; i++) {
		GENERAL_NAME *gn = GENERAL_NAME_new();
		ASN1_STRING *s = ASN1_STRING_type_new(
		    sans[i].type == GEN_IPADD ? V_ASN1_OCTET_STRING : V_ASN1_IA5STRING);
		size_t len = sans[i].len != 0 ? sans[i].len : strlen(sans[i].value);

		assert_non_null(gn);
		assert_non_null(s);
		assert_int_equal(ASN1_STRING_set(s, sans[i].value, (int)len), 1);
		GENERAL_NAME_set0_value(gn, sans[i].type, s);
		assert_true(sk_GENERAL_NAME_push(gns, gn) > 0);
	}
	assert_int_equal(X509V3_add1_i2d(&exts, NID_subject_alt_name, gns, 0, X509V3_ADD_APPEND),
	                 1);
	assert_int_equal(X509_REQ_add_extensions(req, exts), 1);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	GENERAL_NAMES_free(gns);
}

/* A signed request for key with the given SANs (none when n is 0). */
static X509_REQ *
make_req(EVP_PKEY *key, const struct san_spec *sans, size_t n)
{
	X509_REQ *req = X509_REQ_new();
	const EVP_MD *md = EVP_PKEY_is_a(key, "ED25519") ? NULL : EVP_sha256();

	assert_non_null(req);
	assert_int_equal(X509_REQ_set_version(req, X509_REQ_VERSION_1), 1);
	assert_int_equal(X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(req), "CN",
	                                            MBSTRING_ASC, (const unsigned char *)"test", -1,
	                                            -1, 0),
	                 1);
	assert_int_equal(X509_REQ_set_pubkey(req, key), 1);
	if (n > 0)
		add_sans(req, sans, n);
	assert_true(X509_REQ_sign(req, key, md) > 0);
	return req;
}

static unsigned char *
req_der(X509_REQ *req, size_t *len)
{
	unsigned char *der = NULL;
	int n = i2d_X509_REQ(req, &der);

	assert_true(n > 0);
	*len = (size_t)n;
	return der;
}

/* PEM as a heap string (free()). */
static char *
req_pem(X509_REQ *req)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *data, *copy;
	long n;

	assert_non_null(bio);
	assert_int_equal(PEM_write_bio_X509_REQ(bio, req), 1);
	n = BIO_get_mem_data(bio, &data);
	copy = strndup(data, (size_t)n);
	assert_non_null(copy);
	BIO_free(bio);
	return copy;
}

static EVP_PKEY *p256;

static int
group_setup(void **state)
{
	(void)state;
	p256 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	return p256 == NULL ? -1 : 0;
}

static int
group_teardown(void **state)
{
	(void)state;
	EVP_PKEY_free(p256);
	return 0;
}

/* Expect csr_parse to refuse data with reason, and a message containing msg_part. */
static void
expect_refused(const void *data, size_t len, const char *reason, const char *msg_part)
{
	struct csr *csr = (struct csr *)1;
	struct ac_err err;

	ac_err_clear(&err);
	assert_int_equal(csr_parse(data, len, &csr, &err), -1);
	assert_null(csr);
	assert_string_equal(err.reason, reason);
	if (msg_part != NULL && strstr(err.msg, msg_part) == NULL)
		fail_msg("message \"%s\" lacks \"%s\"", err.msg, msg_part);
}

/* One input that csr_parse must refuse as csr_malformed. */
struct framing_case {
	const void *data;
	size_t len;
	const char *msg_part; /* NULL: any message */
};

static void
test_framing_table(void **state)
{
	static const char bad_b64[] = "-----BEGIN CERTIFICATE REQUEST-----\n!!!!\n"
	                              "-----END CERTIFICATE REQUEST-----\n";
	X509_REQ *req = make_req(p256, NULL, 0);
	char *pem = req_pem(req), *two = NULL, *cert_pem = NULL, *with_trailer = NULL, *truncated,
	     *spaced = NULL;
	size_t der_len, pem_len = strlen(pem);
	unsigned char *der = req_der(req, &der_len), *der_plus;
	char *big;
	struct framing_case cases[16];
	size_t n = 0;

	(void)state;
	if (asprintf(&two, "%s%s", pem, pem) < 0 ||
	    asprintf(&with_trailer, "%sgarbage\n", pem) < 0 ||
	    asprintf(&spaced, "\n\n  %s\n\n", pem) < 0 ||
	    asprintf(&cert_pem, "-----BEGIN CERTIFICATE-----\n%.*s-----END CERTIFICATE-----\n",
	             (int)(strstr(pem, "-----END") - strchr(pem, '\n') - 1),
	             strchr(pem, '\n') + 1) < 0)
		fail();
	truncated = strndup(pem, pem_len / 2);
	der_plus = malloc(der_len + 1);
	big = malloc(CSR_MAX_BYTES + 2);
	assert_non_null(truncated);
	assert_non_null(der_plus);
	assert_non_null(big);
	memcpy(der_plus, der, der_len);
	der_plus[der_len] = 0;
	memset(big, ' ', CSR_MAX_BYTES + 1);
	memcpy(big, pem, pem_len);

	cases[n++] = (struct framing_case){"hello, world", 12, "not PEM or DER"};
	cases[n++] = (struct framing_case){"", 0, "empty"};
	cases[n++] = (struct framing_case){truncated, strlen(truncated), "truncated"};
	cases[n++] = (struct framing_case){two, strlen(two), "more than one"};
	cases[n++] = (struct framing_case){with_trailer, strlen(with_trailer), "trailing"};
	cases[n++] = (struct framing_case){der_plus, der_len + 1, "trailing"};
	cases[n++] = (struct framing_case){der, der_len - 1, NULL};
	cases[n++] = (struct framing_case){"\x30\x03\x02\x01\x00", 5, NULL};
	cases[n++] = (struct framing_case){cert_pem, strlen(cert_pem), "CERTIFICATE"};
	cases[n++] = (struct framing_case){big, CSR_MAX_BYTES + 1, "at most"};
	cases[n++] = (struct framing_case){bad_b64, strlen(bad_b64), NULL};
	for (size_t i = 0; i < n; i++)
		expect_refused(cases[i].data, cases[i].len, "csr_malformed", cases[i].msg_part);

	/* PEM with whitespace around it, and plain DER, are fine. */
	{
		struct csr *csr = NULL;
		struct ac_err err;

		ac_err_clear(&err);
		assert_int_equal(csr_parse((unsigned char *)spaced, strlen(spaced), &csr, &err), 0);
		assert_non_null(csr->key);
		assert_int_equal(csr->san_count, 0);
		csr_free(csr);
		csr = NULL;
		assert_int_equal(csr_parse(der, der_len, &csr, &err), 0);
		assert_int_equal(EVP_PKEY_eq(csr->key, p256), 1);
		csr_free(csr);
	}

	free(big);
	free(der_plus);
	free(truncated);
	free(cert_pem);
	free(spaced);
	free(with_trailer);
	free(two);
	OPENSSL_free(der);
	free(pem);
	X509_REQ_free(req);
}

/* pem with its base64 body rewrapped at width characters per line, lines ending in eol. */
static char *
rewrap(const char *pem, size_t width, const char *eol)
{
	const char *body = strchr(pem, '\n') + 1, *end = strstr(pem, "-----END");
	char *b64 = malloc(strlen(pem) + 1), *out = malloc(strlen(pem) * 2 + 64), *o;
	size_t n = 0;

	assert_non_null(b64);
	assert_non_null(out);
	for (const char *p = body; p < end; p++)
		if (*p != '\n' && *p != '\r')
			b64[n++] = *p;
	o = out + sprintf(out, "-----BEGIN CERTIFICATE REQUEST-----%s", eol);
	for (size_t i = 0; i < n; i += width) {
		size_t k = n - i < width ? n - i : width;

		memcpy(o, b64 + i, k);
		o += k;
		o += sprintf(o, "%s", eol);
	}
	sprintf(o, "-----END CERTIFICATE REQUEST-----%s", eol);
	free(b64);
	return out;
}

/*
 * Common PEM is decoded without OpenSSL's PEM reader, anything unusual with it: both must
 * read the same request. 64-character lines with LF or CRLF and 40-character lines take the
 * fast path; 96-character lines (longer than PEM allows) go through OpenSSL's reader,
 * which accepts them.
 */
static void
test_pem_forms_agree(void **state)
{
	X509_REQ *req = make_req(p256, NULL, 0);
	char *pem = req_pem(req);
	char *forms[] = {
	    strdup(pem),
	    rewrap(pem, 64, "\r\n"),
	    rewrap(pem, 40, "\n"),
	    rewrap(pem, 96, "\n"),
	};
	char want[65] = "";
	size_t der_len;
	unsigned char *der = req_der(req, &der_len);
	struct csr *csr = NULL;
	struct ac_err err;

	(void)state;
	ac_err_clear(&err);
	assert_int_equal(csr_parse(der, der_len, &csr, &err), 0);
	memcpy(want, csr->spki_sha256, sizeof(want));
	csr_free(csr);
	for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
		csr = NULL;
		ac_err_clear(&err);
		if (csr_parse((unsigned char *)forms[i], strlen(forms[i]), &csr, &err) != 0)
			fail_msg("form %zu refused: %s", i, err.msg);
		assert_string_equal(csr->spki_sha256, want);
		assert_int_equal(EVP_PKEY_eq(csr->key, p256), 1);
		assert_int_equal(csr->spki_der_len, (size_t)i2d_PUBKEY(p256, NULL));
		csr_free(csr);
		free(forms[i]);
	}
	OPENSSL_free(der);
	free(pem);
	X509_REQ_free(req);
}

static void
test_new_certificate_request_label(void **state)
{
	X509_REQ *req = make_req(p256, NULL, 0);
	char *pem = req_pem(req), *relabeled;
	const char *body = strchr(pem, '\n') + 1;
	size_t body_len = (size_t)(strstr(pem, "-----END") - body);
	struct csr *csr = NULL;
	struct ac_err err;

	(void)state;
	if (asprintf(&relabeled,
	             "-----BEGIN NEW CERTIFICATE REQUEST-----\n%.*s"
	             "-----END NEW CERTIFICATE REQUEST-----\n",
	             (int)body_len, body) < 0)
		fail();
	ac_err_clear(&err);
	assert_int_equal(csr_parse((unsigned char *)relabeled, strlen(relabeled), &csr, &err), 0);
	csr_free(csr);
	free(relabeled);
	free(pem);
	X509_REQ_free(req);
}

/* Flip the last byte (inside the signature) of a request signed with each key type. */
static void
test_bad_signature(void **state)
{
	static const char *const types[] = {"P-256", "ED25519", "RSA"};

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(types); i++) {
		EVP_PKEY *key = i == 0   ? EVP_PKEY_dup(p256)
		                : i == 1 ? EVP_PKEY_Q_keygen(NULL, NULL, "ED25519")
		                         : EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
		X509_REQ *req;
		unsigned char *der;
		size_t len;
		char *pem;
		X509_REQ *bad;
		const unsigned char *p;

		assert_non_null(key);
		req = make_req(key, NULL, 0);
		der = req_der(req, &len);
		der[len - 1] ^= 0x01;
		expect_refused(der, len, "csr_bad_signature", "signature");

		/* The same through PEM. */
		p = der;
		bad = d2i_X509_REQ(NULL, &p, (long)len);
		assert_non_null(bad);
		pem = req_pem(bad);
		expect_refused(pem, strlen(pem), "csr_bad_signature", NULL);

		free(pem);
		X509_REQ_free(bad);
		OPENSSL_free(der);
		X509_REQ_free(req);
		EVP_PKEY_free(key);
	}
}

static void
test_sans_kept_with_length(void **state)
{
	static const unsigned char v4[4] = {10, 0, 0, 1};
	static const unsigned char v6[16] = {0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
	const struct san_spec sans[] = {
	    {GEN_URI, "spiffe://corp.internal/gw-1", 0}, {GEN_DNS, "gw\0.corp.internal", 17},
	    {GEN_DNS, "gw-1.corp.internal", 0},          {GEN_IPADD, (const char *)v4, 4},
	    {GEN_IPADD, (const char *)v6, 16},           {GEN_EMAIL, "root@corp.internal", 0},
	};
	static const enum csr_san_type want[] = {CSR_SAN_URI, CSR_SAN_DNS, CSR_SAN_DNS,
	                                         CSR_SAN_IP,  CSR_SAN_IP,  CSR_SAN_OTHER};
	X509_REQ *req = make_req(p256, sans, ARRAY_LEN(sans));
	char *pem = req_pem(req);
	struct csr *csr = NULL;
	struct ac_err err;

	(void)state;
	ac_err_clear(&err);
	assert_int_equal(csr_parse((unsigned char *)pem, strlen(pem), &csr, &err), 0);
	assert_int_equal(csr->san_count, ARRAY_LEN(sans));
	for (size_t i = 0; i < ARRAY_LEN(want); i++)
		assert_int_equal(csr->sans[i].type, want[i]);
	assert_int_equal(csr->sans[0].len, 27);
	assert_memory_equal(csr->sans[0].value, "spiffe://corp.internal/gw-1", 28);
	/* The NUL stays inside, and the length counts past it. */
	assert_int_equal(csr->sans[1].len, 17);
	assert_memory_equal(csr->sans[1].value, "gw\0.corp.internal", 18);
	assert_int_equal(strlen((char *)csr->sans[1].value), 2);
	assert_int_equal(csr->sans[3].len, 4);
	assert_memory_equal(csr->sans[3].value, v4, 4);
	assert_int_equal(csr->sans[4].len, 16);
	assert_memory_equal(csr->sans[4].value, v6, 16);
	assert_string_equal((char *)csr->sans[5].value, "email");
	csr_free(csr);
	csr_free(NULL);
	free(pem);
	X509_REQ_free(req);
}

static void
test_too_many_sans(void **state)
{
	const size_t n = CSR_MAX_SANS_PARSED + 1;
	struct san_spec *sans = calloc(n, sizeof(*sans));
	X509_REQ *req;
	unsigned char *der;
	size_t len;

	(void)state;
	assert_non_null(sans);
	for (size_t i = 0; i < n; i++)
		sans[i] = (struct san_spec){GEN_DNS, "a.b", 0};
	req = make_req(p256, sans, n);
	der = req_der(req, &len);
	assert_true(len <= CSR_MAX_BYTES);
	expect_refused(der, len, "too_many_sans", "4097");
	OPENSSL_free(der);
	X509_REQ_free(req);
	free(sans);
}

static void
test_two_san_extensions(void **state)
{
	const struct san_spec a[] = {{GEN_DNS, "a.corp.internal", 0}};
	X509_REQ *req = X509_REQ_new();
	STACK_OF(X509_EXTENSION) *exts = NULL;
	GENERAL_NAMES *gns = sk_GENERAL_NAME_new_null();
	GENERAL_NAME *gn = GENERAL_NAME_new();
	ASN1_IA5STRING *s = ASN1_IA5STRING_new();
	unsigned char *der;
	size_t len;

	(void)state;
	assert_int_equal(ASN1_STRING_set(s, a[0].value, -1), 1);
	GENERAL_NAME_set0_value(gn, GEN_DNS, s);
	assert_true(sk_GENERAL_NAME_push(gns, gn) > 0);
	assert_int_equal(X509V3_add1_i2d(&exts, NID_subject_alt_name, gns, 0, X509V3_ADD_APPEND),
	                 1);
	assert_int_equal(X509V3_add1_i2d(&exts, NID_subject_alt_name, gns, 0, X509V3_ADD_APPEND),
	                 1);
	assert_int_equal(X509_REQ_set_version(req, X509_REQ_VERSION_1), 1);
	assert_int_equal(X509_REQ_set_pubkey(req, p256), 1);
	assert_int_equal(X509_REQ_add_extensions(req, exts), 1);
	assert_true(X509_REQ_sign(req, p256, EVP_sha256()) > 0);
	der = req_der(req, &len);
	expect_refused(der, len, "csr_malformed", "twice");
	OPENSSL_free(der);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	GENERAL_NAMES_free(gns);
	X509_REQ_free(req);
}

/* The key's hash is that of its SubjectPublicKeyInfo, as key_spki_sha256 computes it, and
 * the key copied into a certificate is the request's key. */
static void
test_key_hash_and_copy(void **state)
{
	EVP_PKEY *keys[] = {EVP_PKEY_dup(p256), EVP_PKEY_Q_keygen(NULL, NULL, "ED25519"),
	                    EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048),
	                    EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384")};

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(keys); i++) {
		X509_REQ *req;
		unsigned char *der;
		size_t len;
		struct csr *csr = NULL;
		struct ac_err err;
		char want[65];
		unsigned char *want_spki = NULL, *got_spki = NULL;
		int want_len, got_len;
		X509 *cert = X509_new();

		assert_non_null(keys[i]);
		assert_non_null(cert);
		req = make_req(keys[i], NULL, 0);
		der = req_der(req, &len);
		ac_err_clear(&err);
		assert_int_equal(csr_parse(der, len, &csr, &err), 0);
		assert_int_equal(EVP_PKEY_eq(csr->key, keys[i]), 1);
		assert_int_equal(key_spki_sha256(keys[i], want, &err), 0);
		assert_string_equal(csr->spki_sha256, want);
		assert_int_equal(csr_copy_pubkey(csr, cert, &err), 0);
		/* The certificate's SubjectPublicKeyInfo is byte for byte the key's. */
		want_len = i2d_PUBKEY(keys[i], &want_spki);
		got_len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &got_spki);
		assert_true(want_len > 0);
		assert_int_equal(got_len, want_len);
		assert_memory_equal(got_spki, want_spki, (size_t)want_len);
		OPENSSL_free(got_spki);
		OPENSSL_free(want_spki);
		X509_free(cert);
		csr_free(csr);
		OPENSSL_free(der);
		X509_REQ_free(req);
		EVP_PKEY_free(keys[i]);
	}
}

/* A request signed by one key that carries another is refused. */
static void
test_signed_by_another_key(void **state)
{
	EVP_PKEY *other = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	X509_REQ *req = make_req(p256, NULL, 0);
	unsigned char *der;
	size_t len;

	(void)state;
	assert_non_null(other);
	assert_int_equal(X509_REQ_set_pubkey(req, other), 1);
	der = req_der(req, &len);
	expect_refused(der, len, "csr_bad_signature", NULL);
	OPENSSL_free(der);
	X509_REQ_free(req);
	EVP_PKEY_free(other);
}

/* The EC keys and verify contexts a thread reuses from one request to the next: requests
 * from different keys and curves, good and badly signed, in turn on one thread, each
 * decided on its own key; two requests alive at once each keep their own key. */
static void
test_reused_verifiers(void **state)
{
	static const char *const curves[] = {"P-256", "P-384"};
	struct csr *kept = NULL, *csr = NULL;
	EVP_PKEY *first = NULL;
	struct ac_err err;

	(void)state;
	for (int round = 0; round < 12; round++) {
		EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", curves[round % 2]);
		EVP_PKEY *other = EVP_PKEY_Q_keygen(NULL, NULL, "EC", curves[round % 2]);
		X509_REQ *req;
		unsigned char *der;
		size_t len;

		assert_non_null(key);
		assert_non_null(other);
		req = make_req(key, NULL, 0);
		der = req_der(req, &len);
		ac_err_clear(&err);
		assert_int_equal(csr_parse(der, len, &csr, &err), 0);
		assert_int_equal(EVP_PKEY_eq(csr->key, key), 1);
		if (round == 0) {
			kept = csr; /* stays alive while the others are parsed */
			first = EVP_PKEY_dup(key);
			assert_non_null(first);
		} else {
			csr_free(csr);
		}
		csr = NULL;
		OPENSSL_free(der);

		/* Signed by key, carrying other's public key: refused. */
		assert_int_equal(X509_REQ_set_pubkey(req, other), 1);
		der = req_der(req, &len);
		expect_refused(der, len, "csr_bad_signature", NULL);
		OPENSSL_free(der);

		/* A flipped signature byte: refused. */
		X509_REQ_free(req);
		req = make_req(other, NULL, 0);
		der = req_der(req, &len);
		der[len - 1] ^= 0x01;
		expect_refused(der, len, "csr_bad_signature", NULL);
		OPENSSL_free(der);

		X509_REQ_free(req);
		EVP_PKEY_free(other);
		EVP_PKEY_free(key);
	}
	assert_non_null(kept);
	assert_int_equal(EVP_PKEY_eq(kept->key, first), 1);
	csr_free(kept);
	EVP_PKEY_free(first);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_framing_table),
	    cmocka_unit_test(test_pem_forms_agree),
	    cmocka_unit_test(test_new_certificate_request_label),
	    cmocka_unit_test(test_bad_signature),
	    cmocka_unit_test(test_sans_kept_with_length),
	    cmocka_unit_test(test_too_many_sans),
	    cmocka_unit_test(test_two_san_extensions),
	    cmocka_unit_test(test_key_hash_and_copy),
	    cmocka_unit_test(test_signed_by_another_key),
	    cmocka_unit_test(test_reused_verifiers),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
