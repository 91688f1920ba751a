/*
 * test_ocsp.c - the OCSP responder (ca/ocsp.c) against a real CA, store and issued leaf:
 * good / revoked / unknown answers that verify with OpenSSL's own OCSP client code, the nonce
 * echoed, SHA-1 and SHA-256 CertIDs, answers served from the cache without signing again and
 * dropped from it when the serial is revoked, and every kind of bad request answered with
 * malformedRequest (or unauthorized for an issuer that is not ours), never anything worse.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "ca/authority.h"
#include "ca/issue.h"
#include "ca/ocsp.h"
#include "ca/revoke.h"
#include "ca/x509_build.h"
#include "common/log.h"
#include "common/timefmt.h"
#include "store/store.h"
#include "testutil.h"

#define TD "corp.internal"
#define NOW ((int64_t)time_now())

struct fixture {
	char *dir;
	struct ca_authority *ca;
	struct store *store;
	struct ca_policy policy;
	struct issuer iss;
	struct ocsp_responder *ocsp;
	X509_STORE *roots; /* the root, as a relying party holds it */
};

static struct fixture fx;

/* Issue a leaf for subject through the real engine; returns the certificate. */
static X509 *
issue_leaf(const char *subject)
{
	EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	X509_REQ *req = X509_REQ_new();
	struct issue_request ir;
	struct issue_result res;
	struct ac_err err;
	unsigned char *der = NULL;
	BIO *bio;
	X509 *cert;
	int len;

	assert_non_null(key);
	assert_non_null(req);
	assert_int_equal(X509_REQ_set_pubkey(req, key), 1);
	assert_true(X509_REQ_sign(req, key, EVP_sha256()) > 0);
	len = i2d_X509_REQ(req, &der);
	assert_true(len > 0);
	memset(&ir, 0, sizeof(ir));
	memset(&res, 0, sizeof(res));
	ir.csr = der;
	ir.csr_len = (size_t)len;
	ir.subject = subject;
	ir.actor = "admin:test";
	ac_err_clear(&err);
	if (ca_issue(&fx.iss, &ir, &res, &err) != 0)
		fail_msg("ca_issue: %s", err.msg);
	bio = BIO_new_mem_buf(res.cert_pem, (int)res.cert_pem_len);
	cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
	assert_non_null(cert);
	BIO_free(bio);
	issue_result_free(&res);
	OPENSSL_free(der);
	X509_REQ_free(req);
	EVP_PKEY_free(key);
	return cert;
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
	ac_log_set_level(AC_LOG_WARN);
	memset(&fx, 0, sizeof(fx));
	fx.dir = test_tmpdir("ocsp");
	setenv("AGENTCA_PASSWORD", "test passphrase for the unit tests", 1);
	ca_init_options_defaults(&opts);
	opts.dir = fx.dir;
	opts.name = "Test CA";
	opts.trust_domain = TD;
	ac_err_clear(&err);
	if (ca_init(&opts, &report, &err) != 0 ||
	    (fx.ca = ca_authority_load(fx.dir, NULL, &err)) == NULL) {
		fprintf(stderr, "CA: %s\n", err.msg);
		return -1;
	}
	snprintf(path, sizeof(path), "%s/test-ocsp.db", fx.dir);
	store_options_defaults(&sopts);
	sopts.path = path;
	if ((fx.store = store_open(&sopts, &err)) == NULL ||
	    ca_policy_defaults(&fx.policy, TD, &err) != 0 ||
	    ca_policy_validate(&fx.policy, &err) != 0) {
		fprintf(stderr, "store/policy: %s\n", err.msg);
		return -1;
	}
	fx.iss.authority = fx.ca;
	fx.iss.policy = &fx.policy;
	fx.iss.store = fx.store;
	fx.ocsp = ocsp_responder_new(fx.ca, fx.store, &err);
	if (fx.ocsp == NULL) {
		fprintf(stderr, "ocsp_responder_new: %s\n", err.msg);
		return -1;
	}
	fx.roots = X509_STORE_new();
	if (fx.roots == NULL || !X509_STORE_add_cert(fx.roots, fx.ca->root))
		return -1;
	return 0;
}

static int
group_teardown(void **state)
{
	(void)state;
	X509_STORE_free(fx.roots);
	ocsp_responder_free(fx.ocsp);
	ca_policy_free(&fx.policy);
	store_close(fx.store);
	ca_authority_free(fx.ca);
	test_rmdir(fx.dir);
	return 0;
}

