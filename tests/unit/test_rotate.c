/*
 * test_rotate.c - the CA side of rotation: the intermediate state machine (ca/rotate.h), the
 * scheduler (rotation/scheduler.h) with an injected clock, and pruning of the hot tables.
 *
 * The state machine runs against a real CA directory (ca_init) and a real store. Every step
 * reopens the store, as a restarted daemon would: the state must come back from the files
 * and the store alone. Times are injected (ctx.now) near the real clock so that the
 * certificates the steps make are valid when the authority is loaded for real. Crashes are
 * simulated by doing part of a step's file operations by hand and then calling the state
 * machine again.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "ca/authority.h"
#include "ca/keys.h"
#include "ca/rotate.h"
#include "ca/x509_build.h"
#include "common/fsutil.h"
#include "common/timefmt.h"
#include "rotation/scheduler.h"
#include "store/store.h"
#include "testutil.h"

#define TD "corp.internal"

struct fixture {
	char *dir;
	char db[4096];
	struct store *store;
	struct rotation_settings settings;
	struct rotation_context ctx;
	int probe_answer; /* what the fake bundle says: 1 carries, 0 not */
	int64_t probe_sequence;
	int64_t t0;
	const char *fault_point; /* a store commit step to fail (store_fault_fn), or NULL */
};

static int
fail_at(void *arg, const char *point)
{
	struct fixture *f = arg;

	return f->fault_point != NULL && strcmp(point, f->fault_point) == 0;
}

static int
fake_probe(void *arg, const char *fingerprint, int64_t *sequence)
{
	struct fixture *f = arg;

	(void)fingerprint;
	*sequence = f->probe_sequence;
	return f->probe_answer;
}

static void
reopen(struct fixture *f)
{
	struct store_options so;

	store_close(f->store);
	store_options_defaults(&so);
	so.path = f->db;
	so.fault = fail_at;
	so.fault_arg = f;
	f->store = store_open(&so, NULL);
	assert_non_null(f->store);
	f->ctx.store = f->store;
}

/* A CA with a 1000 s intermediate (made now), and the store next to it. */
static struct fixture *
fixture_new(const char *offline_root)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct ca_init_options opts;
	struct ca_init_report report;
	char root_key[4096];

	assert_non_null(f);
	f->dir = test_tmpdir("rotate");
	ca_init_options_defaults(&opts);
	opts.dir = f->dir;
	opts.name = "Rotate Test";
	opts.trust_domain = TD;
	opts.intermediate_ttl = 1000;
	if (offline_root != NULL) {
		snprintf(root_key, sizeof(root_key), "%s.%s", f->dir, offline_root);
		opts.offline_root_path = root_key;
	}
	assert_int_equal(ca_init(&opts, &report, NULL), 0);
	assert_int_equal(path_join(f->db, sizeof(f->db), f->dir, "agentca.db", NULL), 0);
	rotation_settings_defaults(&f->settings);
	f->settings.intermediate.publish_for = 100;
	f->settings.intermediate.prepare_at = 50;
	f->t0 = time_now();
	memset(&f->ctx, 0, sizeof(f->ctx));
	f->ctx.dir = f->dir;
	f->ctx.settings = &f->settings;
	f->ctx.now = f->t0;
	f->ctx.actor = "test";
	f->ctx.bundle_probe = fake_probe;
	f->ctx.bundle_arg = f;
	f->probe_sequence = 42;
	reopen(f);
	return f;
}

static void
fixture_free(struct fixture *f)
{
	char path[4096];

	store_close(f->store);
	rotation_settings_free(&f->settings);
	snprintf(path, sizeof(path), "%s.offline.key", f->dir);
	unlink(path);
	test_rmdir(f->dir);
	free(f);
}

/* One step at time `at`, after a restart; returns the outcome. */
static enum rotation_outcome
step_at(struct fixture *f, int64_t at, int forced, struct rotation_result *res)
{
	struct ac_err err;

	reopen(f);
	ac_err_clear(&err);
	f->ctx.now = at;
	if (rotation_step(&f->ctx, forced, res, &err) != 0)
		fail_msg("rotation_step: %s", err.msg);
	return res->outcome;
}

