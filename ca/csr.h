/*
 * csr.h - reading a certificate signing request from outside, as hostile input.
 *
 * Accepts PEM ("CERTIFICATE REQUEST" or "NEW CERTIFICATE REQUEST") or DER, at most
 * CSR_MAX_BYTES. Checks the self-signature. Extracts the requested SANs from the
 * extensionRequest attribute without trusting their content: names keep their encoded
 * length, so a NUL inside a name is seen by policy rather than cut off by C strings.
 *
 * Reasons: csr_malformed (not a CSR, trailing garbage, too large), csr_bad_signature,
 * too_many_sans (more than CSR_MAX_SANS_PARSED).
 */
#ifndef AGENTCA_CA_CSR_H
#define AGENTCA_CA_CSR_H

#include <stddef.h>

#include <openssl/x509.h>

#include "common/error.h"

#define CSR_MAX_BYTES (64 * 1024)
#define CSR_MAX_SANS_PARSED 4096 /* beyond this the CSR is refused as too_many_sans */

enum csr_san_type { CSR_SAN_DNS, CSR_SAN_URI, CSR_SAN_IP, CSR_SAN_OTHER };

struct csr_san {
	enum csr_san_type type;
	unsigned char *value; /* heap copy, NUL-terminated for convenience, may contain NULs */
	size_t len;
};

struct csr {
	void *parsed;            /* private to csr.c: the decoded request */
	void *verifier;          /* private to csr.c: the reusable EC key key belongs to, if any */
	EVP_PKEY *key;           /* the requester's public key; owned by the csr (do not keep a
	                          * reference past csr_free: it may be reused for another request) */
	char spki_sha256[65];    /* hex SHA-256 of its SubjectPublicKeyInfo DER */
	unsigned char *spki_der; /* that SubjectPublicKeyInfo, DER: what the leaf carries */
	size_t spki_der_len;
	struct csr_san *sans;
	size_t san_count;
};

/* Parse and verify. On success *out is owned by the caller (csr_free). */
int csr_parse(const unsigned char *data, size_t len, struct csr **out, struct ac_err *err);
void csr_free(struct csr *csr);

/* The key and subjectAltNames of a certificate (DER) we issued, as if requested again: for a
 * renewal over mTLS that keeps the key. No signature is checked (none exists). */
int csr_from_certificate(const unsigned char *der, size_t len, struct csr **out,
                         struct ac_err *err);

/* Put the request's SubjectPublicKeyInfo into cert exactly as the request carried it (no
 * round trip through an EVP_PKEY, which OpenSSL 3.0 makes slow). */
int csr_copy_pubkey(const struct csr *csr, X509 *cert, struct ac_err *err);

#endif
