/*
 * issue.c - the issuance engine: one function, ca_issue(), that every certificate goes
 * through.
 *
 * ca_issue() is the issuance policy as a checklist, top to bottom:
 *
 *   1. parse the CSR and verify its self-signature          (csr.c)
 *   2. the key is one we accept                              (policy_check_key)
 *   3. the subject is a SPIFFE ID in our trust domain        (policy_check_spiffe_id)
 *   4. the SAN count fits policy.max_sans                    (checked before the names, so a
 *                                                             CSR with thousands costs little)
 *   5. every requested SAN is allowed: URIs equal the subject, DNS names under an allowed
 *      suffix (and in the token's grant, when there is one), IPs in an allowed range,
 *      nothing else
 *   6. the lifetime: clamped by policy, never past the intermediate
 *   7. build the leaf, sign it
 *   8. record the certificate and its log entry (and the token as used) in one durable
 *      commit, and only then hand the certificate out.
 *
 * A refusal in steps 1-6 is recorded as exactly one "denied" log entry with the refusal's
 * reason, and no certificate row. A failure in 7 or 8 is not a refusal: nothing is recorded
 * by us (a failed commit records nothing by definition) and the error goes back as is.
 *
 * The leaf is built with OpenSSL's typed structures rather than its config-text parser:
 * this runs once per certificate and the text parser is slower than the structs it builds.
 * The subjectKeyIdentifier is the SHA-256 of the SubjectPublicKeyInfo (RFC 7093, method 4),
 * the same hash the store and the log carry as spki_sha256, so both are computed once.
 */
#include "ca/issue.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "ca/csr.h"
#include "ca/x509_build.h"
#include "common/hex.h"
#include "common/log.h"

#define CLOCK_SKEW 60  /* seconds of notBefore backdating */
#define IP_TEXT_MAX 46 /* INET6_ADDRSTRLEN */

/* What the checks decided: the names that go into the certificate (borrowed from the
 * CSR), and the validity. */
struct leaf_plan {
	const struct csr_san **dns; /* allowed DNS SANs, in CSR order */
	size_t dns_count;
	const struct csr_san **ip; /* allowed IP SANs */
	size_t ip_count;
	int64_t not_before, not_after;
};

/*
 * Steps 4 and 5: count, then check each SAN, filling plan->dns and plan->ip.
 */

static int
dns_granted(const struct cfg_strlist *allowed, const struct csr_san *san)
{
	for (size_t i = 0; i < allowed->count; i++)
		if (strlen(allowed->items[i]) == san->len &&
		    strncasecmp(allowed->items[i], (const char *)san->value, san->len) == 0)
			return 1;
	return 0;
}

static int
check_sans(const struct issuer *iss, const struct issue_request *req, const struct csr *csr,
           struct leaf_plan *plan, struct ac_err *err)
{
	const char *subject = req->subject;
	size_t total = 1, subject_len = strlen(subject);
	char shown[160];
	int rc = -1;

	for (size_t i = 0; i < csr->san_count; i++)
		if (csr->sans[i].type != CSR_SAN_URI)
			total++;
	if (total > (size_t)iss->policy->max_sans) {
		ac_err_set(
		    err, AC_ERR_POLICY, "too_many_sans",
		    "the request names %zu SANs (with the SPIFFE ID); at most %lld are allowed",
		    total, (long long)iss->policy->max_sans);
		goto out;
	}
	plan->dns = calloc(total, sizeof(*plan->dns));
	plan->ip = calloc(total, sizeof(*plan->ip));
	if (plan->dns == NULL || plan->ip == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto out;
	}
	for (size_t i = 0; i < csr->san_count; i++) {
		const struct csr_san *san = &csr->sans[i];

		switch (san->type) {
		case CSR_SAN_URI:
			if (san->len != subject_len ||
			    memcmp(san->value, subject, subject_len) != 0) {
				policy_escape((const char *)san->value, san->len, shown,
				              sizeof(shown));
				ac_err_set(err, AC_ERR_POLICY, "name_outside_policy",
				           "URI SAN \"%s\" is not the requested identity", shown);
				goto out;
			}
			break;
		case CSR_SAN_DNS:
			if (policy_check_dns(iss->policy, (const char *)san->value, san->len,
			                     err) != 0)
				goto out;
			if (req->allowed_dns != NULL && !dns_granted(req->allowed_dns, san)) {
				ac_err_set(err, AC_ERR_POLICY, "name_outside_policy",
				           "DNS name \"%s\" is not granted to this request",
				           (const char *)san->value);
				goto out;
			}
			plan->dns[plan->dns_count++] = san;
			break;
		case CSR_SAN_IP:
			if (policy_check_ip(iss->policy, san->value, san->len, err) != 0)
				goto out;
			plan->ip[plan->ip_count++] = san;
			break;
		case CSR_SAN_OTHER:
		default:
			ac_err_set(err, AC_ERR_POLICY, "name_outside_policy",
			           "a %s SAN is not something this CA certifies",
			           (const char *)san->value);
			goto out;
		}
	}
	rc = 0;
out:
	return rc;
}