static void
fingerprint_of(const char *dir, const char *name, char fp[65])
{
	char path[4096];
	STACK_OF(X509) *certs;

	fp[0] = '\0';
	assert_int_equal(path_join(path, sizeof(path), dir, name, NULL), 0);
	if (!path_exists(path))
		return;
	certs = x509_read_pem_file(path, NULL);
	assert_non_null(certs);
	assert_int_equal(cert_fingerprint(sk_X509_value(certs, 0), fp, NULL), 0);
	sk_X509_pop_free(certs, X509_free);
}

static int
exists(const char *dir, const char *name)
{
	char path[4096];

	assert_int_equal(path_join(path, sizeof(path), dir, name, NULL), 0);
	return path_exists(path);
}

/* The stored state of the intermediate with this fingerprint ("" when unknown). */
static const char *
state_of(struct fixture *f, const char *fp)
{
	static char state[16];
	struct intermediate_row rows[STORE_INTERMEDIATES_MAX];
	size_t n = 0;

	state[0] = '\0';
	assert_int_equal(store_intermediate_list(f->store, rows, STORE_INTERMEDIATES_MAX, &n, NULL),
	                 0);
	for (size_t i = 0; i < n; i++)
		if (strcmp(rows[i].fingerprint, fp) == 0)
			strcpy(state, rows[i].state);
	return state;
}

/* A leaf row issued by `issuer_fp`, valid until not_after (the DER is a stand-in: only the
 * rotation's queries read these rows). */
static void
add_leaf(struct fixture *f, const char *serial, const char *issuer_fp, int64_t not_after)
{
	static const unsigned char der[] = {0x30, 0x00};
	struct cert_record rec;
	struct log_entry entry;
	struct store_write w;

	memset(&rec, 0, sizeof(rec));
	rec.serial = serial;
	rec.subject = "spiffe://" TD "/leaf";
	rec.issuer_fingerprint = issuer_fp;
	rec.not_before = f->t0 - 10;
	rec.not_after = not_after;
	rec.der = der;
	rec.der_len = sizeof(der);
	memset(&entry, 0, sizeof(entry));
	entry.kind = "issued";
	entry.subject = rec.subject;
	entry.serial = serial;
	memset(&w, 0, sizeof(w));
	w.cert = &rec;
	w.entry = &entry;
	assert_int_equal(store_submit(f->store, &w, NULL), 0);
}

/* The kinds of the rotation's log entries, space-separated, in order. */
struct kinds {
	char text[2048];
};

static int
collect_kind(void *arg, const struct log_row *row)
{
	struct kinds *k = arg;
	const char *p = strstr(row->canonical, "\"kind\":\"intermediate_");

	if (p != NULL) {
		p += strlen("\"kind\":\"intermediate_");
		strncat(k->text, p, strcspn(p, "\""));
		strcat(k->text, " ");
	}
	return 0;
}

static void
assert_log_kinds(struct fixture *f, const char *want)
{
	struct kinds k;

	memset(&k, 0, sizeof(k));
	assert_int_equal(store_log_scan(f->store, NULL, collect_kind, &k, NULL), 0);
	assert_string_equal(k.text, want);
}