/* A DER request for cert (issued by issuer) with md's CertID, with a nonce or not. */
static unsigned char *
make_request(X509 *cert, X509 *issuer, const EVP_MD *md, int nonce, size_t *len,
             OCSP_REQUEST **keep)
{
	OCSP_REQUEST *req = OCSP_REQUEST_new();
	OCSP_CERTID *id = OCSP_cert_to_id(md, cert, issuer);
	unsigned char *der = NULL;
	int n;

	assert_non_null(req);
	assert_non_null(id);
	assert_non_null(OCSP_request_add0_id(req, id));
	if (nonce)
		assert_int_equal(OCSP_request_add1_nonce(req, NULL, 16), 1);
	n = i2d_OCSP_REQUEST(req, &der);
	assert_true(n > 0);
	*len = (size_t)n;
	if (keep != NULL)
		*keep = req;
	else
		OCSP_REQUEST_free(req);
	return der;
}

/* Ask the responder; returns the parsed response (the caller frees it). */
static OCSP_RESPONSE *
ask(const unsigned char *der, size_t len, enum ocsp_outcome *outcome)
{
	unsigned char *out = NULL;
	const unsigned char *p;
	size_t out_len = 0;
	struct ac_err err;
	OCSP_RESPONSE *resp;

	ac_err_clear(&err);
	if (ocsp_respond(fx.ocsp, der, len, NOW, &out, &out_len, outcome, &err) != 0)
		fail_msg("ocsp_respond: %s", err.msg);
	p = out;
	resp = d2i_OCSP_RESPONSE(NULL, &p, (long)out_len);
	assert_non_null(resp);
	assert_ptr_equal(p, out + out_len); /* one whole DER response */
	free(out);
	return resp;
}

/* The single status in a successful response about cert, after verifying its signature
 * against the root the way a relying party does. */
static int
verified_status(OCSP_RESPONSE *resp, X509 *cert, X509 *issuer, const EVP_MD *md, int *reason,
                ASN1_GENERALIZEDTIME **rev, ASN1_GENERALIZEDTIME **this_upd,
                ASN1_GENERALIZEDTIME **next_upd, OCSP_BASICRESP **basic_out)
{
	OCSP_BASICRESP *basic;
	OCSP_CERTID *id = OCSP_cert_to_id(md, cert, issuer);
	int status = -1;

	assert_int_equal(OCSP_response_status(resp), OCSP_RESPONSE_STATUS_SUCCESSFUL);
	basic = OCSP_response_get1_basic(resp);
	assert_non_null(basic);
	assert_int_equal(OCSP_basic_verify(basic, NULL, fx.roots, 0), 1);
	assert_int_equal(OCSP_resp_count(basic), 1);
	assert_int_equal(OCSP_resp_find_status(basic, id, &status, reason, rev, this_upd, next_upd),
	                 1);
	OCSP_CERTID_free(id);
	*basic_out = basic;
	return status;
}

static void
test_good_with_nonce(void **state)
{
	X509 *leaf = issue_leaf("spiffe://corp.internal/good");
	ASN1_GENERALIZEDTIME *rev = NULL, *this_upd = NULL, *next_upd = NULL;
	OCSP_REQUEST *req = NULL;
	OCSP_BASICRESP *basic = NULL;
	enum ocsp_outcome outcome;
	OCSP_RESPONSE *resp;
	unsigned char *der;
	size_t len;
	int reason = -2, days = 0, secs = 0;

	(void)state;
	der = make_request(leaf, fx.ca->intermediate, EVP_sha1(), 1, &len, &req);
	resp = ask(der, len, &outcome);
	assert_int_equal(outcome, OCSP_GOOD);
	assert_int_equal(verified_status(resp, leaf, fx.ca->intermediate, EVP_sha1(), &reason, &rev,
	                                 &this_upd, &next_upd, &basic),
	                 V_OCSP_CERTSTATUS_GOOD);
	assert_null(rev);
	/* The nonce comes back (1: present in both and equal). */
	assert_int_equal(OCSP_check_nonce(req, basic), 1);
	/* thisUpdate now, nextUpdate OCSP_VALIDITY later. */
	assert_int_equal(ASN1_TIME_diff(&days, &secs, this_upd, next_upd), 1);
	assert_int_equal(days * 86400 + secs, OCSP_VALIDITY);
	assert_int_equal(OCSP_check_validity(this_upd, next_upd, 5, -1), 1);
	OCSP_BASICRESP_free(basic);
	OCSP_RESPONSE_free(resp);
	OCSP_REQUEST_free(req);
	OPENSSL_free(der);
	X509_free(leaf);
}