/* Step 6: the validity window, clamped by policy and by the intermediate's own end. */
static int
plan_validity(const struct issuer *iss, const struct issue_request *req, struct leaf_plan *plan,
              struct ac_err *err)
{
	int64_t now = (int64_t)time(NULL);
	int64_t ttl = policy_clamp_ttl(iss->policy, req->ttl);

	plan->not_before = now - CLOCK_SKEW;
	plan->not_after = now + ttl;
	if (plan->not_after > iss->authority->intermediate_not_after)
		plan->not_after = iss->authority->intermediate_not_after;
	if (plan->not_after <= now)
		return ac_err_set(err, AC_ERR_UNAVAILABLE, "ca_expired",
		                  "the intermediate CA has expired; no certificate can be issued");
	if (req->not_after_max != 0 && plan->not_after > req->not_after_max)
		plan->not_after = req->not_after_max;
	if (plan->not_after <= now)
		return ac_err_set(
		    err, AC_ERR_POLICY, "parent_expired",
		    "the parent's certificate has expired: a child cannot outlive it");
	return 0;
}

/* Steps 1-6. On success *csr_out holds the parsed CSR and plan what to certify. */
static int
check_request(const struct issuer *iss, const struct issue_request *req, struct csr **csr_out,
              struct leaf_plan *plan, struct ac_err *err)
{
	const char *subject = req->subject;
	struct csr *csr = NULL;
	int rc = -1;

	if (req->csr == NULL && req->renew_cert_der != NULL) {
		if (csr_from_certificate(req->renew_cert_der, req->renew_cert_der_len, &csr, err) !=
		    0)
			goto out;
	} else if (csr_parse(req->csr, req->csr_len, &csr, err) != 0) {
		goto out;
	}
	if (policy_check_key(csr->key, err) != 0)
		goto out;
	if (policy_check_spiffe_id(subject, subject != NULL ? strlen(subject) : 0,
	                           iss->authority->trust_domain, err) != 0)
		goto out;
	if (check_sans(iss, req, csr, plan, err) != 0)
		goto out;
	if (plan_validity(iss, req, plan, err) != 0)
		goto out;
	rc = 0;
out:
	*csr_out = csr;
	return rc;
}

/*
 * Step 7: the leaf.
 */

/* A GENERAL_NAME of type GEN_DNS, GEN_URI (IA5String) or GEN_IPADD (OCTET STRING). */
static GENERAL_NAME *
general_name(int type, const void *data, size_t len)
{
	GENERAL_NAME *gn = GENERAL_NAME_new();
	ASN1_STRING *s =
	    ASN1_STRING_type_new(type == GEN_IPADD ? V_ASN1_OCTET_STRING : V_ASN1_IA5STRING);

	if (gn == NULL || s == NULL || ASN1_STRING_set(s, data, (int)len) != 1) {
		ASN1_STRING_free(s);
		GENERAL_NAME_free(gn);
		return NULL;
	}
	GENERAL_NAME_set0_value(gn, type, s);
	return gn;
}

/* Push a new GENERAL_NAME onto names; -1 on allocation failure. */
static int
push_name(GENERAL_NAMES *names, int type, const void *data, size_t len)
{
	GENERAL_NAME *gn = general_name(type, data, len);

	if (gn == NULL || sk_GENERAL_NAME_push(names, gn) <= 0) {
		GENERAL_NAME_free(gn);
		return -1;
	}
	return 0;
}

