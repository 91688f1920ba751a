/*
 * ca_import.c - `agentca ca import`: install an intermediate certificate that a corporate
 * CA signed for the key `init --csr` made (or for a key the operator brings).
 *
 * Nothing is written until every check has passed, and each check fails with its own
 * reason and one line that names what is wrong:
 *
 *   cert_unreadable   the certificate file does not hold a PEM certificate
 *   chain_unreadable  the chain file does not hold PEM certificates
 *   key_mismatch      the key is not the certificate's key
 *   not_a_ca          no basicConstraints CA:TRUE, or no keyUsage keyCertSign
 *   not_yet_valid     the validity does not cover now (checked before the chain, so the
 *   expired           message says what is wrong rather than "chain does not verify")
 *   chain_invalid     X509_verify_cert fails against the self-signed root(s) of the chain
 *
 * Then intermediate.pem, upstream.pem (what lies between, maybe nothing), root.pem (the
 * corporate root) and, with --key, intermediate.key (re-encrypted under the CA passphrase)
 * are written, and ca.json's state becomes "active".
 *
 * During an intermediate rotation (ca/rotate.h) with an offline or corporate root, the
 * rotation writes DIR/next-intermediate.key and .csr and waits: then import installs the
 * signed certificate as DIR/next-intermediate.pem instead (same checks, the key being the
 * next one, and the chain must end at the CA's current root), removes the CSR, and leaves
 * the active intermediate alone; the rotation records it as prepared on its next step.
 */
#include "ca/authority.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "ca/ca_common.h"
#include "ca/rotate.h"
#include "ca/x509_build.h"
#include "common/fsutil.h"
#include "common/timefmt.h"

/* Read a PEM file, giving a failure the caller's reason (cert_unreadable, ...). */
static STACK_OF(X509) *
read_certs_as(const char *path, const char *reason, struct ac_err *err)
{
	struct ac_err local;
	STACK_OF(X509) *certs;

	ac_err_clear(&local);
	certs = x509_read_pem_file(path, &local);
	if (certs == NULL)
		ac_err_set(err, local.code == AC_ERR_NOTFOUND ? AC_ERR_NOTFOUND : AC_ERR_INVALID,
		           reason, "%s", local.msg);
	return certs;
}

/*
 * Sort the chain file: self-signed certificates (signature checked) become trust anchors,
 * the rest untrusted intermediates. extra holds certificates that followed the
 * intermediate in its own file; they are untrusted too.
 */
static int
split_chain(STACK_OF(X509) *chain, STACK_OF(X509) *extra, STACK_OF(X509) *anchors,
            STACK_OF(X509) *untrusted, struct ac_err *err)
{
	for (int i = 0; i < sk_X509_num(chain); i++) {
		X509 *c = sk_X509_value(chain, i);
		int ok = X509_self_signed(c, 1) == 1 ? sk_X509_push(anchors, c)
		                                     : sk_X509_push(untrusted, c);

		ERR_clear_error();
		if (!ok)
			return ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
	}
	for (int i = 1; i < sk_X509_num(extra); i++)
		if (!sk_X509_push(untrusted, sk_X509_value(extra, i)))
			return ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
	return 0;
}

/* 1 when the two stacks hold the same certificates in the same order. */
static int
same_certs(STACK_OF(X509) *a, int a_from, int a_to, STACK_OF(X509) *b)
{
	if (a_to - a_from != sk_X509_num(b))
		return 0;
	for (int i = a_from; i < a_to; i++)
		if (X509_cmp(sk_X509_value(a, i), sk_X509_value(b, i - a_from)) != 0)
			return 0;
	return 1;
}

/*
 * A rotation's successor (verified: cert, the certificates between, the anchor): it must
 * chain to the CA's current root through the same certificates as upstream.pem, since the
 * chain handed out with leaves is the intermediate and upstream.pem. Then it becomes
 * next-intermediate.pem, and the CSR goes.
 */
static int
install_successor(const char *dir, X509 *cert, const char *cert_path, STACK_OF(X509) *verified,
                  struct ac_err *err)
{
	STACK_OF(X509) *root = NULL, *upstream = NULL;
	char path[CA_PATH_MAX];
	int n = sk_X509_num(verified), rc = -1;

	if (ca_path(path, dir, CA_FILE_ROOT_CERT, err) != 0 ||
	    (root = x509_read_pem_file(path, err)) == NULL)
		goto out;
	if (X509_cmp(sk_X509_value(verified, n - 1), sk_X509_value(root, 0)) != 0) {
		ac_err_set(err, AC_ERR_POLICY, "chain_invalid",
		           "%s chains to a root other than %s: the next intermediate must chain to "
		           "the CA's current root",
		           cert_path, path);
		goto out;
	}
	if (ca_path(path, dir, CA_FILE_UPSTREAM, err) != 0 ||
	    (upstream = ca_read_certs_optional(path, err)) == NULL)
		goto out;
	if (!same_certs(verified, 1, n - 1, upstream)) {
		ac_err_set(err, AC_ERR_POLICY, "chain_invalid",
		           "%s chains to the root through other certificates than %s: the next "
		           "intermediate must share the current chain",
		           cert_path, path);
		goto out;
	}
	if (ca_path(path, dir, CA_FILE_NEXT_CERT, err) != 0 ||
	    ca_write_certs(path, cert, NULL, err) != 0 ||
	    ca_path(path, dir, CA_FILE_NEXT_CSR, err) != 0)
		goto out;
	if (unlink(path) != 0) {
		ac_err_set(err, AC_ERR_IO, "io_error", "%s: %s", path, strerror(errno));
		goto out;
	}
	rc = 0;
out:
	sk_X509_pop_free(upstream, X509_free);
	sk_X509_pop_free(root, X509_free);
	return rc;
}

