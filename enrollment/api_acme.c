/*
 * api_acme.c - the ACME server's HTTP and JWS side: the directory, nonces, the checks every
 * POST goes through, accounts (new, lookup, contact update, deactivation, key rollover,
 * external account binding), problem documents, and the dispatch of the paths below /acme/.
 * Orders and what hangs off them are in api_acme_order.c.
 *
 * Every POST is checked in this order, and a refusal changes nothing:
 *   1. Content-Type application/jose+json, the body within bounds;
 *   2. a flattened JWS with alg, nonce, url and exactly one of jwk and kid;
 *   3. its url is exactly this request's URL;
 *   4. jwk only for newAccount and revokeCert, kid everywhere else; a kid names a valid
 *      account of ours;
 *   5. the signature verifies with that key under a supported alg;
 *   6. the nonce is one we issued and is redeemed now (so a forged request cannot burn one).
 */
#include "enrollment/api_acme_internal.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "ca/policy.h"
#include "common/base64url.h"
#include "common/log.h"
#include "common/timefmt.h"
#include "store/store_acme.h"

#define ACME_TYPE_PREFIX "urn:ietf:params:acme:error:"

/* RFC 8555 section 6.7 (and RFC 9773's alreadyReplaced): each type's HTTP status. */
static const struct acme_error_type {
	const char *type;
	int status;
} error_types[] = {
    {"accountDoesNotExist", 400},
    {"alreadyRevoked", 400},
    {"alreadyReplaced", 409},
    {"badCSR", 400},
    {"badNonce", 400},
    {"badPublicKey", 400},
    {"badRevocationReason", 400},
    {"badSignatureAlgorithm", 400},
    {"caa", 403},
    {"compound", 403},
    {"connection", 400},
    {"dns", 400},
    {"externalAccountRequired", 400},
    {"incorrectResponse", 400},
    {"invalidContact", 400},
    {"malformed", 400},
    {"orderNotReady", 403},
    {"rateLimited", 429},
    {"rejectedIdentifier", 400},
    {"serverInternal", 500},
    {"tls", 400},
    {"unauthorized", 403},
    {"unsupportedContact", 400},
    {"unsupportedIdentifier", 400},
    {"userActionRequired", 403},
};

static const struct acme_error_type *
error_type(const char *type)
{
	for (size_t i = 0; type != NULL && i < sizeof(error_types) / sizeof(error_types[0]); i++)
		if (strcmp(error_types[i].type, type) == 0)
			return &error_types[i];
	return NULL;
}

void
acme_reply(struct acme_call *c, int status, json_t *doc)
{
	api_json_response(c->resp, status, doc);
}

void
acme_problem(struct acme_call *c, const char *type, const char *detail, json_t *subproblems)
{
	const struct acme_error_type *t = error_type(type);
	char full[96];
	json_t *doc;

	if (t == NULL)
		t = error_type("serverInternal");
	snprintf(full, sizeof(full), ACME_TYPE_PREFIX "%s", t->type);
	doc = json_pack("{s:s, s:s, s:i}", "type", full, "detail", detail != NULL ? detail : "",
	                "status", t->status);
	if (doc != NULL && subproblems != NULL)
		json_object_set(doc, "subproblems", subproblems);
	if (doc != NULL && strcmp(t->type, "badSignatureAlgorithm") == 0)
		json_object_set_new(doc, "algorithms",
		                    json_pack("[s, s, s, s]", "ES256", "ES384", "RS256", "EdDSA"));
	free(c->resp->body);
	c->resp->body = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
	c->resp->len = c->resp->body != NULL ? strlen(c->resp->body) : 0;
	c->resp->status = t->status;
	c->resp->content_type = "application/problem+json";
	json_decref(doc);
}

void
acme_problem_err(struct acme_call *c, const struct ac_err *err)
{
	const char *type = err->reason;

	if (error_type(type) == NULL) {
		switch (err->code) {
		case AC_ERR_INVALID:
			type = "malformed";
			break;
		case AC_ERR_POLICY:
			type = "rejectedIdentifier";
			break;
		case AC_ERR_NOTFOUND:
			type = "malformed";
			break;
		case AC_ERR_CONFLICT:
			type = "malformed";
			break;
		case AC_ERR_UNAVAILABLE:
			c->resp->retry_after = 5;
			type = "serverInternal";
			break;
		default:
			type = "serverInternal";
		}
	}
	acme_problem(c, type, err->msg, NULL);
	if (err->code == AC_ERR_NOTFOUND && strcmp(type, "malformed") == 0)
		c->resp->status = 404;
	if (err->code == AC_ERR_CONFLICT && strcmp(type, "malformed") == 0)
		c->resp->status = 409;
	if (err->code == AC_ERR_UNAVAILABLE)
		c->resp->status = 503;
}

void
acme_location(struct acme_call *c, const char *kind, const char *id)
{
	char url[640];

	snprintf(url, sizeof(url), "%s/acme/%s/%s", c->base, kind, id);
	api_add_header(c->resp, "Location", url);
}

int
acme_random_id(char out[ACME_ID_LEN + 1])
{
	unsigned char raw[16];

	if (RAND_bytes(raw, sizeof(raw)) != 1)
		return -1;
	return base64url_encode(raw, sizeof(raw), out, ACME_ID_LEN + 1);
}

