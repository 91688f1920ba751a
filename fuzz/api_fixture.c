/*
 * api_fixture.c - a whole CA and its HTTP API in one process (see api_fixture.h), for the
 * fuzz_api harness and tests/unit/test_api_call.c.
 */
#include "fuzz/api_fixture.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "ca/audit_keys.h"
#include "common/base64url.h"
#include "common/timefmt.h"
#include "enrollment/acme_jws.h"
#include "store/store.h"

/* The CA's passphrase: a throwaway CA in a scratch directory. */
#define FIXTURE_PASSPHRASE "api-fixture-passphrase-not-a-secret"

/* The fake validation authority: hold each job until api_fixture_settle(). */
static int
fake_submit(struct acme_validator *v, const struct acme_validation *job, acme_validation_done done,
            void *arg, struct ac_err *err)
{
	struct api_fixture *f = (struct api_fixture *)(void *)v;

	(void)job;
	if (f->pending_count >= API_FIXTURE_MAX_PENDING)
		return ac_err_set(err, AC_ERR_UNAVAILABLE, "serverInternal",
		                  "the validation queue is full");
	f->pending[f->pending_count].done = done;
	f->pending[f->pending_count].arg = arg;
	f->pending_count++;
	return 0;
}

void
api_fixture_settle(struct api_fixture *f, int ok)
{
	struct acme_validation_result result;

	memset(&result, 0, sizeof(result));
	result.ok = ok;
	if (!ok) {
		snprintf(result.error_type, sizeof(result.error_type), "incorrectResponse");
		snprintf(result.detail, sizeof(result.detail), "the fixture said no");
	}
	while (f->pending_count > 0) {
		f->pending_count--;
		f->pending[f->pending_count].done(f->pending[f->pending_count].arg, &result);
	}
}

static int
remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

int
api_fixture_open(struct api_fixture *f, const char *base, struct ac_err *err)
{
	struct ca_init_options io;
	struct ca_init_report report;
	struct store_options so;
	struct api_options ao;
	char tmpl[512], db[600];

	memset(f, 0, sizeof(*f));
	if (base == NULL)
		base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
	snprintf(tmpl, sizeof(tmpl), "%s/agentca-api-XXXXXX", base);
	if (mkdtemp(tmpl) == NULL)
		return ac_err_set(err, AC_ERR_IO, "io_error", "cannot make a scratch directory");
	if (asprintf(&f->dir, "%s/ca", tmpl) < 0)
		return ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
	setenv("AGENTCA_PASSWORD", FIXTURE_PASSPHRASE, 1);
	ca_init_options_defaults(&io);
	io.dir = f->dir;
	io.name = "Fuzz";
	io.trust_domain = API_FIXTURE_TRUST_DOMAIN;
	if (ca_init(&io, &report, err) != 0)
		return -1;
	if ((f->authority = ca_authority_load(f->dir, NULL, err)) == NULL ||
	    ca_policy_defaults(&f->policy, API_FIXTURE_TRUST_DOMAIN, err) != 0)
		return -1;
	store_options_defaults(&so);
	snprintf(db, sizeof(db), "%s/agentca.db", f->dir);
	so.path = db;
	if ((f->store = store_open(&so, err)) == NULL)
		return -1;
	f->issuer.authority = f->authority;
	f->issuer.policy = &f->policy;
	f->issuer.store = f->store;
	if (token_keys_ensure(f->dir, FIXTURE_PASSPHRASE, err) != 0 ||
	    audit_keys_ensure(f->dir, FIXTURE_PASSPHRASE, err) != 0)
		return -1;
	f->bootstrap_minter = token_signer_load(f->dir, TOKEN_BOOTSTRAP, FIXTURE_PASSPHRASE,
	                                        f->authority->root_fingerprint, err);
	f->admin_minter = f->bootstrap_minter != NULL
	                      ? token_signer_load(f->dir, TOKEN_ADMIN, FIXTURE_PASSPHRASE,
	                                          f->authority->root_fingerprint, err)
	                      : NULL;
	f->bootstrap =
	    f->admin_minter != NULL
	        ? token_verifier_load(f->dir, TOKEN_BOOTSTRAP, f->authority->root_fingerprint, err)
	        : NULL;
	f->admin = f->bootstrap != NULL ? token_verifier_load(f->dir, TOKEN_ADMIN,
	                                                      f->authority->root_fingerprint, err)
	                                : NULL;
	f->audit_key = f->admin != NULL ? audit_key_load(f->dir, FIXTURE_PASSPHRASE, err) : NULL;
	if (f->audit_key == NULL)
		return -1;
	f->acme.issuer = &f->issuer;
	f->acme.validator.validator = (struct acme_validator *)(void *)f;
	f->acme.validator.submit = fake_submit;
	/* The fake validator finishes only in api_fixture_settle(): a challenge POST must not
	 * wait for it (300 ms per input would starve the fuzzer). */
	f->acme.challenge_wait_ms = -1;
	memset(&ao, 0, sizeof(ao));
	ao.issuer = &f->issuer;
	ao.bootstrap = f->bootstrap;
	ao.admin = f->admin;
	ao.minter = f->bootstrap_minter;
	ao.audit_key = f->audit_key;
	ao.threads = 1;
	ao.acme = &f->acme;
	/* Rates of 0: no limits (a fuzzer sends far more than any client may). */
	ao.burst_per_address = 1;
	ao.burst_per_identity = 1;
	if ((f->api = api_start(&ao, err)) == NULL)
		return -1;
	f->account_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	if (f->account_key == NULL ||
	    (f->account_jwk = acme_jwk_from_key(f->account_key, &f->account_alg, err)) == NULL)
		return ac_err_set(err, AC_ERR_INTERNAL, "key_failed", "cannot make an account key");
	return 0;
}

