/*
 * tls.c - the TLS policy, written once: server and client SSL_CTX construction, the
 * swappable context slot, and reading a verified peer's identity.
 *
 * Every context this file builds gets the same policy: TLS 1.2 minimum; for TLS 1.2 only
 * ECDHE key exchange with an AEAD (AES-GCM, ChaCha20-Poly1305); for TLS 1.3 the AES-GCM and
 * ChaCha20 suites; key exchange groups X25519 and P-256; no renegotiation, no compression.
 *
 * Things a context needs beyond what OpenSSL stores itself (intermediates that clients may
 * omit, our copy of the ALPN list, the session ticket keys) live in one struct tls_extra,
 * hung on the SSL_CTX as ex_data and freed by OpenSSL when the last reference goes.
 *
 * Session tickets: OpenSSL 3.0 makes one random ticket key per SSL_CTX and keeps it for the
 * context's lifetime, which never rotates in a long-running daemon. So a server context
 * installs its own ticket key callback: a random key pair (AES-256-CBC + HMAC-SHA256, the
 * layout OpenSSL uses) that is replaced every TICKET_ROTATE_SECONDS; the previous key is
 * still accepted for one more period (and the client is sent a fresh ticket), anything older
 * means a full handshake. Keys live in memory only and die with the context, so a context
 * swap (new certificate or bundle) also invalidates every outstanding ticket.
 *
 * Client certificates: the server verifies against an X509_STORE built from client_roots.
 * Intermediates in client_untrusted are *untrusted* helpers for chain building, exactly like
 * the ones the client sends: a certificate verify callback appends them to the peer's own
 * chain before X509_verify_cert() runs. They never become trust anchors.
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "ca/keys.h"
#include "ca/x509_build.h"
#include "enrollment/tls.h"

#define TLS12_CIPHERS                                                                              \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                               \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                               \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define TLS13_SUITES "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
#define TLS_SESSION_ID_CONTEXT "agentca"

#define TICKET_ROTATE_SECONDS (12 * 3600)
#define TICKET_LIFETIME_SECONDS 7200 /* SSL_CTX_set_timeout: how long a ticket is honoured */

/* One session ticket key: a name the client echoes back, and the two secrets. */
struct ticket_key {
	unsigned char name[16];
	unsigned char aes[32];
	unsigned char hmac[32];
	time_t created; /* 0: slot empty */
};

/* Per-context data that OpenSSL does not keep for us. */
struct tls_extra {
	STACK_OF(X509) *untrusted; /* extra intermediates for client chains, or NULL */
	int64_t client_grace;      /* seconds a client leaf may be expired (renewal only); 0 */
	unsigned char *alpn;       /* our ALPN list (wire format), or NULL */
	size_t alpn_len;
	pthread_mutex_t ticket_lock; /* guards keys[] */
	struct ticket_key keys[2];   /* [0] current (encrypts), [1] previous (decrypts only) */
};

static int extra_index = -1;
static pthread_once_t extra_once = PTHREAD_ONCE_INIT;
/* Per SSL: set by client_verify_cb when the client's leaf was let through expired (grace). */
static int grace_index = -1;

/* OpenSSL calls this when the SSL_CTX holding a struct tls_extra is freed. */
static void
extra_free_cb(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	struct tls_extra *x = ptr;

	(void)parent;
	(void)ad;
	(void)idx;
	(void)argl;
	(void)argp;
	if (x == NULL)
		return;
	sk_X509_pop_free(x->untrusted, X509_free);
	OPENSSL_free(x->alpn);
	OPENSSL_cleanse(x->keys, sizeof(x->keys));
	pthread_mutex_destroy(&x->ticket_lock);
	OPENSSL_free(x);
}

/* Register our ex_data slot once per process. */
static void
extra_index_init(void)
{
	extra_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, extra_free_cb);
	grace_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

