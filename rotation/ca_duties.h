/*
 * ca_duties.h - the CA-side duties the scheduler (scheduler.h) runs in the daemon:
 *
 *   rotation   intermediate rotation (ca/rotate.h): take the next step when it is due;
 *              keep the issuer's supersede time (shorter renew_after before a switch)
 *   prune      remove certificates (and used-token marks) expired for longer than the
 *              retention from the hot tables; the issuance log keeps every entry
 *   tree_head  publish the signed tree head in DIR/sth.json when the log has grown
 *
 * Each is a duty_fn over a small struct the daemon fills once; settings that a reload may
 * replace are read through a pointer the daemon updates.
 */
#ifndef AGENTCA_ROTATION_CA_DUTIES_H
#define AGENTCA_ROTATION_CA_DUTIES_H

#include <stdint.h>

#include <openssl/evp.h>

#include "ca/rotate.h"
#include "rotation/scheduler.h"
#include "store/store.h"

struct rotation_duty {
	const char *dir, *password_file;
	struct store *store;
	const struct rotation_settings *settings; /* the daemon swaps it on reload */
	rotation_bundle_probe bundle_probe;       /* the served bundle (api_bundle_carries) */
	void *bundle_arg;
	/* Called after a step that changed which certificates are in DIR (prepared, activated,
	 * retired), so the daemon reloads its bundle and authority at once. May be NULL. */
	void (*changed)(void *arg, enum rotation_outcome outcome);
	void *changed_arg;
	int64_t *supersede_at; /* the issuer's; updated atomically; may be NULL */
	/* After each run: how many intermediates are in each state (for /metrics). Read on
	 * the scheduler's thread only. */
	int states[6]; /* csr_written, prepared, published, active, retiring, retired */
};

/* Prometheus text: agentca_intermediates{state=...} from the last run; length written. */
size_t rotation_duty_metrics(const struct rotation_duty *d, char *buf, size_t len);

/* Take steps while they are due (at most a few per run). */
int duty_rotation(void *arg, int64_t now, struct duty_report *rep, struct ac_err *err);

struct prune_duty {
	struct store *store;
	const struct rotation_settings *settings; /* retention */
};

int duty_prune(void *arg, int64_t now, struct duty_report *rep, struct ac_err *err);

struct tree_head_duty {
	const char *dir;
	struct store *store;
	EVP_PKEY *audit_key;
	uint64_t published_tree_size; /* of the last DIR/sth.json written */
};

int duty_tree_head(void *arg, int64_t now, struct duty_report *rep, struct ac_err *err);

#endif
