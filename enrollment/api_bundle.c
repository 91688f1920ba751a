/*
 * api_bundle.c - GET /v1/bundle: the trust bundle (our root and the roots added with
 * `trust add`), its reload, and the long-poll that lets gateways learn of a change at once;
 * POST /v1/bundle/ack: a gateway reports the bundle sequence it holds (intermediate
 * rotation waits for these when acknowledgments are on, ca/rotate.h).
 *
 * While an intermediate rotation is under way (DIR holds next-intermediate.pem or
 * previous-intermediate.pem), the bundle also carries every intermediate in the rotation:
 * the next, the active and the retiring one, after the roots. Peers that present only their
 * leaf then still find a path, whichever intermediate signed it; peers that present their
 * chain verify to the same root as before. Outside a rotation the bundle is the roots alone.
 *
 * The SPIFFE sequence number grows with every change of content and survives restarts: it is
 * kept with the content's ETag in DIR/bundle-sequence.json, so the sequence a gateway
 * acknowledged still means the same bundle after the daemon restarts.
 *
 * The bundle is PEM built from DIR/root.pem and DIR/trust.pem, with an ETag that is a hash
 * of its bytes; with "Accept: application/json" it is the SPIFFE bundle: the same roots as
 * JWKs (use "x509-svid", the certificate in x5c), spiffe_sequence and spiffe_refresh_hint. A client
 * that sends If-None-Match with the current ETag and ?wait=30s is not answered at once: its
 * connection is suspended (libmicrohttpd holds it; no thread waits) and resumed when the bundle
 * changes or the wait ends, whichever comes first; the handler then runs again and answers 200 with
 * the new bundle or 304. One small thread keeps the deadlines. A wait is at most BUNDLE_WAIT_MAX.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/pem.h>

#include "ca/x509_build.h"
#include "common/config.h"
#include "common/fsutil.h"
#include "common/hex.h"
#include "common/log.h"
#include "common/timefmt.h"
#include "enrollment/api_internal.h"
#include "enrollment/waitlist.h"

#define BUNDLE_WAIT_MAX 300 /* seconds */
#define BUNDLE_CERTS_MAX 64 /* fingerprints remembered for api_bundle_carries() */
#define BUNDLE_SEQUENCE_FILE "bundle-sequence.json"

struct api_bundle {
	char *dir;
	pthread_mutex_t lock;
	pthread_cond_t changed; /* wakes the deadline thread: a new waiter, a change, stopping */
	char *pem;
	size_t len;
	char etag[68];
	char *jwks; /* the SPIFFE bundle (JWKS), for Accept: application/json */
	size_t jwks_len;
	int64_t sequence;
	char fingerprints[BUNDLE_CERTS_MAX][65]; /* of the certificates in the bundle */
	size_t fingerprint_count;
	struct waitlist waiters; /* parked long-polls (waitlist.h) */
	int stopping;
	pthread_t timer;
	int timer_started;
};

/* Unpadded base64url of n bytes into a heap string. */
static char *
b64url(const unsigned char *in, size_t n)
{
	size_t cap = 4 * ((n + 2) / 3) + 1;
	char *out = malloc(cap);
	int len;

	if (out == NULL)
		return NULL;
	len = EVP_EncodeBlock((unsigned char *)out, in, (int)n);
	while (len > 0 && out[len - 1] == '=')
		len--;
	out[len] = '\0';
	for (int i = 0; i < len; i++)
		out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
	return out;
}

/* Set member `name` of jwk to the base64url of a big-endian number, padded to width bytes
 * (0: no padding). */
static int
jwk_set_bn(json_t *jwk, const char *name, const BIGNUM *bn, int width)
{
	int n = width > 0 ? width : BN_num_bytes(bn);
	unsigned char *buf = malloc((size_t)(n > 0 ? n : 1));
	char *text = NULL;
	int rc = -1;

	if (buf != NULL && BN_bn2binpad(bn, buf, n) == n && (text = b64url(buf, (size_t)n)) != NULL)
		rc = json_object_set_new(jwk, name, json_string(text));
	free(text);
	free(buf);
	return rc;
}

