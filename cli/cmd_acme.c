/*
 * cmd_acme.c - `agentca acme eab create`: an external account binding key for an ACME
 * client (RFC 8555 section 7.3.4), with its own identifier policy.
 *
 * The key id and the HMAC key (base64url, what certbot's --eab-hmac-key and lego's --hmac
 * take) are printed once on stdout; the store keeps the key for verifying the binding.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ca/policy.h"
#include "cli/cli.h"
#include "cli/settings.h"
#include "enrollment/acme.h"

static const char eab_usage[] =
    "usage: agentca acme eab create --dir DIR [--policy dns-suffix=S,ip-range=CIDR,...]\n"
    "                               [--config FILE]\n"
    "\n"
    "Make an external account binding key for an ACME client and print it:\n"
    "  kid=<key id>\n"
    "  hmac=<HMAC key, base64url>\n"
    "Accounts bound with it may only order names under the listed DNS suffixes and IPs in\n"
    "the listed ranges (on top of the CA's policy). Without --policy the CA's policy alone\n"
    "decides.\n";

/* "dns-suffix=a.example,ip-range=10.0.0.0/8,dns-suffix=b.example" into the two lists. */
static int
parse_policy(const char *text, struct cfg_strlist *dns, struct cfg_strlist *ips, struct ac_err *err)
{
	char *copy = strdup(text), *save = NULL, *item;
	int rc = -1;

	if (copy == NULL)
		return ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
	for (item = strtok_r(copy, ",", &save); item != NULL; item = strtok_r(NULL, ",", &save)) {
		if (strncmp(item, "dns-suffix=", 11) == 0 && item[11] != '\0') {
			if (cfg_strlist_add(dns, item + 11, err) != 0)
				goto out;
		} else if (strncmp(item, "ip-range=", 9) == 0 && item[9] != '\0') {
			if (cfg_strlist_add(ips, item + 9, err) != 0)
				goto out;
		} else {
			ac_err_set(
			    err, AC_ERR_USAGE, "usage",
			    "--policy takes dns-suffix=NAME and ip-range=CIDR items, not '%s'",
			    item);
			goto out;
		}
	}
	rc = 0;
out:
	free(copy);
	return rc;
}

int
cmd_acme_eab_create(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"dir", required_argument, NULL, 'd'},
	    {"policy", required_argument, NULL, 'P'},
	    {"config", required_argument, NULL, 'C'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *dir = NULL, *policy = NULL, *config = NULL;
	struct cfg_strlist dns = {NULL, 0}, ips = {NULL, 0};
	struct agentca_settings settings;
	struct ca_policy check;
	struct store *store = NULL;
	struct ac_err err;
	char kid[64], hmac[64];
	int c, done, have_settings = 0, have_check = 0, rc = EXIT_FAIL;

	ac_err_clear(&err);
	memset(&check, 0, sizeof(check));
	while ((c = cli_getopt(argc, argv, "acme eab create", eab_usage, longopts, &done)) != -1) {
		if (c == 0)
			return done;
		switch (c) {
		case 'd':
			dir = optarg;
			break;
		case 'P':
			policy = optarg;
			break;
		case 'C':
			config = optarg;
			break;
		}
	}
	if (optind != argc)
		return cli_usage_error("acme eab create", "unexpected argument '%s'", argv[optind]);
	if (dir == NULL)
		return cli_usage_error("acme eab create", "--dir is required");
	if (policy != NULL && parse_policy(policy, &dns, &ips, &err) != 0)
		goto fail;
	/* The lists must be what the policy module accepts: valid suffixes, parsable CIDRs. */
	if (ca_policy_defaults(&check, "example.invalid", &err) != 0)
		goto fail;
	have_check = 1;
	if ((dns.count > 0 && cfg_strlist_set(&check.dns_suffixes, (const char *const *)dns.items,
	                                      dns.count, &err) != 0) ||
	    cfg_strlist_set(&check.ip_ranges, (const char *const *)ips.items, ips.count, &err) !=
	        0 ||
	    ca_policy_validate(&check, &err) != 0) {
		if (err.code == AC_ERR_INVALID)
			err.code = AC_ERR_USAGE;
		goto fail;
	}
	if (settings_open_store(dir, config, NULL, &settings, &store, &err) != 0)
		goto fail;
	have_settings = 1;
	if (acme_eab_create(store, &dns, &ips, kid, hmac, &err) != 0)
		goto fail;
	printf("kid=%s\nhmac=%s\n", kid, hmac);
	rc = EXIT_OK;
	goto out;
fail:
	rc = cli_fail("acme eab create", &err);
out:
	memset(hmac, 0, sizeof(hmac));
	store_close(store);
	if (have_settings)
		settings_free(&settings);
	if (have_check)
		ca_policy_free(&check);
	cfg_strlist_free(&dns);
	cfg_strlist_free(&ips);
	return rc;
}
