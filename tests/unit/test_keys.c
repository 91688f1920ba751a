/*
 * test_keys.c - ca/keys.c and ca/x509_build.c: key generation for every type, encrypted
 * storage (mode, PEM header, round trip), refusal of wrong passphrases and exposed files,
 * passphrase resolution order, and the certificate-building helpers (serials, validity,
 * extensions, PEM in and out).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <cmocka.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "ca/keys.h"
#include "ca/x509_build.h"
#include "common/fsutil.h"
#include "testutil.h"

#define PASS "correct horse battery staple"

/* Join dir and name into a static-sized buffer owned by the caller. */
static void
join(char *buf, size_t len, const char *dir, const char *name)
{
	assert_int_equal(path_join(buf, len, dir, name, NULL), 0);
}

/* Write text to path with mode. */
static void
write_text(const char *path, const char *text, mode_t mode)
{
	assert_int_equal(atomic_write_file(path, text, strlen(text), mode, NULL), 0);
}

/* The file's permission bits. */
static unsigned
file_mode(const char *path)
{
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	return (unsigned)(st.st_mode & 07777);
}

/* The whole file as a heap string. */
static char *
slurp(const char *path)
{
	char *data = NULL;

	assert_int_equal(read_file(path, 1 << 20, &data, NULL, NULL), 0);
	return data;
}

/* A self-signed certificate for key, built with the x509_build helpers. */
static X509 *
self_signed(EVP_PKEY *key)
{
	struct ac_err err;
	X509_NAME *name;
	X509 *cert;
	char serial[41];
	int64_t now = (int64_t)time(NULL);

	ac_err_clear(&err);
	cert = X509_new();
	assert_non_null(cert);
	assert_int_equal(X509_set_version(cert, X509_VERSION_3), 1);
	name = x509_name_make("test", "Test Org", &err);
	assert_non_null(name);
	assert_int_equal(X509_set_subject_name(cert, name), 1);
	assert_int_equal(X509_set_issuer_name(cert, name), 1);
	X509_NAME_free(name);
	assert_int_equal(X509_set_pubkey(cert, key), 1);
	assert_int_equal(x509_set_random_serial(cert, serial, &err), 0);
	assert_int_equal(x509_set_validity(cert, now - 60, now + 3600, &err), 0);
	assert_int_equal(
	    x509_add_ext_text(cert, cert, NID_basic_constraints, "critical,CA:TRUE", &err), 0);
	assert_int_equal(x509_add_ext_text(cert, cert, NID_subject_key_identifier, "hash", &err),
	                 0);
	assert_int_equal(
	    x509_add_ext_text(cert, cert, NID_authority_key_identifier, "keyid:always", &err), 0);
	assert_int_equal(x509_sign(cert, key, key_sign_digest(key), &err), 0);
	return cert;
}

static void
test_key_type_names(void **state)
{
	static const char *const names[] = {"p256", "p384", "rsa3072", "ed25519"};
	enum key_type t;

	(void)state;
	for (size_t i = 0; i < 4; i++) {
		assert_int_equal(key_type_parse(names[i], &t), 0);
		assert_string_equal(key_type_name(t), names[i]);
	}
	assert_int_equal(key_type_parse("rsa1024", &t), -1);
	assert_int_equal(key_type_parse("", &t), -1);
	assert_int_equal(key_type_parse(NULL, &t), -1);
}

static void
test_generate_every_type(void **state)
{
	struct ac_err err;
	EVP_PKEY *key;

	(void)state;
	ac_err_clear(&err);
	key = key_generate(KEY_EC_P256, &err);
	assert_non_null(key);
	assert_true(EVP_PKEY_is_a(key, "EC"));
	assert_int_equal(EVP_PKEY_get_bits(key), 256);
	assert_ptr_equal(key_sign_digest(key), EVP_sha256());
	EVP_PKEY_free(key);

	key = key_generate(KEY_EC_P384, &err);
	assert_non_null(key);
	assert_int_equal(EVP_PKEY_get_bits(key), 384);
	assert_ptr_equal(key_sign_digest(key), EVP_sha384());
	EVP_PKEY_free(key);

	key = key_generate(KEY_RSA_3072, &err);
	assert_non_null(key);
	assert_true(EVP_PKEY_is_a(key, "RSA"));
	assert_int_equal(EVP_PKEY_get_bits(key), 3072);
	assert_ptr_equal(key_sign_digest(key), EVP_sha256());
	EVP_PKEY_free(key);

	key = key_generate(KEY_ED25519, &err);
	assert_non_null(key);
	assert_true(EVP_PKEY_is_a(key, "ED25519"));
	assert_null(key_sign_digest(key));
	EVP_PKEY_free(key);

	key = key_generate((enum key_type)42, &err);
	assert_null(key);
	assert_string_equal(err.reason, "key_type_unknown");
}

