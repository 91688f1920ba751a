/*
 * hex.c - hex encoding and fingerprint normalisation. See hex.h.
 */
#include "common/hex.h"

#include <string.h>

static int
hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

void
hex_encode(const unsigned char *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 0xf];
	}
	out[2 * n] = '\0';
}

int
hex_decode(const char *in, unsigned char *out, size_t n)
{
	if (strlen(in) != 2 * n)
		return -1;
	for (size_t i = 0; i < n; i++) {
		int hi = hex_value(in[2 * i]), lo = hex_value(in[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -1;
		out[i] = (unsigned char)(hi << 4 | lo);
	}
	return 0;
}

int
fingerprint_normalize(const char *in, char out[65])
{
	size_t n = 0;

	for (; *in != '\0'; in++) {
		int v;

		if (*in == ':')
			continue;
		v = hex_value(*in);
		if (v < 0 || n == 64)
			return -1;
		out[n++] = "0123456789abcdef"[v];
	}
	if (n != 64)
		return -1;
	out[64] = '\0';
	return 0;
}
