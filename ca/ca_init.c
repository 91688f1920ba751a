/*
 * ca_init.c - `agentca init`: make a new CA in DIR.
 *
 * Root mode makes a self-signed root and an intermediate it signs; the intermediate is the
 * online signer, and carries critical name constraints (the trust domain as a URI host,
 * the DNS suffixes, and the IP ranges when given) so that even a stolen intermediate key
 * cannot mint a certificate a verifier would accept for a name outside the CA's domain.
 * Corporate mode (`init --csr`) makes only the intermediate key and a CSR that asks for the
 * same extensions; `ca import` (ca_import.c) installs the certificate the corporate CA
 * signs.
 *
 * Order of writes: keys, then certificates, then config.json, and ca.json last. ca.json is
 * what marks DIR as holding a CA, so an init that dies half way can simply be run again.
 */
#include "ca/authority.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "ca/ca_common.h"
#include "ca/x509_build.h"
#include "common/fsutil.h"
#include "common/timefmt.h"

#define DEFAULT_ROOT_TTL ((int64_t)10 * 365 * 86400)
#define DEFAULT_INTERMEDIATE_TTL ((int64_t)365 * 86400)
#define CLOCK_SKEW_ALLOWANCE 60
#define DNS_NAME_MAX 253
/* The CN is "<name> Intermediate CA" and X.520 bounds a CN at 64 characters. */
#define CA_NAME_MAX (64 - (int)sizeof(" Intermediate CA") + 1)

/* The defaults: P-256, 10-year root, 1-year intermediate, root mode. */
void
ca_init_options_defaults(struct ca_init_options *opts)
{
	memset(opts, 0, sizeof(*opts));
	opts->key_type = KEY_EC_P256;
	opts->root_ttl = DEFAULT_ROOT_TTL;
	opts->intermediate_ttl = DEFAULT_INTERMEDIATE_TTL;
}

/*
 * A trust domain or DNS suffix: lowercase dot-separated labels of [a-z0-9-_], none empty,
 * none longer than 63, at most 253 in all. Checked strictly because these names are put
 * into OpenSSL's extension config syntax, where a comma or colon would mean something.
 */
static int
check_domain(const char *what, const char *name, struct ac_err *err)
{
	size_t label = 0, len = name != NULL ? strlen(name) : 0;

	if (len == 0 || len > DNS_NAME_MAX)
		return ac_err_set(err, AC_ERR_INVALID, "name_invalid",
		                  "%s \"%s\" must be 1 to %d characters", what,
		                  name != NULL ? name : "", DNS_NAME_MAX);
	for (size_t i = 0; i <= len; i++) {
		char c = name[i];

		if (c == '.' || c == '\0') {
			if (label == 0 || label > 63)
				return ac_err_set(err, AC_ERR_INVALID, "name_invalid",
				                  "%s \"%s\" has an empty or over-long label", what,
				                  name);
			label = 0;
		} else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
		           c == '_') {
			label++;
		} else {
			return ac_err_set(err, AC_ERR_INVALID, "name_invalid",
			                  "%s \"%s\" may hold only lowercase letters, digits, '-', "
			                  "'_' and '.'",
			                  what, name);
		}
	}
	return 0;
}

/* The CA name: printable, no control bytes, short enough for the intermediate's CN. */
static int
check_ca_name(const char *name, struct ac_err *err)
{
	size_t len = name != NULL ? strlen(name) : 0;

	if (len == 0 || len > (size_t)CA_NAME_MAX)
		return ac_err_set(err, AC_ERR_INVALID, "name_invalid",
		                  "the CA name must be 1 to %d characters", CA_NAME_MAX);
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
			return ac_err_set(err, AC_ERR_INVALID, "name_invalid",
			                  "the CA name contains a control character");
	return 0;
}

/*
 * Turn a CIDR ("10.0.0.0/8", "fd00::/8") into the "address/mask" form OpenSSL wants in a
 * name constraint ("10.0.0.0/255.0.0.0", "fd00::/ff00::"). A range with host bits set is
 * refused: it almost always means a typo.
 */
