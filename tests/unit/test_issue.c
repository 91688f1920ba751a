/*
 * test_issue.c - the issuance engine end to end: a real CA made by ca_init, a real store,
 * real CSRs. Every refusal must leave exactly one "denied" log entry and no certificate row;
 * every issuance must be in the store before ca_issue returns.
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "ca/authority.h"
#include "ca/issue.h"
#include "ca/x509_build.h"
#include "common/log.h"
#include "store/store.h"
#include "testutil.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define TD "corp.internal"
#define SUBJECT "spiffe://corp.internal/gw-1"

/* The CA, store and policy every test issues against. */
struct fixture {
	char *dir;
	struct ca_authority *ca;
	struct store *store;
	struct ca_policy policy;
	struct issuer iss;
	EVP_PKEY *p256;
};

static struct fixture fx;

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

/* A signed CSR for key with the given SANs, as PEM (heap). corrupt: flip a signature bit. */
static char *
make_csr(EVP_PKEY *key, const struct san_spec *sans, size_t n, int corrupt)
{
	X509_REQ *req = X509_REQ_new();
	const EVP_MD *md =
	    EVP_PKEY_is_a(key, "ED25519") || EVP_PKEY_is_a(key, "ED448") ? NULL : EVP_sha256();
	unsigned char *der = NULL;
	const unsigned char *p;
	BIO *bio = BIO_new(BIO_s_mem());
	char *data, *pem;
	long len;
	int der_len;

	assert_non_null(req);
	assert_non_null(bio);
	assert_int_equal(X509_REQ_set_version(req, X509_REQ_VERSION_1), 1);
	assert_int_equal(X509_REQ_set_pubkey(req, key), 1);
	if (n > 0)
		add_sans(req, sans, n);
	assert_true(X509_REQ_sign(req, key, md) > 0);
	if (corrupt) {
		der_len = i2d_X509_REQ(req, &der);
		assert_true(der_len > 0);
		der[der_len - 1] ^= 0x01;
		X509_REQ_free(req);
		p = der;
		req = d2i_X509_REQ(NULL, &p, der_len);
		assert_non_null(req);
		OPENSSL_free(der);
	}
	assert_int_equal(PEM_write_bio_X509_REQ(bio, req), 1);
	len = BIO_get_mem_data(bio, &data);
	pem = strndup(data, (size_t)len);
	assert_non_null(pem);
	BIO_free(bio);
	X509_REQ_free(req);
	return pem;
}

static EVP_PKEY *
keygen(const char *type, const char *arg)
{
	EVP_PKEY *key;

	if (strcmp(type, "RSA") == 0)
		key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)atoi(arg));
	else if (strcmp(type, "EC") == 0)
		key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", arg);
	else
		key = EVP_PKEY_Q_keygen(NULL, NULL, type);
	assert_non_null(key);
	return key;
}

static int
group_setup(void **state)
{
	struct ca_init_options opts;
	struct ca_init_report report;
	struct store_options sopts;
	char path[4096];
	struct ac_err err;

	(void)state;
	ac_log_set_level(AC_LOG_WARN); /* the denials' info lines are expected here */
	memset(&fx, 0, sizeof(fx));
	fx.dir = test_tmpdir("issue");
	setenv("AGENTCA_PASSWORD", "test passphrase for the unit tests", 1);
	ca_init_options_defaults(&opts);
	opts.dir = fx.dir;
	opts.name = "Test CA";
	opts.trust_domain = TD;
	ac_err_clear(&err);
	if (ca_init(&opts, &report, &err) != 0) {
		fprintf(stderr, "ca_init: %s\n", err.msg);
		return -1;
	}
	fx.ca = ca_authority_load(fx.dir, NULL, &err);
	if (fx.ca == NULL) {
		fprintf(stderr, "ca_authority_load: %s\n", err.msg);
		return -1;
	}
	snprintf(path, sizeof(path), "%s/test-issue.db", fx.dir);
	store_options_defaults(&sopts);
	sopts.path = path;
	fx.store = store_open(&sopts, &err);
	if (fx.store == NULL) {
		fprintf(stderr, "store_open: %s\n", err.msg);
		return -1;
	}
	if (ca_policy_defaults(&fx.policy, TD, &err) != 0 ||
	    cfg_strlist_add(&fx.policy.ip_ranges, "10.0.0.0/8", &err) != 0 ||
	    ca_policy_validate(&fx.policy, &err) != 0)
		return -1;
	fx.iss.authority = fx.ca;
	fx.iss.policy = &fx.policy;
	fx.iss.store = fx.store;
	fx.p256 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	return fx.p256 == NULL ? -1 : 0;
}

static int
group_teardown(void **state)
{
	(void)state;
	EVP_PKEY_free(fx.p256);
	ca_policy_free(&fx.policy);
	store_close(fx.store);
	ca_authority_free(fx.ca);
	test_rmdir(fx.dir);
	return 0;
}

/* A request for SUBJECT with csr; the rest defaulted. */
static struct issue_request
request(const char *csr)
{
	struct issue_request req;

	memset(&req, 0, sizeof(req));
	req.csr = (const unsigned char *)csr;
	req.csr_len = strlen(csr);
	req.subject = SUBJECT;
	req.actor = "admin:test";
	req.request_id = "req-1";
	return req;
}

static int64_t
cert_count(void)
{
	struct ac_err err;
	int64_t n = -1;

	ac_err_clear(&err);
	assert_int_equal(store_cert_count(fx.store, &n, &err), 0);
	return n;
}

static uint64_t
log_head(void)
{
	char hash[LOG_HASH_HEX_LEN + 1];
	struct ac_err err;
	uint64_t seq = 0;

	ac_err_clear(&err);
	assert_int_equal(store_log_head(fx.store, &seq, hash, &err), 0);
	return seq;
}

