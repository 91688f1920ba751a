/*
 * audit_keys.h - the audit key and the signed tree heads (STH) it signs.
 *
 * The audit key is an ECDSA P-256 key made at init: DIR/audit.key, encrypted PKCS#8 under the
 * CA passphrase (0600) like the other CA keys, and DIR/audit.pub (0644), the PEM public key
 * an auditor is given once and verifies exports with. audit_keys_ensure() makes the pair when
 * missing (init calls it; so do the audit commands for a CA made before the key existed).
 *
 * A signed tree head states the size and root of the log's Merkle tree (store/merkle.h) at a
 * time, as JSON:
 *
 *   {"tree_size":N,"root_hash":"<64 hex>","timestamp":<unix ms>,"signature":"<base64>"}
 *
 * The signature is ECDSA with SHA-256, DER-encoded, then standard base64 (with padding),
 * over the signed bytes: the other three fields as compact JSON with keys sorted,
 *
 *   {"root_hash":"<64 lowercase hex>","timestamp":<ms>,"tree_size":<N>}
 *
 * so that anyone can check it with stock tools:
 *
 *   jq -jcS '{root_hash,timestamp,tree_size}' sth.json > signed
 *   jq -r .signature sth.json | base64 -d > sig
 *   openssl dgst -sha256 -verify audit.pub -signature sig signed
 */
#ifndef AGENTCA_CA_AUDIT_KEYS_H
#define AGENTCA_CA_AUDIT_KEYS_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "common/error.h"
#include "store/merkle.h"

#define AUDIT_KEY_FILE "audit.key"
#define AUDIT_PUB_FILE "audit.pub"
/* A DER ECDSA P-256 signature is at most 72 bytes. */
#define STH_SIG_MAX 80

struct sth {
	uint64_t tree_size;
	unsigned char root[MERKLE_HASH_LEN];
	int64_t timestamp_ms;
	unsigned char sig[STH_SIG_MAX];
	size_t sig_len; /* 0: not signed */
};

/* Make DIR/audit.key (encrypted, 0600) and DIR/audit.pub (0644) when missing; a key whose
 * public file is missing gets it back. */
int audit_keys_ensure(const char *dir, const char *passphrase, struct ac_err *err);

/* Load the audit private key from DIR, decrypting with passphrase; refuses a key that is
 * not P-256. */
EVP_PKEY *audit_key_load(const char *dir, const char *passphrase, struct ac_err *err);

/* Load a PEM public key an auditor was given (audit.pub); refuses one that is not P-256. */
EVP_PKEY *audit_pub_load(const char *path, struct ac_err *err);

/* The bytes the signature covers (see above). *out is heap (free()). */
int sth_signed_bytes(const struct sth *sth, char **out, size_t *len, struct ac_err *err);

/* Sign sth's tree_size, root and timestamp_ms with key, filling sig and sig_len. */
int sth_sign(EVP_PKEY *key, struct sth *sth, struct ac_err *err);

/* Check sth's signature with the public key: AC_ERR_POLICY "sth_bad_signature" when it
 * does not verify (or is missing). `what` names the tree head in messages. */
int sth_verify(EVP_PKEY *pub, const struct sth *sth, const char *what, struct ac_err *err);

/* The JSON object above (new reference), or NULL when out of memory. */
json_t *sth_to_json(const struct sth *sth);

/* Parse the JSON object above; AC_ERR_INVALID "sth_malformed" naming `what`. Extra members
 * are ignored. */
int sth_from_json(const json_t *obj, const char *what, struct sth *out, struct ac_err *err);

/* Read a file holding one STH object (as `agentca audit sth` prints it). */
int sth_read_file(const char *path, struct sth *out, struct ac_err *err);

#endif
