/*
 * api_fixture.h - a whole CA and its HTTP API in one process, for the fuzz_api harness and
 * the unit test of api_call: a temporary CA (ca_init), its store, token keys, audit key, the
 * API with the ACME server on (a fake validation authority the caller settles), and an ACME
 * client that signs with one account key. Requests go through api_call: no sockets.
 */
#ifndef AGENTCA_FUZZ_API_FIXTURE_H
#define AGENTCA_FUZZ_API_FIXTURE_H

#include <stddef.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "ca/authority.h"
#include "ca/issue.h"
#include "ca/policy.h"
#include "enrollment/api.h"
#include "enrollment/token.h"

#define API_FIXTURE_TRUST_DOMAIN "fuzz.internal"
#define API_FIXTURE_HOST "ca.fuzz.internal"
#define API_FIXTURE_MAX_PENDING 64

/* A challenge the fake validation authority holds until api_fixture_settle(). */
struct api_fixture_pending {
	void (*done)(void *arg, const struct acme_validation_result *result);
	void *arg;
};

struct api_fixture {
	char *dir; /* the CA's directory (heap); removed by api_fixture_close */
	struct ca_authority *authority;
	struct ca_policy policy;
	struct store *store;
	struct issuer issuer;
	struct token_signer *bootstrap_minter, *admin_minter;
	struct token_verifier *bootstrap, *admin;
	EVP_PKEY *audit_key;
	struct acme_options acme;
	struct api *api;
	struct api_fixture_pending pending[API_FIXTURE_MAX_PENDING];
	int pending_count;
	/* The ACME client: one account key; kid once new-account succeeded. */
	EVP_PKEY *account_key;
	const char *account_alg;
	json_t *account_jwk;
	char kid[512];
};

/* Make the CA under a fresh directory in base (NULL: /dev/shm when it exists, else /tmp)
 * and start its API. -1 with err. */
int api_fixture_open(struct api_fixture *f, const char *base, struct ac_err *err);

/* Answer every held challenge (ok or not), stop the API and remove the directory. */
void api_fixture_close(struct api_fixture *f);

/* A fresh bootstrap token for subject (a SPIFFE ID) with optional DNS names, or an admin
 * token with role "admin" or "auditor" (subject: who). Heap (free()), or NULL. */
char *api_fixture_bootstrap_token(struct api_fixture *f, const char *subject,
                                  const char *const *dns, size_t dns_count);
char *api_fixture_admin_token(struct api_fixture *f, const char *role, const char *who);

/* One request through api_call. headers: NULL-terminated name, value pairs (or NULL). */
int api_fixture_call(struct api_fixture *f, const char *method, const char *url,
                     const char *const *headers, const char *body, size_t len,
                     struct api_call_response *out);

/* Answer each challenge the fake validation authority holds: valid when ok, else invalid. */
void api_fixture_settle(struct api_fixture *f, int ok);

/* The ACME client. A POST to url (a path, "/acme/...") signed with the account key, with a
 * fresh nonce; as the account (kid) when use_kid and an account exists, else with the jwk.
 * payload NULL: POST-as-GET. */
int api_fixture_acme_post(struct api_fixture *f, const char *path, const char *payload,
                          size_t payload_len, int use_kid, struct api_call_response *out);

/* new-account (terms agreed) for the fixture's key: sets f->kid. -1 when refused. */
int api_fixture_acme_account(struct api_fixture *f);

/* An order for name, its challenge answered and settled valid: the order's path
 * ("/acme/order/<id>") and its finalize path, and the authz and challenge paths. */
struct api_fixture_order {
	char order[256], finalize[256], authz[256], challenge[256];
};
int api_fixture_acme_ready_order(struct api_fixture *f, const char *name,
                                 struct api_fixture_order *out);

/* A CSR (PEM, heap) for a fresh P-256 key with CN and the DNS names / SPIFFE URI given; der
 * gets the DER as base64url (heap) when not NULL. */
char *api_fixture_csr(const char *spiffe_id, const char *const *dns, size_t dns_count,
                      char **der_b64url);

#endif
