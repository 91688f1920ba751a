/*
 * ca_common.c - what the authority's files are and the checks they share: ca.json in and
 * out, optional certificate files, "is this a CA", "is it valid now", and chain
 * verification. See ca_common.h.
 *
 * ca.json is read with the project's table-driven loader, so an unknown or mistyped key is
 * refused with its name rather than silently ignored.
 */
#include "ca/ca_common.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "ca/x509_build.h"
#include "common/fsutil.h"
#include "common/timefmt.h"

static const struct cfg_field ca_meta_fields[] = {
    {"name", CFG_STRING, offsetof(struct ca_meta, name), 0, 0, NULL, "CA name"},
    {"trust_domain", CFG_STRING, offsetof(struct ca_meta, trust_domain), 0, 0, NULL,
     "SPIFFE trust domain"},
    {"key_type", CFG_STRING, offsetof(struct ca_meta, key_type), 0, 0, NULL,
     "p256, p384, rsa3072 or ed25519"},
    {"mode", CFG_STRING, offsetof(struct ca_meta, mode), 0, 0, NULL, "root or corporate"},
    {"state", CFG_STRING, offsetof(struct ca_meta, state), 0, 0, NULL, "active or awaiting_import"},
    {"created", CFG_STRING, offsetof(struct ca_meta, created), 0, 0, NULL,
     "when init ran (RFC 3339)"},
    {"offline_root", CFG_BOOL, offsetof(struct ca_meta, offline_root), 0, 0, NULL,
     "the root key is kept outside DIR"},
    {"dns_suffixes", CFG_STRING_LIST, offsetof(struct ca_meta, dns_suffixes), 0, 0, NULL,
     "DNS name constraints"},
    {"ip_ranges", CFG_STRING_LIST, offsetof(struct ca_meta, ip_ranges), 0, 0, NULL,
     "IP name constraints (CIDR)"},
    CFG_END,
};

/* DIR/name into a CA_PATH_MAX buffer. */
int
ca_path(char *buf, const char *dir, const char *name, struct ac_err *err)
{
	return path_join(buf, CA_PATH_MAX, dir, name, err);
}

/* Read and check DIR/ca.json. */
int
ca_meta_load(const char *dir, struct ca_meta *meta, struct ac_err *err)
{
	char path[CA_PATH_MAX];
	int rc = -1;

	memset(meta, 0, sizeof(*meta));
	if (ca_path(path, dir, CA_FILE_META, err) != 0)
		goto out;
	if (!path_exists(path)) {
		ac_err_set(err, AC_ERR_NOTFOUND, "no_ca",
		           "%s holds no CA (no %s); run agentca init first", dir, CA_FILE_META);
		goto out;
	}
	if (config_load_file(path, ca_meta_fields, meta, err) != 0)
		goto out;
	if (meta->name == NULL || meta->trust_domain == NULL || meta->mode == NULL ||
	    meta->state == NULL) {
		ac_err_set(err, AC_ERR_INVALID, "ca_meta_invalid",
		           "%s: name, trust_domain, mode and state are required", path);
		goto out;
	}
	if (strcmp(meta->mode, CA_MODE_ROOT) != 0 && strcmp(meta->mode, CA_MODE_CORPORATE) != 0) {
		ac_err_set(err, AC_ERR_INVALID, "ca_meta_invalid",
		           "%s: mode must be \"root\" or \"corporate\"", path);
		goto out;
	}
	rc = 0;
out:
	if (rc != 0)
		ca_meta_free(meta);
	return rc;
}

/* A JSON array of the list's strings (NULL on allocation failure). */
static json_t *
strlist_to_json(const struct cfg_strlist *list)
{
	json_t *array = json_array();

	for (size_t i = 0; array != NULL && i < list->count; i++) {
		if (json_array_append_new(array, json_string(list->items[i])) != 0) {
			json_decref(array);
			return NULL;
		}
	}
	return array;
}

/* Write DIR/ca.json, keys in a fixed order so that diffs between versions stay readable. */
int
ca_meta_write(const char *dir, const struct ca_meta *meta, struct ac_err *err)
{
	char path[CA_PATH_MAX];
	json_t *obj = NULL;
	char *text = NULL;
	int rc = -1;

	if (ca_path(path, dir, CA_FILE_META, err) != 0)
		goto out;
	obj = json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:o, s:b, s:s}", "name", meta->name,
	                "trust_domain", meta->trust_domain, "key_type",
	                meta->key_type != NULL ? meta->key_type : "", "mode", meta->mode, "state",
	                meta->state, "dns_suffixes", strlist_to_json(&meta->dns_suffixes),
	                "ip_ranges", strlist_to_json(&meta->ip_ranges), "offline_root",
	                meta->offline_root, "created", meta->created != NULL ? meta->created : "");
	if (obj == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "%s: cannot build JSON", path);
		goto out;
	}
	text = json_dumps(obj, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	if (text == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "%s: cannot encode JSON", path);
		goto out;
	}
	/* json_dumps leaves no trailing newline; the file gets one like any text file. */
	{
		size_t n = strlen(text);
		char *withnl = realloc(text, n + 2);

		if (withnl == NULL) {
			ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
			goto out;
		}
		text = withnl;
		text[n] = '\n';
		text[n + 1] = '\0';
	}
	rc = atomic_write_file(path, text, strlen(text), 0644, err);
out:
	free(text);
	json_decref(obj);
	return rc;
}

/* Release what ca_meta_load() allocated. */
void
ca_meta_free(struct ca_meta *meta)
{
	config_free(ca_meta_fields, meta);
}

