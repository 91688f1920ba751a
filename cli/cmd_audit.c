/*
 * cmd_audit.c - `agentca audit export`, `agentca audit verify` and `agentca audit sth`.
 *
 * export and sth sign a tree head with the audit key (DIR/audit.key, made here if a CA
 * predates it), so they need the CA passphrase; verify needs only the public audit.pub.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ca/audit.h"
#include "ca/audit_keys.h"
#include "ca/keys.h"
#include "cli/cli.h"
#include "cli/settings.h"
#include "common/timefmt.h"

static const char export_usage[] =
    "usage: agentca audit export --dir DIR [--format jsonl|csv] [--since T] [--until T]\n"
    "                            [--kind K] [--subject PREFIX] [--proofs]\n"
    "                            [--consistency-from SIZE]\n"
    "\n"
    "Stream the issuance log to stdout. JSON Lines (the default) ends with a trailer holding\n"
    "the log's tree head signed with the audit key, and is checked with 'agentca audit\n"
    "verify'; CSV is a table with a header row for spreadsheets.\n"
    "T is RFC 3339 (2026-11-22T01:00:00Z), a date (2026-11-22), unix seconds, or a\n"
    "duration meaning that long ago (24h, 7d).\n"
    "\n"
    "  --kind K                only entries of this kind (issued, denied, revoked, ...)\n"
    "  --subject PREFIX        only entries whose subject starts with PREFIX\n"
    "  --proofs                each entry carries its inclusion proof (always when filtered)\n"
    "  --consistency-from SIZE add the proof that the log extends its tree of SIZE entries\n"
    "                          (the tree_size of an earlier tree head: see --previous-sth)\n"
    "  --password-file F       the CA key passphrase (else $AGENTCA_PASSWORD, DIR/password)\n"
    "  --config FILE           settings (default DIR/config.json), for the store's path\n";

static int
write_stdout(void *arg, const char *data, size_t len)
{
	(void)arg;
	return fwrite(data, 1, len, stdout) == len ? 0 : -1;
}

/* The audit private key of DIR, made first when the CA predates it. */
static EVP_PKEY *
load_audit_key(const char *dir, const char *password_file, struct ac_err *err)
{
	char passphrase[PASSPHRASE_MAX + 1];
	EVP_PKEY *key = NULL;

	if (passphrase_resolve(dir, password_file, passphrase, sizeof(passphrase), err) == 0 &&
	    audit_keys_ensure(dir, passphrase, err) == 0)
		key = audit_key_load(dir, passphrase, err);
	passphrase_wipe(passphrase, sizeof(passphrase));
	return key;
}

/* Parse a non-negative decimal tree size. */
static int
parse_size(const char *s, uint64_t *out)
{
	char *end;

	if (s[0] < '0' || s[0] > '9')
		return -1;
	errno = 0;
	*out = strtoull(s, &end, 10);
	return errno != 0 || *end != '\0' || *out > INT64_MAX ? -1 : 0;
}

