/*
 * fuzz_ocsp.c - the OCSP request parser (ca/ocsp.c), the first code every POST /v1/ocsp body
 * and GET /v1/ocsp/<base64> request reaches: it must accept or refuse any bytes without
 * crashing, leaking or reading out of bounds, and what it accepts must respect its bounds.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ca/ocsp.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ocsp_query q;
	struct ac_err err;

	ac_err_clear(&err);
	if (ocsp_request_parse(data, size, &q, &err) != 0)
		return 0;
	/* Accepted: every length within its buffer, the serial plain lowercase hex. */
	if (q.name_hash_len > sizeof(q.name_hash) || q.key_hash_len > sizeof(q.key_hash) ||
	    q.nonce_len > sizeof(q.nonce) || q.serial_der_len > sizeof(q.serial_der) ||
	    q.serial_der_len == 0 || strlen(q.serial) > 40 ||
	    strspn(q.serial, "0123456789abcdef") != strlen(q.serial))
		abort();
	return 0;
}
