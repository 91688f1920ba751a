/*
 * test_log_chain.c - the issuance log's canonical encoding, hash and export round trip.
 *
 * What an auditor relies on: the canonical bytes are compact, key-sorted JSON holding the
 * present fields only; SHA-256 over them is the entry's hash; and parsing an exported line,
 * dropping "hash" and dumping it again gives back the very bytes that were hashed, whatever
 * hostile strings the entry carried.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "store/log_chain.h"

static const char prev_hash[] = "1111111111111111111111111111111111111111111111111111111111111111";

/* Encode, export, parse the export back and rebuild: must give the same bytes, and the
 * hash of the rebuilt bytes must be the one exported. Returns the canonical text. */
static char *
round_trip(const struct log_entry *e, uint64_t seq, int64_t time_ms)
{
	char hash[LOG_HASH_HEX_LEN + 1], rehash[LOG_HASH_HEX_LEN + 1];
	char *canon = NULL, *line = NULL, *rebuilt = NULL;
	size_t canon_len, line_len, rebuilt_len;
	struct ac_err err;
	json_error_t jerr;
	json_t *parsed;

	ac_err_clear(&err);
	assert_int_equal(log_chain_encode(e, seq, time_ms, prev_hash, &canon, &canon_len, &err), 0);
	assert_int_equal(canon_len, strlen(canon));
	log_chain_hash(canon, canon_len, hash);
	assert_int_equal(log_chain_export_line(canon, canon_len, hash, &line, &line_len, &err), 0);
	assert_int_equal(line_len, strlen(line));
	/* strict parse: the export must be valid JSON, without any leniency */
	parsed = json_loadb(line, line_len, JSON_REJECT_DUPLICATES, &jerr);
	assert_non_null(parsed);
	assert_string_equal(json_string_value(json_object_get(parsed, "hash")), hash);
	assert_int_equal(log_chain_canonical_from_export(parsed, &rebuilt, &rebuilt_len, &err), 0);
	assert_int_equal(rebuilt_len, canon_len);
	assert_memory_equal(rebuilt, canon, canon_len);
	log_chain_hash(rebuilt, rebuilt_len, rehash);
	assert_string_equal(rehash, hash);
	json_decref(parsed);
	free(rebuilt);
	free(line);
	return canon;
}

static void
test_genesis_is_zeros(void **state)
{
	(void)state;
	assert_int_equal(strlen(log_chain_genesis), LOG_HASH_HEX_LEN);
	assert_int_equal(strspn(log_chain_genesis, "0"), LOG_HASH_HEX_LEN);
}

