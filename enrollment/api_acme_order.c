/*
 * api_acme_order.c - ACME orders and what hangs off them: authorizations and their
 * challenges, finalize (through ca_issue), certificate download, revocation (through
 * ca_revoke), the account's orders list, and renewal information (RFC 9773) with `replaces`.
 *
 * Order status is derived when read (RFC 8555 7.1.6): a pending order whose authorizations
 * are all valid is ready; one with an invalid, deactivated or expired authorization, or past
 * its own expiry, is invalid. Challenges are validated off the request thread: a POST to a
 * challenge submits it to the validation authority, whose callback (on a worker thread)
 * records the outcome in the authorization. What is in flight (a validation, an order being
 * issued) is held in memory and reads as processing; the store sees three writes per
 * certificate: the new order, the validation's outcome, the issued order.
 *
 * The certificate of an ACME order is issued for the SPIFFE ID
 * spiffe://<trust domain>/acme/<account id> plus exactly the order's names, so the log says
 * which account asked for every certificate.
 */
#include "enrollment/api_acme_internal.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "ca/csr.h"
#include "ca/policy.h"
#include "ca/revoke.h"
#include "common/base64url.h"
#include "common/log.h"
#include "common/timefmt.h"

#define ORDER_IDENTIFIERS_MAX 15 /* the certificate also carries the SPIFFE ID */
#define ORDERS_LISTED_MAX 1000
#define ARI_RETRY_AFTER 21600 /* six hours, RFC 9773 section 4.3 */
#define CHALLENGE_WAIT_MS 300 /* default wait of a challenge POST for its validation */

static const char *
str(const json_t *doc, const char *key)
{
	const char *v = json_string_value(json_object_get(doc, key));

	return v != NULL ? v : "";
}

static int64_t
now_s(void)
{
	return (int64_t)time(NULL);
}

/* The id sets (under s->lock). */
static int
idset_has(const struct acme_idset *set, const char *id)
{
	for (int i = 0; i < set->count; i++)
		if (strcmp(set->ids[i], id) == 0)
			return 1;
	return 0;
}

static int
idset_add(struct acme_idset *set, const char *id)
{
	if (set->count >= ACME_INFLIGHT_MAX || strlen(id) >= sizeof(set->ids[0]))
		return -1;
	memcpy(set->ids[set->count++], id, strlen(id) + 1);
	return 0;
}

static void
idset_del(struct acme_idset *set, const char *id)
{
	for (int i = 0; i < set->count; i++)
		if (strcmp(set->ids[i], id) == 0) {
			memcpy(set->ids[i], set->ids[--set->count], sizeof(set->ids[i]));
			return;
		}
}

/* An authorization's slot (FNV-1a of its id): the index of its lock and of the condition
 * its validation's outcome is announced on. */
static size_t
authz_slot(const char *aid)
{
	uint32_t h = 2166136261u;

	for (const unsigned char *p = (const unsigned char *)aid; *p != '\0'; p++)
		h = (h ^ *p) * 16777619u;
	return h % ACME_AUTHZ_LOCKS;
}

/* The lock of one authorization: read-modify-writes of the same authorization take turns;
 * those of others go on meanwhile. */
static pthread_mutex_t *
authz_lock_of(struct acme_server *s, const char *aid)
{
	return &s->authz_locks[authz_slot(aid)];
}

/* The validating set's key of a challenge. */
static void
challenge_key(const char *aid, size_t index, char out[ACME_ID_LEN + 8])
{
	snprintf(out, ACME_ID_LEN + 8, "%.*s/%zu", ACME_ID_LEN, aid, index % 100);
}

/* Whether any challenge of the authorization is being validated (one at a time). */
static int
authz_validating(struct acme_server *s, const char *aid, const json_t *authz)
{
	char key[ACME_ID_LEN + 8];

	for (size_t i = 0; i < json_array_size(json_object_get(authz, "challenges")); i++) {
		challenge_key(aid, i, key);
		if (idset_has(&s->validating, key))
			return 1;
	}
	return 0;
}

static json_t *
rfc3339(int64_t t)
{
	char buf[32];

	time_format_rfc3339(t, buf, sizeof(buf));
	return json_string(buf);
}

/* A document by id, straight from the store (callbacks have no request). */
static json_t *
load_doc(struct acme_server *s, const char *kind, const char *id, char **account,
         struct ac_err *err)
{
	struct acme_object_row row;
	json_t *doc;

	if (account != NULL)
		*account = NULL;
	if (store_acme_get(s->db, kind, id, &row, err) != 0)
		return NULL;
	doc = json_loads(row.doc, 0, NULL);
	if (doc == NULL)
		ac_err_set(err, AC_ERR_STORE, "serverInternal", "stored %s %s does not decode",
		           kind, id);
	else if (account != NULL) {
		*account = row.account;
		row.account = NULL;
	}
	store_acme_row_free(&row);
	return doc;
}

/* The authz's status, expiry applied. */
static const char *
authz_status(const json_t *authz)
{
	const char *st = str(authz, "status");

	if ((strcmp(st, "pending") == 0 || strcmp(st, "valid") == 0) &&
	    json_integer_value(json_object_get(authz, "expires")) < now_s())
		return "expired";
	return st;
}

/* Bring a pending or ready order's status up to date from its authorizations and expiry;
 * 1 when it changed. Stored orders keep the status last written by
 * finalize (pending, processing, valid, invalid); ready and expiry are derived on read. */
static int
order_refresh(struct acme_server *s, json_t *order)
{
	const char *st = str(order, "status");
	const char *next = NULL;
	size_t i, valid = 0, n;
	json_t *aid;

	if (strcmp(st, "pending") != 0 && strcmp(st, "ready") != 0)
		return 0;
	if (json_integer_value(json_object_get(order, "expires")) < now_s()) {
		next = "invalid";
		goto set;
	}
	n = json_array_size(json_object_get(order, "authorizations"));
	json_array_foreach(json_object_get(order, "authorizations"), i, aid)
	{
		struct ac_err err;
		json_t *authz;
		const char *as;

		ac_err_clear(&err);
		authz = load_doc(s, "authz", json_string_value(aid), NULL, &err);
		if (authz == NULL)
			return 0;
		as = authz_status(authz);
		if (strcmp(as, "valid") == 0)
			valid++;
		else if (strcmp(as, "pending") != 0)
			next = "invalid";
		json_decref(authz);
		if (next != NULL)
			break;
	}
	if (next == NULL && valid == n && strcmp(st, "pending") == 0)
		next = "ready";
set:
	if (next == NULL || strcmp(next, st) == 0)
		return 0;
	json_object_set_new(order, "status", json_string(next));
	return 1;
}

