/*
 * acme_nonce.c - anti-replay nonces: a counter, a MAC, and a bitmap of redeemed counters
 * (see acme_nonce.h).
 */
#include "enrollment/acme_nonce.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "common/base64url.h"

#define COUNTER_LEN 8
#define MAC_LEN 16

struct acme_nonces {
	pthread_mutex_t lock;
	unsigned char key[32];
	/* HMAC-SHA256 keyed once; each MAC works on a copy of it (EVP_MAC_CTX_dup only reads
	 * the template, so threads share it without a lock). A one-shot HMAC() per nonce
	 * fetched the algorithm and hashed the key pads every time. */
	EVP_MAC *mac;
	EVP_MAC_CTX *keyed;
	uint64_t next; /* the next counter to hand out; starts at 1 */
	uint8_t redeemed[ACME_NONCE_WINDOW / 8];
};

struct acme_nonces *
acme_nonces_new(struct ac_err *err)
{
	struct acme_nonces *n = calloc(1, sizeof(*n));

	if (n == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		return NULL;
	}
	pthread_mutex_init(&n->lock, NULL);
	n->next = 1;
	if (RAND_bytes(n->key, sizeof(n->key)) != 1) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "rand_failed", "cannot draw the nonce key");
		goto fail;
	}
	{
		OSSL_PARAM params[] = {
		    OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
		    OSSL_PARAM_construct_end()};

		if ((n->mac = EVP_MAC_fetch(NULL, "HMAC", NULL)) == NULL ||
		    (n->keyed = EVP_MAC_CTX_new(n->mac)) == NULL ||
		    EVP_MAC_init(n->keyed, n->key, sizeof(n->key), params) != 1) {
			ac_err_ssl(err, AC_ERR_CRYPTO, "mac_failed",
			           "cannot set up HMAC-SHA256 for the nonces");
			goto fail;
		}
	}
	return n;
fail:
	acme_nonces_free(n);
	return NULL;
}

void
acme_nonces_free(struct acme_nonces *n)
{
	if (n == NULL)
		return;
	EVP_MAC_CTX_free(n->keyed);
	EVP_MAC_free(n->mac);
	OPENSSL_cleanse(n->key, sizeof(n->key));
	pthread_mutex_destroy(&n->lock);
	free(n);
}

static void
mac_of(const struct acme_nonces *n, const unsigned char counter[COUNTER_LEN],
       unsigned char out[MAC_LEN])
{
	unsigned char full[EVP_MAX_MD_SIZE];
	size_t len = 0;
	EVP_MAC_CTX *ctx = EVP_MAC_CTX_dup(n->keyed);

	if (ctx == NULL || EVP_MAC_update(ctx, counter, COUNTER_LEN) != 1 ||
	    EVP_MAC_final(ctx, full, &len, sizeof(full)) != 1 || len < MAC_LEN)
		memset(full, 0, sizeof(full)); /* then no nonce verifies: safe */
	EVP_MAC_CTX_free(ctx);
	memcpy(out, full, MAC_LEN);
}

int
acme_nonce_make(struct acme_nonces *n, char out[ACME_NONCE_LEN + 1])
{
	unsigned char raw[COUNTER_LEN + MAC_LEN];
	uint64_t c;

	pthread_mutex_lock(&n->lock);
	c = n->next++;
	n->redeemed[(c % ACME_NONCE_WINDOW) / 8] &= (uint8_t) ~(1u << (c % 8));
	pthread_mutex_unlock(&n->lock);
	for (int i = 0; i < COUNTER_LEN; i++)
		raw[i] = (unsigned char)(c >> (56 - 8 * i));
	mac_of(n, raw, raw + COUNTER_LEN);
	return base64url_encode(raw, sizeof(raw), out, ACME_NONCE_LEN + 1);
}

int
acme_nonce_redeem(struct acme_nonces *n, const char *nonce, struct ac_err *err)
{
	unsigned char raw[COUNTER_LEN + MAC_LEN], mac[MAC_LEN];
	size_t len = 0;
	uint64_t c = 0;
	int rc = -1;

	if (nonce == NULL)
		return ac_err_set(err, AC_ERR_INVALID, "badNonce",
		                  "the protected header has no \"nonce\"");
	if (strlen(nonce) != ACME_NONCE_LEN ||
	    base64url_decode(nonce, ACME_NONCE_LEN, raw, sizeof(raw), &len) != 0 ||
	    len != sizeof(raw))
		return ac_err_set(err, AC_ERR_INVALID, "badNonce", "the nonce is not one of ours");
	mac_of(n, raw, mac);
	if (CRYPTO_memcmp(mac, raw + COUNTER_LEN, MAC_LEN) != 0)
		return ac_err_set(err, AC_ERR_INVALID, "badNonce", "the nonce is not one of ours");
	for (int i = 0; i < COUNTER_LEN; i++)
		c = c << 8 | raw[i];
	pthread_mutex_lock(&n->lock);
	if (c == 0 || c >= n->next || n->next - c > ACME_NONCE_WINDOW) {
		ac_err_set(err, AC_ERR_INVALID, "badNonce",
		           "the nonce has expired; use a fresh one");
	} else if (n->redeemed[(c % ACME_NONCE_WINDOW) / 8] & (1u << (c % 8))) {
		ac_err_set(err, AC_ERR_INVALID, "badNonce", "the nonce has already been used");
	} else {
		n->redeemed[(c % ACME_NONCE_WINDOW) / 8] |= (uint8_t)(1u << (c % 8));
		rc = 0;
	}
	pthread_mutex_unlock(&n->lock);
	return rc;
}
