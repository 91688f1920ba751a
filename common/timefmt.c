/*
 * timefmt.c - parsing and printing times. See timefmt.h.
 */
#include "common/timefmt.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/config.h"

static int
all_digits(const char *s)
{
	if (*s == '\0')
		return 0;
	for (; *s != '\0'; s++)
		if (*s < '0' || *s > '9')
			return 0;
	return 1;
}

int
time_parse(const char *text, int64_t now, int64_t *out)
{
	struct tm tm;
	const char *end;
	int64_t ago;

	if (text == NULL || *text == '\0')
		return -1;
	if (all_digits(text) && strlen(text) <= 12) {
		long long v;

		if (sscanf(text, "%lld", &v) != 1)
			return -1;
		*out = (int64_t)v;
		return 0;
	}
	memset(&tm, 0, sizeof(tm));
	end = strptime(text, "%Y-%m-%dT%H:%M:%SZ", &tm);
	if (end == NULL || *end != '\0') {
		memset(&tm, 0, sizeof(tm));
		end = strptime(text, "%Y-%m-%d", &tm);
	}
	if (end != NULL && *end == '\0') {
		*out = (int64_t)timegm(&tm);
		return 0;
	}
	if (duration_parse(text, &ago) == 0 && ago <= now) {
		*out = now - ago;
		return 0;
	}
	return -1;
}

void
time_format_rfc3339(int64_t unix_seconds, char *buf, size_t len)
{
	time_t t = (time_t)unix_seconds;
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, len, "%lld", (long long)unix_seconds);
}

int64_t
time_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec;
}

int64_t
time_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
