/*
 * waitlist.h - long-polls without threads: requests parked on suspended libmicrohttpd
 * connections until something changes or their deadline passes.
 *
 * A handler that has nothing new to say parks its connection (MHD_suspend_connection: no
 * thread waits) and marks the request suspended; whoever notices the change resumes every
 * parked connection, and a timer resumes those whose deadline passed. A resumed request's
 * handler runs again and answers. The list does no locking of its own: its owner guards it
 * with the lock that also guards what the waiters wait for, so that "check, then park" is
 * atomic against "change, then resume". Used by /v1/bundle and /v1/revocations.
 */
#ifndef AGENTCA_ENROLLMENT_WAITLIST_H
#define AGENTCA_ENROLLMENT_WAITLIST_H

#include <microhttpd.h>

struct waitlist_entry;

struct waitlist {
	struct waitlist_entry *head;
};

/* Suspend conn until waitlist_resume() or deadline (api_now() seconds). -1 when out of
 * memory (the connection is then not suspended: answer it now). */
int waitlist_park(struct waitlist *wl, struct MHD_Connection *conn, double deadline);

/* Resume the waiters whose deadline is <= now, or all of them when `all`. */
void waitlist_resume(struct waitlist *wl, int all, double now);

/* The earliest deadline, or `later` when it is sooner or nobody waits. */
double waitlist_earliest(const struct waitlist *wl, double later);

#endif