static void
test_hash_known_vector(void **state)
{
	char hash[LOG_HASH_HEX_LEN + 1];

	(void)state;
	log_chain_hash("abc", 3, hash);
	assert_string_equal(hash,
	                    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	log_chain_hash("", 0, hash);
	assert_string_equal(hash,
	                    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

static void
test_encode_full_entry_golden(void **state)
{
	const char *sans[] = {"spiffe://corp.internal/gw-1", "gw-1.corp.internal"};
	struct log_entry e = {
	    .kind = "issued",
	    .actor = "admin:cli",
	    .subject = "spiffe://corp.internal/gw-1",
	    .serial = "0a1b",
	    .sans = sans,
	    .sans_count = 2,
	    .not_before = 1763693600,
	    .not_after = 1763780000,
	    .spki_sha256 = "ab",
	    .parent = "spiffe://corp.internal",
	    .request_id = "r-1",
	    .reason = "ok",
	    .detail = "a sentence",
	};
	char *canon;

	(void)state;
	canon = round_trip(&e, 42, 1763693600123);
	assert_string_equal(
	    canon, "{\"actor\":\"admin:cli\",\"detail\":\"a sentence\",\"kind\":\"issued\","
	           "\"not_after\":1763780000,\"not_before\":1763693600,"
	           "\"parent\":\"spiffe://corp.internal\",\"prev\":\"1111111111111111111111"
	           "111111111111111111111111111111111111111111\",\"reason\":\"ok\","
	           "\"request_id\":\"r-1\",\"sans\":[\"spiffe://corp.internal/gw-1\","
	           "\"gw-1.corp.internal\"],\"seq\":42,\"serial\":\"0a1b\",\"spki_sha256\":\"ab\","
	           "\"subject\":\"spiffe://corp.internal/gw-1\",\"time\":1763693600123}");
	free(canon);
}

static void
test_encode_leaves_out_absent_fields(void **state)
{
	struct log_entry e = {.kind = "token_created"};
	char *canon;

	(void)state;
	canon = round_trip(&e, 1, 5);
	assert_string_equal(canon,
	                    "{\"kind\":\"token_created\",\"prev\":\"111111111111111111111111111111"
	                    "1111111111111111111111111111111111\",\"seq\":1,\"time\":5}");
	free(canon);
}

/* Every hostile string encodes, exports and rebuilds byte for byte. */
static void
test_hostile_strings_round_trip(void **state)
{
	static const char *const hostile[] = {
	    "quote\" backslash\\ slash/",
	    "controls \x01\x02\x1f\t\n\r\b\f and DEL \x7f",
	    "invalid \xff\xfe bytes",
	    "overlong \xc0\xaf slash",
	    "surrogate \xed\xa0\x80 half",
	    "truncated \xe2\x82",
	    "beyond \xf4\x90\x80\x80 U+10FFFF",
	    "fine: \xc3\xa9 \xe2\x82\xac \xf4\x8f\xbf\xbf",
	    "\"},\"kind\":\"forged\",\"x\":{\"",
	    "\xc3",
	    "",
	};
	const char *sans[] = {"\xff", "ok", "\x01\"\\"};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++) {
		struct log_entry e = {
		    .kind = "denied",
		    .subject = hostile[i],
		    .actor = hostile[i],
		    .detail = hostile[i],
		    .sans = sans,
		    .sans_count = 3,
		};
		json_t *parsed;
		char *canon;

		canon = round_trip(&e, i + 1, 1000);
		parsed = json_loads(canon, 0, NULL);
		assert_non_null(parsed);
		/* the forged key stays inside the string */
		assert_string_equal(json_string_value(json_object_get(parsed, "kind")), "denied");
		assert_int_equal(json_array_size(json_object_get(parsed, "sans")), 3);
		json_decref(parsed);
		free(canon);
	}
}

/* Invalid bytes become U+FFFD one for one; valid sequences stay as they are. */
static void
test_invalid_utf8_replaced(void **state)
{
	struct log_entry e = {.kind = "denied",
	                      .subject = "a\xff"
	                                 "b\xc0\xaf"
	                                 "c\xc3\xa9"};
	json_t *parsed;
	char *canon;

	(void)state;
	canon = round_trip(&e, 1, 1);
	parsed = json_loads(canon, 0, NULL);
	assert_non_null(parsed);
	assert_string_equal(json_string_value(json_object_get(parsed, "subject")),
	                    "a\xef\xbf\xbd"
	                    "b\xef\xbf\xbd\xef\xbf\xbd"
	                    "c\xc3\xa9");
	json_decref(parsed);
	free(canon);
}

/* A line whose values hold NUL (only possible in a parsed line, not in an entry) still
 * rebuilds to the same bytes. */
static void
test_nul_bytes_round_trip(void **state)
{
	char hash[LOG_HASH_HEX_LEN + 1], *canon, *line, *rebuilt;
	size_t line_len, rebuilt_len;
	struct ac_err err;
	json_t *obj, *parsed;

	(void)state;
	ac_err_clear(&err);
	obj = json_object();
	json_object_set_new(obj, "kind", json_string("denied"));
	json_object_set_new(obj, "subject", json_stringn("a\0b", 3));
	json_object_set_new(obj, "seq", json_integer(7));
	canon = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS);
	assert_non_null(strstr(canon, "a\\u0000b"));
	log_chain_hash(canon, strlen(canon), hash);
	assert_int_equal(log_chain_export_line(canon, strlen(canon), hash, &line, &line_len, &err),
	                 0);
	parsed = json_loadb(line, line_len, JSON_ALLOW_NUL, NULL);
	assert_non_null(parsed);
	assert_int_equal(log_chain_canonical_from_export(parsed, &rebuilt, &rebuilt_len, &err), 0);
	assert_string_equal(rebuilt, canon);
	json_decref(parsed);
	json_decref(obj);
	free(rebuilt);
	free(line);
	free(canon);
}

static void
test_export_line_shape(void **state)
{
	char *line;
	size_t len;
	struct ac_err err;

	(void)state;
	ac_err_clear(&err);
	assert_int_equal(log_chain_export_line("{\"a\":1}", 7, prev_hash, &line, &len, &err), 0);
	assert_string_equal(line, "{\"a\":1,\"hash\":\"1111111111111111111111111111111111111111"
	                          "111111111111111111111111\"}");
	assert_int_equal(len, strlen(line));
	free(line);
	assert_int_equal(log_chain_export_line("{}", 2, prev_hash, &line, &len, &err), 0);
	assert_string_equal(line, "{\"hash\":\"1111111111111111111111111111111111111111"
	                          "111111111111111111111111\"}");
	free(line);

	assert_int_equal(log_chain_export_line("[1]", 3, prev_hash, &line, &len, &err), -1);
	assert_int_equal(err.code, AC_ERR_INVALID);
	assert_null(line);
	ac_err_clear(&err);
	assert_int_equal(log_chain_export_line("{}", 2, "abc", &line, &len, &err), -1);
	assert_int_equal(err.code, AC_ERR_INVALID);
}

static void
test_canonical_from_export_refuses(void **state)
{
	static const char *const bad[] = {"[1,2]", "\"text\"", "{\"kind\":\"x\"}",
	                                  "{\"kind\":\"x\",\"hash\":7}"};
	struct ac_err err;
	char *out;
	size_t len, i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		json_t *v = json_loads(bad[i], JSON_DECODE_ANY, NULL);

		assert_non_null(v);
		ac_err_clear(&err);
		assert_int_equal(log_chain_canonical_from_export(v, &out, &len, &err), -1);
		assert_int_equal(err.code, AC_ERR_INVALID);
		assert_null(out);
		json_decref(v);
	}
	ac_err_clear(&err);
	assert_int_equal(log_chain_canonical_from_export(NULL, &out, &len, &err), -1);
}

