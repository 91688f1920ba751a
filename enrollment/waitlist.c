/*
 * waitlist.c - parked long-poll connections and their deadlines. See waitlist.h.
 */
#include "enrollment/waitlist.h"

#include <stdlib.h>

struct waitlist_entry {
	struct MHD_Connection *conn;
	double deadline;
	struct waitlist_entry *next;
};

int
waitlist_park(struct waitlist *wl, struct MHD_Connection *conn, double deadline)
{
	struct waitlist_entry *w;

	/* An in-process request (api_call) has no connection to park: it is answered now. */
	if (conn == NULL)
		return -1;
	w = calloc(1, sizeof(*w));
	if (w == NULL)
		return -1;
	w->conn = conn;
	w->deadline = deadline;
	w->next = wl->head;
	wl->head = w;
	MHD_suspend_connection(conn);
	return 0;
}

void
waitlist_resume(struct waitlist *wl, int all, double now)
{
	struct waitlist_entry **p = &wl->head;

	while (*p != NULL) {
		struct waitlist_entry *w = *p;

		if (all || w->deadline <= now) {
			*p = w->next;
			MHD_resume_connection(w->conn);
			free(w);
		} else {
			p = &w->next;
		}
	}
}

double
waitlist_earliest(const struct waitlist *wl, double later)
{
	for (const struct waitlist_entry *w = wl->head; w != NULL; w = w->next)
		if (w->deadline < later)
			later = w->deadline;
	return later;
}
