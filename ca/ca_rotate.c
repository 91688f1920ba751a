/*
 * ca_rotate.c - intermediate rotation: the state machine of rotate.h over the files in DIR
 * and the store's `intermediates` table.
 *
 * Each call reads the three certificate slots (next-intermediate.pem, intermediate.pem,
 * previous-intermediate.pem) and the stored states, records whatever the files show that
 * the store does not know yet (an import, an activation a crash interrupted), and then takes
 * at most one step. A step changes files first and records its entry after, except
 * retirement, which records first and then removes the files; reconciliation closes the gap
 * either way. The activation is the one step with several file operations, ordered so that
 * each prefix is a state reconciliation understands:
 *
 *   1. previous-intermediate.pem/.key = copies of the active pair   (previous == active: ignored)
 *   2. rename next-intermediate.key -> intermediate.key
 *   3. rename next-intermediate.pem -> intermediate.pem   (after 2 only: rotation_repair_files)
 *   4. log entries: the new one "intermediate_activated", the old one "intermediate_retiring"
 *
 * One step at a time: the daemon's scheduler and `agentca ca rotate` may run side by side,
 * so a step holds an exclusive flock on DIR/rotation.lock.
 *
 * The successor copies the active intermediate's subject, basicConstraints, keyUsage and
 * nameConstraints, so it may sign exactly what the active one may, and gets the same
 * lifetime (never beyond the root).
 */
#include "ca/rotate.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/file.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "ca/authority.h"
#include "ca/ca_common.h"
#include "ca/keys.h"
#include "ca/x509_build.h"
#include "common/fsutil.h"
#include "common/timefmt.h"

#define CLOCK_SKEW_ALLOWANCE 60
#define DEFAULT_PUBLISH_FOR ((int64_t)24 * 3600)
#define DEFAULT_RETENTION ((int64_t)7 * 86400)
#define DEFAULT_PREPARE_AT 66
#define KEY_FILE_MAX (64 * 1024)

static const struct cfg_field intermediate_fields[] = {
    {"publish_for", CFG_DURATION, offsetof(struct rotation_intermediate_settings, publish_for), 0,
     (int64_t)366 * 86400, NULL,
     "how long a prepared intermediate is in the bundle before it signs (default 24h)"},
    {"prepare_at", CFG_INT, offsetof(struct rotation_intermediate_settings, prepare_at), 1, 99,
     NULL, "prepare the next intermediate at this percent of the active one's life (default 66)"},
    CFG_END,
};

const struct cfg_field rotation_settings_fields[] = {
    {"retention", CFG_DURATION, offsetof(struct rotation_settings, retention), 0,
     (int64_t)3650 * 86400, NULL,
     "expired certificates stay in the hot tables this long; the log keeps all (default 7d)"},
    {"acknowledgments", CFG_BOOL, offsetof(struct rotation_settings, acknowledgments), 0, 0, NULL,
     "activate a new intermediate only once every gateway acked its bundle (default false)"},
    {"gateways", CFG_STRING_LIST, offsetof(struct rotation_settings, gateways), 0, 0, NULL,
     "SPIFFE IDs of the gateways that must ack (POST /v1/bundle/ack)"},
    {"intermediate", CFG_OBJECT, offsetof(struct rotation_settings, intermediate), 0, 0,
     intermediate_fields, "intermediate CA rotation"},
    CFG_END,
};

void
rotation_settings_defaults(struct rotation_settings *s)
{
	memset(s, 0, sizeof(*s));
	s->retention = DEFAULT_RETENTION;
	s->intermediate.publish_for = DEFAULT_PUBLISH_FOR;
	s->intermediate.prepare_at = DEFAULT_PREPARE_AT;
}

int
rotation_settings_validate(const struct rotation_settings *s, struct ac_err *err)
{
	if (s->acknowledgments && s->gateways.count == 0)
		return ac_err_set(err, AC_ERR_INVALID, "config_invalid",
		                  "rotation.acknowledgments is on but rotation.gateways lists no "
		                  "gateway: name the SPIFFE IDs that must acknowledge");
	for (size_t i = 0; i < s->gateways.count; i++)
		if (strncmp(s->gateways.items[i], "spiffe://", 9) != 0)
			return ac_err_set(err, AC_ERR_INVALID, "config_invalid",
			                  "rotation.gateways: \"%s\" is not a SPIFFE ID",
			                  s->gateways.items[i]);
	return 0;
}

void
rotation_settings_free(struct rotation_settings *s)
{
	cfg_strlist_free(&s->gateways);
}

const char *
rotation_outcome_name(enum rotation_outcome o)
{
	static const char *const names[] = {
	    [ROTATION_NOTHING] = "nothing",     [ROTATION_RECORDED] = "recorded",
	    [ROTATION_PREPARED] = "prepared",   [ROTATION_CSR_WRITTEN] = "csr_written",
	    [ROTATION_PUBLISHED] = "published", [ROTATION_ACTIVATED] = "activated",
	    [ROTATION_RETIRED] = "retired",     [ROTATION_WAITING] = "waiting",
	};

	return o <= ROTATION_WAITING ? names[o] : "?";
}

/* What DIR holds: the certificates in the three slots, and the pending CSR. */
struct slots {
	X509 *active, *next, *prev;
	char active_fp[65], next_fp[65], prev_fp[65]; /* "" when the slot is empty */
	int next_key, next_csr;                       /* the files exist */
	struct ca_meta meta;
};

