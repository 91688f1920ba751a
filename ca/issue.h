/*
 * issue.h - the issuance engine: every certificate agentca signs goes through ca_issue().
 *
 * ca_issue() reads top to bottom as the issuance policy: parse and verify the CSR; check
 * the key; check the requested identity and every name; bound the SAN count; clamp the
 * lifetime (never past the intermediate); draw a 128-bit random serial; sign; record the
 * certificate and its log entry in one durable commit; only then return the certificate.
 * A refusal is recorded once in the log as a "denied" entry with its reason, and no
 * certificate row is written.
 */
#ifndef AGENTCA_CA_ISSUE_H
#define AGENTCA_CA_ISSUE_H

#include <stddef.h>
#include <stdint.h>

#include "ca/authority.h"
#include "ca/policy.h"
#include "ca/renewal_plan.h"
#include "common/error.h"
#include "store/store.h"

struct issuer {
	struct ca_authority *authority; /* borrowed; swapped atomically on rotation */
	const struct ca_policy *policy; /* borrowed */
	struct store *store;            /* borrowed */
	/* Unix seconds at which a successor intermediate is planned to take over (ca/rotate.h),
	 * or 0. A leaf issued before then is told to renew soon after it (renew_after), spread
	 * over half the time left to its usual renewal point, so agents move to the new
	 * intermediate early. Read and written atomically. */
	int64_t supersede_at;
	/* The renewal calendar that chooses each leaf's renew_after (ca/renewal_plan.h), or NULL:
	 * then renew_after is the fixed 2/3 point (shortened before a switch as above). */
	struct renewal_plan *planner;
};

/* The authority that signs now, read once: a reader's snapshot that a concurrent rotation
 * cannot tear (the daemon keeps every authority it published alive until it exits). */
static inline struct ca_authority *
issuer_authority(const struct issuer *iss)
{
	return __atomic_load_n(&iss->authority, __ATOMIC_ACQUIRE);
}

struct csr;

struct issue_request {
	const unsigned char *csr; /* PEM or DER, from outside */
	size_t csr_len;
	/* Or the CSR already parsed and verified by csr_parse (borrowed; the caller frees it):
	 * a caller that had to read the CSR's names first (ACME finalize) saves parsing and
	 * verifying it twice. Every policy check still runs on it here. */
	const struct csr *parsed_csr;
	/* Without a CSR: renew the key of this certificate (DER, from the store). The caller has
	 * proven possession of its key (mTLS). */
	const unsigned char *renew_cert_der;
	size_t renew_cert_der_len;
	const char *subject; /* the SPIFFE ID to certify */
	int64_t ttl;         /* seconds; 0: policy default */
	/* When non-NULL, DNS SANs from the CSR must also be in this list (a token's grant). */
	const struct cfg_strlist *allowed_dns;
	const char *kind;       /* log kind: "issued" (default) or "renewed" */
	const char *actor;      /* who asked: "admin:cli", "token:<jti>", ... */
	const char *parent;     /* parent identity for nested agents, or NULL */
	const char *request_id; /* or NULL */
	const char *token_jti;  /* marked used in the same commit, or NULL */
	int64_t token_expires;
	int depth;             /* nesting depth recorded with the certificate */
	int64_t not_after_max; /* unix seconds; 0: none. A child never outlives its parent */
};

struct issue_result {
	char *cert_pem; /* the leaf, PEM; heap */
	size_t cert_pem_len;
	const unsigned char *chain_pem; /* intermediate + upstream; borrowed from the authority */
	size_t chain_pem_len;
	char serial[41]; /* hex */
	int64_t not_before, not_after;
	int64_t renew_after; /* chosen by the issuer's planner, else 2/3 (see issuer) */
	uint64_t log_seq;
};

int ca_issue(const struct issuer *iss, const struct issue_request *req, struct issue_result *res,
             struct ac_err *err);
void issue_result_free(struct issue_result *res);

/* Record one "denied" entry for a request refused outside the engine (a bad token, a revoked
 * certificate asking to renew): kind "denied", the request's actor, subject, parent and
 * request id, and the refusal's reason and message. A failure to record is logged. */
void issue_record_denial(const struct issuer *iss, const struct issue_request *req,
                         const struct ac_err *refusal);

#endif
