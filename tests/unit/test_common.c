/*
 * test_common.c - the shared helpers: errors, durations, the config loader (unknown keys,
 * types, bounds, nesting), the JSON log line, atomic writes and permission checks, hex.
 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "common/config.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "common/hex.h"
#include "common/log.h"
#include "common/timefmt.h"
#include "testutil.h"

static void
test_error_first_wins_and_wrap(void **state)
{
	struct ac_err err;

	(void)state;
	ac_err_clear(&err);
	assert_int_equal(ac_err_set(&err, AC_ERR_POLICY, "key_too_weak", "RSA %d bits", 1024), -1);
	ac_err_set(&err, AC_ERR_IO, "io_error", "later error");
	assert_int_equal(err.code, AC_ERR_POLICY);
	assert_string_equal(err.reason, "key_too_weak");
	ac_err_wrap(&err, "csr.pem");
	assert_string_equal(err.msg, "csr.pem: RSA 1024 bits");
	assert_int_equal(ac_errcode_http_status(AC_ERR_POLICY), 403);
	assert_int_equal(ac_errcode_http_status(AC_ERR_UNAVAILABLE), 503);
	assert_int_equal(ac_err_set(NULL, AC_ERR_IO, "x", "no crash"), -1);
}

static void
test_duration_parse(void **state)
{
	static const struct {
		const char *text;
		int ok;
		int64_t seconds;
	} cases[] = {
	    {"90s", 1, 90},     {"10m", 1, 600}, {"24h", 1, 86400}, {"90d", 1, 7776000},
	    {"1h30m", 1, 5400}, {"300", 1, 300}, {"", 0, 0},        {"h", 0, 0},
	    {"10x", 0, 0},      {"1h300", 0, 0}, {"-5m", 0, 0},     {"99999999999999999999d", 0, 0},
	};
	char buf[32];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int64_t s = -1;
		int rc = duration_parse(cases[i].text, &s);

		if (cases[i].ok) {
			assert_int_equal(rc, 0);
			assert_int_equal(s, cases[i].seconds);
		} else {
			assert_int_equal(rc, -1);
		}
	}
	duration_format(86400, buf, sizeof(buf));
	assert_string_equal(buf, "1d");
	duration_format(5400, buf, sizeof(buf));
	assert_string_equal(buf, "90m");
}

struct sample_inner {
	int64_t ttl;
	struct cfg_strlist names;
};

struct sample {
	char *name;
	int64_t count;
	int flag;
	struct sample_inner inner;
};

static const struct cfg_field inner_fields[] = {
    {"ttl", CFG_DURATION, offsetof(struct sample_inner, ttl), 60, 3600, NULL, NULL},
    {"names", CFG_STRING_LIST, offsetof(struct sample_inner, names), 0, 0, NULL, NULL},
    CFG_END,
};

static const struct cfg_field sample_fields[] = {
    {"name", CFG_STRING, offsetof(struct sample, name), 0, 0, NULL, NULL},
    {"count", CFG_INT, offsetof(struct sample, count), 1, 10, NULL, NULL},
    {"flag", CFG_BOOL, offsetof(struct sample, flag), 0, 0, NULL, NULL},
    {"inner", CFG_OBJECT, offsetof(struct sample, inner), 0, 0, inner_fields, NULL},
    CFG_END,
};

/* Apply text to a fresh sample; returns the loader's result, leaves the error in err. */
static int
apply_text(const char *text, struct sample *s, struct ac_err *err)
{
	json_error_t jerr;
	json_t *root = json_loads(text, 0, &jerr);
	int rc;

	assert_non_null(root);
	memset(s, 0, sizeof(*s));
	ac_err_clear(err);
	rc = config_apply_json(root, sample_fields, s, "test.json", err);
	json_decref(root);
	return rc;
}

