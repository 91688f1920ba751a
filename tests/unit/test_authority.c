/*
 * test_authority.c - the CA's own certificates: init (root mode, every key type, offline
 * root, name constraints, refusals), load (wrong passphrase, exposed keys), show, the
 * corporate path (init --csr, a corporate CA made here with OpenSSL signs the CSR, import,
 * and every way an import must be refused), trust add, and the chain served above a leaf
 * of the current, the retiring or an unknown intermediate.
 *
 * Certificates are checked with OpenSSL itself (X509_verify_cert, the extension API), not
 * with the code under test, and name constraints are checked by verifying leaves inside
 * and outside the trust domain.
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
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "ca/authority.h"
#include "ca/x509_build.h"
#include "common/fsutil.h"
#include "testutil.h"

#define TD "corp.internal"
#define DAY 86400

struct ext {
	int nid;
	const char *value;
};

/* DIR/name in a caller's buffer. */
static void
join(char *buf, size_t len, const char *dir, const char *name)
{
	assert_int_equal(path_join(buf, len, dir, name, NULL), 0);
}

static unsigned
file_mode(const char *path)
{
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	return (unsigned)(st.st_mode & 07777);
}

static char *
slurp(const char *path)
{
	char *data = NULL;

	assert_int_equal(read_file(path, 1 << 20, &data, NULL, NULL), 0);
	return data;
}

static void
write_text(const char *path, const char *text, mode_t mode)
{
	assert_int_equal(atomic_write_file(path, text, strlen(text), mode, NULL), 0);
}

/* The first certificate of a PEM file. */
static X509 *
load_cert(const char *dir, const char *name)
{
	char path[4096];
	STACK_OF(X509) *certs;
	X509 *cert;

	join(path, sizeof(path), dir, name);
	certs = x509_read_pem_file(path, NULL);
	assert_non_null(certs);
	cert = sk_X509_shift(certs);
	sk_X509_pop_free(certs, X509_free);
	return cert;
}

/* Write certificates as one PEM file. */
static void
write_certs(const char *path, X509 *a, X509 *b)
{
	char *pa = x509_to_pem(a, NULL, NULL), *pb = b != NULL ? x509_to_pem(b, NULL, NULL) : NULL;
	char *both;

	assert_true(asprintf(&both, "%s%s", pa, pb != NULL ? pb : "") > 0);
	write_text(path, both, 0644);
	free(both);
	free(pb);
	free(pa);
}

/* A certificate for key, issued by issuer/issuer_key (NULL: self-signed), with exts. */
static X509 *
make_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key, int64_t nb, int64_t na,
          const struct ext *exts)
{
	struct ac_err err;
	X509_NAME *name;
	X509 *cert;
	char serial[41];

	ac_err_clear(&err);
	cert = X509_new();
	assert_int_equal(X509_set_version(cert, X509_VERSION_3), 1);
	name = x509_name_make(cn, "Corp", &err);
	assert_non_null(name);
	assert_int_equal(X509_set_subject_name(cert, name), 1);
	assert_int_equal(
	    X509_set_issuer_name(cert, issuer != NULL ? X509_get_subject_name(issuer) : name), 1);
	X509_NAME_free(name);
	assert_int_equal(X509_set_pubkey(cert, key), 1);
	assert_int_equal(x509_set_random_serial(cert, serial, &err), 0);
	assert_int_equal(x509_set_validity(cert, nb, na, &err), 0);
	for (; exts != NULL && exts->nid != 0; exts++)
		assert_int_equal(x509_add_ext_text(cert, issuer != NULL ? issuer : cert, exts->nid,
		                                   exts->value, &err),
		                 0);
	if (issuer_key == NULL)
		issuer_key = key;
	assert_int_equal(x509_sign(cert, issuer_key, key_sign_digest(issuer_key), &err), 0);
	return cert;
}

static const struct ext ca_exts[] = {
    {NID_basic_constraints, "critical,CA:TRUE"},
    {NID_key_usage, "critical,keyCertSign,cRLSign"},
    {NID_subject_key_identifier, "hash"},
    {NID_authority_key_identifier, "keyid:always"},
    {0, NULL},
};

/* A corporate root: a self-signed CA valid from yesterday for ten years. */
static X509 *
make_corp_root(EVP_PKEY **key, const char *cn)
{
	int64_t now = (int64_t)time(NULL);

	*key = key_generate(KEY_EC_P256, NULL);
	assert_non_null(*key);
	return make_cert(*key, cn, NULL, NULL, now - DAY, now + 3650 * DAY, ca_exts);
}

/* Sign a CSR file as a corporate CA would with copy_extensions: the requested extensions
 * are carried over, then SKI/AKI added. copy 0: a plain leaf-like certificate instead. */
static X509 *
sign_csr(const char *csr_path, X509 *ca, EVP_PKEY *ca_key, int64_t nb, int64_t na, int copy)
{
	STACK_OF(X509_EXTENSION) *exts;
	struct ac_err err;
	X509_REQ *req;
	X509 *cert;
	BIO *bio;
	char serial[41];

	ac_err_clear(&err);
	bio = BIO_new_file(csr_path, "r");
	assert_non_null(bio);
	req = PEM_read_bio_X509_REQ(bio, NULL, NULL, NULL);
	BIO_free(bio);
	assert_non_null(req);
	assert_int_equal(X509_REQ_verify(req, X509_REQ_get0_pubkey(req)), 1);
	cert = X509_new();
	assert_int_equal(X509_set_version(cert, X509_VERSION_3), 1);
	assert_int_equal(X509_set_subject_name(cert, X509_REQ_get_subject_name(req)), 1);
	assert_int_equal(X509_set_issuer_name(cert, X509_get_subject_name(ca)), 1);
	assert_int_equal(X509_set_pubkey(cert, X509_REQ_get0_pubkey(req)), 1);
	assert_int_equal(x509_set_random_serial(cert, serial, &err), 0);
	assert_int_equal(x509_set_validity(cert, nb, na, &err), 0);
	if (copy) {
		exts = X509_REQ_get_extensions(req);
		for (int i = 0; i < sk_X509_EXTENSION_num(exts); i++)
			assert_int_equal(X509_add_ext(cert, sk_X509_EXTENSION_value(exts, i), -1),
			                 1);
		sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	} else {
		assert_int_equal(
		    x509_add_ext_text(cert, ca, NID_basic_constraints, "critical,CA:FALSE", &err),
		    0);
		assert_int_equal(
		    x509_add_ext_text(cert, ca, NID_key_usage, "critical,digitalSignature", &err),
		    0);
	}
	assert_int_equal(x509_add_ext_text(cert, ca, NID_subject_key_identifier, "hash", &err), 0);
	assert_int_equal(
	    x509_add_ext_text(cert, ca, NID_authority_key_identifier, "keyid:always", &err), 0);
	assert_int_equal(x509_sign(cert, ca_key, key_sign_digest(ca_key), &err), 0);
	X509_REQ_free(req);
	return cert;
}

