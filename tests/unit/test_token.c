/*
 * test_token.c - enrollment/token.c: key pairs on disk (modes, encryption, idempotence),
 * mint and verify round trips for bootstrap and admin tokens, mint-side refusals, and a
 * table of tokens the verifier must refuse, each with its own reason: tampering, foreign
 * keys, alg confusion ("none", HS256 keyed with the public key), audience, type, times,
 * lifetime, and malformed claims signed with the right key.
 *
 * Tokens with arbitrary claims are signed here with libjwt directly and the real token.key,
 * so that a refusal is for the claim under test and not for the signature.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <cmocka.h>
#include <jansson.h>
#include <jwt.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "ca/keys.h"
#include "common/base64url.h"
#include "common/fsutil.h"
#include "enrollment/token.h"
#include "testutil.h"

#define PASS "token test passphrase"
#define AUD                                                                                        \
	"ab:CD:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:"  \
	"45:67:89"
#define AUD_HEX "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
#define OTHER_AUD "1111111111111111111111111111111111111111111111111111111111111111"
#define SUBJECT "spiffe://corp.internal/gw-1"

/* Everything a test needs: a key directory, a second one (a stranger's keys), and a fixed
 * "now". */
struct fixture {
	char *dir;
	char *other_dir;
	int64_t now;
};

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct ac_err err;

	assert_non_null(f);
	ac_err_clear(&err);
	setenv("AGENTCA_PASSWORD", PASS, 1);
	f->dir = test_tmpdir("token");
	f->other_dir = test_tmpdir("token-other");
	f->now = (int64_t)time(NULL);
	assert_int_equal(token_keys_ensure(f->dir, PASS, &err), 0);
	assert_int_equal(token_keys_ensure(f->other_dir, PASS, &err), 0);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;

	test_rmdir(f->dir);
	test_rmdir(f->other_dir);
	free(f);
	return 0;
}

/* Join dir and name. */
static void
join(char *buf, size_t len, const char *dir, const char *name)
{
	assert_int_equal(path_join(buf, len, dir, name, NULL), 0);
}

/* The whole file as a heap string. */
static char *
slurp(const char *path, size_t *len)
{
	char *data = NULL;

	assert_int_equal(read_file(path, 1 << 20, &data, len, NULL), 0);
	return data;
}

/* Unpadded base64url of len bytes, heap. */
static char *
b64url(const void *data, size_t len)
{
	char *out = malloc(4 * ((len + 2) / 3) + 1);
	int n;

	assert_non_null(out);
	n = EVP_EncodeBlock((unsigned char *)out, data, (int)len);
	while (n > 0 && out[n - 1] == '=')
		n--;
	out[n] = '\0';
	for (int i = 0; i < n; i++)
		out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
	return out;
}

/* Decode one unpadded base64url part (test inputs only), heap and NUL-terminated. */
static char *
unb64url(const char *in, size_t len)
{
	char *tmp = malloc(len + 4), *out = malloc(len + 4);
	size_t n = len;
	int got;

	assert_non_null(tmp);
	assert_non_null(out);
	for (size_t i = 0; i < len; i++)
		tmp[i] = in[i] == '-' ? '+' : in[i] == '_' ? '/' : in[i];
	while (n % 4 != 0)
		tmp[n++] = '=';
	got = EVP_DecodeBlock((unsigned char *)out, (unsigned char *)tmp, (int)n);
	assert_true(got >= 0);
	got -= (int)(n - len); /* EVP_DecodeBlock counts the padding as zero bytes */
	out[got] = '\0';
	free(tmp);
	return out;
}

/* A bootstrap grant with every claim: two DNS names and a parent. */
static void
full_grant(struct token_grant *g)
{
	memset(g, 0, sizeof(*g));
	g->type = TOKEN_BOOTSTRAP;
	strcpy(g->subject, "spiffe://corp.internal/gw-1/child-3");
	strcpy(g->parent, SUBJECT);
	g->depth = 0;
	assert_int_equal(cfg_strlist_add(&g->dns, "child-3.corp.internal", NULL), 0);
	assert_int_equal(cfg_strlist_add(&g->dns, "c3.corp.internal", NULL), 0);
}

