/*
 * worker_libctx.h - the OpenSSL library context the proxy's workers run handshakes in: the
 * process's own algorithms, with certificate public keys as the only thing it can decode.
 *
 * Why: OpenSSL 3.0 parses a certificate's public key through OSSL_DECODER_CTX_new_for_pkey,
 * which builds a decoder context out of every decoder of the library context (the default
 * provider has 40: private keys, PEM, MSBLOB, PVK...) on every parse. A new mTLS handshake
 * parses three certificates (the client's leaf and intermediate, and the leaf again when
 * the session ticket is built), and these decoder contexts were 40% of the proxy's
 * instructions per handshake. A handshake only ever decodes certificates' public keys: the
 * proxy's own key and certificates are read by other threads, in the process's context.
 *
 * How (worker_libctx.c): a built-in provider that answers every operation with the
 * process's "default" provider's own algorithms (the same implementations with the same
 * provider context), except that its decoders are only the DER SubjectPublicKeyInfo ones,
 * and that the key types no handshake under enrollment/tls.c's policy uses are left out
 * (finite-field DH, DSA, SM2 and the EVP_PKEY forms of MACs and KDFs but HMAC; each
 * decoder context also walks every key type): 8 decoders of 40, 8 key types of 18. One
 * more: the EC public-key check of a peer's key share on P-256, P-384 or P-521 is
 * OpenSSL's quick one, since on these curves (cofactor 1) the full one only adds a
 * multiplication by the group order whose result is known (SEC 1 v2, 3.2.2.1), as costly
 * as the key exchange itself. A library context holding only that provider is made the
 * thread's default (OSSL_LIB_CTX_set0_default) around each SSL_do_handshake of a worker
 * (worker_libctx_handshake, which proxy.c calls). The proxy's SSL_CTXs are built with the NULL
 * library context, so what libssl fetches or parses in the handshake resolves there: the same
 * algorithms, a certificate parse about half as costly, a P-256 key exchange without a
 * scalar multiplication.
 *
 * Only around the handshake: OpenSSL 3.0 runs an object's ex_data free callbacks from the
 * registry of the thread's default context at the time of the free, and the callbacks are
 * registered in the process's. An SSL_CTX released by a worker with this context as the
 * default would not free its ex_data (enrollment/tls.c's, verify_cache.c's).
 *
 * Never other algorithms than the process has: when the process runs any provider but
 * "default" and "base" (FIPS, PKCS#11, legacy...), there is no worker context, and the
 * handshakes run in the process's context as before.
 */
#ifndef AGENTCA_GATEWAY_HOOK_WORKER_LIBCTX_H
#define AGENTCA_GATEWAY_HOOK_WORKER_LIBCTX_H

#include <openssl/crypto.h>
#include <openssl/ssl.h>

/*
 * The worker library context: made on the first call (thread-safe) and kept for the
 * process's life, since keys and certificates used in a handshake keep references into it.
 * NULL when the process's providers are not the plain default ones (see above), or when it
 * could not be made; the caller then goes on without it.
 */
OSSL_LIB_CTX *worker_libctx(void);

/* SSL_do_handshake(ssl) with worker_libctx() as the thread's default context for the call,
 * and only for it (see above: ex_data); as SSL_do_handshake without one. */
int worker_libctx_handshake(SSL *ssl);

#endif
