/*
 * test_proxy_rules.c - the proxy's allow-rule matcher (gateway-hook/allow.c), its PROXY
 * protocol v2 encoder (gateway-hook/proxy_v2.c) and its admission decisions
 * (gateway-hook/admit.c): tables of patterns against identities, rule parsing with its
 * refusals, matching real certificates by SPIFFE ID, DNS SAN and CN, the exact bytes of a
 * PROXY v2 header parsed back field by field, and in-memory handshakes (a BIO pair) against
 * the proxy's server context ending in each verdict.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include "enrollment/tls.h"
#include "gateway-hook/admit.h"
#include "gateway-hook/allow.h"
#include "gateway-hook/proxy_config.h"
#include "gateway-hook/proxy_v2.h"
#include "gateway-hook/revocation_feed.h"
#include "testutil.h"

static const struct {
	const char *pattern, *id;
	int want;
} spiffe_cases[] = {
    {"spiffe://corp.internal/gw-1", "spiffe://corp.internal/gw-1", 1},
    {"spiffe://corp.internal/gw-1", "spiffe://corp.internal/gw-2", 0},
    {"spiffe://corp.internal/gw-1", "spiffe://corp.internal/gw-1/child", 0},
    {"spiffe://corp.internal/gw-1", "spiffe://other.internal/gw-1", 0},
    {"spiffe://corp.internal/gw-1", "spiffe://CORP.internal/gw-1", 1}, /* host: any case */
    {"spiffe://corp.internal/gw-1", "spiffe://corp.internal/GW-1", 0}, /* path: exact */
    {"spiffe://corp.internal/*", "spiffe://corp.internal/gw-1", 1},
    {"spiffe://corp.internal/*", "spiffe://corp.internal/gw-1/child", 0},
    {"spiffe://corp.internal/*", "spiffe://corp.internal", 0},
    {"spiffe://corp.internal/gw-1/*", "spiffe://corp.internal/gw-1/child-3", 1},
    {"spiffe://corp.internal/gw-1/*", "spiffe://corp.internal/gw-1", 0},
    {"spiffe://corp.internal/gw-1/*", "spiffe://corp.internal/gw-1/a/b", 0},
    {"spiffe://corp.internal/**", "spiffe://corp.internal/gw-1/a/b/c", 1},
    {"spiffe://corp.internal/**", "spiffe://corp.internal", 1},
    {"spiffe://corp.internal/gw-1/**", "spiffe://corp.internal/gw-1", 1},
    {"spiffe://corp.internal/gw-1/**", "spiffe://corp.internal/gw-1/a/b", 1},
    {"spiffe://corp.internal/gw-1/**", "spiffe://corp.internal/gw-10", 0},
    {"spiffe://corp.internal/**/db", "spiffe://corp.internal/ns/prod/db", 1},
    {"spiffe://corp.internal/**/db", "spiffe://corp.internal/db", 1},
    {"spiffe://corp.internal/**/db", "spiffe://corp.internal/ns/prod/db/x", 0},
    {"spiffe://corp.internal/*/db/**", "spiffe://corp.internal/ns/db/a", 1},
    {"spiffe://corp.internal/*/db/**", "spiffe://corp.internal/db/a", 0},
    {"spiffe://corp.internal/**/a/**/b", "spiffe://corp.internal/x/a/y/a/z/b", 1},
    {"spiffe://corp.internal/gw-1", "spiffe://corp.internal/gw-1/", 0}, /* empty segment */
    {"spiffe://corp.internal/*", "spiffe://corp.internal//", 0},
    {"spiffe://corp.internal/gw-1", "https://corp.internal/gw-1", 0},
    {"spiffe://corp.internal/gw-1", "", 0},
};

static void
test_spiffe_patterns(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(spiffe_cases) / sizeof(spiffe_cases[0]); i++) {
		int got = allow_spiffe_match(spiffe_cases[i].pattern, spiffe_cases[i].id);

		if (got != spiffe_cases[i].want)
			fail_msg("%s vs %s: got %d, want %d", spiffe_cases[i].pattern,
			         spiffe_cases[i].id, got, spiffe_cases[i].want);
	}
}