/* Mint a token with the signer of (dir, type, audience), at now for ttl. */
static char *
mint(const char *dir, enum token_type type, const char *aud, int64_t now, int64_t ttl)
{
	struct token_signer *s;
	struct token_grant g;
	struct ac_err err;
	char *jwt = NULL;

	ac_err_clear(&err);
	memset(&g, 0, sizeof(g));
	g.type = type;
	if (type == TOKEN_BOOTSTRAP) {
		strcpy(g.subject, SUBJECT);
	} else {
		strcpy(g.subject, "admin:alice");
		strcpy(g.role, "admin");
	}
	s = token_signer_load(dir, type, PASS, aud, &err);
	assert_non_null(s);
	assert_int_equal(token_mint(s, &g, now, ttl, &jwt, &err), 0);
	token_grant_free(&g);
	token_signer_free(s);
	return jwt;
}

/* Sign arbitrary claims (JSON text) ES256 with DIR/token.key, by libjwt directly. */
static char *
hand_sign(const char *dir, const char *claims_json)
{
	char path[4096], *pem, *jwt;
	EVP_PKEY *key;
	BIO *mem;
	jwt_t *j;
	long len;

	join(path, sizeof(path), dir, "token.key");
	key = key_load(path, PASS, NULL);
	assert_non_null(key);
	mem = BIO_new(BIO_s_mem());
	assert_int_equal(PEM_write_bio_PrivateKey(mem, key, NULL, NULL, 0, NULL, NULL), 1);
	len = BIO_get_mem_data(mem, &pem);
	assert_int_equal(jwt_new(&j), 0);
	assert_int_equal(jwt_add_grants_json(j, claims_json), 0);
	assert_int_equal(jwt_set_alg(j, JWT_ALG_ES256, (unsigned char *)pem, (int)len), 0);
	jwt = jwt_encode_str(j);
	assert_non_null(jwt);
	jwt_free(j);
	BIO_free(mem);
	EVP_PKEY_free(key);
	return jwt;
}

/* Good bootstrap claims at now, as a jansson object the caller may then spoil. */
static json_t *
good_claims(int64_t now)
{
	json_t *c = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:[s], s:i}", "iss",
	                      "agentca", "aud", AUD_HEX, "sub", SUBJECT, "typ", "bootstrap", "jti",
	                      "00112233445566778899aabbccddeeff", "iat", (json_int_t)now, "nbf",
	                      (json_int_t)now, "exp", (json_int_t)(now + 600), "dns",
	                      "gw-1.corp.internal", "depth", 0);

	assert_non_null(c);
	return c;
}

/* Sign claims (consumed) with the right key. */
static char *
hand_sign_claims(const char *dir, json_t *claims)
{
	char *text = json_dumps(claims, JSON_COMPACT), *jwt;

	assert_non_null(text);
	jwt = hand_sign(dir, text);
	free(text);
	json_decref(claims);
	return jwt;
}

/* header.payload.signature with the given header and payload JSON and raw signature. */
static char *
craft(const char *header, const char *payload, const unsigned char *sig, size_t sig_len)
{
	char *h = b64url(header, strlen(header)), *p = b64url(payload, strlen(payload));
	char *s = sig_len > 0 ? b64url(sig, sig_len) : strdup(""), *out;

	assert_true(asprintf(&out, "%s.%s.%s", h, p, s) > 0);
	free(h);
	free(p);
	free(s);
	return out;
}

/* The payload JSON of a token, heap. */
static char *
payload_of(const char *jwt)
{
	const char *a = strchr(jwt, '.'), *b = strchr(a + 1, '.');

	return unb64url(a + 1, (size_t)(b - a - 1));
}

/* Verify with the verifier of (dir, type, AUD) at now; the error in *err. */
static int
verify(const char *dir, enum token_type type, const char *jwt, int64_t now, struct token_grant *g,
       struct ac_err *err)
{
	struct token_verifier *v;
	int rc;

	ac_err_clear(err);
	v = token_verifier_load(dir, type, AUD, err);
	assert_non_null(v);
	rc = token_verify(v, jwt, strlen(jwt), now, g, err);
	token_verifier_free(v);
	return rc;
}