static void
slots_free(struct slots *s)
{
	X509_free(s->active);
	X509_free(s->next);
	X509_free(s->prev);
	ca_meta_free(&s->meta);
	memset(s, 0, sizeof(*s));
}

/* The first certificate of an optional file (NULL and no error when the file is absent). */
static int
read_slot(const char *dir, const char *name, X509 **cert, char fp[65], struct ac_err *err)
{
	char path[CA_PATH_MAX];
	STACK_OF(X509) *certs = NULL;
	int rc = -1;

	*cert = NULL;
	fp[0] = '\0';
	if (ca_path(path, dir, name, err) != 0)
		goto out;
	if (!path_exists(path)) {
		rc = 0;
		goto out;
	}
	if ((certs = x509_read_pem_file(path, err)) == NULL)
		goto out;
	*cert = sk_X509_shift(certs);
	if (cert_fingerprint(*cert, fp, err) != 0)
		goto out;
	rc = 0;
out:
	sk_X509_pop_free(certs, X509_free);
	if (rc != 0) {
		X509_free(*cert);
		*cert = NULL;
	}
	return rc;
}

static int
file_in_dir_exists(const char *dir, const char *name)
{
	char path[CA_PATH_MAX];

	return ca_path(path, dir, name, NULL) == 0 && path_exists(path);
}

static int
read_slots(const char *dir, struct slots *s, struct ac_err *err)
{
	memset(s, 0, sizeof(*s));
	if (ca_meta_load(dir, &s->meta, err) != 0)
		return -1;
	if (strcmp(s->meta.state, CA_STATE_AWAITING_IMPORT) == 0)
		return ac_err_set(err, AC_ERR_CONFLICT, "awaiting_import",
		                  "%s has no intermediate yet; run agentca ca import first", dir);
	if (read_slot(dir, CA_FILE_INT_CERT, &s->active, s->active_fp, err) != 0 ||
	    read_slot(dir, CA_FILE_NEXT_CERT, &s->next, s->next_fp, err) != 0 ||
	    read_slot(dir, CA_FILE_PREV_CERT, &s->prev, s->prev_fp, err) != 0)
		return -1;
	if (s->active == NULL)
		return ac_err_set(err, AC_ERR_NOTFOUND, "no_intermediate", "%s/%s is missing", dir,
		                  CA_FILE_INT_CERT);
	/* A previous slot equal to the active one is step 1 of an activation that stopped. */
	if (strcmp(s->prev_fp, s->active_fp) == 0) {
		X509_free(s->prev);
		s->prev = NULL;
		s->prev_fp[0] = '\0';
	}
	s->next_key = file_in_dir_exists(dir, CA_FILE_NEXT_KEY);
	s->next_csr = file_in_dir_exists(dir, CA_FILE_NEXT_CSR);
	return 0;
}

/* fsync a directory, so renames and unlinks in it are durable. */
static int
sync_dir(const char *dir, struct ac_err *err)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc = 0;

	if (fd == -1 || fsync(fd) != 0)
		rc = ac_err_set(err, AC_ERR_IO, "io_error", "%s: fsync: %s", dir, strerror(errno));
	if (fd != -1)
		close(fd);
	return rc;
}

static int
rename_in_dir(const char *dir, const char *from, const char *to, struct ac_err *err)
{
	char a[CA_PATH_MAX], b[CA_PATH_MAX];

	if (ca_path(a, dir, from, err) != 0 || ca_path(b, dir, to, err) != 0)
		return -1;
	if (rename(a, b) != 0)
		return ac_err_set(err, AC_ERR_IO, "io_error", "rename %s to %s: %s", a, b,
		                  strerror(errno));
	return 0;
}

/* Remove a file of DIR; a missing file is fine. */
static int
unlink_in_dir(const char *dir, const char *name, struct ac_err *err)
{
	char path[CA_PATH_MAX];

	if (ca_path(path, dir, name, err) != 0)
		return -1;
	if (unlink(path) != 0 && errno != ENOENT)
		return ac_err_set(err, AC_ERR_IO, "io_error", "%s: %s", path, strerror(errno));
	return 0;
}

/* Copy a private file of DIR (a key) to another name, atomically and 0600. */
static int
copy_private(const char *dir, const char *from, const char *to, struct ac_err *err)
{
	char a[CA_PATH_MAX], b[CA_PATH_MAX], *data = NULL;
	size_t len = 0;
	int rc = -1;

	if (ca_path(a, dir, from, err) != 0 || ca_path(b, dir, to, err) != 0 ||
	    read_file(a, KEY_FILE_MAX, &data, &len, err) != 0)
		goto out;
	rc = atomic_write_file(b, data, len, 0600, err);
out:
	if (data != NULL)
		OPENSSL_cleanse(data, len);
	free(data);
	return rc;
}

int
rotation_awaits_import(const char *dir)
{
	return file_in_dir_exists(dir, CA_FILE_NEXT_CSR) &&
	       !file_in_dir_exists(dir, CA_FILE_NEXT_CERT);
}

int
rotation_repair_files(const char *dir, struct ac_err *err)
{
	if (!file_in_dir_exists(dir, CA_FILE_NEXT_CERT) ||
	    file_in_dir_exists(dir, CA_FILE_NEXT_KEY))
		return 0;
	/* The key went to intermediate.key (step 2); the certificate follows it (step 3). */
	if (rename_in_dir(dir, CA_FILE_NEXT_CERT, CA_FILE_INT_CERT, err) != 0)
		return -1;
	return sync_dir(dir, err);
}