/* Attach a fresh, empty struct tls_extra to ctx (the context then owns it). */
static struct tls_extra *
extra_attach(SSL_CTX *ctx, struct ac_err *err)
{
	struct tls_extra *x;

	pthread_once(&extra_once, extra_index_init);
	if (extra_index < 0 || grace_index < 0) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "tls_ctx_failed", "cannot register TLS ex_data");
		return NULL;
	}
	x = OPENSSL_zalloc(sizeof(*x));
	if (x == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		return NULL;
	}
	if (pthread_mutex_init(&x->ticket_lock, NULL) != 0) {
		OPENSSL_free(x);
		ac_err_set(err, AC_ERR_INTERNAL, "tls_ctx_failed", "cannot create a mutex");
		return NULL;
	}
	if (!SSL_CTX_set_ex_data(ctx, extra_index, x)) {
		pthread_mutex_destroy(&x->ticket_lock);
		OPENSSL_free(x);
		ac_err_ssl(err, AC_ERR_CRYPTO, "tls_ctx_failed", "cannot attach TLS ex_data");
		return NULL;
	}
	return x;
}

/* The struct tls_extra of ctx, or NULL (a context not built here). */
static struct tls_extra *
extra_of(const SSL_CTX *ctx)
{
	if (extra_index < 0)
		return NULL;
	return SSL_CTX_get_ex_data(ctx, extra_index);
}

/* Versions, suites, groups and options shared by server and client contexts. */
static int
apply_policy(SSL_CTX *ctx, struct ac_err *err)
{
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
	    !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION))
		return ac_err_ssl(err, AC_ERR_CRYPTO, "tls_policy_failed",
		                  "cannot set the TLS protocol versions");
	if (!SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS))
		return ac_err_ssl(err, AC_ERR_CRYPTO, "tls_policy_failed",
		                  "cannot set the TLS 1.2 cipher list");
	if (!SSL_CTX_set_ciphersuites(ctx, TLS13_SUITES))
		return ac_err_ssl(err, AC_ERR_CRYPTO, "tls_policy_failed",
		                  "cannot set the TLS 1.3 cipher suites");
	if (!SSL_CTX_set1_groups_list(ctx, TLS_GROUPS))
		return ac_err_ssl(err, AC_ERR_CRYPTO, "tls_policy_failed",
		                  "cannot set the key exchange groups");
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
	/* Idle connections do not hold 2 x 16 KiB of record buffers. */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	return 0;
}

/* An X509_STORE holding every certificate of certs as a trust anchor. */
static X509_STORE *
store_from_stack(STACK_OF(X509) *certs, const char *what, struct ac_err *err)
{
	X509_STORE *store;

	store = X509_STORE_new();
	if (store == NULL) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "tls_ctx_failed", "cannot create the %s store",
		           what);
		return NULL;
	}
	for (int i = 0; i < sk_X509_num(certs); i++) {
		if (!X509_STORE_add_cert(store, sk_X509_value(certs, i))) {
			ac_err_ssl(err, AC_ERR_CRYPTO, "tls_ctx_failed",
			           "cannot add certificate %d to the %s store", i, what);
			X509_STORE_free(store);
			return NULL;
		}
	}
	return store;
}

/* A copy of a stack of certificates, each with its own reference. */
static STACK_OF(X509) *
stack_dup(STACK_OF(X509) *in, struct ac_err *err)
{
	STACK_OF(X509) *out = X509_chain_up_ref(in);

	if (out == NULL)
		ac_err_ssl(err, AC_ERR_CRYPTO, "tls_ctx_failed", "cannot copy a certificate list");
	return out;
}

/* Fill one ticket key with fresh random bytes. */
static int
ticket_key_new(struct ticket_key *k, time_t now)
{
	if (RAND_bytes(k->name, sizeof(k->name)) != 1 || RAND_bytes(k->aes, sizeof(k->aes)) != 1 ||
	    RAND_bytes(k->hmac, sizeof(k->hmac)) != 1)
		return -1;
	k->created = now;
	return 0;
}

/* Rotate when the current key is older than the period (caller holds ticket_lock). */
static int
ticket_keys_rotate(struct tls_extra *x, time_t now)
{
	struct ticket_key fresh;

	if (x->keys[0].created != 0 && now - x->keys[0].created < TICKET_ROTATE_SECONDS)
		return 0;
	if (ticket_key_new(&fresh, now) != 0)
		return -1;
	x->keys[1] = x->keys[0];
	x->keys[0] = fresh;
	OPENSSL_cleanse(&fresh, sizeof(fresh));
	return 0;
}

