/*
 * log_chain.c - the issuance log's canonical encoding and hash chain (see log_chain.h).
 *
 * An entry is the JSON object holding only the fields it has, plus "seq", "time" and
 * "prev", as jansson dumps it compact with sorted keys. Those bytes are what gets hashed,
 * stored and exported, so a verifier that parses an exported line, drops "hash" and dumps it
 * again the same way gets them back byte for byte.
 *
 * The committer writes those bytes itself rather than building a jansson object and dumping
 * it (a hash table, an allocation per member, a sort: about 55k instructions an entry, for
 * some 400 bytes): the members are written in the sorted order of their fixed keys, and
 * strings are escaped as jansson's dump escapes them (\" \\ \b \f \n \r \t, any other
 * byte below 0x20 as \u00XX in upper-case hex, everything else as it is). Verification still
 * rebuilds the bytes with jansson (log_chain_canonical_from_export), so any difference would
 * break the chain at once; tests/unit/test_log_chain.c compares the two encodings over
 * hostile strings.
 *
 * Entry strings come from outside (a CSR's names, a token's subject) and may hold any
 * bytes. JSON strings must be UTF-8, so a string that is not valid UTF-8 is stored with each
 * offending byte replaced by U+FFFD: the entry is still written, because refusing to log a
 * denial caused by a hostile name would let the attacker erase their own trace.
 */
#include "store/log_chain.h"

#include <pthread.h>
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

/* A growing output buffer; failed is set when memory runs out (the rest are no-ops). */
struct canon_buf {
	char *data;
	size_t len, cap;
	int failed;
};

static int
canon_reserve(struct canon_buf *b, size_t more)
{
	size_t cap;
	char *data;

	if (b->failed)
		return -1;
	if (b->cap - b->len > more)
		return 0;
	cap = b->cap != 0 ? b->cap : 512;
	while (cap - b->len <= more)
		cap *= 2;
	if ((data = realloc(b->data, cap)) == NULL) {
		b->failed = 1;
		return -1;
	}
	b->data = data;
	b->cap = cap;
	return 0;
}

static void
canon_put(struct canon_buf *b, const char *bytes, size_t n)
{
	if (canon_reserve(b, n) != 0)
		return;
	memcpy(b->data + b->len, bytes, n);
	b->len += n;
}

#define CANON_LIT(b, lit) canon_put((b), (lit), sizeof(lit) - 1)

/* A JSON string for s, as jansson dumps it: escapes for '"', '\\' and control bytes, and
 * every byte that is not part of a valid UTF-8 sequence replaced by U+FFFD (as the
 * encoding has always stored a string that is not valid UTF-8). */
static void
canon_string(struct canon_buf *b, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	const unsigned char *in = (const unsigned char *)s;
	size_t n = strlen(s), i = 0, run, len;
	char esc[6];

	/* Worst case, every byte becomes \u00XX or U+FFFD (6 or 3 bytes), plus the quotes. */
	if (canon_reserve(b, n * 6 + 2) != 0)
		return;
	b->data[b->len++] = '"';
	while (i < n) {
		/* The longest run of bytes that go out as they are. */
		for (run = i; run < n && in[run] >= 0x20 && in[run] < 0x80 && in[run] != '"' &&
		              in[run] != '\\';
		     run++)
			;
		memcpy(b->data + b->len, in + i, run - i);
		b->len += run - i;
		if ((i = run) >= n)
			break;
		if (in[i] >= 0x80) {
			if ((len = utf8_sequence_len(in + i, n - i)) == 0) {
				memcpy(b->data + b->len, "\xef\xbf\xbd", 3);
				b->len += 3;
				i++;
			} else {
				memcpy(b->data + b->len, in + i, len);
				b->len += len;
				i += len;
			}
			continue;
		}
		esc[0] = '\\';
		len = 2;
		switch (in[i]) {
		case '"':
			esc[1] = '"';
			break;
		case '\\':
			esc[1] = '\\';
			break;
		case '\b':
			esc[1] = 'b';
			break;
		case '\f':
			esc[1] = 'f';
			break;
		case '\n':
			esc[1] = 'n';
			break;
		case '\r':
			esc[1] = 'r';
			break;
		case '\t':
			esc[1] = 't';
			break;
		default:
			memcpy(esc + 1, "u00", 3);
			esc[4] = hex[in[i] >> 4];
			esc[5] = hex[in[i] & 0x0f];
			len = 6;
			break;
		}
		memcpy(b->data + b->len, esc, len);
		b->len += len;
		i++;
	}
	b->data[b->len++] = '"';
}

