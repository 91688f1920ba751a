/*
 * proxy_v2.h - the PROXY protocol version 2 header the proxy may send to its upstream
 * before the first byte of a session (HAProxy's proxy-protocol.txt, section 2.2), so the
 * upstream learns who the client is without terminating TLS itself.
 *
 * The header: the 12-byte signature, version 2 / command PROXY, family TCP over IPv4 or
 * IPv6 with the client's and the listener's addresses and ports, then TLVs:
 *
 *   PP2_TYPE_SSL (0x20)          client flags (SSL, certificate sent on this connection),
 *                                verify = 0 (the certificate verified), and sub-TLVs
 *                                PP2_SUBTYPE_SSL_VERSION ("TLSv1.3"), _CIPHER, _CN
 *   0xE0 (custom)                the client's SPIFFE ID (UTF-8, when it has one)
 *   0xE1 (custom)                the client certificate's serial number (lowercase hex)
 *
 * Custom types 0xE0-0xEF are the range the specification leaves to applications.
 */
#ifndef AGENTCA_GATEWAY_HOOK_PROXY_V2_H
#define AGENTCA_GATEWAY_HOOK_PROXY_V2_H

#include <stddef.h>
#include <sys/socket.h>

#include "common/error.h"

#define PP2_TYPE_SSL 0x20
#define PP2_SUBTYPE_SSL_VERSION 0x21
#define PP2_SUBTYPE_SSL_CN 0x22
#define PP2_SUBTYPE_SSL_CIPHER 0x23
#define PP2_TYPE_AGENTCA_SPIFFE_ID 0xE0
#define PP2_TYPE_AGENTCA_SERIAL 0xE1
#define PP2_CLIENT_SSL 0x01
#define PP2_CLIENT_CERT_CONN 0x02

/* The largest header we ever make: addresses, and TLVs of bounded strings. */
#define PROXY_V2_MAX 4096

struct proxy_v2_info {
	const struct sockaddr *src; /* the client */
	const struct sockaddr *dst; /* the address it connected to (our listener) */
	const char *spiffe_id;      /* may be NULL or "" */
	const char *serial;         /* may be NULL or "" */
	const char *tls_version;    /* may be NULL */
	const char *cipher;         /* may be NULL */
	const char *cn;             /* may be NULL */
};

/* Write the header into out[0..cap); *len is its length. Fails when the addresses are not
 * both IPv4 or both IPv6, or a string does not fit. */
int proxy_v2_encode(const struct proxy_v2_info *info, unsigned char *out, size_t cap, size_t *len,
                    struct ac_err *err);

#endif