/* Without a nonce the second answer comes from the cache: same bytes, no new signature. */
static void
test_sha256_cached(void **state)
{
	X509 *leaf = issue_leaf("spiffe://corp.internal/cached");
	unsigned char *der, *a = NULL, *b = NULL;
	size_t len, a_len = 0, b_len = 0;
	struct ocsp_stats before, after;
	enum ocsp_outcome outcome;
	struct ac_err err;
	OCSP_BASICRESP *basic = NULL;
	OCSP_RESPONSE *resp;
	const unsigned char *p;
	int reason;

	(void)state;
	ac_err_clear(&err);
	der = make_request(leaf, fx.ca->intermediate, EVP_sha256(), 0, &len, NULL);
	ocsp_responder_stats(fx.ocsp, &before);
	assert_int_equal(ocsp_respond(fx.ocsp, der, len, NOW, &a, &a_len, &outcome, &err), 0);
	assert_int_equal(ocsp_respond(fx.ocsp, der, len, NOW, &b, &b_len, &outcome, &err), 0);
	ocsp_responder_stats(fx.ocsp, &after);
	assert_int_equal(after.signatures - before.signatures, 1);
	assert_int_equal(after.cache_hits - before.cache_hits, 1);
	assert_int_equal(after.outcomes[OCSP_GOOD] - before.outcomes[OCSP_GOOD], 2);
	assert_int_equal(after.requests - before.requests, 2);
	assert_int_equal(a_len, b_len);
	assert_memory_equal(a, b, a_len);
	p = b;
	resp = d2i_OCSP_RESPONSE(NULL, &p, (long)b_len);
	assert_non_null(resp);
	assert_int_equal(verified_status(resp, leaf, fx.ca->intermediate, EVP_sha256(), &reason,
	                                 NULL, NULL, NULL, &basic),
	                 V_OCSP_CERTSTATUS_GOOD);
	/* Past half the validity the cached answer is not served: a fresh one is signed. */
	free(b);
	b = NULL;
	assert_int_equal(ocsp_respond(fx.ocsp, der, len, NOW + OCSP_VALIDITY / 2 + 1, &b, &b_len,
	                              &outcome, &err),
	                 0);
	ocsp_responder_stats(fx.ocsp, &before);
	assert_int_equal(before.signatures - after.signatures, 1);
	OCSP_BASICRESP_free(basic);
	OCSP_RESPONSE_free(resp);
	free(a);
	free(b);
	OPENSSL_free(der);
	X509_free(leaf);
}

/* A cached "good" is dropped by ocsp_responder_forget (what the daemon does on each
 * revocation it sees); the next answer says revoked, with time and reason. */
static void
test_revoked_after_forget(void **state)
{
	X509 *leaf = issue_leaf("spiffe://corp.internal/revoked");
	ASN1_GENERALIZEDTIME *rev = NULL;
	struct revoke_request rr;
	OCSP_BASICRESP *basic = NULL;
	enum ocsp_outcome outcome;
	OCSP_RESPONSE *resp;
	struct ac_err err;
	unsigned char *der;
	char serial[41];
	size_t len;
	int reason = -2, children = 0;
	int64_t revoked_unix;

	(void)state;
	der = make_request(leaf, fx.ca->intermediate, EVP_sha1(), 0, &len, NULL);
	resp = ask(der, len, &outcome); /* cached: good */
	assert_int_equal(outcome, OCSP_GOOD);
	OCSP_RESPONSE_free(resp);

	{
		BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(leaf), NULL);
		char *hex = BN_bn2hex(bn);

		snprintf(serial, sizeof(serial), "%s", hex);
		OPENSSL_free(hex);
		BN_free(bn);
	}
	memset(&rr, 0, sizeof(rr));
	rr.serial = serial; /* upper case, as openssl prints it: the store takes any case */
	rr.reason = "keyCompromise";
	rr.actor = "admin:test";
	ac_err_clear(&err);
	if (ca_revoke(fx.store, &rr, &children, &err) != 0)
		fail_msg("ca_revoke: %s", err.msg);
	ocsp_responder_forget(fx.ocsp, serial);

	resp = ask(der, len, &outcome);
	assert_int_equal(outcome, OCSP_REVOKED);
	assert_int_equal(verified_status(resp, leaf, fx.ca->intermediate, EVP_sha1(), &reason, &rev,
	                                 NULL, NULL, &basic),
	                 V_OCSP_CERTSTATUS_REVOKED);
	assert_int_equal(reason, OCSP_REVOKED_STATUS_KEYCOMPROMISE);
	assert_non_null(rev);
	revoked_unix = asn1_time_to_unix(rev);
	assert_true(revoked_unix <= NOW && revoked_unix >= NOW - 60);
	OCSP_BASICRESP_free(basic);
	OCSP_RESPONSE_free(resp);
	OPENSSL_free(der);
	X509_free(leaf);
}

