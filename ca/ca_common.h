/*
 * ca_common.h - private to the authority (ca_init.c, ca_import.c, ca_trust.c, ca_load.c,
 * ca_show.c): the names of the files under DIR, what ca.json holds, and the certificate
 * checks those files share. Nothing outside ca/ca_*.c includes this header; the public
 * contract is ca/authority.h.
 */
#ifndef AGENTCA_CA_CA_COMMON_H
#define AGENTCA_CA_CA_COMMON_H

#include <stdint.h>

#include <openssl/x509.h>

#include "common/config.h"
#include "common/error.h"

/* Files under DIR; authority.h describes each. */
#define CA_FILE_META "ca.json"
#define CA_FILE_CONFIG "config.json"
#define CA_FILE_ROOT_CERT "root.pem"
#define CA_FILE_ROOT_KEY "root.key"
#define CA_FILE_INT_CERT "intermediate.pem"
#define CA_FILE_INT_KEY "intermediate.key"
#define CA_FILE_INT_CSR "intermediate.csr"
#define CA_FILE_UPSTREAM "upstream.pem"
#define CA_FILE_TRUST "trust.pem"
#define CA_FILE_PASSWORD "password"

#define CA_MODE_ROOT "root"
#define CA_MODE_CORPORATE "corporate"
#define CA_STATE_ACTIVE "active"
#define CA_STATE_AWAITING_IMPORT "awaiting_import"

#define CA_PATH_MAX 4096

/* What ca.json says this CA is. Strings are heap copies; ca_meta_free() releases them. */
struct ca_meta {
	char *name;
	char *trust_domain;
	char *key_type;                  /* key_type_name() */
	char *mode;                      /* CA_MODE_ROOT or CA_MODE_CORPORATE */
	char *state;                     /* CA_STATE_ACTIVE or CA_STATE_AWAITING_IMPORT */
	char *created;                   /* RFC 3339 */
	int offline_root;                /* the root key was written outside DIR */
	struct cfg_strlist dns_suffixes; /* as put in the name constraints */
	struct cfg_strlist ip_ranges;    /* CIDR, as put in the name constraints */
};

/* Read DIR/ca.json. A missing file is AC_ERR_NOTFOUND "no_ca"; a missing name, trust
 * domain, mode or state is AC_ERR_INVALID "ca_meta_invalid". */
int ca_meta_load(const char *dir, struct ca_meta *meta, struct ac_err *err);

/* Write DIR/ca.json atomically (0644), pretty-printed. */
int ca_meta_write(const char *dir, const struct ca_meta *meta, struct ac_err *err);

void ca_meta_free(struct ca_meta *meta);

/* DIR/name into buf (CA_PATH_MAX bytes). */
int ca_path(char *buf, const char *dir, const char *name, struct ac_err *err);

/* 1 when cert says basicConstraints CA:TRUE and has a keyUsage with keyCertSign. */
int ca_cert_is_ca(X509 *cert);

/* The validity of cert covers now: otherwise AC_ERR_POLICY "not_yet_valid" or "expired",
 * with a message naming `what` (a file name) and the date. */
int ca_cert_check_time(X509 *cert, const char *what, int64_t now, struct ac_err *err);

/* Certificates in an optional PEM file: a missing or blank file gives an empty stack. */
STACK_OF(X509) *ca_read_certs_optional(const char *path, struct ac_err *err);

/* Write first (may be NULL) followed by every certificate in more (may be NULL) as PEM,
 * atomically with mode 0644. Writes an empty file when there is nothing. */
int ca_write_certs(const char *path, X509 *first, STACK_OF(X509) *more, struct ac_err *err);

/* Verify cert up to one of the self-signed certificates in trusted, through untrusted
 * (may be NULL). On failure AC_ERR_POLICY "chain_invalid" with OpenSSL's reason, the
 * message prefixed with `what`. On success *chain (if chain is non-NULL) gets the verified
 * chain, cert first and the trust anchor last. */
int ca_verify_chain(X509 *cert, STACK_OF(X509) *trusted, STACK_OF(X509) *untrusted,
                    const char *what, STACK_OF(X509) **chain, struct ac_err *err);

#endif