/* prepare -> publish -> active -> retire, each step due only at its time, across restarts. */
static void
test_full_cycle(void **state)
{
	struct fixture *f = fixture_new(NULL);
	struct rotation_result res;
	char old_fp[65], next_fp[65], fp[65];
	struct ca_authority *ca;
	int64_t t = f->t0;

	(void)state;
	/* Certificates made at an injected time must be valid on the real clock (the chain is
	 * verified when made): the steps stay within a minute of now. */
	f->settings.intermediate.publish_for = 10;
	fingerprint_of(f->dir, "intermediate.pem", old_fp);

	/* First look: the active intermediate is recorded; nothing is due before prepare_at. */
	f->settings.intermediate.prepare_at = 99;
	assert_int_equal(step_at(f, t, 0, &res), ROTATION_RECORDED);
	assert_string_equal(state_of(f, old_fp), "active");
	assert_int_equal(step_at(f, t, 0, &res), ROTATION_NOTHING);
	assert_false(exists(f->dir, CA_FILE_NEXT_CERT));

	/* At prepare_at percent of its life (t0 - 60 to t0 + 1000) the successor is made: at
	 * 5%, 53 s after its start. */
	f->settings.intermediate.prepare_at = 5;
	assert_int_equal(step_at(f, t - 20, 0, &res), ROTATION_NOTHING);
	assert_int_equal(step_at(f, t, 0, &res), ROTATION_PREPARED);
	fingerprint_of(f->dir, CA_FILE_NEXT_CERT, next_fp);
	assert_string_equal(res.fingerprint, next_fp);
	assert_string_equal(state_of(f, next_fp), "prepared");
	assert_true(exists(f->dir, CA_FILE_NEXT_KEY));
	{
		/* Encrypted at rest and private, like every CA key. */
		char path[4096], *pem = NULL;

		assert_int_equal(path_join(path, sizeof(path), f->dir, CA_FILE_NEXT_KEY, NULL), 0);
		assert_int_equal(check_private_file(path, NULL), 0);
		assert_int_equal(read_file(path, 1 << 16, &pem, NULL, NULL), 0);
		assert_non_null(strstr(pem, "ENCRYPTED"));
		free(pem);
	}

	/* Published only once the daemon's bundle carries it. */
	f->ctx.bundle_probe = NULL; /* the CLI */
	assert_int_equal(step_at(f, t, 1, &res), ROTATION_WAITING);
	f->ctx.bundle_probe = fake_probe;
	f->probe_answer = 0;
	assert_int_equal(step_at(f, t, 0, &res), ROTATION_WAITING);
	assert_string_equal(state_of(f, next_fp), "prepared");
	f->probe_answer = 1;
	assert_int_equal(step_at(f, t + 1, 0, &res), ROTATION_PUBLISHED);
	assert_string_equal(state_of(f, next_fp), "published");

	/* Active only after publish_for (10 s) in the bundle; the old one starts retiring. */
	assert_int_equal(step_at(f, t + 10, 0, &res), ROTATION_WAITING);
	assert_string_equal(state_of(f, old_fp), "active");
	assert_int_equal(step_at(f, t + 11, 0, &res), ROTATION_ACTIVATED);
	assert_string_equal(state_of(f, next_fp), "active");
	assert_string_equal(state_of(f, old_fp), "retiring");
	fingerprint_of(f->dir, "intermediate.pem", fp);
	assert_string_equal(fp, next_fp);
	fingerprint_of(f->dir, CA_FILE_PREV_CERT, fp);
	assert_string_equal(fp, old_fp);
	assert_false(exists(f->dir, CA_FILE_NEXT_CERT));
	assert_false(exists(f->dir, CA_FILE_NEXT_KEY));

	/* The authority now loads the successor, with its key, and knows the retiring one. */
	ca = ca_authority_load(f->dir, NULL, NULL);
	assert_non_null(ca);
	assert_string_equal(ca->intermediate_fingerprint, next_fp);
	assert_int_equal(sk_X509_num(ca->rotating), 1);
	ca_authority_free(ca);

	/* Retired only once its last unexpired, unrevoked leaf is gone; never forced. */
	add_leaf(f, "0a01", old_fp, t + 50);
	add_leaf(f, "0a02", next_fp, t + 5000);
	add_leaf(f, "0a03", old_fp, t + 5000);
	assert_int_equal(
	    store_submit(f->store,
	                 &(struct store_write){.revoke_serial = "0a03",
	                                       .entry = &(struct log_entry){.kind = "revoked"}},
	                 NULL),
	    0); /* a revoked leaf keeps nothing alive */
	/* Forced, the next step is that retirement, and it waits; not a third intermediate. */
	f->settings.intermediate.prepare_at = 99;
	assert_int_equal(step_at(f, t + 20, 1, &res), ROTATION_WAITING);
	assert_non_null(strstr(res.message, "1 unexpired leaf"));
	assert_false(exists(f->dir, CA_FILE_NEXT_CERT));
	assert_int_equal(step_at(f, t + 49, 0, &res), ROTATION_WAITING);
	assert_string_equal(state_of(f, old_fp), "retiring");
	assert_int_equal(step_at(f, t + 51, 0, &res), ROTATION_RETIRED);
	assert_string_equal(res.fingerprint, old_fp);
	assert_string_equal(state_of(f, old_fp), "retired");
	assert_false(exists(f->dir, CA_FILE_PREV_CERT));
	assert_false(exists(f->dir, CA_FILE_PREV_KEY));

	assert_log_kinds(f, "activated prepared published activated retiring retired ");
	fixture_free(f);
}

