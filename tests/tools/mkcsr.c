/*
 * mkcsr.c - a test tool that makes CSRs the openssl command line cannot: names with
 * embedded NUL bytes, or any number of SANs.
 *
 *   mkcsr OUT.pem KEY.pem [--dns NAME]... [--uri URI]... [--many-dns N SUFFIX]
 *
 * In NAME, the two characters "\0" stand for a NUL byte. The key is generated (P-256) and
 * written unencrypted to KEY.pem.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

static void
fail(const char *what)
{
	fprintf(stderr, "mkcsr: %s failed\n", what);
	exit(1);
}

/* Decode "\0" escapes into raw NUL bytes; returns the length. */
static size_t
unescape(const char *in, unsigned char *out)
{
	size_t n = 0;

	while (*in != '\0') {
		if (in[0] == '\\' && in[1] == '0') {
			out[n++] = '\0';
			in += 2;
		} else {
			out[n++] = (unsigned char)*in++;
		}
	}
	return n;
}

static void
add_name(GENERAL_NAMES *names, int type, const char *text)
{
	unsigned char buf[1024];
	size_t len = unescape(text, buf);
	GENERAL_NAME *gn = GENERAL_NAME_new();
	ASN1_IA5STRING *s = ASN1_IA5STRING_new();

	if (gn == NULL || s == NULL || !ASN1_STRING_set(s, buf, (int)len))
		fail("name");
	GENERAL_NAME_set0_value(gn, type, s);
	if (!sk_GENERAL_NAME_push(names, gn))
		fail("push");
}

int
main(int argc, char **argv)
{
	GENERAL_NAMES *names = sk_GENERAL_NAME_new_null();
	STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
	X509_REQ *req = X509_REQ_new();
	EVP_PKEY *key;
	FILE *fp;

	if (argc < 3) {
		fprintf(stderr, "usage: mkcsr OUT.pem KEY.pem [--dns N]... [--uri U]... "
		                "[--many-dns N SUFFIX]\n");
		return 2;
	}
	key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	if (key == NULL || names == NULL || exts == NULL || req == NULL)
		fail("setup");
	for (int i = 3; i < argc; i++) {
		if (strcmp(argv[i], "--dns") == 0 && i + 1 < argc) {
			add_name(names, GEN_DNS, argv[++i]);
		} else if (strcmp(argv[i], "--uri") == 0 && i + 1 < argc) {
			add_name(names, GEN_URI, argv[++i]);
		} else if (strcmp(argv[i], "--many-dns") == 0 && i + 2 < argc) {
			int count = atoi(argv[i + 1]);
			char name[300];

			for (int k = 0; k < count; k++) {
				snprintf(name, sizeof(name), "n%d.%s", k, argv[i + 2]);
				add_name(names, GEN_DNS, name);
			}
			i += 2;
		} else {
			fprintf(stderr, "mkcsr: bad argument %s\n", argv[i]);
			return 2;
		}
	}
	if (!X509_REQ_set_version(req, 0) || !X509_REQ_set_pubkey(req, key))
		fail("req");
	if (sk_GENERAL_NAME_num(names) > 0) {
		if (!X509V3_add1_i2d(&exts, NID_subject_alt_name, names, 0, X509V3_ADD_DEFAULT) ||
		    !X509_REQ_add_extensions(req, exts))
			fail("extensions");
	}
	if (!X509_REQ_sign(req, key, EVP_sha256()))
		fail("sign");
	fp = fopen(argv[1], "w");
	if (fp == NULL || !PEM_write_X509_REQ(fp, req) || fclose(fp) != 0)
		fail(argv[1]);
	fp = fopen(argv[2], "w");
	if (fp == NULL || !PEM_write_PrivateKey(fp, key, NULL, NULL, 0, NULL, NULL) ||
	    fclose(fp) != 0)
		fail(argv[2]);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	GENERAL_NAMES_free(names);
	X509_REQ_free(req);
	EVP_PKEY_free(key);
	return 0;
}