/* The log entries after `after`, as parsed JSON in a JSON array. */
static int
collect_row(void *arg, const struct log_row *row)
{
	json_t *entry = json_loadb(row->canonical, row->canonical_len, 0, NULL);

	assert_non_null(entry);
	json_array_append_new((json_t *)arg, entry);
	return 0;
}

static json_t *
log_since(uint64_t after)
{
	struct log_filter filter;
	json_t *rows = json_array();
	struct ac_err err;

	memset(&filter, 0, sizeof(filter));
	filter.from_seq = after + 1;
	ac_err_clear(&err);
	assert_int_equal(store_log_scan(fx.store, &filter, collect_row, rows, &err), 0);
	return rows;
}

static const char *
str(const json_t *obj, const char *key)
{
	const char *s = json_string_value(json_object_get(obj, key));

	return s != NULL ? s : "";
}

static X509 *
pem_cert(const char *pem)
{
	BIO *bio = BIO_new_mem_buf(pem, -1);
	X509 *cert;

	assert_non_null(bio);
	cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
	assert_non_null(cert);
	BIO_free(bio);
	return cert;
}

/* Verify leaf against the root, through the intermediate and upstream. */
static void
assert_verifies(X509 *leaf)
{
	X509_STORE *store = X509_STORE_new();
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	STACK_OF(X509) *untrusted = sk_X509_new_null();

	assert_non_null(store);
	assert_non_null(ctx);
	assert_non_null(untrusted);
	assert_int_equal(X509_STORE_add_cert(store, fx.ca->root), 1);
	assert_true(sk_X509_push(untrusted, fx.ca->intermediate) > 0);
	for (int i = 0; fx.ca->upstream != NULL && i < sk_X509_num(fx.ca->upstream); i++)
		assert_true(sk_X509_push(untrusted, sk_X509_value(fx.ca->upstream, i)) > 0);
	assert_int_equal(X509_STORE_CTX_init(ctx, store, leaf, untrusted), 1);
	assert_int_equal(X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT), 1);
	if (X509_verify_cert(ctx) != 1)
		fail_msg("leaf does not verify: %s",
		         X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
	sk_X509_free(untrusted);
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
}

/* 1 when leaf has a SAN of type with exactly these bytes. */
static int
has_san(X509 *leaf, int type, const void *value, size_t len)
{
	GENERAL_NAMES *names = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
	int found = 0;

	for (int i = 0; names != NULL && i < sk_GENERAL_NAME_num(names); i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
		int t;
		const ASN1_STRING *s = GENERAL_NAME_get0_value(gn, &t);

		if (t == type && (size_t)ASN1_STRING_length(s) == len &&
		    memcmp(ASN1_STRING_get0_data(s), value, len) == 0)
			found = 1;
	}
	GENERAL_NAMES_free(names);
	return found;
}

static int
ext_critical(X509 *leaf, int nid)
{
	int idx = X509_get_ext_by_NID(leaf, nid, -1);

	assert_true(idx >= 0);
	return X509_EXTENSION_get_critical(X509_get_ext(leaf, idx));
}

static void
test_good_p256(void **state)
{
	static const unsigned char ip[4] = {10, 1, 2, 3};
	const struct san_spec sans[] = {
	    {GEN_URI, SUBJECT, 0},
	    {GEN_DNS, "gw-1.corp.internal", 0},
	    {GEN_IPADD, (const char *)ip, 4},
	};
	char *csr = make_csr(fx.p256, sans, ARRAY_LEN(sans), 0);
	struct issue_request req = request(csr);
	struct issue_result res;
	int64_t before = cert_count();
	uint64_t head = log_head();
	const ASN1_OCTET_STRING *ski;
	const ASN1_INTEGER *serial;
	struct cert_row row;
	struct ac_err err;
	json_t *rows, *entry;
	X509 *leaf;
	char want_cn[64];

	(void)state;
	req.ttl = 3600;
	ac_err_clear(&err);
	if (ca_issue(&fx.iss, &req, &res, &err) != 0)
		fail_msg("refused: %s (%s)", err.msg, err.reason);
	leaf = pem_cert(res.cert_pem);
	assert_verifies(leaf);

	assert_int_equal(X509_get_version(leaf), X509_VERSION_3);
	assert_true(has_san(leaf, GEN_URI, SUBJECT, strlen(SUBJECT)));
	assert_true(has_san(leaf, GEN_DNS, "gw-1.corp.internal", 18));
	assert_true(has_san(leaf, GEN_IPADD, ip, 4));
	assert_true(X509_get_extension_flags(leaf) & EXFLAG_XKUSAGE);
	assert_int_equal(X509_get_extended_key_usage(leaf) & (XKU_SSL_SERVER | XKU_SSL_CLIENT),
	                 XKU_SSL_SERVER | XKU_SSL_CLIENT);
	assert_int_equal(X509_check_ca(leaf), 0);
	assert_true(X509_get_extension_flags(leaf) & EXFLAG_BCONS);
	assert_int_equal(ext_critical(leaf, NID_basic_constraints), 1);
	assert_int_equal(ext_critical(leaf, NID_key_usage), 1);
	assert_int_equal(X509_get_key_usage(leaf), KU_DIGITAL_SIGNATURE);
	serial = X509_get0_serialNumber(leaf);
	assert_int_equal(ASN1_STRING_length(serial), 16);
	assert_int_equal(strlen(res.serial), 32);
	ski = X509_get0_subject_key_id(leaf);
	assert_non_null(ski);
	assert_non_null(X509_get0_authority_key_id(leaf));
	assert_int_equal(ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(leaf),
	                                       X509_get0_subject_key_id(fx.ca->intermediate)),
	                 0);
	assert_int_equal(
	    X509_NAME_cmp(X509_get_issuer_name(leaf), X509_get_subject_name(fx.ca->intermediate)),
	    0);
	assert_true(X509_NAME_get_text_by_NID(X509_get_subject_name(leaf), NID_commonName, want_cn,
	                                      sizeof(want_cn)) > 0);
	assert_string_equal(want_cn, "gw-1.corp.internal");
	assert_int_equal(EVP_PKEY_eq(X509_get0_pubkey(leaf), fx.p256), 1);

	/* The lifetime: 1h after now, notBefore backdated by a minute. */
	assert_int_equal(res.not_after - res.not_before, 3600 + 60);
	assert_true(llabs((long long)(res.not_before + 60 - time(NULL))) <= 2);
	assert_int_equal(asn1_time_to_unix(X509_get0_notBefore(leaf)), res.not_before);
	assert_int_equal(asn1_time_to_unix(X509_get0_notAfter(leaf)), res.not_after);
	assert_int_equal(res.renew_after, res.not_before + (3600 + 60) * 2 / 3);
	assert_non_null(res.chain_pem);
	assert_ptr_equal(res.chain_pem, fx.ca->chain_pem);

	/* In the store, with its log entry, by the time ca_issue returned. */
	assert_int_equal(cert_count(), before + 1);
	assert_int_equal(store_cert_get(fx.store, res.serial, &row, &err), 0);
	assert_string_equal(row.subject, SUBJECT);
	assert_string_equal(row.issuer_fingerprint, fx.ca->intermediate_fingerprint);
	assert_int_equal(row.not_after, res.not_after);
	assert_int_equal(row.log_seq, res.log_seq);
	assert_int_equal(row.der_len, (size_t)i2d_X509(leaf, NULL));
	store_cert_row_free(&row);
	rows = log_since(head);
	assert_int_equal(json_array_size(rows), 1);
	entry = json_array_get(rows, 0);
	assert_string_equal(str(entry, "kind"), "issued");
	assert_string_equal(str(entry, "serial"), res.serial);
	assert_string_equal(str(entry, "subject"), SUBJECT);
	assert_string_equal(str(entry, "actor"), "admin:test");
	assert_string_equal(str(entry, "request_id"), "req-1");
	assert_int_equal(json_integer_value(json_object_get(entry, "seq")), res.log_seq);
	assert_int_equal(json_array_size(json_object_get(entry, "sans")), 3);
	assert_string_equal(json_string_value(json_array_get(json_object_get(entry, "sans"), 2)),
	                    "10.1.2.3");
	json_decref(rows);

	X509_free(leaf);
	issue_result_free(&res);
	free(csr);
}

