/*
 * audit_keys.c - the audit key pair and signed tree heads (see audit_keys.h).
 *
 * The key pair follows enrollment/token.c's pattern: the private key is written first
 * (encrypted, 0600), then its public half (0644), each atomically; a crash between the two
 * leaves a private key whose public file is rebuilt on the next call.
 */
#include "ca/audit_keys.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "ca/keys.h"
#include "common/fsutil.h"
#include "common/hex.h"

/* An STH file is one small JSON object. */
#define STH_FILE_MAX 4096

int
audit_keys_ensure(const char *dir, const char *passphrase, struct ac_err *err)
{
	char key_path[4096], pub_path[4096];
	EVP_PKEY *key = NULL;
	int rc = -1;

	if (path_join(key_path, sizeof(key_path), dir, AUDIT_KEY_FILE, err) != 0 ||
	    path_join(pub_path, sizeof(pub_path), dir, AUDIT_PUB_FILE, err) != 0)
		goto out;
	if (path_exists(key_path) && path_exists(pub_path)) {
		rc = 0;
		goto out;
	}
	if (path_exists(key_path)) {
		if ((key = audit_key_load(dir, passphrase, err)) == NULL)
			goto out;
	} else {
		if ((key = key_generate(KEY_EC_P256, err)) == NULL ||
		    key_write_encrypted(key_path, key, passphrase, err) != 0)
			goto out;
	}
	rc = key_write_public(pub_path, key, err);
out:
	if (rc != 0)
		ac_err_wrap(err, "making the audit key pair");
	EVP_PKEY_free(key);
	return rc;
}

EVP_PKEY *
audit_key_load(const char *dir, const char *passphrase, struct ac_err *err)
{
	char path[4096];
	EVP_PKEY *key = NULL;

	if (path_join(path, sizeof(path), dir, AUDIT_KEY_FILE, err) != 0)
		return NULL;
	if ((key = key_load(path, passphrase, err)) == NULL)
		return NULL;
	if (!key_is_p256(key)) {
		ac_err_set(err, AC_ERR_INVALID, "key_wrong_type",
		           "%s: the audit key must be EC P-256", path);
		EVP_PKEY_free(key);
		return NULL;
	}
	return key;
}

EVP_PKEY *
audit_pub_load(const char *path, struct ac_err *err)
{
	EVP_PKEY *key = NULL;
	char *data = NULL;
	size_t len = 0;
	BIO *mem = NULL;

	if (read_file(path, 64 * 1024, &data, &len, err) != 0)
		goto out;
	if ((mem = BIO_new_mem_buf(data, (int)len)) == NULL ||
	    (key = PEM_read_bio_PUBKEY(mem, NULL, NULL, NULL)) == NULL) {
		ac_err_ssl(err, AC_ERR_INVALID, "key_malformed",
		           "%s: not a PEM public key (want the CA's audit.pub)", path);
		goto out;
	}
	if (!key_is_p256(key)) {
		ac_err_set(err, AC_ERR_INVALID, "key_wrong_type",
		           "%s: an audit key is EC P-256; this one is not", path);
		EVP_PKEY_free(key);
		key = NULL;
	}
out:
	BIO_free(mem);
	free(data);
	return key;
}

int
sth_signed_bytes(const struct sth *sth, char **out, size_t *len, struct ac_err *err)
{
	char root[2 * MERKLE_HASH_LEN + 1];
	json_t *obj = NULL;
	char *text = NULL;
	int rc = -1;

	*out = NULL;
	*len = 0;
	if (sth->tree_size > INT64_MAX) {
		ac_err_set(err, AC_ERR_INVALID, "sth_malformed",
		           "tree size %" PRIu64 " is out of range", sth->tree_size);
		goto out;
	}
	hex_encode(sth->root, MERKLE_HASH_LEN, root);
	if ((obj = json_object()) == NULL ||
	    json_object_set_new(obj, "tree_size", json_integer((json_int_t)sth->tree_size)) != 0 ||
	    json_object_set_new(obj, "root_hash", json_string(root)) != 0 ||
	    json_object_set_new(obj, "timestamp", json_integer(sth->timestamp_ms)) != 0 ||
	    (text = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS)) == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "tree head: out of memory");
		goto out;
	}
	*len = strlen(text);
	*out = text;
	text = NULL;
	rc = 0;
out:
	free(text);
	json_decref(obj);
	return rc;
}

int
sth_sign(EVP_PKEY *key, struct sth *sth, struct ac_err *err)
{
	EVP_MD_CTX *ctx = NULL;
	char *msg = NULL;
	size_t msg_len, sig_len = sizeof(sth->sig);
	int rc = -1;

	sth->sig_len = 0;
	if (sth_signed_bytes(sth, &msg, &msg_len, err) != 0)
		goto out;
	if ((ctx = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key) != 1 ||
	    EVP_DigestSign(ctx, sth->sig, &sig_len, (const unsigned char *)msg, msg_len) != 1) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "sign_failed",
		           "signing the tree head of size %" PRIu64, sth->tree_size);
		goto out;
	}
	sth->sig_len = sig_len;
	rc = 0;
out:
	EVP_MD_CTX_free(ctx);
	free(msg);
	return rc;
}

