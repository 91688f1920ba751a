/*
 * policy.h - what the CA will put in a certificate, and the checks that decide it.
 *
 * Each check returns 0, or -1 with err->code AC_ERR_POLICY or AC_ERR_INVALID and a stable
 * err->reason that becomes the denial's reason in the issuance log:
 *
 *   name_invalid         a name with a NUL or control byte, bad syntax, too long
 *   name_outside_policy  well-formed, but outside the trust domain / suffixes / ranges
 *   subject_invalid      the requested SPIFFE ID is malformed or in another trust domain
 *   too_many_sans        more SANs than policy.max_sans
 *   key_too_weak         RSA below 2048 bits
 *   key_type_not_allowed any key that is not EC P-256/P-384, Ed25519 or RSA >= 2048
 */
#ifndef AGENTCA_CA_POLICY_H
#define AGENTCA_CA_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "common/config.h"
#include "common/error.h"

/* The shortest lifetime any configuration may set (policy.min_ttl, default_ttl, max_ttl):
 * 10 seconds, for labs and for tests of rotation in real time. The default min_ttl stays 5
 * minutes (POLICY_DEFAULT_MIN_TTL); an operator lowers it explicitly in config.json. */
#define POLICY_TTL_FLOOR 10
#define POLICY_DEFAULT_MIN_TTL (5 * 60)
#define POLICY_TTL_CEILING (90 * 86400) /* 90 days: the longest ever */
#define POLICY_SPIFFE_ID_MAX 2048
#define POLICY_DNS_NAME_MAX 253

struct ca_policy {
	int64_t default_ttl;             /* seconds; default 24h */
	int64_t min_ttl;                 /* default 5m, >= POLICY_TTL_FLOOR (10s) */
	int64_t max_ttl;                 /* default 90d, <= POLICY_TTL_CEILING */
	struct cfg_strlist dns_suffixes; /* allowed DNS SAN suffixes (label boundary) */
	struct cfg_strlist ip_ranges;    /* allowed IP SANs, CIDR, v4 or v6 */
	int64_t max_sans;                /* default 16, counting the SPIFFE URI */
	char *crl_url;                   /* NULL: no CRL distribution point */
	char *ocsp_url;                  /* NULL: no AIA OCSP */
};

/* The defaults above; dns_suffixes gets the trust domain. */
int ca_policy_defaults(struct ca_policy *policy, const char *trust_domain, struct ac_err *err);
void ca_policy_free(struct ca_policy *policy);

/* Check cross-field sanity after loading (min <= default <= max, CIDRs parse, suffixes are
 * valid DNS names). */
int ca_policy_validate(const struct ca_policy *policy, struct ac_err *err);

/* The config table for the "policy" object of config.json. */
extern const struct cfg_field ca_policy_fields[];

/* spiffe://<trust_domain>/<path>: scheme and domain lowercase, path segments of
 * [A-Za-z0-9._-], no empty, "." or ".." segment, no query or fragment. */
int policy_check_spiffe_id(const char *id, size_t len, const char *trust_domain,
                           struct ac_err *err);

/* A DNS SAN: LDH labels, no wildcard, under one of the allowed suffixes. len is the byte
 * length as encoded (so an embedded NUL is seen). */
int policy_check_dns(const struct ca_policy *policy, const char *name, size_t len,
                     struct ac_err *err);

/* An IP SAN (4 or 16 raw bytes) inside one of the allowed ranges. */
int policy_check_ip(const struct ca_policy *policy, const unsigned char *addr, size_t len,
                    struct ac_err *err);

/* The subject key: EC P-256/P-384, Ed25519, RSA >= 2048 (and <= 8192). */
int policy_check_key(EVP_PKEY *key, struct ac_err *err);

/* Clamp a requested lifetime (0: default) to [min_ttl, max_ttl]. */
int64_t policy_clamp_ttl(const struct ca_policy *policy, int64_t requested);

/* Quote len bytes of a name from outside for a message: printable ASCII kept, '"' and '\\'
 * escaped, anything else as \xNN ("gw\x00.corp.internal"); cut with "..." to fit outlen. */
void policy_escape(const char *s, size_t len, char *out, size_t outlen);

#endif