/* Lowercase hex of a certificate's serial into out (41 bytes). */
static void
serial_hex(X509 *cert, char out[41])
{
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
	char *hex = bn != NULL ? BN_bn2hex(bn) : NULL;
	size_t i = 0;

	for (; hex != NULL && hex[i] != '\0' && i < 40; i++)
		out[i] = (char)(hex[i] >= 'A' && hex[i] <= 'F' ? hex[i] - 'A' + 'a' : hex[i]);
	out[i] = '\0';
	OPENSSL_free(hex);
	BN_free(bn);
}

/* One state change to record: the certificate (or, when its files are gone, the dates the
 * store knew), its new state and the entry's words. */
struct change {
	X509 *cert;
	int64_t not_before, not_after; /* used when cert is NULL */
	const char *fingerprint;
	const char *state;
	const char *kind;
	int64_t published_at, bundle_sequence;
	char detail[512];
	/* filled by record() */
	char serial[41];
	struct log_entry entry;
	struct intermediate_record rec;
	struct store_write w;
};

static void
change_prepare(const struct rotation_context *ctx, const struct slots *s, struct change *c)
{
	c->serial[0] = '\0';
	if (c->cert != NULL) {
		serial_hex(c->cert, c->serial);
		c->not_before = asn1_time_to_unix(X509_get0_notBefore(c->cert));
		c->not_after = asn1_time_to_unix(X509_get0_notAfter(c->cert));
	}
	memset(&c->entry, 0, sizeof(c->entry));
	c->entry.kind = c->kind;
	c->entry.actor = ctx->actor;
	c->entry.subject = s->meta.trust_domain;
	c->entry.serial = c->serial[0] != '\0' ? c->serial : NULL;
	c->entry.not_before = c->not_before;
	c->entry.not_after = c->not_after;
	c->entry.detail = c->detail;
	memset(&c->rec, 0, sizeof(c->rec));
	c->rec.fingerprint = c->fingerprint;
	c->rec.state = c->state;
	c->rec.not_before = c->entry.not_before;
	c->rec.not_after = c->entry.not_after;
	c->rec.published_at = c->published_at;
	c->rec.bundle_sequence = c->bundle_sequence;
	memset(&c->w, 0, sizeof(c->w));
	c->w.entry = &c->entry;
	c->w.intermediate = &c->rec;
}

/* Commit changes[0..n) durably, in one call (the committer puts them in one transaction
 * when it can). */
static int
record(const struct rotation_context *ctx, const struct slots *s, struct change *changes, size_t n,
       struct ac_err *err)
{
	struct store_write *w[2];

	if (n > 2)
		return ac_err_set(err, AC_ERR_INTERNAL, "internal", "too many changes at once");
	for (size_t i = 0; i < n; i++) {
		change_prepare(ctx, s, &changes[i]);
		w[i] = &changes[i].w;
	}
	if (store_submit_many(ctx->store, w, n, err) != 0) {
		for (size_t i = 0; i < n; i++)
			if (w[i]->result.code != AC_OK)
				return ac_err_set(err, w[i]->result.code, w[i]->result.reason,
				                  "recording %s: %s", changes[i].kind,
				                  w[i]->result.msg);
		return -1;
	}
	return 0;
}

static const struct intermediate_row *
find_row(const struct intermediate_row *rows, size_t n, const char *fp)
{
	for (size_t i = 0; fp[0] != '\0' && i < n; i++)
		if (strcmp(rows[i].fingerprint, fp) == 0)
			return &rows[i];
	return NULL;
}

static int
state_is(const struct intermediate_row *row, const char *state)
{
	return row != NULL && strcmp(row->state, state) == 0;
}

/* Record a state for a certificate we hold, keeping what the row knew of its publication. */
static int
record_one(const struct rotation_context *ctx, const struct slots *s, X509 *cert, const char *fp,
           const struct intermediate_row *row, const char *state, const char *kind,
           const char *detail, struct ac_err *err)
{
	struct change c;

	memset(&c, 0, sizeof(c));
	c.cert = cert;
	c.fingerprint = fp;
	c.state = state;
	c.kind = kind;
	c.published_at = row != NULL ? row->published_at : 0;
	c.bundle_sequence = row != NULL ? row->bundle_sequence : 0;
	snprintf(c.detail, sizeof(c.detail), "intermediate %s: %s", fp, detail);
	return record(ctx, s, &c, 1, err);
}

/*
 * A row whose certificate is no longer in any slot: its files are gone, so it can sign
 * nothing and is in no bundle. Recorded as retired with what the row knew.
 */
static int
record_gone(const struct rotation_context *ctx, const struct slots *s,
            const struct intermediate_row *row, struct ac_err *err)
{
	struct change c;

	memset(&c, 0, sizeof(c));
	c.not_before = row->not_before;
	c.not_after = row->not_after;
	c.fingerprint = row->fingerprint;
	c.state = "retired";
	c.kind = "intermediate_retired";
	c.published_at = row->published_at;
	c.bundle_sequence = row->bundle_sequence;
	snprintf(c.detail, sizeof(c.detail),
	         "intermediate %s: retired (its files are gone; was %s)", row->fingerprint,
	         row->state);
	return record(ctx, s, &c, 1, err);
}