/*
 * OpenSSL's ticket key callback. enc=1: encrypt a new ticket under the current key.
 * enc=0: find the key named by the ticket; 1 = fine, 2 = fine but send a new ticket (old
 * key), 0 = unknown key (full handshake), -1 = error.
 */
static int
ticket_key_cb(SSL *ssl, unsigned char key_name[16], unsigned char iv[EVP_MAX_IV_LENGTH],
              EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
	struct tls_extra *x = extra_of(SSL_get_SSL_CTX(ssl));
	struct ticket_key key;
	OSSL_PARAM params[3];
	int rc = -1, slot = -1;

	if (x == NULL)
		return -1;
	pthread_mutex_lock(&x->ticket_lock);
	if (ticket_keys_rotate(x, time(NULL)) == 0) {
		if (enc)
			slot = 0;
		else
			for (int i = 0; i < 2; i++)
				if (x->keys[i].created != 0 &&
				    CRYPTO_memcmp(key_name, x->keys[i].name, 16) == 0)
					slot = i;
		if (slot >= 0)
			key = x->keys[slot];
		rc = slot >= 0 ? 1 : 0;
	}
	pthread_mutex_unlock(&x->ticket_lock);
	if (rc != 1)
		return rc;

	params[0] =
	    OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, key.hmac, sizeof(key.hmac));
	params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0);
	params[2] = OSSL_PARAM_construct_end();
	rc = -1;
	if (enc) {
		memcpy(key_name, key.name, 16);
		if (RAND_bytes(iv, 16) != 1 ||
		    !EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, key.aes, iv) ||
		    !EVP_MAC_CTX_set_params(hctx, params))
			goto out;
		rc = 1;
	} else {
		if (!EVP_MAC_CTX_set_params(hctx, params) ||
		    !EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, key.aes, iv))
			goto out;
		rc = slot == 0 ? 1 : 2;
	}
out:
	OPENSSL_cleanse(&key, sizeof(key));
	return rc;
}

/* 1 when a leaf that expired at not_after is within grace seconds of now (and expired). */
static int
within_grace(int64_t not_after, int64_t grace, int64_t now)
{
	return grace > 0 && now > not_after && now - not_after <= grace;
}

/*
 * The X509 verify callback of a context with a renewal grace: every fault fails, as without a
 * callback, except X509_V_ERR_CERT_HAS_EXPIRED on the leaf itself (depth 0) within the grace.
 * Signatures, the chain to our root, the intermediates' validity, purposes and name
 * constraints are all still checked.
 */
static int
grace_verify_cb(int ok, X509_STORE_CTX *sctx)
{
	SSL *ssl;
	struct tls_extra *x;
	X509 *cert;

	if (ok)
		return 1;
	if (X509_STORE_CTX_get_error(sctx) != X509_V_ERR_CERT_HAS_EXPIRED ||
	    X509_STORE_CTX_get_error_depth(sctx) != 0)
		return 0;
	ssl = X509_STORE_CTX_get_ex_data(sctx, SSL_get_ex_data_X509_STORE_CTX_idx());
	x = ssl != NULL ? extra_of(SSL_get_SSL_CTX(ssl)) : NULL;
	cert = X509_STORE_CTX_get_current_cert(sctx);
	if (x == NULL || cert == NULL ||
	    !within_grace(asn1_time_to_unix(X509_get0_notAfter(cert)), x->client_grace,
	                  (int64_t)time(NULL)))
		return 0;
	return 1;
}

int
tls_verify_chain_with(X509_STORE_CTX *sctx, STACK_OF(X509) *extra)
{
	STACK_OF(X509) *orig = NULL, *both = NULL;
	int rc;

	if (extra != NULL && sk_X509_num(extra) > 0) {
		orig = X509_STORE_CTX_get0_untrusted(sctx);
		both = orig != NULL ? sk_X509_dup(orig) : sk_X509_new_null();
		if (both == NULL) {
			X509_STORE_CTX_set_error(sctx, X509_V_ERR_OUT_OF_MEM);
			return 0;
		}
		for (int i = 0; i < sk_X509_num(extra); i++) {
			if (!sk_X509_push(both, sk_X509_value(extra, i))) {
				sk_X509_free(both);
				X509_STORE_CTX_set_error(sctx, X509_V_ERR_OUT_OF_MEM);
				return 0;
			}
		}
		X509_STORE_CTX_set0_untrusted(sctx, both);
	}
	rc = X509_verify_cert(sctx);
	if (both != NULL) {
		X509_STORE_CTX_set0_untrusted(sctx, orig);
		sk_X509_free(both); /* the certificates themselves are borrowed */
	}
	return rc;
}

