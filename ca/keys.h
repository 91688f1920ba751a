/*
 * keys.h - private keys: generation, encrypted storage at rest, and the CA passphrase.
 *
 * Every CA private key on disk is PKCS#8, encrypted with AES-256-CBC under a key derived
 * from the passphrase (PBKDF2-HMAC-SHA256 via OpenSSL's PKCS#8 PEM writer), and the file is
 * created 0600. Loading refuses a key file that group or others can read, before decrypting.
 *
 * The passphrase comes from, in order: --password-file FILE, the AGENTCA_PASSWORD
 * environment variable, or DIR/password (written 0600 by `init` when neither was given).
 * It is never logged and never put in an error message.
 */
#ifndef AGENTCA_CA_KEYS_H
#define AGENTCA_CA_KEYS_H

#include <stddef.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "common/error.h"

enum key_type { KEY_EC_P256 = 0, KEY_EC_P384, KEY_RSA_3072, KEY_ED25519 };

/* "p256", "p384", "rsa3072", "ed25519" <-> enum. Parse returns -1 for anything else. */
int key_type_parse(const char *name, enum key_type *out);
const char *key_type_name(enum key_type type);

/* Generate a new key. */
EVP_PKEY *key_generate(enum key_type type, struct ac_err *err);

/* The digest to sign with this key: SHA-256, SHA-384 for P-384, NULL for Ed25519
 * (which signs without a separate digest). Never NULL-on-error: the type is known. */
const EVP_MD *key_sign_digest(const EVP_PKEY *key);

/* Write key as encrypted PKCS#8 PEM (mode 0600, atomically). */
int key_write_encrypted(const char *path, EVP_PKEY *key, const char *passphrase,
                        struct ac_err *err);

/* Write key as unencrypted PKCS#8 PEM (mode 0600): only for agents' own leaf keys. */
int key_write_plain(const char *path, EVP_PKEY *key, struct ac_err *err);

/* Write the public half of key as a PEM SubjectPublicKeyInfo (mode 0644, atomically). */
int key_write_public(const char *path, EVP_PKEY *key, struct ac_err *err);

/* 1 when key is an EC key on P-256 (what every agentca signing key for tokens and tree heads
 * is), else 0. */
int key_is_p256(const EVP_PKEY *key);

/* Load a PEM private key: refuses a file readable by others; decrypts with passphrase
 * (may be NULL for an unencrypted key). A wrong passphrase is AC_ERR_POLICY
 * "bad_passphrase" and names the file. */
EVP_PKEY *key_load(const char *path, const char *passphrase, struct ac_err *err);

/* Maximum passphrase length accepted. */
#define PASSPHRASE_MAX 1024

/* Resolve the passphrase: password_file (may be NULL), then $AGENTCA_PASSWORD, then
 * DIR/password. out gets a NUL-terminated copy (trailing newline removed). AC_ERR_NOTFOUND
 * "no_passphrase" when none of them is there. */
int passphrase_resolve(const char *dir, const char *password_file, char *out, size_t len,
                       struct ac_err *err);

/* Make a random passphrase (32 bytes, base64url) and write it to path with mode 0600. */
int passphrase_create(const char *path, char *out, size_t len, struct ac_err *err);

/* Wipe a passphrase buffer (OPENSSL_cleanse). */
void passphrase_wipe(char *buf, size_t len);

/* Hex SHA-256 of the key's SubjectPublicKeyInfo DER. */
int key_spki_sha256(EVP_PKEY *key, char out[65], struct ac_err *err);

/* The same for a certificate's key, hashed from the certificate's own SubjectPublicKeyInfo
 * bytes (what the CA hashed from the request, whose SPKI the leaf copies): no key encoder
 * runs (OpenSSL 3.0's i2d_PUBKEY builds one per call, 7% of the proxy's instructions per
 * handshake). Equals key_spki_sha256 of the certificate's key when that key encodes back
 * to the same bytes (test_keys: P-256, P-384, Ed25519, RSA). */
int cert_spki_sha256(X509 *cert, char out[65], struct ac_err *err);

/* 1 when priv is the private half of the public key in cert, else 0. */
int key_matches_cert(EVP_PKEY *priv, X509 *cert);

#endif
