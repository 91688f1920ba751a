/*
 * api_acme_internal.h - what api_acme.c (HTTP, JWS, accounts) and api_acme_order.c
 * (orders, authorizations, challenges, certificates, revocation, renewal information)
 * share. Only those two files include it.
 *
 * Every ACME request becomes one struct acme_call: the request's base URL (https:// and
 * the Host it was sent to), the path below /acme/, and, for a POST, the verified JWS with
 * its account. Handlers answer through acme_reply() and acme_problem(); api_acme.c adds
 * Replay-Nonce and the index Link to every answer.
 */
#ifndef AGENTCA_ENROLLMENT_API_ACME_INTERNAL_H
#define AGENTCA_ENROLLMENT_API_ACME_INTERNAL_H

#include <pthread.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "enrollment/acme.h"
#include "enrollment/acme_jws.h"
#include "enrollment/acme_nonce.h"
#include "enrollment/api_internal.h"
#include "store/store_acme.h"

#define ACME_ID_LEN 22          /* base64url of 16 random bytes */
#define ACME_KEY_CACHE 1024     /* account keys kept decoded, direct-mapped */
#define ACME_ACCOUNT_CACHE 1024 /* account documents kept parsed, direct-mapped by id */

#define ACME_INFLIGHT_MAX 1024 /* validations, and finalizations, in flight at once */
#define ACME_AUTHZ_LOCKS 64    /* authorization locks, picked by a hash of the id */

/* A small set of ids, under acme_server.lock: what is in flight is kept in memory only (a
 * restart forgets it, and the client simply asks again), so that a certificate costs three
 * store writes (the order, the validation's outcome, the issued order), not five. */
struct acme_idset {
	char ids[ACME_INFLIGHT_MAX][ACME_ID_LEN + 8]; /* an order id, or "authz-id/index" */
	int count;
};

/* One decoded account key, found again by its JWK's canonical text. */
struct acme_cached_key {
	char *canonical;
	EVP_PKEY *key;
};

/* One account as authenticate() last read it from the store: the parsed document (never
 * modified once here: handlers that change an account change a copy) and its decoded key.
 * generation counts the slot's invalidations: a reader that missed remembers it before
 * reading the store and may fill the slot only if it has not moved meanwhile, so a write
 * that lands between the read and the fill is never hidden by a stale copy. */
struct acme_cached_account {
	char id[ACME_ID_LEN + 1];
	json_t *doc;
	EVP_PKEY *key;
	uint64_t generation;
};

struct acme_server {
	struct acme_options opts; /* lists borrowed */
	struct issuer *issuer;
	struct store_acme *db;
	struct acme_nonces *nonces;
	/* Guards the in-memory sets below and nothing else: held for a few comparisons, never
	 * across a store write, an issuance or a validation. */
	pthread_mutex_t lock;
	/* Broadcast (under lock) when a validation is recorded: one per authorization slot
	 * (the same hash as authz_locks), so that a recorded outcome wakes only the challenge
	 * POSTs waiting on that slot, usually the one it answers, not every waiting POST. */
	pthread_cond_t validated[ACME_AUTHZ_LOCKS];
	struct acme_idset validating; /* challenges with a validation in flight */
	struct acme_idset finalizing; /* orders being issued (the claim that makes finalize
	                                 run once per order) */
	/* Serialize read-modify-write of one authorization (a challenge POST, the validation's
	 * outcome, deactivation), so that unrelated orders never wait for each other's
	 * writes. Taken before lock when both are held. */
	pthread_mutex_t authz_locks[ACME_AUTHZ_LOCKS];
	/* Validation callbacks in flight: acme_server_free waits for none. */
	pthread_mutex_t pending_lock;
	pthread_cond_t pending_done;
	int pending;
	/* Account keys are decoded once and reused (an EVP_PKEY per request would rebuild
	 * and re-check the curve point every time). */
	pthread_mutex_t keys_lock;
	struct acme_cached_key keys[ACME_KEY_CACHE];
	/* Account documents are parsed once and reused until the account is written again
	 * (contact update, deactivation, key rollover: acme_save drops the entry after the
	 * store write), so a kid-signed request reads neither the store nor JSON for its
	 * account. Only this process writes accounts. */
	pthread_mutex_t accounts_lock;
	struct acme_cached_account accounts[ACME_ACCOUNT_CACHE];
};

/* One request. */
struct acme_call {
	struct acme_server *s;
	struct api *api;
	struct api_request *req;
	struct api_response *resp;
	char base[320];   /* "https://host:port" */
	const char *path; /* below "/acme/" */
	/* POST only, after acme_authenticate: */
	struct acme_jws jws;
	json_t *payload;                  /* the payload as JSON, NULL for POST-as-GET */
	char account_id[ACME_ID_LEN + 1]; /* "" when the JWS carried a jwk */
	json_t *account;                  /* the account document, when kid (shared with the
	                                     account cache: copy it before changing it) */
	EVP_PKEY *key;                    /* the key that signed */
};

/* The answers. */
void acme_reply(struct acme_call *c, int status, json_t *doc);
void acme_problem(struct acme_call *c, const char *type, const char *detail, json_t *subproblems);
/* The problem an ac_err stands for (its reason when it is an ACME type). */
void acme_problem_err(struct acme_call *c, const struct ac_err *err);
/* Location: <base>/acme/<kind>/<id> */
void acme_location(struct acme_call *c, const char *kind, const char *id);

/* A random id (16 bytes, base64url). */
int acme_random_id(char out[ACME_ID_LEN + 1]);

/* JSON documents from the store and back. NULL / -1 with the problem already set. */
json_t *acme_load(struct acme_call *c, const char *kind, const char *id, char **account);
int acme_save(struct acme_server *s, const char *kind, const char *id, const char *account,
              const char *lookup, int64_t expires, json_t *doc, int create, struct ac_err *err);

/* The identifier policy: 0, or -1 with err "rejectedIdentifier"/"unsupportedIdentifier".
 * eab is the account's EAB policy document or NULL. */
int acme_identifier_allowed(struct acme_server *s, const json_t *eab, const char *type,
                            const char *value, struct ac_err *err);
/* The EAB document of an account, or NULL (caller decrefs). */
json_t *acme_account_eab(struct acme_server *s, const json_t *account);

/* api_acme_order.c: routes below /acme/ that need an account (c->account set). */
void acme_new_order(struct acme_call *c);
void acme_order(struct acme_call *c, const char *id);
void acme_finalize(struct acme_call *c, const char *id);
void acme_authz(struct acme_call *c, const char *id);
void acme_challenge(struct acme_call *c, const char *authz_id, const char *index);
void acme_certificate(struct acme_call *c, const char *serial);
void acme_account_orders(struct acme_call *c);
/* revokeCert: c->account or only c->key (the certificate's own key). */
void acme_revoke(struct acme_call *c);
/* GET renewalInfo/<certid> (no JWS). */
void acme_renewal_info(struct acme_call *c, const char *certid);

#endif
