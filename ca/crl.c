/*
 * crl.c - building the intermediate's CRL from the store. See crl.h.
 */
#include "ca/crl.h"

#include <string.h>

#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "ca/x509_build.h"

/* RFC 5280 reason names, as `agentca revoke --reason` takes them, and their codes. */
static const struct {
	const char *name;
	int code;
} crl_reasons[] = {
    {"unspecified", CRL_REASON_UNSPECIFIED},
    {"keyCompromise", CRL_REASON_KEY_COMPROMISE},
    {"cACompromise", CRL_REASON_CA_COMPROMISE},
    {"affiliationChanged", CRL_REASON_AFFILIATION_CHANGED},
    {"superseded", CRL_REASON_SUPERSEDED},
    {"cessationOfOperation", CRL_REASON_CESSATION_OF_OPERATION},
    {"certificateHold", CRL_REASON_CERTIFICATE_HOLD},
    {"privilegeWithdrawn", CRL_REASON_PRIVILEGE_WITHDRAWN},
    {"aACompromise", CRL_REASON_AA_COMPROMISE},
};

int
crl_reason_code(const char *name)
{
	for (size_t i = 0; name != NULL && i < sizeof(crl_reasons) / sizeof(crl_reasons[0]); i++)
		if (strcmp(name, crl_reasons[i].name) == 0)
			return crl_reasons[i].code;
	return CRL_REASON_UNSPECIFIED;
}

struct crl_fill {
	X509_CRL *crl;
	int failed;
};

/* Add one revoked certificate to the list. */
static int
add_revoked(void *arg, const struct revoked_row *row)
{
	struct crl_fill *f = arg;
	X509_REVOKED *rev = X509_REVOKED_new();
	ASN1_INTEGER *serial = NULL;
	ASN1_TIME *when = NULL;
	ASN1_ENUMERATED *reason = NULL;
	BIGNUM *bn = NULL;
	int code = crl_reason_code(row->reason);

	if (rev == NULL || BN_hex2bn(&bn, row->serial) == 0 ||
	    (serial = BN_to_ASN1_INTEGER(bn, NULL)) == NULL ||
	    !X509_REVOKED_set_serialNumber(rev, serial) ||
	    (when = ASN1_TIME_set(NULL, (time_t)row->revoked_at)) == NULL ||
	    !X509_REVOKED_set_revocationDate(rev, when))
		goto fail;
	/* RFC 5280 5.3.1: omit the reason rather than say "unspecified". */
	if (code != CRL_REASON_UNSPECIFIED &&
	    ((reason = ASN1_ENUMERATED_new()) == NULL || !ASN1_ENUMERATED_set(reason, code) ||
	     !X509_REVOKED_add1_ext_i2d(rev, NID_crl_reason, reason, 0, 0)))
		goto fail;
	if (!X509_CRL_add0_revoked(f->crl, rev))
		goto fail;
	rev = NULL;
	ASN1_ENUMERATED_free(reason);
	ASN1_TIME_free(when);
	ASN1_INTEGER_free(serial);
	BN_free(bn);
	return 0;
fail:
	ASN1_ENUMERATED_free(reason);
	ASN1_TIME_free(when);
	ASN1_INTEGER_free(serial);
	BN_free(bn);
	X509_REVOKED_free(rev);
	f->failed = 1;
	return 1;
}

int
crl_build(const struct ca_authority *ca, struct store *st, int64_t now, unsigned char **der,
          size_t *len, struct ac_err *err)
{
	char head_hash[LOG_HASH_HEX_LEN + 1];
	struct crl_fill fill = {NULL, 0};
	ASN1_TIME *this_update = NULL, *next_update = NULL;
	ASN1_INTEGER *number = NULL;
	AUTHORITY_KEYID *akid = NULL;
	uint64_t head = 0;
	int n, rc = -1;

	*der = NULL;
	*len = 0;
	if (store_log_head(st, &head, head_hash, err) != 0)
		return -1;
	fill.crl = X509_CRL_new();
	this_update = ASN1_TIME_set(NULL, (time_t)now);
	next_update = ASN1_TIME_set(NULL, (time_t)(now + CRL_VALIDITY));
	number = ASN1_INTEGER_new();
	akid = AUTHORITY_KEYID_new();
	if (fill.crl == NULL || this_update == NULL || next_update == NULL || number == NULL ||
	    akid == NULL || !X509_CRL_set_version(fill.crl, X509_CRL_VERSION_2) ||
	    !X509_CRL_set_issuer_name(fill.crl, X509_get_subject_name(ca->intermediate)) ||
	    !X509_CRL_set1_lastUpdate(fill.crl, this_update) ||
	    !X509_CRL_set1_nextUpdate(fill.crl, next_update) ||
	    !ASN1_INTEGER_set_uint64(number, head) ||
	    !X509_CRL_add1_ext_i2d(fill.crl, NID_crl_number, number, 0, 0)) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "crl_failed", "cannot build the CRL");
		goto out;
	}
	akid->keyid = ASN1_OCTET_STRING_dup(X509_get0_subject_key_id(ca->intermediate));
	if (akid->keyid == NULL ||
	    !X509_CRL_add1_ext_i2d(fill.crl, NID_authority_key_identifier, akid, 0, 0)) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "crl_failed", "cannot add the CRL's key identifier");
		goto out;
	}
	/* Expired certificates need no entry: nobody accepts them anyway. */
	if (store_revoked_scan(st, now, add_revoked, &fill, err) != 0)
		goto out;
	if (fill.failed) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "crl_failed", "cannot add a revoked certificate");
		goto out;
	}
	if (!X509_CRL_sort(fill.crl) ||
	    !X509_CRL_sign(fill.crl, ca->intermediate_key, ca->sign_md)) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "crl_failed", "cannot sign the CRL");
		goto out;
	}
	n = i2d_X509_CRL(fill.crl, der);
	if (n <= 0) {
		*der = NULL;
		ac_err_ssl(err, AC_ERR_CRYPTO, "crl_failed", "cannot encode the CRL");
		goto out;
	}
	*len = (size_t)n;
	rc = 0;
out:
	AUTHORITY_KEYID_free(akid);
	ASN1_INTEGER_free(number);
	ASN1_TIME_free(next_update);
	ASN1_TIME_free(this_update);
	X509_CRL_free(fill.crl);
	return rc;
}
