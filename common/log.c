/*
 * log.c - JSON-lines diagnostic log on stderr. See log.h.
 *
 * A line is at most LOG_LINE_MAX bytes; a longer message is cut (and says so) rather than
 * split, so that every line stays valid JSON.
 */
#include "common/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 4096

static enum ac_log_level log_min_level = AC_LOG_INFO;
static int log_fd = STDERR_FILENO;

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

void
ac_log_set_level(enum ac_log_level level)
{
	log_min_level = level;
}

int
ac_log_level_parse(const char *name, enum ac_log_level *out)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcmp(name, level_names[i]) == 0) {
			*out = (enum ac_log_level)i;
			return 0;
		}
	}
	return -1;
}

void
ac_log_set_fd(int fd)
{
	log_fd = fd;
}

/* Append s to buf[*len..cap) as the inside of a JSON string. Returns 0, or -1 when cut. */
static int
append_json_escaped(char *buf, size_t *len, size_t cap, const char *s)
{
	static const char hex[] = "0123456789abcdef";

	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		char esc[7];
		size_t n;

		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			n = 2;
		} else if (c == '\n') {
			memcpy(esc, "\\n", 2);
			n = 2;
		} else if (c < 0x20 || c == 0x7f) {
			memcpy(esc, "\\u00", 4);
			esc[4] = hex[c >> 4];
			esc[5] = hex[c & 0xf];
			n = 6;
		} else {
			esc[0] = (char)c;
			n = 1;
		}
		if (*len + n >= cap)
			return -1;
		memcpy(buf + *len, esc, n);
		*len += n;
	}
	return 0;
}

void
ac_log(enum ac_log_level level, const char *event, const char *fmt, ...)
{
	char msg[LOG_LINE_MAX / 2], line[LOG_LINE_MAX];
	struct timeval tv;
	struct tm tm;
	size_t len;
	int saved_errno = errno, cut = 0;
	va_list ap;

	if (level < log_min_level || (unsigned)level > AC_LOG_ERROR)
		return;

	va_start(ap, fmt);
	if (vsnprintf(msg, sizeof(msg), fmt, ap) >= (int)sizeof(msg))
		cut = 1;
	va_end(ap);

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	len =
	    (size_t)snprintf(line, sizeof(line),
	                     "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"level\":\"%s\","
	                     "\"event\":\"",
	                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
	                     tm.tm_sec, (long)(tv.tv_usec / 1000), level_names[level]);
	/* Leave room for the closing characters. */
	cut |= append_json_escaped(line, &len, sizeof(line) - 40, event) != 0;
	memcpy(line + len, "\",\"msg\":\"", 9);
	len += 9;
	cut |= append_json_escaped(line, &len, sizeof(line) - 40, msg) != 0;
	len += (size_t)snprintf(line + len, sizeof(line) - len, "\"%s}\n",
	                        cut ? ",\"truncated\":true" : "");
	/* One write per line: concurrent lines never interleave. Nowhere to report a failure. */
	if (write(log_fd, line, len) < 0) {
		/* ignored on purpose */
	}
	errno = saved_errno;
}
