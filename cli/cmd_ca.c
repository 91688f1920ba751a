/*
 * cmd_ca.c - `agentca ca import`, `agentca ca show` and `agentca trust add`: managing the
 * CA's own certificates.
 */
#include <stdio.h>
#include <string.h>

#include "ca/authority.h"
#include "cli/admin_log.h"
#include "cli/cli.h"

static const char import_usage[] =
    "usage: agentca ca import --dir DIR --cert INTERMEDIATE.pem --chain CORP-ROOT.pem\n"
    "                         [--key KEY.pem] [--password-file F]\n"
    "\n"
    "Install an intermediate signed by a corporate root. Checks that the key matches the\n"
    "certificate, that it is a CA, that the chain verifies to the root in --chain (which may\n"
    "also hold intermediates between), and that it is valid now.\n"
    "\n"
    "  --cert FILE             the signed intermediate certificate\n"
    "  --chain FILE            the corporate root (and any certificates in between)\n"
    "  --key FILE              the intermediate key, when it was not made by init --csr\n"
    "  --password-file F       the CA key passphrase (else $AGENTCA_PASSWORD, DIR/password)\n";

int
cmd_ca_import(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"dir", required_argument, NULL, 'd'},
	    {"cert", required_argument, NULL, 'c'},
	    {"chain", required_argument, NULL, 'C'},
	    {"key", required_argument, NULL, 'k'},
	    {"password-file", required_argument, NULL, 'p'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *dir = NULL, *cert = NULL, *chain = NULL, *key = NULL, *password_file = NULL;
	struct ac_err err;
	int c, done;

	ac_err_clear(&err);
	while ((c = cli_getopt(argc, argv, "ca import", import_usage, longopts, &done)) != -1) {
		if (c == 0)
			return done;
		switch (c) {
		case 'd':
			dir = optarg;
			break;
		case 'c':
			cert = optarg;
			break;
		case 'C':
			chain = optarg;
			break;
		case 'k':
			key = optarg;
			break;
		case 'p':
			password_file = optarg;
			break;
		}
	}
	if (optind != argc)
		return cli_usage_error("ca import", "unexpected argument '%s'", argv[optind]);
	if (dir == NULL || cert == NULL || chain == NULL)
		return cli_usage_error("ca import", "--dir, --cert and --chain are required");
	if (ca_import(dir, cert, chain, key, password_file, &err) != 0)
		return cli_fail("ca import", &err);
	if (admin_log_record(dir, NULL, "ca_activated",
	                     "intermediate signed by the corporate root imported", &err) != 0)
		return cli_fail("ca import", &err);
	printf("imported intermediate %s into %s\n", cert, dir);
	return EXIT_OK;
}

static const char show_usage[] =
    "usage: agentca ca show --dir DIR\n"
    "\n"
    "Print the CA's chain, SHA-256 fingerprints, validity, key states and name constraints.\n";

int
cmd_ca_show(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"dir", required_argument, NULL, 'd'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *dir = NULL;
	struct ac_err err;
	int c, done;

	ac_err_clear(&err);
	while ((c = cli_getopt(argc, argv, "ca show", show_usage, longopts, &done)) != -1) {
		if (c == 0)
			return done;
		if (c == 'd')
			dir = optarg;
	}
	if (optind != argc)
		return cli_usage_error("ca show", "unexpected argument '%s'", argv[optind]);
	if (dir == NULL)
		return cli_usage_error("ca show", "--dir is required");
	if (ca_show(dir, stdout, &err) != 0)
		return cli_fail("ca show", &err);
	return EXIT_OK;
}

static const char trust_usage[] =
    "usage: agentca trust add --dir DIR ROOT.pem\n"
    "\n"
    "Add the self-signed CA certificate(s) in ROOT.pem to the trust bundle (DIR/trust.pem).\n";

int
cmd_trust_add(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"dir", required_argument, NULL, 'd'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *dir = NULL;
	struct ac_err err;
	int c, done, added = 0;

	ac_err_clear(&err);
	while ((c = cli_getopt(argc, argv, "trust add", trust_usage, longopts, &done)) != -1) {
		if (c == 0)
			return done;
		if (c == 'd')
			dir = optarg;
	}
	if (dir == NULL)
		return cli_usage_error("trust add", "--dir is required");
	if (optind != argc - 1)
		return cli_usage_error("trust add", "name exactly one PEM file of roots to add");
	if (ca_trust_add(dir, argv[optind], &added, &err) != 0)
		return cli_fail("trust add", &err);
	if (added > 0) {
		char detail[256];

		snprintf(detail, sizeof(detail), "%d root%s added to the trust bundle", added,
		         added == 1 ? "" : "s");
		if (admin_log_record(dir, NULL, "trust_added", detail, &err) != 0)
			return cli_fail("trust add", &err);
	}
	printf("added %d root%s to the trust bundle of %s\n", added, added == 1 ? "" : "s", dir);
	return EXIT_OK;
}
