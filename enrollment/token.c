/*
 * token.c - minting and checking agentca's JWTs (bootstrap and admin tokens). See token.h.
 *
 * Minting is libjwt's (ES256). libjwt takes keys as PEM bytes, so a signer decrypts its
 * private key once at load and keeps the plaintext PEM in OpenSSL's secure heap (wiped when
 * freed).
 *
 * Checking is ours, with OpenSSL and a public key decoded once at load: libjwt 1.10 would
 * parse the key's PEM again for every token (measured: about a quarter of the daemon's CPU
 * per enrollment), and it believes the "alg" the token names, which is how alg confusion
 * happens (an HS256 token "signed" with the public key as HMAC secret, or "none"). So a
 * token is checked here: size, shape (three base64url parts), a header that says ES256 and
 * a payload that is one JSON object with no duplicate keys; then the ES256 signature (64
 * bytes r||s over "header.payload", RFC 7518 section 3.4) with EVP_DigestVerify. The claims
 * are read from the payload bytes the signature covers, each with its type checked.
 *
 * Each thread keeps a verification context set up once for the last key it checked with
 * (SHA-256 and the key's ECDSA implementation fetched and initialised); a check works on a
 * copy of it, as ca/x509_build.c does for signing, instead of EVP_DigestVerifyInit_ex for
 * every token. The cache holds a reference to its key, so a freed verifier's key cannot be
 * mistaken for a new one at the same address; the thread's exit frees it.
 *
 * The token type ("typ") is compared before the signature, so that an admin token handed
 * to the enrollment endpoint (signed with another key) is refused as the wrong type rather
 * than as a forgery. That only chooses the reason of a refusal: nothing is accepted before
 * the signature verifies.
 *
 * No message ever holds a token, a key or a passphrase, nor a path on the CA host (the API
 * returns verification messages to clients); a token is named by its jti once that is
 * known to be 32 hex digits.
 */
#include "enrollment/token.h"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>
#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "ca/keys.h"
#include "common/base64url.h"
#include "common/fsutil.h"
#include "common/hex.h"

#define TOKEN_ISSUER "agentca"
#define TOKEN_JTI_BYTES 16
#define TOKEN_MAX_DNS 100
#define TOKEN_DNS_MAX_LEN 253
#define TOKEN_MAX_DEPTH 1000
#define TOKEN_PUB_MAX (16 * 1024)
/* Times beyond the year 9999 are refused, so that no sum or difference can overflow. */
#define TOKEN_TIME_MAX INT64_C(253402300799)

/* Where each type's key pair lives and what its "typ" claim says. */
struct token_kind {
	enum token_type type;
	const char *key_file;
	const char *pub_file;
	const char *typ;
	const char *what; /* for messages */
};

static const struct token_kind token_kinds[] = {
    {TOKEN_BOOTSTRAP, "token.key", "token.pub", "bootstrap", "bootstrap token"},
    {TOKEN_ADMIN, "admin.key", "admin.pub", "admin", "admin token"},
};

#define TOKEN_KIND_COUNT (sizeof(token_kinds) / sizeof(token_kinds[0]))

struct token_signer {
	enum token_type type;
	const struct token_kind *kind;
	char audience[65];
	unsigned char *pem; /* unencrypted PKCS#8, secure heap */
	size_t pem_len;
};

struct token_verifier {
	enum token_type type;
	const struct token_kind *kind;
	char audience[65];
	EVP_PKEY *key; /* the public key, decoded once */
};

/* The table row of a type, or NULL for a value outside the enum. */
static const struct token_kind *
kind_of(enum token_type type)
{
	for (size_t i = 0; i < TOKEN_KIND_COUNT; i++)
		if (token_kinds[i].type == type)
			return &token_kinds[i];
	return NULL;
}

/* Release the heap parts of a grant and leave it empty. */
void
token_grant_free(struct token_grant *g)
{
	if (g == NULL)
		return;
	cfg_strlist_free(&g->dns);
}

/* 1 when s[0..n) holds a control byte (C0, NUL included, or DEL), else 0. */
static int
has_control(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c < 0x20 || c == 0x7f)
			return 1;
	}
	return 0;
}

/* 1 when s looks like a SPIFFE ID: "spiffe://" and a non-empty rest. The full check of
 * trust domain and path is the issuance policy's. */
static int
looks_like_spiffe_id(const char *s)
{
	static const char prefix[] = "spiffe://";

	return strncmp(s, prefix, sizeof(prefix) - 1) == 0 && s[sizeof(prefix) - 1] != '\0' &&
	       s[sizeof(prefix) - 1] != '/';
}

