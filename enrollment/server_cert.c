/*
 * server_cert.c - issuing the daemon's own TLS certificate. See server_cert.h.
 */
#include "enrollment/server_cert.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include <openssl/x509v3.h>

#include "ca/keys.h"
#include "ca/policy.h"
#include "ca/x509_build.h"
#include "common/log.h"
#include "common/timefmt.h"

int
listen_address_host(const char *address, char *buf, size_t len)
{
	const char *colon;
	size_t n;

	if (address[0] == '[') {
		const char *close = strchr(address, ']');

		if (close == NULL)
			return -1;
		n = (size_t)(close - address - 1);
		address++;
	} else {
		colon = strrchr(address, ':');
		n = colon != NULL ? (size_t)(colon - address) : strlen(address);
	}
	if (n == 0 || n >= len)
		return -1;
	memcpy(buf, address, n);
	buf[n] = '\0';
	return 0;
}

/* Append "IP:x" or "DNS:x" to the SAN text when the CA's constraints allow it. */
static void
add_name(const struct issuer *iss, const char *name, char *san, size_t len)
{
	unsigned char addr[16];
	struct ac_err err;
	size_t used = strlen(san);
	int is_ip4 = inet_pton(AF_INET, name, addr) == 1;
	int is_ip6 = !is_ip4 && inet_pton(AF_INET6, name, addr) == 1;

	ac_err_clear(&err);
	if (is_ip4 || is_ip6) {
		if (strcmp(name, "0.0.0.0") == 0 || strcmp(name, "::") == 0)
			return; /* a wildcard listener has no name of its own */
		if (iss->policy->ip_ranges.count > 0 &&
		    policy_check_ip(iss->policy, addr, is_ip4 ? 4 : 16, &err) != 0) {
			log_warn("server_name_skipped", "%s left out of the server certificate: %s",
			         name, err.msg);
			return;
		}
		snprintf(san + used, len - used, "%sIP:%s", used > 0 ? "," : "", name);
		return;
	}
	if (policy_check_dns(iss->policy, name, strlen(name), &err) != 0) {
		log_warn("server_name_skipped", "%s left out of the server certificate: %s", name,
		         err.msg);
		return;
	}
	snprintf(san + used, len - used, "%sDNS:%s", used > 0 ? "," : "", name);
}

int
server_cert_issue(const struct issuer *iss, const struct cfg_strlist *names, int64_t ttl,
                  struct server_identity *out, struct ac_err *err)
{
	const struct ca_authority *ca = iss->authority;
	char san[4096] = "", spiffe[512], spki[65];
	struct cert_record rec;
	struct log_entry entry;
	struct store_write w;
	unsigned char *der = NULL;
	X509_NAME *subject = NULL;
	EVP_PKEY *key = NULL;
	X509 *cert = NULL;
	int64_t now = time_now(), not_after;
	int der_len, rc = -1;

	memset(out, 0, sizeof(*out));
	for (size_t i = 0; i < names->count; i++)
		add_name(iss, names->items[i], san, sizeof(san));
	snprintf(spiffe, sizeof(spiffe), "spiffe://%s/agentca/server", ca->trust_domain);
	{
		size_t used = strlen(san);

		snprintf(san + used, sizeof(san) - used, "%sURI:%s", used > 0 ? "," : "", spiffe);
	}
	not_after = now + ttl;
	if (not_after > ca->intermediate_not_after)
		not_after = ca->intermediate_not_after;

	key = key_generate(KEY_EC_P256, err);
	if (key == NULL)
		goto out;
	cert = X509_new();
	subject = x509_name_make("agentca server", ca->name, err);
	if (cert == NULL || subject == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto out;
	}
	if (!X509_set_version(cert, 2) || !X509_set_subject_name(cert, subject) ||
	    !X509_set_issuer_name(cert, X509_get_subject_name(ca->intermediate)) ||
	    !X509_set_pubkey(cert, key)) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "cert_build_failed",
		           "cannot build the server "
		           "certificate");
		goto out;
	}
	if (x509_set_random_serial(cert, out->serial, err) != 0 ||
	    x509_set_validity(cert, now - 60, not_after, err) != 0 ||
	    x509_add_ext_text(cert, ca->intermediate, NID_basic_constraints, "critical,CA:FALSE",
	                      err) != 0 ||
	    x509_add_ext_text(cert, ca->intermediate, NID_key_usage, "critical,digitalSignature",
	                      err) != 0 ||
	    x509_add_ext_text(cert, ca->intermediate, NID_ext_key_usage, "serverAuth", err) != 0 ||
	    x509_add_ext_text(cert, ca->intermediate, NID_subject_key_identifier, "hash", err) !=
	        0 ||
	    x509_add_ext_text(cert, ca->intermediate, NID_authority_key_identifier, "keyid:always",
	                      err) != 0 ||
	    x509_add_ext_text(cert, ca->intermediate, NID_subject_alt_name, san, err) != 0 ||
	    x509_sign(cert, ca->intermediate_key, ca->sign_md, err) != 0)
		goto out;
	der_len = i2d_X509(cert, &der);
	if (der_len <= 0 || key_spki_sha256(key, spki, err) != 0) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "cert_encode_failed",
		           "cannot encode the server "
		           "certificate");
		goto out;
	}

	/* Recorded like every certificate this CA signs, before it is used. */
	memset(&rec, 0, sizeof(rec));
	rec.serial = out->serial;
	rec.subject = spiffe;
	rec.spki_sha256 = spki;
	rec.issuer_fingerprint = ca->intermediate_fingerprint;
	rec.not_before = now - 60;
	rec.not_after = not_after;
	rec.der = der;
	rec.der_len = (size_t)der_len;
	memset(&entry, 0, sizeof(entry));
	entry.kind = "issued";
	entry.actor = "ca:self";
	entry.subject = spiffe;
	entry.serial = out->serial;
	entry.not_before = now - 60;
	entry.not_after = not_after;
	entry.spki_sha256 = spki;
	entry.detail = san;
	memset(&w, 0, sizeof(w));
	w.cert = &rec;
	w.entry = &entry;
	if (store_submit(iss->store, &w, err) != 0)
		goto out;

	out->cert = cert;
	out->key = key;
	out->not_after = not_after;
	out->renew_at = now + (not_after - now) * 2 / 3;
	cert = NULL;
	key = NULL;
	log_info("server_cert_issued", "server certificate %s for %s, valid until %lld",
	         out->serial, san, (long long)not_after);
	rc = 0;
out:
	OPENSSL_free(der);
	X509_NAME_free(subject);
	X509_free(cert);
	EVP_PKEY_free(key);
	return rc;
}

void
server_identity_free(struct server_identity *id)
{
	if (id == NULL)
		return;
	X509_free(id->cert);
	EVP_PKEY_free(id->key);
	memset(id, 0, sizeof(*id));
}