/* Requested lifetimes are clamped, and a leaf never outlives the intermediate. */
static void
test_lifetime_clamped(void **state)
{
	static const struct {
		int64_t ttl, want;
	} cases[] = {
	    {0, 24 * 3600},
	    {60, 5 * 60},
	    {200 * 86400, 90 * 86400},
	};
	char *csr = make_csr(fx.p256, NULL, 0, 0);
	struct issue_result res;
	struct ac_err err;

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		struct issue_request req = request(csr);

		req.ttl = cases[i].ttl;
		ac_err_clear(&err);
		assert_int_equal(ca_issue(&fx.iss, &req, &res, &err), 0);
		assert_int_equal(res.not_after - res.not_before, cases[i].want + 60);
		issue_result_free(&res);
	}

	/* An intermediate that ends in 2 hours caps a 1-day request. */
	{
		int64_t saved = fx.ca->intermediate_not_after;
		struct issue_request req = request(csr);

		fx.ca->intermediate_not_after = (int64_t)time(NULL) + 7200;
		ac_err_clear(&err);
		assert_int_equal(ca_issue(&fx.iss, &req, &res, &err), 0);
		assert_int_equal(res.not_after, fx.ca->intermediate_not_after);
		issue_result_free(&res);
		fx.ca->intermediate_not_after = saved;
	}
	free(csr);
}

static void
test_other_key_types(void **state)
{
	static const struct {
		const char *type, *arg;
		int key_encipherment;
	} cases[] = {
	    {"ED25519", NULL, 0},
	    {"RSA", "2048", 1},
	    {"EC", "P-384", 0},
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		EVP_PKEY *key = keygen(cases[i].type, cases[i].arg);
		char *csr = make_csr(key, NULL, 0, 0);
		struct issue_request req = request(csr);
		struct issue_result res;
		struct ac_err err;
		X509 *leaf;

		ac_err_clear(&err);
		if (ca_issue(&fx.iss, &req, &res, &err) != 0)
			fail_msg("%s refused: %s", cases[i].type, err.msg);
		leaf = pem_cert(res.cert_pem);
		assert_verifies(leaf);
		assert_true(has_san(leaf, GEN_URI, SUBJECT, strlen(SUBJECT)));
		assert_int_equal(X509_get_key_usage(leaf),
		                 KU_DIGITAL_SIGNATURE |
		                     (cases[i].key_encipherment ? KU_KEY_ENCIPHERMENT : 0));
		X509_free(leaf);
		issue_result_free(&res);
		free(csr);
		EVP_PKEY_free(key);
	}
}

/* One refusal: the key, the CSR's SANs, the subject, how to spoil it, and what must come of
 * it. */
struct refusal_case {
	const char *name;
	const char *key_type, *key_arg; /* NULL: the shared P-256 key */
	const struct san_spec *sans;
	size_t san_count;
	const char *subject; /* NULL: SUBJECT */
	int corrupt;         /* flip a signature bit */
	const char *raw;     /* non-NULL: send this instead of a CSR */
	const struct cfg_strlist *allowed_dns;
	const char *reason;
	enum ac_errcode code;
};