/*
 * Make one key pair when its private key is missing: a new P-256 key, written encrypted
 * (0600), then its public key (0644). A private key whose public file is missing (a crash
 * between the two writes) gets its public file back, which needs the passphrase.
 */
static int
ensure_pair(const char *dir, const struct token_kind *k, const char *passphrase, struct ac_err *err)
{
	char key_path[4096], pub_path[4096];
	EVP_PKEY *key = NULL;
	int rc = -1;

	if (path_join(key_path, sizeof(key_path), dir, k->key_file, err) != 0 ||
	    path_join(pub_path, sizeof(pub_path), dir, k->pub_file, err) != 0)
		goto out;
	if (path_exists(key_path) && path_exists(pub_path)) {
		rc = 0;
		goto out;
	}
	if (path_exists(key_path)) {
		key = key_load(key_path, passphrase, err);
		if (key == NULL)
			goto out;
		if (!key_is_p256(key)) {
			ac_err_set(err, AC_ERR_INVALID, "key_wrong_type",
			           "%s: a token key must be EC P-256", key_path);
			goto out;
		}
	} else {
		key = key_generate(KEY_EC_P256, err);
		if (key == NULL)
			goto out;
		if (key_write_encrypted(key_path, key, passphrase, err) != 0)
			goto out;
	}
	rc = key_write_public(pub_path, key, err);
out:
	if (rc != 0)
		ac_err_wrap(err, "making the %s key pair", k->what);
	EVP_PKEY_free(key);
	return rc;
}

/* Make DIR/token.{key,pub} and DIR/admin.{key,pub} when missing. */
int
token_keys_ensure(const char *dir, const char *passphrase, struct ac_err *err)
{
	for (size_t i = 0; i < TOKEN_KIND_COUNT; i++)
		if (ensure_pair(dir, &token_kinds[i], passphrase, err) != 0)
			return -1;
	return 0;
}

/* Copy a fingerprint as users type it into 64 lowercase hex digits. */
static int
audience_set(char out[65], const char *audience, struct ac_err *err)
{
	if (audience == NULL || fingerprint_normalize(audience, out) != 0)
		return ac_err_set(err, AC_ERR_INVALID, "token_bad_audience",
		                  "token audience is not a SHA-256 fingerprint (64 hex digits)");
	return 0;
}

/*
 * Load the private key of `type`: decrypt it once, check that it is P-256, and keep it as
 * unencrypted PEM in the secure heap for libjwt.
 */
struct token_signer *
token_signer_load(const char *dir, enum token_type type, const char *passphrase,
                  const char *audience, struct ac_err *err)
{
	struct token_signer *s = NULL;
	char path[4096];
	EVP_PKEY *key = NULL;
	BIO *mem = NULL;
	char *data;
	long len;
	int ok = 0;

	if (kind_of(type) == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "bad_argument", "token_signer_load: bad type");
		goto out;
	}
	s = calloc(1, sizeof(*s));
	if (s == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "token signer: out of memory");
		goto out;
	}
	s->type = type;
	s->kind = kind_of(type);
	if (audience_set(s->audience, audience, err) != 0)
		goto out;
	if (path_join(path, sizeof(path), dir, s->kind->key_file, err) != 0)
		goto out;
	key = key_load(path, passphrase, err);
	if (key == NULL)
		goto out;
	if (!key_is_p256(key)) {
		ac_err_set(err, AC_ERR_INVALID, "key_wrong_type",
		           "%s: a token key must be EC P-256", path);
		goto out;
	}
	/* A secure-memory BIO: the plaintext PEM is wiped when the BIO is freed. */
	mem = BIO_new(BIO_s_secmem());
	if (mem == NULL || PEM_write_bio_PrivateKey(mem, key, NULL, NULL, 0, NULL, NULL) != 1) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "pem_write_failed", "%s: cannot re-encode the key",
		           path);
		goto out;
	}
	len = BIO_get_mem_data(mem, &data);
	if (len <= 0 || len > INT_MAX) {
		ac_err_set(err, AC_ERR_CRYPTO, "pem_write_failed", "%s: empty key PEM", path);
		goto out;
	}
	s->pem = OPENSSL_secure_malloc((size_t)len);
	if (s->pem == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "%s: out of memory", path);
		goto out;
	}
	memcpy(s->pem, data, (size_t)len);
	s->pem_len = (size_t)len;
	ok = 1;
out:
	BIO_free(mem);
	EVP_PKEY_free(key);
	if (!ok) {
		token_signer_free(s);
		s = NULL;
	}
	return s;
}