static void
test_dns_patterns(void **state)
{
	(void)state;
	assert_int_equal(allow_dns_match("api.corp.internal", "api.corp.internal"), 1);
	assert_int_equal(allow_dns_match("api.corp.internal", "API.Corp.Internal"), 1);
	assert_int_equal(allow_dns_match("api.corp.internal", "api2.corp.internal"), 0);
	assert_int_equal(allow_dns_match("*.corp.internal", "api.corp.internal"), 1);
	assert_int_equal(allow_dns_match("*.corp.internal", "a.b.corp.internal"), 0);
	assert_int_equal(allow_dns_match("*.corp.internal", "corp.internal"), 0);
	assert_int_equal(allow_dns_match("*.corp.internal", ".corp.internal"), 0);
	assert_int_equal(allow_dns_match("*.corp.internal", ""), 0);
}

static void
test_rule_parsing(void **state)
{
	static const char *const good[] = {"spiffe://corp.internal/gw-1/**", "dns:*.corp.internal",
	                                   "cn:legacy-client", "spiffe://corp.internal/*/db"};
	static const char *const bad[] = {
	    "spiffe://corp.internal/gw*",   /* a star inside a segment */
	    "spiffe://*.internal/gw-1",     /* a star in the trust domain */
	    "spiffe://corp.internal//gw",   /* an empty segment */
	    "spiffe:///gw-1",               /* no trust domain */
	    "corp.internal/gw-1",           /* no scheme, no prefix */
	    "dns:",                         /* empty name */
	    "dns:bad name",                 /* a space */
	    "cn:",                          /* empty CN */
	    "spiffe://corp.internal/gw-1/", /* trailing slash */
	};
	struct allow_rules rules;
	struct ac_err err;

	(void)state;

	ac_err_clear(&err);
	assert_int_equal(allow_rules_parse(good, 4, &rules, &err), 0);
	assert_int_equal(rules.count, 4);
	assert_int_equal(rules.rules[0].kind, ALLOW_SPIFFE);
	assert_int_equal(rules.rules[1].kind, ALLOW_DNS);
	assert_string_equal(rules.rules[1].pattern, "*.corp.internal");
	assert_int_equal(rules.rules[2].kind, ALLOW_CN);
	assert_string_equal(rules.rules[2].pattern, "legacy-client");
	allow_rules_free(&rules);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ac_err_clear(&err);
		if (allow_rules_parse(&bad[i], 1, &rules, &err) != -1)
			fail_msg("rule \"%s\" was accepted", bad[i]);
		assert_string_equal(err.reason, "allow_rule_invalid");
		assert_non_null(strstr(err.msg, bad[i]));
		assert_int_equal(rules.count, 0);
	}
}

/* A certificate with this CN and SANs (NULL: none), valid [now+from, now+until), signed by
 * issuer/issuer_key (NULL: self-signed); a CA when sans is NULL. *key_out gets its key. */