static int
save_order(struct acme_server *s, const char *id, const char *account, json_t *order,
           struct ac_err *err)
{
	const char *serial = json_string_value(json_object_get(order, "certificate"));

	return acme_save(s, "order", id, account, serial,
	                 json_integer_value(json_object_get(order, "expires")), order, 0, err);
}

static json_t *
order_view(struct acme_call *c, const char *id, const json_t *order)
{
	char url[640];
	json_t *authzs = json_array(), *view, *aid;
	size_t i;

	json_array_foreach(json_object_get(order, "authorizations"), i, aid)
	{
		snprintf(url, sizeof(url), "%s/acme/authz/%s", c->base, json_string_value(aid));
		json_array_append_new(authzs, json_string(url));
	}
	snprintf(url, sizeof(url), "%s/acme/order/%s/finalize", c->base, id);
	view = json_pack("{s:O, s:o, s:O, s:o, s:s}", "status", json_object_get(order, "status"),
	                 "expires", rfc3339(json_integer_value(json_object_get(order, "expires"))),
	                 "identifiers", json_object_get(order, "identifiers"), "authorizations",
	                 authzs, "finalize", url);
	if (view == NULL)
		return NULL;
	if (json_object_get(order, "certificate") != NULL &&
	    strcmp(str(order, "status"), "valid") == 0) {
		snprintf(url, sizeof(url), "%s/acme/cert/%s", c->base, str(order, "certificate"));
		json_object_set_new(view, "certificate", json_string(url));
	}
	if (json_object_get(order, "replaces") != NULL)
		json_object_set(view, "replaces", json_object_get(order, "replaces"));
	if (json_object_get(order, "error") != NULL)
		json_object_set(view, "error", json_object_get(order, "error"));
	return view;
}

/* An order of the caller's, its status brought up to date. NULL with the problem set. */
static json_t *
own_order(struct acme_call *c, const char *id)
{
	char *account = NULL;
	struct ac_err err;
	json_t *order;

	ac_err_clear(&err);
	order = acme_load(c, "order", id, &account);
	if (order == NULL)
		return NULL;
	if (account == NULL || strcmp(account, c->account_id) != 0) {
		acme_problem(c, "unauthorized", "this order belongs to another account", NULL);
		json_decref(order);
		order = NULL;
	} else {
		/* Derived, not stored: the next read derives it again (no write per poll). */
		order_refresh(c->s, order);
	}
	free(account);
	return order;
}

/*
 * RFC 9773 certificate identifiers: base64url(AKI keyIdentifier) "." base64url(serial).
 */

/* The serial of a certid as our lowercase hex. */
static int
certid_serial(const char *certid, char serial[80], struct ac_err *err)
{
	const char *dot = strchr(certid != NULL ? certid : "", '.');
	unsigned char raw[40];
	size_t len = 0;
	BIGNUM *bn = NULL;
	char *hex = NULL;
	int rc = -1;

	if (dot == NULL || strlen(dot + 1) == 0 || strlen(dot + 1) > 54 ||
	    base64url_decode(dot + 1, strlen(dot + 1), raw, sizeof(raw), &len) != 0 || len == 0 ||
	    (bn = BN_bin2bn(raw, (int)len, NULL)) == NULL || (hex = BN_bn2hex(bn)) == NULL ||
	    strlen(hex) >= 80) {
		ac_err_set(err, AC_ERR_INVALID, "malformed",
		           "a certificate identifier is base64url(AKI) \".\" base64url(serial)");
		goto out;
	}
	for (size_t i = 0; hex[i] != '\0'; i++)
		serial[i] = (char)(hex[i] >= 'A' && hex[i] <= 'F' ? hex[i] - 'A' + 'a' : hex[i]);
	serial[strlen(hex)] = '\0';
	rc = 0;
out:
	OPENSSL_free(hex);
	BN_free(bn);
	return rc;
}

/*
 * newOrder
 */

/* The identifiers of a newOrder, checked, lowercased and without duplicates; subproblems
 * for the refused ones. */
static json_t *
order_identifiers(struct acme_call *c, const json_t *eab, json_t *subproblems)
{
	const json_t *list = json_object_get(c->payload, "identifiers");
	json_t *out = json_array(), *v;
	size_t i;

	if (!json_is_array(list) || json_array_size(list) == 0 ||
	    json_array_size(list) > ORDER_IDENTIFIERS_MAX) {
		acme_problem(c, "malformed", "\"identifiers\" is an array of 1 to 15 identifiers",
		             NULL);
		json_decref(out);
		return NULL;
	}
	json_array_foreach(list, i, v)
	{
		const char *type = json_string_value(json_object_get(v, "type"));
		const char *value = json_string_value(json_object_get(v, "value"));
		char norm[256];
		struct ac_err err;
		json_t *ident, *seen;
		size_t j;
		int dup = 0;

		ac_err_clear(&err);
		if (type == NULL || value == NULL || strlen(value) == 0 || strlen(value) > 253 ||
		    json_string_length(json_object_get(v, "value")) != strlen(value)) {
			acme_problem(c, "malformed",
			             "each identifier has a \"type\" and a \"value\"", NULL);
			json_decref(out);
			return NULL;
		}
		for (j = 0; value[j] != '\0'; j++)
			norm[j] =
			    (char)(value[j] >= 'A' && value[j] <= 'Z' ? value[j] + 32 : value[j]);
		norm[j] = '\0';
		ident = json_pack("{s:s, s:s}", "type", type, "value", norm);
		if (acme_identifier_allowed(c->s, eab, type, norm, &err) != 0) {
			char full[96];

			snprintf(full, sizeof(full), "urn:ietf:params:acme:error:%s", err.reason);
			json_array_append_new(subproblems,
			                      json_pack("{s:s, s:s, s:O}", "type", full, "detail",
			                                err.msg, "identifier", ident));
		}
		json_array_foreach(out, j, seen)
		{
			if (json_equal(seen, ident))
				dup = 1;
		}
		if (!dup)
			json_array_append(out, ident);
		json_decref(ident);
	}
	return out;
}

