/*
 * agent.c - the client-side rotation loop. See agent.h.
 */
#include "rotation/agent.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "ca/x509_build.h"
#include "common/fsutil.h"
#include "common/log.h"
#include "common/timefmt.h"
#include "enrollment/client.h"

#define AGENT_BACKOFF_MIN 5
#define AGENT_BACKOFF_MAX 300
#define AGENT_RECHECK 60 /* seconds between looks at the files while waiting */
#define AGENT_PEM_MAX (256 * 1024)
#define AGENT_HINT_JITTER_MAX 60 /* seconds added at most to the CA's renew_after */
#define AGENT_HINT_MAX 256       /* bytes of DIR/renew_after */

int64_t
agent_renew_at(int64_t not_before, int64_t not_after, uint32_t seed)
{
	int64_t lifetime = not_after - not_before;
	int64_t spread = lifetime / 10;

	if (lifetime <= 0)
		return not_before;
	return not_before + lifetime * 2 / 3 -
	       (spread > 0 ? (int64_t)(seed % (uint64_t)spread) : 0);
}

int64_t
agent_renew_at_hint(int64_t not_before, int64_t not_after, int64_t ca_renew_after, uint32_t seed)
{
	int64_t jitter;

	if (ca_renew_after < not_before || ca_renew_after >= not_after)
		return agent_renew_at(not_before, not_after, seed);
	jitter = (not_after - ca_renew_after) / 10;
	if (jitter > AGENT_HINT_JITTER_MAX)
		jitter = AGENT_HINT_JITTER_MAX;
	return ca_renew_after + (jitter > 0 ? (int64_t)(seed % (uint64_t)jitter) : 0);
}

int64_t
agent_backoff(int attempt, uint32_t seed)
{
	int64_t wait = AGENT_BACKOFF_MIN;

	for (int i = 0; i < attempt && wait < AGENT_BACKOFF_MAX; i++)
		wait *= 2;
	if (wait > AGENT_BACKOFF_MAX)
		wait = AGENT_BACKOFF_MAX;
	return wait - (int64_t)(seed % (uint64_t)(wait / 5 + 1));
}

static uint32_t
random_seed(void)
{
	uint32_t seed = 0;

	if (RAND_bytes((unsigned char *)&seed, sizeof(seed)) != 1)
		seed = (uint32_t)getpid() ^ (uint32_t)time(NULL);
	return seed;
}

/* What the directory holds now. */
struct agent_files {
	char *key_pem, *cert_pem, *chain_pem, *bundle_pem;
	X509 *leaf;
	EVP_PKEY *key;
	int64_t not_before, not_after;
	int64_t ca_renew_after; /* from DIR/renew_after when it names this serial; else 0 */
	char serial[41];
};

static void
agent_files_free(struct agent_files *f)
{
	if (f->key_pem != NULL)
		OPENSSL_cleanse(f->key_pem, strlen(f->key_pem));
	free(f->key_pem);
	free(f->cert_pem);
	free(f->chain_pem);
	free(f->bundle_pem);
	X509_free(f->leaf);
	EVP_PKEY_free(f->key);
	memset(f, 0, sizeof(*f));
}

/* Read DIR/name into *out (NULL when absent). */
static int
read_optional(const char *dir, const char *name, char **out, struct ac_err *err)
{
	char path[4096];
	struct ac_err e;

	*out = NULL;
	if (path_join(path, sizeof(path), dir, name, err) != 0)
		return -1;
	ac_err_clear(&e);
	if (read_file(path, AGENT_PEM_MAX, out, NULL, &e) == 0 || e.code == AC_ERR_NOTFOUND)
		return 0;
	*err = e;
	return -1;
}

/* Compare two hex serials, ignoring case and leading zeros. */
static int
same_serial(const char *a, const char *b)
{
	while (*a == '0')
		a++;
	while (*b == '0')
		b++;
	return *a != '\0' && strcasecmp(a, b) == 0;
}

/* The CA's renewal point from DIR/renew_after ("SERIAL RFC3339", client.h) when it is for
 * this serial; 0 when absent, unreadable, malformed or for another certificate (someone
 * replaced cert.pem): the agent then falls back to its own 2/3 point. */
static int64_t
read_renew_hint(const char *dir, const char *serial)
{
	char path[4096], *text = NULL, hint_serial[65], when[41];
	struct ac_err e;
	int64_t at = 0;

	ac_err_clear(&e);
	if (path_join(path, sizeof(path), dir, "renew_after", &e) != 0 ||
	    read_file(path, AGENT_HINT_MAX, &text, NULL, &e) != 0)
		goto out;
	if (sscanf(text, "%64s %40s", hint_serial, when) != 2 ||
	    !same_serial(hint_serial, serial) || time_parse(when, time_now(), &at) != 0)
		at = 0;
out:
	free(text);
	return at;
}

