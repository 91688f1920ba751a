/*
 * keys.c - the one module that touches CA private keys and the CA passphrase.
 *
 * Keys are generated with OpenSSL 3's EVP_PKEY_Q_keygen, written as PKCS#8 PEM encrypted
 * with AES-256-CBC (PBES2, PBKDF2-HMAC-SHA256), always through atomic_write_file() so that a
 * key file is 0600 from the moment it exists. Loading checks the file mode before a byte of
 * the key is read, and never lets OpenSSL prompt on a terminal: the passphrase is handed in
 * through a callback that answers with what we were given, or nothing.
 *
 * The passphrase never leaves this file in a message or a log line; buffers that held it
 * (or a plaintext key) are wiped with OPENSSL_cleanse before they are freed.
 */
#include "ca/keys.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "common/fsutil.h"
#include "common/hex.h"

#define KEY_FILE_MAX (64 * 1024)
#define PASSPHRASE_RANDOM_BYTES 32

static const struct {
	enum key_type type;
	const char *name;
} key_type_table[] = {
    {KEY_EC_P256, "p256"},
    {KEY_EC_P384, "p384"},
    {KEY_RSA_3072, "rsa3072"},
    {KEY_ED25519, "ed25519"},
};

#define KEY_TYPE_COUNT (sizeof(key_type_table) / sizeof(key_type_table[0]))

/* Map a key type name as users type it to the enum. */
int
key_type_parse(const char *name, enum key_type *out)
{
	for (size_t i = 0; name != NULL && i < KEY_TYPE_COUNT; i++) {
		if (strcmp(name, key_type_table[i].name) == 0) {
			*out = key_type_table[i].type;
			return 0;
		}
	}
	return -1;
}

/* The name of a key type, as key_type_parse() reads it. */
const char *
key_type_name(enum key_type type)
{
	for (size_t i = 0; i < KEY_TYPE_COUNT; i++)
		if (key_type_table[i].type == type)
			return key_type_table[i].name;
	return "unknown";
}

/* Generate a fresh key of the given type from the default provider's DRBG. */
EVP_PKEY *
key_generate(enum key_type type, struct ac_err *err)
{
	EVP_PKEY *key = NULL;

	switch (type) {
	case KEY_EC_P256:
		key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
		break;
	case KEY_EC_P384:
		key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
		break;
	case KEY_RSA_3072:
		key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)3072);
		break;
	case KEY_ED25519:
		key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
		break;
	default:
		ac_err_set(err, AC_ERR_INVALID, "key_type_unknown", "unknown key type %d",
		           (int)type);
		return NULL;
	}
	if (key == NULL)
		ac_err_ssl(err, AC_ERR_CRYPTO, "keygen_failed", "generating a %s key failed",
		           key_type_name(type));
	return key;
}

/*
 * The digest that goes with a key when signing: SHA-384 for P-384 (matching strength),
 * SHA-512 for P-521, none for the EdDSA keys (they hash internally), SHA-256 otherwise.
 */
const EVP_MD *
key_sign_digest(const EVP_PKEY *key)
{
	if (EVP_PKEY_is_a(key, "ED25519") || EVP_PKEY_is_a(key, "ED448"))
		return NULL;
	if (EVP_PKEY_is_a(key, "EC")) {
		int bits = EVP_PKEY_get_bits(key);

		if (bits > 384)
			return EVP_sha512();
		if (bits > 256)
			return EVP_sha384();
	}
	return EVP_sha256();
}

/*
 * Hand the passphrase we were given to OpenSSL's PEM reader. Returning -1 when we have none
 * keeps OpenSSL from falling back to prompting on the terminal.
 */
static int
passphrase_cb(char *buf, int size, int rwflag, void *u)
{
	const char *pass = u;
	size_t n;

	(void)rwflag;
	if (pass == NULL)
		return -1;
	n = strlen(pass);
	if (size < 0 || n > (size_t)size)
		return -1;
	memcpy(buf, pass, n);
	return (int)n;
}

/*
 * Serialise key as PKCS#8 PEM into a memory BIO (encrypted when passphrase is non-NULL)
 * and write it atomically with mode 0600. The memory buffer is wiped before it is freed.
 */