/* Key files: private 0600 and encrypted, public 0644; a second ensure changes nothing. */
static void
test_keys_on_disk(void **state)
{
	struct fixture *f = *state;
	static const char *const pairs[][2] = {{"token.key", "token.pub"},
	                                       {"admin.key", "admin.pub"}};
	char path[4096], *before, *after;
	struct stat st;
	struct ac_err err;

	for (size_t i = 0; i < 2; i++) {
		char *text;

		join(path, sizeof(path), f->dir, pairs[i][0]);
		assert_int_equal(stat(path, &st), 0);
		assert_int_equal(st.st_mode & 0777, 0600);
		text = slurp(path, NULL);
		assert_non_null(strstr(text, "BEGIN ENCRYPTED PRIVATE KEY"));
		assert_null(strstr(text, "BEGIN PRIVATE KEY"));
		assert_null(strstr(text, "BEGIN EC PRIVATE KEY"));
		free(text);
		join(path, sizeof(path), f->dir, pairs[i][1]);
		assert_int_equal(stat(path, &st), 0);
		assert_int_equal(st.st_mode & 0777, 0644);
		text = slurp(path, NULL);
		assert_non_null(strstr(text, "BEGIN PUBLIC KEY"));
		assert_null(strstr(text, "PRIVATE"));
		free(text);
	}

	/* Idempotent: existing keys are kept. */
	join(path, sizeof(path), f->dir, "token.pub");
	before = slurp(path, NULL);
	ac_err_clear(&err);
	assert_int_equal(token_keys_ensure(f->dir, PASS, &err), 0);
	after = slurp(path, NULL);
	assert_string_equal(before, after);
	free(before);
	free(after);

	/* The two pairs are different keys. */
	join(path, sizeof(path), f->dir, "token.pub");
	before = slurp(path, NULL);
	join(path, sizeof(path), f->dir, "admin.pub");
	after = slurp(path, NULL);
	assert_string_not_equal(before, after);
	free(before);
	free(after);
}

/* A lost public key is written again from the private key; a wrong passphrase is refused
 * without being named. */
static void
test_keys_repair_and_passphrase(void **state)
{
	struct fixture *f = *state;
	char path[4096], *before, *after;
	struct ac_err err;

	join(path, sizeof(path), f->dir, "admin.pub");
	before = slurp(path, NULL);
	assert_int_equal(remove(path), 0);
	ac_err_clear(&err);
	assert_int_equal(token_keys_ensure(f->dir, PASS, &err), 0);
	after = slurp(path, NULL);
	assert_string_equal(before, after);
	free(before);
	free(after);

	ac_err_clear(&err);
	assert_null(token_signer_load(f->dir, TOKEN_BOOTSTRAP, "Zq9-wrong", AUD, &err));
	assert_string_equal(err.reason, "bad_passphrase");
	assert_null(strstr(err.msg, "Zq9-wrong"));

	ac_err_clear(&err);
	assert_null(token_signer_load(f->dir, TOKEN_BOOTSTRAP, PASS, "not-a-fingerprint", &err));
	assert_int_equal(err.code, AC_ERR_INVALID);

	/* An exposed private key is refused. */
	join(path, sizeof(path), f->dir, "token.key");
	assert_int_equal(chmod(path, 0644), 0);
	ac_err_clear(&err);
	assert_null(token_signer_load(f->dir, TOKEN_BOOTSTRAP, PASS, AUD, &err));
	assert_string_equal(err.reason, "key_file_exposed");
	assert_int_equal(chmod(path, 0600), 0);

	/* A public key others may rewrite is refused too. */
	join(path, sizeof(path), f->dir, "token.pub");
	assert_int_equal(chmod(path, 0666), 0);
	ac_err_clear(&err);
	assert_null(token_verifier_load(f->dir, TOKEN_BOOTSTRAP, AUD, &err));
	assert_string_equal(err.reason, "key_file_exposed");
	assert_int_equal(chmod(path, 0644), 0);
}

/* Mint and verify a bootstrap token with every claim; the payload holds what the header
 * promises. */
