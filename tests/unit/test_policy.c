/*
 * test_policy.c - the issuance policy checks, walked as tables of {input, expected reason}.
 */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/dsa.h>
#include <openssl/evp.h>

#include "ca/policy.h"
#include "testutil.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define TD "corp.internal"

/* One name check: input bytes (with explicit length, so NULs count), expected reason
 * (NULL: accepted). */
struct name_case {
	const char *input;
	size_t len; /* 0: strlen(input) */
	const char *reason;
};

#define NC(s, r)                                                                                   \
	{                                                                                          \
		s, sizeof(s) - 1, r                                                                \
	}

static void
policy_setup(struct ca_policy *p)
{
	struct ac_err err;
	static const char *const ranges[] = {"10.0.0.0/8", "192.168.1.128/25", "fd00::/8",
	                                     "2001:db8::1"};

	ac_err_clear(&err);
	assert_int_equal(ca_policy_defaults(p, TD, &err), 0);
	assert_int_equal(cfg_strlist_add(&p->dns_suffixes, "svc.example.com", &err), 0);
	assert_int_equal(cfg_strlist_set(&p->ip_ranges, ranges, ARRAY_LEN(ranges), &err), 0);
	assert_int_equal(ca_policy_validate(p, &err), 0);
}

static void
test_defaults(void **state)
{
	struct ca_policy p;
	struct ac_err err;

	(void)state;
	ac_err_clear(&err);
	assert_int_equal(ca_policy_defaults(&p, TD, &err), 0);
	assert_int_equal(p.default_ttl, 24 * 3600);
	assert_int_equal(p.min_ttl, 5 * 60);
	assert_int_equal(p.max_ttl, 90 * 86400);
	assert_int_equal(p.max_sans, 16);
	assert_int_equal(p.dns_suffixes.count, 1);
	assert_string_equal(p.dns_suffixes.items[0], TD);
	assert_int_equal(p.ip_ranges.count, 0);
	assert_null(p.crl_url);
	assert_null(p.ocsp_url);
	assert_int_equal(ca_policy_validate(&p, &err), 0);
	ca_policy_free(&p);
	ca_policy_free(NULL);
}