/* Encode value as extension nid and add it. */
static int
add_ext(X509 *cert, int nid, void *value, int critical, struct ac_err *err)
{
	if (X509_add1_ext_i2d(cert, nid, value, critical, X509V3_ADD_DEFAULT) != 1)
		return ac_err_ssl(err, AC_ERR_CRYPTO, "cert_build_failed",
		                  "cannot add extension %s", OBJ_nid2sn(nid));
	return 0;
}

/* Subject "O=<CA name>" and, when the leaf has a DNS name short enough for a CN, "CN=<it>".
 * Relying parties use the SAN; the CN is for people and old tools. */
static int
set_subject(X509 *cert, const struct ca_authority *ca, const struct leaf_plan *plan,
            struct ac_err *err)
{
	X509_NAME *name = X509_NAME_new();
	int rc = -1;

	if (name == NULL ||
	    !X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (const unsigned char *)ca->name,
	                                -1, -1, 0)) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "cert_build_failed", "cannot build the subject");
		goto out;
	}
	if (plan->dns_count > 0 && plan->dns[0]->len <= ub_common_name &&
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, plan->dns[0]->value,
	                                (int)plan->dns[0]->len, -1, 0)) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "cert_build_failed", "cannot build the subject");
		goto out;
	}
	if (!X509_set_subject_name(cert, name)) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "cert_build_failed", "cannot set the subject");
		goto out;
	}
	rc = 0;
out:
	X509_NAME_free(name);
	return rc;
}

/* basicConstraints, keyUsage, extKeyUsage: the same for every leaf but keyEncipherment. */
static int
add_usage_exts(X509 *cert, EVP_PKEY *key, struct ac_err *err)
{
	BASIC_CONSTRAINTS bc = {0, NULL};
	ASN1_BIT_STRING *ku = ASN1_BIT_STRING_new();
	EXTENDED_KEY_USAGE *eku = sk_ASN1_OBJECT_new_null();
	int rc = -1;

	if (ku == NULL || eku == NULL || !ASN1_BIT_STRING_set_bit(ku, 0, 1) ||
	    (EVP_PKEY_is_a(key, "RSA") && !ASN1_BIT_STRING_set_bit(ku, 2, 1)) ||
	    sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_server_auth)) <= 0 ||
	    sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_client_auth)) <= 0) {
		ac_err_ssl(err, AC_ERR_INTERNAL, "out_of_memory", "building key usages");
		goto out;
	}
	if (add_ext(cert, NID_basic_constraints, &bc, 1, err) != 0 ||
	    add_ext(cert, NID_key_usage, ku, 1, err) != 0 ||
	    add_ext(cert, NID_ext_key_usage, eku, 0, err) != 0)
		goto out;
	rc = 0;
out:
	sk_ASN1_OBJECT_free(eku); /* the objects are OpenSSL's static ones */
	ASN1_BIT_STRING_free(ku);
	return rc;
}

/* subjectKeyIdentifier (the SPKI's SHA-256) and authorityKeyIdentifier (the
 * intermediate's own SKI; computed by OpenSSL when the intermediate has none). */
static int
add_key_ids(X509 *cert, X509 *issuer, const char *spki_sha256, struct ac_err *err)
{
	const ASN1_OCTET_STRING *issuer_ski = X509_get0_subject_key_id(issuer);
	ASN1_OCTET_STRING *ski = ASN1_OCTET_STRING_new();
	AUTHORITY_KEYID *aki = AUTHORITY_KEYID_new();
	unsigned char id[32];
	int rc = -1;

	if (ski == NULL || aki == NULL) {
		ac_err_ssl(err, AC_ERR_INTERNAL, "out_of_memory", "building key identifiers");
		goto out;
	}
	if (hex_decode(spki_sha256, id, sizeof(id)) != 0 ||
	    !ASN1_OCTET_STRING_set(ski, id, sizeof(id))) {
		ac_err_ssl(err, AC_ERR_INTERNAL, "cert_build_failed", "bad SPKI hash");
		goto out;
	}
	if (add_ext(cert, NID_subject_key_identifier, ski, 0, err) != 0)
		goto out;
	if (issuer_ski == NULL) {
		ERR_clear_error();
		if (x509_add_ext_text(cert, issuer, NID_authority_key_identifier, "keyid:always",
		                      err) != 0)
			goto out;
	} else {
		aki->keyid = ASN1_OCTET_STRING_dup(issuer_ski);
		if (aki->keyid == NULL) {
			ac_err_ssl(err, AC_ERR_INTERNAL, "out_of_memory", "copying the issuer SKI");
			goto out;
		}
		if (add_ext(cert, NID_authority_key_identifier, aki, 0, err) != 0)
			goto out;
	}
	rc = 0;
out:
	AUTHORITY_KEYID_free(aki);
	ASN1_OCTET_STRING_free(ski);
	return rc;
}