static json_t *
new_challenge(const char *type)
{
	char token[ACME_ID_LEN + 1];

	if (acme_random_id(token) != 0)
		return NULL;
	return json_pack("{s:s, s:s, s:s}", "type", type, "token", token, "status", "pending");
}

void
acme_new_order(struct acme_call *c)
{
	json_t *eab = NULL, *subproblems = json_array(), *idents = NULL, *order = NULL;
	json_t *authz_ids = json_array(), *authzs = json_array(), *old = NULL, *v;
	struct acme_object *objs = NULL;
	char **texts = NULL;
	char oid[ACME_ID_LEN + 1], old_serial[80], *old_account = NULL;
	struct acme_object_row old_row;
	const char *replaces = NULL;
	struct ac_err err;
	int64_t expires = now_s() + c->s->opts.order_ttl;
	size_t i, n = 0;

	memset(&old_row, 0, sizeof(old_row));
	ac_err_clear(&err);
	if (c->payload == NULL) {
		acme_problem(c, "malformed", "newOrder needs a payload", NULL);
		goto out;
	}
	/* Orders count against the account like enrollments against an identity. */
	{
		char who[64];
		int retry;

		snprintf(who, sizeof(who), "acme:%s", c->account_id);
		if (api_identity_limited(c->api, who, c->resp)) {
			retry = c->resp->retry_after;
			acme_problem(c, "rateLimited",
			             "too many new orders for this account; retry later", NULL);
			c->resp->retry_after = retry;
			goto out;
		}
	}
	if (json_object_get(c->payload, "notBefore") != NULL ||
	    json_object_get(c->payload, "notAfter") != NULL) {
		acme_problem(c, "malformed", "notBefore and notAfter are set by the CA's policy",
		             NULL);
		goto out;
	}
	eab = acme_account_eab(c->s, c->account);
	if ((idents = order_identifiers(c, eab, subproblems)) == NULL)
		goto out;
	if (json_array_size(subproblems) > 0) {
		acme_problem(c,
		             json_array_size(subproblems) == 1 ? "rejectedIdentifier" : "compound",
		             "an identifier is outside this CA's policy", subproblems);
		if (json_array_size(subproblems) > 1)
			c->resp->status = 400;
		goto out;
	}
	/* RFC 9773 section 5: replaces names a certificate of this account's, not yet replaced. */
	if (json_object_get(c->payload, "replaces") != NULL) {
		replaces = json_string_value(json_object_get(c->payload, "replaces"));
		if (replaces == NULL || certid_serial(replaces, old_serial, &err) != 0) {
			acme_problem(c, "malformed", "\"replaces\" is a certificate identifier",
			             NULL);
			goto out;
		}
		if (store_acme_find(c->s->db, "order", old_serial, &old_row, &err) != 0 ||
		    old_row.account == NULL || strcmp(old_row.account, c->account_id) != 0) {
			acme_problem(c, "malformed",
			             "\"replaces\" does not name a certificate of this account",
			             NULL);
			goto out;
		}
		old = json_loads(old_row.doc, 0, NULL);
		if (old == NULL || json_object_get(old, "replaced_by") != NULL) {
			acme_problem(c, "alreadyReplaced",
			             "that certificate has already been replaced by another order",
			             NULL);
			goto out;
		}
	}
	if (acme_random_id(oid) != 0)
		goto internal;
	json_array_foreach(idents, i, v)
	{
		char aid[ACME_ID_LEN + 1];
		json_t *challenges, *authz;
		int is_ip = strcmp(str(v, "type"), "ip") == 0;

		if (acme_random_id(aid) != 0)
			goto internal;
		challenges = is_ip
		                 ? json_pack("[o, o]", new_challenge("http-01"),
		                             new_challenge("tls-alpn-01"))
		                 : json_pack("[o, o, o]", new_challenge("http-01"),
		                             new_challenge("dns-01"), new_challenge("tls-alpn-01"));
		authz = json_pack("{s:s, s:I, s:O, s:o, s:s}", "status", "pending", "expires",
		                  (json_int_t)expires, "identifier", v, "challenges", challenges,
		                  "order", oid);
		if (challenges == NULL || authz == NULL) {
			json_decref(authz);
			goto internal;
		}
		json_object_set_new(authz, "id", json_string(aid));
		json_array_append_new(authzs, authz);
		json_array_append_new(authz_ids, json_string(aid));
	}
	order = json_pack("{s:s, s:I, s:O, s:O}", "status", "pending", "expires",
	                  (json_int_t)expires, "identifiers", idents, "authorizations", authz_ids);
	if (order == NULL)
		goto internal;
	if (replaces != NULL) {
		json_object_set_new(order, "replaces", json_string(replaces));
		json_object_set_new(old, "replaced_by", json_string(oid));
	}
	/* The order, its authorizations and the replaced order: one transaction. */
	n = json_array_size(authzs) + 1 + (old != NULL);
	objs = calloc(n, sizeof(*objs));
	texts = calloc(n, sizeof(*texts));
	if (objs == NULL || texts == NULL)
		goto internal;
	texts[0] = json_dumps(order, JSON_COMPACT | JSON_SORT_KEYS);
	objs[0] = (struct acme_object){"order", oid, c->account_id, NULL, expires, texts[0]};
	json_array_foreach(authzs, i, v)
	{
		texts[i + 1] = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
		objs[i + 1] = (struct acme_object){"authz", str(v, "id"), c->account_id,
		                                   NULL,    expires,      texts[i + 1]};
	}
	if (old != NULL) {
		texts[n - 1] = json_dumps(old, JSON_COMPACT | JSON_SORT_KEYS);
		objs[n - 1] = (struct acme_object){"order",        old_row.id,      old_row.account,
		                                   old_row.lookup, old_row.expires, texts[n - 1]};
	}
	for (i = 0; i < n; i++)
		if (texts[i] == NULL)
			goto internal;
	if (store_acme_put(c->s->db, objs, n, 0, &err) != 0) {
		acme_problem_err(c, &err);
		goto out;
	}
	acme_location(c, "order", oid);
	acme_reply(c, 201, order_view(c, oid, order));
	goto out;
internal:
	acme_problem(c, "serverInternal", "cannot create the order", NULL);
out:
	for (i = 0; texts != NULL && i < n; i++)
		free(texts[i]);
	free(texts);
	free(objs);
	free(old_account);
	store_acme_row_free(&old_row);
	json_decref(old);
	json_decref(order);
	json_decref(authzs);
	json_decref(authz_ids);
	json_decref(idents);
	json_decref(subproblems);
	json_decref(eab);
}

