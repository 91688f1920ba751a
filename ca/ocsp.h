/*
 * ocsp.h - the OCSP responder (RFC 6960) of the online intermediate.
 *
 * A request names one certificate by its CertID (hash algorithm, hashes of the issuer's name
 * and key, serial). The responder answers for certificates of our intermediate only:
 *
 *   good      a serial we issued that is not revoked
 *   revoked   with the revocation time and, unless unspecified, the reason code
 *   unknown   our issuer, but a serial we never issued
 *
 * A CertID of another issuer (or with a hash other than SHA-1 and SHA-256, so that we cannot
 * tell) gets the unsigned "unauthorized" status (RFC 5019 2.2.3); a request that does not
 * parse, asks for more or fewer than one certificate, or carries a nonce outside RFC 8954's
 * 1 to 32 bytes gets "malformedRequest"; a store failure "tryLater". Every request gets an
 * OCSPResponse: bad input never becomes anything else.
 *
 * Responses are signed by the intermediate itself (the CA that issued the certificates, so no
 * delegated responder certificate, no OCSPSigning EKU, nothing more to rotate); the responder
 * ID is the key hash; the intermediate and its upstream chain ride along so a client holding
 * only the root can verify. thisUpdate is now, nextUpdate OCSP_VALIDITY later.
 *
 * Cache: the signed response for each (serial, hash algorithm) is kept and served until half
 * of its validity has passed, so the hot path copies bytes and never signs. The cache is a
 * fixed table of OCSP_CACHE_SLOTS slots indexed by a hash of the key (a colliding key simply
 * replaces the slot), so memory is bounded whatever clients ask. ocsp_responder_forget()
 * drops a serial's entries: the daemon calls it when it sees a revocation. A request with a
 * nonce cannot be served from the cache (the nonce is inside the signature): it is signed for
 * that request alone, and the per-address rate limit bounds what that costs.
 */
#ifndef AGENTCA_CA_OCSP_H
#define AGENTCA_CA_OCSP_H

#include <stddef.h>
#include <stdint.h>

#include "ca/authority.h"
#include "common/error.h"
#include "store/store.h"

#define OCSP_VALIDITY (60 * 60)     /* nextUpdate one hour after thisUpdate */
#define OCSP_REQUEST_MAX 4096       /* larger DER requests are malformed */
#define OCSP_CACHE_SLOTS 4096       /* signed responses kept, at most */
#define OCSP_NONCE_EXT_MAX (32 + 2) /* extnValue: OCTET STRING of at most 32 bytes */
#define OCSP_SERIAL_DER_MAX 64      /* a longer serial is malformed (RFC 5280: 20 bytes) */

enum ocsp_hash { OCSP_HASH_SHA1 = 0, OCSP_HASH_SHA256 = 1, OCSP_HASH_OTHER = 2 };

/* What a request asks, read by ocsp_request_parse(). */
struct ocsp_query {
	enum ocsp_hash hash;
	unsigned char name_hash[64], key_hash[64]; /* the CertID's issuer hashes */
	size_t name_hash_len, key_hash_len;
	char serial[41]; /* lowercase hex as we store it; "" if no serial of ours could
	                    be written so (zero, negative, longer than 20 bytes) */
	unsigned char serial_der[OCSP_SERIAL_DER_MAX]; /* the INTEGER as asked, for the answer */
	size_t serial_der_len;
	unsigned char nonce[OCSP_NONCE_EXT_MAX]; /* the nonce extension's extnValue, verbatim */
	size_t nonce_len;                        /* 0: no nonce */
};

/* Parse a DER OCSPRequest: exactly one certificate, no trailing bytes, at most
 * OCSP_REQUEST_MAX bytes, a nonce within bounds. AC_ERR_INVALID "ocsp_malformed" otherwise. */
int ocsp_request_parse(const unsigned char *der, size_t len, struct ocsp_query *q,
                       struct ac_err *err);

/* How a request was answered (metrics, logs, tests). */
enum ocsp_outcome {
	OCSP_GOOD = 0,
	OCSP_REVOKED,
	OCSP_UNKNOWN,
	OCSP_MALFORMED,
	OCSP_UNAUTHORIZED,
	OCSP_TRY_LATER,
};

struct ocsp_responder;

/* A responder for ca's intermediate, reading certificate states from st (both borrowed and
 * outliving it). Digests and hashes of the issuer are computed here, once. */
struct ocsp_responder *ocsp_responder_new(const struct ca_authority *ca, struct store *st,
                                          struct ac_err *err);
void ocsp_responder_free(struct ocsp_responder *r);

/* Answer one DER request at time now: *resp (malloc'd, free()) is a DER OCSPResponse,
 * successful or carrying an error status. -1 only when no answer at all can be encoded (out
 * of memory, a failed signature); err then says why. */
int ocsp_respond(struct ocsp_responder *r, const unsigned char *req, size_t len, int64_t now,
                 unsigned char **resp, size_t *resp_len, enum ocsp_outcome *outcome,
                 struct ac_err *err);

/* Drop the cached responses of serial (hex, any case): its state changed. */
void ocsp_responder_forget(struct ocsp_responder *r, const char *serial);

#define OCSP_OUTCOMES (OCSP_TRY_LATER + 1)

/* Counters since ocsp_responder_new. */
struct ocsp_stats {
	uint64_t requests;
	uint64_t signatures;              /* responses signed */
	uint64_t cache_hits;              /* answered from the cache */
	uint64_t outcomes[OCSP_OUTCOMES]; /* answers by enum ocsp_outcome */
};

/* The name of an outcome as RFC 6960 spells it ("good", "malformedRequest", ...). */
const char *ocsp_outcome_name(enum ocsp_outcome outcome);

void ocsp_responder_stats(struct ocsp_responder *r, struct ocsp_stats *out);

#endif