/* subjectAltName: the SPIFFE ID first, then the DNS names, then the IPs. */
static int
add_san_ext(X509 *cert, const char *subject, const struct leaf_plan *plan, struct ac_err *err)
{
	GENERAL_NAMES *names = sk_GENERAL_NAME_new_null();
	int rc = -1;

	if (names == NULL || push_name(names, GEN_URI, subject, strlen(subject)) != 0)
		goto oom;
	for (size_t i = 0; i < plan->dns_count; i++)
		if (push_name(names, GEN_DNS, plan->dns[i]->value, plan->dns[i]->len) != 0)
			goto oom;
	for (size_t i = 0; i < plan->ip_count; i++)
		if (push_name(names, GEN_IPADD, plan->ip[i]->value, plan->ip[i]->len) != 0)
			goto oom;
	rc = add_ext(cert, NID_subject_alt_name, names, 0, err);
	goto out;
oom:
	ac_err_ssl(err, AC_ERR_INTERNAL, "out_of_memory", "building subjectAltName");
out:
	GENERAL_NAMES_free(names);
	return rc;
}

/* cRLDistributionPoints with one URI, when policy names a CRL. */
static int
add_crl_ext(X509 *cert, const char *url, struct ac_err *err)
{
	CRL_DIST_POINTS *points = sk_DIST_POINT_new_null();
	DIST_POINT *dp = DIST_POINT_new();
	int rc = -1;

	if (points == NULL || dp == NULL || (dp->distpoint = DIST_POINT_NAME_new()) == NULL ||
	    (dp->distpoint->name.fullname = sk_GENERAL_NAME_new_null()) == NULL ||
	    push_name(dp->distpoint->name.fullname, GEN_URI, url, strlen(url)) != 0 ||
	    sk_DIST_POINT_push(points, dp) <= 0) {
		ac_err_ssl(err, AC_ERR_INTERNAL, "out_of_memory", "building the CRL point");
		goto out;
	}
	dp->distpoint->type = 0; /* fullName */
	dp = NULL;
	rc = add_ext(cert, NID_crl_distribution_points, points, 0, err);
out:
	DIST_POINT_free(dp);
	CRL_DIST_POINTS_free(points);
	return rc;
}

/* authorityInfoAccess with the OCSP responder, when policy names one. */
static int
add_ocsp_ext(X509 *cert, const char *url, struct ac_err *err)
{
	AUTHORITY_INFO_ACCESS *aia = sk_ACCESS_DESCRIPTION_new_null();
	ACCESS_DESCRIPTION *ad = ACCESS_DESCRIPTION_new();
	GENERAL_NAME *location = general_name(GEN_URI, url, strlen(url));
	int rc = -1;

	if (aia == NULL || ad == NULL || location == NULL) {
		ac_err_ssl(err, AC_ERR_INTERNAL, "out_of_memory", "building the OCSP access");
		goto out;
	}
	ASN1_OBJECT_free(ad->method);
	ad->method = OBJ_nid2obj(NID_ad_OCSP);
	GENERAL_NAME_free(ad->location);
	ad->location = location;
	location = NULL;
	if (sk_ACCESS_DESCRIPTION_push(aia, ad) <= 0) {
		ac_err_ssl(err, AC_ERR_INTERNAL, "out_of_memory", "building the OCSP access");
		goto out;
	}
	ad = NULL;
	rc = add_ext(cert, NID_info_access, aia, 0, err);
out:
	GENERAL_NAME_free(location);
	ACCESS_DESCRIPTION_free(ad);
	AUTHORITY_INFO_ACCESS_free(aia);
	return rc;
}

