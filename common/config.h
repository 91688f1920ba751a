/*
 * config.h - a table-driven JSON configuration loader (jansson).
 *
 * Each layer owns the struct its settings land in; the table that maps JSON keys to struct
 * members is an array of struct cfg_field, so the schema documents itself and tests (and
 * the README's configuration reference) can walk it. The loader:
 *
 *   - refuses any key the table does not name, with the key's full path in the message
 *     ("config.json: unknown key \"policy.max_tll\""), because a silently ignored typo in
 *     a security setting is worse than a refusal to start;
 *   - refuses a value of the wrong type, naming the key and the expected type;
 *   - leaves members whose keys are absent untouched, so callers set defaults first.
 *
 * Strings and string lists are heap copies owned by the target; config_free() releases
 * everything the table describes.
 */
#ifndef AGENTCA_COMMON_CONFIG_H
#define AGENTCA_COMMON_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common/error.h"

enum cfg_type {
	CFG_STRING,      /* char *, heap copy */
	CFG_INT,         /* int64_t, bounded by min/max */
	CFG_BOOL,        /* int, 0 or 1 */
	CFG_DURATION,    /* int64_t seconds, from "90s", "10m", "24h", "90d", "1h30m" or a number */
	CFG_STRING_LIST, /* struct cfg_strlist */
	CFG_OBJECT,      /* nested table; its offsets are relative to the member at offset */
	CFG_OBJECT_LIST, /* struct cfg_objlist: an array of objects, each laid out by children;
	                  * max is the size of one item (sizeof its struct), min unused */
};

struct cfg_strlist {
	char **items;
	size_t count;
};

/* An array of objects: count items of the field's item size, each zeroed, then filled. */
struct cfg_objlist {
	void *items;
	size_t count;
};

struct cfg_field {
	const char *key;
	enum cfg_type type;
	size_t offset;                    /* offsetof(target struct, member) */
	int64_t min, max;                 /* for CFG_INT and CFG_DURATION; both 0: unbounded */
	const struct cfg_field *children; /* for CFG_OBJECT; NULL-key terminated */
	const char *help;                 /* one line for --help and the README */
};

#define CFG_END                                                                                    \
	{                                                                                          \
		NULL, 0, 0, 0, 0, NULL, NULL                                                       \
	}

/* Apply a JSON object to target. `where` names the source for messages (a file name). */
int config_apply_json(const json_t *obj, const struct cfg_field *fields, void *target,
                      const char *where, struct ac_err *err);

/* The same, with key paths in messages prefixed by `prefix` ("policy"). */
int config_apply_json_at(const json_t *obj, const struct cfg_field *fields, void *target,
                         const char *where, const char *prefix, struct ac_err *err);

/* Read a JSON file (at most 1 MiB) and apply it. */
int config_load_file(const char *path, const struct cfg_field *fields, void *target,
                     struct ac_err *err);

/* Free every string and list the table describes, and zero those members. */
void config_free(const struct cfg_field *fields, void *target);

/* Walk the table over two targets laid out by it and call changed(arg, path) for each key
 * whose value differs ("listen", "policy.max_ttl", "proxy.listeners[0].allow"). A list of
 * objects of different lengths is one change at the list's own path; otherwise its items
 * are compared key by key. Returns the number of keys that differ. */
size_t config_diff(const struct cfg_field *fields, const void *a, const void *b, const char *prefix,
                   void (*changed)(void *arg, const char *path), void *arg);

/* For config_diff after a reload: collects the changed keys that the running process cannot
 * apply (those live() says no to) as one comma-separated line for the log. */
struct cfg_restart_list {
	int (*live)(const char *path);
	char text[512];
	int truncated; /* text ends with "..." */
};
void cfg_restart_list_add(void *list, const char *path);

/* Do two lists hold the same strings in the same order? */
int cfg_strlist_equal(const struct cfg_strlist *a, const struct cfg_strlist *b);

/* Replace a list's contents with a copy of items[0..count). */
int cfg_strlist_set(struct cfg_strlist *list, const char *const *items, size_t count,
                    struct ac_err *err);
/* Append one copy. */
int cfg_strlist_add(struct cfg_strlist *list, const char *item, struct ac_err *err);
void cfg_strlist_free(struct cfg_strlist *list);
/* Free every item of a CFG_OBJECT_LIST member (f is its field) and the array. */
void cfg_objlist_free(const struct cfg_field *f, struct cfg_objlist *list);

/* Parse a duration: "90s", "10m", "24h", "90d", "1h30m", or plain seconds "300".
 * Returns 0 and the number of seconds, or -1 on anything else (including overflow). */
int duration_parse(const char *text, int64_t *seconds);

/* Format seconds as the shortest of "90d", "24h", "10m" or "90s" that is exact. */
void duration_format(int64_t seconds, char *buf, size_t len);

#endif
