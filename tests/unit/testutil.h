/*
 * testutil.h - helpers shared by the unit tests: scratch directories and certificate
 * extensions.
 */
#ifndef AGENTCA_TESTS_TESTUTIL_H
#define AGENTCA_TESTS_TESTUTIL_H

#include <stddef.h>

#include <openssl/x509.h>

/* Make a fresh empty directory under $TMPDIR (or /tmp); returns a heap path. */
char *test_tmpdir(const char *tag);

/* rm -rf the directory (and free the path). */
void test_rmdir(char *path);

/* Add one extension to cert from its openssl config text (issuer: for the key identifiers);
 * fails the test if the text does not parse. */
void test_add_ext(X509 *cert, X509 *issuer, int nid, const char *text);

#endif