/* With acknowledgments on, activation waits for every gateway, even when forced. */
static void
test_acks_gate_activation(void **state)
{
	struct fixture *f = fixture_new(NULL);
	struct rotation_result res;
	char next_fp[65];
	int64_t t = f->t0;

	(void)state;
	f->settings.acknowledgments = 1;
	assert_int_equal(cfg_strlist_add(&f->settings.gateways, "spiffe://" TD "/gw-a", NULL), 0);
	assert_int_equal(cfg_strlist_add(&f->settings.gateways, "spiffe://" TD "/gw-b", NULL), 0);
	assert_int_equal(rotation_settings_validate(&f->settings, NULL), 0);
	f->probe_answer = 1;
	assert_int_equal(step_at(f, t, 1, &res), ROTATION_PREPARED);
	fingerprint_of(f->dir, CA_FILE_NEXT_CERT, next_fp);
	assert_int_equal(step_at(f, t, 0, &res), ROTATION_PUBLISHED);

	assert_int_equal(step_at(f, t + 500, 0, &res), ROTATION_WAITING);
	assert_non_null(strstr(res.message, "gw-a"));
	assert_non_null(strstr(res.message, "gw-b"));
	assert_int_equal(store_bundle_ack(f->store, "spiffe://" TD "/gw-a", 42, NULL), 0);
	assert_int_equal(store_bundle_ack(f->store, "spiffe://" TD "/gw-b", 41, NULL), 0);
	assert_int_equal(step_at(f, t + 500, 1, &res), ROTATION_WAITING);
	assert_null(strstr(res.message, "gw-a"));
	assert_non_null(strstr(res.message, "gw-b"));
	assert_string_equal(state_of(f, next_fp), "published");
	/* A lower sequence never replaces a higher one. */
	assert_int_equal(store_bundle_ack(f->store, "spiffe://" TD "/gw-b", 43, NULL), 0);
	assert_int_equal(store_bundle_ack(f->store, "spiffe://" TD "/gw-b", 1, NULL), 0);
	assert_int_equal(step_at(f, t + 500, 0, &res), ROTATION_ACTIVATED);
	assert_string_equal(state_of(f, next_fp), "active");

	/* Acknowledgments on with no gateway listed is refused as a configuration. */
	cfg_strlist_free(&f->settings.gateways);
	assert_int_equal(rotation_settings_validate(&f->settings, NULL), -1);
	fixture_free(f);
}

