/*
 * csr.h - reading a certificate signing request from outside, as hostile input.
 *
 * Accepts PEM ("CERTIFICATE REQUEST" or "NEW CERTIFICATE REQUEST") or DER, at most
 * CSR_MAX_BYTES. Checks the self-signature. Extracts the requested SANs from the
 * extensionRequest attribute without trusting their content: names keep their encoded
 * length, so a NUL inside a name is seen by policy rather than cut off by C strings.
 *
 * Reasons: csr_malformed (not a CSR, trailing garbage, too large), csr_bad_signature.
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
	X509_REQ *req;
	EVP_PKEY *key;           /* borrowed from req (X509_REQ_get0_pubkey) */
	struct csr_san *sans;
	size_t san_count;
};

/* Parse and verify. On success *out is owned by the caller (csr_free). */
int csr_parse(const unsigned char *data, size_t len, struct csr **out, struct ac_err *err);
void csr_free(struct csr *csr);

#endif