/* Load the directory. Returns 1 when it holds a usable identity (a key matching a leaf
 * that is valid now, and a bundle), 0 when not (f holds whatever was there), -1 on error. */
static int
agent_files_load(const char *dir, struct agent_files *f, struct ac_err *err)
{
	BIO *bio = NULL;
	int64_t now = time_now();
	int usable = 0;

	memset(f, 0, sizeof(*f));
	if (read_optional(dir, "key.pem", &f->key_pem, err) != 0 ||
	    read_optional(dir, "cert.pem", &f->cert_pem, err) != 0 ||
	    read_optional(dir, "chain.pem", &f->chain_pem, err) != 0 ||
	    read_optional(dir, "bundle.pem", &f->bundle_pem, err) != 0)
		return -1;
	if (f->key_pem == NULL || f->cert_pem == NULL || f->bundle_pem == NULL)
		return 0;
	bio = BIO_new_mem_buf(f->cert_pem, -1);
	f->leaf = bio != NULL ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
	BIO_free(bio);
	bio = BIO_new_mem_buf(f->key_pem, -1);
	f->key = bio != NULL ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
	BIO_free(bio);
	ERR_clear_error();
	if (f->leaf == NULL || f->key == NULL || !key_matches_cert(f->key, f->leaf))
		return 0;
	f->not_before = asn1_time_to_unix(X509_get0_notBefore(f->leaf));
	f->not_after = asn1_time_to_unix(X509_get0_notAfter(f->leaf));
	{
		BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(f->leaf), NULL);
		char *hex = bn != NULL ? BN_bn2hex(bn) : NULL;

		snprintf(f->serial, sizeof(f->serial), "%s", hex != NULL ? hex : "?");
		OPENSSL_free(hex);
		BN_free(bn);
	}
	f->ca_renew_after = read_renew_hint(dir, f->serial);
	usable = now < f->not_after;
	return usable;
}

/* The DNS SANs of the current leaf, to ask for them again. */
static int
leaf_dns(X509 *leaf, struct cfg_strlist *dns, struct ac_err *err)
{
	GENERAL_NAMES *names = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
	int rc = 0;

	for (int i = 0; names != NULL && i < sk_GENERAL_NAME_num(names); i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);

		if (gn->type == GEN_DNS &&
		    cfg_strlist_add(dns, (const char *)ASN1_STRING_get0_data(gn->d.dNSName), err) !=
		        0) {
			rc = -1;
			break;
		}
	}
	GENERAL_NAMES_free(names);
	return rc;
}