/* One root as a JWK with its certificate in x5c (SPIFFE bundle format, use x509-svid). */
static json_t *
cert_jwk(X509 *cert)
{
	EVP_PKEY *key = X509_get0_pubkey(cert);
	unsigned char *der = NULL;
	BIGNUM *a = NULL, *b = NULL;
	json_t *jwk = json_object(), *x5c = json_array();
	char *der_b64 = NULL;
	int der_len, ok = 0;

	if (key == NULL || jwk == NULL || x5c == NULL)
		goto out;
	json_object_set_new(jwk, "use", json_string("x509-svid"));
	if (EVP_PKEY_is_a(key, "EC")) {
		char group[64];
		size_t glen = 0;
		int width;

		if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group,
		                                   sizeof(group), &glen) != 1 ||
		    !EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_X, &a) ||
		    !EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_Y, &b))
			goto out;
		width = strcmp(group, "secp384r1") == 0 ? 48 : 32;
		json_object_set_new(jwk, "kty", json_string("EC"));
		json_object_set_new(jwk, "crv", json_string(width == 48 ? "P-384" : "P-256"));
		if (jwk_set_bn(jwk, "x", a, width) != 0 || jwk_set_bn(jwk, "y", b, width) != 0)
			goto out;
	} else if (EVP_PKEY_is_a(key, "RSA")) {
		if (!EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_N, &a) ||
		    !EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_E, &b))
			goto out;
		json_object_set_new(jwk, "kty", json_string("RSA"));
		if (jwk_set_bn(jwk, "n", a, 0) != 0 || jwk_set_bn(jwk, "e", b, 0) != 0)
			goto out;
	} else if (EVP_PKEY_is_a(key, "ED25519")) {
		unsigned char raw[32];
		size_t raw_len = sizeof(raw);
		char *x;

		if (EVP_PKEY_get_raw_public_key(key, raw, &raw_len) != 1 ||
		    (x = b64url(raw, raw_len)) == NULL)
			goto out;
		json_object_set_new(jwk, "kty", json_string("OKP"));
		json_object_set_new(jwk, "crv", json_string("Ed25519"));
		json_object_set_new(jwk, "x", json_string(x));
		free(x);
	} else {
		goto out;
	}
	der_len = i2d_X509(cert, &der);
	if (der_len <= 0 || (der_b64 = malloc(4 * (((size_t)der_len + 2) / 3) + 1)) == NULL)
		goto out;
	EVP_EncodeBlock((unsigned char *)der_b64, der, der_len); /* x5c is standard base64 */
	json_array_append_new(x5c, json_string(der_b64));
	json_object_set(jwk, "x5c", x5c);
	ok = 1;
out:
	free(der_b64);
	OPENSSL_free(der);
	BN_free(a);
	BN_free(b);
	json_decref(x5c);
	if (!ok) {
		json_decref(jwk);
		jwk = NULL;
	}
	return jwk;
}

/*
 * The sequence for content with this ETag: the stored one when the content is unchanged,
 * else a new one above it (the current time, or the stored one + 1 if the clock is behind),
 * stored before it is served.
 */
static int
bundle_sequence(const char *dir, const char *etag, int64_t *sequence, struct ac_err *err)
{
	char path[4096], *text = NULL;
	json_t *doc = NULL;
	int64_t stored = 0;
	int rc = -1;

	if (path_join(path, sizeof(path), dir, BUNDLE_SEQUENCE_FILE, err) != 0)
		goto out;
	if (path_exists(path)) {
		json_error_t jerr;
		json_t *old = json_load_file(path, 0, &jerr);
		const char *old_etag = json_string_value(json_object_get(old, "etag"));

		stored = json_integer_value(json_object_get(old, "sequence"));
		if (old_etag != NULL && strcmp(old_etag, etag) == 0 && stored > 0) {
			*sequence = stored;
			json_decref(old);
			rc = 0;
			goto out;
		}
		json_decref(old);
	}
	*sequence = time_now() > stored ? time_now() : stored + 1;
	doc = json_pack("{s:s, s:I}", "etag", etag, "sequence", (json_int_t)*sequence);
	if (doc == NULL || (text = json_dumps(doc, JSON_COMPACT)) == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto out;
	}
	rc = atomic_write_file(path, text, strlen(text), 0644, err);
out:
	free(text);
	json_decref(doc);
	return rc;
}

/* Read root.pem and trust.pem (when present), and during a rotation the intermediates, and
 * encode them as one PEM bundle. */