static void
check_refusal(const struct refusal_case *c)
{
	EVP_PKEY *key = c->key_type != NULL ? keygen(c->key_type, c->key_arg) : NULL;
	char *csr = c->raw != NULL
	                ? strdup(c->raw)
	                : make_csr(key != NULL ? key : fx.p256, c->sans, c->san_count, c->corrupt);
	struct issue_request req = request(csr);
	struct issue_result res;
	int64_t before = cert_count();
	uint64_t head = log_head();
	struct ac_err err;
	json_t *rows, *entry;

	if (c->subject != NULL)
		req.subject = c->subject;
	req.allowed_dns = c->allowed_dns;
	ac_err_clear(&err);
	if (ca_issue(&fx.iss, &req, &res, &err) != -1)
		fail_msg("%s: issued", c->name);
	if (err.reason == NULL || strcmp(err.reason, c->reason) != 0)
		fail_msg("%s: reason %s (%s), want %s", c->name, err.reason, err.msg, c->reason);
	if (err.code != c->code)
		fail_msg("%s: code %d, want %d", c->name, err.code, c->code);
	assert_null(res.cert_pem);

	/* Exactly one log entry: the denial, with that reason. No certificate row. */
	rows = log_since(head);
	if (json_array_size(rows) != 1)
		fail_msg("%s: %zu log entries", c->name, json_array_size(rows));
	entry = json_array_get(rows, 0);
	assert_string_equal(str(entry, "kind"), "denied");
	assert_string_equal(str(entry, "reason"), c->reason);
	assert_string_equal(str(entry, "detail"), err.msg);
	assert_string_equal(str(entry, "actor"), "admin:test");
	assert_string_equal(str(entry, "request_id"), "req-1");
	assert_null(json_object_get(entry, "serial"));
	assert_int_equal(cert_count(), before);

	json_decref(rows);
	free(csr);
	EVP_PKEY_free(key);
}

static void
test_refusals_table(void **state)
{
	static const unsigned char far_ip[4] = {192, 0, 2, 1};
	static const struct san_spec outside[] = {{GEN_DNS, "www.example.com", 0}};
	static const struct san_spec nul[] = {{GEN_DNS, "gw\0.corp.internal", 17}};
	static const struct san_spec ctl[] = {{GEN_DNS, "gw\n.corp.internal", 0}};
	static const struct san_spec wild[] = {{GEN_DNS, "*.corp.internal", 0}};
	static const struct san_spec other_uri[] = {{GEN_URI, "spiffe://corp.internal/admin", 0}};
	static const struct san_spec email[] = {{GEN_EMAIL, "a@corp.internal", 0}};
	static const struct san_spec ip[] = {{GEN_IPADD, (const char *)far_ip, 4}};
	static const struct san_spec granted[] = {{GEN_DNS, "db.corp.internal", 0}};
	static const char *const grant_items[] = {"gw-1.corp.internal"};
	static const struct cfg_strlist grant = {(char **)grant_items, 1};
	struct san_spec *thousand = calloc(1000, sizeof(*thousand));
	char nul_subject[] = "spiffe://corp.internal/gw\x01x";
	struct san_spec sixteen[16];

	(void)state;
	assert_non_null(thousand);
	for (size_t i = 0; i < 1000; i++)
		thousand[i] = (struct san_spec){GEN_DNS, "a.corp.internal", 0};
	/* 16 DNS names and the SPIFFE ID: one over the default limit. */
	for (size_t i = 0; i < ARRAY_LEN(sixteen); i++)
		sixteen[i] = (struct san_spec){GEN_DNS, "gw-1.corp.internal", 0};
	{
		const struct refusal_case cases[] = {
		    {"bad signature", NULL, NULL, NULL, 0, NULL, 1, NULL, NULL, "csr_bad_signature",
		     AC_ERR_INVALID},
		    {"garbage", NULL, NULL, NULL, 0, NULL, 0, "this is not a CSR", NULL,
		     "csr_malformed", AC_ERR_INVALID},
		    {"truncated PEM", NULL, NULL, NULL, 0, NULL, 0,
		     "-----BEGIN CERTIFICATE REQUEST-----\nMIIB", NULL, "csr_malformed",
		     AC_ERR_INVALID},
		    {"RSA-1024", "RSA", "1024", NULL, 0, NULL, 0, NULL, NULL, "key_too_weak",
		     AC_ERR_POLICY},
		    {"P-521", "EC", "P-521", NULL, 0, NULL, 0, NULL, NULL, "key_type_not_allowed",
		     AC_ERR_POLICY},
		    {"secp256k1", "EC", "secp256k1", NULL, 0, NULL, 0, NULL, NULL,
		     "key_type_not_allowed", AC_ERR_POLICY},
		    {"Ed448", "ED448", NULL, NULL, 0, NULL, 0, NULL, NULL, "key_type_not_allowed",
		     AC_ERR_POLICY},
		    {"DNS outside policy", NULL, NULL, outside, 1, NULL, 0, NULL, NULL,
		     "name_outside_policy", AC_ERR_POLICY},
		    {"NUL in DNS", NULL, NULL, nul, 1, NULL, 0, NULL, NULL, "name_invalid",
		     AC_ERR_INVALID},
		    {"newline in DNS", NULL, NULL, ctl, 1, NULL, 0, NULL, NULL, "name_invalid",
		     AC_ERR_INVALID},
		    {"wildcard", NULL, NULL, wild, 1, NULL, 0, NULL, NULL, "name_invalid",
		     AC_ERR_INVALID},
		    {"another URI", NULL, NULL, other_uri, 1, NULL, 0, NULL, NULL,
		     "name_outside_policy", AC_ERR_POLICY},
		    {"email SAN", NULL, NULL, email, 1, NULL, 0, NULL, NULL, "name_outside_policy",
		     AC_ERR_POLICY},
		    {"IP outside ranges", NULL, NULL, ip, 1, NULL, 0, NULL, NULL,
		     "name_outside_policy", AC_ERR_POLICY},
		    {"DNS not granted", NULL, NULL, granted, 1, NULL, 0, NULL, &grant,
		     "name_outside_policy", AC_ERR_POLICY},
		    {"17 SANs", NULL, NULL, sixteen, 16, NULL, 0, NULL, NULL, "too_many_sans",
		     AC_ERR_POLICY},
		    {"1000 SANs", NULL, NULL, thousand, 1000, NULL, 0, NULL, NULL, "too_many_sans",
		     AC_ERR_POLICY},
		    {"other trust domain", NULL, NULL, NULL, 0, "spiffe://other.internal/gw-1", 0,
		     NULL, NULL, "subject_invalid", AC_ERR_POLICY},
		    {"subject without path", NULL, NULL, NULL, 0, "spiffe://corp.internal", 0, NULL,
		     NULL, "subject_invalid", AC_ERR_INVALID},
		    {"control byte in subject", NULL, NULL, NULL, 0, nul_subject, 0, NULL, NULL,
		     "subject_invalid", AC_ERR_INVALID},
		    {"invalid UTF-8 subject", NULL, NULL, NULL, 0,
		     "spiffe://corp.internal/\xff\xfe", 0, NULL, NULL, "subject_invalid",
		     AC_ERR_INVALID},
		};

		for (size_t i = 0; i < ARRAY_LEN(cases); i++)
			check_refusal(&cases[i]);
	}
	free(thousand);
}

