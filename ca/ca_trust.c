/*
 * ca_trust.c - `agentca trust add`: extra roots for the trust bundle.
 *
 * trust.pem holds roots that relying parties should also trust (another CA being
 * migrated to, a corporate root), published in the bundle and never used to sign. Every
 * certificate offered must be a self-signed CA certificate (signature checked) that is
 * valid now; one bad certificate refuses the whole file, so nothing half-added remains.
 * Certificates already in trust.pem, or equal to our own root, are skipped by SHA-256
 * fingerprint.
 */
#include "ca/authority.h"

#include <string.h>

#include <openssl/err.h>

#include "ca/ca_common.h"
#include "ca/x509_build.h"
#include "common/fsutil.h"
#include "common/timefmt.h"

/* 1 when a certificate with this fingerprint is in certs (NULL-safe), -1 on failure. */
static int
stack_has_fingerprint(STACK_OF(X509) *certs, const char *fp, struct ac_err *err)
{
	char other[65];

	for (int i = 0; certs != NULL && i < sk_X509_num(certs); i++) {
		if (cert_fingerprint(sk_X509_value(certs, i), other, err) != 0)
			return -1;
		if (strcmp(fp, other) == 0)
			return 1;
	}
	return 0;
}

/* A self-signed CA certificate valid now, or an error naming it by position and subject. */
static int
check_trust_root(X509 *cert, const char *pem_path, int index, int64_t now, struct ac_err *err)
{
	char subject[256], what[CA_PATH_MAX + 300];
	int self_signed;

	X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof(subject));
	snprintf(what, sizeof(what), "%s: certificate %d (%s)", pem_path, index + 1, subject);
	self_signed = X509_self_signed(cert, 1);
	ERR_clear_error();
	if (self_signed != 1)
		return ac_err_set(err, AC_ERR_POLICY, "not_self_signed",
		                  "%s is not a self-signed root certificate", what);
	if (!ca_cert_is_ca(cert))
		return ac_err_set(err, AC_ERR_POLICY, "not_a_ca",
		                  "%s is not a CA certificate (basicConstraints CA:TRUE and "
		                  "keyUsage keyCertSign are required)",
		                  what);
	return ca_cert_check_time(cert, what, now, err);
}

/* Add the roots in pem_path to DIR/trust.pem; *added counts the new ones. */
int
ca_trust_add(const char *dir, const char *pem_path, int *added, struct ac_err *err)
{
	STACK_OF(X509) *offered = NULL, *present = NULL, *own_root = NULL;
	char path[CA_PATH_MAX], fp[65];
	struct ca_meta meta;
	int64_t now = time_now();
	int rc = -1, count = 0, dup;

	*added = 0;
	memset(&meta, 0, sizeof(meta));
	if (ca_meta_load(dir, &meta, err) != 0)
		goto out;
	if ((offered = x509_read_pem_file(pem_path, err)) == NULL)
		goto out;
	for (int i = 0; i < sk_X509_num(offered); i++)
		if (check_trust_root(sk_X509_value(offered, i), pem_path, i, now, err) != 0)
			goto out;

	if (ca_path(path, dir, CA_FILE_ROOT_CERT, err) != 0 ||
	    (own_root = ca_read_certs_optional(path, err)) == NULL)
		goto out;
	if (ca_path(path, dir, CA_FILE_TRUST, err) != 0 ||
	    (present = ca_read_certs_optional(path, err)) == NULL)
		goto out;
	for (int i = 0; i < sk_X509_num(offered); i++) {
		X509 *cert = sk_X509_value(offered, i);

		if (cert_fingerprint(cert, fp, err) != 0)
			goto out;
		if ((dup = stack_has_fingerprint(present, fp, err)) < 0)
			goto out;
		if (dup == 0 && (dup = stack_has_fingerprint(own_root, fp, err)) < 0)
			goto out;
		if (dup)
			continue;
		/* present takes a reference, so a repeat later in the same file is a dup. */
		if (!X509_up_ref(cert)) {
			ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
			goto out;
		}
		if (!sk_X509_push(present, cert)) {
			X509_free(cert);
			ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
			goto out;
		}
		count++;
	}
	if (count > 0 && ca_write_certs(path, NULL, present, err) != 0)
		goto out;
	*added = count;
	rc = 0;
out:
	sk_X509_pop_free(present, X509_free);
	sk_X509_pop_free(own_root, X509_free);
	sk_X509_pop_free(offered, X509_free);
	ca_meta_free(&meta);
	return rc;
}
