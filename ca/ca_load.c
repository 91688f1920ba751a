/*
 * ca_load.c - load the authority from DIR for signing, once, at start-up.
 *
 * The order of checks is the point of this file: refuse key files that others can read
 * before decrypting anything; then load the certificates; then decrypt the intermediate
 * key, and check that it is the key of the intermediate certificate, that the certificate
 * is valid now and that it chains to the root. Only an authority that passed all of these
 * is returned, with everything issuance needs (chain PEM, fingerprints, digest) prepared.
 */
#include "ca/authority.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "ca/ca_common.h"
#include "ca/rotate.h"
#include "ca/x509_build.h"
#include "common/fsutil.h"
#include "common/hex.h"
#include "common/timefmt.h"

/* Hex SHA-256 of the certificate's DER encoding: the fingerprint users compare. */
int
cert_fingerprint(X509 *cert, char out[65], struct ac_err *err)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len = 0;

	out[0] = '\0';
	if (!X509_digest(cert, EVP_sha256(), md, &len) || len != 32)
		return ac_err_ssl(err, AC_ERR_CRYPTO, "digest_failed",
		                  "SHA-256 of the certificate failed");
	hex_encode(md, len, out);
	return 0;
}

/* The first certificate of a PEM file (a reference the caller frees). */
static X509 *
load_first_cert(const char *path, struct ac_err *err)
{
	STACK_OF(X509) *certs;
	X509 *cert = NULL;

	certs = x509_read_pem_file(path, err);
	if (certs != NULL) {
		cert = sk_X509_value(certs, 0);
		X509_up_ref(cert);
	}
	sk_X509_pop_free(certs, X509_free);
	return cert;
}

/* intermediate then upstream as one PEM buffer, for issuance responses. */
static int
build_chain_pem(struct ca_authority *ca, struct ac_err *err)
{
	BIO *mem = NULL;
	char *data;
	long len;
	int rc = -1;

	mem = BIO_new(BIO_s_mem());
	if (mem == NULL || !PEM_write_bio_X509(mem, ca->intermediate)) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "cert_encode_failed", "cannot encode the chain");
		goto out;
	}
	for (int i = 0; i < sk_X509_num(ca->upstream); i++) {
		if (!PEM_write_bio_X509(mem, sk_X509_value(ca->upstream, i))) {
			ac_err_ssl(err, AC_ERR_CRYPTO, "cert_encode_failed",
			           "cannot encode the chain");
			goto out;
		}
	}
	len = BIO_get_mem_data(mem, &data);
	ca->chain_pem = malloc((size_t)len + 1);
	if (ca->chain_pem == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto out;
	}
	memcpy(ca->chain_pem, data, (size_t)len);
	ca->chain_pem[len] = '\0';
	ca->chain_pem_len = (size_t)len;
	rc = 0;
out:
	BIO_free(mem);
	return rc;
}

/* strdup that reports failure through err. */
static char *
dup_or_fail(const char *s, struct ac_err *err)
{
	char *copy = strdup(s);

	if (copy == NULL)
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
	return copy;
}

