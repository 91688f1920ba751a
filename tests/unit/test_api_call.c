/*
 * test_api_call.c - api_call, the in-process door to the HTTP API that fuzz_api uses: the
 * same routing (404, 405), body limit (413), handlers, callers (bearer tokens), query
 * arguments and problem documents as a request over TLS; long-polls answered at once; a
 * streamed export read to its end. Also the regressions fuzz_api found.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/timefmt.h"
#include "enrollment/api_internal.h"
#include "fuzz/api_fixture.h"

#define AGENT_ID "spiffe://" API_FIXTURE_TRUST_DOMAIN "/agent/one"
#define AGENT_DNS "one." API_FIXTURE_TRUST_DOMAIN

static const char *const json_ctype[] = {"Content-Type", "application/json", NULL};

static int
setup(void **state)
{
	struct api_fixture *f = calloc(1, sizeof(*f));
	struct ac_err err;

	ac_err_clear(&err);
	if (f == NULL || api_fixture_open(f, NULL, &err) != 0) {
		print_error("fixture: %s\n", err.msg);
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	api_fixture_close(*state);
	free(*state);
	return 0;
}

/* The "type" of a problem document ends with reason, and its "status" is the answer's. */
static void
assert_problem(const struct api_call_response *r, int status, const char *reason)
{
	json_t *doc = json_loadb(r->body, r->len, 0, NULL);
	const char *type = json_string_value(json_object_get(doc, "type"));

	if (r->status != status)
		fail_msg("want %d %s, got %d %s", status, reason, r->status, r->body);
	assert_string_equal(r->content_type, "application/problem+json");
	assert_non_null(type);
	assert_true(strlen(type) >= strlen(reason));
	assert_string_equal(type + strlen(type) - strlen(reason), reason);
	assert_int_equal(json_integer_value(json_object_get(doc, "status")), status);
	json_decref(doc);
}

/* A certificate through /v1/enroll; its serial into serial. */
static void
enroll(struct api_fixture *f, char serial[64])
{
	const char *dns[] = {AGENT_DNS};
	char *token = api_fixture_bootstrap_token(f, AGENT_ID, dns, 1);
	char *csr = api_fixture_csr(AGENT_ID, dns, 1, NULL);
	json_t *body = json_pack("{s:s, s:s}", "token", token, "csr", csr);
	char *text = json_dumps(body, JSON_COMPACT);
	struct api_call_response r;
	json_t *doc;

	assert_int_equal(
	    api_fixture_call(f, "POST", "/v1/enroll", json_ctype, text, strlen(text), &r), 0);
	if (r.status != 201)
		fail_msg("enroll: %d %s", r.status, r.body);
	doc = json_loadb(r.body, r.len, 0, NULL);
	assert_non_null(json_string_value(json_object_get(doc, "certificate")));
	snprintf(serial, 64, "%s", json_string_value(json_object_get(doc, "serial")));
	assert_non_null(api_call_response_header(&r, "X-Request-Id"));
	json_decref(doc);
	api_call_response_free(&r);
	/* The same token again: the engine's replay refusal, nothing issued. */
	assert_int_equal(
	    api_fixture_call(f, "POST", "/v1/enroll", json_ctype, text, strlen(text), &r), 0);
	assert_true(r.status >= 400 && r.status < 500);
	assert_string_equal(r.content_type, "application/problem+json");
	api_call_response_free(&r);
	free(text);
	json_decref(body);
	free(csr);
	free(token);
}

static void
test_routing_and_limits(void **state)
{
	struct api_fixture *f = *state;
	struct api_call_response r;
	char *big = calloc(1, API_MAX_BODY + 2);

	assert_int_equal(api_fixture_call(f, "GET", "/healthz", NULL, NULL, 0, &r), 0);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "{\"status\":\"ok\"}");
	api_call_response_free(&r);

	assert_int_equal(api_fixture_call(f, "GET", "/v1/nothing?x=1", NULL, NULL, 0, &r), 0);
	assert_problem(&r, 404, "not_found");
	api_call_response_free(&r);

	assert_int_equal(api_fixture_call(f, "PUT", "/v1/enroll", NULL, "{}", 2, &r), 0);
	assert_problem(&r, 405, "method_not_allowed");
	api_call_response_free(&r);

	/* One byte over the limit: 413, the body never reaches the handler. */
	assert_non_null(big);
	memset(big, '{', API_MAX_BODY + 1);
	assert_int_equal(
	    api_fixture_call(f, "POST", "/v1/enroll", json_ctype, big, API_MAX_BODY + 1, &r), 0);
	assert_problem(&r, 413, "body_too_large");
	api_call_response_free(&r);
	free(big);

	assert_int_equal(
	    api_fixture_call(f, "POST", "/v1/enroll", json_ctype, "{\"token\":", 9, &r), 0);
	assert_problem(&r, 400, "malformed_request");
	api_call_response_free(&r);
}