/* Build and sign the leaf. serial gets its hex. */
static X509 *
build_leaf(const struct issuer *iss, const struct issue_request *req, const struct csr *csr,
           const struct leaf_plan *plan, const char *spki_sha256, char serial[41],
           struct ac_err *err)
{
	const struct ca_authority *ca = iss->authority;
	const struct ca_policy *policy = iss->policy;
	X509 *cert = X509_new(), *result = NULL;

	if (cert == NULL) {
		ac_err_ssl(err, AC_ERR_INTERNAL, "out_of_memory", "X509_new failed");
		goto out;
	}
	if (!X509_set_version(cert, X509_VERSION_3) ||
	    !X509_set_issuer_name(cert, X509_get_subject_name(ca->intermediate))) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "cert_build_failed", "cannot set up the leaf");
		goto out;
	}
	if (csr_copy_pubkey(csr, cert, err) != 0 ||
	    x509_set_random_serial(cert, serial, err) != 0 ||
	    x509_set_validity(cert, plan->not_before, plan->not_after, err) != 0 ||
	    set_subject(cert, ca, plan, err) != 0 || add_usage_exts(cert, csr->key, err) != 0 ||
	    add_key_ids(cert, ca->intermediate, spki_sha256, err) != 0 ||
	    add_san_ext(cert, req->subject, plan, err) != 0)
		goto out;
	if (policy->crl_url != NULL && add_crl_ext(cert, policy->crl_url, err) != 0)
		goto out;
	if (policy->ocsp_url != NULL && add_ocsp_ext(cert, policy->ocsp_url, err) != 0)
		goto out;
	if (x509_sign(cert, ca->intermediate_key, ca->sign_md, err) != 0)
		goto out;
	result = cert;
	cert = NULL;
out:
	X509_free(cert);
	return result;
}

/*
 * Step 8 and the denial record.
 */

/* The SANs as text for the log: the SPIFFE ID, DNS names, IPs. strings[] points into
 * storage (IP text) and the plan (DNS names, which passed policy: no NUL). */
static const char **
log_sans(const char *subject, const struct leaf_plan *plan, char (*ip_text)[IP_TEXT_MAX],
         size_t *count)
{
	const char **sans = calloc(1 + plan->dns_count + plan->ip_count, sizeof(*sans));
	size_t n = 0;

	if (sans == NULL)
		return NULL;
	sans[n++] = subject;
	for (size_t i = 0; i < plan->dns_count; i++)
		sans[n++] = (const char *)plan->dns[i]->value;
	for (size_t i = 0; i < plan->ip_count; i++) {
		int af = plan->ip[i]->len == 4 ? AF_INET : AF_INET6;

		if (inet_ntop(af, plan->ip[i]->value, ip_text[i], IP_TEXT_MAX) == NULL)
			strcpy(ip_text[i], "?");
		sans[n++] = ip_text[i];
	}
	*count = n;
	return sans;
}

/* Record one "denied" entry for a refusal. A failure to record is only warned about: the
 * caller returns the refusal itself. */
static void
record_denial(const struct issuer *iss, const struct issue_request *req,
              const struct ac_err *refusal)
{
	char subject[POLICY_SPIFFE_ID_MAX + 16] = "";
	struct log_entry entry;
	struct store_write w;
	struct ac_err err;

	/* The subject may be anything the caller sent: keep the log's JSON valid. */
	if (req->subject != NULL)
		policy_escape(req->subject, strlen(req->subject), subject, sizeof(subject));
	memset(&entry, 0, sizeof(entry));
	entry.kind = "denied";
	entry.actor = req->actor;
	entry.subject = req->subject != NULL ? subject : NULL;
	entry.parent = req->parent;
	entry.request_id = req->request_id;
	entry.reason = refusal->reason;
	entry.detail = refusal->msg;
	memset(&w, 0, sizeof(w));
	w.entry = &entry;
	ac_err_clear(&err);
	if (store_submit(iss->store, &w, &err) != 0)
		log_warn("denial_not_recorded", "could not record the denial (%s) of %s: %s",
		         refusal->reason, subject, err.msg);
	log_info("issue_denied", "request by %s for %s refused (%s): %s",
	         req->actor != NULL ? req->actor : "?", subject, refusal->reason, refusal->msg);
}

