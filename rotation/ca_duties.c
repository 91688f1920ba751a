/*
 * ca_duties.c - the CA-side duties of the daemon's scheduler: see ca_duties.h.
 */
#include "rotation/ca_duties.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ca/audit.h"
#include "ca/audit_keys.h"
#include "common/fsutil.h"

/* Steps in one run: reconcile-and-record, publish, activate, retire follow each other
 * without waiting for the next run when each is due. */
#define ROTATION_STEPS_PER_RUN 4

static const char *const state_names[] = {"csr_written", "prepared", "published",
                                          "active",      "retiring", "retired"};

int
duty_rotation(void *arg, int64_t now, struct duty_report *rep, struct ac_err *err)
{
	struct rotation_duty *d = arg;
	struct rotation_member members[STORE_INTERMEDIATES_MAX];
	struct rotation_context ctx;
	struct rotation_result res;
	size_t used = 0, n = 0;

	memset(&ctx, 0, sizeof(ctx));
	ctx.dir = d->dir;
	ctx.password_file = d->password_file;
	ctx.store = d->store;
	ctx.settings = __atomic_load_n(&d->settings, __ATOMIC_ACQUIRE);
	ctx.now = now;
	ctx.bundle_probe = d->bundle_probe;
	ctx.bundle_arg = d->bundle_arg;
	ctx.actor = "scheduler";
	for (int i = 0; i < ROTATION_STEPS_PER_RUN; i++) {
		if (rotation_step(&ctx, 0, &res, err) != 0)
			return -1;
		if (res.outcome == ROTATION_NOTHING || res.outcome == ROTATION_WAITING)
			break;
		if (used < sizeof(rep->did))
			used += (size_t)snprintf(rep->did + used, sizeof(rep->did) - used, "%s%s",
			                         used > 0 ? "; " : "", res.message);
		if (d->changed != NULL && res.outcome != ROTATION_RECORDED &&
		    res.outcome != ROTATION_PUBLISHED)
			d->changed(d->changed_arg, res.outcome);
	}
	if (rotation_status(&ctx, members, STORE_INTERMEDIATES_MAX, &n, err) != 0)
		return -1;
	memset(d->states, 0, sizeof(d->states));
	for (size_t i = 0; i < n; i++)
		for (size_t k = 0; k < sizeof(state_names) / sizeof(state_names[0]); k++)
			if (strcmp(members[i].state, state_names[k]) == 0)
				d->states[k]++;
	if (d->supersede_at != NULL)
		__atomic_store_n(d->supersede_at,
		                 rotation_supersede_time(members, n, ctx.settings, now),
		                 __ATOMIC_RELAXED);
	return 0;
}

size_t
rotation_duty_metrics(const struct rotation_duty *d, char *buf, size_t len)
{
	size_t used;
	int n;

	n = snprintf(buf, len,
	             "# HELP agentca_intermediates Intermediate CAs by rotation state.\n"
	             "# TYPE agentca_intermediates gauge\n");
	used = n > 0 && (size_t)n < len ? (size_t)n : 0;
	for (size_t k = 0; k < sizeof(state_names) / sizeof(state_names[0]) && used < len; k++) {
		n = snprintf(buf + used, len - used, "agentca_intermediates{state=\"%s\"} %d\n",
		             state_names[k], d->states[k]);
		if (n < 0 || (size_t)n >= len - used)
			break;
		used += (size_t)n;
	}
	return used;
}

int
duty_prune(void *arg, int64_t now, struct duty_report *rep, struct ac_err *err)
{
	struct prune_duty *d = arg;
	const struct rotation_settings *s = __atomic_load_n(&d->settings, __ATOMIC_ACQUIRE);
	int64_t certs = 0, tokens = 0;

	if (store_prune(d->store, now - s->retention, &certs, &tokens, err) != 0)
		return -1;
	if (certs > 0 || tokens > 0)
		snprintf(rep->did, sizeof(rep->did),
		         "removed %lld certificate%s and %lld used-token mark%s expired for more "
		         "than %llds from the hot tables (the log keeps them)",
		         (long long)certs, certs == 1 ? "" : "s", (long long)tokens,
		         tokens == 1 ? "" : "s", (long long)s->retention);
	return 0;
}

int
duty_tree_head(void *arg, int64_t now, struct duty_report *rep, struct ac_err *err)
{
	struct tree_head_duty *d = arg;
	char path[4096], *text = NULL, head_hash[LOG_HASH_HEX_LEN + 1];
	json_t *doc = NULL;
	struct sth sth;
	uint64_t head = 0;
	int rc = -1;

	(void)now;
	/* A cheap look first: most seconds nothing was committed. */
	if (store_log_head(d->store, &head, head_hash, err) != 0)
		goto out;
	if (head == d->published_tree_size && head != 0) {
		rc = 0;
		goto out;
	}
	if (audit_sth_make(d->store, d->audit_key, &sth, err) != 0)
		goto out;
	if (sth.tree_size == d->published_tree_size) {
		rc = 0;
		goto out;
	}
	doc = sth_to_json(&sth);
	text = doc != NULL ? json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	if (text == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto out;
	}
	if (path_join(path, sizeof(path), d->dir, "sth.json", err) != 0 ||
	    atomic_write_file(path, text, strlen(text), 0644, err) != 0)
		goto out;
	d->published_tree_size = sth.tree_size;
	snprintf(rep->did, sizeof(rep->did), "signed tree head for %llu entries published",
	         (unsigned long long)sth.tree_size);
	rc = 0;
out:
	free(text);
	json_decref(doc);
	return rc;
}