json_t *
acme_load(struct acme_call *c, const char *kind, const char *id, char **account)
{
	struct acme_object_row row;
	struct ac_err err;
	json_t *doc = NULL;

	ac_err_clear(&err);
	if (account != NULL)
		*account = NULL;
	if (strlen(id) != ACME_ID_LEN && strcmp(kind, "order") != 0) {
		ac_err_set(&err, AC_ERR_NOTFOUND, "malformed", "no such %s", kind);
		acme_problem_err(c, &err);
		c->resp->status = 404;
		return NULL;
	}
	if (store_acme_get(c->s->db, kind, id, &row, &err) != 0) {
		if (err.code == AC_ERR_NOTFOUND) {
			acme_problem(c, "malformed", err.msg, NULL);
			c->resp->status = 404;
		} else {
			acme_problem_err(c, &err);
		}
		return NULL;
	}
	doc = json_loads(row.doc, 0, NULL);
	if (doc == NULL) {
		acme_problem(c, "serverInternal", "a stored ACME object does not decode", NULL);
	} else if (account != NULL) {
		*account = row.account;
		row.account = NULL;
	}
	store_acme_row_free(&row);
	return doc;
}

static void account_cache_forget(struct acme_server *s, const char *id);

int
acme_save(struct acme_server *s, const char *kind, const char *id, const char *account,
          const char *lookup, int64_t expires, json_t *doc, int create, struct ac_err *err)
{
	char *text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
	struct acme_object o = {kind, id, account, lookup, expires, text};
	int rc;

	if (text == NULL)
		return ac_err_set(err, AC_ERR_INTERNAL, "serverInternal", "cannot encode %s", kind);
	rc = store_acme_put(s->db, &o, 1, create, err);
	/* After the write (even a failed one: the store may hold either version now), so
	 * that the next request reads the account again. */
	if (strcmp(kind, "account") == 0)
		account_cache_forget(s, id);
	free(text);
	return rc;
}

/*
 * The identifier policy.
 */

json_t *
acme_account_eab(struct acme_server *s, const json_t *account)
{
	const char *kid = json_string_value(json_object_get(account, "eab_kid"));
	struct acme_object_row row;
	struct ac_err err;
	json_t *doc;

	ac_err_clear(&err);
	if (kid == NULL || store_acme_get(s->db, "eab", kid, &row, &err) != 0)
		return NULL;
	doc = json_loads(row.doc, 0, NULL);
	store_acme_row_free(&row);
	return doc;
}

/* A list from a JSON array of strings (for an EAB key's policy); items borrowed. */
static int
json_strlist(const json_t *array, struct cfg_strlist *out, struct ac_err *err)
{
	size_t i;
	json_t *v;

	json_array_foreach(array, i, v)
	{
		if (json_is_string(v) && cfg_strlist_add(out, json_string_value(v), err) != 0)
			return -1;
	}
	return 0;
}

int
acme_identifier_allowed(struct acme_server *s, const json_t *eab, const char *type,
                        const char *value, struct ac_err *err)
{
	struct ca_policy narrow;
	unsigned char addr[16];
	size_t addr_len = 0;
	int is_ip = strcmp(type, "ip") == 0, rc = -1;
	const struct cfg_strlist *global = is_ip ? s->opts.ip_ranges : s->opts.dns_suffixes;
	struct ac_err why;

	memset(&narrow, 0, sizeof(narrow));
	ac_err_clear(&why);
	if (!is_ip && strcmp(type, "dns") != 0)
		return ac_err_set(err, AC_ERR_INVALID, "unsupportedIdentifier",
		                  "identifiers are of type \"dns\" or \"ip\"");
	if (!is_ip && strchr(value, '*') != NULL)
		return ac_err_set(err, AC_ERR_POLICY, "rejectedIdentifier",
		                  "wildcard names are not issued by this CA");
	if (is_ip) {
		if (inet_pton(AF_INET, value, addr) == 1)
			addr_len = 4;
		else if (inet_pton(AF_INET6, value, addr) == 1)
			addr_len = 16;
		else
			return ac_err_set(err, AC_ERR_INVALID, "malformed",
			                  "an ip identifier must be an IPv4 or IPv6 address");
	}
	/* The CA's own policy first: it would refuse at issuance anyway. */
	if ((is_ip ? policy_check_ip(s->issuer->policy, addr, addr_len, &why)
	           : policy_check_dns(s->issuer->policy, value, strlen(value), &why)) != 0)
		goto refused;
	/* Then the ACME-wide list, then the EAB key's. */
	if (global != NULL && global->count > 0) {
		if (is_ip)
			narrow.ip_ranges = *global;
		else
			narrow.dns_suffixes = *global;
		if ((is_ip ? policy_check_ip(&narrow, addr, addr_len, &why)
		           : policy_check_dns(&narrow, value, strlen(value), &why)) != 0)
			goto refused;
		memset(&narrow, 0, sizeof(narrow));
	}
	if (eab != NULL) {
		const json_t *list = json_object_get(eab, is_ip ? "ip_ranges" : "dns_suffixes");

		if (json_array_size(list) > 0) {
			struct cfg_strlist own = {NULL, 0};

			if (json_strlist(list, &own, err) != 0)
				goto out;
			if (is_ip)
				narrow.ip_ranges = own;
			else
				narrow.dns_suffixes = own;
			rc = is_ip ? policy_check_ip(&narrow, addr, addr_len, &why)
			           : policy_check_dns(&narrow, value, strlen(value), &why);
			cfg_strlist_free(&own);
			if (rc != 0)
				goto refused;
		}
	}
	rc = 0;
	goto out;
refused:
	ac_err_set(err, AC_ERR_POLICY, "rejectedIdentifier", "%s", why.msg);
	rc = -1;
out:
	return rc;
}