/* X509_verify_cert of cert to root through the optional intermediates; the error code. */
static int
verify(X509 *cert, X509 *root, X509 *inter1, X509 *inter2)
{
	X509_STORE *store = X509_STORE_new();
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	STACK_OF(X509) *untrusted = sk_X509_new_null();
	int rc;

	assert_int_equal(X509_STORE_add_cert(store, root), 1);
	if (inter1 != NULL)
		sk_X509_push(untrusted, inter1);
	if (inter2 != NULL)
		sk_X509_push(untrusted, inter2);
	assert_int_equal(X509_STORE_CTX_init(ctx, store, cert, untrusted), 1);
	rc = X509_verify_cert(ctx) == 1 ? X509_V_OK : X509_STORE_CTX_get_error(ctx);
	if (rc == X509_V_OK)
		assert_int_equal(X509_STORE_CTX_get_error(ctx), X509_V_OK);
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	sk_X509_free(untrusted);
	return rc;
}

/* A leaf issued by the intermediate with one SAN, verified to the root. */
static int
verify_leaf_with_san(const char *dir, const char *san)
{
	int64_t now = (int64_t)time(NULL);
	struct ext exts[] = {
	    {NID_basic_constraints, "critical,CA:FALSE"},
	    {NID_key_usage, "critical,digitalSignature"},
	    {NID_subject_alt_name, san},
	    {0, NULL},
	};
	struct ca_authority *ca;
	EVP_PKEY *key;
	X509 *leaf;
	int rc;

	ca = ca_authority_load(dir, NULL, NULL);
	assert_non_null(ca);
	key = key_generate(KEY_EC_P256, NULL);
	leaf = make_cert(key, "leaf", ca->intermediate, ca->intermediate_key, now - 60, now + 3600,
	                 exts);
	rc = verify(leaf, ca->root, ca->intermediate,
	            sk_X509_num(ca->upstream) > 0 ? sk_X509_value(ca->upstream, 0) : NULL);
	X509_free(leaf);
	EVP_PKEY_free(key);
	ca_authority_free(ca);
	return rc;
}

/* The extension with this NID, asserting it is present. */
static X509_EXTENSION *
get_ext(X509 *cert, int nid)
{
	int pos = X509_get_ext_by_NID(cert, nid, -1);

	assert_true(pos >= 0);
	return X509_get_ext(cert, pos);
}

/* 1 when the permitted subtrees of cert hold a name of this type and text/bytes. */
static int
nc_permits(X509 *cert, int type, const void *value, size_t len)
{
	NAME_CONSTRAINTS *nc = X509_get_ext_d2i(cert, NID_name_constraints, NULL, NULL);
	int found = 0;

	assert_non_null(nc);
	for (int i = 0; i < sk_GENERAL_SUBTREE_num(nc->permittedSubtrees); i++) {
		GENERAL_NAME *base = sk_GENERAL_SUBTREE_value(nc->permittedSubtrees, i)->base;
		const ASN1_STRING *s;

		if (base->type != type)
			continue;
		s = type == GEN_IPADD ? base->d.iPAddress : base->d.ia5;
		if ((size_t)ASN1_STRING_length(s) == len &&
		    memcmp(ASN1_STRING_get0_data(s), value, len) == 0)
			found = 1;
	}
	NAME_CONSTRAINTS_free(nc);
	return found;
}

/* A JSON file as an object. */
static json_t *
load_json(const char *dir, const char *name)
{
	char path[4096];
	json_t *obj;

	join(path, sizeof(path), dir, name);
	obj = json_load_file(path, 0, NULL);
	assert_non_null(obj);
	return obj;
}

/* What ca_show prints, as a heap string. */
static char *
show(const char *dir)
{
	struct ac_err err;
	char *text = NULL;
	size_t len = 0;
	FILE *fp = open_memstream(&text, &len);

	ac_err_clear(&err);
	assert_non_null(fp);
	assert_int_equal(ca_show(dir, fp, &err), 0);
	fclose(fp);
	return text;
}

/* Run init in a fresh sub-directory "ca" of a scratch directory. */
static char *
init_ca(struct ca_init_options *opts, struct ca_init_report *report, char **scratch)
{
	struct ac_err err;
	char *dir;

	*scratch = test_tmpdir("authority");
	assert_true(asprintf(&dir, "%s/ca", *scratch) > 0);
	opts->dir = dir;
	if (opts->name == NULL)
		opts->name = "Test";
	if (opts->trust_domain == NULL)
		opts->trust_domain = TD;
	ac_err_clear(&err);
	if (ca_init(opts, report, &err) != 0)
		fail_msg("init: %s (%s)", err.msg, err.reason);
	return dir;
}