static void
test_spiffe_table(void **state)
{
	static const struct name_case cases[] = {
	    NC("spiffe://corp.internal/gw-1", NULL),
	    NC("spiffe://corp.internal/gw-1/child-3", NULL),
	    NC("spiffe://corp.internal/A.b_c-D/9", NULL),
	    NC("spiffe://corp.internal/...x", NULL),
	    NC("", "subject_invalid"),
	    NC("spiffe://corp.internal", "subject_invalid"),
	    NC("spiffe://corp.internal/", "subject_invalid"),
	    NC("spiffe://corp.internal/gw-1/", "subject_invalid"),
	    NC("spiffe://corp.internal//gw-1", "subject_invalid"),
	    NC("spiffe://corp.internal/gw/./x", "subject_invalid"),
	    NC("spiffe://corp.internal/gw/../x", "subject_invalid"),
	    NC("spiffe://corp.internal/..", "subject_invalid"),
	    NC("spiffe://corp.internal/gw?x=1", "subject_invalid"),
	    NC("spiffe://corp.internal/gw#frag", "subject_invalid"),
	    NC("spiffe://user@corp.internal/gw", "subject_invalid"),
	    NC("spiffe://corp.internal:443/gw", "subject_invalid"),
	    NC("SPIFFE://corp.internal/gw", "subject_invalid"),
	    NC("https://corp.internal/gw", "subject_invalid"),
	    NC("spiffe:/corp.internal/gw", "subject_invalid"),
	    NC("spiffe://Corp.Internal/gw", "subject_invalid"),
	    NC("spiffe:///gw", "subject_invalid"),
	    NC("spiffe://corp.internal/g%41w", "subject_invalid"),
	    NC("spiffe://corp.internal/g w", "subject_invalid"),
	    NC("spiffe://corp.internal/gw\x00x", "subject_invalid"),
	    NC("spiffe://corp.internal/gw\nx", "subject_invalid"),
	    NC("spiffe://corp.internal/caf\xc3\xa9", "subject_invalid"),
	    NC("spiffe://other.internal/gw", "subject_invalid"),
	    NC("spiffe://corp.internal.evil/gw", "subject_invalid"),
	    NC("spiffe://internal/gw", "subject_invalid"),
	};
	char longid[POLICY_SPIFFE_ID_MAX + 16];
	struct ac_err err;

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		int rc;

		ac_err_clear(&err);
		rc = policy_check_spiffe_id(cases[i].input, cases[i].len, TD, &err);
		if (cases[i].reason == NULL) {
			if (rc != 0)
				fail_msg("case %zu (%s): refused: %s", i, cases[i].input, err.msg);
		} else {
			if (rc != -1)
				fail_msg("case %zu (%s): accepted", i, cases[i].input);
			assert_string_equal(err.reason, cases[i].reason);
		}
	}

	/* A NUL is named in the message, escaped. */
	ac_err_clear(&err);
	assert_int_equal(policy_check_spiffe_id("spiffe://corp.internal/a\0b", 26, TD, &err), -1);
	assert_non_null(strstr(err.msg, "a\\x00b"));
	assert_non_null(strstr(err.msg, "NUL"));

	/* Another trust domain is a policy refusal, malformed syntax an invalid request. */
	ac_err_clear(&err);
	assert_int_equal(policy_check_spiffe_id("spiffe://other.internal/gw", 26, TD, &err), -1);
	assert_int_equal(err.code, AC_ERR_POLICY);
	ac_err_clear(&err);
	assert_int_equal(policy_check_spiffe_id("spiffe://corp.internal/", 23, TD, &err), -1);
	assert_int_equal(err.code, AC_ERR_INVALID);

	/* Exactly 2048 bytes is fine, 2049 is not. */
	memcpy(longid, "spiffe://corp.internal/", 23);
	memset(longid + 23, 'a', sizeof(longid) - 23);
	ac_err_clear(&err);
	assert_int_equal(policy_check_spiffe_id(longid, POLICY_SPIFFE_ID_MAX, TD, &err), 0);
	assert_int_equal(policy_check_spiffe_id(longid, POLICY_SPIFFE_ID_MAX + 1, TD, &err), -1);
	assert_string_equal(err.reason, "subject_invalid");
}

