/*
 * fuzz_token.c - the bootstrap/admin token checker on any bytes: every token a client sends
 * reaches token_verify() before anything else looks at it. It must refuse or accept, never
 * crash, hang or leak. Keys are made once, in a temporary directory.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "enrollment/token.h"

static struct token_verifier *verifier;

static void
setup(void)
{
	char dir[] = "/tmp/agentca-fuzz-token-XXXXXX";
	struct ac_err err;

	ac_err_clear(&err);
	if (mkdtemp(dir) == NULL || token_keys_ensure(dir, "fuzz-passphrase", &err) != 0) {
		fprintf(stderr, "fuzz_token: setup: %s\n", err.msg);
		abort();
	}
	verifier = token_verifier_load(
	    dir, TOKEN_BOOTSTRAP,
	    "0000000000000000000000000000000000000000000000000000000000000000", &err);
	if (verifier == NULL) {
		fprintf(stderr, "fuzz_token: setup: %s\n", err.msg);
		abort();
	}
	/* The verifier holds the decoded key: the files can go. */
	{
		static const char *const files[] = {"token.key", "token.pub", "admin.key",
		                                    "admin.pub"};
		char path[sizeof(dir) + 16];

		for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
			snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
			unlink(path);
		}
		rmdir(dir);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct token_grant grant;
	struct ac_err err;

	if (verifier == NULL)
		setup();
	memset(&grant, 0, sizeof(grant));
	ac_err_clear(&err);
	token_verify(verifier, (const char *)data, size, 1795311600, &grant, &err);
	token_grant_free(&grant);
	return 0;
}