static void
test_encrypted_round_trip(void **state)
{
	char *dir = test_tmpdir("keys"), path[4096], *pem;
	struct ac_err err;
	EVP_PKEY *key, *loaded;

	(void)state;
	ac_err_clear(&err);
	join(path, sizeof(path), dir, "k.key");
	key = key_generate(KEY_EC_P256, &err);
	assert_non_null(key);
	assert_int_equal(key_write_encrypted(path, key, PASS, &err), 0);
	assert_int_equal(file_mode(path), 0600);
	pem = slurp(path);
	assert_non_null(strstr(pem, "-----BEGIN ENCRYPTED PRIVATE KEY-----"));
	assert_null(strstr(pem, "BEGIN PRIVATE KEY"));
	assert_null(strstr(pem, PASS));
	free(pem);

	loaded = key_load(path, PASS, &err);
	assert_non_null(loaded);
	assert_int_equal(EVP_PKEY_eq(key, loaded), 1);
	EVP_PKEY_free(loaded);

	/* An empty passphrase would be no protection: refused. */
	assert_int_equal(key_write_encrypted(path, key, "", &err), -1);
	assert_string_equal(err.reason, "passphrase_invalid");
	EVP_PKEY_free(key);
	test_rmdir(dir);
}

static void
test_wrong_passphrase(void **state)
{
	char *dir = test_tmpdir("keys"), path[4096];
	struct ac_err err;
	EVP_PKEY *key;

	(void)state;
	ac_err_clear(&err);
	join(path, sizeof(path), dir, "k.key");
	key = key_generate(KEY_ED25519, &err);
	assert_int_equal(key_write_encrypted(path, key, PASS, &err), 0);
	EVP_PKEY_free(key);

	assert_null(key_load(path, "not the passphrase", &err));
	assert_int_equal(err.code, AC_ERR_POLICY);
	assert_string_equal(err.reason, "bad_passphrase");
	assert_non_null(strstr(err.msg, path));
	assert_non_null(strstr(err.msg, "passphrase is wrong"));
	assert_null(strstr(err.msg, "not the passphrase"));
	assert_null(strstr(err.msg, PASS));

	ac_err_clear(&err);
	assert_null(key_load(path, NULL, &err));
	assert_string_equal(err.reason, "passphrase_required");
	test_rmdir(dir);
}

static void
test_exposed_key_refused(void **state)
{
	char *dir = test_tmpdir("keys"), path[4096];
	struct ac_err err;
	EVP_PKEY *key;

	(void)state;
	ac_err_clear(&err);
	join(path, sizeof(path), dir, "k.key");
	key = key_generate(KEY_EC_P256, &err);
	assert_int_equal(key_write_encrypted(path, key, PASS, &err), 0);
	EVP_PKEY_free(key);
	assert_int_equal(chmod(path, 0644), 0);
	assert_null(key_load(path, PASS, &err));
	assert_int_equal(err.code, AC_ERR_POLICY);
	assert_string_equal(err.reason, "key_file_exposed");
	assert_non_null(strstr(err.msg, "chmod 600"));

	ac_err_clear(&err);
	join(path, sizeof(path), dir, "missing.key");
	assert_null(key_load(path, PASS, &err));
	assert_int_equal(err.code, AC_ERR_NOTFOUND);
	test_rmdir(dir);
}