static void
test_init_root_mode(void **state)
{
	struct ca_init_options opts;
	struct ca_init_report report;
	struct ca_authority *ca;
	char *scratch, *dir, path[4096], fp[65], *text;
	X509 *root, *inter;
	X509_EXTENSION *ext;
	json_t *obj, *policy;
	int64_t now = (int64_t)time(NULL);

	(void)state;
	unsetenv("AGENTCA_PASSWORD");
	ca_init_options_defaults(&opts);
	dir = init_ca(&opts, &report, &scratch);

	/* A passphrase was made, and the directory is private. */
	join(path, sizeof(path), dir, "password");
	assert_string_equal(report.passphrase_file, path);
	assert_int_equal(file_mode(path), 0600);
	assert_int_equal(file_mode(dir), 0700);
	assert_string_equal(report.csr_path, "");

	/* Keys are 0600 and encrypted; certificates 0644. */
	for (int i = 0; i < 2; i++) {
		join(path, sizeof(path), dir, i == 0 ? "root.key" : "intermediate.key");
		assert_int_equal(file_mode(path), 0600);
		text = slurp(path);
		assert_non_null(strstr(text, "-----BEGIN ENCRYPTED PRIVATE KEY-----"));
		free(text);
		join(path, sizeof(path), dir, i == 0 ? "root.pem" : "intermediate.pem");
		assert_int_equal(file_mode(path), 0644);
	}

	root = load_cert(dir, "root.pem");
	inter = load_cert(dir, "intermediate.pem");
	assert_int_equal(verify(inter, root, NULL, NULL), X509_V_OK);
	assert_int_equal(cert_fingerprint(root, fp, NULL), 0);
	assert_string_equal(report.root_fingerprint, fp);

	/* Root: CA, critical basicConstraints and keyUsage, SKI/AKI, ~10 years. */
	ext = get_ext(root, NID_basic_constraints);
	assert_int_equal(X509_EXTENSION_get_critical(ext), 1);
	assert_true(X509_get_extension_flags(root) & EXFLAG_CA);
	assert_int_equal(X509_EXTENSION_get_critical(get_ext(root, NID_key_usage)), 1);
	assert_int_equal(X509_get_key_usage(root), KU_KEY_CERT_SIGN | KU_CRL_SIGN);
	assert_non_null(X509_get0_subject_key_id(root));
	assert_non_null(X509_get0_authority_key_id(root));
	assert_true(asn1_time_to_unix(X509_get0_notBefore(root)) <= now - 59);
	assert_true(asn1_time_to_unix(X509_get0_notAfter(root)) >= now + 3649 * (int64_t)DAY);
	assert_int_equal(X509_self_signed(root, 1), 1);

	/* Intermediate: pathlen 0, critical keyUsage and name constraints, 1 year. */
	assert_int_equal(X509_EXTENSION_get_critical(get_ext(inter, NID_basic_constraints)), 1);
	assert_true(X509_get_extension_flags(inter) & EXFLAG_CA);
	assert_int_equal(X509_get_pathlen(inter), 0);
	assert_int_equal(X509_EXTENSION_get_critical(get_ext(inter, NID_key_usage)), 1);
	assert_int_equal(X509_get_key_usage(inter),
	                 KU_DIGITAL_SIGNATURE | KU_KEY_CERT_SIGN | KU_CRL_SIGN);
	assert_int_equal(X509_EXTENSION_get_critical(get_ext(inter, NID_name_constraints)), 1);
	assert_true(nc_permits(inter, GEN_URI, TD, strlen(TD)));
	assert_true(nc_permits(inter, GEN_DNS, TD, strlen(TD)));
	assert_int_equal(ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(inter),
	                                       X509_get0_subject_key_id(root)),
	                 0);
	assert_true(asn1_time_to_unix(X509_get0_notAfter(inter)) <= now + 366 * (int64_t)DAY);
	assert_true(asn1_time_to_unix(X509_get0_notAfter(inter)) >= now + 364 * (int64_t)DAY);
	{
		char cn[128];

		X509_NAME_get_text_by_NID(X509_get_subject_name(root), NID_commonName, cn,
		                          sizeof(cn));
		assert_string_equal(cn, "Test Root CA");
		X509_NAME_get_text_by_NID(X509_get_subject_name(inter), NID_commonName, cn,
		                          sizeof(cn));
		assert_string_equal(cn, "Test Intermediate CA");
		X509_NAME_get_text_by_NID(X509_get_subject_name(inter), NID_organizationName, cn,
		                          sizeof(cn));
		assert_string_equal(cn, "Test");
	}

	/* Name constraints hold: in the domain verifies, outside does not. */
	assert_int_equal(verify_leaf_with_san(dir, "URI:spiffe://" TD "/gw-1"), X509_V_OK);
	assert_int_equal(verify_leaf_with_san(dir, "DNS:api." TD), X509_V_OK);
	assert_int_equal(verify_leaf_with_san(dir, "URI:spiffe://evil.example/gw-1"),
	                 X509_V_ERR_PERMITTED_VIOLATION);
	assert_int_equal(verify_leaf_with_san(dir, "DNS:api.evil.example"),
	                 X509_V_ERR_PERMITTED_VIOLATION);

	/* ca.json and config.json. */
	obj = load_json(dir, "ca.json");
	assert_string_equal(json_string_value(json_object_get(obj, "mode")), "root");
	assert_string_equal(json_string_value(json_object_get(obj, "state")), "active");
	assert_string_equal(json_string_value(json_object_get(obj, "trust_domain")), TD);
	assert_string_equal(json_string_value(json_object_get(obj, "key_type")), "p256");
	assert_true(json_is_false(json_object_get(obj, "offline_root")));
	assert_non_null(json_string_value(json_object_get(obj, "created")));
	json_decref(obj);
	obj = load_json(dir, "config.json");
	policy = json_object_get(obj, "policy");
	assert_string_equal(json_string_value(json_object_get(policy, "default_ttl")), "24h");
	assert_string_equal(json_string_value(json_object_get(policy, "min_ttl")), "5m");
	assert_string_equal(json_string_value(json_object_get(policy, "max_ttl")), "90d");
	assert_int_equal(json_integer_value(json_object_get(policy, "max_sans")), 16);
	assert_string_equal(
	    json_string_value(json_array_get(json_object_get(policy, "dns_suffixes"), 0)), TD);
	assert_int_equal(json_array_size(json_object_get(policy, "ip_ranges")), 0);
	json_decref(obj);

	/* Load for signing. */
	ca = ca_authority_load(dir, NULL, NULL);
	assert_non_null(ca);
	assert_string_equal(ca->mode, "root");
	assert_string_equal(ca->trust_domain, TD);
	assert_ptr_equal(ca->sign_md, EVP_sha256());
	assert_string_equal(ca->root_fingerprint, report.root_fingerprint);
	assert_int_equal(X509_cmp(ca->intermediate, inter), 0);
	assert_int_equal(sk_X509_num(ca->upstream), 0);
	assert_int_equal(sk_X509_num(ca->trust_extra), 0);
	assert_int_equal(ca->intermediate_not_after, asn1_time_to_unix(X509_get0_notAfter(inter)));
	assert_int_equal(strncmp((char *)ca->chain_pem, "-----BEGIN CERTIFICATE-----", 27), 0);
	assert_int_equal(strlen((char *)ca->chain_pem), ca->chain_pem_len);
	assert_null(strstr((char *)ca->chain_pem + 27, "BEGIN CERTIFICATE"));
	ca_authority_free(ca);

	/* Show needs no passphrase and tells the whole story. */
	join(path, sizeof(path), dir, "password");
	assert_int_equal(unlink(path), 0);
	text = show(dir);
	assert_non_null(strstr(text, "mode: root"));
	assert_non_null(strstr(text, "trust domain: " TD));
	assert_non_null(strstr(text, report.root_fingerprint));
	assert_non_null(strstr(text, "CN=Test Intermediate CA,O=Test"));
	assert_non_null(strstr(text, "root key: encrypted in"));
	assert_non_null(strstr(text, "intermediate key: encrypted in"));
	assert_non_null(strstr(text, "mode 0600"));
	assert_non_null(strstr(text, "URI:" TD));
	assert_non_null(strstr(text, "\"max_sans\":16"));
	free(text);

	X509_free(inter);
	X509_free(root);
	free(dir);
	test_rmdir(scratch);
}

static void
test_init_twice_refused(void **state)
{
	struct ca_init_options opts;
	struct ca_init_report report;
	struct ac_err err;
	char *scratch, *dir, path[4096], *before, *after;

	(void)state;
	unsetenv("AGENTCA_PASSWORD");
	ca_init_options_defaults(&opts);
	dir = init_ca(&opts, &report, &scratch);
	join(path, sizeof(path), dir, "intermediate.pem");
	before = slurp(path);
	ac_err_clear(&err);
	assert_int_equal(ca_init(&opts, &report, &err), -1);
	assert_int_equal(err.code, AC_ERR_CONFLICT);
	assert_non_null(strstr(err.msg, "already holds a CA"));
	after = slurp(path);
	assert_string_equal(before, after);
	free(after);
	free(before);
	free(dir);
	test_rmdir(scratch);
}