static int
key_write(const char *path, EVP_PKEY *key, const char *passphrase, struct ac_err *err)
{
	const EVP_CIPHER *cipher = passphrase != NULL ? EVP_aes_256_cbc() : NULL;
	BIO *mem = NULL;
	char *data;
	long len;
	int rc = -1;

	if (passphrase != NULL && (*passphrase == '\0' || strlen(passphrase) > PASSPHRASE_MAX)) {
		ac_err_set(err, AC_ERR_INVALID, "passphrase_invalid",
		           "%s: the passphrase must be 1 to %d bytes", path, PASSPHRASE_MAX);
		goto out;
	}
	mem = BIO_new(BIO_s_mem());
	if (mem == NULL) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "out_of_memory", "%s: BIO_new failed", path);
		goto out;
	}
	if (!PEM_write_bio_PKCS8PrivateKey(mem, key, cipher, NULL, 0, passphrase_cb,
	                                   (void *)passphrase)) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "key_encode_failed", "%s: cannot encode the key",
		           path);
		goto out;
	}
	len = BIO_get_mem_data(mem, &data);
	if (len <= 0) {
		ac_err_set(err, AC_ERR_CRYPTO, "key_encode_failed", "%s: empty key encoding", path);
		goto out;
	}
	rc = atomic_write_file(path, data, (size_t)len, 0600, err);
	OPENSSL_cleanse(data, (size_t)len);
out:
	BIO_free(mem);
	return rc;
}

/* Write key as encrypted PKCS#8 PEM, mode 0600, atomically. */
int
key_write_encrypted(const char *path, EVP_PKEY *key, const char *passphrase, struct ac_err *err)
{
	if (passphrase == NULL)
		return ac_err_set(err, AC_ERR_INVALID, "passphrase_invalid",
		                  "%s: a passphrase is required to write an encrypted key", path);
	return key_write(path, key, passphrase, err);
}

/* Write key as plain PKCS#8 PEM, mode 0600: only for an agent's own leaf key. */
int
key_write_plain(const char *path, EVP_PKEY *key, struct ac_err *err)
{
	return key_write(path, key, NULL, err);
}

/* 1 when the PEM text holds an encrypted private key (PKCS#8 or legacy Proc-Type). */
static int
pem_is_encrypted(const char *data)
{
	return strstr(data, "-----BEGIN ENCRYPTED PRIVATE KEY-----") != NULL ||
	       strstr(data, "Proc-Type: 4,ENCRYPTED") != NULL;
}

/* 1 when the PEM text parses as an encrypted PKCS#8 structure (without decrypting it). */
static int
pem_is_pkcs8_structure(const char *data, size_t len)
{
	X509_SIG *p8 = NULL;
	BIO *mem;
	int ok = 0;

	mem = BIO_new_mem_buf(data, (int)len);
	if (mem != NULL)
		p8 = PEM_read_bio_PKCS8(mem, NULL, NULL, NULL);
	ok = p8 != NULL;
	X509_SIG_free(p8);
	BIO_free(mem);
	ERR_clear_error();
	return ok;
}

/*
 * Load a PEM private key. The file mode is checked first, so a key that others can read is
 * refused without being used. When decryption fails on a well-formed encrypted key, the
 * passphrase was wrong: that is AC_ERR_POLICY "bad_passphrase", naming the file only.
 */
EVP_PKEY *
key_load(const char *path, const char *passphrase, struct ac_err *err)
{
	EVP_PKEY *key = NULL;
	char *data = NULL;
	size_t len = 0;
	BIO *mem = NULL;

	if (check_private_file(path, err) != 0)
		goto out;
	if (read_file(path, KEY_FILE_MAX, &data, &len, err) != 0)
		goto out;
	mem = BIO_new_mem_buf(data, (int)len);
	if (mem == NULL) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "out_of_memory", "%s: BIO_new_mem_buf failed", path);
		goto out;
	}
	key = PEM_read_bio_PrivateKey(mem, NULL, passphrase_cb, (void *)passphrase);
	if (key != NULL) {
		ERR_clear_error();
		goto out;
	}
	if (pem_is_encrypted(data) && passphrase == NULL) {
		ERR_clear_error();
		ac_err_set(err, AC_ERR_POLICY, "passphrase_required",
		           "%s is encrypted and no passphrase was given", path);
	} else if (pem_is_encrypted(data) && pem_is_pkcs8_structure(data, len)) {
		ERR_clear_error();
		ac_err_set(err, AC_ERR_POLICY, "bad_passphrase",
		           "%s: the passphrase is wrong (the key does not decrypt with it)", path);
	} else {
		ac_err_ssl(err, AC_ERR_INVALID, "key_unreadable",
		           "%s: not a readable PEM private key", path);
	}