static void
test_bootstrap_round_trip(void **state)
{
	struct fixture *f = *state;
	struct token_signer *s;
	struct token_grant g, out;
	struct ac_err err;
	char *jwt = NULL, *payload;
	json_t *claims;

	ac_err_clear(&err);
	full_grant(&g);
	s = token_signer_load(f->dir, TOKEN_BOOTSTRAP, PASS, AUD, &err);
	assert_non_null(s);
	assert_int_equal(token_mint(s, &g, f->now, 600, &jwt, &err), 0);
	assert_non_null(jwt);
	assert_int_equal(strlen(g.jti), 32);
	assert_int_equal(g.issued_at, f->now);
	assert_int_equal(g.not_before, f->now);
	assert_int_equal(g.expires, f->now + 600);

	payload = payload_of(jwt);
	claims = json_loads(payload, 0, NULL);
	assert_non_null(claims);
	assert_string_equal(json_string_value(json_object_get(claims, "iss")), "agentca");
	assert_string_equal(json_string_value(json_object_get(claims, "aud")), AUD_HEX);
	assert_string_equal(json_string_value(json_object_get(claims, "typ")), "bootstrap");
	assert_string_equal(json_string_value(json_object_get(claims, "jti")), g.jti);
	assert_true(json_is_array(json_object_get(claims, "dns")));
	json_decref(claims);
	free(payload);

	assert_int_equal(verify(f->dir, TOKEN_BOOTSTRAP, jwt, f->now + 5, &out, &err), 0);
	assert_int_equal(out.type, TOKEN_BOOTSTRAP);
	assert_string_equal(out.jti, g.jti);
	assert_string_equal(out.subject, "spiffe://corp.internal/gw-1/child-3");
	assert_string_equal(out.parent, SUBJECT);
	assert_int_equal(out.depth, 0);
	assert_int_equal(out.dns.count, 2);
	assert_string_equal(out.dns.items[0], "child-3.corp.internal");
	assert_string_equal(out.dns.items[1], "c3.corp.internal");
	assert_int_equal(out.issued_at, f->now);
	assert_int_equal(out.not_before, f->now);
	assert_int_equal(out.expires, f->now + 600);
	token_grant_free(&out);

	/* A second token gets another jti. */
	{
		char first[33], *jwt2 = NULL;

		memcpy(first, g.jti, sizeof(first));
		assert_int_equal(token_mint(s, &g, f->now, 600, &jwt2, &err), 0);
		assert_string_not_equal(first, g.jti);
		free(jwt2);
	}

	/* Within the clock skew both ways: accepted. */
	assert_int_equal(verify(f->dir, TOKEN_BOOTSTRAP, jwt, f->now - 30, &out, &err), 0);
	token_grant_free(&out);
	assert_int_equal(verify(f->dir, TOKEN_BOOTSTRAP, jwt, f->now + 600 + 30, &out, &err), 0);
	token_grant_free(&out);

	/* A token made by hand with the same claims shape verifies: the refusal table below
	 * refuses for the claim under test, not for how the token was made. */
	free(jwt);
	jwt = hand_sign_claims(f->dir, good_claims(f->now));
	assert_int_equal(verify(f->dir, TOKEN_BOOTSTRAP, jwt, f->now, &out, &err), 0);
	assert_int_equal(out.dns.count, 1);
	token_grant_free(&out);

	free(jwt);
	token_grant_free(&g);
	token_signer_free(s);
}

