/*
 * bundle_watch.c - the bundle feed for external gateways. See bundle_watch.h.
 */
#include "rotation/bundle_watch.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "common/fsutil.h"
#include "common/log.h"
#include "enrollment/client.h"
#include "rotation/agent.h"

#define BUNDLE_MAX (1024 * 1024)

/* Set by SIGTERM or SIGINT; checked by the loop and, through client_set_abort(), by a
 * long-poll in flight. */
static volatile sig_atomic_t stop_requested;

static void
on_stop(int sig)
{
	(void)sig;
	stop_requested = 1;
}

/* Sleep up to seconds, waking early on a stop. Returns 1 when stopping. */
static int
pause_or_stop(int64_t seconds)
{
	for (int64_t waited = 0; waited < seconds * 10 && !stop_requested; waited++) {
		struct timespec tenth = {0, 100000000};

		nanosleep(&tenth, NULL);
	}
	return stop_requested != 0;
}

static double
monotonic_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Run the reload command; its failure is logged, not fatal: the file is already right.
 * Returns 0 when the command succeeded (or there is none). */
static int
run_reload(const char *cmd)
{
	pid_t pid;
	int status = 0;

	if (cmd == NULL)
		return 0;
	pid = fork();
	if (pid == 0) {
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &status, 0) < 0) {
		log_warn("hook_failed", "cannot run the reload command: %s", strerror(errno));
		return -1;
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		log_warn("hook_failed", "the reload command exited with status %d",
		         WIFEXITED(status) ? WEXITSTATUS(status) : -1);
		return -1;
	}
	return 0;
}

/* Acknowledge the bundle with this ETag with the gateway's current certificate. */
static int
acknowledge(const struct bundle_watch_options *o, const char *roots, const char *etag,
            struct ac_err *err)
{
	char *cert = NULL, *key = NULL;
	int rc = -1;

	if (read_file(o->ack_cert_path, BUNDLE_MAX, &cert, NULL, err) != 0 ||
	    read_file(o->ack_key_path, BUNDLE_MAX, &key, NULL, err) != 0)
		goto out;
	rc = client_bundle_ack(o->ca_url, roots, cert, key, etag, err);
out:
	if (key != NULL)
		OPENSSL_cleanse(key, strlen(key));
	free(key);
	free(cert);
	return rc;
}

/* Write bundle to the file unless it already holds exactly that. Returns 1 when written. */
static int
write_if_changed(const char *path, const char *bundle, struct ac_err *err)
{
	char *current = NULL;
	size_t len = 0;
	struct ac_err ignored;
	int same;

	ac_err_clear(&ignored);
	same = read_file(path, BUNDLE_MAX, &current, &len, &ignored) == 0 &&
	       len == strlen(bundle) && memcmp(current, bundle, len) == 0;
	free(current);
	if (same)
		return 0;
	if (atomic_write_file(path, bundle, strlen(bundle), 0644, err) != 0)
		return -1;
	return 1;
}

int
bundle_watch_run(const struct bundle_watch_options *o, struct ac_err *err)
{
	char etag[128] = "", acked[128] = "", in_use[128] = "", *roots = NULL;
	int wait = o->wait_seconds > 0 ? o->wait_seconds : 30, attempt = 0, rc = -1;
	struct sigaction sa;

	roots = strdup(o->roots_pem);
	if (roots == NULL)
		return ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	client_set_abort(&stop_requested);
	while (!stop_requested) {
		struct ac_err e;
		struct timespec pause = {0, 0};
		char *bundle = NULL;
		double started = monotonic_now(), took;
		int changed = 0, written = 0;

		ac_err_clear(&e);
		if (client_watch_bundle(o->ca_url, roots, o->once ? 0 : wait, etag, &bundle,
		                        &changed, &e) == 0) {
			attempt = 0;
			if (changed) {
				written = write_if_changed(o->out_path, bundle, &e);
				if (written == 0)
					memcpy(in_use, etag, sizeof(in_use)); /* already held */
				if (written == 1) {
					log_info("bundle_updated", "%s updated (ETag %s)",
					         o->out_path, etag);
					if (run_reload(o->exec_cmd) == 0)
						memcpy(in_use, etag, sizeof(in_use));
					/* Trust what the CA now publishes (a new root may be in).
					 */
					free(roots);
					roots = bundle;
					bundle = NULL;
				}
			}
			free(bundle);
			if (o->ack_cert_path != NULL && in_use[0] != '\0' &&
			    strcmp(in_use, acked) != 0) {
				struct ac_err ack_err;

				ac_err_clear(&ack_err);
				if (acknowledge(o, roots, in_use, &ack_err) == 0) {
					memcpy(acked, in_use, sizeof(acked));
					log_info("bundle_acked", "acknowledged bundle %s to the CA",
					         in_use);
				} else {
					log_warn("bundle_ack_failed", "%s; trying again next round",
					         ack_err.msg);
				}
			}
			if (written < 0) {
				if (o->once) {
					*err = e;
					goto out;
				}
				log_warn("bundle_write_failed", "%s", e.msg);
			}
			if (o->once) {
				rc = 0;
				goto out;
			}
			/* A CA that answered at once (no long-poll) is asked again after `wait`. */
			took = monotonic_now() - started;
			if (!changed && took < wait / 2.0)
				pause.tv_sec = (time_t)(wait - took);
		} else {
			if (stop_requested)
				break;
			if (o->once) {
				*err = e;
				goto out;
			}
			pause.tv_sec = (time_t)agent_backoff(attempt++, (uint32_t)rand());
			log_warn("bundle_fetch_failed", "%s; retrying in %lld s", e.msg,
			         (long long)pause.tv_sec);
		}
		if (pause.tv_sec > 0 && pause_or_stop(pause.tv_sec))
			break;
	}
	rc = 0;
out:
	client_set_abort(NULL);
	free(roots);
	return rc;
}
