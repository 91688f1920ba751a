/*
 * testutil.c - scratch directories for unit tests.
 */
#include "testutil.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

char *
test_tmpdir(const char *tag)
{
	const char *base = getenv("TMPDIR");
	char *path;

	if (base == NULL || *base == '\0')
		base = "/tmp";
	if (asprintf(&path, "%s/agentca-%s-XXXXXX", base, tag) < 0)
		abort();
	if (mkdtemp(path) == NULL)
		abort();
	return path;
}

static int
remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

void
test_rmdir(char *path)
{
	if (path == NULL)
		return;
	nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(path);
}