/*
 * Certificate verification for client chains: the peer's chain plus our extra
 * intermediates, all untrusted, then the ordinary X509_verify_cert() against the store.
 * With a renewal grace, grace_verify_cb lets a just-expired leaf through and the connection
 * is marked (grace_index) so that tls_peer_from_ssl never calls it present.
 */
static int
client_verify_cb(X509_STORE_CTX *sctx, void *arg)
{
	struct tls_extra *x = arg;
	SSL *ssl = X509_STORE_CTX_get_ex_data(sctx, SSL_get_ex_data_X509_STORE_CTX_idx());
	int rc;

	if (ssl != NULL)
		SSL_set_ex_data(ssl, grace_index, NULL);
	if (x != NULL && x->client_grace > 0)
		X509_STORE_CTX_set_verify_cb(sctx, grace_verify_cb);
	rc = tls_verify_chain_with(sctx, x != NULL ? x->untrusted : NULL);
	/* Verified with a fault left standing: only grace_verify_cb lets one through. */
	if (rc == 1 && ssl != NULL && X509_STORE_CTX_get_error(sctx) == X509_V_ERR_CERT_HAS_EXPIRED)
		SSL_set_ex_data(ssl, grace_index, (void *)1);
	return rc;
}

/* Pick the first protocol of ours the client also offers; no overlap: carry on without. */
static int
alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
               unsigned int inlen, void *arg)
{
	struct tls_extra *x = arg;
	unsigned char *sel = NULL;

	(void)ssl;
	if (x == NULL || x->alpn == NULL)
		return SSL_TLSEXT_ERR_NOACK;
	if (SSL_select_next_proto(&sel, outlen, x->alpn, (unsigned int)x->alpn_len, in, inlen) !=
	    OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_NOACK;
	*out = sel;
	return SSL_TLSEXT_ERR_OK;
}

/* A server context per the policy. */
SSL_CTX *
tls_server_ctx_new(const struct tls_server_config *cfg, struct ac_err *err)
{
	SSL_CTX *ctx = NULL;
	X509_STORE *store = NULL;
	struct tls_extra *x;
	int mode;

	if (cfg == NULL || cfg->cert == NULL || cfg->key == NULL) {
		ac_err_set(err, AC_ERR_INVALID, "tls_config_invalid",
		           "a TLS server needs a certificate and its key");
		goto fail;
	}
	if (cfg->client_auth != TLS_CLIENT_AUTH_NONE && sk_X509_num(cfg->client_roots) <= 0) {
		ac_err_set(err, AC_ERR_INVALID, "tls_config_invalid",
		           "client certificate verification needs at least one client root");
		goto fail;
	}
	ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "tls_ctx_failed", "cannot create a TLS context");
		goto fail;
	}
	if (apply_policy(ctx, err) != 0)
		goto fail;
	if ((x = extra_attach(ctx, err)) == NULL)
		goto fail;

	if (SSL_CTX_use_certificate(ctx, cfg->cert) != 1 ||
	    SSL_CTX_use_PrivateKey(ctx, cfg->key) != 1) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "tls_cert_rejected",
		           "the server certificate or key was refused");
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		ac_err_ssl(err, AC_ERR_INVALID, "tls_key_mismatch",
		           "the server key does not match its certificate");
		goto fail;
	}
	if (cfg->chain != NULL && SSL_CTX_set1_chain(ctx, cfg->chain) != 1) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "tls_cert_rejected",
		           "the server certificate chain was refused");
		goto fail;
	}

	/* Tickets: our rotating keys; no server-side session cache (tickets carry it all). */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_timeout(ctx, TICKET_LIFETIME_SECONDS);
	if (SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_key_cb) != 1) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "tls_ctx_failed", "cannot install the ticket keys");
		goto fail;
	}
	if (SSL_CTX_set_session_id_context(ctx, (const unsigned char *)TLS_SESSION_ID_CONTEXT,
	                                   sizeof(TLS_SESSION_ID_CONTEXT) - 1) != 1) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "tls_ctx_failed", "cannot set the session context");
		goto fail;
	}

	if (cfg->alpn != NULL && cfg->alpn_len > 0) {
		x->alpn = OPENSSL_memdup(cfg->alpn, cfg->alpn_len);
		if (x->alpn == NULL) {
			ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
			goto fail;
		}
		x->alpn_len = cfg->alpn_len;
		SSL_CTX_set_alpn_select_cb(ctx, alpn_select_cb, x);
	}

	if (cfg->client_auth != TLS_CLIENT_AUTH_NONE) {
		store = store_from_stack(cfg->client_roots, "client root", err);
		if (store == NULL)
			goto fail;
		SSL_CTX_set_cert_store(ctx, store); /* the context owns it now */
		store = NULL;
		if (cfg->client_untrusted != NULL && sk_X509_num(cfg->client_untrusted) > 0) {
			x->untrusted = stack_dup(cfg->client_untrusted, err);
			if (x->untrusted == NULL)
				goto fail;
		}
		x->client_grace = cfg->client_expired_grace > 0 ? cfg->client_expired_grace : 0;
		SSL_CTX_set_cert_verify_callback(ctx, client_verify_cb, x);
		mode = SSL_VERIFY_PEER;
		if (cfg->client_auth == TLS_CLIENT_AUTH_REQUIRED)
			mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
		SSL_CTX_set_verify(ctx, mode, NULL);
	} else {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	}
	return ctx;