static int
cidr_to_addr_mask(const char *cidr, char *out, size_t outlen, struct ac_err *err)
{
	unsigned char addr[16], mask[16];
	char host[INET6_ADDRSTRLEN], mtext[INET6_ADDRSTRLEN];
	const char *slash = strchr(cidr, '/');
	char *end = NULL;
	int af, nbytes;
	long prefix;
	size_t hlen;

	if (slash == NULL || (hlen = (size_t)(slash - cidr)) == 0 || hlen >= sizeof(host))
		return ac_err_set(err, AC_ERR_INVALID, "ip_range_invalid",
		                  "ip range \"%s\" must be address/prefix, e.g. 10.0.0.0/8", cidr);
	memcpy(host, cidr, hlen);
	host[hlen] = '\0';
	af = strchr(host, ':') != NULL ? AF_INET6 : AF_INET;
	nbytes = af == AF_INET6 ? 16 : 4;
	prefix = strtol(slash + 1, &end, 10);
	if (inet_pton(af, host, addr) != 1 || slash[1] == '\0' || *end != '\0' || prefix < 0 ||
	    prefix > nbytes * 8)
		return ac_err_set(err, AC_ERR_INVALID, "ip_range_invalid",
		                  "ip range \"%s\" must be address/prefix, e.g. 10.0.0.0/8", cidr);
	for (int i = 0; i < nbytes; i++) {
		long bits = prefix - 8L * i;

		mask[i] = bits >= 8 ? 0xff : bits <= 0 ? 0 : (unsigned char)(0xff << (8 - bits));
		if ((addr[i] & (unsigned char)~mask[i]) != 0)
			return ac_err_set(err, AC_ERR_INVALID, "ip_range_invalid",
			                  "ip range \"%s\" has host bits set after the prefix",
			                  cidr);
	}
	if (inet_ntop(af, mask, mtext, sizeof(mtext)) == NULL ||
	    (size_t)snprintf(out, outlen, "%s/%s", host, mtext) >= outlen)
		return ac_err_set(err, AC_ERR_INVALID, "ip_range_invalid",
		                  "ip range \"%s\" cannot be encoded", cidr);
	return 0;
}

/*
 * The nameConstraints extension in OpenSSL's config syntax, as a heap string:
 * "critical,permitted;URI:<td>,permitted;DNS:<suffix>...,permitted;IP:<addr/mask>...".
 * A URI constraint names a host (RFC 5280 4.2.1.10), so "corp.internal" admits exactly
 * the SPIFFE IDs spiffe://corp.internal/...
 */
static char *
name_constraints_text(const char *trust_domain, const struct cfg_strlist *dns,
                      const struct cfg_strlist *ips, struct ac_err *err)
{
	char range[2 * INET6_ADDRSTRLEN + 2];
	char *text = NULL, *data;
	BIO *mem = NULL;
	long len;

	mem = BIO_new(BIO_s_mem());
	if (mem == NULL || BIO_printf(mem, "critical,permitted;URI:%s", trust_domain) <= 0) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "out_of_memory", "name constraints: out of memory");
		goto out;
	}
	for (size_t i = 0; i < dns->count; i++) {
		if (BIO_printf(mem, ",permitted;DNS:%s", dns->items[i]) <= 0) {
			ac_err_ssl(err, AC_ERR_CRYPTO, "out_of_memory",
			           "name constraints: out of memory");
			goto out;
		}
	}
	for (size_t i = 0; ips != NULL && i < ips->count; i++) {
		if (cidr_to_addr_mask(ips->items[i], range, sizeof(range), err) != 0)
			goto out;
		if (BIO_printf(mem, ",permitted;IP:%s", range) <= 0) {
			ac_err_ssl(err, AC_ERR_CRYPTO, "out_of_memory",
			           "name constraints: out of memory");
			goto out;
		}
	}
	len = BIO_get_mem_data(mem, &data);
	text = malloc((size_t)len + 1);
	if (text == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto out;
	}
	memcpy(text, data, (size_t)len);
	text[len] = '\0';
out:
	BIO_free(mem);
	return text;
}