static void
test_encode_refuses_bad_arguments(void **state)
{
	struct log_entry e = {.kind = "issued"}, nokind = {.subject = "x"};
	struct ac_err err;
	char *out;
	size_t len;

	(void)state;
	ac_err_clear(&err);
	assert_int_equal(log_chain_encode(&nokind, 1, 1, prev_hash, &out, &len, &err), -1);
	assert_null(out);
	ac_err_clear(&err);
	assert_int_equal(log_chain_encode(&e, 0, 1, prev_hash, &out, &len, &err), -1);
	ac_err_clear(&err);
	assert_int_equal(log_chain_encode(&e, 1, 1, "ABC", &out, &len, &err), -1);
	ac_err_clear(&err);
	assert_int_equal(log_chain_encode(&e, 1, 1, NULL, &out, &len, &err), -1);
	ac_err_clear(&err);
	assert_int_equal(log_chain_encode(NULL, 1, 1, prev_hash, &out, &len, &err), -1);
}

/* Any edit to a field, the seq or the prev link changes the hash. */
static void
test_tampering_changes_hash(void **state)
{
	struct log_entry e = {.kind = "issued", .subject = "spiffe://corp.internal/a"};
	struct log_entry f = {.kind = "issued", .subject = "spiffe://corp.internal/b"};
	char h1[LOG_HASH_HEX_LEN + 1], h2[LOG_HASH_HEX_LEN + 1];
	struct ac_err err;
	char *c1, *c2;
	size_t l1, l2;

	(void)state;
	ac_err_clear(&err);
	assert_int_equal(log_chain_encode(&e, 1, 1, prev_hash, &c1, &l1, &err), 0);
	log_chain_hash(c1, l1, h1);
	assert_int_equal(log_chain_encode(&f, 1, 1, prev_hash, &c2, &l2, &err), 0);
	log_chain_hash(c2, l2, h2);
	assert_string_not_equal(h1, h2);
	free(c2);
	assert_int_equal(log_chain_encode(&e, 2, 1, prev_hash, &c2, &l2, &err), 0);
	log_chain_hash(c2, l2, h2);
	assert_string_not_equal(h1, h2);
	free(c2);
	assert_int_equal(log_chain_encode(&e, 1, 1, log_chain_genesis, &c2, &l2, &err), 0);
	log_chain_hash(c2, l2, h2);
	assert_string_not_equal(h1, h2);
	free(c2);
	free(c1);
}