/* Wipe and free the signer's key. NULL is fine. */
void
token_signer_free(struct token_signer *s)
{
	if (s == NULL)
		return;
	if (s->pem != NULL)
		OPENSSL_secure_clear_free(s->pem, s->pem_len);
	free(s);
}

/* Check what a caller asks to put in a token before signing it. */
static int
check_grant_for_mint(const struct token_signer *s, const struct token_grant *g, int64_t ttl,
                     struct ac_err *err)
{
	const char *what = s->kind->what;
	size_t n;

	if (g->type != s->type)
		return ac_err_set(err, AC_ERR_INTERNAL, "bad_argument",
		                  "token_mint: the grant's type is not the signer's");
	if (ttl <= 0)
		return ac_err_set(err, AC_ERR_INVALID, "token_ttl_invalid",
		                  "%s: the lifetime must be positive", what);
	if (ttl > TOKEN_MAX_LIFETIME)
		return ac_err_set(err, AC_ERR_INVALID, "token_lifetime_too_long",
		                  "%s: a lifetime of %lld s is longer than the %d s allowed", what,
		                  (long long)ttl, TOKEN_MAX_LIFETIME);
	n = strnlen(g->subject, sizeof(g->subject));
	if (n == 0 || n == sizeof(g->subject) || has_control(g->subject, n))
		return ac_err_set(err, AC_ERR_INVALID, "token_bad_subject",
		                  "%s: the subject is empty, too long or holds control bytes",
		                  what);
	if (s->type == TOKEN_BOOTSTRAP) {
		if (!looks_like_spiffe_id(g->subject))
			return ac_err_set(err, AC_ERR_INVALID, "token_bad_subject",
			                  "%s: the subject must be a SPIFFE ID (spiffe://...)",
			                  what);
		n = strnlen(g->parent, sizeof(g->parent));
		if (n == sizeof(g->parent) || has_control(g->parent, n) ||
		    (n > 0 && !looks_like_spiffe_id(g->parent)))
			return ac_err_set(err, AC_ERR_INVALID, "token_bad_parent",
			                  "%s: the parent must be a SPIFFE ID (spiffe://...)",
			                  what);
		if (g->depth < 0 || g->depth > TOKEN_MAX_DEPTH)
			return ac_err_set(err, AC_ERR_INVALID, "token_bad_depth",
			                  "%s: depth %d is out of range", what, g->depth);
		if (g->dns.count > TOKEN_MAX_DNS)
			return ac_err_set(err, AC_ERR_INVALID, "token_bad_dns",
			                  "%s: more than %d DNS names", what, TOKEN_MAX_DNS);
		for (size_t i = 0; i < g->dns.count; i++) {
			n = strlen(g->dns.items[i]);
			if (n == 0 || n > TOKEN_DNS_MAX_LEN || has_control(g->dns.items[i], n))
				return ac_err_set(err, AC_ERR_INVALID, "token_bad_dns",
				                  "%s: DNS name %zu is empty, too long or holds "
				                  "control bytes",
				                  what, i + 1);
		}
	} else if (strcmp(g->role, "admin") != 0 && strcmp(g->role, "auditor") != 0) {
		return ac_err_set(err, AC_ERR_INVALID, "token_bad_role",
		                  "%s: the role must be admin or auditor", what);
	}
	return 0;
}

/* The claims of a grant as a JSON object (a new reference, or NULL when out of memory). */
static json_t *
claims_build(const struct token_signer *s, const struct token_grant *g)
{
	json_t *claims, *dns;
	int bad = 0;

	claims = json_object();
	if (claims == NULL)
		return NULL;
	bad |= json_object_set_new(claims, "iss", json_string(TOKEN_ISSUER));
	bad |= json_object_set_new(claims, "aud", json_string(s->audience));
	bad |= json_object_set_new(claims, "sub", json_string(g->subject));
	bad |= json_object_set_new(claims, "typ", json_string(s->kind->typ));
	bad |= json_object_set_new(claims, "jti", json_string(g->jti));
	bad |= json_object_set_new(claims, "iat", json_integer(g->issued_at));
	bad |= json_object_set_new(claims, "nbf", json_integer(g->not_before));
	bad |= json_object_set_new(claims, "exp", json_integer(g->expires));
	if (s->type == TOKEN_BOOTSTRAP) {
		dns = json_array();
		for (size_t i = 0; dns != NULL && i < g->dns.count; i++)
			bad |= json_array_append_new(dns, json_string(g->dns.items[i]));
		bad |= json_object_set_new(claims, "dns", dns);
		bad |= json_object_set_new(claims, "depth", json_integer(g->depth));
		if (g->parent[0] != '\0')
			bad |= json_object_set_new(claims, "parent", json_string(g->parent));
		if (g->cert_not_after_max != 0)
			bad |= json_object_set_new(claims, "cert_exp",
			                           json_integer(g->cert_not_after_max));
	} else {
		bad |= json_object_set_new(claims, "role", json_string(g->role));
	}
	if (bad) {
		json_decref(claims);
		return NULL;
	}
	return claims;
}