static void
test_config_loader(void **state)
{
	struct sample s;
	struct ac_err err;

	(void)state;
	assert_int_equal(apply_text("{\"name\":\"x\",\"count\":3,\"flag\":true,"
	                            "\"inner\":{\"ttl\":\"10m\",\"names\":[\"a\",\"b\"]}}",
	                            &s, &err),
	                 0);
	assert_string_equal(s.name, "x");
	assert_int_equal(s.count, 3);
	assert_int_equal(s.flag, 1);
	assert_int_equal(s.inner.ttl, 600);
	assert_int_equal(s.inner.names.count, 2);
	assert_string_equal(s.inner.names.items[1], "b");
	config_free(sample_fields, &s);
	assert_null(s.name);
	assert_int_equal(s.inner.names.count, 0);

	/* Unknown keys are refused with their full path. */
	assert_int_equal(apply_text("{\"inner\":{\"tll\":\"10m\"}}", &s, &err), -1);
	assert_string_equal(err.reason, "config_unknown_key");
	assert_non_null(strstr(err.msg, "\"inner.tll\""));
	assert_non_null(strstr(err.msg, "test.json"));
	config_free(sample_fields, &s);

	/* Wrong types and out-of-range values name the key. */
	assert_int_equal(apply_text("{\"count\":\"3\"}", &s, &err), -1);
	assert_non_null(strstr(err.msg, "\"count\" must be an integer"));
	assert_int_equal(apply_text("{\"count\":11}", &s, &err), -1);
	assert_non_null(strstr(err.msg, "between 1 and 10"));
	assert_int_equal(apply_text("{\"inner\":{\"ttl\":\"2h\"}}", &s, &err), -1);
	assert_non_null(strstr(err.msg, "\"inner.ttl\" must be between 1m and 1h"));
	assert_int_equal(apply_text("{\"inner\":{\"names\":[1]}}", &s, &err), -1);
	assert_non_null(strstr(err.msg, "item 0"));
	config_free(sample_fields, &s);
	assert_int_equal(apply_text("[]", &s, &err), -1);
}

/* config_diff: each differing key once, by its full path; lists of objects item by item. */
struct diff_item {
	char *listen;
	struct cfg_strlist allow;
};

struct diff_sample {
	struct sample base;
	struct cfg_objlist items;
};

static const struct cfg_field diff_item_fields[] = {
    {"listen", CFG_STRING, offsetof(struct diff_item, listen), 0, 0, NULL, NULL},
    {"allow", CFG_STRING_LIST, offsetof(struct diff_item, allow), 0, 0, NULL, NULL},
    CFG_END,
};

static const struct cfg_field diff_fields[] = {
    {"base", CFG_OBJECT, offsetof(struct diff_sample, base), 0, 0, sample_fields, NULL},
    {"items", CFG_OBJECT_LIST, offsetof(struct diff_sample, items), 0, sizeof(struct diff_item),
     diff_item_fields, NULL},
    CFG_END,
};

static void
load_diff_sample(const char *text, struct diff_sample *s)
{
	json_error_t jerr;
	json_t *root = json_loads(text, 0, &jerr);
	struct ac_err err;

	assert_non_null(root);
	memset(s, 0, sizeof(*s));
	ac_err_clear(&err);
	assert_int_equal(config_apply_json(root, diff_fields, s, "test.json", &err), 0);
	json_decref(root);
}

static void
collect_path(void *arg, const char *path)
{
	char *out = arg;

	strcat(out, path);
	strcat(out, ";");
}

static void
test_config_diff(void **state)
{
	const char *a_text =
	    "{\"base\":{\"name\":\"x\",\"count\":3,\"inner\":{\"names\":[\"a\"]}},"
	    "\"items\":[{\"listen\":\"l1\",\"allow\":[\"p\"]},{\"listen\":\"l2\"}]}";
	struct diff_sample a, b;
	char paths[512];

	(void)state;
	load_diff_sample(a_text, &a);
	load_diff_sample(a_text, &b);
	paths[0] = '\0';
	assert_int_equal(config_diff(diff_fields, &a, &b, NULL, collect_path, paths), 0);
	assert_string_equal(paths, "");
	config_free(diff_fields, &b);

	/* A string, a list inside a nested object, a flag, one item's list. */
	load_diff_sample("{\"base\":{\"name\":\"y\",\"count\":3,\"flag\":true,"
	                 "\"inner\":{\"names\":[\"a\",\"b\"]}},"
	                 "\"items\":[{\"listen\":\"l1\",\"allow\":[\"q\"]},{\"listen\":\"l2\"}]}",
	                 &b);
	assert_int_equal(config_diff(diff_fields, &a, &b, NULL, collect_path, paths), 4);
	assert_string_equal(paths, "base.name;base.flag;base.inner.names;items[0].allow;");
	config_free(diff_fields, &b);

	/* A list of objects of another length is one change, at the list itself; an absent
	 * string differs from a present one. */
	load_diff_sample("{\"base\":{\"count\":3,\"inner\":{\"names\":[\"a\"]}},"
	                 "\"items\":[{\"listen\":\"l1\",\"allow\":[\"p\"]}]}",
	                 &b);
	paths[0] = '\0';
	assert_int_equal(config_diff(diff_fields, &a, &b, "top", collect_path, paths), 2);
	assert_string_equal(paths, "top.base.name;top.items;");
	config_free(diff_fields, &b);
	config_free(diff_fields, &a);
}

