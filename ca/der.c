/*
 * der.c - the DER writer of der.h.
 *
 * der_begin() writes the tag and reserves three length bytes (0x82 and two), the longest
 * form a value up to DER_MAX_LEN needs. der_end() knows the contents' length and, when the
 * length takes fewer bytes, slides the contents back over the unused ones, so the output is
 * always the shortest (DER) length form. Nesting costs one memmove per constructed value,
 * over the few hundred bytes of a leaf.
 */
#include "ca/der.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DER_LEN_RESERVED 3

/* Make room for n more bytes; 0 when there is (or was never going to be) room. */
static int
der_room(struct der_buf *d, size_t n)
{
	size_t cap;
	unsigned char *p;

	if (d->failed)
		return -1;
	if (n > DER_MAX_LEN + 16 || d->len + n > DER_MAX_LEN + 16) {
		d->failed = 1;
		return -1;
	}
	if (d->len + n <= d->cap)
		return 0;
	cap = d->cap == 0 ? 1024 : d->cap;
	while (cap < d->len + n)
		cap *= 2;
	p = realloc(d->data, cap);
	if (p == NULL) {
		d->failed = 1;
		return -1;
	}
	d->data = p;
	d->cap = cap;
	return 0;
}

/* The length octets of len in out (at most 3); their count. */
static size_t
der_len_octets(size_t len, unsigned char out[DER_LEN_RESERVED])
{
	if (len < 0x80) {
		out[0] = (unsigned char)len;
		return 1;
	}
	if (len <= 0xff) {
		out[0] = 0x81;
		out[1] = (unsigned char)len;
		return 2;
	}
	out[0] = 0x82;
	out[1] = (unsigned char)(len >> 8);
	out[2] = (unsigned char)len;
	return 3;
}

void
der_raw(struct der_buf *d, const void *bytes, size_t len)
{
	if (der_room(d, len) != 0)
		return;
	if (len > 0)
		memcpy(d->data + d->len, bytes, len);
	d->len += len;
}

unsigned char *
der_put(struct der_buf *d, size_t len)
{
	unsigned char *p;

	if (der_room(d, len) != 0)
		return NULL;
	p = d->data + d->len;
	d->len += len;
	return p;
}

void
der_prim(struct der_buf *d, unsigned char tag, const void *contents, size_t len)
{
	unsigned char head[1 + DER_LEN_RESERVED];
	size_t n;

	if (len > DER_MAX_LEN) {
		d->failed = 1;
		return;
	}
	head[0] = tag;
	n = 1 + der_len_octets(len, head + 1);
	if (der_room(d, n + len) != 0)
		return;
	memcpy(d->data + d->len, head, n);
	if (len > 0)
		memcpy(d->data + d->len + n, contents, len);
	d->len += n + len;
}

size_t
der_begin(struct der_buf *d, unsigned char tag)
{
	size_t mark = d->len;

	if (der_room(d, 1 + DER_LEN_RESERVED) != 0)
		return mark;
	d->data[d->len] = tag;
	d->len += 1 + DER_LEN_RESERVED;
	return mark;
}

void
der_end(struct der_buf *d, size_t mark)
{
	unsigned char octets[DER_LEN_RESERVED];
	size_t start, content_len, n;

	if (d->failed)
		return;
	start = mark + 1 + DER_LEN_RESERVED;
	content_len = d->len - start;
	if (content_len > DER_MAX_LEN) {
		d->failed = 1;
		return;
	}
	n = der_len_octets(content_len, octets);
	memcpy(d->data + mark + 1, octets, n);
	if (n < DER_LEN_RESERVED) {
		memmove(d->data + mark + 1 + n, d->data + start, content_len);
		d->len -= DER_LEN_RESERVED - n;
	}
}

int
der_time(struct der_buf *d, int64_t unix_seconds)
{
	time_t t = (time_t)unix_seconds;
	struct tm tm;
	char text[80];
	int n;

	if (gmtime_r(&t, &tm) == NULL || tm.tm_year + 1900 < 1950 || tm.tm_year + 1900 > 9999) {
		d->failed = 1;
		return -1;
	}
	if (tm.tm_year + 1900 < 2050)
		n = snprintf(text, sizeof(text), "%02d%02d%02d%02d%02d%02dZ", tm.tm_year % 100,
		             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
	else
		n = snprintf(text, sizeof(text), "%04d%02d%02d%02d%02d%02dZ", tm.tm_year + 1900,
		             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
	der_prim(d, tm.tm_year + 1900 < 2050 ? DER_UTCTIME : DER_GENERALIZEDTIME, text, (size_t)n);
	return 0;
}

void
der_free(struct der_buf *d)
{
	free(d->data);
	memset(d, 0, sizeof(*d));
}