/* init and load with one key type; check the signature algorithm and the digest. */
static void
check_key_type(enum key_type type, int sig_nid, const EVP_MD *md, const char *name)
{
	struct ca_init_options opts;
	struct ca_init_report report;
	struct ca_authority *ca;
	char *scratch, *dir;
	X509 *root, *inter;
	json_t *obj;

	unsetenv("AGENTCA_PASSWORD");
	ca_init_options_defaults(&opts);
	opts.key_type = type;
	dir = init_ca(&opts, &report, &scratch);
	root = load_cert(dir, "root.pem");
	inter = load_cert(dir, "intermediate.pem");
	assert_int_equal(verify(inter, root, NULL, NULL), X509_V_OK);
	assert_int_equal(X509_get_signature_nid(root), sig_nid);
	assert_int_equal(X509_get_signature_nid(inter), sig_nid);
	ca = ca_authority_load(dir, NULL, NULL);
	assert_non_null(ca);
	assert_ptr_equal(ca->sign_md, md);
	ca_authority_free(ca);
	assert_int_equal(verify_leaf_with_san(dir, "URI:spiffe://" TD "/a"), X509_V_OK);
	obj = load_json(dir, "ca.json");
	assert_string_equal(json_string_value(json_object_get(obj, "key_type")), name);
	json_decref(obj);
	X509_free(inter);
	X509_free(root);
	free(dir);
	test_rmdir(scratch);
}

static void
test_init_key_types(void **state)
{
	(void)state;
	check_key_type(KEY_EC_P384, NID_ecdsa_with_SHA384, EVP_sha384(), "p384");
	check_key_type(KEY_ED25519, NID_ED25519, NULL, "ed25519");
	check_key_type(KEY_RSA_3072, NID_sha256WithRSAEncryption, EVP_sha256(), "rsa3072");
}

static void
test_offline_root(void **state)
{
	struct ca_init_options opts;
	struct ca_init_report report;
	struct ca_authority *ca;
	struct ac_err err;
	char *scratch, *dir, *offline, path[4096], *text;
	EVP_PKEY *root_key;
	X509 *root;

	(void)state;
	unsetenv("AGENTCA_PASSWORD");
	ca_init_options_defaults(&opts);
	offline = test_tmpdir("offline");
	join(path, sizeof(path), offline, "root.key");
	opts.offline_root_path = path;
	dir = init_ca(&opts, &report, &scratch);
	assert_int_equal(file_mode(path), 0600);
	text = slurp(path);
	assert_non_null(strstr(text, "ENCRYPTED PRIVATE KEY"));
	free(text);
	{
		char inside[4096];

		join(inside, sizeof(inside), dir, "root.key");
		assert_false(path_exists(inside));
	}
	/* The offline key is the root's, under the same passphrase. */
	{
		char pass[PASSPHRASE_MAX + 1];

		ac_err_clear(&err);
		assert_int_equal(passphrase_resolve(dir, NULL, pass, sizeof(pass), &err), 0);
		root_key = key_load(path, pass, &err);
		assert_non_null(root_key);
		passphrase_wipe(pass, sizeof(pass));
	}
	root = load_cert(dir, "root.pem");
	assert_int_equal(key_matches_cert(root_key, root), 1);
	ca = ca_authority_load(dir, NULL, NULL);
	assert_non_null(ca);
	ca_authority_free(ca);
	text = show(dir);
	assert_non_null(strstr(text, "root key: offline"));
	free(text);

	/* A second init never overwrites an existing offline key. */
	{
		struct ca_init_options again;
		char *scratch2, *dir2;

		ca_init_options_defaults(&again);
		scratch2 = test_tmpdir("authority");
		assert_true(asprintf(&dir2, "%s/ca", scratch2) > 0);
		again.dir = dir2;
		again.name = "Other";
		again.trust_domain = TD;
		again.offline_root_path = path;
		ac_err_clear(&err);
		assert_int_equal(ca_init(&again, &report, &err), -1);
		assert_int_equal(err.code, AC_ERR_CONFLICT);
		free(dir2);
		test_rmdir(scratch2);
	}
	X509_free(root);
	EVP_PKEY_free(root_key);
	free(dir);
	test_rmdir(scratch);
	test_rmdir(offline);
}

static void
test_name_constraints_dns_and_ip(void **state)
{
	static const char *const suffixes[] = {"corp.internal", "svc.example"};
	static const char *const ranges[] = {"10.0.0.0/8", "fd00::/8"};
	static const unsigned char v4[] = {10, 0, 0, 0, 255, 0, 0, 0};
	unsigned char v6[32] = {0xfd};
	struct cfg_strlist dns = {(char **)suffixes, 2}, ips = {(char **)ranges, 2};
	struct ca_init_options opts;
	struct ca_init_report report;
	char *scratch, *dir;
	json_t *obj;
	X509 *inter;

	(void)state;
	v6[16] = 0xff;
	unsetenv("AGENTCA_PASSWORD");
	ca_init_options_defaults(&opts);
	opts.dns_suffixes = &dns;
	opts.ip_ranges = &ips;
	dir = init_ca(&opts, &report, &scratch);
	inter = load_cert(dir, "intermediate.pem");
	assert_true(nc_permits(inter, GEN_URI, TD, strlen(TD)));
	assert_true(nc_permits(inter, GEN_DNS, "svc.example", 11));
	assert_true(nc_permits(inter, GEN_IPADD, v4, sizeof(v4)));
	assert_true(nc_permits(inter, GEN_IPADD, v6, sizeof(v6)));
	assert_int_equal(verify_leaf_with_san(dir, "DNS:a.svc.example"), X509_V_OK);
	assert_int_equal(verify_leaf_with_san(dir, "IP:10.1.2.3"), X509_V_OK);
	assert_int_equal(verify_leaf_with_san(dir, "IP:fd12::1"), X509_V_OK);
	assert_int_equal(verify_leaf_with_san(dir, "IP:192.168.1.1"),
	                 X509_V_ERR_PERMITTED_VIOLATION);
	assert_int_equal(verify_leaf_with_san(dir, "IP:2001:db8::1"),
	                 X509_V_ERR_PERMITTED_VIOLATION);
	obj = load_json(dir, "config.json");
	assert_int_equal(
	    json_array_size(json_object_get(json_object_get(obj, "policy"), "ip_ranges")), 2);
	json_decref(obj);
	X509_free(inter);
	free(dir);
	test_rmdir(scratch);
}