/* The offline root signs a CSR the way an admin would (here with OpenSSL directly). */
static void
sign_csr_with_offline_root(struct fixture *f, const char *out_path)
{
	char path[4096], passphrase[PASSPHRASE_MAX];
	X509 *root, *cert = X509_new();
	EVP_PKEY *root_key;
	X509_REQ *req;
	STACK_OF(X509_EXTENSION) *exts;
	BIO *bio;
	X509V3_CTX v3;
	X509_EXTENSION *ext;

	assert_int_equal(passphrase_resolve(f->dir, NULL, passphrase, sizeof(passphrase), NULL), 0);
	snprintf(path, sizeof(path), "%s.offline.key", f->dir);
	root_key = key_load(path, passphrase, NULL);
	assert_non_null(root_key);
	assert_int_equal(path_join(path, sizeof(path), f->dir, "root.pem", NULL), 0);
	{
		STACK_OF(X509) *certs = x509_read_pem_file(path, NULL);

		root = sk_X509_shift(certs);
		sk_X509_pop_free(certs, X509_free);
	}
	assert_int_equal(path_join(path, sizeof(path), f->dir, CA_FILE_NEXT_CSR, NULL), 0);
	bio = BIO_new_file(path, "r");
	req = PEM_read_bio_X509_REQ(bio, NULL, NULL, NULL);
	BIO_free(bio);
	assert_non_null(req);
	assert_int_equal(X509_REQ_verify(req, X509_REQ_get0_pubkey(req)), 1);
	assert_true(X509_set_version(cert, X509_VERSION_3));
	assert_true(X509_set_subject_name(cert, X509_REQ_get_subject_name(req)));
	assert_true(X509_set_issuer_name(cert, X509_get_subject_name(root)));
	assert_true(X509_set_pubkey(cert, X509_REQ_get0_pubkey(req)));
	ASN1_INTEGER_set(X509_get_serialNumber(cert), 4242);
	X509_gmtime_adj(X509_getm_notBefore(cert), -60);
	X509_gmtime_adj(X509_getm_notAfter(cert), 1000);
	exts = X509_REQ_get_extensions(req);
	assert_true(sk_X509_EXTENSION_num(exts) >= 3); /* the CA extensions were asked for */
	for (int i = 0; i < sk_X509_EXTENSION_num(exts); i++)
		X509_add_ext(cert, sk_X509_EXTENSION_value(exts, i), -1);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509V3_set_ctx(&v3, root, cert, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_key_identifier, "hash");
	X509_add_ext(cert, ext, -1);
	X509_EXTENSION_free(ext);
	ext = X509V3_EXT_conf_nid(NULL, &v3, NID_authority_key_identifier, "keyid:always");
	X509_add_ext(cert, ext, -1);
	X509_EXTENSION_free(ext);
	assert_true(X509_sign(cert, root_key, EVP_sha256()) > 0);
	bio = BIO_new_file(out_path, "w");
	assert_true(PEM_write_bio_X509(bio, cert));
	BIO_free(bio);
	X509_REQ_free(req);
	X509_free(cert);
	X509_free(root);
	EVP_PKEY_free(root_key);
	passphrase_wipe(passphrase, sizeof(passphrase));
}

/* Offline root: a CSR is written, the rotation waits for ca import, then carries on. */
static void
test_offline_root_waits_for_import(void **state)
{
	struct fixture *f = fixture_new("offline.key");
	struct rotation_result res;
	char signed_path[4096], root_path[4096], next_fp[65];
	int64_t t = f->t0;

	(void)state;
	assert_int_equal(step_at(f, t, 1, &res), ROTATION_CSR_WRITTEN);
	assert_true(exists(f->dir, CA_FILE_NEXT_CSR));
	assert_true(exists(f->dir, CA_FILE_NEXT_KEY));
	assert_false(exists(f->dir, CA_FILE_NEXT_CERT));
	assert_true(rotation_awaits_import(f->dir));
	assert_int_equal(step_at(f, t, 1, &res), ROTATION_WAITING);
	assert_non_null(strstr(res.message, "ca import"));
	assert_int_equal(step_at(f, t + 10000, 0, &res), ROTATION_WAITING);

	snprintf(signed_path, sizeof(signed_path), "%s/signed.pem", f->dir);
	sign_csr_with_offline_root(f, signed_path);
	assert_int_equal(path_join(root_path, sizeof(root_path), f->dir, "root.pem", NULL), 0);
	assert_int_equal(ca_import(f->dir, signed_path, root_path, NULL, NULL, NULL), 0);
	assert_true(exists(f->dir, CA_FILE_NEXT_CERT));
	assert_false(exists(f->dir, CA_FILE_NEXT_CSR));
	assert_false(rotation_awaits_import(f->dir));
	fingerprint_of(f->dir, CA_FILE_NEXT_CERT, next_fp);

	f->probe_answer = 1;
	assert_int_equal(step_at(f, t, 0, &res), ROTATION_PUBLISHED);
	assert_string_equal(state_of(f, next_fp), "published");
	assert_int_equal(step_at(f, t, 1, &res), ROTATION_ACTIVATED);
	assert_string_equal(state_of(f, next_fp), "active");
	assert_log_kinds(f, "activated csr_written prepared published activated retiring ");
	fixture_free(f);
}

/* Take a CA to "published" and return the fingerprints. */
static void
to_published(struct fixture *f, char old_fp[65], char next_fp[65])
{
	struct rotation_result res;

	fingerprint_of(f->dir, "intermediate.pem", old_fp);
	f->probe_answer = 1;
	assert_int_equal(step_at(f, f->t0, 1, &res), ROTATION_PREPARED);
	assert_int_equal(step_at(f, f->t0, 0, &res), ROTATION_PUBLISHED);
	fingerprint_of(f->dir, CA_FILE_NEXT_CERT, next_fp);
}