int
cmd_audit_export(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"dir", required_argument, NULL, 'd'},
	    {"format", required_argument, NULL, 'f'},
	    {"since", required_argument, NULL, 's'},
	    {"until", required_argument, NULL, 'u'},
	    {"kind", required_argument, NULL, 'k'},
	    {"subject", required_argument, NULL, 'S'},
	    {"proofs", no_argument, NULL, 'P'},
	    {"consistency-from", required_argument, NULL, 'c'},
	    {"password-file", required_argument, NULL, 'p'},
	    {"config", required_argument, NULL, 'C'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *dir = NULL, *config = NULL, *password_file = NULL;
	struct audit_export_options opts;
	struct agentca_settings settings;
	struct store *store = NULL;
	struct ac_err err;
	int c, done, have_settings = 0, rc = EXIT_FAIL;

	ac_err_clear(&err);
	memset(&opts, 0, sizeof(opts));
	while ((c = cli_getopt(argc, argv, "audit export", export_usage, longopts, &done)) != -1) {
		if (c == 0)
			return done;
		switch (c) {
		case 'd':
			dir = optarg;
			break;
		case 'f':
			if (audit_format_parse(optarg, &opts.format) != 0)
				return cli_usage_error("audit export",
				                       "--format must be jsonl or csv, not '%s'",
				                       optarg);
			break;
		case 's':
		case 'u':
			if (time_parse(optarg, time_now(), c == 's' ? &opts.since : &opts.until) !=
			    0)
				return cli_usage_error("audit export", "bad time '%s'", optarg);
			break;
		case 'k':
			if (optarg[0] == '\0')
				return cli_usage_error("audit export", "--kind must not be empty");
			opts.kind = optarg;
			break;
		case 'S':
			if (optarg[0] == '\0')
				return cli_usage_error("audit export",
				                       "--subject must not be empty");
			opts.subject_prefix = optarg;
			break;
		case 'P':
			opts.proofs = 1;
			break;
		case 'c':
			if (parse_size(optarg, &opts.consistency_from) != 0)
				return cli_usage_error(
				    "audit export",
				    "--consistency-from takes a tree size, not '%s'", optarg);
			opts.consistency = 1;
			break;
		case 'p':
			password_file = optarg;
			break;
		case 'C':
			config = optarg;
			break;
		}
	}
	if (optind != argc)
		return cli_usage_error("audit export", "unexpected argument '%s'", argv[optind]);
	if (dir == NULL)
		return cli_usage_error("audit export", "--dir is required");
	if (opts.format == AUDIT_CSV && (opts.proofs || opts.consistency))
		return cli_usage_error("audit export",
		                       "--proofs and --consistency-from need --format jsonl");

	if (opts.format == AUDIT_JSONL &&
	    (opts.sth_key = load_audit_key(dir, password_file, &err)) == NULL)
		goto fail;
	if (settings_open_store(dir, config, NULL, &settings, &store, &err) != 0)
		goto fail;
	have_settings = 1;
	if (audit_export(store, &opts, write_stdout, NULL, &err) != 0)
		goto fail;
	if (fflush(stdout) != 0) {
		ac_err_set(&err, AC_ERR_IO, "write_failed", "stdout: %s", strerror(errno));
		goto fail;
	}
	rc = EXIT_OK;
	goto out;
fail:
	rc = cli_fail("audit export", &err);
out:
	store_close(store);
	if (have_settings)
		settings_free(&settings);
	EVP_PKEY_free(opts.sth_key);
	return rc;
}

static const char verify_usage[] =
    "usage: agentca audit verify FILE [--key AUDIT-PUB.pem] [--previous-sth STH.json]\n"
    "\n"
    "Verify a JSON Lines export offline: every entry's hash, the chain linking each entry to\n"
    "the one before, each inclusion proof, the signed tree head and, for a complete export,\n"
    "the tree's root recomputed from the entries. Names the first entry that fails. '-'\n"
    "reads stdin.\n"
    "\n"
    "  --key AUDIT-PUB.pem     the CA's audit public key (DIR/audit.pub): check the tree\n"
    "                          head's signature (without it, the signature is not checked)\n"
    "  --previous-sth STH.json an earlier tree head ('agentca audit sth'): the export must\n"
    "                          prove the log only grew since (export --consistency-from N)\n";

