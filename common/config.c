/*
 * config.c - the table-driven JSON configuration loader. See config.h.
 */
#include "common/config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONFIG_FILE_MAX (1024 * 1024)

static const char *const cfg_type_names[] = {
    [CFG_STRING] = "a string",
    [CFG_INT] = "an integer",
    [CFG_BOOL] = "true or false",
    [CFG_DURATION] = "a duration such as \"10m\" or \"24h\"",
    [CFG_STRING_LIST] = "a list of strings",
    [CFG_OBJECT] = "an object",
    [CFG_OBJECT_LIST] = "a list of objects",
};

int
duration_parse(const char *text, int64_t *seconds)
{
	int64_t total = 0;
	const char *p = text;

	if (text == NULL || *text == '\0')
		return -1;
	while (*p != '\0') {
		int64_t value = 0, unit;
		int digits = 0;

		while (*p >= '0' && *p <= '9') {
			if (value > (INT64_MAX - 9) / 10)
				return -1;
			value = value * 10 + (*p - '0');
			p++;
			digits++;
		}
		if (digits == 0)
			return -1;
		switch (*p) {
		case 's':
			unit = 1;
			p++;
			break;
		case 'm':
			unit = 60;
			p++;
			break;
		case 'h':
			unit = 3600;
			p++;
			break;
		case 'd':
			unit = 86400;
			p++;
			break;
		case '\0':
			/* A bare number is seconds, but only on its own ("300", not "1h300"). */
			if (p - digits != text)
				return -1;
			unit = 1;
			break;
		default:
			return -1;
		}
		if (value > (INT64_MAX - total) / unit)
			return -1;
		total += value * unit;
	}
	*seconds = total;
	return 0;
}

void
duration_format(int64_t seconds, char *buf, size_t len)
{
	if (seconds != 0 && seconds % 86400 == 0)
		snprintf(buf, len, "%" PRId64 "d", seconds / 86400);
	else if (seconds != 0 && seconds % 3600 == 0)
		snprintf(buf, len, "%" PRId64 "h", seconds / 3600);
	else if (seconds != 0 && seconds % 60 == 0)
		snprintf(buf, len, "%" PRId64 "m", seconds / 60);
	else
		snprintf(buf, len, "%" PRId64 "s", seconds);
}

void
cfg_strlist_free(struct cfg_strlist *list)
{
	for (size_t i = 0; i < list->count; i++)
		free(list->items[i]);
	free(list->items);
	list->items = NULL;
	list->count = 0;
}

int
cfg_strlist_add(struct cfg_strlist *list, const char *item, struct ac_err *err)
{
	char **grown, *copy;

	copy = strdup(item);
	if (copy == NULL)
		return ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
	grown = realloc(list->items, (list->count + 1) * sizeof(*grown));
	if (grown == NULL) {
		free(copy);
		return ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
	}
	grown[list->count++] = copy;
	list->items = grown;
	return 0;
}

int
cfg_strlist_set(struct cfg_strlist *list, const char *const *items, size_t count,
                struct ac_err *err)
{
	struct cfg_strlist fresh = {NULL, 0};

	for (size_t i = 0; i < count; i++) {
		if (cfg_strlist_add(&fresh, items[i], err) != 0) {
			cfg_strlist_free(&fresh);
			return -1;
		}
	}
	cfg_strlist_free(list);
	*list = fresh;
	return 0;
}
static const struct cfg_field *
find_field(const struct cfg_field *fields, const char *key)
{
	for (; fields->key != NULL; fields++)
		if (strcmp(fields->key, key) == 0)
			return fields;
	return NULL;
}

static int
out_of_range(const struct cfg_field *f, int64_t v)
{
	return (f->min != 0 || f->max != 0) && (v < f->min || v > f->max);
}

