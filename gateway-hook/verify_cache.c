/*
 * verify_cache.c - the proxy's verified-chain cache. See verify_cache.h for what is cached,
 * under which key, and what is checked again on a hit.
 *
 * Layout: a table of sets of VC_WAYS entries; a key's set is its first 8 bytes modulo the
 * number of sets (the key is a SHA-256, so that spreads evenly). A full set gives up its
 * least recently used entry. An entry holds references to the chain's issuers (not the
 * leaf: each handshake brings its own leaf object, and the verified chain handed to OpenSSL
 * is that leaf followed by the cached issuers).
 *
 * Generations: when a handshake under a newer generation than any the cache has seen
 * arrives, every entry is dropped at once (they can never match again), so the references
 * to an old bundle's certificates do not outlive it by much.
 */
#include "gateway-hook/verify_cache.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/evp.h>

#include "ca/x509_build.h"
#include "enrollment/tls.h"

#define VC_WAYS 4
#define DER_STACK_BUF 4096 /* a certificate's DER up to this size is hashed without malloc */

struct vc_entry {
	unsigned char key[32];
	int used;
	uint64_t last_used;           /* the cache's tick when last hit or made */
	int64_t valid_from, valid_to; /* latest notBefore, earliest notAfter of the chain */
	char serial[41];              /* the leaf's, lowercase hex as tls_peer spells it */
	STACK_OF(X509) *issuers;      /* the verified chain after the leaf (references) */
};

struct verify_cache {
	struct vc_entry *e; /* nsets * VC_WAYS */
	size_t nsets;
	uint64_t tick;
	uint64_t generation; /* the newest seen; entries are all of it */
	int (*revoked)(void *arg, const char *serial);
	void *revoked_arg;
	EVP_MD_CTX *md_ctx; /* reused for every key */
	EVP_MD *sha256;
	_Atomic uint64_t hits, misses, stale;
};

/* What a server context carries for the callback (ex_data, freed with the context). */
struct vc_ctx {
	uint64_t generation;
	STACK_OF(X509) *untrusted; /* the context's extra intermediates, or NULL */
};

static int ctx_index = -1, ssl_index = -1;
static pthread_once_t index_once = PTHREAD_ONCE_INIT;
static _Atomic uint64_t next_generation = 1;

static void
vc_ctx_free_cb(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	struct vc_ctx *v = ptr;

	(void)parent;
	(void)ad;
	(void)idx;
	(void)argl;
	(void)argp;
	if (v == NULL)
		return;
	sk_X509_pop_free(v->untrusted, X509_free);
	OPENSSL_free(v);
}

static void
index_init(void)
{
	ctx_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, vc_ctx_free_cb);
	ssl_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

static void
entry_clear(struct vc_entry *e)
{
	sk_X509_pop_free(e->issuers, X509_free);
	memset(e, 0, sizeof(*e));
}

struct verify_cache *
verify_cache_new(size_t entries, int (*revoked)(void *arg, const char *serial), void *arg)
{
	struct verify_cache *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	c->nsets = entries < VC_WAYS ? 1 : (entries + VC_WAYS - 1) / VC_WAYS;
	c->e = calloc(c->nsets * VC_WAYS, sizeof(*c->e));
	c->md_ctx = EVP_MD_CTX_new();
	c->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	c->revoked = revoked;
	c->revoked_arg = arg;
	if (c->e == NULL || c->md_ctx == NULL || c->sha256 == NULL) {
		verify_cache_free(c);
		return NULL;
	}
	return c;
}

static void
cache_clear(struct verify_cache *c)
{
	for (size_t i = 0; i < c->nsets * VC_WAYS; i++)
		if (c->e[i].used)
			entry_clear(&c->e[i]);
}

void
verify_cache_free(struct verify_cache *c)
{
	if (c == NULL)
		return;
	if (c->e != NULL)
		cache_clear(c);
	free(c->e);
	EVP_MD_CTX_free(c->md_ctx);
	EVP_MD_free(c->sha256);
	free(c);
}

void
verify_cache_stats(const struct verify_cache *c, struct verify_cache_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (c == NULL)
		return;
	out->hits = atomic_load_explicit(&c->hits, memory_order_relaxed);
	out->misses = atomic_load_explicit(&c->misses, memory_order_relaxed);
	out->stale = atomic_load_explicit(&c->stale, memory_order_relaxed);
}

static void
count(_Atomic uint64_t *counter)
{
	atomic_fetch_add_explicit(counter, 1, memory_order_relaxed);
}