/*
 * Bring the store in line with the files; *recorded counts the entries written. See the
 * comment at the top of the file for the cases.
 */
static int
reconcile(const struct rotation_context *ctx, struct slots *s, struct intermediate_row *rows,
          size_t *n, int *recorded, struct ac_err *err)
{
	const struct intermediate_row *row;
	int before = *recorded;

	row = find_row(rows, *n, s->active_fp);
	if (!state_is(row, "active")) {
		if (record_one(ctx, s, s->active, s->active_fp, row, "active",
		               "intermediate_activated",
		               row == NULL ? "in service (first seen by the rotation)"
		                           : "active (activation completed after an interruption)",
		               err) != 0)
			return -1;
		(*recorded)++;
	}
	if (s->prev != NULL) {
		row = find_row(rows, *n, s->prev_fp);
		if (state_is(row, "retired")) {
			/* Retirement recorded; only its files were left behind. */
			if (unlink_in_dir(ctx->dir, CA_FILE_PREV_CERT, err) != 0 ||
			    unlink_in_dir(ctx->dir, CA_FILE_PREV_KEY, err) != 0 ||
			    sync_dir(ctx->dir, err) != 0)
				return -1;
			X509_free(s->prev);
			s->prev = NULL;
			s->prev_fp[0] = '\0';
		} else if (!state_is(row, "retiring")) {
			if (record_one(
			        ctx, s, s->prev, s->prev_fp, row, "retiring",
			        "intermediate_retiring",
			        "retiring: signs nothing more, stays in the bundle until its "
			        "last leaf expires",
			        err) != 0)
				return -1;
			(*recorded)++;
		}
	}
	if (s->next != NULL && find_row(rows, *n, s->next_fp) == NULL) {
		if (record_one(
		        ctx, s, s->next, s->next_fp, NULL, "prepared", "intermediate_prepared",
		        "prepared (found on disk: ca import, or a step cut short); the bundle "
		        "carries it from now on",
		        err) != 0)
			return -1;
		(*recorded)++;
	}
	for (size_t i = 0; i < *n; i++) {
		const char *fp = rows[i].fingerprint;

		if (strcmp(rows[i].state, "retired") == 0 || strcmp(fp, s->active_fp) == 0 ||
		    strcmp(fp, s->next_fp) == 0 || strcmp(fp, s->prev_fp) == 0)
			continue;
		if (record_gone(ctx, s, &rows[i], err) != 0)
			return -1;
		(*recorded)++;
	}
	if (*recorded != before &&
	    store_intermediate_list(ctx->store, rows, STORE_INTERMEDIATES_MAX, n, err) != 0)
		return -1;
	return 0;
}

/* Copy extension nid of from into cert (when from has it). */
static int
copy_ext(X509 *cert, X509 *from, int nid, struct ac_err *err)
{
	int pos = X509_get_ext_by_NID(from, nid, -1);

	if (pos < 0)
		return 0;
	if (!X509_add_ext(cert, X509_get_ext(from, pos), -1))
		return ac_err_ssl(err, AC_ERR_CRYPTO, "cert_build_failed", "cannot copy %s",
		                  OBJ_nid2sn(nid));
	return 0;
}

static const int copied_exts[] = {NID_basic_constraints, NID_key_usage, NID_name_constraints};

/* The successor certificate, signed by the root: see the top of the file. */
static X509 *
sign_successor(X509 *active, X509 *root, EVP_PKEY *root_key, EVP_PKEY *key, int64_t now,
               struct ac_err *err)
{
	int64_t nb = asn1_time_to_unix(X509_get0_notBefore(active));
	int64_t na = asn1_time_to_unix(X509_get0_notAfter(active));
	int64_t root_na = asn1_time_to_unix(X509_get0_notAfter(root));
	int64_t not_after = now + (na - nb);
	X509 *cert = X509_new();
	char serial[41];

	if (not_after > root_na)
		not_after = root_na;
	if (cert == NULL || !X509_set_version(cert, X509_VERSION_3) ||
	    !X509_set_subject_name(cert, X509_get_subject_name(active)) ||
	    !X509_set_issuer_name(cert, X509_get_subject_name(root)) ||
	    !X509_set_pubkey(cert, key)) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "cert_build_failed", "cannot build the successor");
		goto fail;
	}
	if (x509_set_random_serial(cert, serial, err) != 0 ||
	    x509_set_validity(cert, now - CLOCK_SKEW_ALLOWANCE, not_after, err) != 0)
		goto fail;
	for (size_t i = 0; i < sizeof(copied_exts) / sizeof(copied_exts[0]); i++)
		if (copy_ext(cert, active, copied_exts[i], err) != 0)
			goto fail;
	if (x509_add_ext_text(cert, root, NID_subject_key_identifier, "hash", err) != 0 ||
	    x509_add_ext_text(cert, root, NID_authority_key_identifier, "keyid:always", err) != 0 ||
	    x509_sign(cert, root_key, key_sign_digest(root_key), err) != 0)
		goto fail;
	return cert;
fail:
	ac_err_wrap(err, "making the next intermediate");
	X509_free(cert);
	return NULL;
}

/* The successor's CSR for an offline or corporate root: the active one's subject and CA
 * extensions, asked for in an extensionRequest. */