static int
apply_value(const struct cfg_field *f, const json_t *value, void *target, const char *where,
            const char *path, struct ac_err *err)
{
	char *member = (char *)target + f->offset;
	int64_t n;

	switch (f->type) {
	case CFG_STRING: {
		char **slot = (char **)(void *)member, *copy;

		if (!json_is_string(value))
			break;
		if (memchr(json_string_value(value), '\0', json_string_length(value)) != NULL)
			return ac_err_set(err, AC_ERR_INVALID, "config_invalid",
			                  "%s: \"%s\" contains a NUL byte", where, path);
		copy = strdup(json_string_value(value));
		if (copy == NULL)
			return ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		free(*slot);
		*slot = copy;
		return 0;
	}
	case CFG_INT:
		if (!json_is_integer(value))
			break;
		n = (int64_t)json_integer_value(value);
		if (out_of_range(f, n))
			return ac_err_set(err, AC_ERR_INVALID, "config_invalid",
			                  "%s: \"%s\" must be between %" PRId64 " and %" PRId64,
			                  where, path, f->min, f->max);
		memcpy(member, &n, sizeof(n));
		return 0;
	case CFG_BOOL: {
		int b;

		if (!json_is_boolean(value))
			break;
		b = json_is_true(value);
		memcpy(member, &b, sizeof(b));
		return 0;
	}
	case CFG_DURATION:
		if (json_is_integer(value)) {
			n = (int64_t)json_integer_value(value);
		} else if (!json_is_string(value) ||
		           duration_parse(json_string_value(value), &n) != 0) {
			break;
		}
		if (n < 0 || out_of_range(f, n)) {
			char lo[32], hi[32];

			duration_format(f->min, lo, sizeof(lo));
			duration_format(f->max, hi, sizeof(hi));
			return ac_err_set(err, AC_ERR_INVALID, "config_invalid",
			                  "%s: \"%s\" must be between %s and %s", where, path, lo,
			                  hi);
		}
		memcpy(member, &n, sizeof(n));
		return 0;
	case CFG_STRING_LIST: {
		struct cfg_strlist *list = (struct cfg_strlist *)(void *)member;
		struct cfg_strlist fresh = {NULL, 0};
		size_t i;
		json_t *item;

		if (!json_is_array(value))
			break;
		json_array_foreach(value, i, item)
		{
			if (!json_is_string(item)) {
				cfg_strlist_free(&fresh);
				return ac_err_set(err, AC_ERR_INVALID, "config_invalid",
				                  "%s: \"%s\" item %zu must be a string", where,
				                  path, i);
			}
			if (cfg_strlist_add(&fresh, json_string_value(item), err) != 0) {
				cfg_strlist_free(&fresh);
				return -1;
			}
		}
		cfg_strlist_free(list);
		*list = fresh;
		return 0;
	}
	case CFG_OBJECT:
		if (!json_is_object(value))
			break;
		return config_apply_json_at(value, f->children, member, where, path, err);
	case CFG_OBJECT_LIST: {
		struct cfg_objlist *list = (struct cfg_objlist *)(void *)member;
		struct cfg_objlist fresh = {NULL, 0};
		size_t item_size = (size_t)f->max, i;
		json_t *item;

		if (!json_is_array(value) || item_size == 0)
			break;
		if (json_array_size(value) > 0) {
			fresh.items = calloc(json_array_size(value), item_size);
			if (fresh.items == NULL)
				return ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory",
				                  "out of memory");
		}
		json_array_foreach(value, i, item)
		{
			char at[300];

			snprintf(at, sizeof(at), "%s[%zu]", path, i);
			fresh.count = i + 1;
			if (!json_is_object(item)) {
				ac_err_set(err, AC_ERR_INVALID, "config_invalid",
				           "%s: \"%s\" must be an object", where, at);
				cfg_objlist_free(f, &fresh);
				return -1;
			}
			if (config_apply_json_at(item, f->children,
			                         (char *)fresh.items + i * item_size, where, at,
			                         err) != 0) {
				cfg_objlist_free(f, &fresh);
				return -1;
			}
		}
		cfg_objlist_free(f, list);
		*list = fresh;
		return 0;
	}
	}
	return ac_err_set(err, AC_ERR_INVALID, "config_invalid", "%s: \"%s\" must be %s", where,
	                  path, cfg_type_names[f->type]);
}

int
config_apply_json_at(const json_t *obj, const struct cfg_field *fields, void *target,
                     const char *where, const char *prefix, struct ac_err *err)
{
	const char *key;
	json_t *value;

	if (!json_is_object(obj))
		return ac_err_set(err, AC_ERR_INVALID, "config_invalid",
		                  "%s: the configuration must be a JSON object", where);
	json_object_foreach((json_t *)obj, key, value)
	{
		const struct cfg_field *f = find_field(fields, key);
		char path[256];

		snprintf(path, sizeof(path), "%s%s%s", prefix, prefix[0] != '\0' ? "." : "", key);
		if (f == NULL)
			return ac_err_set(err, AC_ERR_INVALID, "config_unknown_key",
			                  "%s: unknown key \"%s\"", where, path);
		if (apply_value(f, value, target, where, path, err) != 0)
			return -1;
	}
	return 0;
}

int
config_apply_json(const json_t *obj, const struct cfg_field *fields, void *target,
                  const char *where, struct ac_err *err)
{
	return config_apply_json_at(obj, fields, target, where, "", err);
}