/* An admin token: role and subject come back; the admin verifier checks the role. */
static void
test_admin_round_trip(void **state)
{
	struct fixture *f = *state;
	struct token_signer *s;
	struct token_grant g, out;
	struct ac_err err;
	char *jwt = NULL;

	ac_err_clear(&err);
	memset(&g, 0, sizeof(g));
	g.type = TOKEN_ADMIN;
	strcpy(g.subject, "admin:cli");
	strcpy(g.role, "auditor");
	s = token_signer_load(f->dir, TOKEN_ADMIN, PASS, AUD, &err);
	assert_non_null(s);
	assert_int_equal(token_mint(s, &g, f->now, 900, &jwt, &err), 0);
	assert_int_equal(verify(f->dir, TOKEN_ADMIN, jwt, f->now, &out, &err), 0);
	assert_int_equal(out.type, TOKEN_ADMIN);
	assert_string_equal(out.role, "auditor");
	assert_string_equal(out.subject, "admin:cli");
	assert_int_equal(out.dns.count, 0);
	token_grant_free(&out);
	free(jwt);

	/* A bootstrap token given to the admin verifier is the wrong type. */
	jwt = mint(f->dir, TOKEN_BOOTSTRAP, AUD, f->now, 600);
	assert_int_equal(verify(f->dir, TOKEN_ADMIN, jwt, f->now, &out, &err), -1);
	assert_string_equal(err.reason, "token_wrong_type");
	free(jwt);

	/* A role the signer does not know is refused at mint. */
	strcpy(g.role, "root");
	ac_err_clear(&err);
	assert_int_equal(token_mint(s, &g, f->now, 900, &jwt, &err), -1);
	assert_int_equal(err.code, AC_ERR_INVALID);
	token_signer_free(s);
}

/* token_mint refuses what it must not sign. */
static void
test_mint_refusals(void **state)
{
	struct fixture *f = *state;
	struct token_signer *s;
	struct token_grant g;
	struct ac_err err;
	char *jwt = NULL;

	ac_err_clear(&err);
	s = token_signer_load(f->dir, TOKEN_BOOTSTRAP, PASS, AUD, &err);
	assert_non_null(s);
	memset(&g, 0, sizeof(g));
	g.type = TOKEN_BOOTSTRAP;
	strcpy(g.subject, SUBJECT);

	assert_int_equal(token_mint(s, &g, f->now, TOKEN_MAX_LIFETIME + 1, &jwt, &err), -1);
	assert_int_equal(err.code, AC_ERR_INVALID);
	assert_null(jwt);
	ac_err_clear(&err);
	assert_int_equal(token_mint(s, &g, f->now, 0, &jwt, &err), -1);
	assert_int_equal(err.code, AC_ERR_INVALID);

	strcpy(g.subject, "gw-1");
	ac_err_clear(&err);
	assert_int_equal(token_mint(s, &g, f->now, 600, &jwt, &err), -1);
	assert_int_equal(err.code, AC_ERR_INVALID);

	strcpy(g.subject, "spiffe://corp.internal/a\tb");
	ac_err_clear(&err);
	assert_int_equal(token_mint(s, &g, f->now, 600, &jwt, &err), -1);
	assert_int_equal(err.code, AC_ERR_INVALID);

	strcpy(g.subject, SUBJECT);
	strcpy(g.parent, "not-a-spiffe-id");
	ac_err_clear(&err);
	assert_int_equal(token_mint(s, &g, f->now, 600, &jwt, &err), -1);
	assert_int_equal(err.code, AC_ERR_INVALID);

	/* The exact maximum is fine. */
	g.parent[0] = '\0';
	ac_err_clear(&err);
	assert_int_equal(token_mint(s, &g, f->now, TOKEN_MAX_LIFETIME, &jwt, &err), 0);
	free(jwt);

	/* A grant of the other type. */
	g.type = TOKEN_ADMIN;
	ac_err_clear(&err);
	assert_int_equal(token_mint(s, &g, f->now, 600, &jwt, &err), -1);
	token_signer_free(s);
}

/* The refusal cases: each makes a token from the fixture and names the reason. */
struct refusal {
	const char *name;
	char *(*make)(struct fixture *f);
	const char *reason;
	enum ac_errcode code;
};

static char *
make_tampered_payload(struct fixture *f)
{
	char *jwt = mint(f->dir, TOKEN_BOOTSTRAP, AUD, f->now, 600), *payload, *p64, *out;
	const char *a = strchr(jwt, '.'), *b = strchr(a + 1, '.');
	char *at;

	payload = payload_of(jwt);
	at = strstr(payload, "gw-1");
	assert_non_null(at);
	at[3] = '9'; /* gw-1 -> gw-9: still valid JSON, another identity */
	p64 = b64url(payload, strlen(payload));
	assert_true(asprintf(&out, "%.*s.%s%s", (int)(a - jwt), jwt, p64, b) > 0);
	free(p64);
	free(payload);
	free(jwt);
	return out;
}

