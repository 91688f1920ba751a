/*
 * material.c - reading the proxy's certificate material from its directory. See material.h.
 */
#include "gateway-hook/material.h"

#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

#include "ca/keys.h"
#include "ca/x509_build.h"
#include "common/fsutil.h"
#include "common/hex.h"
#include "enrollment/tls.h"

#define BUNDLE_FILE_MAX (1024 * 1024)

int
proxy_files_load(const char *dir, struct proxy_files *f, struct ac_err *err)
{
	char path[4096];
	STACK_OF(X509) *leaf = NULL;
	struct tls_peer peer;
	unsigned char digest[32];
	char *bundle_bytes = NULL;
	size_t bundle_len = 0;
	int rc = -1;

	memset(f, 0, sizeof(*f));
	if (path_join(path, sizeof(path), dir, "cert.pem", err) != 0 ||
	    (leaf = x509_read_pem_file(path, err)) == NULL)
		goto out;
	f->m.cert = sk_X509_shift(leaf);
	if (path_join(path, sizeof(path), dir, "chain.pem", err) != 0)
		goto out;
	f->m.chain = path_exists(path) ? x509_read_pem_file(path, err) : sk_X509_new_null();
	if (f->m.chain == NULL)
		goto out;
	if (path_join(path, sizeof(path), dir, "key.pem", err) != 0 ||
	    (f->m.key = key_load(path, NULL, err)) == NULL)
		goto out;
	if (!key_matches_cert(f->m.key, f->m.cert)) {
		ac_err_set(err, AC_ERR_INVALID, "key_mismatch",
		           "%s: key.pem does not match cert.pem", dir);
		goto out;
	}
	if (path_join(path, sizeof(path), dir, "bundle.pem", err) != 0 ||
	    read_file(path, BUNDLE_FILE_MAX, &bundle_bytes, &bundle_len, err) != 0 ||
	    (f->m.bundle = x509_read_pem_file(path, err)) == NULL)
		goto out;
	if (EVP_Digest(bundle_bytes, bundle_len, digest, NULL, EVP_sha256(), NULL) != 1) {
		ac_err_set(err, AC_ERR_CRYPTO, "digest_failed", "cannot hash %s", path);
		goto out;
	}
	hex_encode(digest, sizeof(digest), f->bundle_digest);
	if (tls_peer_from_cert(f->m.cert, &peer, err) != 0)
		goto out;
	memcpy(f->cert_serial, peer.serial, sizeof(f->cert_serial));
	rc = 0;
out:
	free(bundle_bytes);
	sk_X509_pop_free(leaf, X509_free);
	if (rc != 0)
		proxy_files_free(f);
	return rc;
}

void
proxy_files_free(struct proxy_files *f)
{
	X509_free(f->m.cert);
	sk_X509_pop_free(f->m.chain, X509_free);
	EVP_PKEY_free(f->m.key);
	sk_X509_pop_free(f->m.bundle, X509_free);
	memset(f, 0, sizeof(*f));
}