static void
test_init_bad_options(void **state)
{
	static const char *const bad_range[] = {"10.0.0.1/8"};
	static const char *const bad_suffix[] = {"corp.internal,permitted;DNS:evil.example"};
	struct cfg_strlist ips = {(char **)bad_range, 1}, dns = {(char **)bad_suffix, 1};
	struct ca_init_options opts;
	struct ca_init_report report;
	struct ac_err err;
	char *scratch = test_tmpdir("authority"), *dir;

	(void)state;
	unsetenv("AGENTCA_PASSWORD");
	assert_true(asprintf(&dir, "%s/ca", scratch) > 0);

	ca_init_options_defaults(&opts);
	opts.dir = dir;
	opts.name = "Test";
	opts.trust_domain = TD;
	opts.ip_ranges = &ips;
	ac_err_clear(&err);
	assert_int_equal(ca_init(&opts, &report, &err), -1);
	assert_string_equal(err.reason, "ip_range_invalid");
	assert_false(path_exists(dir));

	opts.ip_ranges = NULL;
	opts.dns_suffixes = &dns;
	ac_err_clear(&err);
	assert_int_equal(ca_init(&opts, &report, &err), -1);
	assert_string_equal(err.reason, "name_invalid");

	opts.dns_suffixes = NULL;
	opts.trust_domain = "Corp.Internal";
	ac_err_clear(&err);
	assert_int_equal(ca_init(&opts, &report, &err), -1);
	assert_string_equal(err.reason, "name_invalid");
	assert_false(path_exists(dir));
	free(dir);
	test_rmdir(scratch);
}

static void
test_passphrase_refusals(void **state)
{
	struct ca_init_options opts;
	struct ca_init_report report;
	struct ac_err err;
	char *scratch, *pwdir, *dir, given[4096], wrong[4096], path[4096];

	(void)state;
	unsetenv("AGENTCA_PASSWORD");
	ca_init_options_defaults(&opts);
	pwdir = test_tmpdir("pw");
	join(given, sizeof(given), pwdir, "given");
	join(wrong, sizeof(wrong), pwdir, "wrong");
	write_text(given, "the-right-one\n", 0600);
	write_text(wrong, "the-wrong-one\n", 0600);
	opts.password_file = given;
	dir = init_ca(&opts, &report, &scratch);
	/* No password file was generated: one was given. */
	assert_string_equal(report.passphrase_file, "");
	join(path, sizeof(path), dir, "password");
	assert_false(path_exists(path));

	/* Wrong passphrase: refused, the file named, no secret in the message. */
	ac_err_clear(&err);
	assert_null(ca_authority_load(dir, wrong, &err));
	assert_int_equal(err.code, AC_ERR_POLICY);
	assert_string_equal(err.reason, "bad_passphrase");
	assert_non_null(strstr(err.msg, "intermediate.key"));
	assert_null(strstr(err.msg, "the-wrong-one"));
	assert_null(strstr(err.msg, "the-right-one"));

	/* No passphrase anywhere. */
	ac_err_clear(&err);
	assert_null(ca_authority_load(dir, NULL, &err));
	assert_string_equal(err.reason, "no_passphrase");

	/* The environment works. */
	setenv("AGENTCA_PASSWORD", "the-right-one", 1);
	{
		struct ca_authority *ca = ca_authority_load(dir, NULL, NULL);

		assert_non_null(ca);
		ca_authority_free(ca);
	}
	unsetenv("AGENTCA_PASSWORD");

	/* Exposed keys: the load is refused before any decryption. */
	join(path, sizeof(path), dir, "intermediate.key");
	assert_int_equal(chmod(path, 0644), 0);
	ac_err_clear(&err);
	assert_null(ca_authority_load(dir, given, &err));
	assert_int_equal(err.code, AC_ERR_POLICY);
	assert_string_equal(err.reason, "key_file_exposed");
	assert_non_null(strstr(err.msg, "intermediate.key"));
	{
		char *text = show(dir);

		assert_non_null(strstr(text, "intermediate key: WARNING"));
		free(text);
	}
	assert_int_equal(chmod(path, 0600), 0);
	join(path, sizeof(path), dir, "root.key");
	assert_int_equal(chmod(path, 0640), 0);
	ac_err_clear(&err);
	assert_null(ca_authority_load(dir, given, &err));
	assert_string_equal(err.reason, "key_file_exposed");
	assert_non_null(strstr(err.msg, "root.key"));
	assert_int_equal(chmod(path, 0600), 0);
	{
		struct ca_authority *ca = ca_authority_load(dir, given, NULL);

		assert_non_null(ca);
		ca_authority_free(ca);
	}
	free(dir);
	test_rmdir(scratch);
	test_rmdir(pwdir);
}

/* A corporate-mode DIR after `init --csr`, with its CSR checked. */
static char *
init_corporate(char **scratch)
{
	struct ca_init_options opts;
	struct ca_init_report report;
	struct ac_err err;
	char *dir, path[4096], *text;
	STACK_OF(X509_EXTENSION) *exts;
	X509_REQ *req;
	BIO *bio;
	json_t *obj;
	int nids[] = {NID_basic_constraints, NID_key_usage, NID_name_constraints};

	unsetenv("AGENTCA_PASSWORD");
	ca_init_options_defaults(&opts);
	opts.csr_only = 1;
	dir = init_ca(&opts, &report, scratch);
	join(path, sizeof(path), dir, "intermediate.csr");
	assert_string_equal(report.csr_path, path);
	assert_string_equal(report.root_fingerprint, "");
	join(path, sizeof(path), dir, "intermediate.key");
	assert_int_equal(file_mode(path), 0600);
	join(path, sizeof(path), dir, "root.pem");
	assert_false(path_exists(path));
	join(path, sizeof(path), dir, "intermediate.pem");
	assert_false(path_exists(path));

	/* The CSR asks for the CA extensions and the name constraints. */
	bio = BIO_new_file(report.csr_path, "r");
	req = PEM_read_bio_X509_REQ(bio, NULL, NULL, NULL);
	BIO_free(bio);
	assert_non_null(req);
	exts = X509_REQ_get_extensions(req);
	for (size_t i = 0; i < sizeof(nids) / sizeof(nids[0]); i++) {
		int pos = X509v3_get_ext_by_NID(exts, nids[i], -1);

		assert_true(pos >= 0);
		assert_int_equal(X509_EXTENSION_get_critical(X509v3_get_ext(exts, pos)), 1);
	}
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_REQ_free(req);

	obj = load_json(dir, "ca.json");
	assert_string_equal(json_string_value(json_object_get(obj, "mode")), "corporate");
	assert_string_equal(json_string_value(json_object_get(obj, "state")), "awaiting_import");
	json_decref(obj);

	ac_err_clear(&err);
	assert_null(ca_authority_load(dir, NULL, &err));
	assert_string_equal(err.reason, "awaiting_import");
	assert_non_null(strstr(err.msg, "ca import"));
	text = show(dir);
	assert_non_null(strstr(text, "mode: corporate"));
	assert_non_null(strstr(text, "not installed yet"));
	free(text);
	return dir;
}