fail:
	X509_STORE_free(store);
	SSL_CTX_free(ctx);
	return NULL;
}

/* A client context per the policy, verifying the server against cfg->roots. */
SSL_CTX *
tls_client_ctx_new(const struct tls_client_config *cfg, struct ac_err *err)
{
	SSL_CTX *ctx = NULL;
	X509_STORE *store = NULL;

	if (cfg == NULL || sk_X509_num(cfg->roots) <= 0) {
		ac_err_set(err, AC_ERR_INVALID, "tls_config_invalid",
		           "a TLS client needs at least one trusted root");
		goto fail;
	}
	if ((cfg->cert == NULL) != (cfg->key == NULL)) {
		ac_err_set(err, AC_ERR_INVALID, "tls_config_invalid",
		           "a client certificate needs its key, and a key its certificate");
		goto fail;
	}
	ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "tls_ctx_failed", "cannot create a TLS context");
		goto fail;
	}
	if (apply_policy(ctx, err) != 0)
		goto fail;
	store = store_from_stack(cfg->roots, "server root", err);
	if (store == NULL)
		goto fail;
	SSL_CTX_set_cert_store(ctx, store);
	store = NULL;
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (cfg->cert != NULL) {
		if (SSL_CTX_use_certificate(ctx, cfg->cert) != 1 ||
		    SSL_CTX_use_PrivateKey(ctx, cfg->key) != 1 ||
		    SSL_CTX_check_private_key(ctx) != 1) {
			ac_err_ssl(err, AC_ERR_INVALID, "tls_cert_rejected",
			           "the client certificate or key was refused");
			goto fail;
		}
		if (cfg->chain != NULL && SSL_CTX_set1_chain(ctx, cfg->chain) != 1) {
			ac_err_ssl(err, AC_ERR_CRYPTO, "tls_cert_rejected",
			           "the client certificate chain was refused");
			goto fail;
		}
	}
	return ctx;
fail:
	X509_STORE_free(store);
	SSL_CTX_free(ctx);
	return NULL;
}

/*
 * The name the server must prove: an IP literal is checked against IP SANs (and gets no
 * SNI, which RFC 6066 forbids for addresses); a DNS name against DNS SANs, and sent as SNI.
 */