out:
	BIO_free(mem);
	if (data != NULL)
		OPENSSL_cleanse(data, len);
	free(data);
	return key;
}

/*
 * Read a passphrase file: it must be private (0600), hold no NUL byte, and be non-empty
 * once one trailing newline (LF, CR or CRLF) is removed.
 */
static int
passphrase_read_file(const char *path, char *out, size_t outlen, struct ac_err *err)
{
	char *data = NULL;
	size_t len = 0;
	int rc = -1;

	if (check_private_file(path, err) != 0)
		goto out;
	if (read_file(path, PASSPHRASE_MAX + 2, &data, &len, err) != 0) {
		if (err != NULL && err->reason != NULL &&
		    strcmp(err->reason, "file_too_large") == 0)
			ac_err_wrap(err, "passphrase file");
		goto out;
	}
	if (len > 0 && data[len - 1] == '\n')
		data[--len] = '\0';
	if (len > 0 && data[len - 1] == '\r')
		data[--len] = '\0';
	if (memchr(data, '\0', len) != NULL) {
		ac_err_set(err, AC_ERR_INVALID, "passphrase_invalid",
		           "%s: the passphrase contains a NUL byte", path);
		goto out;
	}
	if (len == 0) {
		ac_err_set(err, AC_ERR_INVALID, "passphrase_empty", "%s: the passphrase is empty",
		           path);
		goto out;
	}
	if (len > PASSPHRASE_MAX || len >= outlen) {
		ac_err_set(err, AC_ERR_INVALID, "passphrase_invalid",
		           "%s: the passphrase is longer than %d bytes", path, PASSPHRASE_MAX);
		goto out;
	}
	memcpy(out, data, len + 1);
	rc = 0;
out:
	if (data != NULL)
		OPENSSL_cleanse(data, len);
	free(data);
	return rc;
}

/*
 * Find the CA passphrase: an explicit file wins (and must exist), then $AGENTCA_PASSWORD,
 * then DIR/password. Every file used must be private.
 */
int
passphrase_resolve(const char *dir, const char *password_file, char *out, size_t len,
                   struct ac_err *err)
{
	char path[4096];
	const char *env;
	size_t n;

	if (out == NULL || len == 0)
		return ac_err_set(err, AC_ERR_INTERNAL, "bad_argument",
		                  "passphrase_resolve: no output buffer");
	out[0] = '\0';
	if (password_file != NULL)
		return passphrase_read_file(password_file, out, len, err);
	env = getenv("AGENTCA_PASSWORD");
	if (env != NULL) {
		n = strlen(env);
		if (n == 0)
			return ac_err_set(err, AC_ERR_INVALID, "passphrase_empty",
			                  "AGENTCA_PASSWORD is set but empty");
		if (n > PASSPHRASE_MAX || n >= len)
			return ac_err_set(err, AC_ERR_INVALID, "passphrase_invalid",
			                  "AGENTCA_PASSWORD is longer than %d bytes",
			                  PASSPHRASE_MAX);
		memcpy(out, env, n + 1);
		return 0;
	}
	if (dir != NULL) {
		if (path_join(path, sizeof(path), dir, "password", err) != 0)
			return -1;
		if (path_exists(path))
			return passphrase_read_file(path, out, len, err);
	}
	return ac_err_set(err, AC_ERR_NOTFOUND, "no_passphrase",
	                  "no CA passphrase: give --password-file FILE, set AGENTCA_PASSWORD, "
	                  "or put it in %s/password",
	                  dir != NULL ? dir : "DIR");
}

/*
 * Make a passphrase of 32 random bytes as unpadded base64url (43 characters) and write it,
 * followed by a newline, to path with mode 0600.
 */
int
passphrase_create(const char *path, char *out, size_t len, struct ac_err *err)
{
	unsigned char raw[PASSPHRASE_RANDOM_BYTES];
	char b64[4 * ((PASSPHRASE_RANDOM_BYTES + 2) / 3) + 2];
	int n, rc = -1;

	if (out == NULL || len < sizeof(b64)) {
		ac_err_set(err, AC_ERR_INTERNAL, "bad_argument",
		           "passphrase_create: output buffer too small");
		goto out;
	}
	if (RAND_bytes(raw, sizeof(raw)) != 1) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "rand_failed", "%s: RAND_bytes failed", path);
		goto out;
	}
	n = EVP_EncodeBlock((unsigned char *)b64, raw, sizeof(raw));
	while (n > 0 && b64[n - 1] == '=')
		n--;
	for (int i = 0; i < n; i++) {
		if (b64[i] == '+')
			b64[i] = '-';
		else if (b64[i] == '/')
			b64[i] = '_';
	}
	b64[n] = '\n';
	if (atomic_write_file(path, b64, (size_t)n + 1, 0600, err) != 0)
		goto out;
	memcpy(out, b64, (size_t)n);
	out[n] = '\0';
	rc = 0;