static void
test_config_file(void **state)
{
	char *dir = test_tmpdir("config"), path[512];
	struct sample s;
	struct ac_err err;

	(void)state;
	snprintf(path, sizeof(path), "%s/c.json", dir);
	ac_err_clear(&err);
	assert_int_equal(atomic_write_file(path, "{\"name\":\"a\",\"name\":\"b\"}", 23, 0644, &err),
	                 0);
	memset(&s, 0, sizeof(s));
	assert_int_equal(config_load_file(path, sample_fields, &s, &err), -1);
	assert_non_null(strstr(err.msg, "duplicate"));
	ac_err_clear(&err);
	assert_int_equal(config_load_file("/nonexistent/c.json", sample_fields, &s, &err), -1);
	assert_string_equal(err.reason, "config_unreadable");
	config_free(sample_fields, &s);
	test_rmdir(dir);
}

static void
test_log_line_is_json(void **state)
{
	char *dir = test_tmpdir("log"), path[512], *data = NULL;
	struct ac_err err;
	json_error_t jerr;
	json_t *line;
	int fd;

	(void)state;
	snprintf(path, sizeof(path), "%s/log", dir);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	ac_log_set_fd(fd);
	log_debug("dropped", "below the level");
	log_warn("weird_input", "name \"gw\x01\" with\nnewline");
	ac_log_set_fd(STDERR_FILENO);
	close(fd);
	ac_err_clear(&err);
	assert_int_equal(read_file(path, 4096, &data, NULL, &err), 0);
	assert_null(strstr(data, "dropped"));
	line = json_loads(data, 0, &jerr);
	assert_non_null(line);
	assert_string_equal(json_string_value(json_object_get(line, "level")), "warn");
	assert_string_equal(json_string_value(json_object_get(line, "event")), "weird_input");
	assert_string_equal(json_string_value(json_object_get(line, "msg")),
	                    "name \"gw\x01\" with\nnewline");
	json_decref(line);
	free(data);
	test_rmdir(dir);
}

static void
test_atomic_write_and_private_files(void **state)
{
	char *dir = test_tmpdir("fs"), path[512], *data = NULL;
	struct ac_err err;
	struct stat st;
	size_t len;

	(void)state;
	snprintf(path, sizeof(path), "%s/secret", dir);
	ac_err_clear(&err);
	assert_int_equal(atomic_write_file(path, "one", 3, 0600, &err), 0);
	assert_int_equal(atomic_write_file(path, "two!", 4, 0600, &err), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(read_file(path, 100, &data, &len, &err), 0);
	assert_int_equal(len, 4);
	assert_string_equal(data, "two!");
	free(data);
	assert_int_equal(check_private_file(path, &err), 0);
	chmod(path, 0640);
	assert_int_equal(check_private_file(path, &err), -1);
	assert_string_equal(err.reason, "key_file_exposed");
	assert_non_null(strstr(err.msg, "chmod 600"));
	ac_err_clear(&err);
	assert_int_equal(read_file(path, 2, &data, &len, &err), -1);
	assert_string_equal(err.reason, "file_too_large");
	test_rmdir(dir);
}

static void
test_hex_and_fingerprints(void **state)
{
	unsigned char bytes[3] = {0x00, 0xab, 0xff}, back[3];
	char hex[7], fp[65];

	(void)state;
	hex_encode(bytes, 3, hex);
	assert_string_equal(hex, "00abff");
	assert_int_equal(hex_decode("00ABff", back, 3), 0);
	assert_memory_equal(bytes, back, 3);
	assert_int_equal(hex_decode("00ag00", back, 3), -1);
	assert_int_equal(fingerprint_normalize("AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:"
	                                       "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89",
	                                       fp),
	                 0);
	assert_string_equal(fp, "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789");
	assert_int_equal(fingerprint_normalize("abcd", fp), -1);
}

static void
test_time_parse(void **state)
{
	int64_t t;
	char buf[32];

	(void)state;
	assert_int_equal(time_parse("2026-11-22T01:40:00Z", 0, &t), 0);
	assert_int_equal(t, 1795311600);
	assert_int_equal(time_parse("2026-11-22", 0, &t), 0);
	assert_int_equal(t, 1795305600);
	assert_int_equal(time_parse("1795311600", 0, &t), 0);
	assert_int_equal(t, 1795311600);
	assert_int_equal(time_parse("24h", 1795311600, &t), 0);
	assert_int_equal(t, 1795311600 - 86400);
	assert_int_equal(time_parse("yesterday", 0, &t), -1);
	time_format_rfc3339(1795311600, buf, sizeof(buf));
	assert_string_equal(buf, "2026-11-22T01:40:00Z");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_error_first_wins_and_wrap),
	    cmocka_unit_test(test_duration_parse),
	    cmocka_unit_test(test_config_loader),
	    cmocka_unit_test(test_config_file),
	    cmocka_unit_test(test_config_diff),
	    cmocka_unit_test(test_log_line_is_json),
	    cmocka_unit_test(test_atomic_write_and_private_files),
	    cmocka_unit_test(test_hex_and_fingerprints),
	    cmocka_unit_test(test_time_parse),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