static X509_REQ *
successor_csr(X509 *active, EVP_PKEY *key, struct ac_err *err)
{
	STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
	X509_REQ *req = X509_REQ_new();
	int ok = 0;

	if (req == NULL || exts == NULL || !X509_REQ_set_version(req, X509_REQ_VERSION_1) ||
	    !X509_REQ_set_subject_name(req, X509_get_subject_name(active)) ||
	    !X509_REQ_set_pubkey(req, key)) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "csr_build_failed", "cannot build the CSR");
		goto out;
	}
	for (size_t i = 0; i < sizeof(copied_exts) / sizeof(copied_exts[0]); i++) {
		int pos = X509_get_ext_by_NID(active, copied_exts[i], -1);

		if (pos >= 0 && !sk_X509_EXTENSION_push(exts, X509_get_ext(active, pos))) {
			ac_err_ssl(err, AC_ERR_CRYPTO, "out_of_memory", "out of memory");
			goto out;
		}
	}
	if (!X509_REQ_add_extensions(req, exts) ||
	    X509_REQ_sign(req, key, key_sign_digest(key)) <= 0) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "csr_build_failed", "cannot sign the CSR");
		goto out;
	}
	ok = 1;
out:
	sk_X509_EXTENSION_free(exts); /* the extensions belong to the active certificate */
	if (!ok) {
		X509_REQ_free(req);
		req = NULL;
	}
	return req;
}

/* The key type of the active intermediate (ca.json), to make its successor alike. */
static enum key_type
successor_key_type(const struct slots *s)
{
	enum key_type type;

	if (s->meta.key_type != NULL && key_type_parse(s->meta.key_type, &type) == 0)
		return type;
	return KEY_EC_P256;
}

/* Offline or corporate root: the successor's key and CSR, and the entry that says the
 * rotation now waits for `agentca ca import`. */
static int
prepare_csr(const struct rotation_context *ctx, struct slots *s, EVP_PKEY *key,
            const char *passphrase, struct rotation_result *res, struct ac_err *err)
{
	const char *root_kind = strcmp(s->meta.mode, CA_MODE_ROOT) == 0 ? "offline" : "corporate";
	char path[CA_PATH_MAX], detail[CA_PATH_MAX + 160], *data;
	struct log_entry entry;
	struct store_write w;
	X509_REQ *req = NULL;
	BIO *mem = NULL;
	int rc = -1;
	long len;

	if ((req = successor_csr(s->active, key, err)) == NULL)
		goto out;
	if (ca_path(path, ctx->dir, CA_FILE_NEXT_KEY, err) != 0 ||
	    key_write_encrypted(path, key, passphrase, err) != 0)
		goto out;
	mem = BIO_new(BIO_s_mem());
	if (mem == NULL || !PEM_write_bio_X509_REQ(mem, req)) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "csr_encode_failed", "cannot encode the CSR");
		goto out;
	}
	len = BIO_get_mem_data(mem, &data);
	if (ca_path(path, ctx->dir, CA_FILE_NEXT_CSR, err) != 0 ||
	    atomic_write_file(path, data, (size_t)len, 0644, err) != 0)
		goto out;
	snprintf(detail, sizeof(detail),
	         "next intermediate CSR written to %s for the %s root; waiting for agentca ca "
	         "import",
	         path, root_kind);
	memset(&entry, 0, sizeof(entry));
	entry.kind = "intermediate_csr_written";
	entry.actor = ctx->actor;
	entry.subject = s->meta.trust_domain;
	entry.detail = detail;
	memset(&w, 0, sizeof(w));
	w.entry = &entry;
	if (store_submit(ctx->store, &w, err) != 0)
		goto out;
	res->outcome = ROTATION_CSR_WRITTEN;
	snprintf(res->message, sizeof(res->message),
	         "next intermediate: key and CSR written to %s; have the %s root sign it, then run "
	         "agentca ca import --dir %s --cert SIGNED.pem --chain ROOT.pem",
	         path, root_kind, ctx->dir);
	rc = 0;
out:
	BIO_free(mem);
	X509_REQ_free(req);
	return rc;
}

/* Root in DIR: the successor signed by it, verified, written (key first: a certificate is
 * never without its key) and recorded as prepared. */
static int
prepare_signed(const struct rotation_context *ctx, struct slots *s, EVP_PKEY *key,
               const char *passphrase, struct rotation_result *res, struct ac_err *err)
{
	char path[CA_PATH_MAX], fp[65], rootfp[65];
	STACK_OF(X509) *anchors = NULL;
	X509 *root = NULL, *cert = NULL;
	EVP_PKEY *root_key = NULL;
	int rc = -1;

	if (ca_path(path, ctx->dir, CA_FILE_ROOT_KEY, err) != 0 ||
	    (root_key = key_load(path, passphrase, err)) == NULL)
		goto out;
	if (read_slot(ctx->dir, CA_FILE_ROOT_CERT, &root, rootfp, err) != 0)
		goto out;
	if (root == NULL) {
		ac_err_set(err, AC_ERR_NOTFOUND, "no_root", "%s/%s is missing", ctx->dir,
		           CA_FILE_ROOT_CERT);
		goto out;
	}
	if ((cert = sign_successor(s->active, root, root_key, key, ctx->now, err)) == NULL)
		goto out;
	if ((anchors = sk_X509_new_null()) == NULL || !sk_X509_push(anchors, root)) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto out;
	}
	if (ca_verify_chain(cert, anchors, NULL, "next intermediate", NULL, err) != 0)
		goto out;
	if (ca_path(path, ctx->dir, CA_FILE_NEXT_KEY, err) != 0 ||
	    key_write_encrypted(path, key, passphrase, err) != 0 ||
	    ca_path(path, ctx->dir, CA_FILE_NEXT_CERT, err) != 0 ||
	    ca_write_certs(path, cert, NULL, err) != 0 || cert_fingerprint(cert, fp, err) != 0)
		goto out;
	if (record_one(ctx, s, cert, fp, NULL, "prepared", "intermediate_prepared",
	               "prepared, signed by the root; the bundle carries it from now on", err) != 0)
		goto out;
	res->outcome = ROTATION_PREPARED;
	memcpy(res->fingerprint, fp, sizeof(fp));
	snprintf(res->message, sizeof(res->message),
	         "next intermediate %s prepared (signed by the root); it goes into the bundle now "
	         "and becomes active after %llds in it",
	         fp, (long long)ctx->settings->intermediate.publish_for);
	rc = 0;