/* A serial of our issuer that we never issued: unknown, signed, verifiable. */
static void
test_unknown_serial(void **state)
{
	OCSP_REQUEST *req = OCSP_REQUEST_new();
	ASN1_INTEGER *serial = ASN1_INTEGER_new();
	OCSP_CERTID *id, *id_copy;
	OCSP_BASICRESP *basic;
	enum ocsp_outcome outcome;
	OCSP_RESPONSE *resp;
	unsigned char *der = NULL;
	int n, status = -1, reason;

	(void)state;
	assert_int_equal(ASN1_INTEGER_set_uint64(serial, 0x1234abcdULL), 1);
	id = OCSP_cert_id_new(EVP_sha1(), X509_get_subject_name(fx.ca->intermediate),
	                      X509_get0_pubkey_bitstr(fx.ca->intermediate), serial);
	id_copy = OCSP_CERTID_dup(id);
	assert_non_null(OCSP_request_add0_id(req, id));
	n = i2d_OCSP_REQUEST(req, &der);
	assert_true(n > 0);
	resp = ask(der, (size_t)n, &outcome);
	assert_int_equal(outcome, OCSP_UNKNOWN);
	basic = OCSP_response_get1_basic(resp);
	assert_non_null(basic);
	assert_int_equal(OCSP_basic_verify(basic, NULL, fx.roots, 0), 1);
	assert_int_equal(OCSP_resp_find_status(basic, id_copy, &status, &reason, NULL, NULL, NULL),
	                 1);
	assert_int_equal(status, V_OCSP_CERTSTATUS_UNKNOWN);
	OCSP_BASICRESP_free(basic);
	OCSP_RESPONSE_free(resp);
	OCSP_CERTID_free(id_copy);
	ASN1_INTEGER_free(serial);
	OCSP_REQUEST_free(req);
	OPENSSL_free(der);
}

/* Another CA's certificate, or a hash we cannot compare: unauthorized (unsigned). */
static void
test_foreign_issuer(void **state)
{
	EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	X509 *other = X509_new();
	X509_NAME *name = x509_name_make("Other CA", NULL, NULL);
	X509 *leaf = issue_leaf("spiffe://corp.internal/foreign");
	enum ocsp_outcome outcome;
	OCSP_RESPONSE *resp;
	unsigned char *der;
	size_t len;

	(void)state;
	assert_non_null(key);
	assert_non_null(other);
	assert_non_null(name);
	assert_int_equal(X509_set_subject_name(other, name), 1);
	assert_int_equal(X509_set_issuer_name(other, name), 1);
	assert_int_equal(X509_set_pubkey(other, key), 1);
	assert_int_equal(x509_set_validity(other, NOW - 60, NOW + 3600, NULL), 0);
	assert_true(X509_sign(other, key, EVP_sha256()) > 0);

	/* Our leaf's serial, but the CertID names the other CA. */
	der = make_request(leaf, other, EVP_sha1(), 0, &len, NULL);
	resp = ask(der, len, &outcome);
	assert_int_equal(outcome, OCSP_UNAUTHORIZED);
	assert_int_equal(OCSP_response_status(resp), OCSP_RESPONSE_STATUS_UNAUTHORIZED);
	OCSP_RESPONSE_free(resp);
	OPENSSL_free(der);

	der = make_request(leaf, fx.ca->intermediate, EVP_sha384(), 0, &len, NULL);
	resp = ask(der, len, &outcome);
	assert_int_equal(outcome, OCSP_UNAUTHORIZED);
	OCSP_RESPONSE_free(resp);
	OPENSSL_free(der);

	X509_NAME_free(name);
	X509_free(other);
	X509_free(leaf);
	EVP_PKEY_free(key);
}

