/*
 * acme.h - the ACME server (RFC 8555, RFC 8737 tls-alpn-01, RFC 8738 IP identifiers,
 * RFC 9773 renewal information) that the HTTP API serves under /acme/.
 *
 * The server speaks HTTP and JWS (api_acme.c), keeps accounts, orders and authorizations in
 * the store (store/store_acme.h), hands challenges to the validation authority
 * (acme_validate.h) through the submit function it is given, and issues through ca_issue,
 * so every ACME certificate is in the issuance log before the client can download it.
 *
 * Identifier policy: a name must pass the CA's own policy (ca_policy: DNS suffixes and IP
 * ranges) and, when the ACME settings or the account's EAB key list suffixes or ranges,
 * those too. Wildcards are refused.
 */
#ifndef AGENTCA_ENROLLMENT_ACME_H
#define AGENTCA_ENROLLMENT_ACME_H

#include <stdint.h>

#include "ca/issue.h"
#include "common/config.h"
#include "common/error.h"
#include "enrollment/acme_validate.h"

/* The validation authority, as the ACME server uses it: submit (acme_validator_submit's
 * signature) and stop, with the pool they act on. In tests a fake stands in. */
struct acme_validator_hooks {
	void *validator;
	int (*submit)(struct acme_validator *v, const struct acme_validation *job,
	              acme_validation_done done, void *arg, struct ac_err *err);
	void (*stop)(struct acme_validator *v); /* called by acme_server_free; may be NULL */
};

struct acme_options {
	struct issuer *issuer;                  /* borrowed */
	int external_account_required;          /* newAccount needs an EAB (RFC 8555 7.3.4) */
	const char *website;                    /* directory meta.website, or NULL */
	const struct cfg_strlist *dns_suffixes; /* ACME-wide identifier policy; NULL or empty: */
	const struct cfg_strlist *ip_ranges;    /* the CA policy alone decides */
	int64_t order_ttl;                      /* seconds an order and its authzs live; 0: 1 h */
	int64_t ttl; /* certificate lifetime asked of ca_issue; 0: policy */
	/* How long a challenge POST waits for its validation to finish so that the answer
	 * carries the outcome; 0: 300 ms; negative: answer at once (a harness whose fake
	 * validator finishes only when told). */
	int challenge_wait_ms;
	struct acme_validator_hooks validator;
};

struct acme_server;

struct acme_server *acme_server_new(const struct acme_options *opts, struct ac_err *err);

/* Stop the validator (its pending callbacks finish first), then free. NULL is fine. */
void acme_server_free(struct acme_server *s);

/* An EAB key for `agentca acme eab create`: a fresh key id and 32-byte HMAC key, stored
 * with its identifier policy (either list may be NULL). kid_out gets the key id and
 * hmac_out the key as base64url (what the client is given). */
int acme_eab_create(struct store *st, const struct cfg_strlist *dns_suffixes,
                    const struct cfg_strlist *ip_ranges, char kid_out[64], char hmac_out[64],
                    struct ac_err *err);

#endif