static void
test_corporate_import(void **state)
{
	char *scratch, *dir, csr[4096], certp[4096], chainp[4096], fp[65], *text, *upstream;
	struct ca_authority *ca;
	struct ac_err err;
	EVP_PKEY *corp_key;
	X509 *corp, *inter;
	int64_t now = (int64_t)time(NULL);
	json_t *obj;

	(void)state;
	dir = init_corporate(&scratch);
	corp = make_corp_root(&corp_key, "Corp Root");
	join(csr, sizeof(csr), dir, "intermediate.csr");
	inter = sign_csr(csr, corp, corp_key, now - 60, now + 200 * DAY, 1);
	join(certp, sizeof(certp), scratch, "signed.pem");
	join(chainp, sizeof(chainp), scratch, "corp-root.pem");
	write_certs(certp, inter, NULL);
	write_certs(chainp, corp, NULL);
	ac_err_clear(&err);
	if (ca_import(dir, certp, chainp, NULL, NULL, &err) != 0)
		fail_msg("import: %s (%s)", err.msg, err.reason);

	obj = load_json(dir, "ca.json");
	assert_string_equal(json_string_value(json_object_get(obj, "state")), "active");
	json_decref(obj);
	join(certp, sizeof(certp), dir, "upstream.pem");
	upstream = slurp(certp);
	assert_string_equal(upstream, "");
	free(upstream);

	ca = ca_authority_load(dir, NULL, NULL);
	assert_non_null(ca);
	assert_string_equal(ca->mode, "corporate");
	assert_int_equal(cert_fingerprint(corp, fp, NULL), 0);
	assert_string_equal(ca->root_fingerprint, fp);
	assert_int_equal(X509_cmp(ca->intermediate, inter), 0);
	ca_authority_free(ca);
	assert_int_equal(verify_leaf_with_san(dir, "URI:spiffe://" TD "/x"), X509_V_OK);
	assert_int_equal(verify_leaf_with_san(dir, "URI:spiffe://other.example/x"),
	                 X509_V_ERR_PERMITTED_VIOLATION);
	text = show(dir);
	assert_non_null(strstr(text, "root key: not held (corporate root)"));
	assert_non_null(strstr(text, fp));
	assert_non_null(strstr(text, "state: active"));
	free(text);

	/* ca import is for corporate mode only. */
	{
		struct ca_init_options opts;
		struct ca_init_report report;
		char *s2, *d2;

		ca_init_options_defaults(&opts);
		d2 = init_ca(&opts, &report, &s2);
		ac_err_clear(&err);
		assert_int_equal(ca_import(d2, certp, chainp, NULL, NULL, &err), -1);
		assert_string_equal(err.reason, "not_corporate");
		free(d2);
		test_rmdir(s2);
	}
	X509_free(inter);
	X509_free(corp);
	EVP_PKEY_free(corp_key);
	free(dir);
	test_rmdir(scratch);
}

static void
test_corporate_import_with_upstream_and_key(void **state)
{
	static const struct ext issuing_exts[] = {
	    {NID_basic_constraints, "critical,CA:TRUE,pathlen:1"},
	    {NID_key_usage, "critical,keyCertSign,cRLSign"},
	    {NID_subject_key_identifier, "hash"},
	    {NID_authority_key_identifier, "keyid:always"},
	    {0, NULL},
	};
	char *scratch, *dir, certp[4096], chainp[4096], keyp[4096], path[4096], *text;
	struct ca_authority *ca;
	struct ac_err err;
	EVP_PKEY *corp_key, *issuing_key, *own_key, *our_old;
	X509 *corp, *issuing, *inter;
	STACK_OF(X509) *up;
	int64_t now = (int64_t)time(NULL);
	struct ext copy[8];

	(void)state;
	dir = init_corporate(&scratch);
	corp = make_corp_root(&corp_key, "Corp Root");
	issuing_key = key_generate(KEY_EC_P256, NULL);
	issuing = make_cert(issuing_key, "Corp Issuing", corp, corp_key, now - DAY,
	                    now + 1000 * DAY, issuing_exts);

	/* The operator brings their own key: the certificate is for it, not for ours. */
	own_key = key_generate(KEY_EC_P384, NULL);
	join(keyp, sizeof(keyp), scratch, "own.key");
	assert_int_equal(key_write_plain(keyp, own_key, NULL), 0);
	memset(copy, 0, sizeof(copy));
	copy[0] = (struct ext){NID_basic_constraints, "critical,CA:TRUE,pathlen:0"};
	copy[1] = (struct ext){NID_key_usage, "critical,keyCertSign,cRLSign"};
	copy[2] =
	    (struct ext){NID_name_constraints, "critical,permitted;URI:" TD ",permitted;DNS:" TD};
	copy[3] = (struct ext){NID_subject_key_identifier, "hash"};
	copy[4] = (struct ext){NID_authority_key_identifier, "keyid:always"};
	inter = make_cert(own_key, "Test Intermediate CA", issuing, issuing_key, now - 60,
	                  now + 100 * DAY, copy);

	join(certp, sizeof(certp), scratch, "signed.pem");
	join(chainp, sizeof(chainp), scratch, "chain.pem");
	write_certs(certp, inter, NULL);
	write_certs(chainp, issuing, corp); /* any order */

	/* Without --key, our key does not match this certificate. */
	ac_err_clear(&err);
	assert_int_equal(ca_import(dir, certp, chainp, NULL, NULL, &err), -1);
	assert_string_equal(err.reason, "key_mismatch");
	assert_non_null(strstr(err.msg, "intermediate.key does not match the certificate in"));
	assert_non_null(strstr(err.msg, certp));

	ac_err_clear(&err);
	if (ca_import(dir, certp, chainp, keyp, NULL, &err) != 0)
		fail_msg("import: %s (%s)", err.msg, err.reason);

	/* The key was taken in, encrypted under the CA passphrase. */
	join(path, sizeof(path), dir, "intermediate.key");
	assert_int_equal(file_mode(path), 0600);
	text = slurp(path);
	assert_non_null(strstr(text, "ENCRYPTED PRIVATE KEY"));
	free(text);
	{
		char pass[PASSPHRASE_MAX + 1];

		assert_int_equal(passphrase_resolve(dir, NULL, pass, sizeof(pass), NULL), 0);
		our_old = key_load(path, pass, NULL);
		passphrase_wipe(pass, sizeof(pass));
	}
	assert_non_null(our_old);
	assert_int_equal(EVP_PKEY_eq(our_old, own_key), 1);
	EVP_PKEY_free(our_old);

	/* upstream.pem holds the corporate issuing CA; root.pem the corporate root. */
	join(path, sizeof(path), dir, "upstream.pem");
	up = x509_read_pem_file(path, NULL);
	assert_non_null(up);
	assert_int_equal(sk_X509_num(up), 1);
	assert_int_equal(X509_cmp(sk_X509_value(up, 0), issuing), 0);
	sk_X509_pop_free(up, X509_free);
	{
		X509 *root = load_cert(dir, "root.pem");

		assert_int_equal(X509_cmp(root, corp), 0);
		X509_free(root);
	}

	ca = ca_authority_load(dir, NULL, NULL);
	assert_non_null(ca);
	assert_int_equal(sk_X509_num(ca->upstream), 1);
	assert_ptr_equal(ca->sign_md, EVP_sha384());
	text = (char *)ca->chain_pem;
	assert_non_null(strstr(strstr(text, "END CERTIFICATE") + 1, "BEGIN CERTIFICATE"));
	ca_authority_free(ca);
	assert_int_equal(verify_leaf_with_san(dir, "URI:spiffe://" TD "/x"), X509_V_OK);

	X509_free(inter);
	X509_free(issuing);
	X509_free(corp);
	EVP_PKEY_free(own_key);
	EVP_PKEY_free(issuing_key);
	EVP_PKEY_free(corp_key);
	free(dir);
	test_rmdir(scratch);
}

