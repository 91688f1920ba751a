/*
 * base64url.c - unpadded base64url, strict on decode (see base64url.h).
 */
#include "common/base64url.h"

#include <stdlib.h>

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int
base64url_encode(const unsigned char *in, size_t len, char *out, size_t outlen)
{
	size_t o = 0, i;

	if (outlen < BASE64URL_LEN(len) + 1)
		return -1;
	for (i = 0; i + 2 < len; i += 3) {
		unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];

		out[o++] = alphabet[v >> 18 & 63];
		out[o++] = alphabet[v >> 12 & 63];
		out[o++] = alphabet[v >> 6 & 63];
		out[o++] = alphabet[v & 63];
	}
	if (len - i == 1) {
		unsigned v = (unsigned)in[i] << 16;

		out[o++] = alphabet[v >> 18 & 63];
		out[o++] = alphabet[v >> 12 & 63];
	} else if (len - i == 2) {
		unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8;

		out[o++] = alphabet[v >> 18 & 63];
		out[o++] = alphabet[v >> 12 & 63];
		out[o++] = alphabet[v >> 6 & 63];
	}
	out[o] = '\0';
	return 0;
}

char *
base64url_encode_alloc(const unsigned char *in, size_t len)
{
	size_t n = BASE64URL_LEN(len) + 1;
	char *out = malloc(n);

	if (out != NULL && base64url_encode(in, len, out, n) != 0) {
		free(out);
		out = NULL;
	}
	return out;
}

static int
digit(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

int
base64url_decode(const char *in, size_t len, unsigned char *out, size_t max, size_t *outlen)
{
	size_t o = 0, need = len / 4 * 3 + (len % 4 == 0 ? 0 : len % 4 - 1);
	unsigned acc = 0;
	int bits = 0;

	if (len % 4 == 1 || need > max)
		return -1;
	for (size_t i = 0; i < len; i++) {
		int v = digit((unsigned char)in[i]);

		if (v < 0)
			return -1;
		acc = (acc << 6 | (unsigned)v) & 0xffffff;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(acc >> bits);
		}
	}
	if (bits > 0 && (acc & ((1u << bits) - 1)) != 0)
		return -1; /* non-canonical: trailing bits set */
	*outlen = o;
	return 0;
}

int
base64url_decode_alloc(const char *in, size_t len, unsigned char **out, size_t *outlen)
{
	unsigned char *buf = malloc(len / 4 * 3 + 3);

	*out = NULL;
	if (buf == NULL)
		return -1;
	if (base64url_decode(in, len, buf, len / 4 * 3 + 2, outlen) != 0) {
		free(buf);
		return -1;
	}
	buf[*outlen] = '\0';
	*out = buf;
	return 0;
}
