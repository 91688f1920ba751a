/*
 * verify_cache.h - the proxy's verified-chain cache: agents reconnect with the same
 * certificate for its whole lifetime, so the result of verifying its chain (the leaf's
 * signature by the intermediate, the intermediate's by the root, names, purposes) is kept
 * and reused instead of being computed again on every new handshake.
 *
 * What is cached: "under the trust material of generation G, the leaf L, sent with the
 * intermediates I1..In, verified into the chain L, C1..Cm". The key is SHA-256 over G, L's
 * DER and each Ik's DER, in the order sent. G is a number given to each server context when
 * it is built (verify_cache_install), never reused: a new bundle or certificate is a new
 * context and so a new generation, and an entry made under the old one can never match.
 *
 * What is checked again on every hit: the time validity of every certificate of the cached
 * chain (the latest notBefore and the earliest notAfter of the chain, against the time the
 * verification would use) and the leaf's revocation state (the proxy's revoked-serial set).
 * A hit that fails either check is dropped and the handshake goes through the full
 * verification, which gives the same verdict, with the same reason, as without the cache.
 * The client's CertificateVerify (proof of the leaf's key) is checked by TLS itself on every
 * handshake, hit or not; only the chain's signatures are skipped.
 *
 * Per worker, no locks: each worker thread owns one cache (verify_cache_attach hangs it on
 * the connections it handshakes); it is bounded (4-way sets, least recently used out).
 *
 * verify_cache_install replaces the context's certificate verify callback with one that,
 * on a miss, calls tls_verify_chain_with (enrollment/tls.h) as enrollment/tls.c's own
 * callback does for a context without a renewal grace: the peer's chain plus the
 * context's extra intermediates as untrusted helpers, then X509_verify_cert() against the
 * context's store. Only for the proxy's contexts.
 */
#ifndef AGENTCA_GATEWAY_HOOK_VERIFY_CACHE_H
#define AGENTCA_GATEWAY_HOOK_VERIFY_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "common/error.h"

#define VERIFY_CACHE_DEFAULT_ENTRIES 1024

struct verify_cache;

struct verify_cache_stats {
	uint64_t hits;   /* chains taken from the cache */
	uint64_t misses; /* full verifications (with a cache attached) */
	uint64_t stale;  /* entries found but refused: expired, not yet valid, revoked */
};

/* A cache of at most entries chains (rounded up to a multiple of 4). revoked(arg, serial)
 * says whether a leaf serial (lowercase hex, as tls_peer spells it) is revoked; may be NULL.
 * NULL when out of memory. */
struct verify_cache *verify_cache_new(size_t entries, int (*revoked)(void *arg, const char *serial),
                                      void *arg);
void verify_cache_free(struct verify_cache *cache);

/* Give ctx (a client-verifying server context from tls_server_ctx_new, without a renewal
 * grace) the caching verify callback and a new generation. untrusted: the intermediates the
 * context was built with as client_untrusted (may be NULL); the context keeps references. */
int verify_cache_install(SSL_CTX *ctx, STACK_OF(X509) *untrusted, struct ac_err *err);

/* Verify ssl's client chain through cache (NULL: full verification). 0, or -1. */
int verify_cache_attach(SSL *ssl, struct verify_cache *cache);

/* Counters so far (readable from any thread). */
void verify_cache_stats(const struct verify_cache *cache, struct verify_cache_stats *out);

#endif
