/*
 * revoke.c - revoking a certificate and its nested agents'. See revoke.h.
 */
#include "ca/revoke.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "common/log.h"
#include "common/timefmt.h"

/* Serials collected from a listing, to revoke after the scan. */
static int
collect_serial(void *arg, const struct cert_summary *c)
{
	struct cfg_strlist *serials = arg;

	return cfg_strlist_add(serials, c->serial, NULL) != 0;
}

/* One revocation: the row and its log entry. */
static int
revoke_one(struct store *st, const char *serial, const char *reason, const char *actor,
           const char *request_id, const char *detail, struct ac_err *err)
{
	struct log_entry entry;
	struct store_write w;

	memset(&entry, 0, sizeof(entry));
	entry.kind = "revoked";
	entry.actor = actor;
	entry.serial = serial;
	entry.reason = reason != NULL ? reason : "unspecified";
	entry.request_id = request_id;
	entry.detail = detail;
	memset(&w, 0, sizeof(w));
	w.entry = &entry;
	w.revoke_serial = serial;
	w.revoke_reason = reason;
	return store_submit(st, &w, err);
}

int
ca_revoke(struct store *st, const struct revoke_request *req, int *children, struct ac_err *err)
{
	struct cfg_strlist serials = {NULL, 0};
	struct cert_filter filter;
	struct cert_row row;
	char prefix[4096], detail[4200];
	int have_row = 0, rc = -1;

	*children = 0;
	if (store_cert_get(st, req->serial, &row, err) != 0)
		return -1;
	have_row = 1;
	if (revoke_one(st, req->serial, req->reason, req->actor, req->request_id, NULL, err) != 0)
		goto out;

	/* The nested agents: valid certificates under the revoked identity's path. */
	if (snprintf(prefix, sizeof(prefix), "%s/", row.subject) >= (int)sizeof(prefix)) {
		rc = 0;
		goto out;
	}
	memset(&filter, 0, sizeof(filter));
	filter.subject_prefix = prefix;
	filter.valid_at = time_now();
	if (store_cert_list(st, &filter, collect_serial, &serials, err) != 0)
		goto out;
	snprintf(detail, sizeof(detail), "nested under %s, whose certificate %s was revoked",
	         row.subject, row.serial);
	for (size_t i = 0; i < serials.count; i++) {
		struct ac_err child_err;

		ac_err_clear(&child_err);
		/* "cessationOfOperation": the parent that vouched for it is gone. */
		if (revoke_one(st, serials.items[i], "cessationOfOperation", req->actor,
		               req->request_id, detail, &child_err) != 0) {
			if (child_err.code == AC_ERR_CONFLICT)
				continue; /* revoked meanwhile */
			*err = child_err;
			goto out;
		}
		(*children)++;
	}
	if (*children > 0)
		log_info("revoked_children", "revoking %s also revoked %d nested certificate%s",
		         row.serial, *children, *children == 1 ? "" : "s");
	rc = 0;
out:
	cfg_strlist_free(&serials);
	if (have_row)
		store_cert_row_free(&row);
	return rc;
}