static char *
make_tampered_signature(struct fixture *f)
{
	char *jwt = mint(f->dir, TOKEN_BOOTSTRAP, AUD, f->now, 600);
	char *sig = strrchr(jwt, '.') + 1;

	sig[10] = sig[10] == 'A' ? 'B' : 'A';
	return jwt;
}

static char *
make_other_key(struct fixture *f)
{
	return mint(f->other_dir, TOKEN_BOOTSTRAP, AUD, f->now, 600);
}

static char *
make_alg_none(struct fixture *f)
{
	json_t *c = good_claims(f->now);
	char *claims = json_dumps(c, JSON_COMPACT), *out;

	out = craft("{\"alg\":\"none\",\"typ\":\"JWT\"}", claims, NULL, 0);
	free(claims);
	json_decref(c);
	return out;
}

/* HS256 "signed" with the public key PEM as the HMAC secret: the classic alg confusion. */
static char *
make_alg_hs256(struct fixture *f)
{
	static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
	json_t *c = good_claims(f->now);
	char *claims = json_dumps(c, JSON_COMPACT), *h, *p, *input, *pem, path[4096], *sig64;
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int mac_len = 0;
	size_t pem_len = 0;
	char *out;

	json_decref(c);
	join(path, sizeof(path), f->dir, "token.pub");
	pem = slurp(path, &pem_len);
	h = b64url(header, strlen(header));
	p = b64url(claims, strlen(claims));
	assert_true(asprintf(&input, "%s.%s", h, p) > 0);
	assert_non_null(HMAC(EVP_sha256(), pem, (int)pem_len, (unsigned char *)input, strlen(input),
	                     mac, &mac_len));
	sig64 = b64url(mac, mac_len);
	assert_true(asprintf(&out, "%s.%s", input, sig64) > 0);
	free(sig64);
	free(input);
	free(h);
	free(p);
	free(pem);
	free(claims);
	return out;
}

static char *
make_wrong_audience(struct fixture *f)
{
	return mint(f->dir, TOKEN_BOOTSTRAP, OTHER_AUD, f->now, 600);
}

static char *
make_admin_token(struct fixture *f)
{
	return mint(f->dir, TOKEN_ADMIN, AUD, f->now, 600);
}

/* Signed with token.key but claiming to be an admin token. */
static char *
make_typ_admin_right_key(struct fixture *f)
{
	json_t *c = good_claims(f->now);

	json_object_set_new(c, "typ", json_string("admin"));
	return hand_sign_claims(f->dir, c);
}

static char *
make_expired(struct fixture *f)
{
	return mint(f->dir, TOKEN_BOOTSTRAP, AUD, f->now - 7200, 600);
}

static char *
make_not_yet_valid(struct fixture *f)
{
	return mint(f->dir, TOKEN_BOOTSTRAP, AUD, f->now + 3600, 600);
}

static char *
make_lifetime_too_long(struct fixture *f)
{
	json_t *c = good_claims(f->now);

	json_object_set_new(c, "exp", json_integer(f->now + 25 * 3600));
	return hand_sign_claims(f->dir, c);
}

static char *
make_missing_sub(struct fixture *f)
{
	json_t *c = good_claims(f->now);

	json_object_del(c, "sub");
	return hand_sign_claims(f->dir, c);
}

static char *
make_sub_control_byte(struct fixture *f)
{
	json_t *c = good_claims(f->now);

	json_object_set_new(c, "sub", json_string("spiffe://corp.internal/gw\x01-1"));
	return hand_sign_claims(f->dir, c);
}

static char *
make_sub_not_spiffe(struct fixture *f)
{
	json_t *c = good_claims(f->now);

	json_object_set_new(c, "sub", json_string("https://corp.internal/gw-1"));
	return hand_sign_claims(f->dir, c);
}

static char *
make_sub_number(struct fixture *f)
{
	json_t *c = good_claims(f->now);

	json_object_set_new(c, "sub", json_integer(42));
	return hand_sign_claims(f->dir, c);
}