static int
bundle_build(const char *dir, char **pem, size_t *len, char etag[68], char **jwks, size_t *jwks_len,
             int64_t *sequence, char (*fps)[65], size_t *fp_count, struct ac_err *err)
{
	json_t *keys = json_array(), *doc = NULL;
	static const char *const files[] = {"root.pem", "trust.pem", "next-intermediate.pem",
	                                    "intermediate.pem", "previous-intermediate.pem"};
	int rotating;
	unsigned char digest[32];
	char path[4096], hex[65], *data;
	BIO *bio = BIO_new(BIO_s_mem());
	long n;
	int rc = -1;

	*jwks = NULL;
	*fp_count = 0;
	rotating = (path_join(path, sizeof(path), dir, files[2], NULL) == 0 && path_exists(path)) ||
	           (path_join(path, sizeof(path), dir, files[4], NULL) == 0 && path_exists(path));
	if (bio == NULL || keys == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto out;
	}
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		STACK_OF(X509) *certs;

		if (path_join(path, sizeof(path), dir, files[i], err) != 0)
			goto out;
		if (i > 0 && !path_exists(path))
			continue;
		if (i >= 2 && !rotating)
			break;
		certs = x509_read_pem_file(path, err);
		if (certs == NULL)
			goto out;
		for (int k = 0; k < sk_X509_num(certs); k++) {
			json_t *jwk = cert_jwk(sk_X509_value(certs, k));
			unsigned char md[32];
			unsigned int mdlen = 0;

			if (*fp_count < BUNDLE_CERTS_MAX &&
			    X509_digest(sk_X509_value(certs, k), EVP_sha256(), md, &mdlen) &&
			    mdlen == 32)
				hex_encode(md, 32, fps[(*fp_count)++]);

			if (jwk != NULL)
				json_array_append_new(keys, jwk);
			if (!PEM_write_bio_X509(bio, sk_X509_value(certs, k))) {
				sk_X509_pop_free(certs, X509_free);
				ac_err_ssl(err, AC_ERR_CRYPTO, "bundle_failed", "%s: cannot encode",
				           path);
				goto out;
			}
		}
		sk_X509_pop_free(certs, X509_free);
	}
	n = BIO_get_mem_data(bio, &data);
	*pem = malloc((size_t)n);
	if (*pem == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto out;
	}
	memcpy(*pem, data, (size_t)n);
	*len = (size_t)n;
	if (!EVP_Digest(data, (size_t)n, digest, NULL, EVP_sha256(), NULL)) {
		free(*pem);
		*pem = NULL;
		ac_err_ssl(err, AC_ERR_CRYPTO, "bundle_failed", "cannot hash the bundle");
		goto out;
	}
	hex_encode(digest, 16, hex);
	snprintf(etag, 68, "\"%s\"", hex);
	if (bundle_sequence(dir, etag, sequence, err) != 0) {
		free(*pem);
		*pem = NULL;
		goto out;
	}
	/* The SPIFFE bundle: the same certificates as JWKs, and the content's sequence. */
	doc = json_pack("{s:O, s:I, s:i}", "keys", keys, "spiffe_sequence", (json_int_t)*sequence,
	                "spiffe_refresh_hint", 300);
	*jwks = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
	if (*jwks == NULL) {
		free(*pem);
		*pem = NULL;
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto out;
	}
	*jwks_len = strlen(*jwks);
	rc = 0;
out:
	json_decref(doc);
	json_decref(keys);
	BIO_free(bio);
	return rc;
}

/* The deadline keeper: sleeps until the earliest deadline or a signal. */
static void *
bundle_timer_main(void *arg)
{
	struct api_bundle *b = arg;

	pthread_mutex_lock(&b->lock);
	while (!b->stopping) {
		struct timespec until;
		double earliest = waitlist_earliest(&b->waiters, api_now() + 60);

		/* api_now() is CLOCK_MONOTONIC; the condition variable uses it too. */
		until.tv_sec = (time_t)earliest;
		until.tv_nsec = (long)((earliest - (double)until.tv_sec) * 1e9);
		pthread_cond_timedwait(&b->changed, &b->lock, &until);
		waitlist_resume(&b->waiters, 0, api_now());
	}
	pthread_mutex_unlock(&b->lock);
	return NULL;
}