/*
 * Mint a token: a fresh jti, iat = nbf = now, exp = now + ttl, signed ES256. The grant gets
 * the jti and times written into it.
 */
int
token_mint(struct token_signer *s, struct token_grant *grant, int64_t now, int64_t ttl, char **jwt,
           struct ac_err *err)
{
	unsigned char raw[TOKEN_JTI_BYTES];
	json_t *claims = NULL;
	char *claims_json = NULL, *out = NULL;
	jwt_t *j = NULL;
	int rc = -1;

	*jwt = NULL;
	if (check_grant_for_mint(s, grant, ttl, err) != 0)
		goto out;
	if (now < 0 || now > TOKEN_TIME_MAX - ttl) {
		ac_err_set(err, AC_ERR_INVALID, "token_ttl_invalid", "%s: time out of range",
		           s->kind->what);
		goto out;
	}
	if (RAND_bytes(raw, sizeof(raw)) != 1) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "rand_failed", "%s: RAND_bytes failed",
		           s->kind->what);
		goto out;
	}
	hex_encode(raw, sizeof(raw), grant->jti);
	grant->issued_at = now;
	grant->not_before = now;
	grant->expires = now + ttl;

	claims = claims_build(s, grant);
	claims_json = claims != NULL ? json_dumps(claims, JSON_COMPACT) : NULL;
	if (claims_json == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "%s %s: out of memory",
		           s->kind->what, grant->jti);
		goto out;
	}
	if (jwt_new(&j) != 0 || jwt_add_grants_json(j, claims_json) != 0 ||
	    jwt_set_alg(j, JWT_ALG_ES256, s->pem, (int)s->pem_len) != 0) {
		ac_err_set(err, AC_ERR_CRYPTO, "token_sign_failed", "%s %s: libjwt setup failed",
		           s->kind->what, grant->jti);
		goto out;
	}
	out = jwt_encode_str(j);
	if (out == NULL) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "token_sign_failed", "%s %s: signing failed",
		           s->kind->what, grant->jti);
		goto out;
	}
	if (strlen(out) > TOKEN_MAX_BYTES) {
		ac_err_set(err, AC_ERR_INVALID, "token_too_large",
		           "%s %s: the token would be longer than %d bytes (too many DNS names?)",
		           s->kind->what, grant->jti, TOKEN_MAX_BYTES);
		goto out;
	}
	*jwt = out;
	out = NULL;
	rc = 0;
out:
	OPENSSL_cleanse(raw, sizeof(raw));
	free(out);
	jwt_free(j);
	free(claims_json);
	json_decref(claims);
	return rc;
}

/*
 * Load the public key of `type` from DIR. It is a trust anchor for tokens, so a file that
 * group or others may write is refused.
 */
struct token_verifier *
token_verifier_load(const char *dir, enum token_type type, const char *audience, struct ac_err *err)
{
	struct token_verifier *v = NULL;
	EVP_PKEY *key = NULL;
	BIO *mem = NULL;
	struct stat st;
	char path[4096];
	char *data = NULL;
	size_t len = 0;
	int ok = 0;

	if (kind_of(type) == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "bad_argument", "token_verifier_load: bad type");
		goto out;
	}
	v = calloc(1, sizeof(*v));
	if (v == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "token verifier: out of memory");
		goto out;
	}
	v->type = type;
	v->kind = kind_of(type);
	if (audience_set(v->audience, audience, err) != 0)
		goto out;
	if (path_join(path, sizeof(path), dir, v->kind->pub_file, err) != 0)
		goto out;
	if (read_file(path, TOKEN_PUB_MAX, &data, &len, err) != 0)
		goto out;
	if (stat(path, &st) == 0 && (st.st_mode & 022) != 0) {
		ac_err_set(err, AC_ERR_POLICY, "key_file_exposed",
		           "%s is writable by group or others (mode %04o); run: chmod 644 %s", path,
		           (unsigned)(st.st_mode & 07777), path);
		goto out;
	}
	mem = BIO_new_mem_buf(data, (int)len);
	key = mem != NULL ? PEM_read_bio_PUBKEY(mem, NULL, NULL, NULL) : NULL;
	if (key == NULL) {
		ac_err_ssl(err, AC_ERR_INVALID, "key_unreadable", "%s: not a PEM public key", path);
		goto out;
	}
	if (!key_is_p256(key)) {
		ac_err_set(err, AC_ERR_INVALID, "key_wrong_type",
		           "%s: a token key must be EC P-256", path);
		goto out;
	}
	v->key = key;
	key = NULL;
	ok = 1;