/* Load DIR for signing; see the comment at the top of the file for the order of checks. */
struct ca_authority *
ca_authority_load(const char *dir, const char *password_file, struct ac_err *err)
{
	char passphrase[PASSPHRASE_MAX + 1] = "";
	char key_path[CA_PATH_MAX], path[CA_PATH_MAX];
	struct ca_authority *ca = NULL;
	STACK_OF(X509) *anchors = NULL;
	struct ca_meta meta;
	int ok = 0;

	if (ca_meta_load(dir, &meta, err) != 0 || rotation_repair_files(dir, err) != 0)
		goto out;
	if (strcmp(meta.state, CA_STATE_AWAITING_IMPORT) == 0) {
		ac_err_set(err, AC_ERR_CONFLICT, "awaiting_import",
		           "%s has an intermediate CSR but no certificate yet; run agentca ca "
		           "import first",
		           dir);
		goto out;
	}

	/* Exposed keys first: refuse before decrypting or even reading them. */
	if (ca_path(key_path, dir, CA_FILE_INT_KEY, err) != 0 ||
	    check_private_file(key_path, err) != 0)
		goto out;
	if (ca_path(path, dir, CA_FILE_ROOT_KEY, err) != 0)
		goto out;
	if (path_exists(path) && check_private_file(path, err) != 0)
		goto out;

	ca = calloc(1, sizeof(*ca));
	if (ca == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto out;
	}
	if ((ca->dir = dup_or_fail(dir, err)) == NULL ||
	    (ca->name = dup_or_fail(meta.name, err)) == NULL ||
	    (ca->trust_domain = dup_or_fail(meta.trust_domain, err)) == NULL ||
	    (ca->mode = dup_or_fail(meta.mode, err)) == NULL)
		goto out;

	if (ca_path(path, dir, CA_FILE_ROOT_CERT, err) != 0 ||
	    (ca->root = load_first_cert(path, err)) == NULL)
		goto out;
	if (ca_path(path, dir, CA_FILE_INT_CERT, err) != 0 ||
	    (ca->intermediate = load_first_cert(path, err)) == NULL)
		goto out;
	if (ca_path(path, dir, CA_FILE_UPSTREAM, err) != 0 ||
	    (ca->upstream = ca_read_certs_optional(path, err)) == NULL)
		goto out;
	if (ca_path(path, dir, CA_FILE_TRUST, err) != 0 ||
	    (ca->trust_extra = ca_read_certs_optional(path, err)) == NULL)
		goto out;
	if (ca_path(path, dir, CA_FILE_NEXT_CERT, err) != 0 ||
	    (ca->rotating = ca_read_certs_optional(path, err)) == NULL)
		goto out;
	{
		STACK_OF(X509) *prev;

		if (ca_path(path, dir, CA_FILE_PREV_CERT, err) != 0 ||
		    (prev = ca_read_certs_optional(path, err)) == NULL)
			goto out;
		while (sk_X509_num(prev) > 0) {
			X509 *c = sk_X509_shift(prev);

			if (!sk_X509_push(ca->rotating, c)) {
				X509_free(c);
				sk_X509_pop_free(prev, X509_free);
				ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
				goto out;
			}
		}
		sk_X509_free(prev);
	}

	if (passphrase_resolve(dir, password_file, passphrase, sizeof(passphrase), err) != 0)
		goto out;
	if ((ca->intermediate_key = key_load(key_path, passphrase, err)) == NULL)
		goto out;
	if (!key_matches_cert(ca->intermediate_key, ca->intermediate)) {
		ac_err_set(err, AC_ERR_POLICY, "key_mismatch",
		           "%s does not match the certificate in %s/%s", key_path, dir,
		           CA_FILE_INT_CERT);
		goto out;
	}
	if (ca_path(path, dir, CA_FILE_INT_CERT, err) != 0 ||
	    ca_cert_check_time(ca->intermediate, path, time_now(), err) != 0)
		goto out;
	if ((anchors = sk_X509_new_null()) == NULL || !sk_X509_push(anchors, ca->root)) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto out;
	}
	if (ca_verify_chain(ca->intermediate, anchors, ca->upstream, path, NULL, err) != 0)
		goto out;

	if (build_chain_pem(ca, err) != 0 ||
	    cert_fingerprint(ca->intermediate, ca->intermediate_fingerprint, err) != 0 ||
	    cert_fingerprint(ca->root, ca->root_fingerprint, err) != 0)
		goto out;
	ca->sign_md = key_sign_digest(ca->intermediate_key);
	ca->intermediate_not_after = asn1_time_to_unix(X509_get0_notAfter(ca->intermediate));
	ok = 1;
out:
	sk_X509_free(anchors);
	passphrase_wipe(passphrase, sizeof(passphrase));
	ca_meta_free(&meta);
	if (!ok) {
		ca_authority_free(ca);
		ca = NULL;
	}
	return ca;
}

/* Free everything the authority holds; NULL is fine. */
void
ca_authority_free(struct ca_authority *ca)
{
	if (ca == NULL)
		return;
	free(ca->chain_pem);
	sk_X509_pop_free(ca->trust_extra, X509_free);
	sk_X509_pop_free(ca->rotating, X509_free);
	sk_X509_pop_free(ca->upstream, X509_free);
	EVP_PKEY_free(ca->intermediate_key);
	X509_free(ca->intermediate);
	X509_free(ca->root);
	free(ca->mode);
	free(ca->trust_domain);
	free(ca->name);
	free(ca->dir);
	free(ca);
}

int
ca_authority_write_chain(const struct ca_authority *ca, const char *issuer_fingerprint, BIO *bio)
{
	if (issuer_fingerprint != NULL &&
	    strcmp(issuer_fingerprint, ca->intermediate_fingerprint) != 0) {
		for (int i = 0; i < sk_X509_num(ca->rotating); i++) {
			X509 *other = sk_X509_value(ca->rotating, i);
			char fingerprint[65];
			struct ac_err err;

			ac_err_clear(&err);
			if (cert_fingerprint(other, fingerprint, &err) != 0 ||
			    strcmp(fingerprint, issuer_fingerprint) != 0)
				continue;
			if (PEM_write_bio_X509(bio, other) != 1)
				return -1;
			for (int j = 0; j < sk_X509_num(ca->upstream); j++)
				if (PEM_write_bio_X509(bio, sk_X509_value(ca->upstream, j)) != 1)
					return -1;
			return 0;
		}
	}
	return BIO_write(bio, ca->chain_pem, (int)ca->chain_pem_len) == (int)ca->chain_pem_len ? 0
	                                                                                       : -1;
}