/* With a CRL and an OCSP URL in policy, leaves point at both. */
static void
test_crl_and_ocsp_urls(void **state)
{
	char *csr = make_csr(fx.p256, NULL, 0, 0);
	struct issue_request req = request(csr);
	struct issue_result res;
	struct ac_err err;
	CRL_DIST_POINTS *points;
	AUTHORITY_INFO_ACCESS *aia;
	const ASN1_STRING *uri;
	X509 *leaf;
	int type;

	(void)state;
	fx.policy.crl_url = strdup("http://ca.corp.internal/v1/crl");
	fx.policy.ocsp_url = strdup("http://ca.corp.internal/v1/ocsp");
	ac_err_clear(&err);
	assert_int_equal(ca_issue(&fx.iss, &req, &res, &err), 0);
	leaf = pem_cert(res.cert_pem);
	assert_verifies(leaf);

	points = X509_get_ext_d2i(leaf, NID_crl_distribution_points, NULL, NULL);
	assert_non_null(points);
	assert_int_equal(sk_DIST_POINT_num(points), 1);
	uri = GENERAL_NAME_get0_value(
	    sk_GENERAL_NAME_value(sk_DIST_POINT_value(points, 0)->distpoint->name.fullname, 0),
	    &type);
	assert_int_equal(type, GEN_URI);
	assert_string_equal((const char *)ASN1_STRING_get0_data(uri), fx.policy.crl_url);
	CRL_DIST_POINTS_free(points);

	aia = X509_get_ext_d2i(leaf, NID_info_access, NULL, NULL);
	assert_non_null(aia);
	assert_int_equal(sk_ACCESS_DESCRIPTION_num(aia), 1);
	assert_int_equal(OBJ_obj2nid(sk_ACCESS_DESCRIPTION_value(aia, 0)->method), NID_ad_OCSP);
	uri = GENERAL_NAME_get0_value(sk_ACCESS_DESCRIPTION_value(aia, 0)->location, &type);
	assert_int_equal(type, GEN_URI);
	assert_string_equal((const char *)ASN1_STRING_get0_data(uri), fx.policy.ocsp_url);
	AUTHORITY_INFO_ACCESS_free(aia);

	free(fx.policy.crl_url);
	free(fx.policy.ocsp_url);
	fx.policy.crl_url = NULL;
	fx.policy.ocsp_url = NULL;
	X509_free(leaf);
	issue_result_free(&res);
	free(csr);
}

/* With a renewal planner, renew_after is the planner's choice inside the window [1/2, 3/4]
 * of the lifetime counted from issuance, recorded with the certificate; a second leaf of the
 * same minute moves off the full preferred minute; a planned switch still shrinks it. */
static void
test_planner_renew_after(void **state)
{
	char *csr = make_csr(fx.p256, NULL, 0, 0);
	struct issue_request req = request(csr);
	struct issue_result first, second, early;
	struct renewal_plan *planner;
	struct cert_row row;
	struct ac_err err;
	int64_t issued, supersede;

	(void)state;
	ac_err_clear(&err);
	planner = renewal_plan_new(&err);
	assert_non_null(planner);
	fx.iss.planner = planner;
	req.ttl = 3600;
	assert_int_equal(ca_issue(&fx.iss, &req, &first, &err), 0);
	issued = first.not_before + 60;
	assert_int_equal(first.renew_after, issued + 2400); /* preferred: 2/3, load is light */
	assert_int_equal(store_cert_get(fx.store, first.serial, &row, &err), 0);
	assert_int_equal(row.renew_after, first.renew_after);
	store_cert_row_free(&row);
	assert_int_equal(ca_issue(&fx.iss, &req, &second, &err), 0);
	assert_true(second.renew_after >= second.not_before + 60 + 1800);
	assert_true(second.renew_after <= second.not_before + 60 + 2700);
	assert_true(second.renew_after / 60 != first.renew_after / 60);

	supersede = (int64_t)time(NULL) + 600;
	fx.iss.supersede_at = supersede;
	assert_int_equal(ca_issue(&fx.iss, &req, &early, &err), 0);
	assert_true(early.renew_after >= supersede);
	assert_true(early.renew_after <=
	            supersede + (early.not_before + 60 + 2400 - supersede) / 2);
	assert_int_equal(store_cert_get(fx.store, early.serial, &row, &err), 0);
	assert_int_equal(row.renew_after, early.renew_after);
	store_cert_row_free(&row);

	fx.iss.supersede_at = 0;
	fx.iss.planner = NULL;
	renewal_plan_free(planner);
	issue_result_free(&first);
	issue_result_free(&second);
	issue_result_free(&early);
	free(csr);
}

