/*
 * admin_log.c - issuance-log entries for admin actions on the CA. See admin_log.h.
 */
#include "cli/admin_log.h"

#include <stdio.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/x509.h>

#include "ca/x509_build.h"
#include "cli/settings.h"
#include "common/fsutil.h"
#include "store/store.h"

/* Open the store that DIR's settings name, and commit one log entry to it. */
static int
submit_entry(const char *dir, const char *config, const char *trust_domain,
             const struct log_entry *entry, struct ac_err *err)
{
	struct agentca_settings settings;
	struct store *store;
	struct store_write w;
	int rc;

	if (settings_open_store(dir, config, trust_domain, &settings, &store, err) != 0)
		return -1;
	memset(&w, 0, sizeof(w));
	w.entry = entry;
	rc = store_submit(store, &w, err);
	store_close(store);
	settings_free(&settings);
	return rc;
}

/* Append an entry about the CA itself (see admin_log.h). */
int
admin_log_record(const char *dir, const char *config, const char *kind, const char *detail,
                 struct ac_err *err)
{
	STACK_OF(X509) *certs = NULL;
	struct log_entry entry;
	char trust_domain[256], subject[300], path[4096], serial[41] = "";
	int rc = -1;

	memset(&entry, 0, sizeof(entry));
	if (settings_read_trust_domain(dir, trust_domain, sizeof(trust_domain), err) != 0)
		return -1;
	snprintf(subject, sizeof(subject), "spiffe://%s", trust_domain);
	entry.kind = kind;
	entry.actor = "admin:cli";
	entry.subject = subject;
	entry.detail = detail;

	/* The intermediate, when there is one, is what the entry is about. */
	if (path_join(path, sizeof(path), dir, "intermediate.pem", err) != 0)
		return -1;
	if (path_exists(path)) {
		X509 *cert;
		BIGNUM *bn;
		char *hex;

		certs = x509_read_pem_file(path, err);
		if (certs == NULL)
			goto out;
		cert = sk_X509_value(certs, 0);
		bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
		hex = bn != NULL ? BN_bn2hex(bn) : NULL;
		if (hex != NULL && strlen(hex) < sizeof(serial)) {
			for (size_t i = 0; hex[i] != '\0'; i++)
				serial[i] =
				    (char)(hex[i] >= 'A' && hex[i] <= 'F' ? hex[i] + 32 : hex[i]);
			entry.serial = serial;
		}
		OPENSSL_free(hex);
		BN_free(bn);
		entry.not_before = asn1_time_to_unix(X509_get0_notBefore(cert));
		entry.not_after = asn1_time_to_unix(X509_get0_notAfter(cert));
	}

	rc = submit_entry(dir, config, trust_domain, &entry, err);
out:
	if (rc != 0)
		ac_err_wrap(err, "recording %s in the issuance log", kind);
	sk_X509_pop_free(certs, X509_free);
	return rc;
}

/*
 * Record that a token was minted: its subject, validity, parent and, in the detail, its
 * jti, never the token itself (a bootstrap token is a credential until it is used).
 */
int
admin_log_token_created(const char *dir, const char *config, const struct token_grant *grant,
                        struct ac_err *err)
{
	struct log_entry entry;
	char trust_domain[256], detail[512];
	int rc;

	memset(&entry, 0, sizeof(entry));
	if (settings_read_trust_domain(dir, trust_domain, sizeof(trust_domain), err) != 0)
		return -1;
	if (grant->type == TOKEN_ADMIN)
		snprintf(detail, sizeof(detail), "admin token jti %s created for role %s",
		         grant->jti, grant->role);
	else
		snprintf(detail, sizeof(detail),
		         "bootstrap token jti %s created (%zu DNS name%s, depth %d)", grant->jti,
		         grant->dns.count, grant->dns.count == 1 ? "" : "s", grant->depth);
	entry.kind = "token_created";
	entry.actor = "admin:cli";
	entry.subject = grant->subject;
	entry.sans = (const char *const *)grant->dns.items;
	entry.sans_count = grant->dns.count;
	entry.not_before = grant->not_before;
	entry.not_after = grant->expires;
	entry.parent = grant->parent[0] != '\0' ? grant->parent : NULL;
	entry.detail = detail;
	rc = submit_entry(dir, config, trust_domain, &entry, err);
	if (rc != 0)
		ac_err_wrap(err, "recording token_created in the issuance log");
	return rc;
}
