/*
 * session_log.h - one JSON line per proxied session (or refused connection), written in
 * batches by one writer thread so that workers never wait on the disk.
 *
 * The file (proxy-sessions.jsonl under the proxy's directory) is opened with O_APPEND and
 * each line looks like
 *
 *   {"start":"2026-11-22T05:00:00.123Z","end":"...","listener":"127.0.0.1:9443",
 *    "client":"127.0.0.1:51234","identity":"spiffe://corp.internal/gw-1","serial":"0a1b...",
 *    "tls_version":"TLSv1.3","cipher":"TLS_AES_128_GCM_SHA256","upstream":"127.0.0.1:8080",
 *    "bytes_up":123,"bytes_down":456,"outcome":"closed","reason":"client_closed"}
 *
 * outcome is "closed" for a session that reached its upstream and "refused" for a connection
 * that never did (reason then says why: plaintext, no_client_certificate, ...).
 *
 * Workers hand records over with session_log_put(), which copies into a bounded ring and
 * never blocks on I/O: when the ring is full the record is dropped and counted (the count is
 * logged by the writer and shown in /metrics). The writer wakes when a batch is waiting or
 * every second, formats everything queued and writes it with one write(2).
 */
#ifndef AGENTCA_GATEWAY_HOOK_SESSION_LOG_H
#define AGENTCA_GATEWAY_HOOK_SESSION_LOG_H

#include <stdint.h>

#include "common/error.h"

struct session_record {
	int64_t start_ms, end_ms; /* unix milliseconds */
	int refused;              /* 1: never reached the upstream */
	const char *reason;       /* static string: close or refusal reason */
	char listener[64];
	char client[64];
	char identity[2049]; /* SPIFFE ID, or "" */
	char serial[41];
	char tls_version[16];
	char cipher[64];
	char upstream[264];
	uint64_t bytes_up, bytes_down; /* client -> upstream, upstream -> client */
};

struct session_log;

/* Open (create, 0640) path for appending and start the writer. */
struct session_log *session_log_open(const char *path, struct ac_err *err);

/* Queue a copy of rec; never blocks on I/O. Returns -1 when dropped (ring full). */
int session_log_put(struct session_log *sl, const struct session_record *rec);

/* Records dropped because the ring was full. */
uint64_t session_log_dropped(struct session_log *sl);

/* Write everything queued, stop the writer, close the file. */
void session_log_close(struct session_log *sl);

#endif