int
tls_client_set_host(SSL *ssl, const char *host, struct ac_err *err)
{
	unsigned char addr[sizeof(struct in6_addr)];
	char bare[INET6_ADDRSTRLEN + 2];
	size_t len;

	if (ssl == NULL || host == NULL || host[0] == '\0')
		return ac_err_set(err, AC_ERR_INVALID, "tls_host_invalid", "empty server name");
	len = strlen(host);
	/* "[::1]" as written in URLs. */
	if (host[0] == '[' && host[len - 1] == ']' && len - 2 < sizeof(bare)) {
		memcpy(bare, host + 1, len - 2);
		bare[len - 2] = '\0';
		host = bare;
	}
	if (inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1) {
		if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) != 1)
			return ac_err_ssl(err, AC_ERR_INVALID, "tls_host_invalid",
			                  "%s: cannot check this address", host);
		return 0;
	}
	X509_VERIFY_PARAM_set_hostflags(SSL_get0_param(ssl), X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	if (SSL_set1_host(ssl, host) != 1)
		return ac_err_ssl(err, AC_ERR_INVALID, "tls_host_invalid",
		                  "%s: cannot check this host name", host);
	if (SSL_set_tlsext_host_name(ssl, host) != 1)
		return ac_err_ssl(err, AC_ERR_INVALID, "tls_host_invalid",
		                  "%s: cannot send this host name (SNI)", host);
	return 0;
}

/*
 * The swappable context: a pointer under a mutex. Acquire takes a reference under the lock,
 * so a swap can drop the slot's reference at any time without pulling a context out from
 * under a connection that is being set up.
 */
struct tls_ctx_slot {
	pthread_mutex_t lock;
	SSL_CTX *ctx;
};

/* A slot holding initial (ownership passes to the slot). NULL when out of memory. */
struct tls_ctx_slot *
tls_slot_new(SSL_CTX *initial)
{
	struct tls_ctx_slot *slot = calloc(1, sizeof(*slot));

	if (slot == NULL || pthread_mutex_init(&slot->lock, NULL) != 0) {
		free(slot);
		SSL_CTX_free(initial);
		return NULL;
	}
	slot->ctx = initial;
	return slot;
}

/* The current context with one more reference (NULL when the slot is empty). */
SSL_CTX *
tls_slot_acquire(struct tls_ctx_slot *slot)
{
	SSL_CTX *ctx;

	pthread_mutex_lock(&slot->lock);
	ctx = slot->ctx;
	if (ctx != NULL && SSL_CTX_up_ref(ctx) != 1)
		ctx = NULL;
	pthread_mutex_unlock(&slot->lock);
	return ctx;
}

/* Install fresh (owned by the slot from now on); the old one is freed when its last
 * connection ends. */
void
tls_slot_swap(struct tls_ctx_slot *slot, SSL_CTX *fresh)
{
	SSL_CTX *old;

	pthread_mutex_lock(&slot->lock);
	old = slot->ctx;
	slot->ctx = fresh;
	pthread_mutex_unlock(&slot->lock);
	SSL_CTX_free(old);
}

/* Free the slot and drop its reference. */
void
tls_slot_free(struct tls_ctx_slot *slot)
{
	if (slot == NULL)
		return;
	SSL_CTX_free(slot->ctx);
	pthread_mutex_destroy(&slot->lock);
	free(slot);
}

/* Lowercase hex of the certificate's serial number. */
static int
serial_hex(X509 *cert, char out[41], struct ac_err *err)
{
	BIGNUM *bn = NULL;
	char *hex = NULL;
	int rc = -1;
	size_t n;

	bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
	if (bn == NULL || (hex = BN_bn2hex(bn)) == NULL) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "cert_unreadable", "cannot read the serial number");
		goto out;
	}
	n = strlen(hex);
	if (n >= 41) {
		ac_err_set(err, AC_ERR_INVALID, "cert_serial_too_long",
		           "the serial number is longer than 20 bytes");
		goto out;
	}
	for (size_t i = 0; i <= n; i++)
		out[i] = (char)(hex[i] >= 'A' && hex[i] <= 'F' ? hex[i] - 'A' + 'a' : hex[i]);
	rc = 0;
out:
	OPENSSL_free(hex);
	BN_free(bn);
	return rc;
}

