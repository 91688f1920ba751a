/*
 * ocsp.c - the OCSP responder: parsing requests, looking serials up, signing and caching
 * responses. See ocsp.h for the policy; this file reads top to bottom as parse, match the
 * issuer, look up, answer (from the cache or freshly signed).
 */
#include "ca/ocsp.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/x509v3.h>

#include "ca/crl.h"

/* One cached, signed response. key: serial + hash; empty when serial[0] == '\0'. */
struct ocsp_slot {
	char serial[41];
	enum ocsp_hash hash;
	enum ocsp_outcome outcome;
	int64_t fresh_until; /* unix seconds: served until then (half the validity) */
	unsigned char *der;
	size_t len;
};

struct ocsp_responder {
	const struct ca_authority *ca;
	struct store *store;
	EVP_MD *md[2];             /* SHA-1, SHA-256: fetched once */
	OCSP_CERTID *issuer_id[2]; /* our issuer's CertID (any serial) per hash, to compare */
	pthread_mutex_t lock;      /* guards slots and stats */
	struct ocsp_slot *slots;   /* OCSP_CACHE_SLOTS */
	uint64_t epoch;            /* +1 on each forget: an answer read before it is not cached */
	struct ocsp_stats stats;
};

/* ---- parsing ---- */

/* The serial as lowercase hex the way issuance writes it (BN_bn2hex), or "" when it cannot be
 * one of ours: zero, negative, or longer than 20 bytes. */
static int
serial_to_hex(const ASN1_INTEGER *serial, char out[41])
{
	BIGNUM *bn = ASN1_INTEGER_to_BN(serial, NULL);
	char *hex = NULL;
	int rc = -1;

	out[0] = '\0';
	if (bn == NULL)
		goto out;
	rc = 0;
	if (BN_is_negative(bn) || BN_is_zero(bn) || BN_num_bytes(bn) > 20)
		goto out;
	hex = BN_bn2hex(bn);
	if (hex == NULL || strlen(hex) > 40) {
		rc = -1;
		goto out;
	}
	for (size_t i = 0; hex[i] != '\0'; i++)
		out[i] = (char)(hex[i] >= 'A' && hex[i] <= 'F' ? hex[i] - 'A' + 'a' : hex[i]);
	out[strlen(hex)] = '\0';
out:
	OPENSSL_free(hex);
	BN_free(bn);
	return rc;
}

