/*
 * acme_nonce.h - the ACME anti-replay nonce service (RFC 8555 section 6.5).
 *
 * A nonce is base64url(counter || MAC(counter)), 8 + 16 bytes, with a MAC key drawn at
 * start: the daemon keeps no list of the nonces it handed out, only a bitmap of which of
 * the last ACME_NONCE_WINDOW counters have been redeemed. A nonce is good once: its MAC
 * verifies, its counter was issued, is within the window, and is not yet redeemed. Memory
 * stays at ACME_NONCE_WINDOW / 8 bytes whatever the clients do; a nonce older than the
 * window (or from before a restart) gets badNonce, and the client simply retries with the
 * fresh one that came with the error.
 */
#ifndef AGENTCA_ENROLLMENT_ACME_NONCE_H
#define AGENTCA_ENROLLMENT_ACME_NONCE_H

#include <stddef.h>

#include "common/error.h"

#define ACME_NONCE_WINDOW (1u << 20) /* nonces outstanding at most */
#define ACME_NONCE_LEN 32            /* characters */

struct acme_nonces;

struct acme_nonces *acme_nonces_new(struct ac_err *err);
void acme_nonces_free(struct acme_nonces *n);

/* A fresh nonce into out (NUL-terminated). */
int acme_nonce_make(struct acme_nonces *n, char out[ACME_NONCE_LEN + 1]);

/* Redeem a nonce from a client: 0 the first time, -1 with err "badNonce" otherwise. */
int acme_nonce_redeem(struct acme_nonces *n, const char *nonce, struct ac_err *err);

#endif