static void
rename_in(const char *dir, const char *from, const char *to)
{
	char a[4096], b[4096];

	assert_int_equal(path_join(a, sizeof(a), dir, from, NULL), 0);
	assert_int_equal(path_join(b, sizeof(b), dir, to, NULL), 0);
	assert_int_equal(rename(a, b), 0);
}

/* Killed between the activation's two renames: the key is new, the certificate old. The
 * authority finishes the rename on load, and the next step records the activation. */
static void
test_restart_mid_activation(void **state)
{
	struct fixture *f = fixture_new(NULL);
	struct rotation_result res;
	char old_fp[65], next_fp[65], fp[65];
	struct ca_authority *ca;

	(void)state;
	to_published(f, old_fp, next_fp);
	rename_in(f->dir, CA_FILE_NEXT_KEY, "intermediate.key"); /* step 2 done, step 3 not */
	ca = ca_authority_load(f->dir, NULL, NULL);
	assert_non_null(ca);
	assert_string_equal(ca->intermediate_fingerprint, next_fp);
	ca_authority_free(ca);
	assert_int_equal(step_at(f, f->t0, 0, &res), ROTATION_RECORDED);
	assert_string_equal(state_of(f, next_fp), "active");
	/* The old one has no previous-intermediate.pem (step 1 was skipped here): it can sign
	 * nothing and is in no bundle, so it is recorded retired. */
	assert_string_equal(state_of(f, old_fp), "retired");
	fingerprint_of(f->dir, "intermediate.pem", fp);
	assert_string_equal(fp, next_fp);
	fixture_free(f);
}

/* Killed after every rename but before the entries: recorded on the next step. And killed
 * after the retirement's entry but before its files went: the files go, nothing is logged
 * twice. */
static void
test_restart_after_file_steps(void **state)
{
	struct fixture *f = fixture_new(NULL);
	struct rotation_result res;
	char old_fp[65], next_fp[65], path[4096], prev[4096];
	char *saved_pem = NULL;
	size_t saved_len = 0;

	(void)state;
	to_published(f, old_fp, next_fp);
	/* Step 1 by hand: the previous slot holds the active pair. */
	assert_int_equal(path_join(path, sizeof(path), f->dir, "intermediate.pem", NULL), 0);
	assert_int_equal(read_file(path, 1 << 16, &saved_pem, &saved_len, NULL), 0);
	assert_int_equal(path_join(prev, sizeof(prev), f->dir, CA_FILE_PREV_CERT, NULL), 0);
	assert_int_equal(atomic_write_file(prev, saved_pem, saved_len, 0644, NULL), 0);
	/* A previous slot equal to the active one is an activation that has not happened. */
	assert_int_equal(step_at(f, f->t0, 0, &res), ROTATION_WAITING); /* publish_for */
	assert_string_equal(state_of(f, old_fp), "active");
	rename_in(f->dir, CA_FILE_NEXT_KEY, "intermediate.key");
	rename_in(f->dir, CA_FILE_NEXT_CERT, "intermediate.pem");
	assert_int_equal(step_at(f, f->t0, 0, &res), ROTATION_RETIRED); /* no leaves */
	assert_string_equal(state_of(f, next_fp), "active");
	assert_string_equal(state_of(f, old_fp), "retired");
	assert_log_kinds(f, "activated prepared published activated retiring retired ");

	/* The retired one's files come back (the unlink never reached the disk). */
	assert_int_equal(atomic_write_file(prev, saved_pem, saved_len, 0644, NULL), 0);
	assert_int_equal(step_at(f, f->t0, 0, &res), ROTATION_NOTHING);
	assert_false(exists(f->dir, CA_FILE_PREV_CERT));
	assert_log_kinds(f, "activated prepared published activated retiring retired ");
	free(saved_pem);
	fixture_free(f);
}

/* The disk fails when the activation's entries are committed (its renames are done): the
 * step reports the error, and the next one, after a restart, records the activation once. */