/* Install a corporate-signed intermediate; see the comment at the top of the file. */
int
ca_import(const char *dir, const char *cert_path, const char *chain_path, const char *key_path,
          const char *password_file, struct ac_err *err)
{
	char passphrase[PASSPHRASE_MAX + 1] = "";
	char own_key[CA_PATH_MAX], path[CA_PATH_MAX], what[2 * CA_PATH_MAX + 32];
	STACK_OF(X509) *certs = NULL, *chain = NULL, *verified = NULL, *upstream = NULL;
	STACK_OF(X509) *anchors = NULL, *untrusted = NULL;
	EVP_PKEY *key = NULL;
	const char *key_name;
	struct ca_meta meta;
	X509 *cert;
	int rc = -1, n, next_slot = 0;

	memset(&meta, 0, sizeof(meta));
	if (ca_meta_load(dir, &meta, err) != 0)
		goto out;
	/* A rotation waiting for its signed certificate? */
	next_slot = strcmp(meta.state, CA_STATE_ACTIVE) == 0 && rotation_awaits_import(dir);
	if (!next_slot && strcmp(meta.mode, CA_MODE_CORPORATE) != 0) {
		ac_err_set(err, AC_ERR_CONFLICT, "not_corporate",
		           "%s is a root-mode CA; ca import is for a CA made with init --csr", dir);
		goto out;
	}
	if (passphrase_resolve(dir, password_file, passphrase, sizeof(passphrase), err) != 0)
		goto out;

	if ((certs = read_certs_as(cert_path, "cert_unreadable", err)) == NULL)
		goto out;
	cert = sk_X509_value(certs, 0);
	if ((chain = read_certs_as(chain_path, "chain_unreadable", err)) == NULL)
		goto out;
	anchors = sk_X509_new_null();
	untrusted = sk_X509_new_null();
	upstream = sk_X509_new_null();
	if (anchors == NULL || untrusted == NULL || upstream == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto out;
	}
	if (split_chain(chain, certs, anchors, untrusted, err) != 0)
		goto out;
	if (sk_X509_num(anchors) == 0) {
		ac_err_set(err, AC_ERR_POLICY, "chain_invalid",
		           "%s holds no self-signed root certificate", chain_path);
		goto out;
	}

	if (ca_path(own_key, dir, next_slot ? CA_FILE_NEXT_KEY : CA_FILE_INT_KEY, err) != 0)
		goto out;
	key_name = key_path != NULL ? key_path : own_key;
	if ((key = key_load(key_name, passphrase, err)) == NULL)
		goto out;
	if (!key_matches_cert(key, cert)) {
		ac_err_set(err, AC_ERR_POLICY, "key_mismatch",
		           "%s does not match the certificate in %s", key_name, cert_path);
		goto out;
	}
	if (!ca_cert_is_ca(cert)) {
		ac_err_set(err, AC_ERR_POLICY, "not_a_ca",
		           "%s is not a CA certificate (basicConstraints CA:TRUE and keyUsage "
		           "keyCertSign are required)",
		           cert_path);
		goto out;
	}
	if (ca_cert_check_time(cert, cert_path, time_now(), err) != 0)
		goto out;
	snprintf(what, sizeof(what), "%s with the root(s) in %s", cert_path, chain_path);
	if (ca_verify_chain(cert, anchors, untrusted, what, &verified, err) != 0)
		goto out;

	/* verified is cert, the certificates between, and the anchor last. */
	n = sk_X509_num(verified);
	for (int i = 1; i < n - 1; i++)
		if (!sk_X509_push(upstream, sk_X509_value(verified, i))) {
			ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
			goto out;
		}

	if (next_slot) {
		if (key_path != NULL && key_write_encrypted(own_key, key, passphrase, err) != 0)
			goto out;
		rc = install_successor(dir, cert, cert_path, verified, err);
		goto out;
	}
	if (key_path != NULL && key_write_encrypted(own_key, key, passphrase, err) != 0)
		goto out;
	if (ca_path(path, dir, CA_FILE_INT_CERT, err) != 0 ||
	    ca_write_certs(path, cert, NULL, err) != 0)
		goto out;
	if (ca_path(path, dir, CA_FILE_UPSTREAM, err) != 0 ||
	    ca_write_certs(path, NULL, upstream, err) != 0)
		goto out;
	if (ca_path(path, dir, CA_FILE_ROOT_CERT, err) != 0 ||
	    ca_write_certs(path, sk_X509_value(verified, n - 1), NULL, err) != 0)
		goto out;

	free(meta.state);
	if ((meta.state = strdup(CA_STATE_ACTIVE)) == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto out;
	}
	if (ca_meta_write(dir, &meta, err) != 0)
		goto out;
	rc = 0;
out:
	EVP_PKEY_free(key);
	sk_X509_free(upstream);
	sk_X509_free(untrusted);
	sk_X509_free(anchors);
	sk_X509_pop_free(verified, X509_free);
	sk_X509_pop_free(chain, X509_free);
	sk_X509_pop_free(certs, X509_free);
	ca_meta_free(&meta);
	passphrase_wipe(passphrase, sizeof(passphrase));
	return rc;
}
