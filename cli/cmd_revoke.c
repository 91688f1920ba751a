/*
 * cmd_revoke.c - `agentca revoke`: revoke a certificate on the CA host, and the certificates
 * of the agents nested under it (ca/revoke.c). A running daemon refuses their renewal from
 * then on and lists them in its CRL (it reads the same store).
 */
#include <stdio.h>
#include <string.h>

#include "ca/revoke.h"
#include "cli/cli.h"
#include "cli/settings.h"
#include "store/store.h"

static const char revoke_usage[] =
    "usage: agentca revoke --dir DIR --serial HEX [--reason R]\n"
    "\n"
    "Revoke the certificate with this serial (hex, as openssl x509 -serial prints it).\n"
    "R is an RFC 5280 reason name: unspecified (default), keyCompromise, affiliationChanged,\n"
    "superseded, cessationOfOperation, ...\n"
    "\n"
    "  --config FILE           settings (default DIR/config.json), for the store's path\n";

int
cmd_revoke(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"dir", required_argument, NULL, 'd'},    {"serial", required_argument, NULL, 's'},
	    {"reason", required_argument, NULL, 'r'}, {"config", required_argument, NULL, 'C'},
	    {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
	};
	const char *dir = NULL, *serial = NULL, *reason = "unspecified", *config = NULL;
	struct agentca_settings settings;
	struct store *store = NULL;
	struct revoke_request rr;
	struct ac_err err;
	int children = 0;
	int c, done, have_settings = 0, rc = EXIT_FAIL;

	ac_err_clear(&err);
	while ((c = cli_getopt(argc, argv, "revoke", revoke_usage, longopts, &done)) != -1) {
		if (c == 0)
			return done;
		switch (c) {
		case 'd':
			dir = optarg;
			break;
		case 's':
			serial = optarg;
			break;
		case 'r':
			reason = optarg;
			break;
		case 'C':
			config = optarg;
			break;
		}
	}
	if (optind != argc)
		return cli_usage_error("revoke", "unexpected argument '%s'", argv[optind]);
	if (dir == NULL || serial == NULL)
		return cli_usage_error("revoke", "--dir and --serial are required");

	if (settings_open_store(dir, config, NULL, &settings, &store, &err) != 0)
		goto fail;
	have_settings = 1;
	memset(&rr, 0, sizeof(rr));
	rr.serial = serial;
	rr.reason = reason;
	rr.actor = "admin:cli";
	if (ca_revoke(store, &rr, &children, &err) != 0)
		goto fail;
	printf("revoked %s (%s)", serial, reason);
	if (children > 0)
		printf(" and %d nested certificate%s under it", children, children == 1 ? "" : "s");
	printf("\n");
	rc = EXIT_OK;
	goto out;
fail:
	rc = cli_fail("revoke", &err);
out:
	store_close(store);
	if (have_settings)
		settings_free(&settings);
	return rc;
}