static void
test_plain_key_and_garbage(void **state)
{
	char *dir = test_tmpdir("keys"), path[4096], *pem;
	struct ac_err err;
	EVP_PKEY *key, *loaded;

	(void)state;
	ac_err_clear(&err);
	join(path, sizeof(path), dir, "leaf.key");
	key = key_generate(KEY_EC_P384, &err);
	assert_int_equal(key_write_plain(path, key, &err), 0);
	assert_int_equal(file_mode(path), 0600);
	pem = slurp(path);
	assert_non_null(strstr(pem, "-----BEGIN PRIVATE KEY-----"));
	free(pem);
	loaded = key_load(path, NULL, &err);
	assert_non_null(loaded);
	assert_int_equal(EVP_PKEY_eq(key, loaded), 1);
	EVP_PKEY_free(loaded);
	EVP_PKEY_free(key);

	join(path, sizeof(path), dir, "junk.key");
	write_text(path, "-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n",
	           0600);
	assert_null(key_load(path, PASS, &err));
	assert_int_equal(err.code, AC_ERR_INVALID);
	assert_string_equal(err.reason, "key_unreadable");
	test_rmdir(dir);
}

static void
test_passphrase_resolve_order(void **state)
{
	char *dir = test_tmpdir("pass"), file[4096], dirpass[4096], out[PASSPHRASE_MAX + 1];
	struct ac_err err;

	(void)state;
	unsetenv("AGENTCA_PASSWORD");
	join(file, sizeof(file), dir, "given");
	join(dirpass, sizeof(dirpass), dir, "password");

	/* Nothing anywhere. */
	ac_err_clear(&err);
	assert_int_equal(passphrase_resolve(dir, NULL, out, sizeof(out), &err), -1);
	assert_int_equal(err.code, AC_ERR_NOTFOUND);
	assert_string_equal(err.reason, "no_passphrase");

	/* DIR/password, with one CRLF stripped. */
	write_text(dirpass, "from-dir\r\n", 0600);
	ac_err_clear(&err);
	assert_int_equal(passphrase_resolve(dir, NULL, out, sizeof(out), &err), 0);
	assert_string_equal(out, "from-dir");

	/* The environment wins over DIR/password. */
	setenv("AGENTCA_PASSWORD", "from-env", 1);
	assert_int_equal(passphrase_resolve(dir, NULL, out, sizeof(out), &err), 0);
	assert_string_equal(out, "from-env");

	/* An explicit file wins over both; only one newline is stripped. */
	write_text(file, "from-file\n\n", 0600);
	assert_int_equal(passphrase_resolve(dir, file, out, sizeof(out), &err), 0);
	assert_string_equal(out, "from-file\n");

	/* Empty is refused, from a file and from the environment. */
	write_text(file, "\n", 0600);
	assert_int_equal(passphrase_resolve(dir, file, out, sizeof(out), &err), -1);
	assert_string_equal(err.reason, "passphrase_empty");
	setenv("AGENTCA_PASSWORD", "", 1);
	ac_err_clear(&err);
	assert_int_equal(passphrase_resolve(dir, NULL, out, sizeof(out), &err), -1);
	assert_string_equal(err.reason, "passphrase_empty");
	unsetenv("AGENTCA_PASSWORD");

	/* A password file others can read is refused. */
	write_text(file, "secret\n", 0644);
	ac_err_clear(&err);
	assert_int_equal(passphrase_resolve(dir, file, out, sizeof(out), &err), -1);
	assert_string_equal(err.reason, "key_file_exposed");
	assert_null(strstr(err.msg, "secret"));

	/* An explicit file that is missing does not fall through to DIR/password. */
	join(file, sizeof(file), dir, "missing");
	ac_err_clear(&err);
	assert_int_equal(passphrase_resolve(dir, file, out, sizeof(out), &err), -1);
	assert_int_equal(err.code, AC_ERR_NOTFOUND);
	test_rmdir(dir);
}

static void
test_passphrase_create(void **state)
{
	char *dir = test_tmpdir("pass"), path[4096], made[PASSPHRASE_MAX + 1];
	char again[PASSPHRASE_MAX + 1];
	struct ac_err err;

	(void)state;
	unsetenv("AGENTCA_PASSWORD");
	ac_err_clear(&err);
	join(path, sizeof(path), dir, "password");
	assert_int_equal(passphrase_create(path, made, sizeof(made), &err), 0);
	assert_int_equal(file_mode(path), 0600);
	assert_int_equal(strlen(made), 43);
	for (size_t i = 0; made[i] != '\0'; i++)
		assert_non_null(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
		                       "0123456789-_",
		                       made[i]));
	assert_int_equal(passphrase_resolve(dir, NULL, again, sizeof(again), &err), 0);
	assert_string_equal(made, again);
	passphrase_wipe(made, sizeof(made));
	assert_int_equal(made[0], 0);
	test_rmdir(dir);
}