static char *
make_dns_not_array(struct fixture *f)
{
	json_t *c = good_claims(f->now);

	json_object_set_new(c, "dns", json_string("gw-1.corp.internal"));
	return hand_sign_claims(f->dir, c);
}

static char *
make_dns_array_of_numbers(struct fixture *f)
{
	json_t *c = good_claims(f->now);

	json_object_set_new(c, "dns", json_pack("[s,i]", "gw-1.corp.internal", 7));
	return hand_sign_claims(f->dir, c);
}

static char *
make_exp_string(struct fixture *f)
{
	json_t *c = good_claims(f->now);

	json_object_set_new(c, "exp", json_string("tomorrow"));
	return hand_sign_claims(f->dir, c);
}

static char *
make_bad_jti(struct fixture *f)
{
	json_t *c = good_claims(f->now);

	json_object_set_new(c, "jti", json_string("1"));
	return hand_sign_claims(f->dir, c);
}

static char *
make_wrong_issuer(struct fixture *f)
{
	json_t *c = good_claims(f->now);

	json_object_set_new(c, "iss", json_string("someone-else"));
	return hand_sign_claims(f->dir, c);
}

static char *
make_huge(struct fixture *f)
{
	char *out = malloc(9001);

	(void)f;
	assert_non_null(out);
	memset(out, 'A', 9000);
	out[100] = '.';
	out[200] = '.';
	out[9000] = '\0';
	return out;
}

static char *
make_two_parts(struct fixture *f)
{
	(void)f;
	return strdup("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0");
}

static const struct refusal refusals[] = {
    {"tampered payload byte", make_tampered_payload, "token_bad_signature", AC_ERR_POLICY},
    {"tampered signature", make_tampered_signature, "token_bad_signature", AC_ERR_POLICY},
    {"signed by another key", make_other_key, "token_bad_signature", AC_ERR_POLICY},
    {"alg none", make_alg_none, "token_malformed", AC_ERR_INVALID},
    {"HS256 keyed with the public key", make_alg_hs256, "token_malformed", AC_ERR_INVALID},
    {"wrong audience", make_wrong_audience, "token_wrong_audience", AC_ERR_POLICY},
    {"admin token to the bootstrap verifier", make_admin_token, "token_wrong_type", AC_ERR_POLICY},
    {"typ admin signed with token.key", make_typ_admin_right_key, "token_wrong_type",
     AC_ERR_POLICY},
    {"expired beyond the skew", make_expired, "token_expired", AC_ERR_POLICY},
    {"not yet valid", make_not_yet_valid, "token_not_yet_valid", AC_ERR_POLICY},
    {"lifetime of 25h", make_lifetime_too_long, "token_lifetime_too_long", AC_ERR_POLICY},
    {"missing sub", make_missing_sub, "token_malformed", AC_ERR_INVALID},
    {"sub with a control byte", make_sub_control_byte, "token_malformed", AC_ERR_INVALID},
    {"sub not a SPIFFE ID", make_sub_not_spiffe, "token_malformed", AC_ERR_INVALID},
    {"sub a number", make_sub_number, "token_malformed", AC_ERR_INVALID},
    {"dns a string", make_dns_not_array, "token_malformed", AC_ERR_INVALID},
    {"dns holding a number", make_dns_array_of_numbers, "token_malformed", AC_ERR_INVALID},
    {"exp a string", make_exp_string, "token_malformed", AC_ERR_INVALID},
    {"jti not 32 hex digits", make_bad_jti, "token_malformed", AC_ERR_INVALID},
    {"wrong issuer", make_wrong_issuer, "token_malformed", AC_ERR_INVALID},
    {"9000 bytes", make_huge, "token_malformed", AC_ERR_INVALID},
    {"two parts", make_two_parts, "token_malformed", AC_ERR_INVALID},
};

/* Walk the table: every case refused with its reason and code, the grant left empty, and
 * neither the token, its signature nor a path on the CA host in the message. */
