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
 * The leaf is encoded as DER here (see "Step 7") and signed once, rather than assembled
 * from OpenSSL's typed structures, which cost about as much as the signature.
 * The subjectKeyIdentifier is the SHA-256 of the SubjectPublicKeyInfo (RFC 7093, method 4),
 * the same hash the store and the log carry as spki_sha256, so both are computed once.
 */
#include "ca/issue.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "ca/csr.h"
#include "ca/der.h"
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

	if (req->parsed_csr != NULL) {
		/* Borrowed: check_request's caller must not free it (see ca_issue). */
		csr = (struct csr *)req->parsed_csr;
	} else if (req->csr == NULL && req->renew_cert_der != NULL) {
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
 * Step 7: the leaf, encoded here as DER and signed once.
 *
 * Every leaf has the same shape: version 3, a 128-bit serial, the intermediate as issuer,
 * the validity, subject "O=<CA name>[, CN=<first DNS name>]", the requester's
 * SubjectPublicKeyInfo as its CSR carried it, and the extensions in this order:
 * basicConstraints (critical, not a CA), keyUsage (critical: digitalSignature, and
 * keyEncipherment for RSA), extKeyUsage (serverAuth, clientAuth), subjectKeyIdentifier
 * (SHA-256 of the SPKI), authorityKeyIdentifier (the intermediate's SKI), subjectAltName
 * (the SPIFFE ID, then DNS names, then IPs), and when policy names them cRLDistributionPoints
 * and authorityInfoAccess (OCSP). Building that through OpenSSL's X509 objects cost about as
 * much as the signature itself (every field allocated, encoded for the extension, decoded,
 * encoded again to sign, and once more to store); writing the DER directly is a few
 * hundred bytes of copying. tests/unit/test_issue.c checks the bytes against the
 * TBSCertificate OpenSSL's typed API builds from the same values.
 */

/* The fixed extensions, DER: Extension ::= SEQUENCE { extnID, critical, extnValue }. */
static const unsigned char ext_basic_constraints[] = {
    0x30, 0x0c, 0x06, 0x03, 0x55, 0x1d, 0x13, /* basicConstraints */
    0x01, 0x01, 0xff,                         /* critical */
    0x04, 0x02, 0x30, 0x00,                   /* SEQUENCE {}: cA FALSE */
};
static const unsigned char ext_key_usage_sign[] = {
    0x30, 0x0e, 0x06, 0x03, 0x55, 0x1d, 0x0f, /* keyUsage */
    0x01, 0x01, 0xff,                         /* critical */
    0x04, 0x04, 0x03, 0x02, 0x07, 0x80,       /* digitalSignature */
};
static const unsigned char ext_key_usage_sign_encipher[] = {
    0x30, 0x0e, 0x06, 0x03, 0x55, 0x1d, 0x0f, /* keyUsage */
    0x01, 0x01, 0xff,                         /* critical */
    0x04, 0x04, 0x03, 0x02, 0x05, 0xa0,       /* digitalSignature, keyEncipherment */
};
static const unsigned char ext_ext_key_usage[] = {
    0x30, 0x1d, 0x06, 0x03, 0x55, 0x1d, 0x25,                   /* extKeyUsage */
    0x04, 0x16, 0x30, 0x14,                                     /* SEQUENCE OF KeyPurposeId */
    0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01, /* serverAuth */
    0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02, /* clientAuth */
};
static const unsigned char version_3[] = {0xa0, 0x03, 0x02, 0x01, 0x02}; /* [0] INTEGER 2 */
static const unsigned char oid_common_name[] = {0x55, 0x04, 0x03};
static const unsigned char oid_ski[] = {0x55, 0x1d, 0x0e};
static const unsigned char oid_aki[] = {0x55, 0x1d, 0x23};
static const unsigned char oid_san[] = {0x55, 0x1d, 0x11};
static const unsigned char oid_crl_points[] = {0x55, 0x1d, 0x1f};
static const unsigned char oid_info_access[] = {0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x01};
static const unsigned char oid_ad_ocsp[] = {0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01};

/* GeneralName tags (RFC 5280 4.2.1.6), IMPLICIT and primitive. */
#define GN_DNS DER_CONTEXT(2)
#define GN_URI DER_CONTEXT(6)
#define GN_IP DER_CONTEXT(7)

/*
 * The subject's "O=<CA name>" RDN, DER, made by OpenSSL (which checks the name is UTF-8 and
 * within X.520's bound) once per thread and CA name, and reused: the name changes only when
 * the CA does.
 */
struct org_rdn {
	char *org;          /* the CA name it was made for */
	unsigned char *rdn; /* RelativeDistinguishedName (SET) DER */
	size_t rdn_len;
};

static pthread_once_t org_once = PTHREAD_ONCE_INIT;
static pthread_key_t org_key;
static int org_key_ok;

static void
org_rdn_free(void *arg)
{
	struct org_rdn *o = arg;

	if (o == NULL)
		return;
	free(o->org);
	OPENSSL_free(o->rdn);
	free(o);
}

static void
org_init_once(void)
{
	org_key_ok = pthread_key_create(&org_key, org_rdn_free) == 0;
}

/* Build o->rdn for org: a Name with only O, without its outer SEQUENCE header. */
static int
org_rdn_make(struct org_rdn *o, const char *org)
{
	X509_NAME *name = X509_NAME_new();
	unsigned char *der = NULL;
	size_t head;
	int len, rc = -1;

	if (name == NULL ||
	    !X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (const unsigned char *)org, -1,
	                                -1, 0) ||
	    (len = i2d_X509_NAME(name, &der)) < 2)
		goto out;
	/* The Name's SEQUENCE header: tag, then one length byte or 0x81/0x82 and one or two. */
	head = der[1] < 0x80 ? 2 : 2 + (size_t)(der[1] & 0x7f);
	if (head >= (size_t)len || (o->org = strdup(org)) == NULL)
		goto out;
	o->rdn_len = (size_t)len - head;
	o->rdn = OPENSSL_memdup(der + head, o->rdn_len);
	if (o->rdn == NULL) {
		free(o->org);
		o->org = NULL;
		goto out;
	}
	rc = 0;
out:
	OPENSSL_free(der);
	X509_NAME_free(name);
	return rc;
}

/* This thread's O RDN for org; NULL on failure (out of memory, or a name OpenSSL refuses). */
static const struct org_rdn *
org_rdn_get(const char *org)
{
	struct org_rdn *o;

	pthread_once(&org_once, org_init_once);
	if (!org_key_ok)
		return NULL;
	o = pthread_getspecific(org_key);
	if (o == NULL) {
		if ((o = calloc(1, sizeof(*o))) == NULL)
			return NULL;
		if (pthread_setspecific(org_key, o) != 0) {
			free(o);
			return NULL;
		}
	}
	if (o->org != NULL && strcmp(o->org, org) == 0)
		return o;
	free(o->org);
	OPENSSL_free(o->rdn);
	memset(o, 0, sizeof(*o));
	return org_rdn_make(o, org) == 0 ? o : NULL;
}

/* Open an Extension: its SEQUENCE, extnID, critical when set, and the extnValue OCTET
 * STRING, whose mark goes to *value. */
static size_t
ext_begin(struct der_buf *d, const unsigned char *oid, size_t oid_len, size_t *value)
{
	size_t mark = der_begin(d, DER_SEQUENCE);

	der_prim(d, DER_OID, oid, oid_len);
	*value = der_begin(d, DER_OCTET_STRING);
	return mark;
}

static void
ext_end(struct der_buf *d, size_t mark, size_t value)
{
	der_end(d, value);
	der_end(d, mark);
}

/* Subject "O=<CA name>" and, when the leaf has a DNS name short enough for a CN, "CN=<it>".
 * Relying parties use the SAN; the CN is for people and old tools. */
static void
put_subject(struct der_buf *d, const struct org_rdn *org, const struct leaf_plan *plan)
{
	size_t name = der_begin(d, DER_SEQUENCE), set, atv;

	der_raw(d, org->rdn, org->rdn_len);
	if (plan->dns_count > 0 && plan->dns[0]->len <= ub_common_name) {
		set = der_begin(d, DER_SET);
		atv = der_begin(d, DER_SEQUENCE);
		der_prim(d, DER_OID, oid_common_name, sizeof(oid_common_name));
		der_prim(d, DER_UTF8STRING, plan->dns[0]->value, plan->dns[0]->len);
		der_end(d, atv);
		der_end(d, set);
	}
	der_end(d, name);
}

/* The authorityKeyIdentifier's keyIdentifier: the intermediate's own SKI, or when it has
 * none, the SHA-1 of its public key bits (RFC 5280 4.2.1.2, method 1). */
static int
issuer_key_id(X509 *issuer, unsigned char id[EVP_MAX_MD_SIZE], size_t *len, struct ac_err *err)
{
	const ASN1_OCTET_STRING *ski = X509_get0_subject_key_id(issuer);
	const ASN1_BIT_STRING *bits;
	unsigned int n = 0;

	if (ski != NULL && ASN1_STRING_length(ski) > 0 &&
	    ASN1_STRING_length(ski) <= EVP_MAX_MD_SIZE) {
		*len = (size_t)ASN1_STRING_length(ski);
		memcpy(id, ASN1_STRING_get0_data(ski), *len);
		return 0;
	}
	ERR_clear_error();
	bits = X509_get0_pubkey_bitstr(issuer);
	if (bits == NULL ||
	    EVP_Digest(ASN1_STRING_get0_data(bits), (size_t)ASN1_STRING_length(bits), id, &n,
	               EVP_sha1(), NULL) != 1)
		return ac_err_ssl(err, AC_ERR_CRYPTO, "cert_build_failed",
		                  "cannot compute the intermediate's key identifier");
	*len = n;
	return 0;
}

/* The extensions, in the order at the top of this section. */
static int
put_extensions(struct der_buf *d, const struct issuer *iss, const struct issue_request *req,
               const struct csr *csr, const struct leaf_plan *plan, struct ac_err *err)
{
	const struct ca_policy *policy = iss->policy;
	unsigned char ski[32], aki[EVP_MAX_MD_SIZE];
	size_t aki_len = 0, outer, list, ext, value, inner, point, name, full;

	if (hex_decode(csr->spki_sha256, ski, sizeof(ski)) != 0)
		return ac_err_set(err, AC_ERR_INTERNAL, "cert_build_failed", "bad SPKI hash");
	if (issuer_key_id(iss->authority->intermediate, aki, &aki_len, err) != 0)
		return -1;
	outer = der_begin(d, DER_CONTEXT_CONS(3));
	list = der_begin(d, DER_SEQUENCE);
	der_raw(d, ext_basic_constraints, sizeof(ext_basic_constraints));
	if (EVP_PKEY_is_a(csr->key, "RSA"))
		der_raw(d, ext_key_usage_sign_encipher, sizeof(ext_key_usage_sign_encipher));
	else
		der_raw(d, ext_key_usage_sign, sizeof(ext_key_usage_sign));
	der_raw(d, ext_ext_key_usage, sizeof(ext_ext_key_usage));

	ext = ext_begin(d, oid_ski, sizeof(oid_ski), &value);
	der_prim(d, DER_OCTET_STRING, ski, sizeof(ski));
	ext_end(d, ext, value);

	ext = ext_begin(d, oid_aki, sizeof(oid_aki), &value);
	inner = der_begin(d, DER_SEQUENCE);
	der_prim(d, DER_CONTEXT(0), aki, aki_len); /* keyIdentifier [0] */
	der_end(d, inner);
	ext_end(d, ext, value);

	ext = ext_begin(d, oid_san, sizeof(oid_san), &value);
	inner = der_begin(d, DER_SEQUENCE);
	der_prim(d, GN_URI, req->subject, strlen(req->subject));
	for (size_t i = 0; i < plan->dns_count; i++)
		der_prim(d, GN_DNS, plan->dns[i]->value, plan->dns[i]->len);
	for (size_t i = 0; i < plan->ip_count; i++)
		der_prim(d, GN_IP, plan->ip[i]->value, plan->ip[i]->len);
	der_end(d, inner);
	ext_end(d, ext, value);

	if (policy->crl_url != NULL) {
		/* SEQUENCE OF DistributionPoint { distributionPoint [0] { fullName [1] } } */
		ext = ext_begin(d, oid_crl_points, sizeof(oid_crl_points), &value);
		inner = der_begin(d, DER_SEQUENCE);
		point = der_begin(d, DER_SEQUENCE);
		name = der_begin(d, DER_CONTEXT_CONS(0));
		full = der_begin(d, DER_CONTEXT_CONS(0));
		der_prim(d, GN_URI, policy->crl_url, strlen(policy->crl_url));
		der_end(d, full);
		der_end(d, name);
		der_end(d, point);
		der_end(d, inner);
		ext_end(d, ext, value);
	}
	if (policy->ocsp_url != NULL) {
		/* SEQUENCE OF AccessDescription { id-ad-ocsp, GeneralName } */
		ext = ext_begin(d, oid_info_access, sizeof(oid_info_access), &value);
		inner = der_begin(d, DER_SEQUENCE);
		point = der_begin(d, DER_SEQUENCE);
		der_prim(d, DER_OID, oid_ad_ocsp, sizeof(oid_ad_ocsp));
		der_prim(d, GN_URI, policy->ocsp_url, strlen(policy->ocsp_url));
		der_end(d, point);
		der_end(d, inner);
		ext_end(d, ext, value);
	}
	der_end(d, list);
	der_end(d, outer);
	return 0;
}

/* Build and sign the leaf: its DER in *cert (the caller frees it with der_free), its serial
 * in hex. */
static int
build_leaf(const struct issuer *iss, const struct issue_request *req, const struct csr *csr,
           const struct leaf_plan *plan, char serial_hex[41], struct der_buf *cert,
           struct ac_err *err)
{
	const struct ca_authority *ca = iss->authority;
	const X509_NAME *issuer = X509_get_subject_name(ca->intermediate);
	const struct org_rdn *org = org_rdn_get(ca->name);
	struct x509_signer signer;
	struct der_buf tbs;
	unsigned char serial[X509_SERIAL_BYTES], *p;
	size_t seq, validity;
	int issuer_len, rc = -1;

	memset(&tbs, 0, sizeof(tbs));
	memset(&signer, 0, sizeof(signer));
	if (org == NULL) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "cert_build_failed",
		           "cannot encode the CA name \"%s\" as the subject's organization",
		           ca->name);
		goto out;
	}
	if (x509_random_serial(serial, serial_hex, err) != 0 ||
	    x509_signer_begin(&signer, ca->intermediate_key, ca->sign_md, err) != 0)
		goto out;
	issuer_len = i2d_X509_NAME(issuer, NULL);
	if (issuer_len <= 0) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "cert_build_failed", "cannot encode the issuer");
		goto out;
	}

	seq = der_begin(&tbs, DER_SEQUENCE);
	der_raw(&tbs, version_3, sizeof(version_3));
	der_prim(&tbs, DER_INTEGER, serial, sizeof(serial));
	der_raw(&tbs, signer.algid, signer.algid_len);
	if ((p = der_put(&tbs, (size_t)issuer_len)) != NULL &&
	    i2d_X509_NAME(issuer, &p) != issuer_len)
		tbs.failed = 1;
	validity = der_begin(&tbs, DER_SEQUENCE);
	if (der_time(&tbs, plan->not_before) != 0 || der_time(&tbs, plan->not_after) != 0) {
		ac_err_set(err, AC_ERR_INVALID, "validity_invalid",
		           "the validity cannot be encoded");
		goto out;
	}
	der_end(&tbs, validity);
	put_subject(&tbs, org, plan);
	der_raw(&tbs, csr->spki_der, csr->spki_der_len);
	if (put_extensions(&tbs, iss, req, csr, plan, err) != 0)
		goto out;
	der_end(&tbs, seq);
	if (tbs.failed) {
		ac_err_set(err, AC_ERR_INTERNAL, "cert_build_failed",
		           "the certificate is too large to encode (or out of memory)");
		goto out;
	}
	if (x509_signer_certificate(&signer, tbs.data, tbs.len, cert, err) != 0)
		goto out;
	rc = 0;