out:
	sk_X509_free(anchors);
	X509_free(cert);
	X509_free(root);
	EVP_PKEY_free(root_key);
	return rc;
}

/* Prepare: a new key like the active one's, then a certificate from the root in DIR, or a
 * CSR for the admin when the root is elsewhere. */
static int
prepare(const struct rotation_context *ctx, struct slots *s, struct rotation_result *res,
        struct ac_err *err)
{
	char passphrase[PASSPHRASE_MAX + 1] = "";
	EVP_PKEY *key = NULL;
	int online_root, rc = -1;

	online_root = strcmp(s->meta.mode, CA_MODE_ROOT) == 0 && !s->meta.offline_root &&
	              file_in_dir_exists(ctx->dir, CA_FILE_ROOT_KEY);
	if (passphrase_resolve(ctx->dir, ctx->password_file, passphrase, sizeof(passphrase), err) !=
	        0 ||
	    (key = key_generate(successor_key_type(s), err)) == NULL)
		goto out;
	rc = online_root ? prepare_signed(ctx, s, key, passphrase, res, err)
	                 : prepare_csr(ctx, s, key, passphrase, res, err);
out:
	EVP_PKEY_free(key);
	passphrase_wipe(passphrase, sizeof(passphrase));
	return rc;
}

/* Activation: the renames of the comment at the top, then the two entries. */
static int
activate(const struct rotation_context *ctx, struct slots *s, const struct intermediate_row *next,
         const struct intermediate_row *active, struct rotation_result *res, struct ac_err *err)
{
	struct change c[2];
	char path[CA_PATH_MAX];

	if (ca_path(path, ctx->dir, CA_FILE_PREV_CERT, err) != 0 ||
	    ca_write_certs(path, s->active, NULL, err) != 0 ||
	    copy_private(ctx->dir, CA_FILE_INT_KEY, CA_FILE_PREV_KEY, err) != 0 ||
	    unlink_in_dir(ctx->dir, CA_FILE_NEXT_CSR, err) != 0 ||
	    rename_in_dir(ctx->dir, CA_FILE_NEXT_KEY, CA_FILE_INT_KEY, err) != 0 ||
	    rename_in_dir(ctx->dir, CA_FILE_NEXT_CERT, CA_FILE_INT_CERT, err) != 0 ||
	    sync_dir(ctx->dir, err) != 0)
		return -1;
	memset(c, 0, sizeof(c));
	c[0].cert = s->next;
	c[0].fingerprint = s->next_fp;
	c[0].state = "active";
	c[0].kind = "intermediate_activated";
	c[0].published_at = next->published_at;
	c[0].bundle_sequence = next->bundle_sequence;
	snprintf(c[0].detail, sizeof(c[0].detail),
	         "intermediate %s: active, signs new leaves (in the bundle since %lld, sequence "
	         "%lld)",
	         s->next_fp, (long long)next->published_at, (long long)next->bundle_sequence);
	c[1].cert = s->active;
	c[1].fingerprint = s->active_fp;
	c[1].state = "retiring";
	c[1].kind = "intermediate_retiring";
	c[1].published_at = active != NULL ? active->published_at : 0;
	c[1].bundle_sequence = active != NULL ? active->bundle_sequence : 0;
	snprintf(c[1].detail, sizeof(c[1].detail),
	         "intermediate %s: retiring, replaced by %s; stays in the bundle until its last "
	         "leaf expires",
	         s->active_fp, s->next_fp);
	if (record(ctx, s, c, 2, err) != 0)
		return -1;
	res->outcome = ROTATION_ACTIVATED;
	memcpy(res->fingerprint, s->next_fp, sizeof(res->fingerprint));
	snprintf(res->message, sizeof(res->message),
	         "intermediate %s is active and signs new leaves; %s is retiring", s->next_fp,
	         s->active_fp);
	return 0;
}

/* Retire the previous intermediate: the entry first, then its files go. */
static int
retire(const struct rotation_context *ctx, struct slots *s, const struct intermediate_row *row,
       struct rotation_result *res, struct ac_err *err)
{
	if (record_one(ctx, s, s->prev, s->prev_fp, row, "retired", "intermediate_retired",
	               "retired: its last leaf has expired; it leaves the bundle", err) != 0)
		return -1;
	if (unlink_in_dir(ctx->dir, CA_FILE_PREV_CERT, err) != 0 ||
	    unlink_in_dir(ctx->dir, CA_FILE_PREV_KEY, err) != 0 || sync_dir(ctx->dir, err) != 0)
		return -1;
	res->outcome = ROTATION_RETIRED;
	memcpy(res->fingerprint, s->prev_fp, sizeof(res->fingerprint));
	snprintf(res->message, sizeof(res->message),
	         "intermediate %s retired (no unexpired leaf left); it leaves the bundle",
	         s->prev_fp);
	return 0;
}