void
api_fixture_close(struct api_fixture *f)
{
	char *slash;

	api_fixture_settle(f, 0);
	api_stop(f->api);
	json_decref(f->account_jwk);
	EVP_PKEY_free(f->account_key);
	EVP_PKEY_free(f->audit_key);
	token_verifier_free(f->admin);
	token_verifier_free(f->bootstrap);
	token_signer_free(f->admin_minter);
	token_signer_free(f->bootstrap_minter);
	store_close(f->store);
	ca_policy_free(&f->policy);
	ca_authority_free(f->authority);
	if (f->dir != NULL && (slash = strrchr(f->dir, '/')) != NULL) {
		*slash = '\0'; /* the scratch directory above DIR */
		nftw(f->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
	}
	free(f->dir);
	memset(f, 0, sizeof(*f));
}

char *
api_fixture_bootstrap_token(struct api_fixture *f, const char *subject, const char *const *dns,
                            size_t dns_count)
{
	struct token_grant grant;
	struct ac_err err;
	char *jwt = NULL;

	memset(&grant, 0, sizeof(grant));
	ac_err_clear(&err);
	grant.type = TOKEN_BOOTSTRAP;
	snprintf(grant.subject, sizeof(grant.subject), "%s", subject);
	if (dns_count > 0 && cfg_strlist_set(&grant.dns, dns, dns_count, &err) != 0)
		return NULL;
	if (token_mint(f->bootstrap_minter, &grant, time_now(), 600, &jwt, &err) != 0)
		jwt = NULL;
	token_grant_free(&grant);
	return jwt;
}

char *
api_fixture_admin_token(struct api_fixture *f, const char *role, const char *who)
{
	struct token_grant grant;
	struct ac_err err;
	char *jwt = NULL;

	memset(&grant, 0, sizeof(grant));
	ac_err_clear(&err);
	grant.type = TOKEN_ADMIN;
	snprintf(grant.subject, sizeof(grant.subject), "%s", who);
	snprintf(grant.role, sizeof(grant.role), "%s", role);
	if (token_mint(f->admin_minter, &grant, time_now(), 600, &jwt, &err) != 0)
		jwt = NULL;
	token_grant_free(&grant);
	return jwt;
}

int
api_fixture_call(struct api_fixture *f, const char *method, const char *url,
                 const char *const *headers, const char *body, size_t len,
                 struct api_call_response *out)
{
	struct api_call_request in;
	struct ac_err err;

	memset(&in, 0, sizeof(in));
	ac_err_clear(&err);
	in.method = method;
	in.url = url;
	in.headers[0].name = "Host";
	in.headers[0].value = API_FIXTURE_HOST;
	in.header_count = 1;
	for (int i = 0; headers != NULL && headers[i] != NULL && headers[i + 1] != NULL &&
	                in.header_count < API_CALL_MAX_HEADERS;
	     i += 2) {
		in.headers[in.header_count].name = headers[i];
		in.headers[in.header_count].value = headers[i + 1];
		in.header_count++;
	}
	in.body = body;
	in.len = len;
	return api_call(f->api, &in, out, &err);
}

int
api_fixture_acme_post(struct api_fixture *f, const char *path, const char *payload,
                      size_t payload_len, int use_kid, struct api_call_response *out)
{
	static const char *const jose[] = {"Content-Type", "application/jose+json", NULL};
	struct api_call_response nonce_resp;
	json_t *header = NULL, *jws = NULL;
	char url[700], *text = NULL, *payload_text = NULL;
	const char *nonce;
	struct ac_err err;
	int rc = -1;

	memset(out, 0, sizeof(*out));
	ac_err_clear(&err);
	if (api_fixture_call(f, "HEAD", "/acme/new-nonce", NULL, NULL, 0, &nonce_resp) != 0)
		return -1;
	nonce = api_call_response_header(&nonce_resp, "Replay-Nonce");
	snprintf(url, sizeof(url), "https://%s%s", API_FIXTURE_HOST, path);
	header = json_pack("{s:s, s:s}", "nonce", nonce != NULL ? nonce : "", "url", url);
	if (header == NULL)
		goto out;
	if (use_kid && f->kid[0] != '\0')
		json_object_set_new(header, "kid", json_string(f->kid));
	else
		json_object_set(header, "jwk", f->account_jwk);
	/* The payload as a C string: bytes after a NUL are the fuzzer's, kept out. */
	if (payload != NULL && (payload_text = strndup(payload, payload_len)) == NULL)
		goto out;
	jws = acme_jws_sign(f->account_key, NULL, 0, f->account_alg, header, payload_text, &err);
	if (jws == NULL || (text = json_dumps(jws, JSON_COMPACT)) == NULL)
		goto out;
	rc = api_fixture_call(f, "POST", path, jose, text, strlen(text), out);
out:
	api_call_response_free(&nonce_resp);
	free(text);
	free(payload_text);
	json_decref(jws);
	json_decref(header);
	return rc;
}

int
api_fixture_acme_account(struct api_fixture *f)
{
	static const char payload[] = "{\"termsOfServiceAgreed\":true}";
	struct api_call_response r;
	const char *location;
	int rc = -1;

	if (api_fixture_acme_post(f, "/acme/new-account", payload, strlen(payload), 0, &r) != 0)
		return -1;
	location = api_call_response_header(&r, "Location");
	if ((r.status == 200 || r.status == 201) && location != NULL) {
		snprintf(f->kid, sizeof(f->kid), "%s", location);
		rc = 0;
	}
	api_call_response_free(&r);
	return rc;
}

/* The path part of an absolute URL of ours ("https://HOST/acme/x" -> "/acme/x"). */
static int
path_of(const char *url, char *out, size_t len)
{
	const char *p = url != NULL ? strstr(url, "/acme/") : NULL;

	if (p == NULL || strlen(p) >= len)
		return -1;
	memcpy(out, p, strlen(p) + 1);
	return 0;
}

int
api_fixture_acme_ready_order(struct api_fixture *f, const char *name, struct api_fixture_order *out)
{
	struct api_call_response r;
	json_t *doc = NULL, *ch;
	char payload[512];
	size_t i;
	int rc = -1;

	memset(out, 0, sizeof(*out));
	snprintf(payload, sizeof(payload),
	         "{\"identifiers\":[{\"type\":\"dns\",\"value\":\"%s\"}]}", name);
	if (api_fixture_acme_post(f, "/acme/new-order", payload, strlen(payload), 1, &r) != 0)
		return -1;
	doc = r.status == 201 ? json_loadb(r.body, r.len, 0, NULL) : NULL;
	if (doc == NULL ||
	    path_of(api_call_response_header(&r, "Location"), out->order, sizeof(out->order)) !=
	        0 ||
	    path_of(json_string_value(json_object_get(doc, "finalize")), out->finalize,
	            sizeof(out->finalize)) != 0 ||
	    path_of(json_string_value(json_array_get(json_object_get(doc, "authorizations"), 0)),
	            out->authz, sizeof(out->authz)) != 0)
		goto out;
	api_call_response_free(&r);
	json_decref(doc);
	doc = NULL;
	if (api_fixture_acme_post(f, out->authz, NULL, 0, 1, &r) != 0)
		return -1;
	doc = r.status == 200 ? json_loadb(r.body, r.len, 0, NULL) : NULL;
	json_array_foreach(json_object_get(doc, "challenges"), i, ch)
	{
		if (path_of(json_string_value(json_object_get(ch, "url")), out->challenge,
		            sizeof(out->challenge)) == 0)
			break;
	}
	api_call_response_free(&r);
	if (out->challenge[0] == '\0' ||
	    api_fixture_acme_post(f, out->challenge, "{}", 2, 1, &r) != 0)
		goto out;
	rc = r.status == 200 ? 0 : -1;
	api_fixture_settle(f, 1);
out:
	api_call_response_free(&r);
	json_decref(doc);
	return rc;
}

char *
api_fixture_csr(const char *spiffe_id, const char *const *dns, size_t dns_count, char **der_b64url)
{
	EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	X509_REQ *req = X509_REQ_new();
	STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
	X509_EXTENSION *ext = NULL;
	X509_NAME *subject = X509_NAME_new();
	unsigned char *der = NULL;
	char san[2048] = "", *pem = NULL;
	BIO *bio = BIO_new(BIO_s_mem());
	BUF_MEM *mem;
	int len;

	if (der_b64url != NULL)
		*der_b64url = NULL;
	if (key == NULL || req == NULL || exts == NULL || subject == NULL || bio == NULL)
		goto out;
	if (spiffe_id != NULL)
		snprintf(san, sizeof(san), "URI:%s", spiffe_id);
	for (size_t i = 0; i < dns_count; i++)
		snprintf(san + strlen(san), sizeof(san) - strlen(san), "%sDNS:%s",
		         san[0] != '\0' ? "," : "", dns[i]);
	if (san[0] != '\0') {
		ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, san);
		if (ext == NULL || !sk_X509_EXTENSION_push(exts, ext)) {
			X509_EXTENSION_free(ext);
			goto out;
		}
		if (!X509_REQ_add_extensions(req, exts))
			goto out;
	}
	X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC,
	                           (const unsigned char *)(dns_count > 0 ? dns[0] : "agent"), -1,
	                           -1, 0);
	if (!X509_REQ_set_subject_name(req, subject) || !X509_REQ_set_pubkey(req, key) ||
	    !X509_REQ_sign(req, key, EVP_sha256()) || !PEM_write_bio_X509_REQ(bio, req))
		goto out;
	BIO_get_mem_ptr(bio, &mem);
	if ((pem = strndup(mem->data, mem->length)) == NULL)
		goto out;
	if (der_b64url != NULL) {
		if ((len = i2d_X509_REQ(req, &der)) <= 0 ||
		    (*der_b64url = base64url_encode_alloc(der, (size_t)len)) == NULL) {
			free(pem);
			pem = NULL;
		}
	}
out:
	OPENSSL_free(der);
	BIO_free(bio);
	X509_NAME_free(subject);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_REQ_free(req);
	EVP_PKEY_free(key);
	return pem;
}