void
acme_order(struct acme_call *c, const char *id)
{
	json_t *order;

	/* A read: each stored document is read whole; the lock only for the in-flight set. */
	order = own_order(c, id);
	if (order == NULL)
		return;
	pthread_mutex_lock(&c->s->lock);
	if (idset_has(&c->s->finalizing, id))
		json_object_set_new(order, "status", json_string("processing"));
	pthread_mutex_unlock(&c->s->lock);
	if (strcmp(str(order, "status"), "pending") == 0 ||
	    strcmp(str(order, "status"), "processing") == 0)
		c->resp->retry_after = 1;
	acme_reply(c, 200, order_view(c, id, order));
	json_decref(order);
}

void acme_account_orders(struct acme_call *c);

static int
collect_order(void *arg, const char *id)
{
	json_t *list = ((void **)arg)[0];
	const char *base = ((void **)arg)[1];
	char url[640];

	snprintf(url, sizeof(url), "%s/acme/order/%s", base, id);
	json_array_append_new(list, json_string(url));
	return 0;
}

void
acme_account_orders(struct acme_call *c)
{
	json_t *list = json_array();
	void *arg[2] = {list, c->base};
	struct ac_err err;

	ac_err_clear(&err);
	if (store_acme_list(c->s->db, "order", c->account_id, NULL, ORDERS_LISTED_MAX,
	                    collect_order, arg, &err) != 0) {
		json_decref(list);
		acme_problem_err(c, &err);
		return;
	}
	acme_reply(c, 200, json_pack("{s:o}", "orders", list));
}

/*
 * Authorizations and challenges.
 */

static json_t *
challenge_view(struct acme_call *c, const char *aid, size_t index, const json_t *ch)
{
	char url[640];
	json_t *view;

	snprintf(url, sizeof(url), "%s/acme/chall/%s/%zu", c->base, aid, index);
	view = json_pack("{s:O, s:s, s:O, s:O}", "type", json_object_get(ch, "type"), "url", url,
	                 "token", json_object_get(ch, "token"), "status",
	                 json_object_get(ch, "status"));
	if (view != NULL && json_object_get(ch, "validated") != NULL)
		json_object_set_new(view, "validated",
		                    rfc3339(json_integer_value(json_object_get(ch, "validated"))));
	if (view != NULL && json_object_get(ch, "error") != NULL)
		json_object_set(view, "error", json_object_get(ch, "error"));
	return view;
}

/* A challenge whose validation is in flight reads as processing (its stored status stays
 * pending until the outcome). Under s->lock. */
static void
mark_validating(struct acme_server *s, const char *aid, json_t *authz)
{
	char key[ACME_ID_LEN + 8];
	json_t *ch;
	size_t i;

	json_array_foreach(json_object_get(authz, "challenges"), i, ch)
	{
		challenge_key(aid, i, key);
		if (idset_has(&s->validating, key) && strcmp(str(ch, "status"), "pending") == 0)
			json_object_set_new(ch, "status", json_string("processing"));
	}
}

static json_t *
authz_view(struct acme_call *c, const char *aid, const json_t *authz)
{
	json_t *chs = json_array(), *ch;
	size_t i;

	json_array_foreach(json_object_get(authz, "challenges"), i, ch)
	{
		/* Once decided, only the challenge that decided is shown (RFC 8555 7.1.4). */
		if (strcmp(str(authz, "status"), "valid") == 0 &&
		    strcmp(str(ch, "status"), "valid") != 0)
			continue;
		json_array_append_new(chs, challenge_view(c, aid, i, ch));
	}
	return json_pack("{s:s, s:o, s:O, s:o}", "status", authz_status(authz), "expires",
	                 rfc3339(json_integer_value(json_object_get(authz, "expires"))),
	                 "identifier", json_object_get(authz, "identifier"), "challenges", chs);
}

/* An authz of the caller's, or NULL with the problem set. */
static json_t *
own_authz(struct acme_call *c, const char *aid)
{
	char *account = NULL;
	json_t *authz = acme_load(c, "authz", aid, &account);

	if (authz != NULL && (account == NULL || strcmp(account, c->account_id) != 0)) {
		acme_problem(c, "unauthorized", "this authorization belongs to another account",
		             NULL);
		json_decref(authz);
		authz = NULL;
	}
	free(account);
	return authz;
}

void
acme_authz(struct acme_call *c, const char *aid)
{
	/* Only a change needs the authorization's lock; a read sees one stored document whole. */
	pthread_mutex_t *alock = c->payload != NULL ? authz_lock_of(c->s, aid) : NULL;
	struct ac_err err;
	json_t *authz;

	ac_err_clear(&err);
	if (alock != NULL)
		pthread_mutex_lock(alock);
	authz = own_authz(c, aid);
	if (authz == NULL)
		goto out;
	if (c->payload != NULL) {
		const json_t *status = json_object_get(c->payload, "status");
		const char *st = authz_status(authz);

		if (!json_is_string(status) ||
		    strcmp(json_string_value(status), "deactivated") != 0) {
			acme_problem(c, "malformed", "an authorization can only be deactivated",
			             NULL);
			goto out;
		}
		if (strcmp(st, "pending") != 0 && strcmp(st, "valid") != 0) {
			acme_problem(c, "malformed",
			             "only a pending or valid authorization can be "
			             "deactivated",
			             NULL);
			goto out;
		}
		json_object_set_new(authz, "status", json_string("deactivated"));
		if (acme_save(c->s, "authz", aid, c->account_id, NULL,
		              json_integer_value(json_object_get(authz, "expires")), authz, 0,
		              &err) != 0) {
			acme_problem_err(c, &err);
			goto out;
		}
	}
	pthread_mutex_lock(&c->s->lock);
	mark_validating(c->s, aid, authz);
	pthread_mutex_unlock(&c->s->lock);
	/* A pending authorization is polled: tell the client how soon to look again. */
	if (strcmp(authz_status(authz), "pending") == 0)
		c->resp->retry_after = 1;
	acme_reply(c, 200, authz_view(c, aid, authz));
out:
	if (alock != NULL)
		pthread_mutex_unlock(alock);
	json_decref(authz);
}

/* What a validation callback needs to find its challenge again. */
struct validation_ticket {
	struct acme_server *s;
	char authz_id[ACME_ID_LEN + 1];
	char account_id[ACME_ID_LEN + 1];
	size_t index;
};

