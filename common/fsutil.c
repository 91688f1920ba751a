/*
 * fsutil.c - atomic writes, bounded reads and permission checks. See fsutil.h.
 */
#include "common/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int
fsync_parent_dir(const char *path, struct ac_err *err)
{
	char copy[PATH_MAX];
	int fd, rc = 0;

	if (strlen(path) >= sizeof(copy))
		return ac_err_set(err, AC_ERR_IO, "path_too_long", "%s: path too long", path);
	strcpy(copy, path);
	fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return ac_err_set(err, AC_ERR_IO, "io_error", "%s: %s", copy, strerror(errno));
	if (fsync(fd) != 0)
		rc = ac_err_set(err, AC_ERR_IO, "io_error", "fsync %s: %s", copy, strerror(errno));
	close(fd);
	return rc;
}

int
atomic_write_file(const char *path, const void *data, size_t len, mode_t mode, struct ac_err *err)
{
	char tmp[PATH_MAX];
	const char *p = data;
	int fd = -1, rc = -1;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp))
		return ac_err_set(err, AC_ERR_IO, "path_too_long", "%s: path too long", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
	if (fd < 0) {
		ac_err_set(err, errno == ENOSPC ? AC_ERR_UNAVAILABLE : AC_ERR_IO, "io_error",
		           "%s: %s", tmp, strerror(errno));
		goto out;
	}
	/* The umask may have narrowed the mode; never widened. Set it exactly. */
	if (fchmod(fd, mode) != 0) {
		ac_err_set(err, AC_ERR_IO, "io_error", "chmod %s: %s", tmp, strerror(errno));
		goto out;
	}
	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ac_err_set(err, errno == ENOSPC ? AC_ERR_UNAVAILABLE : AC_ERR_IO,
			           "io_error", "write %s: %s", tmp, strerror(errno));
			goto out;
		}
		p += n;
		len -= (size_t)n;
	}
	if (fsync(fd) != 0) {
		ac_err_set(err, AC_ERR_IO, "io_error", "fsync %s: %s", tmp, strerror(errno));
		goto out;
	}
	if (close(fd) != 0) {
		fd = -1;
		ac_err_set(err, AC_ERR_IO, "io_error", "close %s: %s", tmp, strerror(errno));
		goto out;
	}
	fd = -1;
	if (rename(tmp, path) != 0) {
		ac_err_set(err, AC_ERR_IO, "io_error", "rename %s: %s", path, strerror(errno));
		goto out;
	}
	rc = fsync_parent_dir(path, err);
out:
	if (fd >= 0)
		close(fd);
	if (rc != 0)
		unlink(tmp);
	return rc;
}

int
read_file(const char *path, size_t max, char **data, size_t *len, struct ac_err *err)
{
	char *buf = NULL;
	size_t used = 0;
	int fd, rc = -1;

	*data = NULL;
	if (len != NULL)
		*len = 0;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return ac_err_set(err, errno == ENOENT ? AC_ERR_NOTFOUND : AC_ERR_IO,
		                  "file_unreadable", "%s: %s", path, strerror(errno));
	buf = malloc(max + 1);
	if (buf == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto out;
	}
	for (;;) {
		ssize_t n = read(fd, buf + used, max + 1 - used);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ac_err_set(err, AC_ERR_IO, "file_unreadable", "%s: %s", path,
			           strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		used += (size_t)n;
		if (used > max) {
			ac_err_set(err, AC_ERR_INVALID, "file_too_large",
			           "%s: larger than %zu bytes", path, max);
			goto out;
		}
	}
	buf[used] = '\0';
	*data = buf;
	buf = NULL;
	if (len != NULL)
		*len = used;
	rc = 0;
out:
	free(buf);
	close(fd);
	return rc;
}

int
check_private_file(const char *path, struct ac_err *err)
{
	struct stat st;

	if (stat(path, &st) != 0)
		return ac_err_set(err, errno == ENOENT ? AC_ERR_NOTFOUND : AC_ERR_IO,
		                  "file_unreadable", "%s: %s", path, strerror(errno));
	if ((st.st_mode & 077) != 0)
		return ac_err_set(
		    err, AC_ERR_POLICY, "key_file_exposed",
		    "%s is accessible by group or others (mode %04o); run: chmod 600 %s", path,
		    (unsigned)(st.st_mode & 07777), path);
	return 0;
}

int
ensure_dir(const char *path, mode_t mode, struct ac_err *err)
{
	struct stat st;

	if (mkdir(path, mode) == 0)
		return 0;
	if (errno == EEXIST && stat(path, &st) == 0 && S_ISDIR(st.st_mode))
		return 0;
	return ac_err_set(err, AC_ERR_IO, "io_error", "mkdir %s: %s", path, strerror(errno));
}

int
path_exists(const char *path)
{
	return access(path, F_OK) == 0;
}

int
path_join(char *buf, size_t len, const char *dir, const char *name, struct ac_err *err)
{
	if (snprintf(buf, len, "%s/%s", dir, name) >= (int)len)
		return ac_err_set(err, AC_ERR_INVALID, "path_too_long", "%s/%s: path too long", dir,
		                  name);
	return 0;
}