/* The leaf's PEM from the DER already made for the store, rather than encoding the
 * certificate once more: the same bytes PEM_write_bio_X509 would write. NUL-terminated heap
 * buffer; *len excludes the NUL. */
static char *
pem_from_der(const unsigned char *der, int der_len, size_t *len, struct ac_err *err)
{
	char *pem = NULL, *data;
	BIO *mem = NULL;
	long n;

	*len = 0;
	mem = BIO_new(BIO_s_mem());
	if (mem == NULL || PEM_write_bio(mem, PEM_STRING_X509, "", der, der_len) <= 0) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "cert_encode_failed",
		           "cannot encode the certificate as PEM");
		goto out;
	}
	n = BIO_get_mem_data(mem, &data);
	pem = malloc((size_t)n + 1);
	if (pem == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto out;
	}
	memcpy(pem, data, (size_t)n);
	pem[n] = '\0';
	*len = (size_t)n;
out:
	BIO_free(mem);
	return pem;
}

/* When the holder is told to renew (renew_after). With a planner: the point it picks in
 * the leaf's renewal window, counted from issuance (ca/renewal_plan.h). Without: 2/3 of the
 * lifetime, or soon after a planned switch of intermediate, each leaf at its own point of
 * that window (by its random serial) so they do not all move at once. */
static int64_t
plan_renewal(const struct issuer *iss, const struct leaf_plan *plan, const char *serial)
{
	struct renewal_window w;
	int64_t issued_at = plan->not_before + CLOCK_SKEW;
	int64_t usual = plan->not_before + (plan->not_after - plan->not_before) * 2 / 3;
	uint64_t spread = 0;

	for (int i = 0; i < 12 && serial[i] != '\0'; i++)
		spread = spread * 16 + (uint64_t)(serial[i] <= '9' ? serial[i] - '0'
		                                                   : (serial[i] | 0x20) - 'a' + 10);
	if (iss->planner != NULL) {
		renewal_window_for(issued_at, plan->not_after, iss->supersede_at, spread, &w);
		return renewal_plan_place(iss->planner, issued_at, &w, spread >> 8);
	}
	if (iss->supersede_at > plan->not_before && iss->supersede_at < usual)
		return iss->supersede_at +
		       (int64_t)(spread % (uint64_t)((usual - iss->supersede_at) / 2 + 1));
	return usual;
}

/* Steps 7 and 8 for a checked request: sign, commit, fill res. The certificate is encoded
 * once: that DER goes to the store and becomes the PEM handed out. */
