/*
 * client.c - enrollment from the agent's side: trust by fingerprint, CSR, POST, files.
 * See client.h.
 */
#include "enrollment/client.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "ca/authority.h"
#include "ca/keys.h"
#include "ca/x509_build.h"
#include "common/fsutil.h"
#include "common/hex.h"

#define CLIENT_MAX_RESPONSE (1024 * 1024)
#define CLIENT_TIMEOUT_SECONDS 30L

/* A response body, bounded. */
struct body {
	char *data;
	size_t len;
	int too_large;
};

static size_t
collect(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct body *b = arg;
	size_t n = size * nmemb;
	char *grown;

	if (b->len + n > CLIENT_MAX_RESPONSE) {
		b->too_large = 1;
		return 0;
	}
	grown = realloc(b->data, b->len + n + 1);
	if (grown == NULL)
		return 0;
	memcpy(grown + b->len, ptr, n);
	b->len += n;
	grown[b->len] = '\0';
	b->data = grown;
	return n;
}

/* A client certificate for mTLS: PEM of the leaf (and chain) and of its key. */
struct client_identity {
	const char *cert_pem;
	const char *key_pem;
};

/* Set by client_set_abort(): a request in flight gives up within a second once it is set. */
static volatile sig_atomic_t *abort_flag;

void
client_set_abort(volatile sig_atomic_t *flag)
{
	abort_flag = flag;
}

/* libcurl's progress callback, called about once a second even when idle. */
static int
check_abort(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
	(void)arg;
	(void)dltotal;
	(void)dlnow;
	(void)ultotal;
	(void)ulnow;
	return abort_flag != NULL && *abort_flag ? 1 : 0;
}

/* What a conditional GET adds: the ETag we have, and room for the one we get. */
struct conditional {
	const char *if_none_match; /* NULL: unconditional */
	char etag[128];            /* filled from the answer's ETag header, or "" */
	long timeout;              /* seconds; 0: CLIENT_TIMEOUT_SECONDS */
};

/* Keep the ETag header of an answer. */
static size_t
collect_etag(char *buf, size_t size, size_t nitems, void *arg)
{
	struct conditional *c = arg;
	size_t n = size * nitems;

	if (n > 5 && strncasecmp(buf, "ETag:", 5) == 0) {
		const char *v = buf + 5;
		size_t len = n - 5;

		while (len > 0 && (*v == ' ' || *v == '\t')) {
			v++;
			len--;
		}
		while (len > 0 && (v[len - 1] == '\r' || v[len - 1] == '\n' || v[len - 1] == ' '))
			len--;
		if (len < sizeof(c->etag)) {
			memcpy(c->etag, v, len);
			c->etag[len] = '\0';
		}
	}
	return n;
}

/* One HTTPS request. root_pem NULL: the server is not verified (bootstrap only). id NULL:
 * no client certificate. cond NULL: unconditional. On success *status and *out (heap,
 * NUL-terminated) are set. */
static int
https_request_ex(const char *url, const char *root_pem, const struct client_identity *id,
                 const char *json_body, struct conditional *cond, long *status, char **out,
                 struct ac_err *err)
{
	struct curl_slist *headers = NULL;
	struct body b = {NULL, 0, 0};
	char curl_err[CURL_ERROR_SIZE] = "";
	CURL *curl;
	CURLcode rc;
	int ret = -1;

