/*
 * proxy.h - the gateway hook: an mTLS forwarding proxy. Clients connect with TLS and a
 * certificate from the CA; the proxy verifies it against the trust bundle, checks the
 * identity against the listener's allow rules (deny by default), and only then connects to
 * the upstream (plain TCP, or TLS with the proxy's own client certificate) and relays bytes
 * both ways. Everything the client sends before that is held back: a refused client never
 * gets a byte to the upstream.
 *
 * Material: the proxy's certificate, key and chain, and the trust bundle, are handed over
 * with proxy_start() and again with proxy_update() whenever any of them changes. The update
 * builds new SSL_CTXs (enrollment/tls.c: one TLS policy for the API and the proxy) off the
 * hot path and swaps them in atomically: open connections keep the context they started
 * with, new ones get the new one.
 *
 * Revocation and expiry: proxy_revoke_serial() closes every open session of that
 * certificate within a sweep (at most PROXY_SWEEP_MS) and refuses new handshakes with it;
 * a session whose client certificate expires is closed at the same sweep.
 *
 * Refusal reasons (logged, counted in /metrics, written to the session log):
 *   plaintext, no_client_certificate, certificate_untrusted, certificate_expired,
 *   certificate_revoked, identity_not_allowed, handshake_failed, handshake_timeout,
 *   connection_limit, upstream_connect_failed, upstream_tls_failed
 */
#ifndef AGENTCA_GATEWAY_HOOK_PROXY_H
#define AGENTCA_GATEWAY_HOOK_PROXY_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "common/error.h"

#define PROXY_SWEEP_MS 250 /* timeouts, expiry and revocation are checked this often */

enum proxy_upstream_mode { PROXY_UPSTREAM_TCP = 0, PROXY_UPSTREAM_TLS };

struct proxy_listener_config {
	const char *listen;   /* "127.0.0.1:9443", "[::1]:9443"; port 0 picks one */
	const char *upstream; /* "127.0.0.1:8080", "app.corp.internal:8443" */
	enum proxy_upstream_mode mode;
	const char *upstream_name;    /* TLS: name the upstream must prove, sent as SNI;
	                               * default: the upstream's host */
	const char *upstream_ca_file; /* TLS: PEM roots for the upstream; NULL: the bundle */
	const char *const *allow;     /* allow rules (gateway-hook/allow.h) */
	size_t allow_count;
	int proxy_protocol; /* 1: send a PROXY v2 header with the client's identity first */
};

/* The proxy's certificate material (all borrowed; the proxy takes its own references). */
struct proxy_material {
	X509 *cert;             /* presented to clients, and to TLS upstreams */
	STACK_OF(X509) *chain;  /* its intermediates (also used to build client chains) */
	EVP_PKEY *key;          /* its key */
	STACK_OF(X509) *bundle; /* trust anchors for client certificates */
	uint64_t bundle_sequence;
};

struct proxy_options {
	const struct proxy_listener_config *listeners;
	size_t listener_count;
	int workers;              /* epoll threads; 0: one per core */
	int handshake_timeout_ms; /* default 10000 (also bounds the upstream connect) */
	int idle_timeout_ms;      /* default 300000: no byte either way for this long closes */
	int max_connections;      /* default 10000, across listeners and workers */
	int drain_ms;             /* default 10000: how long proxy_stop lets sessions finish */
	const char *session_log;  /* JSON-lines session log path, or NULL for none */
	int verify_cache;         /* verified client chains cached per worker (gateway-hook/
	                           * verify_cache.h); 0: 1024; -1: off, every chain verified */
};

struct proxy;

struct proxy *proxy_start(const struct proxy_options *opts, const struct proxy_material *m,
                          struct ac_err *err);

/* New certificate and/or bundle: new contexts for new connections. On failure the running
 * material stays. */
int proxy_update(struct proxy *p, const struct proxy_material *m, struct ac_err *err);

/* Close the sessions of this certificate (serial in hex, any case) and refuse it from now
 * on. Returns the number of serials newly added (0 when already known), -1 out of memory. */
int proxy_revoke_serial(struct proxy *p, const char *serial_hex);

/* Replace listener i's allow rules (gateway-hook/allow.h). New connections are checked
 * against the new rules; a live session whose identity they no longer allow is closed
 * within PROXY_SWEEP_MS (reason identity_not_allowed). On failure the running rules stay. */
int proxy_set_allow(struct proxy *p, size_t listener, const char *const *allow, size_t count,
                    struct ac_err *err);

/* The port bound for listener i (useful with port 0), or -1. */
int proxy_bound_port(const struct proxy *p, size_t i);

/* Prometheus text for the proxy (agentca_proxy_* metrics) into a heap buffer. */
int proxy_metrics_render(struct proxy *p, char **out, size_t *len);

/* Stop accepting, let sessions finish for up to drain_ms, close the rest, free. */
void proxy_stop(struct proxy *p);

#endif
