/*
 * scheduler.h - the CA daemon's timed duties, in one place.
 *
 * A duty is a name, an interval, a function and the time it is next due. The daemon's main
 * loop calls scheduler_tick(now) once a second (and after a signal); every duty whose time
 * has come runs, in the order they were added, and says what it did. The scheduler logs one
 * line for each duty that did something and each that failed, counts runs and failures,
 * and sets the next due time: now + interval, or earlier/later when the duty asks (the
 * server certificate is due at its renewal point, not every second).
 *
 * Time is a parameter: the scheduler never reads the clock, so a test drives it by
 * advancing `now` and checks which duties ran. The daemon passes time_now().
 */
#ifndef AGENTCA_ROTATION_SCHEDULER_H
#define AGENTCA_ROTATION_SCHEDULER_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

#define SCHEDULER_DUTIES_MAX 16

/* What a run did: `did` a sentence for the log ("" when there was nothing to do), and when
 * the duty is next due (preset to now + interval; the duty may change it). */
struct duty_report {
	char did[768];
	int64_t next_due;
};

typedef int (*duty_fn)(void *arg, int64_t now, struct duty_report *rep, struct ac_err *err);

struct duty {
	const char *name;
	int64_t interval; /* seconds between runs, at least 1 */
	duty_fn run;
	void *arg;
	int64_t next_due;
	int64_t last_run;
	uint64_t runs, failures, acted; /* acted: runs that did something */
};

struct scheduler {
	struct duty duties[SCHEDULER_DUTIES_MAX];
	size_t count;
};

void scheduler_init(struct scheduler *s);

/* Add a duty, first due at first_due (0: at the first tick). */
int scheduler_add(struct scheduler *s, const char *name, int64_t interval, int64_t first_due,
                  duty_fn run, void *arg, struct ac_err *err);

/* Run every duty due at now. Returns how many ran. */
size_t scheduler_tick(struct scheduler *s, int64_t now);

/* Make a duty due at the next tick (a signal asked for it). 0, or -1 when unknown. */
int scheduler_run_soon(struct scheduler *s, const char *name);

/* The duty by name, or NULL. */
const struct duty *scheduler_find(const struct scheduler *s, const char *name);

/* Prometheus text for every duty (runs, failures, seconds until due) into buf; the length
 * written (output cut at len). */
size_t scheduler_metrics(const struct scheduler *s, int64_t now, char *buf, size_t len);

/* The earliest next due time of all duties (INT64_MAX when there is none). */
int64_t scheduler_next_due(const struct scheduler *s);

#endif
