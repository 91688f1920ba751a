/*
 * admin_log.h - recording what admins do to the CA itself (init, import, trust add) in the
 * issuance log, so the log tells the whole story of the CA and not only of its leaves; and
 * the tokens they mint, by jti.
 */
#ifndef AGENTCA_CLI_ADMIN_LOG_H
#define AGENTCA_CLI_ADMIN_LOG_H

#include "common/error.h"
#include "enrollment/token.h"

/* Append one entry of `kind` ("ca_activated", "ca_prepared", "trust_added") by admin:cli,
 * naming the trust domain as subject and, when DIR holds one, the intermediate's serial
 * and validity. config may be NULL (DIR/config.json). */
int admin_log_record(const char *dir, const char *config, const char *kind, const char *detail,
                     struct ac_err *err);

/* Append a "token_created" entry by admin:cli for a freshly minted token: subject, DNS
 * names, validity and parent from the grant, and a detail naming the jti (never the token).
 * config may be NULL (DIR/config.json). */
int admin_log_token_created(const char *dir, const char *config, const struct token_grant *grant,
                            struct ac_err *err);

#endif