/* ,"key": before a member (no comma before the first). */
static void
canon_key(struct canon_buf *b, const char *quoted_key, size_t len)
{
	if (b->len > 1)
		canon_put(b, ",", 1);
	canon_put(b, quoted_key, len);
}

#define CANON_KEY(b, k) canon_key((b), "\"" k "\":", sizeof("\"" k "\":") - 1)

/* A string member unless value is NULL. */
static void
canon_string_member(struct canon_buf *b, const char *quoted_key, size_t len, const char *value)
{
	if (value == NULL)
		return;
	canon_key(b, quoted_key, len);
	canon_string(b, value);
}

#define CANON_STRING(b, k, v) canon_string_member((b), "\"" k "\":", sizeof("\"" k "\":") - 1, (v))

/* An integer member, unless skip_zero and value is 0. */
static void
canon_integer_member(struct canon_buf *b, const char *quoted_key, size_t len, int64_t value,
                     int skip_zero)
{
	char digits[24];
	int n;

	if (skip_zero && value == 0)
		return;
	canon_key(b, quoted_key, len);
	n = snprintf(digits, sizeof(digits), "%lld", (long long)value);
	canon_put(b, digits, (size_t)n);
}

#define CANON_INT(b, k, v, skip)                                                                   \
	canon_integer_member((b), "\"" k "\":", sizeof("\"" k "\":") - 1, (v), (skip))

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

/* The canonical bytes of an entry, with seq, time and prev: members in the sorted order of
 * their keys (strcmp, as JSON_SORT_KEYS sorts them). */
int
log_chain_encode(const struct log_entry *entry, uint64_t seq, int64_t time_ms,
                 const char *prev_hash, char **out, size_t *out_len, struct ac_err *err)
{
	struct canon_buf b = {NULL, 0, 0, 0};
	size_t i, first;
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
	canon_put(&b, "{", 1);
	CANON_STRING(&b, "actor", entry->actor);
	CANON_STRING(&b, "detail", entry->detail);
	CANON_STRING(&b, "kind", entry->kind);
	CANON_INT(&b, "not_after", entry->not_after, 1);
	CANON_INT(&b, "not_before", entry->not_before, 1);
	CANON_STRING(&b, "parent", entry->parent);
	CANON_STRING(&b, "prev", prev_hash);
	CANON_STRING(&b, "reason", entry->reason);
	CANON_STRING(&b, "request_id", entry->request_id);
	if (entry->sans != NULL && entry->sans_count > 0) {
		CANON_KEY(&b, "sans");
		canon_put(&b, "[", 1);
		first = 1;
		for (i = 0; i < entry->sans_count; i++) {
			if (entry->sans[i] == NULL)
				continue;
			if (!first)
				canon_put(&b, ",", 1);
			canon_string(&b, entry->sans[i]);
			first = 0;
		}
		canon_put(&b, "]", 1);
	}
	CANON_INT(&b, "seq", (int64_t)seq, 0);
	CANON_STRING(&b, "serial", entry->serial);
	CANON_STRING(&b, "spki_sha256", entry->spki_sha256);
	CANON_STRING(&b, "subject", entry->subject);
	CANON_INT(&b, "time", time_ms, 0);
	canon_put(&b, "}", 1);
	canon_put(&b, "", 1); /* the NUL, not counted */
	if (b.failed) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "log entry %s: out of memory",
		           entry->kind);
		goto out;
	}
	*out_len = b.len - 1;
	*out = b.data;
	b.data = NULL;
	rc = 0;
out:
	free(b.data);
	return rc;
}

/* SHA-256, fetched once: EVP_sha256() would be looked up in the provider's method store (a
 * global lock) on every digest. */
static pthread_once_t hash_once = PTHREAD_ONCE_INIT;
static EVP_MD *hash_md;

static void
hash_init_once(void)
{
	hash_md = EVP_MD_fetch(NULL, "SHA2-256", NULL);
}

/* SHA-256 over bytes in lowercase hex. EVP_Digest with the built-in SHA-256 cannot fail
 * short of memory exhaustion, which this API has no way to report; abort() then, rather
 * than hand back a hash that would silently break the chain. */
void
log_chain_hash(const char *bytes, size_t len, char out[LOG_HASH_HEX_LEN + 1])
{
	unsigned char md[32];
	unsigned int md_len = 0;

	pthread_once(&hash_once, hash_init_once);
	if (hash_md == NULL || EVP_Digest(bytes, len, md, &md_len, hash_md, NULL) != 1 ||
	    md_len != sizeof(md))
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