int
ocsp_request_parse(const unsigned char *der, size_t len, struct ocsp_query *q, struct ac_err *err)
{
	const unsigned char *p = der;
	OCSP_REQUEST *req = NULL;
	ASN1_OCTET_STRING *name_hash = NULL, *key_hash = NULL;
	ASN1_OBJECT *alg = NULL;
	ASN1_INTEGER *serial = NULL;
	OCSP_CERTID *id;
	int nid, ext, rc = -1;

	memset(q, 0, sizeof(*q));
	if (der == NULL || len == 0 || len > OCSP_REQUEST_MAX) {
		ac_err_set(err, AC_ERR_INVALID, "ocsp_malformed",
		           "an OCSP request must be 1 to %d bytes of DER", OCSP_REQUEST_MAX);
		goto out;
	}
	req = d2i_OCSP_REQUEST(NULL, &p, (long)len);
	if (req == NULL || p != der + len) {
		ac_err_set(err, AC_ERR_INVALID, "ocsp_malformed",
		           "the body is not one DER OCSPRequest");
		goto out;
	}
	if (OCSP_request_onereq_count(req) != 1) {
		ac_err_set(err, AC_ERR_INVALID, "ocsp_malformed",
		           "an OCSP request must ask about exactly one certificate (it asks %d)",
		           OCSP_request_onereq_count(req));
		goto out;
	}
	id = OCSP_onereq_get0_id(OCSP_request_onereq_get0(req, 0));
	if (id == NULL || !OCSP_id_get0_info(&name_hash, &alg, &key_hash, &serial, id) ||
	    name_hash == NULL || key_hash == NULL || alg == NULL || serial == NULL ||
	    ASN1_STRING_length(name_hash) > (int)sizeof(q->name_hash) ||
	    ASN1_STRING_length(key_hash) > (int)sizeof(q->key_hash)) {
		ac_err_set(err, AC_ERR_INVALID, "ocsp_malformed",
		           "the request's CertID is incomplete or oversized");
		goto out;
	}
	nid = OBJ_obj2nid(alg);
	q->hash = nid == NID_sha1     ? OCSP_HASH_SHA1
	          : nid == NID_sha256 ? OCSP_HASH_SHA256
	                              : OCSP_HASH_OTHER;
	q->name_hash_len = (size_t)ASN1_STRING_length(name_hash);
	memcpy(q->name_hash, ASN1_STRING_get0_data(name_hash), q->name_hash_len);
	q->key_hash_len = (size_t)ASN1_STRING_length(key_hash);
	memcpy(q->key_hash, ASN1_STRING_get0_data(key_hash), q->key_hash_len);
	if (serial_to_hex(serial, q->serial) != 0 ||
	    i2d_ASN1_INTEGER(serial, NULL) > OCSP_SERIAL_DER_MAX) {
		ac_err_ssl(err, AC_ERR_INVALID, "ocsp_malformed",
		           "the request's serial is unreadable or longer than %d bytes",
		           OCSP_SERIAL_DER_MAX);
		goto out;
	}
	{
		unsigned char *out_der = q->serial_der;

		q->serial_der_len = (size_t)i2d_ASN1_INTEGER(serial, &out_der);
	}
	/* RFC 8954: a nonce is 1 to 32 bytes; its extnValue is that OCTET STRING's DER. */
	ext = OCSP_REQUEST_get_ext_by_NID(req, NID_id_pkix_OCSP_Nonce, -1);
	if (ext >= 0) {
		ASN1_OCTET_STRING *value = X509_EXTENSION_get_data(OCSP_REQUEST_get_ext(req, ext));
		int n = value != NULL ? ASN1_STRING_length(value) : 0;

		if (OCSP_REQUEST_get_ext_by_NID(req, NID_id_pkix_OCSP_Nonce, ext) >= 0 || n < 3 ||
		    n > OCSP_NONCE_EXT_MAX) {
			ac_err_set(err, AC_ERR_INVALID, "ocsp_malformed",
			           "the nonce must appear once and hold 1 to 32 bytes");
			goto out;
		}
		q->nonce_len = (size_t)n;
		memcpy(q->nonce, ASN1_STRING_get0_data(value), q->nonce_len);
	}
	rc = 0;
out:
	OCSP_REQUEST_free(req);
	return rc;
}

/* ---- the responder ---- */

struct ocsp_responder *
ocsp_responder_new(const struct ca_authority *ca, struct store *st, struct ac_err *err)
{
	static const char *const md_names[2] = {"SHA1", "SHA256"};
	struct ocsp_responder *r = calloc(1, sizeof(*r));
	ASN1_INTEGER *zero = ASN1_INTEGER_new();

	if (r == NULL || zero == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto fail;
	}
	r->ca = ca;
	r->store = st;
	pthread_mutex_init(&r->lock, NULL);
	r->slots = calloc(OCSP_CACHE_SLOTS, sizeof(*r->slots));
	if (r->slots == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto fail;
	}
	for (int i = 0; i < 2; i++) {
		r->md[i] = EVP_MD_fetch(NULL, md_names[i], NULL);
		r->issuer_id[i] =
		    r->md[i] != NULL
		        ? OCSP_cert_id_new(r->md[i], X509_get_subject_name(ca->intermediate),
		                           X509_get0_pubkey_bitstr(ca->intermediate), zero)
		        : NULL;
		if (r->issuer_id[i] == NULL) {
			ac_err_ssl(err, AC_ERR_CRYPTO, "ocsp_failed",
			           "cannot hash the intermediate's name and key with %s",
			           md_names[i]);
			goto fail;
		}
	}
	ASN1_INTEGER_free(zero);
	return r;
fail:
	ASN1_INTEGER_free(zero);
	ocsp_responder_free(r);
	return NULL;
}

void
ocsp_responder_free(struct ocsp_responder *r)
{
	if (r == NULL)
		return;
	for (int i = 0; i < 2; i++) {
		OCSP_CERTID_free(r->issuer_id[i]);
		EVP_MD_free(r->md[i]);
	}
	if (r->slots != NULL) {
		for (size_t i = 0; i < OCSP_CACHE_SLOTS; i++)
			free(r->slots[i].der);
		free(r->slots);
		pthread_mutex_destroy(&r->lock);
	}
	free(r);
}