out:
	OPENSSL_cleanse(raw, sizeof(raw));
	OPENSSL_cleanse(b64, sizeof(b64));
	return rc;
}

/* Wipe a passphrase buffer so it does not linger in freed or stack memory. */
void
passphrase_wipe(char *buf, size_t len)
{
	if (buf != NULL && len > 0)
		OPENSSL_cleanse(buf, len);
}

/* SHA-256 for the SPKI hashes, fetched once (cert_spki_sha256 runs on every proxy
 * handshake). */
static EVP_MD *spki_md;
static pthread_once_t spki_md_once = PTHREAD_ONCE_INIT;

static void
spki_md_fetch(void)
{
	spki_md = EVP_MD_fetch(NULL, "SHA2-256", NULL);
}

/* Hex SHA-256 of DER bytes (a SubjectPublicKeyInfo) into out; frees der. */
static int
spki_der_sha256(unsigned char *der, int derlen, char out[65], struct ac_err *err)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	int rc = -1;

	pthread_once(&spki_md_once, spki_md_fetch);
	if (spki_md == NULL || !EVP_Digest(der, (size_t)derlen, md, &mdlen, spki_md, NULL) ||
	    mdlen != 32) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "digest_failed", "SHA-256 of the public key failed");
		goto out;
	}
	hex_encode(md, mdlen, out);
	rc = 0;
out:
	OPENSSL_free(der);
	return rc;
}

/* Hex SHA-256 of the DER SubjectPublicKeyInfo: the key's identifier in logs and store. */
int
key_spki_sha256(EVP_PKEY *key, char out[65], struct ac_err *err)
{
	unsigned char *der = NULL;
	int derlen;

	out[0] = '\0';
	derlen = i2d_PUBKEY(key, &der);
	if (derlen <= 0) {
		OPENSSL_free(der);
		return ac_err_ssl(err, AC_ERR_CRYPTO, "key_encode_failed",
		                  "cannot encode the public key");
	}
	return spki_der_sha256(der, derlen, out, err);
}

/* Hex SHA-256 of the certificate's SubjectPublicKeyInfo, as stored in the certificate. */
int
cert_spki_sha256(X509 *cert, char out[65], struct ac_err *err)
{
	unsigned char *der = NULL;
	int derlen;

	out[0] = '\0';
	derlen = cert == NULL ? 0 : i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
	if (derlen <= 0) {
		OPENSSL_free(der);
		return ac_err_ssl(err, AC_ERR_INVALID, "cert_bad_key",
		                  "cannot encode the certificate's public key");
	}
	return spki_der_sha256(der, derlen, out, err);
}

/* 1 when priv is the private half of the public key the certificate carries. */
int
key_matches_cert(EVP_PKEY *priv, X509 *cert)
{
	EVP_PKEY *pub;

	if (priv == NULL || cert == NULL)
		return 0;
	pub = X509_get0_pubkey(cert);
	if (pub == NULL) {
		ERR_clear_error();
		return 0;
	}
	return EVP_PKEY_eq(priv, pub) == 1;
}

int
key_write_public(const char *path, EVP_PKEY *key, struct ac_err *err)
{
	BIO *mem = NULL;
	char *data;
	long len;
	int rc = -1;

	mem = BIO_new(BIO_s_mem());
	if (mem == NULL || PEM_write_bio_PUBKEY(mem, key) != 1) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "pem_write_failed",
		           "%s: cannot encode the public key", path);
		goto out;
	}
	len = BIO_get_mem_data(mem, &data);
	if (len <= 0) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "pem_write_failed", "%s: empty public key PEM",
		           path);
		goto out;
	}
	rc = atomic_write_file(path, data, (size_t)len, 0644, err);
out:
	BIO_free(mem);
	return rc;
}

int
key_is_p256(const EVP_PKEY *key)
{
	char group[64];
	size_t len = 0;

	if (!EVP_PKEY_is_a(key, "EC"))
		return 0;
	if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
	                                   &len) != 1)
		return 0;
	return strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0;
}
