/*
 * cmd_enroll.c - `agentca enroll`: an agent's first certificate, from a bootstrap token.
 *
 * The key is made here and never leaves the machine: only its CSR is sent. The CA is
 * trusted only once its root matches the fingerprint given on the command line.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "ca/keys.h"
#include "cli/cli.h"
#include "enrollment/client.h"

static const char enroll_usage[] =
    "usage: agentca enroll --ca URL --token T --fingerprint SHA256 --out DIR\n"
    "                      [--key-type p256|p384|ed25519|rsa3072]\n"
    "\n"
    "Enroll with a one-time bootstrap token: make a key here, send its CSR, and write\n"
    "DIR/key.pem (0600), cert.pem, chain.pem and bundle.pem. The CA is trusted only if its\n"
    "root's SHA-256 fingerprint matches (hex; colons and case are ignored).\n"
    "\n"
    "  --token-file F          read the token from a file instead of --token\n";

/* Read a token from a file: the first line, without its newline. */
static char *
read_token_file(const char *path, struct ac_err *err)
{
	char buf[8192 + 2];
	FILE *fp = fopen(path, "r");

	if (fp == NULL) {
		ac_err_set(err, AC_ERR_IO, "file_unreadable", "%s: cannot read the token file",
		           path);
		return NULL;
	}
	if (fgets(buf, sizeof(buf), fp) == NULL)
		buf[0] = '\0';
	fclose(fp);
	buf[strcspn(buf, "\r\n")] = '\0';
	return strdup(buf);
}

int
cmd_enroll(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"ca", required_argument, NULL, 'c'},
	    {"token", required_argument, NULL, 't'},
	    {"token-file", required_argument, NULL, 'T'},
	    {"fingerprint", required_argument, NULL, 'f'},
	    {"out", required_argument, NULL, 'o'},
	    {"key-type", required_argument, NULL, 'k'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *ca = NULL, *fingerprint = NULL, *out_dir = NULL, *token_file = NULL;
	char *token = NULL, *root = NULL, *bundle = NULL, *csr = NULL;
	struct cfg_strlist dns = {NULL, 0};
	struct client_issued issued;
	enum key_type key_type = KEY_EC_P256;
	EVP_PKEY *key = NULL;
	struct ac_err err;
	int c, done, rc = EXIT_FAIL;

	ac_err_clear(&err);
	memset(&issued, 0, sizeof(issued));
	while ((c = cli_getopt(argc, argv, "enroll", enroll_usage, longopts, &done)) != -1) {
		if (c == 0) {
			rc = done;
			goto out;
		}
		switch (c) {
		case 'c':
			ca = optarg;
			break;
		case 't':
			free(token);
			token = strdup(optarg);
			break;
		case 'T':
			token_file = optarg;
			break;
		case 'f':
			fingerprint = optarg;
			break;
		case 'o':
			out_dir = optarg;
			break;
		case 'k':
			if (key_type_parse(optarg, &key_type) != 0) {
				rc = cli_usage_error("enroll", "unknown --key-type '%s'", optarg);
				goto out;
			}
			break;
		}
	}
	if (optind != argc) {
		rc = cli_usage_error("enroll", "unexpected argument '%s'", argv[optind]);
		goto out;
	}
	if (token_file != NULL && token == NULL &&
	    (token = read_token_file(token_file, &err)) == NULL)
		goto fail;
	if (ca == NULL || token == NULL || fingerprint == NULL || out_dir == NULL) {
		rc = cli_usage_error("enroll",
		                     "--ca, --token (or --token-file), --fingerprint and --out are "
		                     "required");
		goto out;
	}
	if (strncmp(ca, "https://", 8) != 0) {
		rc = cli_usage_error("enroll", "--ca must be an https:// URL");
		goto out;
	}

	if (client_bootstrap_root(ca, fingerprint, &root, &err) != 0 ||
	    client_token_dns(token, &dns, &err) != 0)
		goto fail;
	key = key_generate(key_type, &err);
	if (key == NULL || (csr = client_make_csr(key, &dns, &err)) == NULL)
		goto fail;
	if (client_enroll(ca, root, token, csr, &issued, &err) != 0)
		goto fail;
	if (client_fetch_bundle(ca, root, &bundle, &err) != 0 ||
	    client_write_identity(out_dir, key, &issued, bundle, &err) != 0)
		goto fail;
	printf("enrolled: serial %s, valid until %s, renew after %s; files in %s\n", issued.serial,
	       issued.not_after != NULL ? issued.not_after : "?",
	       issued.renew_after != NULL ? issued.renew_after : "?", out_dir);
	rc = EXIT_OK;
	goto out;
fail:
	rc = cli_fail("enroll", &err);
out:
	client_issued_free(&issued);
	cfg_strlist_free(&dns);
	EVP_PKEY_free(key);
	free(csr);
	free(bundle);
	free(root);
	if (token != NULL) {
		OPENSSL_cleanse(token, strlen(token));
		free(token);
	}
	return rc;
}