/* On a validator worker: record the outcome in the authorization. */
static void
validation_done(void *arg, const struct acme_validation_result *result)
{
	struct validation_ticket *t = arg;
	struct acme_server *s = t->s;
	pthread_mutex_t *alock = authz_lock_of(s, t->authz_id);
	char key[ACME_ID_LEN + 8];
	struct ac_err err;
	json_t *authz, *ch;

	/* The outcome is written under the authorization's lock; only then is the challenge
	 * taken out of the validating set, so whoever sees it gone reads the outcome. */
	ac_err_clear(&err);
	pthread_mutex_lock(alock);
	authz = load_doc(s, "authz", t->authz_id, NULL, &err);
	ch = authz != NULL ? json_array_get(json_object_get(authz, "challenges"), t->index) : NULL;
	challenge_key(t->authz_id, t->index, key);
	if (ch != NULL && strcmp(str(ch, "status"), "pending") == 0) {
		/* An authorization deactivated or expired meanwhile stays so. */
		int decides = strcmp(authz_status(authz), "pending") == 0;

		if (result->ok) {
			json_object_set_new(ch, "status", json_string("valid"));
			json_object_set_new(ch, "validated", json_integer(now_s()));
			if (decides)
				json_object_set_new(authz, "status", json_string("valid"));
		} else {
			char type[96];

			snprintf(type, sizeof(type), "urn:ietf:params:acme:error:%s",
			         result->error_type[0] != '\0' ? result->error_type
			                                       : "incorrectResponse");
			json_object_set_new(ch, "status", json_string("invalid"));
			json_object_set_new(ch, "error",
			                    json_pack("{s:s, s:s, s:i}", "type", type, "detail",
			                              result->detail, "status", 400));
			if (decides)
				json_object_set_new(authz, "status", json_string("invalid"));
		}
		if (acme_save(s, "authz", t->authz_id, t->account_id, NULL,
		              json_integer_value(json_object_get(authz, "expires")), authz, 0,
		              &err) != 0)
			log_warn("acme_validation",
			         "authorization %s: cannot record the outcome: %s", t->authz_id,
			         err.msg);
		else
			log_info("acme_validation", "authorization %s (%s): %s%s%s", t->authz_id,
			         str(json_object_get(authz, "identifier"), "value"),
			         result->ok ? "valid" : "invalid", result->ok ? "" : ": ",
			         result->ok ? "" : result->detail);
	}
	pthread_mutex_lock(&s->lock);
	idset_del(&s->validating, key);
	pthread_cond_broadcast(&s->validated[authz_slot(t->authz_id)]);
	pthread_mutex_unlock(&s->lock);
	pthread_mutex_unlock(alock);
	json_decref(authz);
	free(t);
	pthread_mutex_lock(&s->pending_lock);
	if (--s->pending == 0)
		pthread_cond_broadcast(&s->pending_done);
	pthread_mutex_unlock(&s->pending_lock);
}

static int
challenge_type(const char *name, enum acme_challenge_type *out)
{
	if (strcmp(name, "http-01") == 0)
		*out = ACME_CHALLENGE_HTTP_01;
	else if (strcmp(name, "dns-01") == 0)
		*out = ACME_CHALLENGE_DNS_01;
	else if (strcmp(name, "tls-alpn-01") == 0)
		*out = ACME_CHALLENGE_TLS_ALPN_01;
	else
		return -1;
	return 0;
}