out:
	EVP_PKEY_free(key);
	BIO_free(mem);
	free(data);
	if (!ok) {
		token_verifier_free(v);
		v = NULL;
	}
	return v;
}

/* Free a verifier. NULL is fine. */
void
token_verifier_free(struct token_verifier *v)
{
	if (v == NULL)
		return;
	EVP_PKEY_free(v->key);
	free(v);
}

/* Decode unpadded base64url into a NUL-terminated heap buffer (common/base64url.c, which
 * also refuses a second spelling of the same bytes). */
static int
b64url_decode(const char *in, size_t len, char **out, size_t *out_len)
{
	unsigned char *buf = NULL;
	int rc = base64url_decode_alloc(in, len, &buf, out_len);

	*out = (char *)buf;
	return rc;
}

/* The base64url ES256 headers libjwt and common JWT libraries write, each meaning alg ES256,
 * typ JWT (or none) and no crit: {"alg":"ES256","typ":"JWT"}, {"typ":"JWT","alg":"ES256"}
 * and {"alg":"ES256"}. test_token checks that each passes the parsed check. */
const char *const token_plain_es256_headers[TOKEN_PLAIN_ES256_HEADERS] = {
    "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9",
    "eyJ0eXAiOiJKV1QiLCJhbGciOiJFUzI1NiJ9",
    "eyJhbGciOiJFUzI1NiJ9",
};

int
token_header_is_plain_es256(const char *part, size_t len)
{
	for (size_t i = 0; i < TOKEN_PLAIN_ES256_HEADERS; i++)
		if (strlen(token_plain_es256_headers[i]) == len &&
		    memcmp(token_plain_es256_headers[i], part, len) == 0)
			return 1;
	return 0;
}

/* Decode one base64url part of a token and parse it as a JSON object (duplicate keys are
 * refused: two readers must never see two different claims). NULL when it is not one. */
static json_t *
part_to_object(const char *part, size_t len)
{
	json_t *obj = NULL;
	char *text = NULL;
	size_t text_len = 0;

	if (len == 0 || b64url_decode(part, len, &text, &text_len) != 0)
		return NULL;
	obj = json_loadb(text, text_len, JSON_REJECT_DUPLICATES, NULL);
	if (obj != NULL && !json_is_object(obj)) {
		json_decref(obj);
		obj = NULL;
	}
	free(text);
	return obj;
}

/* Read claim `name` as a string without control bytes, of 1..max bytes. 1 if absent (when
 * optional), 0 on success, -1 on a wrong type or value. */
static int
claim_string(json_t *claims, const char *name, int optional, size_t max, const char **out)
{
	json_t *v = json_object_get(claims, name);
	size_t n;

	*out = NULL;
	if (v == NULL)
		return optional ? 1 : -1;
	if (!json_is_string(v))
		return -1;
	n = json_string_length(v);
	*out = json_string_value(v);
	if (n == 0 || n > max || strlen(*out) != n || has_control(*out, n))
		return -1;
	return 0;
}

/* Read claim `name` as an integer within [min, max]. */
static int
claim_int(json_t *claims, const char *name, int64_t min, int64_t max, int64_t *out)
{
	json_t *v = json_object_get(claims, name);

	if (!json_is_integer(v))
		return -1;
	*out = (int64_t)json_integer_value(v);
	return *out >= min && *out <= max ? 0 : -1;
}

/* Read the "dns" claim: an array of DNS names (strings), possibly empty. */
static int
claim_dns(json_t *claims, struct cfg_strlist *dns, struct ac_err *err)
{
	json_t *arr = json_object_get(claims, "dns"), *item;
	size_t i;

	if (!json_is_array(arr) || json_array_size(arr) > TOKEN_MAX_DNS)
		return -1;
	json_array_foreach(arr, i, item)
	{
		const char *s = json_string_value(item);
		size_t n = json_string_length(item);

		if (!json_is_string(item) || n == 0 || n > TOKEN_DNS_MAX_LEN || strlen(s) != n ||
		    has_control(s, n))
			return -1;
		if (cfg_strlist_add(dns, s, err) != 0)
			return -2;
	}
	return 0;
}

/* Fill `what` with how messages name a token: by its jti once that is known to be sane. */
static void
name_token(char *what, size_t len, const char *jti)
{
	if (jti != NULL && jti[0] != '\0')
		snprintf(what, len, "token %s", jti);
	else
		snprintf(what, len, "token");
}