static void
test_refusals(void **state)
{
	struct fixture *f = *state;

	for (size_t i = 0; i < sizeof(refusals) / sizeof(refusals[0]); i++) {
		const struct refusal *r = &refusals[i];
		struct token_grant g;
		struct ac_err err;
		char *jwt = r->make(f);
		const char *sig = strrchr(jwt, '.');

		print_message("refusal: %s\n", r->name);
		assert_int_equal(verify(f->dir, TOKEN_BOOTSTRAP, jwt, f->now, &g, &err), -1);
		if (strcmp(err.reason, r->reason) != 0)
			fail_msg("%s: reason %s, want %s (%s)", r->name, err.reason, r->reason,
			         err.msg);
		assert_int_equal(err.code, r->code);
		assert_true(err.msg[0] != '\0');
		assert_null(strstr(err.msg, jwt));
		assert_null(strstr(err.msg, f->dir)); /* clients see these messages */
		if (sig != NULL && strlen(sig) > 8)
			assert_null(strstr(err.msg, sig + 1));
		assert_int_equal(g.dns.count, 0);
		assert_string_equal(g.subject, "");
		free(jwt);
	}
}

/* A length that claims more than the buffer, or a NUL inside, is refused before parsing. */
static void
test_length_and_nul(void **state)
{
	struct fixture *f = *state;
	struct token_verifier *v;
	struct token_grant g;
	struct ac_err err;
	char *jwt = mint(f->dir, TOKEN_BOOTSTRAP, AUD, f->now, 600);
	size_t n = strlen(jwt);

	ac_err_clear(&err);
	v = token_verifier_load(f->dir, TOKEN_BOOTSTRAP, AUD, &err);
	assert_non_null(v);
	/* Explicit length: the bytes after it are not part of the token. */
	jwt = realloc(jwt, n + 10);
	memcpy(jwt + n, "garbage", 8);
	assert_int_equal(token_verify(v, jwt, n, f->now, &g, &err), 0);
	token_grant_free(&g);
	jwt[n] = '\0';
	jwt[5] = '\0';
	ac_err_clear(&err);
	assert_int_equal(token_verify(v, jwt, n, f->now, &g, &err), -1);
	assert_string_equal(err.reason, "token_malformed");
	ac_err_clear(&err);
	assert_int_equal(token_verify(v, "", 0, f->now, &g, &err), -1);
	assert_string_equal(err.reason, "token_malformed");
	token_verifier_free(v);
	free(jwt);
}

/* Each header token_verify accepts without parsing means what the parsed check accepts: a
 * JSON object with alg ES256, typ JWT or none, and nothing else (so no crit). Near misses
 * are not taken for one. */
static void
test_plain_es256_headers(void **state)
{
	(void)state;
	for (size_t i = 0; i < TOKEN_PLAIN_ES256_HEADERS; i++) {
		const char *h = token_plain_es256_headers[i];
		unsigned char *text = NULL;
		size_t text_len = 0;
		json_t *doc, *typ;

		assert_int_equal(base64url_decode_alloc(h, strlen(h), &text, &text_len), 0);
		doc = json_loadb((const char *)text, text_len, JSON_REJECT_DUPLICATES, NULL);
		assert_true(json_is_object(doc));
		assert_string_equal(json_string_value(json_object_get(doc, "alg")), "ES256");
		typ = json_object_get(doc, "typ");
		assert_true(typ == NULL || strcmp(json_string_value(typ), "JWT") == 0);
		assert_int_equal(json_object_size(doc), typ == NULL ? 1 : 2);
		assert_true(token_header_is_plain_es256(h, strlen(h)));
		assert_false(token_header_is_plain_es256(h, strlen(h) - 1));
		json_decref(doc);
		free(text);
	}
	/* {"alg":"ES384","typ":"JWT"} and {"alg":"ES256","crit":["x"]} */
	assert_false(token_header_is_plain_es256("eyJhbGciOiJFUzM4NCIsInR5cCI6IkpXVCJ9", 36));
	assert_false(token_header_is_plain_es256("eyJhbGciOiJFUzI1NiIsImNyaXQiOlsieCJdfQ", 38));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_plain_es256_headers),
	    cmocka_unit_test_setup_teardown(test_keys_on_disk, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_keys_repair_and_passphrase, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bootstrap_round_trip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_admin_round_trip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_mint_refusals, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_length_and_nul, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