void
acme_challenge(struct acme_call *c, const char *aid, const char *index_text)
{
	struct acme_server *s = c->s;
	pthread_mutex_t *alock = authz_lock_of(s, aid);
	struct validation_ticket *t = NULL;
	struct acme_validation job;
	struct ac_err err;
	json_t *authz, *ch, *ident;
	char tp[ACME_THUMBPRINT_LEN + 1], up[700], key[ACME_ID_LEN + 8];
	char *end = NULL;
	unsigned long index = strtoul(index_text, &end, 10);
	int alocked = 1, reload = 0, still = 0;

	memset(&job, 0, sizeof(job));
	ac_err_clear(&err);
	pthread_mutex_lock(alock);
	authz = own_authz(c, aid);
	if (authz == NULL)
		goto out;
	ch = json_array_get(json_object_get(authz, "challenges"), index);
	if (ch == NULL || end == index_text || *end != '\0') {
		acme_problem(c, "malformed", "no such challenge", NULL);
		c->resp->status = 404;
		goto out;
	}
	challenge_key(aid, index, key);
	/* A POST with a payload ({}) asks for validation; POST-as-GET only reads. One
	 * validation per authorization at a time; its state is in memory until the outcome,
	 * which validation_done writes under this authorization's lock. */
	if (c->payload != NULL && strcmp(str(ch, "status"), "pending") == 0 &&
	    strcmp(authz_status(authz), "pending") == 0) {
		int submit_failed = 0;

		ident = json_object_get(authz, "identifier");
		if (challenge_type(str(ch, "type"), &job.type) != 0 ||
		    acme_jwk_thumbprint(json_object_get(c->account, "jwk"), tp, &err) != 0) {
			acme_problem(c, "serverInternal", "cannot prepare the validation", NULL);
			goto out;
		}
		snprintf(job.identifier, sizeof(job.identifier), "%s", str(ident, "value"));
		job.identifier_is_ip = strcmp(str(ident, "type"), "ip") == 0;
		snprintf(job.token, sizeof(job.token), "%s", str(ch, "token"));
		snprintf(job.key_authorization, sizeof(job.key_authorization), "%s.%s",
		         str(ch, "token"), tp);
		pthread_mutex_lock(&s->lock);
		if (!authz_validating(s, aid, authz)) {
			if (s->opts.validator.submit == NULL ||
			    (t = calloc(1, sizeof(*t))) == NULL ||
			    idset_add(&s->validating, key) != 0) {
				free(t);
				submit_failed = 1;
			} else {
				t->s = s;
				memcpy(t->authz_id, aid, ACME_ID_LEN + 1);
				memcpy(t->account_id, c->account_id, ACME_ID_LEN + 1);
				t->index = index;
				pthread_mutex_lock(&s->pending_lock);
				s->pending++;
				pthread_mutex_unlock(&s->pending_lock);
				if (s->opts.validator.submit(s->opts.validator.validator, &job,
				                             validation_done, t, &err) != 0) {
					pthread_mutex_lock(&s->pending_lock);
					if (--s->pending == 0)
						pthread_cond_broadcast(&s->pending_done);
					pthread_mutex_unlock(&s->pending_lock);
					idset_del(&s->validating, key);
					free(t);
					submit_failed = 1;
				}
			}
		}
		pthread_mutex_unlock(&s->lock);
		if (submit_failed) {
			if (err.code == AC_OK)
				ac_err_set(&err, AC_ERR_UNAVAILABLE, "serverInternal",
				           "no validation can start now; retry shortly");
			goto busy;
		}
	}
	pthread_mutex_unlock(alock);
	alocked = 0;
	/* Validations take milliseconds: wait a little for the outcome, so that the client
	 * sees it in this answer instead of polling; else it comes back after Retry-After. */
	pthread_mutex_lock(&s->lock);
	if (s->opts.challenge_wait_ms >= 0 && idset_has(&s->validating, key)) {
		long wait_ms =
		    s->opts.challenge_wait_ms > 0 ? s->opts.challenge_wait_ms : CHALLENGE_WAIT_MS;
		struct timespec deadline;

		clock_gettime(CLOCK_REALTIME, &deadline);
		deadline.tv_nsec += wait_ms * 1000000L;
		deadline.tv_sec += deadline.tv_nsec / 1000000000L;
		deadline.tv_nsec %= 1000000000L;
		while (idset_has(&s->validating, key))
			if (pthread_cond_timedwait(&s->validated[authz_slot(aid)], &s->lock,
			                           &deadline) != 0)
				break;
		reload = !idset_has(&s->validating, key);
	}
	still = idset_has(&s->validating, key);
	if (!reload)
		mark_validating(s, aid, authz);
	pthread_mutex_unlock(&s->lock);
	if (reload) {
		/* The outcome is stored (validation_done writes it before it clears the set). */
		json_t *fresh;

		ac_err_clear(&err);
		if ((fresh = load_doc(s, "authz", aid, NULL, &err)) == NULL) {
			acme_problem_err(c, &err);
			goto out;
		}
		json_decref(authz);
		authz = fresh;
		ch = json_array_get(json_object_get(authz, "challenges"), index);
		if (ch == NULL) {
			acme_problem(c, "serverInternal", "the challenge vanished", NULL);
			goto out;
		}
	}
	if (still)
		c->resp->retry_after = 1; /* still processing: poll again after a second */
	snprintf(up, sizeof(up), "<%s/acme/authz/%s>;rel=\"up\"", c->base, aid);
	api_add_header(c->resp, "Link", up);
	acme_reply(c, 200, challenge_view(c, aid, index, ch));
	goto out;
busy:
	/* The validator could not take the job: the challenge stays pending for a retry. */
	acme_problem(c, "serverInternal", err.msg, NULL);
	c->resp->status = 503;
	c->resp->retry_after = 5;
out:
	if (alocked)
		pthread_mutex_unlock(alock);
	json_decref(authz);
}

/*
 * finalize
 */

/* The CSR's names equal the order's identifiers, as sets. */
static int
csr_matches_order(const struct csr *csr, const json_t *idents, struct ac_err *err)
{
	size_t matched = 0, i;
	json_t *v;

	for (i = 0; i < csr->san_count; i++) {
		const struct csr_san *san = &csr->sans[i];
		char text[256];
		int found = 0;
		size_t j;

		if (san->type == CSR_SAN_DNS) {
			if (san->len >= sizeof(text) || memchr(san->value, 0, san->len) != NULL)
				goto mismatch;
			for (j = 0; j < san->len; j++)
				text[j] = (char)(san->value[j] >= 'A' && san->value[j] <= 'Z'
				                     ? san->value[j] + 32
				                     : san->value[j]);
			text[san->len] = '\0';
		} else if (san->type == CSR_SAN_IP && (san->len == 4 || san->len == 16)) {
			if (inet_ntop(san->len == 4 ? AF_INET : AF_INET6, san->value, text,
			              sizeof(text)) == NULL)
				goto mismatch;
		} else {
			goto mismatch;
		}
		json_array_foreach(idents, j, v)
		{
			const char *value = str(v, "value");
			int is_ip = strcmp(str(v, "type"), "ip") == 0;

			if (is_ip != (san->type == CSR_SAN_IP))
				continue;
			if (is_ip) {
				unsigned char a[16];
				char norm[64];

				if (inet_pton(strchr(value, ':') ? AF_INET6 : AF_INET, value, a) ==
				        1 &&
				    inet_ntop(strchr(value, ':') ? AF_INET6 : AF_INET, a, norm,
				              sizeof(norm)) != NULL &&
				    strcmp(norm, text) == 0)
					found = 1;
			} else if (strcmp(value, text) == 0) {
				found = 1;
			}
		}
		if (!found)
			goto mismatch;
		matched++;
	}
	/* Every identifier is named (the order's have no duplicates; count distinct SANs). */
	json_array_foreach(idents, i, v)
	{
		(void)v;
	}
	if (matched < json_array_size(idents))
		goto mismatch;
	return 0;
mismatch:
	return ac_err_set(err, AC_ERR_INVALID, "badCSR",
	                  "the CSR must name exactly the order's identifiers as subjectAltNames");
}