static void
test_enroll_and_callers(void **state)
{
	struct api_fixture *f = *state;
	struct api_call_response r;
	char serial[64], url[256], *admin = api_fixture_admin_token(f, "admin", "ops"),
	                           *auditor = api_fixture_admin_token(f, "auditor", "audit"),
	                           bearer[4096];
	const char *headers[] = {"Authorization", bearer, "Content-Type", "application/json", NULL};
	static const char child[] = "{\"subject\":\"spiffe://fuzz.internal/agent/child\"}";
	json_t *doc;

	enroll(f, serial);

	/* Minting needs a caller: none is 401, an auditor 403, an admin 201. */
	assert_int_equal(
	    api_fixture_call(f, "POST", "/v1/tokens", json_ctype, child, strlen(child), &r), 0);
	assert_problem(&r, 401, "not_allowed");
	api_call_response_free(&r);
	snprintf(bearer, sizeof(bearer), "Bearer %s", auditor);
	assert_int_equal(
	    api_fixture_call(f, "POST", "/v1/tokens", headers, child, strlen(child), &r), 0);
	assert_problem(&r, 403, "not_allowed");
	api_call_response_free(&r);
	snprintf(bearer, sizeof(bearer), "Bearer %s", admin);
	assert_int_equal(
	    api_fixture_call(f, "POST", "/v1/tokens", headers, child, strlen(child), &r), 0);
	assert_int_equal(r.status, 201);
	api_call_response_free(&r);
	snprintf(bearer, sizeof(bearer), "Bearer %s.x", admin);
	assert_int_equal(
	    api_fixture_call(f, "POST", "/v1/tokens", headers, child, strlen(child), &r), 0);
	assert_int_equal(r.status, 401);
	api_call_response_free(&r);

	/* Query arguments, percent-decoded: an inclusion proof for the serial. */
	snprintf(bearer, sizeof(bearer), "Bearer %s", auditor);
	snprintf(url, sizeof(url), "/v1/audit/proof?serial=%%%02x%s", serial[0], serial + 1);
	assert_int_equal(api_fixture_call(f, "GET", url, headers, NULL, 0, &r), 0);
	if (r.status != 200)
		fail_msg("proof: %d %s", r.status, r.body);
	doc = json_loadb(r.body, r.len, 0, NULL);
	assert_true(json_is_array(json_object_get(doc, "proof")));
	json_decref(doc);
	api_call_response_free(&r);
	assert_int_equal(
	    api_fixture_call(f, "GET", "/v1/audit/proof?index=x", headers, NULL, 0, &r), 0);
	assert_int_equal(r.status, 400);
	api_call_response_free(&r);

	/* A streamed export, read to its end: it holds the enrolled certificate. */
	assert_int_equal(
	    api_fixture_call(f, "GET", "/v1/audit/export?format=jsonl", headers, NULL, 0, &r), 0);
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.body, serial));
	api_call_response_free(&r);

	/* A long-poll cannot park an in-process request: answered at once. */
	assert_int_equal(
	    api_fixture_call(f, "GET", "/v1/revocations?since=0&wait=30s", NULL, NULL, 0, &r), 0);
	assert_int_equal(r.status, 200);
	api_call_response_free(&r);
	free(admin);
	free(auditor);
}