static void
test_dns_table(void **state)
{
	static const struct name_case cases[] = {
	    NC("corp.internal", NULL),
	    NC("gw-1.corp.internal", NULL),
	    NC("GW-1.Corp.Internal", NULL),
	    NC("a.b.c.corp.internal", NULL),
	    NC("api.svc.example.com", NULL),
	    NC("svc.example.com", NULL),
	    NC("xn--caf-dma.corp.internal", NULL),
	    NC("", "name_invalid"),
	    NC("gw\x00.corp.internal", "name_invalid"),
	    NC("corp.internal\x00.evil.com", "name_invalid"),
	    NC("gw\x01.corp.internal", "name_invalid"),
	    NC("gw\t.corp.internal", "name_invalid"),
	    NC("gw\x7f.corp.internal", "name_invalid"),
	    NC("*.corp.internal", "name_invalid"),
	    NC("gw*.corp.internal", "name_invalid"),
	    NC("gw..corp.internal", "name_invalid"),
	    NC(".corp.internal", "name_invalid"),
	    NC("corp.internal.", "name_invalid"),
	    NC("-gw.corp.internal", "name_invalid"),
	    NC("gw-.corp.internal", "name_invalid"),
	    NC("g_w.corp.internal", "name_invalid"),
	    NC("g w.corp.internal", "name_invalid"),
	    NC("caf\xc3\xa9.corp.internal", "name_invalid"),
	    NC("example.com", "name_outside_policy"),
	    NC("evilcorp.internal", "name_outside_policy"),
	    NC("corp.internal.evil.com", "name_outside_policy"),
	    NC("internal", "name_outside_policy"),
	    NC("example.com.evil", "name_outside_policy"),
	};
	struct ca_policy p;
	struct ac_err err;
	char name[300];

	(void)state;
	policy_setup(&p);
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		int rc;

		ac_err_clear(&err);
		rc = policy_check_dns(&p, cases[i].input, cases[i].len, &err);
		if (cases[i].reason == NULL) {
			if (rc != 0)
				fail_msg("case %zu (%s): refused: %s", i, cases[i].input, err.msg);
		} else {
			if (rc != -1)
				fail_msg("case %zu (%s): accepted", i, cases[i].input);
			if (strcmp(err.reason, cases[i].reason) != 0)
				fail_msg("case %zu (%s): reason %s, want %s", i, cases[i].input,
				         err.reason, cases[i].reason);
		}
	}

	/* The NUL is reported as such, with the name escaped. */
	ac_err_clear(&err);
	assert_int_equal(policy_check_dns(&p, "gw\0.corp.internal", 17, &err), -1);
	assert_int_equal(err.code, AC_ERR_INVALID);
	assert_non_null(strstr(err.msg, "gw\\x00.corp.internal"));
	assert_non_null(strstr(err.msg, "NUL"));
	ac_err_clear(&err);
	assert_int_equal(policy_check_dns(&p, "gw\x1b[31m.corp.internal", 21, &err), -1);
	assert_null(strchr(err.msg, '\x1b'));
	assert_non_null(strstr(err.msg, "control"));
	ac_err_clear(&err);
	assert_int_equal(policy_check_dns(&p, "example.com", 11, &err), -1);
	assert_int_equal(err.code, AC_ERR_POLICY);

	/* Label of 63 is fine, 64 is not. */
	memset(name, 'a', 63);
	memcpy(name + 63, ".corp.internal", 15);
	ac_err_clear(&err);
	assert_int_equal(policy_check_dns(&p, name, strlen(name), &err), 0);
	memset(name, 'a', 64);
	memcpy(name + 64, ".corp.internal", 15);
	assert_int_equal(policy_check_dns(&p, name, strlen(name), &err), -1);
	assert_string_equal(err.reason, "name_invalid");

	/* 253 bytes in total is fine, 254 is not. */
	memset(name, 'a', sizeof(name));
	for (size_t i = 50; i < 240; i += 50)
		name[i] = '.';
	memcpy(name + 253 - 14, ".corp.internal", 15);
	ac_err_clear(&err);
	assert_int_equal(strlen(name), 253);
	assert_int_equal(policy_check_dns(&p, name, 253, &err), 0);
	memset(name, 'a', sizeof(name));
	for (size_t i = 50; i < 240; i += 50)
		name[i] = '.';
	memcpy(name + 254 - 14, ".corp.internal", 15);
	assert_int_equal(policy_check_dns(&p, name, 254, &err), -1);
	assert_string_equal(err.reason, "name_invalid");
	assert_non_null(strstr(err.msg, "253"));
	ca_policy_free(&p);
}

