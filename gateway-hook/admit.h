/*
 * admit.h - who gets through the proxy: the decisions between a client's first byte and
 * the upstream connect, kept apart from the sockets so that a fuzzer (fuzz/
 * fuzz_proxy_handshake.c) and tests drive the same code through memory BIOs.
 *
 *   proxy_first_byte         a TLS handshake record (0x16) or "plaintext"
 *   proxy_handshake_failure  why a server handshake failed: no certificate, untrusted,
 *                            expired, or a plain handshake failure
 *   proxy_admit              after a verified handshake: revoked? expired? allowed?
 *
 * Every reason is a stable token, used in the logs, the session log and metric labels.
 */
#ifndef AGENTCA_GATEWAY_HOOK_ADMIT_H
#define AGENTCA_GATEWAY_HOOK_ADMIT_H

#include <stdint.h>

#include <openssl/ssl.h>

#include "enrollment/tls.h"
#include "gateway-hook/allow.h"

/* Why a connection was refused or a session closed: a table, so metrics and docs walk it. */
enum proxy_reason {
	PR_PLAINTEXT = 0,
	PR_NO_CERT,
	PR_UNTRUSTED,
	PR_EXPIRED,
	PR_REVOKED,
	PR_NOT_ALLOWED,
	PR_HANDSHAKE_FAILED,
	PR_HANDSHAKE_TIMEOUT,
	PR_CONN_LIMIT,
	PR_UP_CONNECT,
	PR_UP_TLS,
	PR_REFUSALS, /* the ones above are refusals; the ones below end a session */
	PR_CLIENT_CLOSED = PR_REFUSALS,
	PR_UPSTREAM_CLOSED,
	PR_CLIENT_ERROR,
	PR_UPSTREAM_ERROR,
	PR_IDLE_TIMEOUT,
	PR_SESSION_REVOKED,
	PR_SESSION_EXPIRED,
	PR_SESSION_NOT_ALLOWED, /* the listener's rules changed and no longer allow it */
	PR_SHUTDOWN,
	PR_COUNT
};
#define PR_ADMITTED PR_COUNT /* not a reason: the client may pass */

extern const char *const proxy_reason_names[PR_COUNT];

/* PR_ADMITTED for the first byte of a TLS handshake record, else PR_PLAINTEXT. */
enum proxy_reason proxy_first_byte(unsigned char first);

/* Why the server handshake on ssl failed (err: the first OpenSSL error it left). */
enum proxy_reason proxy_handshake_failure(SSL *ssl, unsigned long err);

/* After a completed handshake: fill peer and decide. revoked(arg, serial) says whether a
 * serial (lowercase hex) is revoked; now is unix seconds. */
enum proxy_reason proxy_admit(SSL *ssl, const struct allow_rules *rules,
                              int (*revoked)(void *arg, const char *serial), void *arg, int64_t now,
                              struct tls_peer *peer);

#endif