struct malformed_case {
	const char *what;
	const unsigned char *der;
	size_t len;
};

/* Every malformed request: an unsigned malformedRequest, and ocsp_request_parse agrees. */
static void
test_malformed(void **state)
{
	X509 *leaf = issue_leaf("spiffe://corp.internal/malformed");
	OCSP_REQUEST *two = OCSP_REQUEST_new(), *empty = OCSP_REQUEST_new(),
	             *big_nonce = OCSP_REQUEST_new();
	unsigned char *good = NULL, *buf = NULL, *der_two = NULL, *der_empty = NULL,
	              *der_nonce = NULL;
	unsigned char big[OCSP_REQUEST_MAX + 1];
	size_t good_len;
	int n_two, n_empty, n_nonce;
	struct malformed_case cases[8];
	size_t ncases = 0;

	(void)state;
	good = make_request(leaf, fx.ca->intermediate, EVP_sha1(), 0, &good_len, NULL);
	assert_non_null(
	    OCSP_request_add0_id(two, OCSP_cert_to_id(NULL, leaf, fx.ca->intermediate)));
	assert_non_null(
	    OCSP_request_add0_id(two, OCSP_cert_to_id(NULL, leaf, fx.ca->intermediate)));
	n_two = i2d_OCSP_REQUEST(two, &der_two);
	n_empty = i2d_OCSP_REQUEST(empty, &der_empty);
	assert_non_null(
	    OCSP_request_add0_id(big_nonce, OCSP_cert_to_id(NULL, leaf, fx.ca->intermediate)));
	assert_int_equal(OCSP_request_add1_nonce(big_nonce, NULL, 40), 1); /* RFC 8954: <= 32 */
	n_nonce = i2d_OCSP_REQUEST(big_nonce, &der_nonce);
	assert_true(n_two > 0 && n_empty > 0 && n_nonce > 0);
	buf = malloc(good_len + 1);
	assert_non_null(buf);
	memcpy(buf, good, good_len);
	buf[good_len] = 0x00; /* one trailing byte */
	memset(big, 0x30, sizeof(big));

	cases[ncases++] = (struct malformed_case){"empty body", (const unsigned char *)"", 0};
	cases[ncases++] =
	    (struct malformed_case){"garbage", (const unsigned char *)"hello ocsp", 10};
	cases[ncases++] = (struct malformed_case){"truncated", good, good_len - 1};
	cases[ncases++] = (struct malformed_case){"trailing byte", buf, good_len + 1};
	cases[ncases++] = (struct malformed_case){"two certificates", der_two, (size_t)n_two};
	cases[ncases++] = (struct malformed_case){"no certificate", der_empty, (size_t)n_empty};
	cases[ncases++] = (struct malformed_case){"40-byte nonce", der_nonce, (size_t)n_nonce};
	cases[ncases++] = (struct malformed_case){"oversized", big, sizeof(big)};
	for (size_t i = 0; i < ncases; i++) {
		struct ocsp_query q;
		struct ac_err err;
		enum ocsp_outcome outcome;
		OCSP_RESPONSE *resp;

		ac_err_clear(&err);
		if (ocsp_request_parse(cases[i].der, cases[i].len, &q, &err) == 0)
			fail_msg("%s: parsed", cases[i].what);
		assert_string_equal(err.reason, "ocsp_malformed");
		resp = ask(cases[i].der, cases[i].len, &outcome);
		if (outcome != OCSP_MALFORMED ||
		    OCSP_response_status(resp) != OCSP_RESPONSE_STATUS_MALFORMEDREQUEST)
			fail_msg("%s: not malformedRequest", cases[i].what);
		OCSP_RESPONSE_free(resp);
	}
	free(buf);
	OPENSSL_free(der_two);
	OPENSSL_free(der_empty);
	OPENSSL_free(der_nonce);
	OCSP_REQUEST_free(two);
	OCSP_REQUEST_free(empty);
	OCSP_REQUEST_free(big_nonce);
	OPENSSL_free(good);
	X509_free(leaf);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_good_with_nonce),      cmocka_unit_test(test_sha256_cached),
	    cmocka_unit_test(test_revoked_after_forget), cmocka_unit_test(test_unknown_serial),
	    cmocka_unit_test(test_foreign_issuer),       cmocka_unit_test(test_malformed),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
