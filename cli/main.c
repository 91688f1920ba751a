/*
 * main.c - the agentca command dispatcher: a table of commands, looked up by the first one
 * or two words of the command line.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "common/log.h"

static const struct cli_command commands[] = {
    {"init", cmd_init, "create a CA: a root and an intermediate, or an intermediate CSR"},
    {"ca import", cmd_ca_import, "install an intermediate signed by a corporate root"},
    {"ca show", cmd_ca_show, "print the chain, fingerprints, key states and policy"},
    {"ca rotate", cmd_ca_rotate, "take the next intermediate rotation step now"},
    {"trust add", cmd_trust_add, "add extra roots to the trust bundle"},
    {"issue", cmd_issue, "issue a certificate offline from a CSR"},
    {"serve", cmd_serve, "run the CA daemon"},
    {"token create", cmd_token_create, "mint a one-time bootstrap token for an agent"},
    {"admin token", cmd_admin_token, "mint a short-lived admin or auditor token"},
    {"enroll", cmd_enroll, "get a first certificate from the CA with a bootstrap token"},
    {"revoke", cmd_revoke, "revoke a certificate by serial"},
    {"agent", cmd_agent, "enroll if needed, then keep the certificate renewed"},
    {"bundle watch", cmd_bundle_watch, "keep a trust-bundle file current for a gateway"},
    {"proxy", cmd_proxy, "run the mTLS forwarding proxy: enroll, forward allowed clients"},
    {"audit export", cmd_audit_export, "export the issuance log (jsonl or csv)"},
    {"audit verify", cmd_audit_verify, "verify an exported issuance log offline"},
    {"audit sth", cmd_audit_sth, "print the log's current signed tree head"},
    {"acme eab create", cmd_acme_eab_create, "make an ACME external account binding key"},
};
#define COMMAND_COUNT (sizeof(commands) / sizeof(commands[0]))

static void
print_help(FILE *out)
{
	fprintf(out, "usage: agentca <command> [options]\n\n"
	             "agentca is an internal PKI: a CA daemon issuing short-lived certificates.\n\n"
	             "commands:\n");
	for (size_t i = 0; i < COMMAND_COUNT; i++)
		fprintf(out, "  %-14s %s\n", commands[i].name, commands[i].summary);
	fprintf(out, "\nRun 'agentca <command> --help' for a command's options.\n");
}

int
cli_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "agentca%s%s: ", cmd[0] != '\0' ? " " : "", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (try 'agentca%s%s --help')\n", cmd[0] != '\0' ? " " : "", cmd);
	return EXIT_USAGE;
}

int
cli_fail(const char *cmd, const struct ac_err *err)
{
	fprintf(stderr, "agentca %s: %s\n", cmd, err->msg[0] != '\0' ? err->msg : "failed");
	return err->code == AC_ERR_USAGE ? EXIT_USAGE : EXIT_FAIL;
}

int
cli_getopt(int argc, char **argv, const char *cmd, const char *usage, const struct option *longopts,
           int *done)
{
	int c;

	*done = -1;
	c = getopt_long(argc, argv, "h", longopts, NULL);
	if (c == 'h') {
		fputs(usage, stdout);
		*done = EXIT_OK;
		return 0;
	}
	if (c == '?' || c == ':') {
		/* getopt_long has already named the bad option on stderr. */
		fprintf(stderr, "(try 'agentca %s --help')\n", cmd);
		*done = EXIT_USAGE;
		return 0;
	}
	return c;
}

/* One-shot commands promise one line on stderr for a failure, so the diagnostic log is
 * off for them unless AGENTCA_LOG_LEVEL asks for it; `serve` sets its own level. */
static void
set_cli_log_level(void)
{
	const char *env = getenv("AGENTCA_LOG_LEVEL");
	enum ac_log_level level = AC_LOG_OFF;

	if (env != NULL)
		ac_log_level_parse(env, &level);
	ac_log_set_level(level);
}

/* How many words of argv (from argv[1]) spell name, or 0 when they do not. */
static int
command_words(const char *name, int argc, char **argv)
{
	int words = 0;

	while (*name != '\0') {
		size_t len = strcspn(name, " ");

		if (words + 1 >= argc || strlen(argv[words + 1]) != len ||
		    strncmp(argv[words + 1], name, len) != 0)
			return 0;
		words++;
		name += len;
		if (*name == ' ')
			name++;
	}
	return words;
}

int
main(int argc, char **argv)
{
	set_cli_log_level();
	if (argc < 2) {
		print_help(stderr);
		return EXIT_USAGE;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		print_help(stdout);
		return EXIT_OK;
	}
	/* A command is one to three words ("init", "ca import", "acme eab create"). */
	for (size_t i = 0; i < COMMAND_COUNT; i++) {
		int words = command_words(commands[i].name, argc, argv);

		if (words > 0)
			return commands[i].run(argc - words, argv + words);
	}
	return cli_usage_error("", "unknown command '%s%s%s'", argv[1], argc >= 3 ? " " : "",
	                       argc >= 3 ? argv[2] : "");
}