	curl = curl_easy_init();
	if (curl == NULL)
		return ac_err_set(err, AC_ERR_INTERNAL, "curl_failed", "cannot start libcurl");
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "https");
	curl_easy_setopt(curl, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT,
	                 cond != NULL && cond->timeout > 0 ? cond->timeout
	                                                   : CLIENT_TIMEOUT_SECONDS);
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, curl_err);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, check_abort);
	if (root_pem != NULL) {
		struct curl_blob blob = {(void *)root_pem, strlen(root_pem), CURL_BLOB_COPY};

		curl_easy_setopt(curl, CURLOPT_CAINFO_BLOB, &blob);
		curl_easy_setopt(curl, CURLOPT_CAPATH, NULL);
		curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 1L);
		curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 2L);
	} else {
		/* Bootstrap: the answer is checked against the fingerprint instead. */
		curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 0L);
	}
	if (id != NULL) {
		struct curl_blob cert = {(void *)id->cert_pem, strlen(id->cert_pem),
		                         CURL_BLOB_COPY};
		struct curl_blob key = {(void *)id->key_pem, strlen(id->key_pem), CURL_BLOB_COPY};

		curl_easy_setopt(curl, CURLOPT_SSLCERT_BLOB, &cert);
		curl_easy_setopt(curl, CURLOPT_SSLCERTTYPE, "PEM");
		curl_easy_setopt(curl, CURLOPT_SSLKEY_BLOB, &key);
		curl_easy_setopt(curl, CURLOPT_SSLKEYTYPE, "PEM");
	}
	if (json_body != NULL) {
		headers = curl_slist_append(headers, "Content-Type: application/json");
		curl_easy_setopt(curl, CURLOPT_POSTFIELDS, json_body);
	}
	if (cond != NULL) {
		char line[160];

		cond->etag[0] = '\0';
		if (cond->if_none_match != NULL && cond->if_none_match[0] != '\0') {
			snprintf(line, sizeof(line), "If-None-Match: %s", cond->if_none_match);
			headers = curl_slist_append(headers, line);
		}
		curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, collect_etag);
		curl_easy_setopt(curl, CURLOPT_HEADERDATA, cond);
	}
	if (headers != NULL)
		curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
	rc = curl_easy_perform(curl);
	if (rc != CURLE_OK) {
		ac_err_set(err, AC_ERR_UNAVAILABLE, "ca_unreachable", "%s: %s", url,
		           b.too_large ? "response too large"
		                       : (curl_err[0] != '\0' ? curl_err : curl_easy_strerror(rc)));
		goto out;
	}
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, status);
	*out = b.data != NULL ? b.data : strdup("");
	b.data = NULL;
	ret = *out != NULL ? 0 : ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
out:
	free(b.data);
	curl_slist_free_all(headers);
	curl_easy_cleanup(curl);
	return ret;
}

static int
https_request(const char *url, const char *root_pem, const struct client_identity *id,
              const char *json_body, long *status, char **out, struct ac_err *err)
{
	return https_request_ex(url, root_pem, id, json_body, NULL, status, out, err);
}

/* Turn a non-2xx answer into an error: the problem document's detail, or the status. */
static int
http_error(const char *url, long status, const char *body, struct ac_err *err)
{
	json_t *doc = json_loads(body, 0, NULL);
	const char *detail = json_string_value(json_object_get(doc, "detail"));
	const char *title = json_string_value(json_object_get(doc, "title"));
	enum ac_errcode code = status == 503   ? AC_ERR_UNAVAILABLE
	                       : status >= 500 ? AC_ERR_INTERNAL
	                                       : AC_ERR_POLICY;

	ac_err_set(err, code, "ca_refused", "%s: %ld %s%s%s", url, status,
	           title != NULL ? title : "error", detail != NULL ? ": " : "",
	           detail != NULL ? detail : "");
	json_decref(doc);
	return -1;
}

int
client_bootstrap_root(const char *ca_url, const char *fingerprint, char **root_pem,
                      struct ac_err *err)
{
	char want[65], url[2048], *bundle = NULL;
	BIO *bio = NULL;
	X509 *cert = NULL;
	long status = 0;
	int rc = -1;

