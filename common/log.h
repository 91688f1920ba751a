/*
 * log.h - the daemon's and the CLI's diagnostic log: one JSON object per line on stderr.
 *
 *   {"time":"2026-11-22T01:40:00.123Z","level":"info","event":"ca_ready","msg":"..."}
 *
 * `event` is a short stable token to grep and alert on; `msg` is for people. Each line is
 * built in a local buffer and written with a single write(2), so lines from several threads
 * never interleave. Lines below the configured level are dropped before any formatting.
 *
 * Never pass a secret (passphrase, private key, token, password file contents) to these
 * functions: the log is read by people who must not hold them. Pass identifiers instead
 * (a token's jti, a key's SPKI fingerprint).
 *
 * The issuance log (store/) is a different thing: the durable, tamper-evident audit record.
 */
#ifndef AGENTCA_COMMON_LOG_H
#define AGENTCA_COMMON_LOG_H

enum ac_log_level { AC_LOG_DEBUG = 0, AC_LOG_INFO, AC_LOG_WARN, AC_LOG_ERROR, AC_LOG_OFF };

/* Set the minimum level written (default: info). */
void ac_log_set_level(enum ac_log_level level);

/* Parse "debug", "info", "warn", "error" or "off"; returns -1 for anything else. */
int ac_log_level_parse(const char *name, enum ac_log_level *out);

/* Write to this file descriptor instead of stderr (tests). */
void ac_log_set_fd(int fd);

void ac_log(enum ac_log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(event, ...) ac_log(AC_LOG_DEBUG, event, __VA_ARGS__)
#define log_info(event, ...) ac_log(AC_LOG_INFO, event, __VA_ARGS__)
#define log_warn(event, ...) ac_log(AC_LOG_WARN, event, __VA_ARGS__)
#define log_error(event, ...) ac_log(AC_LOG_ERROR, event, __VA_ARGS__)

#endif
