/*
 * testutil.h - helpers shared by the unit tests: scratch directories and a test CA.
 */
#ifndef AGENTCA_TESTS_TESTUTIL_H
#define AGENTCA_TESTS_TESTUTIL_H

#include <stddef.h>

/* Make a fresh empty directory under $TMPDIR (or /tmp); returns a heap path. */
char *test_tmpdir(const char *tag);

/* rm -rf the directory (and free the path). */
void test_rmdir(char *path);

#endif