static X509 *
cert_signed(const char *cn, const char *sans, X509 *issuer, EVP_PKEY *issuer_key, long from,
            long until, EVP_PKEY **key_out)
{
	static long serial = 7;
	EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	X509 *cert = X509_new();

	assert_non_null(key);
	assert_non_null(cert);
	X509_set_version(cert, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(cert), serial++);
	X509_gmtime_adj(X509_getm_notBefore(cert), from);
	X509_gmtime_adj(X509_getm_notAfter(cert), until);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(cert), "CN", MBSTRING_ASC,
	                           (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(cert, X509_get_subject_name(issuer != NULL ? issuer : cert));
	X509_set_pubkey(cert, key);
	if (sans != NULL) {
		test_add_ext(cert, issuer != NULL ? issuer : cert, NID_subject_alt_name, sans);
		test_add_ext(cert, issuer != NULL ? issuer : cert, NID_basic_constraints,
		             "critical,CA:FALSE");
	} else {
		test_add_ext(cert, cert, NID_basic_constraints, "critical,CA:TRUE");
		test_add_ext(cert, cert, NID_key_usage, "critical,keyCertSign,cRLSign");
	}
	assert_true(X509_sign(cert, issuer_key != NULL ? issuer_key : key, EVP_sha256()) > 0);
	if (key_out != NULL)
		*key_out = key;
	else
		EVP_PKEY_free(key);
	return cert;
}

/* A self-signed certificate with this CN and these SANs (an openssl config string). */
static X509 *
cert_with(const char *cn, const char *sans)
{
	return cert_signed(cn, sans, NULL, NULL, 0, 3600, NULL);
}

static void
test_rules_against_certificates(void **state)
{
	static const char *const patterns[] = {"spiffe://corp.internal/gw-1/*",
	                                       "dns:*.svc.corp.internal", "cn:legacy-client"};
	X509 *child = cert_with("child", "URI:spiffe://corp.internal/gw-1/child-3");
	X509 *service = cert_with("svc", "DNS:billing.svc.corp.internal");
	X509 *legacy = cert_with("legacy-client", "DNS:legacy.example");
	X509 *stranger = cert_with("legacy-client2", "URI:spiffe://corp.internal/gw-2/child");
	struct allow_rules rules;
	struct ac_err err;

	(void)state;
	ac_err_clear(&err);
	assert_int_equal(allow_rules_parse(patterns, 3, &rules, &err), 0);
	assert_int_equal(allow_rules_match(&rules, child, "spiffe://corp.internal/gw-1/child-3"),
	                 0);
	assert_int_equal(allow_rules_match(&rules, service, ""), 1);
	assert_int_equal(allow_rules_match(&rules, legacy, ""), 2);
	assert_int_equal(allow_rules_match(&rules, stranger, "spiffe://corp.internal/gw-2/child"),
	                 -1);
	/* No rules: nobody. */
	assert_int_equal(allow_rules_match(NULL, child, "spiffe://corp.internal/gw-1/child-3"), -1);
	allow_rules_free(&rules);
	X509_free(child);
	X509_free(service);
	X509_free(legacy);
	X509_free(stranger);
}

/* Find TLV type in [p, end): its value and length, or NULL. */
static const unsigned char *
find_tlv(const unsigned char *p, const unsigned char *end, unsigned type, size_t *len)
{
	while (p + 3 <= end) {
		size_t n = ((size_t)p[1] << 8) | p[2];

		assert_true(p + 3 + n <= end);
		if (p[0] == type) {
			*len = n;
			return p + 3;
		}
		p += 3 + n;
	}
	return NULL;
}

static void
test_proxy_v2_ipv4(void **state)
{
	static const unsigned char sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
	                                      0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
	struct sockaddr_in src, dst;
	struct proxy_v2_info info;
	unsigned char out[PROXY_V2_MAX];
	const unsigned char *v, *ssl, *end;
	size_t len = 0, n, ssl_len;
	struct ac_err err;

	(void)state;
	memset(&src, 0, sizeof(src));
	memset(&dst, 0, sizeof(dst));
	src.sin_family = dst.sin_family = AF_INET;
	inet_pton(AF_INET, "10.1.2.3", &src.sin_addr);
	inet_pton(AF_INET, "127.0.0.1", &dst.sin_addr);
	src.sin_port = htons(51234);
	dst.sin_port = htons(9443);
	memset(&info, 0, sizeof(info));
	info.src = (struct sockaddr *)&src;
	info.dst = (struct sockaddr *)&dst;
	info.spiffe_id = "spiffe://corp.internal/gw-1";
	info.serial = "0a1b2c";
	info.tls_version = "TLSv1.3";
	info.cipher = "TLS_AES_128_GCM_SHA256";
	info.cn = "gw-1";
	ac_err_clear(&err);
	assert_int_equal(proxy_v2_encode(&info, out, sizeof(out), &len, &err), 0);

	assert_memory_equal(out, sig, 12);
	assert_int_equal(out[12], 0x21); /* v2, PROXY */
	assert_int_equal(out[13], 0x11); /* TCP4 */
	assert_int_equal(((size_t)out[14] << 8) | out[15], len - 16);
	assert_memory_equal(out + 16, "\x0a\x01\x02\x03", 4);
	assert_memory_equal(out + 20, "\x7f\x00\x00\x01", 4);
	assert_int_equal((out[24] << 8) | out[25], 51234);
	assert_int_equal((out[26] << 8) | out[27], 9443);
	end = out + len;
	ssl = find_tlv(out + 28, end, PP2_TYPE_SSL, &ssl_len);
	assert_non_null(ssl);
	assert_int_equal(ssl[0], PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN);
	assert_memory_equal(ssl + 1, "\0\0\0\0", 4);
	v = find_tlv(ssl + 5, ssl + ssl_len, PP2_SUBTYPE_SSL_VERSION, &n);
	assert_non_null(v);
	assert_int_equal(n, 7);
	assert_memory_equal(v, "TLSv1.3", 7);
	v = find_tlv(ssl + 5, ssl + ssl_len, PP2_SUBTYPE_SSL_CN, &n);
	assert_non_null(v);
	assert_memory_equal(v, "gw-1", 4);
	v = find_tlv(ssl + 5, ssl + ssl_len, PP2_SUBTYPE_SSL_CIPHER, &n);
	assert_non_null(v);
	assert_int_equal(n, strlen("TLS_AES_128_GCM_SHA256"));
	v = find_tlv(out + 28, end, PP2_TYPE_AGENTCA_SPIFFE_ID, &n);
	assert_non_null(v);
	assert_int_equal(n, strlen(info.spiffe_id));
	assert_memory_equal(v, info.spiffe_id, n);
	v = find_tlv(out + 28, end, PP2_TYPE_AGENTCA_SERIAL, &n);
	assert_non_null(v);
	assert_memory_equal(v, "0a1b2c", 6);
}

static void
test_proxy_v2_ipv6_and_limits(void **state)
{
	struct sockaddr_in6 src, dst;
	struct sockaddr_in v4;
	struct proxy_v2_info info;
	unsigned char out[PROXY_V2_MAX];
	size_t len = 0, n;
	struct ac_err err;
	char *huge;

	(void)state;
	memset(&src, 0, sizeof(src));
	memset(&dst, 0, sizeof(dst));
	src.sin6_family = dst.sin6_family = AF_INET6;
	inet_pton(AF_INET6, "::1", &src.sin6_addr);
	inet_pton(AF_INET6, "fd00::2", &dst.sin6_addr);
	src.sin6_port = htons(1);
	dst.sin6_port = htons(2);
	memset(&info, 0, sizeof(info));
	info.src = (struct sockaddr *)&src;
	info.dst = (struct sockaddr *)&dst;
	ac_err_clear(&err);
	assert_int_equal(proxy_v2_encode(&info, out, sizeof(out), &len, &err), 0);
	assert_int_equal(out[13], 0x21); /* TCP6 */
	/* 36 bytes of addresses, then the SSL TLV (3 + 5), nothing else without strings. */
	assert_int_equal(len, 16 + 36 + 8);
	assert_memory_equal(out + 16 + 15, "\x01", 1);
	assert_int_equal((out[48] << 8) | out[49], 1);
	assert_int_equal((out[50] << 8) | out[51], 2);
	(void)find_tlv(out + 52, out + len, PP2_TYPE_AGENTCA_SPIFFE_ID, &n);
	assert_null(find_tlv(out + 52, out + len, PP2_TYPE_AGENTCA_SPIFFE_ID, &n));

	/* Families must agree. */
	memset(&v4, 0, sizeof(v4));
	v4.sin_family = AF_INET;
	info.dst = (struct sockaddr *)&v4;
	ac_err_clear(&err);
	assert_int_equal(proxy_v2_encode(&info, out, sizeof(out), &len, &err), -1);
	assert_string_equal(err.reason, "proxy_v2_address");

	/* A string that does not fit is an error, never an overrun. */
	huge = malloc(8000);
	assert_non_null(huge);
	memset(huge, 'a', 7999);
	huge[7999] = '\0';
	info.dst = (struct sockaddr *)&dst;
	info.spiffe_id = huge;
	ac_err_clear(&err);
	assert_int_equal(proxy_v2_encode(&info, out, sizeof(out), &len, &err), -1);
	assert_string_equal(err.reason, "proxy_v2_too_long");
	ac_err_clear(&err);
	assert_int_equal(proxy_v2_encode(&info, out, 20, &len, &err), -1);
	free(huge);
}

/* The proxy's server context and its CA, for the admission tests. */
static struct {
	EVP_PKEY *ca_key, *srv_key;
	X509 *ca, *srv;
	SSL_CTX *server;
	struct allow_rules rules;
	const char *revoked_serial; /* what the revoked callback reports */
} ad;

static int
admit_setup(void **state)
{
	static const char *const patterns[] = {"spiffe://corp.internal/client/*"};
	STACK_OF(X509) *roots = sk_X509_new_null();
	struct tls_server_config cfg;
	struct ac_err err;

	(void)state;
	ac_err_clear(&err);
	ad.ca = cert_signed("Test CA", NULL, NULL, NULL, -60, 86400, &ad.ca_key);
	ad.srv = cert_signed("proxy", "DNS:proxy.test", ad.ca, ad.ca_key, -60, 86400, &ad.srv_key);
	sk_X509_push(roots, ad.ca);
	memset(&cfg, 0, sizeof(cfg));
	cfg.cert = ad.srv;
	cfg.key = ad.srv_key;
	cfg.client_roots = roots;
	cfg.client_auth = TLS_CLIENT_AUTH_REQUIRED;
	ad.server = tls_server_ctx_new(&cfg, &err);
	sk_X509_free(roots);
	assert_non_null(ad.server);
	assert_int_equal(allow_rules_parse(patterns, 1, &ad.rules, &err), 0);
	return 0;
}

static int
admit_teardown(void **state)
{
	(void)state;
	SSL_CTX_free(ad.server);
	X509_free(ad.ca);
	X509_free(ad.srv);
	EVP_PKEY_free(ad.ca_key);
	EVP_PKEY_free(ad.srv_key);
	allow_rules_free(&ad.rules);
	return 0;
}

static int
revoked_cb(void *arg, const char *serial)
{
	(void)arg;
	return ad.revoked_serial != NULL && strcmp(serial, ad.revoked_serial) == 0;
}

/*
 * A client (cert/key may be NULL; trusting the test CA) against the proxy's server context
 * over a BIO pair, then the verdict the engine would reach at time now.
 */
static enum proxy_reason
verdict_for(X509 *cert, EVP_PKEY *key, int64_t now, struct tls_peer *peer)
{
	SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
	SSL *cli, *srv;
	BIO *b1 = NULL, *b2 = NULL;
	enum proxy_reason verdict = PR_ADMITTED;
	int cdone = 0, sdone = 0;

	assert_non_null(cctx);
	X509_STORE_add_cert(SSL_CTX_get_cert_store(cctx), ad.ca);
	SSL_CTX_set_verify(cctx, SSL_VERIFY_PEER, NULL);
	if (cert != NULL) {
		assert_int_equal(SSL_CTX_use_certificate(cctx, cert), 1);
		assert_int_equal(SSL_CTX_use_PrivateKey(cctx, key), 1);
	}
	cli = SSL_new(cctx);
	srv = SSL_new(ad.server);
	assert_int_equal(BIO_new_bio_pair(&b1, 0, &b2, 0), 1);
	SSL_set_bio(cli, b1, b1);
	SSL_set_bio(srv, b2, b2);
	SSL_set_connect_state(cli);
	SSL_set_accept_state(srv);
	for (int i = 0; i < 64 && !sdone; i++) {
		int c = cdone ? 1 : SSL_do_handshake(cli);
		int s;

		ERR_clear_error();
		s = SSL_do_handshake(srv);
		cdone = c == 1;
		if (s == 1) {
			sdone = 1;
		} else if (SSL_get_error(srv, s) != SSL_ERROR_WANT_READ) {
			verdict = proxy_handshake_failure(srv, ERR_peek_error());
			break;
		}
	}
	if (sdone)
		verdict = proxy_admit(srv, &ad.rules, revoked_cb, NULL, now, peer);
	ERR_clear_error();
	SSL_free(cli);
	SSL_free(srv);
	SSL_CTX_free(cctx);
	return verdict;
}

static void
test_admission_verdicts(void **state)
{
	EVP_PKEY *k_ok, *k_other, *k_old, *k_foreign, *foreign_key;
	X509 *ok = cert_signed("a", "URI:spiffe://corp.internal/client/a", ad.ca, ad.ca_key, -60,
	                       3600, &k_ok);
	X509 *other = cert_signed("b", "URI:spiffe://corp.internal/other/b", ad.ca, ad.ca_key, -60,
	                          3600, &k_other);
	X509 *old = cert_signed("old", "URI:spiffe://corp.internal/client/old", ad.ca, ad.ca_key,
	                        -7200, -3600, &k_old);
	X509 *foreign_ca = cert_signed("Foreign", NULL, NULL, NULL, -60, 3600, &foreign_key);
	X509 *foreign = cert_signed("f", "URI:spiffe://corp.internal/client/a", foreign_ca,
	                            foreign_key, -60, 3600, &k_foreign);
	int64_t now = (int64_t)time(NULL);
	struct tls_peer peer;

	(void)state;
	assert_int_equal(proxy_first_byte(0x16), PR_ADMITTED);
	assert_int_equal(proxy_first_byte('G'), PR_PLAINTEXT);

	ad.revoked_serial = NULL;
	assert_int_equal(verdict_for(ok, k_ok, now, &peer), PR_ADMITTED);
	assert_string_equal(peer.spiffe_id, "spiffe://corp.internal/client/a");
	assert_int_equal(verdict_for(other, k_other, now, &peer), PR_NOT_ALLOWED);
	assert_int_equal(verdict_for(NULL, NULL, now, &peer), PR_NO_CERT);
	assert_int_equal(verdict_for(foreign, k_foreign, now, &peer), PR_UNTRUSTED);
	assert_int_equal(verdict_for(old, k_old, now, &peer), PR_EXPIRED);
	/* Valid at the handshake, expired by the time it is checked. */
	assert_int_equal(verdict_for(ok, k_ok, now + 7200, &peer), PR_EXPIRED);
	/* Revoked: the callback gets the serial as tls_peer spells it. */
	assert_int_equal(verdict_for(ok, k_ok, now, &peer), PR_ADMITTED);
	ad.revoked_serial = peer.serial;
	assert_int_equal(verdict_for(ok, k_ok, now, &peer), PR_REVOKED);
	ad.revoked_serial = NULL;
	for (int r = 0; r < PR_COUNT; r++)
		assert_non_null(proxy_reason_names[r]);

	X509_free(ok);
	X509_free(other);
	X509_free(old);
	X509_free(foreign);
	X509_free(foreign_ca);
	EVP_PKEY_free(k_ok);
	EVP_PKEY_free(k_other);
	EVP_PKEY_free(k_old);
	EVP_PKEY_free(k_foreign);
	EVP_PKEY_free(foreign_key);
}

/* Collects the serials the feed hands over. */
struct seen {
	char serials[4][48];
	int count;
};

static void
collect_serial(void *arg, const char *serial)
{
	struct seen *seen = arg;

	if (seen->count < 4)
		snprintf(seen->serials[seen->count], sizeof(seen->serials[0]), "%s", serial);
	seen->count++;
}

static void
test_revocation_feed_answers(void **state)
{
	/* 42 digits: longer than a serial can be */
	static const char too_long[] = "{\"sequence\":9,\"revoked\":[{\"serial\":"
	                               "\"00112233445566778899aabbccddeeff0011223344\"}]}";
	static const char *const bad[] = {
	    "{\"revoked\":[]}",                 /* no sequence */
	    "{\"sequence\":3}",                 /* no list */
	    "{\"sequence\":-1,\"revoked\":[]}", /* negative */
	    "{\"sequence\":9,\"revoked\":[{\"serial\":\"0a\"},{\"serial\":\"zz\"}]}", /* not hex */
	    "{\"sequence\":9,\"revoked\":[{\"serial\":\"0a\"},{}]}", /* no serial */
	    too_long,
	};
	struct seen seen;
	struct ac_err err;
	uint64_t sequence = 5;
	json_t *doc;

	(void)state;
	memset(&seen, 0, sizeof(seen));
	ac_err_clear(&err);
	doc = json_loads(
	    "{\"sequence\":7,\"revoked\":[{\"serial\":\"0A1B\",\"reason\":\"keyCompromise\"},"
	    "{\"serial\":\"ff\"}]}",
	    0, NULL);
	assert_non_null(doc);
	assert_int_equal(revocation_feed_apply(doc, &sequence, collect_serial, &seen, &err), 0);
	json_decref(doc);
	assert_int_equal(seen.count, 2);
	assert_string_equal(seen.serials[0], "0A1B");
	assert_string_equal(seen.serials[1], "ff");
	assert_int_equal(sequence, 7);

	/* A bad answer applies nothing, not even its good entries, and keeps the sequence. */
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&seen, 0, sizeof(seen));
		ac_err_clear(&err);
		doc = json_loads(bad[i], 0, NULL);
		assert_non_null(doc);
		if (revocation_feed_apply(doc, &sequence, collect_serial, &seen, &err) != -1)
			fail_msg("accepted: %s", bad[i]);
		json_decref(doc);
		assert_int_equal(seen.count, 0);
		assert_int_equal(sequence, 7);
		assert_string_equal(err.reason, "feed_invalid");
	}
}