static void
test_failed_commit_resumes(void **state)
{
	struct fixture *f = fixture_new(NULL);
	struct rotation_result res;
	char old_fp[65], next_fp[65], fp[65];
	struct ac_err err;

	(void)state;
	to_published(f, old_fp, next_fp);
	add_leaf(f, "0c01", old_fp, f->t0 + 5000); /* keeps the old one retiring */
	f->fault_point = "intermediate";
	reopen(f);
	ac_err_clear(&err);
	f->ctx.now = f->t0 + 200;
	assert_int_equal(rotation_step(&f->ctx, 0, &res, &err), -1);
	assert_non_null(strstr(err.msg, "intermediate"));
	fingerprint_of(f->dir, "intermediate.pem", fp);
	assert_string_equal(fp, next_fp);
	f->fault_point = NULL;
	assert_int_equal(step_at(f, f->t0 + 200, 0, &res), ROTATION_RECORDED);
	assert_string_equal(state_of(f, next_fp), "active");
	assert_string_equal(state_of(f, old_fp), "retiring");
	assert_log_kinds(f, "activated prepared published activated retiring ");
	fixture_free(f);
}

/* A successor being prepared tells issuance when the switch is planned. */
static void
test_supersede_time(void **state)
{
	struct rotation_settings s;
	struct rotation_member m[2];

	(void)state;
	rotation_settings_defaults(&s);
	s.intermediate.publish_for = 100;
	memset(m, 0, sizeof(m));
	strcpy(m[0].state, "active");
	assert_int_equal(rotation_supersede_time(m, 1, &s, 1000), 0);
	strcpy(m[1].state, "prepared");
	assert_int_equal(rotation_supersede_time(m, 2, &s, 1000), 1100);
	strcpy(m[1].state, "published");
	m[1].published_at = 900;
	assert_int_equal(rotation_supersede_time(m, 2, &s, 1000), 1000);
}

/* ---- the scheduler, on an injected clock ---- */

struct counter {
	int runs;
	int fail;
	int64_t ask_next; /* 0: keep the default */
	int64_t last_now;
};

static int
count_duty(void *arg, int64_t now, struct duty_report *rep, struct ac_err *err)
{
	struct counter *c = arg;

	c->runs++;
	c->last_now = now;
	if (c->fail)
		return ac_err_set(err, AC_ERR_IO, "io_error", "disk on fire");
	if (c->ask_next != 0)
		rep->next_due = c->ask_next;
	snprintf(rep->did, sizeof(rep->did), "ran at %lld", (long long)now);
	return 0;
}

static void
test_scheduler_runs_what_is_due(void **state)
{
	struct counter every = {0}, hourly = {0}, custom = {0};
	struct scheduler s;
	const struct duty *d;

	(void)state;
	scheduler_init(&s);
	assert_int_equal(scheduler_add(&s, "every", 1, 0, count_duty, &every, NULL), 0);
	assert_int_equal(scheduler_add(&s, "hourly", 3600, 0, count_duty, &hourly, NULL), 0);
	assert_int_equal(scheduler_add(&s, "custom", 10, 1500, count_duty, &custom, NULL), 0);
	assert_int_equal(scheduler_add(&s, "bad", 0, 0, count_duty, &custom, NULL), -1);

	assert_int_equal(scheduler_tick(&s, 1000), 2); /* every, hourly; custom not yet */
	assert_int_equal(scheduler_tick(&s, 1000), 0); /* nothing due twice in one second */
	assert_int_equal(scheduler_tick(&s, 1001), 1);
	assert_int_equal(every.runs, 2);
	assert_int_equal(hourly.runs, 1);
	assert_int_equal(custom.runs, 0);
	assert_int_equal(scheduler_next_due(&s), 1002);

	/* A duty may set its own next time (the server certificate's renewal point). */
	custom.ask_next = 5000;
	assert_int_equal(scheduler_tick(&s, 1500), 2);
	assert_int_equal(custom.runs, 1);
	assert_int_equal(custom.last_now, 1500);
	assert_int_equal(scheduler_find(&s, "custom")->next_due, 5000);
	scheduler_tick(&s, 4999);
	assert_int_equal(custom.runs, 1);
	assert_int_equal(hourly.runs, 2); /* 1000 + 3600 <= 4999 */
	scheduler_tick(&s, 5000);
	assert_int_equal(custom.runs, 2);
	custom.ask_next = 0;

	/* A failing duty is counted and tried again after its interval. */
	hourly.fail = 1;
	scheduler_tick(&s, 9000);
	d = scheduler_find(&s, "hourly");
	assert_int_equal(d->failures, 1);
	assert_int_equal(d->next_due, 9000 + 3600);
	assert_int_equal(d->acted, 2);

	/* A signal makes a duty due at the next tick. */
	hourly.fail = 0;
	assert_int_equal(scheduler_run_soon(&s, "hourly"), 0);
	assert_int_equal(scheduler_run_soon(&s, "nope"), -1);
	scheduler_tick(&s, 9001);
	assert_int_equal(hourly.runs, 4);
	assert_null(scheduler_find(&s, "nope"));

	/* Each duty's counters for /metrics. */
	{
		char text[4096];

		assert_true(scheduler_metrics(&s, 9001, text, sizeof(text)) > 0);
		assert_non_null(strstr(text, "agentca_duty_runs_total{duty=\"hourly\"} 4\n"));
		assert_non_null(strstr(text, "agentca_duty_failures_total{duty=\"hourly\"} 1\n"));
		assert_non_null(
		    strstr(text, "agentca_duty_next_due_seconds{duty=\"hourly\"} 3600\n"));
		/* A short buffer is cut, never overrun. */
		assert_true(scheduler_metrics(&s, 9001, text, 16) < 16);
	}
}