void
acme_finalize(struct acme_call *c, const char *id)
{
	struct cfg_strlist dns = {NULL, 0};
	struct issue_request ir;
	struct issue_result res;
	struct csr *csr = NULL;
	struct ac_err err;
	unsigned char *der = NULL;
	size_t der_len = 0, i;
	const char *csr_b64;
	char subject[POLICY_SPIFFE_ID_MAX], actor[64];
	json_t *order = NULL, *v;
	int claimed = 0, busy = 0;

	memset(&res, 0, sizeof(res));
	memset(&ir, 0, sizeof(ir));
	ac_err_clear(&err);
	csr_b64 = c->payload != NULL ? json_string_value(json_object_get(c->payload, "csr")) : NULL;
	if (csr_b64 == NULL) {
		acme_problem(c, "malformed", "finalize needs {\"csr\": base64url(DER)}", NULL);
		return;
	}
	/* Claimed in memory first (processing to readers): of two finalizes at once, one
	 * issues and the other is orderNotReady. The order is read after the claim, so a
	 * finalize that completed meanwhile (it saves, then lets go of its claim) is seen as
	 * valid, never issued twice. Only the claim is under the lock. */
	pthread_mutex_lock(&c->s->lock);
	if (!idset_has(&c->s->finalizing, id)) {
		if (idset_add(&c->s->finalizing, id) == 0)
			claimed = 1;
		else
			busy = 1;
	}
	pthread_mutex_unlock(&c->s->lock);
	order = own_order(c, id);
	if (order == NULL)
		goto out;
	if (busy) {
		acme_problem(c, "serverInternal", "too many orders are being finalized; retry",
		             NULL);
		c->resp->status = 503;
		c->resp->retry_after = 1;
		goto out;
	}
	if (!claimed || strcmp(str(order, "status"), "ready") != 0) {
		acme_problem(c, "orderNotReady",
		             strcmp(str(order, "status"), "pending") == 0
		                 ? "the order's authorizations are not all valid yet"
		                 : "the order is not ready for finalization",
		             NULL);
		goto out;
	}
	/* The CSR is parsed and verified once, here; ca_issue checks the policy on it. */
	if (strlen(csr_b64) > CSR_MAX_BYTES * 4 / 3 + 4 ||
	    base64url_decode_alloc(csr_b64, strlen(csr_b64), &der, &der_len) != 0) {
		acme_problem(c, "badCSR", "\"csr\" is not base64url", NULL);
		goto out;
	}
	if (csr_parse(der, der_len, &csr, &err) != 0 ||
	    csr_matches_order(csr, json_object_get(order, "identifiers"), &err) != 0 ||
	    policy_check_key(csr->key, &err) != 0) {
		acme_problem(c, "badCSR", err.msg, NULL);
		goto out;
	}

	/* Issue: the certificate and its log entry are committed durably in agentca.db
	 * when ca_issue returns. */
	json_array_foreach(json_object_get(order, "identifiers"), i, v)
	{
		if (strcmp(str(v, "type"), "dns") == 0 &&
		    cfg_strlist_add(&dns, str(v, "value"), &err))
			break;
	}
	snprintf(subject, sizeof(subject), "spiffe://%s/acme/%s",
	         c->s->issuer->authority->trust_domain, c->account_id);
	snprintf(actor, sizeof(actor), "acme:%s", c->account_id);
	ir.csr = der;
	ir.csr_len = der_len;
	ir.parsed_csr = csr;
	ir.subject = subject;
	ir.ttl = c->s->opts.ttl;
	ir.allowed_dns = &dns;
	ir.kind = "issued";
	ir.actor = actor;
	ir.request_id = c->req->id;
	if (err.code == AC_OK && ca_issue(c->s->issuer, &ir, &res, &err) == 0) {
		json_object_set_new(order, "status", json_string("valid"));
		json_object_set_new(order, "certificate", json_string(res.serial));
		log_info("acme_issued", "ACME order %s of account %s: serial %s", id, c->account_id,
		         res.serial);
	} else if (err.code == AC_ERR_UNAVAILABLE) {
		/* Nothing was issued (a full disk, a busy store): the order stays as stored and
		 * the client may finalize again. */
	} else {
		char type[96];

		snprintf(type, sizeof(type), "urn:ietf:params:acme:error:%s",
		         err.code == AC_ERR_POLICY ? "rejectedIdentifier" : "serverInternal");
		json_object_set_new(order, "status", json_string("invalid"));
		json_object_set_new(order, "error",
		                    json_pack("{s:s, s:s}", "type", type, "detail", err.msg));
	}
	/* The claim makes this the order's only writer: the save needs no lock. */
	if (err.code != AC_ERR_UNAVAILABLE) {
		struct ac_err save_err;

		ac_err_clear(&save_err);
		if (save_order(c->s, id, c->account_id, order, &save_err) != 0) {
			acme_problem_err(c, &save_err);
			goto out;
		}
	}
	if (err.code != AC_OK) {
		acme_problem(c, err.code == AC_ERR_POLICY ? "rejectedIdentifier" : "serverInternal",
		             err.msg, NULL);
		if (err.code == AC_ERR_UNAVAILABLE) {
			c->resp->status = 503;
			c->resp->retry_after = 5;
		}
		goto out;
	}
	acme_location(c, "order", id);
	acme_reply(c, 200, order_view(c, id, order));
out:
	if (claimed) {
		pthread_mutex_lock(&c->s->lock);
		idset_del(&c->s->finalizing, id);
		pthread_mutex_unlock(&c->s->lock);
	}
	cfg_strlist_free(&dns);
	issue_result_free(&res);
	csr_free(csr);
	free(der);
	json_decref(order);
}

/*
 * Certificates: download, revocation, renewal information.
 */

/* The order that issued serial, when it is the caller's: 1, else 0. */
static int
account_owns_serial(struct acme_call *c, const char *serial)
{
	struct acme_object_row row;
	struct ac_err err;
	int owns;

	ac_err_clear(&err);
	if (store_acme_find(c->s->db, "order", serial, &row, &err) != 0)
		return 0;
	owns = row.account != NULL && strcmp(row.account, c->account_id) == 0;
	store_acme_row_free(&row);
	return owns;
}

void
acme_certificate(struct acme_call *c, const char *serial)
{
	struct cert_row row;
	struct ac_err err;
	BIO *bio = NULL;
	BUF_MEM *mem = NULL;
	int have_row = 0;

	ac_err_clear(&err);
	if (strlen(serial) > 64 || !account_owns_serial(c, serial)) {
		acme_problem(c, "unauthorized", "no certificate of this account has that serial",
		             NULL);
		c->resp->status = 404;
		return;
	}
	if (store_cert_get(c->s->issuer->store, serial, &row, &err) != 0) {
		acme_problem_err(c, &err);
		return;
	}
	have_row = 1;
	/* The stored DER, PEM-armoured as it is: the CA wrote it, no need to decode it. */
	if ((bio = BIO_new(BIO_s_mem())) == NULL ||
	    PEM_write_bio(bio, PEM_STRING_X509, "", row.der, (long)row.der_len) <= 0 ||
	    ca_authority_write_chain(issuer_authority(c->s->issuer), row.issuer_fingerprint, bio) !=
	        0) {
		acme_problem(c, "serverInternal", "cannot encode the certificate", NULL);
		goto out;
	}
	BIO_get_mem_ptr(bio, &mem);
	if ((c->resp->body = malloc(mem->length)) == NULL) {
		acme_problem(c, "serverInternal", "out of memory", NULL);
		goto out;
	}
	memcpy(c->resp->body, mem->data, mem->length);
	c->resp->len = mem->length;
	c->resp->status = 200;
	c->resp->content_type = "application/pem-certificate-chain";
out:
	BIO_free(bio);
	if (have_row)
		store_cert_row_free(&row);
}