	*root_pem = NULL;
	if (fingerprint_normalize(fingerprint, want) != 0)
		return ac_err_set(err, AC_ERR_USAGE, "bad_fingerprint",
		                  "the fingerprint must be 64 hex digits (colons allowed)");
	snprintf(url, sizeof(url), "%s/v1/bundle", ca_url);
	if (https_request(url, NULL, NULL, NULL, &status, &bundle, err) != 0)
		goto out;
	if (status != 200) {
		http_error(url, status, bundle, err);
		goto out;
	}
	bio = BIO_new_mem_buf(bundle, -1);
	while (bio != NULL && (cert = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
		char fp[65];

		if (cert_fingerprint(cert, fp, err) != 0)
			goto out;
		if (strcmp(fp, want) == 0) {
			size_t len;

			*root_pem = x509_to_pem(cert, &len, err);
			rc = *root_pem != NULL ? 0 : -1;
			goto out;
		}
		X509_free(cert);
		cert = NULL;
	}
	ac_err_set(err, AC_ERR_POLICY, "fingerprint_mismatch",
	           "%s: no root in the CA's bundle has fingerprint %s: refusing to trust it", url,
	           want);
out:
	ERR_clear_error();
	X509_free(cert);
	BIO_free(bio);
	free(bundle);
	return rc;
}

int
client_fetch_bundle(const char *ca_url, const char *root_pem, char **bundle_pem, struct ac_err *err)
{
	char url[2048];
	long status = 0;

	*bundle_pem = NULL;
	snprintf(url, sizeof(url), "%s/v1/bundle", ca_url);
	if (https_request(url, root_pem, NULL, NULL, &status, bundle_pem, err) != 0)
		return -1;
	if (status != 200) {
		http_error(url, status, *bundle_pem, err);
		free(*bundle_pem);
		*bundle_pem = NULL;
		return -1;
	}
	return 0;
}

void
client_issued_free(struct client_issued *c)
{
	free(c->cert_pem);
	free(c->chain_pem);
	free(c->serial);
	free(c->not_after);
	free(c->renew_after);
	memset(c, 0, sizeof(*c));
}

/* A copy of a string member, or NULL. */
static char *
member_dup(json_t *doc, const char *key)
{
	const char *s = json_string_value(json_object_get(doc, key));

	return s != NULL ? strdup(s) : NULL;
}

/* POST body to ca_url + path and read an issued certificate from a 200/201 answer. */
static int
post_for_certificate(const char *ca_url, const char *path, const char *root_pem,
                     const struct client_identity *id, json_t *body, struct client_issued *out,
                     struct ac_err *err)
{
	char url[2048], *request = NULL, *response = NULL;
	json_t *doc = NULL;
	long status = 0;
	int rc = -1;

	memset(out, 0, sizeof(*out));
	snprintf(url, sizeof(url), "%s%s", ca_url, path);
	request = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
	if (request == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto out;
	}
	if (https_request(url, root_pem, id, request, &status, &response, err) != 0)
		goto out;
	if (status != 201 && status != 200) {
		http_error(url, status, response, err);
		goto out;
	}
	doc = json_loads(response, 0, NULL);
	out->cert_pem = member_dup(doc, "certificate");
	out->chain_pem = member_dup(doc, "chain");
	out->serial = member_dup(doc, "serial");
	out->not_after = member_dup(doc, "not_after");
	out->renew_after = member_dup(doc, "renew_after");
	if (out->cert_pem == NULL || out->chain_pem == NULL || out->serial == NULL) {
		client_issued_free(out);
		ac_err_set(err, AC_ERR_INVALID, "bad_response",
		           "%s: the answer lacks the certificate, chain or serial", url);
		goto out;
	}
	rc = 0;
out:
	json_decref(doc);
	free(request);
	free(response);
	return rc;
}

int
client_enroll(const char *ca_url, const char *root_pem, const char *token, const char *csr_pem,
              struct client_issued *out, struct ac_err *err)
{
	json_t *body = json_pack("{s:s, s:s}", "token", token, "csr", csr_pem);
	int rc = post_for_certificate(ca_url, "/v1/enroll", root_pem, NULL, body, out, err);

