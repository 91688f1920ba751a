/*
 * timefmt.h - the times users type and the times agentca prints.
 *
 * Accepted on input (--since, --until): RFC 3339 UTC "2026-11-22T01:40:00Z", a date
 * "2026-11-22" (midnight UTC), unix seconds "1763775600", or a duration meaning "that long
 * ago" ("24h", "7d"). Printed: RFC 3339 UTC with seconds.
 */
#ifndef AGENTCA_COMMON_TIMEFMT_H
#define AGENTCA_COMMON_TIMEFMT_H

#include <stddef.h>
#include <stdint.h>

/* Parse as above relative to now (unix seconds). Returns 0 and *out, or -1. */
int time_parse(const char *text, int64_t now, int64_t *out);

/* "2026-11-22T01:40:00Z" into buf (at least 21 bytes). */
void time_format_rfc3339(int64_t unix_seconds, char *buf, size_t len);

/* Current time in unix seconds and milliseconds (CLOCK_REALTIME). */
int64_t time_now(void);
int64_t time_now_ms(void);

#endif
