/*
 * crl.h - the certificate revocation list of the online intermediate (RFC 5280, v2).
 *
 * Built from the store's revoked certificates that have not expired, signed by the
 * intermediate, with a short nextUpdate (CRL_VALIDITY), the CRL number taken from the
 * issuance log's size (it grows with every revocation, so later CRLs have larger numbers),
 * the authority key identifier and each entry's reason code.
 */
#ifndef AGENTCA_CA_CRL_H
#define AGENTCA_CA_CRL_H

#include <stddef.h>
#include <stdint.h>

#include "ca/authority.h"
#include "common/error.h"
#include "store/store.h"

#define CRL_VALIDITY (60 * 60) /* nextUpdate one hour after thisUpdate */

/* The RFC 5280 reason code of a reason name ("keyCompromise"); CRL_REASON_UNSPECIFIED for
 * NULL or a name we do not know. Shared with OCSP. */
int crl_reason_code(const char *name);

/* Build and sign the CRL as of now; *der is heap (OPENSSL_free). */
int crl_build(const struct ca_authority *ca, struct store *st, int64_t now, unsigned char **der,
              size_t *len, struct ac_err *err);

#endif