/* basicConstraints CA:TRUE and a keyUsage extension that allows keyCertSign. */
int
ca_cert_is_ca(X509 *cert)
{
	uint32_t flags = X509_get_extension_flags(cert);

	if ((flags & EXFLAG_INVALID) != 0)
		return 0;
	if ((flags & EXFLAG_CA) == 0 || (flags & EXFLAG_BCONS) == 0)
		return 0;
	if ((flags & EXFLAG_KUSAGE) == 0)
		return 0;
	return (X509_get_key_usage(cert) & KU_KEY_CERT_SIGN) != 0;
}

/* now must lie within [notBefore, notAfter]. */
int
ca_cert_check_time(X509 *cert, const char *what, int64_t now, struct ac_err *err)
{
	int64_t nb = asn1_time_to_unix(X509_get0_notBefore(cert));
	int64_t na = asn1_time_to_unix(X509_get0_notAfter(cert));
	char when[32];

	if (nb == 0 || na == 0)
		return ac_err_set(err, AC_ERR_INVALID, "cert_unreadable",
		                  "%s: the certificate's validity dates cannot be read", what);
	if (now < nb) {
		time_format_rfc3339(nb, when, sizeof(when));
		return ac_err_set(err, AC_ERR_POLICY, "not_yet_valid",
		                  "%s: the certificate is not valid before %s", what, when);
	}
	if (now > na) {
		time_format_rfc3339(na, when, sizeof(when));
		return ac_err_set(err, AC_ERR_POLICY, "expired",
		                  "%s: the certificate expired at %s", what, when);
	}
	return 0;
}

/* 1 when the text holds nothing but white space. */
static int
is_blank(const char *s)
{
	for (; *s != '\0'; s++)
		if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r')
			return 0;
	return 1;
}

/* The certificates in an optional file; missing or blank gives an empty stack. */
STACK_OF(X509) *
ca_read_certs_optional(const char *path, struct ac_err *err)
{
	STACK_OF(X509) *certs = NULL;
	char *data = NULL;

	if (!path_exists(path) ||
	    (read_file(path, 1024 * 1024, &data, NULL, err) == 0 && is_blank(data))) {
		if ((certs = sk_X509_new_null()) == NULL)
			ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto out;
	}
	if (data == NULL) /* read_file failed and set err */
		goto out;
	certs = x509_read_pem_file(path, err);
out:
	free(data);
	return certs;
}

/* first, then each of more, as PEM in one atomic 0644 file. */
int
ca_write_certs(const char *path, X509 *first, STACK_OF(X509) *more, struct ac_err *err)
{
	BIO *mem = NULL;
	char *data = NULL;
	long len;
	int rc = -1;

	mem = BIO_new(BIO_s_mem());
	if (mem == NULL) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "out_of_memory", "%s: BIO_new failed", path);
		goto out;
	}
	if (first != NULL && !PEM_write_bio_X509(mem, first)) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "cert_encode_failed", "%s: cannot encode", path);
		goto out;
	}
	for (int i = 0; more != NULL && i < sk_X509_num(more); i++) {
		if (!PEM_write_bio_X509(mem, sk_X509_value(more, i))) {
			ac_err_ssl(err, AC_ERR_CRYPTO, "cert_encode_failed", "%s: cannot encode",
			           path);
			goto out;
		}
	}
	len = BIO_get_mem_data(mem, &data);
	rc = atomic_write_file(path, len > 0 ? data : "", len > 0 ? (size_t)len : 0, 0644, err);
out:
	BIO_free(mem);
	return rc;
}

/*
 * X509_verify_cert with the given anchors and intermediates at the current time, default
 * flags and the "any purpose" purpose, so that a CA certificate is accepted as the target.
 */
int
ca_verify_chain(X509 *cert, STACK_OF(X509) *trusted, STACK_OF(X509) *untrusted, const char *what,
                STACK_OF(X509) **chain, struct ac_err *err)
{
	X509_STORE *store = NULL;
	X509_STORE_CTX *ctx = NULL;
	int rc = -1, verr;

	if (chain != NULL)
		*chain = NULL;
	store = X509_STORE_new();
	ctx = X509_STORE_CTX_new();
	if (store == NULL || ctx == NULL) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "out_of_memory", "%s: out of memory", what);
		goto out;
	}
	for (int i = 0; i < sk_X509_num(trusted); i++) {
		if (!X509_STORE_add_cert(store, sk_X509_value(trusted, i))) {
			ac_err_ssl(err, AC_ERR_CRYPTO, "chain_invalid",
			           "%s: cannot add a trust anchor", what);
			goto out;
		}
	}
	if (!X509_STORE_CTX_init(ctx, store, cert, untrusted) ||
	    !X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_ANY)) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "chain_invalid", "%s: cannot set up verification",
		           what);
		goto out;
	}
	if (X509_verify_cert(ctx) != 1) {
		verr = X509_STORE_CTX_get_error(ctx);
		ERR_clear_error();
		ac_err_set(err, AC_ERR_POLICY, "chain_invalid",
		           "%s: the chain does not verify: %s (at depth %d)", what,
		           X509_verify_cert_error_string(verr),
		           X509_STORE_CTX_get_error_depth(ctx));
		goto out;
	}
	if (chain != NULL && (*chain = X509_STORE_CTX_get1_chain(ctx)) == NULL) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "out_of_memory", "%s: out of memory", what);
		goto out;
	}
	rc = 0;
out:
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	return rc;
}