static int
sign_and_record(const struct issuer *iss, const struct issue_request *req, const struct csr *csr,
                const struct leaf_plan *plan, struct issue_result *res, struct ac_err *err)
{
	const struct ca_authority *ca = iss->authority;
	const char *spki_sha256 = csr->spki_sha256;
	char serial[41];
	char(*ip_text)[IP_TEXT_MAX] = NULL;
	const char **sans = NULL;
	unsigned char *der = NULL;
	struct cert_record rec;
	struct log_entry entry;
	struct store_write w;
	char *pem = NULL;
	size_t pem_len = 0, sans_count = 0;
	X509 *leaf = NULL;
	int der_len, rc = -1;

	leaf = build_leaf(iss, req, csr, plan, spki_sha256, serial, err);
	if (leaf == NULL)
		goto out;
	der_len = i2d_X509(leaf, &der);
	if (der_len <= 0) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "cert_encode_failed", "cannot encode the leaf");
		goto out;
	}
	pem = pem_from_der(der, der_len, &pem_len, err);
	if (pem == NULL)
		goto out;
	ip_text = calloc(plan->ip_count + 1, sizeof(*ip_text));
	if (ip_text == NULL ||
	    (sans = log_sans(req->subject, plan, ip_text, &sans_count)) == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto out;
	}

	memset(&rec, 0, sizeof(rec));
	rec.serial = serial;
	rec.subject = req->subject;
	rec.parent = req->parent;
	rec.spki_sha256 = spki_sha256;
	rec.issuer_fingerprint = ca->intermediate_fingerprint;
	rec.not_before = plan->not_before;
	rec.not_after = plan->not_after;
	rec.der = der;
	rec.der_len = (size_t)der_len;
	rec.depth = req->depth;
	rec.renew_after = plan_renewal(iss, plan, serial);

	memset(&entry, 0, sizeof(entry));
	entry.kind = req->kind != NULL ? req->kind : "issued";
	entry.actor = req->actor;
	entry.subject = req->subject;
	entry.serial = serial;
	entry.sans = sans;
	entry.sans_count = sans_count;
	entry.not_before = plan->not_before;
	entry.not_after = plan->not_after;
	entry.spki_sha256 = spki_sha256;
	entry.parent = req->parent;
	entry.request_id = req->request_id;

	memset(&w, 0, sizeof(w));
	w.cert = &rec;
	w.token_jti = req->token_jti;
	w.token_expires = req->token_expires;
	w.entry = &entry;
	if (store_submit(iss->store, &w, err) != 0) {
		renewal_plan_forget(iss->planner, rec.renew_after);
		goto out;
	}

	/* Durable: the certificate may now leave. */
	res->cert_pem = pem;
	res->cert_pem_len = pem_len;
	pem = NULL;
	res->chain_pem = ca->chain_pem;
	res->chain_pem_len = ca->chain_pem_len;
	memcpy(res->serial, serial, sizeof(res->serial));
	res->not_before = plan->not_before;
	res->not_after = plan->not_after;
	res->renew_after = rec.renew_after;
	res->log_seq = w.seq;
	log_debug("issued", "%s serial %s until %lld", req->subject, serial,
	          (long long)plan->not_after);
	rc = 0;
out:
	free(sans);
	free(ip_text);
	free(pem);
	OPENSSL_free(der);
	X509_free(leaf);
	return rc;
}

/* Issue one certificate, or refuse and record why. See the top of this file. The work is
 * done against a local error so that the denial is recorded with its reason even when the
 * caller passed no err. */
int
ca_issue(const struct issuer *iss, const struct issue_request *req, struct issue_result *res,
         struct ac_err *err)
{
	struct leaf_plan plan;
	struct issuer snapshot;
	struct csr *csr = NULL;
	struct ac_err e;
	int rc = -1;

	memset(res, 0, sizeof(*res));
	memset(&plan, 0, sizeof(plan));
	ac_err_clear(&e);
	/* One request sees one policy from start to end, even if a reload swaps it meanwhile
	 * (the daemon publishes a new policy with an atomic store and keeps the old alive). */
	snapshot.authority = __atomic_load_n(&iss->authority, __ATOMIC_ACQUIRE);
	snapshot.supersede_at = __atomic_load_n(&iss->supersede_at, __ATOMIC_RELAXED);
	snapshot.store = iss->store;
	snapshot.planner = iss->planner;
	snapshot.policy = __atomic_load_n(&iss->policy, __ATOMIC_ACQUIRE);
	if (check_request(&snapshot, req, &csr, &plan, &e) != 0) {
		record_denial(&snapshot, req, &e);
		goto out;
	}
	if (sign_and_record(&snapshot, req, csr, &plan, res, &e) != 0)
		goto out;
	rc = 0;
out:
	if (rc != 0)
		ac_err_set(err, e.code, e.reason, "%s", e.msg);
	free(plan.ip);
	free(plan.dns);
	csr_free(csr);
	return rc;
}

/* Free what ca_issue allocated in res (the chain is the authority's). */
void
issue_result_free(struct issue_result *res)
{
	if (res == NULL)
		return;
	free(res->cert_pem);
	memset(res, 0, sizeof(*res));
}

/* See issue.h: the engine's own denial record, for refusals decided outside it. */
void
issue_record_denial(const struct issuer *iss, const struct issue_request *req,
                    const struct ac_err *refusal)
{
	record_denial(iss, req, refusal);
}