static void
test_acme(void **state)
{
	struct api_fixture *f = *state;
	static const char *const wrong_type[] = {"Content-Type", "application/json", NULL};
	struct api_fixture_order order;
	struct api_call_response r;
	char payload[1024], *der = NULL, *pem = NULL;
	const char *dns[] = {AGENT_DNS};

	assert_int_equal(api_fixture_call(f, "GET", "/acme/directory", NULL, NULL, 0, &r), 0);
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.body, "https://" API_FIXTURE_HOST "/acme/new-order"));
	assert_non_null(api_call_response_header(&r, "Replay-Nonce"));
	api_call_response_free(&r);

	/* Regression (fuzz_api): a 415 said "status":400 in its problem document. */
	assert_int_equal(api_fixture_call(f, "POST", "/acme/new-order", wrong_type, "{}", 2, &r),
	                 0);
	assert_problem(&r, 415, "malformed");
	api_call_response_free(&r);

	/* The whole flow through the harness's signer: account, order, challenge, finalize. */
	assert_int_equal(api_fixture_acme_account(f), 0);
	assert_non_null(strstr(f->kid, "/acme/acct/"));
	assert_int_equal(api_fixture_acme_ready_order(f, AGENT_DNS, &order), 0);
	pem = api_fixture_csr(NULL, dns, 1, &der);
	assert_non_null(pem);
	snprintf(payload, sizeof(payload), "{\"csr\":\"%s\"}", der);
	assert_int_equal(api_fixture_acme_post(f, order.finalize, payload, strlen(payload), 1, &r),
	                 0);
	if (r.status != 200)
		fail_msg("finalize: %d %s", r.status, r.body);
	assert_non_null(strstr(r.body, "\"status\":\"valid\""));
	api_call_response_free(&r);
	free(pem);
	free(der);
}

/* Finalizes of one ready order racing each other: exactly one issues (the claim, and the
 * order read after it), the others are orderNotReady; several rounds to give the race a
 * chance. */
#define FINALIZE_RACERS 4
#define FINALIZE_ROUNDS 5

struct finalize_racer {
	struct api_fixture *f;
	const char *path;
	char payload[1024];
	int status;
	int valid;
};

static void *
finalize_race(void *arg)
{
	struct finalize_racer *r = arg;
	struct api_call_response resp;

	if (api_fixture_acme_post(r->f, r->path, r->payload, strlen(r->payload), 1, &resp) != 0) {
		r->status = -1;
		return NULL;
	}
	r->status = resp.status;
	r->valid = resp.body != NULL && strstr(resp.body, "\"status\":\"valid\"") != NULL;
	if (resp.status != 200 && (resp.body == NULL || strstr(resp.body, "orderNotReady") == NULL))
		r->status = -resp.status; /* any refusal but orderNotReady is a failure */
	api_call_response_free(&resp);
	return NULL;
}

static void
test_acme_finalize_race(void **state)
{
	struct api_fixture *f = *state;
	const char *dns[] = {AGENT_DNS};

	assert_int_equal(api_fixture_acme_account(f), 0);
	for (int round = 0; round < FINALIZE_ROUNDS; round++) {
		struct finalize_racer racers[FINALIZE_RACERS];
		pthread_t threads[FINALIZE_RACERS];
		struct api_fixture_order order;
		int issued = 0, refused = 0;

		assert_int_equal(api_fixture_acme_ready_order(f, AGENT_DNS, &order), 0);
		for (int i = 0; i < FINALIZE_RACERS; i++) {
			char *der = NULL, *pem = api_fixture_csr(NULL, dns, 1, &der);

			assert_non_null(pem);
			racers[i].f = f;
			racers[i].path = order.finalize;
			racers[i].status = 0;
			racers[i].valid = 0;
			snprintf(racers[i].payload, sizeof(racers[i].payload), "{\"csr\":\"%s\"}",
			         der);
			free(pem);
			free(der);
		}
		for (int i = 0; i < FINALIZE_RACERS; i++)
			assert_int_equal(
			    pthread_create(&threads[i], NULL, finalize_race, &racers[i]), 0);
		for (int i = 0; i < FINALIZE_RACERS; i++) {
			pthread_join(threads[i], NULL);
			if (racers[i].status == 200 && racers[i].valid)
				issued++;
			else if (racers[i].status == 403)
				refused++;
			else
				fail_msg("round %d: a finalize answered %d", round,
				         racers[i].status);
		}
		assert_int_equal(issued, 1);
		assert_int_equal(refused, FINALIZE_RACERS - 1);
	}
}

/* The issued certificate's response, encoded by hand, is byte for byte what jansson's
 * JSON_COMPACT makes of the same values, for every class of character it escapes; a value
 * with a byte above 0x7f falls back to jansson. */