int
cmd_audit_verify(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"key", required_argument, NULL, 'k'},
	    {"previous-sth", required_argument, NULL, 'p'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *key_path = NULL, *previous_path = NULL, *path;
	struct audit_verify_options opts;
	struct audit_summary summary;
	struct sth previous;
	struct ac_err err;
	FILE *in = NULL;
	int c, done, rc = EXIT_FAIL;

	ac_err_clear(&err);
	memset(&opts, 0, sizeof(opts));
	while ((c = cli_getopt(argc, argv, "audit verify", verify_usage, longopts, &done)) != -1) {
		if (c == 0)
			return done;
		if (c == 'k')
			key_path = optarg;
		else if (c == 'p')
			previous_path = optarg;
	}
	if (optind != argc - 1)
		return cli_usage_error("audit verify", "name exactly one export file");
	if (previous_path != NULL && key_path == NULL)
		return cli_usage_error("audit verify",
		                       "--previous-sth needs --key to check the earlier tree head");
	path = argv[optind];
	if (key_path != NULL && (opts.key = audit_pub_load(key_path, &err)) == NULL)
		goto fail;
	if (previous_path != NULL) {
		if (sth_read_file(previous_path, &previous, &err) != 0)
			goto fail;
		opts.previous = &previous;
	}
	in = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
	if (in == NULL) {
		ac_err_set(&err, AC_ERR_IO, "file_unreadable", "%s: %s", path, strerror(errno));
		goto fail;
	}
	if (audit_verify(in, path, &opts, &summary, &err) != 0)
		goto fail;
	printf("%s: OK\n", path);
	audit_summary_print(&summary, stdout);
	rc = EXIT_OK;
	goto out;
fail:
	rc = cli_fail("audit verify", &err);
out:
	if (in != NULL && in != stdin)
		fclose(in);
	EVP_PKEY_free(opts.key);
	return rc;
}

static const char sth_usage[] =
    "usage: agentca audit sth --dir DIR\n"
    "\n"
    "Print the issuance log's current tree head, signed with the audit key, as one line of\n"
    "JSON: {\"tree_size\":N,\"root_hash\":HEX,\"timestamp\":MS,\"signature\":BASE64}. Keep it\n"
    "to check a later export with 'agentca audit verify --previous-sth'.\n"
    "\n"
    "  --password-file F       the CA key passphrase (else $AGENTCA_PASSWORD, DIR/password)\n"
    "  --config FILE           settings (default DIR/config.json), for the store's path\n";

int
cmd_audit_sth(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"dir", required_argument, NULL, 'd'},
	    {"password-file", required_argument, NULL, 'p'},
	    {"config", required_argument, NULL, 'C'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *dir = NULL, *config = NULL, *password_file = NULL;
	struct agentca_settings settings;
	struct store *store = NULL;
	EVP_PKEY *key = NULL;
	json_t *obj = NULL;
	char *text = NULL;
	struct ac_err err;
	struct sth sth;
	int c, done, have_settings = 0, rc = EXIT_FAIL;

	ac_err_clear(&err);
	while ((c = cli_getopt(argc, argv, "audit sth", sth_usage, longopts, &done)) != -1) {
		if (c == 0)
			return done;
		if (c == 'd')
			dir = optarg;
		else if (c == 'p')
			password_file = optarg;
		else if (c == 'C')
			config = optarg;
	}
	if (optind != argc)
		return cli_usage_error("audit sth", "unexpected argument '%s'", argv[optind]);
	if (dir == NULL)
		return cli_usage_error("audit sth", "--dir is required");
	if ((key = load_audit_key(dir, password_file, &err)) == NULL)
		goto fail;
	if (settings_open_store(dir, config, NULL, &settings, &store, &err) != 0)
		goto fail;
	have_settings = 1;
	if (audit_sth_make(store, key, &sth, &err) != 0)
		goto fail;
	if ((obj = sth_to_json(&sth)) == NULL || (text = json_dumps(obj, JSON_COMPACT)) == NULL) {
		ac_err_set(&err, AC_ERR_INTERNAL, "out_of_memory", "tree head: out of memory");
		goto fail;
	}
	if (printf("%s\n", text) < 0 || fflush(stdout) != 0) {
		ac_err_set(&err, AC_ERR_IO, "write_failed", "stdout: %s", strerror(errno));
		goto fail;
	}
	rc = EXIT_OK;
	goto out;
fail:
	rc = cli_fail("audit sth", &err);
out:
	free(text);
	json_decref(obj);
	store_close(store);
	if (have_settings)
		settings_free(&settings);
	EVP_PKEY_free(key);
	return rc;
}