	json_decref(body);
	return rc;
}

int
client_renew(const char *ca_url, const char *roots_pem, const char *cert_pem, const char *key_pem,
             const char *csr_pem, struct client_issued *out, struct ac_err *err)
{
	struct client_identity id = {cert_pem, key_pem};
	json_t *body = json_pack("{s:s}", "csr", csr_pem);
	int rc = post_for_certificate(ca_url, "/v1/renew", roots_pem, &id, body, out, err);

	json_decref(body);
	return rc;
}

int
client_bundle_ack(const char *ca_url, const char *roots_pem, const char *cert_pem,
                  const char *key_pem, const char *etag, struct ac_err *err)
{
	struct client_identity id = {cert_pem, key_pem};
	json_t *body = json_pack("{s:s}", "etag", etag);
	char url[2048], *request = NULL, *response = NULL;
	long status = 0;
	int rc = -1;

	snprintf(url, sizeof(url), "%s/v1/bundle/ack", ca_url);
	if (body == NULL || (request = json_dumps(body, JSON_COMPACT)) == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto out;
	}
	if (https_request(url, roots_pem, &id, request, &status, &response, err) != 0)
		goto out;
	if (status != 200) {
		http_error(url, status, response, err);
		goto out;
	}
	rc = 0;
out:
	free(response);
	free(request);
	json_decref(body);
	return rc;
}

char *
client_make_csr(EVP_PKEY *key, const struct cfg_strlist *dns, struct ac_err *err)
{
	STACK_OF(X509_EXTENSION) *exts = NULL;
	GENERAL_NAMES *names = NULL;
	X509_REQ *req = NULL;
	BIO *bio = NULL;
	char *pem = NULL, *data;
	long len;

	req = X509_REQ_new();
	bio = BIO_new(BIO_s_mem());
	if (req == NULL || bio == NULL || !X509_REQ_set_version(req, 0) ||
	    !X509_REQ_set_pubkey(req, key))
		goto fail;
	if (dns->count > 0) {
		names = sk_GENERAL_NAME_new_null();
		if (names == NULL)
			goto fail;
		for (size_t i = 0; i < dns->count; i++) {
			GENERAL_NAME *gn = GENERAL_NAME_new();
			ASN1_IA5STRING *s = ASN1_IA5STRING_new();

			if (gn == NULL || s == NULL ||
			    !ASN1_STRING_set(s, dns->items[i], (int)strlen(dns->items[i]))) {
				GENERAL_NAME_free(gn);
				ASN1_IA5STRING_free(s);
				goto fail;
			}
			GENERAL_NAME_set0_value(gn, GEN_DNS, s);
			if (!sk_GENERAL_NAME_push(names, gn)) {
				GENERAL_NAME_free(gn);
				goto fail;
			}
		}
		if (!X509V3_add1_i2d(&exts, NID_subject_alt_name, names, 0, X509V3_ADD_DEFAULT) ||
		    !X509_REQ_add_extensions(req, exts))
			goto fail;
	}
	if (!X509_REQ_sign(req, key, key_sign_digest(key)) || !PEM_write_bio_X509_REQ(bio, req))
		goto fail;
	len = BIO_get_mem_data(bio, &data);
	pem = malloc((size_t)len + 1);
	if (pem == NULL)
		goto fail;
	memcpy(pem, data, (size_t)len);
	pem[len] = '\0';
	goto out;
fail:
	ac_err_ssl(err, AC_ERR_CRYPTO, "csr_failed", "cannot make the certificate request");
out:
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	GENERAL_NAMES_free(names);
	X509_REQ_free(req);
	BIO_free(bio);
	return pem;
}

int
client_token_dns(const char *token, struct cfg_strlist *dns, struct ac_err *err)
{
	const char *dot1 = strchr(token, '.'), *dot2 = dot1 != NULL ? strchr(dot1 + 1, '.') : NULL;
	unsigned char *payload = NULL;
	char *b64 = NULL;
	json_t *doc = NULL, *list, *item;
	size_t n, i;
	int len, rc = -1;

	if (dot1 == NULL || dot2 == NULL)
		return ac_err_set(err, AC_ERR_USAGE, "token_malformed",
		                  "the token is not a JWT (header.payload.signature)");
	/* base64url -> base64 with padding, for EVP_DecodeBlock. */
	n = (size_t)(dot2 - dot1 - 1);
	b64 = malloc(n + 4);
	payload = malloc(n + 4);
	if (b64 == NULL || payload == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto out;
	}
	for (i = 0; i < n; i++)
		b64[i] = dot1[1 + i] == '-' ? '+' : dot1[1 + i] == '_' ? '/' : dot1[1 + i];
	while (i % 4 != 0)
		b64[i++] = '=';
	len = EVP_DecodeBlock(payload, (unsigned char *)b64, (int)i);
	if (len < 0) {
		ac_err_set(err, AC_ERR_USAGE, "token_malformed",
		           "the token's payload is not base64url");
		goto out;
	}
	while (len > 0 && payload[len - 1] == '\0')
		len--; /* EVP_DecodeBlock counts the padding as zero bytes */
	doc = json_loadb((const char *)payload, (size_t)len, 0, NULL);
	list = json_object_get(doc, "dns");
	json_array_foreach(list, i, item) if (json_is_string(item) &&
	                                      cfg_strlist_add(dns, json_string_value(item), err) !=
	                                          0) goto out;
	rc = 0;
out:
	json_decref(doc);
	free(b64);
	free(payload);
	return rc;
}

int
client_write_identity(const char *out_dir, EVP_PKEY *key, const struct client_issued *c,
                      const char *bundle_pem, struct ac_err *err)
{
	char path[4096];

	if (ensure_dir(out_dir, 0700, err) != 0)
		return -1;
	/* The key first: a certificate on disk never lacks its key. */
	if (path_join(path, sizeof(path), out_dir, "key.pem", err) != 0 ||
	    key_write_plain(path, key, err) != 0)
		return -1;
	if (path_join(path, sizeof(path), out_dir, "cert.pem", err) != 0 ||
	    atomic_write_file(path, c->cert_pem, strlen(c->cert_pem), 0644, err) != 0)
		return -1;
	if (path_join(path, sizeof(path), out_dir, "chain.pem", err) != 0 ||
	    atomic_write_file(path, c->chain_pem, strlen(c->chain_pem), 0644, err) != 0)
		return -1;
	if (path_join(path, sizeof(path), out_dir, "bundle.pem", err) != 0 ||
	    atomic_write_file(path, bundle_pem, strlen(bundle_pem), 0644, err) != 0)
		return -1;
	/* The CA's renewal point, tied to the serial it is for (see client.h). */
	if (path_join(path, sizeof(path), out_dir, "renew_after", err) != 0)
		return -1;
	if (c->renew_after != NULL && c->serial != NULL) {
		char line[256];
		int n = snprintf(line, sizeof(line), "%s %s\n", c->serial, c->renew_after);

		if (n < 0 || (size_t)n >= sizeof(line))
			return ac_err_set(err, AC_ERR_INVALID, "bad_response",
			                  "the CA's serial or renew_after is too long");
		if (atomic_write_file(path, line, (size_t)n, 0644, err) != 0)
			return -1;
	} else if (unlink(path) != 0 && errno != ENOENT) {
		return ac_err_set(err, AC_ERR_IO, "io_error", "%s: %s", path, strerror(errno));
	}
	return 0;
}

int
client_watch_bundle(const char *ca_url, const char *roots_pem, int wait_seconds, char etag[128],
                    char **bundle_pem, int *changed, struct ac_err *err)
{
	struct conditional cond;
	char url[2048], *body = NULL;
	long status = 0;
	int rc = -1;

	*bundle_pem = NULL;
	*changed = 0;
	memset(&cond, 0, sizeof(cond));
	cond.if_none_match = etag;
	cond.timeout = wait_seconds + CLIENT_TIMEOUT_SECONDS;
	snprintf(url, sizeof(url), "%s/v1/bundle?wait=%ds", ca_url, wait_seconds);
	if (https_request_ex(url, roots_pem, NULL, NULL, &cond, &status, &body, err) != 0)
		return -1;
	if (status == 304) {
		rc = 0;
	} else if (status == 200) {
		*bundle_pem = body;
		body = NULL;
		*changed = 1;
		snprintf(etag, 128, "%s", cond.etag);
		rc = 0;
	} else {
		http_error(url, status, body, err);
	}
	free(body);
	return rc;
}

int
client_get_json(const char *ca_url, const char *path, const char *roots_pem, const char *cert_pem,
                const char *key_pem, json_t **doc, struct ac_err *err)
{
	struct client_identity id = {cert_pem, key_pem};
	char url[2048], *body = NULL;
	long status = 0;
	int rc = -1;

	*doc = NULL;
	if (snprintf(url, sizeof(url), "%s%s", ca_url, path) >= (int)sizeof(url))
		return ac_err_set(err, AC_ERR_INVALID, "url_too_long", "the CA URL is too long");
	if (https_request(url, roots_pem, cert_pem != NULL ? &id : NULL, NULL, &status, &body,
	                  err) != 0)
		goto out;
	if (status == 404) {
		ac_err_set(err, AC_ERR_NOTFOUND, "ca_not_found", "%s: 404, not served by this CA",
		           url);
		goto out;
	}
	if (status != 200) {
		http_error(url, status, body, err);
		goto out;
	}
	*doc = json_loads(body, 0, NULL);
	if (*doc == NULL) {
		ac_err_set(err, AC_ERR_INVALID, "ca_bad_answer", "%s: the answer is not JSON", url);
		goto out;
	}
	rc = 0;
out:
	free(body);
	return rc;
}
