/*
 * ca_show.c - `agentca ca show`: what this CA is, for a person, without the passphrase.
 *
 * Prints the mode, name and trust domain; for each certificate (root, intermediate,
 * upstream, extra trust roots) its subject, issuer, serial, validity and SHA-256
 * fingerprint; where the keys are and whether they are encrypted and private; the
 * intermediate's name constraints; and the issuance policy from config.json. Nothing here
 * decrypts a key: a key file is only stat'ed and its PEM header looked at.
 */
#include "ca/authority.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "ca/ca_common.h"
#include "ca/x509_build.h"
#include "common/fsutil.h"
#include "common/timefmt.h"

/* The serial as lowercase hex, or "?" when it cannot be converted. */
static void
print_serial(BIO *bio, X509 *cert)
{
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
	char *hex = bn != NULL ? BN_bn2hex(bn) : NULL;

	for (char *p = hex; p != NULL && *p != '\0'; p++)
		if (*p >= 'A' && *p <= 'F')
			*p = (char)(*p - 'A' + 'a');
	BIO_printf(bio, "  serial:      %s\n", hex != NULL ? hex : "?");
	OPENSSL_free(hex);
	BN_free(bn);
}

/* One certificate: subject, issuer, serial, validity, fingerprint. */
static void
print_cert(BIO *bio, const char *title, const char *file, X509 *cert)
{
	char nb[32], na[32], fp[65];
	struct ac_err ignored;

	ac_err_clear(&ignored);
	time_format_rfc3339(asn1_time_to_unix(X509_get0_notBefore(cert)), nb, sizeof(nb));
	time_format_rfc3339(asn1_time_to_unix(X509_get0_notAfter(cert)), na, sizeof(na));
	if (cert_fingerprint(cert, fp, &ignored) != 0)
		strcpy(fp, "?");
	BIO_printf(bio, "%s (%s):\n  subject:     ", title, file);
	X509_NAME_print_ex(bio, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253);
	BIO_printf(bio, "\n  issuer:      ");
	X509_NAME_print_ex(bio, X509_get_issuer_name(cert), 0, XN_FLAG_RFC2253);
	BIO_printf(bio, "\n");
	print_serial(bio, cert);
	BIO_printf(bio, "  not before:  %s\n  not after:   %s\n  sha256:      %s\n", nb, na, fp);
}

/* Every certificate of an optional file, numbered; "none" when there is none. */
static int
print_cert_file(BIO *bio, const char *dir, const char *file, const char *title, struct ac_err *err)
{
	STACK_OF(X509) *certs = NULL;
	char path[CA_PATH_MAX], numbered[128];
	int rc = -1, n;

	if (ca_path(path, dir, file, err) != 0 ||
	    (certs = ca_read_certs_optional(path, err)) == NULL)
		goto out;
	n = sk_X509_num(certs);
	if (n == 0)
		BIO_printf(bio, "%s (%s): none\n", title, file);
	for (int i = 0; i < n; i++) {
		if (n > 1)
			snprintf(numbered, sizeof(numbered), "%s %d of %d", title, i + 1, n);
		else
			snprintf(numbered, sizeof(numbered), "%s", title);
		print_cert(bio, numbered, file, sk_X509_value(certs, i));
	}
	rc = 0;
out:
	sk_X509_pop_free(certs, X509_free);
	return rc;
}

/*
 * The state of one key file: where it is, whether its PEM header says encrypted, and
 * whether its mode keeps it private. Only the first bytes are read, never the key.
 */
static void
print_key_state(BIO *bio, const char *label, const char *path)
{
	char head[128] = "";
	struct stat st;
	FILE *fp;
	size_t n;
	int encrypted;

	if (stat(path, &st) != 0) {
		BIO_printf(bio, "%s: missing (%s)\n", label, path);
		return;
	}
	fp = fopen(path, "r");
	if (fp != NULL) {
		n = fread(head, 1, sizeof(head) - 1, fp);
		head[n] = '\0';
		fclose(fp);
	}
	encrypted = strstr(head, "ENCRYPTED") != NULL;
	if ((st.st_mode & 077) != 0)
		BIO_printf(bio,
		           "%s: WARNING: %s is accessible by group or others (mode %04o); run: "
		           "chmod 600 %s\n",
		           label, path, (unsigned)(st.st_mode & 07777), path);
	else if (!encrypted)
		BIO_printf(bio, "%s: WARNING: %s is not encrypted (mode %04o)\n", label, path,
		           (unsigned)(st.st_mode & 07777));
	else
		BIO_printf(bio, "%s: encrypted in %s, mode %04o\n", label, path,
		           (unsigned)(st.st_mode & 07777));
}

