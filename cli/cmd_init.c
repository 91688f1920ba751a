/*
 * cmd_init.c - `agentca init`: create a CA directory.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ca/audit_keys.h"
#include "ca/authority.h"
#include "cli/admin_log.h"
#include "cli/cli.h"
#include "common/config.h"
#include "enrollment/token.h"

static const char init_usage[] =
    "usage: agentca init --dir DIR --name NAME --trust-domain TD [options]\n"
    "\n"
    "Create a CA: a root and an online intermediate signed by it, or with --csr only an\n"
    "intermediate key and a CSR for a corporate root (then: agentca ca import).\n"
    "\n"
    "  --dir DIR               the CA directory (created 0700)\n"
    "  --name NAME             the CA's name, used in its certificates' subjects\n"
    "  --trust-domain TD       the SPIFFE trust domain, e.g. corp.internal\n"
    "  --key-type T            p256 (default), p384, rsa3072 or ed25519\n"
    "  --dns-suffix S          DNS names allowed in leaves (repeatable; default TD)\n"
    "  --ip-range CIDR         IP addresses allowed in leaves (repeatable; default none)\n"
    "  --password-file F       the key passphrase; else $AGENTCA_PASSWORD; else a random\n"
    "                          one is written to DIR/password (0600)\n"
    "  --offline-root PATH     write the root key to PATH instead of DIR, to carry away\n"
    "  --root-ttl D            root validity (default 3650d)\n"
    "  --intermediate-ttl D    intermediate validity (default 365d)\n"
    "  --csr                   corporate mode: write intermediate.key and intermediate.csr\n";

int
cmd_init(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"dir", required_argument, NULL, 'd'},
	    {"name", required_argument, NULL, 'n'},
	    {"trust-domain", required_argument, NULL, 't'},
	    {"key-type", required_argument, NULL, 'k'},
	    {"dns-suffix", required_argument, NULL, 's'},
	    {"ip-range", required_argument, NULL, 'i'},
	    {"password-file", required_argument, NULL, 'p'},
	    {"offline-root", required_argument, NULL, 'o'},
	    {"root-ttl", required_argument, NULL, 'R'},
	    {"intermediate-ttl", required_argument, NULL, 'I'},
	    {"csr", no_argument, NULL, 'c'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct cfg_strlist dns_suffixes = {NULL, 0}, ip_ranges = {NULL, 0};
	struct ca_init_options opts;
	struct ca_init_report report;
	struct ac_err err;
	int c, done, rc = EXIT_FAIL;

	ac_err_clear(&err);
	ca_init_options_defaults(&opts);
	memset(&report, 0, sizeof(report));
	while ((c = cli_getopt(argc, argv, "init", init_usage, longopts, &done)) != -1) {
		if (c == 0) {
			rc = done;
			goto out;
		}
		switch (c) {
		case 'd':
			opts.dir = optarg;
			break;
		case 'n':
			opts.name = optarg;
			break;
		case 't':
			opts.trust_domain = optarg;
			break;
		case 'k':
			if (key_type_parse(optarg, &opts.key_type) != 0) {
				rc = cli_usage_error("init",
				                     "--key-type must be p256, p384, "
				                     "rsa3072 or ed25519, not '%s'",
				                     optarg);
				goto out;
			}
			break;
		case 's':
			if (cfg_strlist_add(&dns_suffixes, optarg, &err) != 0)
				goto fail;
			break;
		case 'i':
			if (cfg_strlist_add(&ip_ranges, optarg, &err) != 0)
				goto fail;
			break;
		case 'p':
			opts.password_file = optarg;
			break;
		case 'o':
			opts.offline_root_path = optarg;
			break;
		case 'R':
		case 'I':
			if (duration_parse(optarg, c == 'R' ? &opts.root_ttl
			                                    : &opts.intermediate_ttl) != 0) {
				rc = cli_usage_error("init", "bad duration '%s' (e.g. 365d)",
				                     optarg);
				goto out;
			}
			break;
		case 'c':
			opts.csr_only = 1;
			break;
		}
	}
	if (optind != argc) {
		rc = cli_usage_error("init", "unexpected argument '%s'", argv[optind]);
		goto out;
	}
	if (opts.dir == NULL || opts.name == NULL || opts.trust_domain == NULL) {
		rc = cli_usage_error("init", "--dir, --name and --trust-domain are required");
		goto out;
	}
	if (opts.csr_only && opts.offline_root_path != NULL) {
		rc = cli_usage_error("init", "--offline-root makes no sense with --csr: a "
		                             "corporate root holds the root key");
		goto out;
	}
	opts.dns_suffixes = &dns_suffixes;
	opts.ip_ranges = &ip_ranges;

	if (ca_init(&opts, &report, &err) != 0)
		goto fail;
	{
		char detail[512];

		if (opts.csr_only)
			snprintf(detail, sizeof(detail),
			         "intermediate key and CSR created for a corporate root (%s)",
			         key_type_name(opts.key_type));
		else
			snprintf(detail, sizeof(detail),
			         "CA \"%s\" created: root %s, %s, root key %s", opts.name,
			         report.root_fingerprint, key_type_name(opts.key_type),
			         opts.offline_root_path != NULL ? "offline" : "in DIR");
		if (admin_log_record(opts.dir, NULL, opts.csr_only ? "ca_prepared" : "ca_activated",
		                     detail, &err) != 0)
			goto fail;
	}
	{
		/* The token signing keys and the audit key (it signs the log's tree heads),
		 * under the same passphrase as the CA keys. */
		char passphrase[PASSPHRASE_MAX + 1];
		int failed;

		failed = passphrase_resolve(opts.dir, opts.password_file, passphrase,
		                            sizeof(passphrase), &err) != 0 ||
		         token_keys_ensure(opts.dir, passphrase, &err) != 0 ||
		         audit_keys_ensure(opts.dir, passphrase, &err) != 0;
		passphrase_wipe(passphrase, sizeof(passphrase));
		if (failed)
			goto fail;
	}

	if (opts.csr_only) {
		printf("created intermediate key and CSR for \"%s\" (trust domain %s)\n", opts.name,
		       opts.trust_domain);
		printf("CSR: %s\n", report.csr_path);
		printf("next: have it signed by your corporate root, then run\n"
		       "  agentca ca import --dir %s --cert INTERMEDIATE.pem --chain "
		       "CORP-ROOT.pem\n",
		       opts.dir);
	} else {
		printf("created CA \"%s\" in %s (trust domain %s)\n", opts.name, opts.dir,
		       opts.trust_domain);
		printf("root fingerprint (SHA-256): %s\n", report.root_fingerprint);
		if (opts.offline_root_path != NULL)
			printf("root key written to %s: move it off this machine\n",
			       opts.offline_root_path);
	}
	if (report.passphrase_file[0] != '\0')
		printf("key passphrase generated and written to %s (mode 0600): keep a copy "
		       "somewhere safe\n",
		       report.passphrase_file);
	rc = EXIT_OK;
	goto out;
fail:
	rc = cli_fail("init", &err);
out:
	cfg_strlist_free(&dns_suffixes);
	cfg_strlist_free(&ip_ranges);
	return rc;
}
