/*
 * scheduler.c - the daemon's timed duties: see scheduler.h.
 *
 * Deliberately small: a fixed table, a linear scan per tick (a handful of duties), no
 * threads. A duty runs on the daemon's main thread, so two duties never run at once and a
 * duty needs no lock against another one.
 */
#include "rotation/scheduler.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/log.h"

void
scheduler_init(struct scheduler *s)
{
	memset(s, 0, sizeof(*s));
}

int
scheduler_add(struct scheduler *s, const char *name, int64_t interval, int64_t first_due,
              duty_fn run, void *arg, struct ac_err *err)
{
	struct duty *d;

	if (s->count >= SCHEDULER_DUTIES_MAX)
		return ac_err_set(err, AC_ERR_INTERNAL, "too_many_duties",
		                  "scheduler: no room for duty %s", name);
	if (interval < 1 || run == NULL)
		return ac_err_set(err, AC_ERR_INTERNAL, "duty_invalid",
		                  "scheduler: duty %s needs an interval >= 1s and a function",
		                  name);
	d = &s->duties[s->count++];
	memset(d, 0, sizeof(*d));
	d->name = name;
	d->interval = interval;
	d->run = run;
	d->arg = arg;
	d->next_due = first_due;
	return 0;
}

size_t
scheduler_tick(struct scheduler *s, int64_t now)
{
	size_t ran = 0;

	for (size_t i = 0; i < s->count; i++) {
		struct duty *d = &s->duties[i];
		struct duty_report rep;
		struct ac_err err;

		if (now < d->next_due)
			continue;
		ac_err_clear(&err);
		rep.did[0] = '\0';
		rep.next_due = now + d->interval;
		d->runs++;
		d->last_run = now;
		ran++;
		if (d->run(d->arg, now, &rep, &err) != 0) {
			d->failures++;
			log_warn("duty_failed", "%s: %s (next try in %llds)", d->name,
			         err.msg[0] != '\0' ? err.msg : "failed", (long long)d->interval);
			d->next_due = now + d->interval;
			continue;
		}
		if (rep.did[0] != '\0') {
			d->acted++;
			log_info("duty", "%s: %s", d->name, rep.did);
		}
		d->next_due = rep.next_due;
	}
	return ran;
}

int
scheduler_run_soon(struct scheduler *s, const char *name)
{
	for (size_t i = 0; i < s->count; i++)
		if (strcmp(s->duties[i].name, name) == 0) {
			s->duties[i].next_due = 0;
			return 0;
		}
	return -1;
}

const struct duty *
scheduler_find(const struct scheduler *s, const char *name)
{
	for (size_t i = 0; i < s->count; i++)
		if (strcmp(s->duties[i].name, name) == 0)
			return &s->duties[i];
	return NULL;
}

int64_t
scheduler_next_due(const struct scheduler *s)
{
	int64_t next = INT64_MAX;

	for (size_t i = 0; i < s->count; i++)
		if (s->duties[i].next_due < next)
			next = s->duties[i].next_due;
	return next;
}

/* Append printf output to buf at *used, never past len. */
static void append(char *buf, size_t len, size_t *used, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
append(char *buf, size_t len, size_t *used, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (*used >= len)
		return;
	va_start(ap, fmt);
	n = vsnprintf(buf + *used, len - *used, fmt, ap);
	va_end(ap);
	if (n > 0)
		*used = *used + (size_t)n < len ? *used + (size_t)n : len - 1;
}

size_t
scheduler_metrics(const struct scheduler *s, int64_t now, char *buf, size_t len)
{
	static const char *const kinds[] = {"runs", "failures", "actions"};
	size_t used = 0;

	if (len == 0)
		return 0;
	buf[0] = '\0';
	for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
		append(buf, len, &used, "# TYPE agentca_duty_%s_total counter\n", kinds[k]);
		for (size_t i = 0; i < s->count; i++) {
			const struct duty *d = &s->duties[i];
			uint64_t v = k == 0 ? d->runs : k == 1 ? d->failures : d->acted;

			append(buf, len, &used, "agentca_duty_%s_total{duty=\"%s\"} %" PRIu64 "\n",
			       kinds[k], d->name, v);
		}
	}
	append(buf, len, &used,
	       "# HELP agentca_duty_next_due_seconds Seconds until a duty is next due.\n"
	       "# TYPE agentca_duty_next_due_seconds gauge\n");
	for (size_t i = 0; i < s->count; i++)
		append(buf, len, &used, "agentca_duty_next_due_seconds{duty=\"%s\"} %" PRId64 "\n",
		       s->duties[i].name,
		       s->duties[i].next_due > now ? s->duties[i].next_due - now : 0);
	return used;
}
