/*
 * tls.h - TLS policy, written once: the HTTPS API front and the mTLS proxy both build their
 * SSL_CTX here, swap it here, and read a verified peer's identity here.
 *
 * Policy: TLS 1.2 and 1.3 only; AEAD suites only (TLS 1.3: AES-128-GCM, AES-256-GCM,
 * ChaCha20-Poly1305; TLS 1.2: ECDHE with AES-GCM or ChaCha20-Poly1305); groups X25519 and
 * P-256; no renegotiation, no compression; session tickets on (server) with keys that rotate.
 * A server context built with a client bundle asks for a client certificate and verifies it
 * against that bundle; whether one is required is the caller's choice.
 *
 * SSL_CTX objects are built once (at start-up or when certificates or the bundle change, off
 * the hot path) and reused for every connection. struct tls_ctx_slot holds the current one:
 * tls_slot_acquire() returns it with a reference that the caller releases with
 * SSL_CTX_free(); tls_slot_swap() installs a new one atomically; connections already open
 * keep the context they started with.
 */
#ifndef AGENTCA_ENROLLMENT_TLS_H
#define AGENTCA_ENROLLMENT_TLS_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "common/error.h"

/* The key exchange groups of the policy, in OpenSSL's list form (also what
 * tests/unit/test_proxy_worker_libctx.c runs a handshake over, one by one). */
#define TLS_GROUPS "X25519:P-256"

enum tls_client_auth {
	TLS_CLIENT_AUTH_NONE = 0, /* do not ask */
	TLS_CLIENT_AUTH_OPTIONAL, /* ask; verify if sent; a connection without one proceeds */
	TLS_CLIENT_AUTH_REQUIRED, /* ask; refuse the handshake without a valid one */
};

struct tls_server_config {
	X509 *cert;                       /* our leaf (borrowed; the context takes its own ref) */
	STACK_OF(X509) *chain;            /* intermediates sent after the leaf; may be NULL */
	EVP_PKEY *key;                    /* its private key (borrowed) */
	STACK_OF(X509) *client_roots;     /* trust anchors for client certificates; may be NULL */
	STACK_OF(X509) *client_untrusted; /* intermediates clients may omit; may be NULL */
	enum tls_client_auth client_auth;
	/* Renewal grace, seconds (0: off). A client chain whose only fault is a leaf that expired
	 * no longer ago than this completes the handshake, but its peer is never `present`: it
	 * is `expired_in_grace`, which only renewal accepts. An expired intermediate, a leaf
	 * expired for longer, or any other fault still fails the handshake. */
	int64_t client_expired_grace;
	const unsigned char *alpn; /* wire-format ALPN list we accept, or NULL */
	size_t alpn_len;
};

/* A server context per the policy above. */
SSL_CTX *tls_server_ctx_new(const struct tls_server_config *cfg, struct ac_err *err);

/* X509_verify_cert() on sctx with extra (may be NULL) added to the peer's chain as untrusted
 * intermediates for the duration of the call; they never become trust anchors. What the
 * server contexts' certificate verify callback does (also gateway-hook/verify_cache.c's miss
 * path). 1 when verified; else 0 with the reason in sctx. */
int tls_verify_chain_with(X509_STORE_CTX *sctx, STACK_OF(X509) *extra);

struct tls_client_config {
	STACK_OF(X509) *roots; /* trust anchors for the server (borrowed) */
	X509 *cert;            /* client certificate, or NULL */
	STACK_OF(X509) *chain; /* its intermediates, or NULL */
	EVP_PKEY *key;         /* its key, or NULL */
};

/* A client context per the policy (verifies the server against roots; hostname checks are
 * set per connection with tls_client_set_host). */
SSL_CTX *tls_client_ctx_new(const struct tls_client_config *cfg, struct ac_err *err);

/* Ask for and check the server's name (DNS or IP literal) on this connection; sets SNI. */
int tls_client_set_host(SSL *ssl, const char *host, struct ac_err *err);

/* The current context, swappable. */
struct tls_ctx_slot;

struct tls_ctx_slot *tls_slot_new(SSL_CTX *initial);           /* takes ownership of initial */
SSL_CTX *tls_slot_acquire(struct tls_ctx_slot *slot);          /* +1 reference: SSL_CTX_free it */
void tls_slot_swap(struct tls_ctx_slot *slot, SSL_CTX *fresh); /* takes ownership */
void tls_slot_free(struct tls_ctx_slot *slot);

/* What a verified peer certificate says. */
struct tls_peer {
	int present; /* 1: a certificate verified and is valid now; 0: none (or see below) */
	/* 1: the chain verified but for the leaf's own expiry, within the context's renewal
	 * grace. present is 0 and the fields below are filled: such a peer is NOT
	 * authenticated; only renewal may accept it, after checking the grace itself. */
	int expired_in_grace;
	char spiffe_id[2049]; /* the URI SAN starting with spiffe://, or "" */
	char serial[41];      /* lowercase hex */
	int64_t not_after;    /* unix seconds */
	char spki_sha256[65];
};

/* Fill peer from a connection whose handshake has completed: only a certificate that
 * verified (SSL_get_verify_result == X509_V_OK) and has not expired counts as present (a
 * resumed session may carry a certificate that expired since). A leaf expired within the
 * context's grace, at handshake and now, is expired_in_grace instead. */
int tls_peer_from_ssl(SSL *ssl, struct tls_peer *peer, struct ac_err *err);

/* The same from a certificate (used by tests and by offline tools). */
int tls_peer_from_cert(X509 *cert, struct tls_peer *peer, struct ac_err *err);

/*
 * Empty the thread's OpenSSL error queue before an SSL call whose failure SSL_get_error
 * will judge (the API front's and the proxy's reads, writes and handshakes): SSL_get_error
 * reads the queue with ERR_peek_error, and a stale entry would turn a plain "would block"
 * into an error. ERR_clear_error walks every slot of the queue even when it is empty (about
 * 800 instructions, twice per relayed round trip); this looks first, with what
 * SSL_get_error will look at.
 */
void tls_error_queue_clear(void);

#endif
