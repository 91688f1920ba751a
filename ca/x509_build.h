/*
 * x509_build.h - small helpers to assemble certificates and requests, shared by the
 * authority (root, intermediate, CSR) and the issuance engine (leaves).
 */
#ifndef AGENTCA_CA_X509_BUILD_H
#define AGENTCA_CA_X509_BUILD_H

#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "common/error.h"

/* Set a fresh serial: 128 random bits (16 bytes from RAND_bytes, top bit cleared so the
 * INTEGER stays positive and 16 bytes long, never zero). serial_hex gets lowercase hex as
 * the certificate shows it (at most 40 digits plus NUL). */
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
int64_t asn1_time_to_unix(const ASN1_TIME *t);

/* PEM of one certificate into a heap buffer (NUL-terminated); *len excludes the NUL. */
char *x509_to_pem(X509 *cert, size_t *len, struct ac_err *err);

/* Read every certificate in a PEM file (at most 1 MiB). Empty file: AC_ERR_INVALID. */
STACK_OF(X509) *x509_read_pem_file(const char *path, struct ac_err *err);

#endif
