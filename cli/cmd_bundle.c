/*
 * cmd_bundle.c - `agentca bundle watch`: keep a bundle file current for an external gateway.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "common/config.h"
#include "common/fsutil.h"
#include "common/log.h"
#include "enrollment/client.h"
#include "rotation/bundle_watch.h"

static const char bundle_usage[] =
    "usage: agentca bundle watch --ca URL --out FILE [--exec CMD]\n"
    "                            [--fingerprint SHA256 | --ca-file ROOTS.pem]\n"
    "                            [--wait 30s] [--once] [--cert FILE --key FILE]\n"
    "\n"
    "Keep FILE equal to the CA's trust bundle (PEM): wait for changes (long-poll with the\n"
    "ETag held), write FILE atomically when it changes, then run CMD (/bin/sh -c), e.g.\n"
    "'nginx -s reload'. The CA is trusted through --ca-file, else FILE as it is, else the\n"
    "root whose SHA-256 matches --fingerprint. Logs JSON lines on stderr; SIGTERM stops.\n"
    "\n"
    "  --once                  fetch once, write if changed, exit\n"
    "  --cert FILE, --key FILE the gateway's certificate and key (e.g. an agent's files):\n"
    "                          acknowledge each bundle in use to the CA (POST\n"
    "                          /v1/bundle/ack), for rotations that wait for gateways\n";

int
cmd_bundle_watch(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"ca", required_argument, NULL, 'c'},
	    {"out", required_argument, NULL, 'o'},
	    {"exec", required_argument, NULL, 'e'},
	    {"fingerprint", required_argument, NULL, 'f'},
	    {"ca-file", required_argument, NULL, 'C'},
	    {"wait", required_argument, NULL, 'w'},
	    {"once", no_argument, NULL, '1'},
	    {"cert", required_argument, NULL, 'X'},
	    {"key", required_argument, NULL, 'K'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *ca_file = NULL, *fingerprint = NULL, *env;
	struct bundle_watch_options o;
	enum ac_log_level level = AC_LOG_INFO;
	struct ac_err err;
	char *roots = NULL;
	int64_t wait = 30;
	int c, done, rc = EXIT_FAIL;

	memset(&o, 0, sizeof(o));
	ac_err_clear(&err);
	while ((c = cli_getopt(argc, argv, "bundle watch", bundle_usage, longopts, &done)) != -1) {
		if (c == 0)
			return done;
		switch (c) {
		case 'c':
			o.ca_url = optarg;
			break;
		case 'o':
			o.out_path = optarg;
			break;
		case 'e':
			o.exec_cmd = optarg[0] != '\0' ? optarg : NULL;
			break;
		case 'f':
			fingerprint = optarg;
			break;
		case 'C':
			ca_file = optarg;
			break;
		case 'w':
			if (duration_parse(optarg, &wait) != 0 || wait < 1 || wait > 3600)
				return cli_usage_error("bundle watch",
				                       "--wait must be between 1s and 1h");
			break;
		case '1':
			o.once = 1;
			break;
		case 'X':
			o.ack_cert_path = optarg;
			break;
		case 'K':
			o.ack_key_path = optarg;
			break;
		}
	}
	if (optind != argc)
		return cli_usage_error("bundle watch", "unexpected argument '%s'", argv[optind]);
	if (o.ca_url == NULL || o.out_path == NULL)
		return cli_usage_error("bundle watch", "--ca and --out are required");
	if (strncmp(o.ca_url, "https://", 8) != 0)
		return cli_usage_error("bundle watch", "--ca must be an https:// URL");
	if ((o.ack_cert_path == NULL) != (o.ack_key_path == NULL))
		return cli_usage_error("bundle watch", "--cert and --key go together");
	o.wait_seconds = (int)wait;

	if (ca_file != NULL) {
		if (read_file(ca_file, 1024 * 1024, &roots, NULL, &err) != 0)
			goto fail;
	} else if (path_exists(o.out_path)) {
		if (read_file(o.out_path, 1024 * 1024, &roots, NULL, &err) != 0)
			goto fail;
	} else if (fingerprint != NULL) {
		if (client_bootstrap_root(o.ca_url, fingerprint, &roots, &err) != 0)
			goto fail;
	} else {
		rc = cli_usage_error("bundle watch", "give --ca-file or --fingerprint (or an "
		                                     "existing --out file) to trust the CA");
		goto out;
	}
	o.roots_pem = roots;
	env = getenv("AGENTCA_LOG_LEVEL");
	if (env != NULL)
		ac_log_level_parse(env, &level);
	ac_log_set_level(level);
	if (bundle_watch_run(&o, &err) != 0)
		goto fail;
	rc = EXIT_OK;
	goto out;
fail:
	rc = cli_fail("bundle watch", &err);
out:
	free(roots);
	return rc;
}