static void
test_ip_table(void **state)
{
	static const struct {
		const char *text;
		int family;
		const char *reason;
	} cases[] = {
	    {"10.0.0.1", AF_INET, NULL},
	    {"10.255.255.255", AF_INET, NULL},
	    {"192.168.1.128", AF_INET, NULL},
	    {"192.168.1.255", AF_INET, NULL},
	    {"192.168.1.127", AF_INET, "name_outside_policy"},
	    {"11.0.0.1", AF_INET, "name_outside_policy"},
	    {"127.0.0.1", AF_INET, "name_outside_policy"},
	    {"fd00::1", AF_INET6, NULL},
	    {"fdff:ffff::1", AF_INET6, NULL},
	    {"2001:db8::1", AF_INET6, NULL},
	    {"2001:db8::2", AF_INET6, "name_outside_policy"},
	    {"fe80::1", AF_INET6, "name_outside_policy"},
	    {"::ffff:10.0.0.1", AF_INET6, "name_outside_policy"},
	};
	struct ca_policy p;
	struct ac_err err;
	unsigned char addr[16];

	(void)state;
	policy_setup(&p);
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		size_t len = cases[i].family == AF_INET ? 4 : 16;
		int rc;

		assert_int_equal(inet_pton(cases[i].family, cases[i].text, addr), 1);
		ac_err_clear(&err);
		rc = policy_check_ip(&p, addr, len, &err);
		if (cases[i].reason == NULL) {
			if (rc != 0)
				fail_msg("case %zu (%s): refused: %s", i, cases[i].text, err.msg);
		} else {
			if (rc != -1)
				fail_msg("case %zu (%s): accepted", i, cases[i].text);
			assert_string_equal(err.reason, cases[i].reason);
			assert_non_null(strstr(err.msg, cases[i].text));
		}
	}
	ac_err_clear(&err);
	assert_int_equal(policy_check_ip(&p, addr, 5, &err), -1);
	assert_string_equal(err.reason, "name_invalid");
	ca_policy_free(&p);

	/* The default policy allows no IP at all. */
	ac_err_clear(&err);
	assert_int_equal(ca_policy_defaults(&p, TD, &err), 0);
	assert_int_equal(inet_pton(AF_INET, "10.0.0.1", addr), 1);
	assert_int_equal(policy_check_ip(&p, addr, 4, &err), -1);
	assert_string_equal(err.reason, "name_outside_policy");
	ca_policy_free(&p);
}

/* A key of a type that takes no parameters (EVP_PKEY_Q_keygen cannot make RSA-PSS). */
static EVP_PKEY *
plain_keygen(const char *type)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
	EVP_PKEY *key = NULL;

	assert_non_null(ctx);
	assert_int_equal(EVP_PKEY_keygen_init(ctx), 1);
	assert_int_equal(EVP_PKEY_keygen(ctx, &key), 1);
	EVP_PKEY_CTX_free(ctx);
	return key;
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
		key = plain_keygen(type);
	assert_non_null(key);
	return key;
}

/* A DSA key: parameters first, then the key (slow-ish, so small). */
static EVP_PKEY *
dsa_keygen(void)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "DSA", NULL);
	EVP_PKEY *params = NULL, *key = NULL;
	EVP_PKEY_CTX *kctx;

	assert_non_null(ctx);
	assert_int_equal(EVP_PKEY_paramgen_init(ctx), 1);
	assert_int_equal(EVP_PKEY_CTX_set_dsa_paramgen_bits(ctx, 1024), 1);
	assert_int_equal(EVP_PKEY_paramgen(ctx, &params), 1);
	kctx = EVP_PKEY_CTX_new_from_pkey(NULL, params, NULL);
	assert_non_null(kctx);
	assert_int_equal(EVP_PKEY_keygen_init(kctx), 1);
	assert_int_equal(EVP_PKEY_keygen(kctx, &key), 1);
	EVP_PKEY_CTX_free(kctx);
	EVP_PKEY_free(params);
	EVP_PKEY_CTX_free(ctx);
	return key;
}

