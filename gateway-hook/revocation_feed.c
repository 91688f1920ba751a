/*
 * revocation_feed.c - polling the CA's revocation feed. See revocation_feed.h.
 *
 * The answer is checked whole before anything is applied: a malformed entry anywhere means
 * nothing is revoked from it and the sequence does not move, so the next poll asks again.
 */
#include "gateway-hook/revocation_feed.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "common/fsutil.h"
#include "enrollment/client.h"

#define FEED_PEM_MAX (1024 * 1024)

static int
serial_valid(const char *s)
{
	size_t n = strlen(s);

	return n > 0 && n <= 40 && strspn(s, "0123456789abcdefABCDEF") == n;
}

int
revocation_feed_apply(const json_t *doc, uint64_t *sequence, revoked_serial_fn fn, void *arg,
                      struct ac_err *err)
{
	const json_t *seq = json_object_get(doc, "sequence");
	const json_t *list = json_object_get(doc, "revoked");
	const json_t *item;
	size_t i;

	if (!json_is_integer(seq) || json_integer_value(seq) < 0 || !json_is_array(list))
		return ac_err_set(err, AC_ERR_INVALID, "feed_invalid",
		                  "the revocation feed's answer lacks \"sequence\" or \"revoked\"");
	json_array_foreach(list, i, item)
	{
		const char *serial = json_string_value(json_object_get(item, "serial"));

		if (serial == NULL || !serial_valid(serial))
			return ac_err_set(err, AC_ERR_INVALID, "feed_invalid",
			                  "revocation feed entry %zu has no valid hex serial", i);
	}
	json_array_foreach(list, i, item)
	{
		fn(arg, json_string_value(json_object_get(item, "serial")));
	}
	*sequence = (uint64_t)json_integer_value(seq);
	return 0;
}

int
revocation_feed_poll(const char *ca_url, const char *dir, uint64_t *sequence, revoked_serial_fn fn,
                     void *arg, struct ac_err *err)
{
	char path[4096], query[64];
	char *cert = NULL, *key = NULL, *roots = NULL;
	json_t *doc = NULL;
	int rc = -1;

	if (path_join(path, sizeof(path), dir, "cert.pem", err) != 0 ||
	    read_file(path, FEED_PEM_MAX, &cert, NULL, err) != 0 ||
	    path_join(path, sizeof(path), dir, "key.pem", err) != 0 ||
	    read_file(path, FEED_PEM_MAX, &key, NULL, err) != 0 ||
	    path_join(path, sizeof(path), dir, "bundle.pem", err) != 0 ||
	    read_file(path, FEED_PEM_MAX, &roots, NULL, err) != 0)
		goto out;
	snprintf(query, sizeof(query), "/v1/revocations?since=%" PRIu64, *sequence);
	if (client_get_json(ca_url, query, roots, cert, key, &doc, err) != 0)
		goto out;
	rc = revocation_feed_apply(doc, sequence, fn, arg, err);
out:
	json_decref(doc);
	if (key != NULL) {
		OPENSSL_cleanse(key, strlen(key));
		free(key);
	}
	free(cert);
	free(roots);
	return rc;
}