/* Import must fail with this reason and leave DIR awaiting import, unchanged. */
static void
import_refused(const char *dir, const char *cert, const char *chain, const char *reason)
{
	struct ac_err err;
	char path[4096];
	json_t *obj;

	ac_err_clear(&err);
	assert_int_equal(ca_import(dir, cert, chain, NULL, NULL, &err), -1);
	if (strcmp(err.reason, reason) != 0)
		fail_msg("expected %s, got %s: %s", reason, err.reason, err.msg);
	assert_null(strchr(err.msg, '\n'));
	join(path, sizeof(path), dir, "intermediate.pem");
	assert_false(path_exists(path));
	obj = load_json(dir, "ca.json");
	assert_string_equal(json_string_value(json_object_get(obj, "state")), "awaiting_import");
	json_decref(obj);
}

static void
test_corporate_import_refusals(void **state)
{
	char *scratch, *dir, csr[4096], certp[4096], chainp[4096], otherp[4096], junk[4096];
	EVP_PKEY *corp_key, *other_key, *stray_key;
	X509 *corp, *other, *cert;
	int64_t now = (int64_t)time(NULL);

	(void)state;
	dir = init_corporate(&scratch);
	corp = make_corp_root(&corp_key, "Corp Root");
	other = make_corp_root(&other_key, "Other Root");
	join(csr, sizeof(csr), dir, "intermediate.csr");
	join(certp, sizeof(certp), scratch, "signed.pem");
	join(chainp, sizeof(chainp), scratch, "corp-root.pem");
	join(otherp, sizeof(otherp), scratch, "other-root.pem");
	join(junk, sizeof(junk), scratch, "junk.pem");
	write_certs(chainp, corp, NULL);
	write_certs(otherp, other, NULL);
	write_text(junk, "not a certificate\n", 0644);

	/* Unreadable inputs. */
	cert = sign_csr(csr, corp, corp_key, now - 60, now + 100 * DAY, 1);
	write_certs(certp, cert, NULL);
	import_refused(dir, junk, chainp, "cert_unreadable");
	import_refused(dir, certp, junk, "chain_unreadable");
	X509_free(cert);

	/* A CA certificate for some other key. */
	stray_key = key_generate(KEY_EC_P256, NULL);
	cert = make_cert(stray_key, "Stray", corp, corp_key, now - 60, now + DAY, ca_exts);
	write_certs(certp, cert, NULL);
	import_refused(dir, certp, chainp, "key_mismatch");
	X509_free(cert);
	EVP_PKEY_free(stray_key);

	/* Our key, but signed as a leaf. */
	cert = sign_csr(csr, corp, corp_key, now - 60, now + 100 * DAY, 0);
	write_certs(certp, cert, NULL);
	import_refused(dir, certp, chainp, "not_a_ca");
	X509_free(cert);

	/* Signed by the corporate root, but the chain given is another root. */
	cert = sign_csr(csr, corp, corp_key, now - 60, now + 100 * DAY, 1);
	write_certs(certp, cert, NULL);
	import_refused(dir, certp, otherp, "chain_invalid");
	X509_free(cert);

	/* Signed by another root that pretends to be the corporate root (same name). */
	{
		EVP_PKEY *fake_key;
		X509 *fake = make_corp_root(&fake_key, "Corp Root");

		cert = sign_csr(csr, fake, fake_key, now - 60, now + 100 * DAY, 1);
		write_certs(certp, cert, NULL);
		import_refused(dir, certp, chainp, "chain_invalid");
		X509_free(cert);
		X509_free(fake);
		EVP_PKEY_free(fake_key);
	}

	/* Expired, and not yet valid. */
	cert = sign_csr(csr, corp, corp_key, now - 30 * DAY, now - DAY, 1);
	write_certs(certp, cert, NULL);
	import_refused(dir, certp, chainp, "expired");
	X509_free(cert);
	cert = sign_csr(csr, corp, corp_key, now + DAY, now + 30 * DAY, 1);
	write_certs(certp, cert, NULL);
	import_refused(dir, certp, chainp, "not_yet_valid");
	X509_free(cert);

	/* And after all that, the right one still goes in. */
	cert = sign_csr(csr, corp, corp_key, now - 60, now + 100 * DAY, 1);
	write_certs(certp, cert, NULL);
	assert_int_equal(ca_import(dir, certp, chainp, NULL, NULL, NULL), 0);
	X509_free(cert);

	X509_free(other);
	X509_free(corp);
	EVP_PKEY_free(other_key);
	EVP_PKEY_free(corp_key);
	free(dir);
	test_rmdir(scratch);
}