/*
 * Accounts.
 */

/* The account as a client sees it. */
static json_t *
account_view(struct acme_call *c, const char *id, const json_t *doc)
{
	char orders[512];

	snprintf(orders, sizeof(orders), "%s/acme/acct/%s/orders", c->base, id);
	return json_pack("{s:O, s:O, s:s, s:O}", "status", json_object_get(doc, "status"),
	                 "contact", json_object_get(doc, "contact"), "orders", orders, "key",
	                 json_object_get(doc, "jwk"));
}

/* contact: an array of at most 4 "mailto:" URLs without hfields. */
static int
contacts_valid(struct acme_call *c, const json_t *contact)
{
	size_t i;
	json_t *v;

	if (contact == NULL)
		return 1;
	if (!json_is_array(contact) || json_array_size(contact) > 4) {
		acme_problem(c, "invalidContact", "\"contact\" is an array of at most 4 URLs",
		             NULL);
		return 0;
	}
	json_array_foreach(contact, i, v)
	{
		const char *s = json_string_value(v);

		if (s == NULL || strncmp(s, "mailto:", 7) != 0 || strlen(s) > 254 ||
		    strpbrk(s, "?,\r\n ") != NULL || strchr(s + 7, '@') == NULL) {
			acme_problem(c, "unsupportedContact",
			             "contacts are mailto: URLs with one address each", NULL);
			return 0;
		}
	}
	return 1;
}

/* The external account binding of a newAccount: the inner JWS names an EAB key of ours by
 * kid, is HMAC'd with it, has the outer url and the account's jwk as payload. On success
 * *kid_out is the key id (heap). */
static int
check_eab(struct acme_call *c, const json_t *eab, char **kid_out)
{
	struct acme_jws inner;
	struct acme_object_row row;
	struct ac_err err;
	json_t *key_doc = NULL, *payload = NULL;
	unsigned char mac[64];
	size_t mac_len = 0;
	const char *hmac_b64;
	int ok = 0;

	memset(&row, 0, sizeof(row));
	ac_err_clear(&err);
	if (acme_jws_parse_json(eab, &inner, &err) != 0) {
		acme_problem(c, "malformed", err.msg, NULL);
		return 0;
	}
	if (inner.kid == NULL || inner.nonce != NULL || strcmp(inner.url, c->jws.url) != 0) {
		acme_problem(
		    c, "malformed",
		    "externalAccountBinding: a kid, no nonce, and the outer url are required",
		    NULL);
		goto out;
	}
	if (store_acme_get(c->s->db, "eab", inner.kid, &row, &err) != 0) {
		acme_problem(c, "unauthorized", "externalAccountBinding: unknown key id", NULL);
		goto out;
	}
	key_doc = json_loads(row.doc, 0, NULL);
	hmac_b64 = json_string_value(json_object_get(key_doc, "hmac"));
	if (hmac_b64 == NULL ||
	    base64url_decode(hmac_b64, strlen(hmac_b64), mac, sizeof(mac), &mac_len) != 0) {
		acme_problem(c, "serverInternal", "a stored EAB key does not decode", NULL);
		goto out;
	}
	if (acme_jws_verify_hmac(&inner, mac, mac_len, &err) != 0) {
		acme_problem_err(c, &err);
		goto out;
	}
	payload = json_loadb((const char *)inner.payload, inner.payload_len, 0, NULL);
	if (payload == NULL || !json_equal(payload, c->jws.jwk)) {
		acme_problem(c, "unauthorized",
		             "externalAccountBinding: the payload is not the account's key", NULL);
		goto out;
	}
	if ((*kid_out = strdup(inner.kid)) == NULL) {
		acme_problem(c, "serverInternal", "out of memory", NULL);
		goto out;
	}
	ok = 1;
out:
	OPENSSL_cleanse(mac, sizeof(mac));
	json_decref(payload);
	json_decref(key_doc);
	store_acme_row_free(&row);
	acme_jws_free(&inner);
	return ok;
}