/* Feed one certificate's DER, preceded by its length, into the digest. */
static int
hash_cert(EVP_MD_CTX *md, X509 *x)
{
	unsigned char stack_buf[DER_STACK_BUF], *der = stack_buf, *p, len_be[4];
	int len = i2d_X509(x, NULL), ok;

	if (len <= 0)
		return -1;
	if (len > DER_STACK_BUF && (der = malloc((size_t)len)) == NULL)
		return -1;
	p = der;
	len_be[0] = (unsigned char)(len >> 24);
	len_be[1] = (unsigned char)(len >> 16);
	len_be[2] = (unsigned char)(len >> 8);
	len_be[3] = (unsigned char)len;
	ok = i2d_X509(x, &p) == len && EVP_DigestUpdate(md, len_be, 4) == 1 &&
	     EVP_DigestUpdate(md, der, (size_t)len) == 1;
	if (der != stack_buf)
		free(der);
	return ok ? 0 : -1;
}

/* The key: SHA-256(generation || leaf || every other certificate the peer sent, in order). */
static int
cache_key(struct verify_cache *c, uint64_t generation, X509 *leaf, STACK_OF(X509) *sent,
          unsigned char key[32])
{
	unsigned char gen_be[8];
	unsigned int n = 0;

	for (int i = 0; i < 8; i++)
		gen_be[i] = (unsigned char)(generation >> (56 - 8 * i));
	if (EVP_DigestInit_ex(c->md_ctx, c->sha256, NULL) != 1 ||
	    EVP_DigestUpdate(c->md_ctx, gen_be, sizeof(gen_be)) != 1 ||
	    hash_cert(c->md_ctx, leaf) != 0)
		return -1;
	for (int i = 0; i < sk_X509_num(sent); i++) {
		X509 *x = sk_X509_value(sent, i);

		if (x != leaf && hash_cert(c->md_ctx, x) != 0) /* OpenSSL's list starts with it */
			return -1;
	}
	return EVP_DigestFinal_ex(c->md_ctx, key, &n) == 1 && n == 32 ? 0 : -1;
}

static struct vc_entry *
set_of(struct verify_cache *c, const unsigned char key[32])
{
	uint64_t h = 0;

	for (int i = 0; i < 8; i++)
		h = (h << 8) | key[i];
	return &c->e[(h % c->nsets) * VC_WAYS];
}

static struct vc_entry *
lookup(struct verify_cache *c, const unsigned char key[32])
{
	struct vc_entry *set = set_of(c, key);

	for (int i = 0; i < VC_WAYS; i++)
		if (set[i].used && memcmp(set[i].key, key, 32) == 0)
			return &set[i];
	return NULL;
}

/* Lowercase hex without leading zero bytes, as enrollment/tls.c's tls_peer spells serials. */
static int
serial_of(X509 *cert, char out[41])
{
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
	char *hex = bn != NULL ? BN_bn2hex(bn) : NULL;
	int rc = -1;

	if (hex != NULL && strlen(hex) < 41) {
		for (size_t i = 0; i <= strlen(hex); i++)
			out[i] =
			    (char)(hex[i] >= 'A' && hex[i] <= 'F' ? hex[i] - 'A' + 'a' : hex[i]);
		rc = 0;
	}
	OPENSSL_free(hex);
	BN_free(bn);
	return rc;
}

/* Remember chain (leaf first, as verified) under key. Failures only mean no entry. */
static void
insert(struct verify_cache *c, const unsigned char key[32], STACK_OF(X509) *chain)
{
	struct vc_entry *set = set_of(c, key), *e, fresh;
	int n = sk_X509_num(chain);

	if (n < 2)
		return;
	memset(&fresh, 0, sizeof(fresh));
	memcpy(fresh.key, key, 32);
	fresh.valid_from = INT64_MIN;
	fresh.valid_to = INT64_MAX;
	for (int i = 0; i < n; i++) {
		X509 *x = sk_X509_value(chain, i);
		int64_t from = asn1_time_to_unix(X509_get0_notBefore(x));
		int64_t to = asn1_time_to_unix(X509_get0_notAfter(x));

		if (from > fresh.valid_from)
			fresh.valid_from = from;
		if (to < fresh.valid_to)
			fresh.valid_to = to;
	}
	if (serial_of(sk_X509_value(chain, 0), fresh.serial) != 0 ||
	    (fresh.issuers = sk_X509_new_reserve(NULL, n - 1)) == NULL)
		return;
	for (int i = 1; i < n; i++) {
		X509 *x = sk_X509_value(chain, i);

		X509_up_ref(x);
		sk_X509_push(fresh.issuers, x); /* reserved: cannot fail */
	}
	/* An empty way, else the least recently used one (unused ways have last_used 0). */
	e = &set[0];
	for (int i = 1; i < VC_WAYS; i++)
		if (set[i].last_used < e->last_used)
			e = &set[i];
	if (e->used)
		entry_clear(e);
	*e = fresh;
	e->used = 1;
	e->last_used = ++c->tick;
}

