/*
 * cmd_ca.c - `agentca ca import`, `agentca ca show`, `agentca ca rotate` and `agentca trust
 * add`: managing the CA's own certificates.
 */
#include <stdio.h>
#include <string.h>

#include "ca/authority.h"
#include "ca/rotate.h"
#include "cli/admin_log.h"
#include "cli/cli.h"
#include "cli/settings.h"
#include "common/fsutil.h"
#include "common/timefmt.h"

/* The store and a rotation context for DIR (now, by the admin). The caller closes the store
 * and frees the settings. */
static int
rotation_open(const char *dir, const char *config, const char *password_file,
              struct agentca_settings *settings, struct store **store, struct rotation_context *ctx,
              struct ac_err *err)
{
	if (settings_open_store(dir, config, NULL, settings, store, err) != 0)
		return -1;
	memset(ctx, 0, sizeof(*ctx));
	ctx->dir = dir;
	ctx->password_file = password_file;
	ctx->store = *store;
	ctx->settings = &settings->rotation;
	ctx->now = time_now();
	ctx->actor = "admin:cli";
	return 0;
}

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
	if (rotation_awaits_import(dir)) {
		/* The signed successor of a rotation: recorded as prepared at once. */
		struct agentca_settings settings;
		struct rotation_context ctx;
		struct rotation_result res;
		struct store *store = NULL;
		int rc;

		if (ca_import(dir, cert, chain, key, password_file, &err) != 0)
			return cli_fail("ca import", &err);
		if (rotation_open(dir, NULL, password_file, &settings, &store, &ctx, &err) != 0)
			return cli_fail("ca import", &err);
		rc = rotation_step(&ctx, 0, &res, &err);
		store_close(store);
		settings_free(&settings);
		if (rc != 0)
			return cli_fail("ca import", &err);
		printf(
		    "imported %s as the next intermediate of %s; a running daemon publishes it in "
		    "the bundle on its next tick\n",
		    cert, dir);
		return EXIT_OK;
	}
	if (ca_import(dir, cert, chain, key, password_file, &err) != 0)
		return cli_fail("ca import", &err);
	if (admin_log_record(dir, NULL, "ca_activated",
	                     "intermediate signed by the corporate root imported", &err) != 0)
		return cli_fail("ca import", &err);
	printf("imported intermediate %s into %s\n", cert, dir);
	return EXIT_OK;
}

static const char show_usage[] =
    "usage: agentca ca show --dir DIR [--config FILE]\n"
    "\n"
    "Print the CA's chain, SHA-256 fingerprints, validity, key states, name constraints,\n"
    "and each intermediate with its rotation state (prepared, published, active, retiring,\n"
    "retired).\n"
    "\n"
    "  --config FILE           settings (default DIR/config.json), for the store's path\n";

/* The intermediates' rotation states, from the store. */
static int
print_rotation(const char *dir, const char *config, struct ac_err *err)
{
	struct rotation_member members[STORE_INTERMEDIATES_MAX];
	struct agentca_settings settings;
	struct rotation_context ctx;
	struct store *store = NULL;
	size_t n = 0;
	int rc;

	if (rotation_open(dir, config, NULL, &settings, &store, &ctx, err) != 0)
		return -1;
	rc = rotation_status(&ctx, members, STORE_INTERMEDIATES_MAX, &n, err);
	if (rc == 0) {
		printf("intermediates (rotation):%s\n", n == 0
		                                            ? " none recorded yet (agentca serve "
		                                              "or ca rotate records them)"
		                                            : "");
		for (size_t i = 0; i < n; i++) {
			char na[32], changed[32];

			if (strcmp(members[i].state, "csr_written") == 0) {
				printf(
				    "  next          csr_written: waiting for agentca ca import\n");
				continue;
			}
			time_format_rfc3339(members[i].not_after, na, sizeof(na));
			time_format_rfc3339(members[i].changed_at, changed, sizeof(changed));
			printf("  %-13s %s  not after %s  since %s", members[i].state,
			       members[i].fingerprint, na, changed);
			if (members[i].bundle_sequence != 0)
				printf("  bundle sequence %lld",
				       (long long)members[i].bundle_sequence);
			printf("\n");
		}
	}
	store_close(store);
	settings_free(&settings);
	return rc;
}