/* A v3 certificate with a random serial, the given names, validity and public key. */
static X509 *
cert_skeleton(const char *cn, const char *org, X509 *issuer, EVP_PKEY *pub, int64_t not_before,
              int64_t not_after, struct ac_err *err)
{
	X509_NAME *subject = NULL;
	X509 *cert = NULL;
	char serial[41];

	cert = X509_new();
	if (cert == NULL || !X509_set_version(cert, X509_VERSION_3)) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "cert_build_failed", "%s: X509_new failed", cn);
		goto fail;
	}
	if ((subject = x509_name_make(cn, org, err)) == NULL)
		goto fail;
	if (!X509_set_subject_name(cert, subject) ||
	    !X509_set_issuer_name(cert, issuer != NULL ? X509_get_subject_name(issuer) : subject) ||
	    !X509_set_pubkey(cert, pub)) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "cert_build_failed", "%s: cannot set names or key",
		           cn);
		goto fail;
	}
	if (x509_set_random_serial(cert, serial, err) != 0 ||
	    x509_set_validity(cert, not_before, not_after, err) != 0)
		goto fail;
	X509_NAME_free(subject);
	return cert;
fail:
	X509_NAME_free(subject);
	X509_free(cert);
	return NULL;
}

/* The self-signed root: CA:TRUE (no path length limit), keyCertSign and cRLSign. */
static X509 *
make_root(const struct ca_init_options *opts, EVP_PKEY *key, int64_t now, struct ac_err *err)
{
	char cn[128];
	X509 *cert;

	snprintf(cn, sizeof(cn), "%s Root CA", opts->name);
	cert = cert_skeleton(cn, opts->name, NULL, key, now - CLOCK_SKEW_ALLOWANCE,
	                     now + opts->root_ttl, err);
	if (cert == NULL)
		goto fail;
	if (x509_add_ext_text(cert, cert, NID_basic_constraints, "critical,CA:TRUE", err) != 0 ||
	    x509_add_ext_text(cert, cert, NID_key_usage, "critical,keyCertSign,cRLSign", err) !=
	        0 ||
	    x509_add_ext_text(cert, cert, NID_subject_key_identifier, "hash", err) != 0 ||
	    x509_add_ext_text(cert, cert, NID_authority_key_identifier, "keyid:always", err) != 0 ||
	    x509_sign(cert, key, key_sign_digest(key), err) != 0)
		goto fail;
	return cert;
fail:
	ac_err_wrap(err, "making the root certificate");
	X509_free(cert);
	return NULL;
}

/*
 * The intermediate, signed by the root: CA:TRUE with pathlen:0 (it signs leaves only),
 * critical name constraints, and a lifetime that never outlasts the root.
 */
static X509 *
make_intermediate(const struct ca_init_options *opts, EVP_PKEY *key, X509 *root, EVP_PKEY *root_key,
                  const char *constraints, int64_t now, struct ac_err *err)
{
	int64_t not_after = now + opts->intermediate_ttl;
	int64_t root_not_after = asn1_time_to_unix(X509_get0_notAfter(root));
	char cn[128];
	X509 *cert;

	if (not_after > root_not_after)
		not_after = root_not_after;
	snprintf(cn, sizeof(cn), "%s Intermediate CA", opts->name);
	cert = cert_skeleton(cn, opts->name, root, key, now - CLOCK_SKEW_ALLOWANCE, not_after, err);
	if (cert == NULL)
		goto fail;
	if (x509_add_ext_text(cert, root, NID_basic_constraints, "critical,CA:TRUE,pathlen:0",
	                      err) != 0 ||
	    x509_add_ext_text(cert, root, NID_key_usage,
	                      "critical,digitalSignature,keyCertSign,cRLSign", err) != 0 ||
	    x509_add_ext_text(cert, root, NID_subject_key_identifier, "hash", err) != 0 ||
	    x509_add_ext_text(cert, root, NID_authority_key_identifier, "keyid:always", err) != 0 ||
	    x509_add_ext_text(cert, root, NID_name_constraints, constraints, err) != 0 ||
	    x509_sign(cert, root_key, key_sign_digest(root_key), err) != 0)
		goto fail;
	return cert;
fail:
	ac_err_wrap(err, "making the intermediate certificate");
	X509_free(cert);
	return NULL;
}

/* Add one extension, from config text, to a request's extension list. */
static int
req_ext_add(STACK_OF(X509_EXTENSION) *exts, X509_REQ *req, int nid, const char *value,
            struct ac_err *err)
{
	X509_EXTENSION *ext;
	X509V3_CTX ctx;

