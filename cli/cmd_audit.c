/*
 * cmd_audit.c - `agentca audit export` and `agentca audit verify`.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "ca/audit.h"
#include "cli/cli.h"
#include "cli/settings.h"
#include "common/timefmt.h"

static const char export_usage[] =
	"usage: agentca audit export --dir DIR [--format jsonl|csv] [--since T] [--until T]\n"
	"\n"
	"Stream the issuance log to stdout. JSON Lines (the default) can be checked with\n"
	"'agentca audit verify'; CSV is a table with a header row for spreadsheets.\n"
	"T is RFC 3339 (2026-11-22T01:00:00Z), a date (2026-11-22), unix seconds, or a\n"
	"duration meaning that long ago (24h, 7d).\n"
	"\n"
	"  --config FILE           settings (default DIR/config.json), for the store's path\n";

static int
write_stdout(void *arg, const char *data, size_t len)
{
	(void)arg;
	return fwrite(data, 1, len, stdout) == len ? 0 : -1;
}

int
cmd_audit_export(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"dir", required_argument, NULL, 'd'},
		{"format", required_argument, NULL, 'f'},
		{"since", required_argument, NULL, 's'},
		{"until", required_argument, NULL, 'u'},
		{"config", required_argument, NULL, 'C'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *dir = NULL, *config = NULL;
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
		case 'C':
			config = optarg;
			break;
		}
	}
	if (optind != argc)
		return cli_usage_error("audit export", "unexpected argument '%s'", argv[optind]);
	if (dir == NULL)
		return cli_usage_error("audit export", "--dir is required");

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
	return rc;
}

static const char verify_usage[] =
	"usage: agentca audit verify FILE\n"
	"\n"
	"Verify a JSON Lines export offline: every entry's hash, the chain linking each entry\n"
	"to the one before, and the trailer. Names the first entry that fails. '-' reads stdin.\n";

int
cmd_audit_verify(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct audit_summary summary;
	struct ac_err err;
	const char *path;
	FILE *in;
	int c, done, rc;

	ac_err_clear(&err);
	while ((c = cli_getopt(argc, argv, "audit verify", verify_usage, longopts, &done)) != -1)
		if (c == 0)
			return done;
	if (optind != argc - 1)
		return cli_usage_error("audit verify", "name exactly one export file");
	path = argv[optind];
	in = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
	if (in == NULL) {
		ac_err_set(&err, AC_ERR_IO, "file_unreadable", "%s: %s", path, strerror(errno));
		return cli_fail("audit verify", &err);
	}
	rc = audit_verify(in, path, &summary, &err);
	if (in != stdin)
		fclose(in);
	if (rc != 0)
		return cli_fail("audit verify", &err);
	printf("%s: OK\n", path);
	audit_summary_print(&summary, stdout);
	return EXIT_OK;
}