static void
test_spki_and_cert_match(void **state)
{
	char a[65], b[65];
	struct ac_err err;
	EVP_PKEY *key, *other;
	X509 *cert;

	(void)state;
	ac_err_clear(&err);
	key = key_generate(KEY_EC_P256, &err);
	other = key_generate(KEY_EC_P256, &err);
	cert = self_signed(key);
	assert_int_equal(key_matches_cert(key, cert), 1);
	assert_int_equal(key_matches_cert(other, cert), 0);
	assert_int_equal(key_matches_cert(NULL, cert), 0);

	assert_int_equal(key_spki_sha256(key, a, &err), 0);
	assert_int_equal(strlen(a), 64);
	assert_int_equal(key_spki_sha256(X509_get0_pubkey(cert), b, &err), 0);
	assert_string_equal(a, b);
	assert_int_equal(key_spki_sha256(other, b, &err), 0);
	assert_string_not_equal(a, b);
	X509_free(cert);
	EVP_PKEY_free(other);
	EVP_PKEY_free(key);
}

/* cert_spki_sha256 hashes the certificate's own SPKI bytes, parsed back from DER as a peer's
 * certificate is, and agrees with key_spki_sha256 of the key for every key type. */
static void
test_cert_spki_sha256(void **state)
{
	const enum key_type types[] = {KEY_EC_P256, KEY_EC_P384, KEY_RSA_3072, KEY_ED25519};
	struct ac_err err;

	(void)state;
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		char want[65], got[65];
		unsigned char *der = NULL;
		const unsigned char *p;
		EVP_PKEY *key;
		X509 *built, *parsed;
		int len;

		ac_err_clear(&err);
		key = key_generate(types[i], &err);
		assert_non_null(key);
		built = self_signed(key);
		len = i2d_X509(built, &der);
		assert_true(len > 0);
		p = der;
		parsed = d2i_X509(NULL, &p, len);
		assert_non_null(parsed);
		assert_int_equal(key_spki_sha256(key, want, &err), 0);
		assert_int_equal(cert_spki_sha256(parsed, got, &err), 0);
		assert_int_equal(strlen(got), 64);
		assert_string_equal(got, want);
		X509_free(parsed);
		OPENSSL_free(der);
		X509_free(built);
		EVP_PKEY_free(key);
	}
	ac_err_clear(&err);
	assert_int_equal(cert_spki_sha256(NULL, (char[65]){0}, &err), -1);
	assert_string_equal(err.reason, "cert_bad_key");
}

static void
test_random_serial(void **state)
{
	char hex[41], prev[41] = "";
	struct ac_err err;
	X509 *cert;

	(void)state;
	ac_err_clear(&err);
	for (int i = 0; i < 200; i++) {
		const ASN1_INTEGER *serial;

		cert = X509_new();
		assert_int_equal(x509_set_random_serial(cert, hex, &err), 0);
		serial = X509_get0_serialNumber(cert);
		assert_int_equal(ASN1_STRING_length(serial), 16);
		assert_int_not_equal(ASN1_STRING_get0_data(serial)[0], 0);
		assert_true(ASN1_STRING_get0_data(serial)[0] < 0x80);
		assert_int_equal(ASN1_STRING_type(serial), V_ASN1_INTEGER);
		assert_int_equal(strlen(hex), 32);
		assert_int_equal(strspn(hex, "0123456789abcdef"), 32);
		assert_string_not_equal(hex, prev);
		strcpy(prev, hex);
		X509_free(cert);
	}
}

static void
test_validity_and_time(void **state)
{
	struct ac_err err;
	X509 *cert = X509_new();

	(void)state;
	ac_err_clear(&err);
	assert_int_equal(x509_set_validity(cert, 1700000000, 2700000000LL, &err), 0);
	assert_int_equal(asn1_time_to_unix(X509_get0_notBefore(cert)), 1700000000);
	/* After 2049 RFC 5280 wants GeneralizedTime. */
	assert_int_equal(asn1_time_to_unix(X509_get0_notAfter(cert)), 2700000000LL);
	assert_int_equal(ASN1_STRING_type(X509_get0_notAfter(cert)), V_ASN1_GENERALIZEDTIME);
	assert_int_equal(x509_set_validity(cert, 10, 10, &err), -1);
	assert_string_equal(err.reason, "validity_invalid");
	assert_int_equal(asn1_time_to_unix(NULL), 0);
	X509_free(cert);
}