/* POST newAccount (jwk): find or create the account of this key. */
static void
new_account(struct acme_call *c)
{
	char tp[ACME_THUMBPRINT_LEN + 1], id[ACME_ID_LEN + 1];
	struct acme_object_row row;
	struct ac_err err;
	json_t *doc = NULL, *contact, *eab;
	char *eab_kid = NULL;

	memset(&row, 0, sizeof(row));
	ac_err_clear(&err);
	if (c->payload == NULL) {
		acme_problem(c, "malformed", "newAccount needs a payload", NULL);
		return;
	}
	if (acme_jwk_thumbprint(c->jws.jwk, tp, &err) != 0) {
		acme_problem_err(c, &err);
		return;
	}
	if (store_acme_find(c->s->db, "account", tp, &row, &err) == 0) {
		/* RFC 8555 7.3.1: an existing account is returned, 200 with its Location. */
		doc = json_loads(row.doc, 0, NULL);
		if (doc == NULL) {
			acme_problem(c, "serverInternal", "a stored account does not decode", NULL);
			goto out;
		}
		if (!json_is_string(json_object_get(doc, "status")) ||
		    strcmp(json_string_value(json_object_get(doc, "status")), "valid") != 0) {
			acme_problem(c, "unauthorized", "this account is deactivated", NULL);
			goto out;
		}
		acme_location(c, "acct", row.id);
		acme_reply(c, 200, account_view(c, row.id, doc));
		goto out;
	}
	if (err.code != AC_ERR_NOTFOUND) {
		acme_problem_err(c, &err);
		goto out;
	}
	if (json_is_true(json_object_get(c->payload, "onlyReturnExisting"))) {
		acme_problem(c, "accountDoesNotExist", "no account exists with this key", NULL);
		goto out;
	}
	contact = json_object_get(c->payload, "contact");
	if (!contacts_valid(c, contact))
		goto out;
	eab = json_object_get(c->payload, "externalAccountBinding");
	if (eab == NULL && c->s->opts.external_account_required) {
		acme_problem(c, "externalAccountRequired",
		             "this CA requires an external account binding (agentca acme eab "
		             "create)",
		             NULL);
		goto out;
	}
	if (eab != NULL && !check_eab(c, eab, &eab_kid))
		goto out;
	if (acme_random_id(id) != 0) {
		acme_problem(c, "serverInternal", "no randomness", NULL);
		goto out;
	}
	doc = json_pack("{s:o, s:O, s:I}", "contact",
	                contact != NULL ? json_incref(contact) : json_array(), "jwk", c->jws.jwk,
	                "created", (json_int_t)time(NULL));
	if (doc != NULL)
		json_object_set_new(doc, "status", json_string("valid"));
	if (doc != NULL && eab_kid != NULL)
		json_object_set_new(doc, "eab_kid", json_string(eab_kid));
	if (doc == NULL || acme_save(c->s, "account", id, NULL, tp, 0, doc, 1, &err) != 0) {
		if (doc == NULL)
			acme_problem(c, "serverInternal", "out of memory", NULL);
		else
			acme_problem_err(c, &err);
		goto out;
	}
	log_info("acme_account", "ACME account %s created%s%s", id, eab_kid ? " with EAB key " : "",
	         eab_kid ? eab_kid : "");
	acme_location(c, "acct", id);
	acme_reply(c, 201, account_view(c, id, doc));
out:
	free(eab_kid);
	json_decref(doc);
	store_acme_row_free(&row);
}

/* c->account may be the account cache's document, which nobody changes: a handler about to
 * change the account takes a copy of its own first. 0, or -1 with the problem set. */
static int
account_own_copy(struct acme_call *c)
{
	json_t *copy = json_deep_copy(c->account);

	if (copy == NULL) {
		acme_problem(c, "serverInternal", "out of memory", NULL);
		return -1;
	}
	json_decref(c->account);
	c->account = copy;
	return 0;
}

/* POST acct/<id>: POST-as-GET, a contact update, or deactivation. */
static void
account_update(struct acme_call *c, const char *id)
{
	struct ac_err err;
	const json_t *contact, *status;
	char tp[ACME_THUMBPRINT_LEN + 1];

	ac_err_clear(&err);
	if (strcmp(id, c->account_id) != 0) {
		acme_problem(c, "unauthorized", "this is not your account", NULL);
		return;
	}
	if (c->payload != NULL) {
		contact = json_object_get(c->payload, "contact");
		status = json_object_get(c->payload, "status");
		if (status != NULL && (!json_is_string(status) ||
		                       strcmp(json_string_value(status), "deactivated") != 0)) {
			acme_problem(c, "malformed",
			             "an account's status can only become "
			             "\"deactivated\"",
			             NULL);
			return;
		}
		if (!contacts_valid(c, contact))
			return;
		if (account_own_copy(c) != 0)
			return;
		if (contact != NULL)
			json_object_set(c->account, "contact", (json_t *)contact);
		if (status != NULL)
			json_object_set_new(c->account, "status", json_string("deactivated"));
		if (acme_jwk_thumbprint(json_object_get(c->account, "jwk"), tp, &err) != 0 ||
		    acme_save(c->s, "account", id, NULL, tp, 0, c->account, 0, &err) != 0) {
			acme_problem_err(c, &err);
			return;
		}
		if (status != NULL)
			log_info("acme_account", "ACME account %s deactivated", id);
	}
	acme_reply(c, 200, account_view(c, id, c->account));
}