/* Run the command or send the signal that tells the workload its files changed. */
static void
notify_rotation(const struct agent_options *o)
{
	if (o->exec_cmd != NULL) {
		pid_t pid = fork();
		int status = 0;

		if (pid == 0) {
			execl("/bin/sh", "sh", "-c", o->exec_cmd, (char *)NULL);
			_exit(127);
		}
		if (pid < 0 || waitpid(pid, &status, 0) < 0)
			log_warn("hook_failed", "cannot run the rotation command: %s",
			         strerror(errno));
		else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			log_warn("hook_failed", "the rotation command exited with status %d",
			         WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	}
	if (o->signal_pid > 0 && kill(o->signal_pid, o->signal_number) != 0)
		log_warn("hook_failed", "cannot signal process %ld: %s", (long)o->signal_pid,
		         strerror(errno));
}

/* First enrollment: trust from the fingerprint (or the bundle already there), a new key,
 * the token's DNS names, then the four files. */
static int
agent_enroll(const struct agent_options *o, const struct agent_files *f, struct ac_err *err)
{
	struct cfg_strlist dns = {NULL, 0};
	struct client_issued issued;
	char *root = NULL, *bundle = NULL, *csr = NULL;
	EVP_PKEY *key = NULL;
	int rc = -1;

	memset(&issued, 0, sizeof(issued));
	if (o->token == NULL) {
		ac_err_set(err, AC_ERR_USAGE, "no_token",
		           "%s holds no valid certificate and no --token was given", o->out_dir);
		goto out;
	}
	if (o->fingerprint != NULL) {
		if (client_bootstrap_root(o->ca_url, o->fingerprint, &root, err) != 0)
			goto out;
	} else if (f->bundle_pem != NULL) {
		root = strdup(f->bundle_pem);
	} else {
		ac_err_set(err, AC_ERR_USAGE, "no_trust",
		           "a first enrollment needs --fingerprint (or %s/bundle.pem)", o->out_dir);
		goto out;
	}
	if (root == NULL || client_token_dns(o->token, &dns, err) != 0)
		goto out;
	key = key_generate(o->key_type, err);
	if (key == NULL || (csr = client_make_csr(key, &dns, err)) == NULL ||
	    client_enroll(o->ca_url, root, o->token, csr, &issued, err) != 0 ||
	    client_fetch_bundle(o->ca_url, root, &bundle, err) != 0 ||
	    client_write_identity(o->out_dir, key, &issued, bundle, err) != 0)
		goto out;
	log_info("enrolled", "enrolled: serial %s until %s", issued.serial,
	         issued.not_after != NULL ? issued.not_after : "?");
	rc = 0;
out:
	client_issued_free(&issued);
	cfg_strlist_free(&dns);
	EVP_PKEY_free(key);
	free(csr);
	free(bundle);
	free(root);
	return rc;
}

/* Renewal over mTLS with the current certificate, a new key, the same DNS names. */
static int
agent_renew(const struct agent_options *o, const struct agent_files *f, struct ac_err *err)
{
	struct cfg_strlist dns = {NULL, 0};
	struct client_issued issued;
	char *bundle = NULL, *csr = NULL, *presented = NULL;
	EVP_PKEY *key = NULL;
	int rc = -1;

	memset(&issued, 0, sizeof(issued));
	/* Present the leaf with its chain, so the CA can build the path. */
	if (asprintf(&presented, "%s%s", f->cert_pem, f->chain_pem != NULL ? f->chain_pem : "") <
	    0) {
		presented = NULL;
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto out;
	}
	if (leaf_dns(f->leaf, &dns, err) != 0)
		goto out;
	key = key_generate(o->key_type, err);
	if (key == NULL || (csr = client_make_csr(key, &dns, err)) == NULL ||
	    client_renew(o->ca_url, f->bundle_pem, presented, f->key_pem, csr, &issued, err) != 0 ||
	    client_fetch_bundle(o->ca_url, f->bundle_pem, &bundle, err) != 0 ||
	    client_write_identity(o->out_dir, key, &issued, bundle, err) != 0)
		goto out;
	log_info("renewed", "renewed: serial %s replaces %s, until %s", issued.serial, f->serial,
	         issued.not_after != NULL ? issued.not_after : "?");
	rc = 0;
out:
	client_issued_free(&issued);
	cfg_strlist_free(&dns);
	EVP_PKEY_free(key);
	free(csr);
	free(bundle);
	free(presented);
	return rc;
}

/* Wait up to seconds for a stop signal. Returns 1 when one arrived. */
static int
wait_or_stop(const sigset_t *stops, int64_t seconds)
{
	struct timespec ts = {seconds > 0 ? (time_t)seconds : 0, 0};

	if (seconds <= 0)
		return 0;
	return sigtimedwait(stops, NULL, &ts) > 0;
}

int
agent_run(const struct agent_options *o, struct ac_err *err)
{
	uint32_t seed = random_seed();
	sigset_t stops;
	int attempt = 0, force = o->force; /* --force: the first decision only */

	sigemptyset(&stops);
	sigaddset(&stops, SIGTERM);
	sigaddset(&stops, SIGINT);
	pthread_sigmask(SIG_BLOCK, &stops, NULL);
	for (;;) {
		struct agent_files f;
		struct ac_err e;
		int64_t now = time_now(), renew_at;
		int usable, rotated = 0, failed = 0;

		ac_err_clear(&e);
		usable = agent_files_load(o->out_dir, &f, &e);
		if (usable < 0) {
			failed = 1;
		} else if (usable == 0) {
			failed = agent_enroll(o, &f, &e) != 0;
			rotated = !failed;
		} else {
			renew_at =
			    agent_renew_at_hint(f.not_before, f.not_after, f.ca_renew_after, seed);
			if (force || now >= renew_at) {
				failed = agent_renew(o, &f, &e) != 0;
				rotated = !failed;
			} else if (o->once) {
				log_info("not_due", "serial %s is not due for renewal until %lld",
				         f.serial, (long long)renew_at);
			}
		}
		agent_files_free(&f);
		if (!failed)
			force = 0;
		if (rotated) {
			attempt = 0;
			notify_rotation(o);
		}
		if (o->once || (failed && e.code == AC_ERR_USAGE)) {
			if (failed) {
				*err = e;
				return -1;
			}
			return 0;
		}
		if (failed) {
			int64_t wait = agent_backoff(attempt++, seed);

			log_warn("rotation_failed",
			         "%s; keeping the current files, retrying in %lld s", e.msg,
			         (long long)wait);
			if (wait_or_stop(&stops, wait))
				return 0;
			continue;
		}
		/* Look at the files again at the renewal point, or every minute. */
		{
			struct agent_files g;
			struct ac_err ignored;
			int64_t wait = AGENT_RECHECK;

			ac_err_clear(&ignored);
			if (agent_files_load(o->out_dir, &g, &ignored) == 1) {
				int64_t until = agent_renew_at_hint(g.not_before, g.not_after,
				                                    g.ca_renew_after, seed) -
				                time_now();

				if (until < wait)
					wait = until > 0 ? until : 0;
			}
			agent_files_free(&g);
			if (wait_or_stop(&stops, wait))
				return 0;
		}
	}
}
