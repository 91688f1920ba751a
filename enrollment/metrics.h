/*
 * metrics.h - counters and latency histograms for /metrics (Prometheus text format).
 *
 * Routes are known at start-up, so their counters are fixed arrays indexed by route; denial
 * reasons are stable string literals (struct ac_err.reason), kept in a small table. All
 * counters are atomics or under one mutex: recording never allocates.
 */
#ifndef AGENTCA_ENROLLMENT_METRICS_H
#define AGENTCA_ENROLLMENT_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define METRICS_ROUTES_MAX 64
#define METRICS_REASONS_MAX 64

struct metrics;

/* route_names[0..count) label the routes ("enroll", "renew", ...). */
struct metrics *metrics_new(const char *const *route_names, size_t count);
void metrics_free(struct metrics *m);

/* One request on route i finished with this status after `seconds`. */
void metrics_request(struct metrics *m, size_t route, int status, double seconds);

/* One certificate issued (kind "issued" or "renewed") or one refusal with its reason. */
void metrics_issued(struct metrics *m, const char *kind);
void metrics_denied(struct metrics *m, const char *reason);

/* Append the Prometheus text to a heap buffer (*out, *len; free()). extra is appended
 * verbatim (gauges the caller knows: certificate expiry, front counters). */
int metrics_render(struct metrics *m, const char *extra, char **out, size_t *len);

/* The standard process metrics of Prometheus clients (process_cpu_seconds_total,
 * process_resident_memory_bytes, process_virtual_memory_bytes, process_open_fds,
 * process_max_fds, process_start_time_seconds) from /proc/self, and with glibc the
 * allocator's agentca_heap_in_use_bytes and agentca_heap_free_bytes (mallinfo2), appended
 * to buf (a metric that cannot be read is left out). */
void metrics_process(char *buf, size_t len);

#endif
