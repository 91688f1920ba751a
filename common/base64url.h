/*
 * base64url.h - unpadded base64url (RFC 4648 section 5), as JOSE and ACME use it.
 *
 * Decoding is strict: no padding, no whitespace, no trailing bits set, so that one value
 * has exactly one encoding (a JWS signature or a nonce cannot be replayed in a second
 * spelling).
 */
#ifndef AGENTCA_COMMON_BASE64URL_H
#define AGENTCA_COMMON_BASE64URL_H

#include <stddef.h>

/* The encoded length of len bytes (without the NUL). */
#define BASE64URL_LEN(len) (((len) / 3) * 4 + ((len) % 3 == 0 ? 0 : (len) % 3 + 1))

/* Encode len bytes into out (NUL-terminated); -1 when outlen is too small. */
int base64url_encode(const unsigned char *in, size_t len, char *out, size_t outlen);

/* Encode into a heap string (free()); NULL when out of memory. */
char *base64url_encode_alloc(const unsigned char *in, size_t len);

/* Decode len characters into out (at most max bytes); *outlen gets the size. -1 on a bad
 * digit, a bad length, non-zero trailing bits, or more than max bytes. */
int base64url_decode(const char *in, size_t len, unsigned char *out, size_t max, size_t *outlen);

/* Decode into a heap buffer with a NUL after the data (free()); -1 as above. */
int base64url_decode_alloc(const char *in, size_t len, unsigned char **out, size_t *outlen);

#endif
