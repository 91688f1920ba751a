/*
 * acme_validate_internal.h - what the files of the validation authority share: the pool's
 * settled options, the objects made once for every check (the tls-alpn-01 SSL_CTX, the
 * SHA-256 implementation), what each worker thread keeps (its libcurl handle), the name
 * resolution through the configured DNS server and the
 * one way a check reports a failure. Only enrollment/acme_validate*.c include it.
 */
#ifndef AGENTCA_ENROLLMENT_ACME_VALIDATE_INTERNAL_H
#define AGENTCA_ENROLLMENT_ACME_VALIDATE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "enrollment/acme_validate.h"
#include "enrollment/acme_validate_dnsclient.h"

#define ACME_MAX_ADDRESSES 8

/* What every check reads; set once in acme_validator_start, read-only afterwards. */
struct acme_checker {
	struct dns_server resolver;
	int http_port;
	int tls_alpn_port;
	int timeout_ms;
	SSL_CTX *alpn_ctx; /* TLS client, ALPN "acme-tls/1" only, no peer verification */
	EVP_MD *sha256;
	ASN1_OBJECT *acme_identifier_oid; /* id-pe-acmeIdentifier, 1.3.6.1.5.5.7.1.31 */
};

/* The addresses of a name (AAAA first, then A), or the one address of an IP literal. */
struct acme_addresses {
	size_t count;
	struct {
		int family;
		unsigned char addr[16];
	} list[ACME_MAX_ADDRESSES];
};

/*
 * What one validator thread keeps from check to check: one libcurl handle, reset before
 * every transfer (connections are never reused: FORBID_REUSE and FRESH_CONNECT), so its
 * internal multi handle, wake-up socketpair and buffers are made once per thread, not per
 * validation; and the "host:port" whose CURLOPT_RESOLVE entry is still in that handle's DNS
 * cache (entries given that way never expire; the next transfer removes it, so the cache
 * holds at most one). Zero-initialised means "nothing yet"; acme_check_state_clear frees.
 */
struct acme_check_state {
	CURL *curl;
	char resolved[300];
};

void acme_check_state_clear(struct acme_check_state *st);

/* Fill out with a failure of RFC 8555 error type (without the urn prefix). */
void acme_fail(struct acme_validation_result *out, const char *error_type, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Resolve host (a DNS name, or an IP literal when is_ip) through the resolver. 0 with at
 * least one address; -1 with out filled ("dns") otherwise. */
int acme_resolve(const struct acme_checker *c, const char *host, int is_ip, int64_t deadline_ms,
                 struct acme_addresses *addrs, struct acme_validation_result *out);

/* SHA-256 of the key authorization, as raw bytes (32). */
int acme_key_authorization_digest(const struct acme_checker *c, const char *key_authorization,
                                  unsigned char digest[32]);

/* The three checks; each fills out (ok or a failure) and gives up at deadline_ms
 * (dns_monotonic_ms clock). */
void acme_check_http01(const struct acme_checker *c, struct acme_check_state *st,
                       const struct acme_validation *job, int64_t deadline_ms,
                       struct acme_validation_result *out);
void acme_check_dns01(const struct acme_checker *c, const struct acme_validation *job,
                      int64_t deadline_ms, struct acme_validation_result *out);
void acme_check_tlsalpn01(const struct acme_checker *c, const struct acme_validation *job,
                          int64_t deadline_ms, struct acme_validation_result *out);

#endif
