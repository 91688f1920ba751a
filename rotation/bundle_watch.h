/*
 * bundle_watch.h - keep a trust-bundle file current for an external gateway (nginx,
 * HAProxy, Envoy): long-poll the CA's /v1/bundle with the ETag held, write the file
 * atomically when the bundle changes, then run the gateway's reload command.
 *
 * The CA is trusted through roots the caller gives (the file from a previous run, a CA file,
 * or the root matched by fingerprint). A CA that does not hold the request open is polled
 * every wait period instead. When the CA cannot be reached the file is left as it is and
 * the watch retries with backoff.
 */
#ifndef AGENTCA_ROTATION_BUNDLE_WATCH_H
#define AGENTCA_ROTATION_BUNDLE_WATCH_H

#include "common/error.h"

struct bundle_watch_options {
	const char *ca_url;
	const char *out_path;
	const char *roots_pem; /* trust for the CA's TLS certificate */
	const char *exec_cmd;  /* after each change, or NULL */
	int wait_seconds;      /* long-poll period; default 30 */
	int once;              /* fetch, write if changed, return */
};

int bundle_watch_run(const struct bundle_watch_options *opts, struct ac_err *err);

#endif