static void
test_extensions_and_names(void **state)
{
	struct ac_err err;
	X509_EXTENSION *ext;
	EVP_PKEY *key;
	X509 *cert;
	char buf[256];

	(void)state;
	ac_err_clear(&err);
	key = key_generate(KEY_EC_P256, &err);
	cert = self_signed(key);
	ext = X509_get_ext(cert, X509_get_ext_by_NID(cert, NID_basic_constraints, -1));
	assert_non_null(ext);
	assert_int_equal(X509_EXTENSION_get_critical(ext), 1);
	assert_true(X509_get_ext_by_NID(cert, NID_authority_key_identifier, -1) >= 0);
	X509_NAME_oneline(X509_get_subject_name(cert), buf, sizeof(buf));
	assert_string_equal(buf, "/O=Test Org/CN=test");
	assert_int_equal(X509_verify(cert, key), 1);

	assert_int_equal(x509_add_ext_text(cert, cert, NID_key_usage, "critical,noSuchUsage", &err),
	                 -1);
	assert_string_equal(err.reason, "cert_build_failed");
	X509_free(cert);
	EVP_PKEY_free(key);

	/* An over-long CN is refused, not truncated. */
	memset(buf, 'a', 100);
	buf[100] = '\0';
	ac_err_clear(&err);
	assert_null(x509_name_make(buf, NULL, &err));
	assert_string_equal(err.reason, "name_invalid");
}

static void
test_pem_in_and_out(void **state)
{
	char *dir = test_tmpdir("pem"), path[4096], *pem, *two;
	STACK_OF(X509) *certs;
	struct ac_err err;
	EVP_PKEY *key;
	X509 *cert;
	size_t len;

	(void)state;
	ac_err_clear(&err);
	key = key_generate(KEY_ED25519, &err);
	cert = self_signed(key);
	pem = x509_to_pem(cert, &len, &err);
	assert_non_null(pem);
	assert_int_equal(strlen(pem), len);
	assert_int_equal(strncmp(pem, "-----BEGIN CERTIFICATE-----\n", 28), 0);

	join(path, sizeof(path), dir, "two.pem");
	assert_true(asprintf(&two, "%s%s", pem, pem) > 0);
	write_text(path, two, 0644);
	certs = x509_read_pem_file(path, &err);
	assert_non_null(certs);
	assert_int_equal(sk_X509_num(certs), 2);
	assert_int_equal(X509_cmp(sk_X509_value(certs, 1), cert), 0);
	sk_X509_pop_free(certs, X509_free);
	free(two);

	join(path, sizeof(path), dir, "empty.pem");
	write_text(path, "", 0644);
	assert_null(x509_read_pem_file(path, &err));
	assert_int_equal(err.code, AC_ERR_INVALID);

	ac_err_clear(&err);
	join(path, sizeof(path), dir, "broken.pem");
	assert_true(asprintf(&two,
	                     "%s-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
	                     pem) > 0);
	write_text(path, two, 0644);
	assert_null(x509_read_pem_file(path, &err));
	assert_int_equal(err.code, AC_ERR_INVALID);
	assert_non_null(strstr(err.msg, "certificate 2"));
	free(two);

	free(pem);
	X509_free(cert);
	EVP_PKEY_free(key);
	test_rmdir(dir);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_key_type_names),
	    cmocka_unit_test(test_generate_every_type),
	    cmocka_unit_test(test_encrypted_round_trip),
	    cmocka_unit_test(test_wrong_passphrase),
	    cmocka_unit_test(test_exposed_key_refused),
	    cmocka_unit_test(test_plain_key_and_garbage),
	    cmocka_unit_test(test_passphrase_resolve_order),
	    cmocka_unit_test(test_passphrase_create),
	    cmocka_unit_test(test_spki_and_cert_match),
	    cmocka_unit_test(test_cert_spki_sha256),
	    cmocka_unit_test(test_random_serial),
	    cmocka_unit_test(test_validity_and_time),
	    cmocka_unit_test(test_extensions_and_names),
	    cmocka_unit_test(test_pem_in_and_out),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