	X509V3_set_ctx(&ctx, NULL, NULL, req, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (ext == NULL)
		return ac_err_ssl(err, AC_ERR_CRYPTO, "csr_build_failed",
		                  "extension %s = \"%s\" refused", OBJ_nid2sn(nid), value);
	if (!sk_X509_EXTENSION_push(exts, ext)) {
		X509_EXTENSION_free(ext);
		return ac_err_ssl(err, AC_ERR_CRYPTO, "out_of_memory", "out of memory");
	}
	return 0;
}

/*
 * The intermediate's CSR for a corporate CA: our subject and key, and an extensionRequest
 * with the CA extensions and name constraints we want, for a signer that copies them.
 */
static X509_REQ *
make_csr(const struct ca_init_options *opts, EVP_PKEY *key, const char *constraints,
         struct ac_err *err)
{
	STACK_OF(X509_EXTENSION) *exts = NULL;
	X509_NAME *subject = NULL;
	X509_REQ *req = NULL;
	char cn[128];
	int ok = 0;

	snprintf(cn, sizeof(cn), "%s Intermediate CA", opts->name);
	req = X509_REQ_new();
	exts = sk_X509_EXTENSION_new_null();
	if (req == NULL || exts == NULL || !X509_REQ_set_version(req, X509_REQ_VERSION_1)) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "out_of_memory", "X509_REQ_new failed");
		goto out;
	}
	if ((subject = x509_name_make(cn, opts->name, err)) == NULL)
		goto out;
	if (!X509_REQ_set_subject_name(req, subject) || !X509_REQ_set_pubkey(req, key)) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "csr_build_failed", "cannot set subject or key");
		goto out;
	}
	if (req_ext_add(exts, req, NID_basic_constraints, "critical,CA:TRUE,pathlen:0", err) != 0 ||
	    req_ext_add(exts, req, NID_key_usage, "critical,digitalSignature,keyCertSign,cRLSign",
	                err) != 0 ||
	    req_ext_add(exts, req, NID_name_constraints, constraints, err) != 0)
		goto out;
	if (!X509_REQ_add_extensions(req, exts)) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "csr_build_failed", "cannot add the extensions");
		goto out;
	}
	if (X509_REQ_sign(req, key, key_sign_digest(key)) <= 0) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "sign_failed", "signing the CSR failed");
		goto out;
	}
	ok = 1;
out:
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_NAME_free(subject);
	if (!ok) {
		ac_err_wrap(err, "making the intermediate CSR");
		X509_REQ_free(req);
		req = NULL;
	}
	return req;
}

/* Write a CSR as PEM, 0644. */
static int
write_csr(const char *path, X509_REQ *req, struct ac_err *err)
{
	BIO *mem = NULL;
	char *data;
	long len;
	int rc = -1;

	mem = BIO_new(BIO_s_mem());
	if (mem == NULL || !PEM_write_bio_X509_REQ(mem, req)) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "csr_encode_failed", "%s: cannot encode", path);
		goto out;
	}
	len = BIO_get_mem_data(mem, &data);
	rc = atomic_write_file(path, data, (size_t)len, 0644, err);
out:
	BIO_free(mem);
	return rc;
}

/* A JSON array of a list's strings. */
static json_t *
json_strlist(const struct cfg_strlist *list)
{
	json_t *array = json_array();

	for (size_t i = 0; array != NULL && list != NULL && i < list->count; i++) {
		if (json_array_append_new(array, json_string(list->items[i])) != 0) {
			json_decref(array);
			return NULL;
		}
	}
	return array;
}

/*
 * DIR/config.json with the default issuance policy, unless the operator already put one
 * there: an existing file is theirs and is left alone.
 */
static int
write_default_config(const char *dir, const struct cfg_strlist *dns, const struct cfg_strlist *ips,
                     struct ac_err *err)
{
	char path[CA_PATH_MAX];
	json_t *obj = NULL;
	char *text = NULL;
	int rc = -1;

