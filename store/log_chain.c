/*
 * log_chain.c - the issuance log's canonical encoding and hash chain (see log_chain.h).
 *
 * An entry becomes a jansson object holding only the fields it has, plus "seq", "time" and
 * "prev", dumped compact with sorted keys. Those bytes are what gets hashed, stored and
 * exported, so a verifier that parses an exported line, drops "hash" and dumps it again the
 * same way gets them back byte for byte.
 *
 * Entry strings come from outside (a CSR's names, a token's subject) and may hold any
 * bytes. JSON strings must be UTF-8, so a string that is not valid UTF-8 is stored with each
 * offending byte replaced by U+FFFD: the entry is still written, because refusing to log a
 * denial caused by a hostile name would let the attacker erase their own trace.
 */
#include "store/log_chain.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "common/hex.h"

const char log_chain_genesis[LOG_HASH_HEX_LEN + 1] =
    "0000000000000000000000000000000000000000000000000000000000000000";

/* The flags of the canonical encoding. Changing them changes every hash: don't. */
#define CANON_FLAGS (JSON_COMPACT | JSON_SORT_KEYS)

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 if it is not one. The
 * rules are jansson's: no overlong forms, no surrogates, nothing above U+10FFFF. */
static size_t
utf8_sequence_len(const unsigned char *s, size_t n)
{
	uint32_t cp;
	size_t len, i;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		len = 2;
		cp = s[0] & 0x1f;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		len = 3;
		cp = s[0] & 0x0f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		len = 4;
		cp = s[0] & 0x07;
	} else {
		return 0;
	}
	if (len > n)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000))
		return 0; /* overlong */
	if ((cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
		return 0;
	return len;
}

/* A JSON string for s: s itself when it is valid UTF-8, else a copy in which every byte that
 * is not part of a valid sequence became U+FFFD. NULL only when memory runs out. */
static json_t *
json_string_lossy(const char *s)
{
	const unsigned char *in = (const unsigned char *)s;
	size_t n = strlen(s), i = 0, o = 0, len;
	json_t *str = NULL;
	char *buf = NULL;

	if ((str = json_stringn(s, n)) != NULL)
		goto out;
	if ((buf = malloc(n * 3 + 1)) == NULL)
		goto out;
	while (i < n) {
		if ((len = utf8_sequence_len(in + i, n - i)) == 0) {
			memcpy(buf + o, "\xef\xbf\xbd", 3);
			o += 3;
			i++;
		} else {
			memcpy(buf + o, in + i, len);
			o += len;
			i += len;
		}
	}
	str = json_stringn(buf, o);
out:
	free(buf);
	return str;
}

/* Set key to a string member unless value is NULL. -1 when out of memory. */
static int
set_string(json_t *obj, const char *key, const char *value)
{
	if (value == NULL)
		return 0;
	return json_object_set_new(obj, key, json_string_lossy(value));
}

/* Set key to an integer member unless value is 0. */
static int
set_integer(json_t *obj, const char *key, int64_t value)
{
	if (value == 0)
		return 0;
	return json_object_set_new(obj, key, json_integer(value));
}

static int
is_hash_hex(const char *s)
{
	size_t i;

	if (s == NULL || strlen(s) != LOG_HASH_HEX_LEN)
		return 0;
	for (i = 0; i < LOG_HASH_HEX_LEN; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return 1;
}

/* Build the object for an entry, with seq, time and prev. */
int
log_chain_encode(const struct log_entry *entry, uint64_t seq, int64_t time_ms,
                 const char *prev_hash, char **out, size_t *out_len, struct ac_err *err)
{
	json_t *obj = NULL, *sans = NULL;
	char *text = NULL;
	size_t i;
	int rc = -1;

	*out = NULL;
	*out_len = 0;
	if (entry == NULL || entry->kind == NULL || entry->kind[0] == '\0') {
		ac_err_set(err, AC_ERR_INTERNAL, "log_entry_invalid", "log entry has no kind");
		goto out;
	}
	if (seq == 0 || seq > INT64_MAX) {
		ac_err_set(err, AC_ERR_INTERNAL, "log_entry_invalid",
		           "log entry %s: sequence number %llu is out of range", entry->kind,
		           (unsigned long long)seq);
		goto out;
	}
	if (!is_hash_hex(prev_hash)) {
		ac_err_set(err, AC_ERR_INTERNAL, "log_entry_invalid",
		           "log entry %llu: previous hash is not 64 lowercase hex digits",
		           (unsigned long long)seq);
		goto out;
	}
	if ((obj = json_object()) == NULL)
		goto nomem;
	if (set_string(obj, "kind", entry->kind) != 0 ||
	    json_object_set_new(obj, "seq", json_integer((json_int_t)seq)) != 0 ||
	    json_object_set_new(obj, "time", json_integer(time_ms)) != 0 ||
	    json_object_set_new(obj, "prev", json_string(prev_hash)) != 0 ||
	    set_string(obj, "actor", entry->actor) != 0 ||
	    set_string(obj, "subject", entry->subject) != 0 ||
	    set_string(obj, "serial", entry->serial) != 0 ||
	    set_integer(obj, "not_before", entry->not_before) != 0 ||
	    set_integer(obj, "not_after", entry->not_after) != 0 ||
	    set_string(obj, "spki_sha256", entry->spki_sha256) != 0 ||
	    set_string(obj, "parent", entry->parent) != 0 ||
	    set_string(obj, "request_id", entry->request_id) != 0 ||
	    set_string(obj, "reason", entry->reason) != 0 ||
	    set_string(obj, "detail", entry->detail) != 0)
		goto nomem;
	if (entry->sans != NULL && entry->sans_count > 0) {
		if ((sans = json_array()) == NULL)
			goto nomem;
		for (i = 0; i < entry->sans_count; i++) {
			if (entry->sans[i] == NULL)
				continue;
			if (json_array_append_new(sans, json_string_lossy(entry->sans[i])) != 0)
				goto nomem;
		}
		if (json_object_set(obj, "sans", sans) != 0)
			goto nomem;
	}
	if ((text = json_dumps(obj, CANON_FLAGS)) == NULL)
		goto nomem;
	*out_len = strlen(text);
	*out = text;
	text = NULL;
	rc = 0;
	goto out;
nomem:
	ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "log entry %s: out of memory",
	           entry->kind);
out:
	free(text);
	json_decref(sans);
	json_decref(obj);
	return rc;
}

/* SHA-256 over bytes in lowercase hex. EVP_Digest with the built-in SHA-256 cannot fail
 * short of memory exhaustion, which this API has no way to report; abort() then, rather
 * than hand back a hash that would silently break the chain. */
void
log_chain_hash(const char *bytes, size_t len, char out[LOG_HASH_HEX_LEN + 1])
{
	unsigned char md[32];
	unsigned int md_len = 0;

	if (EVP_Digest(bytes, len, md, &md_len, EVP_sha256(), NULL) != 1 || md_len != sizeof(md))
		abort();
	hex_encode(md, sizeof(md), out);
}

/* The canonical JSON with ,"hash":"<hex>" spliced in before its closing brace. */
int
log_chain_export_line(const char *canonical, size_t len, const char *hash, char **out,
                      size_t *out_len, struct ac_err *err)
{
	static const char key[] = "\"hash\":\"";
	char *line = NULL;
	size_t body, n;
	int rc = -1;

	*out = NULL;
	*out_len = 0;
	if (len < 2 || canonical[0] != '{' || canonical[len - 1] != '}') {
		ac_err_set(err, AC_ERR_INVALID, "log_row_invalid",
		           "log row is not a JSON object (%zu bytes)", len);
		goto out;
	}
	if (!is_hash_hex(hash)) {
		ac_err_set(err, AC_ERR_INVALID, "log_row_invalid",
		           "log row hash is not 64 lowercase hex digits");
		goto out;
	}
	body = len - 1; /* everything but the closing brace */
	n = body + 1 + (sizeof(key) - 1) + LOG_HASH_HEX_LEN + 2;
	if ((line = malloc(n + 1)) == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "log row export: out of memory");
		goto out;
	}
	memcpy(line, canonical, body);
	if (len > 2)
		line[body++] = ',';
	else
		n--; /* "{}": no comma */
	memcpy(line + body, key, sizeof(key) - 1);
	body += sizeof(key) - 1;
	memcpy(line + body, hash, LOG_HASH_HEX_LEN);
	body += LOG_HASH_HEX_LEN;
	line[body++] = '"';
	line[body++] = '}';
	line[body] = '\0';
	*out = line;
	*out_len = n;
	line = NULL;
	rc = 0;
out:
	free(line);
	return rc;
}

/* The bytes that were hashed, rebuilt from a parsed exported line. */
int
log_chain_canonical_from_export(const json_t *line, char **out, size_t *out_len, struct ac_err *err)
{
	json_t *copy = NULL;
	char *text = NULL;
	int rc = -1;

	*out = NULL;
	*out_len = 0;
	if (!json_is_object(line)) {
		ac_err_set(err, AC_ERR_INVALID, "log_line_invalid",
		           "exported log line is not a JSON object");
		goto out;
	}
	if (!json_is_string(json_object_get(line, "hash"))) {
		ac_err_set(err, AC_ERR_INVALID, "log_line_invalid",
		           "exported log line has no \"hash\" string");
		goto out;
	}
	if ((copy = json_deep_copy(line)) == NULL || json_object_del(copy, "hash") != 0 ||
	    (text = json_dumps(copy, CANON_FLAGS)) == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory",
		           "exported log line: out of memory");
		goto out;
	}
	*out_len = strlen(text);
	*out = text;
	text = NULL;
	rc = 0;
out:
	free(text);
	json_decref(copy);
	return rc;
}
