/*
 * bundle_watch.h - keep a trust-bundle file current for an external gateway (nginx,
 * HAProxy, Envoy): long-poll the CA's /v1/bundle with the ETag held, write the file
 * atomically when the bundle changes, then run the gateway's reload command.
 *
 * The CA is trusted through roots the caller gives (the file from a previous run, a CA file,
 * or the root matched by fingerprint). A CA that does not hold the request open is polled
 * every wait period instead. When the CA cannot be reached the file is left as it is and
 * the watch retries with backoff.
 *
 * With the gateway's own certificate and key (ack_cert_path, ack_key_path, read afresh each
 * time: an agent may renew them), each bundle the watch has written and the reload command
 * has accepted is acknowledged to the CA (POST /v1/bundle/ack with its ETag), so that an
 * intermediate rotation that waits for gateways (rotation.acknowledgments) can go on. A
 * failed acknowledgment is retried on the next round.
 */
#ifndef AGENTCA_ROTATION_BUNDLE_WATCH_H
#define AGENTCA_ROTATION_BUNDLE_WATCH_H

#include "common/error.h"

struct bundle_watch_options {
	const char *ca_url;
	const char *out_path;
	const char *roots_pem;     /* trust for the CA's TLS certificate */
	const char *exec_cmd;      /* after each change, or NULL */
	int wait_seconds;          /* long-poll period; default 30 */
	int once;                  /* fetch, write if changed, return */
	const char *ack_cert_path; /* the gateway's certificate (PEM), or NULL: no acks */
	const char *ack_key_path;  /* its key */
};

int bundle_watch_run(const struct bundle_watch_options *opts, struct ac_err *err);

#endif