static void
test_key_table(void **state)
{
	static const struct {
		const char *type, *arg;
		const char *reason;
	} cases[] = {
	    {"EC", "P-256", NULL},
	    {"EC", "P-384", NULL},
	    {"ED25519", NULL, NULL},
	    {"RSA", "2048", NULL},
	    {"RSA", "1024", "key_too_weak"},
	    {"RSA", "512", "key_too_weak"},
	    {"EC", "P-521", "key_type_not_allowed"},
	    {"EC", "secp256k1", "key_type_not_allowed"},
	    {"EC", "brainpoolP256r1", "key_type_not_allowed"},
	    {"EC", "P-224", "key_type_not_allowed"},
	    {"ED448", NULL, "key_type_not_allowed"},
	    {"X25519", NULL, "key_type_not_allowed"},
	    {"RSA-PSS", NULL, "key_type_not_allowed"},
	};
	struct ac_err err;
	EVP_PKEY *key;

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		int rc;

		key = keygen(cases[i].type, cases[i].arg);
		ac_err_clear(&err);
		rc = policy_check_key(key, &err);
		if (cases[i].reason == NULL) {
			if (rc != 0)
				fail_msg("case %zu (%s %s): refused: %s", i, cases[i].type,
				         cases[i].arg ? cases[i].arg : "", err.msg);
		} else {
			if (rc != -1)
				fail_msg("case %zu (%s %s): accepted", i, cases[i].type,
				         cases[i].arg ? cases[i].arg : "");
			assert_string_equal(err.reason, cases[i].reason);
			assert_int_equal(err.code, AC_ERR_POLICY);
		}
		EVP_PKEY_free(key);
	}

	key = dsa_keygen();
	ac_err_clear(&err);
	assert_int_equal(policy_check_key(key, &err), -1);
	assert_string_equal(err.reason, "key_type_not_allowed");
	EVP_PKEY_free(key);

	key = keygen("EC", "P-521");
	ac_err_clear(&err);
	assert_int_equal(policy_check_key(key, &err), -1);
	assert_non_null(strstr(err.msg, "secp521r1"));
	EVP_PKEY_free(key);

	ac_err_clear(&err);
	assert_int_equal(policy_check_key(NULL, &err), -1);
}

static void
test_ttl_table(void **state)
{
	static const struct {
		int64_t min, def, max, requested, expected;
	} cases[] = {
	    {300, 86400, 7776000, 0, 86400},
	    {300, 86400, 7776000, -5, 86400},
	    {300, 86400, 7776000, 3600, 3600},
	    {300, 86400, 7776000, 1, 300},
	    {300, 86400, 7776000, 299, 300},
	    {300, 86400, 7776000, 300, 300},
	    {300, 86400, 7776000, 7776000, 7776000},
	    {300, 86400, 7776000, 7776001, 7776000},
	    {300, 86400, 7776000, INT64_MAX, 7776000},
	    {3600, 7200, 86400, 60, 3600},
	    {3600, 7200, 86400, 0, 7200},
	    {3600, 7200, 86400, 100000, 86400},
	    /* Whatever the configuration says, the hard floor and ceiling hold. */
	    {1, 2, 400 * 86400, 5, 10},
	    {10, 20, 400 * 86400, 200 * 86400, 90 * 86400},
	};
	struct ca_policy p;
	struct ac_err err;

	(void)state;
	ac_err_clear(&err);
	assert_int_equal(ca_policy_defaults(&p, TD, &err), 0);
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		p.min_ttl = cases[i].min;
		p.default_ttl = cases[i].def;
		p.max_ttl = cases[i].max;
		if (policy_clamp_ttl(&p, cases[i].requested) != cases[i].expected)
			fail_msg("case %zu: got %lld, want %lld", i,
			         (long long)policy_clamp_ttl(&p, cases[i].requested),
			         (long long)cases[i].expected);
	}
	ca_policy_free(&p);
}

/* Apply a JSON text through the policy's config table on top of the defaults. */
static int
apply(struct ca_policy *p, const char *text, struct ac_err *err)
{
	json_t *obj = json_loads(text, 0, NULL);
	int rc;

	assert_non_null(obj);
	ac_err_clear(err);
	assert_int_equal(ca_policy_defaults(p, TD, err), 0);
	rc = config_apply_json_at(obj, ca_policy_fields, p, "config.json", "policy", err);
	if (rc == 0)
		rc = ca_policy_validate(p, err);
	json_decref(obj);
	return rc;
}

