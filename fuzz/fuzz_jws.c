/*
 * fuzz_jws.c - the ACME JWS path on any bytes: every ACME POST body reaches
 * acme_jws_parse() first; then, as the server does, the JWK becomes a key (with the
 * header's alg), its thumbprint is taken, the signature is checked, and an EAB-style HMAC
 * is checked. Each must refuse or accept, never crash, hang or leak.
 */
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "enrollment/acme_jws.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const unsigned char mac_key[32] = {1};
	char tp[ACME_THUMBPRINT_LEN + 1];
	struct acme_jws jws;
	struct ac_err err;
	EVP_PKEY *key;

	ac_err_clear(&err);
	if (acme_jws_parse((const char *)data, size, &jws, &err) != 0)
		return 0;
	if (jws.jwk != NULL) {
		ac_err_clear(&err);
		acme_jwk_thumbprint(jws.jwk, tp, &err);
		ac_err_clear(&err);
		key = acme_jwk_to_key(jws.jwk, jws.alg, &err);
		if (key != NULL) {
			ac_err_clear(&err);
			acme_jws_verify(&jws, key, &err);
			EVP_PKEY_free(key);
		}
	}
	ac_err_clear(&err);
	acme_jws_verify_hmac(&jws, mac_key, sizeof(mac_key), &err);
	acme_jws_free(&jws);
	return 0;
}