	if (ca_path(path, dir, CA_FILE_CONFIG, err) != 0)
		goto out;
	if (path_exists(path)) {
		rc = 0;
		goto out;
	}
	obj = json_pack("{s:{s:s, s:s, s:s, s:o, s:o, s:i}}", "policy", "default_ttl", "24h",
	                "min_ttl", "5m", "max_ttl", "90d", "dns_suffixes", json_strlist(dns),
	                "ip_ranges", json_strlist(ips), "max_sans", 16);
	if (obj == NULL || (text = json_dumps(obj, JSON_INDENT(2) | JSON_PRESERVE_ORDER)) == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "%s: cannot build JSON", path);
		goto out;
	}
	{
		size_t n = strlen(text);
		char *withnl = realloc(text, n + 2);

		if (withnl == NULL) {
			ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
			goto out;
		}
		text = withnl;
		memcpy(text + n, "\n", 2);
	}
	rc = atomic_write_file(path, text, strlen(text), 0644, err);
out:
	free(text);
	json_decref(obj);
	return rc;
}

/* Check every option before anything is written. */
static int
check_options(const struct ca_init_options *opts, struct ac_err *err)
{
	if (opts->dir == NULL || *opts->dir == '\0')
		return ac_err_set(err, AC_ERR_USAGE, "usage", "init needs --dir DIR");
	if (check_ca_name(opts->name, err) != 0 ||
	    check_domain("trust domain", opts->trust_domain, err) != 0)
		return -1;
	for (size_t i = 0; opts->dns_suffixes != NULL && i < opts->dns_suffixes->count; i++)
		if (check_domain("dns suffix", opts->dns_suffixes->items[i], err) != 0)
			return -1;
	if (strcmp(key_type_name(opts->key_type), "unknown") == 0)
		return ac_err_set(err, AC_ERR_INVALID, "key_type_unknown", "unknown key type");
	if (opts->root_ttl <= CLOCK_SKEW_ALLOWANCE || opts->intermediate_ttl <= 0)
		return ac_err_set(err, AC_ERR_INVALID, "ttl_invalid",
		                  "the root and intermediate lifetimes must be positive");
	return 0;
}

/*
 * Create a new CA in opts->dir. See the comment at the top of this file for what is
 * written and in which order.
 */
