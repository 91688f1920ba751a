/*
 * authority.h - the CA's own certificates and keys, on disk under DIR and in memory.
 *
 * Files under DIR (all written atomically; keys 0600 and encrypted):
 *
 *   ca.json            what this CA is: name, trust domain, key type, mode, name constraints
 *   config.json        the operator's settings (policy, store, ...), written with defaults
 *   root.pem           the trust anchor: our self-signed root, or the imported corporate root
 *   root.key           our root's key (absent with --offline-root and in corporate mode)
 *   intermediate.pem   the online issuing CA certificate
 *   intermediate.key   its key
 *   intermediate.csr   in corporate mode, until `ca import` installs the signed certificate
 *   upstream.pem       certificates between the intermediate and the corporate root, if any
 *   trust.pem          extra roots added with `trust add` (bundle only, never a signer)
 *   password           the generated passphrase, when none was supplied (0600)
 *   agentca.db         the store (store/)
 *   agentca-acme.db    the ACME server's accounts, orders and authorizations (store/store_acme.c)
 *
 * Two modes: "root" (we made the root and signed the intermediate) and "corporate" (the
 * intermediate was signed by a corporate root that we only hold the certificate of).
 */
#ifndef AGENTCA_CA_AUTHORITY_H
#define AGENTCA_CA_AUTHORITY_H

#include <stdint.h>
#include <stdio.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "ca/keys.h"
#include "common/config.h"
#include "common/error.h"

/* What `init` needs to know. */
struct ca_init_options {
	const char *dir;
	const char *name;                       /* CA name: goes into the subjects' CN and O */
	const char *trust_domain;               /* e.g. "corp.internal" */
	enum key_type key_type;                 /* root and intermediate; default KEY_EC_P256 */
	const char *password_file;              /* NULL: env or generated */
	const char *offline_root_path;          /* non-NULL: write the root key here, not in DIR */
	const struct cfg_strlist *dns_suffixes; /* name constraints; empty: trust domain only */
	const struct cfg_strlist *ip_ranges;    /* CIDR; name constraints for IP SANs */
	int64_t root_ttl;                       /* seconds; default 10 years */
	int64_t intermediate_ttl;               /* seconds; default 1 year */
	int csr_only; /* corporate mode: write intermediate key + CSR only */
};

void ca_init_options_defaults(struct ca_init_options *opts);

/* What `init` did, for the CLI to say it. */
struct ca_init_report {
	char root_fingerprint[65];  /* empty in csr_only mode */
	char passphrase_file[4096]; /* non-empty when a passphrase was generated */
	char csr_path[4096];        /* non-empty in csr_only mode */
};

/* Create a new CA in opts->dir (which must not already hold one). */
int ca_init(const struct ca_init_options *opts, struct ca_init_report *report, struct ac_err *err);

/* Install a corporate-signed intermediate. key_path NULL: the key made by `init --csr`.
 * Checks, each failure one clear message with its own reason: the key matches the cert;
 * the cert is a CA (basicConstraints CA:TRUE, keyCertSign); the chain verifies to the
 * self-signed root in chain_path; the validity covers now. */
int ca_import(const char *dir, const char *cert_path, const char *chain_path, const char *key_path,
              const char *password_file, struct ac_err *err);

/* Add the root certificate(s) in pem_path to DIR/trust.pem. Each must be a self-signed CA
 * certificate valid now; duplicates are skipped. *added gets how many were new. */
int ca_trust_add(const char *dir, const char *pem_path, int *added, struct ac_err *err);

/* The loaded, ready-to-sign authority. Everything here is created once at load and reused
 * for every issuance. */
struct ca_authority {
	char *dir;
	char *name;
	char *trust_domain;
	char *mode;         /* "root" or "corporate" */
	X509 *root;         /* trust anchor */
	X509 *intermediate; /* the signer */
	EVP_PKEY *intermediate_key;
	const EVP_MD *sign_md;       /* NULL for Ed25519 */
	STACK_OF(X509) *upstream;    /* between intermediate and root; may be empty */
	STACK_OF(X509) *trust_extra; /* from trust.pem; may be empty */
	/* During a rotation (ca/rotate.h): the next and the retiring intermediates, which sign
	 * nothing here but whose leaves peers present; may be empty. */
	STACK_OF(X509) *rotating;
	char intermediate_fingerprint[65];
	char root_fingerprint[65];
	unsigned char *chain_pem; /* intermediate + upstream, PEM, for responses */
	size_t chain_pem_len;
	int64_t intermediate_not_after; /* unix seconds: leaves never outlive it */
};

/* Load DIR for signing: refuses key files readable by others, decrypts the intermediate
 * key, checks that it matches the certificate and that the certificate is valid now.
 * Finishes an intermediate activation that was interrupted (rotation_repair_files) first. */
struct ca_authority *ca_authority_load(const char *dir, const char *password_file,
                                       struct ac_err *err);
void ca_authority_free(struct ca_authority *ca);

/* Print chain, SHA-256 fingerprints, validity, key states and name constraints. Needs no
 * passphrase. */
int ca_show(const char *dir, FILE *out, struct ac_err *err);

/* Append to bio the chain above a leaf signed by the intermediate whose fingerprint (hex
 * SHA-256, as in its certificate row) is given: the current signer's ready-made chain_pem,
 * or during a rotation the retiring or next intermediate from `rotating` followed by the
 * upstream certificates, so that a leaf fetched after the switch still verifies. NULL or an
 * intermediate no longer known gets chain_pem. */
int ca_authority_write_chain(const struct ca_authority *ca, const char *issuer_fingerprint,
                             BIO *bio);

/* Hex SHA-256 of a certificate's DER. */
int cert_fingerprint(X509 *cert, char out[65], struct ac_err *err);

#endif
