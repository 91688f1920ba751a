/*
 * agent.h - the agent's side of rotation: keep a certificate in a directory valid forever.
 *
 * The loop (agent_run) enrolls when the directory holds no valid certificate (with a
 * bootstrap token and the root's fingerprint, or the bundle already there), then renews over
 * mTLS at the point the CA chose (renew_after, kept in DIR/renew_after next to the
 * certificate it is for) plus a jitter of at most a minute, or, when the CA gave none, at two
 * thirds of the lifetime minus a jitter of up to a tenth of it. Each renewal makes
 * a new key. Files are written atomically (key.pem 0600 first, then cert.pem, chain.pem,
 * bundle.pem), then the configured command runs or the configured process gets a signal.
 *
 * When the CA cannot be reached the agent keeps its current certificate and retries with
 * exponential backoff and jitter (5 s doubling to 5 min), recovering by itself when the CA
 * returns. It re-reads its files before each decision: someone may have replaced them.
 */
#ifndef AGENTCA_ROTATION_AGENT_H
#define AGENTCA_ROTATION_AGENT_H

#include <signal.h>
#include <stdint.h>
#include <sys/types.h>

#include "ca/keys.h"
#include "common/error.h"

struct agent_options {
	const char *ca_url;      /* https://host:port */
	const char *out_dir;     /* key.pem, cert.pem, chain.pem, bundle.pem */
	const char *token;       /* for a first enrollment; may be NULL */
	const char *fingerprint; /* root fingerprint for a first enrollment; may be NULL when
	                          * out_dir/bundle.pem exists */
	const char *exec_cmd;    /* run with /bin/sh -c after each rotation, or NULL */
	pid_t signal_pid;        /* > 0: send signal_number after each rotation */
	int signal_number;
	int once;               /* renew if due (or enroll if needed) and return */
	int force;              /* renew now, due or not */
	enum key_type key_type; /* for new keys; default P-256 */
};

/* Run until a stop signal (SIGTERM, SIGINT) or, with once, after one decision. Returns 0,
 * or -1 with err (with once: the enrollment or renewal failed). */
int agent_run(const struct agent_options *opts, struct ac_err *err);

/* When to renew a certificate valid [not_before, not_after): 2/3 of the lifetime minus a
 * jitter in [0, lifetime/10) taken from seed. */
int64_t agent_renew_at(int64_t not_before, int64_t not_after, uint32_t seed);

/* When to renew when the CA said ca_renew_after: that point plus a jitter in
 * [0, min(60 s, (not_after - ca_renew_after) / 10)) from seed, so the CA's spreading is kept
 * and a quarter of the lifetime stays free for retries. A ca_renew_after outside
 * [not_before, not_after) (or 0: none) falls back to agent_renew_at. */
int64_t agent_renew_at_hint(int64_t not_before, int64_t not_after, int64_t ca_renew_after,
                            uint32_t seed);

/* How long to wait after the attempt-th consecutive failure (0-based): 5 s doubling to at
 * most 300 s, each with up to 20% less taken from seed. */
int64_t agent_backoff(int attempt, uint32_t seed);

#endif