/* The time X509_verify_cert() would check against. */
static int64_t
verify_time(X509_STORE_CTX *sctx)
{
	X509_VERIFY_PARAM *vp = X509_STORE_CTX_get0_param(sctx);

	if (vp != NULL && (X509_VERIFY_PARAM_get_flags(vp) & X509_V_FLAG_USE_CHECK_TIME) != 0)
		return (int64_t)X509_VERIFY_PARAM_get_time(vp);
	return (int64_t)time(NULL);
}

/* A hit that passes the checks: hand OpenSSL leaf + cached issuers as the verified chain. */
static int
serve_hit(struct verify_cache *c, struct vc_entry *e, X509_STORE_CTX *sctx, X509 *leaf)
{
	STACK_OF(X509) *chain = sk_X509_new_reserve(NULL, sk_X509_num(e->issuers) + 1);

	if (chain == NULL)
		return -1;
	X509_up_ref(leaf);
	sk_X509_push(chain, leaf);
	for (int i = 0; i < sk_X509_num(e->issuers); i++) {
		X509 *x = sk_X509_value(e->issuers, i);

		X509_up_ref(x);
		sk_X509_push(chain, x);
	}
	X509_STORE_CTX_set0_verified_chain(sctx, chain); /* the store context frees it */
	X509_STORE_CTX_set_error(sctx, X509_V_OK);
	e->last_used = ++c->tick;
	count(&c->hits);
	return 0;
}

/* OpenSSL's certificate verify callback on the proxy's server contexts. */
static int
cached_verify_cb(X509_STORE_CTX *sctx, void *arg)
{
	struct vc_ctx *v = arg;
	SSL *ssl = X509_STORE_CTX_get_ex_data(sctx, SSL_get_ex_data_X509_STORE_CTX_idx());
	struct verify_cache *c = ssl != NULL ? SSL_get_ex_data(ssl, ssl_index) : NULL;
	X509 *leaf = X509_STORE_CTX_get0_cert(sctx);
	unsigned char key[32];
	int have_key = 0, rc;

	if (c != NULL && v != NULL && leaf != NULL) {
		if (v->generation > c->generation) {
			cache_clear(c); /* a new bundle or certificate: the old entries are dead */
			c->generation = v->generation;
		}
		have_key = v->generation == c->generation &&
		           cache_key(c, v->generation, leaf, X509_STORE_CTX_get0_untrusted(sctx),
		                     key) == 0;
	}
	if (have_key) {
		struct vc_entry *e = lookup(c, key);

		if (e != NULL) {
			int64_t now = verify_time(sctx);

			if (now >= e->valid_from && now < e->valid_to &&
			    (c->revoked == NULL || !c->revoked(c->revoked_arg, e->serial)) &&
			    serve_hit(c, e, sctx, leaf) == 0)
				return 1;
			/* In doubt: the full verification decides, and says why. */
			count(&c->stale);
			entry_clear(e);
		}
		count(&c->misses);
	}
	rc = tls_verify_chain_with(sctx, v != NULL ? v->untrusted : NULL);
	if (rc == 1 && have_key && X509_STORE_CTX_get_error(sctx) == X509_V_OK)
		insert(c, key, X509_STORE_CTX_get0_chain(sctx));
	return rc;
}

int
verify_cache_install(SSL_CTX *ctx, STACK_OF(X509) *untrusted, struct ac_err *err)
{
	struct vc_ctx *v;

	pthread_once(&index_once, index_init);
	if (ctx_index < 0 || ssl_index < 0)
		return ac_err_set(err, AC_ERR_CRYPTO, "tls_ctx_failed",
		                  "cannot register the verify cache's ex_data");
	v = OPENSSL_zalloc(sizeof(*v));
	if (v == NULL)
		return ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
	v->generation = atomic_fetch_add(&next_generation, 1);
	if (untrusted != NULL && sk_X509_num(untrusted) > 0 &&
	    (v->untrusted = X509_chain_up_ref(untrusted)) == NULL) {
		OPENSSL_free(v);
		return ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
	}
	if (SSL_CTX_set_ex_data(ctx, ctx_index, v) != 1) {
		sk_X509_pop_free(v->untrusted, X509_free);
		OPENSSL_free(v);
		return ac_err_set(err, AC_ERR_CRYPTO, "tls_ctx_failed",
		                  "cannot attach the verify cache to the TLS context");
	}
	SSL_CTX_set_cert_verify_callback(ctx, cached_verify_cb, v);
	return 0;
}

int
verify_cache_attach(SSL *ssl, struct verify_cache *cache)
{
	pthread_once(&index_once, index_init);
	if (ssl_index < 0)
		return -1;
	return SSL_set_ex_data(ssl, ssl_index, cache) == 1 ? 0 : -1;
}