int
ca_init(const struct ca_init_options *opts, struct ca_init_report *report, struct ac_err *err)
{
	char passphrase[PASSPHRASE_MAX + 1] = "";
	char path[CA_PATH_MAX], now_text[32];
	struct cfg_strlist dns = {NULL, 0}, ips = {NULL, 0};
	EVP_PKEY *root_key = NULL, *int_key = NULL;
	X509 *root = NULL, *inter = NULL;
	STACK_OF(X509) *anchors = NULL;
	X509_REQ *req = NULL;
	char *constraints = NULL;
	struct ca_meta meta;
	int64_t now = time_now();
	int rc = -1;

	memset(report, 0, sizeof(*report));
	memset(&meta, 0, sizeof(meta));
	if (check_options(opts, err) != 0)
		goto out;
	if (ca_path(path, opts->dir, CA_FILE_META, err) != 0)
		goto out;
	if (path_exists(path)) {
		ac_err_set(err, AC_ERR_CONFLICT, "ca_exists", "%s already holds a CA (%s exists)",
		           opts->dir, CA_FILE_META);
		goto out;
	}
	if (!opts->csr_only && opts->offline_root_path != NULL &&
	    path_exists(opts->offline_root_path)) {
		ac_err_set(err, AC_ERR_CONFLICT, "file_exists",
		           "%s already exists; refusing to overwrite a root key",
		           opts->offline_root_path);
		goto out;
	}

	/* The name constraints: the trust domain is the DNS suffix unless others are given. */
	if (opts->dns_suffixes != NULL && opts->dns_suffixes->count > 0) {
		if (cfg_strlist_set(&dns, (const char *const *)opts->dns_suffixes->items,
		                    opts->dns_suffixes->count, err) != 0)
			goto out;
	} else if (cfg_strlist_add(&dns, opts->trust_domain, err) != 0) {
		goto out;
	}
	if (opts->ip_ranges != NULL &&
	    cfg_strlist_set(&ips, (const char *const *)opts->ip_ranges->items,
	                    opts->ip_ranges->count, err) != 0)
		goto out;
	if ((constraints = name_constraints_text(opts->trust_domain, &dns, &ips, err)) == NULL)
		goto out;
	if (ensure_dir(opts->dir, 0700, err) != 0)
		goto out;

	/* The passphrase: given, or made here and kept in DIR/password. */
	if (opts->password_file == NULL && getenv("AGENTCA_PASSWORD") == NULL) {
		if (ca_path(report->passphrase_file, opts->dir, CA_FILE_PASSWORD, err) != 0 ||
		    passphrase_create(report->passphrase_file, passphrase, sizeof(passphrase),
		                      err) != 0)
			goto out;
	} else if (passphrase_resolve(opts->dir, opts->password_file, passphrase,
	                              sizeof(passphrase), err) != 0) {
		goto out;
	}

	if ((int_key = key_generate(opts->key_type, err)) == NULL)
		goto out;
	if (opts->csr_only) {
		if ((req = make_csr(opts, int_key, constraints, err)) == NULL)
			goto out;
		if (ca_path(path, opts->dir, CA_FILE_INT_KEY, err) != 0 ||
		    key_write_encrypted(path, int_key, passphrase, err) != 0)
			goto out;
		if (ca_path(report->csr_path, opts->dir, CA_FILE_INT_CSR, err) != 0 ||
		    write_csr(report->csr_path, req, err) != 0)
			goto out;
	} else {
		if ((root_key = key_generate(opts->key_type, err)) == NULL)
			goto out;
		if ((root = make_root(opts, root_key, now, err)) == NULL)
			goto out;
		if ((inter = make_intermediate(opts, int_key, root, root_key, constraints, now,
		                               err)) == NULL)
			goto out;
		/* What we just made must verify, or nothing is written. */
		if ((anchors = sk_X509_new_null()) == NULL || !sk_X509_push(anchors, root)) {
			ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
			goto out;
		}
		if (ca_verify_chain(inter, anchors, NULL, "new intermediate", NULL, err) != 0)
			goto out;
		if (opts->offline_root_path != NULL) {
			if (key_write_encrypted(opts->offline_root_path, root_key, passphrase,
			                        err) != 0)
				goto out;
		} else if (ca_path(path, opts->dir, CA_FILE_ROOT_KEY, err) != 0 ||
		           key_write_encrypted(path, root_key, passphrase, err) != 0) {
			goto out;
		}
		if (ca_path(path, opts->dir, CA_FILE_INT_KEY, err) != 0 ||
		    key_write_encrypted(path, int_key, passphrase, err) != 0)
			goto out;
		if (ca_path(path, opts->dir, CA_FILE_ROOT_CERT, err) != 0 ||
		    ca_write_certs(path, root, NULL, err) != 0)
			goto out;
		if (ca_path(path, opts->dir, CA_FILE_INT_CERT, err) != 0 ||
		    ca_write_certs(path, inter, NULL, err) != 0)
			goto out;
		if (cert_fingerprint(root, report->root_fingerprint, err) != 0)
			goto out;
	}
	if (write_default_config(opts->dir, &dns, &ips, err) != 0)
		goto out;

	/* ca.json last: from here on DIR holds a CA. meta borrows the strings it names. */
	time_format_rfc3339(now, now_text, sizeof(now_text));
	meta.name = (char *)opts->name;
	meta.trust_domain = (char *)opts->trust_domain;
	meta.key_type = (char *)key_type_name(opts->key_type);
	meta.mode = opts->csr_only ? CA_MODE_CORPORATE : CA_MODE_ROOT;
	meta.state = opts->csr_only ? CA_STATE_AWAITING_IMPORT : CA_STATE_ACTIVE;
	meta.created = now_text;
	meta.offline_root = !opts->csr_only && opts->offline_root_path != NULL;
	meta.dns_suffixes = dns;
	meta.ip_ranges = ips;
	if (ca_meta_write(opts->dir, &meta, err) != 0)
		goto out;
	rc = 0;
out:
	sk_X509_free(anchors);
	X509_REQ_free(req);
	X509_free(inter);
	X509_free(root);
	EVP_PKEY_free(root_key);
	EVP_PKEY_free(int_key);
	free(constraints);
	cfg_strlist_free(&ips);
	cfg_strlist_free(&dns);
	passphrase_wipe(passphrase, sizeof(passphrase));
	return rc;
}
