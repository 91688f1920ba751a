/*
 * x509_build.h - small helpers to assemble certificates and requests, shared by the
 * authority (root, intermediate, CSR) and the issuance engine (leaves).
 */
#ifndef AGENTCA_CA_X509_BUILD_H
#define AGENTCA_CA_X509_BUILD_H

#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "ca/der.h"
#include "common/error.h"

#define X509_ALGID_MAX 128 /* a signature AlgorithmIdentifier, DER (RSA-PSS is the longest) */
#define X509_SIG_MAX 1024  /* a signature: RSA-8192 at most */
#define X509_SERIAL_BYTES 16

/* A signature in progress over a TBSCertificate the caller encodes (see x509_signer_begin). */
struct x509_signer {
	EVP_MD_CTX *ctx;                     /* ready to sign once */
	EVP_MD_CTX *owned;                   /* ctx, when it is not the thread's cached copy */
	unsigned char algid[X509_ALGID_MAX]; /* the AlgorithmIdentifier, DER, for the TBS too */
	size_t algid_len;
};

/* Set a fresh serial: 128 random bits (16 bytes from RAND_bytes, top bit cleared so the
 * INTEGER stays positive and 16 bytes long, never zero). serial_hex gets lowercase hex as
 * the certificate shows it (at most 40 digits plus NUL). */
/* 16 random bytes for a serial (positive, top byte non-zero) and their lowercase hex. */
int x509_random_serial(unsigned char serial[X509_SERIAL_BYTES], char serial_hex[41],
                       struct ac_err *err);

int x509_set_random_serial(X509 *cert, char serial_hex[41], struct ac_err *err);

/* notBefore/notAfter from unix seconds. */
int x509_set_validity(X509 *cert, int64_t not_before, int64_t not_after, struct ac_err *err);

/* Add an extension from its OpenSSL config text, e.g. (NID_basic_constraints,
 * "critical,CA:TRUE,pathlen:0"), (NID_subject_key_identifier, "hash"),
 * (NID_authority_key_identifier, "keyid:always"). issuer may equal cert (self-signed). */
int x509_add_ext_text(X509 *cert, X509 *issuer, int nid, const char *value, struct ac_err *err);

/* Subject/issuer name "CN=<cn>, O=<org>" (org may be NULL). */
X509_NAME *x509_name_make(const char *cn, const char *org, struct ac_err *err);

/* Sign with key and md (md NULL for Ed25519). */
int x509_sign(X509 *cert, EVP_PKEY *key, const EVP_MD *md, struct ac_err *err);

/* Unix seconds of an ASN1_TIME (notBefore/notAfter). */
/* Set up a signature by key (md NULL for Ed25519) from the thread's cached context; the
 * caller then encodes s->algid into its TBSCertificate. */
int x509_signer_begin(struct x509_signer *s, EVP_PKEY *key, const EVP_MD *md, struct ac_err *err);

/* Sign tbs and append the Certificate (tbs, algorithm, signature) to cert. Once per begin. */
int x509_signer_certificate(struct x509_signer *s, const unsigned char *tbs, size_t tbs_len,
                            struct der_buf *cert, struct ac_err *err);

void x509_signer_end(struct x509_signer *s);

int64_t asn1_time_to_unix(const ASN1_TIME *t);

/* PEM of one certificate into a heap buffer (NUL-terminated); *len excludes the NUL. */
char *x509_to_pem(X509 *cert, size_t *len, struct ac_err *err);

/* Read every certificate in a PEM file (at most 1 MiB). Empty file: AC_ERR_INVALID. */
STACK_OF(X509) *x509_read_pem_file(const char *path, struct ac_err *err);

#endif