/* The intermediate's nameConstraints, as OpenSSL prints them. */
static void
print_name_constraints(BIO *bio, X509 *cert)
{
	int pos = X509_get_ext_by_NID(cert, NID_name_constraints, -1);
	X509_EXTENSION *ext = pos >= 0 ? X509_get_ext(cert, pos) : NULL;

	if (ext == NULL) {
		BIO_printf(bio, "name constraints: none\n");
		return;
	}
	BIO_printf(bio, "name constraints%s:\n",
	           X509_EXTENSION_get_critical(ext) ? " (critical)" : "");
	if (!X509V3_EXT_print(bio, ext, 0, 2))
		BIO_printf(bio, "  (cannot be printed)");
	BIO_printf(bio, "\n");
	ERR_clear_error();
}

/* The "policy" object of config.json, compact, or a note that defaults apply. */
static void
print_policy(BIO *bio, const char *dir)
{
	char path[CA_PATH_MAX];
	json_error_t jerr;
	json_t *root = NULL;
	char *text = NULL;

	if (path_join(path, sizeof(path), dir, CA_FILE_CONFIG, NULL) != 0 || !path_exists(path)) {
		BIO_printf(bio, "policy: defaults (no %s)\n", CA_FILE_CONFIG);
		return;
	}
	root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL)
		BIO_printf(bio, "policy: WARNING: %s does not parse: %s\n", path, jerr.text);
	else if (json_object_get(root, "policy") == NULL)
		BIO_printf(bio, "policy: defaults (%s has no policy)\n", CA_FILE_CONFIG);
	else if ((text = json_dumps(json_object_get(root, "policy"),
	                            JSON_COMPACT | JSON_PRESERVE_ORDER)) != NULL)
		BIO_printf(bio, "policy: %s\n", text);
	free(text);
	json_decref(root);
}

/* Print the whole picture of the CA in dir to out. */
int
ca_show(const char *dir, FILE *out, struct ac_err *err)
{
	char path[CA_PATH_MAX];
	STACK_OF(X509) *inter = NULL;
	struct ca_meta meta;
	BIO *bio = NULL;
	int rc = -1, awaiting;

	memset(&meta, 0, sizeof(meta));
	if (ca_meta_load(dir, &meta, err) != 0)
		goto out;
	bio = BIO_new_fp(out, BIO_NOCLOSE);
	if (bio == NULL) {
		ac_err_ssl(err, AC_ERR_INTERNAL, "out_of_memory", "BIO_new_fp failed");
		goto out;
	}
	awaiting = strcmp(meta.state, CA_STATE_AWAITING_IMPORT) == 0;
	BIO_printf(bio, "mode: %s\nname: %s\ntrust domain: %s\nkey type: %s\nstate: %s\n",
	           meta.mode, meta.name, meta.trust_domain,
	           meta.key_type != NULL ? meta.key_type : "?", meta.state);

	if (awaiting) {
		if (ca_path(path, dir, CA_FILE_INT_CSR, err) != 0)
			goto out;
		BIO_printf(bio,
		           "intermediate certificate: not installed yet; have %s signed by the "
		           "corporate CA, then run agentca ca import\n",
		           path);
	} else {
		if (print_cert_file(bio, dir, CA_FILE_ROOT_CERT, "root certificate", err) != 0 ||
		    print_cert_file(bio, dir, CA_FILE_INT_CERT, "intermediate certificate", err) !=
		        0 ||
		    print_cert_file(bio, dir, CA_FILE_UPSTREAM, "upstream certificate", err) != 0 ||
		    print_cert_file(bio, dir, CA_FILE_TRUST, "extra trust root", err) != 0)
			goto out;
	}

	if (strcmp(meta.mode, CA_MODE_CORPORATE) == 0) {
		BIO_printf(bio, "root key: not held (corporate root)\n");
	} else if (meta.offline_root) {
		BIO_printf(bio, "root key: offline (not in %s)\n", dir);
	} else {
		if (ca_path(path, dir, CA_FILE_ROOT_KEY, err) != 0)
			goto out;
		print_key_state(bio, "root key", path);
	}
	if (ca_path(path, dir, CA_FILE_INT_KEY, err) != 0)
		goto out;
	print_key_state(bio, "intermediate key", path);

	if (!awaiting) {
		if (ca_path(path, dir, CA_FILE_INT_CERT, err) != 0 ||
		    (inter = ca_read_certs_optional(path, err)) == NULL)
			goto out;
		if (sk_X509_num(inter) > 0)
			print_name_constraints(bio, sk_X509_value(inter, 0));
	}
	print_policy(bio, dir);
	if (BIO_flush(bio) != 1 || ferror(out)) {
		ac_err_set(err, AC_ERR_IO, "io_error", "cannot write the CA description");
		goto out;
	}
	rc = 0;
out:
	sk_X509_pop_free(inter, X509_free);
	BIO_free(bio);
	ca_meta_free(&meta);
	return rc;
}