/* POST keyChange: the payload is a JWS by the new key over {account, oldKey}. */
static void
key_change(struct acme_call *c)
{
	struct acme_jws inner;
	struct acme_object_row row;
	struct ac_err err;
	EVP_PKEY *new_key = NULL;
	json_t *inner_payload = NULL;
	char tp[ACME_THUMBPRINT_LEN + 1], kid_url[640];

	memset(&inner, 0, sizeof(inner));
	memset(&row, 0, sizeof(row));
	ac_err_clear(&err);
	if (c->payload == NULL || acme_jws_parse_json(c->payload, &inner, &err) != 0) {
		acme_problem(c, "malformed", "keyChange's payload is a JWS by the new key", NULL);
		goto out;
	}
	if (inner.jwk == NULL || strcmp(inner.url, c->jws.url) != 0 || inner.nonce != NULL) {
		acme_problem(c, "malformed",
		             "the inner JWS needs a jwk, the outer url and no nonce", NULL);
		goto out;
	}
	if ((new_key = acme_jwk_to_key(inner.jwk, inner.alg, &err)) == NULL ||
	    acme_jws_verify(&inner, new_key, &err) != 0) {
		acme_problem_err(c, &err);
		goto out;
	}
	snprintf(kid_url, sizeof(kid_url), "%s/acme/acct/%s", c->base, c->account_id);
	inner_payload = json_loadb((const char *)inner.payload, inner.payload_len, 0, NULL);
	if (inner_payload == NULL || !json_is_string(json_object_get(inner_payload, "account")) ||
	    strcmp(json_string_value(json_object_get(inner_payload, "account")), kid_url) != 0 ||
	    !json_equal(json_object_get(inner_payload, "oldKey"),
	                json_object_get(c->account, "jwk"))) {
		acme_problem(c, "malformed",
		             "the inner payload must name this account and its old key", NULL);
		goto out;
	}
	if (acme_jwk_thumbprint(inner.jwk, tp, &err) != 0)
		goto fail;
	if (store_acme_find(c->s->db, "account", tp, &row, &err) == 0) {
		acme_location(c, "acct", row.id);
		ac_err_set(&err, AC_ERR_CONFLICT, "malformed",
		           "another account already uses the new key");
		goto fail;
	}
	ac_err_clear(&err);
	if (account_own_copy(c) != 0)
		goto out;
	json_object_set(c->account, "jwk", inner.jwk);
	if (acme_save(c->s, "account", c->account_id, NULL, tp, 0, c->account, 0, &err) != 0)
		goto fail;
	log_info("acme_account", "ACME account %s rolled over to a new key", c->account_id);
	acme_reply(c, 200, account_view(c, c->account_id, c->account));
	goto out;
fail:
	acme_problem_err(c, &err);
out:
	store_acme_row_free(&row);
	json_decref(inner_payload);
	EVP_PKEY_free(new_key);
	acme_jws_free(&inner);
}

/*
 * The request path.
 */

/* The public key of a JWK, from the cache or decoded into it; the caller frees its
 * reference. */
static EVP_PKEY *
account_key(struct acme_server *s, const json_t *jwk, const char *alg, struct ac_err *err)
{
	char *canonical = acme_jwk_canonical(jwk, err);
	struct acme_cached_key *slot;
	EVP_PKEY *key = NULL;
	uint32_t h = 2166136261u; /* FNV-1a: the slot only, not a security boundary */

	if (canonical == NULL)
		return NULL;
	for (const char *p = canonical; *p != '\0'; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	slot = &s->keys[h % ACME_KEY_CACHE];
	pthread_mutex_lock(&s->keys_lock);
	if (slot->canonical != NULL && strcmp(slot->canonical, canonical) == 0 &&
	    EVP_PKEY_up_ref(slot->key) == 1)
		key = slot->key;
	pthread_mutex_unlock(&s->keys_lock);
	if (key != NULL)
		goto out;
	/* The alg is checked against the key here and again by acme_jws_verify. */
	if ((key = acme_jwk_to_key(jwk, alg, err)) == NULL)
		goto out;
	pthread_mutex_lock(&s->keys_lock);
	if (EVP_PKEY_up_ref(key) == 1) {
		free(slot->canonical);
		EVP_PKEY_free(slot->key);
		slot->canonical = canonical;
		slot->key = key;
		canonical = NULL;
	}
	pthread_mutex_unlock(&s->keys_lock);
out:
	free(canonical);
	return key;
}

/* The account cache's slot of an account id. */
static struct acme_cached_account *
account_slot(struct acme_server *s, const char *id)
{
	uint32_t h = 2166136261u; /* FNV-1a: the slot only, not a security boundary */

	for (const char *p = id; *p != '\0'; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	return &s->accounts[h % ACME_ACCOUNT_CACHE];
}

/* An account from the cache: 1 with *doc and *key set (the caller owns one reference of
 * each), or 0 with *generation the slot's, for account_cache_fill after reading the
 * store. */
static int
account_cache_get(struct acme_server *s, const char *id, json_t **doc, EVP_PKEY **key,
                  uint64_t *generation)
{
	struct acme_cached_account *slot = account_slot(s, id);
	int hit = 0;

	pthread_mutex_lock(&s->accounts_lock);
	if (slot->doc != NULL && strcmp(slot->id, id) == 0 && EVP_PKEY_up_ref(slot->key) == 1) {
		*doc = json_incref(slot->doc);
		*key = slot->key;
		hit = 1;
	}
	*generation = slot->generation;
	pthread_mutex_unlock(&s->accounts_lock);
	return hit;
}

/* Keep an account read from the store, unless its slot was invalidated since generation
 * was taken (a write may have landed after our read). The cache takes its own references. */
static void
account_cache_fill(struct acme_server *s, const char *id, json_t *doc, EVP_PKEY *key,
                   uint64_t generation)
{
	struct acme_cached_account *slot = account_slot(s, id);

	pthread_mutex_lock(&s->accounts_lock);
	if (slot->generation == generation && EVP_PKEY_up_ref(key) == 1) {
		json_decref(slot->doc);
		EVP_PKEY_free(slot->key);
		snprintf(slot->id, sizeof(slot->id), "%s", id);
		slot->doc = json_incref(doc);
		slot->key = key;
	}
	pthread_mutex_unlock(&s->accounts_lock);
}

/* The account was written: drop it, and move its slot on so that no read that started
 * before the write can fill it. */
static void
account_cache_forget(struct acme_server *s, const char *id)
{
	struct acme_cached_account *slot = account_slot(s, id);
	json_t *doc = NULL;
	EVP_PKEY *key = NULL;

	pthread_mutex_lock(&s->accounts_lock);
	slot->generation++;
	if (slot->doc != NULL && strcmp(slot->id, id) == 0) {
		doc = slot->doc;
		key = slot->key;
		slot->doc = NULL;
		slot->key = NULL;
		slot->id[0] = '\0';
	}
	pthread_mutex_unlock(&s->accounts_lock);
	json_decref(doc);
	EVP_PKEY_free(key);
}

/* "https://" + Host, the Host checked as a host[:port] of sane characters. */
static int
base_url(struct acme_call *c, struct MHD_Connection *conn)
{
	const char *host = api_lookup(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);

	if (host == NULL || *host == '\0' || strlen(host) > 255 ||
	    strspn(host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]") !=
	        strlen(host)) {
		acme_problem(c, "malformed", "the request needs a valid Host header", NULL);
		return -1;
	}
	snprintf(c->base, sizeof(c->base), "https://%s", host);
	return 0;
}

static void
directory(struct acme_call *c)
{
	char u[8][400];
	const char *names[] = {"new-nonce",   "new-account", "new-order",
	                       "revoke-cert", "key-change",  "renewal-info"};
	json_t *meta;

	for (int i = 0; i < 6; i++)
		snprintf(u[i], sizeof(u[i]), "%s/acme/%s", c->base, names[i]);
	meta = json_pack("{s:b}", "externalAccountRequired", c->s->opts.external_account_required);
	if (meta != NULL && c->s->opts.website != NULL)
		json_object_set_new(meta, "website", json_string(c->s->opts.website));
	acme_reply(c, 200,
	           json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:o}", "newNonce", u[0], "newAccount",
	                     u[1], "newOrder", u[2], "revokeCert", u[3], "keyChange", u[4],
	                     "renewalInfo", u[5], "meta", meta));
}