/* Which reloaded keys the proxy applies at once: a listener's allow rules, nothing else. */
static void
test_reload_live_paths(void **state)
{
	(void)state;
	assert_true(proxy_settings_path_is_live("proxy", "proxy.listeners[0].allow"));
	assert_true(proxy_settings_path_is_live("proxy", "proxy.listeners[12].allow"));
	assert_false(proxy_settings_path_is_live("proxy", "proxy.listeners[0].allowed"));
	assert_false(proxy_settings_path_is_live("proxy", "proxy.listeners[0].allow.x"));
	assert_false(proxy_settings_path_is_live("proxy", "proxy.listeners[0].upstream"));
	assert_false(proxy_settings_path_is_live("proxy", "proxy.listeners"));
	assert_false(proxy_settings_path_is_live("proxy", "proxy.idle_timeout"));
	assert_false(proxy_settings_path_is_live("proxy", "proxyx.listeners[0].allow"));
	assert_false(proxy_settings_path_is_live("proxy", "listeners[0].allow"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_spiffe_patterns),
	    cmocka_unit_test(test_reload_live_paths),
	    cmocka_unit_test(test_dns_patterns),
	    cmocka_unit_test(test_rule_parsing),
	    cmocka_unit_test(test_rules_against_certificates),
	    cmocka_unit_test(test_proxy_v2_ipv4),
	    cmocka_unit_test(test_proxy_v2_ipv6_and_limits),
	    cmocka_unit_test_setup_teardown(test_admission_verdicts, admit_setup, admit_teardown),
	    cmocka_unit_test(test_revocation_feed_answers),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