int
sth_verify(EVP_PKEY *pub, const struct sth *sth, const char *what, struct ac_err *err)
{
	EVP_MD_CTX *ctx = NULL;
	char *msg = NULL;
	size_t msg_len;
	int rc = -1;

	if (sth->sig_len == 0) {
		ac_err_set(err, AC_ERR_POLICY, "sth_bad_signature", "%s is not signed", what);
		goto out;
	}
	if (sth_signed_bytes(sth, &msg, &msg_len, err) != 0)
		goto out;
	if ((ctx = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, pub) != 1) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "verify_failed", "%s: cannot set up verification",
		           what);
		goto out;
	}
	if (EVP_DigestVerify(ctx, sth->sig, sth->sig_len, (const unsigned char *)msg, msg_len) !=
	    1) {
		ERR_clear_error();
		ac_err_set(err, AC_ERR_POLICY, "sth_bad_signature",
		           "%s (tree size %" PRIu64 ") does not verify with the audit key: it was"
		           " altered or signed by another key",
		           what, sth->tree_size);
		goto out;
	}
	rc = 0;
out:
	EVP_MD_CTX_free(ctx);
	free(msg);
	return rc;
}

json_t *
sth_to_json(const struct sth *sth)
{
	char root[2 * MERKLE_HASH_LEN + 1];
	char sig[4 * ((STH_SIG_MAX + 2) / 3) + 1];
	json_t *obj;

	if (sth->tree_size > INT64_MAX || sth->sig_len > STH_SIG_MAX)
		return NULL;
	hex_encode(sth->root, MERKLE_HASH_LEN, root);
	EVP_EncodeBlock((unsigned char *)sig, sth->sig, (int)sth->sig_len);
	if ((obj = json_object()) == NULL)
		return NULL;
	if (json_object_set_new(obj, "tree_size", json_integer((json_int_t)sth->tree_size)) != 0 ||
	    json_object_set_new(obj, "root_hash", json_string(root)) != 0 ||
	    json_object_set_new(obj, "timestamp", json_integer(sth->timestamp_ms)) != 0 ||
	    json_object_set_new(obj, "signature", json_string(sig)) != 0) {
		json_decref(obj);
		return NULL;
	}
	return obj;
}

/* Decode standard base64 (padded, no whitespace) into out; -1 unless it is exactly that. */
static int
base64_decode(const char *in, unsigned char *out, size_t max, size_t *len)
{
	size_t n = strlen(in), pad = 0;
	unsigned char buf[4 * ((STH_SIG_MAX + 2) / 3) + 1];
	char again[sizeof(buf) + 4];
	int got;

	if (n == 0 || n % 4 != 0 || n / 4 * 3 > sizeof(buf))
		return -1;
	if (in[n - 1] == '=')
		pad++;
	if (in[n - 2] == '=')
		pad++;
	if ((got = EVP_DecodeBlock(buf, (const unsigned char *)in, (int)n)) < 0 ||
	    (size_t)got < pad || (size_t)got - pad > max)
		return -1;
	*len = (size_t)got - pad;
	/* Only the canonical spelling: re-encoding gives the input back. */
	EVP_EncodeBlock((unsigned char *)again, buf, (int)*len);
	if (strcmp(again, in) != 0)
		return -1;
	memcpy(out, buf, *len);
	return 0;
}

int
sth_from_json(const json_t *obj, const char *what, struct sth *out, struct ac_err *err)
{
	json_t *size = json_object_get(obj, "tree_size"), *root = json_object_get(obj, "root_hash");
	json_t *ts = json_object_get(obj, "timestamp"), *sig = json_object_get(obj, "signature");
	char hex[2 * MERKLE_HASH_LEN + 1];

	memset(out, 0, sizeof(*out));
	if (!json_is_object(obj) || !json_is_integer(size) || json_integer_value(size) < 0 ||
	    !json_is_string(root) || !json_is_integer(ts) || !json_is_string(sig))
		return ac_err_set(err, AC_ERR_INVALID, "sth_malformed",
		                  "%s: a tree head needs tree_size, root_hash, timestamp and"
		                  " signature",
		                  what);
	if (json_string_length(root) != 2 * MERKLE_HASH_LEN ||
	    hex_decode(json_string_value(root), out->root, MERKLE_HASH_LEN) != 0)
		return ac_err_set(err, AC_ERR_INVALID, "sth_malformed",
		                  "%s: root_hash is not 64 hex digits", what);
	/* Lowercase only, as signed: the file then holds exactly what the signature covers. */
	hex_encode(out->root, MERKLE_HASH_LEN, hex);
	if (strcmp(hex, json_string_value(root)) != 0)
		return ac_err_set(err, AC_ERR_INVALID, "sth_malformed",
		                  "%s: root_hash must be lowercase hex", what);
	if (base64_decode(json_string_value(sig), out->sig, sizeof(out->sig), &out->sig_len) != 0)
		return ac_err_set(err, AC_ERR_INVALID, "sth_malformed",
		                  "%s: signature is not base64 of at most %d bytes", what,
		                  STH_SIG_MAX);
	out->tree_size = (uint64_t)json_integer_value(size);
	out->timestamp_ms = json_integer_value(ts);
	return 0;
}

int
sth_read_file(const char *path, struct sth *out, struct ac_err *err)
{
	json_error_t jerr;
	json_t *obj = NULL;
	char *data = NULL;
	size_t len = 0;
	int rc = -1;

	if (read_file(path, STH_FILE_MAX, &data, &len, err) != 0)
		goto out;
	if ((obj = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr)) == NULL) {
		ac_err_set(err, AC_ERR_INVALID, "sth_malformed", "%s: not JSON: %s", path,
		           jerr.text);
		goto out;
	}
	rc = sth_from_json(obj, path, out, err);
out:
	json_decref(obj);
	free(data);
	return rc;
}