static void
test_config_table(void **state)
{
	static const struct {
		const char *json;
		const char *reason; /* NULL: loads */
	} cases[] = {
	    {"{}", NULL},
	    {"{\"default_ttl\":\"1h\",\"min_ttl\":\"10m\",\"max_ttl\":\"7d\"}", NULL},
	    {"{\"dns_suffixes\":[\"a.example\",\"B.Example\"],\"ip_ranges\":[\"10.0.0.0/8\","
	     "\"::1\",\"fd00::/8\"]}",
	     NULL},
	    {"{\"max_sans\":1000,\"crl_url\":\"http://ca/crl\",\"ocsp_url\":\"http://ca/ocsp\"}",
	     NULL},
	    {"{\"max_ttl\":\"91d\"}", "config_invalid"},
	    {"{\"min_ttl\":\"9s\"}", "config_invalid"},
	    {"{\"min_ttl\":\"10s\",\"default_ttl\":\"30s\"}", NULL},
	    {"{\"default_ttl\":\"10m\",\"min_ttl\":\"1h\"}", "config_invalid"},
	    {"{\"default_ttl\":\"30d\",\"max_ttl\":\"1d\"}", "config_invalid"},
	    {"{\"max_sans\":0}", "config_invalid"},
	    {"{\"max_sans\":1001}", "config_invalid"},
	    {"{\"ip_ranges\":[\"10.0.0.0/33\"]}", "config_invalid"},
	    {"{\"ip_ranges\":[\"fd00::/129\"]}", "config_invalid"},
	    {"{\"ip_ranges\":[\"10.0.0.0/\"]}", "config_invalid"},
	    {"{\"ip_ranges\":[\"ten/8\"]}", "config_invalid"},
	    {"{\"dns_suffixes\":[\"*.corp.internal\"]}", "config_invalid"},
	    {"{\"dns_suffixes\":[\"corp..internal\"]}", "config_invalid"},
	    {"{\"max_tll\":\"1h\"}", "config_unknown_key"},
	};
	struct ca_policy p;
	struct ac_err err;

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		int rc = apply(&p, cases[i].json, &err);

		if (cases[i].reason == NULL) {
			if (rc != 0)
				fail_msg("case %zu (%s): refused: %s", i, cases[i].json, err.msg);
		} else {
			if (rc != -1)
				fail_msg("case %zu (%s): accepted", i, cases[i].json);
			assert_string_equal(err.reason, cases[i].reason);
		}
		ca_policy_free(&p);
	}

	assert_int_equal(
	    apply(&p, "{\"default_ttl\":\"1h\",\"max_sans\":3,\"crl_url\":\"u\"}", &err), 0);
	assert_int_equal(p.default_ttl, 3600);
	assert_int_equal(p.max_sans, 3);
	assert_string_equal(p.crl_url, "u");
	ca_policy_free(&p);
	assert_null(p.crl_url);
	assert_int_equal(p.dns_suffixes.count, 0);
}

static void
test_escape(void **state)
{
	char out[32];
	char big[200];

	(void)state;
	policy_escape("gw\0.x\"\\\n", 8, out, sizeof(out));
	assert_string_equal(out, "gw\\x00.x\\\"\\\\\\x0a");
	memset(big, 'a', sizeof(big));
	policy_escape(big, sizeof(big), out, sizeof(out));
	assert_true(strlen(out) < sizeof(out));
	assert_non_null(strstr(out, "..."));
	policy_escape("\xff\xff\xff\xff\xff\xff\xff\xff", 8, out, 12);
	assert_true(strlen(out) < 12);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults),     cmocka_unit_test(test_spiffe_table),
	    cmocka_unit_test(test_dns_table),    cmocka_unit_test(test_ip_table),
	    cmocka_unit_test(test_key_table),    cmocka_unit_test(test_ttl_table),
	    cmocka_unit_test(test_config_table), cmocka_unit_test(test_escape),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