struct api_bundle *
api_bundle_new(const char *dir, struct ac_err *err)
{
	struct api_bundle *b = calloc(1, sizeof(*b));
	pthread_condattr_t attr;

	if (b == NULL || (b->dir = strdup(dir)) == NULL) {
		free(b);
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		return NULL;
	}
	pthread_mutex_init(&b->lock, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&b->changed, &attr);
	pthread_condattr_destroy(&attr);
	if (bundle_build(dir, &b->pem, &b->len, b->etag, &b->jwks, &b->jwks_len, &b->sequence,
	                 b->fingerprints, &b->fingerprint_count, err) != 0)
		goto fail;
	if (pthread_create(&b->timer, NULL, bundle_timer_main, b) != 0) {
		ac_err_set(err, AC_ERR_INTERNAL, "thread_failed", "cannot start the bundle timer");
		goto fail;
	}
	b->timer_started = 1;
	return b;
fail:
	api_bundle_free(b);
	return NULL;
}

void
api_bundle_release(struct api_bundle *b)
{
	pthread_mutex_lock(&b->lock);
	b->stopping = 1;
	waitlist_resume(&b->waiters, 1, api_now());
	pthread_cond_signal(&b->changed);
	pthread_mutex_unlock(&b->lock);
	if (b->timer_started) {
		pthread_join(b->timer, NULL);
		b->timer_started = 0;
	}
}

void
api_bundle_free(struct api_bundle *b)
{
	if (b == NULL)
		return;
	api_bundle_release(b);
	pthread_cond_destroy(&b->changed);
	pthread_mutex_destroy(&b->lock);
	free(b->pem);
	free(b->jwks);
	free(b->dir);
	free(b);
}

int
api_reload_bundle(struct api *api, struct ac_err *err)
{
	struct api_bundle *b = api->bundle;
	char *pem = NULL, *jwks = NULL, etag[68], fps[BUNDLE_CERTS_MAX][65];
	size_t len = 0, jwks_len = 0, fp_count = 0;
	int64_t sequence = 0;
	int changed;

	if (bundle_build(b->dir, &pem, &len, etag, &jwks, &jwks_len, &sequence, fps, &fp_count,
	                 err) != 0)
		return -1;
	pthread_mutex_lock(&b->lock);
	changed = strcmp(etag, b->etag) != 0;
	if (changed) {
		b->sequence = sequence;
		memcpy(b->fingerprints, fps, sizeof(fps));
		b->fingerprint_count = fp_count;
		free(b->pem);
		free(b->jwks);
		b->pem = pem;
		b->len = len;
		b->jwks = jwks;
		b->jwks_len = jwks_len;
		memcpy(b->etag, etag, sizeof(b->etag));
		pem = NULL;
		jwks = NULL;
		waitlist_resume(&b->waiters, 1, api_now()); /* everyone waiting gets it now */
	}
	pthread_mutex_unlock(&b->lock);
	free(pem);
	free(jwks);
	if (changed)
		log_info("bundle_changed", "trust bundle reloaded, ETag %s, sequence %lld", etag,
		         (long long)sequence);
	return 0;
}

int
api_bundle_carries(struct api *api, const char *fingerprint, int64_t *sequence)
{
	struct api_bundle *b = api->bundle;
	int found = 0;

	pthread_mutex_lock(&b->lock);
	for (size_t i = 0; i < b->fingerprint_count && !found; i++)
		found = strcmp(b->fingerprints[i], fingerprint) == 0;
	*sequence = b->sequence;
	pthread_mutex_unlock(&b->lock);
	return found;
}

/*
 * POST /v1/bundle/ack {sequence} or {etag}: over mTLS, a gateway says which bundle it now
 * holds: by SPIFFE sequence (one this daemon has served: not above the current one), or by
 * the ETag of the PEM bundle (the current one). The highest sequence per SPIFFE ID is kept
 * in the store.
 */
void
handle_bundle_ack(struct api *api, struct MHD_Connection *conn, struct api_request *req,
                  struct api_response *resp)
{
	struct api_bundle *b = api->bundle;
	struct caller caller;
	struct ac_err err;
	json_t *doc = NULL, *seq;
	const char *etag;
	int64_t current, sequence = 0;
	int etag_current;