/* Gateways that have not acknowledged `sequence`, comma-separated into out; 0 when none. */
static int
missing_acks(const struct rotation_context *ctx, int64_t sequence, char *out, size_t len,
             int *missing, struct ac_err *err)
{
	size_t used = 0;

	*missing = 0;
	out[0] = '\0';
	for (size_t i = 0; i < ctx->settings->gateways.count; i++) {
		const char *id = ctx->settings->gateways.items[i];
		int64_t acked = 0;

		if (store_bundle_ack_get(ctx->store, id, &acked, err) != 0)
			return -1;
		if (acked >= sequence && sequence > 0)
			continue;
		(*missing)++;
		if (used < len)
			used += (size_t)snprintf(out + used, len - used, "%s%s",
			                         used > 0 ? ", " : "", id);
	}
	return 0;
}

/* res says the step waits, and on what. Returns 0 (a wait is not an error). */
static int wait_for(struct rotation_result *res, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
wait_for(struct rotation_result *res, const char *fmt, ...)
{
	va_list ap;

	res->outcome = ROTATION_WAITING;
	va_start(ap, fmt);
	vsnprintf(res->message, sizeof(res->message), fmt, ap);
	va_end(ap);
	return 0;
}

/* The next intermediate is prepared: published once the daemon's bundle carries it. */
static int
publish(const struct rotation_context *ctx, struct slots *s, struct rotation_result *res,
        struct ac_err *err)
{
	int64_t sequence = 0;
	int carried = 0;
	struct change c;

	if (ctx->bundle_probe != NULL &&
	    (carried = ctx->bundle_probe(ctx->bundle_arg, s->next_fp, &sequence)) < 0)
		return ac_err_set(err, AC_ERR_INTERNAL, "bundle_probe_failed",
		                  "cannot tell whether the bundle carries %s", s->next_fp);
	if (!carried)
		return wait_for(
		    res,
		    "next intermediate %s is prepared; waiting for the daemon to publish "
		    "it in the bundle (agentca serve does on its next tick)",
		    s->next_fp);
	memset(&c, 0, sizeof(c));
	c.cert = s->next;
	c.fingerprint = s->next_fp;
	c.state = "published";
	c.kind = "intermediate_published";
	c.published_at = ctx->now;
	c.bundle_sequence = sequence;
	snprintf(c.detail, sizeof(c.detail),
	         "intermediate %s: published in the bundle, sequence %lld", s->next_fp,
	         (long long)sequence);
	if (record(ctx, s, &c, 1, err) != 0)
		return -1;
	res->outcome = ROTATION_PUBLISHED;
	memcpy(res->fingerprint, s->next_fp, sizeof(res->fingerprint));
	snprintf(res->message, sizeof(res->message),
	         "next intermediate %s published in the bundle (sequence %lld)", s->next_fp,
	         (long long)sequence);
	return 0;
}

/* The next intermediate is published: active once nothing is retiring any more, it has
 * been in the bundle for publish_for (unless forced), and every gateway has acknowledged
 * (when acknowledgments are on). `retiring` says why the previous one is still there. */
static int
try_activate(const struct rotation_context *ctx, struct slots *s,
             const struct intermediate_row *next_row, const struct intermediate_row *active_row,
             int forced, const char *retiring, struct rotation_result *res, struct ac_err *err)
{
	int64_t due = next_row->published_at + ctx->settings->intermediate.publish_for;
	char when[32], missing[512];
	int nmissing = 0;

	if (s->prev != NULL)
		return wait_for(res, "next intermediate %s waits to become active: %s", s->next_fp,
		                retiring);
	if (!forced && ctx->now < due) {
		time_format_rfc3339(due, when, sizeof(when));
		return wait_for(res, "next intermediate %s becomes active at %s (publish_for)",
		                s->next_fp, when);
	}
	if (ctx->settings->acknowledgments && missing_acks(ctx, next_row->bundle_sequence, missing,
	                                                   sizeof(missing), &nmissing, err) != 0)
		return -1;
	if (nmissing > 0)
		return wait_for(res,
		                "next intermediate %s waits for %d gateway%s to acknowledge bundle "
		                "sequence %lld: %s",
		                s->next_fp, nmissing, nmissing == 1 ? "" : "s",
		                (long long)next_row->bundle_sequence, missing);
	return activate(ctx, s, next_row, active_row, res, err);
}

/* Take DIR/rotation.lock (waits for another process's step); the fd, or -1. */
static int
lock_dir(const char *dir, struct ac_err *err)
{
	char path[CA_PATH_MAX];
	int fd;

	if (ca_path(path, dir, "rotation.lock", err) != 0)
		return -1;
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd == -1 || flock(fd, LOCK_EX) != 0) {
		ac_err_set(err, AC_ERR_IO, "io_error", "%s: %s", path, strerror(errno));
		if (fd != -1)
			close(fd);
		return -1;
	}
	return fd;
}

static int step_locked(const struct rotation_context *ctx, int forced, struct rotation_result *res,
                       struct ac_err *err);

int
rotation_step(const struct rotation_context *ctx, int forced, struct rotation_result *res,
              struct ac_err *err)
{
	int fd, rc;

