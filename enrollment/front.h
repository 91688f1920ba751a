/*
 * front.h - the HTTPS front: our own OpenSSL terminates TLS and hands the plaintext
 * connection to libmicrohttpd, so the whole service has one TLS stack.
 *
 * The front listens on each configured address, accepts, and reads the first byte with a
 * short timeout: anything but a TLS handshake record (0x16) is closed at once (a client
 * speaking plaintext HTTP to the TLS port gets nothing). It completes the handshake
 * (non-blocking, epoll, with a handshake timeout), then makes a socketpair, gives one end to
 * libmicrohttpd with MHD_add_connection() and relays bytes between the TLS connection and
 * the other end, in both directions, with backpressure and half-close. The verified client
 * certificate, if any, is recorded against the MHD side of the pair, so a request handler
 * asks front_peer_of() with its MHD connection.
 *
 * Worker threads: one epoll loop per core; the listening sockets use SO_REUSEPORT when
 * there are several workers. The TLS context comes from a struct tls_ctx_slot, so a new
 * server certificate takes effect for new connections without dropping open ones.
 * front_stop() stops accepting, lets relays finish for up to drain_ms, then closes.
 */
#ifndef AGENTCA_ENROLLMENT_FRONT_H
#define AGENTCA_ENROLLMENT_FRONT_H

#include <microhttpd.h>

#include "common/error.h"
#include "enrollment/tls.h"

struct front;

/*
 * The MHD daemon given to the front is started with (see front.c for why):
 *
 *   MHD_USE_NO_LISTEN_SOCKET | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC
 *
 * (no MHD_OPTION_THREAD_POOL_SIZE). With libmicrohttpd 0.9.75, a handler that queues a
 * response in its first call for a request gets the connection closed after it (no
 * keep-alive): answer from the second call (set *con_cls, return MHD_YES first).
 * Stop order: front_stop(), then MHD_stop_daemon().
 */

struct front_options {
	const char *const *listen; /* "127.0.0.1:8443", "[::1]:8443"; port 0: pick one */
	size_t listen_count;
	struct tls_ctx_slot *tls;  /* borrowed */
	struct MHD_Daemon *mhd;    /* borrowed; started with MHD_USE_NO_LISTEN_SOCKET */
	int workers;               /* epoll threads; 0: one per core */
	int handshake_timeout_ms;  /* default 10000 */
	int first_byte_timeout_ms; /* default 5000 */
	int max_connections;       /* default 10000 */
	int drain_ms;              /* default 10000 */
};

struct front *front_start(const struct front_options *opts, struct ac_err *err);

/* The port bound for listen address i (useful with port 0). */
int front_bound_port(const struct front *f, size_t i);

/* The verified peer of an MHD connection; peer->present is 0 when none was presented. */
int front_peer_of(struct front *f, struct MHD_Connection *conn, struct tls_peer *peer);

/* Counters for /metrics. */
struct front_stats {
	uint64_t accepted, handshakes_ok, handshakes_failed, plaintext_refused;
	uint64_t active;
	uint64_t limit_refused; /* closed at accept because max_connections were open */
};
void front_stats(struct front *f, struct front_stats *out);

void front_stop(struct front *f);

#endif