/* A random string of 0..47 bytes drawn mostly from what an encoder gets wrong: control
 * bytes, quotes, backslashes, bytes above 0x7f (valid sequences and stray ones), DEL. */
static void
random_hostile(char *out, unsigned *seed)
{
	static const char *const pieces[] = {
	    "\"",
	    "\\",
	    "/",
	    "\x01",
	    "\x1f",
	    "\b",
	    "\f",
	    "\n",
	    "\r",
	    "\t",
	    "\x7f",
	    "a",
	    "Z",
	    "9",
	    "\xc3\xa9",
	    "\xe2\x82\xac",
	    "\xf0\x9f\x94\x91",
	    "\xed\xa0\x80",
	    "\xc0\xaf",
	    "\xff",
	    "\x80",
	    "\xe2\x80\xa8",
	    "\xf4\x90\x80\x80",
	    "\xe2\x82",
	    "u00",
	    "{}",
	    ",:",
	};
	size_t n = (size_t)(rand_r(seed) % 16), len = 0;

	for (size_t i = 0; i < n; i++) {
		const char *p = pieces[(size_t)rand_r(seed) % (sizeof(pieces) / sizeof(pieces[0]))];

		memcpy(out + len, p, strlen(p));
		len += strlen(p);
	}
	out[len] = '\0';
}

/* The committer writes the canonical bytes itself (not through jansson): over thousands of
 * entries with hostile strings in every field and absent fields at random, jansson's own
 * parse-and-dump (what audit verify does) gives back exactly those bytes. */
static void
test_random_entries_match_jansson(void **state)
{
	unsigned seed = 20261207;

	(void)state;
	for (int round = 0; round < 3000; round++) {
		char str[9][16 * 4 + 1], san[3][16 * 4 + 1];
		const char *sans[4];
		struct log_entry e;
		char *canon;

		for (size_t i = 0; i < 9; i++)
			random_hostile(str[i], &seed);
		for (size_t i = 0; i < 3; i++) {
			random_hostile(san[i], &seed);
			sans[i] = san[i];
		}
		sans[3] = NULL;
		memset(&e, 0, sizeof(e));
		e.kind = str[0][0] != '\0' ? str[0] : "issued";
		e.actor = rand_r(&seed) % 4 ? str[1] : NULL;
		e.subject = rand_r(&seed) % 4 ? str[2] : NULL;
		e.serial = rand_r(&seed) % 4 ? str[3] : NULL;
		e.spki_sha256 = rand_r(&seed) % 4 ? str[4] : NULL;
		e.parent = rand_r(&seed) % 4 ? str[5] : NULL;
		e.request_id = rand_r(&seed) % 4 ? str[6] : NULL;
		e.reason = rand_r(&seed) % 4 ? str[7] : NULL;
		e.detail = rand_r(&seed) % 4 ? str[8] : NULL;
		e.not_before = rand_r(&seed) % 4 ? (int64_t)rand_r(&seed) - RAND_MAX / 2 : 0;
		e.not_after = rand_r(&seed) % 4 ? (int64_t)rand_r(&seed) * 1000003 : 0;
		e.sans = rand_r(&seed) % 4 ? sans : NULL;
		e.sans_count = (size_t)rand_r(&seed) % 5;
		canon = round_trip(&e, (uint64_t)rand_r(&seed) + 1,
		                   rand_r(&seed) % 8 ? (int64_t)rand_r(&seed) * 977 : 0);
		free(canon);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_genesis_is_zeros),
	    cmocka_unit_test(test_hash_known_vector),
	    cmocka_unit_test(test_encode_full_entry_golden),
	    cmocka_unit_test(test_encode_leaves_out_absent_fields),
	    cmocka_unit_test(test_hostile_strings_round_trip),
	    cmocka_unit_test(test_invalid_utf8_replaced),
	    cmocka_unit_test(test_nul_bytes_round_trip),
	    cmocka_unit_test(test_export_line_shape),
	    cmocka_unit_test(test_canonical_from_export_refuses),
	    cmocka_unit_test(test_encode_refuses_bad_arguments),
	    cmocka_unit_test(test_tampering_changes_hash),
	    cmocka_unit_test(test_random_entries_match_jansson),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