int
cmd_ca_show(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"dir", required_argument, NULL, 'd'},
	    {"config", required_argument, NULL, 'C'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *dir = NULL, *config = NULL;
	struct ac_err err;
	int c, done;

	ac_err_clear(&err);
	while ((c = cli_getopt(argc, argv, "ca show", show_usage, longopts, &done)) != -1) {
		if (c == 0)
			return done;
		if (c == 'd')
			dir = optarg;
		else if (c == 'C')
			config = optarg;
	}
	if (optind != argc)
		return cli_usage_error("ca show", "unexpected argument '%s'", argv[optind]);
	if (dir == NULL)
		return cli_usage_error("ca show", "--dir is required");
	if (ca_show(dir, stdout, &err) != 0)
		return cli_fail("ca show", &err);
	{
		char path[4096];

		/* A corporate CA still waiting for its first import has no rotation to show. */
		if (path_join(path, sizeof(path), dir, "intermediate.pem", &err) != 0)
			return cli_fail("ca show", &err);
		if (path_exists(path) && print_rotation(dir, config, &err) != 0)
			return cli_fail("ca show", &err);
	}
	return EXIT_OK;
}

static const char rotate_usage[] =
    "usage: agentca ca rotate --dir DIR [--config FILE] [--password-file F]\n"
    "\n"
    "Take the next step of the intermediate rotation now, and print what was done:\n"
    "  prepare    a new intermediate key, signed by the root in DIR (or, with an offline or\n"
    "             corporate root, a CSR in DIR/next-intermediate.csr for agentca ca import)\n"
    "  activate   the published next intermediate signs new leaves (skips the publish_for\n"
    "             wait, not the gateways' acknowledgments); the active one starts retiring\n"
    "  retire     the retiring intermediate leaves the bundle (only once its last leaf\n"
    "             has expired)\n"
    "Publication is the daemon's: it puts a prepared intermediate in the bundle it serves.\n"
    "A running daemon picks every change up on its next tick (or on SIGHUP). Exits 1 with\n"
    "the reason when the next step has to wait.\n"
    "\n"
    "  --config FILE           settings (default DIR/config.json)\n"
    "  --password-file F       the CA key passphrase (else $AGENTCA_PASSWORD, DIR/password)\n";

int
cmd_ca_rotate(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"dir", required_argument, NULL, 'd'},
	    {"config", required_argument, NULL, 'C'},
	    {"password-file", required_argument, NULL, 'p'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *dir = NULL, *config = NULL, *password_file = NULL;
	struct agentca_settings settings;
	struct rotation_context ctx;
	struct rotation_result res;
	struct store *store = NULL;
	struct ac_err err;
	int c, done, rc = EXIT_FAIL;

	ac_err_clear(&err);
	while ((c = cli_getopt(argc, argv, "ca rotate", rotate_usage, longopts, &done)) != -1) {
		if (c == 0)
			return done;
		if (c == 'd')
			dir = optarg;
		else if (c == 'C')
			config = optarg;
		else if (c == 'p')
			password_file = optarg;
	}
	if (optind != argc)
		return cli_usage_error("ca rotate", "unexpected argument '%s'", argv[optind]);
	if (dir == NULL)
		return cli_usage_error("ca rotate", "--dir is required");
	if (rotation_open(dir, config, password_file, &settings, &store, &ctx, &err) != 0)
		return cli_fail("ca rotate", &err);
	if (rotation_step(&ctx, 1, &res, &err) != 0) {
		rc = cli_fail("ca rotate", &err);
	} else if (res.outcome == ROTATION_WAITING || res.outcome == ROTATION_NOTHING) {
		fprintf(stderr, "agentca ca rotate: not yet: %s\n", res.message);
	} else {
		printf("%s: %s\n", rotation_outcome_name(res.outcome), res.message);
		rc = EXIT_OK;
	}
	store_close(store);
	settings_free(&settings);
	return rc;
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
