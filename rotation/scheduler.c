/*
 * scheduler.c - the daemon's timed duties: see scheduler.h.
 *
 * Deliberately small: a fixed table, a linear scan per tick (a handful of duties), no
 * threads. A duty runs on the daemon's main thread, so two duties never run at once and a
 * duty needs no lock against another one.
 */
#include "rotation/scheduler.h"

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