static void
test_issue_result_encoding(void **state)
{
	static const char *const pems[] = {
	    "-----BEGIN CERTIFICATE-----\nMIIB+zCCAaGgAwIBAgIU/ab=\n-----END CERTIFICATE-----\n",
	    "quote \" backslash \\ slash / tab \t cr \r bs \b ff \f del \x7f ctl \x01\x1f end",
	    "",
	    "caf\xc3\xa9 (UTF-8, the jansson path)",
	};
	char chain[] = "chain\n\"x\"\n";

	(void)state;
	for (size_t i = 0; i < sizeof(pems) / sizeof(pems[0]); i++) {
		struct issue_result res;
		struct api_response resp;
		char nb[32], na[32], ra[32];
		json_t *doc;
		char *want;

		memset(&res, 0, sizeof(res));
		memset(&resp, 0, sizeof(resp));
		res.cert_pem = (char *)pems[i];
		res.cert_pem_len = strlen(pems[i]);
		res.chain_pem = (const unsigned char *)chain;
		res.chain_pem_len = strlen(chain);
		snprintf(res.serial, sizeof(res.serial), "0a1b2c3d4e5f");
		res.not_before = 1796601600;
		res.not_after = 1796688000;
		res.renew_after = 1796659200;
		time_format_rfc3339(res.not_before, nb, sizeof(nb));
		time_format_rfc3339(res.not_after, na, sizeof(na));
		time_format_rfc3339(res.renew_after, ra, sizeof(ra));
		doc = json_pack("{s:s%, s:s%, s:s, s:s, s:s, s:s}", "certificate", res.cert_pem,
		                res.cert_pem_len, "chain", chain, res.chain_pem_len, "serial",
		                res.serial, "not_before", nb, "not_after", na, "renew_after", ra);
		assert_non_null(doc);
		want = json_dumps(doc, JSON_COMPACT);
		api_issue_result_response(&resp, 201, &res);
		assert_int_equal(resp.status, 201);
		assert_string_equal(resp.content_type, "application/json");
		assert_int_equal(resp.len, strlen(want));
		assert_memory_equal(resp.body, want, resp.len);
		free(resp.body);
		free(want);
		json_decref(doc);
	}
}

/* The enrollment body's fast path takes the usual shapes, with what jansson would parse, and
 * declines everything else (which then goes to jansson, errors included). */
static void
test_enroll_body_fast(void **state)
{
	static const char *const declined[] = {
	    "",
	    "{}",
	    "[]",
	    "{\"token\":\"a\"}",
	    "{\"token\":\"a\",\"token\":\"b\"}",
	    "{\"token\":\"a\",\"csr\":\"b\",\"x\":1}",
	    "{\"token\":\"a\\n\",\"csr\":\"b\"}",
	    "{\"token\":\"a\",\"csr\":\"\\u0041\"}",
	    "{\"token\":\"a\",\"csr\":\"b\"}x",
	    "{\"token\":\"a\",\"csr\":\"b\\\"}",
	    "{\"token\":1,\"csr\":\"b\"}",
	    "{\"token\":\"a\",\"csr\":\"\xc3\xa9\"}",
	    "{\"token\":\"a\",\"csr\":\"b\"",
	};
	const char *body =
	    " {\n \"csr\" : \"-----BEGIN\\nX\\/Y\\r\\t\\n\", \"token\":\"h.p.s\"}\r\n";
	struct enroll_body fast;

	(void)state;
	assert_int_equal(enroll_body_fast(body, strlen(body), &fast), 1);
	assert_string_equal(fast.token, "h.p.s");
	assert_int_equal(fast.token_len, 5);
	assert_string_equal(fast.csr, "-----BEGIN\nX/Y\r\t\n");
	assert_int_equal(fast.csr_len, 17);
	free(fast.block);
	for (size_t i = 0; i < sizeof(declined) / sizeof(declined[0]); i++) {
		if (enroll_body_fast(declined[i], strlen(declined[i]), &fast) != 0)
			fail_msg("taken: %s", declined[i]);
		assert_null(fast.block);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_issue_result_encoding),
	    cmocka_unit_test(test_enroll_body_fast),
	    cmocka_unit_test_setup_teardown(test_routing_and_limits, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_enroll_and_callers, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_acme, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_acme_finalize_race, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