/* 16 SANs (the SPIFFE ID and 15 more) is the default limit and is fine; a granted DNS name
 * is fine. */
static void
test_san_limit_and_grant(void **state)
{
	struct san_spec fifteen[15];
	static const char *const grant_items[] = {"GW-1.corp.internal"};
	static const struct cfg_strlist grant = {(char **)grant_items, 1};
	struct issue_request req;
	struct issue_result res;
	struct ac_err err;
	char *csr;

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(fifteen); i++)
		fifteen[i] = (struct san_spec){GEN_DNS, "gw-1.corp.internal", 0};
	csr = make_csr(fx.p256, fifteen, ARRAY_LEN(fifteen), 0);
	req = request(csr);
	req.allowed_dns = &grant;
	ac_err_clear(&err);
	if (ca_issue(&fx.iss, &req, &res, &err) != 0)
		fail_msg("refused: %s", err.msg);
	issue_result_free(&res);
	free(csr);
}

static void
test_token_used_twice(void **state)
{
	char *csr = make_csr(fx.p256, NULL, 0, 0);
	struct issue_request req = request(csr);
	struct issue_result res;
	struct ac_err err;
	int64_t before;
	uint64_t head;

	(void)state;
	req.token_jti = "jti-once";
	req.token_expires = (int64_t)time(NULL) + 600;
	req.actor = "token:jti-once";
	ac_err_clear(&err);
	assert_int_equal(ca_issue(&fx.iss, &req, &res, &err), 0);
	issue_result_free(&res);

	before = cert_count();
	head = log_head();
	ac_err_clear(&err);
	assert_int_equal(ca_issue(&fx.iss, &req, &res, &err), -1);
	assert_int_equal(err.code, AC_ERR_CONFLICT);
	assert_null(res.cert_pem);
	assert_int_equal(cert_count(), before);
	assert_int_equal(log_head(), head);
	free(csr);
}

/* A store whose commit fails: ca_issue hands nothing out, and nothing is recorded. */
static int
fail_commit(void *arg, const char *point)
{
	(void)arg;
	return strcmp(point, "commit") == 0;
}

static void
test_failed_commit_hands_out_nothing(void **state)
{
	char *csr = make_csr(fx.p256, NULL, 0, 0);
	struct issue_request req = request(csr);
	struct store_options sopts;
	struct issue_result res;
	struct issuer iss = fx.iss;
	char path[4096];
	struct ac_err err;
	int64_t n = -1;

	(void)state;
	snprintf(path, sizeof(path), "%s/failing.db", fx.dir);
	store_options_defaults(&sopts);
	sopts.path = path;
	sopts.fault = fail_commit;
	ac_err_clear(&err);
	iss.store = store_open(&sopts, &err);
	assert_non_null(iss.store);
	assert_int_equal(ca_issue(&iss, &req, &res, &err), -1);
	assert_true(err.code != AC_OK);
	assert_null(res.cert_pem);
	assert_int_equal(res.serial[0], '\0');
	ac_err_clear(&err);
	assert_int_equal(store_cert_count(iss.store, &n, &err), 0);
	assert_int_equal(n, 0);
	store_close(iss.store);
	free(csr);
}

/* 1000 issuances from 8 threads: 1000 distinct serials, 1000 rows. */
#define RUN_THREADS 8
#define RUN_TOTAL 1000

struct run {
	const char *csr;
	size_t first, count;
	char (*serials)[41];
	int failures;
};

static void *
run_issue(void *arg)
{
	struct run *r = arg;

	for (size_t i = 0; i < r->count; i++) {
		struct issue_request req = request(r->csr);
		struct issue_result res;
		struct ac_err err;

		ac_err_clear(&err);
		if (ca_issue(&fx.iss, &req, &res, &err) != 0) {
			r->failures++;
			continue;
		}
		memcpy(r->serials[r->first + i], res.serial, 41);
		issue_result_free(&res);
	}
	return NULL;
}

static int
cmp_serial(const void *a, const void *b)
{
	return strcmp(a, b);
}

static void
test_thousand_distinct_serials(void **state)
{
	char *csr = make_csr(fx.p256, NULL, 0, 0);
	char(*serials)[41] = calloc(RUN_TOTAL, sizeof(*serials));
	struct run runs[RUN_THREADS];
	pthread_t threads[RUN_THREADS];
	int64_t before = cert_count();

	(void)state;
	assert_non_null(serials);
	for (size_t t = 0; t < RUN_THREADS; t++) {
		runs[t] = (struct run){csr, t * (RUN_TOTAL / RUN_THREADS), RUN_TOTAL / RUN_THREADS,
		                       serials, 0};
		assert_int_equal(pthread_create(&threads[t], NULL, run_issue, &runs[t]), 0);
	}
	for (size_t t = 0; t < RUN_THREADS; t++) {
		assert_int_equal(pthread_join(threads[t], NULL), 0);
		assert_int_equal(runs[t].failures, 0);
	}
	qsort(serials, RUN_TOTAL, sizeof(*serials), cmp_serial);
	for (size_t i = 0; i < RUN_TOTAL; i++) {
		assert_int_equal(strlen(serials[i]), 32);
		if (i > 0 && strcmp(serials[i - 1], serials[i]) == 0)
			fail_msg("serial %s issued twice", serials[i]);
	}
	assert_int_equal(cert_count(), before + RUN_TOTAL);
	free(serials);
	free(csr);
}

