/*
 * fuzz_enroll_body.c - the enrollment body's hand-written fast path against jansson, on any
 * bytes: whenever enroll_body_fast() takes a body, jansson (as api_parse_body calls it,
 * duplicates refused) must parse the same bytes to an object of exactly "token" and "csr",
 * both strings, with the same bytes as the fast path's. A body the fast path declines goes
 * to jansson in the daemon, so declining is always safe; accepting differently is the bug.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "enrollment/api_internal.h"

/* abort() unless the jansson string member key equals bytes (len). */
static void
same_string(json_t *doc, const char *key, const char *bytes, size_t len)
{
	json_t *v = json_object_get(doc, key);

	if (!json_is_string(v) || json_string_length(v) != len ||
	    memcmp(json_string_value(v), bytes, len) != 0 || bytes[len] != '\0')
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct enroll_body fast;
	json_t *doc;

	if (!enroll_body_fast((const char *)data, size, &fast)) {
		if (fast.block != NULL)
			abort();
		return 0;
	}
	doc = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(doc) || json_object_size(doc) != 2)
		abort();
	same_string(doc, "token", fast.token, fast.token_len);
	same_string(doc, "csr", fast.csr, fast.csr_len);
	json_decref(doc);
	free(fast.block);
	return 0;
}