out:
	x509_signer_end(&signer);
	der_free(&tbs);
	return rc;
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
 * certificate once more: the same bytes PEM_write_bio_X509 writes (base64 in lines of 64
 * characters between the CERTIFICATE lines). NUL-terminated heap buffer; *len excludes the
 * NUL. */
static char *
pem_from_der(const unsigned char *der, size_t der_len, size_t *len, struct ac_err *err)
{
	static const char begin[] = "-----BEGIN CERTIFICATE-----\n";
	static const char end[] = "-----END CERTIFICATE-----\n";
	size_t lines = (der_len + 47) / 48, cap, n;
	char *pem;

	*len = 0;
	/* Each 48-byte line is 64 characters and a newline; the last may be shorter. */
	cap = sizeof(begin) - 1 + lines * 65 + sizeof(end);
	pem = malloc(cap);
	if (pem == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		return NULL;
	}
	memcpy(pem, begin, sizeof(begin) - 1);
	n = sizeof(begin) - 1;
	for (size_t off = 0; off < der_len; off += 48) {
		size_t chunk = der_len - off < 48 ? der_len - off : 48;

		n += (size_t)EVP_EncodeBlock((unsigned char *)pem + n, der + off, (int)chunk);
		pem[n++] = '\n';
	}
	memcpy(pem + n, end, sizeof(end)); /* with its NUL */
	*len = n + sizeof(end) - 1;
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
	struct der_buf der;
	struct cert_record rec;
	struct log_entry entry;
	struct store_write w;
	char *pem = NULL;
	size_t pem_len = 0, sans_count = 0;
	int rc = -1;

	memset(&der, 0, sizeof(der));
	if (build_leaf(iss, req, csr, plan, serial, &der, err) != 0)
		goto out;
	pem = pem_from_der(der.data, der.len, &pem_len, err);
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
	rec.der = der.data;
	rec.der_len = der.len;
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
	der_free(&der);
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
	snapshot.authority = issuer_authority(iss);
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
	if (csr != req->parsed_csr)
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
