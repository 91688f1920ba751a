/*
 * fsutil.h - the few file operations agentca needs, done safely once.
 *
 * atomic_write_file() is the only way agentca writes a file that others read: a temporary
 * file in the same directory, created with the final mode, written, fsync'd, renamed over
 * the target, and the directory fsync'd. A crash leaves either the old file or the new one,
 * never a mix. Private files (keys, passphrases) are created 0600 from the start: there is
 * no window in which they are readable by others.
 */
#ifndef AGENTCA_COMMON_FSUTIL_H
#define AGENTCA_COMMON_FSUTIL_H

#include <stddef.h>
#include <sys/types.h>

#include "common/error.h"

/* Write data atomically with the given mode (0600 for secrets, 0644 otherwise). */
int atomic_write_file(const char *path, const void *data, size_t len, mode_t mode,
                      struct ac_err *err);

/* Read a whole file of at most max bytes into a NUL-terminated heap buffer. */
int read_file(const char *path, size_t max, char **data, size_t *len, struct ac_err *err);

/* Refuse a file that group or others may read or write ("key.pem is readable by others
 * (mode 0644); run chmod 600 key.pem"). */
int check_private_file(const char *path, struct ac_err *err);

/* mkdir with the given mode unless the directory exists. */
int ensure_dir(const char *path, mode_t mode, struct ac_err *err);

/* 1 if path exists, else 0. */
int path_exists(const char *path);

/* Join dir and name into buf; -1 (with err) when it does not fit. */
int path_join(char *buf, size_t len, const char *dir, const char *name, struct ac_err *err);

#endif
