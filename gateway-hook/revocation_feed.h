/*
 * revocation_feed.h - the standalone proxy's view of the CA's revocations: it asks
 * GET /v1/revocations?since=N (the CA's feed: {"sequence": M, "revoked": [{"serial": "HEX",
 * ...}, ...]}) every revocation_interval over mTLS with its own certificate, and hands each
 * serial to proxy_revoke_serial(). The integrated proxy reads the store instead.
 *
 * A CA that does not serve the feed (404) is reported once by the caller and asked again
 * much later; the proxy then enforces expiry only.
 */
#ifndef AGENTCA_GATEWAY_HOOK_REVOCATION_FEED_H
#define AGENTCA_GATEWAY_HOOK_REVOCATION_FEED_H

#include <stdint.h>

#include <jansson.h>

#include "common/error.h"

typedef void (*revoked_serial_fn)(void *arg, const char *serial);

/* Apply one answer of the feed: call fn for each serial (hex, at most 40 digits; anything
 * else makes the whole answer invalid and changes nothing), then set *sequence. */
int revocation_feed_apply(const json_t *doc, uint64_t *sequence, revoked_serial_fn fn, void *arg,
                          struct ac_err *err);

/* One request to ca_url with the identity in dir (cert.pem, key.pem, bundle.pem), then
 * revocation_feed_apply. */
int revocation_feed_poll(const char *ca_url, const char *dir, uint64_t *sequence,
                         revoked_serial_fn fn, void *arg, struct ac_err *err);

#endif
