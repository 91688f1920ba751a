/*
 * revoke.h - revocation, written once for the CLI and the API.
 *
 * Revoking a certificate also revokes every certificate of its nested agents: the valid
 * certificates whose subject lies under the revoked subject's path ("<id>/..."), which are
 * exactly the identities the revoked one could have minted tokens for. Each revocation is
 * one store unit: the row change and its "revoked" log entry commit together.
 */
#ifndef AGENTCA_CA_REVOKE_H
#define AGENTCA_CA_REVOKE_H

#include "common/error.h"
#include "store/store.h"

struct revoke_request {
	const char *serial;     /* hex, any case */
	const char *reason;     /* RFC 5280 reason name, or NULL for "unspecified" */
	const char *actor;      /* "admin:cli", "admin:<who>" */
	const char *request_id; /* or NULL */
};

/* Revoke serial and its nested agents' certificates. *children gets how many of those were
 * revoked. AC_ERR_NOTFOUND for an unknown serial, AC_ERR_CONFLICT if already revoked. */
int ca_revoke(struct store *st, const struct revoke_request *req, int *children,
              struct ac_err *err);

#endif
