/*
 * store_acme.h - the ACME server's durable objects: accounts, orders, authorizations (with
 * their challenges) and external account binding keys.
 *
 * Each object is a JSON document the ACME front owns, filed under (kind, id) with the
 * columns the front looks things up by: the owning account, a unique lookup key (an
 * account's JWK thumbprint, an order's certificate serial) and an expiry. Certificates are
 * not here: they go through ca_issue and the issuance log like every other.
 *
 * They live in a SQLite file of their own next to the store's (DIR/agentca-acme.db, created
 * 0600; rows an older agentca kept in agentca.db are moved there at open), so that ACME
 * traffic never waits behind the issuance log's group committer and its fsync. A write of
 * several objects (an order and its authorizations) is one transaction. Writes that touch an
 * account or an EAB key are durable before they return (synchronous=FULL); order and
 * authorization changes are committed to the WAL and reach the disk with the next
 * checkpoint or durable commit (synchronous=NORMAL): a power loss may take the last of them
 * (the client retries its order), never a certificate, which is in agentca.db and the
 * issuance log, committed durably, before any client sees it. A process crash loses nothing.
 */
#ifndef AGENTCA_STORE_STORE_ACME_H
#define AGENTCA_STORE_STORE_ACME_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "store/store.h"

struct store_acme;

/* An object to write. Strings are borrowed for the call; account and lookup may be NULL. */
struct acme_object {
	const char *kind; /* "account", "order", "authz", "eab" */
	const char *id;
	const char *account;
	const char *lookup;
	int64_t expires; /* unix seconds; 0: never */
	const char *doc; /* JSON text */
};

/* An object read back; free with store_acme_row_free(). */
struct acme_object_row {
	char *id, *account, *lookup, *doc;
	int64_t expires;
};

/* Open (create, migrate) the ACME file that belongs to st's SQLite file. */
struct store_acme *store_acme_open(struct store *st, struct ac_err *err);
void store_acme_close(struct store_acme *a);

/* Write n objects in one transaction. create: a new object (AC_ERR_CONFLICT "conflict" if
 * the id or lookup exists); else insert or replace. */
int store_acme_put(struct store_acme *a, const struct acme_object *objs, size_t n, int create,
                   struct ac_err *err);

/* By id, or by lookup key. AC_ERR_NOTFOUND when absent. */
int store_acme_get(struct store_acme *a, const char *kind, const char *id,
                   struct acme_object_row *out, struct ac_err *err);
int store_acme_find(struct store_acme *a, const char *kind, const char *lookup,
                    struct acme_object_row *out, struct ac_err *err);

/* The ids of an account's objects of one kind, oldest first, after `after` (NULL: from the
 * start), at most limit; fn is called with each. */
typedef int (*acme_id_fn)(void *arg, const char *id);
int store_acme_list(struct store_acme *a, const char *kind, const char *account, const char *after,
                    int64_t limit, acme_id_fn fn, void *arg, struct ac_err *err);

void store_acme_row_free(struct acme_object_row *row);

#endif