	ac_err_clear(&err);
	if (api_resolve_caller(api, conn, &caller, resp) != 0)
		goto out;
	if (!caller.peer.present || caller.peer.spiffe_id[0] == '\0') {
		api_problem(resp, 401, "client_certificate_required",
		            "a bundle acknowledgment needs the gateway's certificate as the TLS "
		            "client certificate");
		goto out;
	}
	if ((doc = api_parse_body(req, resp)) == NULL)
		goto out;
	seq = json_object_get(doc, "sequence");
	etag = json_string_value(json_object_get(doc, "etag"));
	pthread_mutex_lock(&b->lock);
	current = b->sequence;
	etag_current = etag != NULL && strcmp(etag, b->etag) == 0;
	pthread_mutex_unlock(&b->lock);
	if (etag != NULL && seq == NULL) {
		/* The ETag of the PEM bundle the gateway holds: it must be the current one. */
		if (!etag_current) {
			api_problem(
			    resp, 409, "etag_unknown",
			    "that ETag is not the bundle this CA serves now; fetch it again");
			goto out;
		}
		sequence = current;
	} else if (!json_is_integer(seq) || (sequence = json_integer_value(seq)) <= 0) {
		api_problem(resp, 400, "sequence_invalid",
		            "give \"sequence\" (the positive spiffe_sequence of a bundle) or "
		            "\"etag\" (the ETag of the bundle held)");
		goto out;
	} else if (sequence > current) {
		api_problem(resp, 409, "sequence_unknown",
		            "that sequence is newer than the bundle this CA serves");
		goto out;
	}
	if (store_bundle_ack(api->issuer->store, caller.peer.spiffe_id, sequence, &err) != 0) {
		log_error("bundle_ack_failed", "%s", err.msg);
		api_problem(resp, ac_errcode_http_status(err.code), err.reason, err.msg);
		goto out;
	}
	log_info("bundle_acked", "%s holds bundle sequence %lld (current %lld)",
	         caller.peer.spiffe_id, (long long)sequence, (long long)current);
	api_json_response(resp, 200,
	                  json_pack("{s:s, s:I, s:I}", "identity", caller.peer.spiffe_id,
	                            "sequence", (json_int_t)sequence, "current",
	                            (json_int_t)current));
out:
	json_decref(doc);
}

/* The ?wait= parameter in seconds (0 when absent or bad), capped. */
static int
wait_seconds(struct MHD_Connection *conn)
{
	const char *text = api_lookup(conn, MHD_GET_ARGUMENT_KIND, "wait");
	int64_t seconds = 0;

	if (text == NULL || duration_parse(text, &seconds) != 0 || seconds <= 0)
		return 0;
	return seconds > BUNDLE_WAIT_MAX ? BUNDLE_WAIT_MAX : (int)seconds;
}

/* 1 when the client asks for the SPIFFE bundle (JSON) rather than PEM. */
static int
wants_json(struct MHD_Connection *conn)
{
	const char *accept = api_lookup(conn, MHD_HEADER_KIND, "Accept");

	return accept != NULL && strstr(accept, "application/json") != NULL;
}

void
handle_bundle(struct api *api, struct MHD_Connection *conn, struct api_request *req,
              struct api_response *resp)
{
	struct api_bundle *b = api->bundle;
	const char *inm = api_lookup(conn, MHD_HEADER_KIND, "If-None-Match");
	int wait = wait_seconds(conn);

	pthread_mutex_lock(&b->lock);
	memcpy(resp->etag, b->etag, sizeof(resp->etag));
	if (inm != NULL && strcmp(inm, b->etag) == 0) {
		/* Park the request; the handler runs again when it is resumed. */
		if (wait > 0 && !req->waited && !b->stopping &&
		    waitlist_park(&b->waiters, conn, api_now() + wait) == 0) {
			req->waited = 1;
			req->suspended = 1;
			pthread_cond_signal(&b->changed);
			pthread_mutex_unlock(&b->lock);
			return;
		}
		pthread_mutex_unlock(&b->lock);
		resp->status = 304;
		return;
	}
	resp->status = 200;
	if (wants_json(conn)) {
		resp->content_type = "application/json";
		resp->body = malloc(b->jwks_len);
		if (resp->body != NULL) {
			memcpy(resp->body, b->jwks, b->jwks_len);
			resp->len = b->jwks_len;
		}
	} else {
		resp->content_type = "application/pem-certificate-chain";
		resp->body = malloc(b->len);
		if (resp->body != NULL) {
			memcpy(resp->body, b->pem, b->len);
			resp->len = b->len;
		}
	}
	pthread_mutex_unlock(&b->lock);
	if (resp->body == NULL)
		api_problem(resp, 500, "internal_error", "out of memory");
}