static void
test_trust_add(void **state)
{
	struct ca_init_options opts;
	struct ca_init_report report;
	struct ca_authority *ca;
	struct ac_err err;
	char *scratch, *dir, two[4096], leafp[4096], ownp[4096], oldp[4096], path[4096], *text;
	EVP_PKEY *ka, *kb, *kl;
	X509 *a, *b, *leaf, *old;
	int64_t now = (int64_t)time(NULL);
	int added = -1;
	static const struct ext leaf_exts[] = {
	    {NID_basic_constraints, "critical,CA:FALSE"},
	    {NID_key_usage, "critical,digitalSignature"},
	    {0, NULL},
	};

	(void)state;
	unsetenv("AGENTCA_PASSWORD");
	ca_init_options_defaults(&opts);
	dir = init_ca(&opts, &report, &scratch);
	a = make_corp_root(&ka, "Root A");
	b = make_corp_root(&kb, "Root B");
	join(two, sizeof(two), scratch, "two.pem");
	write_certs(two, a, b);

	ac_err_clear(&err);
	assert_int_equal(ca_trust_add(dir, two, &added, &err), 0);
	assert_int_equal(added, 2);
	join(path, sizeof(path), dir, "trust.pem");
	assert_int_equal(file_mode(path), 0644);

	/* Again: nothing new. Our own root: nothing new either. */
	assert_int_equal(ca_trust_add(dir, two, &added, &err), 0);
	assert_int_equal(added, 0);
	join(ownp, sizeof(ownp), dir, "root.pem");
	assert_int_equal(ca_trust_add(dir, ownp, &added, &err), 0);
	assert_int_equal(added, 0);

	/* A self-signed leaf is not a CA; a leaf of our CA is not self-signed. */
	kl = key_generate(KEY_EC_P256, NULL);
	leaf = make_cert(kl, "leaf", NULL, NULL, now - 60, now + DAY, leaf_exts);
	join(leafp, sizeof(leafp), scratch, "leaf.pem");
	write_certs(leafp, leaf, NULL);
	ac_err_clear(&err);
	assert_int_equal(ca_trust_add(dir, leafp, &added, &err), -1);
	assert_string_equal(err.reason, "not_a_ca");
	X509_free(leaf);
	leaf = make_cert(kl, "leaf", a, ka, now - 60, now + DAY, leaf_exts);
	write_certs(leafp, leaf, NULL);
	ac_err_clear(&err);
	assert_int_equal(ca_trust_add(dir, leafp, &added, &err), -1);
	assert_string_equal(err.reason, "not_self_signed");

	/* An expired root. */
	old = make_cert(kl, "Old Root", NULL, NULL, now - 30 * DAY, now - DAY, ca_exts);
	join(oldp, sizeof(oldp), scratch, "old.pem");
	write_certs(oldp, old, NULL);
	ac_err_clear(&err);
	assert_int_equal(ca_trust_add(dir, oldp, &added, &err), -1);
	assert_string_equal(err.reason, "expired");

	/* One bad certificate refuses the whole file. */
	{
		char mixed[4096];
		X509 *c;
		EVP_PKEY *kc;

		c = make_corp_root(&kc, "Root C");
		join(mixed, sizeof(mixed), scratch, "mixed.pem");
		write_certs(mixed, c, leaf);
		ac_err_clear(&err);
		assert_int_equal(ca_trust_add(dir, mixed, &added, &err), -1);
		X509_free(c);
		EVP_PKEY_free(kc);
	}

	ca = ca_authority_load(dir, NULL, NULL);
	assert_non_null(ca);
	assert_int_equal(sk_X509_num(ca->trust_extra), 2);
	ca_authority_free(ca);
	text = show(dir);
	assert_non_null(strstr(text, "extra trust root 2 of 2"));
	assert_non_null(strstr(text, "CN=Root B"));
	free(text);

	X509_free(old);
	X509_free(leaf);
	X509_free(b);
	X509_free(a);
	EVP_PKEY_free(kl);
	EVP_PKEY_free(kb);
	EVP_PKEY_free(ka);
	free(dir);
	test_rmdir(scratch);
}

/* The chain text ca_authority_write_chain appends for issuer_fingerprint. */
static char *
chain_for(const struct ca_authority *ca, const char *issuer_fingerprint)
{
	BIO *bio = BIO_new(BIO_s_mem());
	BUF_MEM *mem;
	char *text;

	assert_non_null(bio);
	assert_int_equal(ca_authority_write_chain(ca, issuer_fingerprint, bio), 0);
	BIO_get_mem_ptr(bio, &mem);
	text = strndup(mem->data, mem->length);
	assert_non_null(text);
	BIO_free(bio);
	return text;
}

static void
test_chain_for_issuer(void **state)
{
	struct ca_init_options opts;
	struct ca_init_report report;
	struct ca_authority *ca, *other;
	char *scratch, *scratch2, *dir, *dir2, *text, other_fp[65];
	char *other_pem;
	BIO *bio;
	BUF_MEM *mem;
	struct ac_err err;

	(void)state;
	setenv("AGENTCA_PASSWORD", "chain-test-passphrase", 1);
	ca_init_options_defaults(&opts);
	dir = init_ca(&opts, &report, &scratch);
	ca_init_options_defaults(&opts);
	dir2 = init_ca(&opts, &report, &scratch2);
	ca = ca_authority_load(dir, NULL, NULL);
	other = ca_authority_load(dir2, NULL, NULL);
	assert_non_null(ca);
	assert_non_null(other);
	ac_err_clear(&err);
	assert_int_equal(cert_fingerprint(other->intermediate, other_fp, &err), 0);
	bio = BIO_new(BIO_s_mem());
	assert_int_equal(PEM_write_bio_X509(bio, other->intermediate), 1);
	BIO_get_mem_ptr(bio, &mem);
	other_pem = strndup(mem->data, mem->length);
	BIO_free(bio);

	/* The current signer, no fingerprint, an unknown one: the ready-made chain. */
	text = chain_for(ca, ca->intermediate_fingerprint);
	assert_int_equal(strlen(text), ca->chain_pem_len);
	assert_memory_equal(text, ca->chain_pem, ca->chain_pem_len);
	free(text);
	text = chain_for(ca, NULL);
	assert_memory_equal(text, ca->chain_pem, ca->chain_pem_len);
	free(text);
	text = chain_for(ca, other_fp); /* not rotating yet: unknown */
	assert_memory_equal(text, ca->chain_pem, ca->chain_pem_len);
	free(text);

	/* During a rotation, a leaf of the other intermediate gets that intermediate. */
	if (ca->rotating == NULL)
		ca->rotating = sk_X509_new_null();
	assert_non_null(ca->rotating);
	assert_int_equal(X509_up_ref(other->intermediate), 1);
	assert_true(sk_X509_push(ca->rotating, other->intermediate) > 0);
	text = chain_for(ca, other_fp);
	assert_string_equal(text, other_pem);
	free(text);
	text = chain_for(ca, ca->intermediate_fingerprint);
	assert_memory_equal(text, ca->chain_pem, ca->chain_pem_len);
	free(text);

	free(other_pem);
	ca_authority_free(other);
	ca_authority_free(ca);
	unsetenv("AGENTCA_PASSWORD");
	free(dir2);
	free(dir);
	test_rmdir(scratch2);
	test_rmdir(scratch);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_init_root_mode),
	    cmocka_unit_test(test_init_twice_refused),
	    cmocka_unit_test(test_init_key_types),
	    cmocka_unit_test(test_offline_root),
	    cmocka_unit_test(test_name_constraints_dns_and_ip),
	    cmocka_unit_test(test_init_bad_options),
	    cmocka_unit_test(test_passphrase_refusals),
	    cmocka_unit_test(test_corporate_import),
	    cmocka_unit_test(test_corporate_import_with_upstream_and_key),
	    cmocka_unit_test(test_corporate_import_refusals),
	    cmocka_unit_test(test_trust_add),
	    cmocka_unit_test(test_chain_for_issuer),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