	memset(res, 0, sizeof(*res));
	if ((fd = lock_dir(ctx->dir, err)) == -1)
		return -1;
	rc = step_locked(ctx, forced, res, err);
	close(fd); /* releases the lock */
	return rc;
}

/* Reconcile, then at most one step; see rotation_step. */
static int
step_locked(const struct rotation_context *ctx, int forced, struct rotation_result *res,
            struct ac_err *err)
{
	struct intermediate_row rows[STORE_INTERMEDIATES_MAX];
	const struct intermediate_row *next_row, *active_row, *prev_row;
	char waiting[512] = "";
	struct slots s;
	size_t n = 0;
	int recorded = 0, rc = -1;

	memset(res, 0, sizeof(*res));
	memset(&s, 0, sizeof(s));
	if (rotation_repair_files(ctx->dir, err) != 0 || read_slots(ctx->dir, &s, err) != 0 ||
	    store_intermediate_list(ctx->store, rows, STORE_INTERMEDIATES_MAX, &n, err) != 0 ||
	    reconcile(ctx, &s, rows, &n, &recorded, err) != 0)
		goto out;
	next_row = find_row(rows, n, s.next_fp);
	active_row = find_row(rows, n, s.active_fp);
	prev_row = find_row(rows, n, s.prev_fp);

	/* Retirement first: it frees the previous slot for the next activation. */
	if (s.prev != NULL) {
		int64_t count = 0, last = 0;
		char until[32];

		if (store_cert_count_by_issuer(ctx->store, s.prev_fp, ctx->now, &count, &last,
		                               err) != 0)
			goto out;
		if (count == 0) {
			rc = retire(ctx, &s, prev_row, res, err);
			goto out;
		}
		time_format_rfc3339(last, until, sizeof(until));
		snprintf(
		    waiting, sizeof(waiting),
		    "retiring intermediate %s still has %lld unexpired leaf certificate%s, the "
		    "last valid until %s",
		    s.prev_fp, (long long)count, count == 1 ? "" : "s", until);
	}

	if (s.next != NULL && state_is(next_row, "prepared")) {
		rc = publish(ctx, &s, res, err);
		goto out;
	}
	if (s.next != NULL && state_is(next_row, "published")) {
		rc = try_activate(ctx, &s, next_row, active_row, forced, waiting, res, err);
		goto out;
	}

	if (s.next == NULL && s.next_csr) {
		rc = wait_for(
		    res,
		    "waiting for the signed next intermediate: have %s/%s signed, then run "
		    "agentca ca import --dir %s --cert SIGNED.pem --chain ROOT.pem",
		    ctx->dir, CA_FILE_NEXT_CSR, ctx->dir);
		goto out;
	}

	/* Forced, the next step of a rotation still retiring its previous intermediate is
	 * that retirement: a third intermediate is prepared only when it is due. */
	if (s.next == NULL && !(forced && s.prev != NULL)) {
		int64_t nb = asn1_time_to_unix(X509_get0_notBefore(s.active));
		int64_t na = asn1_time_to_unix(X509_get0_notAfter(s.active));
		int64_t due = nb + (na - nb) / 100 * ctx->settings->intermediate.prepare_at;

		if (forced || ctx->now >= due) {
			rc = prepare(ctx, &s, res, err);
			goto out;
		}
	}
	res->outcome = recorded > 0         ? ROTATION_RECORDED
	               : waiting[0] != '\0' ? ROTATION_WAITING
	                                    : ROTATION_NOTHING;
	snprintf(res->message, sizeof(res->message), "%s",
	         waiting[0] != '\0' ? waiting
	         : recorded > 0     ? "recorded the intermediates' states found on disk"
	                            : "nothing is due");
	rc = 0;
out:
	slots_free(&s);
	return rc;
}

int
rotation_status(const struct rotation_context *ctx, struct rotation_member *members, size_t max,
                size_t *n, struct ac_err *err)
{
	struct intermediate_row rows[STORE_INTERMEDIATES_MAX];
	size_t nrows = 0;

	*n = 0;
	if (store_intermediate_list(ctx->store, rows, STORE_INTERMEDIATES_MAX, &nrows, err) != 0)
		return -1;
	if (rotation_awaits_import(ctx->dir) && *n < max) {
		memset(&members[*n], 0, sizeof(members[*n]));
		strcpy(members[*n].state, "csr_written");
		(*n)++;
	}
	for (size_t i = 0; i < nrows && *n < max; i++) {
		struct rotation_member *m = &members[(*n)++];

		memset(m, 0, sizeof(*m));
		memcpy(m->fingerprint, rows[i].fingerprint, sizeof(m->fingerprint));
		memcpy(m->state, rows[i].state, sizeof(m->state));
		m->not_before = rows[i].not_before;
		m->not_after = rows[i].not_after;
		m->published_at = rows[i].published_at;
		m->bundle_sequence = rows[i].bundle_sequence;
		m->changed_at = rows[i].changed_at;
	}
	return 0;
}

int64_t
rotation_supersede_time(const struct rotation_member *members, size_t n,
                        const struct rotation_settings *s, int64_t now)
{
	for (size_t i = 0; i < n; i++) {
		if (strcmp(members[i].state, "published") == 0)
			return members[i].published_at + s->intermediate.publish_for;
		if (strcmp(members[i].state, "prepared") == 0)
			return now + s->intermediate.publish_for;
	}
	return 0;
}