/* Steps 1-6 of the header comment. 0 with c->key (and the account for kid) set. */
static int
authenticate(struct acme_call *c, struct MHD_Connection *conn, int jwk_allowed, int kid_allowed)
{
	const char *ctype = api_lookup(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
	char url[640], prefix[400];
	struct ac_err err;
	char *account_of = NULL;
	uint64_t generation = 0;

	ac_err_clear(&err);
	if (c->req->too_large) {
		acme_problem(c, "malformed", "request bodies are limited to 64 KiB", NULL);
		c->resp->status = 413;
		return -1;
	}
	if (ctype == NULL || strcmp(ctype, "application/jose+json") != 0) {
		acme_problem(c, "malformed", "ACME requests are application/jose+json", NULL);
		c->resp->status = 415;
		return -1;
	}
	if (acme_jws_parse(c->req->body, c->req->len, &c->jws, &err) != 0) {
		acme_problem_err(c, &err);
		return -1;
	}
	snprintf(url, sizeof(url), "%s%s", c->base, c->req->url);
	if (strcmp(c->jws.url, url) != 0) {
		acme_problem(c, "unauthorized",
		             "the JWS \"url\" is not the URL this request was sent to", NULL);
		return -1;
	}
	if (c->jws.jwk != NULL && !jwk_allowed) {
		acme_problem(c, "malformed", "this request must be signed by an account (\"kid\")",
		             NULL);
		return -1;
	}
	if (c->jws.kid != NULL && !kid_allowed) {
		acme_problem(c, "malformed", "this request must carry the key itself (\"jwk\")",
		             NULL);
		return -1;
	}
	if (c->jws.kid != NULL) {
		snprintf(prefix, sizeof(prefix), "%s/acme/acct/", c->base);
		if (strncmp(c->jws.kid, prefix, strlen(prefix)) != 0 ||
		    strlen(c->jws.kid + strlen(prefix)) != ACME_ID_LEN) {
			acme_problem(c, "accountDoesNotExist",
			             "the \"kid\" is not an account URL of "
			             "this CA",
			             NULL);
			return -1;
		}
		memcpy(c->account_id, c->jws.kid + strlen(prefix), ACME_ID_LEN + 1);
		if (!account_cache_get(c->s, c->account_id, &c->account, &c->key, &generation)) {
			c->account = acme_load(c, "account", c->account_id, &account_of);
			free(account_of);
			if (c->account == NULL) {
				if (c->resp->status == 404)
					acme_problem(c, "accountDoesNotExist", "no such account",
					             NULL);
				return -1;
			}
			c->key =
			    account_key(c->s, json_object_get(c->account, "jwk"), c->jws.alg, &err);
			if (c->key != NULL)
				account_cache_fill(c->s, c->account_id, c->account, c->key,
				                   generation);
		}
		if (!json_is_string(json_object_get(c->account, "status")) ||
		    strcmp(json_string_value(json_object_get(c->account, "status")), "valid") !=
		        0) {
			acme_problem(c, "unauthorized", "this account is deactivated", NULL);
			return -1;
		}
	} else {
		c->key = account_key(c->s, c->jws.jwk, c->jws.alg, &err);
	}
	if (c->key == NULL || acme_jws_verify(&c->jws, c->key, &err) != 0) {
		acme_problem_err(c, &err);
		return -1;
	}
	if (acme_nonce_redeem(c->s->nonces, c->jws.nonce, &err) != 0) {
		acme_problem_err(c, &err);
		return -1;
	}
	if (!c->jws.post_as_get) {
		c->payload = json_loadb((const char *)c->jws.payload, c->jws.payload_len,
		                        JSON_REJECT_DUPLICATES, NULL);
		if (!json_is_object(c->payload)) {
			acme_problem(c, "malformed", "the JWS payload is not a JSON object", NULL);
			return -1;
		}
	}
	return 0;
}

/* The POST routes: which key they take and who handles them. */
static void
post(struct acme_call *c, struct MHD_Connection *conn)
{
	const char *p = c->path;
	char id[64];
	const char *slash;

	if (strcmp(p, "new-account") == 0) {
		if (authenticate(c, conn, 1, 0) == 0)
			new_account(c);
		return;
	}
	if (strcmp(p, "revoke-cert") == 0) {
		if (authenticate(c, conn, 1, 1) == 0)
			acme_revoke(c);
		return;
	}
	if (strcmp(p, "new-nonce") == 0 || strcmp(p, "directory") == 0 ||
	    strncmp(p, "renewal-info", 12) == 0) {
		acme_problem(c, "malformed", "use GET here", NULL);
		c->resp->status = 405;
		return;
	}
	if (authenticate(c, conn, 0, 1) != 0)
		return;
	if (strcmp(p, "new-order") == 0)
		return acme_new_order(c);
	if (strcmp(p, "key-change") == 0)
		return key_change(c);
	slash = strchr(p, '/');
	if (slash == NULL || (size_t)(slash - p) >= sizeof(id)) {
		acme_problem(c, "malformed", "no such ACME resource", NULL);
		c->resp->status = 404;
		return;
	}
	memcpy(id, p, (size_t)(slash - p));
	id[slash - p] = '\0';
	p = slash + 1;
	slash = strchr(p, '/');
	if (strcmp(id, "acct") == 0 && slash == NULL)
		return account_update(c, p);
	if (strcmp(id, "acct") == 0 && strcmp(slash, "/orders") == 0 &&
	    strncmp(p, c->account_id, ACME_ID_LEN) == 0 && (size_t)(slash - p) == ACME_ID_LEN)
		return acme_account_orders(c);
	if (strcmp(id, "order") == 0 && slash == NULL)
		return acme_order(c, p);
	if (strcmp(id, "order") == 0 && strcmp(slash, "/finalize") == 0) {
		char oid[64];

		if ((size_t)(slash - p) < sizeof(oid)) {
			memcpy(oid, p, (size_t)(slash - p));
			oid[slash - p] = '\0';
			return acme_finalize(c, oid);
		}
	}
	if (strcmp(id, "authz") == 0 && slash == NULL)
		return acme_authz(c, p);
	if (strcmp(id, "chall") == 0 && slash != NULL && strchr(slash + 1, '/') == NULL) {
		char aid[64];

		if ((size_t)(slash - p) < sizeof(aid)) {
			memcpy(aid, p, (size_t)(slash - p));
			aid[slash - p] = '\0';
			return acme_challenge(c, aid, slash + 1);
		}
	}
	if (strcmp(id, "cert") == 0 && slash == NULL)
		return acme_certificate(c, p);
	acme_problem(c, "malformed", "no such ACME resource", NULL);
	c->resp->status = 404;
}

/* Some routes answer a problem with another status than its type's (415, 404, 409, 503):
 * the document must then say the status it is sent with (RFC 7807 section 3.1). */
static void
problem_status_sync(struct api_response *resp)
{
	json_t *doc;
	char *text;

	if (resp->body == NULL || resp->content_type == NULL ||
	    strcmp(resp->content_type, "application/problem+json") != 0)
		return;
	doc = json_loadb(resp->body, resp->len, 0, NULL);
	if (json_is_object(doc) &&
	    json_integer_value(json_object_get(doc, "status")) != resp->status &&
	    json_object_set_new(doc, "status", json_integer(resp->status)) == 0 &&
	    (text = json_dumps(doc, JSON_COMPACT)) != NULL) {
		free(resp->body);
		resp->body = text;
		resp->len = strlen(text);
	}
	json_decref(doc);
}

void
handle_acme(struct api *api, struct MHD_Connection *conn, struct api_request *req,
            struct api_response *resp)
{
	struct acme_call c;
	char nonce[ACME_NONCE_LEN + 1], link[480];
	const char *method;

	memset(&c, 0, sizeof(c));
	c.s = api->acme;
	c.api = api;
	c.req = req;
	c.resp = resp;
	c.path = req->url + strlen("/acme/");
	method = req->method;
	if (base_url(&c, conn) != 0)
		goto out;
	if (strcmp(method, "POST") == 0) {
		post(&c, conn);
	} else if (strcmp(c.path, "directory") == 0) {
		directory(&c);
	} else if (strcmp(c.path, "new-nonce") == 0) {
		resp->status = strcmp(method, "HEAD") == 0 ? 200 : 204;
	} else if (strncmp(c.path, "renewal-info/", 13) == 0) {
		acme_renewal_info(&c, c.path + 13);
	} else {
		acme_problem(&c, "malformed",
		             "no such ACME resource (other resources are POST-as-GET)", NULL);
		resp->status = 404;
	}
out:
	problem_status_sync(resp);
	/* RFC 8555 6.5: a fresh nonce on every answer; 7.1: the index link. */
	if (acme_nonce_make(c.s->nonces, nonce) == 0)
		api_add_header(resp, "Replay-Nonce", nonce);
	snprintf(link, sizeof(link), "<%s/acme/directory>;rel=\"index\"", c.base);
	api_add_header(resp, "Link", link);
	/* Refusals are logged by the engine (request_refused), with the problem document. */
	json_decref(c.payload);
	json_decref(c.account);
	EVP_PKEY_free(c.key);
	acme_jws_free(&c.jws);
}

/*
 * The server's life.
 */

struct acme_server *
acme_server_new(const struct acme_options *opts, struct ac_err *err)
{
	struct acme_server *s = calloc(1, sizeof(*s));

	if (s == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		return NULL;
	}
	s->opts = *opts;
	s->issuer = opts->issuer;
	if (s->opts.order_ttl <= 0)
		s->opts.order_ttl = 3600;
	pthread_mutex_init(&s->lock, NULL);
	for (size_t i = 0; i < ACME_AUTHZ_LOCKS; i++)
		pthread_cond_init(&s->validated[i], NULL);
	pthread_mutex_init(&s->pending_lock, NULL);
	pthread_cond_init(&s->pending_done, NULL);
	pthread_mutex_init(&s->keys_lock, NULL);
	pthread_mutex_init(&s->accounts_lock, NULL);
	for (size_t i = 0; i < ACME_AUTHZ_LOCKS; i++)
		pthread_mutex_init(&s->authz_locks[i], NULL);
	if ((s->nonces = acme_nonces_new(err)) == NULL ||
	    (s->db = store_acme_open(opts->issuer->store, err)) == NULL) {
		acme_server_free(s);
		return NULL;
	}
	return s;
}

void
acme_server_free(struct acme_server *s)
{
	if (s == NULL)
		return;
	/* The pool answers whatever it still holds, then goes; then no callback is left. */
	if (s->opts.validator.stop != NULL && s->opts.validator.validator != NULL)
		s->opts.validator.stop(s->opts.validator.validator);
	pthread_mutex_lock(&s->pending_lock);
	while (s->pending > 0)
		pthread_cond_wait(&s->pending_done, &s->pending_lock);
	pthread_mutex_unlock(&s->pending_lock);
	store_acme_close(s->db);
	acme_nonces_free(s->nonces);
	for (size_t i = 0; i < ACME_KEY_CACHE; i++) {
		free(s->keys[i].canonical);
		EVP_PKEY_free(s->keys[i].key);
	}
	pthread_mutex_destroy(&s->keys_lock);
	for (size_t i = 0; i < ACME_ACCOUNT_CACHE; i++) {
		json_decref(s->accounts[i].doc);
		EVP_PKEY_free(s->accounts[i].key);
	}
	pthread_mutex_destroy(&s->accounts_lock);
	for (size_t i = 0; i < ACME_AUTHZ_LOCKS; i++)
		pthread_mutex_destroy(&s->authz_locks[i]);
	pthread_cond_destroy(&s->pending_done);
	pthread_mutex_destroy(&s->pending_lock);
	for (size_t i = 0; i < ACME_AUTHZ_LOCKS; i++)
		pthread_cond_destroy(&s->validated[i]);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

int
acme_eab_create(struct store *st, const struct cfg_strlist *dns_suffixes,
                const struct cfg_strlist *ip_ranges, char kid_out[64], char hmac_out[64],
                struct ac_err *err)
{
	unsigned char key[32];
	struct store_acme *db = NULL;
	char kid[ACME_ID_LEN + 1];
	json_t *doc = NULL, *dns = json_array(), *ips = json_array();
	char *text = NULL;
	int rc = -1;

	for (size_t i = 0; dns_suffixes != NULL && i < dns_suffixes->count; i++)
		json_array_append_new(dns, json_string(dns_suffixes->items[i]));
	for (size_t i = 0; ip_ranges != NULL && i < ip_ranges->count; i++)
		json_array_append_new(ips, json_string(ip_ranges->items[i]));
	if (RAND_bytes(key, sizeof(key)) != 1 || acme_random_id(kid) != 0 ||
	    base64url_encode(key, sizeof(key), hmac_out, 64) != 0) {
		ac_err_ssl(err, AC_ERR_CRYPTO, "rand_failed", "cannot draw an EAB key");
		goto out;
	}
	doc = json_pack("{s:s, s:O, s:O, s:I}", "hmac", hmac_out, "dns_suffixes", dns, "ip_ranges",
	                ips, "created", (json_int_t)time(NULL));
	if (doc == NULL || (text = json_dumps(doc, JSON_COMPACT)) == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto out;
	}
	if ((db = store_acme_open(st, err)) == NULL)
		goto out;
	{
		struct acme_object o = {"eab", kid, NULL, NULL, 0, text};

		if (store_acme_put(db, &o, 1, 1, err) != 0)
			goto out;
	}
	memcpy(kid_out, kid, sizeof(kid));
	rc = 0;
out:
	OPENSSL_cleanse(key, sizeof(key));
	if (text != NULL)
		OPENSSL_cleanse(text, strlen(text));
	free(text);
	store_acme_close(db);
	json_decref(doc);
	json_decref(dns);
	json_decref(ips);
	return rc;
}