/* FNV-1a of the key: serials are random, so this spreads them over the table. */
static size_t
slot_index(const char *serial, enum ocsp_hash hash)
{
	uint32_t h = 2166136261u ^ (uint32_t)hash;

	for (const char *s = serial; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h % OCSP_CACHE_SLOTS;
}

/* Copy the cached answer for (serial, hash) if fresh. Lock held. */
static int
cache_get(struct ocsp_responder *r, const char *serial, enum ocsp_hash hash, int64_t now,
          unsigned char **der, size_t *len, enum ocsp_outcome *outcome)
{
	struct ocsp_slot *s = &r->slots[slot_index(serial, hash)];

	if (s->der == NULL || s->hash != hash || strcmp(s->serial, serial) != 0 ||
	    now >= s->fresh_until || now < s->fresh_until - OCSP_VALIDITY)
		return -1;
	*der = malloc(s->len);
	if (*der == NULL)
		return -1;
	memcpy(*der, s->der, s->len);
	*len = s->len;
	*outcome = s->outcome;
	return 0;
}

/* Keep a copy of a freshly signed answer. Lock held. */
static void
cache_put(struct ocsp_responder *r, const char *serial, enum ocsp_hash hash, int64_t now,
          const unsigned char *der, size_t len, enum ocsp_outcome outcome)
{
	struct ocsp_slot *s = &r->slots[slot_index(serial, hash)];
	unsigned char *copy = malloc(len);

	if (copy == NULL)
		return; /* not cached: the next request signs again */
	memcpy(copy, der, len);
	free(s->der);
	snprintf(s->serial, sizeof(s->serial), "%s", serial);
	s->hash = hash;
	s->outcome = outcome;
	s->fresh_until = now + OCSP_VALIDITY / 2;
	s->der = copy;
	s->len = len;
}

void
ocsp_responder_forget(struct ocsp_responder *r, const char *serial)
{
	char lower[41];
	size_t n = serial != NULL ? strlen(serial) : 0;

	if (n == 0 || n >= sizeof(lower))
		return;
	for (size_t i = 0; i <= n; i++)
		lower[i] = (char)(serial[i] >= 'A' && serial[i] <= 'F' ? serial[i] - 'A' + 'a'
		                                                       : serial[i]);
	pthread_mutex_lock(&r->lock);
	for (int h = 0; h < 2; h++) {
		struct ocsp_slot *s = &r->slots[slot_index(lower, (enum ocsp_hash)h)];

		if (s->der != NULL && strcmp(s->serial, lower) == 0) {
			free(s->der);
			memset(s, 0, sizeof(*s));
		}
	}
	r->epoch++;
	pthread_mutex_unlock(&r->lock);
}

const char *
ocsp_outcome_name(enum ocsp_outcome outcome)
{
	static const char *const names[OCSP_OUTCOMES] = {
	    [OCSP_GOOD] = "good",
	    [OCSP_REVOKED] = "revoked",
	    [OCSP_UNKNOWN] = "unknown",
	    [OCSP_MALFORMED] = "malformedRequest",
	    [OCSP_UNAUTHORIZED] = "unauthorized",
	    [OCSP_TRY_LATER] = "tryLater",
	};

	return (unsigned)outcome < OCSP_OUTCOMES ? names[outcome] : "unknown";
}

/* Count one answer. */
static void
count_outcome(struct ocsp_responder *r, enum ocsp_outcome outcome)
{
	pthread_mutex_lock(&r->lock);
	if ((unsigned)outcome < OCSP_OUTCOMES)
		r->stats.outcomes[outcome]++;
	pthread_mutex_unlock(&r->lock);
}

void
ocsp_responder_stats(struct ocsp_responder *r, struct ocsp_stats *out)
{
	pthread_mutex_lock(&r->lock);
	*out = r->stats;
	pthread_mutex_unlock(&r->lock);
}

/* An OCSPResponse DER into a malloc'd buffer. */
static int
response_der(OCSP_RESPONSE *resp, unsigned char **der, size_t *len, struct ac_err *err)
{
	unsigned char *ossl = NULL;
	int n = resp != NULL ? i2d_OCSP_RESPONSE(resp, &ossl) : -1;

	if (n <= 0 || (*der = malloc((size_t)n)) == NULL) {
		OPENSSL_free(ossl);
		return ac_err_ssl(err, AC_ERR_INTERNAL, "ocsp_failed",
		                  "cannot encode the response");
	}
	memcpy(*der, ossl, (size_t)n);
	*len = (size_t)n;
	OPENSSL_free(ossl);
	return 0;
}

/* An unsigned error response (malformedRequest, unauthorized, tryLater). */
static int
error_response(int status, unsigned char **der, size_t *len, struct ac_err *err)
{
	OCSP_RESPONSE *resp = OCSP_response_create(status, NULL);
	int rc = response_der(resp, der, len, err);

	OCSP_RESPONSE_free(resp);
	return rc;
}

/* Our issuer's index (the hash) when the CertID names our intermediate, else -1. */
static int
issuer_match(const struct ocsp_responder *r, const struct ocsp_query *q)
{
	const ASN1_OCTET_STRING *name = NULL, *key = NULL;
	int i = (int)q->hash;

	if (q->hash == OCSP_HASH_OTHER)
		return -1;
	OCSP_id_get0_info((ASN1_OCTET_STRING **)&name, NULL, (ASN1_OCTET_STRING **)&key, NULL,
	                  r->issuer_id[i]);
	if ((size_t)ASN1_STRING_length(name) != q->name_hash_len ||
	    (size_t)ASN1_STRING_length(key) != q->key_hash_len ||
	    memcmp(ASN1_STRING_get0_data(name), q->name_hash, q->name_hash_len) != 0 ||
	    memcmp(ASN1_STRING_get0_data(key), q->key_hash, q->key_hash_len) != 0)
		return -1;
	return i;
}

/* Sign a response about q's serial in state outcome (revoked_at, reason for OCSP_REVOKED). */
static int
sign_response(struct ocsp_responder *r, const struct ocsp_query *q, const ASN1_INTEGER *serial,
              enum ocsp_outcome outcome, int64_t revoked_at, const char *reason, int64_t now,
              unsigned char **der, size_t *len, struct ac_err *err)
{
	const struct ca_authority *ca = r->ca;
	OCSP_BASICRESP *basic = OCSP_BASICRESP_new();
	OCSP_CERTID *id = NULL;
	OCSP_RESPONSE *resp = NULL;
	ASN1_TIME *this_update = ASN1_TIME_set(NULL, (time_t)now);
	ASN1_TIME *next_update = ASN1_TIME_set(NULL, (time_t)(now + OCSP_VALIDITY));
	ASN1_TIME *rev_time = NULL;
	ASN1_OCTET_STRING *nonce = NULL;
	X509_EXTENSION *ext = NULL;
	EVP_MD_CTX *mctx = EVP_MD_CTX_new();
	int status, code = -1, rc = -1;

	if (basic == NULL || this_update == NULL || next_update == NULL || mctx == NULL)
		goto fail;
	/* Our own CertID (same hash as asked): the same bytes for every client, so cacheable. */
	id = OCSP_cert_id_new(r->md[q->hash], X509_get_subject_name(ca->intermediate),
	                      X509_get0_pubkey_bitstr(ca->intermediate), serial);
	if (id == NULL)
		goto fail;
	status = outcome == OCSP_GOOD      ? V_OCSP_CERTSTATUS_GOOD
	         : outcome == OCSP_REVOKED ? V_OCSP_CERTSTATUS_REVOKED
	                                   : V_OCSP_CERTSTATUS_UNKNOWN;
	if (outcome == OCSP_REVOKED) {
		rev_time = ASN1_TIME_set(NULL, (time_t)revoked_at);
		if (rev_time == NULL)
			goto fail;
		code = crl_reason_code(reason);
		if (code == CRL_REASON_UNSPECIFIED)
			code = -1; /* as in the CRL: omit rather than say "unspecified" */
	}
	if (OCSP_basic_add1_status(basic, id, status, code, rev_time, this_update, next_update) ==
	    NULL)
		goto fail;
	if (q->nonce_len > 0) {
		/* Echo the extension's value byte for byte (RFC 6960 4.4.1). */
		nonce = ASN1_OCTET_STRING_new();
		if (nonce == NULL || !ASN1_OCTET_STRING_set(nonce, q->nonce, (int)q->nonce_len) ||
		    (ext = X509_EXTENSION_create_by_NID(NULL, NID_id_pkix_OCSP_Nonce, 0, nonce)) ==
		        NULL ||
		    !OCSP_BASICRESP_add_ext(basic, ext, -1))
			goto fail;
	}
	if (EVP_DigestSignInit(mctx, NULL, ca->sign_md, NULL, ca->intermediate_key) != 1 ||
	    !OCSP_basic_sign_ctx(basic, ca->intermediate, mctx, ca->upstream, OCSP_RESPID_KEY))
		goto fail;
	resp = OCSP_response_create(OCSP_RESPONSE_STATUS_SUCCESSFUL, basic);
	if (response_der(resp, der, len, err) != 0)
		goto out;
	rc = 0;
	goto out;
fail:
	ac_err_ssl(err, AC_ERR_CRYPTO, "ocsp_failed", "cannot sign the OCSP response for %s",
	           q->serial[0] != '\0' ? q->serial : "a foreign serial");
out:
	EVP_MD_CTX_free(mctx);
	X509_EXTENSION_free(ext);
	ASN1_OCTET_STRING_free(nonce);
	ASN1_TIME_free(rev_time);
	ASN1_TIME_free(next_update);
	ASN1_TIME_free(this_update);
	OCSP_RESPONSE_free(resp);
	OCSP_CERTID_free(id);
	OCSP_BASICRESP_free(basic);
	return rc;
}

/* The answer to one request; ocsp_respond() counts it. */
static int
respond(struct ocsp_responder *r, const unsigned char *req, size_t len, int64_t now,
        unsigned char **resp, size_t *resp_len, enum ocsp_outcome *outcome, struct ac_err *err)
{
	struct ocsp_query q;
	struct cert_row row;
	struct ac_err why;
	ASN1_INTEGER *serial = NULL;
	int64_t revoked_at = 0;
	char *reason = NULL;
	uint64_t epoch;
	int have_row = 0, rc = -1;

	*resp = NULL;
	*resp_len = 0;
	memset(&row, 0, sizeof(row));
	ac_err_clear(&why);
	pthread_mutex_lock(&r->lock);
	r->stats.requests++;
	epoch = r->epoch;
	pthread_mutex_unlock(&r->lock);

	if (ocsp_request_parse(req, len, &q, &why) != 0) {
		*outcome = OCSP_MALFORMED;
		return error_response(OCSP_RESPONSE_STATUS_MALFORMEDREQUEST, resp, resp_len, err);
	}
	if (issuer_match(r, &q) < 0) {
		*outcome = OCSP_UNAUTHORIZED;
		return error_response(OCSP_RESPONSE_STATUS_UNAUTHORIZED, resp, resp_len, err);
	}
	/* The hot path: a request without a nonce for a serial answered recently. */
	if (q.nonce_len == 0 && q.serial[0] != '\0') {
		pthread_mutex_lock(&r->lock);
		rc = cache_get(r, q.serial, q.hash, now, resp, resp_len, outcome);
		if (rc == 0)
			r->stats.cache_hits++;
		pthread_mutex_unlock(&r->lock);
		if (rc == 0)
			return 0;
		rc = -1;
	}

	*outcome = OCSP_UNKNOWN;
	if (q.serial[0] != '\0') {
		if (store_cert_get(r->store, q.serial, &row, &why) == 0) {
			have_row = 1;
			*outcome = row.revoked_at != 0 ? OCSP_REVOKED : OCSP_GOOD;
			revoked_at = row.revoked_at;
			reason = row.revoke_reason;
		} else if (why.code != AC_ERR_NOTFOUND) {
			*outcome = OCSP_TRY_LATER;
			rc = error_response(OCSP_RESPONSE_STATUS_TRYLATER, resp, resp_len, err);
			goto out;
		}
	}
	{
		const unsigned char *p = q.serial_der;

		serial = d2i_ASN1_INTEGER(NULL, &p, (long)q.serial_der_len);
	}
	if (serial == NULL) {
		ac_err_ssl(err, AC_ERR_INTERNAL, "out_of_memory", "cannot copy the serial");
		goto out;
	}
	if (sign_response(r, &q, serial, *outcome, revoked_at, reason, now, resp, resp_len, err) !=
	    0)
		goto out;
	pthread_mutex_lock(&r->lock);
	r->stats.signatures++;
	/* Not when a revocation was seen since the store was read: that answer may be stale. */
	if (q.nonce_len == 0 && q.serial[0] != '\0' && epoch == r->epoch)
		cache_put(r, q.serial, q.hash, now, *resp, *resp_len, *outcome);
	pthread_mutex_unlock(&r->lock);
	rc = 0;
out:
	ASN1_INTEGER_free(serial);
	if (have_row)
		store_cert_row_free(&row);
	return rc;
}

int
ocsp_respond(struct ocsp_responder *r, const unsigned char *req, size_t len, int64_t now,
             unsigned char **resp, size_t *resp_len, enum ocsp_outcome *outcome, struct ac_err *err)
{
	int rc = respond(r, req, len, now, resp, resp_len, outcome, err);

	if (rc == 0)
		count_outcome(r, *outcome);
	return rc;
}