/* RFC 5280 reason codes ACME clients may give, by number (RFC 8555 7.6). */
static const char *
revocation_reason(const json_t *reason)
{
	static const char *const names[] = {
	    [0] = "unspecified", [1] = "keyCompromise",        [3] = "affiliationChanged",
	    [4] = "superseded",  [5] = "cessationOfOperation", [9] = "privilegeWithdrawn",
	};
	json_int_t r;

	if (reason == NULL)
		return "unspecified";
	if (!json_is_integer(reason))
		return NULL;
	r = json_integer_value(reason);
	if (r < 0 || r >= (json_int_t)(sizeof(names) / sizeof(names[0])))
		return NULL;
	return names[r];
}

void
acme_revoke(struct acme_call *c)
{
	const char *cert_b64 = c->payload != NULL
	                           ? json_string_value(json_object_get(c->payload, "certificate"))
	                           : NULL;
	const char *reason;
	struct revoke_request rr;
	struct cert_row row;
	struct ac_err err;
	unsigned char *der = NULL;
	size_t der_len = 0;
	const unsigned char *p;
	X509 *cert = NULL;
	EVP_PKEY *cert_key;
	BIGNUM *bn = NULL;
	char *hex = NULL, serial[80], actor[64];
	int have_row = 0, children = 0;

	ac_err_clear(&err);
	memset(&rr, 0, sizeof(rr));
	if (cert_b64 == NULL || strlen(cert_b64) > 16384 ||
	    base64url_decode_alloc(cert_b64, strlen(cert_b64), &der, &der_len) != 0) {
		acme_problem(c, "malformed", "revokeCert needs {\"certificate\": base64url(DER)}",
		             NULL);
		goto out;
	}
	if ((reason = revocation_reason(json_object_get(c->payload, "reason"))) == NULL) {
		acme_problem(c, "badRevocationReason",
		             "the reason must be 0, 1, 3, 4, 5 or 9 (RFC 5280)", NULL);
		goto out;
	}
	p = der;
	if ((cert = d2i_X509(NULL, &p, (long)der_len)) == NULL || p != der + der_len ||
	    (bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL)) == NULL ||
	    (hex = BN_bn2hex(bn)) == NULL || strlen(hex) >= sizeof(serial)) {
		acme_problem(c, "malformed", "\"certificate\" is not a DER certificate", NULL);
		goto out;
	}
	for (size_t i = 0; hex[i] != '\0'; i++)
		serial[i] = (char)(hex[i] >= 'A' && hex[i] <= 'F' ? hex[i] - 'A' + 'a' : hex[i]);
	serial[strlen(hex)] = '\0';
	if (store_cert_get(c->s->issuer->store, serial, &row, &err) != 0 ||
	    row.der_len != der_len || memcmp(row.der, der, der_len) != 0) {
		if (err.code == AC_OK || err.code == AC_ERR_NOTFOUND) {
			acme_problem(c, "unauthorized", "this CA did not issue that certificate",
			             NULL);
			c->resp->status = 404;
		} else {
			acme_problem_err(c, &err);
		}
		have_row = err.code == AC_OK;
		goto out;
	}
	have_row = 1;
	/* By the account that ordered it, or by the certificate's own key. */
	if (c->account_id[0] != '\0') {
		if (!account_owns_serial(c, serial)) {
			acme_problem(c, "unauthorized",
			             "this account did not order that certificate", NULL);
			goto out;
		}
	} else {
		cert_key = X509_get0_pubkey(cert);
		if (cert_key == NULL || EVP_PKEY_eq(cert_key, c->key) != 1) {
			acme_problem(c, "unauthorized", "the JWS key is not the certificate's key",
			             NULL);
			goto out;
		}
	}
	if (row.revoked_at != 0) {
		acme_problem(c, "alreadyRevoked", "that certificate is already revoked", NULL);
		goto out;
	}
	snprintf(actor, sizeof(actor), "acme:%s",
	         c->account_id[0] != '\0' ? c->account_id : "certificate-key");
	rr.serial = serial;
	rr.reason = reason;
	rr.actor = actor;
	rr.request_id = c->req->id;
	if (ca_revoke(c->s->issuer->store, &rr, &children, &err) != 0) {
		if (err.code == AC_ERR_CONFLICT)
			acme_problem(c, "alreadyRevoked", err.msg, NULL);
		else
			acme_problem_err(c, &err);
		goto out;
	}
	log_info("acme_revoked", "ACME revocation of %s (%s) by %s", serial, reason, actor);
	c->resp->status = 200;
out:
	if (have_row)
		store_cert_row_free(&row);
	OPENSSL_free(hex);
	BN_free(bn);
	X509_free(cert);
	free(der);
}

void
acme_renewal_info(struct acme_call *c, const char *certid)
{
	struct cert_row row;
	struct ac_err err;
	char serial[80];
	int64_t start, end, life;

	ac_err_clear(&err);
	if (certid_serial(certid, serial, &err) != 0) {
		acme_problem_err(c, &err);
		return;
	}
	if (store_cert_get(c->s->issuer->store, serial, &row, &err) != 0) {
		acme_problem(c, "malformed", "no certificate of this CA has that identifier", NULL);
		c->resp->status = 404;
		return;
	}
	life = row.not_after - row.not_before;
	if (row.revoked_at != 0) {
		/* Revoked: renew now (a window that has already begun). */
		start = now_s() - 3600;
		end = now_s();
	} else if (row.renew_after != 0) {
		/* The point the CA's renewal planner chose at issuance, and its minute. */
		start = row.renew_after;
		end = row.renew_after + RENEWAL_PLAN_BUCKET;
		if (end > row.not_after)
			end = row.not_after;
	} else {
		start = row.not_before + life * 2 / 3;
		end = row.not_before + life * 5 / 6;
	}
	store_cert_row_free(&row);
	c->resp->retry_after = ARI_RETRY_AFTER;
	acme_reply(c, 200,
	           json_pack("{s:{s:o, s:o}}", "suggestedWindow", "start", rfc3339(start), "end",
	                     rfc3339(end)));
}