/* 1 when s is exactly 32 lowercase hex digits. */
static int
jti_is_sane(const char *s)
{
	size_t i;

	for (i = 0; s[i] != '\0'; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return i == 2 * TOKEN_JTI_BYTES;
}

/*
 * The per-thread verification context (see the top of the file).
 */

struct verify_cache {
	EVP_PKEY *key;     /* a reference, so that its address stays its own */
	EVP_MD_CTX *ready; /* initialised for verifying with key, no data yet: copied, never used */
	EVP_MD_CTX *work;  /* the copy one check uses */
};

static pthread_once_t verify_once = PTHREAD_ONCE_INIT;
static pthread_key_t verify_key;
static int verify_key_ok;

/* Empty the cache (it stays allocated). */
static void
verify_cache_clear(struct verify_cache *c)
{
	EVP_MD_CTX_free(c->work);
	EVP_MD_CTX_free(c->ready);
	EVP_PKEY_free(c->key);
	memset(c, 0, sizeof(*c));
}

/* The thread-exit destructor. */
static void
verify_cache_free(void *arg)
{
	struct verify_cache *c = arg;

	if (c == NULL)
		return;
	verify_cache_clear(c);
	free(c);
}

/* Create the thread-local key, once per process. */
static void
verify_init_once(void)
{
	verify_key_ok = pthread_key_create(&verify_key, verify_cache_free) == 0;
}

/* This thread's context, a fresh copy of one set up for key; NULL when there is none (the
 * caller then sets one up itself, which reports any real error). */
static EVP_MD_CTX *
verify_ctx_get(EVP_PKEY *key)
{
	struct verify_cache *c;

	pthread_once(&verify_once, verify_init_once);
	if (!verify_key_ok)
		return NULL;
	c = pthread_getspecific(verify_key);
	if (c == NULL) {
		if ((c = calloc(1, sizeof(*c))) == NULL)
			return NULL;
		if (pthread_setspecific(verify_key, c) != 0) {
			free(c);
			return NULL;
		}
	}
	if (c->key != key) {
		verify_cache_clear(c);
		if (EVP_PKEY_up_ref(key) != 1)
			return NULL;
		c->key = key;
		c->ready = EVP_MD_CTX_new();
		c->work = EVP_MD_CTX_new();
		if (c->ready == NULL || c->work == NULL ||
		    EVP_DigestVerifyInit_ex(c->ready, NULL, "SHA256", NULL, NULL, key, NULL) != 1) {
			verify_cache_clear(c);
			ERR_clear_error();
			return NULL;
		}
		/* Each copy checks once and is thrown away: let the final step use it up
		 * rather than duplicate it first. */
		EVP_MD_CTX_set_flags(c->ready, EVP_MD_CTX_FLAG_FINALISE);
	}
	if (EVP_MD_CTX_copy_ex(c->work, c->ready) != 1) {
		ERR_clear_error();
		return NULL;
	}
	return c->work;
}

/*
 * Check a JWS ES256 signature: sig_b64 is base64url of r||s (32 bytes each), over the
 * signing input "header.payload". Returns 1 when it verifies, 0 otherwise.
 */
static int
es256_verify(EVP_PKEY *key, const char *input, size_t input_len, const char *sig_b64,
             size_t sig_b64_len)
{
	unsigned char *der = NULL;
	EVP_MD_CTX *ctx = NULL, *own = NULL; /* own: set up here when the cache has none */
	ECDSA_SIG *sig = NULL;
	BIGNUM *r = NULL, *s = NULL;
	char *raw = NULL;
	size_t raw_len = 0;
	int der_len, ok = 0;

	if (b64url_decode(sig_b64, sig_b64_len, &raw, &raw_len) != 0 || raw_len != 64)
		goto out;
	sig = ECDSA_SIG_new();
	r = BN_bin2bn((const unsigned char *)raw, 32, NULL);
	s = BN_bin2bn((const unsigned char *)raw + 32, 32, NULL);
	if (sig == NULL || r == NULL || s == NULL || !ECDSA_SIG_set0(sig, r, s))
		goto out;
	r = s = NULL; /* owned by sig now */
	der_len = i2d_ECDSA_SIG(sig, &der);
	if (der_len <= 0)
		goto out;
	ctx = verify_ctx_get(key);
	if (ctx == NULL) {
		ctx = own = EVP_MD_CTX_new();
		if (own == NULL ||
		    EVP_DigestVerifyInit_ex(own, NULL, "SHA256", NULL, NULL, key, NULL) != 1)
			goto out;
	}
	ok = EVP_DigestVerify(ctx, der, (size_t)der_len, (const unsigned char *)input, input_len) ==
	     1;
out:
	ERR_clear_error();
	EVP_MD_CTX_free(own);
	OPENSSL_free(der);
	ECDSA_SIG_free(sig);
	BN_free(r);
	BN_free(s);
	free(raw);
	return ok;
}

#define MALFORMED(...) ac_err_set(err, AC_ERR_INVALID, "token_malformed", __VA_ARGS__)

/*
 * Check a token, in order: size, shape, header (ES256), payload (one JSON object), type,
 * signature, issuer, audience, times (types, lifetime, not before, expiry with
 * TOKEN_CLOCK_SKEW either way), jti, subject and the type's own claims.
 */
int
token_verify(struct token_verifier *v, const char *jwt, size_t len, int64_t now,
             struct token_grant *grant, struct ac_err *err)
{
	json_t *header = NULL, *claims = NULL;
	const char *dot1, *dot2, *s, *typ, *jti = NULL;
	char what[80];
	int64_t iat, nbf, exp, depth;
	int rc = -1, r;

	memset(grant, 0, sizeof(*grant));
	grant->type = v->type;
	name_token(what, sizeof(what), NULL);

	/* Size and shape, before anything is parsed. */
	if (jwt == NULL || len == 0) {
		MALFORMED("%s: empty", what);
		goto out;
	}
	if (len > TOKEN_MAX_BYTES) {
		MALFORMED("%s: longer than %d bytes", what, TOKEN_MAX_BYTES);
		goto out;
	}
	if (memchr(jwt, '\0', len) != NULL) {
		MALFORMED("%s: holds a NUL byte", what);
		goto out;
	}
	dot1 = memchr(jwt, '.', len);
	dot2 = dot1 != NULL ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - jwt)) : NULL;
	if (dot2 == NULL || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - jwt)) != NULL ||
	    dot2 + 1 == jwt + len) {
		MALFORMED("%s: not a signed JWT (three base64url parts)", what);
		goto out;
	}

	/* The header must name ES256 and nothing we would have to understand. A header that is
	 * byte for byte one of the usual ES256 headers needs no parse; any other is parsed. */
	if (!token_header_is_plain_es256(jwt, (size_t)(dot1 - jwt))) {
		header = part_to_object(jwt, (size_t)(dot1 - jwt));
		if (header == NULL) {
			MALFORMED("%s: the header is not base64url JSON", what);
			goto out;
		}
		s = json_string_value(json_object_get(header, "alg"));
		if (s == NULL || strcmp(s, "ES256") != 0) {
			MALFORMED("%s: not signed with ES256", what);
			goto out;
		}
		s = json_string_value(json_object_get(header, "typ"));
		if ((json_object_get(header, "typ") != NULL &&
		     (s == NULL || strcmp(s, "JWT") != 0)) ||
		    json_object_get(header, "crit") != NULL) {
			MALFORMED("%s: unexpected header parameters", what);
			goto out;
		}
	}
	claims = part_to_object(dot1 + 1, (size_t)(dot2 - dot1 - 1));
	if (claims == NULL) {
		MALFORMED("%s: the payload is not base64url JSON", what);
		goto out;
	}
	if (claim_string(claims, "jti", 0, 2 * TOKEN_JTI_BYTES, &jti) == 0 && jti_is_sane(jti))
		name_token(what, sizeof(what), jti);
	else
		jti = NULL;

	/* The type, so that an admin token is named as such (see the top of the file). */
	if (claim_string(claims, "typ", 0, 32, &typ) != 0) {
		MALFORMED("%s: the typ claim is missing or not a string", what);
		goto out;
	}
	if (strcmp(typ, v->kind->typ) != 0) {
		ac_err_set(err, AC_ERR_POLICY, "token_wrong_type", "%s: this is not a %s", what,
		           v->kind->what);
		goto out;
	}

	/* The signature, over the exact bytes parsed above. */
	if (es256_verify(v->key, jwt, (size_t)(dot2 - jwt), dot2 + 1,
	                 len - (size_t)(dot2 + 1 - jwt)) != 1) {
		ac_err_set(err, AC_ERR_POLICY, "token_bad_signature",
		           "%s: the signature does not verify with this CA's %s key", what,
		           v->kind->typ);
		goto out;
	}

	/* Issuer and audience: a token is good at exactly one CA. */
	if (claim_string(claims, "iss", 0, 64, &s) != 0 || strcmp(s, TOKEN_ISSUER) != 0) {
		MALFORMED("%s: the issuer is not %s", what, TOKEN_ISSUER);
		goto out;
	}
	if (claim_string(claims, "aud", 0, 64, &s) != 0) {
		MALFORMED("%s: the aud claim is missing or not a string", what);
		goto out;
	}
	if (strcmp(s, v->audience) != 0) {
		ac_err_set(err, AC_ERR_POLICY, "token_wrong_audience",
		           "%s: made for another CA (the audience is not this CA's root)", what);
		goto out;
	}

	/* Times. */
	if (claim_int(claims, "iat", 0, TOKEN_TIME_MAX, &iat) != 0 ||
	    claim_int(claims, "nbf", 0, TOKEN_TIME_MAX, &nbf) != 0 ||
	    claim_int(claims, "exp", 0, TOKEN_TIME_MAX, &exp) != 0) {
		MALFORMED("%s: iat, nbf and exp must be integers (unix seconds)", what);
		goto out;
	}
	if (exp - iat > TOKEN_MAX_LIFETIME || exp - nbf > TOKEN_MAX_LIFETIME) {
		ac_err_set(err, AC_ERR_POLICY, "token_lifetime_too_long",
		           "%s: valid for %lld s, longer than the %d s allowed", what,
		           (long long)(exp - (iat < nbf ? iat : nbf)), TOKEN_MAX_LIFETIME);
		goto out;
	}
	if (exp <= iat || exp <= nbf) {
		MALFORMED("%s: expires before it is issued", what);
		goto out;
	}
	if (nbf > now + TOKEN_CLOCK_SKEW || iat > now + TOKEN_CLOCK_SKEW) {
		ac_err_set(err, AC_ERR_POLICY, "token_not_yet_valid",
		           "%s: not valid for another %lld s", what,
		           (long long)((nbf > iat ? nbf : iat) - now));
		goto out;
	}
	if (exp + TOKEN_CLOCK_SKEW <= now) {
		ac_err_set(err, AC_ERR_POLICY, "token_expired", "%s: expired %lld s ago", what,
		           (long long)(now - exp));
		goto out;
	}

	/* jti and subject. */
	if (jti == NULL) {
		MALFORMED("%s: the jti claim is not 32 hex digits", what);
		goto out;
	}
	if (claim_string(claims, "sub", 0, sizeof(grant->subject) - 1, &s) != 0) {
		MALFORMED("%s: the sub claim is missing, not a string, too long or holds control "
		          "bytes",
		          what);
		goto out;
	}
	if (v->type == TOKEN_BOOTSTRAP && !looks_like_spiffe_id(s)) {
		MALFORMED("%s: the subject is not a SPIFFE ID (spiffe://...)", what);
		goto out;
	}
	memcpy(grant->jti, jti, 2 * TOKEN_JTI_BYTES + 1);
	memcpy(grant->subject, s, strlen(s) + 1);
	grant->issued_at = iat;
	grant->not_before = nbf;
	grant->expires = exp;

	/* The type's own claims. */
	if (v->type == TOKEN_BOOTSTRAP) {
		r = claim_string(claims, "parent", 1, sizeof(grant->parent) - 1, &s);
		if (r < 0 || (r == 0 && !looks_like_spiffe_id(s))) {
			MALFORMED("%s: the parent claim is not a SPIFFE ID", what);
			goto out;
		}
		if (r == 0)
			memcpy(grant->parent, s, strlen(s) + 1);
		if (claim_int(claims, "depth", 0, TOKEN_MAX_DEPTH, &depth) != 0) {
			MALFORMED("%s: the depth claim is missing or not a small integer", what);
			goto out;
		}
		grant->depth = (int)depth;
		if (json_object_get(claims, "cert_exp") != NULL &&
		    claim_int(claims, "cert_exp", 1, TOKEN_TIME_MAX, &grant->cert_not_after_max) !=
		        0) {
			MALFORMED("%s: the cert_exp claim is not a time", what);
			goto out;
		}
		r = claim_dns(claims, &grant->dns, err);
		if (r == -1) {
			MALFORMED("%s: the dns claim is not an array of DNS names", what);
			goto out;
		}
		if (r != 0)
			goto out;
	} else {
		if (claim_string(claims, "role", 0, sizeof(grant->role) - 1, &s) != 0 ||
		    (strcmp(s, "admin") != 0 && strcmp(s, "auditor") != 0)) {
			MALFORMED("%s: the role claim is not admin or auditor", what);
			goto out;
		}
		memcpy(grant->role, s, strlen(s) + 1);
	}
	rc = 0;
out:
	if (rc != 0) {
		token_grant_free(grant);
		memset(grant, 0, sizeof(*grant));
	}
	json_decref(claims);
	json_decref(header);
	return rc;
}