/* Pruning removes expired rows from the hot tables; the log and its chain stay whole. */
static void
test_prune_keeps_the_log(void **state)
{
	struct fixture *f = fixture_new(NULL);
	struct log_entry entry;
	struct store_write w;
	char head_before[LOG_HASH_HEX_LEN + 1], head_after[LOG_HASH_HEX_LEN + 1];
	uint64_t seq_before = 0, seq_after = 0;
	int64_t certs = 0, tokens = 0, count = 0;
	struct cert_row row;

	(void)state;
	add_leaf(f, "0b01", "aa", f->t0 - 8 * 86400); /* long expired */
	add_leaf(f, "0b02", "aa", f->t0 - 3600);      /* expired within the retention */
	add_leaf(f, "0b03", "aa", f->t0 + 3600);      /* valid */
	memset(&entry, 0, sizeof(entry));
	entry.kind = "issued";
	memset(&w, 0, sizeof(w));
	w.entry = &entry;
	w.token_jti = "old-token";
	w.token_expires = f->t0 - 8 * 86400;
	assert_int_equal(store_submit(f->store, &w, NULL), 0);
	assert_int_equal(store_log_head(f->store, &seq_before, head_before, NULL), 0);

	assert_int_equal(store_prune(f->store, f->t0 - 7 * 86400, &certs, &tokens, NULL), 0);
	assert_int_equal(certs, 1);
	assert_int_equal(tokens, 1);
	assert_int_equal(store_cert_count(f->store, &count, NULL), 0);
	assert_int_equal(count, 2);
	assert_int_equal(store_cert_get(f->store, "0b01", &row, NULL), -1);
	assert_int_equal(store_cert_get(f->store, "0b02", &row, NULL), 0);
	store_cert_row_free(&row);
	assert_int_equal(store_log_head(f->store, &seq_after, head_after, NULL), 0);
	assert_int_equal(seq_after, seq_before);
	assert_string_equal(head_after, head_before);
	/* The token mark is gone from the hot table: the same jti commits again. */
	assert_int_equal(store_submit(f->store, &w, NULL), 0);
	fixture_free(f);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_full_cycle),
	    cmocka_unit_test(test_acks_gate_activation),
	    cmocka_unit_test(test_offline_root_waits_for_import),
	    cmocka_unit_test(test_restart_mid_activation),
	    cmocka_unit_test(test_restart_after_file_steps),
	    cmocka_unit_test(test_failed_commit_resumes),
	    cmocka_unit_test(test_supersede_time),
	    cmocka_unit_test(test_scheduler_runs_what_is_due),
	    cmocka_unit_test(test_prune_keeps_the_log),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