/* The first URI SAN that starts with spiffe:// (and holds no NUL), or "" when none. */
static int
spiffe_of(X509 *cert, char *out, size_t outlen, struct ac_err *err)
{
	GENERAL_NAMES *sans;
	int crit = 0, rc = 0;

	out[0] = '\0';
	sans = X509_get_ext_d2i(cert, NID_subject_alt_name, &crit, NULL);
	if (sans == NULL) {
		if (crit == -2) /* extension present but unreadable */
			rc = ac_err_set(err, AC_ERR_INVALID, "cert_bad_san",
			                "the subjectAltName extension is unreadable");
		ERR_clear_error();
		return rc;
	}
	for (int i = 0; i < sk_GENERAL_NAME_num(sans); i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(sans, i);
		const unsigned char *data;
		int len;

		if (gn->type != GEN_URI)
			continue;
		data = ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier);
		len = ASN1_STRING_length(gn->d.uniformResourceIdentifier);
		if (len < 9 || memcmp(data, "spiffe://", 9) != 0 ||
		    memchr(data, '\0', (size_t)len) != NULL)
			continue;
		if ((size_t)len >= outlen) {
			rc = ac_err_set(err, AC_ERR_INVALID, "cert_spiffe_too_long",
			                "the SPIFFE ID is longer than %zu bytes", outlen - 1);
			break;
		}
		memcpy(out, data, (size_t)len);
		out[len] = '\0';
		break;
	}
	GENERAL_NAMES_free(sans);
	return rc;
}

/* Everything struct tls_peer holds, read from a certificate. */
int
tls_peer_from_cert(X509 *cert, struct tls_peer *peer, struct ac_err *err)
{
	EVP_PKEY *pub;

	memset(peer, 0, sizeof(*peer));
	if (cert == NULL)
		return ac_err_set(err, AC_ERR_INVALID, "cert_missing", "no certificate");
	if (spiffe_of(cert, peer->spiffe_id, sizeof(peer->spiffe_id), err) != 0 ||
	    serial_hex(cert, peer->serial, err) != 0)
		goto fail;
	peer->not_after = asn1_time_to_unix(X509_get0_notAfter(cert));
	pub = X509_get0_pubkey(cert);
	if (pub == NULL) {
		ac_err_ssl(err, AC_ERR_INVALID, "cert_bad_key", "cannot read the public key");
		goto fail;
	}
	if (cert_spki_sha256(cert, peer->spki_sha256, err) != 0)
		goto fail;
	peer->present = 1;
	return 0;
fail:
	memset(peer, 0, sizeof(*peer));
	return -1;
}

/* The verified peer of a finished handshake; present stays 0 without a verified cert that
 * is valid now; expired_in_grace as tls.h says. */
int
tls_peer_from_ssl(SSL *ssl, struct tls_peer *peer, struct ac_err *err)
{
	const struct tls_extra *x;
	X509 *cert;
	long result;
	int graced;
	int64_t now = (int64_t)time(NULL);

	memset(peer, 0, sizeof(*peer));
	if (ssl == NULL)
		return ac_err_set(err, AC_ERR_INTERNAL, "tls_no_connection", "no TLS connection");
	cert = SSL_get0_peer_certificate(ssl);
	if (cert == NULL)
		return 0;
	result = SSL_get_verify_result(ssl);
	graced = grace_index >= 0 && SSL_get_ex_data(ssl, grace_index) != NULL;
	if (result != X509_V_OK && !(result == X509_V_ERR_CERT_HAS_EXPIRED && graced))
		return 0;
	if (tls_peer_from_cert(cert, peer, err) != 0)
		return -1;
	if (result == X509_V_OK && peer->not_after >= now)
		return 0; /* present */
	/* Expired: at the handshake (graced), or since (a resumed session). */
	x = extra_of(SSL_get_SSL_CTX(ssl));
	peer->present = 0;
	if (x != NULL && within_grace(peer->not_after, x->client_grace, now)) {
		peer->expired_in_grace = 1;
		return 0;
	}
	memset(peer, 0, sizeof(*peer));
	return 0;
}

void
tls_error_queue_clear(void)
{
	if (ERR_peek_error() != 0)
		ERR_clear_error();
}
