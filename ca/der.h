/*
 * der.h - a small DER writer for the few structures the issuance engine encodes by hand
 * (the leaf's TBSCertificate and the Certificate around its signature).
 *
 * A der_buf grows on the heap. Constructed values are written by der_begin(), their
 * contents, then der_end(), which fixes the length in place. An allocation failure or a
 * length past DER_MAX_LEN sets `failed`; every later call does nothing, so a builder checks
 * once at the end. Lengths use the definite short or long form (up to two length bytes),
 * as DER requires.
 */
#ifndef AGENTCA_CA_DER_H
#define AGENTCA_CA_DER_H

#include <stddef.h>
#include <stdint.h>

#define DER_MAX_LEN 65535 /* a leaf is a few KiB; anything longer is refused, not encoded */

/* Tags used by the leaf. */
#define DER_INTEGER 0x02
#define DER_BIT_STRING 0x03
#define DER_OCTET_STRING 0x04
#define DER_OID 0x06
#define DER_UTF8STRING 0x0c
#define DER_UTCTIME 0x17
#define DER_GENERALIZEDTIME 0x18
#define DER_SEQUENCE 0x30
#define DER_SET 0x31
#define DER_BOOLEAN 0x01
#define DER_CONTEXT(n) (0x80 | (n))      /* [n] IMPLICIT, primitive */
#define DER_CONTEXT_CONS(n) (0xa0 | (n)) /* [n], constructed */

struct der_buf {
	unsigned char *data;
	size_t len, cap;
	int failed;
};

/* Append raw bytes (already DER). */
void der_raw(struct der_buf *d, const void *bytes, size_t len);

/* Reserve len bytes at the end and return them for the caller to fill (NULL on failure). */
unsigned char *der_put(struct der_buf *d, size_t len);

/* Append one primitive value: tag, length, contents. */
void der_prim(struct der_buf *d, unsigned char tag, const void *contents, size_t len);

/* Open a constructed value; returns the mark der_end() needs. */
size_t der_begin(struct der_buf *d, unsigned char tag);

/* Close the value opened at mark: write its length, move its contents into place. */
void der_end(struct der_buf *d, size_t mark);

/* A UTCTime (years 1950-2049) or GeneralizedTime (otherwise), per RFC 5280 4.1.2.5. -1 when
 * the time cannot be represented. */
int der_time(struct der_buf *d, int64_t unix_seconds);

void der_free(struct der_buf *d);

#endif