int
config_load_file(const char *path, const struct cfg_field *fields, void *target, struct ac_err *err)
{
	json_error_t jerr;
	json_t *root;
	FILE *fp;
	int rc;

	fp = fopen(path, "r");
	if (fp == NULL)
		return ac_err_set(err, AC_ERR_IO, "config_unreadable", "%s: %s", path,
		                  strerror(errno));
	root = json_loadf(fp, JSON_REJECT_DUPLICATES, &jerr);
	fclose(fp);
	if (root == NULL)
		return ac_err_set(err, AC_ERR_INVALID, "config_invalid", "%s:%d:%d: %s", path,
		                  jerr.line, jerr.column, jerr.text);
	rc = config_apply_json(root, fields, target, path, err);
	json_decref(root);
	return rc;
}

void
config_free(const struct cfg_field *fields, void *target)
{
	for (; fields->key != NULL; fields++) {
		char *member = (char *)target + fields->offset;

		if (fields->type == CFG_STRING) {
			char **slot = (char **)(void *)member;
			free(*slot);
			*slot = NULL;
		} else if (fields->type == CFG_STRING_LIST) {
			cfg_strlist_free((struct cfg_strlist *)(void *)member);
		} else if (fields->type == CFG_OBJECT) {
			config_free(fields->children, member);
		} else if (fields->type == CFG_OBJECT_LIST) {
			cfg_objlist_free(fields, (struct cfg_objlist *)(void *)member);
		}
	}
}

static int
strings_equal(const char *a, const char *b)
{
	return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

int
cfg_strlist_equal(const struct cfg_strlist *a, const struct cfg_strlist *b)
{
	if (a->count != b->count)
		return 0;
	for (size_t i = 0; i < a->count; i++)
		if (!strings_equal(a->items[i], b->items[i]))
			return 0;
	return 1;
}

size_t
config_diff(const struct cfg_field *fields, const void *a, const void *b, const char *prefix,
            void (*changed)(void *arg, const char *path), void *arg)
{
	size_t n = 0;

	for (; fields->key != NULL; fields++) {
		const char *ma = (const char *)a + fields->offset,
		           *mb = (const char *)b + fields->offset;
		char path[256];
		int same = 1;

		snprintf(path, sizeof(path), "%s%s%s", prefix != NULL ? prefix : "",
		         prefix != NULL && prefix[0] != '\0' ? "." : "", fields->key);
		switch (fields->type) {
		case CFG_STRING:
			same = strings_equal(*(char *const *)(const void *)ma,
			                     *(char *const *)(const void *)mb);
			break;
		case CFG_INT:
		case CFG_DURATION:
			same = *(const int64_t *)(const void *)ma ==
			       *(const int64_t *)(const void *)mb;
			break;
		case CFG_BOOL:
			same = *(const int *)(const void *)ma == *(const int *)(const void *)mb;
			break;
		case CFG_STRING_LIST:
			same = cfg_strlist_equal((const struct cfg_strlist *)(const void *)ma,
			                         (const struct cfg_strlist *)(const void *)mb);
			break;
		case CFG_OBJECT:
			n += config_diff(fields->children, ma, mb, path, changed, arg);
			break;
		case CFG_OBJECT_LIST: {
			const struct cfg_objlist *la = (const void *)ma, *lb = (const void *)mb;

			if (la->count != lb->count) {
				same = 0;
				break;
			}
			for (size_t i = 0; i < la->count; i++) {
				char item[300];

				snprintf(item, sizeof(item), "%s[%zu]", path, i);
				n += config_diff(fields->children,
				                 (const char *)la->items + i * (size_t)fields->max,
				                 (const char *)lb->items + i * (size_t)fields->max,
				                 item, changed, arg);
			}
			break;
		}
		}
		if (!same) {
			n++;
			if (changed != NULL)
				changed(arg, path);
		}
	}
	return n;
}

void
cfg_restart_list_add(void *list, const char *path)
{
	struct cfg_restart_list *rl = list;
	size_t used = strlen(rl->text);

	if (rl->live != NULL && rl->live(path))
		return;
	if (used + strlen(path) + 3 < sizeof(rl->text)) {
		snprintf(rl->text + used, sizeof(rl->text) - used, "%s%s", used > 0 ? ", " : "",
		         path);
	} else if (!rl->truncated && used + 6 < sizeof(rl->text)) {
		snprintf(rl->text + used, sizeof(rl->text) - used, ", ...");
		rl->truncated = 1;
	}
}

void
cfg_objlist_free(const struct cfg_field *f, struct cfg_objlist *list)
{
	for (size_t i = 0; i < list->count; i++)
		config_free(f->children, (char *)list->items + i * (size_t)f->max);
	free(list->items);
	list->items = NULL;
	list->count = 0;
}