/* Serials come from a per-thread buffer of DRBG output (x509_build.c): a child made by
 * fork() must not hand out the serials its parent's buffer holds next. */
static void
test_serials_after_fork(void **state)
{
	unsigned char bytes[X509_SERIAL_BYTES];
	char first[41], parent[41], child[41] = "";
	struct ac_err err;
	int fds[2], status = 0;
	pid_t pid;

	(void)state;
	ac_err_clear(&err);
	/* Fill the buffer, so the next serials are already in memory when the child forks. */
	assert_int_equal(x509_random_serial(bytes, first, &err), 0);
	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char mine[41];

		close(fds[0]);
		if (x509_random_serial(bytes, mine, &err) != 0 ||
		    write(fds[1], mine, sizeof(mine)) != (ssize_t)sizeof(mine))
			_exit(1);
		_exit(0);
	}
	close(fds[1]);
	assert_int_equal(read(fds[0], child, sizeof(child)), (ssize_t)sizeof(child));
	close(fds[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_int_equal(x509_random_serial(bytes, parent, &err), 0);
	assert_int_equal(strlen(child), 32);
	assert_string_not_equal(child, parent);
	assert_string_not_equal(child, first);
}

/*
 * The leaf is encoded by hand (ca/issue.c, step 7). Its TBSCertificate must be the very bytes
 * OpenSSL's typed API makes from the same values: the reference below is built with X509
 * setters and extensions from OpenSSL's config syntax, signed by the intermediate, and its
 * TBSCertificate compared byte for byte with the leaf's, for each shape a leaf can take.
 */
struct der_case {
	const char *key_type, *key_arg;
	const char *dns; /* NULL: no DNS name, so no CN */
	int with_ip;
	int with_urls; /* CRL and OCSP URLs in policy */
};

static void
add_text_ext(X509 *cert, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *ext;

	X509V3_set_ctx(&ctx, fx.ca->intermediate, cert, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (ext == NULL)
		fail_msg("extension %s = %s refused", OBJ_nid2sn(nid), value);
	assert_int_equal(X509_add_ext(cert, ext, -1), 1);
	X509_EXTENSION_free(ext);
}

/* The TBSCertificate OpenSSL builds for leaf's serial and validity, key and names. */
static unsigned char *
reference_tbs(X509 *leaf, EVP_PKEY *key, const struct der_case *c, int *len)
{
	X509 *ref = X509_new();
	X509_NAME *subject = X509_NAME_new();
	ASN1_OCTET_STRING *ski = ASN1_OCTET_STRING_new();
	unsigned char *spki = NULL, md[32], *tbs = NULL;
	char san[512];
	int spki_len;

	assert_non_null(ref);
	assert_int_equal(X509_set_version(ref, X509_VERSION_3), 1);
	assert_int_equal(X509_set_serialNumber(ref, (ASN1_INTEGER *)X509_get0_serialNumber(leaf)),
	                 1);
	assert_int_equal(X509_set_issuer_name(ref, X509_get_subject_name(fx.ca->intermediate)), 1);
	assert_non_null(
	    ASN1_TIME_set(X509_getm_notBefore(ref), asn1_time_to_unix(X509_get0_notBefore(leaf))));
	assert_non_null(
	    ASN1_TIME_set(X509_getm_notAfter(ref), asn1_time_to_unix(X509_get0_notAfter(leaf))));
	assert_int_equal(X509_NAME_add_entry_by_txt(subject, "O", MBSTRING_UTF8,
	                                            (const unsigned char *)fx.ca->name, -1, -1, 0),
	                 1);
	if (c->dns != NULL && strlen(c->dns) <= 64) /* a longer name is in the SAN only */
		assert_int_equal(X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8,
		                                            (const unsigned char *)c->dns, -1, -1,
		                                            0),
		                 1);
	assert_int_equal(X509_set_subject_name(ref, subject), 1);
	assert_int_equal(X509_set_pubkey(ref, key), 1);

	add_text_ext(ref, NID_basic_constraints, "critical,CA:FALSE");
	add_text_ext(ref, NID_key_usage,
	             EVP_PKEY_is_a(key, "RSA") ? "critical,digitalSignature,keyEncipherment"
	                                       : "critical,digitalSignature");
	add_text_ext(ref, NID_ext_key_usage, "serverAuth,clientAuth");
	spki_len = i2d_PUBKEY(key, &spki);
	assert_true(spki_len > 0);
	assert_int_equal(EVP_Digest(spki, (size_t)spki_len, md, NULL, EVP_sha256(), NULL), 1);
	assert_int_equal(ASN1_OCTET_STRING_set(ski, md, sizeof(md)), 1);
	assert_int_equal(X509_add1_ext_i2d(ref, NID_subject_key_identifier, ski, 0, 0), 1);
	add_text_ext(ref, NID_authority_key_identifier, "keyid:always");
	snprintf(san, sizeof(san), "URI:%s%s%s%s", SUBJECT, c->dns != NULL ? ",DNS:" : "",
	         c->dns != NULL ? c->dns : "", c->with_ip ? ",IP:10.1.2.3,IP:fd00::7" : "");
	add_text_ext(ref, NID_subject_alt_name, san);
	if (c->with_urls) {
		add_text_ext(ref, NID_crl_distribution_points,
		             "URI:http://ca.corp.internal/v1/crl");
		add_text_ext(ref, NID_info_access, "OCSP;URI:http://ca.corp.internal/v1/ocsp");
	}
	assert_true(X509_sign(ref, fx.ca->intermediate_key, fx.ca->sign_md) > 0);
	*len = i2d_re_X509_tbs(ref, &tbs);
	assert_true(*len > 0);
	OPENSSL_free(spki);
	ASN1_OCTET_STRING_free(ski);
	X509_NAME_free(subject);
	X509_free(ref);
	return tbs;
}

/* The leaf's TBSCertificate exactly as issued (OpenSSL 3.0 has no i2d_X509_tbs): the first
 * element inside the Certificate SEQUENCE of its DER. */
static int
leaf_tbs(X509 *leaf, unsigned char **out)
{
	unsigned char *der = NULL;
	const unsigned char *p;
	long content_len;
	int der_len, tag, xclass, tbs_len;

	der_len = i2d_X509(leaf, &der);
	assert_true(der_len > 0);
	p = der;
	assert_int_equal(ASN1_get_object(&p, &content_len, &tag, &xclass, der_len) & 0x80, 0);
	{
		const unsigned char *tbs = p;

		assert_int_equal(
		    ASN1_get_object(&p, &content_len, &tag, &xclass, der_len - (long)(tbs - der)) &
		        0x80,
		    0);
		tbs_len = (int)(p - tbs) + (int)content_len;
		*out = OPENSSL_memdup(tbs, (size_t)tbs_len);
	}
	assert_non_null(*out);
	OPENSSL_free(der);
	return tbs_len;
}

static void
test_leaf_der_matches_openssl(void **state)
{
	static const unsigned char ip4[4] = {10, 1, 2, 3};
	static const unsigned char ip6[16] = {0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7};
	static const struct der_case cases[] = {
	    {"EC", "P-256", "gw-1.corp.internal", 1, 0},
	    {"EC", "P-256", NULL, 0, 0},
	    {"EC", "P-256", "gw-1.corp.internal", 0, 1},
	    {"EC", "P-384", "gw-1.corp.internal", 1, 1},
	    {"RSA", "2048", "gw-1.corp.internal", 0, 0},
	    {"ED25519", NULL, NULL, 1, 0},
	    /* a DNS name longer than a CN may be: in the SAN only */
	    {"EC", "P-256", "a-name-that-is-longer-than-sixty-four-characters-in-all.corp.internal",
	     0, 0},
	};

	struct ac_err range_err;

	(void)state;
	ac_err_clear(&range_err);
	assert_int_equal(cfg_strlist_add(&fx.policy.ip_ranges, "fd00::/8", &range_err), 0);
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		const struct der_case *c = &cases[i];
		EVP_PKEY *key = keygen(c->key_type, c->key_arg);
		struct san_spec sans[4];
		size_t n = 0;
		struct issue_request req;
		struct issue_result res;
		struct ac_err err;
		unsigned char *want, *got = NULL, *again = NULL;
		int want_len, got_len, again_len;
		char *pem;
		char *csr;
		X509 *leaf;

		sans[n++] = (struct san_spec){GEN_URI, SUBJECT, 0};
		if (c->dns != NULL)
			sans[n++] = (struct san_spec){GEN_DNS, c->dns, 0};
		if (c->with_ip) {
			sans[n++] = (struct san_spec){GEN_IPADD, (const char *)ip4, 4};
			sans[n++] = (struct san_spec){GEN_IPADD, (const char *)ip6, 16};
		}
		if (c->with_urls) {
			fx.policy.crl_url = strdup("http://ca.corp.internal/v1/crl");
			fx.policy.ocsp_url = strdup("http://ca.corp.internal/v1/ocsp");
		}
		csr = make_csr(key, sans, n, 0);
		req = request(csr);
		ac_err_clear(&err);
		if (ca_issue(&fx.iss, &req, &res, &err) != 0)
			fail_msg("case %zu refused: %s", i, err.msg);
		leaf = pem_cert(res.cert_pem);
		assert_verifies(leaf);
		/* The PEM is what OpenSSL writes for these DER bytes. */
		pem = x509_to_pem(leaf, NULL, &err);
		assert_non_null(pem);
		assert_string_equal(pem, res.cert_pem);
		free(pem);
		want = reference_tbs(leaf, key, c, &want_len);
		got_len = leaf_tbs(leaf, &got);
		/* Decoded and encoded again, the bytes stay the same: the DER is canonical. */
		again_len = i2d_re_X509_tbs(leaf, &again);
		assert_int_equal(again_len, got_len);
		assert_memory_equal(again, got, (size_t)got_len);
		OPENSSL_free(again);
		if (got_len != want_len || memcmp(got, want, (size_t)got_len) != 0)
			fail_msg(
			    "case %zu (%s %s): the leaf's TBSCertificate (%d bytes) differs from "
			    "OpenSSL's (%d bytes)",
			    i, c->key_type, c->key_arg != NULL ? c->key_arg : "", got_len,
			    want_len);
		OPENSSL_free(got);
		OPENSSL_free(want);
		X509_free(leaf);
		issue_result_free(&res);
		free(csr);
		EVP_PKEY_free(key);
		free(fx.policy.crl_url);
		free(fx.policy.ocsp_url);
		fx.policy.crl_url = NULL;
		fx.policy.ocsp_url = NULL;
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_good_p256),
	    cmocka_unit_test(test_lifetime_clamped),
	    cmocka_unit_test(test_other_key_types),
	    cmocka_unit_test(test_refusals_table),
	    cmocka_unit_test(test_crl_and_ocsp_urls),
	    cmocka_unit_test(test_planner_renew_after),
	    cmocka_unit_test(test_san_limit_and_grant),
	    cmocka_unit_test(test_token_used_twice),
	    cmocka_unit_test(test_failed_commit_hands_out_nothing),
	    cmocka_unit_test(test_thousand_distinct_serials),
	    cmocka_unit_test(test_serials_after_fork),
	    cmocka_unit_test(test_leaf_der_matches_openssl),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
